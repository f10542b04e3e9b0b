"""A Gradio app seen over HTTP, the way the browser sees it (Gradio 5 and 6).

- :class:`GradioApp`: the config (``GET /config``), component server functions
  (``POST /gradio_api/component_server/``) and the dependencies of a component's events.
- :class:`GradioSession`: one browser tab (one ``session_hash``). It runs events through
  the queue (``POST /gradio_api/queue/join`` + one multiplexed SSE reader on
  ``GET /gradio_api/queue/data``), or directly (``POST /gradio_api/run/predict``) for
  ``queue=False`` events, and honours each event's ``trigger_mode`` as Gradio's frontend
  does (``once``: ignore while running; ``always_last``: run once more with the latest
  data; ``multiple``: run concurrently). Streaming (generator) events are followed to the
  end, applying Gradio's output diffs.

  The SSE stream of a session that has another event running can carry an event's
  messages, its ``process_completed`` included, before the reply of its
  ``queue/join`` has been read: messages of event ids not yet known are kept and handed
  to the event when its join returns, as Gradio's JS client does
  (``pending_stream_messages``).

Only httpx (a Gradio dependency) is needed, so this works in any implementation's venv.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

OutputCallback = Callable[[list[Any]], None]


class GradioError(RuntimeError):
    """An event failed on the server, or the server answered something unexpected."""


@dataclass
class HttpReply:
    """Status code and body (parsed JSON when possible, else the text) of an HTTP reply."""

    status: int
    body: Any


class GradioApp:
    """A launched Gradio app at ``url``."""

    def __init__(self, url: str, *, timeout: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self.http = httpx.AsyncClient(base_url=self.url, timeout=timeout)
        self._config: dict[str, Any] | None = None

    async def aclose(self) -> None:
        await self.http.aclose()

    async def config(self) -> dict[str, Any]:
        """The app config (cached after the first call)."""
        if self._config is None:
            reply = await self.http.get("/config")
            reply.raise_for_status()
            self._config = reply.json()
        return self._config

    async def component(self, component_id: int) -> dict[str, Any]:
        for component in (await self.config())["components"]:
            if component["id"] == component_id:
                return component
        raise GradioError(f"no component {component_id} in the app config")

    async def dependency(self, component_id: int, event: str) -> dict[str, Any] | None:
        """The first dependency triggered by ``event`` of component ``component_id``."""
        found = await self.dependencies(component_id, event)
        return found[0] if found else None

    async def dependencies(self, component_id: int, event: str) -> list[dict[str, Any]]:
        """Every dependency triggered by ``event`` of component ``component_id``, in order."""
        return [
            dependency
            for dependency in (await self.config())["dependencies"]
            if [component_id, event] in [list(t) for t in dependency.get("targets", [])]
        ]

    async def server_fn(
        self, component_id: int, fn_name: str, data: Any, session_hash: str
    ) -> HttpReply:
        """Call a component server function (``@server``), as Gradio's JS client does."""
        reply = await self.http.post(
            "/gradio_api/component_server/",
            json={
                "component_id": component_id,
                "fn_name": fn_name,
                "data": data,
                "session_hash": session_hash,
            },
        )
        try:
            body: Any = reply.json()
        except ValueError:
            body = reply.text
        return HttpReply(reply.status_code, body)

    def session(self) -> GradioSession:
        return GradioSession(self)


@dataclass
class _Pending:
    future: asyncio.Future[list[Any]]
    on_output: OutputCallback | None
    data: list[Any] | None = None
    generating: bool = False


@dataclass
class _DependencyState:
    running: int = 0
    queued: list[Any] | None = None
    done: list[asyncio.Future[list[Any] | None]] = field(default_factory=list)
    runs: set[asyncio.Task[Any]] = field(default_factory=set)


