"""``StreamServer``: the server half of one ``WebRTC.stream`` event.

The Gradio component owns one StreamServer per ``.stream()`` call and forwards to it:

- ``await offer(body, client)``: the ``offer`` server function. ``body`` is the JSON the
  browser posted as ``data``: ``{"sdp": str, "type": "offer", "webrtc_id": str}``;
  ``client`` says who posted it (Gradio session, address). Returns
  ``{"sdp": ..., "type": "answer"}`` or
  ``{"status": "failed", "meta": {"error": CODE, "message": str, ...}}`` with CODE one of
  :data:`webrtc_ref.signaling.ERROR_CODES`. Never raises for bad client input, and every
  refusal is decided before any aiortc work or user code runs.
- ``set_input(webrtc_id, args, owner=...)``: the ``tick`` event's values of the stream's
  *other* inputs (the component's own value, the webrtc_id, is not in ``args``).
- ``pop_additional_outputs(webrtc_id, owner=...)``: the next queued ``AdditionalOutputs``
  of that connection, or ``None``.
- ``await shutdown()``: close every connection (``end_stream`` ``server_shutdown``)
  within ``shutdown_timeout`` and refuse later offers (``server_shutdown``). Wired to the
  app's lifecycle by :mod:`webrtc_ref.lifecycle`.
- ``drain(deadline)``: refuse new offers (``server_draining``) while the live
  connections run on to their end; at ``deadline`` seconds the rest are closed
  (``end_stream`` ``server_draining``). ``start_drain`` does the same from any thread;
  ``resume()`` accepts offers again.
- ``stats()``: what the server holds right now (:class:`Stats`).

A connection belongs to the session that offered it: ``set_input``,
``pop_additional_outputs`` and ``outputs_of`` given another ``owner`` behave exactly as
for an unknown id. State is per instance; nothing is shared between servers.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiortc.exceptions import InvalidStateError, OperationError

from webrtc_ref import jitter, lifecycle
from webrtc_ref.connection import (
    DEFAULT_OUTPUT_BUFFER_S,
    Connection,
    MessageDialect,
    StreamSpec,
)
from webrtc_ref.errors import new_error_id, public_message
from webrtc_ref.handlers import StreamHandler, VideoStreamHandler, handles_video
from webrtc_ref.jitter import JitterBufferChoice, JitterStats
from webrtc_ref.outputs import AdditionalOutputs, OutputQueue
from webrtc_ref.registry import DEFAULT_MAX_PENDING_PER_ADDRESS, Registry
from webrtc_ref.signaling import (
    CONCURRENCY_LIMIT_REACHED,
    DEFAULT_MAX_OFFER_BYTES,
    HANDLER_ERROR,
    INTERNAL_ERROR,
    INVALID_CANDIDATE,
    INVALID_OFFER,
    MODALITIES,
    MODES,
    MODES_OF,
    SERVER_DRAINING,
    SERVER_SHUTDOWN,
    UNKNOWN_CONNECTION,
    Modality,
    Mode,
    Offer,
    SignalingError,
    answer_reply,
    check_media,
    failure,
    log_tag,
    media_sections,
    parse_candidate,
    parse_offer,
)
from webrtc_ref.threads import run_in_thread

log = logging.getLogger("webrtc_ref.server")

#: Seconds for which additional outputs of an ended connection can still be fetched.
OUTPUTS_GRACE = 60.0
#: Ended connections whose unfetched outputs are kept (the oldest go first beyond this).
MAX_LEFTOVERS = 1024


#: Seconds :meth:`StreamServer.shutdown` may take by default.
DEFAULT_SHUTDOWN_TIMEOUT = 5.0

#: What a browser is told when its offer arrives while the server drains.
DRAINING_MESSAGE = (
    "This server is about to restart and takes no new streams. Please try again in a "
    "moment (a reload may reach another server)."
)
#: What a live connection is told when the drain deadline ends it.
DRAIN_DEADLINE_MESSAGE = (
    "This server is restarting: the stream was ended at the end of its drain period. "
    "Press Start again to continue (a reload may reach another server)."
)
#: Seconds between two checks of a draining server for connections that ended (a
#: safety net: the end of a connection wakes the drain at once).
_DRAIN_RECHECK_S = 0.5


@dataclass(frozen=True)
class Stats:
    """A snapshot of one :class:`StreamServer` (see :meth:`StreamServer.stats`).

    Attributes:
        connections: connections holding a slot (pending and connected).
        pending: offered, not connected yet.
        connected: peers that connected and have not closed.
        closed_total: connections closed since the server started.
        worker_threads: worker threads of live connections that are alive.
        stuck_workers: worker threads of closed connections still in user code.
        input_frames_dropped: input frames live connections dropped because user code
            fell behind (audio: more than 1 s; video: stale frames, newest wins).
        messages_dropped: data-channel messages dropped before a channel opened.
        outputs_dropped: additional outputs dropped because nobody fetched them.
        output_queue_depths: queued additional outputs per live connection (by log tag).
        pending_messages: messages waiting for data channels to open.
        leftover_connections: ended connections whose outputs may still be fetched.
        leftover_outputs: the outputs they hold.
        audio_frames_queued: 20 ms output frames waiting to be sent.
        shutting_down: :meth:`StreamServer.shutdown` has begun.
        jitter: the adaptive inbound jitter buffer's counters per live connection (by log
            tag; ``jitter_buffer="adaptive"`` only, empty otherwise).
        draining: :meth:`StreamServer.drain` has begun (and :meth:`StreamServer.resume`
            was not called since): new offers get ``server_draining``.
        concurrency_limit: the server's ``concurrency_limit`` (``None``: unlimited).
    """

    connections: int
    pending: int
    connected: int
    closed_total: int
    worker_threads: int
    stuck_workers: int
    input_frames_dropped: int
    messages_dropped: int
    outputs_dropped: int
    output_queue_depths: dict[str, int]
    pending_messages: int
    leftover_connections: int
    leftover_outputs: int
    audio_frames_queued: int
    shutting_down: bool
    jitter: dict[str, JitterStats] = field(default_factory=dict)
    draining: bool = False
    concurrency_limit: int | None = None

    @property
    def accepting(self) -> bool:
        """Whether a new offer would be admitted now (not draining, not shutting down,
        a free slot)."""
        return (
            not self.draining
            and not self.shutting_down
            and (self.concurrency_limit is None or self.connections < self.concurrency_limit)
        )


@dataclass(frozen=True)
class Client:
    """Who posted an offer: the Gradio session (``session``, the owner of the connection)
    and the client's address (``address``, for the per-address cap). ``None`` fields:
    unknown (in-process callers). ``dialect``: how the client reads the data channel's
    "inputs wanted" / "outputs waiting" signals (``connection.DIALECT_MESSAGES``)."""

    session: str | None = None
    address: str | None = None
    dialect: MessageDialect = "gradio_webrtc"


def _shut_down_abandoned(handler: object) -> None:
    """A handler copy whose offer was given up (timed out, cancelled) is shut down."""
    if isinstance(handler, StreamHandler):
        try:
            handler.shutdown()
        except Exception:
            log.exception("shutdown() of an abandoned handler copy raised")


def check_max_offer_bytes(value: object) -> None:
    """``max_offer_bytes`` must be an int of at least 1024 (a real offer is 2-6 KiB)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1024:
        raise ValueError(
            f"max_offer_bytes must be an int >= 1024 (bytes of offer SDP); got {value!r}"
        )


