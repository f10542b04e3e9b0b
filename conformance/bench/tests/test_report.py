"""Tests of the benchmark page writer, ``conformance.bench.report``, on synthetic results."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from conformance.bench import report


def _results() -> dict[str, Any]:
    """Two implementations and the floor; ``other`` lacks turns; isolation was not run."""
    return {
        "schema": 1,
        "started": "2026-11-24T10:00:00",
        "elapsed_s": 700.0,
        "plan": "quick",
        "machine": {
            "cpu_model": "Test CPU",
            "cores": 4,
            "platform": "Linux",
            "python": "3.11.7",
            "aiortc": "1.9.0",
            "av": "12.3.0",
            "numpy": "1.26.4",
            "load_other_pct": 40.0,
        },
        "baseline": "webrtc_ref",
        "floor": "aiortc",
        "implementations": {
            "webrtc_ref": {"version": "0.1.0", "gradio": "6.31.0", "python": "3.11.7"},
            "other": {
                "version": "9.9.9",
                "gradio": "5.8.0",
                "python": "3.11.7",
                "notes": ["pause detection: webrtc_ref's Silero model injected"],
                "unsupported": {"turns": "no ReplyOnPause in this version"},
            },
        },
        "audio_echo": {
            "webrtc_ref": {
                "runs": 3,
                "rt_s": [0.05, 0.06, 0.08],
                "rt_p50_s": 0.06,
                "rt_p95_s": 0.08,
                "in_s": [0.02, 0.03],
                "in_p50_s": 0.025,
                "in_p95_s": 0.03,
                "coverage": 1.0,
            },
            "other": {
                "runs": 3,
                "rt_s": [0.07, 0.09, 0.1],
                "rt_p50_s": 0.09,
                "rt_p95_s": 0.1,
                "in_s": None,
                "in_p50_s": None,
                "in_p95_s": None,
                "coverage": 0.98,
            },
            "aiortc": {
                "runs": 3,
                "rt_s": [0.03, 0.04],
                "rt_p50_s": 0.035,
                "rt_p95_s": 0.04,
                "in_s": None,
                "coverage": 1.0,
            },
        },
        "video_slow": {
            "webrtc_ref": {
                "fn_s": 0.1,
                "duration_s": 30.0,
                "series": [[0.0, 0.15], [1.0, 0.16], [2.0, 0.15]],
                "first_p50_s": 0.15,
                "last_p50_s": 0.15,
                "growth_s": 0.0,
                "fps": 9.9,
                "loss": 0.6,
            }
        },
        "turns": {
            "webrtc_ref": {
                "n": 3,
                "turns": 3,
                "expected": 3,
                "speech_scenarios": 2,
                "latencies_s": [0.3, 0.4, 0.5],
                "latency": {
                    "n": 3,
                    "p50": 0.4,
                    "p95": 0.49,
                    "p25": 0.35,
                    "p75": 0.45,
                    "min": 0.3,
                    "max": 0.5,
                },
                "p50_s": 0.4,
                "p95_s": 0.49,
                "false": 1,
                "missed": 0,
                "silent_runs": 2,
                "silent_ok": 1,
                "silent_false": 1,
                "runs": 5,
                "rounds": 1,
                "error_runs": 1,
                "errors": ["questions (lead 0 ms): no media within 20 s"],
                "scenarios": {
                    "speech_pause_speech": {
                        "silent": False,
                        "runs": 1,
                        "errors": 0,
                        "expected": 2,
                        "latencies_s": [0.3, 0.4],
                        "false": 0,
                        "missed": 0,
                        "silent_ok": 0,
                    },
                    "questions": {
                        "silent": False,
                        "runs": 1,
                        "errors": 1,
                        "expected": 0,
                        "latencies_s": [],
                        "false": 0,
                        "missed": 0,
                        "silent_ok": 0,
                    },
                    "noise_only": {
                        "silent": True,
                        "runs": 1,
                        "errors": 0,
                        "expected": 0,
                        "latencies_s": [],
                        "false": 0,
                        "missed": 0,
                        "silent_ok": 1,
                    },
                    "tone_only": {
                        "silent": True,
                        "runs": 1,
                        "errors": 0,
                        "expected": 0,
                        "latencies_s": [],
                        "false": 1,
                        "missed": 0,
                        "silent_ok": 0,
                    },
                },
                "note": None,
            }
        },
        "cpu": {
            "webrtc_ref": {
                "sessions": 4,
                "runs": 3,
                "window_s": 3.0,
                "echo": {
                    "samples_pct": [7.0, 8.0, 9.0],
                    "stats": {"n": 3, "min": 7.0, "max": 9.0, "p50": 8.0},
                    "median_pct": 8.0,
                    "client_median_pct": 1.25,
                },
                "idle": {
                    "samples_pct": [1.0, 1.5],
                    "stats": {"n": 2, "min": 1.0, "max": 1.5, "p50": 1.25},
                    "median_pct": 1.25,
                },
                "errors": ["idle run 3: no media within 20 s"],
            },
            "webrtc_ref core": {
                "sessions": 4,
                "runs": 3,
                "window_s": 3.0,
                "echo": {"stats": {"n": 3, "min": 5.0, "max": 6.0}, "median_pct": 5.5},
                "idle": {"stats": {"n": 3, "min": 0.5, "max": 0.7}, "median_pct": 0.6},
                "errors": [],
            },
            "aiortc": {
                "sessions": 4,
                "runs": 3,
                "window_s": 3.0,
                "echo": {"stats": {"n": 3, "min": 9.0, "max": 11.0}, "median_pct": 10.0},
                "echo_tight": {"stats": {"n": 3, "min": 6.0, "max": 7.0}, "median_pct": 6.5},
                "idle": {"stats": {"n": 3, "min": 0.4, "max": 0.6}, "median_pct": 0.5},
                "errors": [],
            },
        },
        "capacity": {
            "webrtc_ref": {
                "held": 8,
                "failed_at": 9,
                "stopped": "failed at N=9",
                "windows": 5,
                "held_windows": 2,
                "held_passed": 2,
                "held_late": {"n": 2, "min": 0.001, "max": 0.005},
                "held_server_pct": 70.0,
                "held_client_pct": 10.0,
                "server_per_session_pct": {"n": 3, "p50": 8.5},
                "client_per_session_pct": {"n": 3, "p50": 1.25},
                "errors": ["N=9 (fine 1): no media within 10 s"],
                "steps": [
                    {"n": 4, "connected": 4, "late_fraction": 0.001, "passed": True},
                    {
                        "n": 8,
                        "phase": "ramp",
                        "attempt": 1,
                        "connected": 8,
                        "late_fraction": 0.005,
                        "coverage": 1.0,
                        "rt_p95_s": 0.09,
                        "server_cpu_pct": 70.0,
                        "client_cpu_pct": 10.0,
                        "other_cpu_pct": 1.0,
                        "errors": [],
                        "passed": True,
                    },
                    {
                        "n": 9,
                        "phase": "fine",
                        "attempt": 1,
                        "connected": 8,
                        "late_fraction": 0.05,
                        "errors": ["no media within 10 s"],
                        "passed": False,
                    },
                    {
                        "n": 8,
                        "phase": "confirm",
                        "attempt": 1,
                        "connected": 8,
                        "late_fraction": 0.001,
                        "passed": True,
                    },
                ],
            },
            "aiortc": {
                "held": 16,
                "stopped": "maximum",
                "steps": [{"n": 16, "connected": 16, "late_fraction": 0.0, "passed": True}],
            },
        },
        "setup": {"webrtc_ref": {"first_media_p50_s": 0.3, "first_media_p95_s": None}},
        "hostile": {
            "webrtc_ref": {
                "repeats": 3,
                "longest_stall_s": 0.017,
                "baseline_stall_s": 0.009,
                "live_gap_s": 0.04,
                "classes": {
                    "no_ice": {
                        "reply_p50_s": 0.012,
                        "reply_max_s": 0.014,
                        "stall_s": 0.01,
                        "codes": {"invalid_offer": 3},
                    }
                },
            },
            "other": {"error": "RuntimeError: the live session did not start"},
        },
        "soak": {
            "webrtc_ref": {
                "sessions": 8,
                "duration_s": 600,
                "cycles": 1400,
                "error_count": 0,
                "rss_growth_mb": 12.0,
                "rss_second_half_growth_mb": 0.4,
                "threads_first": 10,
                "threads_last": 11,
                "fds_first": 20,
                "fds_last": 20,
                "samples": [
                    {"t_s": 0, "rss_kb": 200000, "threads": 10, "fds": 20},
                    {"t_s": 600, "rss_kb": 212000, "threads": 11, "fds": 20},
                ],
            }
        },
        "targets": [
            {
                "name": "Audio round trip p95",
                "target": "< 150 ms",
                "value": "80 ms",
                "baseline": "40 ms (floor)",
                "ratio": 2.0,
                "n": "3 / 2 markers",
                "spread": "IQR 55–70 ms / 35–38 ms",
                "met": True,
            },
            {"name": "Turn p95", "target": "< 600 ms", "value": "n/a", "met": None},
        ],
    }


def test_render_markdown_tables() -> None:
    page = report.render_markdown(_results(), {"audio_rt": "benchmarks/audio_rt.png"})

    assert page.startswith("# Benchmarks\n")
    assert "do not edit by hand" in page
    for name in ("webrtc_ref", "other", "aiortc (bare, floor)", "0.1.0", "9.9.9"):
        assert name in page
    # Every number comes from the JSON, formatted: ms, %, ratios against webrtc_ref; each
    # table has n (samples), a spread (IQR or min-max) and the errors met.
    assert (
        "| Implementation | Runs | n | Round trip median | Round trip p95 | IQR | "
        "Into handler median | Into handler p95 | Coverage | Errors |"
    ) in page
    assert (
        "| webrtc_ref | 3 | 3 | 60 ms | 80 ms | 55 ms–70 ms | 25 ms | 30 ms | 100% | 0 | 1.00× |"
        in (page)
    )
    assert "| other | 3 | 3 | 90 ms | 100 ms | 80 ms–95 ms | n/a | n/a | 98% | 0 | 1.25× |" in page
    assert (
        "| aiortc (bare, floor) | 3 | 2 | 35 ms | 40 ms | 32 ms–38 ms | — | — | 100% | 0 | 0.50× |"
        in (page)
    )
    assert "| Held vs webrtc_ref |" in page and "2.00×" in page
    # Unsupported, missing and failed figures.
    assert "*unsupported: no ReplyOnPause in this version*" in page
    assert "n/a" in page
    assert "## Isolation" in page and "*Not measured in this run.*" in page
    assert "## Video with a 100 ms function" in page
    assert "pause detection: webrtc_ref's Silero model injected" in page
    # A busy machine is flagged; targets are listed with their baseline, ratio, n and
    # spread; only plots that exist are linked.
    assert '!!! warning "Busy machine"' in page
    assert (
        "| Audio round trip p95 | &lt; 150 ms | 80 ms | 40 ms (floor) | 2.00× | 3 / 2 markers "
        "| IQR 55–70 ms / 35–38 ms | ✅ |"
    ) in page
    assert "| Turn p95 | &lt; 600 ms | n/a | n/a | n/a | n/a | n/a | n/a |" in page
    assert "![" in page and "benchmarks/audio_rt.png" in page
    assert "video_g2g.png" not in page
    # Hostile offers: the summary row, and each class with its replies.
    assert "| webrtc_ref | 17 ms | 9.0 ms | 40 ms | 3 | — |" in page
    assert "| other | *failed: RuntimeError: the live session did not start* |" in page
    assert "| `no_ice` | 3 | 12 ms | 14 ms | 10 ms | invalid_offer ×3 |" in page
    # The long soak: growth over the run and over its second half, resources first -> last.
    assert (
        "| webrtc_ref | 8 | 10 min 0 s | 1400 | 2 | 0 | +12.0 MB | +0.4 MB | 195–207 MB "
        "| 10 → 11 | 20 → 20 |"
    ) in page
    # Every error the driver met is listed under its figure.
    assert "- other: RuntimeError: the live session did not start" in page
    assert "- webrtc_ref: idle run 3: no media within 20 s" in page
    assert "- webrtc_ref: N=9 (fine 1): no media within 10 s" in page


def test_turns_table_shows_n_spread_silent_runs_and_errors() -> None:
    page = report.render_markdown(_results(), {})
    section = page[page.index("## Turn latency") : page.index("## Server CPU")]
    assert (
        "| Implementation | n | Scenarios | Median | p95 | IQR | Min–max | False | Missed "
        "| Silent | Errors | p95 vs webrtc_ref |"
    ) in section
    # 3 turns over 2 speech scenarios; one silent run replied (a false turn); one run failed
    assert (
        "| webrtc_ref | 3 | 2 | 400 ms | 490 ms | 350 ms–450 ms | 300 ms–500 ms | 1 | 0 | 1/2 "
        "| 1 | 1.00× |"
    ) in section
    # per scenario: a silent scenario's outcome in its own column, errors counted apart
    assert (
        "| webrtc_ref | `speech_pause_speech` | 1 | 2 | 2 | 350 ms | 395 ms | 0 | 0 | — | 0 |"
        in (section)
    )
    assert "| webrtc_ref | `noise_only` (silent) | 1 | — | — | — | — | 0 | — | 1/1 | 0 |" in section
    assert "| webrtc_ref | `tone_only` (silent) | 1 | — | — | — | — | 1 | — | 0/1 | 0 |" in section
    assert "| webrtc_ref | `questions` | 1 | 0 | 0 | n/a | n/a | 0 | 0 | — | 1 |" in section
    assert "- webrtc_ref: questions (lead 0 ms): no media within 20 s" in section


def test_cpu_table_has_the_tight_floor_the_core_and_windows() -> None:
    page = report.render_markdown(_results(), {})
    section = page[page.index("## Server CPU") : page.index("## Capacity")]
    # n = windows per mode (echo 3, idle 2: one idle window failed), min-max over them,
    # the client's own CPU per session beside
    assert (
        "| webrtc_ref | 4 | 2/3 | 8% | 7%–9% | — | 1.2% | 1%–1.5% | 1.2% | 1 | 1.00× |" in section
    )
    assert (
        "| webrtc_ref core | 4 | 3 | 5.5% | 5%–6% | — | 0.6% | 0.5%–0.7% | n/a | 0 | 0.69× |"
        in (section)
    )
    assert (
        "| aiortc (bare, floor) | 4 | 3 | 10% | 9%–11% | 6.5% (6%–7%) | 0.5% | 0.4%–0.6% | n/a "
        "| 0 | 1.25× |"
    ) in section
    # the core row sits before the floor, and is not an implementation elsewhere
    assert section.index("webrtc_ref core") < section.index("aiortc (bare, floor)")
    assert "webrtc_ref core" not in page[: page.index("## Server CPU")].split("## Machine")[0]


def test_capacity_table_shows_the_knee_windows_and_client_cpu() -> None:
    page = report.render_markdown(_results(), {})
    section = page[page.index("## Capacity") : page.index("## Isolation")]
    assert (
        "| webrtc_ref | 8 | 9 | failed at N=9 | 5 | 0.1%–0.5% (2/2 passed) | 70% | 10% | 8.5% "
        "| 1.2% | 1 | 1.00× |"
    ) in section
    # every step, with its phase (ramp / fine / confirm), markers back and CPU beside
    assert "| webrtc_ref | 8 | ramp 1 | 8 | 0.5% | 100% | 90 ms | 70% | 10% | 1% | 0 | ✅ |" in (
        section
    )
    assert "| webrtc_ref | 9 | fine 1 | 8 | 5% | n/a | n/a | n/a | n/a | n/a | 1 | ❌ |" in section
    assert "| webrtc_ref | 8 | confirm 1 | 8 | 0.1% |" in section


def test_results_before_schema_2_still_render() -> None:
    """A results file written before n/spread/errors were stored (the published one)."""
    old = _results()
    old["cpu"] = {"webrtc_ref": {"echo": {"4": 6.9}, "idle": {"4": 4.4}}}
    old["turns"] = {
        "webrtc_ref": {
            "turns": 3,
            "latencies_s": [0.5, 0.55, 0.56],
            "p50_s": 0.55,
            "p95_s": 0.56,
            "false": 0,
            "missed": 0,
        }
    }
    page = report.render_markdown(old, {})
    assert "| webrtc_ref | n/a | 1 | 6.9% | 6.9%–6.9% | — | 4.4% |" in page
    assert "| webrtc_ref | 3 | n/a | 550 ms | 560 ms | 525 ms–555 ms | 500 ms–560 ms |" in page


def test_render_markdown_survives_empty_and_odd_results() -> None:
    page = report.render_markdown({}, {})
    assert "# Benchmarks" in page and "*Not measured in this run.*" in page
    odd = _results()
    odd["audio_echo"]["other"] = None
    odd["capacity"]["webrtc_ref"]["steps"] = None
    odd["machine"] = None
    odd["targets"] = "garbage"
    assert "## Capacity" in report.render_markdown(odd, {})


def test_make_plots_and_cli(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    results = _results()
    png_dir = tmp_path / "docs" / "benchmarks"
    names = report.make_plots(results, png_dir)

    # video_echo is absent: no plot for it.
    assert set(names) == {"audio_rt", "video_slow", "turns", "capacity", "soak"}
    for key, name in names.items():
        assert name == f"benchmarks/{report.PLOT_FILES[key]}"
        path = tmp_path / "docs" / name
        assert path.read_bytes().startswith(b"\x89PNG")
        assert path.stat().st_size > 1000

    results_path = tmp_path / "results.json"
    results_path.write_text(json.dumps(results), encoding="utf-8")
    md_path = tmp_path / "docs" / "benchmarks.md"
    assert report.main([str(results_path), "-o", str(md_path), "--png-dir", str(png_dir)]) == 0
    page = md_path.read_text(encoding="utf-8")
    assert "![" in page and "(benchmarks/capacity.png)" in page


def _av_results() -> dict[str, Any]:
    """``_results()`` with an audio-video echo figure: webrtc_ref and the floor measured
    (entries made by the driver's own summary), ``other`` without the modality."""
    from conformance.bench.run import summarize_av

    def session(skews_ms: list[float], audio_ms: float, video_ms: float) -> dict[str, Any]:
        return {
            "audio_rt_s": [audio_ms / 1000, (audio_ms + 10) / 1000],
            "markers_sent": 2,
            "markers_back": 2,
            "video_rt_s": [video_ms / 1000, (video_ms + 20) / 1000],
            "fps": 29.5,
            "loss": 0.0,
            "audio_transit_s": [0.03, 0.04],
            "video_transit_s": [0.02, 0.03],
            "skew": [[0.1 * i, ms / 1000] for i, ms in enumerate(skews_ms)],
        }

    results = _results()
    results["implementations"]["other"]["unsupported"]["av_echo"] = "no audio-video modality"
    results["av_echo"] = {
        "webrtc_ref": {
            **summarize_av([session([10.0, 20.0, -10.0, 30.0], 100.0, 60.0)], 1),
            "window_s": 4.0,
            "errors": [],
        },
        "aiortc": {
            **summarize_av([session([5.0, 10.0, 15.0, 20.0], 80.0, 50.0)], 1),
            "window_s": 4.0,
            "errors": ["run 1: close: TimeoutError()"],
        },
    }
    return results


def test_av_echo_tables_per_track_and_skew_with_ratios() -> None:
    results = _av_results()
    page = report.render_markdown(results, {"av_skew": "benchmarks/av_skew.png"})
    section = page[page.index("## Audio-video echo") : page.index("## Turn latency")]
    assert "*Rests on:* 1 sessions of 4 s per implementation" in section
    assert (
        "| Implementation | Runs | Audio n | Audio median | Audio p95 | Audio IQR | Coverage "
        "| Video n | Video median | Video p95 | Video IQR | fps | Errors "
        "| Audio p95 vs webrtc_ref | Video p95 vs webrtc_ref |"
    ) in section
    # audio 100/110 ms, video 60/80 ms; the floor 80/90 and 50/70 ms
    assert (
        "| webrtc_ref | 1 | 2 | 105 ms | 110 ms | 103 ms–108 ms | 100% | 2 | 70 ms | 79 ms "
        "| 65 ms–75 ms | 29.5 | 0 | 1.00× | 1.00× |"
    ) in section
    assert (
        "| aiortc (bare, floor) | 1 | 2 | 85 ms | 90 ms | 82 ms–88 ms | 100% | 2 | 60 ms "
        "| 69 ms | 55 ms–65 ms | 29.5 | 1 | 0.82× | 0.87× |"
    ) in section
    assert "| other | *unsupported: no audio-video modality* |" in section
    # signed skew percentiles, |skew| p95 and its ratio; server transits beside
    assert (
        "| Implementation | n | Skew median | Skew p5 | Skew p95 | Skew IQR | Skew min–max "
        "| \\|Skew\\| p95 | Run medians | Audio transit median | Video transit median "
        "| \\|Skew\\| p95 vs webrtc_ref |"
    ) in section
    assert (
        "| webrtc_ref | 4 | +15 ms | -7.0 ms | +28 ms | 5.0 ms–22 ms | -10 ms–30 ms | 28 ms "
        "| +15 ms | 35 ms | 25 ms | 1.00× |"
    ) in section
    assert "| aiortc (bare, floor) | 4 | +12 ms | +5.8 ms | +19 ms |" in section
    assert "| 8.8 ms–16 ms | 5.0 ms–20 ms | 19 ms | +12 ms | 35 ms | 25 ms | 0.68× |" in section
    assert "- aiortc (bare, floor): run 1: close: TimeoutError()" in section
    assert "(benchmarks/av_skew.png)" in section


def test_av_echo_not_measured_and_plotted(tmp_path: Path) -> None:
    page = report.render_markdown(_results(), {})
    section = page[page.index("## Audio-video echo") : page.index("## Turn latency")]
    assert "*Not measured in this run.*" in section
    pytest.importorskip("matplotlib")
    names = report.make_plots(_av_results(), tmp_path / "benchmarks")
    assert names["av_skew"] == "benchmarks/av_skew.png"
    assert (tmp_path / "benchmarks" / "av_skew.png").read_bytes().startswith(b"\x89PNG")


def test_av_echo_run_medians_show_sessions_that_settled_differently() -> None:
    assert report._run_medians({"skew_p50_runs_s": [0.093, 0.044, 0.094]}) == "+44 ms–+94 ms"
    assert report._run_medians({"skew_p50_runs_s": [-0.005]}) == "-5.0 ms"
    assert report._run_medians({}) == "n/a"
