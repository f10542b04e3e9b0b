"""Audio frames in and out: what handlers receive and what reaches the client.

Most tests read the shared recordings of ``audio_sessions`` (conformance/sessions.py); the
property test serves its own receive-mode stream.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from conformance.adapters import Adapter, Api, Input, Scenario
from conformance.helpers import MANY, loud_seconds, run_async, tone, tone_segments
from conformance.recording import Recordings
from conformance.sessions import CHUNK_S, ECHO_TONE_S, GENERATOR_CHUNKS, RATES
from conformance.wire import eventually, wait_for

#: The tone frequencies of the generator session.
TONES = tuple(c[1] for c in GENERATOR_CHUNKS if c[1])


def received(recordings: Recordings, name: str) -> tuple[np.ndarray, int]:
    """Mono int16 audio the client received in session ``name``, and its rate."""
    recorder = recordings[name].peer.recorder
    assert recorder is not None, "the client never received an audio track"
    return recorder.samples(), recorder.sample_rate or 48000


def dominant(samples: np.ndarray, rate: int) -> float:
    from fixtures.analysis import dominant_frequency

    x = np.asarray(samples, dtype=np.float64) / 32768
    loud = x[np.abs(x) > 0.01]
    assert loud.size > rate // 10, "the received audio is (nearly) silent"
    return float(dominant_frequency(x, rate))


@pytest.mark.requirement("AUD-001")
def test_echo_handler_echoes_the_tone(audio_sessions: Recordings) -> None:
    """Send-receive audio: what the StreamHandler's emit returns is played to the client;
    the guide's EchoHandler echoes a 440 Hz tone back as 440 Hz."""
    samples, rate = received(audio_sessions, "echo")
    assert dominant(samples, rate) == pytest.approx(440.0, abs=5), "the echo is not the tone sent"


@pytest.mark.requirement("AUD-002")
def test_receive_gets_rate_and_array(audio_sessions: Recordings) -> None:
    """receive(frame) gets a tuple (sample_rate, ndarray): an int rate and a numpy array."""
    calls = audio_sessions["receiver"].probe.get("receive")
    assert calls, "receive was never called"
    audio = audio_sessions["receiver"].probe.get("audio")
    for _, rate, _, _, _ in calls:
        assert isinstance(rate, int | np.integer), f"sample rate {rate!r} is not an int"
    assert all(isinstance(a, np.ndarray) for a in audio), "receive got something else than ndarray"


@pytest.mark.requirement("AUD-003")
def test_default_input_frames_are_48k_mono_int16_20ms(audio_sessions: Recordings) -> None:
    """With the default StreamHandler settings, receive gets 48000 Hz int16 mono arrays of
    shape (1, 960) (20 ms)."""
    calls = audio_sessions["receiver"].probe.get("receive")
    assert calls, "receive was never called"
    forms = {(rate, shape, dtype) for _, rate, shape, dtype, _ in calls}
    assert forms == {(48000, (1, 960), "int16")}, f"receive got {sorted(forms, key=str)}"


@pytest.mark.requirement("AUD-004")
def test_received_frames_carry_the_clients_audio(audio_sessions: Recordings) -> None:
    """The frames given to receive carry the client's audio: a 440 Hz tone sent by the
    client arrives at 440 Hz."""
    audio = audio_sessions["receiver"].probe.get("audio")
    calls = audio_sessions["receiver"].probe.get("receive")
    assert audio, "receive was never called"
    rate = calls[0][1]
    samples = np.concatenate([np.asarray(a).reshape(-1) for a in audio[-50:]])
    assert dominant(samples, rate) == pytest.approx(440.0, abs=5)


@pytest.mark.requirement("AUD-005")
def test_input_arrives_in_real_time(audio_sessions: Recordings) -> None:
    """Input frames reach receive in real time: after start-up, receive gets 0.8-1.2 s of
    audio per second of streaming (measured over 3 s)."""
    probe = audio_sessions["receiver"].probe
    calls = probe.get("receive")
    audio = probe.get("audio")
    assert len(calls) > 20, f"receive was called {len(calls)} times"
    times = np.array([c[0] for c in calls])
    seconds = np.array([np.asarray(a).size / c[1] for a, c in zip(audio, calls, strict=True)])
    start = times[0] + 0.5  # start-up excluded
    end = times[-1]
    assert end - start >= 3.0, f"the session streamed for {end - times[0]:.1f} s only"
    inside = (times > start) & (times <= end)
    rate = float(seconds[inside].sum()) / (end - start)
    assert 0.8 <= rate <= 1.2, f"receive got {rate:.2f} s of audio per second"


