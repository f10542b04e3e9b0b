"""The audio helpers in ``webrtc_ref.audio_utils``, exported from ``webrtc_ref``.

Conversions must round-trip; byte aggregation must equal decoding the joined bytes, however
the stream is split; MP3 output is decoded back with PyAV and must keep rate, channels,
length (within one MP3 frame) and content (each channel's tone). Every argument error names
the parameter, the received value and what is allowed.
"""

from __future__ import annotations

import asyncio
import io
import itertools
import os
import queue
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import AsyncIterator
from pathlib import Path

import av
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import webrtc_ref
from webrtc_ref import audio_utils
from webrtc_ref.audio_utils import (
    MP3_SAMPLE_RATES,
    aggregate_bytes_to_16bit,
    async_aggregate_bytes_to_16bit,
    audio_to_bytes,
    audio_to_file,
    audio_to_float32,
    audio_to_int16,
    wait_for_item,
)

NAMES = (
    "aggregate_bytes_to_16bit",
    "async_aggregate_bytes_to_16bit",
    "audio_to_bytes",
    "audio_to_file",
    "audio_to_float32",
    "audio_to_int16",
    "wait_for_item",
)
LSB = 1 / 32768


# --------------------------------------------------------------------------- helpers


def tone(rate: int, n: int, freq: float, amplitude: float = 0.5) -> np.ndarray:
    """``n`` samples of a sine at ``rate``, float64."""
    return amplitude * np.sin(2 * np.pi * freq * np.arange(n) / rate)


def dominant_hz(samples: np.ndarray, rate: int) -> float:
    """Frequency of the strongest bin of a Hann-windowed spectrum."""
    x = np.asarray(samples, dtype=np.float64)
    spectrum = np.abs(np.fft.rfft((x - x.mean()) * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / rate)[int(np.argmax(spectrum))])


def decode(data: bytes, format: str | None = "mp3") -> tuple[set[int], set[int], np.ndarray]:
    """Decode an encoded file: (rates, channel counts, planar float samples (C, N))."""
    rates: set[int] = set()
    channels: set[int] = set()
    blocks = []
    with av.open(io.BytesIO(data), format=format) as container:
        for frame in container.decode(audio=0):
            rates.add(frame.sample_rate)
            channels.add(len(frame.layout.channels))
            samples = frame.to_ndarray()
            if not frame.format.is_planar:
                samples = samples.reshape(-1, len(frame.layout.channels)).T
            if samples.dtype == np.int16:
                samples = samples / 32768
            blocks.append(samples)
    return rates, channels, np.concatenate(blocks, axis=1)


def mp3_frame_samples(rate: int) -> int:
    """Samples per channel in one MP3 frame: 1152 (MPEG-1, >= 32 kHz), else 576."""
    return 1152 if rate >= 32000 else 576


def cast(samples: np.ndarray, dtype: str) -> np.ndarray:
    if dtype == "int16":
        return np.round(samples * 32767).astype(np.int16)
    return samples.astype(dtype)


async def agen(chunks: list[bytes]) -> AsyncIterator[bytes]:
    for chunk in chunks:
        await asyncio.sleep(0)
        yield chunk


async def collect(chunks: list[bytes]) -> list[np.ndarray]:
    return [a async for a in async_aggregate_bytes_to_16bit(agen(chunks))]


@pytest.fixture
def private_tempdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Temporary files of the code under test go to this test's own directory."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    return tmp_path


# --------------------------------------------------------------------------- package


def test_exported_from_the_package() -> None:
    for name in NAMES:
        assert name in webrtc_ref.__all__
        assert getattr(webrtc_ref, name) is getattr(audio_utils, name)
        assert name in dir(webrtc_ref)


