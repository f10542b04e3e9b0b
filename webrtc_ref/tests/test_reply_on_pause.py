"""ReplyOnPause driven directly: speech fixtures in, turns and replies out.

Audio is fed with ``receive`` in 20 ms blocks, in order but as fast as possible; ``emit`` is
called in between (as a paced sender would) or from its own thread, as the runtime does.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fixtures.speech import SpeechScenario, build_scenario
from webrtc_ref.outputs import AdditionalOutputs
from webrtc_ref.pause_detection import get_silero_model
from webrtc_ref.reply_on_pause import (
    AlgoOptions,
    ReplyOnPause,
    TurnInfo,
    is_async_callable,
    refine_speech_edges,
)

FRAME = (24000, np.zeros((1, 480), dtype=np.int16))
#: Tolerance on the utterance handed to fn against the manifest.
DURATION_TOLERANCE_S = 0.05
#: End of speech -> decision, upper bound for the defaults (measured p95 0.51 s).
MAX_DECISION_LATENCY_S = 0.6


@functools.cache
def scenario(name: str, rate: int = 48000) -> SpeechScenario:
    return build_scenario(name, rate)


def utterance_spans(sc: SpeechScenario) -> list[tuple[float, float]]:
    """(first speech start, end of speech) of each expected turn."""
    spans, previous = [], -1.0
    for end in sc.expected_turn_ends:
        start = min(s.start_s for s in sc.speech_segments() if previous < s.start_s < end)
        spans.append((start, end))
        previous = end
    return spans


class FakeContext:
    """Stands in for the runtime's HandlerContext; records what the handler asked for."""

    webrtc_id = "test-connection"

    def __init__(self, handler: ReplyOnPause) -> None:
        self.handler = handler
        self.messages: list[dict[str, Any]] = []
        self.clears: list[float] = []
        self.requests = 0
        #: Called on each request; returns the inputs to deliver, or None to stay silent.
        self.inputs: Callable[[], list[Any] | None] | None = None
        handler._attach(self)

    def request_inputs(self) -> None:
        self.requests += 1
        values = self.inputs() if self.inputs else None
        if values is not None:
            self.handler.set_args(values)

    def send_message(self, message: str | dict[str, Any]) -> None:
        # the handler hands over the data channel's text (JSON for dicts)
        self.messages.append(json.loads(message) if isinstance(message, str) else message)

    def clear_output(self) -> None:
        self.clears.append(time.monotonic())

    def report_error(self, where: str, exc: BaseException) -> str:
        """As the runtime does for an app launched with show_error=True."""
        logging.getLogger("webrtc_ref.fake_context").error("error in %s", where, exc_info=exc)
        message = f"{type(exc).__name__}: {exc}"
        self.send_message({"type": "error", "message": message})
        return message

    def errors(self) -> list[str]:
        return [m["message"] for m in self.messages if m.get("type") == "error"]


@dataclass
class Calls:
    """What fn received."""

    audio: list[tuple[int, np.ndarray]] = field(default_factory=list)
    args: list[tuple[Any, ...]] = field(default_factory=list)


@dataclass
class Result:
    turns: list[TurnInfo]
    items: list[Any]
    context: FakeContext


def drive(
    handler: ReplyOnPause,
    audio: np.ndarray,
    rate: int = 48000,
    *,
    emits_per_frame: int | None = None,
    context: FakeContext | None = None,
    on_frame: Callable[[int], None] | None = None,
) -> Result:
    """Feed ``audio`` in 20 ms blocks; after each, emit until the reply ends (or
    ``emits_per_frame`` times, like a sender pacing one 20 ms frame per block)."""
    ctx = context or FakeContext(handler)
    handler.idle_wait_s = 0.0
    turns: list[TurnInfo] = []
    items: list[Any] = []
    block = rate // 50 * (2 if audio.ndim == 2 else 1)
    flat = audio.reshape(-1)
    for i, k in enumerate(range(0, flat.size, block)):
        last = handler.last_turn
        handler.receive((rate, flat[k : k + block].reshape(1, -1)))
        if handler.last_turn is not last and handler.last_turn is not None:
            turns.append(handler.last_turn)
        if on_frame:
            on_frame(i)
        n = 0
        while handler.state != "listening" and (emits_per_frame is None or n < emits_per_frame):
            item = handler.emit()
            n += 1
            if item is not None:
                items.append(item)
    return Result(turns, items, ctx)


def recording_fn(calls: Calls, *, extra_inputs: bool = False) -> Callable[..., Any]:
    """A reply fn recording what it gets; with ``extra_inputs`` it takes ``*args``."""

    def fn(audio: tuple[int, np.ndarray]) -> Any:
        calls.audio.append(audio)
        yield FRAME

    def fn_with_inputs(audio: tuple[int, np.ndarray], *args: Any) -> Any:
        calls.audio.append(audio)
        calls.args.append(args)
        yield FRAME

    return fn_with_inputs if extra_inputs else fn


# --------------------------------------------------------------------------- fixtures


