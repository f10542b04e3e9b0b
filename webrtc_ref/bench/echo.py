"""Echo benchmark of the streaming core: webrtc_ref's StreamServer against bare aiortc.

Client peers (``webrtc_ref.testing.ClientPeer``, in this process) send the
``fixtures.timestamps`` carrier (``TimestampAudioTrack``) to a server in a **separate
process** (``webrtc_ref.bench._servers``: Starlette + uvicorn on a free 127.0.0.1 port), so
the server's CPU is measured alone. All ICE stays on 127.0.0.1. Server kinds:

- ``ref-echo``: ``StreamServer`` with the user guide's ``EchoHandler`` (``emit`` blocks in
  ``Queue.get()``);
- ``bare-echo``: the floor, a plain ``RTCPeerConnection`` doing ``pc.addTrack(track)``;
- ``bare-tight``: the same, each frame copied into a tightly sized ``av.AudioFrame`` first:
  a fairer CPU floor, because aiortc's sender computes the RTP audio level in pure Python
  over the decoder's whole (120 ms) frame buffer, a cost webrtc_ref's own frames never pay;
- ``ref-idle``: ``StreamServer`` whose handler receives the audio and emits ``None``;
- ``bare-sink``: the idle floor, a plain peer that reads the audio and discards it.

(``--quick`` leaves ``bare-tight`` out.)

Figures (each from several runs; ``--quick`` does fewer, shorter ones):

1. **Round trip**: every 100 ms block of the carrier is decoded from the echoed audio
   (after the run, ``fixtures.timestamps.decode``); round trip = arrival of the received
   frame holding the block start - send time of that sample (``fixtures.tracks`` semantics).
   p50 / p95 / max over the pooled markers of the N = 1 runs; coverage = markers that came
   back / markers sent in the measurement window.
2. **Server CPU per connection**: ``time.process_time()`` of the server process over a
   steady window, less its empty baseline, / N, as % of one core; N = 1, 4, 8.
3. **Capacity**: N concurrent echo sessions, N ramped 4, 8, 12, 16, 24, ...; a step passes
   when under 1 % of the 20 ms frames expected in the window are late or missing. A frame
   is late when it arrives > 40 ms after its due time, due = ``position / rate`` + the
   stream's own best (earliest) ``arrival - position / rate`` since its first frame, so delay
   that built up at any time since the stream started counts. The ramp stops at the first
   failure (retried once), at the cap, or when the time budget is spent. The client peers
   run on the same 2 cores, so the client's CPU is reported beside.
4. **Setup**: offer -> answer at the server (ICE gathering included); connect (client
   starts building its offer) -> first echoed audio frame at the client.

The 2 cores are shared with whatever else runs on the machine: the CPU of other processes
during each window is reported (``/proc/stat`` less server and client), and the report warns
when it exceeds 15 % of a core. ``--wait-quiet SECONDS`` first waits (up to SECONDS) for an
idle machine and, when a capacity step fails under foreign load, waits again and retries.
Server CPU is also split by thread role (event loop, handler receive / emit workers,
executor, aiortc decoder), and the frames waiting in each ref-echo outbound track are
sampled at the end of each window (``out backlog``: 20 ms of added latency per frame).

Run: ``python -m webrtc_ref.bench.echo [--quick] [--json PATH] [--wait-quiet SECONDS]``;
``run(quick)`` returns the same figures as a dict for a top-level runner, ``format_report``
renders them.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: Server kinds; the floor of each webrtc_ref kind.
ECHO_KINDS: tuple[str, ...] = ("ref-echo", "bare-echo", "bare-tight")
IDLE_KINDS: tuple[str, ...] = ("ref-idle", "bare-sink")
SETUP_KINDS: tuple[str, ...] = ("ref-echo", "bare-echo")
FLOOR: dict[str, str] = {"ref-echo": "bare-echo", "ref-idle": "bare-sink"}
#: The floor without aiortc's audio-level cost on oversized decoded frames (see _servers).
FAIR_FLOOR: dict[str, str] = {"ref-echo": "bare-tight"}

FRAME_S = 0.020
LATE_AFTER_S = 0.040
LATE_LIMIT = 0.01
RATE = 48_000
#: Markers sent in the last GRACE_S of a window are not counted (their echo may be in flight).
GRACE_S = 0.5

#: Targets (from the project's performance goals), checked in the report.
TARGET_RT_P95_DELTA_S = 0.040
TARGET_CPU_RATIO = 1.15
TARGET_IDLE_OVERHEAD_PCT = 1.0
#: Other processes using more than this (% of one core) during a run make the report warn.
OTHER_LOAD_WARN_PCT = 15.0


@dataclass(frozen=True)
class Plan:
    """How much to run."""

    runs: int
    kinds: tuple[str, ...]
    cpu_ns: tuple[int, ...]
    settle_s: float
    window_s: float
    setup_trials: int
    ramp: tuple[int, ...]
    cap_window_s: float
    budget_s: float
    connect_concurrency: int = 8


FULL = Plan(
    runs=3,
    kinds=(*ECHO_KINDS, *IDLE_KINDS),
    cpu_ns=(1, 4, 8),
    settle_s=1.0,
    window_s=3.5,
    setup_trials=6,
    ramp=(4, 8, 12, 16, 24, 32, 40, 48, 64),
    cap_window_s=5.0,
    budget_s=345.0,
)
QUICK = Plan(
    runs=1,
    kinds=("ref-echo", "bare-echo", *IDLE_KINDS),
    cpu_ns=(1, 4),
    settle_s=0.75,
    window_s=2.5,
    setup_trials=2,
    ramp=(4, 8),
    cap_window_s=2.5,
    budget_s=55.0,
)


# --------------------------------------------------------------------------- machine


def machine() -> dict[str, Any]:
    """CPU model, cores and the versions that matter."""
    import aiortc
    import av

    model = platform.processor() or "unknown"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "cpu_model": model,
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "aiortc": aiortc.__version__,
        "av": av.__version__,
        "numpy": np.__version__,
        "event_loop": "asyncio (server and client)",
    }


def _proc_stat() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    try:
        with open("/proc/stat") as f:
            fields = [float(x) for x in f.readline().split()[1:]]
    except OSError:
        return 0.0, 0.0
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)
    total = sum(fields[:8])
    return total - idle, total


def thread_groups() -> dict[str, float]:
    """CPU seconds of this process's threads by role (see ``_servers.thread_groups``)."""
    from webrtc_ref.bench._servers import thread_groups as groups

    return groups()


