"""User code the tests serve (written once against :class:`~conformance.adapters.Api`), the
probes it reports into, and small measuring helpers.

Handlers run inside the implementation (on its threads); they record what they see into a
:class:`Probe`, which the test reads. Nothing here knows which implementation runs it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import queue
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

from conformance.adapters.base import Api

T = TypeVar("T")

#: Rows at the bottom of a frame that video functions paint with the input's level.
MARK_ROWS = 16
#: ``concurrency_limit`` of scenarios with several clients. Not None: gradio_webrtc maps
#: None to 1 (LIM-005 checks that on its own), and no other test should fail for it.
MANY = 16


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` on a fresh event loop in a worker thread (for module-scoped recordings).

    If the calling thread is interrupted (pytest-timeout, Ctrl-C), the coroutine is
    cancelled and given a few seconds to clean up, so no worker is left running.
    """
    loop = asyncio.new_event_loop()
    task_box: list[asyncio.Task[T]] = []

    async def main() -> T:
        task = asyncio.ensure_future(coro)
        task_box.append(task)
        return await task

    def run() -> T:
        try:
            return loop.run_until_complete(main())
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    pool = concurrent.futures.ThreadPoolExecutor(1)
    future = pool.submit(run)
    try:
        return future.result()
    except BaseException:
        if task_box and not future.done():
            loop.call_soon_threadsafe(task_box[0].cancel)
            with contextlib.suppress(BaseException):
                future.result(timeout=10)
        raise
    finally:
        pool.shutdown(wait=future.done())


@dataclass
class Probe:
    """A thread-safe notebook that user code writes to and tests read."""

    records: dict[str, list[Any]] = field(default_factory=dict)
    counters: dict[str, int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, kind: str, value: Any = None) -> None:
        with self._lock:
            self.records.setdefault(kind, []).append(value)

    def bump(self, kind: str) -> int:
        with self._lock:
            self.counters[kind] = self.counters.get(kind, 0) + 1
            return self.counters[kind]

    def get(self, kind: str) -> list[Any]:
        with self._lock:
            return list(self.records.get(kind, []))

    def count(self, kind: str) -> int:
        with self._lock:
            return self.counters.get(kind, 0)


# -- audio ---------------------------------------------------------------------------------


def tone(freq: float, seconds: float, rate: int, *, amplitude: float = 0.5) -> np.ndarray:
    """A sine as int16, shape (1, N)."""
    n = round(seconds * rate)
    t = np.arange(n) / rate
    return np.rint(amplitude * 32767 * np.sin(2 * np.pi * freq * t)).astype(np.int16)[None, :]


def echo_handler(api: Api) -> Any:
    """The user guide's EchoHandler, verbatim (its emit blocks in ``Queue.get()``)."""

    class EchoHandler(api.StreamHandler):  # type: ignore[name-defined,misc]
        def __init__(self) -> None:
            super().__init__()
            self.queue: queue.Queue[Any] = queue.Queue()

        def receive(self, frame: tuple[int, np.ndarray]) -> None:
            self.queue.put(frame)

        def emit(self) -> Any:
            return self.queue.get()

        def copy(self) -> Any:
            return EchoHandler()

    return EchoHandler()


def recording_handler(
    api: Api,
    probe: Probe,
    *,
    emit: Callable[[Any], Any] | None = None,
    keep_audio: bool = True,
    **handler_kwargs: Any,
) -> Any:
    """A StreamHandler that records every hook call into ``probe``.

    Records: ``copy`` (the template's id, then the copy's id), ``receive`` ``(t, rate,
    shape, dtype, id(self))``, ``audio`` (the arrays, if ``keep_audio``), counters
    ``emit``/``shutdown``/``receive``; ``emit(handler)`` decides what emit returns
    (default None).
    """

    class Recording(api.StreamHandler):  # type: ignore[name-defined,misc]
        def __init__(self) -> None:
            super().__init__(**handler_kwargs)
            self.queue: queue.Queue[Any] = queue.Queue()

        def receive(self, frame: tuple[int, np.ndarray]) -> None:
            rate, array = frame
            probe.add(
                "receive",
                (time.time(), rate, getattr(array, "shape", None), str(array.dtype), id(self)),
            )
            probe.bump("receive")
            if keep_audio:
                probe.add("audio", np.array(array, copy=True))
            self.queue.put(frame)

        def emit(self) -> Any:
            probe.bump("emit")
            probe.add("emitter", id(self))
            return emit(self) if emit is not None else None

        def copy(self) -> Any:
            clone = Recording()
            probe.add("copy", (id(self), id(clone)))
            return clone

        def shutdown(self) -> None:
            probe.bump("shutdown")

    template = Recording()
    probe.add("template", id(template))
    return template


