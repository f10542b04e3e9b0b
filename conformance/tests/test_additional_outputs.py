"""AdditionalOutputs and on_additional_outputs: delivery, order, mixing with audio, isolation.

(The guide's send-mode ReplyOnPause example, OUT-004, is in test_reply_on_pause.py.)
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pytest

from conformance.adapters import Adapter, Api, Input, Scenario
from conformance.helpers import MANY, Probe, loud_seconds, tone
from conformance.recording import Plan, Recordings, record_all
from conformance.wire import OUTPUTS, Wire, eventually

BURST = 30


def barcode() -> Any:
    from fixtures.tracks import BarcodeVideoTrack

    return BarcodeVideoTrack(320, 240, clock=time.time)


def _pairs_plan() -> Plan:
    """Send-mode video: every 5th frame yields AdditionalOutputs(count, [tag])."""

    def scenario(probe: Probe) -> Scenario:
        def handler(api: Api) -> Any:
            counter = {"n": 0}

            def detect(image: np.ndarray) -> Any:
                counter["n"] += 1
                if counter["n"] % 5:
                    return None
                return api.AdditionalOutputs(counter["n"], ["tag"])

            return detect

        def show(count: Any, tag: Any) -> Any:
            probe.add("fn", (count, tag))
            return count, tag

        return Scenario("send", "video", handler, outputs=2, on_outputs=show)

    async def script(wire: Wire, probe: Probe) -> dict[str, Any]:
        peer = wire.peer(send=barcode())
        await peer.connect_ok()
        await eventually(lambda: len(peer.outputs) >= 3, 6.0)
        await peer.close()
        return {}

    return Plan(scenario, script)


def _burst_plan() -> Plan:
    """The first BURST frames each yield AdditionalOutputs(k), k = 0, 1, ... (30 per second)."""

    def scenario(probe: Probe) -> Scenario:
        def handler(api: Api) -> Any:
            counter = {"n": 0}

            def detect(image: np.ndarray) -> Any:
                k = counter["n"]
                counter["n"] += 1
                return api.AdditionalOutputs(k) if k < BURST else None

            return detect

        def collect(k: Any) -> Any:
            probe.add("fn", k)
            return k

        return Scenario("send", "video", handler, outputs=1, on_outputs=collect)

    async def script(wire: Wire, probe: Probe) -> dict[str, Any]:
        peer = wire.peer(send=barcode())
        await peer.connect_ok()
        await eventually(lambda: len(probe.get("fn")) >= BURST, 8.0)
        settled = time.time()
        await eventually(lambda: time.time() > settled + 0.5, 1.0)
        await peer.close()
        return {}

    return Plan(scenario, script)


def _audio_and_outputs_plan() -> Plan:
    """Send-receive audio: emit answers each input block with 20 ms of tone, and every 25th
    block with AdditionalOutputs(count) instead."""

    def scenario(probe: Probe) -> Scenario:
        def handler(api: Api) -> Any:
            import queue

            class Talker(api.StreamHandler):  # type: ignore[name-defined,misc]
                def __init__(self) -> None:
                    super().__init__()
                    self.queue: queue.Queue[Any] = queue.Queue()
                    self.n = 0

                def receive(self, frame: Any) -> None:
                    self.queue.put(frame)

                def emit(self) -> Any:
                    try:
                        self.queue.get(timeout=0.1)
                    except queue.Empty:
                        return None
                    self.n += 1
                    if self.n % 25 == 0:
                        return api.AdditionalOutputs(self.n)
                    return (24000, tone(650.0, 0.02, 24000))

                def copy(self) -> Any:
                    return Talker()

            return Talker()

        return Scenario("send-receive", "audio", handler, outputs=1)

    async def script(wire: Wire, probe: Probe) -> dict[str, Any]:
        from fixtures.tracks import ToneAudioTrack

        peer = wire.peer(send=ToneAudioTrack(440.0))
        await peer.connect_ok()
        recorder = await peer.wait_remote()
        await eventually(
            lambda: len(peer.outputs) >= 2 and recorder.samples_received >= 48000 * 1.5, 6.0
        )
        await peer.close()
        return {}

    return Plan(scenario, script)


def _two_users_plan() -> Plan:
    """Two clients of one stream; each connection's fn yields its own tag (from its input)."""

    def scenario(probe: Probe) -> Scenario:
        def handler(api: Api) -> Any:
            counts: dict[Any, int] = {}  # per tag: fn is shared by both connections

            def detect(image: np.ndarray, tag: Any) -> Any:
                counts[tag] = counts.get(tag, 0) + 1
                return api.AdditionalOutputs([tag]) if counts[tag] % 10 == 0 else None

            return detect

        return Scenario(
            "send",
            "video",
            handler,
            inputs=(Input("none", "text"),),
            outputs=1,
            concurrency_limit=MANY,
        )

    async def script(wire: Wire, probe: Probe) -> dict[str, Any]:
        peers = [wire.peer(send=barcode(), inputs=[tag]) for tag in ("alpha", "beta")]
        for peer in peers:
            await peer.connect_ok()
        await eventually(
            lambda: all(sum(v == [[p.inputs[0]]] for v in p.output_values()) >= 3 for p in peers),
            8.0,
        )
        for peer in peers:
            await peer.close()
        return {}

    return Plan(scenario, script)


