"""The benchmark page: docs/benchmarks.md and its plots, from a benchmark results JSON.

``python -m conformance.bench`` runs every implementation through its conformance adapter and
writes ``build/bench/results.json``; this module turns that file into a markdown page for the
mkdocs site (tables per figure, one row per implementation, the bare aiortc floor last) and
PNG plots (matplotlib, Agg backend) next to it::

    python -m conformance.bench.report build/bench/results.json \\
        -o docs/benchmarks.md --png-dir docs/benchmarks

Every number on the page comes from the JSON. A figure may be missing, an implementation may be
missing from a figure, and any value may be ``None`` (it failed): those render as "n/a"; a
figure an implementation does not support renders as its adapter's reason. Times in the JSON
are seconds and are shown in milliseconds; fractions are shown as percentages; ratios against
the baseline implementation as ``1.05×``. Every figure's table shows what it rests on (*n*:
runs, samples or windows), a spread (IQR or min–max, from the summaries of
:mod:`conformance.bench.stats` the driver stores, or computed from the raw samples of older
results) and the number of errors the driver met, each of which is listed under the table.
"""

from __future__ import annotations

import argparse
import json
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from conformance.bench.stats import ratio as _ratio_value
from conformance.bench.stats import spread

#: Plot key -> PNG file name (inside the PNG directory).
PLOT_FILES: dict[str, str] = {
    "audio_rt": "audio_rt.png",
    "video_g2g": "video_g2g.png",
    "video_slow": "video_slow.png",
    "turns": "turns.png",
    "capacity": "capacity.png",
    "soak": "soak.png",
    "av_skew": "av_skew.png",
}
#: The turn latency target drawn on the turns plot (seconds).
TURN_TARGET_S = 0.6
#: A reply counts for a turn when it starts within this long after the end of speech.
TURN_WINDOW_S = 1.5
#: The late-frame limit a capacity step must stay under (drawn on the capacity plot).
CAPACITY_LATE_LIMIT = 0.01
#: Other processes' CPU (% of one core) above which the page warns that figures may suffer.
BUSY_LOAD_PCT = 15.0
#: The video echo workload (the benchmark's fixed input, not a measurement).
VIDEO_ECHO_WORKLOAD = "640×480 @ 30 fps"
#: The audio-video sync target (|skew| p95, seconds), drawn on the skew plot.
AV_SKEW_TARGET_S = 0.040

_FLOOR_COLOUR = "#808080"
_FIGSIZE = (7.0, 3.5)
_DPI = 110

Entry = dict[str, Any]


# --------------------------------------------------------------------------------------------
# Formatting


def _num(value: Any) -> float | None:
    """``value`` as a finite float, or None (missing, None, not a number, NaN)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _get(entry: Any, *keys: str) -> Any:
    """``entry[k1][k2]...``, or None when any level is missing or not a dict."""
    for key in keys:
        if not isinstance(entry, dict):
            return None
        entry = entry.get(key)
    return entry


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _numbers(values: Any) -> list[float]:
    """The finite numbers of a list (anything else in it, or a non-list, is dropped)."""
    if not isinstance(values, list):
        return []
    return [n for n in (_num(v) for v in values) if n is not None]


def _ms(seconds: Any) -> str:
    value = _num(seconds)
    if value is None:
        return "n/a"
    ms = value * 1000
    return f"{ms:.1f} ms" if abs(ms) < 10 else f"{ms:.0f} ms"


def _signed_ms(seconds: Any) -> str:
    value = _num(seconds)
    if value is None:
        return "n/a"
    text = _ms(value)
    return text if text.startswith("-") else "+" + text


def _pct(fraction: Any) -> str:
    """A fraction (0..1) as a percentage."""
    value = _num(fraction)
    return "n/a" if value is None else _pct_value(value * 100)


def _pct_value(pct: Any) -> str:
    """A value already in percent."""
    value = _num(pct)
    if value is None:
        return "n/a"
    digits = 2 if abs(value) < 1 else 1
    text = f"{value:.{digits}f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return f"{'0' if text == '-0' else text}%"


def _ratio(value: Any, baseline: Any) -> str:
    number = _ratio_value(_num(value), _num(baseline))
    return "n/a" if number is None else f"{number:.2f}×"


def _int(value: Any) -> str:
    number = _num(value)
    return "n/a" if number is None else f"{number:.0f}"


def _fps(value: Any) -> str:
    number = _num(value)
    return "n/a" if number is None else f"{number:.1f}"


def _text(value: Any) -> str:
    return "n/a" if value is None or value == "" else _escape(str(value))


def _escape(text: str) -> str:
    """Safe inside a markdown table cell."""
    return (
        text.replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;").replace("\n", " ")
    ).strip()


def _duration(seconds: Any) -> str:
    value = _num(seconds)
    if value is None:
        return "n/a"
    if value < 10:
        return f"{value:.1f} s".replace(".0 s", " s")
    if value < 120:
        return f"{value:.0f} s"
    minutes, secs = divmod(round(value), 60)
    if minutes < 120:
        return f"{minutes} min {secs} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return [*lines, ""]


# --------------------------------------------------------------------------------------------
# Who is in the results


def _baseline(results: dict[str, Any]) -> str:
    return str(results.get("baseline") or "webrtc_ref")


def _floor(results: dict[str, Any]) -> str:
    return str(results.get("floor") or "aiortc")


def _core(results: dict[str, Any]) -> str:
    """webrtc_ref's core without Gradio: a row of the CPU figure only."""
    return str(results.get("core") or "webrtc_ref core")


def _implementations(results: dict[str, Any]) -> dict[str, Entry]:
    impls = results.get("implementations")
    if not isinstance(impls, dict):
        return {}
    return {str(name): info if isinstance(info, dict) else {} for name, info in impls.items()}


def _names(results: dict[str, Any]) -> list[str]:
    """Implementations in page order (the baseline first), without the floor.

    The ``implementations`` table gives the order; names only found in a figure follow it.
    """
    skip = {_floor(results), _core(results)}
    names = [n for n in _implementations(results) if n not in skip]
    for key in _FIGURE_KEYS:
        data = results.get(key)
        if isinstance(data, dict):
            names += [str(n) for n in data if str(n) not in skip and str(n) not in names]
    baseline = _baseline(results)
    if baseline in names:
        names.remove(baseline)
        names.insert(0, baseline)
    return names


def _label(results: dict[str, Any], name: str) -> str:
    return f"{name} (bare, floor)" if name == _floor(results) else name


def _unsupported(results: dict[str, Any], name: str, figure: str) -> str | None:
    reason = _get(_implementations(results).get(name, {}), "unsupported", figure)
    if reason is None:
        return None
    return str(reason) or "unsupported"


def _colours(results: dict[str, Any]) -> dict[str, str]:
    """One colour per implementation, the same on every plot; the floor in grey."""
    palette = [
        "#1f77b4",
        "#ff7f0e",
        "#2ca02c",
        "#d62728",
        "#9467bd",
        "#8c564b",
        "#e377c2",
        "#bcbd22",
        "#17becf",
    ]
    colours = {name: palette[i % len(palette)] for i, name in enumerate(_names(results))}
    colours[_floor(results)] = _FLOOR_COLOUR
    colours.setdefault(_core(results), palette[-1])
    return colours


# --------------------------------------------------------------------------------------------
# Figure tables


@dataclass(frozen=True)
class _Column:
    title: str
    cell: Callable[[Entry], str]


@dataclass(frozen=True)
class _Ratio:
    title: str
    value: Callable[[Entry], Any]


