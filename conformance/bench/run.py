"""Side-by-side benchmarks of implementations, measured in one run on one machine.

Each implementation serves :mod:`conformance.bench.server` (the apps the user guide would
write, built with its conformance adapter's API) from **its own venv, in its own process**;
the floor is a bare aiortc peer with no component (:mod:`conformance.bench.floor`, the
``bare-echo`` / ``bare-tight`` / ``bare-sink`` kinds), and the CPU figure adds webrtc_ref's
core without Gradio (``ref-echo`` / ``ref-idle``, same process kind). This process is the
client: the conformance suite's wire client (:class:`conformance.wire.WirePeer`, a real
aiortc peer that speaks each implementation's protocol like its browser client) sends
fixture media over loopback and records what comes back. Where many sessions run at once
(capacity, CPU) the client peers are light (:mod:`conformance.bench.media`: pre-encoded
packets out, RTP logged and decoded after the window), so the server runs out of CPU before
they do; the client's own CPU is reported beside the server's. Statistics:
:mod:`conformance.bench.stats` (every figure keeps its samples and their n and spread).
Figures, per implementation (and the floor where it applies):

1. **Audio echo** (the guide's ``EchoHandler``): round trip of every 100 ms
   ``fixtures.timestamps`` marker (client send -> echoed marker heard at the client), and
   client -> ``receive()`` (send -> the handler call holding the marker, one-way into the
   user's code; one ``time.time()`` clock for both processes). ``echo_runs`` sessions.
2. **Video echo**, 640x480 at 30 fps, identity ``fn``: delivered fps, frame loss and
   glass-to-glass latency by frame id (``fixtures.video`` barcode). ``video_runs`` sessions.
3. **Video with a 100 ms fn** for 30 s: latency by arrival time; growth = median of the last
   5 s - median of the first 5 s (after a 2 s warm-up). A bounded pipeline stays flat.
4. **Turns**: :mod:`conformance.bench.speech` scenarios through ``ReplyOnPause`` whose
   generator replies at once with a 1 kHz tone, ``turn_rounds`` rounds (each round's audio
   starts a few ms later, so speech ends fall at other phases of the frames). Speech
   scenarios: end of speech (manifest) -> the reply's first frame at the client, false and
   missed turns. Silent scenarios (noise, tone only): a success when nothing comes back, a
   false turn per reply. A run that fails (no connection, connection lost) is an error,
   counted apart.
5. **Server CPU per session**: ``cpu_n`` sessions, ``cpu_runs`` windows per mode, from
   ``/proc/<pid>/stat`` of the server process less its own idle CPU measured just before:
   echo (the guide's EchoHandler), idle (``emit`` returns ``None``); the floor also
   measures ``bare-tight`` (the echo target's baseline). Each window in a fresh server
   process, after a warm-up connection.
6. **Capacity**: N concurrent echo sessions, N ramped in steps of ``ramp_step`` and then of
   1 from the last step that passed; a step passes when every session connected, its echo
   is intact (markers come back) and under 1 % of the 20 ms frames are late (> 40 ms behind
   the stream's best arrival offset) or missing (:func:`conformance.bench.media.frame_lateness`).
   A failed step is measured again once; the held step once more at the end. Each window
   in a fresh server process, after a warm-up connection (see :func:`measure_window`).
7. **Isolation**: a 200 ms video ``fn`` on one connection (640x480 at 30 fps) while another
   connection's audio echo is measured, against the same echo alone.
8. **Setup**: offer -> answer inside the server (its ``offer`` server function, timed),
   the offer's HTTP round trip at the client, connect -> first media at the client.
9. **Hostile offers** and 10. **the long soak** (webrtc_ref only): see their functions.
11. **Audio-video echo** (the documented ``AsyncAudioVideoStreamHandler`` echo; the floor:
    a bare aiortc peer sending both received tracks back): one client peer connection
    sends the timestamp carrier and 640x480 barcoded video at 30 fps together,
    ``av_runs`` sessions. Per track, the round trip at the client as in figures 1 and 2
    (markers, frame ids) and the server transit (client encoder -> the echo's first RTP
    packet back, before the client's jitter buffer); the skew, audio transit - video
    transit of content that reached the server at the same instant
    (:func:`conformance.avsync.skew_of`: positive when audio leaves later), its p50, p95
    and ``|skew|`` p95. Implementations without the audio-video modality report it
    unsupported.

Every figure records the errors the driver met (``errors``: one line each, with the
scenario, step or run it happened in). :func:`targets_table` checks the project's targets
against baselines measured in the same run.

Run: ``python -m conformance.bench [--impl NAME ...] [--quick] [--python NAME=PATH ...]
[--json build/bench/results.json] [--md docs/benchmarks.md]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import contextvars
import datetime
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from conformance.bench.media import frame_lateness, round_trips
from conformance.bench.stats import difference, median, pct, ratio, spread
from conformance.bench.system import (
    OTHER_LOAD_PCT,
    busy_pct,
    machine,
    proc_stat,
    process_cpu_s,
    thread_cpu_s,
    thread_pct,
    wait_quiet,
)

FLOOR = "aiortc"
BASELINE = "webrtc_ref"
#: webrtc_ref's StreamServer without Gradio (the CPU figure only), served like the floor.
CORE = "webrtc_ref core"
DEFAULT_IMPLS: tuple[str, ...] = ("webrtc_ref", "gradio_webrtc", "fastrtc")
#: Server kinds of the floor for each bench stream (see conformance.bench.floor).
FLOOR_KINDS: dict[str, str] = {
    "echo": "bare-echo",
    "echo-timed": "bare-echo",
    "echo-tight": "bare-tight",
    "idle": "bare-sink",
    "video": "bare-echo",
    "av-echo": "bare-echo",
}
#: Server kinds of webrtc_ref's core (StreamServer, no Gradio) for the CPU figure.
CORE_KINDS: dict[str, str] = {"echo": "ref-echo", "idle": "ref-idle"}
LATE_LIMIT = 0.01
#: A capacity step's echo is intact when at least this fraction of its markers come back.
MIN_COVERAGE = 0.9
REPLY_HZ = 1000.0
#: A turn matches an end of speech when its reply starts within this window after it.
TURN_WINDOW_S = 1.5
#: Replies closer than this to the previous reply frame belong to the same reply.
REPLY_GAP_S = 0.6
#: A turns run listens this long after its audio ends (a late or false reply still counts).
TURN_TAIL_S = 1.5
CONNECT_TIMEOUT_S = 20.0
#: A capacity step gives up on a session with no media after this long.
CAPACITY_CONNECT_TIMEOUT_S = 10.0
#: The media deadline of ``Target.open`` in the current task (capacity sets a shorter one).
CONNECT_DEADLINE: contextvars.ContextVar[float] = contextvars.ContextVar(
    "CONNECT_DEADLINE", default=CONNECT_TIMEOUT_S
)
#: The project's targets for webrtc_ref (checked by :func:`targets_table`).
TARGET_RT_P95_DELTA_S = 0.040
TARGET_FPS = 29.0
TARGET_G2G_ADDED_S = 1 / 30
TARGET_GROWTH_S = 1 / 30
TARGET_TURN_P95_S = 0.6
TARGET_MIN_TURNS = 30
TARGET_CPU_RATIO = 1.15
TARGET_IDLE_OVER_PCT = 1.0
TARGET_CAPACITY_RATIO = 0.9
TARGET_ISOLATION_S = 0.020
#: Audio and video that reached the server together leave it within this (|skew| p95).
TARGET_AV_SKEW_S = 0.040
#: The audio-video echo's stream kind and its video (the video echo figure's workload).
AV_KIND = "av-echo"
AV_WIDTH, AV_HEIGHT, AV_FPS = 640, 480, 30
#: What the conformance suite found that explains some figures (its expectation files).
NOTES: dict[str, tuple[str, ...]] = {
    "gradio_webrtc": (
        "The guide's EchoHandler echoes 40 ms frames, of which aiortc sends half "
        "(conformance AUD-014): the echo cannot be decoded, so no round "
        "trip is measured and every echo session misses frames.",
        "A closed EchoHandler connection keeps a worker of the 6-thread default pool blocked "
        "in emit (HND-005); each figure therefore runs in a fresh server process.",
        "An emit that returns None is called again at once (HND-006): an idle connection "
        "keeps a core busy.",
        "The video fn runs on the event loop (HND-007): a slow fn stalls every other "
        "connection of the process.",
    ),
    "fastrtc": (
        "ReplyOnPause runs with webrtc_ref's offline Silero model injected (fastrtc's own "
        "downloads its model).",
        "An emit that returns None is called again at once (HND-006): an idle connection "
        "keeps a core busy.",
        "The video fn runs on the event loop (HND-007): a slow fn stalls every other "
        "connection of the process.",
    ),
}


@dataclass(frozen=True)
class Plan:
    """How much to run (``FULL`` for the published figures, ``QUICK`` to try it)."""

    name: str
    settle_s: float
    echo_runs: int
    echo_window_s: float
    video_runs: int
    video_window_s: float
    slow_s: float
    #: The turns figure: these scenarios (conformance.bench.speech), ``turn_rounds`` times,
    #: round r delayed by ``r * turn_lead_step_s``.
    turn_speech: tuple[str, ...]
    turn_silent: tuple[str, ...]
    turn_rounds: int
    turn_lead_step_s: float
    #: The CPU figure: ``cpu_runs`` windows of ``cpu_window_s`` per mode, ``cpu_n`` sessions.
    cpu_n: int
    cpu_runs: int
    cpu_window_s: float
    #: Capacity: N = ramp_start, + ramp_step, ... up to ramp_max, then steps of 1.
    ramp_start: int
    ramp_step: int
    ramp_max: int
    cap_window_s: float
    cap_budget_s: float
    isolation_window_s: float
    setup_trials: int
    #: Wait up to this long for other processes to go quiet before starting.
    quiet_wait_s: float = 20.0
    #: Offers posted per hostile class.
    hostile_repeats: int = 10
    #: The long soak: this many echo sessions churn for ``soak_s`` seconds, sampled every
    #: ``soak_sample_s``.
    soak_sessions: int = 8
    soak_s: float = 600.0
    soak_sample_s: float = 10.0
    #: The audio-video echo: ``av_runs`` sessions, each measured over ``av_window_s``.
    av_runs: int = 3
    av_window_s: float = 6.0


FULL = Plan(
    name="full",
    settle_s=1.0,
    echo_runs=3,
    echo_window_s=3.5,
    video_runs=2,
    video_window_s=5.0,
    slow_s=30.0,
    # 11 turns over 5 speech scenarios per round: 33 turns; 6 silent runs
    turn_speech=(
        "speech_pause_speech",
        "hesitations",
        "speech_then_silence",
        "questions",
        "short_answers",
    ),
    turn_silent=("noise_only", "tone_only"),
    turn_rounds=3,
    turn_lead_step_s=0.007,
    cpu_n=4,
    cpu_runs=5,
    cpu_window_s=3.0,
    ramp_start=4,
    ramp_step=4,
    ramp_max=64,
    cap_window_s=4.0,
    cap_budget_s=240.0,
    isolation_window_s=4.0,
    setup_trials=5,
)
QUICK = Plan(
    name="quick",
    settle_s=0.75,
    echo_runs=1,
    echo_window_s=3.0,
    video_runs=1,
    video_window_s=4.0,
    slow_s=9.0,
    turn_speech=("speech_pause_speech",),
    turn_silent=("noise_only",),
    turn_rounds=1,
    turn_lead_step_s=0.007,
    cpu_n=2,
    cpu_runs=2,
    cpu_window_s=2.5,
    ramp_start=4,
    ramp_step=4,
    ramp_max=64,
    cap_window_s=2.5,
    cap_budget_s=120.0,
    isolation_window_s=3.0,
    setup_trials=2,
    quiet_wait_s=5.0,
    hostile_repeats=3,
    soak_sessions=4,
    soak_s=30.0,
    soak_sample_s=3.0,
    av_runs=1,
    av_window_s=4.0,
)


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- links


@dataclass
class Link:
    """One client peer connected to a bench stream, and what it recorded.

    ``recorder``: ``fixtures.tracks.AudioRecorder`` (``.frames``: ``(position, n,
    arrival)``), the wire client's video recorder (``.frames``: ``ReceivedFrame``) or, for a
    light link, a :class:`conformance.bench.media.RtpLog` (the same ``.frames`` as audio).

    An audio-video link (:data:`AV_KIND`) sends two tracks: ``track`` and ``recorder`` are
    the audio ones, ``tracks`` and ``recorders`` hold both by kind (the wire client's
    recorders: audio with its timestamp markers and frame ``pts``, video with its records),
    and ``rtp`` is the peer's :class:`conformance.avsync.RtpTiming`.
    """

    kind: str
    track: Any
    peer: Any
    t_connect: float
    recorder: Any = None
    http_offer_s: float | None = None
    server_answer_s: float | None = None
    error: str | None = None
    close_fn: Callable[[], Awaitable[None]] | None = None
    tracks: dict[str, Any] = field(default_factory=dict)
    recorders: dict[str, Any] = field(default_factory=dict)
    rtp: Any = None

    @property
    def first_media(self) -> float | None:
        frames = getattr(self.recorder, "frames", None)
        if not frames:
            return None
        first = frames[0]
        return float(first[2] if isinstance(first, tuple) and len(first) == 3 else first.arrival)

    @property
    def problems(self) -> list[str]:
        """The link's error and what its peer reported (the wire client's ``errors``)."""
        found = [self.error] if self.error else []
        return found + [str(e)[:300] for e in getattr(self.peer, "errors", [])]

    async def close(self) -> None:
        if self.close_fn is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.close_fn(), 10)


#: Stream kinds whose link does not wait for media: nothing comes back (idle), or nothing
#: comes back until the server decides to reply (turns).
NO_MEDIA_KINDS: tuple[str, ...] = ("idle", "turns")


class Target:
    """Something serving bench streams: an implementation's server, or the floor."""

    name: str
    pid: int
    streams: dict[str, dict[str, Any]]
    unsupported: dict[str, str]
    #: Links opened since the server process started (see :meth:`restart`).
    opened: int = 0

    def supports(self, kind: str) -> bool:
        return kind in self.streams

    async def restart(self) -> None:
        """Replace the server process with a fresh one (nothing left from earlier links)."""
        raise NotImplementedError

    async def open(self, kind: str, track: Any, *, light: bool = False) -> Link:
        """Connect a client peer sending ``track`` to stream ``kind``; wait for media.

        ``light``: the echo is logged at the RTP level (:class:`~conformance.bench.media.
        RtpLog`) instead of being decoded (``track`` is then usually a ``PacketTrack``).
        For :data:`AV_KIND`, ``track`` is ``(audio, video)`` (:func:`av_tracks`), the peer
        times its RTP and the link waits for media of both kinds.
        """
        raise NotImplementedError

    async def offer_times(self) -> list[float]:
        return []

    async def markers(self) -> list[tuple[int, float]] | None:
        return None

    async def reset(self) -> None:
        """Close what the server still holds (the floor only; implementations do it alone)."""

    async def post_offer(self, kind: str, body: Any, session: str) -> Any:
        """POST ``body`` to stream ``kind``'s offer route; the ``HttpReply``."""
        raise NotImplementedError

    async def stall(self) -> float | None:
        """The server loop's worst lateness since the last call (seconds)."""
        return None

    async def resources(self) -> dict[str, int]:
        """The server process's OS threads, open fds and RSS (KiB)."""
        raise NotImplementedError

    def cpu_s(self) -> float:
        return process_cpu_s(self.pid)


