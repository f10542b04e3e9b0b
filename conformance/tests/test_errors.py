"""Errors: reported to the client, never a silent freeze, contained to their connection."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from conformance.adapters import Adapter, Api, Input, Scenario
from conformance.helpers import MANY, Probe, tone
from conformance.recording import Plan, Recordings, record_all
from conformance.wire import END, ERROR, Wire, eventually, message_text, serving


def barcode() -> Any:
    from fixtures.tracks import BarcodeVideoTrack

    return BarcodeVideoTrack(320, 240, clock=time.time)


def ended_at(peer: Any) -> float | None:
    """When the connection ended for the client: its first end_stream, or its peer
    connection closing or failing (``time.time()``), or ``None``."""
    times = [m.t for m in peer.messages_of(END)]
    times += [t for t, state in peer.states if state in ("closed", "failed")]
    return min(times) if times else None


def errors_of(peer: Any) -> list[str]:
    return [message_text(m.text) for m in peer.messages_of(ERROR)]


def _exploding_plan() -> Plan:
    """Two clients of one video stream; fn raises for the one whose input says explode."""

    def scenario(probe: Probe) -> Scenario:
        def fragile(image: np.ndarray, explode: Any) -> np.ndarray:
            if explode:
                probe.add("raised", time.time())
                raise RuntimeError("model exploded")
            return image

        return Scenario(
            "send-receive",
            "video",
            lambda api: fragile,
            inputs=(Input(False, "checkbox"),),
            concurrency_limit=MANY,
        )

    async def script(wire: Wire, probe: Probe) -> dict[str, Any]:
        good = wire.peer(send=barcode(), inputs=[False])
        bad = wire.peer(send=barcode(), inputs=[True])
        for peer in (good, bad):
            await peer.connect_ok()
        await good.wait_remote()
        await eventually(lambda: bool(probe.get("raised")), 6.0)
        raised = probe.get("raised")[0]
        await eventually(lambda: time.time() > raised + 3.5, 5.0)
        for peer in (good, bad):
            await peer.close()
        return {"raised": raised}

    return Plan(scenario, script)


def _bad_output_plan() -> Plan:
    def scenario(probe: Probe) -> Scenario:
        def wrong_dtype(image: np.ndarray) -> np.ndarray:
            return image.astype(np.float64) / 255.0

        return Scenario("send-receive", "video", lambda api: wrong_dtype)

    async def script(wire: Wire, probe: Probe) -> dict[str, Any]:
        peer = wire.peer(send=barcode())
        await peer.connect_ok()
        await eventually(lambda: bool(peer.messages_of(ERROR)) or peer.ended, 5.0)
        await peer.close()
        return {}

    return Plan(scenario, script)


def _generator_error_plan() -> Plan:
    def scenario(probe: Probe) -> Scenario:
        def handler(api: Api) -> Any:
            def generation() -> Iterator[Any]:
                yield (24000, tone(500.0, 0.2, 24000))
                raise RuntimeError("generator broke")

            return generation

        return Scenario("receive", "audio", handler)

    async def script(wire: Wire, probe: Probe) -> dict[str, Any]:
        peer = wire.peer()
        await peer.connect()  # the generator may fail before the connection completes

        def over() -> bool:
            stopped = peer.ended or (peer.recorder is not None and peer.recorder.ended)
            return stopped and bool(peer.messages_of(ERROR))

        await eventually(over, 5.0)
        await peer.close()
        return {}

    return Plan(scenario, script)


@pytest.fixture(scope="module")
def error_sessions(adapter: Adapter) -> Recordings:
    return record_all(
        adapter,
        {
            "exploding": _exploding_plan(),
            "bad-output": _bad_output_plan(),
            "generator": _generator_error_plan(),
        },
    )


@pytest.mark.requirement("ERR-001")
def test_handler_exception_is_reported(error_sessions: Recordings) -> None:
    """An exception raised by the stream function is reported to the client on the data
    channel ({type: 'error'}) with the exception's message."""
    recording = error_sessions["exploding"]
    assert recording.probe.get("raised"), "fn never raised (the input never arrived)"
    bad = recording.peers[1]
    errors = errors_of(bad)
    assert any("model exploded" in e for e in errors), (
        f"no error message reached the client; messages: {[m.text for m in bad.messages][:5]}"
    )


@pytest.mark.requirement("ERR-002")
def test_no_silent_freeze_after_an_exception(error_sessions: Recordings) -> None:
    """No silent freeze: after a send-receive video fn raises, within 3 s either frames flow
    again or the server ends the connection (end_stream, or the connection closes)."""
    recording = error_sessions["exploding"]
    raised = recording.notes["raised"]
    bad = recording.peers[1]
    ended = ended_at(bad)
    if ended is not None and ended <= raised + 3.0:
        return  # the server ended the connection in time
    recorder = bad.recorder
    assert recorder is not None, "the client never got a video track, and nothing ended it"
    flowing = [f for f in recorder.frames if raised + 1.0 < f.arrival <= raised + 3.0]
    assert len(flowing) >= 10, (
        f"3 s after fn raised the connection was still open (it ended at "
        f"{'never' if ended is None else f'+{ended - raised:.1f} s'}) and only "
        f"{len(flowing)} frames arrived in the last 2 s: a frozen picture"
    )


