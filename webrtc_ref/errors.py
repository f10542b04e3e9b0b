"""What the browser is told when user code fails.

Gradio's own policy: the exception's text reaches the browser when the app opted in
(``launch(show_error=True)``) or when the exception is meant for users (``gr.Error``);
otherwise the browser gets a generic message with a short error id, and the server's log
line (with the full traceback) carries the same id. Exception texts may hold paths, URLs
or tokens, so by default they stay on the server.
"""

from __future__ import annotations

import secrets
import sys


def new_error_id() -> str:
    """A short random id that ties a browser's error message to the server's log line."""
    return secrets.token_hex(4)


def is_user_facing(exc: BaseException) -> bool:
    """True for exceptions whose text is written for the app's users (``gr.Error``)."""
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
