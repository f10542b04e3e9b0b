"""Side-by-side benchmarks of implementations, measured in one run on one machine.

Each implementation serves :mod:`conformance.bench.server` (the apps the user guide would
write, built with its conformance adapter's API) from **its own venv, in its own process**;
the floor is a bare aiortc peer with no component (``webrtc_ref.bench._servers``, the
``bare-echo`` / ``bare-sink`` kinds). This process is the client: the conformance suite's
wire client (:class:`conformance.wire.WirePeer`, a real aiortc peer that speaks each
implementation's protocol like its browser client) sends fixture media over loopback and
records what comes back. Figures, per implementation (and the floor where it applies):

1. **Audio echo** (the guide's ``EchoHandler``): round trip of every 100 ms
   ``fixtures.timestamps`` marker (client send -> echoed marker heard at the client), and
   client -> ``receive()`` (send -> the handler call holding the marker, one-way into the
   user's code; one ``time.time()`` clock for both processes).
2. **Video echo**, 640x480 at 30 fps, identity ``fn``: delivered fps, frame loss and
   glass-to-glass latency by frame id (``fixtures.video`` barcode).
3. **Video with a 100 ms fn** for 30 s: latency by arrival time; growth = median of the last
   5 s - median of the first 5 s (after a 2 s warm-up). A bounded pipeline stays flat.
4. **Turn latency**: ``fixtures.speech`` scenarios through ``ReplyOnPause`` whose generator
   replies at once with a 1 kHz tone; end of speech (manifest) -> the reply's first frame at
   the client; false and missed turns.
5. **Server CPU per connection**, idle (``emit`` returns ``None``) and echoing, N = 1 and 4,
   from ``/proc/<pid>/stat`` of the server process, less its own idle CPU measured just before.
6. **Capacity**: N concurrent echo sessions, N ramped; a step passes when every session
   connected and under 1 % of the 20 ms frames are late (> 40 ms behind the stream's best
   arrival offset) or missing (``webrtc_ref.bench.echo.frame_lateness``).
7. **Isolation**: a 200 ms video ``fn`` on one connection (640x480 at 30 fps) while another
   connection's audio echo is measured, against the same echo alone.
8. **Setup**: offer -> answer inside the server (its ``offer`` server function, timed),
   the offer's HTTP round trip at the client, connect -> first media at the client.

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
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

FLOOR = "aiortc"
BASELINE = "webrtc_ref"
DEFAULT_IMPLS: tuple[str, ...] = ("webrtc_ref", "gradio_webrtc", "fastrtc")
#: Server kinds of the floor for each bench stream (see webrtc_ref.bench._servers).
FLOOR_KINDS: dict[str, str] = {
    "echo": "bare-echo",
    "echo-timed": "bare-echo",
    "idle": "bare-sink",
    "video": "bare-echo",
}
LATE_LIMIT = 0.01
#: Other processes using more than this (% of one core) during a window disturb it.
OTHER_LOAD_PCT = 15.0
REPLY_HZ = 1000.0
#: A turn matches an end of speech when its reply starts within this window after it.
TURN_WINDOW_S = 1.5
#: Replies closer than this to the previous reply frame belong to the same reply.
REPLY_GAP_S = 0.6
CONNECT_TIMEOUT_S = 20.0
#: A capacity step gives up on a session with no media after this long.
CAPACITY_CONNECT_TIMEOUT_S = 10.0
#: The media deadline of ``Target.open`` in the current task (capacity sets a shorter one).
CONNECT_DEADLINE: contextvars.ContextVar[float] = contextvars.ContextVar(
    "CONNECT_DEADLINE", default=CONNECT_TIMEOUT_S
)
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
    turn_scenarios: tuple[str, ...]
    cpu_ns: tuple[int, ...]
    cpu_window_s: float
    ramp: tuple[int, ...]
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


FULL = Plan(
    name="full",
    settle_s=1.0,
    echo_runs=3,
    echo_window_s=3.5,
    video_runs=2,
    video_window_s=5.0,
    slow_s=30.0,
    turn_scenarios=("speech_pause_speech", "hesitations", "noise_only"),
    cpu_ns=(4,),
    cpu_window_s=3.0,
    ramp=(4, 8, 12, 16, 20, 24, 32),
    cap_window_s=4.0,
    cap_budget_s=50.0,
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
    turn_scenarios=("speech_pause_speech",),
    cpu_ns=(1,),
    cpu_window_s=2.5,
    ramp=(2, 4),
    cap_window_s=2.5,
    cap_budget_s=20.0,
    isolation_window_s=3.0,
    setup_trials=2,
    quiet_wait_s=5.0,
    hostile_repeats=3,
    soak_sessions=4,
    soak_s=30.0,
    soak_sample_s=3.0,
)


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def pct(values: Sequence[float], q: float) -> float | None:
    return float(np.percentile(np.asarray(values, dtype=np.float64), q)) if values else None


def median(values: Sequence[float]) -> float | None:
    return float(statistics.median(values)) if values else None


def process_cpu_s(pid: int) -> float:
    """CPU seconds (user + system, every thread) of process ``pid`` so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# --------------------------------------------------------------------------- links


