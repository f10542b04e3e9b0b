"""The bench server: one implementation's Gradio app with every benchmark's stream.

Run in the implementation's own venv as ``python -m conformance.bench.server --impl NAME``
(the driver, :mod:`conformance.bench.run`, does this). It builds, with the implementation's
public API (its conformance adapter's :class:`~conformance.adapters.Api`), one
``gr.Blocks`` holding the apps the user guide would write, each a ``WebRTC`` component
whose ``stream`` has ``concurrency_limit=1000`` (so admission never limits a benchmark):

- ``echo``: audio send-receive, the guide's ``EchoHandler`` verbatim;
- ``echo-timed``: the same, and ``receive`` also keeps each block with the time it was
  called, so the driver can tell when each timestamp marker reached the user's code;
- ``idle``: audio send-receive; ``receive`` drops the audio, ``emit`` returns ``None``;
- ``video``: video send-receive, ``fn`` returns its frame (identity);
- ``video-100ms`` / ``video-200ms``: the same after sleeping 0.1 s / 0.2 s;
- ``turns``: ``ReplyOnPause`` whose generator yields 0.3 s of a 1 kHz tone at once (only
  where the adapter claims ``reply_on_pause``; fastrtc's adapter injects webrtc_ref's
  offline pause detector);
- ``av-echo``: audio-video send-receive, the documented ``AsyncAudioVideoStreamHandler``
  echo (``receive`` / ``video_receive`` put each frame into an ``asyncio.Queue``, ``emit``
  / ``video_emit`` await the next one), only where the adapter claims
  ``audio-video.send-receive``.

Every component's ``offer`` server function is wrapped to time offer -> answer inside the
server (ICE gathering included).

Protocol: the server writes one JSON line on its stdout when it is up, ``{"url", "pid",
"version", "gradio", "python", "streams": {name: {"webrtc", "mode", "modality",
"periodic_ticks", "tick_on_open"}}, "unsupported": {name: reason}}``, then answers one JSON
line per command line on stdin:

- ``{"cmd": "offers"}`` -> ``{"offers": [seconds, ...]}`` (and forgets them);
- ``{"cmd": "markers"}`` -> ``{"markers": [[sent_sample, receive_time], ...]}``: the
  ``fixtures.timestamps`` markers found in the audio ``echo-timed`` received since the last
  call, each with the ``time.time()`` of the ``receive`` call holding its first sample;
- ``{"cmd": "resources"}`` -> ``{"threads", "fds", "rss_kb"}``: the server process's OS
  threads, open file descriptors and resident memory, from ``/proc``;
- ``{"cmd": "stall"}`` -> ``{"stall_s": seconds or null}``: the longest the server's event
  loop was late (blocked) since the last call, measured by a 5 ms timer started on that
  loop by the first offer (``null`` before any offer);
- ``{"cmd": "quit"}`` (or end of stdin): close the app and exit.

Everything listens on 127.0.0.1 and every peer gathers ICE on loopback only.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import queue
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, Literal, TextIO

import numpy as np

from conformance.adapters import Adapter, Api, Scenario, get_adapter
from conformance.adapters.base import _ensure_event_loop, launched, no_pyi_stubs

#: ``stream(concurrency_limit=...)`` of every benchmark stream: never the limit.
CONCURRENCY = 1000
REPLY_HZ = 1000.0
REPLY_S = 0.3


class Recorder:
    """Audio blocks one ``echo-timed`` handler received: ``(time.time(), rate, array)``."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.blocks: list[tuple[float, int, np.ndarray]] = []

    def add(self, rate: int, array: np.ndarray) -> None:
        with self.lock:
            self.blocks.append((time.time(), rate, np.array(array, copy=True)))

    def take(self) -> list[tuple[float, int, np.ndarray]]:
        with self.lock:
            blocks, self.blocks = self.blocks, []
        return blocks


RECORDER = Recorder()
OFFER_TIMES: list[float] = []


def _mono_candidates(blocks: list[tuple[float, int, np.ndarray]]) -> Iterator[list[np.ndarray]]:
    """Ways to read the blocks as mono: as given (rows averaged), or as interleaved stereo."""
    yield [a.mean(axis=0) if a.ndim == 2 else a for *_, a in blocks]
    yield [np.asarray(a).reshape(-1)[::2] for *_, a in blocks]


