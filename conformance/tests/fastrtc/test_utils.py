"""fastrtc profile: the audio utilities (pure functions; no app is served)."""

from __future__ import annotations

import asyncio
import io
import itertools
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conformance.adapters import FastrtcApi

PROPERTY = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def _int16(values: list[int]) -> np.ndarray:
    return np.asarray(values, dtype=np.int16)


@pytest.mark.requirement("FUTL-001")
@PROPERTY
@given(st.lists(st.integers(-32768, 32767), min_size=1, max_size=200))
def test_audio_to_float32(fapi: FastrtcApi, values: list[int]) -> None:
    """audio_to_float32: int16 samples become float32 x / 32768; float32 stay unchanged."""
    samples = _int16(values).reshape(1, -1)
    out = fapi.audio_to_float32(samples)
    assert isinstance(out, np.ndarray) and out.dtype == np.float32, f"got {type(out)}"
    assert out.shape == samples.shape
    np.testing.assert_allclose(out, samples.astype(np.float64) / 32768, atol=1e-7)
    assert float(out.max()) < 1.0 and float(out.min()) >= -1.0
    floats = (samples.astype(np.float32) / 40000).astype(np.float32)
    again = fapi.audio_to_float32(floats)
    assert isinstance(again, np.ndarray) and again.dtype == np.float32
    np.testing.assert_array_equal(again, floats)


@pytest.mark.requirement("FUTL-002")
@PROPERTY
@given(st.lists(st.floats(-1.0, 1.0, width=32), min_size=1, max_size=200))
def test_audio_to_int16(fapi: FastrtcApi, values: list[float]) -> None:
    """audio_to_int16: float32 samples in [-1, 1] become int16 within 1.5 of x * 32767;
    int16 samples stay unchanged."""
    samples = np.asarray([*values, 1.0, -1.0], dtype=np.float32).reshape(1, -1)
    out = fapi.audio_to_int16(samples)
    assert isinstance(out, np.ndarray) and out.dtype == np.int16, f"got {type(out)}"
    assert out.shape == samples.shape
    error = np.abs(out.astype(np.float64) - samples.astype(np.float64) * 32767)
    assert float(error.max()) <= 1.5, f"off by {error.max():.1f} (an overflow?)"
    ints = _int16([-32768, -1, 0, 1, 32767]).reshape(1, -1)
    again = fapi.audio_to_int16(ints)
    assert isinstance(again, np.ndarray) and again.dtype == np.int16
    np.testing.assert_array_equal(again, ints)


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(points)]


def _samples(arrays: list[Any]) -> np.ndarray:
    for array in arrays:
        assert isinstance(array, np.ndarray) and array.dtype == np.int16, f"got {array!r}"
    if not arrays:
        return np.zeros(0, dtype=np.int16)
    return np.concatenate([np.asarray(a).reshape(-1) for a in arrays])


CHUNKED = st.tuples(
    st.lists(st.integers(-32768, 32767), min_size=1, max_size=300),
    st.lists(st.integers(0, 10_000), max_size=12),
)


@pytest.mark.requirement("FUTL-003")
@PROPERTY
@given(CHUNKED)
def test_aggregate_bytes_to_16bit(fapi: FastrtcApi, case: tuple[list[int], list[int]]) -> None:
    """aggregate_bytes_to_16bit: chunks of any lengths become int16 arrays whose samples
    are the bytes read as 16-bit samples."""
    values, cuts = case
    expected = _int16(values)
    chunks = _split(expected.tobytes(), cuts)

    def chunk_iterator() -> Iterator[bytes]:
        yield from chunks

    out = fapi.aggregate_bytes_to_16bit(chunk_iterator())
    np.testing.assert_array_equal(_samples(list(out)), expected)