def _figure_rows(
    results: dict[str, Any],
    figure: str,
    columns: Sequence[_Column],
    ratio: _Ratio | None,
    with_floor: bool,
    extra: Sequence[str] = (),
) -> list[list[str]]:
    data = results.get(figure)
    data = data if isinstance(data, dict) else {}
    floor = _floor(results)
    names = _names(results) + [name for name in extra if name in data]
    if with_floor or floor in data:
        names.append(floor)
    baseline_entry = data.get(_baseline(results))
    baseline_value = (
        ratio.value(baseline_entry) if ratio and isinstance(baseline_entry, dict) else None
    )
    width = len(columns) + (1 if ratio else 0)
    rows = []
    for name in names:
        label = _label(results, name)
        reason = _unsupported(results, name, figure)
        entry = data.get(name)
        if reason is not None and not isinstance(entry, dict):
            rows.append([label, f"*unsupported: {_escape(reason)}*"] + [""] * (width - 1))
            continue
        if not isinstance(entry, dict):
            rows.append([label] + ["n/a"] * width)
            continue
        if entry.get("error") and not any(k for k in entry if k not in ("error", "errors")):
            failed = f"*failed: {_escape(str(entry['error']))[:200]}*"
            rows.append([label, failed] + [""] * (width - 1))
            continue
        row = [label] + [column.cell(entry) for column in columns]
        if ratio:
            row.append(_ratio(ratio.value(entry), baseline_value))
        rows.append(row)
    return rows


def _figure_table(
    results: dict[str, Any],
    figure: str,
    columns: Sequence[_Column],
    ratio: _Ratio | None = None,
    with_floor: bool = True,
    extra: Sequence[str] = (),
) -> list[str]:
    header = ["Implementation"] + [c.title for c in columns]
    if ratio:
        header.append(ratio.title)
    return _table(header, _figure_rows(results, figure, columns, ratio, with_floor, extra))


def _image(png_names: dict[str, str], key: str, alt: str) -> list[str]:
    name = png_names.get(key)
    return [f"![{alt}]({name})", ""] if name else []


def _common_seconds(results: dict[str, Any], figure: str, key: str) -> float | None:
    """The value of ``key`` shared by every entry of a figure (None if absent or different)."""
    data = results.get(figure)
    if not isinstance(data, dict):
        return None
    values = {_num(_get(entry, key)) for entry in data.values()} - {None}
    return values.pop() if len(values) == 1 else None


def _missing(results: dict[str, Any], figure: str) -> list[str] | None:
    if isinstance(results.get(figure), dict):
        return None
    return ["*Not measured in this run.*", ""]


def _vs(results: dict[str, Any], what: str) -> str:
    return f"{what} vs {_baseline(results)}"


# -- n, spread and errors


def _stats(entry: Any, key: str, raw: str | None = None) -> dict[str, Any]:
    """The :func:`conformance.bench.stats.spread` stored under ``key``, or computed from the
    raw samples under ``raw`` (results written before the summaries were stored)."""
    stored = _get(entry, key)
    if isinstance(stored, dict) and "n" in stored:
        return stored
    return spread(_numbers(_get(entry, raw))) if raw else spread([])


def _n(stats: dict[str, Any]) -> str:
    return _int(stats.get("n"))


def _iqr_ms(stats: dict[str, Any]) -> str:
    low, high = _num(stats.get("p25")), _num(stats.get("p75"))
    return "n/a" if low is None or high is None else f"{_ms(low)}–{_ms(high)}"


def _minmax_ms(stats: dict[str, Any]) -> str:
    low, high = _num(stats.get("min")), _num(stats.get("max"))
    return "n/a" if low is None or high is None else f"{_ms(low)}–{_ms(high)}"


def _minmax_pct_value(stats: dict[str, Any]) -> str:
    low, high = _num(stats.get("min")), _num(stats.get("max"))
    return "n/a" if low is None or high is None else f"{_pct_value(low)}–{_pct_value(high)}"


def _minmax_pct(stats: dict[str, Any]) -> str:
    low, high = _num(stats.get("min")), _num(stats.get("max"))
    return "n/a" if low is None or high is None else f"{_pct(low)}–{_pct(high)}"


def _errors_of(entry: Any) -> list[str]:
    """Every error an entry records: ``errors`` (a list) and a figure-level ``error``."""
    errors = [str(e) for e in _list(_get(entry, "errors"))]
    error = _get(entry, "error")
    if error and str(error) not in errors:
        errors.insert(0, str(error))
    return errors


def _error_count(entry: Entry) -> str:
    count = _num(entry.get("error_count"))
    return _int(count) if count is not None else str(len(_errors_of(entry)))


_ERRORS_COLUMN = _Column("Errors", _error_count)
#: Errors listed per implementation under a figure (the rest are counted).
_ERRORS_LISTED = 25


def _errors_block(results: dict[str, Any], figure: str, extra: Sequence[str] = ()) -> list[str]:
    """A collapsed list of every error the driver met in ``figure``, per implementation."""
    data = results.get(figure)
    if not isinstance(data, dict):
        return []
    lines = []
    for name in [*_names(results), *extra, _floor(results)]:
        errors = _errors_of(data.get(name))
        if not errors:
            continue
        counted: dict[str, int] = {}
        for error in errors:
            counted[error] = counted.get(error, 0) + 1
        items = list(counted.items())
        for error, count in items[:_ERRORS_LISTED]:
            times = f" (×{count})" if count > 1 else ""
            lines.append(f"    - {_label(results, name)}: {_escape(error)[:400]}{times}")
        if len(items) > _ERRORS_LISTED:
            lines.append(f"    - {_label(results, name)}: … and {len(items) - _ERRORS_LISTED} more")
    if not lines:
        return []
    return [f'??? warning "Errors the driver met ({len(lines)})"', "", *lines, ""]


def _rests_on(text: str) -> list[str]:
    return [f"*Rests on:* {text}", ""]


# -- sections


def _section_audio(results: dict[str, Any], png_names: dict[str, str]) -> list[str]:
    floor = _floor(results)
    floor_entry = _get(results, "audio_echo", floor)

    def into(key: str) -> Callable[[Entry], str]:
        # The floor has no handler: its one-way figure does not exist, rather than failed.
        return lambda e: "—" if e is floor_entry and e.get(key) is None else _ms(e.get(key))

    lines = [
        "## Audio echo",
        "",
        "A handler that returns every audio frame it receives. The client sends marked audio "
        "and times each marker from its send to the echo's arrival (*round trip*); *into "
        "handler* is the one-way time from the client's send to the handler's `receive()`, "
        "i.e. into the user's code (the floor has no handler). *Coverage*: markers echoed / "
        "markers sent. *n*: markers timed, pooled over the runs (one session each); *IQR*: "
        "the round trip's 25th–75th percentiles.",
        "",
    ]
    missing = _missing(results, "audio_echo")
    if missing:
        return lines + missing
    runs = _common_seconds(results, "audio_echo", "runs")
    lines += _rests_on(
        f"{_int(runs)} sessions per implementation, one after another, each timing every "
        "100 ms marker of its window."
    )
    lines += _figure_table(
        results,
        "audio_echo",
        [
            _Column("Runs", lambda e: _int(e.get("runs"))),
            _Column("n", lambda e: _n(_stats(e, "rt", "rt_s"))),
            _Column("Round trip median", lambda e: _ms(e.get("rt_p50_s"))),
            _Column("Round trip p95", lambda e: _ms(e.get("rt_p95_s"))),
            _Column("IQR", lambda e: _iqr_ms(_stats(e, "rt", "rt_s"))),
            _Column("Into handler median", into("in_p50_s")),
            _Column("Into handler p95", into("in_p95_s")),
            _Column("Coverage", lambda e: _pct(e.get("coverage"))),
            _ERRORS_COLUMN,
        ],
        _Ratio(_vs(results, "Round trip p95"), lambda e: e.get("rt_p95_s")),
    )
    lines += _errors_block(results, "audio_echo")
    lines += _image(png_names, "audio_rt", f"Audio round trip, per implementation and {floor}")
    return lines


