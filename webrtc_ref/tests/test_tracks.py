"""Pacing of the outbound audio track: real time on average, backlogs drain at once."""

from __future__ import annotations

import asyncio
import time

import av
import numpy as np

from webrtc_ref.tracks import OutboundAudioTrack


def frame() -> av.AudioFrame:
    out = av.AudioFrame.from_ndarray(np.zeros((1, 1920), np.int16), format="s16", layout="stereo")
    out.sample_rate = 48000
    return out


async def drain(track: OutboundAudioTrack, count: int) -> tuple[float, list[int]]:
    start = time.monotonic()
    pts = [(await track.recv()).pts for _ in range(count)]
    return time.monotonic() - start, pts


async def test_long_audio_leaves_in_real_time_after_the_lead() -> None:
    track = OutboundAudioTrack(asyncio.get_running_loop(), max_lead_s=0.2)
    for _ in range(50):  # one second queued at once, as a text-to-speech reply would
        track.push(frame())
    elapsed, pts = await drain(track, 50)
    assert 0.7 < elapsed < 1.1, f"1 s of audio left in {elapsed:.2f} s"
    assert pts == [i * 960 for i in range(50)]


async def test_a_backlog_after_a_stall_drains_at_once() -> None:
    """An echo that fell 200 ms behind catches up instead of staying 200 ms late."""
    track = OutboundAudioTrack(asyncio.get_running_loop(), max_lead_s=0.2)
    for _ in range(5):  # a live stream, in step with real time
        track.push(frame())
        await drain(track, 1)
        await asyncio.sleep(0.02)
    for _ in range(10):  # the producer stalled; its frames arrive together
        track.push(frame())
    elapsed, _ = await drain(track, 10)
    assert elapsed < 0.1, f"a 200 ms backlog took {elapsed:.2f} s to leave"


async def test_gap_in_audio_moves_timestamps_by_the_gap() -> None:
    track = OutboundAudioTrack(asyncio.get_running_loop())
    track.push(frame())
    first = (await track.recv()).pts
    sent_first = time.monotonic()
    for _ in range(5):  # the tail silence
        await track.recv()
    pending = asyncio.ensure_future(track.recv())
    await asyncio.sleep(0.3)  # nothing to send for a while
    track.push(frame())
    second = (await pending).pts
    elapsed = time.monotonic() - sent_first
    gap = (second - first) / 48000
    assert abs(gap - elapsed) < 0.04, f"timestamps moved {gap:.3f} s in {elapsed:.3f} s"


async def test_late_but_queued_frames_keep_continuous_timestamps() -> None:
    """A stalled event loop is not a gap in the audio: no timestamp jump (browser tests
    saw 50-170 ms jumps with 80+ frames waiting)."""
    track = OutboundAudioTrack(asyncio.get_running_loop(), max_lead_s=0.0)
    for _ in range(20):
        track.push(frame())
    first = (await track.recv()).pts
    time.sleep(0.15)  # the event loop is blocked while frames wait in the queue
    pts = [(await track.recv()).pts for _ in range(5)]
    assert pts == [first + 960 * (i + 1) for i in range(5)]


async def test_audio_ends_with_a_short_silence() -> None:
    """After the last queued frame, 100 ms of silence follows, then nothing."""
    track = OutboundAudioTrack(asyncio.get_running_loop())
    loud = av.AudioFrame.from_ndarray(
        np.full((1, 1920), 8000, np.int16), format="s16", layout="stereo"
    )
    loud.sample_rate = 48000
    track.push(loud)
    await track.recv()
    tail = [await asyncio.wait_for(track.recv(), 1) for _ in range(5)]
    assert all(not f.to_ndarray().any() for f in tail)
    assert [f.pts for f in tail] == [960 * (i + 1) for i in range(5)]
    pending = asyncio.ensure_future(track.recv())
    done, _ = await asyncio.wait({pending}, timeout=0.3)
    assert not done, "silence kept flowing after the tail"
    track.push(frame())
    assert (await asyncio.wait_for(pending, 1)).samples == 960


async def test_a_late_frame_is_not_preceded_by_silence() -> None:
    """A frame up to one frame period overdue (a worker hiccup) leaves as it is, with
    continuous timestamps: no 20 ms of silence is put into the middle of the stream."""
    loop = asyncio.get_running_loop()
    track = OutboundAudioTrack(loop)

    def loud() -> av.AudioFrame:
        out = av.AudioFrame.from_ndarray(
            np.full((1, 1920), 8000, np.int16), format="s16", layout="stereo"
        )
        out.sample_rate = 48000
        return out

    track.push(loud())
    first = await track.recv()
    # the next frame becomes available 10 ms after it was due (30 ms after the first)
    loop.call_later(0.030, track.push, loud())
    second = await asyncio.wait_for(track.recv(), 1)
    assert second.to_ndarray().any(), "silence was sent in front of a late frame"
    assert second.pts == first.pts + 960
