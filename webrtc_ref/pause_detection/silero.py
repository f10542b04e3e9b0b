"""Silero VAD (v5/v6 ONNX) on onnxruntime, shipped with the package; no network, no torch.

The model file ``silero_vad.onnx`` is taken unchanged from the MIT-licensed ``silero-vad`` 6.2.3
wheel on PyPI (``silero_vad/data/silero_vad.onnx``); its licence is ``LICENSE`` next to it.
Its SHA-256 (:data:`MODEL_SHA256`) is verified every time the file is loaded.

Model interface (v5/v6): ``input float32 [B, 64 + 512]`` (64 samples of context from the previous
window, then a 512-sample window at 16 kHz), ``state float32 [2, B, 128]``, ``sr int64`` ->
``output float32 [B, 1]`` (speech probability), ``stateN`` (the next state).

One :class:`SileroVADModel` (one onnxruntime session) is shared by every connection of the
process (:func:`get_silero_model`); the session is created lazily, once, under a lock, and
``InferenceSession.run`` is thread-safe. Recurrent state lives in :class:`SileroVadStream`,
one per connection.
"""

from __future__ import annotations

import hashlib
import logging
import math
import threading
from dataclasses import dataclass, fields
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from webrtc_ref.pause_detection.protocol import AudioChunk
from webrtc_ref.pause_detection.resample import int16_to_float32, resample_all

if TYPE_CHECKING:
    import onnxruntime

logger = logging.getLogger("webrtc_ref.pause_detection")

MODEL_FILENAME = "silero_vad.onnx"
#: SHA-256 of ``silero_vad.onnx`` from the silero-vad 6.2.3 wheel (RECORD entry matches).
MODEL_SHA256 = "1a153a22f4509e292a94e67d6f9b85e8deb25b4988682b7e174c65279d8788e3"
MODEL_SOURCE = "silero-vad 6.2.3 (PyPI wheel), silero_vad/data/silero_vad.onnx, MIT License"

SAMPLE_RATE = 16000
WINDOW_SAMPLES = 512
CONTEXT_SAMPLES = 64
WINDOW_SECONDS = WINDOW_SAMPLES / SAMPLE_RATE  # 0.032


class ModelChecksumError(RuntimeError):
    """The model file's SHA-256 is not the expected one (corrupted or replaced file)."""


@dataclass
class SileroVadOptions:
    """Options of the Silero detector; names and defaults are gradio_webrtc's.

    Attributes:
        threshold: speech probability at or above which a window is speech. While in speech,
            a window stays speech until its probability falls below ``threshold - 0.15``
            (Silero's hysteresis). Used by both the streaming and the chunked modes.
        min_speech_duration_ms: (chunked ``vad()`` only) speech segments shorter than this are
            dropped.
        max_speech_duration_s: (chunked ``vad()`` only) segments longer than this are split
            at the last silence of more than 98 ms, or cut.
        min_silence_duration_ms: (chunked ``vad()`` only) a segment ends after this much
            silence.
        window_size_samples: (chunked ``vad()`` only) the step, at 16 kHz, at which segment
            boundaries are decided. Silero v5/v6 scores 512-sample windows; a larger step
            (1024, 1536, ...) uses the mean probability of its 512-sample windows. Must be a
            positive multiple of 512.
        speech_pad_ms: (chunked ``vad()`` only) segments are padded by this much each side.

    The streaming mode of ``ReplyOnPause`` uses only ``threshold``; its timing comes from
    ``AlgoOptions``.

    Raises:
        ValueError: from ``__init__`` when a field is out of range.
    """

    threshold: float = 0.5
    min_speech_duration_ms: int = 250
    max_speech_duration_s: float = float("inf")
    min_silence_duration_ms: int = 2000
    window_size_samples: int = 1024
    speech_pad_ms: int = 400

    def __post_init__(self) -> None:
        def _number(name: str, value: Any) -> float:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"SileroVadOptions.{name} must be a number, got {value!r}")
            if math.isnan(value):
                raise ValueError(f"SileroVadOptions.{name} must not be NaN")
            return float(value)

        if not 0.0 < _number("threshold", self.threshold) < 1.0:
            raise ValueError(
                f"SileroVadOptions.threshold must be in (0, 1), got {self.threshold!r}"
            )
        for name in ("min_speech_duration_ms", "min_silence_duration_ms", "speech_pad_ms"):
            if _number(name, getattr(self, name)) < 0:
                raise ValueError(
                    f"SileroVadOptions.{name} must be >= 0, got {getattr(self, name)!r}"
                )
        if _number("max_speech_duration_s", self.max_speech_duration_s) <= 0:
            raise ValueError(
                "SileroVadOptions.max_speech_duration_s must be > 0 (inf for no limit), "
                f"got {self.max_speech_duration_s!r}"
            )
        w = self.window_size_samples
        if isinstance(w, bool) or not isinstance(w, int) or w <= 0 or w % WINDOW_SAMPLES:
            raise ValueError(
                "SileroVadOptions.window_size_samples must be a positive multiple of "
                f"{WINDOW_SAMPLES} (Silero v5 scores {WINDOW_SAMPLES}-sample windows), got {w!r}"
            )

    @property
    def neg_threshold(self) -> float:
        """Probability below which a window ends speech (Silero's ``threshold - 0.15``)."""
        return max(self.threshold - 0.15, 0.01)