def _section_video(results: dict[str, Any], png_names: dict[str, str]) -> list[str]:
    lines = [
        f"## Video echo {VIDEO_ECHO_WORKLOAD}",
        "",
        "A handler that returns every video frame it receives. *Glass to glass*: from the "
        "client sending a frame to it receiving that frame's echo. *fps*: echoed frames per "
        "second at the client (median of the runs, and their range); *loss*: frames sent but "
        "never echoed. *n*: frames timed, pooled over the runs.",
        "",
    ]
    missing = _missing(results, "video_echo")
    if missing:
        return lines + missing
    runs = _common_seconds(results, "video_echo", "runs")
    lines += _rests_on(f"{_int(runs)} sessions per implementation, one after another.")

    def fps_range(e: Entry) -> str:
        values = _numbers(e.get("fps_runs"))
        return f"{min(values):.1f}–{max(values):.1f}" if values else "n/a"

    lines += _figure_table(
        results,
        "video_echo",
        [
            _Column("Runs", lambda e: _int(e.get("runs"))),
            _Column("n", lambda e: _n(_stats(e, "g2g", "g2g_s"))),
            _Column("fps", lambda e: _fps(e.get("fps"))),
            _Column("fps min–max", fps_range),
            _Column("Loss", lambda e: _pct(e.get("loss"))),
            _Column("Glass to glass median", lambda e: _ms(e.get("g2g_p50_s"))),
            _Column("Glass to glass p95", lambda e: _ms(e.get("g2g_p95_s"))),
            _Column("IQR", lambda e: _iqr_ms(_stats(e, "g2g", "g2g_s"))),
            _ERRORS_COLUMN,
        ],
        _Ratio(_vs(results, "p95"), lambda e: e.get("g2g_p95_s")),
    )
    lines += _errors_block(results, "video_echo")
    lines += _image(png_names, "video_g2g", "Video glass-to-glass latency")
    return lines


def _section_video_slow(results: dict[str, Any], png_names: dict[str, str]) -> list[str]:
    fn_s = _common_seconds(results, "video_slow", "fn_s")
    duration = _common_seconds(results, "video_slow", "duration_s")
    title = f"a {_ms(fn_s)} function" if fn_s is not None else "a slow function"
    over = f", run for {_duration(duration)}" if duration is not None else ""
    lines = [
        f"## Video with {title}",
        "",
        f"A video handler that takes longer per frame than the frame interval{over}. "
        "An implementation that queues frames falls further and further behind (its latency "
        "grows); one that drops stale frames stays current at a lower frame rate. *First* "
        "and *last*: median latency of the frames echoed in the first 5 s (after a 2 s "
        "warm-up) and in the last 5 s of the run; *growth*: last − first; *n*: frames echoed "
        "over the run; *last IQR*: the spread of the last 5 s.",
        "",
    ]
    missing = _missing(results, "video_slow")
    if missing:
        return lines + missing
    lines += _rests_on("one session per implementation, every frame it got back.")
    lines += _figure_table(
        results,
        "video_slow",
        [
            _Column("Function", lambda e: _ms(e.get("fn_s"))),
            _Column("n", lambda e: _int(e.get("frames") or len(_list(e.get("series"))))),
            _Column("fps", lambda e: _fps(e.get("fps"))),
            _Column("Loss", lambda e: _pct(e.get("loss"))),
            _Column("First median", lambda e: _ms(e.get("first_p50_s"))),
            _Column("Last median", lambda e: _ms(e.get("last_p50_s"))),
            _Column("Last IQR", lambda e: _iqr_ms(_stats(e, "last"))),
            _Column("Growth", lambda e: _signed_ms(e.get("growth_s"))),
            _ERRORS_COLUMN,
        ],
        _Ratio(_vs(results, "Last median"), lambda e: e.get("last_p50_s")),
        with_floor=False,
    )
    lines += _errors_block(results, "video_slow")
    lines += _image(png_names, "video_slow", "Video latency over time with a slow handler")
    return lines


def _ratio_column(results: dict[str, Any], figure: str, title: str, key: str) -> _Column:
    """A column of ``entry[key]`` / the baseline's, for a table with more than one ratio."""
    base = _get(results, figure, _baseline(results), key)
    return _Column(_vs(results, title), lambda e: _ratio(e.get(key), base))


def _run_medians(entry: Entry) -> str:
    """The sessions' median skews, lowest–highest (one session: its median)."""
    values = _numbers(entry.get("skew_p50_runs_s"))
    if not values:
        return "n/a"
    low, high = min(values), max(values)
    return _signed_ms(low) if len(values) == 1 else f"{_signed_ms(low)}–{_signed_ms(high)}"


def _section_av_echo(results: dict[str, Any], png_names: dict[str, str]) -> list[str]:
    lines = [
        "## Audio-video echo",
        "",
        "A handler that returns every audio and video frame it receives, both tracks in one "
        "peer connection (the documented `AsyncAudioVideoStreamHandler` echo; the floor: a "
        "bare aiortc peer sending both received tracks back). The client sends marked audio "
        f"and barcoded video ({VIDEO_ECHO_WORKLOAD}) together. *Round trip*, per track: from "
        "the client sending a marker or a frame to it receiving its echo, as in the audio "
        "and video echo figures (the audio one includes the client's jitter buffer). "
        "*Skew*: for each echoed video frame, the server transit of the audio that reached "
        "the server at the same instant minus the frame's own; a transit runs from the "
        "client's encoder to the echo's first RTP packet back, before the client's buffers. "
        "Positive: audio leaves later than the video it came with (ITU-R BT.1359 finds audio "
        "ahead by 45 ms or behind by 125 ms noticeable); the target is |skew| p95 ≤ "
        f"{_ms(AV_SKEW_TARGET_S)}. *n*: markers, frames or skew samples, pooled over the runs; "
        "*run medians*: the lowest and highest of the sessions' own median skews.",
        "",
    ]
    missing = _missing(results, "av_echo")
    if missing:
        return lines + missing
    runs = _common_seconds(results, "av_echo", "runs")
    window = _common_seconds(results, "av_echo", "window_s")
    over = f" of {_duration(window)}" if window is not None else ""
    lines += _rests_on(
        f"{_int(runs)} sessions{over} per implementation, one after another; every marker "
        "and frame sent in each window."
    )
    lines += ["### Round trip per track", ""]
    lines += _figure_table(
        results,
        "av_echo",
        [
            _Column("Runs", lambda e: _int(e.get("runs"))),
            _Column("Audio n", lambda e: _n(_stats(e, "audio_rt", "audio_rt_s"))),
            _Column("Audio median", lambda e: _ms(e.get("audio_rt_p50_s"))),
            _Column("Audio p95", lambda e: _ms(e.get("audio_rt_p95_s"))),
            _Column("Audio IQR", lambda e: _iqr_ms(_stats(e, "audio_rt", "audio_rt_s"))),
            _Column("Coverage", lambda e: _pct(e.get("coverage"))),
            _Column("Video n", lambda e: _n(_stats(e, "video_rt", "video_rt_s"))),
            _Column("Video median", lambda e: _ms(e.get("video_rt_p50_s"))),
            _Column("Video p95", lambda e: _ms(e.get("video_rt_p95_s"))),
            _Column("Video IQR", lambda e: _iqr_ms(_stats(e, "video_rt", "video_rt_s"))),
            _Column("fps", lambda e: _fps(e.get("fps"))),
            _ERRORS_COLUMN,
            _ratio_column(results, "av_echo", "Audio p95", "audio_rt_p95_s"),
            _ratio_column(results, "av_echo", "Video p95", "video_rt_p95_s"),
        ],
    )
    lines += ["### Skew (audio − video), at the server", ""]
    lines += _figure_table(
        results,
        "av_echo",
        [
            _Column("n", lambda e: _n(_stats(e, "skew", "skew_s"))),
            _Column("Skew median", lambda e: _signed_ms(e.get("skew_p50_s"))),
            _Column("Skew p5", lambda e: _signed_ms(e.get("skew_p5_s"))),
            _Column("Skew p95", lambda e: _signed_ms(e.get("skew_p95_s"))),
            _Column("Skew IQR", lambda e: _iqr_ms(_stats(e, "skew", "skew_s"))),
            _Column("Skew min–max", lambda e: _minmax_ms(_stats(e, "skew", "skew_s"))),
            _Column(r"\|Skew\| p95", lambda e: _ms(e.get("abs_skew_p95_s"))),
            _Column("Run medians", _run_medians),
            _Column("Audio transit median", lambda e: _ms(e.get("audio_transit_p50_s"))),
            _Column("Video transit median", lambda e: _ms(e.get("video_transit_p50_s"))),
        ],
        _Ratio(_vs(results, r"\|Skew\| p95"), lambda e: e.get("abs_skew_p95_s")),
    )
    lines += _errors_block(results, "av_echo")
    lines += _image(png_names, "av_skew", "Audio-video skew at the server over time")
    return lines


