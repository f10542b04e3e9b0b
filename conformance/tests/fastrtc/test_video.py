"""fastrtc profile: VideoStreamHandler's skip_frames and fps, and the frames its fn gets.

The clients send ``fixtures`` barcode frames (a frame id, pure red/green/blue patches) at
30 fps; fn reads the id of each frame it gets.
"""

from __future__ import annotations

import itertools
import statistics
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from conformance.adapters import Adapter, FastrtcApi, Scenario
from conformance.helpers import MANY, Probe
from conformance.recording import Plan, Recordings, record_all
from conformance.tests.fastrtc.media import contexts_check, note_context
from conformance.wire import Wire, eventually

WIDTH, HEIGHT = 320, 240
#: The second client's frame ids start here (the first client's at 0).
SECOND_START = 100_000


def barcode(start_id: int = 0) -> Any:
    from fixtures.tracks import BarcodeVideoTrack

    return BarcodeVideoTrack(WIDTH, HEIGHT, start_id=start_id, clock=time.time)


def frame_id(image: Any) -> int | None:
    from fixtures.video import read_frame_id

    try:
        return int(read_frame_id(np.asarray(image)))
    except (ValueError, TypeError):
        return None


def _skip_plan(fapi: FastrtcApi) -> Plan:
    """The docs' example: fn takes 200 ms per frame, skip_frames=True."""

    def scenario(probe: Probe) -> Scenario:
        def process_image(image: Any) -> Any:
            probe.add("seen", (time.time(), frame_id(image)))
            time.sleep(0.2)
            return image

        return Scenario(
            "send-receive",
            "video",
            lambda api: fapi.VideoStreamHandler(process_image, skip_frames=True),
            needs_fastrtc=True,
        )

    async def script(wire: Wire, probe: Probe) -> dict[str, Any]:
        track = barcode()
        peer = wire.peer(send=track)
        await peer.connect_ok()
        recorder = await peer.wait_remote()
        await eventually(lambda: any(f.frame_id is not None for f in recorder.frames), 6.0)
        first = time.time()
        await eventually(lambda: time.time() > first + 6.0, 7.0)
        await peer.close()
        return {"track": track, "first": first}

    return Plan(scenario, script)


def _every_frame_plan(fapi: FastrtcApi) -> Plan:
    """VideoStreamHandler(fn): fn takes 30 ms for each of a client's first 30 frames, then
    returns at once; two clients (frame ids 0... and 100000...)."""

    def scenario(probe: Probe) -> Scenario:
        from fixtures.video import detect_channel_order

        def detection(image: Any) -> Any:
            fid = frame_id(image)
            try:
                order = detect_channel_order(np.asarray(image))
            except (ValueError, TypeError):
                order = None
            client = 1 if fid is not None and fid >= SECOND_START else 0
            probe.add(
                "seen",
                (
                    client,
                    fid,
                    type(image).__name__,
                    str(getattr(image, "dtype", None)),
                    getattr(image, "shape", None),
                    order,
                ),
            )
            note_context(fapi, probe, "video", client)
            if probe.bump(f"calls:{client}") <= 30:
                time.sleep(0.03)
            return image

        return Scenario(
            "send-receive",
            "video",
            lambda api: fapi.VideoStreamHandler(detection),
            concurrency_limit=MANY,
            needs_fastrtc=True,
        )

    async def script(wire: Wire, probe: Probe) -> dict[str, Any]:
        peers = [wire.peer(send=barcode(start)) for start in (0, SECOND_START)]
        for peer in peers:
            await peer.connect_ok()
        for peer in peers:
            await peer.wait_remote()

        def enough() -> bool:
            seen = probe.get("seen")
            return all(sum(s[0] == c and s[1] is not None for s in seen) >= 75 for c in (0, 1))

        await eventually(enough, 8.0)
        for peer in peers:
            await peer.close()
        return {"ids": [p.webrtc_id for p in peers]}

    return Plan(scenario, script)


def _fps_plan(fapi: FastrtcApi) -> Plan:
    """Receive mode: VideoStreamHandler(generation, fps=10)."""

    def scenario(probe: Probe) -> Scenario:
        from fixtures.video import make_frame

        def generation() -> Iterator[Any]:
            for i in range(100):
                yield np.array(make_frame(i, WIDTH, HEIGHT))

        return Scenario(
            "receive",
            "video",
            lambda api: fapi.VideoStreamHandler(generation, fps=10),
            needs_fastrtc=True,
        )

    async def script(wire: Wire, probe: Probe) -> dict[str, Any]:
        peer = wire.peer()
        await peer.connect_ok()
        recorder = await peer.wait_remote()
        await eventually(lambda: bool(recorder.frames), 6.0)
        first = recorder.frames[0].arrival if recorder.frames else time.time()
        await eventually(lambda: time.time() > first + 3.0, 4.0)
        await peer.close()
        return {"first": first}

    return Plan(scenario, script)


