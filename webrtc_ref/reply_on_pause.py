"""``ReplyOnPause``: call a reply function each time the user stops talking.

Turn-taking sits on top of a pause detector (``webrtc_ref.pause_detection``; default: the
packaged Silero VAD). Two modes, chosen by ``AlgoOptions.mode``:

``"streaming"`` (default)
    Every VAD window (32 ms at 16 kHz) is classified speech / not speech (Silero's
    hysteresis: speech from ``threshold``, until the probability falls below
    ``threshold - 0.15``). A sliding window of the last ``audio_chunk_duration`` seconds
    (the whole VAD windows that fit: 18 windows = 0.576 s for 0.6 s) is re-evaluated after
    every VAD window, with gradio_webrtc's rule applied to it:

    - a turn **starts** when it holds more than ``started_talking_threshold`` s of speech;
    - a turn **ends** when it holds less than ``speech_threshold`` s of speech, i.e. after
      about ``audio_chunk_duration - speech_threshold`` s of silence. Streaming mode's
      default ``speech_threshold`` is 0.2 (12 silent windows = 0.384 s): on the espeak
      fixtures, 250 ms hesitations never end a turn (false turns begin at 0.288 s), and end of
      speech -> decision is p50 0.45 s / p95 0.51 s. gradio_webrtc's 0.1 (0.48 s of silence)
      gives p95 0.61 s, over the 0.6 s target. docs/reply-on-pause.md has the figures;
    - a turn is also forced after ``max_continuous_speech_s`` seconds.

    ``fn`` receives the utterance from the first speech window to the last one, with both
    edges refined on the signal level (``refine_speech_edges``): the speech, not the silence.

``"chunked"``
    gradio_webrtc 0.0.16's algorithm: audio is cut into ``audio_chunk_duration`` chunks, each
    scored with ``model.vad(chunk, model_options)`` (seconds of padded speech); a chunk with
    more than ``started_talking_threshold`` s starts the turn, a later one with less than
    ``speech_threshold`` s ends it; ``fn`` gets the whole chunks from the first speech chunk
    to the pause chunk included. Decisions every 0.6 s; latency 0.6-1.2 s.

Threads: the runtime calls ``receive`` on one worker thread and ``emit`` on another
(``webrtc_ref.handlers``). All shared state is guarded by one ``threading.Condition``; the
reply generator runs only on the emit thread (async ones on a private event loop driven
from it); ``emit`` waits at most ``idle_wait_s`` when nothing is ready and ``shutdown()``
wakes it.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import enum
import functools
import inspect
import logging
import math
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, cast

import numpy as np

from webrtc_ref.errors import Warning, WebRTCError, warning_message
from webrtc_ref.handlers import AudioLayout, StreamHandler
from webrtc_ref.pause_detection import (
    MonoResampler,
    PauseDetectionModel,
    SileroVADModel,
    SileroVadOptions,
    StreamingPauseDetectionModel,
    VadStream,
    downmix_interleaved,
    get_silero_model,
)

if TYPE_CHECKING:
    from numpy.typing import NDArray

__all__ = ["AlgoOptions", "ReplyOnPause", "SileroVadOptions", "TurnInfo", "refine_speech_edges"]

logger = logging.getLogger("webrtc_ref.reply_on_pause")

#: Audio kept before the first speech window of a turn (Silero flags onsets ~1 window late).
PRE_ROLL_S = 0.032
#: Streaming mode refines the utterance's edges on the signal's level within this distance
#: of the VAD's edges (Silero's probabilities lag speech by up to ~0.12 s at its end).
REFINE_SEARCH_S = 0.25
#: Level-analysis block for the refinement.
REFINE_BLOCK_S = 0.005
#: Padding added around the refined edges (never beyond the VAD's edges).
EDGE_PAD_S = 0.01
#: ``speech_threshold`` used by streaming mode when none is given (chunked mode: 0.1).
STREAMING_SPEECH_THRESHOLD = 0.2

Mode = Literal["streaming", "chunked"]


# --------------------------------------------------------------------------- options


#: Seconds of uninterrupted speech after which a turn is forced (see AlgoOptions).
DEFAULT_MAX_CONTINUOUS_SPEECH_S = 60.0


@dataclass
class AlgoOptions:
    """Turn-taking options; the first three are gradio_webrtc's, with its names and defaults.

    Attributes:
        audio_chunk_duration: seconds of audio over which speech is measured. Streaming mode:
            the length of the sliding window, re-evaluated every VAD window (32 ms). Chunked
            mode: the length of each scored chunk.
        started_talking_threshold: the user has started talking once the window holds more
            than this many seconds of speech.
        speech_threshold: after the user started talking, a window holding less than this
            many seconds of speech is a pause, and the turn ends. Default: 0.1 in chunked
            mode (gradio_webrtc's), 0.2 in streaming mode, where the sliding window makes
            that "at least 0.384 s of silence" (chosen by measurement: see
            docs/reply-on-pause.md). ``None`` is replaced by the mode's default.
        max_continuous_speech_s: force the turn after this many seconds since the user
            started talking, even without a pause. Default 60 s, which also bounds what one
            utterance holds in memory (about 6 MB at 48 kHz) when the input never pauses
            (music, noise); ``float("inf")`` for no limit, as gradio_webrtc and fastrtc.
        mode: ``"streaming"`` (default) or ``"chunked"`` (gradio_webrtc's 0.6 s chunks).

    Raises:
        ValueError: from ``__init__`` for values out of range (the message names the field,
            the value and what is allowed).
    """

    audio_chunk_duration: float = 0.6
    started_talking_threshold: float = 0.2
    speech_threshold: float | None = None
    max_continuous_speech_s: float = DEFAULT_MAX_CONTINUOUS_SPEECH_S
    mode: Mode = "streaming"

    def __post_init__(self) -> None:
        if self.mode not in ("streaming", "chunked"):
            raise ValueError(
                f"AlgoOptions.mode must be 'streaming' or 'chunked', got {self.mode!r}"
            )
        if self.speech_threshold is None:
            self.speech_threshold = STREAMING_SPEECH_THRESHOLD if self.mode == "streaming" else 0.1

        def number(name: str) -> float:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
                raise ValueError(f"AlgoOptions.{name} must be a number, got {value!r}")
            return float(value)

        chunk = number("audio_chunk_duration")
        if not 0 < chunk < math.inf:
            raise ValueError(
                f"AlgoOptions.audio_chunk_duration must be a finite number > 0 (seconds), "
                f"got {self.audio_chunk_duration!r}"
            )
        started = number("started_talking_threshold")
        if not 0 <= started < chunk:
            raise ValueError(
                "AlgoOptions.started_talking_threshold must be >= 0 and less than "
                f"audio_chunk_duration ({chunk!r} s), got {self.started_talking_threshold!r}"
            )
        speech = number("speech_threshold")
        if not 0 < speech <= chunk:
            raise ValueError(
                "AlgoOptions.speech_threshold must be > 0 and at most audio_chunk_duration "
                f"({chunk!r} s), got {self.speech_threshold!r}"
            )
        if not number("max_continuous_speech_s") > 0:
            raise ValueError(
                "AlgoOptions.max_continuous_speech_s must be > 0 (inf for no limit), "
                f"got {self.max_continuous_speech_s!r}"
            )


def _speech_threshold(algo: AlgoOptions) -> float:
    """``algo.speech_threshold``, which ``__post_init__`` has resolved to a number."""
    return float(cast(float, algo.speech_threshold))


@dataclass(frozen=True)
class TurnInfo:
    """What the detector decided for one turn (times in seconds of received audio).

    Attributes:
        index: 0 for the connection's first turn, then 1, 2, ...
        start_s / end_s: the utterance handed to ``fn``.
        decided_at_s: the end of the input frame whose arrival ended the turn.
        reason: ``"pause"``, ``"max_speech"`` (``max_continuous_speech_s`` reached) or
            ``"trigger"`` (``trigger_response()``).
    """

    index: int
    start_s: float
    end_s: float
    decided_at_s: float
    reason: Literal["pause", "max_speech", "trigger"]

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s


# --------------------------------------------------------------------------- detectors


@dataclass
class _SpeechStarted:
    start: int  # input sample index where the utterance starts


@dataclass
class _TurnEnded:
    start: int
    end: int
    reason: Literal["pause", "max_speech"]
    refine: bool = False  # streaming: edges come from VAD windows; refine them on the level


_Event = _SpeechStarted | _TurnEnded


class _StreamingDetector:
    """Sliding-window turn detection over per-window VAD decisions (see module docstring).

    ``feed(mono, end)`` takes the next mono int16 block, whose last sample has index
    ``end - 1`` in input samples, and returns the events it caused. Single-threaded.
    """

    def __init__(
        self,
        model: StreamingPauseDetectionModel,
        algo: AlgoOptions,
        model_options: Any,
        in_rate: int,
        base: int,
    ) -> None:
        self._stream: VadStream = model.new_stream()
        rate = self._stream.sample_rate
        self._resampler = MonoResampler(in_rate, rate)
        self._win_s = self._stream.window_samples / rate
        self._win_in = self._stream.window_samples * in_rate / rate  # input samples per window
        # The whole VAD windows that fit in audio_chunk_duration (0.6 s -> 18 windows, 0.576 s).
        self._ring_len = max(1, math.floor(algo.audio_chunk_duration / self._win_s + 1e-9))
        threshold = getattr(model_options, "threshold", 0.5)
        self._threshold = float(threshold)
        self._neg_threshold = max(self._threshold - 0.15, 0.01)
        self._started_windows = algo.started_talking_threshold / self._win_s
        self._pause_windows = _speech_threshold(algo) / self._win_s
        self._max_speech = algo.max_continuous_speech_s * in_rate
        self._pre_roll = round(PRE_ROLL_S * in_rate)
        self.history_samples = round((algo.audio_chunk_duration + REFINE_SEARCH_S + 0.05) * in_rate)
        self._base = base
        self._k = 0
        self._ring: collections.deque[tuple[int, bool]] = collections.deque()
        self._count = 0
        self._speech = False
        self._talking = False
        self._armed = False  # the window has held >= speech_threshold since the turn started
        self._utt_start = 0
        self._last_speech_end = 0

    @property
    def talking(self) -> bool:
        return self._talking

    def _window_start(self, k: int) -> int:
        return self._base + round(k * self._win_in)

    def feed(self, mono: NDArray[np.int16], end: int) -> list[_Event]:
        events: list[_Event] = []
        for prob in self._stream.process(self._resampler.process(mono)):
            k = self._k
            self._k += 1
            w_end = self._window_start(k + 1)
            if prob >= self._threshold:
                self._speech = True
            elif prob < self._neg_threshold:
                self._speech = False
            speech = self._speech
            self._ring.append((k, speech))
            self._count += speech
            if len(self._ring) > self._ring_len:
                self._count -= self._ring.popleft()[1]
            if not self._talking:
                if self._count > self._started_windows:
                    first = next(i for i, s in self._ring if s)
                    self._talking = True
                    self._utt_start = max(self._base, self._window_start(first) - self._pre_roll)
                    self._last_speech_end = w_end
                    events.append(_SpeechStarted(self._utt_start))
                continue
            if speech:
                self._last_speech_end = w_end
            # A speech_threshold above started_talking_threshold must not end a turn at once.
            self._armed = self._armed or self._count >= self._pause_windows
            if self._armed and self._count < self._pause_windows:
                events.append(_TurnEnded(self._utt_start, self._last_speech_end, "pause", True))
            elif w_end - self._utt_start >= self._max_speech:
                events.append(_TurnEnded(self._utt_start, w_end, "max_speech"))
            else:
                continue
            self._talking = False
            self._armed = False
            self._ring.clear()
            self._count = 0
        return events


class _ChunkedDetector:
    """gradio_webrtc 0.0.16's chunked algorithm on ``model.vad``: 0.6 s chunks, each scored
    whole; the turn starts above ``started_talking_threshold`` seconds of speech and ends
    on a chunk below ``speech_threshold``."""

    def __init__(
        self,
        model: PauseDetectionModel,
        algo: AlgoOptions,
        model_options: Any,
        in_rate: int,
        base: int,
    ) -> None:
        self._model = model
        self._options = model_options
        self._algo = algo
        self._rate = in_rate
        self._chunk = max(1, round(algo.audio_chunk_duration * in_rate))
        self._max_speech = algo.max_continuous_speech_s * in_rate
        self.history_samples = self._chunk + in_rate // 5
        self._buffer: list[NDArray[np.int16]] = []
        self._buffered = 0
        self._buf_start = base
        self._talking = False
        self._utt_start = 0

    @property
    def talking(self) -> bool:
        return self._talking

    def feed(self, mono: NDArray[np.int16], end: int) -> list[_Event]:
        self._buffer.append(mono)
        self._buffered += mono.size
        if self._buffered < self._chunk:
            return []
        chunk = np.concatenate(self._buffer)
        start, stop = self._buf_start, self._buf_start + chunk.size
        self._buffer, self._buffered, self._buf_start = [], 0, stop
        speech_s, _ = self._model.vad((self._rate, chunk), self._options)
        events: list[_Event] = []
        if not self._talking and speech_s > self._algo.started_talking_threshold:
            self._talking = True
            self._utt_start = start
            events.append(_SpeechStarted(start))
        if self._talking:
            if speech_s < _speech_threshold(self._algo):
                events.append(_TurnEnded(self._utt_start, stop, "pause"))
                self._talking = False
            elif stop - self._utt_start >= self._max_speech:
                events.append(_TurnEnded(self._utt_start, stop, "max_speech"))
                self._talking = False
        return events


_Detector = _StreamingDetector | _ChunkedDetector


def refine_speech_edges(
    mono: NDArray[np.int16], start: int, end: int, rate: int
) -> tuple[int, int]:
    """Refine an utterance ``[start, end)`` (sample indices into ``mono``) found by the VAD.

    Silero's windows are 32 ms and its probability stays high for up to ~0.12 s after speech
    ends, so VAD edges are coarse. The signal is cut in 5 ms blocks; the noise floor is the
    20th-percentile block level after ``end`` (the pause that ended the turn) and the
    threshold is the larger of floor + 12 dB and peak - 40 dB. The new start is the first
    block above threshold within ``REFINE_SEARCH_S`` before/after ``start``; the new end the
    last block above threshold within ``REFINE_SEARCH_S`` before ``end``; each is padded by
    ``EDGE_PAD_S``. An edge with no block above threshold is left as it was; the end never
    moves later and the start never moves after the end.
    """
    block = max(1, round(REFINE_BLOCK_S * rate))
    search = round(REFINE_SEARCH_S * rate)
    pad = round(EDGE_PAD_S * rate)
    n = mono.size
    start, end = max(0, min(start, n)), max(0, min(end, n))
    if end - start < block:
        return start, end
    lo = max(0, start - search)
    usable = (n - lo) // block * block
    if usable <= 0:
        return start, end
    x = mono[lo : lo + usable].astype(np.float64).reshape(-1, block)
    level = np.sqrt(np.mean(x * x, axis=1))
    edges = lo + np.arange(level.size) * block  # first sample of each block
    inside = (edges >= start) & (edges + block <= end)
    after = edges >= end
    if not inside.any():
        return start, end
    peak = float(level[inside].max())
    floor = float(np.percentile(level[after], 20)) if after.any() else 0.0
    threshold = max(floor * 10 ** (12 / 20), peak * 10 ** (-40 / 20), 1.0)
    loud = level > threshold
    head = loud & (edges >= start - search) & (edges < start + search) & (edges < end)
    tail = loud & (edges >= max(start, end - search)) & (edges + block <= end)
    new_start, new_end = start, end
    if head.any():
        new_start = max(lo, int(edges[np.argmax(head)]) - pad)
    if tail.any():
        last = int(edges[len(tail) - 1 - np.argmax(tail[::-1])])
        new_end = min(end, last + block + pad)
    if new_end <= new_start:
        return start, end
    return new_start, new_end


# --------------------------------------------------------------------------- fn adapter


def _unwrap(fn: Any) -> Any:
    while isinstance(fn, functools.partial):
        fn = fn.func
    return fn


def _takes_extra_inputs(fn: Callable[..., Any]) -> bool:
    """True if ``fn`` can take positional arguments after the audio (gradio_webrtc's rule:
    more than one parameter).

    Raises:
        TypeError: if ``fn`` cannot take the audio as a positional argument.
    """
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):  # builtins without a signature: audio only
        return False
    kinds = [p.kind for p in sig.parameters.values()]
    positional = [
        k
        for k in kinds
        if k in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    ]
    var = inspect.Parameter.VAR_POSITIONAL in kinds
    if not positional and not var:
        raise TypeError(
            f"fn must accept the audio (sample_rate, ndarray) as its first positional argument; "
            f"{fn!r} has signature {sig}"
        )
    return len(positional) > 1 or var


def _takes_any_inputs(fn: Callable[..., Any]) -> bool:
    """True if ``fn`` has positional parameters (or ``*args``): a ``startup_fn`` that
    does is called with the stream's other inputs."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return False
    return any(
        p.kind
        in (
            inspect.Parameter.POSITIONAL_ONLY,
            inspect.Parameter.POSITIONAL_OR_KEYWORD,
            inspect.Parameter.VAR_POSITIONAL,
        )
        for p in sig.parameters.values()
    )


#: The data-channel ``log`` messages ReplyOnPause sends (docs/protocol.md), in a turn's order.
TURN_EVENTS = ("started_talking", "pause_detected", "response_starting", "response_finished")


def is_async_callable(fn: Any) -> bool:
    """True if calling ``fn`` gives an async generator or a coroutine.

    Sees through ``functools.partial`` and callable objects (whose ``__call__`` is async).
    ``ReplyOnPause`` also inspects what ``fn`` returns, so this is advisory.
    """
    target = _unwrap(fn)
    if inspect.isasyncgenfunction(target) or inspect.iscoroutinefunction(target):
        return True
    call = getattr(type(target), "__call__", None)  # noqa: B004 - callable objects
    call = _unwrap(call)
    return bool(call and (inspect.isasyncgenfunction(call) or inspect.iscoroutinefunction(call)))


class _Reply:
    """One turn's running reply: steps ``fn``'s result on the emit thread.

    ``step()`` returns ``(item, done)``. Sync generators/iterators are advanced with
    ``next``; async generators and coroutines run on ``loop`` (private, driven from the
    calling thread with ``run_until_complete``) so ``cancel()`` can interrupt an ``await``
    from another thread. A plain return value is a single item; ``None`` is no item.
    """

    def __init__(self, result: Any, generation: int, loop_factory: Callable[[], Any]) -> None:
        self.generation = generation
        self._loop_factory = loop_factory
        self._task: asyncio.Task[Any] | None = None
        self._lock = threading.Lock()
        self._cancelled = False
        self._sync: Iterator[Any] | None = None
        self._async: AsyncIterator[Any] | None = None
        self._awaitable: Awaitable[Any] | None = None
        self._single: list[Any] = []
        if inspect.isasyncgen(result) or isinstance(result, AsyncIterator):
            self._async = result
        elif inspect.isawaitable(result):
            self._awaitable = result
        elif inspect.isgenerator(result) or isinstance(result, Iterator):
            self._sync = result
        elif result is not None:
            self._single = [result]

    def _run(self, coro: Awaitable[Any]) -> Any:
        loop: asyncio.AbstractEventLoop = self._loop_factory()
        with self._lock:
            task = loop.create_task(_as_coroutine(coro))
            self._task = task
            if self._cancelled:
                task.cancel()
        try:
            return loop.run_until_complete(task)
        finally:
            with self._lock:
                self._task = None

    def step(self) -> tuple[Any, bool]:
        if self._awaitable is not None:
            awaitable, self._awaitable = self._awaitable, None
            result = self._run(awaitable)
            if inspect.isasyncgen(result) or isinstance(result, AsyncIterator):
                self._async = result
            elif inspect.isgenerator(result) or isinstance(result, Iterator):
                self._sync = result
            else:
                return result, True
        if self._sync is not None:
            try:
                return next(self._sync), False
            except StopIteration:
                return None, True
        if self._async is not None:
            try:
                return self._run(self._async.__anext__()), False
            except StopAsyncIteration:
                return None, True
        if self._single:
            return self._single.pop(), True
        return None, True

    def cancel(self) -> None:
        """Interrupt a pending ``await`` (any thread). A running sync step cannot be stopped."""
        with self._lock:
            self._cancelled = True
            task = self._task
        if task is not None:
            with contextlib.suppress(RuntimeError):  # loop already closed
                task.get_loop().call_soon_threadsafe(task.cancel)

    def close(self) -> None:
        """Close the generator (emit thread, or any thread when nothing is stepping)."""
        if self._sync is not None:
            close = getattr(self._sync, "close", None)
            if close is not None:
                with contextlib.suppress(Exception):
                    close()
            self._sync = None
        if self._async is not None:
            agen, self._async = self._async, None
            aclose = getattr(agen, "aclose", None)
            if aclose is not None:
                try:
                    loop = self._loop_factory()
                    loop.run_until_complete(asyncio.wait_for(aclose(), timeout=1.0))
                except BaseException as exc:  # best effort, never propagate
                    logger.debug("closing the reply's async generator failed: %r", exc)
        if self._awaitable is not None:
            awaitable, self._awaitable = self._awaitable, None
            close = getattr(awaitable, "close", None)
            if close is not None:
                with contextlib.suppress(Exception):
                    close()


async def _as_coroutine(awaitable: Awaitable[Any]) -> Any:
    return await awaitable


# --------------------------------------------------------------------------- handler


class _Phase(enum.Enum):
    LISTENING = "listening"  # waiting for / inside an utterance
    PENDING = "pending"  # a turn ended; fetching inputs, about to call fn
    REPLYING = "replying"  # fn's reply is being emitted


@dataclass
class _Turn:
    audio: NDArray[np.int16]
    info: TurnInfo
    generation: int
    args_requested: bool = False
    args_deadline: float = 0.0


class ReplyOnPause(StreamHandler):
    """Call ``fn`` with everything the user said each time they pause, and stream its reply.

    Parameters:
        fn: called once per turn as ``fn((sample_rate, audio), *inputs)``. ``audio`` is the
            **entire** utterance since the user started talking, int16, shape ``(1, N)``
            (``(2, N)``, planar, with ``expected_layout="stereo"``); ``sample_rate`` is
            ``input_sample_rate``. If ``fn`` takes positional parameters after the audio
            (or ``*args``), ``inputs`` are the current values of the stream's other inputs,
            fetched afresh every turn (a ``"tick"``, then up to ``args_timeout`` s).
            ``fn`` may be a generator function, an async generator function, a partial or
            callable object of either (detected from what the call returns), or a plain or
            ``async`` function returning one item (``None``: no reply). Items are audio
            ``(rate, array)`` / ``(rate, array, layout)``, ``AdditionalOutputs``, or
            ``(audio, AdditionalOutputs)``; ``emit`` returns them unchanged.
        algo_options: turn-taking options (:class:`AlgoOptions`; default ``AlgoOptions()``).
        model_options: options of the detector (default model: ``SileroVadOptions``).
        expected_layout: as ``StreamHandler``; the defaults of this and the next three
            are gradio_webrtc's ReplyOnPause ones.
        output_sample_rate: as ``StreamHandler``.
        output_frame_size: as ``StreamHandler``.
        input_sample_rate: as ``StreamHandler``.
        model: the pause detector (default: the shared, packaged Silero VAD). Streaming mode
            needs a ``StreamingPauseDetectionModel`` (with ``new_stream()``); chunked mode
            only ``vad()`` (fastrtc's ``PauseDetectionModel``).
        can_interrupt: if True, speech during a reply (a new turn starting) stops the reply:
            the generator is closed (an async one is cancelled at its current ``await``) and
            queued reply audio is cleared (``clear_output``) at once. Default False: audio
            received while replying is ignored, as in gradio_webrtc.
        args_timeout: seconds to wait for the other inputs after asking for them; on expiry
            the turn fails with an error message instead of hanging.
        startup_fn: called once when the stream starts (``start_up``), with the stream's
            other inputs if it takes positional parameters; what it returns or yields is
            streamed like a reply (a greeting), and speech interrupts it as it would a
            reply. ``ReplyOnPause(fn, startup_fn)`` (positional, as some apps write it)
            works too.

    In an audio-video stream (``WebRTC(modality="audio-video")``) turn-taking runs on the
    audio; the camera's frames go back unchanged (override :meth:`video_emit` to draw on
    them) and ``fn`` reads the newest one as ``get_current_context().video_frame``.

    Turn events: the browser is sent ``{"type": "log", "data": EVENT}`` for each of
    :data:`TURN_EVENTS`: ``started_talking`` when speech starts, ``pause_detected`` when
    the turn ends, ``response_starting`` when ``fn``'s reply begins and
    ``response_finished`` when it ended (done, interrupted or failed).

    ``trigger_response()`` starts a turn now, with the audio received since the user
    started talking (an empty ``(1, 0)`` array if they did not); ``reset()`` drops the
    audio heard so far and any reply in progress.

    Raising or yielding :class:`~webrtc_ref.errors.Warning` from ``fn`` shows it (a raised
    one ends the turn); a :class:`~webrtc_ref.errors.WebRTCError` is shown and ends the
    stream; ``CloseStream`` ends the stream after the reply audio before it.

    Errors in ``fn`` end the turn: they are logged with their traceback and sent to the
    browser as ``{"type": "error", "message": "<ExcType>: <message>"}``; the next turn works.

    Raises:
        TypeError / ValueError: at construction, for arguments of the wrong type or value.
    """

    #: Longest time ``emit`` blocks when nothing is ready (seconds).
    idle_wait_s: float = 0.02

    def __init__(
        self,
        fn: Callable[..., Any],
        algo_options: AlgoOptions | None = None,
        model_options: SileroVadOptions | Any | None = None,
        expected_layout: AudioLayout = "mono",
        output_sample_rate: int = 24000,
        output_frame_size: int = 480,
        input_sample_rate: int = 48000,
        *,
        model: PauseDetectionModel | None = None,
        can_interrupt: bool = False,
        args_timeout: float = 5.0,
        startup_fn: Callable[..., Any] | None = None,
    ) -> None:
        if callable(algo_options) and not isinstance(algo_options, AlgoOptions):
            # fastrtc's positional order: ReplyOnPause(fn, startup_fn, algo_options,
            # model_options, can_interrupt, ...); the first three are taken that way.
            if startup_fn is not None:
                raise TypeError("startup_fn was given twice (second positional and keyword)")
            startup_fn = algo_options
            algo_options = model_options  # type: ignore[assignment]
            model_options = None if isinstance(expected_layout, str) else expected_layout
            if not isinstance(expected_layout, str):
                expected_layout = "mono"
        super().__init__(expected_layout, output_sample_rate, output_frame_size, input_sample_rate)
        self._video_cond = threading.Condition()
        self._video_frame: NDArray[np.uint8] | None = None
        if not callable(fn):
            raise TypeError(f"fn must be callable (a (async) generator function), got {fn!r}")
        if startup_fn is not None and not callable(startup_fn):
            raise TypeError(f"startup_fn must be callable or None, got {startup_fn!r}")
        if algo_options is None:
            algo_options = AlgoOptions()
        elif not isinstance(algo_options, AlgoOptions):
            raise TypeError(
                f"algo_options must be an AlgoOptions or None, got {type(algo_options).__name__}"
            )
        if model is None:
            model = get_silero_model()
        elif not callable(getattr(model, "vad", None)):
            raise TypeError(
                "model must implement PauseDetectionModel (a vad((rate, audio), options) "
                f"method), got {type(model).__name__}"
            )
        if algo_options.mode == "streaming" and not callable(getattr(model, "new_stream", None)):
            raise ValueError(
                f"model {type(model).__name__} has no new_stream(), which AlgoOptions(mode="
                "'streaming') needs; pass AlgoOptions(mode='chunked') to drive it with vad()"
            )
        if isinstance(model, SileroVADModel):
            if model_options is None:
                model_options = SileroVadOptions()
            elif not isinstance(model_options, SileroVadOptions):
                raise TypeError(
                    "model_options must be a SileroVadOptions or None for the Silero model, "
                    f"got {type(model_options).__name__}"
                )
        if not isinstance(can_interrupt, bool):
            raise TypeError(f"can_interrupt must be a bool, got {can_interrupt!r}")
        if (
            isinstance(args_timeout, bool)
            or not isinstance(args_timeout, (int, float))
            or not 0 < args_timeout < math.inf
        ):
            raise ValueError(
                f"args_timeout must be a finite number > 0 (seconds), got {args_timeout!r}"
            )

        self.fn = fn
        self.startup_fn = startup_fn
        self.algo_options = algo_options
        self.model_options = model_options
        self.model = model
        self.can_interrupt = can_interrupt
        self.args_timeout = float(args_timeout)
        self.needs_args = _takes_extra_inputs(fn)
        self.is_async = is_async_callable(fn)
        #: The last turn decided on this connection (None before the first).
        self.last_turn: TurnInfo | None = None

        self._cond = threading.Condition()
        self._phase = _Phase.LISTENING
        self._generation = 0
        self._closed = False
        self._stepping = False
        self._turn: _Turn | None = None
        self._reply: _Reply | None = None
        self._turn_count = 0
        # receive-thread state
        self._detector: _Detector | None = None
        self._detector_stale = False
        self._frames: collections.deque[tuple[int, NDArray[np.int16]]] = collections.deque()
        self._samples_in = 0
        self._vad_failed = False
        self._frame_rate: int | None = None
        # emit-thread state
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- StreamHandler ---------------------------------------------------------------
    def copy(self) -> ReplyOnPause:
        """A new handler with the same fn and options, sharing the model (one per connection)."""
        return type(self)(
            self.fn,
            self.algo_options,
            self.model_options,
            self.expected_layout,
            self.output_sample_rate,
            self.output_frame_size,
            self.input_sample_rate,
            model=self.model,
            can_interrupt=self.can_interrupt,
            args_timeout=self.args_timeout,
            startup_fn=self.startup_fn,
        )

    # -- audio-video -----------------------------------------------------------------
    def video_receive(self, frame: NDArray[np.uint8]) -> None:
        """In an audio-video stream: keep the newest camera frame for :meth:`video_emit`
        (turn-taking runs on the audio alone; the reply function reads the newest frame
        as ``get_current_context().video_frame``)."""
        with self._video_cond:
            self._video_frame = frame
            self._video_cond.notify_all()

    def video_emit(self) -> NDArray[np.uint8] | None:
        """In an audio-video stream: the video sent back, by default each camera frame
        once, unchanged. Override it to draw on the frames (``self.state`` tells the turn's
        phase); waits at most a frame period for a new frame."""
        with self._video_cond:
            if self._video_frame is None:
                self._video_cond.wait(1 / 30)
            frame, self._video_frame = self._video_frame, None
        return frame

    def set_args(self, args: list[Any]) -> None:
        """Store the other inputs' values (runtime) and wake ``emit``."""
        super().set_args(args)
        with self._cond:
            self._cond.notify_all()

    @property
    def has_start_up(self) -> bool:
        """Whether ``start_up`` has work (a ``startup_fn``); the runtime skips it if not."""
        return self.startup_fn is not None

    def start_up(self) -> None:
        """Stream ``startup_fn``'s output once, as a reply (start-up worker; may block
        while it waits for the inputs)."""
        startup_fn = self.startup_fn
        if startup_fn is None:
            return
        args: list[Any] = []
        if _takes_any_inputs(startup_fn):
            if not self.wait_for_args(self.args_timeout):
                raise TimeoutError(
                    f"the stream's other inputs did not arrive within {self.args_timeout:g} s; "
                    "startup_fn was not called"
                )
            args = list(self.latest_args[1:]) if isinstance(self.latest_args, list) else []
        with self._cond:
            if self._closed:
                return
            generation = self._generation
        reply = _Reply(startup_fn(*args), generation, self._event_loop)
        with self._cond:
            accepted = (
                not self._closed
                and self._generation == generation
                and self._phase is _Phase.LISTENING
                and self._reply is None
            )
            if accepted:
                self._reply = reply
                self._phase = _Phase.REPLYING
                self._cond.notify_all()
        if accepted:
            self._log_turn("response_starting")
        else:
            reply.close()  # the user spoke first, or the stream ended

    def trigger_response(self) -> None:
        """Start a turn now, without waiting for a pause (any thread), with the audio
        heard since the user started talking (empty if they did not). Does nothing while
        a turn is pending or a reply is playing."""
        with self._cond:
            if self._closed or self._phase is not _Phase.LISTENING:
                return
            rate = self._frame_rate or self.input_sample_rate
            detector = self._detector
            start = self._samples_in
            if detector is not None and detector.talking:
                start = int(getattr(detector, "_utt_start", self._samples_in))
            audio = self._extract(start, self._samples_in)
            info = TurnInfo(
                index=self._turn_count,
                start_s=start / rate,
                end_s=self._samples_in / rate,
                decided_at_s=self._samples_in / rate,
                reason="trigger",
            )
            self._turn_count += 1
            self.last_turn = info
            self._generation += 1
            self._turn = _Turn(audio, info, self._generation)
            self._phase = _Phase.PENDING
            self._detector_stale = True  # the utterance in progress is this turn's
            self._frames.clear()
            self._cond.notify_all()

    def reset(self) -> None:
        """Drop the audio heard so far and any pending or playing reply; forget the
        inputs (any thread)."""
        super().reset()
        actions: list[Callable[[], None]] = []
        with self._cond:
            if self._phase is not _Phase.LISTENING:
                self._interrupt_locked(actions)
            self._frames.clear()
            self._detector_stale = True
        for action in actions:
            action()

    def _log_turn(self, event: str) -> None:
        """Tell the browser of a turn event (:data:`TURN_EVENTS`); never blocks."""
        self.send_message({"type": "log", "data": event})

    @property
    def state(self) -> str:
        """``"listening"``, ``"pending"`` (turn decided, fn not started) or ``"replying"``."""
        with self._cond:
            return self._phase.value

    # -- receive ---------------------------------------------------------------------
    def _samples(self, frame: tuple[int, NDArray[Any]]) -> tuple[int, NDArray[np.int16]]:
        if not (isinstance(frame, tuple) and len(frame) == 2):
            raise TypeError(f"receive() takes (sample_rate, ndarray), got {type(frame).__name__}")
        rate, array = frame
        samples = np.asarray(array).reshape(-1)
        if samples.dtype != np.int16:
            if samples.dtype.kind == "f":
                samples = np.clip(np.round(samples * 32768.0), -32768, 32767).astype(np.int16)
            else:
                samples = samples.astype(np.int16)
        if self.expected_layout == "stereo" and samples.size % 2:
            raise ValueError(
                f"stereo frames must be interleaved with an even number of samples, "
                f"got {samples.size}"
            )
        return int(rate), samples

    def _new_detector(self, rate: int, base: int) -> _Detector:
        if self.algo_options.mode == "streaming":
            model = cast(StreamingPauseDetectionModel, self.model)  # checked in __init__
            return _StreamingDetector(model, self.algo_options, self.model_options, rate, base)
        return _ChunkedDetector(self.model, self.algo_options, self.model_options, rate, base)

    def receive(self, frame: tuple[int, NDArray[Any]]) -> None:
        """Feed one 20 ms block to the detector; may end a turn or interrupt a reply."""
        rate, samples = self._samples(frame)
        mono = downmix_interleaved(samples) if self.expected_layout == "stereo" else samples
        actions: list[Callable[[], None]] = []
        with self._cond:
            if self._closed or self._vad_failed:
                return
            if self._phase is not _Phase.LISTENING and not self.can_interrupt:
                self._samples_in += mono.size  # keeps TurnInfo times on the input timeline
                self._detector_stale = True
                return  # replying: incoming audio is ignored
            if self._frame_rate is not None and rate != self._frame_rate:
                logger.warning("input sample rate changed from %s to %s Hz", self._frame_rate, rate)
                self._detector_stale = True
            start = self._samples_in
            self._samples_in += mono.size
            try:
                if self._detector is None or self._detector_stale:
                    self._frames.clear()
                    self._frame_rate = rate
                    self._detector_stale = False
                    self._detector = self._new_detector(rate, start)
                self._frames.append((start, samples))
                events = self._detector.feed(mono, self._samples_in)
            except Exception as exc:
                # Never silent and never "infinite speech" (a failing detector used to look
                # like a user who never stops talking): say so once, then ignore audio.
                self._vad_failed = True
                self._detector = None
                failure = exc
                actions.append(
                    lambda: self._report_error(
                        "the pause detector; audio is ignored from now on", failure
                    )
                )
                events = []
            for event in events:
                self._handle_event(event, rate, actions)
            if self._detector is not None and not self._detector.talking:
                horizon = self._samples_in - self._detector.history_samples
                while (
                    self._frames
                    and self._frames[0][0] + self._frames[0][1].size // self._channels() < horizon
                ):
                    self._frames.popleft()
        for action in actions:
            action()

    def _channels(self) -> int:
        return 2 if self.expected_layout == "stereo" else 1

    def _handle_event(self, event: _Event, rate: int, actions: list[Callable[[], None]]) -> None:
        # Called with the lock held.
        if isinstance(event, _SpeechStarted):
            if self._phase is not _Phase.LISTENING and self.can_interrupt:
                self._interrupt_locked(actions)
            actions.append(lambda: self._log_turn("started_talking"))
            return
        actions.append(lambda: self._log_turn("pause_detected"))
        if self._phase is not _Phase.LISTENING:  # cannot happen: speech start came first
            self._interrupt_locked(actions)
        if event.refine:
            event.start, event.end = self._refine_edges(event.start, event.end, rate)
        audio = self._extract(event.start, event.end)
        info = TurnInfo(
            index=self._turn_count,
            start_s=event.start / rate,
            end_s=event.end / rate,
            decided_at_s=self._samples_in / rate,
            reason=event.reason,
        )
        self._turn_count += 1
        self.last_turn = info
        self._generation += 1
        self._turn = _Turn(audio, info, self._generation)
        self._phase = _Phase.PENDING
        logger.debug(
            "turn %d ended (%s): %.3f-%.3f s", info.index, info.reason, info.start_s, info.end_s
        )
        # Later audio starts the next utterance; nothing before the end is needed any more.
        while (
            self._frames
            and self._frames[0][0] + self._frames[0][1].size // self._channels() <= event.end
        ):
            self._frames.popleft()
        self._cond.notify_all()

    def _interrupt_locked(self, actions: list[Callable[[], None]]) -> None:
        self._generation += 1
        self._turn = None
        self._phase = _Phase.LISTENING
        reply = self._reply
        if reply is not None:
            actions.append(reply.cancel)
            actions.append(lambda: self._log_turn("response_finished"))
        actions.append(self.clear_output)
        logger.debug("barge-in: reply interrupted")
        self._cond.notify_all()

    def _refine_edges(self, start: int, end: int, rate: int) -> tuple[int, int]:
        """Move VAD-window edges to where the signal's level says speech starts and ends."""
        ch = self._channels()
        if not self._frames:
            return start, end
        first = self._frames[0][0]
        flat = np.concatenate([s for _, s in self._frames])
        mono = downmix_interleaved(flat) if ch == 2 else flat
        new_start, new_end = refine_speech_edges(mono, start - first, end - first, rate)
        return new_start + first, new_end + first

    def _extract(self, start: int, end: int) -> NDArray[np.int16]:
        """The utterance ``[start, end)`` (input samples) from the frame store, int16."""
        ch = self._channels()
        pieces = [s for _, s in self._frames]
        if not pieces:
            return np.zeros((ch, 0), dtype=np.int16)
        first = self._frames[0][0]
        flat = np.concatenate(pieces)
        lo = max(0, start - first) * ch
        hi = max(0, end - first) * ch
        clip = flat[lo:hi]
        if ch == 1:
            return clip.reshape(1, -1).copy()
        return clip.reshape(-1, 2).T.copy()

    # -- emit ------------------------------------------------------------------------
    def _event_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None or self._loop.is_closed():
            self._loop = asyncio.new_event_loop()
        return self._loop

    def emit(self) -> Any:
        """Return the next item of the current reply, or ``None`` (after at most ~20 ms).

        Runs user code (``fn`` and its generator) on the calling thread. Sections that run
        user code or the private event loop set ``_stepping``; while it is set, ``shutdown``
        leaves closing the reply and the loop to this thread.
        """
        with self._cond:
            if self._closed:
                return None
            if self._reply is not None and self._reply.generation != self._generation:
                self._drop_reply_locked()  # interrupted between two emits
                if self._closed:
                    return None
            if self._phase is _Phase.LISTENING:
                self._cond.wait(self.idle_wait_s)
                if self._phase is _Phase.LISTENING or self._closed:
                    return None
            if self._phase is _Phase.PENDING:
                turn = self._turn
                assert turn is not None
                if self.needs_args and not self._await_args_locked(turn):
                    return None
                if self._closed or self._turn is not turn:
                    return None  # interrupted while the lock was released
                return self._start_reply_locked(turn)
            if self._phase is _Phase.REPLYING and self._reply is not None:
                return self._step_locked(self._reply)
            return None

    def _await_args_locked(self, turn: _Turn) -> bool:
        """True once the other inputs arrived for ``turn``; else wait a little, or fail it.

        The first call asks for them (``reset_args`` + ``wait_for_args(0)``, which sends the
        ``"tick"``); later calls wait at most ``idle_wait_s``; after ``args_timeout`` the turn
        fails with a ``TimeoutError`` message.
        """
        if not turn.args_requested:
            turn.args_requested = True
            turn.args_deadline = time.monotonic() + self.args_timeout
            self._cond.release()
            try:
                self.reset_args()
                self.wait_for_args(0)  # sends "tick"; does not block
            finally:
                self._cond.acquire()
        if self.args_set:
            return True
        remaining = turn.args_deadline - time.monotonic()
        if remaining > 0:
            self._cond.wait(min(self.idle_wait_s, remaining))
            return self.args_set
        if self._turn is turn:
            self._fail_locked(
                TimeoutError(
                    f"the stream's other inputs did not arrive within {self.args_timeout:g} s "
                    "of asking for them; the turn was dropped"
                ),
                turn.generation,
                ours=True,
            )
        return False

    def _start_reply_locked(self, turn: _Turn) -> Any:
        args = (
            list(self.latest_args[1:])
            if self.needs_args and isinstance(self.latest_args, list)
            else []
        )
        rate = self._frame_rate or self.input_sample_rate
        self._turn = None
        self._phase = _Phase.REPLYING
        reply: _Reply | None = None
        error: Exception | None = None
        self._stepping = True
        self._cond.release()
        try:
            try:
                result = self.fn((rate, turn.audio), *args)
                reply = _Reply(result, turn.generation, self._event_loop)
            except Exception as exc:
                error = exc
        finally:
            self._cond.acquire()
            self._stepping = False
        if reply is not None:
            self._reply = reply
        if self._closed:
            self._cleanup_locked()
            return None
        if error is not None:
            self._fail_locked(error, turn.generation)
            if isinstance(error, WebRTCError):
                raise error  # shown as written; the stream ends
            return None
        assert reply is not None
        if reply.generation != self._generation:
            self._drop_reply_locked()
            return None
        self._log_turn("response_starting")
        return self._step_locked(reply)

    def _step_locked(self, reply: _Reply) -> Any:
        error: BaseException | None = None
        item: Any = None
        done = False
        self._stepping = True
        self._cond.release()
        try:
            try:
                item, done = reply.step()
            except (asyncio.CancelledError, Exception) as exc:
                error = exc
        finally:
            self._cond.acquire()
            self._stepping = False
        if self._closed:
            self._cleanup_locked()
            return None
        if reply.generation != self._generation:
            # Interrupted (barge-in) while stepping: drop the item, close the generator.
            self._drop_reply_locked()
            return None
        if error is not None:
            self._fail_locked(error, reply.generation)
            if isinstance(error, WebRTCError):
                raise error  # shown as written; the stream ends
            return None
        if done:
            self._reply = None
            self._log_turn("response_finished")
            self._finish_turn_locked()
            if self._loop is not None:
                self._unlocked(self._close_loop)  # one private loop per reply, never leaked
        return item

    def _finish_turn_locked(self) -> None:
        self._phase = _Phase.LISTENING
        self._detector_stale = not self.can_interrupt
        self._cond.notify_all()

    def _unlocked(self, work: Callable[[], None]) -> None:
        """Run ``work`` (emit thread) without the lock, owning the reply and the loop."""
        self._stepping = True
        self._cond.release()
        try:
            work()
        finally:
            self._cond.acquire()
            self._stepping = False
        if self._closed:
            self._cleanup_locked()

    def _drop_reply_locked(self) -> None:
        """Close an interrupted reply and clear the audio it queued (emit thread)."""
        reply, self._reply = self._reply, None

        def work() -> None:
            if reply is not None:
                reply.close()
            self._close_loop()
            # Again: an item may have been queued while the interruption was happening.
            self.clear_output()

        self._unlocked(work)

    def _fail_locked(self, exc: BaseException, generation: int, *, ours: bool = False) -> None:
        """End the turn ``generation`` after ``exc``: log, tell the browser, listen again.

        ``ours``: the runtime raised it with a message meant for the user (shown as is,
        logged without a traceback); anything else came from user code and is reported
        as the app's error policy says (:meth:`StreamHandler._report_error`).
        """
        if ours:
            logger.error("ReplyOnPause: %s: %s", type(exc).__name__, exc)
        reply, self._reply = self._reply, None
        if generation == self._generation:
            self._turn = None
            self._finish_turn_locked()

        def work() -> None:
            if reply is not None:
                reply.close()
                self._log_turn("response_finished")
            self._close_loop()
            if ours:
                text = f"{type(exc).__name__}: {exc}"
                self.send_message({"type": "error", "message": text, "data": text})
            elif isinstance(exc, Warning):
                message = warning_message(exc)
                if message is not None:
                    self.send_message(message)
            elif not isinstance(exc, WebRTCError):  # that one the runtime reports
                self._report_error("ReplyOnPause fn; the turn is dropped", exc)

        self._unlocked(work)

    # -- shutdown --------------------------------------------------------------------
    def _cleanup_locked(self) -> None:
        """After shutdown: close the reply and the loop (emit thread, when it was busy)."""
        reply, self._reply = self._reply, None
        self._cond.release()
        try:
            if reply is not None:
                reply.close()
            self._close_loop()
        finally:
            self._cond.acquire()

    def _close_loop(self) -> None:
        loop, self._loop = self._loop, None
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(Exception):
                loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    def shutdown(self) -> None:
        """Stop: wake ``emit``, cancel and close the running reply, drop the model state.

        If ``emit`` is running user code, the reply is cancelled (an ``await`` is interrupted
        at once) and the emit thread closes it and the event loop when the step returns.
        """
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._generation += 1
            self._turn = None
            reply = self._reply
            owner = not self._stepping
            if owner:
                self._reply = None
            self._detector = None
            self._frames.clear()
            self._cond.notify_all()
        if reply is not None:
            reply.cancel()
            if owner:
                reply.close()
        if owner:
            self._close_loop()
