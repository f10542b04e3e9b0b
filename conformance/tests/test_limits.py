"""time_limit and concurrency_limit."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from conformance.adapters import Adapter, Scenario
from conformance.helpers import Probe, recording_handler
from conformance.plugin import requirement_of
from conformance.wire import WirePeer, eventually, serving, wait_for


def barcode() -> Any:
    from fixtures.tracks import BarcodeVideoTrack

    return BarcodeVideoTrack(320, 240, clock=time.time)


def video_scenario(**kwargs: Any) -> Scenario:
    return Scenario("send-receive", "video", lambda api: lambda frame: frame, **kwargs)


def ended(peer: WirePeer) -> bool:
    recorder = peer.recorder
    return peer.ended or (recorder is not None and recorder.ended)


async def admitted(wire: Any, *, stream: int = 0) -> bool:
    """Offer with a fresh client; True if answered (the client stays connected)."""
    peer = wire.peer(send=barcode(), stream=stream)
    await peer.connect()
    if peer.answered:
        return True
    await peer.close()
    return False


@pytest.mark.requirement("LIM-001")
async def test_time_limit_ends_the_connection(adapter: Adapter) -> None:
    """stream(time_limit=T) ends the connection about T seconds after it connected (T = 2:
    between 1.5 s and 4 s)."""
    probe = Probe()
    scenario = Scenario(
        "send-receive", "audio", lambda api: recording_handler(api, probe), time_limit=2.0
    )
    from fixtures.tracks import ToneAudioTrack

    async with serving(adapter, scenario) as wire:
        peer = wire.peer(send=ToneAudioTrack(440.0))
        await peer.connect_ok()
        await peer.wait_remote()
        connected = peer.connected_at or time.time()
        await eventually(lambda: ended(peer), 6.0)
        assert ended(peer), "the connection was still running 6 s after connecting"
        elapsed = time.time() - connected
        assert 1.5 <= elapsed <= 4.0, f"the connection ended {elapsed:.2f} s after connecting"


@pytest.mark.requirement("LIM-002")
async def test_one_connection_at_a_time_by_default(adapter: Adapter) -> None:
    """By default one connection at a time: while one client streams, another client's offer
    gets a failure reply."""
    async with serving(adapter, video_scenario()) as wire:
        first = wire.peer(send=barcode())
        await first.connect_ok()
        second = wire.peer(send=barcode())
        reply = await second.connect()
        assert not second.answered, "a second client was admitted with the default limit"
        assert isinstance(reply.body, dict) and reply.body.get("status") == "failed", reply.body


@pytest.mark.requirement("LIM-003")
async def test_slot_is_freed_when_the_client_closes(adapter: Adapter) -> None:
    """When a connection ends (the client closes it), its slot is freed: a new client can
    connect within 5 s."""
    async with serving(adapter, video_scenario()) as wire:
        first = wire.peer(send=barcode())
        await first.connect_ok()
        await first.wait_remote()
        await first.close()
        await wait_for(lambda: admitted(wire), 5.0, "the slot of the closed client to be freed")


@pytest.mark.requirement("LIM-004")
async def test_limit_admits_exactly_n(adapter: Adapter) -> None:
    """concurrency_limit=N admits exactly N of many simultaneous offers."""
    async with serving(adapter, video_scenario(concurrency_limit=3)) as wire:
        peers = [wire.peer(send=barcode()) for _ in range(8)]
        bodies = await asyncio.gather(*(p.offer_body() for p in peers))
        replies = await asyncio.gather(*(wire.offer(body) for body in bodies))
        answers = sum(isinstance(r.body, dict) and r.body.get("type") == "answer" for r in replies)
        assert answers == 3, f"{answers} of 8 simultaneous offers were admitted with limit 3"


@pytest.mark.requirement("LIM-005")
async def test_none_means_unlimited(adapter: Adapter) -> None:
    """concurrency_limit=None means no limit, as for every Gradio event."""
    async with serving(adapter, video_scenario(concurrency_limit=None)) as wire:
        peers = [wire.peer(send=barcode()) for _ in range(4)]
        for peer in peers:
            await peer.connect()
        refused = [p.reply.body for p in peers if not p.answered]
        assert not refused, f"{len(refused)} of 4 clients refused with no limit: {refused[0]}"


@pytest.mark.requirement("LIM-007")
async def test_constructor_time_limit_is_enforced(adapter: Adapter) -> None:
    """WebRTC(time_limit=T) is enforced when stream() gives no time_limit (T = 2: the
    connection ends between 1.5 s and 4 s after it connected)."""
    async with serving(adapter, video_scenario(constructor_time_limit=2.0)) as wire:
        peer = wire.peer(send=barcode())
        await peer.connect_ok()
        connected = peer.connected_at or time.time()
        await eventually(lambda: ended(peer), 6.0)
        assert ended(peer), "WebRTC(time_limit=2) did not end the connection within 6 s"
        elapsed = time.time() - connected
        assert 1.5 <= elapsed <= 4.0, f"the connection ended {elapsed:.2f} s after connecting"


@pytest.mark.requirement("LIM-008")
async def test_limits_are_per_stream(adapter: Adapter) -> None:
    """Limits are per stream: two WebRTC components in one app, each with the default limit,
    can each have a connection at the same time."""
    async with serving(adapter, video_scenario(components=2)) as wire:
        first = wire.peer(send=barcode(), stream=0)
        await first.connect_ok()
        second = wire.peer(send=barcode(), stream=1)
        reply = await second.connect()
        assert second.answered, f"the second component refused its first client: {reply.body}"


async def _abandoned_offer(adapter: Adapter) -> float:
    """Serve, offer without ever applying the answer, then retry until admitted; return how
    long the abandoned slot was held."""
    async with serving(adapter, video_scenario()) as wire:
        ghost = wire.peer(send=barcode())
        reply = await wire.offer(await ghost.offer_body())  # the answer is never applied
        assert isinstance(reply.body, dict) and reply.body.get("type") == "answer", reply.body
        abandoned = time.time()

        async def retry() -> bool:
            if await admitted(wire):
                return True
            await asyncio.sleep(0.5)
            return False

        await wait_for(retry, 35.0, "the abandoned offer's slot to be freed")
        return time.time() - abandoned


class _Background:
    """A coroutine running on its own loop in a thread while the module's other tests run."""

    def __init__(self, coro: Any) -> None:
        self.result: Any = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(coro,), daemon=True)
        self.thread.start()

    def _run(self, coro: Any) -> None:
        try:
            self.result = asyncio.run(coro)
        except BaseException as exc:
            self.error = exc

    def outcome(self, timeout: float) -> Any:
        self.thread.join(timeout)
        if self.thread.is_alive():
            raise TimeoutError("the abandoned-offer session did not finish")
        if self.error is not None:
            raise self.error
        return self.result