async def _wait_first_media(link: Link, timeout: float) -> None:
    """Wait for the link's first media (of every kind in ``link.recorders``, if any)."""
    timeout = min(timeout, CONNECT_DEADLINE.get())
    deadline = time.monotonic() + timeout

    def waiting() -> list[str]:
        if link.recorders:
            return [k for k, rec in link.recorders.items() if not getattr(rec, "frames", None)]
        return [] if link.first_media is not None else ["media"]

    while missing := waiting():
        if time.monotonic() > deadline:
            what = "media" if missing == ["media"] else " or ".join(missing)
            link.error = f"no {what} within {timeout:g} s"
            return
        await asyncio.sleep(0.005)


def _av_link(link: Link, tracks: Any, recorders: dict[str, Any], rtp: Any) -> None:
    """Fill in an audio-video link's per-kind tracks and recorders (see :class:`Link`)."""
    link.tracks = {t.kind: t for t in tracks}
    link.track = link.tracks.get("audio")
    link.recorders = dict(recorders)
    link.recorder = link.recorders.get("audio")
    link.rtp = rtp


def _rtp_log(peer: Any, light: bool) -> Any:
    """An :class:`~conformance.bench.media.RtpLog` attached to ``peer`` (light links)."""
    if not light:
        return None
    from conformance.bench.media import RtpLog

    rtp = RtpLog()
    rtp.attach(peer.pc)
    return rtp


class ImplTarget(Target):
    """An implementation's bench server (:mod:`conformance.bench.server`) in its own venv."""

    def __init__(self, impl: str, python: str) -> None:
        self.name = impl
        self.python = python
        self.proc: asyncio.subprocess.Process | None = None
        self.info: dict[str, Any] = {}
        self.wires: dict[str, Any] = {}
        self._lock = asyncio.Lock()

    async def start(self, timeout: float = 180.0) -> None:
        env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1"}
        self.proc = await asyncio.create_subprocess_exec(
            self.python,
            "-m",
            "conformance.bench.server",
            "--impl",
            self.name,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env=env,
        )
        assert self.proc.stdout is not None
        try:
            line = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
        except asyncio.TimeoutError:
            await self.stop()
            message = f"{self.name}'s bench server did not start in {timeout:g} s"
            raise TimeoutError(message) from None
        if not line:
            await self.stop()
            raise RuntimeError(f"{self.name}'s bench server exited: see its stderr above")
        self.info = json.loads(line)
        self.opened = 0
        self.pid = int(self.info["pid"])
        self.streams = self.info["streams"]
        self.unsupported = self.info["unsupported"]

    async def command(self, cmd: str) -> dict[str, Any]:
        proc = self.proc
        assert proc is not None and proc.stdin is not None and proc.stdout is not None
        async with self._lock:
            proc.stdin.write((json.dumps({"cmd": cmd}) + "\n").encode())
            await proc.stdin.drain()
            reply: dict[str, Any] = json.loads(await asyncio.wait_for(proc.stdout.readline(), 60))
        return reply

    async def offer_times(self) -> list[float]:
        return [float(x) for x in (await self.command("offers"))["offers"]]

    async def markers(self) -> list[tuple[int, float]] | None:
        return [(int(s), float(t)) for s, t in (await self.command("markers"))["markers"]]

    def supports(self, kind: str) -> bool:
        if kind == "soak":
            return self.name in SOAK_IMPLS
        return kind == "gradio" or kind in self.streams

    async def post_offer(self, kind: str, body: Any, session: str) -> Any:
        return await self._wire(kind).offer(body, session_hash=session)

    async def stall(self) -> float | None:
        value = (await self.command("stall"))["stall_s"]
        return None if value is None else float(value)

    async def resources(self) -> dict[str, int]:
        reply = await self.command("resources")
        return {key: int(reply[key]) for key in ("threads", "fds", "rss_kb")}

    def _wire(self, kind: str) -> Any:
        from conformance.adapters import Scenario, Served, ServedStream
        from conformance.wire import Wire

        if kind not in self.wires:
            spec = self.streams[kind]
            self.wires[kind] = Wire(
                Served(
                    url=self.info["url"],
                    scenario=Scenario(spec["mode"], spec["modality"], lambda api: None),
                    streams=[ServedStream(spec["webrtc"], [], [], [], None)],
                    periodic_ticks=bool(spec["periodic_ticks"]),
                    tick_on_open=bool(spec["tick_on_open"]),
                )
            )
        return self.wires[kind]

    async def restart(self) -> None:
        await self.stop()
        self.wires = {}
        await self.start()

    async def open(self, kind: str, track: Any, *, light: bool = False) -> Link:
        self.opened += 1
        wire = self._wire(kind)
        av = kind == AV_KIND
        peer = wire.peer(send=track, timestamps=av, rtp_timing=av)
        rtp = _rtp_log(peer, light)
        link = Link(kind, track, peer, time.time())

        async def close() -> None:
            await peer.close(stop_message=True)
            with contextlib.suppress(ValueError):
                wire.peers.remove(peer)

        link.close_fn = close
        try:
            reply = await peer.connect(trigger=False)
            link.http_offer_s = peer.offer_rtt_s
            if not peer.answered:
                link.error = f"refused: HTTP {reply.status}: {reply.body!r}"[:300]
                return link
            if kind == "idle":  # nothing comes back
                await peer.wait_connected(CONNECT_TIMEOUT_S)
                return link
            recorder = await peer.wait_remote(CONNECT_TIMEOUT_S)
            link.recorder = rtp if rtp is not None else recorder
            if av:
                _av_link(link, track, peer.recorders, peer.rtp)
            if kind in NO_MEDIA_KINDS:
                await peer.wait_connected(CONNECT_TIMEOUT_S)
                return link
            await _wait_first_media(link, CONNECT_TIMEOUT_S)
        except Exception as exc:
            link.error = f"{type(exc).__name__}: {exc}"[:300]
        return link

    async def stop(self) -> None:
        for wire in self.wires.values():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(wire.aclose(), 20)
        proc, self.proc = self.proc, None
        if proc is None or proc.returncode is not None:
            return
        with contextlib.suppress(Exception):
            assert proc.stdin is not None
            proc.stdin.write(b'{"cmd": "quit"}\n')
            await proc.stdin.drain()
            proc.stdin.close()
        try:
            await asyncio.wait_for(proc.wait(), 15)
        except asyncio.TimeoutError:
            proc.kill()
            await proc.wait()


