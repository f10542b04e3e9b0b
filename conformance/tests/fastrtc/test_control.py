"""fastrtc profile: CloseStream, Warning, WebRTCError and the data-channel message format."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from conformance.adapters import Adapter, Api, FastrtcApi, Input, Scenario
from conformance.helpers import MANY, Probe
from conformance.recording import Plan, Recordings, record_all
from conformance.sessions import speech
from conformance.tests.fastrtc.media import (
    chunk,
    contexts_check,
    heard,
    note_context,
    speech_track,
    texts,
    tone_frames,
    tone_track,
)
from conformance.wire import END, ERROR, Wire, eventually, message_text, parse_json

CLOSED_FREQ, NEVER_FREQ, STREAM_FREQ = 600.0, 900.0, 700.0
WARNED_FREQ, QUIET_FREQ = 880.0, 440.0
WARNING_TEXT = "careful: slow down"
ERROR_TEXT = "This is a test error"


def _end_messages(peer: Any) -> list[tuple[float, dict[str, Any]]]:
    return [(m.t, parse_json(m.text) or {}) for m in peer.messages_of(END)]


def _close_emit_plan(fapi: FastrtcApi) -> Plan:
    """emit returns 0.6 s of a tone, then CloseStream('bye')."""

    def scenario(probe: Probe) -> Scenario:
        def handler(api: Api) -> Any:
            class Closing(api.StreamHandler):  # type: ignore[misc,name-defined]
                def __init__(self) -> None:
                    super().__init__()
                    self.calls = 0

                def receive(self, frame: Any) -> None:
                    pass

                def emit(self) -> Any:
                    self.calls += 1
                    if self.calls == 1:
                        return chunk(CLOSED_FREQ, 0.6)
                    if self.calls == 2:
                        probe.add("closed", time.time())
                        return fapi.CloseStream("bye")
                    time.sleep(0.02)
                    return chunk(NEVER_FREQ, 0.02)

                def copy(self) -> Any:
                    return Closing()

            return Closing()

        return Scenario("send-receive", "audio", handler, needs_fastrtc=True)

    async def script(wire: Wire, probe: Probe) -> dict[str, Any]:
        peer = wire.peer(send=tone_track(440.0))
        await peer.connect_ok()
        await peer.wait_remote()
        await eventually(lambda: bool(peer.messages_of(END)), 6.0)
        ended = time.time()
        await eventually(lambda: time.time() > ended + 1.0, 2.0)  # anything after it shows
        await peer.close()
        return {}

    return Plan(scenario, script)


def _close_reply_plan(fapi: FastrtcApi) -> Plan:
    """A reply that yields 0.8 s of a tone, CloseStream('bye'), then another tone."""
    scenario_ = speech("speech_then_silence")

    def scenario(probe: Probe) -> Scenario:
        def handler(api: Api) -> Any:
            def response(audio: Any) -> Iterator[Any]:
                probe.add("call", time.time())
                yield chunk(CLOSED_FREQ, 0.5)
                yield chunk(CLOSED_FREQ, 0.3)
                probe.add("closed", time.time())
                yield fapi.CloseStream("bye")
                probe.add("after", time.time())
                yield chunk(NEVER_FREQ, 0.5)

            return api.reply_on_pause(response)

        return Scenario("send-receive", "audio", handler, needs_fastrtc=True)

    async def script(wire: Wire, probe: Probe) -> dict[str, Any]:
        peer = wire.peer(send=speech_track(scenario_.audio))
        await peer.connect_ok()
        await peer.wait_remote()
        await eventually(lambda: bool(peer.messages_of(END)), scenario_.duration_s + 4.0)
        ended = time.time()
        await eventually(lambda: time.time() > ended + 1.0, 2.0)  # anything after it shows
        await peer.close()
        return {}

    return Plan(scenario, script)


def _warning_plan(fapi: FastrtcApi) -> Plan:
    """Two clients; the handler of the one sending 880 Hz calls Warning() in receive; emit
    streams a tone in real time."""

    def scenario(probe: Probe) -> Scenario:
        def handler(api: Api) -> Any:
            from fixtures.analysis import dominant_frequency

            class Warning_(api.StreamHandler):  # type: ignore[misc,name-defined]
                def __init__(self) -> None:
                    super().__init__()
                    self.frames = 0
                    self.warned = False

                def receive(self, frame: Any) -> None:
                    rate, array = frame
                    self.frames += 1
                    # >= rather than ==: a handler shared by both connections (a
                    # broken copy()) still warns the 880 Hz sender on its next frame
                    if self.frames >= 25 and not self.warned:
                        freq = dominant_frequency(array.reshape(-1), rate)
                        if abs(freq - WARNED_FREQ) < 60:
                            self.warned = True
                            probe.add("warned", time.time())
                            fapi.Warning(WARNING_TEXT)

                def emit(self) -> Any:
                    time.sleep(0.09)
                    return chunk(STREAM_FREQ, 0.1)

                def copy(self) -> Any:
                    return Warning_()

            return Warning_()

        return Scenario(
            "send-receive", "audio", handler, concurrency_limit=MANY, needs_fastrtc=True
        )

    async def script(wire: Wire, probe: Probe) -> dict[str, Any]:
        peers = [wire.peer(send=tone_track(f)) for f in (WARNED_FREQ, QUIET_FREQ)]
        for peer in peers:
            await peer.connect_ok()
            await peer.wait_remote()
        warned = peers[0]

        def warning_arrived() -> bool:
            return any(WARNING_TEXT in m.text for m in warned.messages)

        await eventually(warning_arrived, 6.0)
        arrival = next((m.t for m in warned.messages if WARNING_TEXT in m.text), time.time())
        await eventually(lambda: heard(warned.recorder, STREAM_FREQ, since=arrival) >= 1.2, 4.0)
        for peer in peers:
            await peer.close()
        return {"arrival": arrival}

    return Plan(scenario, script)


def _webrtc_error_plan(fapi: FastrtcApi) -> Plan:
    """The docs' example: a receive-mode generator yields audio, then raises WebRTCError;
    the app hides other errors (show_error=False). Two clients."""

    def scenario(probe: Probe) -> Scenario:
        def handler(api: Api) -> Any:
            def generation(num_steps: Any) -> Iterator[Any]:
                note_context(fapi, probe, "generator", probe.bump("generators"))
                for _ in range(int(num_steps)):
                    yield chunk(CLOSED_FREQ, 0.3)
                probe.add("raised", time.time())
                raise fapi.WebRTCError(ERROR_TEXT)

            return generation

        return Scenario(
            "receive",
            "audio",
            handler,
            inputs=(Input(2),),
            show_error=False,
            concurrency_limit=MANY,
            needs_fastrtc=True,
        )

    async def script(wire: Wire, probe: Probe) -> dict[str, Any]:
        peers = [wire.peer() for _ in range(2)]
        for peer in peers:
            await peer.connect()
        for peer in peers:
            await eventually(lambda p=peer: bool(p.messages_of(ERROR)) or p.ended, 6.0)
        for peer in peers:
            await peer.close()
        return {"ids": [p.webrtc_id for p in peers]}

    return Plan(scenario, script)


@pytest.fixture(scope="module")
def control_sessions(adapter: Adapter, fapi: FastrtcApi) -> Recordings:
    return record_all(
        adapter,
        {
            "close-emit": _close_emit_plan(fapi),
            "warning": _warning_plan(fapi),
            "webrtc-error": _webrtc_error_plan(fapi),
        },
    )


@pytest.fixture(scope="module")
def close_reply_sessions(adapter: Adapter, fapi: FastrtcApi) -> Recordings:
    adapter.require("reply_on_pause")
    return record_all(adapter, {"close-reply": _close_reply_plan(fapi)})


def _closed_after_audio(recording: Any, played: float) -> None:
    peer = recording.peer
    ends = _end_messages(peer)
    assert ends, f"no end_stream reached the client; messages: {texts(peer)[:6]}"
    t_end, body = ends[0]
    assert body.get("data") == "bye", f"end_stream {body!r} does not carry data 'bye'"
    audio = tone_frames(peer.recorder, CLOSED_FREQ)
    seconds = sum(s for _, s in audio)
    assert seconds >= played - 0.15, (
        f"{seconds:.2f} s of the {played} s produced before CloseStream were played"
    )
    assert t_end >= audio[-1][0] - 0.1, (
        f"end_stream came {audio[-1][0] - t_end:.2f} s before the audio produced before it ended"
    )
    never = heard(peer.recorder, NEVER_FREQ)
    assert never == 0.0, f"{never:.2f} s of audio produced after CloseStream were played"


@pytest.mark.requirement("FMSG-001")
def test_close_stream_from_emit(control_sessions: Recordings) -> None:
    """emit returning CloseStream('bye') after audio: the audio is played, then end_stream
    with data 'bye'; nothing after it is played."""
    recording = control_sessions["close-emit"]
    assert recording.probe.get("closed"), "emit never returned CloseStream"
    _closed_after_audio(recording, 0.6)


@pytest.mark.requirement("FMSG-002")
def test_close_stream_mid_reply(close_reply_sessions: Recordings) -> None:
    """A reply yielding CloseStream('bye') mid-reply: its audio so far is played, then
    end_stream with data 'bye'; what it would yield after is never played."""
    recording = close_reply_sessions["close-reply"]
    assert recording.probe.get("call"), "the reply function was never called"
    assert recording.probe.get("closed"), "the reply never got to yield CloseStream"
    _closed_after_audio(recording, 0.8)


@pytest.mark.requirement("FMSG-003")
def test_warning_reaches_its_client_and_the_stream_goes_on(
    control_sessions: Recordings,
) -> None:
    """Warning(text) in handler code: {type: 'warning'} with the text reaches that
    connection's client only, and the stream goes on."""
    recording = control_sessions["warning"]
    assert recording.probe.get("warned"), "the handler never called Warning()"
    warned, quiet = recording.peers
    warnings = [m for m in warned.messages if (parse_json(m.text) or {}).get("type") == "warning"]
    assert warnings, f"no warning message reached the client; messages: {texts(warned)[:6]}"
    assert WARNING_TEXT in message_text(warnings[0].text), f"warning: {warnings[0].text}"
    others = [m.text for m in quiet.messages if "warning" in m.text]
    assert not others, f"the other connection's client got {others}"
    after = heard(warned.recorder, STREAM_FREQ, since=recording.notes["arrival"])
    assert after >= 1.0, f"only {after:.2f} s of audio came after the warning"
    stopped = [m.text for m in warned.messages if m.kind in (ERROR, END)]
    assert not stopped, f"the warning ended or failed the stream: {stopped}"


