"""Recorded sessions: serve a scenario, drive clients through a script, keep what happened.

A real session (a launched app, real peers, seconds of media) is expensive, and several
requirements can be judged on one. So the suite records sessions once (session-scoped
fixtures, several sessions concurrently) and each requirement's test asserts on the
recording. A session that could not be served because of a missing capability raises
:class:`~conformance.adapters.Unsupported` when a test reads it (reported UNSUPPORTED);
any other failure to record is re-raised in the tests that read it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from conformance.adapters.base import Adapter, Scenario
from conformance.helpers import Probe, run_async
from conformance.wire import Wire, WirePeer

Script = Callable[[Wire, Probe], Awaitable[dict[str, Any] | None]]


@dataclass
class Recording:
    """What a scripted session left: the probe, the (closed) peers and the script's notes."""

    probe: Probe
    peers: list[WirePeer]
    notes: dict[str, Any] = field(default_factory=dict)
    started: float = 0.0

    @property
    def peer(self) -> WirePeer:
        return self.peers[0]


@dataclass(frozen=True)
class Plan:
    """A session to record: ``scenario(probe)`` builds the scenario, ``script`` drives it."""

    scenario: Callable[[Probe], Scenario]
    script: Script


async def record(adapter: Adapter, plan: Plan) -> Recording:
    """Serve the plan's scenario, run its script, close everything, return the recording."""
    result = (await _record_many(adapter, {"plan": plan}))["plan"]
    if isinstance(result, BaseException):
        raise result
    return result


async def _record_many(
    adapter: Adapter, plans: dict[str, Plan]
) -> dict[str, Recording | BaseException]:
    """Launch every plan's app first (one at a time), then run the scripts concurrently,
    then close everything: launching does not disturb media that is already flowing."""
    results: dict[str, Recording | BaseException] = {}
    opened: dict[str, tuple[Probe, Any, Wire]] = {}
    try:
        for name, plan in plans.items():
            probe = Probe()
            try:
                scenario = plan.scenario(probe)
                adapter.require(*scenario.needs)
                serve = adapter.serve(scenario)
                served = await asyncio.to_thread(serve.__enter__)
            except BaseException as exc:
                results[name] = exc
                continue
            opened[name] = (probe, serve, Wire(served))

        slots = asyncio.Semaphore(MAX_CONCURRENT_SESSIONS)

        async def run(name: str) -> None:
            probe, _, wire = opened[name]
            async with slots:
                started = time.time()
                try:
                    notes = await plans[name].script(wire, probe) or {}
                except BaseException as exc:
                    results[name] = exc
                    return
                finally:
                    await wire.aclose()
            results[name] = Recording(probe, list(wire.peers), notes, started)

        if adapter.shared_state:  # connections would see each other: one at a time
            for name in opened:
                adapter.reset()
                await run(name)
        else:
            await asyncio.gather(*(run(name) for name in opened))
    finally:
        for name, (_, serve, wire) in opened.items():
            await wire.aclose()
            try:
                await asyncio.to_thread(serve.__exit__, None, None, None)
            except Exception as exc:  # closing failed: keep the recording, note it
                results.setdefault(name, exc)
    return {name: results[name] for name in plans}


class Recordings:
    """Named recordings (or the exception that prevented each)."""

    def __init__(self, results: dict[str, Recording | BaseException]) -> None:
        self._results = results
        #: Ground truth some plans attach (e.g. the speech scenario each session played).
        self.scenarios: dict[str, Any] = {}

    def __getitem__(self, name: str) -> Recording:
        result = self._results[name]
        if isinstance(result, BaseException):
            raise result
        return result


#: Sessions recorded at the same time. The servers and the client peers share this one
#: process (and its GIL): nine concurrent audio sessions saturate one core of a 2-core
#: machine, and media starved by the harness would be blamed on the implementation.
MAX_CONCURRENT_SESSIONS = 3


def record_all(adapter: Adapter, plans: dict[str, Plan]) -> Recordings:
    """Record ``plans`` concurrently, at most :data:`MAX_CONCURRENT_SESSIONS` at a time (on
    a private event loop), and return them by name."""

    return Recordings(run_async(_record_many(adapter, plans)))


@contextlib.asynccontextmanager
async def opened(wire: Wire, **kwargs: Any) -> Any:
    """A peer of ``wire`` that is closed on exit (its recording is kept)."""
    peer = wire.peer(**kwargs)
    try:
        yield peer
    finally:
        await peer.close()