@pytest.fixture(scope="module", autouse=True)
def abandoned_offer(request: pytest.FixtureRequest, adapter: Adapter) -> Iterator[Any]:
    """LIM-006 waits up to 35 s for a slot: start it with the module, so that its wait
    overlaps the other tests (not for implementations with per-process state, where its
    connection would be seen by them)."""
    wanted = any(requirement_of(item) == "LIM-006" for item in request.session.items)
    if not wanted or adapter.shared_state:
        yield None
        return
    background = _Background(_abandoned_offer(adapter))
    yield background
    background.thread.join(40.0)  # never leave the session running past the module


@pytest.mark.requirement("LIM-006")
async def test_abandoned_offer_frees_its_slot(adapter: Adapter, abandoned_offer: Any) -> None:
    """An accepted offer whose client never connects frees its slot within 35 s."""
    if abandoned_offer is None:
        held = await _abandoned_offer(adapter)
    else:
        held = await asyncio.to_thread(abandoned_offer.outcome, 45.0)
    assert held <= 35.0, f"the abandoned offer held its slot for {held:.1f} s"


@pytest.mark.requirement("LIM-009")
async def test_an_abandoned_offer_does_not_lock_its_session_out(adapter: Adapter) -> None:
    """With concurrency_limit=1, a session whose answered offer never connected (the page
    gave up) is admitted at once when it offers again with a new webrtc_id."""
    from conformance.helpers import echo_handler
    from fixtures.tracks import ToneAudioTrack

    scenario = Scenario("send-receive", "audio", echo_handler, concurrency_limit=1)
    async with serving(adapter, scenario) as wire:
        abandoned = wire.peer(send=ToneAudioTrack(440.0))
        reply = await wire.offer(
            await abandoned.offer_body(), session_hash=abandoned.session.session_hash
        )
        assert reply.status == 200 and isinstance(reply.body, dict), reply
        assert reply.body.get("type") == "answer", f"the first offer failed: {reply.body!r}"
        # the answer is never applied: the page gave up before connecting
        again = wire.peer(send=ToneAudioTrack(440.0), session=abandoned.session)
        retry = await again.connect()
        assert again.answered, f"the session's next offer was refused: {retry.body!r}"
        await again.wait_connected(5.0)