@dataclass
class Link:
    """One client peer connected to a bench stream, and what it recorded.

    ``recorder``: ``fixtures.tracks.AudioRecorder`` (``.frames``: ``(position, n,
    arrival)``) or the wire client's video recorder (``.frames``: ``ReceivedFrame``).
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

    @property
    def first_media(self) -> float | None:
        frames = getattr(self.recorder, "frames", None)
        if not frames:
            return None
        first = frames[0]
        return float(first[2] if isinstance(first, tuple) and len(first) == 3 else first.arrival)

    async def close(self) -> None:
        if self.close_fn is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.close_fn(), 10)


class Target:
    """Something serving bench streams: an implementation's server, or the floor."""

    name: str
    pid: int
    streams: dict[str, dict[str, Any]]
    unsupported: dict[str, str]

    def supports(self, kind: str) -> bool:
        return kind in self.streams

    async def open(self, kind: str, track: Any) -> Link:
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
    timeout = min(timeout, CONNECT_DEADLINE.get())
    deadline = time.monotonic() + timeout
    while link.first_media is None:
        if time.monotonic() > deadline:
            link.error = f"no media within {timeout:g} s"
            return
        await asyncio.sleep(0.005)


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

    async def open(self, kind: str, track: Any) -> Link:
        wire = self._wire(kind)
        peer = wire.peer(send=track)
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
            link.recorder = await peer.wait_remote(CONNECT_TIMEOUT_S)
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
    """Bare aiortc peers (no component) behind HTTP, in their own process."""

    def __init__(self) -> None:
        from webrtc_ref.bench._servers import ServerProcess

        self.name = FLOOR
        self.server = ServerProcess(max_seconds=3600)
        self.streams = {kind: {"kind": k} for kind, k in FLOOR_KINDS.items()}
        self.unsupported = {}
        self.http: Any = None

    async def start(self) -> None:
        import httpx

        await asyncio.to_thread(self.server.start)
        self.pid = self.server.pid
        self.http = httpx.AsyncClient()

    async def open(self, kind: str, track: Any) -> Link:
        from conformance.wire import video_recorder
        from fixtures.tracks import AudioRecorder
        from webrtc_ref.testing import ClientPeer

        peer = ClientPeer(send=track)
        link = Link(kind, track, peer, time.time())

        async def close() -> None:
            if link.recorder is not None:
                await link.recorder.stop()
            await peer.close()

        link.close_fn = close

        async def signal(body: dict[str, str]) -> dict[str, Any]:
            t = time.time()
            response = await self.http.post(
                f"{self.server.url}/offer/{FLOOR_KINDS[kind]}", json=body, timeout=30
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
    target: Target, kind: str, make_track: Callable[[], Any], n: int, concurrency: int = 6
) -> list[Link]:
    gate = asyncio.Semaphore(concurrency)

    async def one() -> Link:
        async with gate:
            return await target.open(kind, make_track())

    return list(await asyncio.gather(*(one() for _ in range(n))))


async def close_all(links: Sequence[Link]) -> None:
    await asyncio.gather(*(link.close() for link in links))


def timestamp_track() -> Any:
    from fixtures.tracks import TimestampAudioTrack

    return TimestampAudioTrack()


def video_track() -> Any:
    from fixtures.tracks import BarcodeVideoTrack

    return BarcodeVideoTrack(640, 480, 30)