@pytest.mark.requirement("AUD-006")
def test_both_output_tuple_forms_are_played(audio_sessions: Recordings) -> None:
    """Output chunks (rate, array of shape (1, N)) and (rate, array, 'mono') are both
    accepted and played."""
    samples, rate = received(audio_sessions, "generator")
    runs = tone_segments(samples, rate, TONES)
    played = {f: s for f, s in runs}
    for rate_, freq, form, _, _ in GENERATOR_CHUNKS[:2]:
        assert played.get(freq, 0) >= CHUNK_S * 0.8, (
            f"the {form} chunk ({freq:.0f} Hz at {rate_} Hz) was not played: runs {runs}"
        )


@pytest.mark.requirement("AUD-007")
@pytest.mark.parametrize("rate", RATES)
def test_chunk_sample_rate_is_honoured(audio_sessions: Recordings, rate: int) -> None:
    """The sample rate of each chunk is honoured: a 1 kHz tone yielded at 16, 24 or 48 kHz
    is heard at 1 kHz, for its whole duration."""
    samples, received_rate = received(audio_sessions, f"rate-{rate}")
    assert dominant(samples, received_rate) == pytest.approx(1000.0, abs=15)
    assert loud_seconds(samples, received_rate) == pytest.approx(0.5, abs=0.06)


@pytest.mark.requirement("AUD-008")
def test_receive_mode_plays_chunks_in_order_and_completely(audio_sessions: Recordings) -> None:
    """Receive mode: after the trigger, the generator's chunks are played to the client in
    order and completely."""
    samples, rate = received(audio_sessions, "generator")
    first_two = tuple(c[1] for c in GENERATOR_CHUNKS[:2])
    runs = [(f, s) for f, s in tone_segments(samples, rate, first_two) if s >= 0.05]
    assert [f for f, _ in runs] == list(first_two), f"chunks arrived as {runs}"
    for freq, seconds in runs:
        assert seconds == pytest.approx(CHUNK_S, abs=0.06), f"{freq:.0f} Hz lasted {seconds} s"


@pytest.mark.requirement("AUD-009")
def test_generator_gets_the_inputs(audio_sessions: Recordings) -> None:
    """Receive mode: the generator is called with the values of the stream's inputs
    (generation(num_steps))."""
    args = audio_sessions["generator"].probe.get("args")
    assert args, "the generator was never called"
    assert args[0] == 3, f"generation(num_steps) got num_steps={args[0]!r}, expected 3"


@pytest.mark.requirement("AUD-011")
def test_stereo_output_is_played(audio_sessions: Recordings) -> None:
    """Stereo output (rate, array (1, 2N) interleaved, 'stereo') is accepted and played."""
    samples, rate = received(audio_sessions, "stereo")
    assert dominant(samples, rate) == pytest.approx(600.0, abs=10), "wrong pitch: layout misread"
    assert loud_seconds(samples, rate) == pytest.approx(CHUNK_S, abs=0.06)


@pytest.mark.requirement("AUD-012")
def test_format_changes_do_not_drop_chunks(audio_sessions: Recordings) -> None:
    """Chunks whose sample rate or dtype changes within one stream are all played."""
    samples, rate = received(audio_sessions, "generator")
    runs = tone_segments(samples, rate, TONES)
    played = {f: s for f, s in runs}
    for chunk_rate, freq, _, dtype, _ in GENERATOR_CHUNKS[3:5]:
        assert played.get(freq, 0) >= CHUNK_S * 0.8, (
            f"the {dtype} chunk at {chunk_rate} Hz ({freq:.0f} Hz tone) was dropped: runs {runs}"
        )


@pytest.mark.requirement("AUD-013")
def test_short_final_chunk_is_played_entirely(audio_sessions: Recordings) -> None:
    """The end of the output is not held back: a single 0.1 s chunk is played entirely."""
    samples, rate = received(audio_sessions, "tail")
    seconds = loud_seconds(samples, rate, threshold=0.05)
    assert seconds == pytest.approx(0.1, abs=0.02), f"{seconds:.3f} s of the 0.1 s chunk arrived"


