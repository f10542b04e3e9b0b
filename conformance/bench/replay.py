"""webrtc_ref's ``ReplyOnPause`` decisions, replayed from the speech fixtures.

``python -m conformance.bench reply-latency``: a microbenchmark of webrtc_ref's turn-taking
alone (no network, no Gradio), beside the side-by-side ``turns`` figure of
:mod:`conformance.bench.run` (which measures each implementation end to end over WebRTC).

Each scenario of ``fixtures.speech`` is cut into 20 ms blocks and fed to ``receive`` as fast
as possible, in order; time is simulated (block ``i`` ends at ``(i + 1) * 20 ms``), so the
figures do not depend on the machine's speed. Whenever a turn is decided, ``emit`` is driven
until the reply ends, and the wall-clock time to the first reply item is measured.

Reported, over every scenario replayed at several sub-frame offsets (the audio is delayed
by 0, 4, 8, ... ms so that speech ends fall at every position within a 20 ms block and a
32 ms VAD window):

- **decision latency**: end of speech (the manifest's ``expected_turn_ends``) -> end of the
  20 ms input block whose arrival ended the turn; p50 / p95 / max;
- **first reply audio** (estimate): decision latency + the time ``emit`` took to return the
  reply's first item + one 20 ms output frame (the longest a paced sender holds a frame);
- **false turns** (a turn with no matching end of speech) and **missed turns**; a turn
  matches an end of speech ``e`` when it is decided within ``[e, e + 1.5 s]``;
- **utterance error**: duration of the audio handed to ``fn`` minus the manifest's
  utterance (first speech start -> end of speech), per turn;
- **VAD CPU**: thread CPU time spent in ``receive`` per second of audio (% of one core).

``--runtime`` also replays the speech scenarios in real time through the streaming runtime
(``HandlerRunner`` + ``OutboundAudioTrack``, no network) and measures end of speech -> first
reply frame leaving the outbound track.

Run: ``python -m conformance.bench reply-latency`` (``--json`` for machine-readable
output, ``--runtime`` for the real-time replay, ``-v`` to list every turn). Statistics:
:mod:`conformance.bench.stats`.
"""

from __future__ import annotations

import argparse
import asyncio
import fractions
import json
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import av
import numpy as np

from conformance.bench.stats import pct
from webrtc_ref.reply_on_pause import AlgoOptions, ReplyOnPause, TurnInfo

FRAME_S = 0.02
MATCH_WINDOW_S = 1.5
DEFAULT_OFFSETS_MS: tuple[int, ...] = (0, 4, 8, 12, 16, 20, 24, 28)


@dataclass
class Turn:
    """One decided turn, on the scenario's own timeline (offset removed)."""

    start_s: float
    end_s: float
    decided_at_s: float
    reason: str
    utterance_s: float
    first_item_s: float  # wall-clock seconds emit took to return the first reply item
    expected_end_s: float | None = None
    expected_utterance_s: float | None = None

    @property
    def latency_s(self) -> float | None:
        if self.expected_end_s is None:
            return None
        return self.decided_at_s - self.expected_end_s


@dataclass
class ScenarioRun:
    """The outcome of replaying one scenario at one offset."""

    name: str
    offset_s: float
    audio_s: float
    turns: list[Turn]
    missed: list[float]
    false_turns: list[Turn]
    receive_cpu_s: float


@dataclass
class Report:
    """Aggregated figures (seconds unless noted)."""

    runs: int
    turns_expected: int
    turns_detected: int
    false_turns: int
    missed_turns: int
    latency_p50_s: float
    latency_p95_s: float
    latency_max_s: float
    first_audio_p50_s: float
    first_audio_p95_s: float
    utterance_error_max_abs_s: float
    vad_cpu_percent: float
    audio_s: float
    algo_options: dict[str, Any] = field(default_factory=dict)


def _percentile(values: Sequence[float], q: float) -> float:
    """:func:`conformance.bench.stats.pct`, NaN (printed as "nan") when there is nothing."""
    value = pct(values, q)
    return math.nan if value is None else value


def _utterance_spans(scenario: Any) -> list[tuple[float, float]]:
    """``(start, end)`` of each expected turn: first speech start after the previous end."""
    spans: list[tuple[float, float]] = []
    speech = scenario.speech_segments()
    previous = -1.0
    for end in scenario.expected_turn_ends:
        starts = [s.start_s for s in speech if previous < s.start_s < end]
        spans.append((min(starts) if starts else end, end))
        previous = end
    return spans