# --------------------------------------------------------------------------- figures


async def audio_echo(target: Target, plan: Plan) -> dict[str, Any]:
    """Round trip and client -> ``receive()`` of the timestamp markers (N = 1 runs)."""
    from webrtc_ref.bench.echo import round_trips

    rts: list[float] = []
    ins: list[float] = []
    sent_total = back_total = 0
    errors: list[str] = []
    for _ in range(plan.echo_runs):
        await target.markers()  # forget earlier blocks
        link = await target.open("echo-timed", timestamp_track())
        try:
            if link.error:
                errors.append(link.error)
                continue
            await asyncio.sleep(plan.settle_s)
            t0 = time.time()
            await asyncio.sleep(plan.echo_window_s)
            t1 = time.time()
            await asyncio.sleep(0.5)  # the last markers' echoes
        finally:
            await link.close()
            await target.reset()
        values, sent, back = round_trips(link, t0, t1)  # type: ignore[arg-type]
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
        "rt_p50_s": pct(rts, 50),
        "rt_p95_s": pct(rts, 95),
        "in_s": None if is_floor else ins,
        "in_p50_s": None if is_floor else pct(ins, 50),
        "in_p95_s": None if is_floor else pct(ins, 95),
        "coverage": back_total / sent_total if sent_total else None,
        "errors": errors,
    }


def _video_stats(link: Link, t0: float, t1: float, grace: float = 0.5) -> dict[str, Any]:
    """fps, loss and glass-to-glass latencies of the frames sent in ``[t0, t1 - grace]``."""
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
    for _ in range(plan.video_runs):
        link = await target.open("video", video_track())
        try:
            if link.error:
                errors.append(link.error)
                continue
            await asyncio.sleep(plan.settle_s + 0.5)
            t0 = time.time()
            await asyncio.sleep(plan.video_window_s)
            t1 = time.time()
            await asyncio.sleep(0.5)
        finally:
            await link.close()
            await target.reset()
        stats = _video_stats(link, t0, t1)
        fps.append(stats["fps"])
        if stats["loss"] is not None:
            losses.append(stats["loss"])
        g2g.extend(stats["g2g_s"])
    return {
        "runs": plan.video_runs,
        "fps": median(fps),
        "loss": median(losses),
        "g2g_s": g2g,
        "g2g_p50_s": pct(g2g, 50),
        "g2g_p95_s": pct(g2g, 95),
        "errors": errors,
    }


async def video_slow(target: Target, plan: Plan, kind: str = "video-100ms") -> dict[str, Any]:
    """Latency over ``plan.slow_s`` with a slow ``fn``, by arrival time."""
    link = await target.open(kind, video_track())
    try:
        if link.error:
            return {"error": link.error}
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
        "first_p50_s": first_p50,
        "last_p50_s": last_p50,
        "growth_s": None if first_p50 is None or last_p50 is None else last_p50 - first_p50,
        "fps": stats["fps"],
        "loss": stats["loss"],
    }


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


async def turns(target: Target, plan: Plan) -> dict[str, Any]:
    """End of speech -> first reply frame at the client, over the speech scenarios."""
    from fixtures.analysis import match_turns
    from fixtures.speech import build_scenario
    from fixtures.tracks import ArrayAudioTrack

    latencies: list[float] = []
    false = missed = expected_total = 0
    per_scenario: dict[str, Any] = {}
    for name in plan.turn_scenarios:
        scenario = build_scenario(name, 48000)
        track = ArrayAudioTrack(scenario.audio, scenario.sample_rate, on_end="silence")
        link = await target.open("turns", track)
        try:
            if link.error:
                per_scenario[name] = {"error": link.error}
                missed += len(scenario.expected_turn_ends)
                expected_total += len(scenario.expected_turn_ends)
                continue
            duration = len(scenario.audio) / scenario.sample_rate
            assert track.start_time is not None
            end = track.start_time + duration + 1.5
            await asyncio.sleep(max(0.0, end - time.time()))
        finally:
            await link.close()
        start = track.start_time or 0.0
        heard = [t - start for t in reply_onsets(link)]
        match = match_turns(heard, scenario.expected_turn_ends, max_delay_s=TURN_WINDOW_S)
        latencies.extend(t - e for e, t in match.matched)
        false += len(match.spurious)
        missed += len(match.missed)
        expected_total += len(scenario.expected_turn_ends)
        per_scenario[name] = {
            "expected": list(scenario.expected_turn_ends),
            "heard": heard,
            "false": len(match.spurious),
            "missed": len(match.missed),
        }
    return {
        "turns": expected_total,
        "latencies_s": latencies,
        "p50_s": pct(latencies, 50),
        "p95_s": pct(latencies, 95),
        "false": false,
        "missed": missed,
        "scenarios": per_scenario,
    }