def apply_diff(value: Any, diff: list[Any]) -> Any:
    """Apply one output's Gradio streaming diff (``[[action, path, value], ...]``)."""
    for action, path, new in diff:
        if not path:
            if action == "replace":
                value = new
            elif action == "append":
                value = value + new
            else:
                raise GradioError(f"unsupported diff action {action!r} at the root")
            continue
        target = value
        for key in path[:-1]:
            target = target[key]
        last = path[-1]
        if action == "replace":
            target[last] = new
        elif action == "append":
            target[last] += new
        elif action == "add":
            if isinstance(target, list):
                target.insert(int(last), new)
            else:
                target[last] = new
        elif action == "delete":
            if isinstance(target, list):
                del target[int(last)]
            else:
                del target[last]
        else:
            raise GradioError(f"unsupported diff action {action!r}")
    return value


class GradioSession:
    """One browser tab of a :class:`GradioApp` (see the module docstring)."""

    def __init__(self, app: GradioApp) -> None:
        self.app = app
        self.session_hash = secrets.token_hex(6)
        self._pending: dict[str, _Pending] = {}
        # messages that came before their event's join reply, by event id
        self._early: dict[str, list[dict[str, Any]]] = {}
        # ids of events whose run() has returned: their late messages are dropped
        self._finished: set[str] = set()
        self._reader: asyncio.Task[None] | None = None
        self._states: dict[int, _DependencyState] = {}
        self._tasks: set[asyncio.Task[Any]] = set()

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader
        for pending in self._pending.values():
            if not pending.future.done():
                pending.future.cancel()
        self._early.clear()

    # -- running events ---------------------------------------------------------------
    async def run(
        self,
        dependency: dict[str, Any],
        data: list[Any],
        *,
        trigger_id: int | None = None,
        on_output: OutputCallback | None = None,
        timeout: float = 10.0,
    ) -> list[Any]:
        """Run ``dependency`` with ``data`` now and return its final output data.

        Raises :class:`GradioError` if the event fails, ``TimeoutError`` after ``timeout`` s.
        """
        if not dependency.get("queue", True):
            reply = await self.app.http.post(
                "/gradio_api/run/predict",
                json={
                    "data": data,
                    "fn_index": dependency["id"],
                    "trigger_id": trigger_id,
                    "session_hash": self.session_hash,
                    "event_data": None,
                },
            )
            if reply.status_code != 200:
                raise GradioError(f"event {dependency['id']} failed: HTTP {reply.status_code}")
            output = list(reply.json().get("data", []))
            if on_output is not None:
                on_output(output)
            return output
        reply = await self.app.http.post(
            "/gradio_api/queue/join",
            json={
                "data": data,
                "fn_index": dependency["id"],
                "trigger_id": trigger_id,
                "session_hash": self.session_hash,
                "event_data": None,
            },
        )
        if reply.status_code != 200:
            raise GradioError(f"queue/join failed: HTTP {reply.status_code}: {reply.text[-1500:]}")
        event_id = reply.json()["event_id"]
        future: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        self._pending[event_id] = _Pending(future, on_output)
        for message in self._early.pop(event_id, []):
            self._dispatch(message)
        self._ensure_reader()
        try:
            return await asyncio.wait_for(future, timeout)
        finally:
            self._pending.pop(event_id, None)
            self._finished.add(event_id)

    def fire(
        self,
        dependency: dict[str, Any],
        data: list[Any],
        *,
        trigger_id: int | None = None,
        on_output: OutputCallback | None = None,
        on_error: Callable[[BaseException], None] | None = None,
        timeout: float = 30.0,
    ) -> asyncio.Future[list[Any] | None]:
        """Trigger ``dependency`` as the frontend would, honouring its ``trigger_mode``.

        Returns a future that resolves when this trigger's run (or the run it was folded
        into) has finished: its output data, or ``None`` if the trigger was dropped
        (``trigger_mode="once"`` while running).
        """
        loop = asyncio.get_running_loop()
        done: asyncio.Future[list[Any] | None] = loop.create_future()
        state = self._states.setdefault(dependency["id"], _DependencyState())
        mode = dependency.get("trigger_mode") or "once"
        if state.running and mode == "once":
            done.set_result(None)
            return done
        if state.running and mode == "always_last":
            state.queued = data
            state.done.append(done)
            return done

        async def runner(payload: list[Any], waiters: list[asyncio.Future[Any]]) -> None:
            state.running += 1
            try:
                result = await self.run(
                    dependency,
                    payload,
                    trigger_id=trigger_id,
                    on_output=on_output,
                    timeout=timeout,
                )
            except BaseException as exc:
                if on_error is not None and not isinstance(exc, asyncio.CancelledError):
                    on_error(exc)
                for waiter in waiters:
                    if not waiter.done():
                        waiter.set_exception(exc)
                        waiter.exception()  # mark retrieved: callers may not await
                if isinstance(exc, asyncio.CancelledError):
                    raise
                return
            finally:
                state.running -= 1
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(result)
            if state.queued is not None and not state.running:
                queued, state.queued = state.queued, None
                waiting, state.done = state.done, []
                self._spawn(runner(queued, waiting), state)

        self._spawn(runner(data, [done]), state)
        return done

    def _spawn(self, coro: Any, state: _DependencyState | None = None) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        if state is not None:
            state.runs.add(task)
            task.add_done_callback(state.runs.discard)

    async def settled(self, dependency: dict[str, Any], timeout: float = 30.0) -> None:
        """Return once every run of ``dependency`` fired so far, and every trigger queued
        behind one, has finished (a queued run starts before the one it waits for ends).

        Raises ``TimeoutError`` after ``timeout`` seconds.
        """
        state = self._states.get(dependency["id"])
        deadline = asyncio.get_running_loop().time() + timeout
        while state is not None and state.runs:
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                raise TimeoutError(f"runs of dependency {dependency['id']} still going")
            await asyncio.wait(set(state.runs), timeout=remaining)

    # -- the SSE reader -----------------------------------------------------------------
    def _ensure_reader(self) -> None:
        if self._reader is None or self._reader.done():
            self._reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        while self._pending:
            try:
                async with self.app.http.stream(
                    "GET",
                    "/gradio_api/queue/data",
                    params={"session_hash": self.session_hash},
                    timeout=httpx.Timeout(10.0, read=None),
                ) as response:
                    async for line in response.aiter_lines():
                        if not line.startswith("data:"):
                            continue
                        message = json.loads(line[5:])
                        if message.get("msg") == "close_stream":
                            break
                        self._dispatch(message)
            except (httpx.HTTPError, ValueError) as exc:
                for pending in list(self._pending.values()):
                    if not pending.future.done():
                        pending.future.set_exception(GradioError(f"queue stream failed: {exc}"))
                return

    def _dispatch(self, message: dict[str, Any]) -> None:
        kind = message.get("msg")
        event_id = message.get("event_id") or ""
        pending = self._pending.get(event_id)
        if kind == "unexpected_error":
            for waiting in list(self._pending.values()):
                if not waiting.future.done():
                    waiting.future.set_exception(
                        GradioError(f"unexpected error: {message.get('message')}")
                    )
            return
        if pending is None:
            if event_id and event_id not in self._finished:
                self._early.setdefault(event_id, []).append(message)
            return
        if pending.future.done():
            return
        output = message.get("output") or {}
        if kind == "process_generating":
            data = output.get("data")
            if data is None:
                return
            if not pending.generating:
                pending.data = copy.deepcopy(list(data))
                pending.generating = True
            else:
                assert pending.data is not None
                pending.data = [
                    apply_diff(old, diff) for old, diff in zip(pending.data, data, strict=False)
                ]
            if pending.on_output is not None:
                pending.on_output(copy.deepcopy(pending.data))
        elif kind == "process_completed":
            if not message.get("success", False):
                error = output.get("error") or message.get("title") or "the event failed"
                pending.future.set_exception(GradioError(str(error)))
                return
            data = output.get("data")
            final = list(data) if data is not None else (pending.data or [])
            if pending.generating and all(value is None for value in final):
                final = pending.data or final  # a finished stream repeats its last value
            if pending.on_output is not None and not pending.generating:
                pending.on_output(final)
            pending.future.set_result(final)
