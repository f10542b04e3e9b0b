"""Audio helpers for handler code: sample-format conversion, PCM byte streams, MP3 export.

Sample formats
    :func:`audio_to_float32` and :func:`audio_to_int16` convert between int16 samples and
    float32 samples in [-1, 1) (``float = int / 32768``), elementwise, for arrays of any
    shape. ``audio_to_int16(audio_to_float32(x))`` returns ``x`` exactly.

PCM byte streams
    :func:`aggregate_bytes_to_16bit` and :func:`async_aggregate_bytes_to_16bit` turn a stream
    of raw 16-bit little-endian PCM byte chunks (what text-to-speech services send) into int16
    arrays of shape ``(1, N)``, ready to yield as ``(rate, array)`` from a handler.

Encoded audio
    :func:`audio_to_bytes` encodes ``(sample_rate, array)`` as MP3 (PyAV's ``libmp3lame``
    encoder) and :func:`audio_to_file` writes that to a temporary ``.mp3`` file, for speech
    services and components that take a file.

Queues
    :func:`wait_for_item` takes an item from an ``asyncio.Queue`` or gives ``None`` after a
    timeout, so an ``async def emit`` never blocks for long.

Importing this module imports numpy only; PyAV is imported on the first encode.
"""

from __future__ import annotations

import asyncio
import fractions
import io
import math
import os
import queue as thread_queue
import tempfile
import warnings
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator
from typing import Any

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "MP3_SAMPLE_RATES",
    "aggregate_bytes_to_16bit",
    "async_aggregate_bytes_to_16bit",
    "audio_to_bytes",
    "audio_to_file",
    "audio_to_float32",
    "audio_to_int16",
    "wait_for_item",
]

#: Sample rates (Hz) the MP3 format allows (MPEG-1, MPEG-2 and MPEG-2.5 layer III).
MP3_SAMPLE_RATES: tuple[int, ...] = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000)

_MP3_ENCODER = "libmp3lame"
_BYTES_TYPES = (bytes, bytearray, memoryview)

AudioArray = NDArray[np.int16] | NDArray[np.float32]


def _describe(value: object) -> str:
    """A short description of a received value, for error messages."""
    if isinstance(value, np.ndarray):
        return f"ndarray of shape {value.shape} and dtype {value.dtype}"
    if value is None:
        return "None"
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{type(value).__name__} {text}"


# --------------------------------------------------------------------------- sample formats


def _conversion_input(func: str, audio: object) -> np.ndarray:
    """The array of ``audio`` (a bare array, or a deprecated ``(rate, array)`` tuple)."""
    if isinstance(audio, tuple):
        if len(audio) != 2 or not isinstance(audio[1], np.ndarray):
            raise TypeError(
                f"{func}(audio): audio must be a numpy ndarray; got a tuple of length "
                f"{len(audio)} (the deprecated form is (sample_rate, ndarray))"
            )
        warnings.warn(
            f"passing a (sample_rate, array) tuple to {func}() is deprecated; pass the array only",
            UserWarning,
            stacklevel=3,
        )
        audio = audio[1]
    if not isinstance(audio, np.ndarray):
        raise TypeError(f"{func}(audio): audio must be a numpy ndarray; got {_describe(audio)}")
    return audio


def audio_to_float32(
    audio: AudioArray | tuple[int, AudioArray],
) -> NDArray[np.float32]:
    """Convert int16 samples to float32 in [-1, 1); float32 samples are returned as they are.

    Parameters
    ----------
    audio : np.ndarray
        Samples of dtype ``int16`` or ``float32``, any shape (for example ``(1, N)`` mono
        or ``(2, N)`` stereo). A ``(sample_rate, array)`` tuple is still accepted but
        deprecated: it emits a ``UserWarning`` and its rate is ignored.

    Returns
    -------
    np.ndarray
        float32 samples of the same shape, ``int16 / 32768`` (so -32768 maps to -1.0 and
        32767 to 0.99997). A float32 input is returned itself, not a copy.

    Raises
    ------
    TypeError
        ``audio`` is not an ndarray, or its dtype is neither int16 nor float32 (the message
        names the dtype; convert float64 with ``.astype(np.float32)``).

    Examples
    --------
    >>> audio_to_float32(np.array([[0, 16384, -32768]], dtype=np.int16))
    array([[ 0. ,  0.5, -1. ]], dtype=float32)
    """
    array = _conversion_input("audio_to_float32", audio)
    if array.dtype == np.int16:
        out = array.astype(np.float32)
        out /= np.float32(32768.0)
        return out
    if array.dtype == np.float32:
        return array
    raise TypeError(
        f"audio_to_float32(audio): unsupported audio data type {array.dtype}; "
        "expected int16 or float32"
    )