class FloorTarget(Target):
    """Peers without Gradio behind HTTP, in their own process (:mod:`conformance.bench.floor`):
    the bare aiortc floor (``kinds=FLOOR_KINDS``) or webrtc_ref's core (``CORE_KINDS``)."""

    def __init__(self, name: str = FLOOR, kinds: dict[str, str] | None = None) -> None:
        from conformance.bench.floor import ServerProcess

        self.name = name
        self.kinds = dict(FLOOR_KINDS if kinds is None else kinds)
        self.server = ServerProcess(max_seconds=3600)
        self.streams = {kind: {"kind": k} for kind, k in self.kinds.items()}
        self.unsupported = {}
        self.http: Any = None

    async def start(self) -> None:
        import httpx

        await asyncio.to_thread(self.server.start)
        self.pid = self.server.pid
        self.opened = 0
        self.http = httpx.AsyncClient()

    async def restart(self) -> None:
        from conformance.bench.floor import ServerProcess

        await self.stop()
        self.server = ServerProcess(max_seconds=3600)
        await self.start()

    async def open(self, kind: str, track: Any, *, light: bool = False) -> Link:
        from conformance.avsync import RtpTiming
        from conformance.wire import audio_recorder, video_recorder
        from fixtures.tracks import AudioRecorder
        from webrtc_ref.testing import ClientPeer, async_wait_until

        self.opened += 1
        av = kind == AV_KIND
        peer = ClientPeer(send=track)
        rtp = _rtp_log(peer, light)
        timing = RtpTiming() if av else None
        if timing is not None:
            timing.attach(peer.pc)
        link = Link(kind, track, peer, time.time())

        async def close() -> None:
            for recorder in link.recorders.values() if av else [link.recorder]:
                if recorder is not None:
                    await recorder.stop()
            await peer.close()

        link.close_fn = close

        async def signal(body: dict[str, str]) -> dict[str, Any]:
            t = time.time()
            response = await self.http.post(
                f"{self.server.url}/offer/{self.kinds[kind]}", json=body, timeout=30
            )
            link.http_offer_s = time.time() - t
            response.raise_for_status()
            reply: dict[str, Any] = response.json()
            return reply

        try:
            reply = await peer.connect(signal)
            if reply.get("type") != "answer":
                link.error = f"refused: {reply}"[:300]
                return link
            link.server_answer_s = float(str(reply["server_answer_s"]))
            if kind == "idle":
                await peer.wait_connected(CONNECT_TIMEOUT_S)
                return link
            remote: Any = await peer.wait_remote(CONNECT_TIMEOUT_S)
            if av:
                await async_wait_until(
                    lambda: {"audio", "video"} <= set(peer.remotes),
                    CONNECT_TIMEOUT_S,
                    "both remote tracks",
                )
                recorders = {
                    "audio": audio_recorder(peer.remotes["audio"], timestamps=True),
                    "video": video_recorder(peer.remotes["video"]),
                }
                _av_link(link, track, recorders, timing)
                for recorder in recorders.values():
                    await recorder.start()
            elif rtp is not None:
                link.recorder = rtp
            else:
                if remote.kind == "video":
                    link.recorder = video_recorder(remote)
                else:
                    link.recorder = AudioRecorder(remote, decode_timestamps=False, clock=time.time)
                await link.recorder.start()
            await _wait_first_media(link, CONNECT_TIMEOUT_S)
        except Exception as exc:
            link.error = f"{type(exc).__name__}: {exc}"[:300]
        return link

    async def reset(self) -> None:
        response = await self.http.post(f"{self.server.url}/reset", timeout=30)
        response.raise_for_status()

    async def stop(self) -> None:
        if self.http is not None:
            await self.http.aclose()
        await asyncio.to_thread(self.server.stop)


async def open_many(
    target: Target,
    kind: str,
    make_track: Callable[[], Any],
    n: int,
    concurrency: int = 6,
    *,
    light: bool = False,
) -> list[Link]:
    """``n`` links to stream ``kind``, at most ``concurrency`` connecting at once."""
    gate = asyncio.Semaphore(concurrency)

    async def one() -> Link:
        async with gate:
            return await target.open(kind, make_track(), light=light)

    return list(await asyncio.gather(*(one() for _ in range(n))))


async def close_all(links: Sequence[Link]) -> None:
    await asyncio.gather(*(link.close() for link in links))


def timestamp_track() -> Any:
    from fixtures.tracks import TimestampAudioTrack

    return TimestampAudioTrack()


def packet_track() -> Any:
    """The light client's sender: the timestamp carrier, pre-encoded (see bench.media)."""
    from conformance.bench.media import PacketTrack

    return PacketTrack()


def video_track() -> Any:
    from fixtures.tracks import BarcodeVideoTrack

    return BarcodeVideoTrack(640, 480, 30)


def av_tracks() -> tuple[Any, Any]:
    """An audio-video client's microphone (the timestamp carrier) and camera (barcode
    frames, :data:`AV_WIDTH` x :data:`AV_HEIGHT` at :data:`AV_FPS`), in that order."""
    from fixtures.tracks import BarcodeVideoTrack, TimestampAudioTrack

    return TimestampAudioTrack(), BarcodeVideoTrack(AV_WIDTH, AV_HEIGHT, AV_FPS)


def tracks_for(kind: str) -> Any:
    """What a link to stream ``kind`` sends (a warm-up or a plain connection)."""
    if kind == AV_KIND:
        return av_tracks()
    return video_track() if kind.startswith("video") else timestamp_track()


def _problems(where: str, links: Sequence[Link]) -> list[str]:
    """``"<where>: <problem>"`` for every problem of ``links``."""
    return [f"{where}: {problem}" for link in links for problem in link.problems]


# --------------------------------------------------------------------------- figures


async def audio_echo(target: Target, plan: Plan) -> dict[str, Any]:
    """Round trip and client -> ``receive()`` of the timestamp markers (N = 1 runs)."""
    rts: list[float] = []
    ins: list[float] = []
    sent_total = back_total = 0
    errors: list[str] = []
    for run in range(plan.echo_runs):
        await target.markers()  # forget earlier blocks
        link = await target.open("echo-timed", timestamp_track())
        try:
            if link.error:
                continue
            await asyncio.sleep(plan.settle_s)
            t0 = time.time()
            await asyncio.sleep(plan.echo_window_s)
            t1 = time.time()
            await asyncio.sleep(0.5)  # the last markers' echoes
        finally:
            await link.close()
            await target.reset()
            errors += _problems(f"run {run + 1}", [link])
        if link.error:
            continue
        values, sent, back = round_trips(link, t0, t1)
        rts.extend(values)
        sent_total += sent
        back_total += back
        received = await target.markers()
        if received is not None:
            sent_at = link.track.sent_markers
            ins.extend(
                t - sent_at[s] for s, t in received if s in sent_at and t0 <= sent_at[s] <= t1
            )
    is_floor = target.name == FLOOR
    return {
        "runs": plan.echo_runs,
        "rt_s": rts,
        "rt": spread(rts),
        "rt_p50_s": pct(rts, 50),
        "rt_p95_s": pct(rts, 95),
        "in_s": None if is_floor else ins,
        "in": None if is_floor else spread(ins),
        "in_p50_s": None if is_floor else pct(ins, 50),
        "in_p95_s": None if is_floor else pct(ins, 95),
        "markers_sent": sent_total,
        "markers_back": back_total,
        "coverage": back_total / sent_total if sent_total else None,
        "errors": errors,
    }


def _video_stats(link: Any, t0: float, t1: float, grace: float = 0.5) -> dict[str, Any]:
    """fps, loss and glass-to-glass latencies of the frames sent in ``[t0, t1 - grace]``.

    ``link``: a video :class:`Link` or anything with its ``track`` (``.sent``) and
    ``recorder`` (``.frames``)."""
    sent = {fid: t for fid, t in link.track.sent.items() if t0 <= t <= t1 - grace}
    first: dict[int, float] = {}
    arrived_in_window = set()
    for frame in getattr(link.recorder, "frames", []):
        if frame.frame_id is None:
            continue
        first.setdefault(frame.frame_id, frame.arrival)
        if t0 <= frame.arrival <= t1:
            arrived_in_window.add(frame.frame_id)
    latencies = [first[fid] - t for fid, t in sent.items() if fid in first]
    return {
        "fps": len(arrived_in_window) / (t1 - t0),
        "loss": 1 - len(latencies) / len(sent) if sent else None,
        "g2g_s": latencies,
    }