#: The largest ``output_buffer_s`` accepted (5 minutes: up to 58 MB per connection).
MAX_OUTPUT_BUFFER_S = 300.0


def check_output_buffer_s(value: object) -> None:
    """Raise ``ValueError`` unless ``value`` is a number of seconds in (0, 300]."""
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not 0 < value <= MAX_OUTPUT_BUFFER_S
    ):
        raise ValueError(
            f"output_buffer_s must be a number of seconds in (0, {MAX_OUTPUT_BUFFER_S:g}]; "
            f"got {value!r}"
        )


def _loop_future(source: concurrent.futures.Future[None]) -> asyncio.Future[None]:
    """A future of the running loop that settles as ``source`` does; cancelling it leaves
    ``source`` alone (several callers may wait for one drain)."""
    loop = asyncio.get_running_loop()
    out: asyncio.Future[None] = loop.create_future()

    def settle() -> None:
        if out.done():
            return
        if source.cancelled():
            out.cancel()
        elif (exc := source.exception()) is not None:
            out.set_exception(exc)
        else:
            out.set_result(None)

    def done(_: concurrent.futures.Future[None]) -> None:
        with contextlib.suppress(RuntimeError):  # the waiting loop is gone
            loop.call_soon_threadsafe(settle)

    source.add_done_callback(done)
    return out


def _check_positive(name: str, value: object, *, allow_none: bool) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        allowed = "a positive number or None" if allow_none else "a positive number"
        raise ValueError(f"{name} must be {allowed}; got {value!r}")


