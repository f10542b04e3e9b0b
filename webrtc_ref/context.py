"""The connection a piece of handler code is serving: :func:`get_current_context`.

Every worker the runtime starts for a connection (the receive and emit threads of a
``StreamHandler``, the private loop of an ``AsyncStreamHandler``, the video and generator
workers, the thread that runs ``shutdown()``) runs with that connection's
:class:`Context` set in a :class:`contextvars.ContextVar`. Threads and tasks user code
starts from there inherit it where Python copies contexts (``asyncio`` tasks,
``asyncio.to_thread``, ``contextvars.copy_context().run``); a plain ``threading.Thread``
started by user code does not.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol


class _Sender(Protocol):
    def send_message(self, message: str | dict[str, Any]) -> None: ...


@dataclass(frozen=True)
class Context:
    """What handler code may know about the connection it serves.

    ``webrtc_id`` is the id the browser chose for the connection (the ``WebRTC``
    component's value while it streams); ``video_frame`` the newest camera frame of an
    audio-video connection.
    """

    webrtc_id: str
    _sender: Callable[[], _Sender | None] = field(repr=False, compare=False, default=lambda: None)
    _video: Callable[[], Any] = field(repr=False, compare=False, default=lambda: None)

    def send_message(self, message: str | dict[str, Any]) -> None:
        """Send ``message`` to this connection's browser (no-op once it has ended)."""
        sender = self._sender()
        if sender is not None:
            sender.send_message(message)

    @property
    def video_frame(self) -> Any:
        """The newest camera frame of an audio-video connection, RGB ``ndarray (H, W, 3)
        uint8`` (``None`` before the first one, and for other modalities). The array is
        shared: copy it before changing it. E.g. a ReplyOnPause reply function looks at
        what the camera shows when the user stopped talking."""
        return self._video()


_current: contextvars.ContextVar[Context | None] = contextvars.ContextVar(
    "webrtc_ref_context", default=None
)


def get_current_context() -> Context:
    """The :class:`Context` of the connection the calling handler code serves.

    Works from any handler code the runtime calls (sync or async, ``receive``, ``emit``,
    ``start_up``, ``shutdown``, a ReplyOnPause reply function, a video or receive-mode
    function). Raises ``RuntimeError`` anywhere else.
    """
    context = _current.get()
    if context is None:
        raise RuntimeError(
            "get_current_context() was called outside a stream handler: it works only in "
            "code that webrtc_ref runs for a connection (and in asyncio tasks it starts)"
        )
    return context


def current_context_or_none() -> Context | None:
    """Like :func:`get_current_context`, but ``None`` outside handler code."""
    return _current.get()


@contextmanager
def bound(context: Context) -> Iterator[None]:
    """Run the ``with`` body with ``context`` as the current context."""
    token = _current.set(context)
    try:
        yield
    finally:
        _current.reset(token)