def mono(audio: np.ndarray) -> np.ndarray:
    return np.asarray(audio, dtype=np.float64).reshape(-1) / 32768


def loud_seconds(samples: np.ndarray, rate: int, *, threshold: float = 0.05) -> float:
    """Seconds of audio whose 10 ms blocks have an RMS above ``threshold`` (full scale 1)."""
    x = np.asarray(samples, dtype=np.float64).reshape(-1)
    if x.dtype != np.float64 or np.abs(x).max(initial=0) > 1.5:
        x = x / 32768
    block = max(1, rate // 100)
    n = len(x) // block
    if n == 0:
        return 0.0
    rms = np.sqrt(np.mean(x[: n * block].reshape(n, block) ** 2, axis=1))
    return float(np.sum(rms > threshold) * block / rate)


def tone_segments(
    samples: np.ndarray, rate: int, freqs: tuple[float, ...], *, window_s: float = 0.02
) -> list[tuple[float, float]]:
    """The received audio as a sequence of ``(freq, seconds)`` runs of loud windows whose
    dominant frequency is (within 5 %) one of ``freqs``; quiet or other windows split runs."""
    from fixtures.analysis import dominant_frequency

    x = np.asarray(samples, dtype=np.float64).reshape(-1) / 32768
    n = max(1, round(window_s * rate))
    runs: list[tuple[float, float]] = []
    for start in range(0, len(x) - n + 1, n):
        window = x[start : start + n]
        if np.sqrt(np.mean(window**2)) < 0.05:
            runs.append((0.0, window_s))
            continue
        found = dominant_frequency(window, rate)
        match = next((f for f in freqs if abs(found - f) <= 0.05 * f + 60), 0.0)
        runs.append((match, window_s))
    merged: list[tuple[float, float]] = []
    for freq, seconds in runs:
        if merged and merged[-1][0] == freq:
            merged[-1] = (freq, merged[-1][1] + seconds)
        else:
            merged.append((freq, seconds))
    return [(f, round(s, 3)) for f, s in merged if f]


# -- video -----------------------------------------------------------------------------------


def mark_level(frame: np.ndarray) -> float:
    """Mean value of the marked rows at the bottom of a received RGB frame."""
    return float(np.asarray(frame)[-MARK_ROWS // 2 :, :, :].mean())


def marker_fn(probe: Probe) -> Callable[..., Any]:
    """``fn(frame, level)``: records the frame and paints the bottom rows with ``level``."""
    from fixtures.video import detect_channel_order

    def detection(image: np.ndarray, level: Any = 0) -> np.ndarray:
        order = None
        if isinstance(image, np.ndarray) and image.ndim == 3 and image.dtype == np.uint8:
            try:
                order = detect_channel_order(image)
            except ValueError:
                order = None
        probe.add(
            "frame",
            (
                time.time(),
                type(image).__name__,
                getattr(image, "shape", None),
                str(getattr(image, "dtype", None)),
                order,
                level,
            ),
        )
        out = np.array(image, copy=True)
        out[-MARK_ROWS:, :, :] = int(level)
        return out

    return detection


def frames_generator(
    count: int, width: int = 320, height: int = 240
) -> Callable[[], Iterator[Any]]:
    """A receive-mode generator ``fn()`` yielding barcode frames 0..count-1 (RGB)."""
    from fixtures.video import make_frame

    def generation() -> Iterator[np.ndarray]:
        for i in range(count):
            yield np.array(make_frame(i, width, height))

    return generation


# -- a live session as a stall detector --------------------------------------------------------


def audio_gap(recorder: Any, start: float, end: float) -> float:
    """The longest time (s) between two audio frames that ``recorder`` (an
    ``AudioRecorder``) received around ``[start, end]`` (arrival times, ``time.time()``).

    A server whose event loop stalls for T stops sending for T: the frames around the
    stall show a gap of about T. A frame before ``start`` anchors the first gap, and a
    stream that stopped counts up to ``end``.
    """
    arrivals = [a for (_, _, a) in recorder.frames if start - 0.2 <= a <= end]
    if not arrivals:
        return end - start
    edges = [*arrivals, end] if end > arrivals[-1] else arrivals
    return float(max(np.diff(edges))) if len(edges) > 1 else 0.0
