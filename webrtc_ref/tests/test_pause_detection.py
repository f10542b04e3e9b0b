"""The packaged Silero VAD: integrity, scores on the speech fixtures, interfaces, options."""

from __future__ import annotations

import dataclasses
import hashlib
import threading
import time
from importlib import resources

import numpy as np
import pytest

from fixtures.speech import build_scenario
from webrtc_ref.pause_detection import (
    MODEL_SHA256,
    SAMPLE_RATE,
    WINDOW_SAMPLES,
    ModelChecksumError,
    MonoResampler,
    PauseDetectionModel,
    SileroVADModel,
    SileroVadOptions,
    StreamingPauseDetectionModel,
    VadStream,
    downmix_interleaved,
    get_silero_model,
    speech_timestamps,
)
from webrtc_ref.pause_detection.resample import resample_all

PACKAGE = resources.files("webrtc_ref.pause_detection")


def _probabilities(audio: np.ndarray, rate: int) -> np.ndarray:
    return get_silero_model().probabilities(resample_all(audio, rate, SAMPLE_RATE))


def _window_range(start_s: float, end_s: float) -> slice:
    """VAD windows lying entirely inside ``[start_s, end_s)``."""
    win = WINDOW_SAMPLES / SAMPLE_RATE
    return slice(int(np.ceil(start_s / win)), int(np.floor(end_s / win)))


# --------------------------------------------------------------------------- the file


def test_packaged_model_matches_the_recorded_checksum() -> None:
    data = PACKAGE.joinpath("silero_vad.onnx").read_bytes()
    assert hashlib.sha256(data).hexdigest() == MODEL_SHA256


def test_licence_ships_next_to_the_model() -> None:
    text = PACKAGE.joinpath("LICENSE").read_text()
    assert "MIT License" in text
    assert "Silero Team" in text


