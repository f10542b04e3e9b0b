"""Tests of the frame contracts in ``webrtc_ref.frames``.

Audio signals are tones (never silence), so a dropped chunk, a swapped channel or a lost tail
changes something measurable: duration, energy, dominant frequency or channel content.
"""

from __future__ import annotations

import fractions

import av
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from webrtc_ref.frames import (
    AUDIO_FRAME_MS,
    AudioInputConverter,
    AudioOutputFramer,
    FrameContractError,
    array_to_video_frame,
    audio_frame_samples,
    parse_audio_output,
    split_output,
    video_frame_to_array,
)
from webrtc_ref.outputs import AdditionalOutputs

RATES = (8000, 16000, 22050, 24000, 32000, 44100, 48000)
TONE_HZ = 300.0  # below every rate's Nyquist frequency
AMPLITUDE = 0.5


# --------------------------------------------------------------------------- helpers


def tone(rate: int, n: int, freq: float = TONE_HZ, amplitude: float = AMPLITUDE) -> np.ndarray:
    """``n`` samples of a sine at ``rate``, float64 in [-amplitude, amplitude]."""
    return amplitude * np.sin(2 * np.pi * freq * np.arange(n) / rate)


def dominant_hz(samples: np.ndarray, rate: int) -> float:
    """Frequency of the strongest bin of a Hann-windowed spectrum."""
    x = np.asarray(samples, dtype=np.float64)
    spectrum = np.abs(np.fft.rfft((x - x.mean()) * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / rate)[int(np.argmax(spectrum))])


def audio_item(
    rate: int, dtype: str, form: str, left: np.ndarray, right: np.ndarray | None = None
) -> tuple:
    """A handler output holding ``left`` (and ``right``) float signals, in the given form.

    form: "mono" (1, N) two-tuple; "mono3" (1, N) with an explicit "mono";
    "planar" (2, N) stereo; "interleaved" (1, 2N) stereo.
    """
    right = left if right is None else right

    def cast(x: np.ndarray) -> np.ndarray:
        return np.round(x * 32767).astype(np.int16) if dtype == "int16" else x.astype(dtype)

    if form == "mono":
        return (rate, cast(left)[None, :])
    if form == "mono3":
        return (rate, cast(left)[None, :], "mono")
    planar = np.stack([cast(left), cast(right)])
    if form == "planar":
        return (rate, planar, "stereo")
    return (rate, planar.T.reshape(1, -1), "stereo")


def planar_s16(frames: list[av.AudioFrame], channels: int) -> np.ndarray:
    """Concatenate packed s16 frames into a planar ``(channels, N)`` int16 array."""
    if not frames:
        return np.zeros((channels, 0), dtype=np.int16)
    flat = np.concatenate([f.to_ndarray().reshape(-1) for f in frames])
    return flat.reshape(-1, channels).T


def check_output_frames(frames: list[av.AudioFrame], rate: int, layout: str) -> None:
    """Every frame is s16 packed, ``layout``, ``rate``, exactly 20 ms, pts contiguous."""
    for i, frame in enumerate(frames):
        assert frame.samples == rate // 50, f"frame {i}: {frame.samples} samples at {rate} Hz"
        assert frame.format.name == "s16", frame.format.name
        assert frame.layout.name == layout, frame.layout.name
        assert frame.sample_rate == rate
        assert frame.time_base == fractions.Fraction(1, rate)
        if i:
            assert frame.pts == frames[i - 1].pts + rate // 50, [f.pts for f in frames]


def input_frame(data: np.ndarray, fmt: str, layout: str, rate: int) -> av.AudioFrame:
    frame = av.AudioFrame.from_ndarray(data, format=fmt, layout=layout)
    frame.sample_rate = rate
    return frame


def aiortc_frames(left: np.ndarray, right: np.ndarray) -> list[av.AudioFrame]:
    """What aiortc's Opus decoder yields: s16 packed stereo 48 kHz, 960 samples each."""
    packed = np.round(np.stack([left, right]).T * 32767).astype(np.int16).reshape(1, -1)
    return [
        input_frame(packed[:, i : i + 1920], "s16", "stereo", 48000)
        for i in range(0, packed.shape[1] - 1919, 1920)
    ]


def blocks_planar(blocks: list[tuple[int, np.ndarray]], channels: int) -> np.ndarray:
    flat = np.concatenate([b.reshape(-1) for _, b in blocks])
    return flat.reshape(-1, channels).T