def wait_quiet(timeout: float, limit_pct: float = OTHER_LOAD_WARN_PCT) -> float:
    """Wait up to ``timeout`` s for 3 s in a row where the machine is nearly idle.

    Returns the last measured load (% of one core, all processes). Other processes share
    the 2 cores with the benchmark, so figures taken under load are not comparable.
    """
    cores = os.cpu_count() or 1
    deadline = time.monotonic() + timeout
    quiet_since: float | None = None
    load = 0.0
    while True:
        a = _proc_stat()
        time.sleep(0.5)
        b = _proc_stat()
        total = b[1] - a[1]
        load = 100 * (b[0] - a[0]) / total * cores if total else 0.0
        now = time.monotonic()
        if load <= limit_pct:
            quiet_since = quiet_since or now
            if now - quiet_since >= 3.0:
                return load
        else:
            quiet_since = None
        if now > deadline:
            return load


# --------------------------------------------------------------------------- sessions


@dataclass
class Session:
    """One client peer and what it recorded."""

    kind: str
    peer: Any
    track: Any
    recorder: Any | None = None
    t_connect: float = 0.0  # time.time() when the client started building its offer
    t_answer: float | None = None  # the answer was applied
    t_connected: float | None = None
    server_answer_s: float | None = None
    error: str | None = None

    @property
    def first_audio(self) -> float | None:
        rec = self.recorder
        return rec.frames[0][2] if rec is not None and rec.frames else None

    def setup_times(self) -> dict[str, float | None]:
        """Seconds from ``t_connect`` to each setup milestone (server's own answer time)."""

        def since(t: float | None) -> float | None:
            return None if t is None else t - self.t_connect

        return {
            "server_answer_s": self.server_answer_s,
            "offer_answer_client_s": since(self.t_answer),
            "connected_s": since(self.t_connected),
            "first_audio_s": since(self.first_audio),
        }


async def open_session(http: Any, url: str, kind: str, timeout: float = 15.0) -> Session:
    """Connect one client peer sending the timestamp carrier; for echo kinds, wait for audio."""
    from fixtures.tracks import AudioRecorder, TimestampAudioTrack
    from webrtc_ref.testing import ClientPeer

    track = TimestampAudioTrack()
    peer = ClientPeer(send=track)
    session = Session(kind, peer, track)

    async def signal(body: dict[str, str]) -> dict[str, Any]:
        response = await http.post(f"{url}/offer/{kind}", json=body, timeout=timeout)
        response.raise_for_status()
        reply: dict[str, Any] = response.json()
        return reply

    session.t_connect = time.time()
    try:
        reply = await peer.connect(signal)
        session.t_answer = time.time()
        if reply.get("type") != "answer":
            session.error = f"refused: {reply}"
            return session
        session.server_answer_s = float(str(reply["server_answer_s"]))
        if kind in ECHO_KINDS:
            remote: Any = await peer.wait_remote(timeout)
            session.recorder = AudioRecorder(remote, decode_timestamps=False)
            await session.recorder.start()
        await peer.wait_connected(timeout)
        session.t_connected = time.time()
        if session.recorder is not None and not await session.recorder.wait_until(
            lambda: bool(session.recorder and session.recorder.frames), timeout
        ):
            session.error = "no echoed audio"
    except Exception as exc:
        session.error = f"{type(exc).__name__}: {exc}"
    return session


async def close_sessions(sessions: Sequence[Session]) -> None:
    """Stop the recorders and close the client peers (each bounded to 5 s)."""

    async def close(s: Session) -> None:
        if s.recorder is not None:
            await s.recorder.stop()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(s.peer.close(), 5)

    await asyncio.gather(*(close(s) for s in sessions))


