"""fastrtc profile: ReplyOnPause's startup_fn, trigger_response, interruption and turn logs,
on silence or on the espeak-ng speech fixtures, streamed in real time."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from conformance.adapters import Adapter, Api, FastrtcApi, Input, Scenario
from conformance.helpers import MANY, Probe
from conformance.recording import Plan, Recordings, record_all
from conformance.sessions import REPLY_FREQ, speech
from conformance.tests.fastrtc.media import (
    chunk,
    contexts_check,
    heard,
    note_context,
    silence_track,
    speech_track,
    texts,
    tone_frames,
)
from conformance.wire import Wire, eventually, parse_json

STARTUP_FREQ, TRIGGER_FREQ, LONG_FREQ, SECOND_FREQ = 600.0, 700.0, 500.0, 900.0
#: The interrupted reply: 40 chunks of 0.25 s (10 s), 0.2 s apart (as a TTS streams).
LONG_CHUNKS, LONG_CHUNK_S, LONG_PACE_S = 40, 0.25, 0.2
#: How long after the interrupting utterance ends the first reply may still be heard (the
#: pause detector's delay and the chunk in flight).
LATE_S = 2.0


def _startup_plan(fapi: FastrtcApi, *, with_inputs: bool) -> Plan:
    """ReplyOnPause(fn, startup_fn=startup) on a silent microphone."""

    def scenario(probe: Probe) -> Scenario:
        def handler(api: Api) -> Any:
            if with_inputs:

                def response_with(audio: Any, level: Any) -> Iterator[Any]:
                    probe.add("call", time.time())
                    yield chunk(REPLY_FREQ, 0.3)

                def startup_with(level: Any) -> Iterator[Any]:
                    probe.add("startup", (level,))
                    yield chunk(STARTUP_FREQ, 0.6)

                return api.reply_on_pause(response_with, startup_fn=startup_with)

            def response(audio: Any) -> Iterator[Any]:
                probe.add("call", time.time())
                yield chunk(REPLY_FREQ, 0.3)

            def startup() -> Iterator[Any]:
                probe.add("startup", ())
                yield chunk(STARTUP_FREQ, 0.6)

            return api.reply_on_pause(response, startup_fn=startup)

        inputs = (Input(7),) if with_inputs else ()
        return Scenario("send-receive", "audio", handler, inputs=inputs, needs_fastrtc=True)

    async def script(wire: Wire, probe: Probe) -> dict[str, Any]:
        peer = wire.peer(send=silence_track())
        await peer.connect_ok()
        recorder = await peer.wait_remote()
        await eventually(lambda: heard(recorder, STARTUP_FREQ) >= 0.5, 8.0)
        await peer.close()
        return {}

    return Plan(scenario, script)


def _trigger_plan(fapi: FastrtcApi) -> Plan:
    """Two silent clients; the test calls trigger_response() on each connection's handler."""

    def scenario(probe: Probe) -> Scenario:
        def handler(api: Api) -> Any:
            def response(audio: Any) -> Iterator[Any]:
                rate, array = audio
                k = probe.bump("calls")
                probe.add("call", (time.time(), rate, getattr(array, "shape", None)))
                note_context(fapi, probe, "reply", k)
                yield chunk(TRIGGER_FREQ, 0.6)

            reply = api.reply_on_pause(response)
            original_copy = reply.copy

            def copy() -> Any:
                clone = original_copy()
                probe.add("handler", clone)
                return clone

            reply.copy = copy
            return reply

        return Scenario(
            "send-receive", "audio", handler, concurrency_limit=MANY, needs_fastrtc=True
        )

    async def script(wire: Wire, probe: Probe) -> dict[str, Any]:
        tracks = [silence_track() for _ in range(2)]
        peers = [wire.peer(send=track) for track in tracks]
        for peer in peers:
            await peer.connect_ok()
            await peer.wait_remote()
        await eventually(lambda: all(t.samples_sent >= 48000 // 2 for t in tracks), 5.0)
        handlers = probe.get("handler")
        assert len(handlers) == 2, f"{len(handlers)} handlers for two connections"
        triggered = time.time()
        for handler_ in handlers:
            await asyncio.to_thread(handler_.trigger_response)
        for peer in peers:
            await eventually(lambda p=peer: heard(p.recorder, TRIGGER_FREQ) >= 0.4, 6.0)
        for peer in peers:
            await peer.close()
        return {"triggered": triggered, "ids": [p.webrtc_id for p in peers]}

    return Plan(scenario, script)


def _interrupt_plan(fapi: FastrtcApi, **kwargs: Any) -> Plan:
    """Two utterances; the first one's reply (10 s, streamed) still plays when the second
    utterance comes."""
    scenario_ = speech("speech_pause_speech")

    def scenario(probe: Probe) -> Scenario:
        def handler(api: Api) -> Any:
            def response(audio: Any) -> Iterator[Any]:
                k = probe.bump("calls")
                probe.add("call", (k, time.time()))
                if k == 1:
                    for _ in range(LONG_CHUNKS):
                        probe.add("long-yield", time.time())
                        yield chunk(LONG_FREQ, LONG_CHUNK_S)
                        time.sleep(LONG_PACE_S)
                else:
                    yield chunk(SECOND_FREQ, 0.6)

            return api.reply_on_pause(response, **kwargs)

        return Scenario("send-receive", "audio", handler, needs_fastrtc=True)

    async def script(wire: Wire, probe: Probe) -> dict[str, Any]:
        track = speech_track(scenario_.audio)
        peer = wire.peer(send=track)
        await peer.connect_ok()
        await peer.wait_remote()
        await eventually(lambda: track.start_time is not None, 5.0)
        start = track.start_time or time.time()
        second_end = start + scenario_.expected_turn_ends[1]
        # long enough to see the first reply go on (it would run until about 14 s)
        await eventually(lambda: time.time() > second_end + 4.0, 15.0)
        await peer.close()
        return {"start": start, "second_end": second_end}

    return Plan(scenario, script)


@pytest.fixture(scope="module")
def startup_sessions(adapter: Adapter, fapi: FastrtcApi) -> Recordings:
    adapter.require("reply_on_pause")
    return record_all(
        adapter,
        {
            "startup": _startup_plan(fapi, with_inputs=False),
            "startup-inputs": _startup_plan(fapi, with_inputs=True),
            "trigger": _trigger_plan(fapi),
        },
    )


@pytest.fixture(scope="module")
def interrupt_sessions(adapter: Adapter, fapi: FastrtcApi) -> Recordings:
    adapter.require("reply_on_pause")
    return record_all(
        adapter,
        {
            "interrupt-true": _interrupt_plan(fapi, can_interrupt=True),
            "interrupt-default": _interrupt_plan(fapi),
        },
    )


@pytest.mark.requirement("FROP-001")
def test_startup_fn_plays_at_connection(startup_sessions: Recordings) -> None:
    """startup_fn is called once when the connection is established and its audio is
    played without the user saying anything."""
    recording = startup_sessions["startup"]
    calls = recording.probe.get("startup")
    assert calls == [()], f"startup_fn calls: {calls}"
    seconds = heard(recording.peer.recorder, STARTUP_FREQ)
    assert seconds >= 0.5, f"startup_fn's 0.6 s were heard for {seconds:.2f} s"
    assert not recording.probe.get("call"), "fn was called although nobody spoke"


@pytest.mark.requirement("FROP-002")
def test_startup_fn_gets_the_inputs(startup_sessions: Recordings) -> None:
    """A startup_fn of a ReplyOnPause whose fn takes inputs gets their current values."""
    recording = startup_sessions["startup-inputs"]
    calls = recording.probe.get("startup")
    assert calls == [(7,)], (
        f"startup_fn(level) calls: {calls}; client messages: {texts(recording.peer)[:6]}"
    )
    seconds = heard(recording.peer.recorder, STARTUP_FREQ)
    assert seconds >= 0.5, f"startup_fn's 0.6 s were heard for {seconds:.2f} s"


@pytest.mark.requirement("FROP-003")
def test_trigger_response_starts_a_reply(startup_sessions: Recordings) -> None:
    """trigger_response() starts a reply at once: fn gets the audio so far as (rate,
    (1, N)) and what it yields is played."""
    recording = startup_sessions["trigger"]
    calls = recording.probe.get("call")
    triggered = recording.notes["triggered"]
    assert len(calls) == 2, f"fn was called {len(calls)} times for two triggers"
    for t, rate, shape in calls:
        assert t >= triggered, "fn was called before trigger_response()"
        assert t < triggered + 2.0, f"fn was called {t - triggered:.2f} s after the trigger"
        assert isinstance(rate, int | np.integer) and rate > 0, f"rate {rate!r}"
        assert shape is not None and len(shape) == 2 and shape[0] == 1, f"shape {shape}"
    for peer in recording.peers:
        seconds = heard(peer.recorder, TRIGGER_FREQ)
        assert seconds >= 0.4, f"the triggered reply was heard for {seconds:.2f} s"


@pytest.mark.requirement("FHND-009")
def test_context_in_reply_function(startup_sessions: Recordings) -> None:
    """get_current_context().webrtc_id in a ReplyOnPause reply function is the webrtc_id of
    the connection it answers."""
    recording = startup_sessions["trigger"]
    contexts_check(recording.probe, recording.notes["ids"], {"reply"})


def _interrupted(recordings: Recordings, name: str) -> None:
    recording = recordings[name]
    probe, recorder = recording.probe, recording.peer.recorder
    second_end = recording.notes["second_end"]
    calls = probe.get("call")
    assert calls, "fn was never called"
    long_audio = tone_frames(recorder, LONG_FREQ)
    assert long_audio, "the first reply was never heard"
    assert long_audio[0][0] < second_end, "the first reply did not play during utterance 2"
    late_audio = [t for t, _ in long_audio if t > second_end + LATE_S]
    late_yields = [t for t in probe.get("long-yield") if t > second_end + LATE_S]
    assert not late_audio and not late_yields, (
        f"the first reply went on after the second utterance: "
        f"{sum(s for t, s in long_audio if t > second_end + LATE_S):.2f} s of its audio and "
        f"{len(late_yields)} of its chunks came more than {LATE_S} s after that utterance ended"
    )
    assert len(calls) == 2, f"fn was called {len(calls)} times for two utterances"
    second = heard(recorder, SECOND_FREQ, since=second_end)
    assert second >= 0.4, f"the second utterance's reply was heard for {second:.2f} s"


@pytest.mark.requirement("FROP-004")
def test_can_interrupt_stops_the_reply(interrupt_sessions: Recordings) -> None:
    """can_interrupt=True: speaking while a reply plays stops it, and the new utterance
    gets a reply of its own."""
    _interrupted(interrupt_sessions, "interrupt-true")


@pytest.mark.requirement("FROP-005")
def test_replies_can_be_interrupted_by_default(interrupt_sessions: Recordings) -> None:
    """ReplyOnPause(fn) without can_interrupt can be interrupted by speaking again."""
    _interrupted(interrupt_sessions, "interrupt-default")


@pytest.mark.requirement("FROP-006")
def test_turn_logs_follow_the_speech(adapter: Adapter, rop_sessions: Recordings) -> None:
    """started_talking during each utterance, pause_detected after it, response_starting
    before the reply's first audio, all before the next utterance."""
    adapter.require("fastrtc")
    recording = rop_sessions["turns"]
    start = recording.notes["start"]
    assert start is not None, "the client's track never started"
    segments = rop_sessions.scenarios["turns"].speech_segments()
    logs = [
        (m.t, str(data.get("data")))
        for m in recording.peer.messages
        if (data := parse_json(m.text)) is not None and data.get("type") == "log"
    ]
    reply_audio = [t for t, _ in tone_frames(recording.peer.recorder, REPLY_FREQ)]

    def first(kind: str, after: float) -> float | None:
        return next((t for t, d in logs if d == kind and t > after), None)

    for k, segment in enumerate(segments):
        begin, end = start + segment.start_s, start + segment.end_s
        following = start + segments[k + 1].start_s if k + 1 < len(segments) else float("inf")
        where = f"utterance {k + 1} ({segment.start_s:.2f}-{segment.end_s:.2f} s); logs {logs}"
        talking = first("started_talking", begin)
        assert talking is not None and talking < end, f"no started_talking during {where}"
        pause = first("pause_detected", talking)
        assert pause is not None and end < pause < following, f"pause_detected: {where}"
        starting = first("response_starting", pause)
        assert starting is not None and starting < following, f"response_starting: {where}"
        audio = next((t for t in reply_audio if t > end), None)
        assert audio is not None, f"no reply audio after {where}"
        assert starting <= audio + 0.25, (
            f"response_starting came {starting - audio:.2f} s after the reply's audio: {where}"
        )