async def video_echo(target: Target, plan: Plan) -> dict[str, Any]:
    fps: list[float] = []
    losses: list[float] = []
    g2g: list[float] = []
    errors: list[str] = []
    for run in range(plan.video_runs):
        link = await target.open("video", video_track())
        try:
            if link.error:
                continue
            await asyncio.sleep(plan.settle_s + 0.5)
            t0 = time.time()
            await asyncio.sleep(plan.video_window_s)
            t1 = time.time()
            await asyncio.sleep(0.5)
        finally:
            await link.close()
            await target.reset()
            errors += _problems(f"run {run + 1}", [link])
        if link.error:
            continue
        stats = _video_stats(link, t0, t1)
        fps.append(stats["fps"])
        if stats["loss"] is not None:
            losses.append(stats["loss"])
        g2g.extend(stats["g2g_s"])
    return {
        "runs": plan.video_runs,
        "fps": median(fps),
        "fps_runs": fps,
        "loss": median(losses),
        "loss_runs": losses,
        "g2g_s": g2g,
        "g2g": spread(g2g),
        "g2g_p50_s": pct(g2g, 50),
        "g2g_p95_s": pct(g2g, 95),
        "errors": errors,
    }


async def video_slow(target: Target, plan: Plan, kind: str = "video-100ms") -> dict[str, Any]:
    """Latency over ``plan.slow_s`` with a slow ``fn``, by arrival time."""
    link = await target.open(kind, video_track())
    try:
        if link.error:
            return {"error": link.error, "errors": _problems("run 1", [link])}
        start = time.time()
        await asyncio.sleep(plan.slow_s)
        end = time.time()
    finally:
        await link.close()
    sent = link.track.sent
    series: list[tuple[float, float]] = []
    seen: set[int] = set()
    for frame in link.recorder.frames:
        fid = frame.frame_id
        if fid is None or fid in seen or fid not in sent or frame.arrival > end:
            continue
        seen.add(fid)
        series.append((frame.arrival - start, frame.arrival - sent[fid]))
    warm = 2.0
    first = [lat for t, lat in series if warm <= t < warm + 5.0]
    last = [lat for t, lat in series if t >= (end - start) - 5.0]
    first_p50, last_p50 = median(first), median(last)
    stats = _video_stats(link, start + warm, end)
    return {
        "fn_s": 0.1 if kind == "video-100ms" else 0.2,
        "duration_s": end - start,
        "series": [[round(t, 4), round(lat, 4)] for t, lat in series],
        "frames": len(series),
        "first": spread(first),
        "last": spread(last),
        "first_p50_s": first_p50,
        "last_p50_s": last_p50,
        "growth_s": difference(last_p50, first_p50),
        "fps": stats["fps"],
        "loss": stats["loss"],
        "errors": _problems("run 1", [link]),
    }


@dataclass
class _Media:
    """One kind of an audio-video link, shaped like a one-track link (``track``,
    ``recorder``) for :func:`~conformance.bench.media.round_trips` and :func:`_video_stats`."""

    track: Any
    recorder: Any


def av_session(link: Link, t0: float, t1: float, grace: float = 0.5) -> dict[str, Any]:
    """One audio-video session's samples, over content the client sent in
    ``[t0, t1 - grace]``.

    ``audio_rt_s``: marker round trips (send -> the echo heard at the client), with
    ``markers_sent`` / ``markers_back``; ``video_rt_s``: frame round trips (glass to
    glass), with ``fps`` (echoed frames per second arriving in ``[t0, t1]``) and ``loss``;
    ``audio_transit_s`` / ``video_transit_s``: server transits
    (:mod:`conformance.avsync`: the client's encoder -> the echo's RTP back, before its
    jitter buffer); ``skew``: ``[seconds since t0, skew]`` per echoed video frame with
    audio transits around its arrival at the server.
    """
    from conformance.avsync import audio_transits, skew_of, video_transits

    audio = _Media(link.tracks.get("audio"), link.recorders.get("audio"))
    video = _Media(link.tracks.get("video"), link.recorders.get("video"))
    rts, sent, back = round_trips(audio, t0, t1) if audio.track is not None else ([], 0, 0)
    frames = (
        _video_stats(video, t0, t1, grace)
        if video.track is not None
        else {"fps": None, "loss": None, "g2g_s": []}
    )

    def inside(transits: list[Any]) -> list[Any]:
        return [t for t in transits if t0 <= t.arrived <= t1 - grace]

    a_transits: list[Any] = []
    v_transits: list[Any] = []
    if link.rtp is not None and audio.recorder is not None and video.recorder is not None:
        a_transits = inside(audio_transits(audio.recorder, link.rtp["audio"]))
        v_transits = inside(video_transits(video.recorder, link.rtp["video"]))
    skew = skew_of(a_transits, v_transits)
    return {
        "audio_rt_s": rts,
        "markers_sent": sent,
        "markers_back": back,
        "video_rt_s": frames["g2g_s"],
        "fps": frames["fps"],
        "loss": frames["loss"],
        "audio_transit_s": [t.seconds for t in a_transits],
        "video_transit_s": [t.seconds for t in v_transits],
        "skew": [[round(t - t0, 4), round(value, 5)] for t, value in skew.samples],
    }


def summarize_av(sessions: Sequence[dict[str, Any]], runs: int) -> dict[str, Any]:
    """The audio-video echo figure from its sessions (:func:`av_session` dicts), pooled.

    Every summary is a :func:`~conformance.bench.stats.spread` of pooled samples (its ``n``
    is what the figure rests on); ``skew_p5_s`` / ``skew_p95_s`` bound the signed skew,
    ``abs_skew_p95_s`` is the p95 of ``|skew|`` (the sync target's figure);
    ``skew_p50_runs_s``: each session's median skew (sessions may settle differently).
    ``series``: each session's ``[seconds since its window started, skew]``.
    """

    def pooled(key: str) -> list[float]:
        return [float(x) for s in sessions for x in s.get(key) or []]

    audio_rt, video_rt = pooled("audio_rt_s"), pooled("video_rt_s")
    audio_tr, video_tr = pooled("audio_transit_s"), pooled("video_transit_s")
    series = [[list(point) for point in s.get("skew") or []] for s in sessions]
    skew = [float(point[1]) for points in series for point in points]
    absolute = [abs(x) for x in skew]
    sent = sum(int(s.get("markers_sent") or 0) for s in sessions)
    back = sum(int(s.get("markers_back") or 0) for s in sessions)
    fps = [float(s["fps"]) for s in sessions if s.get("fps") is not None]
    losses = [float(s["loss"]) for s in sessions if s.get("loss") is not None]
    return {
        "runs": runs,
        "sessions": len(sessions),
        "video": f"{AV_WIDTH}x{AV_HEIGHT}@{AV_FPS}",
        "audio_rt_s": audio_rt,
        "audio_rt": spread(audio_rt),
        "audio_rt_p50_s": pct(audio_rt, 50),
        "audio_rt_p95_s": pct(audio_rt, 95),
        "markers_sent": sent,
        "markers_back": back,
        "coverage": back / sent if sent else None,
        "video_rt_s": video_rt,
        "video_rt": spread(video_rt),
        "video_rt_p50_s": pct(video_rt, 50),
        "video_rt_p95_s": pct(video_rt, 95),
        "fps": median(fps),
        "fps_runs": fps,
        "loss": median(losses),
        "audio_transit": spread(audio_tr),
        "video_transit": spread(video_tr),
        "audio_transit_p50_s": pct(audio_tr, 50),
        "video_transit_p50_s": pct(video_tr, 50),
        "skew_s": skew,
        "skew": spread(skew),
        "skew_p5_s": pct(skew, 5),
        "skew_p50_s": pct(skew, 50),
        "skew_p95_s": pct(skew, 95),
        "abs_skew": spread(absolute),
        "abs_skew_p95_s": pct(absolute, 95),
        "skew_p50_runs_s": [
            m for m in (median([p[1] for p in pts]) for pts in series) if m is not None
        ],
        "series": series,
    }


async def av_echo(target: Target, plan: Plan) -> dict[str, Any]:
    """Audio and video echoed in one peer connection: per-track round trip and server
    transit, and the skew between the tracks (``av_runs`` sessions, one at a time)."""
    sessions: list[dict[str, Any]] = []
    errors: list[str] = []
    for run in range(plan.av_runs):
        link = await target.open(AV_KIND, av_tracks())
        try:
            if link.error:
                continue
            await asyncio.sleep(plan.settle_s + 0.5)
            t0 = time.time()
            await asyncio.sleep(plan.av_window_s)
            t1 = time.time()
            await asyncio.sleep(0.5)  # the last content's echoes
        finally:
            await link.close()
            await target.reset()
            errors += _problems(f"run {run + 1}", [link])
        if link.error is None:
            sessions.append(av_session(link, t0, t1))
    out = summarize_av(sessions, plan.av_runs)
    out.update(window_s=plan.av_window_s, errors=errors)
    return out


def reply_onsets(link: Link) -> list[float]:
    """Arrival times at which a reply (the 1 kHz tone) starts, from the recorded frames."""
    from fixtures.analysis import dominant_frequency

    rec = link.recorder
    if rec is None or not rec.frames:
        return []
    samples = rec.samples().astype(np.float64) / 32768
    rate = rec.sample_rate or 48000
    onsets: list[float] = []
    last = -1e9
    for position, n, arrival in rec.frames:
        block = samples[position : position + n]
        if block.size < 64 or np.sqrt(np.mean(block**2)) < 0.1:
            continue
        if abs(dominant_frequency(block, rate) - REPLY_HZ) > 60:
            continue
        if arrival - last > REPLY_GAP_S:
            onsets.append(arrival)
        last = arrival
    return onsets


async def _turns_run(target: Target, name: str, lead_s: float) -> dict[str, Any]:
    """One scenario through the ``turns`` stream: what was expected, heard and matched."""
    from conformance.bench.speech import SILENT, scenario
    from fixtures.analysis import match_turns
    from fixtures.tracks import ArrayAudioTrack

    sc = scenario(name, 48000, lead_s)
    run: dict[str, Any] = {
        "scenario": name,
        "lead_ms": round(1000 * lead_s, 1),
        "silent": name in SILENT,
        "expected": list(sc.expected_turn_ends),
        "heard": [],
        "latencies_s": [],
        "false": 0,
        "missed": 0,
        "error": None,
    }
    track = ArrayAudioTrack(sc.audio, sc.sample_rate, on_end="silence")
    link = await target.open("turns", track)
    start: float | None = None
    try:
        if link.error is None:
            deadline = time.monotonic() + 10.0
            while track.start_time is None and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            start = track.start_time
            if start is None:
                link.error = "connected, but the client never started sending"
            else:
                end = start + sc.duration_s + TURN_TAIL_S
                await asyncio.sleep(max(0.0, end - time.time()))
                state = link.peer.pc.connectionState
                if state in ("failed", "closed"):
                    link.error = f"the connection was {state} before the scenario ended"
    finally:
        await link.close()
    problems = link.problems
    if link.error is not None or start is None:
        run["error"] = "; ".join(problems) or "failed"
        return run
    if problems:
        run["warnings"] = problems
    heard = [t - start for t in reply_onsets(link)]
    match = match_turns(heard, sc.expected_turn_ends, max_delay_s=TURN_WINDOW_S)
    run.update(
        heard=heard,
        latencies_s=[t - e for e, t in match.matched],
        false=len(match.spurious),
        missed=len(match.missed),
    )
    return run


