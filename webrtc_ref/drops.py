"""What a bounded per-connection structure does when it is full: count and say so.

Every per-connection buffer reachable from outside (input blocks waiting for ``receive``,
messages waiting for the data channel, additional outputs nobody fetches) has a cap. When
it drops something it counts it in a :class:`DropCounter`, which logs a warning the first
time and then at most once per ``interval`` seconds with the total so far, so a flood of
drops costs one log line, not one per item. The counts feed ``StreamServer.stats()``.
"""

from __future__ import annotations

import collections
import logging
import threading
import time


class DropCounter:
    """A thread-safe count of dropped items with a rate-limited warning.

    Parameters:
        logger: where the warning goes.
        what: what is dropped and why, e.g. ``"input blocks (receive is more than 1 s
            behind)"``; the warning reads ``"<tag>: dropped N <what>"``.
        tag: the connection's log tag.
        interval: seconds between two warnings.
        level: the log level (WARNING; DEBUG for drops that are the design, such as
            stale video frames when the handler is slower than the camera).
    """

    def __init__(
        self,
        logger: logging.Logger,
        what: str,
        tag: str = "",
        interval: float = 10.0,
        level: int = logging.WARNING,
    ) -> None:
        self._logger = logger
        self._level = level
        self._what = what
        self.tag = tag
        self._interval = interval
        self._lock = threading.Lock()
        self._count = 0
        self._logged_at: float | None = None

    @property
    def count(self) -> int:
        """Items dropped so far."""
        return self._count

    def add(self, n: int = 1) -> None:
        """Count ``n`` more dropped items (any thread); warn if the last warning is old."""
        if n <= 0:
            return
        now = time.monotonic()
        with self._lock:
            self._count += n
            if self._logged_at is not None and now - self._logged_at < self._interval:
                return
            self._logged_at = now
            total = self._count
        self._logger.log(
            self._level, "%s: dropped %d %s (total so far)", self.tag, total, self._what
        )


#: Text messages a connection keeps for a client that cannot take them yet.
MAX_BACKLOG_MESSAGES = 256
#: Their total size (UTF-8 bytes): a few handler messages of the largest size allowed.
MAX_BACKLOG_BYTES = 1 << 20


class MessageBacklog:
    """Text messages waiting to be sent, oldest first, bounded by count and by total
    UTF-8 size; past either bound the oldest are dropped and counted in ``drops``.

    Not thread-safe: the owner touches it from its event loop only.
    """

    def __init__(
        self,
        drops: DropCounter,
        max_messages: int = MAX_BACKLOG_MESSAGES,
        max_bytes: int = MAX_BACKLOG_BYTES,
    ) -> None:
        self.drops = drops
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self._items: collections.deque[tuple[str, int]] = collections.deque()
        self._bytes = 0

    @property
    def bytes(self) -> int:
        """Total UTF-8 size of the messages held."""
        return self._bytes

    def __len__(self) -> int:
        return len(self._items)

    def append(self, text: str) -> None:
        """Keep ``text``; drop the oldest messages (or ``text`` itself, when it alone is
        over ``max_bytes``) until both bounds hold."""
        size = len(text.encode("utf-8", "surrogatepass"))
        if size > self.max_bytes:
            self.drops.add()
            return
        self._items.append((text, size))
        self._bytes += size
        dropped = 0
        while len(self._items) > self.max_messages or self._bytes > self.max_bytes:
            _, old = self._items.popleft()
            self._bytes -= old
            dropped += 1
        self.drops.add(dropped)

    def popleft(self) -> str:
        """Remove and return the oldest message (``IndexError`` when empty)."""
        text, size = self._items.popleft()
        self._bytes -= size
        return text

    def take_all(self) -> list[str]:
        """Remove and return every message, oldest first."""
        items = [text for text, _ in self._items]
        self.clear()
        return items

    def clear(self) -> None:
        self._items.clear()
        self._bytes = 0
