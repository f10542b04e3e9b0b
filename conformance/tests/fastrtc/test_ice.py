"""fastrtc profile: a function as rtc_configuration, called for every connection.

Each call returns TURN-style credentials of its own; the test fetches the configuration as
the implementation's browser client does before each connection and checks that every
client got its own call's value (the suite's peers still gather loopback candidates only).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from conformance.adapters import Adapter, Api, Scenario
from conformance.helpers import MANY, Probe, echo_handler
from conformance.recording import Plan, Recordings, record_all
from conformance.tests.fastrtc.media import tone_track
from conformance.wire import Wire


def credentials(n: int) -> dict[str, Any]:
    return {
        "iceServers": [
            {
                "urls": ["turn:127.0.0.1:3478?transport=udp"],
                "username": f"user-{n}",
                "credential": f"secret-{n}",
            }
        ]
    }


def _ice_plan(kind: str) -> Plan:
    def scenario(probe: Probe) -> Scenario:
        if kind == "async":

            async def rtc_configuration() -> dict[str, Any]:
                await asyncio.sleep(0)
                return credentials(probe.bump("calls"))

        else:

            def rtc_configuration() -> dict[str, Any]:  # type: ignore[misc]
                return credentials(probe.bump("calls"))

        def handler(api: Api) -> Any:
            return echo_handler(api)

        return Scenario(
            "send-receive",
            "audio",
            handler,
            concurrency_limit=MANY,
            webrtc_kwargs={"rtc_configuration": rtc_configuration},
            needs_fastrtc=True,
        )

    async def script(wire: Wire, probe: Probe) -> dict[str, Any]:
        configurations = []
        calls_before = []
        for _ in range(2):
            peer = wire.peer(send=tone_track(440.0))
            calls_before.append(probe.count("calls"))
            configurations.append(await peer.fetch_rtc_configuration())
            await peer.connect_ok()
        for peer in wire.peers:
            await peer.close()
        return {"configurations": configurations, "calls_before": calls_before}

    return Plan(scenario, script)


@pytest.fixture(scope="module")
def ice_sessions(adapter: Adapter) -> Recordings:
    return record_all(adapter, {"sync": _ice_plan("sync"), "async": _ice_plan("async")})


def _per_connection(recording: Any) -> None:
    configurations = recording.notes["configurations"]
    calls = recording.probe.count("calls")
    assert calls >= 2, f"rtc_configuration was called {calls} times for two connections"
    users = [
        (c or {}).get("iceServers", [{}])[0].get("username") if isinstance(c, dict) else None
        for c in configurations
    ]
    assert None not in users, f"the clients got {configurations}"
    assert len(set(users)) == 2, f"both clients got the same credentials: {users}"
    before = recording.notes["calls_before"]
    for n, (user, count) in enumerate(zip(users, before, strict=True)):
        assert user == f"user-{count + 1}", (
            f"client {n} got {user}, not the value of the call made for its connection "
            f"(call {count + 1})"
        )


@pytest.mark.requirement("FICE-001")
def test_rtc_configuration_function_per_connection(ice_sessions: Recordings) -> None:
    """WebRTC(rtc_configuration=fn): each connection's client gets what a call of fn
    returned for it."""
    _per_connection(ice_sessions["sync"])


@pytest.mark.requirement("FICE-002")
def test_async_rtc_configuration_per_connection(ice_sessions: Recordings) -> None:
    """WebRTC(rtc_configuration=async fn): the same, fn awaited for each connection."""
    _per_connection(ice_sessions["async"])
