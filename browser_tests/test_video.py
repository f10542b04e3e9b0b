"""Video scenarios in Chromium, read back from the page's remote <video> through a canvas.

4. send-receive (echo-video demo, Sobel filter + slider): the barcode frame ids come back
   in order, the filter is visible, and moving the slider changes it while streaming;
5. server-to-client video started by a button (the guide's example, with barcoded
   frames): the frames shown are the generator's frames, and they advance at its rate.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from browser_tests import apps
from browser_tests.helpers import Peer, assert_in_order, frame_ids, poll
from fixtures.video import read_frame_id
from webrtc_ref.demos import build_demo
from webrtc_ref.testing import launched

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def green_fraction(rgb: np.ndarray) -> float:
    """Share of pixels painted the filter's edge green (0, 255, 0)."""
    r, g, b = (rgb[..., i].astype(np.int16) for i in range(3))
    return float(np.mean((g > 180) & (r < 90) & (b < 90)))


def strip_white(rgb: np.ndarray) -> float:
    """Mean of the barcode frame's white reference cell (grey ramp step 10 = 255), centre half."""
    h, w = rgb.shape[:2]
    x0, x1 = round(10 * w / 20), round(11 * w / 20)
    y0, y1 = round(12 * h / 15), round(15 * h / 15)
    dx, dy = (x1 - x0) // 4, (y1 - y0) // 4
    return float(rgb[y0 + dy : y1 - dy, x0 + dx : x1 - dx].mean())


@pytest.mark.timeout(60)
def test_video_filter_frames_in_order_and_slider(
    open_peer: Callable[..., Peer], timings: Any
) -> None:
    """Scenario 4: processed frames come back in order; the slider retunes the filter live."""
    with launched(build_demo("echo-video")) as url:
        peer = open_peer(url, name="webcam")
        threshold = peer.page.get_by_label("number input for Confidence Threshold")
        peer.start()
        assert peer.wait_state("streaming", "error") == "streaming", peer.text(".wr-error")
        session = peer.wait_first_media()

        # Frame ids come back in order (never backwards; repeats only as the camera makes them).
        frames = peer.capture_frames(45)
        ids = frame_ids(frames)
        ordered = assert_in_order(ids)
        span_s = (frames[-1].at - frames[0].at) / 1000
        assert ordered[-1] - ordered[0] <= 30 * span_s + 10, (ids, span_s)  # live, not a replay

        # Processed at threshold 0.3: barcode cell borders are edges (green), the rest is
        # darkened to 60 %.
        rgb, _ = peer.grab()
        assert 0.01 < green_fraction(rgb) < 0.3, green_fraction(rgb)
        assert 130 < strip_white(rgb) < 180, strip_white(rgb)  # 255 * 0.6 = 153

        # Threshold 0: every pixel is an edge.
        moved = peer.now()
        threshold.fill("0")
        threshold.press("Enter")
        all_green = poll(
            lambda: (g := peer.grab()) and green_fraction(g[0]) > 0.95 and g,
            10,
            "the whole frame to turn green (threshold 0)",
        )
        to_green_ms = all_green[1] - moved

        # Threshold 0.95: no edge is that strong; the darkened barcode reads again.
        moved = peer.now()
        threshold.fill("0.95")
        threshold.press("Enter")
        plain = poll(
            lambda: (g := peer.grab()) and green_fraction(g[0]) < 0.005 and g,
            10,
            "the green edges to disappear (threshold 0.95)",
        )
        to_plain_ms = plain[1] - moved
        assert 130 < strip_white(plain[0]) < 180, strip_white(plain[0])
        assert peer.state == "streaming"
        later = frame_ids(peer.capture_frames(10))
        assert sum(i is not None for i in later) >= 8, later
        stats = peer.stats()
        peer.stop()
        assert peer.wait_state("idle") == "idle"

    inbound = stats["inbound"]["video"]
    assert inbound["framesDecoded"] > 30
    timings.record(
        "4 video send-receive (filter + slider)",
        session,
        "webcam",
        frames_read=len(ordered),
        slider_to_effect_ms=[round(to_green_ms), round(to_plain_ms)],
        size=f"{inbound.get('frameWidth')}x{inbound.get('frameHeight')}",
    )


@pytest.mark.timeout(60)
def test_receive_video_started_by_button(
    open_peer: Callable[..., Peer], timings: Any, artifacts: Path
) -> None:
    """Scenario 5: the Start button starts the server's frames; they play and advance.
    Each frame is a barcode of its index, so the frame shown is read, not guessed."""
    with launched(apps.receive_video_app()) as url:
        peer = open_peer(url, name="viewer")
        assert peer.state == "idle"
        peer.page.get_by_role("button", name="Start", exact=True).click()
        assert peer.wait_state("streaming", "error") == "streaming", peer.text(".wr-error")
        session = peer.wait_first_media()
        # The click started the stream at once (the trigger's client-side listener); the
        # queued listener's "start_webrtc_stream" then confirms it instead of restarting.
        starts = poll(
            lambda: (s := peer.eval("(root) => root.__webrtc.starts"))["confirmed"] and s,
            10,
            "the queued trigger listener's confirmation",
        )
        assert starts == {"total": 1, "early": 1, "confirmed": 1}, starts
        assert peer.state == "streaming"
        shown: list[tuple[float, int]] = []
        for _ in range(4):
            count = peer.session()["frames"]
            poll(lambda c=count: peer.session()["frames"] >= c + 10, 10, "10 more frames")
            rgb, at = peer.grab()
            assert rgb.shape == (apps.RECEIVE_HEIGHT, apps.RECEIVE_WIDTH, 3)
            index = read_frame_id(rgb)
            if index is None:
                artifacts.mkdir(parents=True, exist_ok=True)
                np.save(artifacts / "unidentified-frame.npy", rgb)
            assert index is not None, "the shown frame is none of the generator's"
            shown.append((at, index))
        presented = peer.session()
        peer.stop()
        assert peer.wait_state("idle") == "idle"

    indices = [i for _, i in shown]
    assert all(b > a for a, b in itertools.pairwise(indices)), shown
    rate = (indices[-1] - indices[0]) / ((shown[-1][0] - shown[0][0]) / 1000)
    assert 20 < rate < 40, (rate, shown)  # the generator's 30 fps, in real time
    seconds = (presented["lastFrameAt"] - presented["firstFrameAt"]) / 1000
    fps = (presented["frames"] - 1) / seconds
    assert fps > 20, fps
    timings.record(
        "5 receive video (button trigger)",
        session,
        "viewer",
        presented_fps=round(fps, 1),
        frames_identified=len(shown),
    )
