"""Video frames in and out: what fn receives and what the client sees.

The client sends ``fixtures`` barcode frames (a frame id, pure red/green/blue patches) at
30 fps; the suite's functions paint the bottom rows with an input's value, so the client
can tell processed frames from echoed ones and read which value fn used.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pytest

from conformance.adapters import Adapter, Input, Scenario
from conformance.helpers import MANY, Probe, frames_generator, marker_fn
from conformance.recording import Plan, Recordings, record_all
from conformance.wire import Wire, WirePeer, eventually

WIDTH, HEIGHT = 320, 240


def barcode(**kwargs: Any) -> Any:
    from fixtures.tracks import BarcodeVideoTrack

    return BarcodeVideoTrack(WIDTH, HEIGHT, clock=time.time, **kwargs)


def marked(peer: WirePeer, level: float, *, since: float = 0.0) -> list[Any]:
    """Frames the client received with the bottom rows painted at ``level`` (±12)."""
    recorder = peer.recorder
    if recorder is None:
        return []
    return [f for f in recorder.frames if f.arrival >= since and abs(f.mark - level) < 12]


def _marker_plan() -> Plan:
    def scenario(probe: Probe) -> Scenario:
        return Scenario("send-receive", "video", lambda api: marker_fn(probe), inputs=(Input(100),))

    async def script(wire: Wire, probe: Probe) -> dict[str, Any]:
        peer = wire.peer(send=barcode())
        await peer.connect_ok()
        await peer.wait_remote()
        await eventually(lambda: len(marked(peer, 100)) >= 30, 8.0)
        changed = time.time()
        await peer.set_inputs([200])
        await eventually(lambda: len(marked(peer, 200, since=changed)) >= 10, 5.0)
        await peer.close()
        return {"changed": changed}

    return Plan(scenario, script)


def _identity_plan() -> Plan:
    def scenario(probe: Probe) -> Scenario:
        def identity(image: np.ndarray) -> np.ndarray:
            probe.bump("calls")
            return image

        return Scenario("send-receive", "video", lambda api: identity)

    async def script(wire: Wire, probe: Probe) -> dict[str, Any]:
        peer = wire.peer(send=barcode())
        await peer.connect_ok()
        recorder = await peer.wait_remote()
        await eventually(lambda: len(recorder.frames) >= 1, 5.0)
        first = time.time()
        await eventually(lambda: time.time() > first + 2.5, 5.0)
        await peer.close()
        return {"first": first}

    return Plan(scenario, script)


def _resize_plan() -> Plan:
    def scenario(probe: Probe) -> Scenario:
        def half(image: np.ndarray) -> np.ndarray:
            return np.ascontiguousarray(image[::2, ::2, :])

        return Scenario("send-receive", "video", lambda api: half)

    async def script(wire: Wire, probe: Probe) -> dict[str, Any]:
        peer = wire.peer(send=barcode())
        await peer.connect_ok()
        recorder = await peer.wait_remote()
        await eventually(lambda: sum(f.width == WIDTH // 2 for f in recorder.frames) >= 10, 6.0)
        await peer.close()
        return {}

    return Plan(scenario, script)


def _receive_plan() -> Plan:
    def scenario(probe: Probe) -> Scenario:
        return Scenario("receive", "video", lambda api: frames_generator(60, WIDTH, HEIGHT))

    async def script(wire: Wire, probe: Probe) -> dict[str, Any]:
        peer = wire.peer()
        await peer.connect_ok()
        recorder = await peer.wait_remote()
        await eventually(lambda: recorder.ended or peer.ended or len(recorder.ids()) >= 55, 8.0)
        await peer.close()
        return {}

    return Plan(scenario, script)


def _send_plan() -> Plan:
    def scenario(probe: Probe) -> Scenario:
        def analyse(image: np.ndarray, tag: Any) -> None:
            probe.add("frame", (getattr(image, "shape", None), tag))

        return Scenario("send", "video", lambda api: analyse, inputs=(Input(5),))

    async def script(wire: Wire, probe: Probe) -> dict[str, Any]:
        peer = wire.peer(send=barcode())
        await peer.connect_ok()
        await eventually(lambda: len(probe.get("frame")) >= 20, 6.0)
        await eventually(lambda: time.time() > (peer.connected_at or 0) + 1.5, 3.0)
        await peer.close()
        return {}

    return Plan(scenario, script)


def _none_plan() -> Plan:
    def scenario(probe: Probe) -> Scenario:
        def every_other(image: np.ndarray) -> np.ndarray | None:
            count = probe.bump("calls")
            if count % 2 == 0:
                probe.add("none", time.time())
                return None
            return image

        return Scenario("send-receive", "video", lambda api: every_other)

    async def script(wire: Wire, probe: Probe) -> dict[str, Any]:
        peer = wire.peer(send=barcode())
        await peer.connect_ok()
        await peer.wait_remote()
        await eventually(lambda: bool(probe.get("none")), 6.0)
        first_none = probe.get("none")[0]
        await eventually(lambda: time.time() > first_none + 2.5, 4.0)
        await peer.close()
        return {"first_none": first_none}

    return Plan(scenario, script)


def _slow_plan() -> Plan:
    def scenario(probe: Probe) -> Scenario:
        def slow(image: np.ndarray) -> np.ndarray:
            time.sleep(0.1)
            return image

        return Scenario("send-receive", "video", lambda api: slow)

    async def script(wire: Wire, probe: Probe) -> dict[str, Any]:
        track = barcode()
        peer = wire.peer(send=track)
        await peer.connect_ok()
        recorder = await peer.wait_remote()
        await eventually(lambda: len(recorder.frames) >= 1, 5.0)
        first = time.time()
        await eventually(lambda: time.time() > first + 4.0, 6.0)
        await peer.close()
        return {"track": track}

    return Plan(scenario, script)


def _two_users_plan() -> Plan:
    def scenario(probe: Probe) -> Scenario:
        def maybe_slow(image: np.ndarray, slow: Any) -> np.ndarray:
            if slow:
                time.sleep(0.3)
            return image

        return Scenario(
            "send-receive",
            "video",
            lambda api: maybe_slow,
            inputs=(Input(False, "checkbox"),),
            concurrency_limit=MANY,
        )

    async def script(wire: Wire, probe: Probe) -> dict[str, Any]:
        slow = wire.peer(send=barcode(), inputs=[True])
        fast = wire.peer(send=barcode(), inputs=[False])
        for peer in (slow, fast):
            await peer.connect_ok()
        recorder = await fast.wait_remote()
        await slow.wait_remote()
        await eventually(lambda: len(recorder.frames) >= 1, 5.0)
        first = time.time()
        await eventually(lambda: time.time() > first + 3.0, 5.0)
        for peer in (slow, fast):
            await peer.close()
        return {"first": first}

    return Plan(scenario, script)


@pytest.fixture(scope="module")
def video_sessions(adapter: Adapter) -> Recordings:
    return record_all(
        adapter,
        {
            "marker": _marker_plan(),
            "identity": _identity_plan(),
            "resize": _resize_plan(),
            "receive": _receive_plan(),
            "send": _send_plan(),
            "none": _none_plan(),
        },
    )


@pytest.fixture(scope="module")
def timing_sessions(adapter: Adapter) -> Recordings:
    """Timing-sensitive sessions, recorded apart from the others."""
    return record_all(adapter, {"slow": _slow_plan(), "two-users": _two_users_plan()})


# -- tests ---------------------------------------------------------------------------------------


@pytest.mark.requirement("VID-001")
def test_returned_frame_is_what_the_client_gets(video_sessions: Recordings) -> None:
    """Send-receive video: the array fn returns is what the client receives (a mark drawn
    by fn is visible at the client)."""
    peer = video_sessions["marker"].peer
    frames = peer.recorder.frames if peer.recorder else []
    assert frames, "the client received no video"
    assert len(marked(peer, 100)) >= 30, (
        f"fn's mark (level 100) is missing: marks seen {sorted({round(f.mark) for f in frames})}"
    )


@pytest.mark.requirement("VID-002")
def test_fn_gets_height_width_3_uint8(video_sessions: Recordings) -> None:
    """fn receives each frame as a uint8 numpy array of shape (height, width, 3) matching
    the client's frame size."""
    calls = video_sessions["marker"].probe.get("frame")
    assert calls, "fn was never called"
    forms = {(kind, shape, dtype) for _, kind, shape, dtype, _, _ in calls}
    assert forms == {("ndarray", (HEIGHT, WIDTH, 3), "uint8")}, f"fn got {forms}"