def test_module_import_is_light() -> None:
    """The helpers import numpy only: not PyAV (until an encode), Gradio or aiortc."""
    code = (
        "import sys; from webrtc_ref import audio_to_int16, wait_for_item; "
        "print(sorted(m for m in ('av', 'gradio', 'aiortc') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# --------------------------------------------------------------------------- conversions


def test_int16_to_float32_scale() -> None:
    x = np.array([[0, 16384, -16384, -32768, 32767]], dtype=np.int16)
    out = audio_to_float32(x)
    assert out.dtype == np.float32
    assert out.shape == (1, 5)
    np.testing.assert_array_equal(out, [[0.0, 0.5, -0.5, -1.0, 32767 / 32768]])


def test_float32_to_int16_scale_and_saturation() -> None:
    x = np.array([[0.0, 0.5, -0.5, -1.0, 1.0, 1.5, -7.0, 0.4 * LSB]], dtype=np.float32)
    out = audio_to_int16(x)
    assert out.dtype == np.int16
    np.testing.assert_array_equal(out, [[0, 16384, -16384, -32768, 32767, 32767, -32768, 0]])


def test_same_dtype_is_returned_as_is() -> None:
    f = np.zeros((2, 10), dtype=np.float32)
    i = np.zeros((1, 10), dtype=np.int16)
    assert audio_to_float32(f) is f
    assert audio_to_int16(i) is i


@pytest.mark.parametrize("shape", [(7,), (1, 7), (2, 7), (3, 2, 4), (1, 0)])
def test_conversions_keep_the_shape(shape: tuple[int, ...]) -> None:
    x = np.arange(int(np.prod(shape)), dtype=np.int16).reshape(shape)
    assert audio_to_float32(x).shape == shape
    assert audio_to_int16(audio_to_float32(x)).shape == shape


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.integers(-32768, 32767), min_size=0, max_size=300),
    st.sampled_from([1, 2]),
)
def test_int16_float32_int16_round_trip(values: list[int], channels: int) -> None:
    x = np.array(values * channels, dtype=np.int16).reshape(channels, -1)
    f = audio_to_float32(x)
    assert np.all(np.abs(f.astype(np.float64) - x / 32768) <= 0)  # exact
    back = audio_to_int16(f)
    assert back.dtype == np.int16
    assert np.all(np.abs(back.astype(np.int32) - x) <= 1)  # the promise: 1 LSB
    np.testing.assert_array_equal(back, x)  # and in fact exact


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(-1.0, 1.0, width=32), min_size=0, max_size=300))
def test_float32_int16_float32_round_trip(values: list[float]) -> None:
    f = np.array(values, dtype=np.float32).reshape(1, -1)
    back = audio_to_float32(audio_to_int16(f))
    assert back.dtype == np.float32
    assert np.all(np.abs(back.astype(np.float64) - f) <= LSB)


@pytest.mark.parametrize("func", [audio_to_float32, audio_to_int16])
@pytest.mark.parametrize("dtype", ["float64", "int32", "uint8", "int8", "float16", "complex64"])
def test_unsupported_dtype_is_a_type_error_naming_it(func, dtype: str) -> None:
    with pytest.raises(TypeError, match=rf"{func.__name__}\(audio\): unsupported .* {dtype}"):
        func(np.zeros((1, 4), dtype=dtype))


@pytest.mark.parametrize("func", [audio_to_float32, audio_to_int16])
def test_not_an_array_is_a_type_error(func) -> None:
    with pytest.raises(TypeError, match=r"audio must be a numpy ndarray; got list \[0, 1\]"):
        func([0, 1])


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_float_is_a_value_error(bad: float) -> None:
    with pytest.raises(ValueError, match=r"audio_to_int16\(audio\): .* finite"):
        audio_to_int16(np.array([[0.0, bad]], dtype=np.float32))


@pytest.mark.parametrize(
    ("func", "array"),
    [
        (audio_to_float32, np.array([[1, 2]], dtype=np.int16)),
        (audio_to_int16, np.array([[0.5, -0.5]], dtype=np.float32)),
    ],
)
def test_rate_tuple_is_deprecated_but_converted(func, array: np.ndarray) -> None:
    with pytest.warns(UserWarning, match=rf"tuple to {func.__name__}\(\) is deprecated") as rec:
        out = func((16000, array))
    np.testing.assert_array_equal(out, func(array))
    assert rec[0].filename == __file__  # it points at the caller