async def open_many(http: Any, url: str, kind: str, n: int, concurrency: int) -> list[Session]:
    """Open ``n`` sessions, at most ``concurrency`` connecting at once."""
    gate = asyncio.Semaphore(concurrency)

    async def one() -> Session:
        async with gate:
            return await open_session(http, url, kind)

    return list(await asyncio.gather(*(one() for _ in range(n))))


# --------------------------------------------------------------------------- analysis


def round_trips(session: Session, t_from: float, t_to: float) -> tuple[list[float], int, int]:
    """(round trips, markers sent, markers back) for markers sent in ``[t_from, t_to - GRACE]``."""
    from fixtures.timestamps import decode

    rec = session.recorder
    sent = {k: t for k, t in session.track.sent_markers.items() if t_from <= t <= t_to - GRACE_S}
    if rec is None or not rec.frames or not sent:
        return [], len(sent), 0
    rate = rec.sample_rate or RATE
    positions = [f[0] for f in rec.frames]
    first: dict[int, float] = {}
    for marker in decode(rec.samples(), rate):
        if marker.sent_sample in sent and marker.sent_sample not in first:
            i = bisect.bisect_right(positions, marker.position) - 1
            first[marker.sent_sample] = rec.frames[i][2]
    latencies = [first[k] - sent[k] for k in first]
    return latencies, len(sent), len(first)


def frame_lateness(session: Session, t_from: float, t_to: float) -> tuple[int, int, int]:
    """(late, missing, expected) 20 ms frames of one echoed stream in ``[t_from, t_to]``.

    A frame's due time is ``anchor + position / rate``, the anchor being the stream's
    earliest ``arrival - position / rate`` since its first frame (a robust "first frame"):
    so latency that built up at any time since the stream started counts as lateness.
    """
    expected = round((t_to - t_from) / FRAME_S)
    rec = session.recorder
    if rec is None or not rec.frames:
        return 0, expected, expected
    rate = rec.sample_rate or RATE
    pos = np.array([f[0] for f in rec.frames], dtype=np.float64)
    arrival = np.array([f[2] for f in rec.frames])
    upto = arrival <= t_to
    offsets = arrival[upto] - pos[upto] / rate
    if offsets.size == 0:
        return 0, expected, expected
    in_window = arrival[upto] >= t_from
    late = int(np.count_nonzero(offsets[in_window] - offsets.min() > LATE_AFTER_S))
    missing = max(0, expected - int(np.count_nonzero(in_window)) - 1)
    return late, missing, expected


def _pct(values: Sequence[float], q: float) -> float | None:
    return float(np.percentile(np.asarray(values, dtype=np.float64), q)) if values else None


def _median(values: Sequence[float]) -> float | None:
    return float(statistics.median(values)) if values else None


# --------------------------------------------------------------------------- runs


@dataclass
class RunResult:
    """One measured run: ``n`` sessions of one kind."""

    kind: str
    n: int
    connected: int
    window_s: float
    server_cpu_pct: float  # % of one core, whole server process, baseline removed
    client_cpu_pct: float
    client_loop_pct: float  # the client's event-loop thread, % of one core
    machine_busy_pct: float  # % of all cores
    other_cpu_pct: float  # % of one core used by other processes on the machine
    server_threads: int
    out_queued: list[int] = field(default_factory=list)  # ref-echo outbound backlog, frames
    thread_groups_pct: dict[str, float] = field(default_factory=dict)  # server, per group
    round_trips: list[float] = field(default_factory=list)
    markers_sent: int = 0
    markers_back: int = 0
    late: int = 0
    missing: int = 0
    expected_frames: int = 0
    errors: list[str] = field(default_factory=list)
    setup: list[dict[str, float | None]] = field(default_factory=list)

    @property
    def cpu_per_conn_pct(self) -> float:
        return self.server_cpu_pct / self.n

    @property
    def late_fraction(self) -> float:
        return (self.late + self.missing) / self.expected_frames if self.expected_frames else 1.0

    def summary(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "n": self.n,
            "connected": self.connected,
            "window_s": self.window_s,
            "server_cpu_pct": self.server_cpu_pct,
            "server_cpu_per_conn_pct": self.cpu_per_conn_pct,
            "client_cpu_pct": self.client_cpu_pct,
            "client_loop_pct": self.client_loop_pct,
            "server_loop_pct": self.thread_groups_pct.get("event loop"),
            "machine_busy_pct": self.machine_busy_pct,
            "other_cpu_pct": self.other_cpu_pct,
            "server_threads": self.server_threads,
            "server_thread_groups_pct": self.thread_groups_pct,
            "out_queued_mean": float(np.mean(self.out_queued)) if self.out_queued else None,
            "out_queued_max": max(self.out_queued) if self.out_queued else None,
            "rt_p50_s": _pct(self.round_trips, 50),
            "rt_p95_s": _pct(self.round_trips, 95),
            "rt_max_s": max(self.round_trips) if self.round_trips else None,
            "markers_sent": self.markers_sent,
            "markers_back": self.markers_back,
            "late_frames": self.late,
            "missing_frames": self.missing,
            "expected_frames": self.expected_frames,
            "late_fraction": self.late_fraction,
            "errors": self.errors[:5],
        }