def audio_to_int16(
    audio: AudioArray | tuple[int, AudioArray],
) -> NDArray[np.int16]:
    """Convert float32 samples in [-1, 1] to int16; int16 samples are returned as they are.

    Parameters
    ----------
    audio : np.ndarray
        Samples of dtype ``float32`` or ``int16``, any shape (for example ``(1, N)`` mono
        or ``(2, N)`` stereo). A ``(sample_rate, array)`` tuple is still accepted but
        deprecated: it emits a ``UserWarning`` and its rate is ignored.

    Returns
    -------
    np.ndarray
        int16 samples of the same shape: ``round(float * 32768)``, clipped to
        [-32768, 32767], so values outside [-1, 1] saturate instead of wrapping around.
        This is the inverse of :func:`audio_to_float32` (``audio_to_int16(audio_to_float32(x))
        == x``). An int16 input is returned itself, not a copy.

    Raises
    ------
    TypeError
        ``audio`` is not an ndarray, or its dtype is neither float32 nor int16 (the message
        names the dtype).
    ValueError
        A float32 sample is NaN or infinite.

    Examples
    --------
    >>> audio_to_int16(np.array([[0.0, 0.5, -1.0, 1.0]], dtype=np.float32))
    array([[     0,  16384, -32768,  32767]], dtype=int16)
    """
    array = _conversion_input("audio_to_int16", audio)
    if array.dtype == np.int16:
        return array
    if array.dtype == np.float32:
        if not np.isfinite(array).all():
            raise ValueError(
                "audio_to_int16(audio): float samples must be finite; got NaN or infinity"
            )
        scaled = np.rint(array * np.float32(32768.0))
        return np.clip(scaled, -32768, 32767).astype(np.int16)
    raise TypeError(
        f"audio_to_int16(audio): unsupported audio data type {array.dtype}; "
        "expected float32 or int16"
    )


# --------------------------------------------------------------------------- PCM byte streams


def _pcm_chunk(func: str, index: int, chunk: object) -> bytes | bytearray | memoryview:
    if not isinstance(chunk, _BYTES_TYPES):
        raise TypeError(
            f"{func}(chunks_iterator): chunk {index} must be bytes, bytearray or memoryview; "
            f"got {_describe(chunk)}"
        )
    return chunk


