"""Offline voice-activity detection for ``ReplyOnPause``.

- :class:`PauseDetectionModel` / :class:`StreamingPauseDetectionModel` / :class:`VadStream`:
  the protocols a detector implements (the first is fastrtc-compatible).
- :class:`SileroVADModel`: Silero VAD v5/v6 on onnxruntime, shipped in this package
  (``silero_vad.onnx``, MIT, see ``LICENSE``), checksum-verified at load.
- :func:`get_silero_model`: the process-wide shared instance (loaded lazily).
"""

from webrtc_ref.pause_detection.protocol import (
    AudioChunk,
    PauseDetectionModel,
    StreamingPauseDetectionModel,
    VadStream,
)
from webrtc_ref.pause_detection.resample import MonoResampler, downmix_interleaved
from webrtc_ref.pause_detection.silero import (
    MODEL_SHA256,
    MODEL_SOURCE,
    SAMPLE_RATE,
    WINDOW_SAMPLES,
    WINDOW_SECONDS,
    ModelChecksumError,
    SileroVADModel,
    SileroVadOptions,
    SileroVadStream,
    coerce_options,
    get_silero_model,
    speech_timestamps,
)

#: fastrtc's name for the options of the default model.
ModelOptions = SileroVadOptions

__all__ = [
    "MODEL_SHA256",
    "MODEL_SOURCE",
    "SAMPLE_RATE",
    "WINDOW_SAMPLES",
    "WINDOW_SECONDS",
    "AudioChunk",
    "ModelChecksumError",
    "ModelOptions",
    "MonoResampler",
    "PauseDetectionModel",
    "SileroVADModel",
    "SileroVadOptions",
    "SileroVadStream",
    "StreamingPauseDetectionModel",
    "VadStream",
    "coerce_options",
    "downmix_interleaved",
    "get_silero_model",
    "speech_timestamps",
]
