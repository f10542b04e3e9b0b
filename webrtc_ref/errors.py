"""What the browser is told when user code fails.

Gradio's own policy: the exception's text reaches the browser when the app opted in
(``launch(show_error=True)``) or when the exception is meant for users (``gr.Error``);
otherwise the browser gets a generic message with a short error id, and the server's log
line (with the full traceback) carries the same id. Exception texts may hold paths, URLs
or tokens, so by default they stay on the server.
"""

from __future__ import annotations

import builtins
import logging
import secrets
import sys

from webrtc_ref.context import current_context_or_none


def new_error_id() -> str:
    """A short random id that ties a browser's error message to the server's log line."""
    return secrets.token_hex(4)


class WebRTCError(Exception):
    """An error meant for the app's users: raised or yielded by handler code, its message
    is shown in the browser as written (whatever ``show_error`` says), and the stream ends
    (``end_stream`` with reason ``"error"``)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = str(message)


class Warning(builtins.Exception):
    """A warning for the app's users; the stream goes on.

    Creating one in handler code shows ``message`` in the browser at once
    (``{"type": "warning", "message": ..., "data": ...}``); it may also be yielded,
    returned or raised from handler code (shown once; a raised one ends only the call that
    raised it, the stream goes on). Outside handler code, creating one sends nothing.
    """

    def __init__(self, message: str = "Warning issued.") -> None:
        super().__init__(message)
        self.message = str(message)
        self.sent = False
        context = current_context_or_none()
        if context is not None:
            self.sent = True
            context.send_message({"type": "warning", "message": self.message, "data": self.message})


def warning_message(warning: Warning) -> dict[str, str] | None:
    """The browser message for ``warning``, or ``None`` if it was shown already."""
    if warning.sent:
        return None
    warning.sent = True
    return {"type": "warning", "message": warning.message, "data": warning.message}


def is_user_facing(exc: BaseException) -> bool:
    """True for exceptions whose text is written for the app's users (``gr.Error``,
    :class:`WebRTCError`)."""
    if isinstance(exc, WebRTCError):
        return True
    exceptions = sys.modules.get("gradio.exceptions")
    error = getattr(exceptions, "Error", None) if exceptions is not None else None
    return isinstance(error, type) and isinstance(exc, error)


def public_message(exc: BaseException, error_id: str, *, show_error: bool) -> str:
    """The text for the browser about ``exc`` (see the module docstring)."""
    if is_user_facing(exc):
        return str(getattr(exc, "message", None) or exc)
    if show_error:
        return f"{type(exc).__name__}: {exc}"
    return f"The stream handler failed (error id {error_id}). The server's log has the details."


def report_handler_error(
    log: logging.Logger, tag: str, where: str, exc: BaseException, *, show_error: bool
) -> str:
    """Log ``exc`` (raised by user code in ``where``) with its traceback under a new
    error id, and return the text its client may see (:func:`public_message`). Any
    thread."""
    error_id = new_error_id()
    log.error(
        "%s: error %s in the stream handler (%s): %s: %s",
        tag,
        error_id,
        where,
        type(exc).__name__,
        exc,
        exc_info=exc,
    )
    return public_message(exc, error_id, show_error=show_error)
