"""Admission and lookup of connections for one stream event.

Every rule about who may hold a slot is enforced here, atomically (one lock, no ``await``
between check and insert), so N concurrent offers against a limit L admit exactly L:

- ``concurrency_limit``: at most ``limit`` connections, pending ones included;
- one **pending** (offered, not yet connected) connection per owner (a Gradio session):
  a newer offer from the same owner supersedes it, because a browser that gave up on a
  connection that never connected cannot tell the server;
- at most ``max_pending_per_address`` pending connections per client address;
- a ``webrtc_id`` belongs to the owner that offered it: lookups by another owner find
  nothing, exactly as for an unknown id, and a duplicate id from another owner is refused
  without saying that the id is live.

A reservation counts from the moment the offer is admitted; its holder releases it when
the connection closes for any reason (including a connect timeout).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Generic, TypeVar

from webrtc_ref.signaling import (
    CONCURRENCY_LIMIT_REACHED,
    CONNECTION_ALREADY_EXISTS,
    INVALID_OFFER,
    TOO_MANY_PENDING_OFFERS,
    SignalingError,
)

T = TypeVar("T")

#: Default cap on pending offers per client address (offices share one address).
DEFAULT_MAX_PENDING_PER_ADDRESS = 32


@dataclass
class _Entry(Generic[T]):
    value: T | None
    owner: str | None
    address: str | None
    pending: bool = True


class Registry(Generic[T]):
    """Connections of one stream event by ``webrtc_id``, bounded by ``limit`` (None: no bound).

    ``owner`` is whoever may use the id afterwards (the Gradio session hash; ``None`` for
    in-process callers, which then match only ``None``). Thread-safe.
    """

    def __init__(
        self,
        limit: int | None,
        *,
        max_pending_per_address: int | None = DEFAULT_MAX_PENDING_PER_ADDRESS,
    ) -> None:
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int)):
            raise ValueError(f"limit must be a positive int or None; got {limit!r}")
        if limit is not None and limit < 1:
            raise ValueError(f"limit must be a positive int or None; got {limit!r}")
        if max_pending_per_address is not None and (
            isinstance(max_pending_per_address, bool)
            or not isinstance(max_pending_per_address, int)
            or max_pending_per_address < 1
        ):
            raise ValueError(
                "max_pending_per_address must be a positive int or None; "
                f"got {max_pending_per_address!r}"
            )
        self.limit = limit
        self.max_pending_per_address = max_pending_per_address
        self._entries: dict[str, _Entry[T]] = {}
        self._lock = threading.Lock()

    def reserve(
        self, webrtc_id: str, *, owner: str | None = None, address: str | None = None
    ) -> T | None:
        """Take a slot for ``webrtc_id`` or raise :class:`SignalingError`.

        Returns the value of the owner's pending connection that this reservation
        supersedes (its slot is already free; the caller closes it), or ``None``.

        Raises ``connection_already_exists`` if the owner already uses the id,
        ``invalid_offer`` if another owner does (nothing about that connection is said),
        ``too_many_pending_offers`` (with ``limit``) when the address has too many
        pending connections and ``concurrency_limit_reached`` (with ``limit``) when full.
        """
        with self._lock:
            existing = self._entries.get(webrtc_id)
            if existing is not None:
                if existing.owner == owner:
                    raise SignalingError(
                        CONNECTION_ALREADY_EXISTS,
                        f"a connection with webrtc_id {webrtc_id!r} already exists",
                    )
                raise SignalingError(
                    INVALID_OFFER,
                    f"webrtc_id {webrtc_id!r} cannot be used; use a fresh random id for "
                    "every connection",
                    field="webrtc_id",
                )
            superseded: _Entry[T] | None = None
            superseded_id = None
            if owner is not None:
                for key, entry in self._entries.items():
                    if entry.pending and entry.owner == owner:
                        superseded, superseded_id = entry, key
                        break
            pending_here = sum(
                1
                for entry in self._entries.values()
                if entry.pending and entry.address == address and entry is not superseded
            )
            cap = self.max_pending_per_address
            if address is not None and cap is not None and pending_here >= cap:
                raise SignalingError(
                    TOO_MANY_PENDING_OFFERS,
                    f"{pending_here} connections from this address are still connecting; "
                    f"at most {cap} may be (raise it with "
                    "WebRTC(max_pending_per_address=...)). Try again in a moment.",
                    limit=cap,
                )
            size = len(self._entries) - (superseded is not None)
            if self.limit is not None and size >= self.limit:
                raise SignalingError(
                    CONCURRENCY_LIMIT_REACHED,
                    f"Too many concurrent connections (limit {self.limit}). "
                    "Try again when a stream ends.",
                    limit=self.limit,
                )
            if superseded_id is not None:
                del self._entries[superseded_id]
            self._entries[webrtc_id] = _Entry(None, owner, address)
            return superseded.value if superseded is not None else None

    def full_for(self, owner: str | None = None) -> bool:
        """Whether a new reservation by ``owner`` would now be refused with
        ``concurrency_limit_reached`` (an owner's pending connection would be superseded,
        so it does not count). A snapshot: a later :meth:`reserve` decides."""
        with self._lock:
            if self.limit is None:
                return False
            superseding = owner is not None and any(
                entry.pending and entry.owner == owner for entry in self._entries.values()
            )
            return len(self._entries) - superseding >= self.limit

    def attach(self, webrtc_id: str, value: T) -> None:
        """Store the connection object for a reserved id."""
        with self._lock:
            entry = self._entries.get(webrtc_id)
            if entry is None:
                raise KeyError(f"webrtc_id {webrtc_id!r} was not reserved")
            entry.value = value

    def connected(self, webrtc_id: str, value: T) -> None:
        """The connection ``value`` of ``webrtc_id`` connected: it is no longer pending."""
        with self._lock:
            entry = self._entries.get(webrtc_id)
            if entry is not None and entry.value is value:
                entry.pending = False

    def release(self, webrtc_id: str, value: T | None = None) -> None:
        """Free the slot of ``webrtc_id`` (held by ``value``, when given); no error if free."""
        with self._lock:
            entry = self._entries.get(webrtc_id)
            if entry is not None and (value is None or entry.value is value):
                del self._entries[webrtc_id]

    def get(self, webrtc_id: str, owner: str | None = None) -> T | None:
        """The connection of ``webrtc_id`` if ``owner`` offered it, else ``None``."""
        with self._lock:
            entry = self._entries.get(webrtc_id)
            return entry.value if entry is not None and entry.owner == owner else None

    def any_owner(self, webrtc_id: str) -> T | None:
        """The connection of ``webrtc_id`` whoever offered it (server-side callers only)."""
        with self._lock:
            entry = self._entries.get(webrtc_id)
            return entry.value if entry is not None else None

    def values(self) -> list[T]:
        with self._lock:
            return [e.value for e in self._entries.values() if e.value is not None]

    @property
    def pending(self) -> int:
        """How many reservations have not connected yet."""
        with self._lock:
            return sum(entry.pending for entry in self._entries.values())

    def __contains__(self, webrtc_id: object) -> bool:
        with self._lock:
            return webrtc_id in self._entries

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)