def replay(
    scenario: Any,
    *,
    algo_options: AlgoOptions | None = None,
    offset_s: float = 0.0,
    can_interrupt: bool = False,
) -> ScenarioRun:
    """Replay ``scenario`` (a ``fixtures.speech.SpeechScenario``) through a fresh handler.

    The handler's reply yields one 20 ms block of silence at 24 kHz. Turns are matched to
    ``scenario.expected_turn_ends`` (see the module docstring).
    """
    rate = scenario.sample_rate
    utterances: list[int] = []

    def reply(audio: tuple[int, np.ndarray]) -> Any:
        utterances.append(audio[1].shape[-1])
        yield (24000, np.zeros((1, 480), dtype=np.int16))

    handler = ReplyOnPause(
        reply, algo_options, input_sample_rate=rate, can_interrupt=can_interrupt
    ).copy()
    handler.idle_wait_s = 0.0
    pad = np.zeros(round(offset_s * rate), dtype=np.int16)
    audio = np.concatenate([pad, scenario.audio])
    block = round(FRAME_S * rate)
    audio = np.concatenate([audio, np.zeros((-audio.size) % block, dtype=np.int16)])
    infos: list[tuple[TurnInfo, float]] = []
    cpu = 0.0
    for i in range(0, audio.size, block):
        c0 = time.thread_time()
        handler.receive((rate, audio[i : i + block].reshape(1, -1)))
        cpu += time.thread_time() - c0
        if handler.state == "listening":
            continue
        info = handler.last_turn
        assert info is not None
        w0 = time.perf_counter()
        first = None
        while first is None and handler.state != "listening":
            first = handler.emit()
        first_item_s = time.perf_counter() - w0
        while handler.state != "listening":
            handler.emit()
        infos.append((info, first_item_s))
    handler.shutdown()

    turns = [
        Turn(
            start_s=info.start_s - offset_s,
            end_s=info.end_s - offset_s,
            decided_at_s=info.decided_at_s - offset_s,
            reason=info.reason,
            utterance_s=n / rate,
            first_item_s=first_item_s,
        )
        for (info, first_item_s), n in zip(infos, utterances, strict=True)
    ]
    missed: list[float] = []
    unmatched = list(turns)
    for start, end in _utterance_spans(scenario):
        match = next((t for t in unmatched if end <= t.decided_at_s <= end + MATCH_WINDOW_S), None)
        if match is None:
            missed.append(end)
            continue
        unmatched.remove(match)
        match.expected_end_s = end
        match.expected_utterance_s = end - start
    return ScenarioRun(
        name=scenario.name,
        offset_s=offset_s,
        audio_s=audio.size / rate,
        turns=turns,
        missed=missed,
        false_turns=unmatched,
        receive_cpu_s=cpu,
    )


def run(
    *,
    algo_options: AlgoOptions | None = None,
    offsets_ms: Sequence[int] = DEFAULT_OFFSETS_MS,
    scenarios: Sequence[str] | None = None,
    sample_rate: int = 48000,
) -> tuple[Report, list[ScenarioRun]]:
    """Replay every scenario at every offset; return the report and the individual runs."""
    from fixtures.speech import SCENARIOS, build_scenario

    built = [build_scenario(name, sample_rate) for name in (scenarios or SCENARIOS)]
    runs = [
        replay(s, algo_options=algo_options, offset_s=ms / 1000) for s in built for ms in offsets_ms
    ]
    matched = [t for r in runs for t in r.turns if t.expected_end_s is not None]
    latencies = [t.latency_s for t in matched if t.latency_s is not None]
    first_audio = [
        t.latency_s + t.first_item_s + FRAME_S for t in matched if t.latency_s is not None
    ]
    errors = [
        abs(t.utterance_s - t.expected_utterance_s)
        for t in matched
        if t.expected_utterance_s is not None
    ]
    audio_s = sum(r.audio_s for r in runs)
    report = Report(
        runs=len(runs),
        turns_expected=sum(len(s.expected_turn_ends) for s in built) * len(offsets_ms),
        turns_detected=sum(len(r.turns) for r in runs),
        false_turns=sum(len(r.false_turns) for r in runs),
        missed_turns=sum(len(r.missed) for r in runs),
        latency_p50_s=_percentile(latencies, 50),
        latency_p95_s=_percentile(latencies, 95),
        latency_max_s=max(latencies, default=float("nan")),
        first_audio_p50_s=_percentile(first_audio, 50),
        first_audio_p95_s=_percentile(first_audio, 95),
        utterance_error_max_abs_s=max(errors, default=float("nan")),
        vad_cpu_percent=100 * sum(r.receive_cpu_s for r in runs) / audio_s,
        audio_s=audio_s,
        algo_options=asdict(algo_options or AlgoOptions()),
    )
    return report, runs


