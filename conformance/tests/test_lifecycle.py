"""Connection lifecycle: shutdown, cleanup after the client leaves (closing or vanishing),
the end of receive streams, leaks, and isolation between connections."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from typing import Any

import pytest

from conformance.adapters import Adapter, Input, Scenario
from conformance.helpers import MANY, Probe, marker_fn, recording_handler
from conformance.recording import Recordings
from conformance.wire import Wire, eventually, serving, wait_for


def tone_track() -> Any:
    from fixtures.tracks import ToneAudioTrack

    return ToneAudioTrack(440.0)


def barcode() -> Any:
    from fixtures.tracks import BarcodeVideoTrack

    return BarcodeVideoTrack(320, 240, clock=time.time)


async def admitted(wire: Wire) -> bool:
    peer = wire.peer(send=tone_track())
    await peer.connect()
    if peer.answered:
        return True
    await peer.close()
    return False


def recording_scenario(probe: Probe, **kwargs: Any) -> Scenario:
    return Scenario(
        "send-receive",
        "audio",
        lambda api: recording_handler(api, probe, keep_audio=False),
        **kwargs,
    )


@pytest.mark.requirement("LIFE-001")
async def test_shutdown_runs_exactly_once(adapter: Adapter) -> None:
    """The connection's handler's shutdown() is called exactly once when the connection ends."""
    probe = Probe()
    async with serving(adapter, recording_scenario(probe)) as wire:
        peer = wire.peer(send=tone_track())
        await peer.connect_ok()
        await eventually(lambda: probe.count("receive") >= 5, 5.0)
        await peer.close()
        await eventually(lambda: probe.count("shutdown") >= 1, 5.0)
        assert probe.count("shutdown") >= 1, "shutdown() was not called after the client closed"
        # the slot is free again once the connection is fully cleaned up
        await wait_for(lambda: admitted(wire), 5.0, "the slot to be freed")
        assert probe.count("shutdown") == 1, f"shutdown() ran {probe.count('shutdown')} times"


@pytest.mark.requirement("LIFE-002")
async def test_handler_stops_after_the_client_closes(adapter: Adapter) -> None:
    """After the client closes, the handler is no longer called (receive and emit stop within
    2 s)."""
    probe = Probe()
    async with serving(adapter, recording_scenario(probe)) as wire:
        peer = wire.peer(send=tone_track())
        await peer.connect_ok()
        await eventually(lambda: probe.count("receive") >= 5, 5.0)
        await peer.close()
        closed = time.time()

        def calls() -> int:
            return probe.count("receive") + probe.count("emit")

        await eventually(lambda: time.time() > closed + 2.0, 3.0)
        before = calls()
        await eventually(lambda: time.time() > closed + 2.5, 1.0)
        after = calls()
        assert after == before, f"the handler was called {after - before} times 2-2.5 s after close"


@pytest.mark.requirement("LIFE-003")
async def test_vanished_client_is_cleaned_up(
    adapter: Adapter, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A client that vanishes without closing (ICE consent fails) is detected and cleaned up:
    shutdown() runs and the slot is freed within 10 s of consent failing."""
    import aioice.ice

    # ICE consent checks every 0.1 s, failing after 3 misses (the server runs in-process).
    monkeypatch.setattr(aioice.ice, "CONSENT_INTERVAL", 0.1)
    monkeypatch.setattr(aioice.ice, "CONSENT_FAILURES", 3)
    probe = Probe()
    async with serving(adapter, recording_scenario(probe)) as wire:
        peer = wire.peer(send=tone_track())
        await peer.connect_ok()
        await eventually(lambda: probe.count("receive") >= 5, 5.0)
        for transceiver in peer.pc.getTransceivers():  # vanish: no DTLS/SCTP goodbye
            await transceiver.sender.transport.transport.stop()
        await eventually(lambda: probe.count("shutdown") >= 1, 10.0)
        assert probe.count("shutdown") == 1, "shutdown() did not run for the vanished client"
        await wait_for(lambda: admitted(wire), 5.0, "the vanished client's slot to be freed")


@pytest.mark.requirement("LIFE-004")
def test_receive_stream_ends_with_the_generator(audio_sessions: Recordings) -> None:
    """Receive mode: when the generator is exhausted the stream ends (the media track ends or
    the connection closes)."""
    recording = audio_sessions["generator"]
    done = recording.probe.get("done")
    assert done, "the generator did not run to its end"
    peer = recording.peer
    ended_at = recording.notes["ended_at"]
    assert peer.ended or (peer.recorder is not None and peer.recorder.ended), (
        "the stream went on after the generator was exhausted"
    )
    assert ended_at - done[0] < 5.0, f"the stream ended {ended_at - done[0]:.1f} s after"


#: Threads a right implementation may still add after its warm-up (a pool growing to its
#: working size), over LIFE-005's 24 cycles.
THREAD_SLACK = 2


