"""The benchmark's scoring and statistics on synthetic input (no server, no peers)."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import pytest

from conformance.bench import run, stats
from conformance.bench.media import RtpLog, frame_lateness


def test_stats_summaries() -> None:
    summary = stats.spread([4.0, 1.0, 3.0, 2.0, None, float("nan")])  # type: ignore[list-item]
    assert summary["n"] == 4
    assert summary["p50"] == pytest.approx(2.5)
    assert (summary["p25"], summary["p75"]) == (pytest.approx(1.75), pytest.approx(3.25))
    assert (summary["min"], summary["max"]) == (1.0, 4.0)
    assert stats.spread([]) == {
        "n": 0,
        "p50": None,
        "p95": None,
        "p25": None,
        "p75": None,
        "min": None,
        "max": None,
    }
    assert stats.pct([], 95) is None and stats.median([3.0]) == 3.0
    assert stats.ratio(2.0, 4.0) == 0.5
    assert stats.ratio(2.0, 0.0) is None and stats.ratio(None, 1.0) is None
    assert stats.difference(3.0, 1.0) == 2.0 and stats.difference(None, 1.0) is None


def _run(name: str, **kw: Any) -> dict[str, Any]:
    base = {
        "scenario": name,
        "lead_ms": 0.0,
        "silent": name in ("noise_only", "tone_only"),
        "expected": [],
        "heard": [],
        "latencies_s": [],
        "false": 0,
        "missed": 0,
        "error": None,
    }
    return {**base, **kw}


def test_turns_silent_scenarios_succeed_by_staying_silent_and_errors_count_apart() -> None:
    runs = [
        _run("speech_pause_speech", expected=[3.0, 7.0], heard=[3.5, 7.4], latencies_s=[0.5, 0.4]),
        _run("questions", expected=[2.0, 6.0, 10.0], heard=[2.6], latencies_s=[0.6], missed=2),
        _run("noise_only"),  # silent, as it must be: a success
        _run("tone_only", heard=[1.0], false=1),  # replied: a false turn
        _run("noise_only", lead_ms=7.0, error="no media within 20 s"),  # an error, not a pass
        _run("hesitations", expected=[4.0], error="refused: HTTP 500"),  # neither missed nor timed
    ]
    out = run.summarize_turns(runs)
    assert out["n"] == 3 and out["latencies_s"] == [0.5, 0.4, 0.6]
    assert out["expected"] == 5  # the failed hesitations run expects nothing
    assert out["missed"] == 2
    assert out["false"] == 1 and out["silent_false"] == 1
    assert (out["silent_runs"], out["silent_ok"]) == (2, 1)
    assert (out["runs"], out["error_runs"]) == (6, 2)
    assert out["errors"] == [
        "noise_only (lead 7 ms): no media within 20 s",
        "hesitations (lead 0 ms): refused: HTTP 500",
    ]
    assert out["speech_scenarios"] == 2
    assert out["latency"]["n"] == 3 and out["latency"]["min"] == 0.4
    noise = out["scenarios"]["noise_only"]
    assert noise["silent"] and (noise["runs"], noise["errors"], noise["silent_ok"]) == (2, 1, 1)
    assert out["scenarios"]["hesitations"]["errors"] == 1


def test_a_run_that_cannot_connect_scores_no_success() -> None:
    """The old figure scored a failed silent run as 0 false, 0 missed: a pass."""
    out = run.summarize_turns([_run("noise_only", error="no media within 20 s")])
    assert (out["silent_runs"], out["silent_ok"], out["error_runs"]) == (0, 0, 1)
    rows = run.targets_table({"turns": {run.BASELINE: {**out, "p95_s": 0.3}}})
    turn = next(r for r in rows if r["name"].startswith("Turn latency"))
    assert turn["met"] is False


class _FakeTarget(run.Target):
    def __init__(self) -> None:
        self.name, self.pid = "fake", 0
        self.streams, self.unsupported = {"echo": {}}, {}


def test_capacity_ramps_coarse_then_by_one_and_confirms(monkeypatch: pytest.MonkeyPatch) -> None:
    """A server that holds 10 sessions: 4, 8, 12 (fails twice), then 9, 10, 11 (fails
    twice), then 10 once more."""
    seen: list[int] = []

    async def window(target: Any, kind: str, n: int, *args: Any, **kwargs: Any) -> run.Window:
        seen.append(n)
        return run.Window(
            n=n,
            connected=n,
            server_cpu_pct=9.0 * n,
            server_idle_pct=1.0,
            client_cpu_pct=1.5 * n,
            client_threads_pct={},
            other_cpu_pct=0.0,
            late_fraction=0.0 if n <= 10 else 0.3,
            coverage=1.0,
            rt_p95_s=0.09,
        )

    monkeypatch.setattr(run, "measure_window", window)
    plan = dataclasses.replace(run.QUICK, ramp_start=4, ramp_step=4, ramp_max=64)
    out = asyncio.run(run.capacity(_FakeTarget(), plan))
    assert seen == [4, 8, 12, 12, 9, 10, 11, 11, 10]
    assert (out["held"], out["failed_at"], out["stopped"]) == (10, 11, "failed at N=11")
    assert out["windows"] == 9
    assert (out["held_windows"], out["held_passed"]) == (2, 2)
    assert out["server_per_session_pct"]["p50"] == pytest.approx(9.0)
    assert out["client_per_session_pct"]["p50"] == pytest.approx(1.5)
    assert [s["phase"] for s in out["steps"]][-1] == "confirm"


def test_capacity_step_needs_every_session_and_an_intact_echo() -> None:
    def window(**kw: Any) -> run.Window:
        base: dict[str, Any] = {
            "n": 4,
            "connected": 4,
            "server_cpu_pct": 30.0,
            "server_idle_pct": 1.0,
            "client_cpu_pct": 5.0,
            "client_threads_pct": {},
            "other_cpu_pct": 0.0,
            "late_fraction": 0.0,
            "coverage": 1.0,
        }
        return run.Window(**{**base, **kw})

    assert run._step_passed(window())
    assert not run._step_passed(window(connected=3))
    assert not run._step_passed(window(late_fraction=0.02))
    assert not run._step_passed(window(coverage=0.5))  # paced, but not echoing the audio
    assert not run._step_passed(window(coverage=None))


def test_targets_against_the_tight_floor_and_the_idle_floor() -> None:
    def cpu(echo: float, idle: float, tight: float | None = None) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "sessions": 4,
            "echo": {"median_pct": echo, "stats": stats.spread([echo, echo + 0.2])},
            "idle": {"median_pct": idle, "stats": stats.spread([idle])},
        }
        if tight is not None:
            entry["echo_tight"] = {"median_pct": tight, "stats": stats.spread([tight])}
        return entry

    results = {
        "cpu": {run.BASELINE: cpu(7.0, 3.0), run.FLOOR: cpu(9.5, 2.4, tight=6.5)},
        "capacity": {
            run.BASELINE: {"held": 12, "failed_at": 13, "windows": 8},
            run.FLOOR: {"held": 11, "failed_at": 12, "windows": 7},
        },
    }
    rows = {r["name"]: r for r in run.targets_table(results)}
    echo = rows["Server CPU per echo session vs the tight floor (bare-tight)"]
    assert echo["ratio"] == pytest.approx(7.0 / 6.5) and echo["met"] is True
    assert echo["n"] == "2 / 1 windows of 4 sessions"
    assert echo["spread"] == "min–max 7.00–7.20 % / min–max 6.50–6.50 %"
    idle = rows["Idle CPU per connection through Gradio vs the floor (bare-sink)"]
    assert idle["met"] is True and "+0.60 %" in idle["value"]
    results["cpu"][run.BASELINE]["idle"]["median_pct"] = 3.5
    idle = {r["name"]: r for r in run.targets_table(results)}[idle["name"]]
    assert idle["met"] is False
    held = rows["Echo sessions held (< 1 % late frames) vs the floor"]
    assert held["ratio"] == pytest.approx(12 / 11) and held["met"] is True
    assert held["n"] == "8 / 7 windows"
    for row in rows.values():  # every row says what it rests on
        assert {"baseline", "ratio", "n", "spread", "met"} <= set(row)


def test_rtp_log_positions_come_from_rtp_timestamps() -> None:
    rtp = RtpLog()
    t = 1000.0
    # timestamps wrap past 2**32; one duplicate (kept: the first); one older than the first
    stamps = [(1 << 32) - 960, 0, 960, 960, 2880, (1 << 32) - 1920]
    for i, ts in enumerate(stamps):
        rtp.log.append((t + 0.02 * i, ts, b"x"))
    frames = rtp.frames
    assert [p for p, _, _ in frames] == [0, 960, 1920, 3840]
    assert frames[2][2] == pytest.approx(t + 0.04)  # the first copy of the duplicate
    assert rtp.sample_rate == 48000

    # frame_lateness reads it like an AudioRecorder: frame 3 is missing (3840 jumped to)
    class Link:
        recorder = rtp

    late, missing, expected = frame_lateness(Link(), t, t + 0.1)
    assert (late, expected) == (0, 5)
    assert missing == 5 - 4 - 1  # one frame fewer arrived than expected


def test_speech_scenarios_can_start_later() -> None:
    from conformance.bench.speech import scenario

    base = scenario("noise_only")
    later = scenario("noise_only", lead_s=0.014)
    assert later.audio.size == base.audio.size + round(0.014 * 48000)
    assert later.segments[0].start_s == 0.0
    assert later.segments[0].end_s == pytest.approx(base.segments[0].end_s + 0.014)
    assert later.expected_turn_ends == []
    with pytest.raises(ValueError, match="unknown scenario"):
        scenario("nope")


def _av_session(skews: list[float], fps: float | None = 30.0, back: int = 10) -> dict[str, Any]:
    return {
        "audio_rt_s": [0.1] * back,
        "markers_sent": 10,
        "markers_back": back,
        "video_rt_s": [0.05, 0.06],
        "fps": fps,
        "loss": 0.0 if fps else None,
        "audio_transit_s": [0.02],
        "video_transit_s": [0.01],
        "skew": [[0.033 * i, s] for i, s in enumerate(skews)],
    }


def test_av_echo_pools_sessions_and_keeps_the_sign_of_the_skew() -> None:
    out = run.summarize_av(
        [_av_session([0.01, -0.03, 0.02]), _av_session([-0.05], fps=None, back=6)], runs=3
    )
    assert (out["runs"], out["sessions"]) == (3, 2)
    assert out["skew_s"] == [0.01, -0.03, 0.02, -0.05]
    assert out["skew"]["n"] == 4 and out["skew"]["min"] == -0.05
    assert out["skew_p50_s"] == pytest.approx(-0.01)  # audio earlier than video: negative
    assert out["abs_skew"]["max"] == 0.05
    assert out["abs_skew_p95_s"] == pytest.approx(stats.pct([0.01, 0.03, 0.02, 0.05], 95))
    assert out["abs_skew_p95_s"] > out["skew_p95_s"]  # the largest skew is negative
    assert (out["markers_sent"], out["markers_back"], out["coverage"]) == (20, 16, 0.8)
    assert out["audio_rt"]["n"] == 16 and out["video_rt"]["n"] == 4
    assert out["fps_runs"] == [30.0] and out["fps"] == 30.0  # a session without fps is left out
    assert [len(s) for s in out["series"]] == [3, 1] and out["series"][1] == [[0.0, -0.05]]
    assert out["skew_p50_runs_s"] == [0.01, -0.05]  # each session's own median
    empty = run.summarize_av([], runs=2)
    assert empty["skew"]["n"] == 0 and empty["abs_skew_p95_s"] is None
    assert empty["coverage"] is None and empty["series"] == []


def test_av_skew_target_against_the_floor() -> None:
    def entry(skews: list[float]) -> dict[str, Any]:
        return run.summarize_av([_av_session(skews)], runs=1)

    results = {"av_echo": {run.BASELINE: entry([0.01, 0.02, -0.01]), run.FLOOR: entry([0.06])}}
    row = next(r for r in run.targets_table(results) if r["name"].startswith("Audio-video"))
    assert row["met"] is True and row["n"] == "3 / 1 frames"
    assert row["ratio"] == pytest.approx(results["av_echo"][run.BASELINE]["abs_skew_p95_s"] / 0.06)
    assert row["baseline"] == "60 ms (floor)"
    results["av_echo"][run.BASELINE] = entry([0.01, -0.05])  # audio 50 ms ahead: noticed
    row = next(r for r in run.targets_table(results) if r["name"].startswith("Audio-video"))
    assert row["met"] is False
    row = next(r for r in run.targets_table({}) if r["name"].startswith("Audio-video"))
    assert row["met"] is None and row["value"] == "n/a"


def test_a_figure_needing_a_missing_stream_is_unsupported_with_the_reason() -> None:
    target = _FakeTarget()
    target.unsupported = {run.AV_KIND: "it has no audio-video modality"}
    results: dict[str, Any] = {"implementations": {"fake": {"unsupported": {}}}}
    asyncio.run(run.measure_figure(target, "av_echo", run.QUICK, results))
    assert "av_echo" not in results
    assert results["implementations"]["fake"]["unsupported"] == {
        "av_echo": "it has no audio-video modality"
    }