@pytest.mark.requirement("VID-003")
def test_fn_gets_rgb(video_sessions: Recordings) -> None:
    """The frame's channel order is RGB."""
    calls = video_sessions["marker"].probe.get("frame")
    orders = [order for _, _, _, _, order, _ in calls[-20:]]
    assert orders, "fn was never called"
    assert orders.count("rgb") >= 0.9 * len(orders), f"channel order seen by fn: {orders}"


@pytest.mark.requirement("VID-004")
def test_fn_gets_the_other_inputs(video_sessions: Recordings) -> None:
    """fn receives the values of the other inputs after the frame: fn(frame, conf_threshold)."""
    calls = video_sessions["marker"].probe.get("frame")
    levels = [level for *_, level in calls]
    assert 100 in levels, f"fn never got the input value 100; got {sorted(set(map(str, levels)))}"


@pytest.mark.requirement("VID-005")
def test_input_change_reaches_fn(video_sessions: Recordings) -> None:
    """A new value of another input reaches fn while the stream runs."""
    recording = video_sessions["marker"]
    changed = recording.notes["changed"]
    after = [level for t, *_, level in recording.probe.get("frame") if t > changed]
    assert 200 in after, f"fn never got the new value 200; got {sorted(set(map(str, after)))}"
    assert len(marked(recording.peer, 200, since=changed)) >= 10, "the client never saw it"


@pytest.mark.requirement("VID-006")
def test_identity_preserves_colours(video_sessions: Recordings) -> None:
    """An identity fn sends the client's colours back unchanged (RGB in, RGB out)."""
    peer = video_sessions["identity"].peer
    frames = peer.recorder.frames if peer.recorder else []
    orders = [f.order for f in frames[-30:] if f.order is not None]
    assert orders, "no readable frame came back"
    assert orders.count("rgb") >= 0.9 * len(orders), f"channel order at the client: {orders}"


