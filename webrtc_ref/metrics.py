"""Load reporting over HTTP and to HAProxy: ``stats()`` of the app's streams, read when asked.

Two routes for the app to mount (:func:`router`, :func:`mount`):

- ``GET /metrics``: every stream's :class:`~webrtc_ref.server.Stats` in Prometheus' text
  format (``prometheus_client``), one sample per stream labelled ``stream="<name>"``. A
  custom collector reads ``stats()`` at scrape time; nothing is recorded in between, and
  every router has a registry of its own (two apps in one process do not collide).
- ``GET /ready``: ``200`` when every stream takes new offers, ``503`` when one is
  draining, shutting down or full (its ``concurrency_limit`` reached); the JSON body says
  which (``{"ready": bool, "streams": {name: {"state", "connections", "limit"}}}``).

And an optional HAProxy agent-check responder (:func:`start_agent`): a TCP server that
answers each connection with one line and closes it: ``ready N%`` (free slots as a
percentage of the streams' concurrency limits: HAProxy scales the server's weight by it,
so a full replica, ``ready 0%``, gets no new browsers while its sticky ones still reach
it), ``drain`` while draining, ``maint`` while shutting down. :func:`start_agent` runs
it on the streams' loop; :func:`start_agent_thread` on a thread of its own (for the main
thread of a ``demo.launch()`` app).

A *source* is a :class:`~webrtc_ref.server.StreamServer`, or anything with a
``stream_server`` attribute (a :class:`~webrtc_ref.component.WebRTC` component, read
when asked, so it may be passed before ``.stream()``; a stream not set up yet is reported
as not ready). See docs/deployment.md.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import json
import logging
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, FastAPI, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from webrtc_ref import lifecycle

if TYPE_CHECKING:
    from webrtc_ref.server import Stats, StreamServer

log = logging.getLogger("webrtc_ref.metrics")

#: The prefix of every metric name.
PREFIX = "webrtc_ref"
#: Connections an agent responder serves at once; more are closed without a reply.
MAX_AGENT_CLIENTS = 32
#: Seconds an agent responder waits for its reply to leave before it drops the client.
AGENT_WRITE_TIMEOUT = 2.0

Source = Any  # a StreamServer, or an object with a ``stream_server`` attribute


def _server_of(source: Source) -> StreamServer | None:
    from webrtc_ref.server import StreamServer

    if isinstance(source, StreamServer):
        return source
    server = getattr(source, "stream_server", None)
    return server if isinstance(server, StreamServer) else None


def _named(
    sources: Sequence[Source] | Mapping[str, Source], names: Sequence[str] | None
) -> dict[str, Source]:
    """``{name: source}``: a mapping as given; a sequence named by ``names`` or by index."""
    if isinstance(sources, Mapping):
        if names is not None:
            raise ValueError("names are given by the mapping's keys; do not pass names too")
        named = dict(sources)
    else:
        items = list(sources)
        labels = [str(i) for i in range(len(items))] if names is None else list(names)
        if len(labels) != len(items):
            raise ValueError(f"{len(labels)} names for {len(items)} sources")
        named = dict(zip(labels, items, strict=True))
        if len(named) != len(items):
            raise ValueError(f"names must be distinct; got {labels!r}")
    if not named:
        raise ValueError("give at least one source (a WebRTC component or a StreamServer)")
    for name, source in named.items():
        if not isinstance(name, str) or not name:
            raise ValueError(f"a source's name must be a non-empty str; got {name!r}")
        if _server_of(source) is None and not hasattr(source, "stream_server"):
            raise TypeError(
                "a source must be a StreamServer or have a stream_server attribute (a "
                f"WebRTC component); got {type(source).__name__}"
            )
    return named


@dataclass(frozen=True)
class StreamState:
    """One stream's readiness: ``state`` is ``"ready"``, ``"full"``, ``"draining"``,
    ``"shutting_down"`` or ``"not_configured"`` (no ``.stream()`` yet)."""

    state: str
    connections: int
    limit: int | None

    @property
    def ready(self) -> bool:
        return self.state == "ready"


def stream_state(stats: Stats | None) -> StreamState:
    """The readiness of a stream from its ``stats()`` (``None``: not set up)."""
    if stats is None:
        return StreamState("not_configured", 0, None)
    if stats.shutting_down:
        state = "shutting_down"
    elif stats.draining:
        state = "draining"
    elif stats.concurrency_limit is not None and stats.connections >= stats.concurrency_limit:
        state = "full"
    else:
        state = "ready"
    return StreamState(state, stats.connections, stats.concurrency_limit)


def _snapshot(named: Mapping[str, Source]) -> dict[str, Stats | None]:
    out: dict[str, Stats | None] = {}
    for name, source in named.items():
        server = _server_of(source)
        out[name] = server.stats() if server is not None else None
    return out


# -- Prometheus -------------------------------------------------------------------------

#: (metric suffix, Stats attribute, help) of the gauges, one sample per stream.
_GAUGES: tuple[tuple[str, str, str], ...] = (
    ("connections", "connections", "Connections holding a slot (pending and connected)."),
    ("pending_connections", "pending", "Offers answered whose peer has not connected yet."),
    ("connected_connections", "connected", "Peers connected and not closed."),
    ("worker_threads", "worker_threads", "Worker threads of live connections alive."),
    ("stuck_workers", "stuck_workers", "Worker threads of closed connections in user code."),
    (
        "input_frames_dropped",
        "input_frames_dropped",
        "Input frames the live connections dropped because user code fell behind.",
    ),
    (
        "messages_dropped",
        "messages_dropped",
        "Data-channel messages the live connections dropped before their channel opened.",
    ),
    (
        "outputs_dropped",
        "outputs_dropped",
        "Additional outputs the live connections dropped because nobody fetched them.",
    ),
    ("pending_messages", "pending_messages", "Messages waiting for data channels to open."),
    (
        "leftover_connections",
        "leftover_connections",
        "Ended connections whose additional outputs may still be fetched.",
    ),
    ("leftover_outputs", "leftover_outputs", "Additional outputs those ended connections hold."),
    ("audio_frames_queued", "audio_frames_queued", "20 ms output audio frames waiting to be sent."),
)


class StatsCollector(Collector):
    """A Prometheus collector reading the sources' ``stats()`` at each scrape."""

    def __init__(self, named: Mapping[str, Source], prefix: str = PREFIX) -> None:
        self._named = dict(named)
        self._prefix = prefix

    def collect(self) -> Iterator[Metric]:
        p = self._prefix
        snapshot = _snapshot(self._named)
        live = {name: stats for name, stats in snapshot.items() if stats is not None}
        for suffix, attribute, help_text in _GAUGES:
            family = GaugeMetricFamily(f"{p}_{suffix}", help_text, labels=["stream"])
            for name, stats in live.items():
                family.add_metric([name], float(getattr(stats, attribute)))
            yield family
        closed = CounterMetricFamily(
            f"{p}_closed_connections",
            "Connections closed since the stream's server started.",
            labels=["stream"],
        )
        for name, stats in live.items():
            closed.add_metric([name], float(stats.closed_total))
        yield closed
        limit = GaugeMetricFamily(
            f"{p}_concurrency_limit",
            "The stream's concurrency_limit (absent: unlimited).",
            labels=["stream"],
        )
        free = GaugeMetricFamily(
            f"{p}_free_slots",
            "Connections the stream may still admit (absent: unlimited).",
            labels=["stream"],
        )
        for name, stats in live.items():
            if stats.concurrency_limit is not None:
                limit.add_metric([name], float(stats.concurrency_limit))
                free.add_metric([name], float(max(0, stats.concurrency_limit - stats.connections)))
        yield limit
        yield free
        for suffix, help_text, attribute in (
            ("draining", "1 while the stream drains (new offers get server_draining).", "draining"),
            ("shutting_down", "1 once the stream's server shuts down.", "shutting_down"),
        ):
            family = GaugeMetricFamily(f"{p}_{suffix}", help_text, labels=["stream"])
            for name, stats in live.items():
                family.add_metric([name], 1.0 if getattr(stats, attribute) else 0.0)
            yield family
        ready = GaugeMetricFamily(
            f"{p}_ready",
            "1 when the stream takes new offers (not draining, shutting down, full or "
            "unconfigured).",
            labels=["stream"],
        )
        for name, maybe in snapshot.items():
            ready.add_metric([name], 1.0 if stream_state(maybe).ready else 0.0)
        yield ready
        concealed = CounterMetricFamily(
            f"{p}_jitter_concealed_frames",
            "Inbound audio frames concealed by the live connections' adaptive jitter "
            "buffers (resets as connections end).",
            labels=["stream"],
        )
        for name, stats in live.items():
            concealed.add_metric([name], float(sum(j.concealed for j in stats.jitter.values())))
        yield concealed