class _PcmAggregator:
    """Cuts byte chunks at whole 16-bit samples, carrying an odd trailing byte forward."""

    def __init__(self) -> None:
        self._leftover = b""

    def push(self, chunk: bytes | bytearray | memoryview) -> NDArray[np.int16] | None:
        data = self._leftover + chunk
        whole = len(data) - len(data) % 2
        self._leftover = data[whole:]
        if whole == 0:
            return None
        # little-endian PCM in, a writable native int16 array out
        return np.frombuffer(data, dtype="<i2", count=whole // 2).astype(np.int16).reshape(1, -1)


def aggregate_bytes_to_16bit(
    chunks_iterator: Iterable[bytes | bytearray | memoryview],
) -> Iterator[NDArray[np.int16]]:
    """Turn a stream of 16-bit PCM byte chunks into int16 sample arrays.

    Chunks may split a sample anywhere: an odd trailing byte is kept and joined to the next
    chunk. A chunk that completes no sample yields nothing. A single byte left over when the
    stream ends is not a sample and is dropped.

    Parameters
    ----------
    chunks_iterator : Iterable[bytes]
        Chunks of raw 16-bit signed little-endian PCM (``bytes``, ``bytearray`` or
        ``memoryview``), mono or interleaved channels, at any rate.

    Yields
    ------
    np.ndarray
        int16 arrays of shape ``(1, N)``, ``N >= 1``, one per chunk that completes at least
        one sample; each is a new writable array. Joined, they equal
        ``np.frombuffer(b"".join(chunks), "<i2")`` without its odd last byte, if any.

    Raises
    ------
    TypeError
        ``chunks_iterator`` is not iterable (raised at the call), or a chunk is not bytes-like
        (raised when that chunk is reached; the message gives its index).

    Examples
    --------
    >>> [a.tolist() for a in aggregate_bytes_to_16bit([b"\\x01\\x00\\x02", b"\\x00"])]
    [[[1]], [[2]]]
    """
    if isinstance(chunks_iterator, AsyncIterable) and not isinstance(chunks_iterator, Iterable):
        raise TypeError(
            "aggregate_bytes_to_16bit(chunks_iterator): got an async iterable "
            f"({type(chunks_iterator).__name__}); use async_aggregate_bytes_to_16bit for it"
        )
    if isinstance(chunks_iterator, (*_BYTES_TYPES, str)):
        raise TypeError(
            "aggregate_bytes_to_16bit(chunks_iterator): chunks_iterator must be an iterable of "
            f"byte chunks; got a single {type(chunks_iterator).__name__} (wrap it in a list)"
        )
    try:
        chunks = iter(chunks_iterator)
    except TypeError:
        raise TypeError(
            "aggregate_bytes_to_16bit(chunks_iterator): chunks_iterator must be an iterable of "
            f"byte chunks; got {_describe(chunks_iterator)}"
        ) from None
    return _aggregate(chunks)


def _aggregate(
    chunks: Iterator[bytes | bytearray | memoryview],
) -> Iterator[NDArray[np.int16]]:
    aggregator = _PcmAggregator()
    for index, chunk in enumerate(chunks):
        samples = aggregator.push(_pcm_chunk("aggregate_bytes_to_16bit", index, chunk))
        if samples is not None:
            yield samples


def async_aggregate_bytes_to_16bit(
    chunks_iterator: AsyncIterable[bytes | bytearray | memoryview],
) -> AsyncIterator[NDArray[np.int16]]:
    """The async form of :func:`aggregate_bytes_to_16bit`, over an async iterable of chunks.

    Use it with ``async for`` (for example in an async generator handler that streams a
    text-to-speech response). Chunks, carry-over and output are as in
    :func:`aggregate_bytes_to_16bit`.

    Parameters
    ----------
    chunks_iterator : AsyncIterable[bytes]
        An async iterable (for example an async generator) of raw 16-bit signed little-endian
        PCM chunks (``bytes``, ``bytearray`` or ``memoryview``).

    Returns
    -------
    AsyncIterator[np.ndarray]
        An async generator of int16 arrays of shape ``(1, N)``, ``N >= 1``.

    Raises
    ------
    TypeError
        ``chunks_iterator`` is not an async iterable (raised at the call; a plain list or
        generator belongs to :func:`aggregate_bytes_to_16bit`), or a chunk is not bytes-like
        (raised when that chunk is reached; the message gives its index).

    Examples
    --------
    >>> async for samples in async_aggregate_bytes_to_16bit(tts_stream()):
    ...     yield (24000, samples)
    """
    if not isinstance(chunks_iterator, AsyncIterable):
        hint = (
            "; for a plain iterable use aggregate_bytes_to_16bit"
            if isinstance(chunks_iterator, Iterable)
            else ""
        )
        raise TypeError(
            "async_aggregate_bytes_to_16bit(chunks_iterator): chunks_iterator must be an async "
            f"iterable of byte chunks; got {_describe(chunks_iterator)}{hint}"
        )
    return _async_aggregate(chunks_iterator)


async def _async_aggregate(
    chunks: AsyncIterable[bytes | bytearray | memoryview],
) -> AsyncIterator[NDArray[np.int16]]:
    aggregator = _PcmAggregator()
    index = 0
    async for chunk in chunks:
        samples = aggregator.push(_pcm_chunk("async_aggregate_bytes_to_16bit", index, chunk))
        index += 1
        if samples is not None:
            yield samples


# --------------------------------------------------------------------------- queues


async def wait_for_item(queue: asyncio.Queue[Any], timeout: float = 0.1) -> Any:
    """Take the next item from an ``asyncio.Queue``, or give ``None`` after ``timeout`` seconds.

    For ``async def emit`` methods: returning ``None`` when nothing is ready lets the runtime
    call ``emit`` again later instead of blocking on an empty queue. An item that arrives
    after the timeout stays in the queue for the next call.

    Parameters
    ----------
    queue : asyncio.Queue
        The queue to take from (any ``asyncio.Queue``, including ``PriorityQueue`` and
        ``LifoQueue``). A thread queue (``queue.Queue``) is refused: its ``get`` would block
        the event loop.
    timeout : float
        Seconds to wait, finite and ``>= 0`` (0 takes an item only if one is waiting).

    Returns
    -------
    Any
        The item, or ``None`` if the timeout passed first.

    Raises
    ------
    TypeError
        ``queue`` is not an asyncio queue, or ``timeout`` is not a number.
    ValueError
        ``timeout`` is negative, NaN or infinite.

    Examples
    --------
    >>> queue = asyncio.Queue()
    >>> queue.put_nowait(1)
    >>> await wait_for_item(queue)
    1
    """
    if isinstance(queue, (thread_queue.Queue, thread_queue.SimpleQueue)):
        raise TypeError(
            f"wait_for_item(queue): queue must be an asyncio.Queue; got {type(queue).__name__} "
            "from the queue module (a thread queue: use queue.get(timeout=...) instead)"
        )
    if not isinstance(queue, asyncio.Queue):
        raise TypeError(
            f"wait_for_item(queue): queue must be an asyncio.Queue; got {_describe(queue)}"
        )
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float, np.integer, np.floating)):
        raise TypeError(
            f"wait_for_item(timeout): timeout must be a number of seconds; got {_describe(timeout)}"
        )
    if not math.isfinite(timeout) or timeout < 0:
        raise ValueError(
            f"wait_for_item(timeout): timeout must be finite and >= 0 seconds; got {timeout!r}"
        )
    try:
        return queue.get_nowait()  # no task, and timeout=0 still takes a waiting item
    except asyncio.QueueEmpty:
        pass
    try:
        return await asyncio.wait_for(queue.get(), timeout=float(timeout))
    except (TimeoutError, asyncio.TimeoutError):
        return None