class Bench:
    """Drives the server process over HTTP and the client peers in this process."""

    def __init__(self, url: str, plan: Plan, http: Any) -> None:
        self.url = url
        self.plan = plan
        self.http = http
        self.baseline_pct = 0.0

    async def server_cpu(self) -> dict[str, Any]:
        response = await self.http.get(f"{self.url}/cpu", timeout=10)
        response.raise_for_status()
        data: dict[str, Any] = response.json()
        return data

    async def reset(self) -> None:
        response = await self.http.post(f"{self.url}/reset", timeout=30)
        response.raise_for_status()

    async def measure_baseline(self, seconds: float) -> tuple[float, float]:
        """% of one core used by the empty server process and by other processes."""
        a, m0, c0 = await self.server_cpu(), _proc_stat(), time.process_time()
        await asyncio.sleep(seconds)
        b, m1, c1 = await self.server_cpu(), _proc_stat(), time.process_time()
        wall = b["wall_s"] - a["wall_s"]
        self.baseline_pct = 100 * (b["cpu_s"] - a["cpu_s"]) / wall
        total = m1[1] - m0[1]
        machine = 100 * (m1[0] - m0[0]) / total * (os.cpu_count() or 1) if total else 0.0
        other = machine - self.baseline_pct - 100 * (c1 - c0) / wall
        return self.baseline_pct, other

    async def run(self, kind: str, n: int, window_s: float, *, analyse: bool = True) -> RunResult:
        """Open ``n`` sessions of ``kind``, let them settle, measure a window, close them."""
        plan = self.plan
        sessions = await open_many(self.http, self.url, kind, n, plan.connect_concurrency)
        try:
            await asyncio.sleep(plan.settle_s)
            s0, c0, m0, t0 = await self.server_cpu(), time.process_time(), _proc_stat(), time.time()
            g0 = thread_groups()
            await asyncio.sleep(window_s)
            s1, c1, m1, t1 = await self.server_cpu(), time.process_time(), _proc_stat(), time.time()
            g1 = thread_groups()
        finally:
            await close_sessions(sessions)
            await self.reset()
        wall = s1["wall_s"] - s0["wall_s"]
        busy = m1[0] - m0[0]
        total = m1[1] - m0[1]
        cores = os.cpu_count() or 1
        machine_pct = 100 * busy / total if total else float("nan")
        server_raw = 100 * (s1["cpu_s"] - s0["cpu_s"]) / wall
        client_pct = 100 * (c1 - c0) / (t1 - t0)
        groups = {
            g: 100 * max(0.0, s1["thread_groups"].get(g, 0.0) - v) / wall
            for g, v in s0["thread_groups"].items()
        }
        result = RunResult(
            kind=kind,
            n=n,
            connected=sum(1 for s in sessions if s.error is None),
            window_s=wall,
            server_cpu_pct=server_raw - self.baseline_pct,
            client_cpu_pct=client_pct,
            client_loop_pct=100
            * (g1.get("event loop", 0.0) - g0.get("event loop", 0.0))
            / (t1 - t0),
            machine_busy_pct=machine_pct,
            other_cpu_pct=machine_pct * cores - server_raw - client_pct,
            server_threads=int(s1["threads"]),
            thread_groups_pct=groups,
            out_queued=list(s1.get("out_queued", [])),
            errors=[s.error for s in sessions if s.error],
        )
        for s in sessions:
            result.setup.append(s.setup_times())
            if analyse and kind in ECHO_KINDS:
                rts, sent, back = round_trips(s, t0, t1)
                result.round_trips.extend(rts)
                result.markers_sent += sent
                result.markers_back += back
                late, missing, expected = frame_lateness(s, t0, t1)
                result.late += late
                result.missing += missing
                result.expected_frames += expected
        return result

    async def setup_trial(self, kind: str) -> dict[str, float | None]:
        """One connection on an otherwise empty server: its setup times."""
        session = await open_session(self.http, self.url, kind)
        try:
            return session.setup_times()
        finally:
            await close_sessions([session])
            await self.reset()


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