def summarize_turns(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The turns figure from its runs (:func:`_turns_run` dicts).

    Runs that failed are errors, not turns: their expected turns are neither missed nor
    measured. A silent scenario (``silent``) that completed is a success when nothing came
    back; each reply it got is a false turn (counted in ``false`` and ``silent_false``).
    """
    ok = [r for r in runs if r.get("error") is None]
    speech = [r for r in ok if not r.get("silent")]
    silent = [r for r in ok if r.get("silent")]
    latencies = [x for r in speech for x in r.get("latencies_s", [])]
    scenarios: dict[str, Any] = {}
    for r in runs:
        entry = scenarios.setdefault(
            str(r["scenario"]),
            {
                "silent": bool(r.get("silent")),
                "runs": 0,
                "errors": 0,
                "expected": 0,
                "latencies_s": [],
                "false": 0,
                "missed": 0,
                "silent_ok": 0,
            },
        )
        entry["runs"] += 1
        if r.get("error") is not None:
            entry["errors"] += 1
            continue
        entry["expected"] += len(r.get("expected", []))
        entry["latencies_s"] += list(r.get("latencies_s", []))
        entry["false"] += int(r.get("false", 0))
        entry["missed"] += int(r.get("missed", 0))
        if r.get("silent") and not r.get("heard"):
            entry["silent_ok"] += 1
    for entry in scenarios.values():
        entry["latency"] = spread(entry["latencies_s"])
    errors = [
        f"{r['scenario']} (lead {r.get('lead_ms', 0):g} ms): {r['error']}"
        for r in runs
        if r.get("error") is not None
    ]
    errors += [
        f"{r['scenario']} (lead {r.get('lead_ms', 0):g} ms): {w}"
        for r in runs
        for w in r.get("warnings", [])
    ]
    silent_false = sum(int(r.get("false", 0)) for r in silent)
    return {
        "n": len(latencies),
        "turns": len(latencies),
        "expected": sum(len(r.get("expected", [])) for r in speech),
        "speech_scenarios": len({r["scenario"] for r in speech}),
        "latencies_s": latencies,
        "latency": spread(latencies),
        "p50_s": pct(latencies, 50),
        "p95_s": pct(latencies, 95),
        "false": sum(int(r.get("false", 0)) for r in speech) + silent_false,
        "missed": sum(int(r.get("missed", 0)) for r in speech),
        "silent_runs": len(silent),
        "silent_ok": sum(1 for r in silent if not r.get("heard")),
        "silent_false": silent_false,
        "runs": len(runs),
        "error_runs": len(runs) - len(ok),
        "errors": errors,
        "scenarios": scenarios,
        "detail": list(runs),
    }


async def turns(target: Target, plan: Plan) -> dict[str, Any]:
    """End of speech -> first reply frame at the client over ``turn_rounds`` rounds of the
    speech scenarios, and whether the silent scenarios stay silent."""
    runs: list[dict[str, Any]] = []
    for r in range(plan.turn_rounds):
        lead = r * plan.turn_lead_step_s
        for name in (*plan.turn_speech, *plan.turn_silent):
            run = await _turns_run(target, name, lead)
            runs.append(run)
            outcome = (
                f"error: {run['error']}"
                if run["error"]
                else f"{len(run['latencies_s'])}/{len(run['expected'])} turns, "
                f"{run['false']} false, {run['missed']} missed"
            )
            log(f"{target.name}: turns {name} round {r + 1}: {outcome}")
    out = summarize_turns(runs)
    out.update(rounds=plan.turn_rounds, lead_step_s=plan.turn_lead_step_s)
    return out


async def _idle_cpu_pct(target: Target, seconds: float) -> float:
    c0, t0 = target.cpu_s(), time.monotonic()
    await asyncio.sleep(seconds)
    return 100 * (target.cpu_s() - c0) / (time.monotonic() - t0)


@dataclass
class Window:
    """A measured window with ``n`` sessions (CPU in % of one core)."""

    n: int
    connected: int
    server_cpu_pct: float  # the server process, its own idle CPU (measured before) removed
    server_idle_pct: float
    client_cpu_pct: float  # this process: the client peers
    client_threads_pct: dict[str, float]
    other_cpu_pct: float  # other processes on the machine
    late_fraction: float
    coverage: float | None = None  # markers back / sent (lateness windows)
    rt_p95_s: float | None = None
    errors: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "connected": self.connected,
            "late_fraction": self.late_fraction,
            "coverage": self.coverage,
            "rt_p95_s": self.rt_p95_s,
            "server_cpu_pct": self.server_cpu_pct,
            "server_idle_pct": self.server_idle_pct,
            "client_cpu_pct": self.client_cpu_pct,
            "client_threads_pct": self.client_threads_pct,
            "other_cpu_pct": self.other_cpu_pct,
            "errors": self.errors,
        }


async def measure_window(
    target: Target,
    kind: str,
    n: int,
    window_s: float,
    plan: Plan,
    *,
    lateness: bool,
    light: bool = True,
    fresh: bool = True,
) -> Window:
    """Open ``n`` sessions of ``kind``, settle, measure a window, close them.

    ``light``: light client peers (pre-encoded packets out, RTP logged; bench.media).
    ``lateness``: also analyse the echo (late or missing frames, markers back, round trip).
    ``fresh``: in a fresh server process (restarted if it served any link before), after a
    warm-up connection: what earlier windows' sessions left behind (a worker blocked in a
    closed connection's ``emit``, an idle ``emit`` called in a loop) is not charged to this
    one.
    """
    if fresh:
        if target.opened:
            await target.restart()
        await close_all([await target.open("echo", timestamp_track())])  # the warm-up
        await target.reset()
    baseline = await _idle_cpu_pct(target, 1.0)
    make = packet_track if light else timestamp_track
    links = await open_many(target, kind, make, n, light=light)
    try:
        await asyncio.sleep(plan.settle_s)
        s0, c0, g0, t0, m0 = (
            target.cpu_s(),
            time.process_time(),
            thread_cpu_s(),
            time.time(),
            (proc_stat()),
        )
        await asyncio.sleep(window_s)
        s1, c1, g1, t1, m1 = (
            target.cpu_s(),
            time.process_time(),
            thread_cpu_s(),
            time.time(),
            (proc_stat()),
        )
    finally:
        await close_all(links)
        await target.reset()
    wall = t1 - t0
    ok = [link for link in links if link.error is None]
    late = missing = expected = 0
    coverage = rt95 = None
    if lateness:
        rts: list[float] = []
        sent = back = 0
        for link in ok:
            a, b, c = frame_lateness(link, t0, t1)
            late, missing, expected = late + a, missing + b, expected + c
            values, k_sent, k_back = round_trips(link, t0, t1)
            rts += values
            sent, back = sent + k_sent, back + k_back
        expected += round(window_s / 0.02) * (n - len(ok))
        missing += round(window_s / 0.02) * (n - len(ok))
        coverage = back / sent if sent else None
        rt95 = pct(rts, 95)
    server_raw, client = 100 * (s1 - s0) / wall, 100 * (c1 - c0) / wall
    return Window(
        n=n,
        connected=len(ok),
        server_cpu_pct=server_raw - baseline,
        server_idle_pct=baseline,
        client_cpu_pct=client,
        client_threads_pct={k: round(v, 2) for k, v in thread_pct(g0, g1, wall).items()},
        other_cpu_pct=max(0.0, busy_pct(m0, m1) - server_raw - client),
        late_fraction=(late + missing) / expected if expected else (0.0 if ok else 1.0),
        coverage=coverage,
        rt_p95_s=rt95,
        errors=[p for link in links for p in link.problems],
    )


#: The CPU figure's modes: stream kind -> key in the figure's entry.
CPU_MODES: dict[str, str] = {"echo": "echo", "echo-tight": "echo_tight", "idle": "idle"}


async def cpu(target: Target, plan: Plan) -> dict[str, Any]:
    """Server CPU per session, ``cpu_runs`` windows of ``cpu_n`` light sessions per mode
    (modes interleaved), the client's CPU beside."""
    modes = [kind for kind in CPU_MODES if target.supports(kind)]
    server: dict[str, list[float]] = {kind: [] for kind in modes}
    client: dict[str, list[float]] = {kind: [] for kind in modes}
    errors: list[str] = []
    n = plan.cpu_n
    for run in range(plan.cpu_runs):
        for kind in modes:
            w = await measure_window(target, kind, n, plan.cpu_window_s, plan, lateness=False)
            errors += [f"{kind} run {run + 1}: {e}" for e in w.errors]
            if w.connected == n:
                server[kind].append(w.server_cpu_pct / n)
                client[kind].append(w.client_cpu_pct / n)
            log(
                f"{target.name}: cpu {kind} N={n} run {run + 1}: server "
                f"{w.server_cpu_pct / n:.2f} %/session, client {w.client_cpu_pct / n:.2f} "
                f"%/session{'' if w.connected == n else f' ({w.connected}/{n} connected)'}"
            )
    out: dict[str, Any] = {"sessions": n, "runs": plan.cpu_runs, "window_s": plan.cpu_window_s}
    for kind in modes:
        out[CPU_MODES[kind]] = {
            "samples_pct": server[kind],
            "stats": spread(server[kind]),
            "median_pct": median(server[kind]),
            "client_samples_pct": client[kind],
            "client_median_pct": median(client[kind]),
        }
    out["errors"] = errors
    return out


async def capacity(target: Target, plan: Plan) -> dict[str, Any]:
    """Concurrent echo sessions held with an intact echo and under 1 % late or missing
    frames: N ramped by ``ramp_step``, then by 1 from the last step that passed."""
    token = CONNECT_DEADLINE.set(CAPACITY_CONNECT_TIMEOUT_S)
    try:
        return await _capacity(target, plan)
    finally:
        CONNECT_DEADLINE.reset(token)


def _step_passed(w: Window) -> bool:
    intact = w.coverage is not None and w.coverage >= MIN_COVERAGE
    return w.connected == w.n and intact and w.late_fraction < LATE_LIMIT


async def _capacity(target: Target, plan: Plan) -> dict[str, Any]:
    steps: list[dict[str, Any]] = []
    errors: list[str] = []
    started = time.monotonic()

    async def window(n: int, phase: str, attempt: int) -> bool:
        w = await measure_window(target, "echo", n, plan.cap_window_s, plan, lateness=True)
        passed = _step_passed(w)
        steps.append({**w.summary(), "phase": phase, "attempt": attempt, "passed": passed})
        errors.extend(f"N={n} ({phase} {attempt}): {e}" for e in w.errors)
        coverage = "n/a" if w.coverage is None else f"{100 * w.coverage:.0f} %"
        log(
            f"{target.name}: capacity N={n} ({phase}) late {100 * w.late_fraction:.2f} % "
            f"markers back {coverage}; server {w.server_cpu_pct:.0f} % client "
            f"{w.client_cpu_pct:.0f} % others {w.other_cpu_pct:.0f} % "
            f"{'ok' if passed else 'FAIL'}"
        )
        if not passed and w.other_cpu_pct > OTHER_LOAD_PCT:
            await asyncio.to_thread(wait_quiet, 30.0)
        return passed

    async def step(n: int, phase: str) -> bool:
        """A step passes in one of two windows (the second only if every session came up)."""
        if await window(n, phase, 1):
            return True
        last = steps[-1]
        if last["connected"] < n:
            return False
        return await window(n, phase, 2)

    def over_budget() -> bool:
        return time.monotonic() - started > plan.cap_budget_s

    held = 0
    failed_at: int | None = None
    stopped: str | None = None
    n = plan.ramp_start
    while n <= plan.ramp_max:
        if over_budget():
            stopped = f"time budget spent before N={n}"
            break
        if not await step(n, "ramp"):
            failed_at = n
            break
        held, n = n, n + plan.ramp_step
    if failed_at is not None:  # steps of 1 between the last pass and the first failure
        for m in range(held + 1, failed_at):
            if over_budget():
                stopped = f"time budget spent before N={m}"
                break
            if not await step(m, "fine"):
                failed_at = m
                break
            held = m
    if stopped is None:
        stopped = f"failed at N={failed_at}" if failed_at else f"cap N={plan.ramp_max} reached"
    if held:  # one more window at the held step: how close to the knee it is
        await window(held, "confirm", 1)

    def at(n: int) -> list[dict[str, Any]]:
        return [s for s in steps if s["n"] == n]

    held_steps = at(held)
    passing = [s for s in steps if s["passed"]]
    return {
        "held": held,
        "failed_at": failed_at,
        "stopped": stopped,
        "windows": len(steps),
        "steps": steps,
        "held_windows": len(held_steps),
        "held_passed": sum(1 for s in held_steps if s["passed"]),
        "held_late": spread([s["late_fraction"] for s in held_steps]),
        "next_late": spread([s["late_fraction"] for s in at(failed_at)] if failed_at else []),
        "held_server_pct": median([s["server_cpu_pct"] for s in held_steps]),
        "held_client_pct": median([s["client_cpu_pct"] for s in held_steps]),
        "held_other_pct": median([s["other_cpu_pct"] for s in held_steps]),
        "server_per_session_pct": spread([s["server_cpu_pct"] / s["n"] for s in passing]),
        "client_per_session_pct": spread([s["client_cpu_pct"] / s["n"] for s in passing]),
        "ramp": {"start": plan.ramp_start, "step": plan.ramp_step, "max": plan.ramp_max},
        "errors": errors,
    }


async def isolation(target: Target, plan: Plan) -> dict[str, Any]:
    """The echo's round trip and lateness alone, then beside a 200 ms video fn."""
    errors: list[str] = []

    async def measure(loaded: bool) -> tuple[list[float], float]:
        video = await target.open("video-200ms", video_track()) if loaded else None
        link = await target.open("echo-timed", timestamp_track())
        try:
            await asyncio.sleep(plan.settle_s)
            t0 = time.time()
            await asyncio.sleep(plan.isolation_window_s)
            t1 = time.time()
            await asyncio.sleep(0.5)
        finally:
            await close_all([x for x in (link, video) if x is not None])
        await target.markers()
        errors.extend(
            _problems("loaded" if loaded else "alone", [x for x in (link, video) if x is not None])
        )
        rts, _, _ = round_trips(link, t0, t1)
        late, missing, expected = frame_lateness(link, t0, t1)
        return rts, (late + missing) / expected if expected else 1.0

    alone, alone_late = await measure(False)
    loaded, loaded_late = await measure(True)
    a95, l95 = pct(alone, 95), pct(loaded, 95)
    return {
        "fn_s": 0.2,
        "alone": spread(alone),
        "loaded": spread(loaded),
        "alone_rt_p95_s": a95,
        "loaded_rt_p95_s": l95,
        "alone_late": alone_late,
        "loaded_late": loaded_late,
        "delta_p95_s": difference(l95, a95),
        "errors": errors,
    }


async def setup(target: Target, plan: Plan) -> dict[str, Any]:
    await target.offer_times()
    server: list[float] = []
    http: list[float] = []
    first: list[float] = []
    errors: list[str] = []
    for trial in range(plan.setup_trials):
        link = await target.open("echo", timestamp_track())
        await link.close()
        await target.reset()
        errors += _problems(f"trial {trial + 1}", [link])
        if link.error is None and link.first_media is not None:
            first.append(link.first_media - link.t_connect)
        if link.http_offer_s is not None:
            http.append(link.http_offer_s)
        if link.server_answer_s is not None:
            server.append(link.server_answer_s)
    server.extend(await target.offer_times())
    return {
        "trials": plan.setup_trials,
        "server_answer_s": server,
        "server_answer_p50_s": median(server),
        "http_offer_s": http,
        "http_offer_p50_s": median(http),
        "first_media_s": first,
        "first_media": spread(first),
        "first_media_p50_s": median(first),
        "first_media_p95_s": pct(first, 95),
        "errors": errors,
    }


#: The hostile classes the ``hostile`` figure posts (``fixtures.offers``, plus bad ids).
HOSTILE_CLASSES: tuple[str, ...] = (
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


async def _real_audio_offer() -> str:
    from aiortc import RTCConfiguration, RTCPeerConnection

    from fixtures.tracks import ToneAudioTrack

    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        pc.createDataChannel("text")
        pc.addTrack(ToneAudioTrack(440.0))
        await pc.setLocalDescription(await pc.createOffer())
        return str(pc.localDescription.sdp)
    finally:
        await pc.close()


def _hostile_body(sdp: str, kind: str, index: int) -> dict[str, str]:
    from fixtures.offers import BAD_IDS, hostile_offer

    if kind == "bad_id":
        return {"sdp": sdp, "type": "offer", "webrtc_id": BAD_IDS[index % len(BAD_IDS)]}
    n = {"many_sections": 3000, "padded": 2_000_000}.get(kind, 0)
    return {"sdp": hostile_offer(sdp, kind, n), "type": "offer", "webrtc_id": f"h{kind[:6]}{index}"}


def _reply_code(reply: Any) -> str:
    body = reply.body
    if reply.status != 200:
        return f"HTTP {reply.status}"
    if isinstance(body, dict) and body.get("type") == "answer":
        return "answered"
    meta = body.get("meta") if isinstance(body, dict) else None
    return str(meta.get("error")) if isinstance(meta, dict) else "failed (no code)"


async def hostile(target: Target, plan: Plan) -> dict[str, Any]:
    """Hostile offers (``fixtures.offers``) against a live echo session: for each class,
    the reply time, the reply codes, and the longest the server's event loop was blocked
    while that class was posted; the live session's longest audio gap over the burst."""
    from conformance.helpers import audio_gap

    sdp = await _real_audio_offer()
    link = await target.open("echo", timestamp_track())
    if link.error is not None:
        await close_all([link])
        return {
            "error": f"the live session did not start: {link.error}",
            "errors": _problems("live session", [link]),
        }
    classes: dict[str, Any] = {}
    try:
        await target.stall()
        await asyncio.sleep(plan.settle_s)
        baseline = await target.stall()  # the live session alone, no hostile traffic
        started = time.time()
        for kind in HOSTILE_CLASSES:
            times: list[float] = []
            codes: dict[str, int] = {}
            for index in range(plan.hostile_repeats):
                body = _hostile_body(sdp, kind, index)
                posted = time.perf_counter()
                reply = await target.post_offer("echo", body, f"hostile-{kind}-{index}")
                times.append(time.perf_counter() - posted)
                code = _reply_code(reply)
                codes[code] = codes.get(code, 0) + 1
            classes[kind] = {
                "n": len(times),
                "reply_s": times,
                "reply_p50_s": median(times),
                "reply": spread(times),
                "reply_max_s": max(times),
                "codes": codes,
                "stall_s": await target.stall(),
            }
        ended = time.time()
        gap = audio_gap(link.recorder, started, ended) if link.recorder is not None else None
    finally:
        await close_all([link])
    stalls = [c["stall_s"] for c in classes.values() if c["stall_s"] is not None]
    return {
        "classes": classes,
        "longest_stall_s": max(stalls) if stalls else None,
        "baseline_stall_s": baseline,
        "live_gap_s": gap,
        "repeats": plan.hostile_repeats,
        "errors": _problems("live session", [link]),
    }


#: Implementations the long soak runs for by default (it takes ``Plan.soak_s`` each).
SOAK_IMPLS: tuple[str, ...] = ("webrtc_ref",)


async def soak(target: Target, plan: Plan) -> dict[str, Any]:
    """``soak_sessions`` echo sessions connect, stream for 1-6 s and leave, over and over,
    for ``soak_s`` seconds; the server's OS threads, fds and RSS are sampled every
    ``soak_sample_s``. A flat curve means a closed session leaves nothing behind."""
    import random

    rng = random.Random(7)
    samples: list[dict[str, float]] = []
    errors: list[str] = []
    cycles = 0
    started = time.monotonic()
    stop_at = started + plan.soak_s

    async def lane() -> None:
        nonlocal cycles
        while time.monotonic() < stop_at:
            link = await target.open("echo", timestamp_track())
            if link.error is not None:
                errors.append(link.error)
            else:
                await asyncio.sleep(rng.uniform(1.0, 6.0))
            await link.close()
            cycles += 1

    async def sampler() -> None:
        while True:
            sample: dict[str, float] = {"t_s": time.monotonic() - started}
            sample.update(await target.resources())
            samples.append(sample)
            if time.monotonic() >= stop_at:
                return
            await asyncio.sleep(plan.soak_sample_s)

    await asyncio.gather(sampler(), *(lane() for _ in range(plan.soak_sessions)))
    await asyncio.sleep(2.0)  # the last sessions' closing
    final = {"t_s": time.monotonic() - started, **(await target.resources())}
    samples.append(final)
    half = [s for s in samples if s["t_s"] >= plan.soak_s / 2]
    first = samples[0]
    return {
        "sessions": plan.soak_sessions,
        "duration_s": plan.soak_s,
        "cycles": cycles,
        "samples": samples,
        "errors": errors[:20],
        "error_count": len(errors),
        "rss_growth_mb": (final["rss_kb"] - first["rss_kb"]) / 1024,
        "rss_second_half_growth_mb": (final["rss_kb"] - half[0]["rss_kb"]) / 1024 if half else None,
        "threads_first": first["threads"],
        "threads_last": final["threads"],
        "fds_first": first["fds"],
        "fds_last": final["fds"],
    }


FIGURES: dict[str, Callable[[Target, Plan], Awaitable[dict[str, Any]]]] = {
    "setup": setup,
    "audio_echo": audio_echo,
    "video_echo": video_echo,
    "video_slow": video_slow,
    "av_echo": av_echo,
    "turns": turns,
    "isolation": isolation,
    "capacity": capacity,
    "cpu": cpu,
    "hostile": hostile,
    "soak": soak,
}
#: The stream kinds each figure needs (a target lacking one reports the figure unsupported).
NEEDS: dict[str, tuple[str, ...]] = {
    "setup": ("echo",),
    "audio_echo": ("echo-timed",),
    "video_echo": ("video",),
    "video_slow": ("video-100ms",),
    "turns": ("turns",),
    "isolation": ("echo-timed", "video-200ms"),
    "capacity": ("echo",),
    "cpu": ("echo", "idle"),
    "hostile": ("echo", "gradio"),
    "soak": ("echo", "soak"),
    "av_echo": (AV_KIND,),
}
#: Figures measured after a warm-up connection (the first connection of a process pays for
#: imports and codec set-up), with the kind it uses.
WARM_UP: dict[str, str] = {
    "setup": "echo",
    "audio_echo": "echo-timed",
    "video_echo": "video",
    "video_slow": "video",
    "isolation": "echo-timed",
    "hostile": "echo",
    "av_echo": AV_KIND,
}


# --------------------------------------------------------------------------- the run


async def measure_figure(target: Target, figure: str, plan: Plan, results: dict[str, Any]) -> None:
    """One figure for one target, recorded in ``results[figure][target.name]``."""
    missing = [kind for kind in NEEDS[figure] if not target.supports(kind)]
    if missing:
        reason = target.unsupported.get(missing[0])
        if reason and target.name != FLOOR:
            results["implementations"][target.name]["unsupported"][figure] = reason
        return
    t = time.monotonic()
    if figure in WARM_UP:
        kind = WARM_UP[figure]
        await close_all([await target.open(kind, tracks_for(kind))])
        await target.reset()
    try:
        results.setdefault(figure, {})[target.name] = await FIGURES[figure](target, plan)
    except Exception as exc:
        log(f"{target.name}: {figure} failed: {type(exc).__name__}: {exc}")
        results.setdefault(figure, {})[target.name] = {"error": f"{type(exc).__name__}: {exc}"}
    log(f"{target.name}: {figure} done in {time.monotonic() - t:.0f} s")


async def bench_impl(
    impl: str, python: str, plan: Plan, figures: Sequence[str], results: dict[str, Any]
) -> None:
    """Every figure of ``impl``, each from a fresh server process.

    A fresh process per figure keeps one figure's leftovers out of the next: some
    implementations keep a closed connection's worker (a blocked ``emit``) or keep calling an
    idle ``emit``, and that would be charged to whatever is measured next.
    """
    for figure in figures:
        target = ImplTarget(impl, python)
        await target.start()
        try:
            if impl not in results["implementations"]:
                log(f"{impl} {target.info['version']} (Gradio {target.info['gradio']}): {python}")
                results["implementations"][impl] = {
                    "version": target.info["version"],
                    "gradio": target.info["gradio"],
                    "python": target.info["python"],
                    "notes": list(NOTES.get(impl, ())),
                    "unsupported": {},
                }
            await measure_figure(target, figure, plan, results)
        finally:
            await target.stop()


async def bench_floor(
    plan: Plan, figures: Sequence[str], results: dict[str, Any], *, core: bool = False
) -> None:
    """The floor's figures; with ``core``, also webrtc_ref's core for the CPU figure."""
    targets = [FloorTarget()]
    if core and "cpu" in figures:
        targets.append(FloorTarget(CORE, CORE_KINDS))
    for target in targets:
        await target.start()
        try:
            for figure in figures if target.name == FLOOR else ("cpu",):
                await measure_figure(target, figure, plan, results)
        finally:
            await target.stop()


def _ms(x: float | None) -> str:
    return "n/a" if x is None else f"{1000 * x:.0f} ms"


def _range(stats: Any, scale: float = 1.0, unit: str = "", key: str = "iqr") -> str:
    """``"IQR a–b unit"`` (or ``min–max``) of a :func:`conformance.bench.stats.spread`."""
    if not isinstance(stats, dict):
        return "n/a"
    low, high = (
        (stats.get("p25"), stats.get("p75"))
        if key == "iqr"
        else (
            stats.get("min"),
            stats.get("max"),
        )
    )
    if low is None or high is None:
        return "n/a"
    label = "IQR" if key == "iqr" else "min–max"
    digits = 0 if scale == 1000 else 2
    return f"{label} {low * scale:.{digits}f}–{high * scale:.{digits}f}{unit}"


def targets_table(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The project's performance targets for webrtc_ref, checked against this run.

    Each row: ``name``, ``target``, ``value`` (webrtc_ref), ``baseline`` (what it is compared
    with, measured in the same run: the floor, or "—" for an absolute target), ``ratio``
    (value / baseline, or None), ``n`` and ``spread`` (what the value rests on), ``met``
    (None when a figure is missing).
    """

    def entry(figure: str, name: str) -> dict[str, Any]:
        value = results.get(figure, {}).get(name, {})
        return value if isinstance(value, dict) else {}

    rows: list[dict[str, Any]] = []

    def row(name: str, target: str, value: str, met: bool | None, **extra: Any) -> None:
        rows.append(
            {
                "name": name,
                "target": target,
                "value": value,
                "baseline": extra.get("baseline", "—"),
                "ratio": extra.get("ratio"),
                "n": extra.get("n", "n/a"),
                "spread": extra.get("spread", "n/a"),
                "met": met,
            }
        )

    ref, floor = entry("audio_echo", BASELINE), entry("audio_echo", FLOOR)
    r95, f95 = ref.get("rt_p95_s"), floor.get("rt_p95_s")
    delta = difference(r95, f95)
    row(
        "Audio round trip p95",
        "within 40 ms of the bare aiortc echo",
        f"{_ms(r95)} ({'n/a' if delta is None else f'{1000 * delta:+.0f} ms'})",
        None if delta is None else delta <= TARGET_RT_P95_DELTA_S,
        baseline=f"{_ms(f95)} (floor)",
        ratio=ratio(r95, f95),
        n=f"{_get_n(ref, 'rt')} / {_get_n(floor, 'rt')} markers",
        spread=f"{_range(ref.get('rt'), 1000, ' ms')} / {_range(floor.get('rt'), 1000, ' ms')}",
    )
    ref, floor = entry("video_echo", BASELINE), entry("video_echo", FLOOR)
    fps, f_fps = ref.get("fps"), floor.get("fps")
    runs = [x for x in ref.get("fps_runs") or [] if x is not None]
    row(
        "Video 640x480@30 identity, delivered",
        ">= 29 fps",
        "n/a" if fps is None else f"{fps:.1f} fps",
        None if fps is None else fps >= TARGET_FPS,
        baseline="n/a" if f_fps is None else f"{f_fps:.1f} fps (floor)",
        ratio=ratio(fps, f_fps),
        n=f"{len(runs)} runs" if runs else "n/a",
        spread=f"min–max {min(runs):.1f}–{max(runs):.1f} fps" if runs else "n/a",
    )
    v_ref, v_floor = ref.get("g2g_p95_s"), floor.get("g2g_p95_s")
    added = difference(v_ref, v_floor)
    row(
        "Video glass-to-glass p95, added over the bare aiortc echo",
        "<= 1 frame (33 ms)",
        "n/a" if added is None else f"{1000 * added:+.0f} ms ({_ms(v_ref)})",
        None if added is None else added <= TARGET_G2G_ADDED_S,
        baseline=f"{_ms(v_floor)} (floor)",
        ratio=ratio(v_ref, v_floor),
        n=f"{_get_n(ref, 'g2g')} / {_get_n(floor, 'g2g')} frames",
        spread=f"{_range(ref.get('g2g'), 1000, ' ms')} / {_range(floor.get('g2g'), 1000, ' ms')}",
    )
    slow = entry("video_slow", BASELINE)
    growth = slow.get("growth_s")
    row(
        "Video with a 100 ms fn, latency growth over 30 s",
        "flat (< 1 frame)",
        "n/a" if growth is None else f"{1000 * growth:+.0f} ms",
        None if growth is None else growth < TARGET_GROWTH_S,
        baseline=f"{_ms(slow.get('first_p50_s'))} (its own first 5 s)",
        ratio=ratio(slow.get("last_p50_s"), slow.get("first_p50_s")),
        n=f"{_get_n(slow, 'first')} + {_get_n(slow, 'last')} frames",
        spread=f"last 5 s {_range(slow.get('last'), 1000, ' ms')}",
    )
    t = entry("turns", BASELINE)
    t95 = t.get("p95_s")
    n_turns = t.get("n") or 0
    bad = (t.get("false") or 0) + (t.get("missed") or 0)
    errors = t.get("error_runs") or 0
    silent = f"{t.get('silent_ok', 0)}/{t.get('silent_runs', 0)} silent runs silent"
    row(
        "Turn latency p95; false + missed turns; silent scenarios; errors",
        f"<= 600 ms over >= {TARGET_MIN_TURNS} turns; 0; all silent; 0",
        f"{_ms(t95)}; {bad}; {silent}; {errors}",
        None
        if t95 is None
        else (
            t95 <= TARGET_TURN_P95_S
            and n_turns >= TARGET_MIN_TURNS
            and bad == 0
            and t.get("silent_ok") == t.get("silent_runs")
            and errors == 0
        ),
        n=f"{n_turns} turns, {t.get('speech_scenarios', 0)} speech scenarios, "
        f"{t.get('runs', 0)} runs",
        spread=f"{_range(t.get('latency'), 1000, ' ms')}, "
        f"{_range(t.get('latency'), 1000, ' ms', 'minmax')}",
    )
    c_ref, c_floor = entry("cpu", BASELINE), entry("cpu", FLOOR)
    echo, tight = c_ref.get("echo") or {}, c_floor.get("echo_tight") or {}
    e_ref, e_tight = echo.get("median_pct"), tight.get("median_pct")
    r = ratio(e_ref, e_tight)
    sessions = c_ref.get("sessions", "n/a")
    row(
        "Server CPU per echo session vs the tight floor (bare-tight)",
        f"<= {TARGET_CPU_RATIO}x",
        "n/a" if e_ref is None else f"{e_ref:.2f} % of a core",
        None if r is None else r <= TARGET_CPU_RATIO,
        baseline="n/a" if e_tight is None else f"{e_tight:.2f} % (bare-tight)",
        ratio=r,
        n=f"{_get_n(echo, 'stats')} / {_get_n(tight, 'stats')} windows of {sessions} sessions",
        spread=f"{_range(echo.get('stats'), 1, ' %', 'minmax')} / "
        f"{_range(tight.get('stats'), 1, ' %', 'minmax')}",
    )
    idle, sink = c_ref.get("idle") or {}, c_floor.get("idle") or {}
    i_ref, i_floor = idle.get("median_pct"), sink.get("median_pct")
    over = difference(i_ref, i_floor)
    row(
        "Idle CPU per connection through Gradio vs the floor (bare-sink)",
        f"<= the floor + {TARGET_IDLE_OVER_PCT:g} % of a core",
        "n/a" if over is None else f"{i_ref:.2f} % of a core ({over:+.2f} % over the floor)",
        None if over is None else over <= TARGET_IDLE_OVER_PCT,
        baseline="n/a" if i_floor is None else f"{i_floor:.2f} % (bare-sink)",
        ratio=ratio(i_ref, i_floor),
        n=f"{_get_n(idle, 'stats')} / {_get_n(sink, 'stats')} windows of {sessions} sessions",
        spread=f"{_range(idle.get('stats'), 1, ' %', 'minmax')} / "
        f"{_range(sink.get('stats'), 1, ' %', 'minmax')}",
    )
    cap_ref, cap_floor = entry("capacity", BASELINE), entry("capacity", FLOOR)
    h_ref, h_floor = cap_ref.get("held"), cap_floor.get("held")
    r = ratio(h_ref, h_floor)
    row(
        "Echo sessions held (< 1 % late frames) vs the floor",
        f">= {TARGET_CAPACITY_RATIO}x",
        "n/a" if h_ref is None else f"{h_ref} (failed at {cap_ref.get('failed_at') or 'n/a'})",
        None if r is None else r >= TARGET_CAPACITY_RATIO,
        baseline="n/a" if h_floor is None else f"{h_floor} (floor)",
        ratio=r,
        n=f"{cap_ref.get('windows', 'n/a')} / {cap_floor.get('windows', 'n/a')} windows",
        spread="late at held "
        f"{_range(cap_ref.get('held_late'), 100, ' %', 'minmax')} / "
        f"{_range(cap_floor.get('held_late'), 100, ' %', 'minmax')}",
    )
    av_ref, av_floor = entry("av_echo", BASELINE), entry("av_echo", FLOOR)
    s_ref, s_floor = av_ref.get("abs_skew_p95_s"), av_floor.get("abs_skew_p95_s")
    row(
        "Audio-video echo: |skew| p95 at the server (audio - video transit)",
        f"<= {1000 * TARGET_AV_SKEW_S:.0f} ms",
        "n/a"
        if s_ref is None
        else f"{_ms(s_ref)} (p50 {1000 * (av_ref.get('skew_p50_s') or 0):+.0f} ms)",
        None if s_ref is None else s_ref <= TARGET_AV_SKEW_S,
        baseline=f"{_ms(s_floor)} (floor)",
        ratio=ratio(s_ref, s_floor),
        n=f"{_get_n(av_ref, 'skew')} / {_get_n(av_floor, 'skew')} frames",
        spread=f"{_range(av_ref.get('skew'), 1000, ' ms')} / "
        f"{_range(av_floor.get('skew'), 1000, ' ms')}",
    )
    iso = entry("isolation", BASELINE)
    d = iso.get("delta_p95_s")
    late = iso.get("loaded_late")
    row(
        "Isolation: echo p95 change beside a 200 ms video fn",
        "unaffected (< 20 ms, < 1 % late)",
        "n/a" if d is None else f"{1000 * d:+.0f} ms, {100 * (late or 0):.1f} % late",
        None if d is None else d < TARGET_ISOLATION_S and (late or 0) < LATE_LIMIT,
        baseline=f"{_ms(iso.get('alone_rt_p95_s'))} (the echo alone)",
        ratio=ratio(iso.get("loaded_rt_p95_s"), iso.get("alone_rt_p95_s")),
        n=f"{_get_n(iso, 'loaded')} / {_get_n(iso, 'alone')} markers",
        spread=f"{_range(iso.get('loaded'), 1000, ' ms')} / "
        f"{_range(iso.get('alone'), 1000, ' ms')}",
    )
    return rows


def _get_n(entry: dict[str, Any], key: str) -> str:
    stats = entry.get(key)
    n = stats.get("n") if isinstance(stats, dict) else None
    return "n/a" if n is None else str(n)


def default_python(impl: str) -> str:
    """The python of ``impl``'s conformance venv (``nox -s "conformance(impl='...')"``)."""
    if impl == BASELINE:
        return sys.executable
    venv = "conformance-impl-" + impl.replace(".", "-")
    return str(Path(__file__).resolve().parents[2] / ".nox" / venv / "bin" / "python")


async def run(
    impls: Sequence[str],
    pythons: dict[str, str],
    plan: Plan,
    figures: Sequence[str] = tuple(FIGURES),
    *,
    floor: bool = True,
) -> dict[str, Any]:
    """Measure ``figures`` for each of ``impls`` (then the floor); return the results dict.

    ``pythons``: implementation -> the python of its venv (default: :func:`default_python`).
    """
    started = time.monotonic()
    other = await asyncio.to_thread(wait_quiet, plan.quiet_wait_s)
    results: dict[str, Any] = {
        "schema": 2,
        "started": datetime.datetime.now().isoformat(timespec="seconds"),
        "plan": plan.name,
        "machine": {**machine(), "load_other_pct": other},
        "baseline": BASELINE,
        "floor": FLOOR,
        "core": CORE,
        "implementations": {},
    }
    for impl in impls:
        python = pythons.get(impl) or default_python(impl)
        if not Path(python).exists():
            log(f"{impl}: no venv at {python}; run nox -s \"conformance(impl='{impl}')\" first")
            results["implementations"][impl] = {
                "version": None,
                "notes": [f"not run: no venv at {python}"],
                "unsupported": {},
            }
            continue
        await bench_impl(impl, python, plan, figures, results)
    if floor:
        await bench_floor(plan, figures, results, core=BASELINE in impls)
    results["targets"] = targets_table(results)
    results["elapsed_s"] = time.monotonic() - started
    return results


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m conformance.bench",
        description="Benchmarks of implementations side by side (see docs/benchmarks.md).",
    )
    parser.add_argument(
        "--impl",
        action="append",
        help=f"an implementation (repeatable; default: {', '.join(DEFAULT_IMPLS)})",
    )
    parser.add_argument(
        "--python",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="the python of an implementation's venv (default: its conformance venv in .nox)",
    )
    parser.add_argument(
        "--figure",
        action="append",
        choices=list(FIGURES),
        help="measure only this figure (repeatable; default: all)",
    )
    parser.add_argument("--no-floor", action="store_true", help="skip the bare aiortc floor")
    parser.add_argument("--quick", action="store_true", help="fewer, shorter runs")
    parser.add_argument("--json", default="build/bench/results.json", type=Path)
    parser.add_argument(
        "--md", default=None, type=Path, help="write the report page (e.g. docs/benchmarks.md)"
    )
    args = parser.parse_args(argv)
    pythons = dict(item.split("=", 1) for item in args.python)
    plan = QUICK if args.quick else FULL
    from webrtc_ref.testing import loopback_ice

    with loopback_ice():
        results = asyncio.run(
            run(
                args.impl or DEFAULT_IMPLS,
                pythons,
                plan,
                args.figure or tuple(FIGURES),
                floor=not args.no_floor,
            )
        )
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=1))
    log(f"results: {args.json} ({results['elapsed_s']:.0f} s)")
    for row in results["targets"]:
        mark = {True: "met", False: "NOT MET", None: "n/a"}[row["met"]]
        against = "" if row["ratio"] is None else f" ({row['ratio']:.2f}x {row['baseline']})"
        log(
            f"  {row['name']}: {row['value']}{against} (target {row['target']}; "
            f"n {row['n']}; {row['spread']}): {mark}"
        )
    if args.md is not None:
        from conformance.bench.report import write_report

        assets = args.md.parent / args.md.stem
        write_report(results, args.md, assets)
        assets.mkdir(parents=True, exist_ok=True)
        (assets / "results.json").write_text(json.dumps(results, indent=1))  # published with it
        log(f"report: {args.md} (figures, plots and results.json in {assets})")
    return 0
