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

from webrtc_ref.handlers import LAYOUTS, AudioLayout
from webrtc_ref.outputs import AdditionalOutputs

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
#: 20 ms, because aiortc's Opus packetiser loses audio from longer frames (anchor defect B20).
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


class _ResamplerChain:
    """One ``av.AudioResampler`` per input format, to s16 packed at a fixed output rate.

    Returns the resampled audio as planar int16 ``(channels, n)`` arrays. When the input format
    (the ``key``) changes, the old resampler is drained first, so the samples held in its
    filter delay are not lost. Draining ends the current resampler (PyAV's resamplers cannot
    be fed after a flush); the next frame starts a fresh one. Input frames are not modified
    (aiortc may share them between consumers).

    Draining first pushes silence through the filter, then cuts the output to exactly
    ``round(samples_in * rate_out / rate_in)`` samples: libswresample's own flush returns
    nothing at all for inputs shorter than its filter (a few ms), and ±1 sample otherwise.
    """

    def __init__(self, rate: int) -> None:
        self._rate = rate
        self._key: tuple[object, ...] | None = None
        self._resampler: av.AudioResampler | None = None
        self._template: tuple[str, str, int] = ("s16", "mono", rate)  # input fmt, layout, rate
        self._samples_in = 0
        self._samples_out = 0

    @property
    def key(self) -> tuple[object, ...] | None:
        """The input format the current resampler was set up for (None: no resampler)."""
        return self._key

    def resample(
        self, frame: av.AudioFrame, key: tuple[object, ...], layout: str
    ) -> list[np.ndarray]:
        out: list[np.ndarray] = []
        if self._resampler is not None and key != self._key:
            out.extend(self.drain())
        if self._resampler is None:
            self._resampler = av.AudioResampler(format="s16", layout=layout, rate=self._rate)
            self._key = key
            self._template = (frame.format.name, frame.layout.name, frame.sample_rate)
        self._samples_in += frame.samples
        return out + self._collect(self._resampler.resample(frame))

    def drain(self) -> list[np.ndarray]:
        resampler = self._resampler
        if resampler is None:
            return []
        fmt, layout, rate = self._template
        # Silence longer than the filter's delay (at most ~100 input samples, for 6:1).
        silence = av.AudioFrame(format=fmt, layout=layout, samples=max(rate // 50, 256))
        fill = b"\x80" if fmt.startswith("u8") else b"\x00"  # unsigned 8-bit is offset
        for plane in silence.planes:
            plane.update(fill * plane.buffer_size)
        silence.sample_rate = rate
        silence.pts = self._samples_in
        silence.time_base = fractions.Fraction(1, rate)
        out = self._collect(resampler.resample(silence) + resampler.resample(None))
        got = sum(a.shape[1] for a in out)
        wanted = round(self._samples_in * self._rate / rate) - (self._samples_out - got)
        if out:
            tail = np.concatenate(out, axis=1)[:, : max(0, wanted)]
            out = [tail] if tail.shape[1] else []
        self._resampler = None
        self._key = None
        self._samples_in = self._samples_out = 0
        return out

    @property
    def held(self) -> int:
        """Output samples (per channel) still inside the current resampler's filter delay."""
        if self._resampler is None:
            return 0
        rate_in = self._template[2]
        return max(0, round(self._samples_in * self._rate / rate_in) - self._samples_out)

    def _collect(self, frames: list[av.AudioFrame]) -> list[np.ndarray]:
        arrays = [f.to_ndarray().reshape(-1, f.layout.nb_channels).T for f in frames]
        self._samples_out += sum(f.samples for f in frames)
        return arrays


# --------------------------------------------------------------------------- audio in


class AudioInputConverter:
    """Converts frames decoded by aiortc into the blocks handlers receive.

    Input: any ``av.AudioFrame`` (aiortc's Opus decoder gives s16 packed stereo 48 kHz,
    960 samples; any format, layout and rate is accepted, and may change between frames).
    Output: ``(sample_rate, ndarray int16)`` blocks of exactly 20 ms, i.e.
    ``n = sample_rate // 50`` samples per channel:

    - ``layout="mono"``: shape ``(1, n)``; stereo input is downmixed to (L + R) / 2.
    - ``layout="stereo"``: shape ``(1, 2n)`` interleaved ``L0, R0, L1, R1, ...``
      (gradio_webrtc-compatible); mono input is duplicated to both channels.

    Each block is a new, writable array the handler may keep. Resampling (PyAV's
    ``AudioResampler``) adds a constant delay of at most one block when rates differ;
    at equal rates a 20 ms input frame yields its block immediately.
    """

    def __init__(self, sample_rate: int = 48000, layout: AudioLayout = "mono") -> None:
        self.sample_rate: int = _check_rate_setting("sample_rate", sample_rate)
        self.layout: AudioLayout = _check_layout_setting(layout)
        self.block_samples: int = audio_frame_samples(self.sample_rate)
        self._channels = _CHANNELS[self.layout]
        self._chain = _ResamplerChain(self.sample_rate)
        self._buffer = np.zeros((self._channels, 0), dtype=np.int16)  # planar

    def convert(self, frame: av.AudioFrame) -> list[tuple[int, np.ndarray]]:
        """Take one decoded frame; return the 0..n complete blocks now available, in order."""
        if not isinstance(frame, av.AudioFrame):
            raise TypeError(f"expected av.AudioFrame, got {type(frame).__name__}")
        if frame.samples == 0:
            return []
        if frame.sample_rate <= 0:
            raise ValueError(f"input audio frame has no sample rate: {frame!r}")
        # A mono source for a stereo handler is duplicated here, at full level (libswresample
        # would pan it at -3 dB); every other layout change is libswresample's downmix.
        duplicate = self._channels == 2 and frame.layout.nb_channels == 1
        target_layout = "mono" if duplicate else self.layout
        key = (frame.format.name, frame.layout.name, frame.sample_rate)
        pieces = [self._buffer]
        direct = self._direct(frame)
        if direct is not None:
            pieces.extend(self._chain.drain())  # the input format changed: flush first
            resampled = [direct]
        else:
            resampled = self._chain.resample(frame, key, target_layout)
        for samples in resampled:
            if samples.shape[0] < self._channels:
                samples = np.repeat(samples, self._channels, axis=0)  # mono -> L = R
            pieces.append(samples)
        buffer = np.concatenate(pieces, axis=1) if len(pieces) > 1 else self._buffer
        n = self.block_samples
        count = buffer.shape[1] // n
        blocks = [
            # (channels, n) planar -> (1, channels * n) interleaved, a new array per block
            (self.sample_rate, buffer[:, i * n : (i + 1) * n].T.reshape(1, -1).copy())
            for i in range(count)
        ]
        self._buffer = buffer[:, count * n :].copy()
        return blocks

    def _direct(self, frame: av.AudioFrame) -> np.ndarray | None:
        """The frame as planar int16 ``(channels, n)`` without libswresample, when it is
        packed ``s16`` mono or stereo at the output rate (what aiortc's Opus decoder gives);
        else None. Within one LSB of the resampler (mono: (L + R) / 2, rounded half to even)
        at a fraction of its cost per 20 ms frame, which was most of what an idle
        connection cost."""
        channels = frame.layout.nb_channels
        if frame.format.name != "s16" or frame.sample_rate != self.sample_rate:
            return None
        if channels not in (1, 2):
            return None
        planar = frame.to_ndarray().reshape(-1, channels).T  # packed -> (channels, n)
        if channels == 2 and self._channels == 1:
            total = planar[0].astype(np.int32) + planar[1]
            return np.rint(total / 2).astype(np.int16)[None, :]
        return planar


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


def _to_planar_float(array: np.ndarray, layout: AudioLayout, channels_out: int) -> np.ndarray:
    """Validated output array -> C-contiguous float32 ``(channels_out, N)`` in [-1, 1]."""
    if array.dtype == np.int16:
        samples = array.astype(np.float32) / np.float32(32768)
    else:
        samples = np.clip(array, -1.0, 1.0).astype(np.float32)
    if layout == "stereo" and samples.shape[0] == 1:
        samples = samples.reshape(-1, 2).T  # interleaved L/R -> planar
    if samples.shape[0] == 2 and channels_out == 1:
        samples = samples.mean(axis=0, keepdims=True, dtype=np.float32)
    elif samples.shape[0] == 1 and channels_out == 2:
        samples = np.repeat(samples, 2, axis=0)
    return np.ascontiguousarray(samples, dtype=np.float32)


class AudioOutputFramer:
    """Turns user audio chunks into s16 ``av.AudioFrame`` s of exactly 20 ms.

    Output frames: format ``s16`` (packed), layout ``layout``, ``sample_rate`` Hz,
    ``sample_rate // 50`` samples per channel, ``time_base = 1/sample_rate`` and
    ``pts`` = samples emitted before it (the track may overwrite both for pacing).

    Input chunks are validated by :func:`parse_audio_output`; their rate, dtype and layout
    may change from one chunk to the next (anchor defect B8). Channel changes are done first
    (mono -> stereo duplicates; stereo -> mono averages), then PyAV's ``AudioResampler``
    converts rate and format. When the input rate changes, the previous resampler is
    drained first, so no samples are lost. :meth:`flush` ends an utterance: it drains the
    resampler and zero-pads the last partial frame (anchor defect B9). Total output duration
    equals the input's, plus less than one frame of padding per flush.
    """

    def __init__(self, sample_rate: int = 24000, layout: AudioLayout = "mono") -> None:
        self.sample_rate: int = _check_rate_setting("sample_rate", sample_rate)
        self.layout: AudioLayout = _check_layout_setting(layout)
        self.frame_samples: int = audio_frame_samples(self.sample_rate)
        self._channels = _CHANNELS[self.layout]
        self._time_base = fractions.Fraction(1, self.sample_rate)
        self._chain = _ResamplerChain(self.sample_rate)
        self._in_pts = 0  # samples fed to the current resampler, at its input rate
        self._out_pts = 0  # samples emitted, at the output rate
        self._buffer = np.zeros((self._channels, 0), dtype=np.int16)  # planar s16

    @property
    def pending_samples(self) -> int:
        """Samples per channel (at the output rate) buffered but not yet in a full frame.

        Includes the few samples still inside the resampler's filter delay, so it is 0 exactly
        when :meth:`flush` would return nothing.
        """
        return int(self._buffer.shape[1]) + self._chain.held

    def push(self, item: object) -> list[av.AudioFrame]:
        """Validate ``item`` (see :func:`parse_audio_output`) and return the full frames ready.

        Raises :class:`FrameContractError` for malformed items; the framer is unchanged then.
        """
        rate, array, layout = parse_audio_output(item)
        if array.size == 0:
            return []
        samples = _to_planar_float(array, layout, self._channels)
        frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout=self.layout)
        frame.sample_rate = rate
        key = (rate,)
        if self._chain.key != key:
            self._in_pts = 0  # the chain will start a new resampler
        frame.pts = self._in_pts
        frame.time_base = fractions.Fraction(1, rate)
        self._in_pts += samples.shape[1]
        self._append(self._chain.resample(frame, key, self.layout))
        return self._take_frames()

    def flush(self) -> list[av.AudioFrame]:
        """End of an utterance: drain the resampler and emit everything buffered.

        The last partial frame is zero-padded to 20 ms. Returns ``[]`` when nothing is
        pending. The framer stays usable; the next :meth:`push` starts a new resampler.
        """
        self._append(self._chain.drain())
        self._in_pts = 0
        frames = self._take_frames()
        if self._buffer.shape[1]:
            padding = np.zeros(
                (self._channels, self.frame_samples - self._buffer.shape[1]), dtype=np.int16
            )
            self._buffer = np.concatenate([self._buffer, padding], axis=1)
            frames.extend(self._take_frames())
        return frames

    def _append(self, resampled: list[np.ndarray]) -> None:
        if resampled:
            self._buffer = np.concatenate([self._buffer, *resampled], axis=1)

    def _take_frames(self) -> list[av.AudioFrame]:
        n = self.frame_samples
        count = self._buffer.shape[1] // n
        frames = []
        for i in range(count):
            packed = self._buffer[:, i * n : (i + 1) * n].T.reshape(1, -1)  # interleave
            frame = av.AudioFrame.from_ndarray(
                np.ascontiguousarray(packed), format="s16", layout=self.layout
            )
            frame.sample_rate = self.sample_rate
            frame.time_base = self._time_base
            frame.pts = self._out_pts
            self._out_pts += n
            frames.append(frame)
        if count:
            self._buffer = self._buffer[:, count * n :].copy()
        return frames


# --------------------------------------------------------------------------- video


def video_frame_to_array(frame: av.VideoFrame) -> np.ndarray:
    """Any ``av.VideoFrame`` (aiortc's VP8 decoder gives yuv420p) -> ``uint8 (H, W, 3)`` RGB.

    The array is C-contiguous and writable. (The guide says RGB; gradio_webrtc gave BGR.)
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


def split_output(item: object) -> tuple[object | None, AdditionalOutputs | None]:
    """Separate media from additional outputs in one handler output (anchor A7.1).

    - ``None`` -> ``(None, None)``
    - ``AdditionalOutputs`` -> ``(None, ao)``
    - ``(media, AdditionalOutputs)`` (a 2-tuple whose last element is one) -> ``(media, ao)``
    - anything else -> ``(item, None)``; an audio chunk ``(rate, array)`` is media.

    The media part is not validated here. A tuple or list holding an ``AdditionalOutputs``
    anywhere else (``(ao, frame)``, ``(rate, ao, array)``, ``(rate, array, ao)``,
    ``[frame, ao]``, ``(ao, ao)``) raises :class:`FrameContractError`.
    """
    if item is None:
        return None, None
    if isinstance(item, AdditionalOutputs):
        return None, item
    expected = "media, AdditionalOutputs(...) or (media, AdditionalOutputs(...))"
    if isinstance(item, tuple):
        if (
            len(item) == 2
            and isinstance(item[1], AdditionalOutputs)
            and not isinstance(item[0], AdditionalOutputs)
        ):
            return item[0], item[1]
        positions = [i for i, x in enumerate(item) if isinstance(x, AdditionalOutputs)]
        if positions:
            raise FrameContractError(
                f"handler output must be {expected}; got a tuple of length {len(item)} "
                f"with AdditionalOutputs at position(s) {positions}"
            )
    elif isinstance(item, list) and any(isinstance(x, AdditionalOutputs) for x in item):
        raise FrameContractError(
            f"handler output must be {expected}; got a list containing AdditionalOutputs "
            "(use a tuple)"
        )
    return item, None