@pytest.mark.requirement("FUTL-004")
@PROPERTY
@given(CHUNKED)
def test_async_aggregate_bytes_to_16bit(
    fapi: FastrtcApi, case: tuple[list[int], list[int]]
) -> None:
    """async_aggregate_bytes_to_16bit: the same, for an async iterator of chunks."""
    values, cuts = case
    expected = _int16(values)
    chunks = _split(expected.tobytes(), cuts)

    async def chunk_iterator() -> AsyncIterator[bytes]:
        for piece in chunks:
            await asyncio.sleep(0)
            yield piece

    async def collect() -> list[Any]:
        return [array async for array in fapi.async_aggregate_bytes_to_16bit(chunk_iterator())]

    np.testing.assert_array_equal(_samples(asyncio.run(collect())), expected)


@pytest.mark.requirement("FUTL-005")
def test_wait_for_item(fapi: FastrtcApi) -> None:
    """await wait_for_item(queue, timeout): the next item when one is there or arrives in
    time, None once the timeout has passed."""

    async def scenario() -> dict[str, Any]:
        queue: asyncio.Queue[Any] = asyncio.Queue()
        queue.put_nowait("ready")
        ready = await fapi.wait_for_item(queue, 0.5)
        loop = asyncio.get_running_loop()
        loop.call_later(0.05, queue.put_nowait, "later")
        later = await fapi.wait_for_item(queue, 2.0)
        started = time.monotonic()
        nothing = await fapi.wait_for_item(queue, 0.2)
        waited = time.monotonic() - started
        return {"ready": ready, "later": later, "nothing": nothing, "waited": waited}

    result = asyncio.run(scenario())
    assert result["ready"] == "ready", f"an item already queued: got {result['ready']!r}"
    assert result["later"] == "later", f"an item put after 50 ms: got {result['later']!r}"
    assert result["nothing"] is None, f"an empty queue gave {result['nothing']!r}"
    assert 0.15 <= result["waited"] < 1.0, f"the 0.2 s timeout took {result['waited']:.2f} s"


def _decoded(source: Any) -> tuple[int, float]:
    """Sample rate and duration (s) of an encoded audio file (bytes or a path)."""
    import av

    container = av.open(io.BytesIO(source) if isinstance(source, bytes) else str(source))
    try:
        stream = container.streams.audio[0]
        rate = int(stream.codec_context.sample_rate)
        samples = sum(frame.samples for frame in container.decode(stream))
    finally:
        container.close()
    return rate, samples / rate


def _speechlike(rate: int, seconds: float) -> np.ndarray:
    t = np.arange(round(rate * seconds)) / rate
    x = 0.4 * np.sin(2 * np.pi * 220 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t))
    return np.rint(x * 32767).astype(np.int16).reshape(1, -1)


@pytest.mark.requirement("FUTL-006")
@pytest.mark.parametrize("rate", [16000, 24000, 48000])
def test_audio_to_bytes_decodes_to_the_same_audio(fapi: FastrtcApi, rate: int) -> None:
    """audio_to_bytes((rate, int16)) returns an encoded audio file: it decodes to the same
    sample rate and duration."""
    data = fapi.audio_to_bytes((rate, _speechlike(rate, 1.5)))
    assert isinstance(data, bytes) and data, f"got {type(data).__name__}"
    decoded_rate, seconds = _decoded(data)
    assert decoded_rate == rate, f"decodes at {decoded_rate} Hz"
    assert abs(seconds - 1.5) <= 0.05 * 1.5 + 1152 / rate, f"decodes to {seconds:.3f} s"


@pytest.mark.requirement("FUTL-007")
def test_audio_to_file_saves_the_audio(fapi: FastrtcApi) -> None:
    """audio_to_file((rate, int16)) saves the audio to a file and returns its path."""
    path = fapi.audio_to_file((24000, _speechlike(24000, 1.0)))
    assert isinstance(path, str | Path), f"got {type(path).__name__}"
    file = Path(path)
    try:
        assert file.is_file() and file.stat().st_size > 0, f"{file} is not a file with data"
        decoded_rate, seconds = _decoded(file)
        assert decoded_rate == 24000, f"decodes at {decoded_rate} Hz"
        assert abs(seconds - 1.0) <= 0.05 + 1152 / 24000, f"decodes to {seconds:.3f} s"
    finally:
        file.unlink(missing_ok=True)
