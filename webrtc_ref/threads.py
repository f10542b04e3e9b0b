"""Running blocking code (user code, joins) off the event loop, on threads of its own."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any, TypeVar

R = TypeVar("R")


async def run_in_thread(
    fn: Callable[[], R], name: str, *, abandoned: Callable[[R], None] | None = None
) -> R:
    """Run blocking ``fn`` (user code) on a new daemon thread and await its result.

    The event loop never waits on user code; a dedicated thread (rather than the loop's
    default executor) also works while that executor is shutting down. If the awaiting
    task is cancelled before ``fn`` returns, ``fn`` still runs to its end, and its result
    is handed to ``abandoned`` (on that thread), so that what it made can be released.
    """
    loop = asyncio.get_running_loop()
    done: asyncio.Future[R] = loop.create_future()
    gave_up = threading.Event()
    done.add_done_callback(lambda f: gave_up.set() if f.cancelled() else None)

    def settle(result: Any, error: BaseException | None) -> None:
        if done.done():
            return
        if error is not None:
            done.set_exception(error)
        else:
            done.set_result(result)

    def run() -> None:
        result: Any = None
        error: BaseException | None = None
        try:
            result = fn()
        except BaseException as exc:
            error = exc
        if gave_up.is_set():
            if error is None and abandoned is not None:
                abandoned(result)
            return
        try:
            loop.call_soon_threadsafe(settle, result, error)
        except RuntimeError:  # the loop closed meanwhile
            if error is None and abandoned is not None:
                abandoned(result)

    threading.Thread(target=run, name=name, daemon=True).start()
    return await done