@pytest.mark.parametrize("name", ["speech_pause_speech", "hesitations", "speech_then_silence"])
def test_a_turn_fires_once_per_pause_with_the_full_utterance(name: str) -> None:
    sc = scenario(name)
    calls = Calls()
    result = drive(ReplyOnPause(recording_fn(calls)).copy(), sc.audio)
    spans = utterance_spans(sc)
    assert len(result.turns) == len(spans), [t.decided_at_s for t in result.turns]
    assert len(calls.audio) == len(spans)
    assert result.items == [FRAME] * len(spans)
    for turn, (rate, audio), (start, end) in zip(result.turns, calls.audio, spans, strict=True):
        assert rate == 48000
        assert audio.dtype == np.int16
        assert audio.ndim == 2 and audio.shape[0] == 1
        duration = audio.shape[1] / rate
        assert abs(duration - (end - start)) <= DURATION_TOLERANCE_S, (
            f"fn got {duration:.3f} s, manifest utterance {end - start:.3f} s ({start}-{end})"
        )
        assert turn.reason == "pause"
        assert end <= turn.decided_at_s <= end + MAX_DECISION_LATENCY_S, (
            f"decided at {turn.decided_at_s:.3f} s for end of speech {end:.3f} s"
        )
        # The audio really is the utterance: it matches the fixture sample for sample.
        i0 = round(turn.start_s * rate)
        np.testing.assert_array_equal(audio[0], sc.audio[i0 : i0 + audio.shape[1]])


def test_hesitations_do_not_end_the_turn() -> None:
    sc = scenario("hesitations")
    result = drive(ReplyOnPause(recording_fn(Calls())), sc.audio)
    assert [t.decided_at_s > sc.expected_turn_ends[0] for t in result.turns] == [True]


@pytest.mark.parametrize("name", ["noise_only", "tone_only"])
def test_noise_and_tone_never_start_a_turn(name: str) -> None:
    calls = Calls()
    result = drive(ReplyOnPause(recording_fn(calls)), scenario(name).audio)
    assert result.turns == []
    assert calls.audio == []


def test_chunked_mode_reproduces_the_anchor_algorithm() -> None:
    sc = scenario("speech_pause_speech")
    calls = Calls()
    handler = ReplyOnPause(recording_fn(calls), AlgoOptions(mode="chunked"))
    assert handler.algo_options.speech_threshold == 0.1
    result = drive(handler, sc.audio)
    assert len(result.turns) == 2
    for turn, end in zip(result.turns, sc.expected_turn_ends, strict=True):
        # Decisions on 0.6 s chunk boundaries, 0.5-1.2 s after the end of speech.
        assert end + 0.4 <= turn.decided_at_s <= end + 1.2
        assert round(turn.decided_at_s * 1000) % 600 == 0
        # fn gets whole chunks: from the first speech chunk to the pause chunk included.
        assert turn.end_s == turn.decided_at_s
    assert all(a.shape[1] % 28800 == 0 for _, a in calls.audio)


def test_16k_input() -> None:
    sc = scenario("speech_then_silence", 16000)
    calls = Calls()
    result = drive(ReplyOnPause(recording_fn(calls), input_sample_rate=16000), sc.audio, 16000)
    ((start, end),) = utterance_spans(sc)
    assert len(result.turns) == 1
    rate, audio = calls.audio[0]
    assert rate == 16000
    assert abs(audio.shape[1] / 16000 - (end - start)) <= DURATION_TOLERANCE_S


