"""Frame contracts: what user code receives and what it may return, and the conversions.

This module is the one place where media crosses between aiortc (``av`` frames) and user
code (numpy arrays). It is pure: no asyncio, no threads, no calls into user code.

Audio into handlers (:class:`AudioInputConverter`)
    ``(sample_rate, ndarray int16)`` in 20 ms blocks of ``sample_rate // 50`` samples per
    channel: mono ``(1, N)``, stereo ``(1, 2N)`` interleaved L/R (as gradio_webrtc).

Audio out of handlers (:func:`parse_audio_output`, :class:`AudioOutputFramer`)
    ``(rate, array)`` or ``(rate, array, "mono" | "stereo")``; ``array`` is 2-D int16, or
    float32/float64 in [-1, 1]; mono ``(1, N)``; stereo ``(2, N)`` planar or ``(1, 2N)``
    interleaved. Rate, dtype and layout may change from one chunk to the next. Everything
    leaves as s16 frames of exactly 20 ms at the framer's rate and layout.

Video (:func:`video_frame_to_array`, :func:`array_to_video_frame`)
    ``ndarray uint8 (H, W, 3)`` in **RGB** order, both ways, any size.

Additional outputs (:func:`split_output`)
    ``media``, ``AdditionalOutputs(...)`` or ``(media, AdditionalOutputs(...))``.

Malformed handler output raises :class:`FrameContractError`, whose message names what was
expected and what was received.
"""

from __future__ import annotations

import fractions

import av
import numpy as np

from webrtc_ref.errors import Warning, WebRTCError
from webrtc_ref.handlers import LAYOUTS, AudioLayout
from webrtc_ref.outputs import AdditionalOutputs, CloseStream

__all__ = [
    "AUDIO_FRAME_MS",
    "AudioInputConverter",
    "AudioOutputFramer",
    "FrameContractError",
    "array_to_video_frame",
    "audio_frame_samples",
    "parse_audio_output",
    "split_output",
    "video_frame_to_array",
]

#: Duration of every audio block given to handlers and of every audio frame sent out.
#: 20 ms, because longer frames lose audio in aiortc's Opus packetiser.
AUDIO_FRAME_MS = 20

_AUDIO_DTYPES = (np.dtype(np.int16), np.dtype(np.float32), np.dtype(np.float64))
_CHANNELS: dict[str, int] = {"mono": 1, "stereo": 2}


class FrameContractError(ValueError):
    """Raised for malformed handler output.

    The message names what was expected and what was received, e.g. ``"audio output array
    must have ndim 2 with shape (1, N) for mono; got shape (480,)"``.
    """


def audio_frame_samples(sample_rate: int) -> int:
    """Samples per channel in one 20 ms block at ``sample_rate``: ``sample_rate // 50``.

    Rounded down for rates that are not multiples of 50 Hz (e.g. 11025 Hz -> 220), so a frame
    never exceeds 20 ms.
    """
    return sample_rate * AUDIO_FRAME_MS // 1000