@pytest.mark.requirement("ERR-003")
def test_exception_does_not_disturb_other_connections(error_sessions: Recordings) -> None:
    """An exception in one connection's handler does not disturb the other connections."""
    recording = error_sessions["exploding"]
    raised = recording.notes["raised"]
    good = recording.peers[0]
    frames = [f for f in good.recorder.frames if raised + 0.5 < f.arrival <= raised + 2.5]
    assert len(frames) >= 30, f"the other client got {len(frames) / 2:.0f} fps after the error"


@pytest.mark.requirement("ERR-004")
def test_contract_breaking_output_is_reported(error_sessions: Recordings) -> None:
    """Output that breaks the frame contract (a float64 video frame) is reported to the
    client with a message naming what was expected."""
    peer = error_sessions["bad-output"].peer
    errors = errors_of(peer)
    assert errors, f"nothing reported; messages: {[m.text for m in peer.messages][:5]}"
    assert any("uint8" in e for e in errors), (
        f"the message does not say what was expected: {errors}"
    )


@pytest.mark.requirement("ERR-005")
def test_generator_exception_is_reported_and_ends(error_sessions: Recordings) -> None:
    """An exception in a receive-mode generator is reported to the client and the stream
    ends."""
    peer = error_sessions["generator"].peer
    errors = errors_of(peer)
    assert any("generator broke" in e for e in errors), (
        f"no error reached the client (connection {peer.pc.connectionState}, data channel "
        f"{'opened' if peer.channel_opened_at else 'never opened'}); "
        f"messages: {[m.text for m in peer.messages][:5]}"
    )
    assert peer.ended or (peer.recorder is not None and peer.recorder.ended), "it did not end"


@pytest.mark.requirement("ERR-006")
async def test_failing_copy_fails_the_offer(adapter: Adapter) -> None:
    """A StreamHandler whose copy() raises makes the offer fail with a failure reply, not an
    HTTP error or a dead connection."""

    def handler(api: Api) -> Any:
        class Broken(api.StreamHandler):  # type: ignore[name-defined,misc]
            def receive(self, frame: Any) -> None:
                pass

            def emit(self) -> None:
                return None

            def copy(self) -> Any:
                raise RuntimeError("cannot copy")

        return Broken()

    from fixtures.tracks import ToneAudioTrack

    async with serving(adapter, Scenario("send-receive", "audio", handler)) as wire:
        peer = wire.peer(send=ToneAudioTrack(440.0))
        reply = await peer.connect()
        assert reply.status == 200, f"HTTP {reply.status}: {str(reply.body)[:200]}"
        assert isinstance(reply.body, dict) and reply.body.get("status") == "failed", (
            f"the offer was not refused: {str(reply.body)[:120]}"
        )


@pytest.mark.requirement("ERR-007")
async def test_exception_texts_stay_on_the_server(
    adapter: Adapter, caplog: pytest.LogCaptureFixture
) -> None:
    """Unless the app is launched with show_error=True, the client's error message does not
    contain the exception's text, and carries a token that the server's log record with
    the traceback also carries."""
    import logging
    import re

    secret = "token=s3cr3t-value at /srv/app/model.bin"

    def fragile(image: np.ndarray) -> np.ndarray:
        raise RuntimeError(secret)

    scenario = Scenario("send-receive", "video", lambda api: fragile, show_error=False)
    with caplog.at_level(logging.ERROR):
        async with serving(adapter, scenario) as wire:
            peer = wire.peer(send=barcode())
            await peer.connect_ok()
            await eventually(lambda: bool(errors_of(peer)), 6.0)
            await peer.close()
    errors = errors_of(peer)
    assert errors, "no error message reached the client"
    assert not [e for e in errors if "s3cr3t" in e or "/srv/app" in e], (
        f"the exception's text reached the client: {errors}"
    )
    with_traceback = [r for r in caplog.records if r.exc_info and secret in str(r.exc_info[1])]
    assert with_traceback, "the server did not log the exception with its traceback"
    tokens = set(re.findall(r"[0-9A-Za-z]{6,}", errors[0]))
    logged = " ".join(r.getMessage() for r in with_traceback)
    assert any(token in logged and any(c.isdigit() for c in token) for token in tokens), (
        f"no token of the client's message {errors[0]!r} appears in the log record {logged!r}"
    )