def _silent_cell(e: Entry) -> str:
    runs = _num(e.get("silent_runs"))
    if runs is None:
        return "n/a"
    ok = _num(e.get("silent_ok")) or 0
    return f"{ok:.0f}/{runs:.0f}"


def _section_turns(results: dict[str, Any], png_names: dict[str, str]) -> list[str]:
    lines = [
        "## Turn latency (ReplyOnPause)",
        "",
        "A `ReplyOnPause` handler that answers every turn at once with a 1 kHz tone, fed "
        "espeak-ng speech with known ends of speech (`fixtures.speech` and two more "
        "scenarios made the same way, `conformance.bench.speech`); every round plays each "
        "scenario once on a fresh connection, each round's audio a few ms later than the "
        "last, so ends of speech fall at other phases of the 20 ms frames. *Latency*: from "
        "the end of a turn's speech to the first audio of its reply at the client; *n*: "
        "turns timed. *False*: replies no turn asked for; *missed*: turns that got no "
        f"reply within {_ms(TURN_WINDOW_S)}. *Silent*: runs of the scenarios where a "
        "correct implementation must stay silent (noise only, tone only) that got no reply; "
        "a reply there is a false turn. *Errors*: runs that failed (no connection, "
        "connection lost): neither turns nor misses. "
        f"The plot's vertical line is the {_ms(TURN_TARGET_S)} target.",
        "",
    ]
    missing = _missing(results, "turns")
    if missing:
        return lines + missing
    rounds = _common_seconds(results, "turns", "rounds")
    runs = _common_seconds(results, "turns", "runs")
    lines += _rests_on(
        f"{_int(rounds)} rounds, {_int(runs)} runs (one connection each) per implementation; "
        "the turns and scenarios are counted in the table."
    )
    lines += _figure_table(
        results,
        "turns",
        [
            _Column("n", lambda e: _int(e.get("n", e.get("turns")))),
            _Column("Scenarios", lambda e: _int(e.get("speech_scenarios"))),
            _Column("Median", lambda e: _ms(e.get("p50_s"))),
            _Column("p95", lambda e: _ms(e.get("p95_s"))),
            _Column("IQR", lambda e: _iqr_ms(_stats(e, "latency", "latencies_s"))),
            _Column("Min–max", lambda e: _minmax_ms(_stats(e, "latency", "latencies_s"))),
            _Column("False", lambda e: _int(e.get("false"))),
            _Column("Missed", lambda e: _int(e.get("missed"))),
            _Column("Silent", _silent_cell),
            _Column("Errors", lambda e: _int(e.get("error_runs", len(_errors_of(e))))),
        ],
        _Ratio(_vs(results, "p95"), lambda e: e.get("p95_s")),
        with_floor=False,
    )
    notes = []
    data = results["turns"]
    for name in _names(results):
        note = _get(data, name, "note")
        if note:
            notes.append(f"- {name}: {_escape(str(note))}")
    if notes:
        lines += [*notes, ""]
    lines += _turn_scenarios(results)
    lines += _errors_block(results, "turns")
    lines += _image(png_names, "turns", "Turn latency per implementation")
    return lines


def _silent_of(scenario: Entry) -> str:
    """``ok/completed`` runs of a silent scenario (runs that failed are errors)."""
    completed = (_num(scenario.get("runs")) or 0) - (_num(scenario.get("errors")) or 0)
    return f"{_int(scenario.get('silent_ok'))}/{_int(completed)}"


def _turn_scenarios(results: dict[str, Any]) -> list[str]:
    rows = []
    for name in _names(results):
        scenarios = _get(results, "turns", name, "scenarios")
        if not isinstance(scenarios, dict):
            continue
        for scenario, s in scenarios.items():
            if not isinstance(s, dict):
                continue
            stats = _stats(s, "latency", "latencies_s")
            silent = bool(s.get("silent"))
            rows.append(
                [
                    name,
                    f"`{_escape(str(scenario))}`" + (" (silent)" if silent else ""),
                    _int(s.get("runs")),
                    "—" if silent else _int(s.get("expected")),
                    "—" if silent else _n(stats),
                    "—" if silent else _ms(stats.get("p50")),
                    "—" if silent else _ms(stats.get("p95")),
                    _int(s.get("false")),
                    "—" if silent else _int(s.get("missed")),
                    _silent_of(s) if silent else "—",
                    _int(s.get("errors")),
                ]
            )
    if not rows:
        return []
    table = _table(
        [
            "Implementation",
            "Scenario",
            "Runs",
            "Turns",
            "n",
            "Median",
            "p95",
            "False",
            "Missed",
            "Silent",
            "Errors",
        ],
        rows,
    )
    return ['??? note "Every scenario"', "", *("    " + line if line else "" for line in table)]


def _cpu_mode(entry: Entry, mode: str) -> dict[str, Any]:
    """``{"median_pct", "stats"}`` of one CPU mode; results before schema 2 kept one value
    per session count (``{"4": 6.9}``)."""
    value = entry.get(mode)
    if isinstance(value, dict) and ("median_pct" in value or "stats" in value):
        stats = value.get("stats") if isinstance(value.get("stats"), dict) else {}
        return {"median_pct": value.get("median_pct"), "stats": stats, **value}
    if isinstance(value, dict) and value:
        numbers = [_num(v) for v in value.values()]
        last = numbers[-1] if numbers else None
        return {"median_pct": last, "stats": spread([] if last is None else [last])}
    return {"median_pct": None, "stats": spread([])}


def _section_cpu(results: dict[str, Any], png_names: dict[str, str]) -> list[str]:
    core = _core(results)
    floor = _floor(results)
    lines = [
        "## Server CPU per session",
        "",
        "CPU time of the server process only, in % of one core, divided by the number of "
        "sessions, less the idle server's own CPU measured just before each window: while "
        "echoing audio with the guide's EchoHandler (*echo*), and while taking the client's "
        "audio with a handler whose `emit` returns None, so nothing goes back (*idle*; the "
        "floor reads the audio and discards it). Each value is the median of *n* windows "
        "(modes interleaved), beside their range; each window has a fresh server process "
        "(after one warm-up connection), so that what an earlier window left behind (a "
        "worker blocked in a closed connection's `emit`, an idle `emit` still called in a "
        "loop) is not charged to it. The client "
        "peers are light (pre-encoded packets out, RTP logged, not decoded); their own CPU "
        "per session is shown beside.",
        "",
        "The floor's plain echo (*echo*) sends aiortc's decoded frames back as they are. "
        "Their buffers are sized for 120 ms, and aiortc's sender computes each packet's "
        "audio level in Python over the whole buffer, which makes the bare echo dearer than "
        "an implementation that builds its own 20 ms frames. *Echo, tight floor* is the "
        "floor without that cost (`bare-tight`: each frame copied into a 20 ms buffer "
        "first): the echo target is against it. The idle target is against the floor's "
        f"idle peer. *{core}* is webrtc_ref's StreamServer without Gradio (the same "
        "process kind as the floor): the difference from the webrtc_ref row is the Gradio "
        "path's.",
        "",
    ]
    missing = _missing(results, "cpu")
    if missing:
        return lines + missing
    runs = _common_seconds(results, "cpu", "runs")
    sessions = _common_seconds(results, "cpu", "sessions")
    window = _common_seconds(results, "cpu", "window_s")
    lines += _rests_on(
        f"{_int(runs)} windows of {_duration(window)} per mode and implementation, "
        f"{_int(sessions)} sessions each."
    )
    floor_entry = _get(results, "cpu", floor)

    def median_of(mode: str) -> Callable[[Entry], str]:
        return lambda e: _pct_value(_cpu_mode(e, mode)["median_pct"])

    def range_of(mode: str) -> Callable[[Entry], str]:
        return lambda e: _minmax_pct_value(_cpu_mode(e, mode)["stats"])

    def tight(e: Entry) -> str:
        if e is not floor_entry:
            return "—"
        mode = _cpu_mode(e, "echo_tight")
        return f"{_pct_value(mode['median_pct'])} ({_minmax_pct_value(mode['stats'])})"

    def windows(e: Entry) -> str:
        counts = {_n(_cpu_mode(e, m)["stats"]) for m in ("echo", "idle")}
        return "/".join(sorted(counts))

    def client(e: Entry) -> str:
        value = _get(e, "echo", "client_median_pct")
        return _pct_value(value)

    lines += _figure_table(
        results,
        "cpu",
        [
            _Column("Sessions", lambda e: _int(e.get("sessions"))),
            _Column("n", windows),
            _Column("Echo", median_of("echo")),
            _Column("Echo min–max", range_of("echo")),
            _Column("Echo, tight floor", tight),
            _Column("Idle", median_of("idle")),
            _Column("Idle min–max", range_of("idle")),
            _Column("Client per echo session", client),
            _ERRORS_COLUMN,
        ],
        _Ratio(_vs(results, "Echo"), lambda e: _cpu_mode(e, "echo")["median_pct"]),
        extra=(core,),
    )
    lines += _errors_block(results, "cpu", extra=(core,))
    return lines