async def _run_async(plan: Plan, url: str, wait_quiet_s: float) -> dict[str, Any]:
    import httpx

    started = time.monotonic()
    waited = 0.0

    def spent() -> float:
        """Seconds of benchmarking so far (waiting for a quiet machine excluded)."""
        return time.monotonic() - started - waited

    async def quiet_retry(result: RunResult) -> bool:
        """After a failure under foreign load, wait for quiet (if allowed); retry then?"""
        nonlocal waited
        if wait_quiet_s <= 0 or result.other_cpu_pct <= OTHER_LOAD_WARN_PCT:
            return False
        t = time.monotonic()
        load = await asyncio.to_thread(wait_quiet, min(wait_quiet_s, 120.0))
        waited += time.monotonic() - t
        _log(f"[echo] other processes were busy; waited {time.monotonic() - t:.0f} s")
        return load <= OTHER_LOAD_WARN_PCT

    async with httpx.AsyncClient() as http:
        bench = Bench(url, plan, http)
        baseline, other = await bench.measure_baseline(1.5 if plan is FULL else 1.0)
        _log(
            f"[echo] empty server baseline: {baseline:.2f} % of a core; "
            f"other processes: {other:.0f} % of a core"
        )

        # Warm-up: the first connections of a process pay for imports and codec setup.
        for kind in plan.kinds:
            await bench.setup_trial(kind)

        # 4. Setup, one connection at a time, kinds interleaved.
        setup: dict[str, list[dict[str, float | None]]] = {k: [] for k in SETUP_KINDS}
        for _ in range(plan.setup_trials):
            for kind in SETUP_KINDS:
                setup[kind].append(await bench.setup_trial(kind))
        _log(f"[echo] setup trials done ({spent():.0f} s)")

        # 1 + 2. Round trip and CPU, N = cpu_ns; kinds interleaved, order rotated per run.
        kinds = list(plan.kinds)
        runs: list[RunResult] = []
        for r in range(plan.runs):
            for n in plan.cpu_ns:
                order = kinds[r % len(kinds) :] + kinds[: r % len(kinds)]
                for kind in order:
                    result = await bench.run(kind, n, plan.window_s)
                    runs.append(result)
                    _log(
                        f"[echo] run {r + 1}/{plan.runs} {kind:9s} N={n:<2d} "
                        f"server {result.cpu_per_conn_pct:6.2f} %/conn  "
                        f"client {result.client_cpu_pct:5.1f} %  ({spent():.0f} s)"
                    )

        # 3. Capacity ramp, kinds interleaved at each N; a failure is retried once.
        cap_kinds = [k for k in plan.kinds if k in ECHO_KINDS]
        capacity: dict[str, dict[str, Any]] = {
            k: {"capacity": 0, "steps": [], "stopped": None} for k in cap_kinds
        }
        active = list(cap_kinds)
        for n in plan.ramp:
            for kind in list(active):
                step_time = 4.0 + plan.settle_s + plan.cap_window_s + n * 0.15
                if spent() + step_time > plan.budget_s:
                    capacity[kind]["stopped"] = f"time budget before N={n}"
                    active.remove(kind)
                    continue
                result = await bench.run(kind, n, plan.cap_window_s)
                passed = result.connected == n and result.late_fraction < LATE_LIMIT
                retries = 2 if not passed and await quiet_retry(result) else 1
                while not passed and retries and spent() + step_time <= plan.budget_s:
                    retries -= 1
                    capacity[kind]["steps"].append({**result.summary(), "passed": False})
                    result = await bench.run(kind, n, plan.cap_window_s)
                    passed = result.connected == n and result.late_fraction < LATE_LIMIT
                capacity[kind]["steps"].append({**result.summary(), "passed": passed})
                _log(
                    f"[echo] capacity {kind:9s} N={n:<2d} late {100 * result.late_fraction:5.2f} %"
                    f"  server {result.server_cpu_pct:5.1f} %"
                    f"  client {result.client_cpu_pct:5.1f} %"
                    f"  others {result.other_cpu_pct:5.1f} %  {'ok' if passed else 'FAIL'}"
                    f"  ({spent():.0f} s)"
                )
                if passed:
                    capacity[kind]["capacity"] = n
                else:
                    capacity[kind]["stopped"] = f"failed at N={n}"
                    active.remove(kind)
            if not active:
                break
        for kind in active:
            capacity[kind]["stopped"] = capacity[kind]["stopped"] or (
                f"cap N={plan.ramp[-1]} reached"
            )
        return {
            "baseline_server_cpu_pct": baseline,
            "other_cpu_pct_at_start": other,
            "setup_trials": setup,
            "runs": [r.summary() | {"setup": r.setup} for r in runs],
            "_runs": runs,
            "capacity": capacity,
            "elapsed_s": spent(),
            "waited_for_quiet_s": waited,
        }


# --------------------------------------------------------------------------- summary