def test_stereo_is_downmixed_for_the_vad_and_handed_to_fn_planar() -> None:
    sc = scenario("speech_then_silence")
    left = sc.audio
    right = (sc.audio // 2).astype(np.int16)
    stereo = np.stack([left, right], axis=1)  # (N, 2) -> interleaved blocks of (1, 2n)
    calls = Calls()
    result = drive(ReplyOnPause(recording_fn(calls), expected_layout="stereo"), stereo)
    ((start, end),) = utterance_spans(sc)
    assert len(result.turns) == 1
    _, audio = calls.audio[0]
    assert audio.shape[0] == 2
    assert abs(audio.shape[1] / 48000 - (end - start)) <= DURATION_TOLERANCE_S
    i0 = round(result.turns[0].start_s * 48000)
    np.testing.assert_array_equal(audio[0], left[i0 : i0 + audio.shape[1]])
    np.testing.assert_array_equal(audio[1], right[i0 : i0 + audio.shape[1]])


# --------------------------------------------------------------------------- extra inputs


def test_extra_inputs_are_fetched_afresh_every_turn() -> None:
    sc = scenario("speech_pause_speech")
    values = iter([["first", 1], ["second", 2]])

    def fn(audio: tuple[int, np.ndarray], name: str, count: int) -> Any:
        yield AdditionalOutputs(name, count, audio[1].shape[1])

    handler = ReplyOnPause(fn)
    assert handler.needs_args
    ctx = FakeContext(handler)
    ctx.inputs = lambda: next(values)
    result = drive(handler, sc.audio, context=ctx)
    assert ctx.requests == 2
    assert [item.args[:2] for item in result.items] == [("first", 1), ("second", 2)]
    assert handler.latest_args[0] == "__webrtc_value__"


def test_extra_inputs_arriving_later_from_another_thread() -> None:
    sc = scenario("speech_then_silence")
    calls = Calls()
    handler = ReplyOnPause(recording_fn(calls, extra_inputs=True))
    ctx = FakeContext(handler)
    ctx.inputs = lambda: threading.Timer(0.05, handler.set_args, [["late"]]).start()
    result = drive(handler, sc.audio, context=ctx)
    assert calls.args == [("late",)]
    assert result.items == [FRAME]


def test_inputs_that_never_come_fail_the_turn_with_a_clear_error() -> None:
    sc = scenario("speech_pause_speech")
    calls = Calls()
    handler = ReplyOnPause(recording_fn(calls, extra_inputs=True), args_timeout=0.2)
    ctx = FakeContext(handler)
    answers = iter([None, ["ok"]])  # the browser ignores the first tick, answers the second
    ctx.inputs = lambda: next(answers)
    t0 = time.monotonic()
    result = drive(handler, sc.audio, context=ctx)
    assert time.monotonic() - t0 < 5
    assert len(result.turns) == 2
    (error,) = ctx.errors()
    assert error.startswith("TimeoutError: ")
    assert "0.2 s" in error
    assert calls.args == [("ok",)]  # the second turn worked


# --------------------------------------------------------------------------- kinds of fn


def _gen(audio: tuple[int, np.ndarray], *, n: int = 2) -> Any:
    for _ in range(n):
        yield FRAME


async def _agen(audio: tuple[int, np.ndarray], *, n: int = 2) -> Any:
    for _ in range(n):
        await asyncio.sleep(0)
        yield FRAME


class _AsyncCallable:
    async def __call__(self, audio: tuple[int, np.ndarray]) -> Any:
        yield FRAME
        yield AdditionalOutputs("done")


class _SyncCallable:
    def __call__(self, audio: tuple[int, np.ndarray]) -> Any:
        yield (FRAME, AdditionalOutputs("both"))


async def _coroutine(audio: tuple[int, np.ndarray]) -> Any:
    await asyncio.sleep(0)
    return FRAME


FN_KINDS: dict[str, tuple[Callable[..., Any], list[Any], bool]] = {
    "generator": (_gen, [FRAME, FRAME], False),
    "async generator": (_agen, [FRAME, FRAME], True),
    "partial of generator": (functools.partial(_gen, n=3), [FRAME] * 3, False),
    "partial of async generator": (functools.partial(_agen, n=1), [FRAME], True),
    "callable object, async generator": (
        _AsyncCallable(),
        [FRAME, AdditionalOutputs("done")],
        True,
    ),
    "callable object, generator": (_SyncCallable(), [(FRAME, AdditionalOutputs("both"))], False),
    "function returning one item": (lambda audio: FRAME, [FRAME], False),
    "async function returning one item": (_coroutine, [FRAME], True),
    "function returning None": (lambda audio: None, [], False),
    "function returning an iterator": (lambda audio: iter([FRAME, FRAME]), [FRAME, FRAME], False),
}


@pytest.mark.parametrize("kind", list(FN_KINDS))
def test_every_kind_of_fn_replies(kind: str) -> None:
    fn, expected, is_async = FN_KINDS[kind]
    handler = ReplyOnPause(fn)
    assert is_async_callable(fn) is is_async
    result = drive(handler, scenario("speech_then_silence").audio)
    assert len(result.turns) == 1
    assert result.items == expected
    assert result.context.errors() == []
    assert handler.state == "listening"
    handler.shutdown()


# --------------------------------------------------------------------------- errors


def _fails_first_time(kind: str) -> Callable[..., Any]:
    calls = {"n": 0}

    def gen(audio: tuple[int, np.ndarray]) -> Any:
        calls["n"] += 1
        yield FRAME
        if calls["n"] == 1:
            raise ValueError("boom")

    async def agen(audio: tuple[int, np.ndarray]) -> Any:
        calls["n"] += 1
        yield FRAME
        if calls["n"] == 1:
            raise ValueError("boom")

    def plain(audio: tuple[int, np.ndarray]) -> Any:
        calls["n"] += 1
        if calls["n"] == 1:
            raise ValueError("boom")
        return FRAME

    return {"generator": gen, "async generator": agen, "plain function": plain}[kind]


@pytest.mark.parametrize("kind", ["generator", "async generator", "plain function"])
def test_an_error_in_fn_ends_that_turn_and_the_next_turn_works(
    kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    handler = ReplyOnPause(_fails_first_time(kind))
    with caplog.at_level(logging.ERROR, logger="webrtc_ref"):
        result = drive(handler, scenario("speech_pause_speech").audio)
    assert len(result.turns) == 2
    assert result.context.errors() == ["ValueError: boom"]
    assert result.items[-1] == FRAME  # the second turn replied
    # One frame per call of the generators (the first then raises); one from the plain fn.
    assert result.items.count(FRAME) == (2 if kind != "plain function" else 1)
    (record,) = [r for r in caplog.records if r.exc_info]
    assert record.name.startswith("webrtc_ref")
    assert record.exc_info[0] is ValueError


class _BrokenStream:
    sample_rate = 16000
    window_samples = 512

    def process(self, samples: np.ndarray) -> list[float]:
        raise RuntimeError("kaput")

    def reset(self) -> None:
        pass


class _BrokenModel:
    def vad(self, audio: Any, options: Any) -> tuple[float, list[Any]]:
        raise RuntimeError("kaput")

    def warmup(self) -> None:
        pass

    def new_stream(self) -> _BrokenStream:
        return _BrokenStream()


@pytest.mark.parametrize("mode", ["streaming", "chunked"])
def test_a_failing_detector_is_reported_once_and_never_hangs(mode: str) -> None:
    handler = ReplyOnPause(_gen, AlgoOptions(mode=mode), model=_BrokenModel())
    result = drive(handler, scenario("speech_then_silence").audio)
    assert result.turns == []
    assert result.context.errors() == ["RuntimeError: kaput"]
    assert handler.emit() is None


# --------------------------------------------------------------------------- barge-in


def test_new_speech_interrupts_the_reply_when_can_interrupt() -> None:
    sc = scenario("speech_pause_speech")
    calls = Calls()
    closed: list[int] = []
    frame_of_clear: list[int] = []

    def endless(audio: tuple[int, np.ndarray]) -> Any:
        calls.audio.append(audio)
        try:
            while True:
                yield FRAME
        finally:
            closed.append(len(calls.audio))

    handler = ReplyOnPause(endless, can_interrupt=True)
    ctx = FakeContext(handler)

    def watch(i: int) -> None:
        if ctx.clears and not frame_of_clear:
            frame_of_clear.append(i)

    result = drive(handler, sc.audio, emits_per_frame=1, context=ctx, on_frame=watch)
    second_start = sc.speech_segments()[1].start_s
    (clear_at,) = frame_of_clear
    # Barge-in needs started_talking_threshold (0.2 s) of speech; then the queue is cleared
    # in the same receive() call, and the generator is closed by the next emit().
    assert second_start + 0.2 <= (clear_at + 1) * 0.02 <= second_start + 0.35
    assert closed[0] == 1
    assert len(ctx.clears) >= 2  # once at the decision, once after closing the generator
    # The interrupting speech is the next utterance, in full.
    assert len(result.turns) == 2
    (start, end) = utterance_spans(sc)[1]
    assert abs(calls.audio[1][1].shape[1] / 48000 - (end - start)) <= DURATION_TOLERANCE_S
    handler.shutdown()
    assert closed == [1, 2]


def test_speech_during_a_reply_is_ignored_by_default() -> None:
    sc = scenario("speech_pause_speech")
    emitted = {"n": 0}

    def long_reply(audio: tuple[int, np.ndarray]) -> Any:
        for _ in range(200):  # 4 s of 20 ms frames: outlasts the second utterance
            emitted["n"] += 1
            yield FRAME

    handler = ReplyOnPause(long_reply)
    result = drive(handler, sc.audio, emits_per_frame=1)
    assert result.context.clears == []
    assert len(result.turns) == 1  # the second utterance arrived while replying: dropped
    assert emitted["n"] == 200


def test_barge_in_cancels_an_awaiting_async_reply_within_100_ms() -> None:
    sc = scenario("speech_pause_speech")
    first_item = threading.Event()
    closed = threading.Event()

    async def slow(audio: tuple[int, np.ndarray]) -> Any:
        try:
            yield FRAME
            first_item.set()
            await asyncio.sleep(30)  # a slow model
            yield FRAME
        finally:
            closed.set()

    handler = ReplyOnPause(slow, can_interrupt=True)
    ctx = FakeContext(handler)
    stop = threading.Event()
    emitter = threading.Thread(target=lambda: [handler.emit() for _ in iter(stop.is_set, True)])
    emitter.start()
    try:
        block = 960
        clear_wall: float | None = None
        for k in range(0, sc.audio.size, block):
            handler.receive((48000, sc.audio[k : k + block].reshape(1, -1)))
            if handler.last_turn is not None and not first_item.is_set():
                assert first_item.wait(5), "the reply never started"
            if ctx.clears and clear_wall is None:
                clear_wall = ctx.clears[0]
                assert closed.wait(1)
                assert time.monotonic() - clear_wall < 0.1
                break
        assert clear_wall is not None, "no barge-in"
    finally:
        stop.set()
        handler.shutdown()
        emitter.join(2)
    assert not emitter.is_alive()


# --------------------------------------------------------------------------- max speech


def test_max_continuous_speech_forces_a_turn() -> None:
    sc = scenario("speech_then_silence")
    calls = Calls()
    handler = ReplyOnPause(recording_fn(calls), AlgoOptions(max_continuous_speech_s=1.0))
    result = drive(handler, sc.audio)
    first = result.turns[0]
    assert first.reason == "max_speech"
    assert 1.0 <= first.duration_s <= 1.0 + 0.04
    assert calls.audio[0][1].shape[1] == round(first.duration_s * 48000)
    # The rest of the 2.2 s sentence makes more turns, the last one no later than a pause.
    assert len(result.turns) >= 2
    assert result.turns[-1].decided_at_s <= sc.expected_turn_ends[0] + MAX_DECISION_LATENCY_S
    for turn in result.turns:
        assert turn.duration_s <= 1.0 + 0.04


# --------------------------------------------------------------------------- threads


def test_receive_and_emit_on_their_own_threads() -> None:
    sc = scenario("speech_pause_speech")
    calls = Calls()
    handler = ReplyOnPause(recording_fn(calls))
    FakeContext(handler)
    items: list[Any] = []
    stop = threading.Event()

    def emit_loop() -> None:
        while not stop.is_set():
            item = handler.emit()
            if item is not None:
                items.append(item)

    emitter = threading.Thread(target=emit_loop)
    emitter.start()
    try:
        for k in range(0, sc.audio.size, 960):
            handler.receive((48000, sc.audio[k : k + 960].reshape(1, -1)))
            deadline = time.monotonic() + 2
            while handler.state != "listening" and time.monotonic() < deadline:
                time.sleep(0.001)  # the runtime would keep receiving; wait to stay in order
    finally:
        stop.set()
        emitter.join(2)
        handler.shutdown()
    assert items == [FRAME, FRAME]
    spans = utterance_spans(sc)
    durations = [a.shape[1] / 48000 for _, a in calls.audio]
    for d, (start, end) in zip(durations, spans, strict=True):
        assert abs(d - (end - start)) <= DURATION_TOLERANCE_S


def test_idle_emit_returns_none_promptly_and_shutdown_wakes_it() -> None:
    handler = ReplyOnPause(_gen)
    t0 = time.monotonic()
    assert handler.emit() is None
    assert time.monotonic() - t0 < 0.1  # waits at most idle_wait_s (20 ms)

    handler.idle_wait_s = 30
    returned = threading.Event()
    thread = threading.Thread(target=lambda: (handler.emit(), returned.set()))
    thread.start()
    time.sleep(0.05)
    t0 = time.monotonic()
    handler.shutdown()
    assert returned.wait(1)
    assert time.monotonic() - t0 < 0.2
    thread.join()
    handler.receive((48000, np.zeros((1, 960), np.int16)))  # no-op after shutdown
    assert handler.emit() is None


def test_shutdown_during_an_awaiting_async_reply_closes_it() -> None:
    started, closed = threading.Event(), threading.Event()

    async def slow(audio: tuple[int, np.ndarray]) -> Any:
        try:
            started.set()
            await asyncio.sleep(30)
            yield FRAME
        finally:
            closed.set()

    handler = ReplyOnPause(slow)
    FakeContext(handler)
    handler.idle_wait_s = 0
    for k in range(0, scenario("speech_then_silence").audio.size, 960):
        handler.receive((48000, scenario("speech_then_silence").audio[k : k + 960].reshape(1, -1)))
        if handler.state != "listening":
            break
    thread = threading.Thread(target=handler.emit)
    thread.start()
    assert started.wait(2)
    handler.shutdown()
    thread.join(1)
    assert not thread.is_alive()
    assert closed.is_set()


# --------------------------------------------------------------------------- construction


def test_copy_shares_the_model_and_options_but_not_the_state() -> None:
    original = ReplyOnPause(_gen, AlgoOptions(max_continuous_speech_s=9), can_interrupt=True)
    copy = original.copy()
    assert copy is not original
    assert type(copy) is ReplyOnPause
    assert copy.fn is original.fn
    assert copy.model is original.model is get_silero_model()
    assert copy.algo_options == original.algo_options
    assert copy.model_options == original.model_options
    assert copy.can_interrupt
    assert (copy.output_sample_rate, copy.output_frame_size, copy.input_sample_rate) == (
        24000,
        480,
        48000,
    )
    drive(copy, scenario("speech_then_silence").audio)
    assert copy.last_turn is not None
    assert original.last_turn is None


def test_algo_options_defaults() -> None:
    chunked = AlgoOptions(mode="chunked")
    assert (
        chunked.audio_chunk_duration,
        chunked.started_talking_threshold,
        chunked.speech_threshold,
        chunked.max_continuous_speech_s,
    ) == (0.6, 0.2, 0.1, 60.0)
    streaming = AlgoOptions()
    assert streaming.mode == "streaming"
    assert (streaming.audio_chunk_duration, streaming.speech_threshold) == (0.6, 0.2)
    assert AlgoOptions(speech_threshold=0.1).speech_threshold == 0.1


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"audio_chunk_duration": 0}, "audio_chunk_duration must be a finite number > 0"),
        ({"started_talking_threshold": 0.6}, "started_talking_threshold must be >= 0 and less"),
        ({"speech_threshold": 0}, "speech_threshold must be > 0"),
        ({"speech_threshold": "0.1"}, "speech_threshold must be a number"),
        ({"max_continuous_speech_s": -1}, "max_continuous_speech_s must be > 0"),
        ({"mode": "fast"}, "mode must be 'streaming' or 'chunked'"),
    ],
)
def test_algo_options_reject_bad_values(kwargs: dict[str, Any], needle: str) -> None:
    with pytest.raises(ValueError) as info:
        AlgoOptions(**kwargs)
    assert needle in str(info.value)
    assert repr(next(iter(kwargs.values()))) in str(info.value)