async def _idle_cpu_pct(target: Target, seconds: float) -> float:
    c0, t0 = target.cpu_s(), time.monotonic()
    await asyncio.sleep(seconds)
    return 100 * (target.cpu_s() - c0) / (time.monotonic() - t0)


@dataclass
class Window:
    """A measured window with ``n`` sessions."""

    n: int
    connected: int
    server_cpu_pct: float
    client_cpu_pct: float
    late_fraction: float
    other_cpu_pct: float  # other processes on the machine, % of one core
    errors: list[str] = field(default_factory=list)


async def measure_window(
    target: Target, kind: str, n: int, window_s: float, plan: Plan, *, lateness: bool
) -> Window:
    """Open ``n`` sessions of ``kind``, settle, measure a window, close them."""
    from webrtc_ref.bench.echo import _proc_stat, frame_lateness

    baseline = await _idle_cpu_pct(target, 1.0)
    links = await open_many(target, kind, timestamp_track, n)
    try:
        await asyncio.sleep(plan.settle_s)
        s0, c0, t0, m0 = target.cpu_s(), time.process_time(), time.time(), _proc_stat()
        await asyncio.sleep(window_s)
        s1, c1, t1, m1 = target.cpu_s(), time.process_time(), time.time(), _proc_stat()
    finally:
        await close_all(links)
        await target.reset()
    wall = t1 - t0
    late = missing = expected = 0
    ok = [link for link in links if link.error is None]
    if lateness:
        for link in ok:
            a, b, c = frame_lateness(link, t0, t1)  # type: ignore[arg-type]
            late, missing, expected = late + a, missing + b, expected + c
        expected += round(window_s / 0.02) * (n - len(ok))
        missing += round(window_s / 0.02) * (n - len(ok))
    server_raw, client = 100 * (s1 - s0) / wall, 100 * (c1 - c0) / wall
    machine_total = m1[1] - m0[1]
    machine = 100 * (m1[0] - m0[0]) / machine_total * (os.cpu_count() or 1) if machine_total else 0
    return Window(
        n=n,
        connected=len(ok),
        server_cpu_pct=server_raw - baseline,
        client_cpu_pct=client,
        other_cpu_pct=max(0.0, machine - server_raw - client),
        late_fraction=(late + missing) / expected if expected else (0.0 if ok else 1.0),
        errors=[link.error for link in links if link.error][:3],
    )


async def cpu(target: Target, plan: Plan) -> dict[str, Any]:
    out: dict[str, Any] = {"echo": {}, "idle": {}}
    for kind in ("echo", "idle"):
        for n in plan.cpu_ns:
            w = await measure_window(target, kind, n, plan.cpu_window_s, plan, lateness=False)
            out[kind][str(n)] = w.server_cpu_pct / n if w.connected == n else None
            log(f"{target.name}: cpu {kind} N={n}: {w.server_cpu_pct / n:.2f} % of a core/conn")
    return out


async def capacity(target: Target, plan: Plan) -> dict[str, Any]:
    """Concurrent echo sessions held with under 1 % late or missing frames (N ramped)."""
    token = CONNECT_DEADLINE.set(CAPACITY_CONNECT_TIMEOUT_S)
    try:
        return await _capacity(target, plan)
    finally:
        CONNECT_DEADLINE.reset(token)