@pytest.mark.requirement("FMSG-004")
def test_webrtc_error_is_shown_verbatim(control_sessions: Recordings) -> None:
    """WebRTCError(text) raised in a receive-mode generator reaches the client as
    {type: 'error'} with the text verbatim, although show_error=False."""
    recording = control_sessions["webrtc-error"]
    assert recording.probe.get("raised"), "the generator never raised"
    for peer in recording.peers:
        errors = [message_text(m.text) for m in peer.messages_of(ERROR)]
        assert ERROR_TEXT in errors, (
            f"the client's error messages {errors} do not show {ERROR_TEXT!r}; "
            f"messages: {texts(peer)[:6]}"
        )


@pytest.mark.requirement("FMSG-005")
@pytest.mark.parametrize("kind", ["warning", "error"])
def test_messages_carry_their_text_in_data(control_sessions: Recordings, kind: str) -> None:
    """Error and warning messages carry their text in 'data'."""
    name, text = ("warning", WARNING_TEXT) if kind == "warning" else ("webrtc-error", ERROR_TEXT)
    peer = control_sessions[name].peer
    bodies = [
        body
        for m in peer.messages
        if (body := parse_json(m.text)) is not None and body.get("type") == kind
    ]
    assert bodies, f"no {kind} message reached the client; messages: {texts(peer)[:6]}"
    assert any(body.get("data") == text for body in bodies), (
        f"no {kind} message has data {text!r}: {bodies}"
    )


@pytest.mark.requirement("FHND-009")
def test_context_in_receive_mode_generator(control_sessions: Recordings) -> None:
    """get_current_context().webrtc_id in a receive-mode generator is the webrtc_id of the
    connection it streams to."""
    recording = control_sessions["webrtc-error"]
    contexts_check(recording.probe, recording.notes["ids"], {"generator"})
