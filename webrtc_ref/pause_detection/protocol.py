"""The pause-detection protocols: what ``ReplyOnPause`` needs from a voice-activity detector.

Two interfaces, so that one model object can serve both worlds:

- :class:`PauseDetectionModel` is the *chunked* interface, call-compatible with fastrtc's
  protocol of the same name: ``vad((sample_rate, audio), options) -> (speech_seconds, chunks)``
  and ``warmup()``. A model implementing it can be injected into ``fastrtc.ReplyOnPause(model=...)``
  and drives our ``AlgoOptions(mode="chunked")``.
- :class:`StreamingPauseDetectionModel` adds ``new_stream()``, which returns a :class:`VadStream`
  holding one connection's recurrent state. ``ReplyOnPause``'s default (``mode="streaming"``)
  feeds it 16 kHz float32 audio as it arrives and gets one speech probability per window
  (32 ms for Silero).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, TypedDict, runtime_checkable

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray


class AudioChunk(TypedDict):
    """One speech segment found by :meth:`PauseDetectionModel.vad`.

    ``start``/``end`` are sample indices at the model's rate (16 kHz), ``end`` exclusive,
    as in fastrtc and Silero's ``get_speech_timestamps``.
    """

    start: int
    end: int


@runtime_checkable
class VadStream(Protocol):
    """The per-connection, stateful side of a streaming detector.

    Contract:
        - ``sample_rate`` is the rate ``process`` expects (16000 for Silero).
        - ``window_samples`` is how many samples make one probability (512 for Silero).
        - ``process(samples)`` takes 1-D float32 audio in [-1, 1] at ``sample_rate``, of any
          length (including 0); it buffers partial windows and returns one probability in
          [0, 1] per *completed* window, in order. Window ``k`` (counting from the last
          ``reset``) covers samples ``[k * window_samples, (k + 1) * window_samples)``.
        - ``reset()`` forgets the recurrent state and any buffered samples.
        - A stream is used by one thread at a time; different streams of one model may be
          used concurrently.
    """

    sample_rate: int
    window_samples: int

    def process(self, samples: NDArray[np.float32]) -> list[float]: ...

    def reset(self) -> None: ...


@runtime_checkable
class PauseDetectionModel(Protocol):
    """A chunked voice-activity detector (fastrtc-compatible).

    Contract:
        - ``vad((sample_rate, audio), options)`` takes mono audio (int16 or float32, shape
          ``(N,)`` or ``(1, N)``) at any sample rate and returns ``(speech_seconds, chunks)``:
          the total duration of the speech segments found and the segments themselves.
          ``options`` is model-specific (``SileroVadOptions`` for Silero) or ``None`` for the
          model's defaults. Failures raise; they are never reported as a number.
        - ``warmup()`` does whatever one-time work makes the first real call fast.
        - Both may be called from several threads at once.
    """

    def vad(
        self, audio: tuple[int, NDArray[Any]], options: Any
    ) -> tuple[float, list[AudioChunk]]: ...

    def warmup(self) -> None: ...


@runtime_checkable
class StreamingPauseDetectionModel(PauseDetectionModel, Protocol):
    """A detector that can also score audio window by window with per-stream state."""

    def new_stream(self) -> VadStream:
        """Return a fresh :class:`VadStream` (zero state); cheap, thread-safe."""
        ...