async def _capacity(target: Target, plan: Plan) -> dict[str, Any]:
    from webrtc_ref.bench.echo import wait_quiet

    steps: list[dict[str, Any]] = []
    held = 0
    stopped = f"cap N={plan.ramp[-1]} reached"
    started = time.monotonic()
    for n in plan.ramp:
        if time.monotonic() - started > plan.cap_budget_s:
            stopped = f"time budget spent before N={n}"
            break
        attempts = 2
        for attempt in range(3):
            w = await measure_window(target, "echo", n, plan.cap_window_s, plan, lateness=True)
            passed = w.connected == n and w.late_fraction < LATE_LIMIT
            steps.append(
                {
                    "n": n,
                    "connected": w.connected,
                    "late_fraction": w.late_fraction,
                    "server_cpu_pct": w.server_cpu_pct,
                    "client_cpu_pct": w.client_cpu_pct,
                    "other_cpu_pct": w.other_cpu_pct,
                    "passed": passed,
                    "errors": w.errors,
                }
            )
            log(
                f"{target.name}: capacity N={n} late {100 * w.late_fraction:.2f} % "
                f"server {w.server_cpu_pct:.0f} % client {w.client_cpu_pct:.0f} % "
                f"others {w.other_cpu_pct:.0f} % {'ok' if passed else 'FAIL'}"
            )
            # A step where every session connected may have met a passing load spike: once
            # more; and once more again after waiting for quiet if other processes were busy.
            if w.other_cpu_pct > OTHER_LOAD_PCT and attempt == 1:
                attempts = 3
                await asyncio.to_thread(wait_quiet, 30.0)
            if passed or attempt + 1 >= attempts or w.connected < n:
                break
        if not passed:
            stopped = f"failed at N={n}"
            break
        held = n
    return {"held": held, "stopped": stopped, "steps": steps}


async def isolation(target: Target, plan: Plan) -> dict[str, Any]:
    """The echo's round trip and lateness alone, then beside a 200 ms video fn."""
    from webrtc_ref.bench.echo import frame_lateness, round_trips

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
        rts, _, _ = round_trips(link, t0, t1)  # type: ignore[arg-type]
        late, missing, expected = frame_lateness(link, t0, t1)  # type: ignore[arg-type]
        return rts, (late + missing) / expected if expected else 1.0

    alone, alone_late = await measure(False)
    loaded, loaded_late = await measure(True)
    a95, l95 = pct(alone, 95), pct(loaded, 95)
    return {
        "fn_s": 0.2,
        "alone_rt_p95_s": a95,
        "loaded_rt_p95_s": l95,
        "alone_late": alone_late,
        "loaded_late": loaded_late,
        "delta_p95_s": None if a95 is None or l95 is None else l95 - a95,
    }