def _check_rate_setting(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 50:
        raise ValueError(f"{name} must be an int >= 50 (Hz), got {value!r}")
    return int(value)


def _check_layout_setting(value: object) -> AudioLayout:
    if value not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {value!r}")
    return value  # type: ignore[return-value]


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


def _remix(samples: np.ndarray, channels: int) -> np.ndarray:
    """Planar ``(c, n)`` samples, ``c`` 1 or 2, as planar ``(channels, n)`` samples.

    The one channel-count change of this module, used both ways (the resamplers never change
    the channel count). Stereo -> mono is the mean of L and R: rounded half to even for int16
    samples, in their own dtype for float samples. Mono -> stereo duplicates the channel at
    full level (libswresample would pan it at -3 dB). ``samples`` itself is returned when it
    already has ``channels`` channels.
    """
    if samples.shape[0] == channels:
        return samples
    if channels == 2:
        return np.repeat(samples, 2, axis=0)
    if samples.dtype == np.int16:
        mean = np.add(samples[0], samples[1], dtype=np.float32)  # exact: |L + R| < 2**24
        mean *= 0.5
        return np.rint(mean).astype(np.int16)[None, :]
    return ((samples[0] + samples[1]) * 0.5)[None, :]


def _s16_planar(frame: av.AudioFrame) -> np.ndarray:
    """A packed s16 frame's samples as planar int16 ``(channels, n)``: a read-write view of
    the frame's buffer, without ``to_ndarray``'s copy. Only for frames no one else holds."""
    channels = frame.layout.nb_channels
    flat = np.frombuffer(memoryview(frame.planes[0]), np.int16, frame.samples * channels)
    return flat.reshape(-1, channels).T


class _Resampler:
    """PyAV ``AudioResampler`` s to packed s16 at ``rate``, one per input format in turn.

    The caller names the output layout, with the input's channel count (see :func:`_remix`).
    A frame in another format, layout or rate drains the current resampler first, so the
    samples still in its filter delay are not lost: PyAV's resamplers cannot be fed after a
    flush, nor with another format. Input frames are not modified (aiortc may share them).

    Draining pushes 20 ms of silence before ``resample(None)`` and keeps, in all, exactly
    ``round(samples_in * rate / rate_in)`` samples from this resampler. The flush alone is not
    exact, measured with PyAV 18.1 (with or without ``frame_size``): an input shorter than
    about the filter gives nothing at all (10 samples at 8 kHz -> 24 kHz: 0 of 30; 39 samples
    at 48 -> 24 kHz: 0 of 20; 100 samples at 48 -> 8 kHz: 0 of 17) and a slightly longer
    one too little (28 samples at 8 -> 48 kHz: 156 of 168); a long input at a ratio that is
    not whole gives one sample more than the rounded count (441 samples at 8 -> 44.1 kHz:
    2432 for 2431.0).
    """

    def __init__(self, rate: int) -> None:
        self._rate = rate
        self._resampler: av.AudioResampler | None = None
        self._key: tuple[str, str, int] = ("", "", 0)  # input format, layout and rate
        self._samples_in = 0
        self._samples_out = 0

    @property
    def held(self) -> int:
        """Output samples (per channel) still inside the current resampler's filter delay."""
        if self._resampler is None:
            return 0
        expected = round(self._samples_in * self._rate / self._key[2])
        return max(0, expected - self._samples_out)

    def resample(self, frame: av.AudioFrame, layout: str) -> list[av.AudioFrame]:
        key = (frame.format.name, frame.layout.name, frame.sample_rate)
        drained = self.drain() if key != self._key else []
        if self._resampler is None:
            self._resampler = av.AudioResampler(format="s16", layout=layout, rate=self._rate)
            self._key = key
        resampled = self._resampler.resample(frame)
        self._samples_in += frame.samples
        self._samples_out += sum(f.samples for f in resampled)
        return drained + resampled

    def drain(self) -> list[av.AudioFrame]:
        """End the current resampler; return what it still held (at most one frame)."""
        resampler, wanted = self._resampler, self.held
        if resampler is None:
            return []
        fmt, layout, rate = self._key
        self._resampler, self._key = None, ("", "", 0)
        self._samples_in = self._samples_out = 0
        if not wanted:
            return []
        silence = av.AudioFrame(format=fmt, layout=layout, samples=max(rate // 50, 256))
        fill = b"\x80" if fmt.startswith("u8") else b"\x00"  # unsigned 8-bit is offset
        for plane in silence.planes:
            plane.update(fill * plane.buffer_size)
        silence.sample_rate = rate
        tail = av.AudioFifo()
        for frame in resampler.resample(silence) + resampler.resample(None):
            frame.pts = None
            tail.write(frame)
        rest = tail.read(wanted, partial=True)
        return [] if rest is None else [rest]


# --------------------------------------------------------------------------- audio in


class AudioInputConverter:
    """Converts frames decoded by aiortc into the blocks handlers receive.

    Input: any ``av.AudioFrame`` (aiortc's Opus decoder gives s16 packed stereo 48 kHz,
    960 samples; any format, layout and rate is accepted, and may change between frames).
    Output: ``(sample_rate, ndarray int16)`` blocks of exactly 20 ms, i.e.
    ``n = sample_rate // 50`` samples per channel:

    - ``layout="mono"``: shape ``(1, n)``; stereo input is downmixed to (L + R) / 2,
      rounded half to even.
    - ``layout="stereo"``: shape ``(1, 2n)`` interleaved ``L0, R0, L1, R1, ...``
      (gradio_webrtc-compatible); mono input is duplicated to both channels.

    Each block is a new, writable array the handler may keep. Resampling (PyAV's
    ``AudioResampler``) adds a constant delay of at most one block when rates differ;
    at equal rates a 20 ms input frame yields its block immediately. Inputs with more than
    two channels are folded to stereo by libswresample, which knows where each channel sits.
    """

    def __init__(self, sample_rate: int = 48000, layout: AudioLayout = "mono") -> None:
        self.sample_rate: int = _check_rate_setting("sample_rate", sample_rate)
        self.layout: AudioLayout = _check_layout_setting(layout)
        self.block_samples: int = audio_frame_samples(self.sample_rate)
        self._channels = _CHANNELS[self.layout]
        self._resampler = _Resampler(self.sample_rate)
        self._fifo = av.AudioFifo()  # s16 packed at sample_rate, in the handler's layout

    def convert(self, frame: av.AudioFrame) -> list[tuple[int, np.ndarray]]:
        """Take one decoded frame; return the 0..n complete blocks now available, in order."""
        if not isinstance(frame, av.AudioFrame):
            raise TypeError(f"expected av.AudioFrame, got {type(frame).__name__}")
        if frame.samples == 0:
            return []
        if frame.sample_rate <= 0:
            raise ValueError(f"input audio frame has no sample rate: {frame!r}")
        channels = frame.layout.nb_channels
        if frame.format.name == "s16" and frame.sample_rate == self.sample_rate and channels <= 2:
            # Direct: packed s16 at the handler's rate (aiortc's Opus decoder) skips the
            # resampler, at a fraction of its cost per 20 ms frame, which was most of what an
            # idle connection cost. An exact block skips the fifo too.
            for drained in self._resampler.drain():  # the input format changed: flush first
                self._write(drained)
            planar = frame.to_ndarray().reshape(-1, channels).T  # a new array, not aiortc's
            packed = _remix(planar, self._channels).T.reshape(1, -1)
            if frame.samples == self.block_samples and not self._fifo.samples:
                return [(self.sample_rate, packed)]
            self._write_array(packed)
        else:
            # The resampler changes the format or the rate here, so it never hands back the
            # input frame itself (which _write would modify).
            layout = frame.layout.name if channels <= 2 else "stereo"
            for resampled in self._resampler.resample(frame, layout):
                self._write(resampled)
        blocks = []
        while (block := self._fifo.read(self.block_samples)) is not None:
            # (1, channels * n) interleaved, in the buffer of a frame made for this block only
            blocks.append((self.sample_rate, _s16_planar(block).T.reshape(1, -1)))
        return blocks

    def _write(self, frame: av.AudioFrame) -> None:
        """Queue one resampled frame (s16 packed at the handler's rate)."""
        channels = frame.layout.nb_channels
        if channels != self._channels:
            self._write_array(_remix(_s16_planar(frame), self._channels).T.reshape(1, -1))
        else:
            frame.pts = None  # the fifo checks pts continuity otherwise
            self._fifo.write(frame)

    def _write_array(self, packed: np.ndarray) -> None:
        frame = av.AudioFrame.from_ndarray(packed, format="s16", layout=self.layout)
        frame.sample_rate = self.sample_rate
        self._fifo.write(frame)


# --------------------------------------------------------------------------- audio out


def parse_audio_output(item: object) -> tuple[int, np.ndarray, AudioLayout]:
    """Validate one audio output and return ``(rate, array, layout)``.

    Accepted: ``(rate, array)`` (layout ``"mono"``) or ``(rate, array, layout)``.

    - ``rate``: positive int (numpy integers accepted; bools and floats are not).
    - ``array``: ``np.ndarray`` of dtype int16, float32 or float64, 2-D. Float samples are
      nominally in [-1, 1] (values outside are clipped when framed) and must be finite.
    - mono: shape ``(1, N)``. stereo: ``(2, N)`` planar or ``(1, 2N)`` interleaved L/R.
    - ``N == 0`` is valid (it produces nothing).

    The array is returned as given (not copied or reshaped). Anything else, including a bare
    ndarray, raises :class:`FrameContractError` naming the expected and the received form.
    """
    form = "(sample_rate, array) or (sample_rate, array, 'mono'|'stereo')"
    if isinstance(item, np.ndarray):
        raise FrameContractError(
            f"audio output must be a tuple {form}; got a bare ndarray of shape {item.shape} "
            "(wrap it as (sample_rate, array))"
        )
    if not isinstance(item, tuple):
        raise FrameContractError(f"audio output must be a tuple {form}; got {_describe(item)}")
    if len(item) not in (2, 3):
        raise FrameContractError(
            f"audio output must be a tuple {form}; got a tuple of length {len(item)}"
        )
    rate, array = item[0], item[1]
    layout = item[2] if len(item) == 3 else "mono"

    if isinstance(rate, bool) or not isinstance(rate, (int, np.integer)) or rate <= 0:
        raise FrameContractError(
            f"audio output sample rate must be a positive int; got {_describe(rate)}"
        )
    if not isinstance(layout, str) or layout not in LAYOUTS:
        raise FrameContractError(
            f"audio output layout must be 'mono' or 'stereo'; got {_describe(layout)}"
        )
    if not isinstance(array, np.ndarray):
        raise FrameContractError(
            f"audio output array must be a numpy ndarray; got {_describe(array)}"
        )
    if array.dtype not in _AUDIO_DTYPES:
        raise FrameContractError(
            f"audio output array must have dtype int16, float32 or float64; got dtype {array.dtype}"
        )

    if layout == "mono":
        expected_shape = "ndim 2 with shape (1, N) for mono"
        ok = array.ndim == 2 and array.shape[0] == 1
        hint = (
            " (for stereo pass (rate, array, 'stereo'))"
            if array.ndim == 2 and array.shape[0] == 2
            else ""
        )
    else:
        expected_shape = "ndim 2 with shape (2, N) planar or (1, 2N) interleaved for stereo"
        ok = array.ndim == 2 and (
            array.shape[0] == 2 or (array.shape[0] == 1 and array.shape[1] % 2 == 0)
        )
        hint = (
            " (an interleaved row needs an even length)"
            if array.ndim == 2 and array.shape[0] == 1
            else ""
        )
    if not ok:
        raise FrameContractError(
            f"audio output array must have {expected_shape}; got shape {array.shape}{hint}"
        )
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise FrameContractError(
            "audio output float samples must be finite numbers in [-1, 1]; got NaN or inf"
        )
    return int(rate), array, layout  # type: ignore[return-value]


#: The packed sample format of each accepted output dtype.
_PACKED_FORMATS: dict[np.dtype, str] = {
    np.dtype(np.int16): "s16",
    np.dtype(np.float32): "flt",
    np.dtype(np.float64): "dbl",
}


class AudioOutputFramer:
    """Turns user audio chunks into s16 ``av.AudioFrame`` s of exactly 20 ms.

    Output frames: format ``s16`` (packed), layout ``layout``, ``sample_rate`` Hz,
    ``sample_rate // 50`` samples per channel, ``time_base = 1/sample_rate`` and
    ``pts`` = samples emitted before it (the track may overwrite both for pacing).

    Input chunks are validated by :func:`parse_audio_output`; their rate, dtype and layout
    may change from one chunk to the next, and every chunk after such a change counts (it
    used to be dropped). Channel changes are done first (mono -> stereo duplicates; stereo
    -> mono averages), then PyAV's ``AudioResampler`` converts rate and format (float
    samples are clipped to [-1, 1] there). When the input rate or dtype changes, the
    previous resampler is drained first, so no samples are lost. :meth:`flush` ends an
    utterance: it drains the resampler and zero-pads the last partial frame, so the end of
    a reply does not wait in the resampler until the next one. Total output duration equals
    the input's, plus less than one frame of padding per flush.
    """

    def __init__(self, sample_rate: int = 24000, layout: AudioLayout = "mono") -> None:
        self.sample_rate: int = _check_rate_setting("sample_rate", sample_rate)
        self.layout: AudioLayout = _check_layout_setting(layout)
        self.frame_samples: int = audio_frame_samples(self.sample_rate)
        self._channels = _CHANNELS[self.layout]
        self._time_base = fractions.Fraction(1, self.sample_rate)
        self._resampler = _Resampler(self.sample_rate)
        self._fifo = av.AudioFifo()  # s16 packed at sample_rate, in layout
        self._out_pts = 0  # samples emitted, at the output rate

    @property
    def pending_samples(self) -> int:
        """Samples per channel (at the output rate) buffered but not yet in a full frame.

        Includes the few samples still inside the resampler's filter delay, so it is 0 exactly
        when :meth:`flush` would return nothing.
        """
        return self._fifo.samples + self._resampler.held

    def push(self, item: object) -> list[av.AudioFrame]:
        """Validate ``item`` (see :func:`parse_audio_output`) and return the full frames ready.

        Raises :class:`FrameContractError` for malformed items; the framer is unchanged then.
        """
        rate, array, layout = parse_audio_output(item)
        if array.size == 0:
            return []
        if layout == "stereo" and array.shape[0] == 1:
            array = array.reshape(-1, 2).T  # interleaved L/R -> planar (a view)
        packed = _remix(array, self._channels).T.reshape(1, -1)  # planar -> interleaved
        frame = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(packed), format=_PACKED_FORMATS[array.dtype], layout=self.layout
        )
        frame.sample_rate = rate
        for resampled in self._resampler.resample(frame, self.layout):
            self._write(resampled)
        return self._take_frames()

    def flush(self) -> list[av.AudioFrame]:
        """End of an utterance: drain the resampler and emit everything buffered.

        The last partial frame is zero-padded to 20 ms. Returns ``[]`` when nothing is
        pending. The framer stays usable; the next :meth:`push` starts a new resampler.
        """
        for drained in self._resampler.drain():
            self._write(drained)
        partial = self._fifo.samples % self.frame_samples
        if partial:
            padding = np.zeros((1, (self.frame_samples - partial) * self._channels), np.int16)
            frame = av.AudioFrame.from_ndarray(padding, format="s16", layout=self.layout)
            frame.sample_rate = self.sample_rate
            self._fifo.write(frame)
        return self._take_frames()

    def _write(self, frame: av.AudioFrame) -> None:
        frame.pts = None  # the fifo checks pts continuity otherwise
        self._fifo.write(frame)

    def _take_frames(self) -> list[av.AudioFrame]:
        frames = []
        while (frame := self._fifo.read(self.frame_samples)) is not None:
            frame.time_base = self._time_base
            frame.pts = self._out_pts
            self._out_pts += self.frame_samples
            frames.append(frame)
        return frames


# --------------------------------------------------------------------------- video


def video_frame_to_array(frame: av.VideoFrame) -> np.ndarray:
    """Any ``av.VideoFrame`` (aiortc's VP8 decoder gives yuv420p) -> ``uint8 (H, W, 3)`` RGB.

    The array is C-contiguous and writable. (RGB as documented; gradio_webrtc gave BGR.)
    """
    if not isinstance(frame, av.VideoFrame):
        raise TypeError(f"expected av.VideoFrame, got {type(frame).__name__}")
    return np.ascontiguousarray(frame.to_ndarray(format="rgb24"))


def array_to_video_frame(array: object) -> av.VideoFrame:
    """``ndarray uint8 (H, W, 3)`` RGB, any size ``H, W >= 1`` -> ``av.VideoFrame`` (rgb24).

    pts and time_base are left unset for the caller. Anything else (a list, a float dtype,
    ndim 2, 4 channels, an empty image, ...) raises :class:`FrameContractError` naming the
    expected and the received form.
    """
    expected = "video output must be a numpy ndarray of dtype uint8 and shape (H, W, 3) RGB"
    if not isinstance(array, np.ndarray):
        raise FrameContractError(f"{expected}; got {_describe(array)}")
    if array.dtype != np.uint8:
        raise FrameContractError(f"{expected}; got dtype {array.dtype} (shape {array.shape})")
    if array.ndim != 3 or array.shape[2] != 3:
        raise FrameContractError(f"{expected}; got shape {array.shape}")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise FrameContractError(f"{expected} with H, W >= 1; got shape {array.shape}")
    return av.VideoFrame.from_ndarray(np.ascontiguousarray(array), format="rgb24")


# --------------------------------------------------------------------------- outputs


def split_output(item: object) -> tuple[object | None, object | None]:
    """Separate media from what goes beside it in one handler output.

    The "extras" are :class:`AdditionalOutputs` (values for other components),
    :class:`~webrtc_ref.outputs.CloseStream` and the user-facing
    :class:`~webrtc_ref.errors.Warning` / :class:`~webrtc_ref.errors.WebRTCError`. Values
    meant for other components are never sent as media, and media beside them is not
    dropped.

    - ``None`` -> ``(None, None)``
    - an extra -> ``(None, extra)``
    - ``(media, extra)`` (a 2-tuple whose last element is one) -> ``(media, extra)``
    - anything else -> ``(item, None)``; an audio chunk ``(rate, array)`` is media.

    The media part is not validated here. A tuple or list holding an extra anywhere else
    (``(ao, frame)``, ``(rate, ao, array)``, ``(rate, array, ao)``, ``[frame, ao]``,
    ``(ao, ao)``) raises :class:`FrameContractError`.
    """
    if item is None:
        return None, None
    if isinstance(item, _EXTRAS):
        return None, item
    expected = "media, AdditionalOutputs(...) or (media, AdditionalOutputs(...))"
    if isinstance(item, tuple):
        if len(item) == 2 and isinstance(item[1], _EXTRAS) and not isinstance(item[0], _EXTRAS):
            return item[0], item[1]
        positions = [i for i, x in enumerate(item) if isinstance(x, _EXTRAS)]
        if positions:
            names = sorted({type(item[i]).__name__ for i in positions})
            raise FrameContractError(
                f"handler output must be {expected}; got a tuple of length {len(item)} "
                f"with {'/'.join(names)} at position(s) {positions}"
            )
    elif isinstance(item, list) and any(isinstance(x, _EXTRAS) for x in item):
        raise FrameContractError(
            f"handler output must be {expected}; got a list containing AdditionalOutputs "
            "(use a tuple)"
        )
    return item, None


_EXTRAS = (AdditionalOutputs, CloseStream, Warning, WebRTCError)