def markers(blocks: list[tuple[float, int, np.ndarray]]) -> list[tuple[int, float]]:
    """``(sent_sample, receive time)`` of each timestamp marker in ``blocks``.

    Implementations hand ``receive`` mono ``(1, n)``, planar ``(2, n)`` or interleaved stereo
    ``(1, 2n)`` blocks; each reading is decoded and the one finding more markers wins.
    """
    from fixtures.timestamps import decode

    if not blocks:
        return []
    rate = blocks[0][1]
    best: list[tuple[int, float]] = []
    for chunks in _mono_candidates(blocks):
        starts = np.cumsum([0] + [c.shape[0] for c in chunks[:-1]])
        audio = np.concatenate(chunks).astype(np.float64)
        if np.abs(audio).max(initial=0) > 2:  # int16 scale
            audio = audio / 32768
        found = []
        for marker in decode(audio, rate):
            i = int(np.searchsorted(starts, marker.position, side="right")) - 1
            found.append((int(marker.sent_sample), blocks[i][0]))
        if len(found) > len(best):
            best = found
    return best


def handlers(api: Api) -> dict[str, Callable[[], Any]]:
    """name -> factory of the stream's ``fn``, written against ``api`` like user code."""
    from conformance.helpers import echo_handler, tone

    class TimedEcho(api.StreamHandler):  # type: ignore[name-defined,misc]
        """The guide's EchoHandler that also records what ``receive`` got and when."""

        def __init__(self) -> None:
            super().__init__()
            self.queue: queue.Queue[Any] = queue.Queue()

        def receive(self, frame: tuple[int, np.ndarray]) -> None:
            RECORDER.add(frame[0], frame[1])
            self.queue.put(frame)

        def emit(self) -> Any:
            return self.queue.get()

        def copy(self) -> Any:
            return TimedEcho()

    class Idle(api.StreamHandler):  # type: ignore[name-defined,misc]
        def receive(self, frame: tuple[int, np.ndarray]) -> None:
            pass

        def emit(self) -> None:
            return None

        def copy(self) -> Any:
            return Idle()

    def identity(frame: np.ndarray) -> np.ndarray:
        return frame

    def slow(seconds: float) -> Callable[[np.ndarray], np.ndarray]:
        def fn(frame: np.ndarray) -> np.ndarray:
            time.sleep(seconds)
            return frame

        return fn

    def reply(audio: tuple[int, np.ndarray]) -> Iterator[Any]:
        yield (24000, tone(REPLY_HZ, REPLY_S, 24000))

    def av_echo() -> Any:
        # the class is made here, not above: subclassing a base the package does not export
        # fails, and only adapters claiming the modality get this far
        import asyncio

        class AsyncAVEcho(api.AsyncAudioVideoStreamHandler):  # type: ignore[name-defined,misc]
            """Reflects the microphone and the webcam (the documented async handler)."""

            def __init__(self) -> None:
                super().__init__()
                self.queue: asyncio.Queue[Any] = asyncio.Queue()
                self.video_queue: asyncio.Queue[Any] = asyncio.Queue()

            async def receive(self, frame: tuple[int, np.ndarray]) -> None:
                await self.queue.put(frame)

            async def emit(self) -> Any:
                return await self.queue.get()

            async def video_receive(self, frame: np.ndarray) -> None:
                self.video_queue.put_nowait(frame)

            async def video_emit(self) -> Any:
                return await self.video_queue.get()

            def copy(self) -> Any:
                return AsyncAVEcho()

        return AsyncAVEcho()

    return {
        "echo": lambda: echo_handler(api),
        "echo-timed": TimedEcho,
        "idle": Idle,
        "video": lambda: identity,
        "video-100ms": lambda: slow(0.1),
        "video-200ms": lambda: slow(0.2),
        "turns": lambda: api.reply_on_pause(reply),
        "av-echo": av_echo,
    }


MODALITY: dict[str, Literal["audio", "video", "audio-video"]] = {
    "echo": "audio",
    "echo-timed": "audio",
    "idle": "audio",
    "video": "video",
    "video-100ms": "video",
    "video-200ms": "video",
    "turns": "audio",
    "av-echo": "audio-video",
}
#: Streams that need a capability beyond audio and video send-receive.
NEEDS_CAPABILITY: dict[str, str] = {
    "turns": "reply_on_pause",
    "av-echo": "audio-video.send-receive",
}


class LoopStallMonitor:
    """A timer on the server's event loop every ``period`` s; remembers how late it ran.

    Started (once) from the ``offer`` server function, which runs on the loop that serves
    signalling and, in every implementation here, the peer connections.
    """

    def __init__(self, period: float = 0.005) -> None:
        self.period = period
        self._lock = threading.Lock()
        self._worst: float | None = None
        self._started = False

    def start(self) -> None:
        import asyncio

        if self._started:
            return
        self._started = True
        loop = asyncio.get_running_loop()

        def tick(expected: float) -> None:
            late = loop.time() - expected
            with self._lock:
                self._worst = late if self._worst is None else max(self._worst, late)
            loop.call_at(expected + self.period, tick, expected + self.period)

        loop.call_soon(tick, loop.time())

    def take(self) -> float | None:
        """The worst lateness since the last call (and reset it)."""
        with self._lock:
            worst = self._worst
            if self._started:
                self._worst = 0.0
            return worst


