"""The machine under the benchmark: what it is, how busy it is, and CPU time by process.

CPU figures are read from ``/proc`` (Linux): a process's user + system time over every one
of its threads, the whole machine's busy time from ``/proc/stat``, and this process's
threads grouped by role (event loop, codec executor, aiortc decoders) so the driver can say
where the client's own CPU goes.
"""

from __future__ import annotations

import contextlib
import os
import platform
import threading
import time
from typing import Any

#: Other processes using more than this (% of one core) make a window suspect.
OTHER_LOAD_PCT = 15.0

#: Thread-name prefixes -> the role reported by :func:`thread_cpu_s` ("other" otherwise).
THREAD_GROUPS: tuple[tuple[str, str], ...] = (
    ("MainThread", "event loop"),
    ("asyncio_", "codec executor"),
    ("ThreadPoolExecutor", "codec executor"),
    ("audio-decoder", "decoders"),
    ("video-decoder", "decoders"),
)


def machine() -> dict[str, Any]:
    """CPU model, cores and the versions that matter."""
    import aiortc
    import av
    import numpy as np

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


def process_cpu_s(pid: int) -> float:
    """CPU seconds (user + system, every thread) of process ``pid`` so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_stat() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    try:
        with open("/proc/stat") as f:
            fields = [float(x) for x in f.readline().split()[1:]]
    except OSError:
        return 0.0, 0.0
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)
    total = sum(fields[:8])
    return total - idle, total


def busy_pct(before: tuple[float, float], after: tuple[float, float]) -> float:
    """The whole machine's busy time between two :func:`proc_stat` readings, in % of one
    core (so 2 busy cores read 200)."""
    total = after[1] - before[1]
    return 100 * (after[0] - before[0]) / total * (os.cpu_count() or 1) if total else 0.0


def thread_cpu_s() -> dict[str, float]:
    """CPU seconds of this process's live threads, summed by role (:data:`THREAD_GROUPS`)."""
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[str, float] = {}
    for thread in threading.enumerate():
        try:
            with open(f"/proc/self/task/{thread.native_id}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        seconds = (int(fields[11]) + int(fields[12])) / tick
        group = next((g for prefix, g in THREAD_GROUPS if thread.name.startswith(prefix)), "other")
        out[group] = out.get(group, 0.0) + seconds
    return out


def thread_pct(before: dict[str, float], after: dict[str, float], wall: float) -> dict[str, float]:
    """Per-role CPU between two :func:`thread_cpu_s` readings, in % of one core.

    Threads that ended in between are not counted (their time is in the process total).
    """
    if wall <= 0:
        return {}
    return {g: 100 * max(0.0, after[g] - before.get(g, 0.0)) / wall for g in after}


def wait_quiet(timeout: float, limit_pct: float = OTHER_LOAD_PCT) -> float:
    """Wait up to ``timeout`` s for 3 s in a row where the machine is nearly idle.

    Returns the last measured load (% of one core, all processes). Other processes share
    the cores with the benchmark, so figures taken under load are not comparable.
    """
    deadline = time.monotonic() + timeout
    quiet_since: float | None = None
    load = 0.0
    while True:
        a = proc_stat()
        time.sleep(0.5)
        load = busy_pct(a, proc_stat())
        now = time.monotonic()
        if load <= limit_pct:
            quiet_since = quiet_since or now
            if now - quiet_since >= 3.0:
                return load
        else:
            quiet_since = None
        if now > deadline:
            return load