@pytest.mark.requirement("LIFE-005")
@pytest.mark.timeout(240)
async def test_connect_close_cycles_leave_no_threads(adapter: Adapter) -> None:
    """Repeated connect/close cycles leave nothing behind: over 24 cycles after a warm-up
    the thread count stays within two of the warmed-up baseline (a pool may still add a
    worker; a thread left per connection would add 24)."""
    probe = Probe()
    async with serving(adapter, recording_scenario(probe)) as wire:

        async def cycle(number: int) -> None:
            admitted_peer: list[Any] = []

            async def attempt() -> bool:
                peer = wire.peer(send=tone_track())
                await peer.connect()
                if peer.answered:
                    admitted_peer.append(peer)
                    return True
                await peer.close()  # the previous connection is still being cleaned up
                return False

            await wait_for(attempt, 5.0, "admission")
            peer = admitted_peer[0]
            await peer.wait_connected()
            await eventually(lambda: probe.count("receive") >= 2 * number, 3.0)
            await peer.close()  # the next cycle is admitted once its slot is free

        for number in (1, 2, 3):  # warm-up: thread pools reach their working size
            await cycle(number)
        baseline = threading.active_count()
        for number in range(4, 16):
            await cycle(number)
        await eventually(lambda: threading.active_count() <= baseline + THREAD_SLACK, 5.0)
        halfway = threading.active_count()
        for number in range(16, 28):
            await cycle(number)
        settled = await eventually(lambda: threading.active_count() <= baseline + THREAD_SLACK, 5.0)
        assert settled, (
            f"threads: {baseline} after the warm-up, {halfway} after 12 more connect/close "
            f"cycles, {threading.active_count()} after 24: they grow with the cycles"
        )


@pytest.mark.requirement("LIFE-006")
async def test_inputs_stay_with_their_connection(adapter: Adapter) -> None:
    """Input values sent for one connection never reach another connection's handler."""
    probe = Probe()
    scenario = Scenario(
        "send-receive",
        "video",
        lambda api: marker_fn(probe),
        inputs=(Input(0),),
        concurrency_limit=MANY,
    )
    async with serving(adapter, scenario) as wire:
        low = wire.peer(send=barcode(), inputs=[60])
        high = wire.peer(send=barcode(), inputs=[200])
        for peer in (low, high):
            await peer.connect_ok()
            await peer.wait_remote()

        def settled(peer: Any, level: int) -> bool:
            frames = peer.recorder.frames
            return sum(abs(f.mark - level) < 12 for f in frames) >= 20

        await eventually(lambda: settled(low, 60) and settled(high, 200), 8.0)
        for peer, mine, other in ((low, 60, 200), (high, 200, 60)):
            marks = [f.mark for f in peer.recorder.frames]
            assert sum(abs(m - mine) < 12 for m in marks) >= 20, f"client {mine} got no frames"
            assert not [m for m in marks if abs(m - other) < 12], (
                f"client {mine} got frames processed with the other client's input {other}"
            )


@pytest.mark.requirement("LIFE-007")
async def test_a_connection_belongs_to_the_session_that_offered_it(adapter: Adapter) -> None:
    """Another session's tick carrying a connection's webrtc_id does not change its inputs,
    and another session's state_change carrying the id drains none of its outputs; the
    owner still receives its outputs."""
    probe = Probe()

    def handler(api: Any) -> Any:
        counter = {"n": 0}

        def mark(frame: Any, level: Any = 0) -> Any:
            counter["n"] += 1
            probe.add("level", (time.time(), level))
            if counter["n"] % 3:
                return frame
            return frame, api.AdditionalOutputs(counter["n"])

        return mark

    scenario = Scenario(
        "send-receive", "video", handler, inputs=(Input(0),), outputs=1, concurrency_limit=MANY
    )
    async with serving(adapter, scenario) as wire:
        owner = wire.peer(send=barcode(), inputs=[60])
        await owner.connect_ok()
        await owner.wait_remote()
        await eventually(lambda: len(owner.outputs) >= 2, 8.0)
        intruder = wire.peer(webrtc_id=owner.webrtc_id, inputs=[200])
        since = time.time()
        for _ in range(8):  # one event at a time, each waited for
            for fire in (intruder.tick, intruder.pull_outputs):
                done = await fire()
                if done is not None:
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(asyncio.shield(done), 10.0)
        last = time.time()
        # ticks go through Gradio's queue: let the last ones land, then watch 15 frames
        before = len(owner.outputs)
        await eventually(lambda: sum(t > last + 0.3 for t, _ in probe.get("level")) >= 15, 8.0)
        await eventually(lambda: len(owner.outputs) >= before + 2, 8.0)
        levels = [level for t, level in probe.get("level") if t > since]
        assert levels, "the owner's fn stopped running"
        assert 200 not in levels, "another session's tick changed the connection's input"
        assert intruder.outputs == [], (
            f"another session drained the connection's outputs: {intruder.outputs[:3]}"
        )
        assert len(owner.outputs) >= before + 2, "the owner stopped receiving its outputs"