@pytest.mark.parametrize("func", [audio_to_float32, audio_to_int16])
def test_malformed_tuple_is_a_type_error(func) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(TypeError, match="got a tuple of length 3"):
            func((16000, np.zeros(3, np.int16), "mono"))
        with pytest.raises(TypeError, match="got a tuple of length 2"):
            func((16000, [0, 1]))


# --------------------------------------------------------------------------- byte aggregation


def test_aggregate_documented_example() -> None:
    out = list(aggregate_bytes_to_16bit([b"\x00\x01", b"\x02\x03", b"\x04\x05"]))
    assert [a.tolist() for a in out] == [[[256]], [[770]], [[1284]]]
    assert all(a.dtype == np.int16 and a.shape == (1, 1) for a in out)


def test_aggregate_carries_odd_bytes_and_drops_a_final_one() -> None:
    chunks = [b"\x01", b"\x00\x02", b"", b"\x00\x03\x00\x04", b"\x00\x05"]
    out = list(aggregate_bytes_to_16bit(chunks))
    assert [a.tolist() for a in out] == [[[1]], [[2, 3]], [[4]]]  # b"\x05" is half a sample


def test_aggregate_accepts_bytes_like_chunks_and_yields_writable_arrays() -> None:
    pcm = np.arange(-3, 3, dtype="<i2")
    raw = pcm.tobytes()
    chunks = [bytearray(raw[:3]), memoryview(raw)[3:8], memoryview(pcm)[4:]]  # the last: 'h'
    out = list(aggregate_bytes_to_16bit(chunks))
    np.testing.assert_array_equal(np.concatenate(out, axis=1)[0], pcm)
    out[0][0, 0] = 7  # writable, and not a view of the caller's buffer
    assert pcm[0] == -3


def test_aggregate_is_lazy() -> None:
    """Each chunk's samples are yielded before the next chunk is asked for."""
    pulled: list[int] = []

    def source():
        for i in range(3):
            pulled.append(i)
            yield b"\x00\x00"

    out = aggregate_bytes_to_16bit(source())
    next(out)
    assert pulled == [0]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400), st.lists(st.integers(0, 400), max_size=12))
