"""ReplyOnPause on real speech (espeak-ng fixtures with ground truth), streamed in real time.

The sessions are recorded once (``rop_sessions``, conformance/sessions.py): two utterances
with a pause, one utterance with an extra input, send mode with AdditionalOutputs, noise and
a tone without speech, and hesitations. Implementations whose ReplyOnPause cannot run
offline report these as UNSUPPORTED.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from conformance.helpers import loud_seconds
from conformance.recording import Recordings
from conformance.sessions import REPLY_FREQ, REPLY_S


def calls(recordings: Recordings, name: str) -> list[dict[str, Any]]:
    return recordings[name].probe.get("call")


def speech_end(recordings: Recordings, name: str, turn: int) -> float:
    """Wall-clock time at which the client finished sending utterance ``turn``."""
    recording = recordings[name]
    start = recording.notes["start"]
    assert start is not None, "the client's track never started"
    return float(start + recordings.scenarios[name].expected_turn_ends[turn])


def utterance_seconds(recordings: Recordings, name: str, turn: int) -> float:
    segment = recordings.scenarios[name].speech_segments()[turn]
    return float(segment.end_s - segment.start_s)


@pytest.mark.requirement("ROP-001")
def test_fn_is_called_after_the_user_stops(rop_sessions: Recordings) -> None:
    """With ReplyOnPause(fn) as the stream of a send-receive audio component, fn is called
    after the user stops speaking."""
    made = calls(rop_sessions, "turns")
    assert made, "fn was never called"
    end = speech_end(rop_sessions, "turns", 0)
    assert made[0]["t"] > end, f"fn was called {end - made[0]['t']:.2f} s before speech ended"


@pytest.mark.requirement("ROP-002")
def test_fn_gets_the_entire_utterance(rop_sessions: Recordings) -> None:
    """fn receives the entire audio up until the user stopped (its duration covers the whole
    utterance), as (sampling_rate, ndarray)."""
    made = calls(rop_sessions, "turns")
    assert made, "fn was never called"
    first = made[0]
    assert isinstance(first["rate"], int | np.integer) and first["rate"] > 0
    spoken = utterance_seconds(rop_sessions, "turns", 0)
    audio = np.asarray(first["audio"]).reshape(-1)
    assert first["seconds"] >= spoken - 0.25, (
        f"fn got {first['seconds']:.2f} s of audio for a {spoken:.2f} s utterance"
    )
    heard = loud_seconds(audio, int(first["rate"]), threshold=0.02)
    assert heard >= 0.6 * spoken, f"only {heard:.2f} s of the {spoken:.2f} s of speech is in it"


@pytest.mark.requirement("ROP-003")
def test_utterance_shape_is_1_by_n(rop_sessions: Recordings) -> None:
    """The utterance array has shape (1, num_samples)."""
    made = calls(rop_sessions, "turns")
    assert made, "fn was never called"
    shapes = [c["shape"] for c in made]
    assert all(len(s) == 2 and s[0] == 1 and s[1] > 0 for s in shapes), f"shapes: {shapes}"


@pytest.mark.requirement("ROP-004")
def test_yielded_audio_is_played(rop_sessions: Recordings) -> None:
    """Audio chunks yielded by fn, (rate, array (1, N)) or (rate, array, 'mono'), are played
    to the client."""
    from fixtures.analysis import dominant_frequency

    recording = rop_sessions["turns"]
    recorder = recording.peer.recorder
    assert recorder is not None, "the client received no audio track"
    samples = recorder.samples()
    rate = recorder.sample_rate or 48000
    heard = loud_seconds(samples, rate)
    replies = max(1, len(calls(rop_sessions, "turns")))
    assert heard >= 0.8 * sum(REPLY_S) * replies, (
        f"{heard:.2f} s of reply audio heard for {replies} replies of {sum(REPLY_S)} s"
    )
    x = samples.astype(np.float64) / 32768
    assert dominant_frequency(x, rate) == pytest.approx(REPLY_FREQ, abs=10)


@pytest.mark.requirement("ROP-005")
def test_fn_gets_additional_inputs(rop_sessions: Recordings) -> None:
    """The values of additional input components are passed to fn after the audio."""
    made = calls(rop_sessions, "inputs")
    assert made, "fn(audio, level) was never called"
    assert made[0]["extra"] == (7,), f"fn got extra arguments {made[0]['extra']!r}, expected (7,)"


@pytest.mark.requirement("ROP-006")
def test_each_pause_gives_a_reply(rop_sessions: Recordings) -> None:
    """Each pause gives a reply: two utterances separated by a 1.5 s pause give two calls of
    fn, each with its own utterance."""
    made = calls(rop_sessions, "turns")
    assert len(made) == 2, f"fn was called {len(made)} times for two utterances"
    first_end = speech_end(rop_sessions, "turns", 0)
    second_end = speech_end(rop_sessions, "turns", 1)
    assert first_end < made[0]["t"] < second_end, "the first reply did not follow utterance 1"
    assert made[1]["t"] > second_end, "the second reply came before utterance 2 ended"
    spoken = utterance_seconds(rop_sessions, "turns", 1)
    assert made[1]["seconds"] >= spoken - 0.25, (
        f"the second call got {made[1]['seconds']:.2f} s for a {spoken:.2f} s utterance"
    )
    assert made[1]["seconds"] < spoken + 1.6, "the second call also got the first utterance"


@pytest.mark.requirement("ROP-007")
def test_no_reply_without_speech(rop_sessions: Recordings) -> None:
    """Silence, noise and steady tones without speech do not trigger a reply."""
    made = calls(rop_sessions, "no-speech")
    assert not made, f"fn was called {len(made)} times for noise, a tone and silence"


@pytest.mark.requirement("ROP-008")
def test_hesitations_do_not_end_the_turn(rop_sessions: Recordings) -> None:
    """Short hesitations (250 ms) inside an utterance do not end the turn."""
    made = calls(rop_sessions, "hesitations")
    assert len(made) == 1, f"fn was called {len(made)} times for one hesitant utterance"
    end = speech_end(rop_sessions, "hesitations", 0)
    assert made[0]["t"] > end, "the turn ended at a hesitation"


@pytest.mark.requirement("ROP-009")
def test_reply_starts_promptly(rop_sessions: Recordings) -> None:
    """The reply's first audio reaches the client within 1.5 s after the end of speech."""
    recording = rop_sessions["turns"]
    recorder = recording.peer.recorder
    assert recorder is not None, "the client received no audio track"
    samples = recorder.samples().astype(np.float64) / 32768
    delays = []
    for turn in range(2):
        end = speech_end(rop_sessions, "turns", turn)
        first = next(
            (
                arrival
                for position, n, arrival in recorder.frames
                if arrival > end and np.sqrt(np.mean(samples[position : position + n] ** 2)) > 0.05
            ),
            None,
        )
        assert first is not None, f"no reply audio arrived after utterance {turn + 1}"
        delays.append(first - end)
    assert max(delays) <= 1.5, f"reply delays after end of speech: {[round(d, 2) for d in delays]}"


@pytest.mark.requirement("SIG-011")
def test_server_asks_for_inputs_with_tick(rop_sessions: Recordings) -> None:
    """When the handler needs the values of the stream's other inputs, the server asks for
    them by sending the string 'tick' on the data channel."""
    recording = rop_sessions["inputs"]
    texts = [m.text for m in recording.peer.messages]
    assert calls(rop_sessions, "inputs"), "fn(audio, level) was never called"
    assert "tick" in texts, f"the server never sent 'tick'; messages: {texts[:8]}"


@pytest.mark.requirement("OUT-004")
def test_send_mode_reply_with_only_outputs(rop_sessions: Recordings) -> None:
    """Send mode with ReplyOnPause: a reply function that yields only AdditionalOutputs (no
    audio) updates the outputs."""
    recording = rop_sessions["outputs"]
    assert calls(rop_sessions, "outputs"), "the reply function was never called"
    values = [v for update in recording.peer.output_values() for v in update]
    contents = [m.get("content") for v in values if isinstance(v, list) for m in v]
    assert any(isinstance(c, str) and c.startswith("heard ") for c in contents), (
        f"the outputs were never updated; updates: {recording.peer.output_values()[:5]}"
    )
