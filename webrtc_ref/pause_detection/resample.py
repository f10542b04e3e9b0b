"""Streaming conversion of incoming audio to what a detector wants (mono float32 at 16 kHz).

Resampling uses PyAV's ``av.AudioResampler`` (libswresample); no librosa. Stereo is downmixed
here, by averaging the two channels, before resampling (libswresample's own downmix scales
by 1/sqrt(2) and can clip).
"""

from __future__ import annotations

from typing import Any

import av
import numpy as np
from numpy.typing import NDArray

_EMPTY = np.zeros(0, dtype=np.float32)


def downmix_interleaved(samples: NDArray[np.int16]) -> NDArray[np.int16]:
    """Average interleaved stereo ``[L0, R0, L1, R1, ...]`` into mono int16.

    Raises:
        ValueError: if the number of samples is odd.
    """
    flat = np.asarray(samples).reshape(-1)
    if flat.size % 2:
        raise ValueError(f"interleaved stereo needs an even number of samples, got {flat.size}")
    pairs = flat.reshape(-1, 2).astype(np.int32)
    return ((pairs[:, 0] + pairs[:, 1]) // 2).astype(np.int16)


def int16_to_float32(samples: NDArray[Any]) -> NDArray[np.float32]:
    """Scale int16 PCM to float32 in [-1, 1)."""
    return (np.asarray(samples, dtype=np.float32) / 32768.0).astype(np.float32, copy=False)


class MonoResampler:
    """Resample a stream of mono blocks from ``in_rate`` to ``out_rate`` as float32.

    Contract:
        - ``process(block)`` takes 1-D int16 (or float32 in [-1, 1]) mono samples and returns
          the float32 samples available so far; concatenating every result (plus ``flush()``)
          gives the resampled signal, time-aligned with the input (libswresample's filter
          delay is compensated: input sample ``i`` lands at output ``i * out_rate / in_rate``).
        - When ``in_rate == out_rate`` blocks pass through (converted to float32).
        - Not thread-safe; one instance per stream.
    """

    def __init__(self, in_rate: int, out_rate: int = 16000) -> None:
        for name, value in (("in_rate", in_rate), ("out_rate", out_rate)):
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        self.in_rate = in_rate
        self.out_rate = out_rate
        self._resampler: av.AudioResampler | None = None
        self._format: str | None = None

    def _frame(self, block: NDArray) -> av.AudioFrame:
        if block.dtype == np.int16:
            fmt = "s16"
        else:
            fmt = "flt"
            block = block.astype(np.float32, copy=False)
        if self._format is None:
            self._format = fmt
        elif fmt != self._format:
            # libswresample is configured by the first frame; keep the stream homogeneous.
            block = (
                int16_to_float32(block)
                if self._format == "flt"
                else np.clip(block * 32768.0, -32768, 32767).astype(np.int16)
            )
            fmt = self._format
        frame = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(block.reshape(1, -1)), format=fmt, layout="mono"
        )
        frame.sample_rate = self.in_rate
        return frame

    def process(self, block: NDArray) -> NDArray[np.float32]:
        """Resample one block; see the class contract."""
        block = np.asarray(block).reshape(-1)
        if self.in_rate == self.out_rate:
            if block.dtype == np.int16:
                return int16_to_float32(block)
            return block.astype(np.float32, copy=False)
        if block.size == 0:
            return _EMPTY
        if self._resampler is None:
            self._resampler = av.AudioResampler(format="flt", layout="mono", rate=self.out_rate)
        out = [f.to_ndarray().reshape(-1) for f in self._resampler.resample(self._frame(block))]
        if not out:
            return _EMPTY
        return np.concatenate(out).astype(np.float32, copy=False)

    def flush(self) -> NDArray[np.float32]:
        """Return the samples still held in the resampler's filter; the stream then restarts."""
        if self._resampler is None:
            return _EMPTY
        out = [f.to_ndarray().reshape(-1) for f in self._resampler.resample(None)]
        self._resampler = None
        self._format = None
        if not out:
            return _EMPTY
        return np.concatenate(out).astype(np.float32, copy=False)


def resample_all(audio: NDArray, in_rate: int, out_rate: int = 16000) -> NDArray[np.float32]:
    """Resample a whole mono signal (int16 or float32) to float32 at ``out_rate``."""
    resampler = MonoResampler(in_rate, out_rate)
    head = resampler.process(audio)
    tail = resampler.flush()
    return np.concatenate([head, tail]) if tail.size else head