def test_aggregate_over_any_split_equals_frombuffer(data: bytes, cuts: list[int]) -> None:
    bounds = sorted({0, len(data), *(min(c, len(data)) for c in cuts)})
    chunks = [data[a:b] for a, b in itertools.pairwise(bounds)] or [b""]
    expected = np.frombuffer(data[: len(data) // 2 * 2], dtype=np.int16)

    for out in (list(aggregate_bytes_to_16bit(chunks)), asyncio.run(collect(chunks))):
        assert all(a.dtype == np.int16 and a.ndim == 2 and a.shape[0] == 1 for a in out)
        assert all(a.shape[1] >= 1 for a in out)
        joined = np.concatenate(out, axis=1)[0] if out else np.zeros(0, np.int16)
        np.testing.assert_array_equal(joined, expected)
        # one array for each chunk that completes a sample
        ends = np.cumsum([len(c) for c in chunks]) // 2
        assert len(out) == int(np.count_nonzero(np.diff(np.r_[0, ends])))


async def test_async_aggregate_documented_chunks() -> None:
    out = await collect([b"\x00\x01", b"\x02", b"\x03\x04\x05"])
    assert [a.tolist() for a in out] == [[[256]], [[770, 1284]]]


async def test_async_aggregate_yields_before_the_source_ends() -> None:
    release = asyncio.Event()

    async def source() -> AsyncIterator[bytes]:
        yield b"\x01\x00"
        await release.wait()
        yield b"\x02\x00"

    stream = async_aggregate_bytes_to_16bit(source())
    first = await asyncio.wait_for(stream.__anext__(), timeout=1)
    assert first.tolist() == [[1]]
    release.set()
    assert (await stream.__anext__()).tolist() == [[2]]


@pytest.mark.parametrize(
    ("arg", "match"),
    [
        (5, "must be an iterable of byte chunks; got int 5"),
        (None, "must be an iterable of byte chunks; got None"),
        (b"\x00\x01", "got a single bytes \\(wrap it in a list\\)"),
        ("ab", "got a single str"),
        (agen([b""]), "got an async iterable .*use async_aggregate_bytes_to_16bit"),
    ],
)
def test_aggregate_rejects_what_is_not_an_iterable_of_chunks(arg: object, match: str) -> None:
    with pytest.raises(TypeError, match=r"aggregate_bytes_to_16bit\(chunks_iterator\): .*" + match):
        aggregate_bytes_to_16bit(arg)  # type: ignore[arg-type]


def test_aggregate_names_the_bad_chunk() -> None:
    out = aggregate_bytes_to_16bit([b"\x00\x00", b"\x00", "ab"])  # type: ignore[list-item]
    assert next(out).tolist() == [[0]]
    with pytest.raises(TypeError, match="chunk 2 must be bytes, bytearray or memoryview; got str"):
        next(out)
    with pytest.raises(TypeError, match=r"chunk 0 .* got ndarray of shape"):
        list(aggregate_bytes_to_16bit([np.zeros(2, np.int16)]))  # type: ignore[list-item]


async def test_async_aggregate_rejects_a_plain_iterable() -> None:
    with pytest.raises(
        TypeError,
        match=r"async_aggregate_bytes_to_16bit\(chunks_iterator\): .* async iterable .* "
        r"got list .*use aggregate_bytes_to_16bit",
    ):
        async_aggregate_bytes_to_16bit([b"\x00\x00"])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"got int 3$"):
        async_aggregate_bytes_to_16bit(3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="chunk 1 must be bytes"):
        await collect([b"\x00\x00", 7])  # type: ignore[list-item]


# --------------------------------------------------------------------------- wait_for_item


async def test_wait_for_item_returns_a_waiting_item_at_once() -> None:
    q: asyncio.Queue[int] = asyncio.Queue()
    q.put_nowait(1)
    q.put_nowait(2)
    assert await wait_for_item(q) == 1
    assert await wait_for_item(q, timeout=0) == 2


async def test_wait_for_item_times_out_with_none() -> None:
    q: asyncio.Queue[int] = asyncio.Queue()
    start = time.monotonic()
    assert await wait_for_item(q, timeout=0.05) is None
    assert 0.04 <= time.monotonic() - start < 1.0
    assert await wait_for_item(q, timeout=0) is None
    start = time.monotonic()
    assert await wait_for_item(q) is None  # the default, 0.1 s
    assert 0.09 <= time.monotonic() - start < 1.0


async def test_wait_for_item_gets_an_item_put_while_waiting_and_loses_none() -> None:
    q: asyncio.Queue[str] = asyncio.Queue()
    loop = asyncio.get_running_loop()
    loop.call_later(0.02, q.put_nowait, "late")
    assert await wait_for_item(q, timeout=2) == "late"
    assert await wait_for_item(q, timeout=0.01) is None
    q.put_nowait("after")  # put after a timeout: still there for the next call
    assert await wait_for_item(q, timeout=0.01) == "after"
    assert q.empty()


async def test_wait_for_item_takes_asyncio_queue_subclasses() -> None:
    q: asyncio.PriorityQueue[int] = asyncio.PriorityQueue()
    for item in (3, 1, 2):
        q.put_nowait(item)
    assert await wait_for_item(q) == 1


@pytest.mark.parametrize(
    ("q", "match"),
    [
        (queue.Queue(), "got Queue from the queue module .*queue.get\\(timeout=...\\)"),
        (queue.SimpleQueue(), "got SimpleQueue from the queue module"),
        (None, "must be an asyncio.Queue; got None"),
        ([1], "must be an asyncio.Queue; got list"),
    ],
)
async def test_wait_for_item_rejects_other_queues(q: object, match: str) -> None:
    with pytest.raises(TypeError, match=r"wait_for_item\(queue\): .*" + match):
        await wait_for_item(q)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("timeout", "error", "match"),
    [
        ("1", TypeError, "timeout must be a number of seconds; got str '1'"),
        (None, TypeError, "got None"),
        (True, TypeError, "got bool True"),
        (-0.1, ValueError, "finite and >= 0 seconds; got -0.1"),
        (float("nan"), ValueError, "got nan"),
        (float("inf"), ValueError, "got inf"),
    ],
)
async def test_wait_for_item_validates_timeout(timeout: object, error: type, match: str) -> None:
    with pytest.raises(error, match=r"wait_for_item\(timeout\): .*" + match):
        await wait_for_item(asyncio.Queue(), timeout=timeout)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- MP3