def registry_for(
    sources: Sequence[Source] | Mapping[str, Source],
    *,
    names: Sequence[str] | None = None,
    prefix: str = PREFIX,
) -> CollectorRegistry:
    """A registry of its own holding one :class:`StatsCollector` over ``sources``."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StatsCollector(_named(sources, names), prefix))
    return registry


def readiness(named: Mapping[str, Source]) -> tuple[bool, dict[str, Any]]:
    """``(ready, body)`` for ``GET /ready``."""
    states = {name: stream_state(stats) for name, stats in _snapshot(named).items()}
    ready = all(s.ready for s in states.values())
    body = {
        "ready": ready,
        "streams": {
            name: {"state": s.state, "connections": s.connections, "limit": s.limit}
            for name, s in states.items()
        },
    }
    return ready, body


def router(
    sources: Sequence[Source] | Mapping[str, Source],
    *,
    names: Sequence[str] | None = None,
    metrics_path: str = "/metrics",
    ready_path: str = "/ready",
    prefix: str = PREFIX,
) -> APIRouter:
    """A FastAPI router with ``GET metrics_path`` (Prometheus text) and ``GET ready_path``
    over ``sources`` (a list of WebRTC components / StreamServers, labelled by ``names``
    or their index, or a ``{name: source}`` mapping). Raises ``ValueError``/``TypeError``
    for no source, a non-source, or names that do not fit."""
    named = _named(sources, names)
    registry = registry_for(named, prefix=prefix)
    for path in (metrics_path, ready_path):
        if not isinstance(path, str) or not path.startswith("/"):
            raise ValueError(f"a route path must be a str starting with '/'; got {path!r}")
    api = APIRouter()

    async def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    async def ready() -> Response:
        ok, body = readiness(named)
        return Response(
            json.dumps(body), status_code=200 if ok else 503, media_type="application/json"
        )

    api.add_api_route(metrics_path, metrics, methods=["GET"], include_in_schema=False)
    api.add_api_route(ready_path, ready, methods=["GET"], include_in_schema=False)
    return api


def mount(
    app: FastAPI,
    sources: Sequence[Source] | Mapping[str, Source],
    **kwargs: Any,
) -> None:
    """Add :func:`router`'s routes to ``app`` (a FastAPI app, e.g. Gradio's ``demo.app``
    after ``demo.launch(prevent_thread_lock=True)``); ``kwargs`` as for :func:`router`."""
    app.include_router(router(sources, **kwargs))


# -- HAProxy agent check ----------------------------------------------------------------


def agent_reply(stats: Sequence[Stats | None]) -> str:
    """The agent-check line for these streams' stats.

    ``maint`` when one is shutting down; ``drain`` when one is draining (or none is set
    up yet); otherwise ``ready N%`` with N the free slots as a percentage of the limits
    of the limited streams (``100%`` when none is limited), rounded down.
    """
    states = [stream_state(s) for s in stats]
    if any(s.state == "shutting_down" for s in states):
        return "maint\n"
    if any(s.state in ("draining", "not_configured") for s in states):
        return "drain\n"
    limited = [s for s in states if s.limit is not None]
    if not limited:
        return "ready 100%\n"
    total = sum(s.limit or 0 for s in limited)
    free = sum(max(0, (s.limit or 0) - s.connections) for s in limited)
    return f"ready {100 * free // total}%\n"


class AgentResponder:
    """A running agent-check responder (see :func:`start_agent`); ``await close()``."""

    def __init__(self, named: Mapping[str, Source], max_clients: int) -> None:
        self._named = dict(named)
        self._slots = asyncio.Semaphore(max_clients)
        self._server: asyncio.base_events.Server | None = None
        self._clients: set[asyncio.Task[None]] = set()
        self.host = ""
        self.port = 0
        self.refused = 0

    async def _start(self, host: str, port: int) -> None:
        self._server = await asyncio.start_server(self._serve, host, port)
        self.host, self.port = self._server.sockets[0].getsockname()[:2]

    def reply(self) -> str:
        return agent_reply(list(_snapshot(self._named).values()))

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if self._slots.locked():  # bounded: a flood gets closed sockets, not tasks
            self.refused += 1
            writer.close()
            return
        if task is not None:
            self._clients.add(task)
        async with self._slots:
            try:
                writer.write(self.reply().encode("ascii"))
                await asyncio.wait_for(writer.drain(), AGENT_WRITE_TIMEOUT)
            except (OSError, asyncio.TimeoutError):
                pass
            finally:
                writer.close()
                with contextlib.suppress(OSError, asyncio.TimeoutError):
                    await asyncio.wait_for(writer.wait_closed(), AGENT_WRITE_TIMEOUT)
                if task is not None:
                    self._clients.discard(task)

    async def close(self) -> None:
        """Stop listening and drop the clients being served; idempotent."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        for task in list(self._clients):
            task.cancel()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(server.wait_closed(), AGENT_WRITE_TIMEOUT)
        log.info("agent-check responder on %s:%s closed", self.host, self.port)

    @property
    def serving(self) -> bool:
        return self._server is not None


