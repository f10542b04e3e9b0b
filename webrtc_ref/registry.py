"""Admission and lookup of connections for one stream event.

``reserve`` is atomic (a lock, no ``await`` between check and insert), so N concurrent
offers against a limit L admit exactly L. A reservation counts from the moment the offer
is accepted, before the peer connects; its owner releases it when the connection closes
for any reason (including a connect timeout).
"""

from __future__ import annotations

import threading
from typing import Generic, TypeVar

from webrtc_ref.signaling import (
    CONCURRENCY_LIMIT_REACHED,
    CONNECTION_ALREADY_EXISTS,
    SignalingError,
)

T = TypeVar("T")


class Registry(Generic[T]):
    """Connections of one stream event by ``webrtc_id``, bounded by ``limit`` (None: no bound)."""

    def __init__(self, limit: int | None) -> None:
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int)):
            raise ValueError(f"limit must be a positive int or None; got {limit!r}")
        if limit is not None and limit < 1:
            raise ValueError(f"limit must be a positive int or None; got {limit!r}")
        self.limit = limit
        self._entries: dict[str, T | None] = {}
        self._lock = threading.Lock()

    def reserve(self, webrtc_id: str) -> None:
        """Take a slot for ``webrtc_id`` or raise :class:`SignalingError`.

        Raises ``connection_already_exists`` if the id is in use (never replaces another
        user's connection) and ``concurrency_limit_reached`` (with ``limit``) when full.
        """
        with self._lock:
            if webrtc_id in self._entries:
                raise SignalingError(
                    CONNECTION_ALREADY_EXISTS,
                    f"a connection with webrtc_id {webrtc_id!r} already exists",
                )
            if self.limit is not None and len(self._entries) >= self.limit:
                raise SignalingError(
                    CONCURRENCY_LIMIT_REACHED,
                    f"Too many concurrent connections (limit {self.limit}). "
                    "Try again when a stream ends.",
                    limit=self.limit,
                )
            self._entries[webrtc_id] = None

    def attach(self, webrtc_id: str, value: T) -> None:
        """Store the connection object for a reserved id."""
        with self._lock:
            if webrtc_id not in self._entries:
                raise KeyError(f"webrtc_id {webrtc_id!r} was not reserved")
            self._entries[webrtc_id] = value

    def release(self, webrtc_id: str) -> None:
        """Free the slot of ``webrtc_id`` (no error if already free)."""
        with self._lock:
            self._entries.pop(webrtc_id, None)

    def get(self, webrtc_id: str) -> T | None:
        with self._lock:
            return self._entries.get(webrtc_id)

    def values(self) -> list[T]:
        with self._lock:
            return [v for v in self._entries.values() if v is not None]

    def __contains__(self, webrtc_id: object) -> bool:
        with self._lock:
            return webrtc_id in self._entries

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)