# --------------------------------------------------------------------------- constants


def test_audio_frames_are_20_ms() -> None:
    assert AUDIO_FRAME_MS == 20
    assert [audio_frame_samples(r) for r in (8000, 16000, 22050, 24000, 44100, 48000)] == [
        160,
        320,
        441,
        480,
        882,
        960,
    ]
    assert audio_frame_samples(11025) == 220  # rounded down: never longer than 20 ms


# --------------------------------------------------------------------------- output framer

valid_chunks = st.tuples(
    st.sampled_from(RATES),
    st.sampled_from(["int16", "float32", "float64"]),
    st.sampled_from(["mono", "mono3", "planar", "interleaved"]),
    st.integers(min_value=0, max_value=3000),
)


@settings(max_examples=60, deadline=None)
@given(
    chunk=valid_chunks,
    out_rate=st.sampled_from([16000, 24000, 48000]),
    out_layout=st.sampled_from(["mono", "stereo"]),
)
def test_any_valid_chunk_becomes_20ms_frames_of_the_same_duration(
    chunk: tuple[int, str, str, int], out_rate: int, out_layout: str
) -> None:
    rate, dtype, form, n = chunk
    framer = AudioOutputFramer(out_rate, out_layout)  # type: ignore[arg-type]
    frames = framer.push(audio_item(rate, dtype, form, tone(rate, n)))
    resampled = round(n * out_rate / rate)
    # Whatever is not out yet is pending, including samples in the resampler's delay.
    pending = framer.pending_samples
    assert sum(f.samples for f in frames) + pending == resampled
    tail = framer.flush()  # everything pending, zero-padded to whole frames
    assert sum(f.samples for f in tail) == -(-pending // (out_rate // 50)) * (out_rate // 50)
    frames += tail

    check_output_frames(frames, out_rate, out_layout)
    assert framer.pending_samples == 0
    # Exactly round(n * out / in) samples, then zero padding up to a whole 20 ms frame.
    frame_samples = out_rate // 50
    assert sum(f.samples for f in frames) == -(-resampled // frame_samples) * frame_samples
    channels = planar_s16(frames, 2 if out_layout == "stereo" else 1)
    if out_layout == "stereo":  # the same signal in both channels, whatever the input form
        assert np.abs(channels[0].astype(int) - channels[1]).max(initial=0) <= 1
    # Energy (in full-scale² · seconds) survives the resample: nothing lost, nothing muted.
    energy_in = np.sum(tone(rate, n) ** 2) / rate
    energy_out = np.sum((channels[0] / 32768.0) ** 2) / out_rate
    assert energy_out == pytest.approx(energy_in, rel=0.05, abs=2e-4)


@settings(max_examples=40, deadline=None)
@given(
    chunks=st.lists(valid_chunks, min_size=2, max_size=6),
    out_layout=st.sampled_from(["mono", "stereo"]),
)
def test_mixing_rates_dtypes_and_layouts_loses_nothing(
    chunks: list[tuple[int, str, str, int]], out_layout: str
) -> None:
    """Every chunk after a format change counts (they used to be dropped)."""
    framer = AudioOutputFramer(24000, out_layout)  # type: ignore[arg-type]
    frames: list[av.AudioFrame] = []
    expected = energy_in = 0.0
    for rate, dtype, form, n in chunks:
        frames += framer.push(audio_item(rate, dtype, form, tone(rate, n)))
        expected += n * 24000 / rate
        energy_in += np.sum(tone(rate, n) ** 2) / rate
    frames += framer.flush()

    check_output_frames(frames, 24000, out_layout)
    total = sum(f.samples for f in frames)
    slack = len(chunks)  # rounding to whole samples at each format change
    assert expected - slack <= total < expected + 480 + slack, (total, expected, chunks)
    mono = planar_s16(frames, 2 if out_layout == "stereo" else 1)[0] / 32768.0
    energy_out = np.sum(mono**2) / 24000
    assert energy_out == pytest.approx(energy_in, rel=0.05, abs=2e-4 * len(chunks))


def test_format_changes_keep_each_segment_in_order() -> None:
    """24 kHz int16, then 16 kHz float32, then 48 kHz float64 interleaved stereo."""
    framer = AudioOutputFramer(24000)
    segments = [
        audio_item(24000, "int16", "mono", tone(24000, 4800, 440)),
        audio_item(16000, "float32", "mono3", tone(16000, 3200, 1000)),
        audio_item(48000, "float64", "interleaved", tone(48000, 9600, 2000)),
    ]
    frames = [f for item in segments for f in framer.push(item)] + framer.flush()
    out = planar_s16(frames, 1)[0]
    assert out.shape[0] == 3 * 4800
    found = [dominant_hz(out[i * 4800 + 480 : (i + 1) * 4800 - 480], 24000) for i in range(3)]
    assert found == pytest.approx([440, 1000, 2000], abs=30), found


def test_a_chunk_shorter_than_the_resampler_filter_is_not_lost() -> None:
    """libswresample's own flush returns nothing for a few samples; the framer pads it."""
    framer = AudioOutputFramer(24000)
    frames = framer.push((8000, np.full((1, 10), 0.5, dtype=np.float32)))
    frames += framer.push((16000, np.full((1, 302), 0.25, dtype=np.float32)))
    frames += framer.flush()
    out = planar_s16(frames, 1)[0]
    assert len(out) == 960  # 30 + 453 = 483 samples, zero-padded to two frames
    assert np.abs(out[:30]).max() > 0.25 * 32768  # the 10 samples at 8 kHz are there
    assert np.abs(out[40:470] - 0.25 * 32768).max() < 0.02 * 32768
    assert not out[483:].any()


@pytest.mark.parametrize(
    ("in_rate", "out_rate", "freq"),
    [(16000, 24000, 1000), (48000, 24000, 3000), (8000, 48000, 700), (44100, 16000, 5000)],
)
def test_a_tone_keeps_its_frequency_through_the_resample(
    in_rate: int, out_rate: int, freq: int
) -> None:
    framer = AudioOutputFramer(out_rate)
    frames = framer.push((in_rate, tone(in_rate, in_rate, freq).astype(np.float32)[None, :]))
    frames += framer.flush()
    out = planar_s16(frames, 1)[0][: out_rate // 2]
    assert dominant_hz(out, out_rate) == pytest.approx(freq, abs=5)
    rms = np.sqrt(np.mean((out / 32768.0) ** 2))
    assert rms == pytest.approx(AMPLITUDE / np.sqrt(2), rel=0.03)


def test_flush_emits_the_tail() -> None:
    """The last partial frame must not wait in the resampler until the next reply: 0.1 s at
    16 kHz is 5 frames of 480 at 24 kHz, not 4."""
    framer = AudioOutputFramer(24000)
    frames = framer.push((16000, tone(16000, 1600).astype(np.float32)[None, :]))
    assert len(frames) == 4
    assert framer.pending_samples == 480  # partly still in the resampler's filter delay
    tail = framer.flush()
    assert [f.samples for f in tail] == [480]
    assert np.abs(tail[0].to_ndarray()).max() > 1000  # the tail carries the tone
    assert framer.pending_samples == 0
    assert sum(f.samples for f in frames + tail) == 2400
    assert framer.flush() == []


def test_flush_zero_pads_a_partial_frame_and_the_framer_stays_usable() -> None:
    framer = AudioOutputFramer(24000)
    signal = np.full((1, 700), 1234, dtype=np.int16)
    first = framer.push((24000, signal))
    assert [f.samples for f in first] == [480]
    assert framer.pending_samples == 220
    padded = framer.flush()
    assert len(padded) == 1
    assert (padded[0].to_ndarray()[0, :220] == 1234).all()
    assert (padded[0].to_ndarray()[0, 220:] == 0).all()

    later = framer.push((16000, np.full((1, 320), 0.25, dtype=np.float32)))
    later += framer.flush()
    assert [f.samples for f in later] == [480]
    check_output_frames(first + padded + later, 24000, "mono")


def test_int16_at_the_output_rate_passes_bit_exact() -> None:
    rng = np.random.default_rng(7)
    left, right = rng.integers(-32768, 32767, (2, 1000), dtype=np.int16)
    framer = AudioOutputFramer(48000, "stereo")
    frames = framer.push((48000, np.stack([left, right]), "stereo")) + framer.flush()
    out = planar_s16(frames, 2)
    assert np.array_equal(out[:, :1000], np.stack([left, right]))
    assert not out[:, 1000:].any()


@pytest.mark.parametrize("form", ["planar", "interleaved"])
def test_stereo_channel_order_is_kept(form: str) -> None:
    framer = AudioOutputFramer(24000, "stereo")
    item = audio_item(24000, "float32", form, tone(24000, 4800, 440), tone(24000, 4800, 1500))
    out = planar_s16(framer.push(item) + framer.flush(), 2)
    assert dominant_hz(out[0], 24000) == pytest.approx(440, abs=10)
    assert dominant_hz(out[1], 24000) == pytest.approx(1500, abs=10)


def test_stereo_to_mono_averages_and_mono_to_stereo_duplicates() -> None:
    down = AudioOutputFramer(24000, "mono")
    planar = np.stack([np.full(480, 0.5), np.full(480, 0.1)]).astype(np.float32)
    (frame,) = down.push((24000, planar, "stereo"))
    assert np.abs(frame.to_ndarray()[0].astype(int) - round(0.3 * 32768)).max() <= 1

    up = AudioOutputFramer(24000, "stereo")
    (frame,) = up.push((24000, np.full((1, 480), 10000, dtype=np.int16)))
    assert (frame.to_ndarray() == 10000).all()  # full level in both channels, no -3 dB pan


def test_float_samples_outside_unit_range_are_clipped() -> None:
    framer = AudioOutputFramer(24000)
    ramp = np.tile(np.array([2.0, -2.0, 1.0, -1.0, 0.5], dtype=np.float64), 96)[None, :]
    (frame,) = framer.push((24000, ramp))
    assert frame.to_ndarray()[0, :5].tolist() == [32767, -32768, 32767, -32768, 16384]


def test_a_rejected_chunk_leaves_the_framer_unchanged() -> None:
    framer = AudioOutputFramer(24000)
    framer.push((24000, np.ones((1, 100), dtype=np.int16)))
    with pytest.raises(FrameContractError):
        framer.push(np.ones((1, 480), dtype=np.int16))
    assert framer.pending_samples == 100
    assert framer.push((24000, np.zeros((1, 0), dtype=np.int16))) == []
    assert framer.pending_samples == 100


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"sample_rate": 0}, "sample_rate"),
        ({"sample_rate": 24000.0}, "sample_rate"),
        ({"sample_rate": True}, "sample_rate"),
        ({"layout": "5.1"}, "layout"),
    ],
)
@pytest.mark.parametrize("cls", [AudioOutputFramer, AudioInputConverter])
def test_bad_settings_are_rejected(cls: type, kwargs: dict, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        cls(**kwargs)


# --------------------------------------------------------------------------- parse_audio_output


def test_valid_outputs_parse_to_rate_array_layout() -> None:
    mono = np.zeros((1, 480), dtype=np.int16)
    rate, array, layout = parse_audio_output((np.int32(24000), mono))
    assert (rate, layout) == (24000, "mono")
    assert type(rate) is int
    assert array is mono
    stereo = np.zeros((2, 10), dtype=np.float64)
    assert parse_audio_output((16000, stereo, "stereo"))[2] == "stereo"
    assert parse_audio_output((16000, np.zeros((1, 20), np.float32), "stereo"))[2] == "stereo"
    assert parse_audio_output((8000, np.zeros((1, 0), np.int16)))[1].size == 0


MONO = np.zeros((1, 480), dtype=np.int16)
BAD_OUTPUTS = [
    pytest.param(np.zeros((1, 480), np.int16), "(sample_rate, array)", "bare ndarray", id="bare"),
    pytest.param(None, "(sample_rate, array)", "got None", id="none"),
    pytest.param([24000, MONO], "tuple", "got list", id="list"),
    pytest.param((24000,), "(sample_rate, array)", "length 1", id="1-tuple"),
    pytest.param((24000, MONO, "mono", 1), "(sample_rate, array)", "length 4", id="4-tuple"),
    pytest.param(AdditionalOutputs(1), "tuple", "AdditionalOutputs", id="additional-outputs"),
    pytest.param((24000.0, MONO), "positive int", "float 24000.0", id="float-rate"),
    pytest.param((0, MONO), "positive int", "int 0", id="zero-rate"),
    pytest.param((-16000, MONO), "positive int", "-16000", id="negative-rate"),
    pytest.param((True, MONO), "positive int", "bool True", id="bool-rate"),
    pytest.param(("24000", MONO), "positive int", "str '24000'", id="str-rate"),
    pytest.param((24000, [[0, 0]]), "numpy ndarray", "got list", id="list-array"),
    pytest.param((24000, np.zeros((1, 4), np.int32)), "int16, float32", "int32", id="int32"),
    pytest.param((24000, np.zeros((1, 4), np.uint8)), "int16, float32", "uint8", id="uint8"),
    pytest.param((24000, np.zeros((1, 4), np.float16)), "int16, float32", "float16", id="f16"),
    pytest.param(
        (24000, np.zeros(480, np.int16)),
        "must have ndim 2 with shape (1, N) for mono",
        "got shape (480,)",
        id="1d",
    ),
    pytest.param((24000, np.zeros((1, 2, 3), np.int16)), "(1, N)", "(1, 2, 3)", id="3d"),
    pytest.param((24000, np.zeros((2, 480), np.int16)), "(1, N) for mono", "(2, 480)", id="2ch"),
    pytest.param(
        (24000, np.zeros((3, 4), np.float32), "stereo"), "(2, N) planar", "(3, 4)", id="3ch"
    ),
    pytest.param(
        (24000, np.zeros((1, 481), np.int16), "stereo"), "(1, 2N) interleaved", "(1, 481)", id="odd"
    ),
    pytest.param((24000, np.zeros(960, np.int16), "stereo"), "(2, N)", "(960,)", id="1d-stereo"),
    pytest.param((24000, MONO, "surround"), "'mono' or 'stereo'", "surround", id="layout"),
    pytest.param((24000, MONO, None), "'mono' or 'stereo'", "None", id="layout-none"),
    pytest.param((24000, np.full((1, 4), np.nan)), "finite", "NaN", id="nan"),
    pytest.param((24000, np.full((1, 4), np.inf, np.float32)), "finite", "inf", id="inf"),
]


@pytest.mark.parametrize(("item", "expected", "received"), BAD_OUTPUTS)
def test_bad_audio_output_names_expected_and_received(
    item: object, expected: str, received: str
) -> None:
    with pytest.raises(FrameContractError) as info:
        parse_audio_output(item)
    message = str(info.value)
    assert expected in message, message
    assert received in message, message
    assert isinstance(info.value, ValueError)


def test_the_documented_example_message() -> None:
    with pytest.raises(FrameContractError) as info:
        parse_audio_output((24000, np.zeros(480, np.int16)))
    assert str(info.value).startswith(
        "audio output array must have ndim 2 with shape (1, N) for mono; got shape (480,)"
    )


# --------------------------------------------------------------------------- input converter


def test_aiortc_frames_become_mono_48k_blocks_immediately() -> None:
    left = tone(48000, 9600, 440)
    converter = AudioInputConverter()
    for frame in aiortc_frames(left, left):
        blocks = converter.convert(frame)
        assert len(blocks) == 1  # equal rates: no added latency
        rate, block = blocks[0]
        assert rate == 48000
        assert block.shape == (1, 960)
        assert block.dtype == np.int16
    expected = np.round(left[-960:] * 32767)
    assert np.abs(block[0].astype(int) - expected).max() <= 1


def test_aiortc_frames_to_stereo_keep_left_and_right() -> None:
    left, right = tone(48000, 9600, 440), tone(48000, 9600, 1200)
    converter = AudioInputConverter(48000, "stereo")
    blocks = [b for f in aiortc_frames(left, right) for b in converter.convert(f)]
    assert [b.shape for _, b in blocks] == [(1, 1920)] * 10
    out = blocks_planar(blocks, 2)
    assert np.array_equal(out[0], np.round(left * 32767).astype(np.int16))
    assert np.array_equal(out[1], np.round(right * 32767).astype(np.int16))


def test_aiortc_frames_resampled_to_16k() -> None:
    signal = tone(48000, 48000, 1000)
    converter = AudioInputConverter(16000)
    blocks = [b for f in aiortc_frames(signal, signal) for b in converter.convert(f)]
    assert len(blocks) in (49, 50)  # 50 frames in; at most one block of resampler delay
    assert {(r, b.shape, b.dtype) for r, b in blocks} == {(16000, (1, 320), np.dtype(np.int16))}
    out = blocks_planar(blocks, 1)[0]
    assert dominant_hz(out, 16000) == pytest.approx(1000, abs=5)
    assert np.sqrt(np.mean((out[1600:] / 32768) ** 2)) == pytest.approx(0.5 / np.sqrt(2), rel=0.03)


@pytest.mark.parametrize(("layout", "shape"), [("mono", (1, 960)), ("stereo", (1, 1920))])
def test_s16_mono_16k_input(layout: str, shape: tuple[int, int]) -> None:
    signal = np.round(tone(16000, 16000, 500) * 32767).astype(np.int16)
    converter = AudioInputConverter(48000, layout)  # type: ignore[arg-type]
    blocks = [
        b
        for i in range(0, 16000, 320)
        for b in converter.convert(input_frame(signal[None, i : i + 320], "s16", "mono", 16000))
    ]
    assert len(blocks) in (49, 50)
    assert all(r == 48000 and b.shape == shape and b.dtype == np.int16 for r, b in blocks)
    out = blocks_planar(blocks, shape[1] // 960)
    if layout == "stereo":
        assert np.array_equal(out[0], out[1])  # mono duplicated to both channels
    assert dominant_hz(out[0], 48000) == pytest.approx(500, abs=5)
    assert np.sqrt(np.mean((out[0, 4800:] / 32768) ** 2)) == pytest.approx(0.5 / np.sqrt(2), 0.03)


def test_fltp_stereo_44k_input_keeps_channel_order() -> None:
    left, right = tone(44100, 44100, 600), tone(44100, 44100, 2500)
    planar = np.stack([left, right]).astype(np.float32)
    converter = AudioInputConverter(48000, "stereo")
    blocks = [
        b
        for i in range(0, 44100 - 1023, 1024)  # AAC-sized frames
        for b in converter.convert(input_frame(planar[:, i : i + 1024], "fltp", "stereo", 44100))
    ]
    assert all(r == 48000 and b.shape == (1, 1920) and b.dtype == np.int16 for r, b in blocks)
    out = blocks_planar(blocks, 2)
    assert dominant_hz(out[0], 48000) == pytest.approx(600, abs=5)
    assert dominant_hz(out[1], 48000) == pytest.approx(2500, abs=5)


def test_input_format_may_change_between_frames() -> None:
    converter = AudioInputConverter(48000)
    first = aiortc_frames(tone(48000, 4800), tone(48000, 4800))
    mono16 = np.round(tone(16000, 1600) * 32767).astype(np.int16)
    second = [input_frame(mono16[None, i : i + 320], "s16", "mono", 16000) for i in (0, 320)]
    blocks = [b for f in first + second for b in converter.convert(f)]
    # 5 blocks from the 48 kHz frames, then 40 ms at 16 kHz minus the resampler's delay.
    assert len(blocks) == 6
    assert all(b.shape == (1, 960) for _, b in blocks)
    assert dominant_hz(blocks_planar(blocks[:5], 1)[0], 48000) == pytest.approx(TONE_HZ, abs=10)


def test_switching_back_to_direct_input_drains_the_resampler() -> None:
    """16 kHz frames go through the resampler; 48 kHz stereo s16 ones skip it. Switching
    back must flush what the resampler still holds: no sample is lost or duplicated."""
    converter = AudioInputConverter(48000)
    mono16 = np.round(tone(16000, 640) * 32767).astype(np.int16)
    resampled = [input_frame(mono16[None, i : i + 320], "s16", "mono", 16000) for i in (0, 320)]
    direct = aiortc_frames(tone(48000, 4800), tone(48000, 4800))
    blocks = [b for f in resampled + direct for b in converter.convert(f)]
    # 40 ms at 16 kHz -> 1920 samples at 48 kHz, then 100 ms: 6720 samples, 7 whole blocks
    assert len(blocks) == 7
    assert all(b.shape == (1, 960) for _, b in blocks)


def test_blocks_are_independent_arrays() -> None:
    converter = AudioInputConverter(16000)
    signal = tone(48000, 9600)
    blocks = [b for f in aiortc_frames(signal, signal) for _, b in converter.convert(f)]
    before = blocks[1].copy()
    blocks[0][:] = 0
    assert np.array_equal(blocks[1], before)
    assert blocks[0].flags.writeable


def test_stereo_to_mono_rounds_half_to_even_on_every_path() -> None:
    """One downmix: the converter's direct path (packed s16), its resampler path (planar s16)
    and the framer's int16 path all give round((L + R) / 2), halves to even."""
    left = np.array([1, 2, -1, -2, 32767, -32768, 100, 0] * 120, dtype=np.int16)
    right = np.array([2, 3, -2, -3, 32767, -32768, -101, 1] * 120, dtype=np.int16)
    expected = np.rint((left.astype(np.float64) + right) / 2).astype(np.int16)
    assert expected[:8].tolist() == [2, 2, -2, -2, 32767, -32768, 0, 0]
    packed = np.stack([left, right]).T.reshape(1, -1)
    ((_, direct),) = AudioInputConverter(48000).convert(input_frame(packed, "s16", "stereo", 48000))
    planar = input_frame(np.stack([left, right]), "s16p", "stereo", 48000)
    resampled = [b for _, b in AudioInputConverter(48000).convert(planar)]
    framer = AudioOutputFramer(48000)
    framed = framer.push((48000, np.stack([left, right]), "stereo")) + framer.flush()
    assert np.array_equal(direct[0], expected)
    assert np.array_equal(blocks_planar([(48000, b) for b in resampled], 1)[0], expected)
    assert np.array_equal(planar_s16(framed, 1)[0], expected)


def test_input_frames_are_not_modified() -> None:
    """aiortc may share a decoded frame between consumers: neither its samples nor its pts
    change, whichever path (direct, resampled, downmixed) the converter takes."""
    packed = np.round(tone(48000, 960) * 32767).astype(np.int16).repeat(2)[None, :]
    for rate, layout in [(48000, "mono"), (48000, "stereo"), (16000, "mono"), (24000, "stereo")]:
        frame = input_frame(packed.copy(), "s16", "stereo", 48000)
        frame.pts, frame.time_base = 4800, fractions.Fraction(1, 48000)
        converter = AudioInputConverter(rate, layout)  # type: ignore[arg-type]
        for _ in range(3):
            for _, block in converter.convert(frame):
                block[:] = 0  # the handler may write into its blocks
        assert np.array_equal(frame.to_ndarray(), packed), (rate, layout)
        assert frame.pts == 4800


def test_converter_rejects_non_frames() -> None:
    with pytest.raises(TypeError, match=r"av\.AudioFrame"):
        AudioInputConverter().convert(np.zeros((1, 960), np.int16))  # type: ignore[arg-type]


# --------------------------------------------------------------------------- video

COLOURS = {"red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255)}


@pytest.mark.parametrize("name", COLOURS)
def test_rgb_survives_both_conversions(name: str) -> None:
    image = np.zeros((48, 64, 3), dtype=np.uint8)
    image[:] = COLOURS[name]
    frame = array_to_video_frame(image)
    assert (frame.format.name, frame.width, frame.height) == ("rgb24", 64, 48)
    back = video_frame_to_array(frame)
    assert back.dtype == np.uint8
    assert np.array_equal(back, image)


@pytest.mark.parametrize("name", COLOURS)
def test_rgb_survives_yuv420p_like_vp8(name: str) -> None:
    image = np.zeros((48, 64, 3), dtype=np.uint8)
    image[:] = COLOURS[name]
    yuv = array_to_video_frame(image).reformat(format="yuv420p")
    back = video_frame_to_array(yuv)
    assert back.shape == (48, 64, 3)
    assert np.abs(back.astype(int) - COLOURS[name]).max() <= 40, back[0, 0]


def test_bgr_frames_are_delivered_as_rgb() -> None:
    bgr = np.zeros((4, 4, 3), dtype=np.uint8)
    bgr[..., 2] = 255  # red, in BGR order
    frame = av.VideoFrame.from_ndarray(bgr, format="bgr24")
    assert video_frame_to_array(frame)[0, 0].tolist() == [255, 0, 0]


@pytest.mark.parametrize(("height", "width"), [(1, 1), (3, 5), (7, 2), (479, 641)])
def test_odd_sizes(height: int, width: int) -> None:
    rng = np.random.default_rng(height * 1000 + width)
    image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    frame = array_to_video_frame(image)
    back = video_frame_to_array(frame)
    assert np.array_equal(back, image)
    assert back.flags.c_contiguous and back.flags.writeable
    yuv = frame.reformat(format="yuv420p")
    assert video_frame_to_array(yuv).shape == (height, width, 3)


def test_non_contiguous_arrays_are_accepted() -> None:
    image = np.zeros((4, 6, 3), dtype=np.uint8)
    image[:, :3] = COLOURS["red"]
    mirrored = image[:, ::-1]
    back = video_frame_to_array(array_to_video_frame(mirrored))
    assert back[0, 0].tolist() == [0, 0, 0]
    assert back[0, 5].tolist() == [255, 0, 0]


BAD_IMAGES = [
    pytest.param([[[0, 0, 0]]], "got list", id="list"),
    pytest.param(None, "got None", id="none"),
    pytest.param(np.zeros((4, 4, 3), np.float32), "dtype float32", id="float32"),
    pytest.param(np.zeros((4, 4, 3), np.float64), "dtype float64", id="float64"),
    pytest.param(np.zeros((4, 4, 3), np.uint16), "dtype uint16", id="uint16"),
    pytest.param(np.zeros((4, 4, 3), bool), "dtype bool", id="bool"),
    pytest.param(np.zeros((4, 4), np.uint8), "shape (4, 4)", id="ndim2"),
    pytest.param(np.zeros((1, 4, 4, 3), np.uint8), "shape (1, 4, 4, 3)", id="ndim4"),
    pytest.param(np.zeros((4, 4, 4), np.uint8), "shape (4, 4, 4)", id="rgba"),
    pytest.param(np.zeros((4, 4, 1), np.uint8), "shape (4, 4, 1)", id="1-channel"),
    pytest.param(np.zeros((0, 4, 3), np.uint8), "shape (0, 4, 3)", id="empty"),
    pytest.param(AdditionalOutputs(), "AdditionalOutputs", id="additional-outputs"),
]


@pytest.mark.parametrize(("array", "received"), BAD_IMAGES)
def test_bad_video_output_names_expected_and_received(array: object, received: str) -> None:
    with pytest.raises(FrameContractError) as info:
        array_to_video_frame(array)
    message = str(info.value)
    assert "uint8 and shape (H, W, 3)" in message, message
    assert received in message, message


def test_video_frame_to_array_rejects_audio() -> None:
    with pytest.raises(TypeError, match=r"av\.VideoFrame"):
        audio = av.AudioFrame(format="s16", layout="mono", samples=4)
        video_frame_to_array(audio)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- split_output

AO = AdditionalOutputs("text", 1)
ARRAY = np.zeros((2, 2, 3), dtype=np.uint8)
CHUNK = (24000, np.zeros((1, 480), dtype=np.int16))


@pytest.mark.parametrize(
    ("item", "media", "outputs"),
    [
        pytest.param(None, None, None, id="none"),
        pytest.param(AO, None, AO, id="outputs-only"),
        pytest.param((CHUNK, AO), CHUNK, AO, id="chunk-and-outputs"),
        pytest.param(((*CHUNK, "mono"), AO), (*CHUNK, "mono"), AO, id="chunk3-and-outputs"),
        pytest.param((ARRAY, AO), ARRAY, AO, id="image-and-outputs"),
        pytest.param((None, AO), None, AO, id="nothing-and-outputs"),
        pytest.param(CHUNK, CHUNK, None, id="chunk"),
        pytest.param((*CHUNK, "stereo"), (*CHUNK, "stereo"), None, id="chunk3"),
        pytest.param(ARRAY, ARRAY, None, id="image"),
        pytest.param("text", "text", None, id="other"),
    ],
)
def test_split_output(item: object, media: object, outputs: object) -> None:
    got_media, got_outputs = split_output(item)
    assert got_media is media or got_media == media
    assert got_outputs is outputs


@pytest.mark.parametrize(
    ("item", "received"),
    [
        pytest.param((AO, ARRAY), "position(s) [0]", id="outputs-first"),
        pytest.param((AO, AO), "position(s) [0, 1]", id="two-outputs"),
        pytest.param((24000, AO, ARRAY), "length 3 with AdditionalOutputs at position(s) [1]"),
        pytest.param((*CHUNK, AO), "length 3 with AdditionalOutputs at position(s) [2]"),
        pytest.param((AO,), "length 1", id="1-tuple"),
        pytest.param([ARRAY, AO], "list containing AdditionalOutputs", id="list"),
    ],
)
def test_split_output_rejects_misplaced_additional_outputs(item: object, received: str) -> None:
    with pytest.raises(FrameContractError) as info:
        split_output(item)
    message = str(info.value)
    assert "(media, AdditionalOutputs(...))" in message, message
    assert received in message, message