def _aggregate(raw: dict[str, Any], plan: Plan) -> dict[str, Any]:
    runs: list[RunResult] = raw.pop("_runs")
    out: dict[str, Any] = {}

    # 1. Round trip (N = 1 runs, markers pooled).
    rt: dict[str, Any] = {}
    for kind in [k for k in plan.kinds if k in ECHO_KINDS]:
        mine = [r for r in runs if r.kind == kind and r.n == 1]
        pooled = [x for r in mine for x in r.round_trips]
        sent = sum(r.markers_sent for r in mine)
        back = sum(r.markers_back for r in mine)
        rt[kind] = {
            "runs": len(mine),
            "markers": len(pooled),
            "p50_s": _pct(pooled, 50),
            "p95_s": _pct(pooled, 95),
            "max_s": max(pooled) if pooled else None,
            "coverage": back / sent if sent else None,
            "per_run_p95_s": [_pct(r.round_trips, 95) for r in mine],
            "by_n": {
                str(n): {
                    "p50_s": _pct(
                        [x for r in runs if r.kind == kind and r.n == n for x in r.round_trips], 50
                    ),
                    "p95_s": _pct(
                        [x for r in runs if r.kind == kind and r.n == n for x in r.round_trips], 95
                    ),
                }
                for n in plan.cpu_ns
            },
        }
    out["round_trip"] = rt

    # 2. CPU per connection.
    cpu: dict[str, Any] = {}
    for kind in plan.kinds:
        cpu[kind] = {}
        for n in plan.cpu_ns:
            values = [r.cpu_per_conn_pct for r in runs if r.kind == kind and r.n == n]
            client = [r.client_cpu_pct for r in runs if r.kind == kind and r.n == n]
            threads = [r.server_threads for r in runs if r.kind == kind and r.n == n]
            mine = [r for r in runs if r.kind == kind and r.n == n]
            groups = sorted({g for r in mine for g in r.thread_groups_pct})
            cpu[kind][str(n)] = {
                "per_conn_pct_median": _median(values),
                "thread_groups_per_conn_pct": {
                    g: _median([r.thread_groups_pct.get(g, 0.0) / n for r in mine]) for g in groups
                },
                "per_conn_pct_min": min(values) if values else None,
                "per_conn_pct_max": max(values) if values else None,
                "per_conn_pct_runs": values,
                "client_cpu_pct_median": _median(client),
                "server_threads": max(threads) if threads else None,
            }
    for kind, floor in FLOOR.items():
        for n in plan.cpu_ns:
            mine = cpu[kind][str(n)]["per_conn_pct_median"]
            base = cpu[floor][str(n)]["per_conn_pct_median"]
            cpu[kind][str(n)]["ratio_to_floor"] = mine / base if mine and base else None
            cpu[kind][str(n)]["overhead_pct"] = (
                mine - base if mine is not None and base is not None else None
            )
    for kind, floor in FAIR_FLOOR.items():
        if floor not in cpu:
            continue
        for n in plan.cpu_ns:
            mine = cpu[kind][str(n)]["per_conn_pct_median"]
            base = cpu[floor][str(n)]["per_conn_pct_median"]
            cpu[kind][str(n)]["ratio_to_fair_floor"] = mine / base if mine and base else None
    out["cpu"] = cpu

    # 4. Setup.
    setup: dict[str, Any] = {}
    for kind in SETUP_KINDS:
        trials = raw["setup_trials"][kind]
        one_conn = [s for r in runs if r.kind == kind and r.n == 1 for s in r.setup]
        every = trials + one_conn
        entry: dict[str, Any] = {"trials": len(every)}
        for key in ("server_answer_s", "offer_answer_client_s", "connected_s", "first_audio_s"):
            values = [float(v) for s in every if (v := s.get(key)) is not None]
            entry[key] = {"p50": _pct(values, 50), "p95": _pct(values, 95)}
        setup[kind] = entry
    out["setup"] = setup
    out["capacity"] = raw["capacity"]
    out["baseline_server_cpu_pct"] = raw["baseline_server_cpu_pct"]
    out["other_cpu_pct_at_start"] = raw["other_cpu_pct_at_start"]
    others = [r.other_cpu_pct for r in runs]
    out["other_cpu_pct_median"] = _median(others)
    out["other_cpu_pct_max"] = max(others) if others else None
    out["runs"] = raw["runs"]
    out["elapsed_s"] = raw["elapsed_s"]
    out["waited_for_quiet_s"] = raw["waited_for_quiet_s"]
    out["targets"] = _targets(out, plan)
    return out


def _targets(out: dict[str, Any], plan: Plan) -> dict[str, Any]:
    rt = out["round_trip"]
    ref95, bare95 = rt["ref-echo"]["p95_s"], rt["bare-echo"]["p95_s"]
    delta = ref95 - bare95 if ref95 is not None and bare95 is not None else None
    ratios = {n: out["cpu"]["ref-echo"][str(n)]["ratio_to_floor"] for n in plan.cpu_ns}
    fair = {n: out["cpu"]["ref-echo"][str(n)].get("ratio_to_fair_floor") for n in plan.cpu_ns}
    idle = {n: out["cpu"]["ref-idle"][str(n)]["overhead_pct"] for n in plan.cpu_ns}
    return {
        "rt_p95_delta_s": {
            "value": delta,
            "target": TARGET_RT_P95_DELTA_S,
            "met": delta is not None and delta <= TARGET_RT_P95_DELTA_S,
        },
        "cpu_ratio_echo": {
            "value": {str(n): v for n, v in ratios.items()},
            "target": TARGET_CPU_RATIO,
            "met": all(v is not None and v <= TARGET_CPU_RATIO for v in ratios.values()),
            "vs_fair_floor": {str(n): v for n, v in fair.items()},
        },
        "idle_overhead_pct": {
            "value": {str(n): v for n, v in idle.items()},
            "target": TARGET_IDLE_OVERHEAD_PCT,
            "met": all(v is not None and v < TARGET_IDLE_OVERHEAD_PCT for v in idle.values()),
        },
    }


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{1000 * value:.1f}"


def _ratio(a: float | None, b: float | None) -> str:
    return "-" if a is None or not b else f"{a / b:.2f}x"


def _backlog(step: dict[str, Any]) -> str:
    mean = step.get("out_queued_mean")
    return "" if mean is None else f" (out backlog {20 * mean:.0f} ms)"