@pytest.fixture(scope="module")
def video_sessions(adapter: Adapter, fapi: FastrtcApi) -> Recordings:
    return record_all(
        adapter,
        {"every": _every_frame_plan(fapi), "fps": _fps_plan(fapi)},
    )


@pytest.fixture(scope="module")
def skip_sessions(adapter: Adapter, fapi: FastrtcApi) -> Recordings:
    """The slow fn, recorded alone (it measures delays)."""
    return record_all(adapter, {"skip": _skip_plan(fapi)})


@pytest.mark.requirement("FVID-001")
def test_skip_frames_keeps_the_delay_bounded(skip_sessions: Recordings) -> None:
    """skip_frames=True with a 200 ms fn at 30 fps: fn sees frame ids with gaps and the
    client's delay stays under 0.6 s, not growing."""
    recording = skip_sessions["skip"]
    seen = [fid for _, fid in recording.probe.get("seen") if fid is not None]
    assert len(seen) >= 10, f"fn read {len(seen)} frame ids"
    steps = np.diff(seen)
    assert np.median(steps) >= 3, f"fn saw frames {seen[:20]}...: nothing skipped"
    sent = recording.notes["track"].sent
    first = recording.notes["first"]
    delays = [
        (f.arrival, f.arrival - sent[f.frame_id])
        for f in recording.peer.recorder.frames
        if f.frame_id is not None and f.frame_id in sent and f.arrival >= first
    ]
    early = [d for t, d in delays if t < first + 2.0]
    late = [d for t, d in delays if t > first + 4.0]
    assert early and late, f"too few processed frames came back ({len(delays)})"
    early_delay, late_delay = statistics.median(early), statistics.median(late)
    assert late_delay < 0.6, f"the delay grew to {late_delay:.2f} s (from {early_delay:.2f} s)"
    assert late_delay - early_delay < 0.25, (
        f"the delay grew from {early_delay:.2f} s to {late_delay:.2f} s"
    )


@pytest.mark.requirement("FVID-002")
def test_every_frame_reaches_fn_in_order(video_sessions: Recordings) -> None:
    """VideoStreamHandler(fn) without skip_frames: a fn briefly slower than the camera
    still sees consecutive frame ids."""
    seen = video_sessions["every"].probe.get("seen")
    for client in (0, 1):
        ids = [s[1] for s in seen if s[0] == client and s[1] is not None]
        assert len(ids) >= 60, f"fn read {len(ids)} frame ids of client {client}"
        wrong = [(a, b) for a, b in itertools.pairwise(ids) if b - a != 1]
        assert not wrong, f"client {client}: fn saw frame ids jump (from, to): {wrong[:8]}"


@pytest.mark.requirement("FVID-003")
def test_fps_paces_a_receive_mode_generator(video_sessions: Recordings) -> None:
    """Receive mode, VideoStreamHandler(generator, fps=10): the frames arrive at 10 fps."""
    recording = video_sessions["fps"]
    first = recording.notes["first"]
    frames = [f for f in recording.peer.recorder.frames if first + 0.5 <= f.arrival < first + 2.5]
    rate = len(frames) / 2.0
    assert 8.0 <= rate <= 12.0, f"the client got {rate:.1f} frames per second, expected 10"
    ids = [f.frame_id for f in frames if f.frame_id is not None]
    assert ids == sorted(ids), f"frames out of order: {ids[:20]}"


@pytest.mark.requirement("FVID-004")
def test_video_stream_handler_frames_are_rgb(video_sessions: Recordings) -> None:
    """A VideoStreamHandler's fn gets uint8 (height, width, 3) frames in RGB order."""
    seen = video_sessions["every"].probe.get("seen")
    assert seen, "fn was never called"
    kinds = {(s[2], s[3], s[4]) for s in seen}
    assert kinds == {("ndarray", "uint8", (HEIGHT, WIDTH, 3))}, f"fn got {kinds}"
    orders = {s[5] for s in seen if s[5] is not None}
    assert orders == {"rgb"}, f"fn got frames in {orders} order"


@pytest.mark.requirement("FHND-009")
def test_context_in_video_function(video_sessions: Recordings) -> None:
    """get_current_context().webrtc_id in a video function is the webrtc_id of the
    connection whose frame it processes."""
    recording = video_sessions["every"]
    contexts_check(recording.probe, recording.notes["ids"], {"video"})