class StreamServer:
    """Connections of one stream event (see the module docstring).

    Parameters:
        mode, modality: as on the component.
        handler: a ``StreamHandler`` (audio send-receive/send), ``fn(frame, *inputs)``
            (video send-receive/send) or a generator function ``fn(*inputs)`` (receive).
        concurrency_limit: at most this many connections at once (pending ones count);
            ``None`` means unlimited.
        time_limit: seconds after connecting at which a connection is ended.
        connect_timeout: seconds an accepted offer may take to connect before its slot
            is freed.
        has_inputs: whether the stream event has inputs besides the component, so the
            runtime must fetch their values.
        ice_servers: RTCIceServer dicts for the server's own peer connections (default
            none: only host candidates, nothing contacts the network).
        max_offer_bytes: the largest offer SDP accepted (bytes); larger ones get
            ``offer_too_large``.
        max_pending_per_address: how many offers from one client address may be
            connecting at once (``None``: no cap); more get ``too_many_pending_offers``.
        show_error: whether the browser may see the text of user code's exceptions
            (called when an error happens; the component passes Gradio's
            ``launch(show_error=...)``).
        shutdown_timeout: seconds :meth:`shutdown` may take to close every connection.
        output_buffer_s: seconds of the handler's audio that may wait to be played
            (audio modes that send back); a producer faster than real time runs this far
            ahead of playback, then waits. Barge-in drops what waits.
        jitter_buffer: the jitter buffer of inbound audio (send and send-receive audio
            and audio-video): ``"aiortc"`` (aiortc's own) or ``"adaptive"``
            (:mod:`webrtc_ref.jitter`); ``None`` (default): ``"adaptive"`` on a tested
            aiortc version, ``"aiortc"`` otherwise
            (:func:`webrtc_ref.jitter.default_choice`). An explicit ``"adaptive"`` needs
            an aiortc version it was tested with
            (:data:`webrtc_ref.jitter.TESTED_AIORTC_VERSIONS`); with another one the
            constructor raises ``RuntimeError`` saying so. Inbound video always gets
            :class:`webrtc_ref.jitter.EagerVideoJitterBuffer` on a tested aiortc.
    """

    def __init__(
        self,
        *,
        mode: Mode,
        modality: Modality,
        handler: StreamHandler | Callable[..., Any],
        concurrency_limit: int | None = 1,
        time_limit: float | None = None,
        connect_timeout: float = 15.0,
        has_inputs: bool = False,
        ice_servers: list[dict[str, Any]] | None = None,
        max_offer_bytes: int = DEFAULT_MAX_OFFER_BYTES,
        max_pending_per_address: int | None = DEFAULT_MAX_PENDING_PER_ADDRESS,
        show_error: Callable[[], bool] | None = None,
        shutdown_timeout: float = DEFAULT_SHUTDOWN_TIMEOUT,
        jitter_buffer: JitterBufferChoice | None = None,
        output_buffer_s: float = DEFAULT_OUTPUT_BUFFER_S,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}; got {mode!r}")
        if modality not in MODALITIES:
            raise ValueError(f"modality must be one of {MODALITIES}; got {modality!r}")
        if mode not in MODES_OF[modality]:
            raise ValueError(
                f"mode {mode!r} is not supported for modality {modality!r}; allowed: "
                f"{MODES_OF[modality]}"
            )
        if modality == "audio-video":
            if not handles_video(handler):
                raise ValueError(
                    "an audio-video stream's handler must be an AudioVideoStreamHandler "
                    "(a StreamHandler with video_receive and video_emit); got "
                    f"{type(handler).__name__}"
                )
        elif modality == "audio" and mode != "receive":
            if not isinstance(handler, StreamHandler):
                raise ValueError(
                    f"In the {mode} mode for audio, the event handler must be an instance of "
                    f"StreamHandler; got {type(handler).__name__}"
                )
        elif isinstance(handler, VideoStreamHandler) and modality != "video":
            raise ValueError(
                f"VideoStreamHandler is for modality='video'; this stream is {modality!r}"
            )
        elif not callable(handler):
            raise ValueError(f"handler must be callable; got {type(handler).__name__}")
        _check_positive("time_limit", time_limit, allow_none=True)
        _check_positive("connect_timeout", connect_timeout, allow_none=False)
        _check_positive("shutdown_timeout", shutdown_timeout, allow_none=False)
        check_output_buffer_s(output_buffer_s)
        check_max_offer_bytes(max_offer_bytes)
        jitter_buffer = (
            jitter.default_choice(modality)
            if jitter_buffer is None
            else jitter.check_choice(jitter_buffer)
        )
        if jitter_buffer == "adaptive" and modality != "video" and mode != "receive":
            jitter.check_aiortc_version()
        self.shutdown_timeout = float(shutdown_timeout)
        self.max_offer_bytes = max_offer_bytes
        self.spec = StreamSpec(
            mode=mode,
            modality=modality,
            handler=handler,
            has_inputs=has_inputs,
            time_limit=time_limit,
            connect_timeout=connect_timeout,
            ice_servers=list(ice_servers or []),
            jitter_buffer=jitter_buffer,
            output_buffer_s=float(output_buffer_s),
            show_error=show_error or (lambda: False),
            **(
                {"video_fps": handler.fps}
                if isinstance(handler, VideoStreamHandler) and modality == "video"
                else {}
            ),
        )
        self._registry: Registry[Connection] = Registry(
            concurrency_limit, max_pending_per_address=max_pending_per_address
        )
        # webrtc_id -> (owner, outputs, expiry), oldest first
        self._leftovers: collections.OrderedDict[str, tuple[str | None, OutputQueue, float]] = (
            collections.OrderedDict()
        )
        self._leftovers_lock = threading.Lock()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._prune_timer: asyncio.TimerHandle | None = None
        self._shutting_down = False
        self._draining = False
        self._drain_lock = threading.Lock()
        self._drain_at: float | None = None
        self._drain_future: concurrent.futures.Future[None] | None = None
        #: set on the loop whenever a connection ends (wakes a waiting drain)
        self._ended: asyncio.Event | None = None
        self._drain_task: asyncio.Task[None] | None = None
        self._drain_task_for: concurrent.futures.Future[None] | None = None
        self._closed_total = 0
        #: worker threads of closed connections that were left in user code
        self._stuck: list[Any] = []
        lifecycle.track(self)

    @property
    def concurrency_limit(self) -> int | None:
        return self._registry.limit

    def refusal(self, client: Client | None = None) -> dict[str, Any] | None:
        """The failure reply an offer from ``client`` would get now for lack of room
        (``server_shutdown``, ``server_draining``, ``concurrency_limit_reached``), or
        ``None``. For work done before an offer, such as minting a connection's ICE
        credentials, that is wasted when the offer cannot be admitted. Any thread."""
        if self._shutting_down:
            return failure(SERVER_SHUTDOWN, "The server is shutting down; try again in a moment.")
        if self._draining:
            return failure(SERVER_DRAINING, DRAINING_MESSAGE)
        if self._registry.full_for(client.session if client is not None else None):
            limit = self._registry.limit
            return failure(
                CONCURRENCY_LIMIT_REACHED,
                f"Too many concurrent connections (limit {limit}). Try again when a stream ends.",
                limit=limit,
            )
        return None

    async def offer(self, body: object, client: Client | None = None) -> dict[str, Any]:
        """Answer an offer, or explain in a failure reply why not (see the module docstring).

        Order: the offer is validated and a slot reserved (no aiortc work, no user code);
        the handler is copied on a worker thread; the peer connection applies the offer.
        All of it must finish within ``connect_timeout``. A failure frees the slot before
        the reply leaves.
        """
        client = client or Client()
        self._serving_on(asyncio.get_running_loop())
        if self._shutting_down:
            return failure(SERVER_SHUTDOWN, "The server is shutting down; try again in a moment.")
        if self._draining:
            return failure(SERVER_DRAINING, DRAINING_MESSAGE)
        try:
            offer = parse_offer(
                body,
                max_bytes=self.max_offer_bytes,
                max_media_sections=media_sections(self.spec.modality),
            )
            check_media(offer, self.spec.mode, self.spec.modality)
            superseded = self._registry.reserve(
                offer.webrtc_id, owner=client.session, address=client.address
            )
        except SignalingError as exc:
            log.info("offer refused: %s (%s)", exc.code, exc.message)
            return exc.reply()
        if superseded is not None:
            log.info("%s: superseded by a newer offer of its session", superseded.tag)
            self._spawn(superseded.close("superseded", notify=False))
        webrtc_id = offer.webrtc_id
        holder: list[Connection] = []
        try:
            return await asyncio.wait_for(
                self._admit(offer, client, holder), self.spec.connect_timeout
            )
        except asyncio.TimeoutError:
            self._abandon(webrtc_id, holder, "handler_error")
            return failure(
                HANDLER_ERROR,
                f"the stream handler was not ready within {self.spec.connect_timeout:g} s "
                "(StreamHandler.copy() took too long)",
            )
        except BaseException:
            self._abandon(webrtc_id, holder, "error")
            raise

    async def _admit(
        self, offer: Offer, client: Client, holder: list[Connection]
    ) -> dict[str, Any]:
        webrtc_id = offer.webrtc_id
        tag = log_tag(webrtc_id)
        handler: StreamHandler | None = None
        if isinstance(self.spec.handler, StreamHandler):
            try:
                handler = await self._copy_handler(tag)
            except Exception as exc:
                self._registry.release(webrtc_id)
                return self._handler_failure(tag, exc)
        try:
            connection = Connection(
                webrtc_id,
                self.spec,
                self._release,
                handler=handler,
                owner=client.session,
                on_connected=self._connected,
                dialect=client.dialect,
            )
        except Exception:
            self._registry.release(webrtc_id)
            if handler is not None:
                self._spawn(run_in_thread(handler.shutdown, f"shutdown-{tag}"))
            error_id = new_error_id()
            log.exception("%s: error %s: the connection could not be set up", tag, error_id)
            return failure(
                INTERNAL_ERROR, f"the server could not set up the connection (error id {error_id})"
            )
        holder.append(connection)
        self._registry.attach(webrtc_id, connection)
        try:
            sdp = await connection.accept(offer)
        except (ValueError, InvalidStateError, OperationError) as exc:
            self._abandon(webrtc_id, holder, "invalid_offer")
            log.info("%s: offer could not be applied: %r", tag, exc)
            return failure(INVALID_OFFER, f"the offer could not be applied: {exc}", field="sdp")
        except Exception:
            self._abandon(webrtc_id, holder, "error")
            error_id = new_error_id()
            log.exception("%s: error %s: applying the offer failed", tag, error_id)
            return failure(
                INTERNAL_ERROR, f"the server failed to answer the offer (error id {error_id})"
            )
        return answer_reply(sdp)

    async def _copy_handler(self, tag: str) -> StreamHandler:
        """The stream handler's ``copy()`` for one connection, run on a worker thread;
        raises what it raises, or ``TypeError`` for a copy of the wrong kind."""
        assert isinstance(self.spec.handler, StreamHandler)
        handler = await run_in_thread(
            self.spec.handler.copy, f"copy-{tag}", abandoned=_shut_down_abandoned
        )
        if not isinstance(handler, StreamHandler):
            raise TypeError(
                f"{type(self.spec.handler).__name__}.copy() must return a "
                f"StreamHandler; got {type(handler).__name__}"
            )
        if self.spec.modality == "audio-video" and not handles_video(handler):
            raise TypeError(
                f"{type(self.spec.handler).__name__}.copy() must return an "
                f"AudioVideoStreamHandler; got {type(handler).__name__}"
            )
        return handler

    def _handler_failure(self, tag: str, exc: BaseException) -> dict[str, Any]:
        error_id = new_error_id()
        log.error(
            "%s: error %s: the stream handler could not be set up", tag, error_id, exc_info=exc
        )
        return failure(
            HANDLER_ERROR, public_message(exc, error_id, show_error=self.spec.show_error())
        )

    async def open_session(
        self,
        webrtc_id: str,
        *,
        owner: str | None,
        address: str | None,
        make: Callable[[StreamHandler], Any],
    ) -> tuple[Any, dict[str, Any] | None]:
        """Admit a session of another transport (the WebSocket one, which has no offer)
        under the rules of :meth:`offer`: a registry slot for ``webrtc_id`` (the
        concurrency limit and the per-address cap count it like a connection), the
        handler copied off the loop within ``connect_timeout``, then ``make(handler)``
        builds the session, which counts as connected at once. The session must offer
        what this server reads of a :class:`Connection` (``webrtc_id``, ``owner``,
        ``outputs``, ``runner``, ``close()``, ...) and call :meth:`_release` with itself
        when it has closed. Returns ``(session, None)`` or ``(None, failure reply)``;
        run on the server's loop."""
        self._serving_on(asyncio.get_running_loop())
        if self._shutting_down:
            return None, failure(
                SERVER_SHUTDOWN, "The server is shutting down; try again in a moment."
            )
        tag = log_tag(webrtc_id)
        if not isinstance(self.spec.handler, StreamHandler):
            return None, failure(INVALID_OFFER, "this stream's handler is not a StreamHandler")
        try:
            superseded = self._registry.reserve(webrtc_id, owner=owner, address=address)
        except SignalingError as exc:
            log.info("session refused: %s (%s)", exc.code, exc.message)
            return None, exc.reply()
        if superseded is not None:
            self._spawn(superseded.close("superseded", notify=False))
        try:
            handler = await asyncio.wait_for(self._copy_handler(tag), self.spec.connect_timeout)
        except asyncio.TimeoutError:
            self._registry.release(webrtc_id)
            return None, failure(
                HANDLER_ERROR,
                f"the stream handler was not ready within {self.spec.connect_timeout:g} s "
                "(StreamHandler.copy() took too long)",
            )
        except Exception as exc:
            self._registry.release(webrtc_id)
            return None, self._handler_failure(tag, exc)
        except BaseException:
            self._registry.release(webrtc_id)
            raise
        try:
            session = make(handler)
        except Exception:
            self._registry.release(webrtc_id)
            self._spawn(run_in_thread(handler.shutdown, f"shutdown-{tag}"))
            error_id = new_error_id()
            log.exception("%s: error %s: the session could not be set up", tag, error_id)
            return None, failure(
                INTERNAL_ERROR, f"the server could not set up the session (error id {error_id})"
            )
        self._registry.attach(webrtc_id, session)
        self._registry.connected(webrtc_id, session)
        return session, None

    def _abandon(self, webrtc_id: str, holder: list[Connection], reason: str) -> None:
        """An offer failed: free its slot now; close its connection (if one was made)
        in the background, without a goodbye."""
        connection = holder[0] if holder else None
        self._registry.release(webrtc_id, connection)
        self._wake_drain()
        if connection is not None:
            self._spawn(connection.close(reason, notify=False))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _connected(self, connection: Connection) -> None:
        self._registry.connected(connection.webrtc_id, connection)

    def _serving_on(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._loop is None:
            self._loop = loop
            self._ended = asyncio.Event()
            lifecycle.register(self, loop)

    def _wake_drain(self) -> None:
        """A slot was freed (on the loop): a waiting drain looks again."""
        if self._ended is not None:
            self._ended.set()

    def _release(self, connection: Connection) -> None:
        self._registry.release(connection.webrtc_id, connection)
        self._closed_total += 1
        self._wake_drain()
        self._stuck = [t for t in (*self._stuck, *connection.runner.stuck) if t.is_alive()]
        now = time.monotonic()
        with self._leftovers_lock:
            self._prune_leftovers(now)
            if len(connection.outputs):
                # Outputs yielded just before the end (say, at the time limit) are still
                # fetched by the browser's state_change events after the connection is gone.
                self._leftovers[connection.webrtc_id] = (
                    connection.owner,
                    connection.outputs,
                    now + OUTPUTS_GRACE,
                )
                while len(self._leftovers) > MAX_LEFTOVERS:
                    self._leftovers.popitem(last=False)
                self._arm_prune_timer()

    def _arm_prune_timer(self) -> None:
        """Prune expired leftovers even when nobody asks for any (on the loop)."""
        if self._prune_timer is not None or self._loop is None:
            return

        def prune() -> None:
            self._prune_timer = None
            with self._leftovers_lock:
                self._prune_leftovers(time.monotonic())
                if self._leftovers:
                    self._arm_prune_timer()

        self._prune_timer = self._loop.call_later(OUTPUTS_GRACE / 4, prune)

    def _prune_leftovers(self, now: float) -> None:
        """Drop expired leftovers (oldest first; they expire in insertion order)."""
        while self._leftovers:
            key, (_, _, expiry) = next(iter(self._leftovers.items()))
            if expiry >= now:
                break
            del self._leftovers[key]

    def connection(self, webrtc_id: str) -> Connection | None:
        """The live connection with this id, whichever session offered it (server-side use)."""
        return self._registry.any_owner(webrtc_id)

    def owner_of(self, webrtc_id: str) -> tuple[bool, str | None]:
        """``(known, owner)``: whether ``webrtc_id`` is a live connection or an ended one
        whose outputs may still be fetched, and who offered it (server-side use: the
        caller decides whether its client may act for that owner)."""
        connection = self._registry.any_owner(webrtc_id)
        if connection is not None:
            return True, connection.owner
        with self._leftovers_lock:
            self._prune_leftovers(time.monotonic())
            leftover = self._leftovers.get(webrtc_id)
        return (True, leftover[0]) if leftover is not None else (False, None)

    @property
    def connections(self) -> list[Connection]:
        return self._registry.values()

    def __len__(self) -> int:
        return len(self._registry)

    async def add_ice_candidate(self, body: object, *, owner: str | None = None) -> dict[str, Any]:
        """A browser candidate gathered after its offer left (trickle ICE), for ``owner``'s
        connection only; run on the server's loop. Body: see
        :func:`~webrtc_ref.signaling.parse_candidate`. Returns ``{"status": "ok"}`` or a
        failure reply (``invalid_candidate``, ``unknown_connection``); never raises."""
        try:
            trickled = parse_candidate(body)
        except SignalingError as exc:
            return exc.reply()
        connection = self._registry.get(trickled.webrtc_id, owner)
        if connection is None:
            return failure(UNKNOWN_CONNECTION, "no live connection with this webrtc_id")
        if not await connection.add_ice_candidate(trickled.candidate):
            return failure(
                INVALID_CANDIDATE,
                "the candidate was not added (too many, no such media section, or closing)",
            )
        return {"status": "ok"}

    def set_input(self, webrtc_id: str, args: list[Any], *, owner: str | None = None) -> None:
        """Give the connection the latest values of the stream's other inputs.

        Only ``owner``'s connection is fed; an id of another owner is ignored like an
        unknown one."""
        connection = self._registry.get(webrtc_id, owner)
        if connection is not None:
            connection.set_inputs(list(args))

    def outputs_of(self, webrtc_id: str, *, owner: str | None = None) -> OutputQueue | None:
        """The additional-outputs queue of ``owner``'s connection ``webrtc_id``, live or
        ended less than ``OUTPUTS_GRACE`` seconds ago; ``None`` otherwise."""
        connection = self._registry.get(webrtc_id, owner)
        if connection is not None:
            return connection.outputs
        with self._leftovers_lock:
            self._prune_leftovers(time.monotonic())
            leftover = self._leftovers.get(webrtc_id)
            if leftover is None or leftover[0] != owner:
                return None
            if not len(leftover[1]):
                del self._leftovers[webrtc_id]
                return None
            return leftover[1]

    def pop_additional_outputs(
        self, webrtc_id: str, *, owner: str | None = None
    ) -> AdditionalOutputs | None:
        """The next queued outputs of ``owner``'s connection ``webrtc_id``; still served for
        ``OUTPUTS_GRACE`` seconds after the connection ended."""
        queue = self.outputs_of(webrtc_id, owner=owner)
        return queue.pop() if queue is not None else None

    async def close_connection(
        self, webrtc_id: str, reason: str = "server_closed", message: str | None = None
    ) -> bool:
        """Close the connection ``webrtc_id`` (whichever session offered it) and wait
        until it is closed; run on the server's loop. False if there is no such live
        connection."""
        connection = self._registry.any_owner(webrtc_id)
        if connection is None:
            return False
        await connection.close(reason, message)
        return True

    def close(self, webrtc_id: str, message: str | None = None) -> bool:
        """Hang up the live connection ``webrtc_id``: the browser is told ``end_stream``
        with reason ``"server_closed"`` (and ``message``), then the connection closes as
        on any other exit. Any thread; never blocks (the closing runs on the server's
        loop). Returns False when there is no such live connection.
        """
        if message is not None and not isinstance(message, str):
            raise TypeError(f"message must be a str or None, got {type(message).__name__}")
        connection = self._registry.any_owner(webrtc_id) if isinstance(webrtc_id, str) else None
        if connection is None:
            return False
        loop = connection.loop
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        coro = connection.close("server_closed", message)
        if running is loop:
            self._spawn(coro)
        else:
            try:
                asyncio.run_coroutine_threadsafe(coro, loop)
            except RuntimeError:  # the server's loop is gone
                coro.close()
                return False
        return True

    @property
    def draining(self) -> bool:
        """Whether new offers are refused with ``server_draining`` (see :meth:`drain`)."""
        return self._draining

    def drain(self, deadline: float | None = None) -> asyncio.Future[None]:
        """Stop taking new streams now; the returned future completes when the live ones
        have ended (``await server.drain()``).

        From the moment this returns every offer gets the failure reply
        ``server_draining`` (its message asks the user to try again; a load balancer
        sends the retry elsewhere). Live connections, and offers already being answered,
        run on to their own end (time limit, the browser's Stop, the handler finishing).
        ``deadline``: seconds from now after which the connections still open are closed
        with ``end_stream`` reason ``server_draining`` and a message saying the server is
        restarting (each within ``shutdown_timeout``); ``None`` waits as long as they
        last. The server stays draining afterwards (offers are still refused) until
        :meth:`resume`; stopping the process is the caller's business (the SIGTERM
        handler of :mod:`webrtc_ref.lifecycle` drains, then stops).

        Call it with a running loop (any loop; from a thread without one use
        :meth:`start_drain`). Calling it again while a drain runs joins that drain; a
        ``deadline`` earlier than the running one brings the end forward (a later one is
        ignored). Raises ``ValueError`` for a negative or non-number deadline.
        """
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            raise RuntimeError(
                "StreamServer.drain() needs a running event loop; from a thread without "
                "one call start_drain(), which returns a concurrent.futures.Future"
            ) from None
        return _loop_future(self.start_drain(deadline))

    def start_drain(self, deadline: float | None = None) -> concurrent.futures.Future[None]:
        """:meth:`drain` from any thread, without waiting: offers are refused from the
        moment this returns. The future completes when no connection is left (at once
        if the server never served), and is cancelled by :meth:`resume`."""
        if deadline is not None and (
            isinstance(deadline, bool)
            or not isinstance(deadline, int | float)
            or not math.isfinite(deadline)
            or deadline < 0
        ):
            raise ValueError(f"deadline must be a number of seconds >= 0 or None; got {deadline!r}")
        at = None if deadline is None else time.monotonic() + float(deadline)
        with self._drain_lock:
            self._draining = True
            future = self._drain_future
            if future is None or future.done():
                future = self._drain_future = concurrent.futures.Future()
                self._drain_at = at
            elif at is not None and (self._drain_at is None or at < self._drain_at):
                self._drain_at = at
        loop = self._loop
        if loop is None or loop.is_closed():
            self._finish_drain(future)
            return future
        log.info(
            "draining: new offers are refused%s; %d connection(s) live",
            "" if deadline is None else f", the live ones are closed in {deadline:g} s",
            len(self._registry),
        )
        try:
            loop.call_soon_threadsafe(self._ensure_drain_task, future)
        except RuntimeError:  # the loop is gone: nothing can be live on it
            self._finish_drain(future)
        return future

    def resume(self) -> None:
        """Take new offers again after :meth:`drain` (any thread). A drain still waiting
        stops waiting: its awaitable is cancelled; nothing is closed."""
        with self._drain_lock:
            self._draining = False
            self._drain_at = None
            future, self._drain_future = self._drain_future, None
        if future is not None:
            future.cancel()
        task = self._drain_task
        if task is not None and self._loop is not None and not self._loop.is_closed():
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(task.cancel)
        log.info("drain ended: new offers are taken again")

    def _finish_drain(self, future: concurrent.futures.Future[None]) -> None:
        if not future.done():
            with contextlib.suppress(concurrent.futures.InvalidStateError):
                future.set_result(None)

    def _ensure_drain_task(self, future: concurrent.futures.Future[None]) -> None:
        """On the loop: one task waits for the connections of the running drain."""
        if future.done():
            return
        task = self._drain_task
        if task is None or task.done() or self._drain_task_for is not future:
            # (a task of a drain that resume() ended may still be finishing)
            self._drain_task = asyncio.ensure_future(self._run_drain(future))
            self._drain_task_for = future
        elif self._ended is not None:
            self._ended.set()  # a new deadline: look again now

    async def _run_drain(self, future: concurrent.futures.Future[None]) -> None:
        assert self._ended is not None
        while len(self._registry) and not future.done():
            at = self._drain_at
            remaining = None if at is None else at - time.monotonic()
            if remaining is not None and remaining <= 0:
                await self._close_at_drain_deadline()
                break
            self._ended.clear()
            if not len(self._registry):
                break
            wait = _DRAIN_RECHECK_S if remaining is None else min(remaining, _DRAIN_RECHECK_S)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._ended.wait(), wait)
        if not future.done():
            log.info("drained: %d connection(s) left", len(self._registry))
            self._finish_drain(future)

    async def _close_at_drain_deadline(self) -> None:
        connections = self._registry.values()
        if not connections:
            return
        log.info("drain deadline: closing %d connection(s)", len(connections))
        closing = asyncio.gather(
            *(c.close("server_draining", DRAIN_DEADLINE_MESSAGE) for c in connections),
            return_exceptions=True,
        )
        try:
            await asyncio.wait_for(closing, self.shutdown_timeout)
        except asyncio.TimeoutError:
            left = [c.tag for c in self._registry.values()]
            log.warning(
                "drain deadline: %d connection(s) did not close within %.1f s: %s",
                len(left),
                self.shutdown_timeout,
                ", ".join(left),
            )

    async def shutdown(self) -> None:
        """Close every connection (reason ``server_shutdown``) within ``shutdown_timeout``
        seconds, and refuse offers from now on. Run on the server's loop; idempotent."""
        self._shutting_down = True
        if self._prune_timer is not None:
            self._prune_timer.cancel()
            self._prune_timer = None
        connections = self._registry.values()
        if connections:
            log.info("shutting down: closing %d connection(s)", len(connections))
            closing = asyncio.gather(
                *(c.close("server_shutdown") for c in connections), return_exceptions=True
            )
            try:
                await asyncio.wait_for(closing, self.shutdown_timeout)
            except asyncio.TimeoutError:
                left = [c.tag for c in self._registry.values()]
                log.warning(
                    "shutdown: %d connection(s) did not close within %.1f s: %s",
                    len(left),
                    self.shutdown_timeout,
                    ", ".join(left),
                )
        lifecycle.unregister(self)
        loop = asyncio.get_running_loop()
        if not lifecycle.servers_on(loop):
            await lifecycle.run_loop_hooks(loop)  # e.g. an agent-check responder

    def release_handlers(self) -> None:
        """Last resort when the server's loop is gone (interpreter exit): stop every
        connection's workers and run its handler's ``shutdown()`` here and now."""
        self._shutting_down = True
        for connection in self._registry.values():
            try:
                connection.runner.stop()
            except Exception:
                log.exception("%s: stopping the handler at exit failed", connection.tag)

    def stats(self) -> Stats:
        """What this server holds right now (any thread; a consistent-enough snapshot)."""
        connections = self._registry.values()
        outputs = {c.tag: len(c.outputs) for c in connections}
        with self._leftovers_lock:
            leftover_outputs = sum(len(q) for _, q, _ in self._leftovers.values())
            leftovers = len(self._leftovers)
        return Stats(
            connections=len(self._registry),
            pending=self._registry.pending,
            connected=sum(c.connected_at is not None for c in connections),
            closed_total=self._closed_total,
            worker_threads=sum(c.runner.alive_threads for c in connections),
            stuck_workers=sum(t.is_alive() for t in self._stuck),
            input_frames_dropped=sum(c.runner.dropped_inputs for c in connections),
            messages_dropped=sum(c.message_drops.count for c in connections),
            outputs_dropped=sum(c.outputs.drops.count for c in connections),
            output_queue_depths=outputs,
            pending_messages=sum(len(c._pending_messages) for c in connections),
            leftover_connections=leftovers,
            leftover_outputs=leftover_outputs,
            audio_frames_queued=sum(c.queued_audio_frames for c in connections),
            shutting_down=self._shutting_down,
            jitter={
                c.tag: c.jitter_buffer.stats() for c in connections if c.jitter_buffer is not None
            },
            draining=self._draining,
            concurrency_limit=self._registry.limit,
        )
