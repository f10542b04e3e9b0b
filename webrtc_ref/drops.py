"""What a bounded per-connection structure does when it is full: count and say so.

Every per-connection buffer reachable from outside (input blocks waiting for ``receive``,
messages waiting for the data channel, additional outputs nobody fetches) has a cap. When
it drops something it counts it in a :class:`DropCounter`, which logs a warning the first
time and then at most once per ``interval`` seconds with the total so far, so a flood of
drops costs one log line, not one per item. The counts feed ``StreamServer.stats()``.
"""

from __future__ import annotations

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