# --------------------------------------------------------------------------- real time


@dataclass
class RuntimeRun:
    """One real-time replay through the streaming runtime (no network)."""

    name: str
    offset_s: float
    expected_ends: list[float]
    reply_starts: list[float]  # seconds on the scenario's timeline
    errors: list[str]

    @property
    def latencies(self) -> list[float]:
        return [b - e for b, e in zip(self.reply_starts, self.expected_ends, strict=False)]


async def replay_through_runtime(scenario: Any, *, offset_s: float = 0.0) -> RuntimeRun:
    """Replay ``scenario`` in real time through ``HandlerRunner`` and ``OutboundAudioTrack``.

    Each 20 ms block is delivered as aiortc would (an ``av.AudioFrame``, s16 stereo 48 kHz)
    at the wall-clock instant its last sample was "captured"; the reply (0.3 s of tone,
    yielded at once) leaves through the outbound track's paced ``recv``. The first frame of
    each reply burst, measured against the end of speech on the same clock, is what the
    peer connection would send next: end of speech -> first reply audio leaving the server,
    minus Opus encoding and the network.
    """
    from aiortc.mediastreams import MediaStreamError

    from webrtc_ref.runner import HandlerRunner
    from webrtc_ref.tracks import OutboundAudioTrack

    loop = asyncio.get_running_loop()
    track = OutboundAudioTrack(loop)
    errors: list[str] = []
    tone = (0.2 * 32767 * np.sin(2 * np.pi * 440 * np.arange(7200) / 24000)).astype(np.int16)

    class Hooks:
        webrtc_id = f"bench-{scenario.name}"
        tag = webrtc_id

        def request_inputs(self) -> None:
            pass

        def send_message(self, message: str | dict[str, Any]) -> None:
            if isinstance(message, str):
                message = json.loads(message) if message.startswith("{") else {}
            if message.get("type") == "error":
                errors.append(str(message.get("message")))

        def close_stream(self, message: str) -> None:
            pass

        def clear_output(self) -> None:
            track.clear()

        def additional_outputs(self, outputs: Any) -> None:
            pass

        def user_error(self, where: str, exc: BaseException) -> None:
            errors.append(f"{where}: {type(exc).__name__}: {exc}")

        def report_error(self, where: str, exc: BaseException) -> str:
            self.user_error(where, exc)
            return errors[-1]

    def reply(audio: tuple[int, np.ndarray]) -> Any:
        yield (24000, tone.reshape(1, -1))

    hooks = Hooks()
    handler = ReplyOnPause(reply).copy()
    handler._attach(hooks)
    runner = HandlerRunner(handler, hooks, track)
    runner.start()
    bursts: list[float] = []

    async def consume() -> None:
        last = -1.0
        while True:
            try:
                await track.recv()
            except MediaStreamError:
                return
            now = time.monotonic()
            if now - last > 0.1:
                bursts.append(now)
            last = now

    consumer = asyncio.create_task(consume())
    rate = scenario.sample_rate
    block = rate // 50
    audio = np.concatenate([np.zeros(round(offset_s * rate), np.int16), scenario.audio])
    t0 = time.monotonic() + 0.2
    try:
        for i, k in enumerate(range(0, audio.size, block)):
            mono = audio[k : k + block]
            if mono.size < block:
                mono = np.concatenate([mono, np.zeros(block - mono.size, np.int16)])
            frame = av.AudioFrame.from_ndarray(
                np.repeat(mono, 2).reshape(1, -1), format="s16", layout="stereo"
            )
            frame.sample_rate = rate
            frame.pts = i * block
            frame.time_base = fractions.Fraction(1, rate)
            await asyncio.sleep(max(0.0, t0 + (i + 1) * FRAME_S - time.monotonic()))
            runner.deliver(frame)
        await asyncio.sleep(0.5)
    finally:
        await asyncio.to_thread(runner.stop)
        track.stop()
        consumer.cancel()
    return RuntimeRun(
        name=scenario.name,
        offset_s=offset_s,
        expected_ends=list(scenario.expected_turn_ends),
        reply_starts=[b - t0 - offset_s for b in bursts],
        errors=errors,
    )


