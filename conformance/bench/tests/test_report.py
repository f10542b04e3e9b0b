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
                "turns": 3,
                "latencies_s": [0.3, 0.4, 0.5],
                "p50_s": 0.4,
                "p95_s": 0.5,
                "false": 0,
                "missed": 0,
                "note": None,
            }
        },
        "cpu": {
            "webrtc_ref": {"echo": {"1": 10.0, "4": 8.0}, "idle": {"1": 1.0, "4": None}},
            "aiortc": {"echo": {"1": 5.0, "4": 4.0}, "idle": {}},
        },
        "capacity": {
            "webrtc_ref": {
                "held": 8,
                "stopped": "late frames",
                "steps": [
                    {"n": 4, "connected": 4, "late_fraction": 0.001, "passed": True},
                    {"n": 8, "connected": 8, "late_fraction": 0.005, "passed": True},
                    {"n": 16, "connected": 16, "late_fraction": 0.05, "passed": False},
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
            {"name": "Audio round trip p95", "target": "< 150 ms", "value": "80 ms", "met": True},
            {"name": "Turn p95", "target": "< 600 ms", "value": "n/a", "met": None},
        ],
    }


def test_render_markdown_tables() -> None:
    page = report.render_markdown(_results(), {"audio_rt": "benchmarks/audio_rt.png"})

    assert page.startswith("# Benchmarks\n")
    assert "do not edit by hand" in page
    for name in ("webrtc_ref", "other", "aiortc (bare, floor)", "0.1.0", "9.9.9"):
        assert name in page
    # Every number comes from the JSON, formatted: ms, %, ratios against webrtc_ref.
    assert "| webrtc_ref | 3 | 60 ms | 80 ms | 25 ms | 30 ms | 100% | 1.00× |" in page
    assert "| other | 3 | 90 ms | 100 ms | n/a | n/a | 98% | 1.25× |" in page
    assert "| aiortc (bare, floor) | 3 | 35 ms | 40 ms | — | — | 100% | 0.50× |" in page
    assert "| Held vs webrtc_ref |" in page and "2.00×" in page
    # Unsupported, missing and failed figures.
    assert "*unsupported: no ReplyOnPause in this version*" in page
    assert "n/a" in page
    assert "## Isolation" in page and "*Not measured in this run.*" in page
    assert "## Video with a 100 ms function" in page
    assert "pause detection: webrtc_ref's Silero model injected" in page
    # A busy machine is flagged; targets are listed; only plots that exist are linked.
    assert '!!! warning "Busy machine"' in page
    assert "| Audio round trip p95 | &lt; 150 ms | 80 ms | ✅ |" in page
    assert "![" in page and "benchmarks/audio_rt.png" in page
    assert "video_g2g.png" not in page
    # Hostile offers: the summary row, and each class with its replies.
    assert "| webrtc_ref | 17 ms | 9.0 ms | 40 ms | 3 | — |" in page
    assert (
        "| other | n/a | n/a | n/a | n/a | RuntimeError: the live session did not start |" in page
    )
    assert "| `no_ice` | 12 ms | 14 ms | 10 ms | invalid_offer ×3 |" in page
    # The long soak: growth over the run and over its second half, resources first -> last.
    assert (
        "| webrtc_ref | 8 | 10 min 0 s | 1400 | 0 | +12.0 MB | +0.4 MB | 10 → 11 | 20 → 20 |"
        in page
    )


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