class _ChunkedOnlyModel:
    """A fastrtc-style PauseDetectionModel: vad() and warmup(), no new_stream()."""

    def vad(self, audio: Any, options: Any) -> tuple[float, list[Any]]:
        return get_silero_model().vad(audio, options)

    def warmup(self) -> None:
        pass


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "needle"),
    [
        (("not callable",), {}, TypeError, "fn must be callable"),
        ((lambda: None,), {}, TypeError, "first positional argument"),
        ((_gen, {"speech_threshold": 0.1}), {}, TypeError, "algo_options must be an AlgoOptions"),
        ((_gen, None, {"threshold": 0.5}), {}, TypeError, "model_options must be a SileroVad"),
        ((_gen,), {"model": object()}, TypeError, "model must implement PauseDetectionModel"),
        ((_gen,), {"model": _ChunkedOnlyModel()}, ValueError, "has no new_stream()"),
        ((_gen,), {"can_interrupt": "yes"}, TypeError, "can_interrupt must be a bool"),
        ((_gen,), {"args_timeout": 0}, ValueError, "args_timeout must be a finite number"),
        ((_gen,), {"expected_layout": "5.1"}, ValueError, "expected_layout must be one of"),
        ((_gen,), {"input_sample_rate": 44101}, ValueError, "input_sample_rate must be"),
    ],
)
def test_bad_arguments_fail_at_construction(
    args: tuple[Any, ...], kwargs: dict[str, Any], error: type[Exception], needle: str
) -> None:
    with pytest.raises(error) as info:
        ReplyOnPause(*args, **kwargs)
    assert needle in str(info.value)


