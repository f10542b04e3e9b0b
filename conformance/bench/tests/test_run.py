"""The benchmark driver end to end, with a tiny plan, on webrtc_ref and the bare aiortc floor.

Real parts throughout: the bench server runs in its own process (this venv's python), the
client is the conformance wire client with real aiortc peers, media is the fixtures'.
The assertions are about the harness measuring what it claims (markers found, offer timed,
a bounded slow-video pipeline seen as flat), with bounds far from the published figures.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from conformance.bench import server
from conformance.bench.run import QUICK, run

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

TINY = dataclasses.replace(
    QUICK,
    name="tiny",
    settle_s=0.5,
    echo_window_s=2.0,
    slow_s=7.0,
    setup_trials=1,
    quiet_wait_s=2.0,
)


def _blocks(audio: np.ndarray, layout: str, rate: int = 48000) -> list[tuple[float, int, Any]]:
    """``audio`` (int16 mono) cut into 20 ms blocks the way an implementation might hand them
    to ``receive``, stamped 0.02 s apart."""
    n = rate // 50
    out = []
    for i in range(0, audio.size - n + 1, n):
        block = audio[i : i + n]
        if layout == "mono":
            array = block[None, :]
        elif layout == "planar":
            array = np.stack([block, block])
        else:  # interleaved stereo in one row
            array = np.repeat(block, 2)[None, :]
        out.append((100.0 + i / rate, rate, array))
    return out


@pytest.mark.parametrize("layout", ["mono", "planar", "interleaved"])
def test_server_finds_markers_in_any_block_layout(layout: str) -> None:
    from fixtures.timestamps import block_samples, encode

    audio = np.asarray(encode(0, 48000), dtype=np.int16)  # 1 s: ten 100 ms blocks
    found = server.markers(_blocks(audio, layout))
    assert [s for s, _ in found] == [k * block_samples() for k in range(10)]
    # each marker carries the time of the receive() call holding its first sample
    for sent_sample, t in found:
        assert t == pytest.approx(100.0 + (sent_sample // 960) * 0.02)


def test_bench_measures_webrtc_ref_and_the_floor(tmp_path: Path) -> None:
    results = asyncio.run(
        run(["webrtc_ref"], {}, TINY, ("setup", "audio_echo", "video_slow"), floor=True)
    )
    setup = results["setup"]["webrtc_ref"]
    assert setup["server_answer_s"], "the offer server function was not timed"
    assert setup["first_media_s"] and 0 < setup["first_media_s"][0] < 5

    echo = results["audio_echo"]["webrtc_ref"]
    assert echo["coverage"] >= 0.8, echo
    assert echo["errors"] == [], echo["errors"]
    assert echo["rt"]["n"] == len(echo["rt_s"]) > 0 and echo["rt"]["p25"] <= echo["rt"]["p75"]
    assert 0.02 < echo["rt_p95_s"] < 1.0
    assert echo["in_s"], "no marker reached receive()"
    assert 0 < echo["in_p50_s"] < echo["rt_p50_s"]
    floor = results["audio_echo"]["aiortc"]
    assert floor["coverage"] >= 0.8 and floor["in_s"] is None

    slow = results["video_slow"]["webrtc_ref"]
    assert 5 < slow["fps"] <= 11, slow["fps"]  # a 100 ms fn: at most 10 frames per second
    assert abs(slow["growth_s"]) < 0.2, "a bounded pipeline does not fall behind"
    assert "video_slow" not in results or "aiortc" not in results["video_slow"]

    names = [row["name"] for row in results["targets"]]
    assert "Audio round trip p95" in names
    row = results["targets"][names.index("Audio round trip p95")]
    assert row["ratio"] is not None and "markers" in row["n"] and "IQR" in row["spread"]

    from conformance.bench.report import render_markdown

    page = render_markdown(results, {})
    assert "webrtc_ref" in page and "aiortc (bare, floor)" in page


def test_light_client_echo_is_logged_and_decoded_after_the_window() -> None:
    """A light link (pre-encoded packets out, RTP logged) to the floor's echo: the markers
    come back, decoded after the window, and no frame is late."""
    from conformance.bench.media import frame_lateness, round_trips
    from conformance.bench.run import FloorTarget, close_all, packet_track

    async def main() -> tuple[list[float], int, int, tuple[int, int, int]]:
        floor = FloorTarget()
        await floor.start()
        try:
            link = await floor.open("echo", packet_track(), light=True)
            assert link.error is None, link.error
            await asyncio.sleep(0.5)
            t0 = time.time()
            await asyncio.sleep(2.0)
            t1 = time.time()
            await asyncio.sleep(0.3)
            await close_all([link])
            return (*round_trips(link, t0, t1), frame_lateness(link, t0, t1))
        finally:
            await floor.stop()

    rts, sent, back, (late, missing, expected) = asyncio.run(main())
    assert sent >= 10 and back == sent, (sent, back)
    assert all(0 < rt < 0.5 for rt in rts)
    assert late == 0 and missing <= 1 and expected == 100


LAGGING = "conformance.bench.tests.adapters:LaggingVideo"


def test_av_echo_measures_each_track_and_a_video_lag_as_skew() -> None:
    """The audio-video echo on webrtc_ref, on webrtc_ref whose handler gets its camera
    frames 100 ms late (audio untouched), and on the bare floor echoing both tracks: every
    marker and frame is matched, and the lag shows as 100 ms less skew (audio - video)."""
    import sys

    from conformance.bench.tests.adapters import LAG_S

    plan = dataclasses.replace(TINY, av_runs=1, av_window_s=3.0)
    results = asyncio.run(
        run(["webrtc_ref", LAGGING], {LAGGING: sys.executable}, plan, ("av_echo",), floor=True)
    )
    figure = results["av_echo"]
    for name in ("webrtc_ref", LAGGING, "aiortc"):
        entry = figure[name]
        assert entry["errors"] == [] and entry["sessions"] == 1, (name, entry.get("errors"))
        assert entry["coverage"] >= 0.8, (name, entry["markers_sent"], entry["markers_back"])
        assert entry["fps"] > 15, (name, entry["fps"])
        assert entry["audio_rt"]["n"] >= 20 and entry["video_rt"]["n"] >= 60, name
        assert 0 < entry["audio_rt_p50_s"] < 1.0 and 0 < entry["video_rt_p50_s"] < 1.0, name
        # a sample per echoed frame with audio around it; transits inside the round trips
        assert entry["skew"]["n"] >= 50, (name, entry["skew"])
        assert 0 < entry["audio_transit_p50_s"] < entry["audio_rt_p50_s"], name
        assert 0 < entry["video_transit_p50_s"] < entry["video_rt_p50_s"], name
        assert entry["abs_skew_p95_s"] >= abs(entry["skew_p50_s"]), name
        assert len(entry["series"]) == 1 and len(entry["series"][0]) == entry["skew"]["n"]
    for name in ("webrtc_ref", LAGGING, "aiortc"):
        entry = figure[name]
        print(
            f"{name}: skew p50 {1000 * entry['skew_p50_s']:+.1f} ms, |skew| p95 "
            f"{1000 * entry['abs_skew_p95_s']:.1f} ms; round trip p50 audio "
            f"{1000 * entry['audio_rt_p50_s']:.0f} ms, "
            f"video {1000 * entry['video_rt_p50_s']:.0f} ms"
        )
    lag = figure[LAGGING]["skew_p50_s"] - figure["webrtc_ref"]["skew_p50_s"]
    assert -LAG_S - 0.04 < lag < -LAG_S + 0.04, (
        f"a {LAG_S:g} s video lag moved the skew {lag:+.3f} s"
    )
    lagged_video = (
        figure[LAGGING]["video_transit_p50_s"] - figure["webrtc_ref"]["video_transit_p50_s"]
    )
    assert lagged_video > LAG_S - 0.03, lagged_video
    rows = {row["name"]: row for row in results["targets"]}
    row = next(r for name, r in rows.items() if name.startswith("Audio-video echo"))
    assert row["met"] is not None and row["ratio"] is not None and "frames" in row["n"]


def test_server_reports_av_echo_unsupported_without_the_modality() -> None:
    """An implementation without the audio-video modality serves every other stream and
    says why it lacks ``av-echo`` (the figure then reports it unsupported)."""
    from conformance.bench.tests.adapters import NoAudioVideo, WebrtcRefAdapter

    _, streams, unsupported = server.build(NoAudioVideo())
    assert "av-echo" not in streams and {"echo", "video", "turns"} <= set(streams)
    assert unsupported == {"av-echo": "not claimed in this test"}
    _, streams, unsupported = server.build(WebrtcRefAdapter())
    assert streams["av-echo"]["modality"] == "audio-video" and unsupported == {}
