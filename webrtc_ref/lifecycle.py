"""The process's side of the lifecycle: every connection is closed when the app stops.

A :class:`~webrtc_ref.server.StreamServer` registers here when it answers its first offer
(its event loop is known from then on). Three things then close its connections through
the normal path (``end_stream`` with reason ``server_shutdown`` to the browser, the
handler's ``shutdown()`` exactly once, workers and peer connection closed), within the
server's ``shutdown_timeout``:

- **the Gradio server stopping**: ``Blocks.close()``, Ctrl-C in ``demo.launch()``, and
  anything else that stops Gradio's uvicorn server. The server's ``shutdown`` coroutine is
  wrapped (once per server) so that the connections served on its loop close first,
  while the loop still runs and the browsers can still be told;
- **SIGTERM**: if the process has no handler of its own for it when a stream is set up
  (in the main thread), the first SIGTERM *drains* every stream server of the process
  (:meth:`~webrtc_ref.server.StreamServer.start_drain`: new offers get
  ``server_draining``, live connections go on) for up to the drain grace
  (:func:`drain_grace`: ``WEBRTC_REF_DRAIN_GRACE`` seconds, default
  :data:`DEFAULT_DRAIN_GRACE`; :func:`set_drain_grace`), or until no connection is left
  if that comes first, and is then turned into ``KeyboardInterrupt``, exactly like Ctrl-C,
  so the path above runs and closes what is left with ``server_shutdown``. A second
  SIGTERM during the grace, or a grace of 0, stops at once; Ctrl-C (SIGINT) never drains.
  A ``uvicorn.Server`` passed to :func:`watch_uvicorn` drains the same way under the
  signal handler uvicorn installs (the drain's end tells uvicorn to exit);
- **interpreter exit** (``atexit``): connections still open (an app launched with
  ``prevent_thread_lock=True`` whose script ends) are closed on their loop if it still
  runs; otherwise their handlers are shut down directly.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import logging
import math
import os
import signal
import threading
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from webrtc_ref.server import StreamServer

log = logging.getLogger("webrtc_ref.lifecycle")

_lock = threading.Lock()
#: Live servers, each with the loop it serves on.
_servers: weakref.WeakKeyDictionary[StreamServer, asyncio.AbstractEventLoop] = (
    weakref.WeakKeyDictionary()
)
_atexit_registered = False
_wrapped_uvicorn: weakref.WeakSet[Any] = weakref.WeakSet()
#: Every stream server of the process, served yet or not (SIGTERM drains them all).
_every_server: weakref.WeakSet[StreamServer] = weakref.WeakSet()
#: Coroutine functions run on a loop when it shuts down (after its servers), by loop.
_loop_hooks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, list[Any]] = (
    weakref.WeakKeyDictionary()
)

#: Seconds the first SIGTERM lets live connections run on before the process stops.
DEFAULT_DRAIN_GRACE = 2.0
#: The environment variable that sets the drain grace (seconds, >= 0).
DRAIN_GRACE_ENV = "WEBRTC_REF_DRAIN_GRACE"
_drain_grace: float | None = None
#: SIGTERM's progress: "idle", "draining" (the first one drains), "stop_requested" (the
#: drain is over; the signal to stop is on its way), "stopping" (KeyboardInterrupt raised;
#: later SIGTERMs are ignored so they cannot interrupt the shutdown itself).
_term_state = "idle"
_term_lock = threading.Lock()


def _check_grace(value: object, source: str) -> float:
    try:
        grace = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        grace = math.nan
    if isinstance(value, bool) or not math.isfinite(grace) or grace < 0:
        raise ValueError(f"{source} must be a number of seconds >= 0; got {value!r}")
    return grace


def set_drain_grace(seconds: float | None) -> None:
    """Set the SIGTERM drain grace in seconds (``None``: back to the environment
    variable or the default). Raises ``ValueError`` for a negative or non-number value."""
    global _drain_grace
    _drain_grace = None if seconds is None else _check_grace(seconds, "the drain grace")


def drain_grace() -> float:
    """Seconds the first SIGTERM drains before the process stops: :func:`set_drain_grace`'s
    value, else ``$WEBRTC_REF_DRAIN_GRACE``, else :data:`DEFAULT_DRAIN_GRACE`. A malformed
    environment value raises ``ValueError`` naming the variable."""
    if _drain_grace is not None:
        return _drain_grace
    raw = os.environ.get(DRAIN_GRACE_ENV)
    if raw is None or not raw.strip():
        return DEFAULT_DRAIN_GRACE
    return _check_grace(raw.strip(), DRAIN_GRACE_ENV)


def track(server: StreamServer) -> None:
    """``server`` exists (any thread): SIGTERM drains it even before its first offer."""
    with _lock:
        _every_server.add(server)


def every_server() -> list[StreamServer]:
    with _lock:
        return list(_every_server)


def on_loop_shutdown(loop: asyncio.AbstractEventLoop, hook: Any) -> None:
    """Run ``await hook()`` on ``loop`` when its servers shut down (after them)."""
    with _lock:
        _loop_hooks.setdefault(loop, []).append(hook)


def drain_all(deadline: float | None = None) -> list[concurrent.futures.Future[None]]:
    """Start draining every stream server of the process (any thread); the futures
    complete as each has no connection left."""
    return [server.start_drain(deadline) for server in every_server()]


def register(server: StreamServer, loop: asyncio.AbstractEventLoop) -> None:
    """``server`` serves connections on ``loop`` (call on that loop; idempotent)."""
    global _atexit_registered
    with _lock:
        _servers[server] = loop
        if not _atexit_registered:
            atexit.register(_at_exit)
            _atexit_registered = True


def unregister(server: StreamServer) -> None:
    with _lock:
        _servers.pop(server, None)


def servers_on(loop: asyncio.AbstractEventLoop) -> list[StreamServer]:
    with _lock:
        return [server for server, its_loop in _servers.items() if its_loop is loop]


async def shutdown_loop(loop: asyncio.AbstractEventLoop) -> None:
    """Shut down every server on ``loop`` (run on it), each within its own bound."""
    servers = servers_on(loop)
    if servers:
        await asyncio.gather(*(server.shutdown() for server in servers), return_exceptions=True)
    await run_loop_hooks(loop)


async def run_loop_hooks(loop: asyncio.AbstractEventLoop) -> None:
    """Run (once) the hooks of :func:`on_loop_shutdown` for ``loop``, on it."""
    with _lock:
        hooks = _loop_hooks.pop(loop, [])
    for hook in hooks:
        try:
            await hook()
        except Exception:
            log.exception("a shutdown hook failed")


def watch_uvicorn(uvicorn_server: Any) -> None:
    """Close this loop's connections when ``uvicorn_server`` (Gradio's, or one serving a
    mounted ``Stream``) shuts down, and drain on SIGTERM first.

    Wraps the instance's ``shutdown`` coroutine, which uvicorn awaits on its loop once it
    was told to exit, before it stops serving; and its ``handle_exit``, the signal handler
    uvicorn installs when it runs in the main thread (``uvicorn.Server.run``), so that the
    first SIGTERM drains as described in the module docstring before uvicorn is told to
    exit. Idempotent.
    """
    if uvicorn_server is None or not callable(getattr(uvicorn_server, "shutdown", None)):
        return
    with _lock:
        if uvicorn_server in _wrapped_uvicorn:
            return
        _wrapped_uvicorn.add(uvicorn_server)
    original = uvicorn_server.shutdown

    async def shutdown(*args: Any, **kwargs: Any) -> Any:
        try:
            await shutdown_loop(asyncio.get_running_loop())
        except Exception:
            log.exception("closing the streams before the server stops failed")
        return await original(*args, **kwargs)

    uvicorn_server.shutdown = shutdown
    original_exit = getattr(uvicorn_server, "handle_exit", None)
    if callable(original_exit):

        def handle_exit(sig: int, frame: Any) -> None:
            # uvicorn's own signal handler (when it runs in the main thread): SIGTERM
            # drains first, as under demo.launch(); SIGINT and a second SIGTERM stop now.
            if sig == getattr(signal, "SIGTERM", None):
                step = _sigterm_step()
                if step == "ignore":
                    return
                if step == "drain":
                    _stop_after_drain_in_thread(drain_all(), lambda: original_exit(sig, None))
                    return
            original_exit(sig, frame)

        uvicorn_server.handle_exit = handle_exit


def install_signal_handlers() -> None:
    """Make SIGTERM drain, then behave like Ctrl-C, unless the process already handles it.

    Only from the main thread (Python allows signal handlers nowhere else); idempotent.
    """
    if threading.current_thread() is not threading.main_thread():
        return
    sigterm = getattr(signal, "SIGTERM", None)
    if sigterm is None or signal.getsignal(sigterm) is not signal.SIG_DFL:
        return
    signal.signal(sigterm, _on_sigterm)


def _sigterm_step() -> str:
    """Advance SIGTERM's state for one more SIGTERM: ``"ignore"`` (already stopping),
    ``"stop"`` (stop now) or ``"drain"`` (the first one: draining has begun)."""
    global _term_state
    with _term_lock:
        state = _term_state
        if state == "stopping":
            log.info("SIGTERM: already stopping")
            return "ignore"
        try:
            grace = drain_grace()
        except ValueError as exc:
            log.error("SIGTERM: %s; stopping without a drain", exc)
            grace = 0.0
        stopping = state != "idle" or grace <= 0
        _term_state = "stopping" if stopping else "draining"
    if stopping:
        log.info("SIGTERM: closing the streams and stopping, as for Ctrl-C")
        return "stop"
    log.info(
        "SIGTERM: draining (new streams are refused) for up to %g s, then stopping; "
        "a second SIGTERM stops at once",
        grace,
    )
    return "drain"


def _on_sigterm(signum: int, frame: Any) -> None:
    step = _sigterm_step()
    if step == "stop":
        raise KeyboardInterrupt
    if step == "drain":
        _stop_after_drain_in_thread(drain_all(), _resend_sigterm)


def _resend_sigterm() -> None:
    os.kill(os.getpid(), signal.SIGTERM)


def _stop_after_drain_in_thread(
    futures: list[concurrent.futures.Future[None]], stop: Callable[[], None]
) -> None:
    """When the drain ends (every connection gone, or the grace over), call ``stop`` from
    a thread of its own, unless a second signal stopped the process meanwhile."""
    grace = drain_grace_or_zero()

    def wait_then_stop() -> None:
        global _term_state
        concurrent.futures.wait(futures, timeout=grace)
        with _term_lock:
            if _term_state != "draining":
                return  # a second signal stopped it already
            _term_state = "stop_requested"
        log.info("SIGTERM drain over: stopping")
        stop()

    threading.Thread(target=wait_then_stop, name="webrtc-ref-drain", daemon=True).start()


def drain_grace_or_zero() -> float:
    """:func:`drain_grace`, or 0 when the environment's value is not usable."""
    try:
        return drain_grace()
    except ValueError:
        return 0.0


def _at_exit() -> None:
    with _lock:
        servers = list(_servers.items())
    for server, loop in servers:
        if not server.connections:
            continue
        timeout = server.shutdown_timeout + 1.0
        if loop.is_running() and not loop.is_closed():
            future = asyncio.run_coroutine_threadsafe(server.shutdown(), loop)
            try:
                future.result(timeout)
                continue
            except (concurrent.futures.TimeoutError, Exception):
                log.warning("closing the streams at exit did not finish in %.0f s", timeout)
        server.release_handlers()
