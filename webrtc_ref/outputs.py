"""Additional outputs: values a stream handler sends to other Gradio components.

A handler yields (or returns) ``AdditionalOutputs(*values)``, alone or paired with a media
frame as ``(frame, AdditionalOutputs(...))``. Each connection keeps a FIFO of them; the
server tells the browser ``"change"`` on the data channel, the browser fires the
component's ``state_change`` event, and the function registered with
``WebRTC.on_additional_outputs`` receives ``fn(*inputs, *outputs.args)``, once per item,
in order.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
from typing import Any

from webrtc_ref.drops import DropCounter

logger = logging.getLogger("webrtc_ref.outputs")


class AdditionalOutputs:
    """Values for the components listed in ``WebRTC.on_additional_outputs(outputs=...)``.

    ``args`` is the tuple of positional values, in the order of the listener's parameters
    that follow its explicit ``inputs``.
    """

    __slots__ = ("args",)

    def __init__(self, *args: Any) -> None:
        self.args: tuple[Any, ...] = args

    def __repr__(self) -> str:
        return f"AdditionalOutputs{self.args!r}"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, AdditionalOutputs) and self.args == other.args

    __hash__ = None  # type: ignore[assignment]


class CloseStream:
    """Yielded or returned by handler code to end the stream: what was produced before it
    is sent (queued audio is played out), then the browser is told ``end_stream`` with
    reason ``"handler_closed"`` and ``msg``, and the connection closes.

    It may also stand beside media, as ``(frame, CloseStream(...))``: the frame is sent
    first.
    """

    __slots__ = ("msg",)

    def __init__(self, msg: str = "Stream closed") -> None:
        if not isinstance(msg, str):
            raise TypeError(f"CloseStream(msg) takes a str, got {type(msg).__name__}")
        self.msg = msg

    def __repr__(self) -> str:
        return f"CloseStream({self.msg!r})"


#: Additional outputs one connection may hold for the browser before the oldest are dropped.
MAX_QUEUED_OUTPUTS = 1000


class OutputQueue:
    """A thread-safe FIFO of :class:`AdditionalOutputs` for one connection, at most
    ``capacity`` items.

    Items wait here until the browser asks for them, however late its data channel opens.
    When a handler produces faster than the browser fetches (or nobody fetches at all),
    the oldest items are dropped, counted in ``drops`` and logged (rate-limited). ``put``
    may be called from any thread; ``pop`` returns ``None`` when empty.

    ``consumer_lock`` (threads) and :meth:`async_consumer_lock` (the Gradio server's event
    loop) serialise the consumers of this one connection, so each item reaches
    ``on_additional_outputs`` once and in order; nothing is shared between connections.
    """

    def __init__(self, capacity: int = MAX_QUEUED_OUTPUTS, *, tag: str = "") -> None:
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1:
            raise ValueError(f"capacity must be a positive int; got {capacity!r}")
        self.capacity = capacity
        self._items: collections.deque[AdditionalOutputs] = collections.deque()
        self._lock = threading.Lock()
        self.drops = DropCounter(
            logger,
            f"additional outputs nobody fetched (more than {capacity} were waiting)",
            tag,
        )
        self.consumer_lock = threading.Lock()
        self._async_lock: asyncio.Lock | None = None
        # One async waiter at a time (wait()): its loop and event, set from put().
        self._waiter: tuple[asyncio.AbstractEventLoop, asyncio.Event] | None = None

    def put(self, item: AdditionalOutputs) -> None:
        if not isinstance(item, AdditionalOutputs):
            raise TypeError(f"expected AdditionalOutputs, got {type(item).__name__}")
        with self._lock:
            self._items.append(item)
            excess = len(self._items) - self.capacity
            for _ in range(excess):
                self._items.popleft()
            waiter = self._waiter
        self.drops.add(excess)
        if waiter is not None:
            loop, event = waiter
            try:
                loop.call_soon_threadsafe(event.set)
            except RuntimeError:  # the waiter's loop is closed
                pass

    def pop(self) -> AdditionalOutputs | None:
        with self._lock:
            return self._items.popleft() if self._items else None

    async def wait(self, timeout: float) -> bool:
        """Wait (on the caller's loop, never blocking it) until an item is queued or
        ``timeout`` seconds passed; return whether an item is waiting. Meant for one
        consumer at a time (the latest caller is the one woken)."""
        loop = asyncio.get_running_loop()
        event = asyncio.Event()
        with self._lock:
            if self._items:
                return True
            self._waiter = (loop, event)
        try:
            await asyncio.wait_for(event.wait(), timeout)
        except asyncio.TimeoutError:
            pass
        finally:
            with self._lock:
                if self._waiter is not None and self._waiter[1] is event:
                    self._waiter = None
        return len(self) > 0

    def async_consumer_lock(self) -> asyncio.Lock:
        """The lock async consumers hold (created on first use, on the caller's loop)."""
        with self._lock:
            if self._async_lock is None:
                self._async_lock = asyncio.Lock()
            return self._async_lock

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)
