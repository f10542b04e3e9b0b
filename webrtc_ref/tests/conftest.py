"""Fixtures shared by webrtc_ref's tests."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from webrtc_ref.testing import ClientPeer


@pytest.fixture
async def peers() -> AsyncIterator[Callable[..., ClientPeer]]:
    """Make ClientPeers (aiortc stand-ins for the browser); each is closed after the test."""
    made: list[ClientPeer] = []

    def make(**kwargs: Any) -> ClientPeer:
        peer = ClientPeer(**kwargs)
        made.append(peer)
        return peer

    yield make
    for peer in made:
        await peer.close()