@settings(max_examples=60, deadline=None)
@given(
    rate=st.sampled_from(MP3_SAMPLE_RATES),
    channels=st.sampled_from([1, 2]),
    dtype=st.sampled_from(["int16", "float32", "float64"]),
    n=st.integers(1, 24000),
    freq=st.floats(50, 3500),
    one_d=st.booleans(),
)
def test_mp3_decodes_to_the_same_rate_channels_and_length(
    rate: int, channels: int, dtype: str, n: int, freq: float, one_d: bool
) -> None:
    samples = cast(np.stack([tone(rate, n, freq * (c + 1)) for c in range(channels)]), dtype)
    if one_d and channels == 1:
        samples = samples[0]
    data = audio_to_bytes((rate, samples))
    assert isinstance(data, bytes)
    rates, decoded_channels, decoded = decode(data)
    assert rates == {rate}
    assert decoded_channels == {channels}
    assert abs(decoded.shape[1] - n) <= mp3_frame_samples(rate)


@pytest.mark.parametrize("dtype", ["int16", "float32", "float64"])
@pytest.mark.parametrize("rate", [16000, 24000, 44100, 48000])
def test_mp3_keeps_each_channel_and_its_level(dtype: str, rate: int) -> None:
    """Left 300 Hz, right 1100 Hz: each comes back on its own channel, at its level."""
    left, right = tone(rate, rate, 300.0, 0.5), tone(rate, rate, 1100.0, 0.25)
    rates, channels, decoded = decode(audio_to_bytes((rate, cast(np.stack([left, right]), dtype))))
    assert (rates, channels) == ({rate}, {2})
    assert decoded.shape[1] == rate  # one second, exact for a clip this long
    body = slice(rate // 10, rate - rate // 10)
    for got, want_hz, want_rms in ((decoded[0], 300.0, 0.5), (decoded[1], 1100.0, 0.25)):
        assert abs(dominant_hz(got[body], rate) - want_hz) < 5
        # lame at its default bit rate lowers the level by about 5 % (0.45 dB)
        assert np.sqrt(np.mean(got[body] ** 2)) == pytest.approx(want_rms / np.sqrt(2), rel=0.1)


def test_mp3_of_a_mono_reply_is_recognised_without_a_format_hint() -> None:
    """Half a second of 16 kHz speech-rate audio, as a ReplyOnPause turn would hand it over."""
    samples = cast(tone(16000, 8000, 440.0), "int16").reshape(1, -1)
    data = audio_to_bytes((16000, samples))
    with av.open(io.BytesIO(data)) as container:
        assert container.format.name == "mp3"
    rates, channels, decoded = decode(data, format=None)
    assert (rates, channels, decoded.shape[1]) == ({16000}, {1}, 8000)
    assert abs(dominant_hz(decoded[0], 16000) - 440.0) < 5


def test_mp3_clips_floats_outside_the_range() -> None:
    loud = tone(16000, 16000, 440.0, amplitude=3.0).astype(np.float32)
    _, _, decoded = decode(audio_to_bytes((16000, loud)))
    assert np.max(np.abs(decoded)) < 1.2  # clipped to full scale (plus codec ripple)
    assert np.sqrt(np.mean(decoded**2)) > 0.8  # a square-ish wave at full scale


def test_mp3_rate_may_be_a_numpy_integer() -> None:
    rates, _, _ = decode(audio_to_bytes((np.int64(22050), np.zeros(4410, np.int16))))
    assert rates == {22050}


@pytest.mark.parametrize(
    ("audio", "error", "match"),
    [
        (np.zeros((1, 10), np.int16), TypeError, "tuple; got a bare ndarray of shape \\(1, 10\\)"),
        ((16000,), TypeError, "tuple; got a tuple of length 1"),
        ((16000, np.zeros(3, np.int16), "mono"), TypeError, "got a tuple of length 3"),
        ([16000, np.zeros(3, np.int16)], TypeError, "tuple; got list"),
        ((16000.0, np.zeros(3, np.int16)), TypeError, "sample_rate must be an int .*float 16000"),
        ((True, np.zeros(3, np.int16)), TypeError, "sample_rate must be an int .*bool True"),
        ((96000, np.zeros(3, np.int16)), ValueError, "sample_rate 96000 Hz is not allowed in MP3"),
        ((0, np.zeros(3, np.int16)), ValueError, "one of 8000, 11025, .*, 48000"),
        ((16000, [0, 1]), TypeError, "array must be a numpy ndarray; got list"),
        ((16000, np.zeros(3, np.int32)), TypeError, "unsupported audio data type int32"),
        ((16000, np.zeros((3, 8), np.int16)), ValueError, r"2 channels.*got shape \(3, 8\)$"),
        ((16000, np.zeros((8, 2), np.int16)), ValueError, r"shape \(8, 2\); for \(N, channels"),
        ((16000, np.zeros((1, 2, 8), np.int16)), ValueError, r"got shape \(1, 2, 8\)"),
        ((16000, np.zeros((1, 0), np.int16)), ValueError, r"holds no samples \(shape \(1, 0\)"),
        ((16000, np.zeros(0, np.float32)), ValueError, "holds no samples"),
        ((16000, np.array([0.0, np.nan])), ValueError, "must be finite"),
    ],
)
@pytest.mark.parametrize("func", [audio_to_bytes, audio_to_file])
def test_encoders_validate_their_argument(
    func, audio: object, error: type, match: str, private_tempdir: Path
) -> None:
    with pytest.raises(error, match=rf"{func.__name__}\(audio\): .*{match}"):
        func(audio)
    assert list(private_tempdir.iterdir()) == []  # no file left behind


def test_missing_mp3_encoder_is_a_runtime_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_codec(name: str, mode: str = "r") -> None:
        raise ValueError(name)

    monkeypatch.setattr(av.codec, "Codec", no_codec)
    with pytest.raises(RuntimeError, match=r"MP3 encoder \(libmp3lame\).* lacks"):
        audio_to_bytes((16000, np.zeros(160, np.int16)))


# --------------------------------------------------------------------------- audio_to_file


def test_audio_to_file_writes_an_mp3_the_caller_owns(private_tempdir: Path) -> None:
    audio = (24000, cast(tone(24000, 12000, 500.0), "float32"))
    path = audio_to_file(audio)
    assert isinstance(path, str)
    file = Path(path)
    assert file.is_absolute() and file.parent == private_tempdir
    assert file.suffix == ".mp3" and file.name.startswith("webrtc_ref-")
    assert file.read_bytes() == audio_to_bytes(audio)
    with av.open(path) as container:  # by path, as a speech service or Gradio would open it
        assert container.format.name == "mp3"
        assert container.streams.audio[0].rate == 24000
    other = audio_to_file(audio)
    assert other != path  # a new file each call
    os.remove(path)
    os.remove(other)
    assert list(private_tempdir.iterdir()) == []