@pytest.mark.requirement("VID-007")
def test_frames_return_in_order_at_the_input_rate(video_sessions: Recordings) -> None:
    """Processed frames come back in order and at close to the input rate (at least 20 fps
    for a 30 fps input and a fast fn)."""
    recording = video_sessions["identity"]
    first = recording.notes["first"]
    frames = recording.peer.recorder.frames
    window = [f.frame_id for f in frames if first + 0.5 <= f.arrival < first + 2.5]
    ids = [i for i in window if i is not None]
    assert len(ids) >= 40, f"{len(ids) / 2:.1f} fps came back (2 s window)"
    assert ids == sorted(ids), f"frames came back out of order: {ids}"


@pytest.mark.requirement("VID-008")
def test_output_may_change_size(video_sessions: Recordings) -> None:
    """fn may return a frame of another size than its input; the client receives that size."""
    frames = video_sessions["resize"].peer.recorder.frames
    sizes = {(f.width, f.height) for f in frames[-10:]}
    assert sizes == {(WIDTH // 2, HEIGHT // 2)}, f"the client received sizes {sizes}"


@pytest.mark.requirement("VID-009")
def test_receive_mode_sends_generated_frames_in_order(video_sessions: Recordings) -> None:
    """Receive mode: after the trigger, the frames yielded by the generator (fn() with
    inputs=None) are sent to the client in order."""
    recorder = video_sessions["receive"].peer.recorder
    assert recorder is not None, "the client received no video track"
    ids = recorder.ids()
    assert len(ids) >= 40, f"only {len(ids)} of the 60 generated frames arrived"
    assert ids == sorted(ids), f"frames arrived out of order: {ids}"


@pytest.mark.requirement("VID-010")
def test_receive_mode_frames_are_rgb(video_sessions: Recordings) -> None:
    """Receive mode: yielded frames are read as RGB, the component's channel order, so the
    client sees the colours the generator painted."""
    recorder = video_sessions["receive"].peer.recorder
    assert recorder is not None, "the client received no video track"
    orders = [f.order for f in recorder.frames if f.order is not None]
    assert orders, "no readable frame arrived"
    assert orders.count("rgb") >= 0.9 * len(orders), f"colours at the client: {orders[-10:]}"


@pytest.mark.requirement("VID-011")
def test_send_mode_video_calls_fn_and_returns_nothing(video_sessions: Recordings) -> None:
    """Send mode (video): fn(frame, *inputs) is called with the client's frames and nothing
    is sent back."""
    recording = video_sessions["send"]
    calls = recording.probe.get("frame")
    assert len(calls) >= 20, f"fn was called {len(calls)} times"
    assert calls[-1] == ((HEIGHT, WIDTH, 3), 5)
    recorder = recording.peer.recorder
    received = len(recorder.frames) if recorder is not None else 0
    assert received == 0, f"the client received {received} frames in send mode"


@pytest.mark.requirement("VID-012")
def test_none_skips_a_frame_and_the_stream_goes_on(video_sessions: Recordings) -> None:
    """A send-receive fn that returns None skips that frame; later frames keep flowing."""
    recording = video_sessions["none"]
    first_none = recording.notes["first_none"]
    frames = recording.peer.recorder.frames
    later = [f for f in frames if first_none + 1.0 <= f.arrival < first_none + 2.5]
    assert len(later) >= 10, (
        f"{len(later)} frames arrived 1-2.5 s after fn first returned None: the stream stalled"
    )


@pytest.mark.requirement("VID-013")
def test_slow_fn_keeps_delay_bounded(timing_sessions: Recordings) -> None:
    """With an fn slower than the camera (100 ms per frame at 30 fps), the delay stays
    bounded (under 0.5 s, not growing): frames are dropped, not queued."""
    recording = timing_sessions["slow"]
    sent = recording.notes["track"].sent
    lags = [
        f.arrival - sent[f.frame_id]
        for f in recording.peer.recorder.frames
        if f.frame_id is not None and f.frame_id in sent
    ]
    assert len(lags) >= 15, f"only {len(lags)} processed frames came back"
    third = len(lags) // 3
    early, late = float(np.median(lags[:third])), float(np.median(lags[-third:]))
    assert late < 0.5, f"the delay grew to {late:.2f} s (from {early:.2f} s)"
    assert late - early < 0.2, f"the delay grew from {early:.2f} s to {late:.2f} s"


@pytest.mark.requirement("VID-014")
def test_slow_user_does_not_slow_another(timing_sessions: Recordings) -> None:
    """A slow fn on one connection does not slow another connection's stream."""
    recording = timing_sessions["two-users"]
    first = recording.notes["first"]
    fast = recording.peers[1]
    window = [f for f in fast.recorder.frames if first + 0.5 <= f.arrival < first + 2.5]
    assert len(window) >= 40, (
        f"the fast user got {len(window) / 2:.1f} fps while another user's fn was slow"
    )