def _last_passed(entry: Entry) -> Entry | None:
    steps = [s for s in _list(entry.get("steps")) if isinstance(s, dict) and s.get("passed")]
    return steps[-1] if steps else None


def _held_value(entry: Entry, key: str) -> Any:
    """A value at the held step: stored by the driver, else that of the last passing step."""
    stored = {"server_cpu_pct": "held_server_pct", "client_cpu_pct": "held_client_pct"}
    if key in stored and entry.get(stored[key]) is not None:
        return entry.get(stored[key])
    return _get(_last_passed(entry), key)


def _section_capacity(results: dict[str, Any], png_names: dict[str, str]) -> list[str]:
    lines = [
        "## Capacity",
        "",
        "Concurrent echo sessions, added in steps until a step fails, then one at a time "
        "from the last step that passed: a step passes when every session connected, its "
        "echo is intact (at least 90% of the timestamp markers come back) and at most "
        f"{_pct(CAPACITY_LATE_LIMIT)} of the 20 ms frames arrive late (more than 40 ms after "
        "the stream's best offset) or not at all. A failed step is measured once more; the "
        "held step once more at the end. Each window has a fresh server process (after one "
        "warm-up connection): sessions of earlier steps that an implementation keeps busy "
        "after they closed are not charged to the next. The client peers are light "
        "(pre-encoded packets "
        "out, RTP logged and decoded only after the window), so that the server, not the "
        "client, runs out of CPU first: the client's CPU is shown beside the server's (both "
        "in % of one core, of the held step). *Held*: the most sessions of a step that "
        "passed; *failed at*: the step above it; *n*: windows measured over the ramp; *late "
        "at held*: the range over the held step's windows.",
        "",
    ]
    missing = _missing(results, "capacity")
    if missing:
        return lines + missing
    lines += _rests_on(
        "one ramp per implementation, *n* windows (every step below), each with a fresh "
        "server process and fresh sessions."
    )

    def held_late(e: Entry) -> str:
        stats = e.get("held_late")
        if isinstance(stats, dict):
            return f"{_minmax_pct(stats)} ({_int(e.get('held_passed'))}/{_n(stats)} passed)"
        return _pct(_held_value(e, "late_fraction"))

    def per_session(key: str) -> Callable[[Entry], str]:
        return lambda e: _pct_value(_get(e, key, "p50"))

    lines += _figure_table(
        results,
        "capacity",
        [
            _Column("Held", lambda e: _int(e.get("held"))),
            _Column("Failed at", lambda e: _int(e.get("failed_at"))),
            _Column("Stopped", lambda e: _text(e.get("stopped"))),
            _Column("n", lambda e: _int(e.get("windows") or len(_list(e.get("steps"))))),
            _Column("Late at held", held_late),
            _Column("Server CPU", lambda e: _pct_value(_held_value(e, "server_cpu_pct"))),
            _Column("Client CPU", lambda e: _pct_value(_held_value(e, "client_cpu_pct"))),
            _Column("Server per session", per_session("server_per_session_pct")),
            _Column("Client per session", per_session("client_per_session_pct")),
            _ERRORS_COLUMN,
        ],
        _Ratio(_vs(results, "Held"), lambda e: e.get("held")),
    )
    lines += _errors_block(results, "capacity")
    lines += _image(png_names, "capacity", "Late frames against concurrent sessions")
    lines += _capacity_steps(results)
    return lines


def _capacity_steps(results: dict[str, Any]) -> list[str]:
    data = results["capacity"]
    floor = _floor(results)
    rows = []
    for name in [*_names(results), floor]:
        steps = _get(data, name, "steps")
        if not isinstance(steps, list):
            continue
        for step in steps:
            if not isinstance(step, dict):
                continue
            passed = step.get("passed")
            attempt = _int(step.get("attempt")) if step.get("attempt") else ""
            phase = _text(step.get("phase")) if step.get("phase") else "n/a"
            rows.append(
                [
                    _label(results, name),
                    _int(step.get("n")),
                    f"{phase} {attempt}".strip(),
                    _int(step.get("connected")),
                    _pct(step.get("late_fraction")),
                    _pct(step.get("coverage")),
                    _ms(step.get("rt_p95_s")),
                    _pct_value(step.get("server_cpu_pct")),
                    _pct_value(step.get("client_cpu_pct")),
                    _pct_value(step.get("other_cpu_pct")),
                    str(len(_list(step.get("errors")))),
                    "✅" if passed is True else "❌" if passed is False else "n/a",
                ]
            )
    if not rows:
        return []
    table = _table(
        [
            "Implementation",
            "Sessions",
            "Window",
            "Connected",
            "Late frames",
            "Markers back",
            "Round trip p95",
            "Server CPU",
            "Client CPU",
            "Other CPU",
            "Errors",
            "Passed",
        ],
        rows,
    )
    note = [
        "    The round trip here is measured at the client's RTP arrival (the light "
        "client has no jitter buffer), so it is shorter than the audio echo figure's.",
        "",
    ]
    return [
        '??? note "Every step"',
        "",
        *note,
        *("    " + line if line else "" for line in table),
    ]


def _section_isolation(results: dict[str, Any], png_names: dict[str, str]) -> list[str]:
    fn_s = _common_seconds(results, "isolation", "fn_s")
    slow = f"takes {_ms(fn_s)} per call" if fn_s is not None else "is slow"
    lines = [
        "## Isolation",
        "",
        f"Whether one session's slow handler (one that {slow}) holds up another session: the "
        "audio round-trip p95 and late-frame fraction of an echo session alone and while the "
        "slow session runs; *Δ p95*: loaded − alone; *n*: markers timed alone / loaded.",
        "",
    ]
    missing = _missing(results, "isolation")
    if missing:
        return lines + missing
    lines += _rests_on("one echo session alone, then one beside the slow session.")
    lines += _figure_table(
        results,
        "isolation",
        [
            _Column("Function", lambda e: _ms(e.get("fn_s"))),
            _Column("n", lambda e: f"{_n(_stats(e, 'alone'))} / {_n(_stats(e, 'loaded'))}"),
            _Column("p95 alone", lambda e: _ms(e.get("alone_rt_p95_s"))),
            _Column("p95 loaded", lambda e: _ms(e.get("loaded_rt_p95_s"))),
            _Column("IQR loaded", lambda e: _iqr_ms(_stats(e, "loaded"))),
            _Column("Δ p95", lambda e: _signed_ms(e.get("delta_p95_s"))),
            _Column("Late alone", lambda e: _pct(e.get("alone_late"))),
            _Column("Late loaded", lambda e: _pct(e.get("loaded_late"))),
            _ERRORS_COLUMN,
        ],
        _Ratio(_vs(results, "p95 loaded"), lambda e: e.get("loaded_rt_p95_s")),
        with_floor=False,
    )
    lines += _errors_block(results, "isolation")
    return lines