def run_runtime(offsets_ms: Sequence[int] = (0, 10)) -> list[RuntimeRun]:
    """Real-time replays of the speech scenarios (about 22 s per offset)."""
    from fixtures.speech import build_scenario

    names = ("speech_pause_speech", "hesitations", "speech_then_silence")
    built = [build_scenario(name) for name in names]

    async def main() -> list[RuntimeRun]:
        return [
            await replay_through_runtime(sc, offset_s=ms / 1000)
            for sc in built
            for ms in offsets_ms
        ]

    return asyncio.run(main())


def format_runtime(runs: Sequence[RuntimeRun]) -> str:
    latencies = [x for r in runs for x in r.latencies]
    bad = [r for r in runs if len(r.reply_starts) != len(r.expected_ends) or r.errors]
    return "\n".join(
        [
            f"runtime (real time, HandlerRunner + OutboundAudioTrack, {len(runs)} runs):",
            f"  end of speech -> first reply frame out of the track: p50 "
            f"{_percentile(latencies, 50) * 1000:.0f} ms, p95 "
            f"{_percentile(latencies, 95) * 1000:.0f} ms, max "
            f"{max(latencies, default=float('nan')) * 1000:.0f} ms ({len(latencies)} turns)",
            f"  runs with a wrong number of replies or errors: {len(bad)}",
        ]
    )


def format_report(report: Report, runs: Sequence[ScenarioRun], verbose: bool = False) -> str:
    """Human-readable summary."""
    lines = [
        f"reply-latency: {report.runs} runs ({report.audio_s:.0f} s of audio), "
        f"options {report.algo_options}",
        f"  turns: {report.turns_detected} detected / {report.turns_expected} expected, "
        f"{report.false_turns} false, {report.missed_turns} missed",
        f"  end of speech -> decision: p50 {report.latency_p50_s * 1000:.0f} ms, "
        f"p95 {report.latency_p95_s * 1000:.0f} ms, max {report.latency_max_s * 1000:.0f} ms",
        f"  end of speech -> first reply audio leaves (estimate): "
        f"p50 {report.first_audio_p50_s * 1000:.0f} ms, "
        f"p95 {report.first_audio_p95_s * 1000:.0f} ms",
        f"  utterance given to fn vs manifest: max |error| "
        f"{report.utterance_error_max_abs_s * 1000:.0f} ms",
        f"  receive() CPU (VAD + turn logic): {report.vad_cpu_percent:.2f} % of one core",
    ]
    if verbose:
        for r in runs:
            for t in r.turns:
                latency = t.latency_s
                tag = "FALSE" if latency is None else f"latency {latency * 1000:4.0f} ms"
                lines.append(
                    f"    {r.name:20s} +{r.offset_s * 1000:2.0f} ms"
                    f"  {t.start_s:6.3f}-{t.end_s:6.3f}"
                    f"  decided {t.decided_at_s:6.3f} ({t.reason})  {tag}"
                )
            for end in r.missed:
                lines.append(f"    {r.name:20s} +{r.offset_s * 1000:2.0f} ms  MISSED end {end:.3f}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """``reply-latency`` command line."""
    parser = argparse.ArgumentParser(prog="python -m conformance.bench reply-latency")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("-v", "--verbose", action="store_true", help="list every turn")
    parser.add_argument("--mode", choices=("streaming", "chunked"), default="streaming")
    parser.add_argument("--audio-chunk-duration", type=float, default=None)
    parser.add_argument("--speech-threshold", type=float, default=None)
    parser.add_argument("--started-talking-threshold", type=float, default=None)
    parser.add_argument(
        "--runtime",
        action="store_true",
        help="also replay in real time through the streaming runtime (~45 s)",
    )
    args = parser.parse_args(argv)
    overrides = {
        k: v
        for k, v in (
            ("audio_chunk_duration", args.audio_chunk_duration),
            ("speech_threshold", args.speech_threshold),
            ("started_talking_threshold", args.started_talking_threshold),
        )
        if v is not None
    }
    options = AlgoOptions(mode=args.mode, **overrides)
    report, runs = run(algo_options=options)
    if args.json:
        print(json.dumps(asdict(report), indent=2))
    else:
        print(format_report(report, runs, verbose=args.verbose))
    ok = report.false_turns == 0 and report.missed_turns == 0
    if args.runtime:
        runtime_runs = run_runtime()
        print(format_runtime(runtime_runs))
        ok = ok and all(
            len(r.reply_starts) == len(r.expected_ends) and not r.errors for r in runtime_runs
        )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