STALLS = LoopStallMonitor()


def resources() -> dict[str, int]:
    """This process's OS threads, open file descriptors and resident memory (KiB)."""
    from pathlib import Path

    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
    return {
        "threads": int(fields["Threads"].strip()),
        "fds": len(os.listdir("/proc/self/fd")),
        "rss_kb": int(fields["VmRSS"].split()[0]),
    }


def _time_offers(webrtc_cls: type) -> None:
    """Wrap ``webrtc_cls.offer`` (the ``offer`` server function) to time it."""
    original = webrtc_cls.offer  # type: ignore[attr-defined]
    if getattr(original, "_bench_timed", False):
        return

    @functools.wraps(original)
    async def offer(self: Any, *args: Any, **kwargs: Any) -> Any:
        # the original's signature (functools.wraps) decides what Gradio passes (the
        # request, where the implementation asks for it); pass all of it through
        STALLS.start()
        start = time.perf_counter()
        try:
            return await original(self, *args, **kwargs)
        finally:
            OFFER_TIMES.append(time.perf_counter() - start)

    offer._bench_timed = True  # type: ignore[attr-defined]
    webrtc_cls.offer = offer  # type: ignore[attr-defined]


def build(adapter: Adapter) -> tuple[Any, dict[str, dict[str, Any]], dict[str, str]]:
    """The Blocks, ``{name: {"webrtc", "mode", "modality"}}`` and ``{name: unsupported reason}``."""
    import gradio as gr

    api = adapter.api()
    _time_offers(api.WebRTC)
    streams: dict[str, dict[str, Any]] = {}
    unsupported: dict[str, str] = {}
    with no_pyi_stubs(), gr.Blocks() as blocks:
        for name, factory in handlers(api).items():
            needed = NEEDS_CAPABILITY.get(name)
            if needed is not None and needed not in adapter.capabilities:
                unsupported[name] = adapter.unsupported.get(needed, f"{needed} not claimed")
                continue
            modality = MODALITY[name]
            webrtc = api.WebRTC(label=name, mode="send-receive", modality=modality)
            webrtc.stream(
                fn=factory(),
                inputs=[webrtc],
                outputs=[webrtc],
                concurrency_limit=CONCURRENCY,
            )
            scenario = Scenario("send-receive", modality, lambda api: None)
            streams[name] = {
                "webrtc": webrtc._id,
                "mode": "send-receive",
                "modality": modality,
                # how the implementation's own browser client ticks (the wire client imitates it)
                "periodic_ticks": adapter.periodic_ticks,
                "tick_on_open": adapter.ticks_on_open(scenario),
            }
    return blocks, streams, unsupported


def _answer(out: TextIO, payload: dict[str, Any]) -> None:
    out.write(json.dumps(payload) + "\n")
    out.flush()


def serve(impl: str, out: TextIO) -> None:
    """Serve the bench app of ``impl`` until ``quit`` or end of stdin."""
    from importlib.metadata import version

    from webrtc_ref.testing import loopback_ice

    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    adapter = get_adapter(impl)
    with loopback_ice():
        _ensure_event_loop()
        blocks, streams, unsupported = build(adapter)
        with launched(blocks) as url:
            _answer(
                out,
                {
                    "url": url,
                    "pid": os.getpid(),
                    "impl": impl,
                    "version": adapter.version(),
                    "gradio": version("gradio"),
                    "python": platform.python_version(),
                    "streams": streams,
                    "unsupported": unsupported,
                },
            )
            for line in sys.stdin:
                command = json.loads(line).get("cmd")
                if command == "quit":
                    break
                if command == "offers":
                    times, OFFER_TIMES[:] = list(OFFER_TIMES), []
                    _answer(out, {"offers": times})
                elif command == "markers":
                    _answer(out, {"markers": markers(RECORDER.take())})
                elif command == "stall":
                    _answer(out, {"stall_s": STALLS.take()})
                elif command == "resources":
                    _answer(out, resources())
                else:
                    _answer(out, {"error": f"unknown command {command!r}"})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--impl", required=True, help="a conformance adapter name")
    args = parser.parse_args(argv)
    # The protocol owns the real stdout; anything the libraries print goes to stderr.
    out = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    serve(args.impl, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