async def start_agent(
    sources: Sequence[Source] | Mapping[str, Source],
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    names: Sequence[str] | None = None,
    max_clients: int = MAX_AGENT_CLIENTS,
) -> AgentResponder:
    """Start an HAProxy agent-check responder on ``host:port`` (``port=0``: any free
    port; read ``.port``). Run on the loop that serves the streams (Gradio's, e.g. from
    an app ``load`` event, or a FastAPI lifespan). It is closed when that loop's stream
    servers shut down (:mod:`webrtc_ref.lifecycle`), or by ``await agent.close()``.
    At most ``max_clients`` connections are served at once; more are closed unanswered.
    """
    if isinstance(max_clients, bool) or not isinstance(max_clients, int) or max_clients < 1:
        raise ValueError(f"max_clients must be an int >= 1; got {max_clients!r}")
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ValueError(f"port must be an int in [0, 65535]; got {port!r}")
    agent = AgentResponder(_named(sources, names), max_clients)
    await agent._start(host, port)
    lifecycle.on_loop_shutdown(asyncio.get_running_loop(), agent.close)
    log.info("agent-check responder on %s:%s", agent.host, agent.port)
    return agent


#: Seconds between two looks of an agent thread at whether its streams have shut down.
_AGENT_WATCH_S = 0.5