def test_a_fastrtc_style_model_drives_chunked_mode() -> None:
    calls = Calls()
    handler = ReplyOnPause(
        recording_fn(calls), AlgoOptions(mode="chunked"), model=_ChunkedOnlyModel()
    )
    result = drive(handler, scenario("speech_pause_speech").audio)
    assert len(result.turns) == 2


# --------------------------------------------------------------------------- edges


def test_refine_speech_edges_finds_the_signal_inside_coarse_vad_edges() -> None:
    rate = 48000
    x = np.zeros(rate * 2, np.int16)
    x[24000:72000] = 8000  # speech from 0.5 s to 1.5 s
    start, end = refine_speech_edges(x, 22000, 78000, rate)  # VAD: 0.458-1.625 s
    pad = round(0.01 * rate)
    assert abs(start - (24000 - pad)) <= 240
    assert abs(end - (72000 + pad)) <= 240
    # Nothing above the threshold near an edge: that edge stays.
    assert refine_speech_edges(np.zeros(rate, np.int16), 1000, 9000, rate) == (1000, 9000)


# --------------------------------------------------------------------------- interleavings


class _EnergyStream:
    """A stand-in detector: a 512-sample window is speech when its RMS exceeds 0.01."""

    sample_rate = 16000
    window_samples = 512

    def __init__(self) -> None:
        self._pending = np.zeros(0, np.float32)

    def process(self, samples: np.ndarray) -> list[float]:
        buf = np.concatenate([self._pending, np.asarray(samples, np.float32)])
        n = buf.size // 512
        windows = buf[: n * 512].reshape(n, 512)
        self._pending = buf[n * 512 :]
        return [1.0 if float(np.sqrt(np.mean(w * w))) > 0.01 else 0.0 for w in windows]

    def reset(self) -> None:
        self._pending = np.zeros(0, np.float32)