def _section_setup(results: dict[str, Any], png_names: dict[str, str]) -> list[str]:
    lines = [
        "## Setup",
        "",
        "Connection setup. *Server answer*: the server's time from receiving the offer to "
        "having its answer; *HTTP offer*: the client's time from posting the offer to "
        "receiving the answer; *first media*: from starting the connection to the first "
        "echoed media at the client; *n*: connections (one at a time).",
        "",
    ]
    missing = _missing(results, "setup")
    if missing:
        return lines + missing
    lines += _figure_table(
        results,
        "setup",
        [
            _Column("n", lambda e: _n(_stats(e, "first_media", "first_media_s"))),
            _Column("Server answer median", lambda e: _ms(e.get("server_answer_p50_s"))),
            _Column("HTTP offer median", lambda e: _ms(e.get("http_offer_p50_s"))),
            _Column("First media median", lambda e: _ms(e.get("first_media_p50_s"))),
            _Column("First media p95", lambda e: _ms(e.get("first_media_p95_s"))),
            _Column(
                "First media min–max",
                lambda e: _minmax_ms(_stats(e, "first_media", "first_media_s")),
            ),
            _ERRORS_COLUMN,
        ],
        _Ratio(_vs(results, "First media p95"), lambda e: e.get("first_media_p95_s")),
    )
    lines += _errors_block(results, "setup")
    return lines


#: The hostile classes in the order the ``hostile`` figure posts them.
HOSTILE_ORDER: tuple[str, ...] = (
    "many_sections",
    "padded",
    "no_ice",
    "no_fingerprint",
    "foreign_kind",
    "duplicate_kind",
    "duplicate_mid",
    "no_channel",
    "bad_id",
)


def _codes(codes: Any) -> str:
    if not isinstance(codes, dict) or not codes:
        return "n/a"
    return ", ".join(f"{_escape(str(k))} ×{v}" for k, v in sorted(codes.items()))


def _section_hostile(results: dict[str, Any], png_names: dict[str, str]) -> list[str]:
    lines = [
        "## Hostile offers",
        "",
        "Well-formed offers broken in one way each (`fixtures.offers`: 3000 media "
        "sections, padded to 2 MB, no ICE credentials, no fingerprint, media of the other "
        "kind or twice, repeated mids, no data channel; and bad webrtc_ids), posted one "
        "after another through the Gradio route while an echo session runs. Per class: the "
        "reply time (median / max of *n* offers), what the server replied, and the longest "
        "its event loop was blocked while that class was posted (a 5 ms timer on the "
        "loop), beside the same measure over a window with the echo session alone. "
        "*Live gap*: the echo session's longest pause in received audio over the burst.",
        "",
    ]
    missing = _missing(results, "hostile")
    if missing:
        return lines + missing
    lines += _figure_table(
        results,
        "hostile",
        [
            _Column("Longest stall", lambda e: _ms(e.get("longest_stall_s"))),
            _Column("Stall, no hostile offers", lambda e: _ms(e.get("baseline_stall_s"))),
            _Column("Live gap", lambda e: _ms(e.get("live_gap_s"))),
            _Column("n per class", lambda e: _int(e.get("repeats"))),
            _Column("Error", lambda e: _escape(str(e["error"])) if e.get("error") else "—"),
        ],
        with_floor=False,
    )
    data = results.get("hostile")
    data = data if isinstance(data, dict) else {}
    for name in _names(results):
        entry = data.get(name)
        if not isinstance(entry, dict) or not isinstance(entry.get("classes"), dict):
            continue
        rows = []
        for kind in HOSTILE_ORDER:
            c = entry["classes"].get(kind)
            if not isinstance(c, dict):
                continue
            rows.append(
                [
                    f"`{kind}`",
                    _int(c.get("n", len(_list(c.get("reply_s"))) or entry.get("repeats"))),
                    _ms(c.get("reply_p50_s")),
                    _ms(c.get("reply_max_s")),
                    _ms(c.get("stall_s")),
                    _codes(c.get("codes")),
                ]
            )
        lines += [f"**{_label(results, name)}**", ""]
        lines += _table(["Class", "n", "Reply p50", "Reply max", "Loop stall", "Replies"], rows)
    lines += _errors_block(results, "hostile")
    return lines


def _section_soak(results: dict[str, Any], png_names: dict[str, str]) -> list[str]:
    lines = [
        "## Long soak",
        "",
        "Echo sessions connect, stream for 1-6 s and leave, over and over, several at "
        "once; the server process's resident memory, OS threads and open file descriptors "
        "are read from `/proc` every few seconds (*n*: samples). The target is flat: a "
        "closed session leaves nothing behind. Run for webrtc_ref only (it takes its full "
        "duration).",
        "",
    ]
    missing = _missing(results, "soak")
    if missing:
        return lines + missing

    def rss_range(e: Entry) -> str:
        values = [_num(_get(s, "rss_kb")) for s in _list(e.get("samples"))]
        kb = [v for v in values if v is not None]
        return f"{min(kb) / 1024:.0f}–{max(kb) / 1024:.0f} MB" if kb else "n/a"

    lines += _figure_table(
        results,
        "soak",
        [
            _Column("Sessions", lambda e: _int(e.get("sessions"))),
            _Column("Duration", lambda e: _duration(e.get("duration_s"))),
            _Column("Cycles", lambda e: _int(e.get("cycles"))),
            _Column("n", lambda e: str(len(_list(e.get("samples"))))),
            _Column("Errors", lambda e: _int(e.get("error_count"))),
            _Column("RSS growth", lambda e: _mb(e.get("rss_growth_mb"))),
            _Column("… second half", lambda e: _mb(e.get("rss_second_half_growth_mb"))),
            _Column("RSS min–max", rss_range),
            _Column(
                "Threads first → last",
                lambda e: f"{_int(e.get('threads_first'))} → {_int(e.get('threads_last'))}",
            ),
            _Column(
                "fds first → last",
                lambda e: f"{_int(e.get('fds_first'))} → {_int(e.get('fds_last'))}",
            ),
        ],
        with_floor=False,
    )
    lines += _errors_block(results, "soak")
    return lines + _image(png_names, "soak", "Long soak: RSS, threads and fds over time")


def _mb(value: Any) -> str:
    number = _num(value)
    return "n/a" if number is None else f"{number:+.1f} MB"


_SECTIONS: tuple[Callable[[dict[str, Any], dict[str, str]], list[str]], ...] = (
    _section_audio,
    _section_video,
    _section_video_slow,
    _section_av_echo,
    _section_turns,
    _section_cpu,
    _section_capacity,
    _section_isolation,
    _section_setup,
    _section_hostile,
    _section_soak,
)
_FIGURE_KEYS: tuple[str, ...] = (
    "audio_echo",
    "video_echo",
    "video_slow",
    "av_echo",
    "turns",
    "cpu",
    "capacity",
    "isolation",
    "setup",
    "hostile",
    "soak",
)


# --------------------------------------------------------------------------------------------
# The page


_MACHINE_LABELS: dict[str, str] = {
    "cpu_model": "CPU",
    "cores": "Cores",
    "platform": "Platform",
    "python": "Python",
    "aiortc": "aiortc",
    "av": "PyAV",
    "numpy": "NumPy",
    "load_other_pct": "Other processes' CPU at start",
}