def format_report(result: dict[str, Any]) -> str:
    """The human-readable tables of a :func:`run` result."""
    m = result["machine"]
    plan = result["plan"]
    lines = [
        f"echo benchmark ({'quick' if result['quick'] else 'full'}), "
        f"{result['elapsed_s']:.0f} s measuring"
        + (
            f" (+{result['waited_for_quiet_s']:.0f} s waiting for a quiet machine)"
            if result["waited_for_quiet_s"] >= 1
            else ""
        ),
        f"machine: {m['cpu_model']}, {m['cores']} cores, {m['platform']}",
        f"python {m['python']}, aiortc {m['aiortc']}, av {m['av']}, numpy {m['numpy']}; "
        f"loop: {m['event_loop']}",
        "server: separate process (Starlette/uvicorn, 127.0.0.1); clients: this process, "
        "sharing the same cores (their CPU is shown beside).",
        f"runs per figure: {plan['runs']}; window {plan['window_s']} s after "
        f"{plan['settle_s']} s settle; empty-server baseline "
        f"{result['baseline_server_cpu_pct']:.2f} % of a core (subtracted).",
        f"other processes on the machine: {result['other_cpu_pct_at_start']:.0f} % of a core "
        f"at start, median {result['other_cpu_pct_median'] or 0:.0f} % / max "
        f"{result['other_cpu_pct_max'] or 0:.0f} % during the runs"
        + (
            "  ** WARNING: machine not quiet, figures contaminated **"
            if (result["other_cpu_pct_max"] or 0) > OTHER_LOAD_WARN_PCT
            else ""
        ),
        "",
        "1. Audio echo round trip, N = 1 (ms; markers pooled over runs)",
        f"   {'kind':10s} {'p50':>7s} {'p95':>7s} {'max':>7s} {'coverage':>9s} "
        f"{'markers':>8s} {'p95 vs floor':>13s}",
    ]
    rt = result["round_trip"]
    for kind in rt:
        e = rt[kind]
        base = rt["bare-echo"]
        cov = "-" if e["coverage"] is None else f"{100 * e['coverage']:.1f} %"
        vs = (
            "floor"
            if kind == "bare-echo"
            else f"{_ratio(e['p95_s'], base['p95_s'])} "
            f"({'+' if (e['p95_s'] or 0) >= (base['p95_s'] or 0) else ''}"
            f"{_ms((e['p95_s'] or 0) - (base['p95_s'] or 0))})"
        )
        lines.append(
            f"   {kind:10s} {_ms(e['p50_s']):>7s} {_ms(e['p95_s']):>7s} {_ms(e['max_s']):>7s} "
            f"{cov:>9s} {e['markers']:>8d} {vs:>13s}"
        )
    by_n = "; ".join(
        f"N={n}: " + ", ".join(f"{k} {_ms(rt[k]['by_n'][str(n)]['p95_s'])}" for k in rt)
        for n in plan["cpu_ns"]
    )
    lines.append(f"   p95 by N (ms): {by_n}")
    lines += [
        "",
        "2. Server CPU per connection (% of one core; median of runs [min-max])",
        f"   {'kind':10s} {'N':>3s} {'median':>7s} {'range':>15s} {'vs floor':>9s} "
        f"{'overhead':>9s} {'vs tight':>9s} {'threads':>8s} {'client %':>9s}",
    ]
    cpu = result["cpu"]
    for kind in cpu:
        for n in plan["cpu_ns"]:
            e = cpu[kind][str(n)]
            med = e["per_conn_pct_median"]
            rng = (
                "-"
                if e["per_conn_pct_min"] is None
                else f"[{e['per_conn_pct_min']:.2f}-{e['per_conn_pct_max']:.2f}]"
            )
            ratio = f"{e['ratio_to_floor']:.2f}x" if e.get("ratio_to_floor") else "floor"
            if kind == "bare-tight":
                ratio = "fair floor"
            over = f"{e['overhead_pct']:+.2f}" if e.get("overhead_pct") is not None else ""
            fair = f"{e['ratio_to_fair_floor']:.2f}x" if e.get("ratio_to_fair_floor") else ""
            client = e["client_cpu_pct_median"]
            lines.append(
                f"   {kind:10s} {n:>3d} {'-' if med is None else f'{med:.2f}':>7s} {rng:>15s} "
                f"{ratio:>9s} {over:>9s} {fair:>9s} {e['server_threads'] or 0:>8d} "
                f"{'-' if client is None else f'{client:.0f}':>9s}"
            )
    n_max = max(plan["cpu_ns"])
    lines.append(f"   server threads' CPU per connection at N={n_max} (% of one core):")
    for kind in cpu:
        groups = cpu[kind][str(n_max)]["thread_groups_per_conn_pct"]
        text = ", ".join(f"{g} {v:.2f}" for g, v in groups.items() if v is not None and v >= 0.01)
        lines.append(f"   {kind:10s} {text}")
    lines += [
        "",
        f"3. Capacity: concurrent echo sessions with < {100 * LATE_LIMIT:.0f} % late "
        f"(> {1000 * LATE_AFTER_S:.0f} ms) or missing frames; client peers share the 2 cores",
    ]
    cap = result["capacity"]
    for kind in cap:
        e = cap[kind]
        lines.append(f"   {kind:10s} capacity {e['capacity']:>3d}  ({e['stopped']})")
        for s in e["steps"]:
            lines.append(
                f"      N={s['n']:<3d} late+missing {100 * s['late_fraction']:6.2f} %  "
                f"rt p95 {_ms(s['rt_p95_s'])} ms{_backlog(s)}  {'ok' if s['passed'] else 'FAIL'}"
            )
            lines.append(
                f"            CPU, % of one core: server {s['server_cpu_pct']:.0f} "
                f"(its loop thread {s['server_loop_pct'] or 0:.0f}), client "
                f"{s['client_cpu_pct']:.0f} (loop {s['client_loop_pct']:.0f}), other processes "
                f"{s['other_cpu_pct']:.0f}; machine {s['machine_busy_pct']:.0f} % busy"
            )
    lines += [
        "",
        "4. Setup, one connection on an idle server (ms)",
        f"   {'kind':10s} {'trials':>6s} {'answer@server p50/p95':>22s} "
        f"{'offer->answer@client':>21s} {'connected':>10s} {'first echo p50/p95':>19s} "
        f"{'vs floor':>9s}",
    ]
    st = result["setup"]
    for kind in st:
        e = st[kind]
        ratio = (
            "floor"
            if kind == "bare-echo"
            else _ratio(e["first_audio_s"]["p50"], st["bare-echo"]["first_audio_s"]["p50"])
        )
        lines.append(
            f"   {kind:10s} {e['trials']:>6d} "
            f"{_ms(e['server_answer_s']['p50']) + ' / ' + _ms(e['server_answer_s']['p95']):>22s} "
            f"{_ms(e['offer_answer_client_s']['p50']):>21s} {_ms(e['connected_s']['p50']):>10s} "
            f"{_ms(e['first_audio_s']['p50']) + ' / ' + _ms(e['first_audio_s']['p95']):>19s} "
            f"{ratio:>9s}"
        )
    t = result["targets"]

    def verdict(entry: dict[str, Any]) -> str:
        return "met" if entry["met"] else "NOT MET"

    d = t["rt_p95_delta_s"]["value"]
    lines += [
        "",
        "Targets",
        f"   round-trip p95 within {1000 * TARGET_RT_P95_DELTA_S:.0f} ms of the floor: "
        f"{'-' if d is None else f'{1000 * d:+.1f} ms'}  {verdict(t['rt_p95_delta_s'])}",
        f"   server CPU per echo session <= {TARGET_CPU_RATIO}x floor: "
        + ", ".join(
            f"N={n} {'-' if v is None else f'{v:.2f}x'}"
            for n, v in t["cpu_ratio_echo"]["value"].items()
        )
        + f"  {verdict(t['cpu_ratio_echo'])}",
        f"   idle overhead < {TARGET_IDLE_OVERHEAD_PCT:.0f} % of a core per connection: "
        + ", ".join(
            f"N={n} {'-' if v is None else f'{v:+.2f} %'}"
            for n, v in t["idle_overhead_pct"]["value"].items()
        )
        + f"  {verdict(t['idle_overhead_pct'])}",
    ]
    fair = t["cpu_ratio_echo"]["vs_fair_floor"]
    if any(v is not None for v in fair.values()):
        lines.insert(
            len(lines) - 1,
            "     against bare-tight (the floor without aiortc's audio-level cost on oversized "
            "decoded frames): "
            + ", ".join(f"N={n} {'-' if v is None else f'{v:.2f}x'}" for n, v in fair.items()),
        )
    return "\n".join(lines)