def test_corrupted_model_file_raises_a_clear_error(tmp_path) -> None:
    data = bytearray(PACKAGE.joinpath("silero_vad.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    bad = tmp_path / "silero_vad.onnx"
    bad.write_bytes(bytes(data))
    model = SileroVADModel(bad, sha256=MODEL_SHA256)
    with pytest.raises(ModelChecksumError) as info:
        model.load()
    message = str(info.value)
    assert str(bad) in message
    assert MODEL_SHA256 in message
    assert hashlib.sha256(bytes(data)).hexdigest() in message
    assert "reinstall" in message
    assert not model.loaded
    with pytest.raises(ModelChecksumError):  # every use fails the same way; nothing is cached
        model.new_stream().process(np.zeros(WINDOW_SAMPLES, np.float32))


def test_missing_model_file_raises_file_not_found(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="not found"):
        SileroVADModel(tmp_path / "nope.onnx").load()


def test_default_model_is_shared_and_loaded_once_across_threads() -> None:
    models: list[SileroVADModel] = []
    sessions: list[object] = []

    def use() -> None:
        model = get_silero_model()
        models.append(model)
        sessions.append(model.load())

    threads = [threading.Thread(target=use) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(m is models[0] for m in models)
    assert all(s is sessions[0] for s in sessions)


def test_the_model_implements_both_protocols() -> None:
    model = get_silero_model()
    assert isinstance(model, PauseDetectionModel)
    assert isinstance(model, StreamingPauseDetectionModel)
    stream = model.new_stream()
    assert isinstance(stream, VadStream)
    assert (stream.sample_rate, stream.window_samples) == (16000, 512)


# --------------------------------------------------------------------------- the scores


@pytest.mark.parametrize("name", ["speech_pause_speech", "hesitations", "speech_then_silence"])
def test_probabilities_are_high_on_espeak_speech(name: str) -> None:
    scenario = build_scenario(name, 48000)
    probs = _probabilities(scenario.audio, 48000)
    for segment in scenario.speech_segments():
        p = probs[_window_range(segment.start_s, segment.end_s)]
        assert p.mean() > 0.75, f"{name} {segment}: mean probability {p.mean():.2f}"
        assert (p > 0.5).mean() > 0.8, f"{name} {segment}: {(p > 0.5).mean():.0%} windows > 0.5"


@pytest.mark.parametrize(
    ("name", "kinds"),
    [
        ("noise_only", ("noise", "silence")),
        ("tone_only", ("tone", "silence")),
        ("speech_then_silence", ("silence",)),
    ],
)
def test_probabilities_are_low_on_silence_noise_and_tone(name: str, kinds: tuple[str]) -> None:
    scenario = build_scenario(name, 48000)
    probs = _probabilities(scenario.audio, 48000)
    for segment in scenario.segments:
        if segment.kind not in kinds:
            continue
        # Skip 0.15 s after speech: Silero's probability decays over a few windows.
        p = probs[_window_range(segment.start_s + 0.15, segment.end_s)]
        assert p.size and p.max() < 0.3, f"{name} {segment}: max probability {p.max():.3f}"


def test_streaming_in_odd_pieces_equals_whole_signal_scoring() -> None:
    scenario = build_scenario("speech_then_silence", 16000)
    audio = scenario.audio.astype(np.float32) / 32768
    audio = audio[: audio.size // WINDOW_SAMPLES * WINDOW_SAMPLES]
    whole = get_silero_model().probabilities(audio)
    stream = get_silero_model().new_stream()
    rng = np.random.default_rng(7)
    pieces: list[float] = []
    i = 0
    while i < audio.size:
        n = int(rng.integers(0, 1500))
        pieces += stream.process(audio[i : i + n])
        i += n
    np.testing.assert_allclose(pieces, whole, atol=1e-5)


def test_streams_keep_independent_state() -> None:
    scenario = build_scenario("speech_then_silence", 16000)
    n = 60 * WINDOW_SAMPLES
    speech = scenario.audio[:n].astype(np.float32) / 32768
    silence = np.zeros(n, np.float32)
    a, b = get_silero_model().new_stream(), get_silero_model().new_stream()
    pa, pb = [], []
    for k in range(0, n, 640):
        pa += a.process(speech[k : k + 640])
        pb += b.process(silence[k : k + 640])
    np.testing.assert_allclose(pa, get_silero_model().probabilities(speech), atol=1e-5)
    np.testing.assert_allclose(pb, get_silero_model().probabilities(silence), atol=1e-5)


def test_one_window_costs_well_under_a_millisecond() -> None:
    stream = get_silero_model().new_stream()
    stream.process(np.zeros(WINDOW_SAMPLES * 10, np.float32))  # warm up
    n = 200
    t0 = time.thread_time()
    stream.process(np.zeros(WINDOW_SAMPLES * n, np.float32))
    per_window = (time.thread_time() - t0) / n
    # ~0.13 ms measured; a 32 ms window at < 1 ms is < 3 % of a core even on a slow runner.
    assert per_window < 1e-3, f"{per_window * 1e3:.3f} ms per window"


# --------------------------------------------------------------------------- vad()


def test_vad_is_fastrtc_compatible_on_speech_and_silence() -> None:
    scenario = build_scenario("speech_then_silence", 48000)
    speech = scenario.speech_segments()[0]
    seconds, chunks = get_silero_model().vad((48000, scenario.audio.reshape(1, -1)), None)
    assert isinstance(seconds, float)
    assert len(chunks) == 1
    assert set(chunks[0]) == {"start", "end"}
    # Padded by speech_pad_ms=400 each side, clipped to the signal.
    assert speech.duration_s < seconds < speech.duration_s + 0.85
    assert seconds == pytest.approx((chunks[0]["end"] - chunks[0]["start"]) / 16000)
    silence = np.zeros(16000, np.int16)
    assert get_silero_model().vad((16000, silence), SileroVadOptions()) == (0.0, [])


def test_vad_accepts_float32_at_16k_and_applies_options() -> None:
    scenario = build_scenario("hesitations", 16000)
    audio = scenario.audio.astype(np.float32) / 32768
    model = get_silero_model()
    merged = model.vad((16000, audio), SileroVadOptions(speech_pad_ms=0))[1]
    split = model.vad(
        (16000, audio),
        SileroVadOptions(speech_pad_ms=0, min_silence_duration_ms=100, window_size_samples=512),
    )[1]
    assert len(merged) == 1  # 250 ms hesitations < 2000 ms min_silence_duration_ms
    assert len(split) == 3


def test_vad_reads_a_foreign_options_object_such_as_fastrtcs() -> None:
    @dataclasses.dataclass
    class FastrtcOptions:  # fastrtc.SileroVadOptions has these fields, no neg_threshold
        threshold: float = 0.5
        min_speech_duration_ms: int = 250
        max_speech_duration_s: float = float("inf")
        min_silence_duration_ms: int = 100
        window_size_samples: int = 1024
        speech_pad_ms: int = 0

    audio = build_scenario("hesitations", 48000).audio
    seconds, chunks = get_silero_model().vad((48000, audio), FastrtcOptions())
    assert len(chunks) == 3
    assert seconds == pytest.approx(sum(c["end"] - c["start"] for c in chunks) / 16000)


@pytest.mark.parametrize(
    "audio",
    [
        (48000,),
        (0, np.zeros(100, np.int16)),
        (16000, np.zeros((2, 100), np.int16)),
        (16000, np.zeros(100, np.int32)),
    ],
)
def test_vad_rejects_malformed_audio_instead_of_reporting_infinite_speech(audio) -> None:
    with pytest.raises(ValueError):
        get_silero_model().vad(audio, None)


# --------------------------------------------------------------------------- options


def test_silero_vad_options_keep_gradio_webrtc_defaults() -> None:
    o = SileroVadOptions()
    assert (
        o.threshold,
        o.min_speech_duration_ms,
        o.max_speech_duration_s,
        o.min_silence_duration_ms,
        o.window_size_samples,
        o.speech_pad_ms,
    ) == (0.5, 250, float("inf"), 2000, 1024, 400)
    assert o.neg_threshold == pytest.approx(0.35)


@pytest.mark.parametrize(
    ("field", "value", "needle"),
    [
        ("threshold", 1.5, "threshold must be in (0, 1)"),
        ("threshold", "high", "threshold must be a number"),
        ("min_silence_duration_ms", -1, "min_silence_duration_ms must be >= 0"),
        ("max_speech_duration_s", 0, "max_speech_duration_s must be > 0"),
        ("window_size_samples", 1000, "positive multiple of 512"),
    ],
)
def test_silero_vad_options_reject_bad_values(field: str, value, needle: str) -> None:
    with pytest.raises(ValueError) as info:
        SileroVadOptions(**{field: value})
    assert needle in str(info.value)
    assert repr(value) in str(info.value)


def test_speech_timestamps_follow_silero_rules() -> None:
    opts = SileroVadOptions(
        min_speech_duration_ms=100, min_silence_duration_ms=100, speech_pad_ms=0,
        window_size_samples=512,
    )  # fmt: skip
    probs = [0.0] * 10 + [0.9] * 20 + [0.0] * 10 + [0.9] * 2 + [0.0] * 10
    chunks = speech_timestamps(probs, opts, len(probs) * 512)
    # The 2-window (64 ms) burst is shorter than min_speech_duration_ms and is dropped.
    assert chunks == [{"start": 10 * 512, "end": 30 * 512}]
    # A gap shorter than min_silence_duration_ms does not split a segment.
    probs = [0.9] * 10 + [0.0] * 2 + [0.9] * 10 + [0.0] * 10
    assert len(speech_timestamps(probs, opts, len(probs) * 512)) == 1


# --------------------------------------------------------------------------- resampling


def test_mono_resampler_is_time_aligned_across_blocks() -> None:
    x = np.zeros(48000, np.int16)
    x[4800] = 20000
    r = MonoResampler(48000, 16000)
    out = np.concatenate([r.process(x[i : i + 960]) for i in range(0, x.size, 960)] + [r.flush()])
    assert out.size == 16000
    assert int(np.argmax(np.abs(out))) == 1600


def test_mono_resampler_passes_through_at_equal_rates() -> None:
    x = np.array([0, 16384, -32768], np.int16)
    np.testing.assert_allclose(MonoResampler(16000).process(x), [0.0, 0.5, -1.0])


def test_downmix_interleaved_averages_channels() -> None:
    x = np.array([100, 300, -32768, -32768, 32767, 32767], np.int16)
    np.testing.assert_array_equal(downmix_interleaved(x), [200, -32768, 32767])
    with pytest.raises(ValueError, match="even"):
        downmix_interleaved(np.zeros(3, np.int16))