# --------------------------------------------------------------------------- encoded audio


def _encodable_audio(func: str, audio: object) -> tuple[int, np.ndarray]:
    """Validate ``(sample_rate, array)`` for MP3 and return ``(rate, planar (C, N) array)``."""
    if isinstance(audio, np.ndarray):
        raise TypeError(
            f"{func}(audio): audio must be a (sample_rate, array) tuple; got a bare ndarray of "
            f"shape {audio.shape} (pass (sample_rate, array))"
        )
    if not isinstance(audio, tuple) or len(audio) != 2:
        got = f"a tuple of length {len(audio)}" if isinstance(audio, tuple) else _describe(audio)
        raise TypeError(f"{func}(audio): audio must be a (sample_rate, array) tuple; got {got}")
    rate, array = audio
    if isinstance(rate, bool) or not isinstance(rate, (int, np.integer)):
        raise TypeError(f"{func}(audio): sample_rate must be an int (Hz); got {_describe(rate)}")
    if int(rate) not in MP3_SAMPLE_RATES:
        allowed = ", ".join(str(r) for r in MP3_SAMPLE_RATES)
        raise ValueError(
            f"{func}(audio): sample_rate {int(rate)} Hz is not allowed in MP3; "
            f"use one of {allowed} (resample first)"
        )
    if not isinstance(array, np.ndarray):
        raise TypeError(f"{func}(audio): array must be a numpy ndarray; got {_describe(array)}")
    if array.dtype not in (np.int16, np.float32, np.float64):
        raise TypeError(
            f"{func}(audio): unsupported audio data type {array.dtype}; "
            "expected int16, float32 or float64"
        )
    if array.ndim == 1:
        array = array.reshape(1, -1)
    if array.ndim != 2 or array.shape[0] not in (1, 2):
        hint = (
            "; for (N, channels) pass array.T"
            if array.ndim == 2 and array.shape[1] in (1, 2)
            else ""
        )
        raise ValueError(
            f"{func}(audio): array must have shape (N,) or (1, N) for mono or (2, N) for "
            f"stereo (MP3 holds at most 2 channels); got shape {array.shape}{hint}"
        )
    if array.shape[1] == 0:
        raise ValueError(
            f"{func}(audio): array holds no samples (shape {array.shape}); "
            "an MP3 needs at least one"
        )
    if array.dtype != np.int16:
        if not np.isfinite(array).all():
            raise ValueError(f"{func}(audio): float samples must be finite; got NaN or infinity")
        array = np.clip(array.astype(np.float32, copy=False), -1.0, 1.0)
    return int(rate), np.ascontiguousarray(array)


