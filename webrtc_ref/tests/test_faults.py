"""Fault injection at every await of ``StreamServer.offer`` and ``Connection.close``.

At each point an exception is raised, or the awaiting task is cancelled while it waits
there. Whatever happens, nothing is left behind: no slot, no worker thread, no open peer
connection, and every handler copy that was made is shut down exactly once.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any

import numpy as np
import pytest
from aiortc import RTCPeerConnection

from fixtures.tracks import ToneAudioTrack
from webrtc_ref.connection import Connection
from webrtc_ref.handlers import StreamHandler
from webrtc_ref.runner import Runner
from webrtc_ref.server import StreamServer
from webrtc_ref.testing import ClientPeer, async_wait_until
from webrtc_ref.tests.test_server import our_threads

pytestmark = pytest.mark.timeout(60)


class Counted(StreamHandler):
    """Echo-like; counts copies and shutdowns; its copy() can be held at a gate."""

    copies: list[Counted]
    gate: threading.Event | None = None

    def __init__(self, copies: list[Counted]) -> None:
        super().__init__()
        self.copies = copies
        self.shutdowns = 0

    def receive(self, frame: tuple[int, np.ndarray]) -> None:
        pass

    def emit(self) -> None:
        return None

    def copy(self) -> Counted:
        if Counted.gate is not None:
            Counted.gate.wait(10)
        clone = Counted(self.copies)
        self.copies.append(clone)
        return clone

    def shutdown(self) -> None:
        self.shutdowns += 1


@pytest.fixture
async def setup() -> AsyncIterator[tuple[StreamServer, list[Counted], list[ClientPeer]]]:
    copies: list[Counted] = []
    server = StreamServer(
        mode="send-receive", modality="audio", handler=Counted(copies), concurrency_limit=1
    )
    peers: list[ClientPeer] = []
    yield server, copies, peers
    Counted.gate = None
    await server.shutdown()
    for peer in peers:
        await peer.close()


async def nothing_left(server: StreamServer, copies: list[Counted]) -> None:
    await async_wait_until(lambda: len(server) == 0, 10, "the slot to be freed")
    await async_wait_until(
        lambda: all(c.shutdowns == 1 for c in copies), 10, "every copy to be shut down once"
    )
    await async_wait_until(lambda: not our_threads(), 10, f"workers to end: {our_threads()}")
    assert server.stats().stuck_workers == 0


class Boom(RuntimeError):
    pass


def patch_async(
    monkeypatch: pytest.MonkeyPatch, owner: type, name: str, mode: str
) -> asyncio.Event:
    """Make ``owner.name`` raise (``mode="raise"``) or wait forever at a gate
    (``mode="cancel"``; the returned event is set once it is reached)."""
    reached = asyncio.Event()

    async def faulty(*args: Any, **kwargs: Any) -> Any:
        reached.set()
        if mode == "raise":
            raise Boom(f"injected into {name}")
        await asyncio.Event().wait()

    monkeypatch.setattr(owner, name, faulty)
    return reached


# -- offer ----------------------------------------------------------------------------

OFFER_POINTS = ["setRemoteDescription", "createAnswer", "setLocalDescription"]


@pytest.mark.parametrize("mode", ["raise", "cancel"])
@pytest.mark.parametrize("point", OFFER_POINTS)
async def test_a_fault_inside_the_offer_leaves_nothing(
    setup: Any, monkeypatch: pytest.MonkeyPatch, point: str, mode: str
) -> None:
    server, copies, peers = setup
    peer = ClientPeer(send=ToneAudioTrack(440.0))
    peers.append(peer)
    body = await peer.offer_body()  # before the patch: the client's peer is not broken
    reached = patch_async(monkeypatch, RTCPeerConnection, point, mode)
    task = asyncio.ensure_future(server.offer(body))
    await asyncio.wait_for(reached.wait(), 5)
    if mode == "cancel":
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    else:
        reply = await task
        assert reply["meta"]["error"] == "internal_error", reply
        assert "injected" not in reply["meta"]["message"]
    monkeypatch.undo()
    await nothing_left(server, copies)
    assert len(copies) == 1
    # and the stream still works
    again = ClientPeer(send=ToneAudioTrack(440.0))
    peers.append(again)
    assert (await again.connect(server.offer))["type"] == "answer"


async def test_cancelled_while_copying_the_handler_copy_is_shut_down(setup: Any) -> None:
    server, copies, peers = setup
    Counted.gate = threading.Event()
    peer = ClientPeer(send=ToneAudioTrack(440.0))
    peers.append(peer)
    task = asyncio.ensure_future(server.offer(await peer.offer_body()))
    await async_wait_until(lambda: len(server) == 1, 5, "the offer to take its slot")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    Counted.gate.set()  # copy() returns after its offer was given up
    await async_wait_until(lambda: len(copies) == 1, 5, "copy() to return")
    await nothing_left(server, copies)


# -- close ------------------------------------------------------------------------------

CLOSE_POINTS: list[tuple[str, Callable[[], tuple[type, str]]]] = [
    ("quiesce", lambda: (Runner, "quiesce")),
    ("goodbye", lambda: (Connection, "_say_goodbye")),
    ("stop", lambda: (Runner, "stop")),
    ("pc.close", lambda: (RTCPeerConnection, "close")),
]


@pytest.mark.parametrize("mode", ["raise", "cancel"])
@pytest.mark.parametrize("point", [name for name, _ in CLOSE_POINTS])
async def test_a_fault_inside_close_leaves_nothing(
    setup: Any, monkeypatch: pytest.MonkeyPatch, point: str, mode: str
) -> None:
    server, copies, peers = setup
    peer = ClientPeer(send=ToneAudioTrack(440.0))
    peers.append(peer)
    assert (await peer.connect(server.offer))["type"] == "answer"
    await peer.wait_connected()
    connection = server.connections[0]
    owner, name = dict(CLOSE_POINTS)[point]()
    original = getattr(owner, name)
    reached = threading.Event()
    loop = asyncio.get_running_loop()
    if asyncio.iscoroutinefunction(original):

        async def faulty_async(*args: Any, **kwargs: Any) -> Any:
            reached.set()
            if mode == "raise":
                raise Boom(f"injected into {name}")
            return await original(*args, **kwargs)

        monkeypatch.setattr(owner, name, faulty_async)
    else:

        def faulty(*args: Any, **kwargs: Any) -> Any:
            reached.set()
            if mode == "raise":
                raise Boom(f"injected into {name}")
            return original(*args, **kwargs)

        monkeypatch.setattr(owner, name, faulty)
    closer = asyncio.ensure_future(connection.close("server_shutdown"))
    await loop.run_in_executor(None, reached.wait, 10)
    if mode == "cancel":
        closer.cancel()  # the caller gives up; the closing goes on
        with pytest.raises(asyncio.CancelledError):
            await closer
    else:
        await closer
    await asyncio.wait_for(connection.closed.wait(), 15)
    monkeypatch.undo()
    assert len(server) == 0, "the slot was not freed"
    if mode == "raise" and point == "stop":
        # the fault replaced stop() itself (a bug in the runtime): everything else was done
        assert connection.pc.connectionState == "closed"
        connection.runner.stop()
    if mode == "raise" and point == "pc.close":
        # the fault replaced the peer connection's close: everything else was done
        await connection.pc.close()
    await nothing_left(server, copies)
    assert connection.pc.connectionState == "closed"