@pytest.mark.requirement("AUD-014")
def test_echo_returns_nearly_all_audio(audio_sessions: Recordings) -> None:
    """The guide's EchoHandler returns at least 90 % of the client's audio."""
    samples, rate = received(audio_sessions, "echo")
    seconds = loud_seconds(samples, rate)
    assert seconds >= 0.9 * ECHO_TONE_S, f"{seconds:.2f} s of {ECHO_TONE_S} s came back"


@pytest.mark.requirement("AUD-015")
def test_send_mode_handler_receives_the_audio(audio_sessions: Recordings) -> None:
    """Send mode (audio): the handler receives the client's audio."""
    probe = audio_sessions["send"].probe
    audio = probe.get("audio")
    assert len(audio) >= 50, f"receive was called {len(audio)} times"
    rate = probe.get("receive")[0][1]
    samples = np.concatenate([np.asarray(a).reshape(-1) for a in audio[-50:]])
    assert dominant(samples, rate) == pytest.approx(440.0, abs=5)


# -- property: output formats --------------------------------------------------------------


class _Plan:
    """The chunks the next connection's generator yields (one example at a time)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.chunks: list[Any] = []


@pytest.fixture(scope="module")
def format_stream(adapter: Adapter) -> Iterator[tuple[Any, _Plan]]:
    plan = _Plan()

    def handler(api: Api) -> Any:
        def generation(step: Any) -> Iterator[Any]:
            with plan.lock:
                chunks = list(plan.chunks)
            yield from chunks

        return generation

    scenario = Scenario("receive", "audio", handler, inputs=(Input(1),), concurrency_limit=MANY)
    with adapter.serve(scenario) as served:
        yield served, plan


@st.composite
def output_chunks(draw: st.DrawFn) -> tuple[int, str, list[float]]:
    rate = draw(st.sampled_from([8000, 16000, 22050, 24000, 32000, 44100, 48000]))
    dtype = draw(st.sampled_from(["int16", "float32"]))
    durations = draw(st.lists(st.sampled_from([0.06, 0.1, 0.15, 0.25]), min_size=1, max_size=3))
    return rate, dtype, durations


#: Hypothesis settings of properties whose examples are real streams: few examples, a fixed
#: seed (reproducible CI), no shrinking and no replay (failures are collected instead).
STREAM_PROPERTY = settings(
    max_examples=4,
    deadline=None,
    derandomize=True,
    database=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)


def _play(served: Any, plan: _Plan, spec: tuple[int, str, list[float]]) -> str | None:
    """Play one example; return what went wrong, or None."""
    from conformance.wire import Wire

    rate, dtype, durations = spec
    chunks = []
    # silence after the tones: a held-back tail is AUD-013's business, not this test's
    for freq, seconds in [(900.0, d) for d in durations] + [(0.0, 0.2)]:
        array = tone(freq, seconds, rate)
        if dtype == "float32":
            array = array.astype(np.float32) / np.float32(32768)
        chunks.append((rate, array))
    with plan.lock:
        plan.chunks = chunks
    total = sum(durations)

    async def play() -> float:
        wire = Wire(served)
        try:
            peer = wire.peer()
            await peer.connect_ok()
            recorder = await peer.wait_remote()
            await eventually(
                lambda: (
                    peer.ended
                    or recorder.ended
                    or loud_seconds(recorder.samples(), 48000) >= total - 0.01
                ),
                total + 4.0,
            )
            # let the last frames arrive (a short measuring window, not a wait for an event)
            settle = time.time() + 0.3
            await wait_for(lambda: time.time() > settle, 1.0, "settle")
            return loud_seconds(recorder.samples(), recorder.sample_rate or 48000)
        finally:
            await wire.aclose()

    try:
        played = run_async(play())
    except Exception as exc:
        return f"{dtype} at {rate} Hz, chunks {durations}: {type(exc).__name__}: {exc}"
    if abs(played - total) > 0.03 + 0.02 * len(durations):
        return f"{dtype} at {rate} Hz, chunks {durations}: {played:.3f} s played of {total:.2f} s"
    return None


@pytest.mark.requirement("AUD-010")
def test_output_formats_keep_their_duration(format_stream: tuple[Any, _Plan]) -> None:
    """int16 and float32 output arrays (floats in [-1, 1]) at any common rate and chunk size
    are played with their duration preserved."""
    served, plan = format_stream
    failures: list[str] = []

    @STREAM_PROPERTY
    @given(spec=output_chunks())
    def example(spec: tuple[int, str, list[float]]) -> None:
        problem = _play(served, plan, spec)
        if problem is not None:
            failures.append(problem)

    example()
    assert not failures, "; ".join(failures)