def _machine(results: dict[str, Any]) -> list[str]:
    machine = results.get("machine")
    machine = machine if isinstance(machine, dict) else {}
    rows = [
        ["Started", _text(results.get("started"))],
        ["Duration", _duration(results.get("elapsed_s"))],
        ["Plan", _text(results.get("plan"))],
    ]
    for key, label in _MACHINE_LABELS.items():
        if key == "load_other_pct":
            value = _pct_value(machine.get(key))
            rows.append([label, value if value == "n/a" else f"{value} of one core"])
        else:
            rows.append([label, _text(machine.get(key))])
    rows += [[_escape(str(k)), _text(v)] for k, v in machine.items() if k not in _MACHINE_LABELS]
    lines = ["## Machine", "", *_table(["Property", "Value"], rows)]
    load = _num(machine.get("load_other_pct"))
    if load is not None and load > BUSY_LOAD_PCT:
        lines += [
            '!!! warning "Busy machine"',
            "",
            f"    Other processes used {_pct_value(load)} of one core when the run started; "
            "latency, CPU and capacity figures may be worse than on an idle machine.",
            "",
        ]
    return lines


def _implementations_section(results: dict[str, Any]) -> list[str]:
    impls = _implementations(results)
    floor = _floor(results)
    rows = []
    for name in _names(results):
        info = impls.get(name, {})
        rows.append(
            [
                name,
                _text(info.get("version")),
                _text(info.get("gradio")),
                _text(info.get("python")),
            ]
        )
    machine = results.get("machine") if isinstance(results.get("machine"), dict) else {}
    rows.append(
        [
            _label(results, floor),
            _text(_get(machine, "aiortc")),
            "—",
            _text(_get(machine, "python")),
        ]
    )
    lines = [
        "## Implementations",
        "",
        f"Ratios compare each row with {_baseline(results)} (1.00×): above 1× means more time "
        "or more CPU or, for capacity, more sessions held. "
        f"The last row, *{_label(results, floor)}*, is a bare aiortc "
        "peer with no component: the least any implementation built on aiortc can cost.",
        "",
        *_table(["Implementation", "Version", "Gradio", "Python"], rows),
    ]
    notes = []
    for name in _names(results):
        info = impls.get(name, {})
        for note in _list(info.get("notes")):
            notes.append(f"- {name}: {_escape(str(note))}")
        unsupported = info.get("unsupported")
        if isinstance(unsupported, dict) and unsupported:
            figures = ", ".join(f"`{_escape(str(k))}`" for k in unsupported)
            notes.append(f"- {name}: unsupported figures: {figures} (reasons in the tables below).")
    if notes:
        lines += ["Notes:", "", *notes, ""]
    return lines


def _targets(results: dict[str, Any]) -> list[str]:
    targets = results.get("targets")
    lines = [
        "## Targets",
        "",
        "The project's targets for webrtc_ref, checked in the run. *Baseline*: what the "
        "figure is compared with, measured in the same run (the floor, or for an absolute "
        "target its own reference); *ratio*: measured / baseline; *n* and *spread*: what the "
        "measured value (/ the baseline) rests on.",
        "",
    ]
    if not isinstance(targets, list) or not targets:
        return [*lines, "*No targets in this run.*", ""]
    rows = []
    for target in targets:
        if not isinstance(target, dict):
            continue
        met = target.get("met")
        ratio = _num(target.get("ratio"))
        rows.append(
            [
                _text(target.get("name")),
                _text(target.get("target")),
                _text(target.get("value")),
                _text(target.get("baseline")),
                "n/a" if ratio is None else f"{ratio:.2f}×",
                _text(target.get("n")),
                _text(target.get("spread")),
                "✅" if met is True else "❌" if met is False else "n/a",
            ]
        )
    header = ["Figure", "Target", "Measured", "Baseline", "Ratio", "n", "Spread", "Met"]
    return lines + _table(header, rows)


def render_markdown(results: dict[str, Any], png_names: dict[str, str]) -> str:
    """docs/benchmarks.md from benchmark results.

    ``png_names`` maps plot keys (see :data:`PLOT_FILES`) to image paths relative to the page,
    as :func:`make_plots` returns them; a plot not in it is left out of the page.
    """
    lines = [
        "# Benchmarks",
        "",
        "<!-- Generated by nox -s bench (python -m conformance.bench); do not edit by hand. -->",
        "",
        "Latency, throughput, CPU and capacity of each implementation, side by side. Each "
        "implementation is installed in its own virtual environment and driven through its "
        "conformance adapter: the benchmark serves the Gradio app the user guide would write "
        "with that implementation, and the conformance suite's wire client drives it over "
        "loopback with real aiortc peers, as its browser client would. The client peers run "
        "in a separate process from the server. The floor is a bare aiortc peer with no "
        "component at all, measured the same way: the part of each figure that aiortc and "
        "the machine cost anyway.",
        "",
        "## How to reproduce",
        "",
        "```sh",
        "nox -s bench                        # all implementations: writes "
        "build/bench/results.json, this page and its plots",
        "nox -s bench -- --quick             # fewer runs, shorter figures",
        "nox -s bench -- --impl webrtc_ref   # one implementation (repeat --impl for more)",
        "nox -s bench -- --figure turns      # one figure (repeatable)",
        "```",
        "",
        "Each implementation runs from its conformance venv (`nox -s bench` creates the "
        "missing ones with `nox --install-only`). Each figure gets a fresh server process. "
        "Every number on this page comes from the run; the raw figures are in "
        "[results.json](benchmarks/results.json).",
        "",
        *_implementations_section(results),
        *_machine(results),
        *_targets(results),
    ]
    for section in _SECTIONS:
        lines += section(results, png_names)
    return "\n".join(lines).rstrip() + "\n"


# --------------------------------------------------------------------------------------------
# Plots


def _new_figure() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    return Figure(figsize=_FIGSIZE, dpi=_DPI, layout="tight")


def _save(fig: Any, path: Path) -> None:
    fig.savefig(path, format="png", metadata={"Software": None})


def _series(results: dict[str, Any], figure: str) -> list[str]:
    """Names with data in a figure, in page order, the floor last."""
    data = results.get(figure)
    if not isinstance(data, dict):
        return []
    return [n for n in [*_names(results), _floor(results)] if isinstance(data.get(n), dict)]


def _ecdf_plot(
    results: dict[str, Any],
    figure: str,
    key: str,
    title: str,
    path: Path,
    target_s: float | None = None,
) -> bool:
    """An ECDF (x: ms, y: fraction) of ``key`` per implementation; False if no data."""
    colours = _colours(results)
    curves = []
    for name in _series(results, figure):
        values = sorted(v * 1000 for v in _numbers(results[figure][name].get(key)))
        if values:
            curves.append((name, values))
    if not curves:
        return False
    fig = _new_figure()
    ax = fig.add_subplot()
    for name, values in curves:
        n = len(values)
        ax.step(
            [values[0], *values],
            [0.0, *((i + 1) / n for i in range(n))],
            where="post",
            color=colours.get(name),
            label=f"{_label(results, name)} (n={n})",
            linewidth=1.6,
        )
    low = min(v[0] for _, v in curves)
    high = max(v[-1] for _, v in curves)
    if target_s is not None:
        ax.axvline(target_s * 1000, color="black", linestyle="--", linewidth=1, label="target")
        high = max(high, target_s * 1000)
    if low > 0 and high / low > 20:
        ax.set_xscale("log")
    ax.set_xlabel("latency (ms)")
    ax.set_ylabel("fraction ≤ x")
    ax.set_ylim(0, 1.02)
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small", loc="lower right")
    _save(fig, path)
    return True


def _plot_video_slow(results: dict[str, Any], path: Path) -> bool:
    colours = _colours(results)
    lines = []
    for name in _series(results, "video_slow"):
        points = []
        for point in _list(results["video_slow"][name].get("series")):
            if isinstance(point, (list, tuple)) and len(point) >= 2:
                t, latency = _num(point[0]), _num(point[1])
                if t is not None and latency is not None:
                    points.append((t, latency * 1000))
        if points:
            lines.append((name, points))
    if not lines:
        return False
    fig = _new_figure()
    ax = fig.add_subplot()
    for name, points in lines:
        ax.plot(
            [t for t, _ in points],
            [ms for _, ms in points],
            color=colours.get(name),
            label=_label(results, name),
            linewidth=1.2,
            marker=".",
            markersize=2,
        )
    fn_s = _common_seconds(results, "video_slow", "fn_s")
    handler = f"a {_ms(fn_s)}" if fn_s is not None else "a slow"
    ax.set_xlabel("time since start (s)")
    ax.set_ylabel("latency (ms)")
    ax.set_title(f"Video latency with {handler} handler")
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small", loc="upper left")
    _save(fig, path)
    return True