class _EnergyModel:
    def new_stream(self) -> _EnergyStream:
        return _EnergyStream()

    def vad(self, audio: Any, options: Any) -> tuple[float, list[Any]]:
        raise NotImplementedError

    def warmup(self) -> None:
        pass


@given(
    plan=st.lists(st.tuples(st.floats(0.3, 1.2), st.floats(0.05, 1.0)), min_size=1, max_size=5),
    emits=st.lists(st.integers(0, 3), min_size=1, max_size=50),
    reply_len=st.integers(1, 40),
    can_interrupt=st.booleans(),
    seed=st.integers(0, 2**16),
)
@settings(max_examples=40, deadline=None)
def test_any_interleaving_of_receive_and_emit_keeps_turns_consistent(
    plan: list[tuple[float, float]],
    emits: list[int],
    reply_len: int,
    can_interrupt: bool,
    seed: int,
) -> None:
    rate = 48000
    rng = np.random.default_rng(seed)
    parts = [np.zeros(rate // 4, np.int16)]
    for burst, gap in plan:
        parts.append((rng.standard_normal(round(burst * rate)) * 3000).astype(np.int16))
        parts.append(np.zeros(round(gap * rate), np.int16))
    parts.append(np.zeros(rate, np.int16))
    source = np.concatenate(parts)
    got: list[np.ndarray] = []

    def fn(audio: tuple[int, np.ndarray]) -> Any:
        got.append(audio[1][0])
        for _ in range(reply_len):
            yield FRAME

    handler = ReplyOnPause(fn, model=_EnergyModel(), can_interrupt=can_interrupt)
    ctx = FakeContext(handler)
    handler.idle_wait_s = 0.0
    turns: list[TurnInfo] = []
    for i, k in enumerate(range(0, source.size, 960)):
        last = handler.last_turn
        handler.receive((rate, source[k : k + 960].reshape(1, -1)))
        if handler.last_turn is not last and handler.last_turn is not None:
            turns.append(handler.last_turn)
        for _ in range(emits[i % len(emits)]):
            handler.emit()
    for _ in range(reply_len + 2):  # drain the last reply
        handler.emit()
    assert handler.state == "listening"
    assert len(got) <= len(turns) <= len(plan) * 4
    for turn in turns:
        assert 0 <= turn.start_s < turn.end_s <= turn.decided_at_s
    for audio in got:  # each utterance is an exact slice of what was received
        assert audio.size > 0
        starts = [round(t.start_s * rate) for t in turns]
        assert any(np.array_equal(source[s : s + audio.size], audio) for s in starts)
    if not can_interrupt:
        assert ctx.clears == []
    handler.shutdown()


# --------------------------------------------------------------------------- runtime


@pytest.mark.slow
async def test_first_reply_audio_leaves_the_outbound_track_within_600_ms() -> None:
    """Real time through HandlerRunner and OutboundAudioTrack (no network): ~7 s."""
    from conformance.bench.replay import replay_through_runtime

    run = await replay_through_runtime(scenario("speech_then_silence"))
    assert run.errors == []
    ((latency,),) = [run.latencies]
    assert 0.3 < latency <= MAX_DECISION_LATENCY_S, f"{latency * 1000:.0f} ms"


class _AlwaysSpeechStream:
    """A detector that hears speech in every window (music, a noisy room)."""

    sample_rate = 16000
    window_samples = 512

    def __init__(self) -> None:
        self._pending = 0

    def process(self, samples: np.ndarray) -> list[float]:
        self._pending += len(samples)
        count, self._pending = divmod(self._pending, self.window_samples)
        return [1.0] * count

    def reset(self) -> None:
        self._pending = 0


class _AlwaysSpeechModel:
    def vad(self, audio: Any, options: Any) -> tuple[float, list[Any]]:
        rate, samples = audio
        return samples.shape[-1] / rate, []

    def warmup(self) -> None:
        pass

    def new_stream(self) -> _AlwaysSpeechStream:
        return _AlwaysSpeechStream()


def test_ten_minutes_without_a_pause_stay_bounded() -> None:
    """An input that never pauses: the default max_continuous_speech_s (60 s) forces a
    turn every minute, so the utterance buffer never holds more than about 60 s of audio
    (5.8 MB at 48 kHz), however long it goes on (simulated time)."""
    calls = Calls()
    handler = ReplyOnPause(recording_fn(calls), model=_AlwaysSpeechModel())
    FakeContext(handler)
    handler.idle_wait_s = 0.0
    rng = np.random.default_rng(7)
    block = (rng.normal(0, 3000, 960 * 50)).astype(np.int16)  # 1 s of noise, reused
    held_max = 0
    for _ in range(600):  # seconds
        for k in range(50):
            handler.receive((48000, block[k * 960 : (k + 1) * 960].reshape(1, -1)))
            while handler.state != "listening":
                handler.emit()
        held = sum(samples.nbytes for _, samples in handler._frames)
        held_max = max(held_max, held)
    assert 9 <= len(calls.audio) <= 10, f"{len(calls.audio)} forced turns in 10 minutes"
    assert all(audio.shape[1] <= 60.05 * 48000 for _, audio in calls.audio)
    bound = 61 * 48000 * 2
    assert held_max <= bound, f"the utterance buffer held {held_max / 1e6:.1f} MB"


# --------------------------------------------------------------------------- fastrtc's API


def _turn_log(result: Result, marks: list[int]) -> list[tuple[str, float]]:
    """The turn events sent, each with the input time (s) of the block it followed."""
    out = []
    for index, message in enumerate(result.context.messages):
        if message.get("type") == "log":
            frame = next(i for i, count in enumerate(marks) if count > index)
            out.append((str(message["data"]), (frame + 1) * 0.02))
    return out


@pytest.mark.parametrize("name", ["speech_pause_speech", "speech_then_silence"])
def test_turn_events_arrive_in_order_at_the_speech_boundaries(name: str) -> None:
    """started_talking soon after speech starts, pause_detected after it ends, then
    response_starting and response_finished, once per turn, in fastrtc's format."""
    sc = scenario(name)
    handler = ReplyOnPause(recording_fn(Calls())).copy()
    ctx = FakeContext(handler)
    marks: list[int] = []
    result = drive(
        handler, sc.audio, context=ctx, on_frame=lambda i: marks.append(len(ctx.messages))
    )
    marks.append(len(ctx.messages))
    events = _turn_log(result, marks)
    spans = utterance_spans(sc)
    expected = ["started_talking", "pause_detected", "response_starting", "response_finished"]
    assert [e for e, _ in events] == expected * len(spans), events
    for k, (start, end) in enumerate(spans):
        talking, paused, starting, _ = (t for _, t in events[4 * k : 4 * k + 4])
        assert start <= talking <= start + 0.6, (talking, start)
        assert end <= paused <= end + MAX_DECISION_LATENCY_S, (paused, end)
        assert paused <= starting
    for message in ctx.messages:
        if message.get("type") == "log":
            assert set(message) == {"type", "data"}


def test_startup_fn_streams_a_greeting_before_anyone_speaks() -> None:
    greeting = (24000, np.full((1, 480), 7, dtype=np.int16))

    def startup() -> Any:
        yield greeting
        yield AdditionalOutputs("hello")

    handler = ReplyOnPause(recording_fn(Calls()), startup_fn=startup).copy()
    ctx = FakeContext(handler)
    assert handler.has_start_up
    handler.idle_wait_s = 0.0
    handler.start_up()
    assert handler.state == "replying"
    items = []
    while handler.state != "listening":
        item = handler.emit()
        if item is not None:
            items.append(item)
    assert items[0] is greeting and items[1] == AdditionalOutputs("hello")
    assert [m["data"] for m in ctx.messages if m["type"] == "log"] == [
        "response_starting",
        "response_finished",
    ]
    # a handler without startup_fn has no start-up work
    assert not ReplyOnPause(recording_fn(Calls())).has_start_up


def test_startup_fn_given_positionally_and_with_inputs() -> None:
    seen: list[tuple[Any, ...]] = []

    def startup(*args: Any) -> Any:
        seen.append(args)
        yield FRAME

    handler = ReplyOnPause(recording_fn(Calls()), startup, AlgoOptions()).copy()
    assert handler.startup_fn is startup and isinstance(handler.algo_options, AlgoOptions)
    ctx = FakeContext(handler)
    ctx.inputs = lambda: ["voice-a", 3]
    handler.start_up()
    assert handler.emit() == FRAME
    assert seen == [("voice-a", 3)]
    with pytest.raises(TypeError, match="startup_fn was given twice"):
        ReplyOnPause(recording_fn(Calls()), startup, startup_fn=startup)


def test_trigger_response_starts_a_turn_without_a_pause() -> None:
    calls = Calls()
    handler = ReplyOnPause(recording_fn(calls)).copy()
    FakeContext(handler)
    handler.idle_wait_s = 0.0
    silence = np.zeros((1, 960), dtype=np.int16)
    for _ in range(10):
        handler.receive((48000, silence))
    handler.trigger_response()
    assert handler.state == "pending"
    assert handler.last_turn is not None and handler.last_turn.reason == "trigger"
    assert handler.emit() == FRAME
    while handler.state != "listening":
        handler.emit()
    rate, audio = calls.audio[0]
    assert rate == 48000 and audio.shape == (1, 0) and audio.dtype == np.int16


def test_reset_drops_a_pending_turn_and_the_heard_audio() -> None:
    calls = Calls()
    handler = ReplyOnPause(recording_fn(calls)).copy()
    FakeContext(handler)
    handler.trigger_response()
    assert handler.state == "pending"
    handler.reset()
    assert handler.state == "listening"
    assert handler.emit() is None and calls.audio == []


def test_a_warning_from_fn_is_shown_and_only_the_turn_ends() -> None:
    from webrtc_ref.errors import Warning

    def fn(audio: Any) -> Any:
        yield FRAME
        raise Warning("speak up")

    handler = ReplyOnPause(fn).copy()
    ctx = FakeContext(handler)
    handler.idle_wait_s = 0.0
    handler.trigger_response()
    items = []
    while handler.state != "listening":
        if (item := handler.emit()) is not None:
            items.append(item)
    assert items == [FRAME]
    assert {"type": "warning", "message": "speak up", "data": "speak up"} in ctx.messages
    assert ctx.errors() == []


def test_a_webrtc_error_from_fn_ends_the_stream() -> None:
    from webrtc_ref.errors import WebRTCError

    def fn(audio: Any) -> Any:
        raise WebRTCError("the model is unavailable")
        yield FRAME

    handler = ReplyOnPause(fn).copy()
    FakeContext(handler)
    handler.trigger_response()
    with pytest.raises(WebRTCError, match="the model is unavailable"):
        while True:
            handler.emit()