# --------------------------------------------------------------------------- entry points


def run(quick: bool = False, *, wait_quiet_s: float = 0.0) -> dict[str, Any]:
    """Run the benchmark (server in a child process, always killed); return its figures.

    ``wait_quiet_s``: first wait up to this long for the machine to be idle.
    """
    from webrtc_ref.bench._servers import ServerProcess
    from webrtc_ref.testing import loopback_ice

    plan = QUICK if quick else FULL
    if wait_quiet_s > 0:
        load = wait_quiet(wait_quiet_s)
        _log(f"[echo] machine load before starting: {load:.0f} % of a core")
    with loopback_ice(), ServerProcess(max_seconds=plan.budget_s * 3 + 120) as server:
        raw = asyncio.run(_run_async(plan, server.url, wait_quiet_s))
    result = _aggregate(raw, plan)
    return {
        "benchmark": "echo",
        "quick": quick,
        "machine": machine(),
        "plan": {
            "runs": plan.runs,
            "cpu_ns": list(plan.cpu_ns),
            "settle_s": plan.settle_s,
            "window_s": plan.window_s,
            "setup_trials": plan.setup_trials,
            "ramp": list(plan.ramp),
            "capacity_window_s": plan.cap_window_s,
        },
        **result,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m webrtc_ref.bench.echo",
        description="Audio echo through webrtc_ref vs bare aiortc: round trip, CPU, capacity.",
    )
    parser.add_argument("--quick", action="store_true", help="fewer, shorter runs (< 60 s)")
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    parser.add_argument(
        "--wait-quiet",
        metavar="SECONDS",
        type=float,
        default=0.0,
        help="first wait up to SECONDS for other processes to leave the machine idle",
    )
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    result = run(args.quick, wait_quiet_s=args.wait_quiet)
    print(format_report(result))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
