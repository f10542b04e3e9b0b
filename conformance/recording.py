"""Recorded sessions: serve a scenario, drive clients through a script, keep what happened.

A real session (a launched app, real peers, seconds of media) is expensive, and several
requirements can be judged on one. So the suite records sessions once (session-scoped
fixtures, several sessions concurrently) and each requirement's test asserts on the
recording. A session that could not be served because of a missing capability raises
:class:`~conformance.adapters.Unsupported` when a test reads it (reported UNSUPPORTED);
any other failure to record is re-raised in the tests that read it.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import inspect
import textwrap
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

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
    """Named recordings (or the exception that prevented each).

    Made by :func:`record_all` for the fixture ``fixture``: a test may read only the
    recordings its source says it reads (see :func:`plans_read`), so that a run selecting
    that test alone records what it needs; reading another one fails the test, in every
    run, full or selective.
    """

    def __init__(
        self, results: dict[str, Recording | BaseException], fixture: str | None = None
    ) -> None:
        self._results = results
        self._fixture = fixture
        #: Ground truth some plans attach (e.g. the speech scenario each session played).
        self.scenarios: dict[str, Any] = {}

    def __getitem__(self, name: str) -> Recording:
        test = _running_test
        if test is not None and self._fixture is not None:
            declared = _keys_read_cached(test, self._fixture)
            if declared is not None and name not in declared:
                raise LookupError(
                    f"{test.nodeid} reads recording {name!r} of {self._fixture}, but its "
                    f"source reads only {sorted(declared)}: read it as "
                    f"{self._fixture}[{name!r}] or helper({self._fixture}, {name!r}) "
                    "so that runs selecting this test record it"
                )
        if name not in self._results:
            raise LookupError(
                f"no recording {name!r} was made for {self._fixture}; made: {sorted(self._results)}"
            )
        result = self._results[name]
        if isinstance(result, BaseException):
            raise result
        return result


#: The test being run (set by :func:`running`), whose reads :class:`Recordings` checks.
_running_test: pytest.Item | None = None


@contextlib.contextmanager
def running(test: pytest.Item) -> Any:
    """Mark ``test`` as the one running (an autouse fixture of the suite wraps each test)."""
    global _running_test
    _running_test = test
    try:
        yield
    finally:
        _running_test = None


#: Sessions recorded at the same time. The servers and the client peers share this one
#: process (and its GIL): nine concurrent audio sessions saturate one core of a 2-core
#: machine, and media starved by the harness would be blamed on the implementation.
MAX_CONCURRENT_SESSIONS = 3


def record_all(
    adapter: Adapter, plans: dict[str, Plan], request: pytest.FixtureRequest
) -> Recordings:
    """Record the ``plans`` that the selected tests read (see :func:`plans_read`; called
    from the fixture whose ``request`` this is) concurrently, at most
    :data:`MAX_CONCURRENT_SESSIONS` at a time (on a private event loop), and return them by
    name."""

    recorded = run_async(_record_many(adapter, plans_read(request, plans)))
    return Recordings(recorded, request.fixturename)


def plans_read(request: pytest.FixtureRequest, plans: dict[str, Plan]) -> dict[str, Plan]:
    """Of ``plans``, those that a selected test using the fixture of ``request`` reads.

    A run selecting a few requirements (``--requirement``) then records only their
    sessions, not every session of their modules. What a test reads is found in its
    source: ``fixture["name"]`` or ``helper(fixture, "name", ...)`` (the fixture first, the
    key second), with the key a string literal, a ``parametrize`` argument or an f-string
    of those; ``fixture.scenarios`` reads no recording. Any other use of
    the fixture (passed on, iterated, a computed key), or the fixture reached through
    another fixture, counts as reading every plan. A module-scoped fixture serves the
    selected tests of its module, a session-scoped one those of the whole session.
    """
    fixture = request.fixturename
    if fixture is None:
        return plans
    read: set[str] = set()
    for item in request.session.items:
        if fixture not in getattr(item, "fixturenames", ()):
            continue
        if request.scope == "module" and getattr(item, "module", None) is not request.module:
            continue
        keys = _keys_read_cached(item, fixture)
        if keys is None:
            return plans
        read |= keys
    return {name: plan for name, plan in plans.items() if name in read}


_KEYS_READ: dict[tuple[str, str], set[str] | None] = {}


def _keys_read_cached(item: pytest.Item, fixture: str) -> set[str] | None:
    key = (item.nodeid, fixture)
    if key not in _KEYS_READ:
        _KEYS_READ[key] = _keys_read(item, fixture)
    return _KEYS_READ[key]


def _keys_read(item: pytest.Item, fixture: str) -> set[str] | None:
    """The keys test ``item`` reads from ``fixture`` by subscript, or None for "any"."""
    function = getattr(item, "function", None)
    if function is None:
        return None
    try:
        if fixture not in inspect.signature(function).parameters:
            return None  # used through another fixture
        tree = ast.parse(textwrap.dedent(inspect.getsource(function)))
    except (OSError, TypeError, SyntaxError, ValueError):
        return None
    callspec = getattr(item, "callspec", None)
    params: dict[str, Any] = dict(callspec.params) if callspec is not None else {}
    parents = {id(child): node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    keys: set[str] = set()
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Name) and node.id == fixture):
            continue
        parent = parents.get(id(node))
        if isinstance(parent, ast.Attribute) and parent.attr == "scenarios":
            continue
        if isinstance(parent, ast.Subscript) and parent.value is node:
            key = _literal_key(parent.slice, params)
        elif isinstance(parent, ast.Call) and len(parent.args) >= 2 and parent.args[0] is node:
            key = _literal_key(parent.args[1], params)  # helper(fixture, "name", ...)
        else:
            return None
        if key is None:
            return None
        keys.add(key)
    return keys


def _literal_key(node: ast.expr, params: dict[str, Any]) -> str | None:
    """The string ``node`` evaluates to from literals and ``params``, or None."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.Name) and isinstance(params.get(node.id), str):
        return str(params[node.id])
    if isinstance(node, ast.JoinedStr):
        parts: list[str] = []
        for value in node.values:
            if isinstance(value, ast.Constant) and isinstance(value.value, str):
                parts.append(value.value)
            elif (
                isinstance(value, ast.FormattedValue)
                and value.conversion == -1
                and value.format_spec is None
                and isinstance(value.value, ast.Name)
                and value.value.id in params
            ):
                parts.append(str(params[value.value.id]))
            else:
                return None
        return "".join(parts)
    return None


@contextlib.asynccontextmanager
async def opened(wire: Wire, **kwargs: Any) -> Any:
    """A peer of ``wire`` that is closed on exit (its recording is kept)."""
    peer = wire.peer(**kwargs)
    try:
        yield peer
    finally:
        await peer.close()