def _encode_mp3(rate: int, planar: np.ndarray) -> bytes:
    import av

    try:
        av.codec.Codec(_MP3_ENCODER, "w")
    except ValueError:  # UnknownCodecError
        raise RuntimeError(
            f"audio_to_bytes needs PyAV's MP3 encoder ({_MP3_ENCODER}), which this PyAV "
            f"build (av {av.__version__}) lacks; install the av wheel from PyPI"
        ) from None
    layout = "mono" if planar.shape[0] == 1 else "stereo"
    sample_format = "s16p" if planar.dtype == np.int16 else "fltp"
    frame = av.AudioFrame.from_ndarray(planar, format=sample_format, layout=layout)
    frame.sample_rate = rate
    frame.pts = 0
    frame.time_base = fractions.Fraction(1, rate)
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp3") as container:
        stream = container.add_stream(_MP3_ENCODER, rate=rate)
        stream.codec_context.layout = layout
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return buffer.getvalue()


def audio_to_bytes(audio: tuple[int, AudioArray]) -> bytes:
    """Encode ``(sample_rate, array)`` as MP3 and return the file's bytes.

    For sending a ``ReplyOnPause`` turn to a speech-to-text service, or storing it. The
    bytes are a complete MP3 file (ID3v2 tag, then a LAME/Info header giving the exact
    length, then the frames), at the input's rate and channel count, lame's default
    bit rate.

    Parameters
    ----------
    audio : tuple[int, np.ndarray]
        ``(sample_rate, array)``:

        - ``sample_rate``: an int in :data:`MP3_SAMPLE_RATES` (8000, 11025, 12000, 16000,
          22050, 24000, 32000, 44100 or 48000 Hz); resample other rates first.
        - ``array``: int16 samples, or float32/float64 samples in [-1, 1] (values outside
          are clipped); shape ``(N,)`` or ``(1, N)`` mono, or ``(2, N)`` planar stereo,
          ``N >= 1``. (A webrtc_ref interleaved stereo ``(1, 2N)`` array counts as mono:
          reshape it to ``(2, N)`` with ``array.reshape(-1, 2).T`` first.)

    Returns
    -------
    bytes
        The MP3 file. Decoders give back the rate and channel count; the length can differ
        by up to one MP3 frame (1152 samples, 576 below 32 kHz) from ``N``, as usual for MP3.
        A very short clip (a few MP3 frames, tenths of a second at most) may not be
        recognised by a decoder that guesses the format from the content alone: tell it the
        format (with PyAV, ``av.open(file, format="mp3")``).

    Raises
    ------
    TypeError
        ``audio`` is not a 2-tuple, ``sample_rate`` is not an int, ``array`` is not an
        ndarray, or its dtype is not int16, float32 or float64.
    ValueError
        ``sample_rate`` is not an MP3 rate, the shape is not one of the above, the array is
        empty, or a float sample is NaN or infinite.
    RuntimeError
        The installed PyAV has no MP3 encoder (``libmp3lame``).

    Examples
    --------
    >>> sample_rate = 16000
    >>> audio_data = np.zeros((1, 16000), dtype=np.int16)  # one second of mono silence
    >>> mp3 = audio_to_bytes((sample_rate, audio_data))
    """
    rate, planar = _encodable_audio("audio_to_bytes", audio)
    return _encode_mp3(rate, planar)


def audio_to_file(audio: tuple[int, AudioArray]) -> str:
    """Encode ``(sample_rate, array)`` as MP3 into a new temporary file and return its path.

    The file is created with :func:`tempfile.mkstemp` in the system's temporary directory,
    named ``webrtc_ref-*.mp3``. **The caller owns it and deletes it** (``os.remove(path)``)
    when done; nothing deletes it automatically. (A Gradio component given the path copies
    the file into its cache, so it may be deleted once the component has been updated.)
    If encoding fails, no file is created.

    Parameters
    ----------
    audio : tuple[int, np.ndarray]
        ``(sample_rate, array)``, as for :func:`audio_to_bytes`: a rate in
        :data:`MP3_SAMPLE_RATES`; int16, float32 or float64 samples of shape ``(N,)``,
        ``(1, N)`` or ``(2, N)``.

    Returns
    -------
    str
        The absolute path of the ``.mp3`` file.

    Raises
    ------
    TypeError, ValueError, RuntimeError
        As :func:`audio_to_bytes`; ``OSError`` if the file cannot be written.

    Examples
    --------
    >>> path = audio_to_file((16000, np.zeros((1, 16000), dtype=np.int16)))
    >>> try:
    ...     transcribe(path)
    ... finally:
    ...     os.remove(path)
    """
    rate, planar = _encodable_audio("audio_to_file", audio)
    data = _encode_mp3(rate, planar)
    fd, path = tempfile.mkstemp(prefix="webrtc_ref-", suffix=".mp3")
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
    except BaseException:
        os.remove(path)
        raise
    return path
