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
  (in the main thread), SIGTERM is turned into ``KeyboardInterrupt``, exactly like
  Ctrl-C, so the path above runs;
- **interpreter exit** (``atexit``): connections still open (an app launched with
  ``prevent_thread_lock=True`` whose script ends) are closed on their loop if it still
  runs; otherwise their handlers are shut down directly.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import logging
import signal
import threading
import weakref
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


def watch_uvicorn(uvicorn_server: Any) -> None:
    """Close this loop's connections when ``uvicorn_server`` (Gradio's) shuts down.

    Wraps the instance's ``shutdown`` coroutine, which uvicorn awaits on its loop once it
    was told to exit, before it stops serving; idempotent.
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


def install_signal_handlers() -> None:
    """Make SIGTERM behave like Ctrl-C, unless the process already handles it.

    Only from the main thread (Python allows signal handlers nowhere else); idempotent.
    """
    if threading.current_thread() is not threading.main_thread():
        return
    sigterm = getattr(signal, "SIGTERM", None)
    if sigterm is None or signal.getsignal(sigterm) is not signal.SIG_DFL:
        return
    signal.signal(sigterm, _sigterm_as_interrupt)


def _sigterm_as_interrupt(signum: int, frame: Any) -> None:
    log.info("SIGTERM: closing the streams and stopping, as for Ctrl-C")
    raise KeyboardInterrupt


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
