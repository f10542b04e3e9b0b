"""Additional outputs: values a stream handler sends to other Gradio components.

A handler yields (or returns) ``AdditionalOutputs(*values)``, alone or paired with a media
frame as ``(frame, AdditionalOutputs(...))``. Each connection keeps a FIFO of them; the
server tells the browser ``"change"`` on the data channel, the browser fires the
component's ``state_change`` event, and the function registered with
``WebRTC.on_additional_outputs`` receives ``fn(*inputs, *outputs.args)``, once per item,
in order.
"""

from __future__ import annotations

import collections
import threading
from typing import Any


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


class OutputQueue:
    """A thread-safe, unbounded FIFO of :class:`AdditionalOutputs` for one connection.

    Items are never dropped: they wait here until the browser asks for them, however late
    its data channel opens. ``put`` may be called from any thread; ``pop`` returns ``None``
    when empty.
    """

    def __init__(self) -> None:
        self._items: collections.deque[AdditionalOutputs] = collections.deque()
        self._lock = threading.Lock()

    def put(self, item: AdditionalOutputs) -> None:
        if not isinstance(item, AdditionalOutputs):
            raise TypeError(f"expected AdditionalOutputs, got {type(item).__name__}")
        with self._lock:
            self._items.append(item)

    def pop(self) -> AdditionalOutputs | None:
        with self._lock:
            return self._items.popleft() if self._items else None

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)