class AgentThread:
    """An agent-check responder on a thread and event loop of its own (see
    :func:`start_agent_thread`): ``.host``, ``.port``, ``close()`` from any thread."""

    def __init__(self, named: Mapping[str, Source], max_clients: int) -> None:
        self._named = dict(named)
        self._max_clients = max_clients
        self._loop = asyncio.new_event_loop()
        self._agent: AgentResponder | None = None
        self._stopped: asyncio.Event | None = None
        self._started = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="webrtc-ref-agent", daemon=True)
        self.host = ""
        self.port = 0

    def _start(self, host: str, port: int) -> None:
        self._address = (host, port)
        self._thread.start()
        self._started.wait()
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._main())
        finally:
            self._loop.close()

    async def _main(self) -> None:
        self._stopped = asyncio.Event()
        agent = AgentResponder(self._named, self._max_clients)
        try:
            await agent._start(*self._address)
        except BaseException as exc:
            self._error = exc
            self._started.set()
            return
        self._agent = agent
        self.host, self.port = agent.host, agent.port
        self._started.set()
        try:
            while not self._stopped.is_set():
                if self._all_shut_down():
                    log.info("agent-check responder: its streams shut down; closing")
                    break
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._stopped.wait(), _AGENT_WATCH_S)
        finally:
            await agent.close()

    def _all_shut_down(self) -> bool:
        snapshot = _snapshot(self._named).values()
        return bool(snapshot) and all(s is not None and s.shutting_down for s in snapshot)

    @property
    def serving(self) -> bool:
        return self._thread.is_alive() and self._agent is not None and self._agent.serving

    def close(self, timeout: float = 5.0) -> None:
        """Stop the responder and join its thread (any thread but its own; idempotent)."""
        stopped = self._stopped
        if stopped is not None and not self._loop.is_closed():
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(stopped.set)
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout)


def start_agent_thread(
    sources: Sequence[Source] | Mapping[str, Source],
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    names: Sequence[str] | None = None,
    max_clients: int = MAX_AGENT_CLIENTS,
) -> AgentThread:
    """:func:`start_agent` for a caller without the streams' loop (the main thread of a
    ``demo.launch()`` app): the responder runs on a thread of its own (``stats()`` may be
    read from any thread) and closes itself once every source's server has shut down,
    at interpreter exit, or on ``close()``. Raises ``OSError`` if it cannot listen."""
    if isinstance(max_clients, bool) or not isinstance(max_clients, int) or max_clients < 1:
        raise ValueError(f"max_clients must be an int >= 1; got {max_clients!r}")
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ValueError(f"port must be an int in [0, 65535]; got {port!r}")
    agent = AgentThread(_named(sources, names), max_clients)
    agent._start(host, port)
    atexit.register(agent.close)
    log.info("agent-check responder on %s:%s (own thread)", agent.host, agent.port)
    return agent