def coerce_options(options: Any) -> SileroVadOptions:
    """``options`` as a :class:`SileroVadOptions`.

    ``None`` gives the defaults; any other object (e.g. fastrtc's ``SileroVadOptions``, when
    this model is injected into fastrtc) is read field by field, missing fields taking their
    defaults.
    """
    if options is None:
        return SileroVadOptions()
    if isinstance(options, SileroVadOptions):
        return options
    names = [f.name for f in fields(SileroVadOptions)]
    return SileroVadOptions(**{n: getattr(options, n) for n in names if hasattr(options, n)})


def speech_timestamps(
    probs: NDArray[np.floating] | list[float],
    options: SileroVadOptions,
    audio_length_samples: int,
) -> list[AudioChunk]:
    """Turn 512-sample-window probabilities into speech segments, as gradio_webrtc's ``vad``.

    This follows Silero's ``get_speech_timestamps`` (the version gradio_webrtc 0.0.16 vendored):
    hysteresis between ``threshold`` and ``threshold - 0.15``, ``min_silence_duration_ms``
    before a segment ends, ``max_speech_duration_s`` splitting, removal of segments shorter
    than ``min_speech_duration_ms``, then ``speech_pad_ms`` of padding (halving the gap when
    two segments are closer than twice the pad). Positions are 16 kHz sample indices.
    """
    step = options.window_size_samples
    group = step // WINDOW_SAMPLES
    p = np.asarray(probs, dtype=np.float64)
    if group > 1 and p.size:
        pad = (-p.size) % group
        if pad:
            p = np.concatenate([p, np.zeros(pad)])
        p = p.reshape(-1, group).mean(axis=1)

    sr = SAMPLE_RATE
    threshold = options.threshold
    neg_threshold = options.neg_threshold
    min_speech = sr * options.min_speech_duration_ms / 1000
    pad_samples = sr * options.speech_pad_ms / 1000
    max_speech = sr * options.max_speech_duration_s - step - 2 * pad_samples
    min_silence = sr * options.min_silence_duration_ms / 1000
    min_silence_at_max = sr * 98 / 1000

    speeches: list[dict[str, int]] = []
    current: dict[str, int] = {}
    triggered = False
    temp_end = prev_end = next_start = 0
    for i, prob in enumerate(p):
        pos = step * i
        if prob >= threshold and temp_end:
            temp_end = 0
            if next_start < prev_end:
                next_start = pos
        if prob >= threshold and not triggered:
            triggered = True
            current = {"start": pos}
            continue
        if triggered and pos - current["start"] > max_speech:
            if prev_end:
                current["end"] = prev_end
                speeches.append(current)
                current = {}
                if next_start < prev_end:
                    triggered = False
                else:
                    current = {"start": next_start}
                prev_end = next_start = temp_end = 0
            else:
                current["end"] = pos
                speeches.append(current)
                current = {}
                prev_end = next_start = temp_end = 0
                triggered = False
                continue
        if prob < neg_threshold and triggered:
            if not temp_end:
                temp_end = pos
            if pos - temp_end > min_silence_at_max:
                prev_end = temp_end
            if pos - temp_end < min_silence:
                continue
            current["end"] = temp_end
            if current["end"] - current["start"] > min_speech:
                speeches.append(current)
            current = {}
            prev_end = next_start = temp_end = 0
            triggered = False
    if current and audio_length_samples - current["start"] > min_speech:
        current["end"] = audio_length_samples
        speeches.append(current)

    for i, speech in enumerate(speeches):
        if i == 0:
            speech["start"] = int(max(0, speech["start"] - pad_samples))
        if i != len(speeches) - 1:
            gap = speeches[i + 1]["start"] - speech["end"]
            if gap < 2 * pad_samples:
                speech["end"] += int(gap // 2)
                speeches[i + 1]["start"] = int(max(0, speeches[i + 1]["start"] - gap // 2))
            else:
                speech["end"] = int(min(audio_length_samples, speech["end"] + pad_samples))
                speeches[i + 1]["start"] = int(max(0, speeches[i + 1]["start"] - pad_samples))
        else:
            speech["end"] = int(min(audio_length_samples, speech["end"] + pad_samples))
    return [AudioChunk(start=int(s["start"]), end=int(s["end"])) for s in speeches]


class SileroVADModel:
    """The Silero VAD model; implements ``PauseDetectionModel`` and ``new_stream()``.

    Parameters:
        model_path: an ONNX file with the v5/v6 interface; default: the packaged file.
        sha256: the expected SHA-256 of ``model_path``; required to be the packaged digest
            for the default file, optional (``None`` skips the check) for a custom path.

    Contract:
        - Construction is cheap; the file is read, checked and loaded into one onnxruntime
          session (1 intra-op and 1 inter-op thread, CPU) on first use, once, under a lock.
        - Loading raises :class:`ModelChecksumError` on a digest mismatch,
          ``FileNotFoundError`` if the file is missing, ``RuntimeError`` if onnxruntime
          cannot load it; a later call retries.
        - All methods are thread-safe; state is kept in the streams, never in the model.
    """

    sample_rate = SAMPLE_RATE
    window_samples = WINDOW_SAMPLES

    def __init__(self, model_path: str | Path | None = None, sha256: str | None = None) -> None:
        self.model_path = Path(model_path) if model_path is not None else None
        if model_path is None:
            sha256 = MODEL_SHA256
        self.sha256 = sha256.lower() if sha256 else None
        self._session: onnxruntime.InferenceSession | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        where = self.model_path or f"<package>/{MODEL_FILENAME}"
        return f"SileroVADModel({str(where)!r}, loaded={self._session is not None})"

    # -- loading ---------------------------------------------------------------------
    def _read_model_bytes(self) -> tuple[bytes, str]:
        if self.model_path is None:
            ref = resources.files("webrtc_ref.pause_detection").joinpath(MODEL_FILENAME)
            where = str(ref)
            try:
                data = ref.read_bytes()
            except FileNotFoundError as exc:
                raise FileNotFoundError(
                    f"the packaged Silero VAD model is missing ({where}); reinstall webrtc-ref"
                ) from exc
        else:
            where = str(self.model_path)
            if not self.model_path.is_file():
                raise FileNotFoundError(f"Silero VAD model file not found: {where}")
            data = self.model_path.read_bytes()
        return data, where

    def load(self) -> onnxruntime.InferenceSession:
        """Return the onnxruntime session, loading and verifying the model on first call."""
        session = self._session
        if session is not None:
            return session
        with self._lock:
            if self._session is not None:
                return self._session
            data, where = self._read_model_bytes()
            if self.sha256 is not None:
                actual = hashlib.sha256(data).hexdigest()
                if actual != self.sha256:
                    raise ModelChecksumError(
                        f"Silero VAD model {where} failed its SHA-256 check: expected "
                        f"{self.sha256}, got {actual} ({len(data)} bytes). The file is "
                        "corrupted or was replaced; reinstall webrtc-ref."
                    )
            try:
                import onnxruntime
            except ImportError as exc:  # pragma: no cover - a declared dependency
                raise RuntimeError("the Silero VAD model needs the onnxruntime package") from exc
            opts = onnxruntime.SessionOptions()
            opts.intra_op_num_threads = 1
            opts.inter_op_num_threads = 1
            opts.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
            opts.log_severity_level = 3
            try:
                self._session = onnxruntime.InferenceSession(
                    data, sess_options=opts, providers=["CPUExecutionProvider"]
                )
            except Exception as exc:
                raise RuntimeError(
                    f"onnxruntime could not load the VAD model {where}: {exc}"
                ) from exc
            logger.debug("loaded Silero VAD model from %s", where)
            return self._session

    @property
    def loaded(self) -> bool:
        """True once the session exists."""
        return self._session is not None

    # -- inference -------------------------------------------------------------------
    def run_window(
        self, window_with_context: NDArray[np.float32], state: NDArray[np.float32]
    ) -> tuple[float, NDArray[np.float32]]:
        """Score one ``(1, 64 + 512)`` float32 input; return ``(probability, next_state)``."""
        out, new_state = self.load().run(
            None,
            {"input": window_with_context, "state": state, "sr": np.array(SAMPLE_RATE, np.int64)},
        )
        return float(out[0, 0]), new_state

    def new_stream(self) -> SileroVadStream:
        """Return a new stream with zero state (see ``VadStream``)."""
        return SileroVadStream(self)

    def probabilities(self, audio_16k: NDArray[np.float32]) -> NDArray[np.float32]:
        """Speech probability of each 512-sample window of a 16 kHz float32 signal.

        The last partial window is zero-padded, as Silero does; fresh state.
        """
        audio_16k = np.asarray(audio_16k, dtype=np.float32).reshape(-1)
        pad = (-audio_16k.size) % WINDOW_SAMPLES
        if pad:
            audio_16k = np.concatenate([audio_16k, np.zeros(pad, np.float32)])
        return np.asarray(self.new_stream().process(audio_16k), dtype=np.float32)

    def vad(
        self,
        audio: tuple[int, NDArray[Any]],
        options: SileroVadOptions | Any | None,
    ) -> tuple[float, list[AudioChunk]]:
        """fastrtc-compatible chunked detection; see ``PauseDetectionModel``.

        ``audio`` is ``(sample_rate, mono int16 or float32 (N,) or (1, N))``; it is resampled
        to 16 kHz with PyAV. Returns the total seconds of the (padded) speech segments and
        the segments, in 16 kHz sample indices. Errors raise; they never become ``inf``.
        ``options``: see :func:`coerce_options`.

        Raises:
            ValueError: on a malformed ``audio`` tuple.
        """
        if not (isinstance(audio, tuple) and len(audio) == 2):
            raise ValueError(f"audio must be (sample_rate, ndarray), got {type(audio).__name__}")
        rate, samples = audio
        if isinstance(rate, bool) or not isinstance(rate, (int, np.integer)) or rate <= 0:
            raise ValueError(f"audio sample rate must be a positive int, got {rate!r}")
        arr = np.asarray(samples)
        if arr.ndim == 2 and arr.shape[0] == 1:
            arr = arr[0]
        if arr.ndim != 1:
            raise ValueError(f"vad() takes mono audio of shape (N,) or (1, N), got {arr.shape}")
        if arr.dtype == np.int16:
            f32 = int16_to_float32(arr)
        elif arr.dtype in (np.float32, np.float64):
            f32 = arr.astype(np.float32, copy=False)
        else:
            raise ValueError(f"vad() takes int16 or float32 audio, got {arr.dtype}")
        options = coerce_options(options)
        audio_16k = f32 if rate == SAMPLE_RATE else resample_all(f32, int(rate), SAMPLE_RATE)
        probs = self.probabilities(audio_16k)
        chunks = speech_timestamps(probs, options, audio_16k.size)
        speech_samples = sum(c["end"] - c["start"] for c in chunks)
        return speech_samples / SAMPLE_RATE, chunks

    def warmup(self) -> None:
        """Load the model and run it on a second of silence."""
        self.new_stream().process(np.zeros(SAMPLE_RATE, np.float32))


class SileroVadStream:
    """One connection's Silero state; implements ``VadStream`` (16 kHz, 512-sample windows).

    Not thread-safe: one stream is driven by one thread at a time.
    """

    sample_rate = SAMPLE_RATE
    window_samples = WINDOW_SAMPLES

    def __init__(self, model: SileroVADModel) -> None:
        self._model = model
        self.reset()

    def reset(self) -> None:
        """Zero the recurrent state and the context; drop buffered samples."""
        self._state = np.zeros((2, 1, 128), dtype=np.float32)
        self._input = np.zeros((1, CONTEXT_SAMPLES + WINDOW_SAMPLES), dtype=np.float32)
        self._pending = np.zeros(0, dtype=np.float32)

    def process(self, samples: NDArray[np.float32]) -> list[float]:
        """Buffer ``samples`` (1-D float32, 16 kHz) and score every completed window."""
        raw = np.asarray(samples)
        f32 = int16_to_float32(raw) if raw.dtype == np.int16 else raw.astype(np.float32, copy=False)
        f32 = f32.reshape(-1)
        buf = np.concatenate([self._pending, f32]) if self._pending.size else f32
        n = buf.size // WINDOW_SAMPLES
        probs: list[float] = []
        x = self._input
        for k in range(n):
            x[0, CONTEXT_SAMPLES:] = buf[k * WINDOW_SAMPLES : (k + 1) * WINDOW_SAMPLES]
            prob, self._state = self._model.run_window(x, self._state)
            probs.append(prob)
            x[0, :CONTEXT_SAMPLES] = x[0, -CONTEXT_SAMPLES:]
        self._pending = buf[n * WINDOW_SAMPLES :].copy()
        return probs


_default_model: SileroVADModel | None = None
_default_lock = threading.Lock()


def get_silero_model() -> SileroVADModel:
    """Return the process-wide Silero model (created once; loaded lazily on first use)."""
    global _default_model
    with _default_lock:
        if _default_model is None:
            _default_model = SileroVADModel()
        return _default_model