async def setup(target: Target, plan: Plan) -> dict[str, Any]:
    await target.offer_times()
    server: list[float] = []
    http: list[float] = []
    first: list[float] = []
    for _ in range(plan.setup_trials):
        link = await target.open("echo", timestamp_track())
        await link.close()
        await target.reset()
        if link.error is None and link.first_media is not None:
            first.append(link.first_media - link.t_connect)
        if link.http_offer_s is not None:
            http.append(link.http_offer_s)
        if link.server_answer_s is not None:
            server.append(link.server_answer_s)
    server.extend(await target.offer_times())
    return {
        "server_answer_s": server,
        "server_answer_p50_s": median(server),
        "http_offer_s": http,
        "http_offer_p50_s": median(http),
        "first_media_s": first,
        "first_media_p50_s": median(first),
        "first_media_p95_s": pct(first, 95),
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
        return {"error": f"the live session did not start: {link.error}"}
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
        track = video_track() if kind.startswith("video") else timestamp_track()
        await close_all([await target.open(kind, track)])
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


async def bench_floor(plan: Plan, figures: Sequence[str], results: dict[str, Any]) -> None:
    floor = FloorTarget()
    await floor.start()
    try:
        for figure in figures:
            await measure_figure(floor, figure, plan, results)
    finally:
        await floor.stop()


def _ratio(value: float | None, base: float | None) -> float | None:
    return value / base if value is not None and base else None


def targets_table(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The project's performance targets for webrtc_ref, checked against this run."""

    def get(figure: str, impl: str, key: str) -> Any:
        return results.get(figure, {}).get(impl, {}).get(key)

    def ms(x: float | None) -> str:
        return "n/a" if x is None else f"{1000 * x:.0f} ms"

    rows: list[dict[str, Any]] = []
    ref, floor = get("audio_echo", BASELINE, "rt_p95_s"), get("audio_echo", FLOOR, "rt_p95_s")
    rows.append(
        {
            "name": "Audio round trip p95",
            "target": "within 40 ms of the bare aiortc echo",
            "value": f"{ms(ref)} vs {ms(floor)}",
            "met": None if ref is None or floor is None else ref - floor <= 0.040,
        }
    )
    fps = get("video_echo", BASELINE, "fps")
    rows.append(
        {
            "name": "Video 640x480@30 identity, delivered",
            "target": ">= 29 fps",
            "value": "n/a" if fps is None else f"{fps:.1f} fps",
            "met": None if fps is None else fps >= 29,
        }
    )
    v_ref, v_floor = get("video_echo", BASELINE, "g2g_p95_s"), get("video_echo", FLOOR, "g2g_p95_s")
    rows.append(
        {
            "name": "Video glass-to-glass p95, added over the bare aiortc echo",
            "target": "<= 1 frame (33 ms)",
            "value": "n/a" if v_ref is None or v_floor is None else ms(v_ref - v_floor),
            "met": None if v_ref is None or v_floor is None else v_ref - v_floor <= 1 / 30,
        }
    )
    growth = get("video_slow", BASELINE, "growth_s")
    rows.append(
        {
            "name": "Video with a 100 ms fn, latency growth over 30 s",
            "target": "flat (< 1 frame)",
            "value": ms(growth),
            "met": None if growth is None else growth < 1 / 30,
        }
    )
    t95 = get("turns", BASELINE, "p95_s")
    bad = (get("turns", BASELINE, "false") or 0) + (get("turns", BASELINE, "missed") or 0)
    rows.append(
        {
            "name": "Turn latency p95; false + missed turns",
            "target": "<= 600 ms; 0",
            "value": f"{ms(t95)}; {bad}",
            "met": None if t95 is None else t95 <= 0.6 and bad == 0,
        }
    )
    c_ref = results.get("cpu", {}).get(BASELINE, {}).get("echo", {})
    c_floor = results.get("cpu", {}).get(FLOOR, {}).get("echo", {})
    ratios = [r for n in c_ref if (r := _ratio(c_ref.get(n), c_floor.get(n))) is not None]
    rows.append(
        {
            "name": "Server CPU per echo session vs the floor",
            "target": "<= 1.15x",
            "value": ", ".join(f"{r:.2f}x" for r in ratios) or "n/a",
            "met": None if not ratios else max(ratios) <= 1.15,
        }
    )
    h_ref, h_floor = get("capacity", BASELINE, "held"), get("capacity", FLOOR, "held")
    rows.append(
        {
            "name": "Echo sessions held (< 1 % late frames) vs the floor",
            "target": ">= 0.9x",
            "value": f"{h_ref} vs {h_floor}",
            "met": None if h_ref is None or not h_floor else h_ref >= 0.9 * h_floor,
        }
    )
    delta = get("isolation", BASELINE, "delta_p95_s")
    late = get("isolation", BASELINE, "loaded_late")
    rows.append(
        {
            "name": "Isolation: echo p95 change beside a 200 ms video fn",
            "target": "unaffected (< 20 ms, < 1 % late)",
            "value": "n/a" if delta is None else f"{ms(delta)}, {100 * (late or 0):.1f} % late",
            "met": None if delta is None else delta < 0.020 and (late or 0) < LATE_LIMIT,
        }
    )
    return rows


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
    from webrtc_ref.bench.echo import machine, wait_quiet

    started = time.monotonic()
    other = await asyncio.to_thread(wait_quiet, plan.quiet_wait_s)
    results: dict[str, Any] = {
        "schema": 1,
        "started": datetime.datetime.now().isoformat(timespec="seconds"),
        "plan": plan.name,
        "machine": {**machine(), "load_other_pct": other},
        "baseline": BASELINE,
        "floor": FLOOR,
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
        await bench_floor(plan, figures, results)
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
        log(f"  {row['name']}: {row['value']} (target {row['target']}): {mark}")
    if args.md is not None:
        from conformance.bench.report import write_report

        assets = args.md.parent / args.md.stem
        write_report(results, args.md, assets)
        assets.mkdir(parents=True, exist_ok=True)
        (assets / "results.json").write_text(json.dumps(results, indent=1))  # published with it
        log(f"report: {args.md} (figures, plots and results.json in {assets})")
    return 0