def _plot_av_skew(results: dict[str, Any], path: Path) -> bool:
    """The skew over each session's window, per implementation (every session a line)."""
    colours = _colours(results)
    lines = []
    for name in _series(results, "av_echo"):
        sessions = []
        for session in _list(results["av_echo"][name].get("series")):
            points = []
            for point in _list(session):
                if isinstance(point, (list, tuple)) and len(point) >= 2:
                    t, skew = _num(point[0]), _num(point[1])
                    if t is not None and skew is not None:
                        points.append((t, skew * 1000))
            if points:
                sessions.append(points)
        if sessions:
            lines.append((name, sessions))
    if not lines:
        return False
    fig = _new_figure()
    ax = fig.add_subplot()
    for name, sessions in lines:
        for i, points in enumerate(sessions):
            ax.plot(
                [t for t, _ in points],
                [ms for _, ms in points],
                color=colours.get(name),
                label=_label(results, name) if i == 0 else None,
                linewidth=1.0,
                marker=".",
                markersize=2,
                alpha=0.8,
            )
    for sign in (1, -1):
        ax.axhline(
            sign * AV_SKEW_TARGET_S * 1000,
            color="black",
            linestyle="--",
            linewidth=1,
            label="target (|skew|)" if sign > 0 else None,
        )
    ax.axhline(0, color="black", linewidth=0.5)
    ax.set_xlabel("time in the session's window (s)")
    ax.set_ylabel("skew, audio − video (ms)")
    ax.set_title("Audio-video echo: skew at the server")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small", loc="best")
    _save(fig, path)
    return True


def _plot_capacity(results: dict[str, Any], path: Path) -> bool:
    colours = _colours(results)
    lines = []
    for name in _series(results, "capacity"):
        points = []
        for step in _list(results["capacity"][name].get("steps")):
            n, late = _num(_get(step, "n")), _num(_get(step, "late_fraction"))
            if n is not None and late is not None:
                points.append((n, late * 100))
        if points:
            lines.append((name, sorted(points)))
    if not lines:
        return False
    fig = _new_figure()
    ax = fig.add_subplot()
    for name, points in lines:
        ax.plot(
            [n for n, _ in points],
            [pct for _, pct in points],
            color=colours.get(name),
            label=_label(results, name),
            marker="o",
            markersize=4,
            linewidth=1.4,
        )
    ax.axhline(
        CAPACITY_LATE_LIMIT * 100,
        color="black",
        linestyle="--",
        linewidth=1,
        label=f"limit ({_pct(CAPACITY_LATE_LIMIT)})",
    )
    from matplotlib.ticker import FuncFormatter

    counts = [n for _, points in lines for n, _ in points]
    if min(counts) >= 1 and max(counts) / min(counts) >= 8:
        ax.set_xscale("log", base=2)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    highest = max(pct for _, points in lines for _, pct in points)
    ax.set_yscale("symlog", linthresh=0.1)
    ax.set_ylim(0, max(highest, CAPACITY_LATE_LIMIT * 100) * 1.6)
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.set_xlabel("concurrent sessions")
    ax.set_ylabel("late frames (%)")
    ax.set_title("Capacity: late frames against concurrent sessions")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small", loc="lower right")
    _save(fig, path)
    return True


def _plot_soak(results: dict[str, Any], path: Path) -> bool:
    colours = _colours(results)
    series = []
    for name in _series(results, "soak"):
        samples = [s for s in _list(results["soak"][name].get("samples")) if isinstance(s, dict)]
        points: list[tuple[float, float, float, float]] = []
        for sample in samples:
            values = [_num(sample.get(k)) for k in ("t_s", "rss_kb", "threads", "fds")]
            if all(v is not None for v in values):
                t, rss, threads, fds = (float(v) for v in values)  # type: ignore[arg-type]
                points.append((t, rss, threads, fds))
        if points:
            series.append((name, points))
    if not series:
        return False
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(3, 1, figsize=(_FIGSIZE[0], _FIGSIZE[1] * 1.8), sharex=True)
    labels = ("RSS (MB)", "OS threads", "open fds")
    for name, points in series:
        minutes = [t / 60 for t, *_ in points]
        curves = (
            [rss / 1024 for _, rss, _, _ in points],
            [threads for _, _, threads, _ in points],
            [fds for *_, fds in points],
        )
        for ax, ys in zip(axes, curves, strict=True):
            ax.plot(
                minutes, ys, color=colours.get(name), label=_label(results, name), linewidth=1.4
            )
    for ax, label in zip(axes, labels, strict=True):
        ax.set_ylabel(label)
        ax.grid(True, alpha=0.3)
        _, high = ax.get_ylim()
        ax.set_ylim(0, max(high * 1.1, 1))
    axes[-1].set_xlabel("minutes")
    axes[0].set_title("Long soak: echo sessions churning, the server process sampled")
    axes[0].legend(fontsize="small", loc="lower right")
    _save(fig, path)
    return True


def make_plots(
    results: dict[str, Any], png_dir: Path, md_dir: Path | None = None
) -> dict[str, str]:
    """Write the plots into ``png_dir``; return plot key -> image path relative to the page.

    The page is taken to live in ``md_dir`` (default: ``png_dir``'s parent), so the default
    paths look like ``benchmarks/audio_rt.png``. A plot without data is skipped, and an old
    file of that name is removed so the page never shows a stale figure.
    """
    png_dir = Path(png_dir)
    png_dir.mkdir(parents=True, exist_ok=True)
    md_dir = Path(md_dir) if md_dir is not None else png_dir.parent
    makers: dict[str, Callable[[Path], bool]] = {
        "audio_rt": lambda p: _ecdf_plot(
            results, "audio_echo", "rt_s", "Audio echo: round trip", p
        ),
        "video_g2g": lambda p: _ecdf_plot(
            results, "video_echo", "g2g_s", f"Video echo {VIDEO_ECHO_WORKLOAD}: glass to glass", p
        ),
        "video_slow": lambda p: _plot_video_slow(results, p),
        "turns": lambda p: _ecdf_plot(
            results, "turns", "latencies_s", "Turn latency (ReplyOnPause)", p, TURN_TARGET_S
        ),
        "capacity": lambda p: _plot_capacity(results, p),
        "soak": lambda p: _plot_soak(results, p),
        "av_skew": lambda p: _plot_av_skew(results, p),
    }
    written: dict[str, str] = {}
    for key, maker in makers.items():
        path = png_dir / PLOT_FILES[key]
        if maker(path):
            written[key] = Path(os.path.relpath(path, md_dir)).as_posix()
        else:
            path.unlink(missing_ok=True)
    return written


def write_report(results: dict[str, Any], md_path: Path, png_dir: Path) -> None:
    """Write the plots into ``png_dir`` and the page to ``md_path`` (linking the plots)."""
    md_path = Path(md_path)
    md_path.parent.mkdir(parents=True, exist_ok=True)
    png_names = make_plots(results, Path(png_dir), md_dir=md_path.parent)
    md_path.write_text(render_markdown(results, png_names), encoding="utf-8")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Write docs/benchmarks.md and its plots from a benchmark results JSON."
    )
    parser.add_argument("results", type=Path, help="the results JSON (build/bench/results.json)")
    parser.add_argument("-o", "--output", type=Path, default=Path("docs/benchmarks.md"))
    parser.add_argument("--png-dir", type=Path, default=Path("docs/benchmarks"))
    args = parser.parse_args(argv)
    results = json.loads(args.results.read_text(encoding="utf-8"))
    write_report(results, args.output, args.png_dir)
    print(f"wrote {args.output} and its plots in {args.png_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
