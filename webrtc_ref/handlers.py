"""``StreamHandler``: the low-level, per-connection audio handler users subclass.

Contract (see docs/handlers.md):

- ``copy()`` is called once per connection on the handler passed to ``WebRTC.stream``;
  the copy serves that connection and the original is never driven.
- ``receive(frame)`` gets ``(sample_rate, ndarray int16 of shape (1, N))`` every 20 ms
  (``N = input_sample_rate // 50`` samples per channel; stereo is interleaved, ``(1, 2N)``).
  Calls are serialised per connection, on a worker thread, never on the event loop.
- ``emit()`` returns the next output, or ``None`` when nothing is ready. It runs on its own
  worker thread, concurrently with ``receive``; it may block (the runtime wakes it after
  every ``receive`` and at least once per output frame period when it returns ``None``).
  Outputs: ``(rate, array)``, ``(rate, array, "mono"|"stereo")``, ``AdditionalOutputs``,
  or ``((rate, array[, layout]), AdditionalOutputs)``.
- ``async def receive`` / ``async def emit`` are supported: both then run as tasks on one
  private event loop per connection.
- ``shutdown()`` is called exactly once when the connection ends, whatever the reason.
"""

from __future__ import annotations

import logging
import threading
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, Literal, Protocol

if TYPE_CHECKING:
    import numpy as np

    from webrtc_ref.outputs import AdditionalOutputs

_log = logging.getLogger("webrtc_ref.handlers")

AudioLayout = Literal["mono", "stereo"]
LAYOUTS: tuple[str, ...] = ("mono", "stereo")

#: Placeholder standing for the WebRTC component's own value in ``latest_args[0]``.
WEBRTC_VALUE_PLACEHOLDER = "__webrtc_value__"


class HandlerContext(Protocol):
    """What the runtime offers a running handler. Every method is thread-safe."""

    webrtc_id: str

    def request_inputs(self) -> None:
        """Ask the browser for the current values of the stream's inputs (sends ``"tick"``)."""

    def send_message(self, message: dict[str, Any]) -> None:
        """Send a JSON message to the browser on the data channel."""

    def clear_output(self) -> None:
        """Drop output audio that was emitted but not yet sent."""

    def report_error(self, where: str, exc: BaseException) -> str:
        """Log ``exc`` with its traceback and tell the browser as the app's error policy
        says (webrtc_ref.errors); the stream goes on. Returns the browser's text."""


class StreamHandler(ABC):
    """Base class for audio stream handlers; subclass it and implement the three methods.

    Parameters:
        expected_layout: layout of the frames given to ``receive``: ``"mono"`` (default) or
            ``"stereo"`` (interleaved, shape ``(1, 2N)``).
        output_sample_rate: sample rate (Hz) at which emitted audio is sent.
        output_frame_size: kept for compatibility; audio always leaves in 20 ms frames,
            because longer frames lose audio in aiortc's Opus packetiser.
        input_sample_rate: sample rate (Hz) of the frames given to ``receive``.
    """

    def __init__(
        self,
        expected_layout: AudioLayout = "mono",
        output_sample_rate: int = 24000,
        output_frame_size: int = 960,
        input_sample_rate: int = 48000,
    ) -> None:
        if expected_layout not in LAYOUTS:
            raise ValueError(f"expected_layout must be one of {LAYOUTS}, got {expected_layout!r}")
        for name, value in (
            ("output_sample_rate", output_sample_rate),
            ("output_frame_size", output_frame_size),
            ("input_sample_rate", input_sample_rate),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if input_sample_rate % 50:
            raise ValueError(
                f"input_sample_rate must be a multiple of 50 Hz (20 ms frames), "
                f"got {input_sample_rate!r}"
            )
        self.expected_layout: AudioLayout = expected_layout
        self.output_sample_rate = output_sample_rate
        self.output_frame_size = output_frame_size
        self.input_sample_rate = input_sample_rate
        self.latest_args: list[Any] | str = "not_set"
        self._args_event = threading.Event()
        self._context: HandlerContext | None = None

    # -- to implement ---------------------------------------------------------------
    @abstractmethod
    def receive(self, frame: tuple[int, np.ndarray]) -> None:
        """Take one input frame ``(rate, int16 ndarray (1, N))``."""

    @abstractmethod
    def emit(
        self,
    ) -> tuple[int, np.ndarray] | tuple[int, np.ndarray, str] | AdditionalOutputs | Any | None:
        """Return the next output, or ``None`` if nothing is ready."""

    @abstractmethod
    def copy(self) -> StreamHandler:
        """Return a fresh handler for a new connection."""

    def shutdown(self) -> None:
        """Release resources; called once when the connection ends."""

    # -- provided by the runtime ----------------------------------------------------
    @property
    def webrtc_id(self) -> str | None:
        """The id of the connection this handler serves (``None`` before it starts)."""
        return self._context.webrtc_id if self._context else None

    @property
    def args_set(self) -> bool:
        """True once the stream's input values have arrived at least once."""
        return self._args_event.is_set()

    def set_args(self, args: list[Any]) -> None:
        """Store the latest values of the stream's other inputs (called by the runtime).

        ``latest_args`` becomes ``["__webrtc_value__", *args]``, as in gradio_webrtc.
        """
        self.latest_args = [WEBRTC_VALUE_PLACEHOLDER, *args]
        self._args_event.set()

    def reset_args(self) -> None:
        """Forget that inputs arrived, so the next ``wait_for_args`` fetches fresh ones."""
        self._args_event.clear()

    def wait_for_args(self, timeout: float | None = 5.0) -> bool:
        """Ask the browser for current input values and wait for them.

        Returns True when they arrived within ``timeout`` seconds, False otherwise.
        Blocks the calling worker thread only.
        """
        if self._context is not None:
            self._context.request_inputs()
        return self._args_event.wait(timeout)

    def send_message(self, message: dict[str, Any]) -> None:
        """Send a JSON message (e.g. ``{"type": "warning", "message": ...}``) to the browser."""
        if self._context is not None:
            self._context.send_message(message)

    def clear_output(self) -> None:
        """Drop emitted audio that has not been sent yet (e.g. on barge-in)."""
        if self._context is not None:
            self._context.clear_output()

    def _report_error(self, where: str, exc: BaseException) -> None:
        """Report an error of user code that does not end the stream (runtime use only)."""
        if self._context is not None:
            self._context.report_error(where, exc)
        else:
            _log.error("error in %s (no connection)", where, exc_info=exc)

    def _attach(self, context: HandlerContext) -> None:
        """Bind this copy to its connection (runtime use only)."""
        self._context = context

    def _detach(self) -> None:
        self._context = None
