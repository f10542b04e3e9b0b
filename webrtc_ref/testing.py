"""Helpers for tests of webrtc_ref apps: free loopback ports, launched apps, deadlines.

Used by webrtc_ref's own tests, the conformance suite and the browser tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import gradio as gr

#: Multiplies every deadline in tests; raise it on slow machines (env WEBRTC_REF_TIMEOUT_SCALE).
TIMEOUT_SCALE = float(os.environ.get("WEBRTC_REF_TIMEOUT_SCALE", "1"))


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port that is free on ``host`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def launched(app: gr.Blocks, host: str = "127.0.0.1") -> Iterator[str]:
    """Launch ``app`` on a free loopback port in this process; yield its base URL; close it."""
    port = free_port(host)
    app.launch(
        server_name=host,
        server_port=port,
        prevent_thread_lock=True,
        quiet=True,
        show_error=True,
    )
    try:
        yield f"http://{host}:{port}"
    finally:
        app.close()


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``predicate`` until true; raise ``TimeoutError`` naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout * TIMEOUT_SCALE
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"timed out after {timeout * TIMEOUT_SCALE:.1f} s waiting for {what}"
            )
        time.sleep(0.01)


async def async_wait_until(
    predicate: Callable[[], bool | Awaitable[bool]], timeout: float, what: str
) -> None:
    """Async :func:`wait_until`; ``predicate`` may be sync or async."""
    deadline = time.monotonic() + timeout * TIMEOUT_SCALE
    while True:
        result = predicate()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"timed out after {timeout * TIMEOUT_SCALE:.1f} s waiting for {what}"
            )
        await asyncio.sleep(0.01)