@pytest.fixture(scope="module")
def output_sessions(adapter: Adapter) -> Recordings:
    return record_all(
        adapter,
        {
            "pairs": _pairs_plan(),
            "burst": _burst_plan(),
            "audio": _audio_and_outputs_plan(),
            "two-users": _two_users_plan(),
        },
    )


@pytest.mark.requirement("OUT-001")
def test_outputs_reach_the_components(output_sessions: Recordings) -> None:
    """AdditionalOutputs(...) produced by the handler reaches the on_additional_outputs
    function, and what it returns becomes the value of its outputs."""
    recording = output_sessions["pairs"]
    assert recording.probe.get("fn"), "the on_additional_outputs function was never called"
    values = recording.peer.output_values()
    assert values, "the outputs were never updated"
    assert all(len(v) == 2 for v in values), f"updates: {values[:3]}"


@pytest.mark.requirement("OUT-002")
def test_outputs_are_passed_positionally(output_sessions: Recordings) -> None:
    """The values are passed positionally, in order: AdditionalOutputs(a, b) calls fn(a, b)."""
    recording = output_sessions["pairs"]
    received = recording.probe.get("fn")
    assert received, "the on_additional_outputs function was never called"
    for count, tag in received:
        assert isinstance(count, int) and tag == ["tag"], f"fn(a, b) got ({count!r}, {tag!r})"
    for update in recording.peer.output_values():
        assert isinstance(update[0], int) and update[1] == ["tag"], f"outputs got {update}"


@pytest.mark.requirement("OUT-003")
def test_every_output_is_delivered_once_in_order(output_sessions: Recordings) -> None:
    """Every AdditionalOutputs is delivered exactly once and in order, even when many are
    produced quickly."""
    received = output_sessions["burst"].probe.get("fn")
    assert received == list(range(BURST)), f"on_additional_outputs got {received}"


@pytest.mark.requirement("OUT-005")
def test_audio_and_outputs_in_one_stream(output_sessions: Recordings) -> None:
    """In send-receive mode one handler can send audio and AdditionalOutputs in the same
    stream; both arrive."""
    peer = output_sessions["audio"].peer
    assert peer.output_values(), "no additional outputs arrived"
    recorder = peer.recorder
    assert recorder is not None, "no audio track arrived"
    heard = loud_seconds(recorder.samples(), recorder.sample_rate or 48000)
    assert heard >= 0.8, f"only {heard:.2f} s of the handler's audio was heard"


@pytest.mark.requirement("OUT-006")
def test_outputs_stay_with_their_connection(output_sessions: Recordings) -> None:
    """The additional outputs of one connection never reach another connection's
    state_change."""
    for peer in output_sessions["two-users"].peers:
        values = peer.output_values()
        assert values, (
            f"client {peer.inputs[0]} got no outputs ({len(peer.messages_of(OUTPUTS))} "
            f"notices, errors {peer.errors[:2]})"
        )
        foreign = [v for v in values if v != [[peer.inputs[0]]]]
        assert not foreign, f"client {peer.inputs[0]} got another user's outputs: {foreign[:3]}"


@pytest.mark.requirement("OUT-007")
async def test_a_slow_outputs_fn_delays_no_other_session(adapter: Adapter) -> None:
    """One session's slow on_additional_outputs function does not delay another session's
    updates: while it takes 2 s per item for one session, another session's outputs reach
    that session within 1 s of being yielded."""
    from conformance.wire import serving

    def tagged(api: Api) -> Any:
        counts: dict[str, int] = {}

        def detect(frame: np.ndarray, who: str) -> Any:
            counts[who] = counts.get(who, 0) + 1
            if counts[who] % 10:
                return None
            return api.AdditionalOutputs([who, time.time()])

        return detect

    def on_outputs(item: Any) -> Any:
        if item[0] == "slow":
            time.sleep(2.0)
        return item

    scenario = Scenario(
        "send",
        "video",
        tagged,
        inputs=(Input("nobody", "text"),),
        outputs=1,
        on_outputs=on_outputs,
        concurrency_limit=MANY,
    )
    async with serving(adapter, scenario) as wire:
        slow = wire.peer(send=barcode(), inputs=["slow"])
        fast = wire.peer(send=barcode(), inputs=["fast"])
        for peer in (slow, fast):
            await peer.connect_ok()
        # the slow session's fn is busy from its first item on
        await eventually(lambda: len(slow.outputs) >= 1, 10.0)
        since = time.time()
        await eventually(lambda: sum(u.t > since for u in fast.outputs) >= 6, 8.0)
        late = [
            round(update.t - value[1], 2)
            for update in fast.outputs
            if update.t > since
            for value in update.values
            if isinstance(value, list) and value[0] == "fast"
        ]
        assert len(late) >= 6, f"the fast session got {len(late)} updates: {fast.outputs[:3]}"
        assert max(late) <= 1.0, f"the fast session's updates arrived up to {max(late)} s late"
