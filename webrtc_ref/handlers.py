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
- ``async def receive`` / ``async def emit`` are supported (:class:`AsyncStreamHandler`
  declares them so): both then run as tasks on one private event loop per connection,
  never on the server's loop.
- ``start_up()``, when a handler defines it, runs once when the stream starts, on a worker
  of its own (a task of the private loop for ``async def start_up``), beside ``receive``
  and ``emit``: it may take seconds or run for the whole stream (reading an upstream
  session into a queue that ``emit`` drains). If it raises, the stream ends with the error.
- ``shutdown()`` is called exactly once when the connection ends, whatever the reason.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Generator
from typing import TYPE_CHECKING, Any, Literal, Protocol

if TYPE_CHECKING:
    import numpy as np

    from webrtc_ref.outputs import AdditionalOutputs

_log = logging.getLogger("webrtc_ref.handlers")

AudioLayout = Literal["mono", "stereo"]
LAYOUTS: tuple[str, ...] = ("mono", "stereo")

#: Longest text message (UTF-8 bytes) handler code may send on the data channel.
MAX_MESSAGE_BYTES = 65_536


def encode_message(message: str | dict[str, Any]) -> str:
    """The data-channel text for ``message``: a ``str`` as is, a ``dict`` as JSON.

    Raises TypeError for other types and ValueError beyond :data:`MAX_MESSAGE_BYTES`.
    """
    if isinstance(message, dict):
        text = json.dumps(message, default=str)
    elif isinstance(message, str):
        text = message
    else:
        raise TypeError(
            f"send_message takes a str or a dict (sent as JSON), got {type(message).__name__}"
        )
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_MESSAGE_BYTES:
        raise ValueError(
            f"send_message: the message is {size} bytes; at most {MAX_MESSAGE_BYTES} are allowed"
        )
    return text


class _Sent:
    """What ``send_message`` returns: already done, so ``await`` on it is optional."""

    __slots__ = ()

    def __await__(self) -> Generator[Any, None, None]:
        return
        yield  # pragma: no cover - makes this a generator


_SENT = _Sent()

#: Placeholder standing for the WebRTC component's own value in ``latest_args[0]``.
WEBRTC_VALUE_PLACEHOLDER = "__webrtc_value__"


class HandlerContext(Protocol):
    """What the runtime offers a running handler. Every method is thread-safe."""

    webrtc_id: str

    def request_inputs(self) -> None:
        """Ask the browser for the current values of the stream's inputs (sends ``"tick"``)."""

    def send_message(self, message: str | dict[str, Any]) -> None:
        """Send a message to the browser on the data channel (a dict as JSON)."""

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
        self._args_waiters: list[Callable[[], None]] = []
        self._args_lock = threading.Lock()
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

    def start_up(self) -> Any:
        """Optional: runs once when the stream starts, beside ``receive`` and ``emit``
        (see the module docstring). The default does nothing."""

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
        with self._args_lock:
            self._args_event.set()
            waiters, self._args_waiters = self._args_waiters, []
        for wake in waiters:
            wake()

    def reset_args(self) -> None:
        """Forget that inputs arrived, so the next ``wait_for_args`` fetches fresh ones."""
        self._args_event.clear()

    def reset(self) -> None:
        """Forget that inputs arrived (as ``reset_args``); subclasses may reset more."""
        self.reset_args()

    def wait_for_args(self, timeout: float | None = 5.0) -> bool:
        """Ask the browser for current input values and wait for them.

        Returns True when they arrived within ``timeout`` seconds, False otherwise.
        Blocks the calling worker thread only.
        """
        if self._context is not None:
            self._context.request_inputs()
        return self._args_event.wait(timeout)

    def wait_for_args_sync(self, timeout: float | None = 5.0) -> bool:
        """The same as the synchronous ``wait_for_args``, under its other name."""
        return StreamHandler.wait_for_args(self, timeout)

    async def _wait_for_args_async(self, timeout: float | None) -> bool:
        if self._context is not None:
            self._context.request_inputs()
        loop = asyncio.get_running_loop()
        arrived: asyncio.Future[None] = loop.create_future()

        def settle() -> None:
            if not arrived.done():
                arrived.set_result(None)

        def wake() -> None:
            try:
                loop.call_soon_threadsafe(settle)
            except RuntimeError:  # the loop closed meanwhile
                pass

        with self._args_lock:
            if self._args_event.is_set():
                return True
            self._args_waiters.append(wake)
        try:
            await asyncio.wait_for(arrived, timeout)
        except asyncio.TimeoutError:
            pass
        finally:
            with self._args_lock:
                if wake in self._args_waiters:
                    self._args_waiters.remove(wake)
        return self._args_event.is_set()

    def send_message(self, message: str | dict[str, Any]) -> _Sent:
        """Send a message to the browser on the data channel: a ``str`` as is (for
        example ``json.dumps({"type": "log", "data": ...})``), a ``dict`` as JSON (e.g.
        ``{"type": "warning", "message": ...}``). Any thread; never blocks.

        Returns an awaitable that is already done, so ``await self.send_message(...)``
        (the async handlers' spelling) works as well. Raises TypeError / ValueError for
        other types or beyond :data:`MAX_MESSAGE_BYTES`.
        """
        text = encode_message(message)
        if self._context is not None:
            self._context.send_message(text)
        return _SENT

    def send_message_sync(self, message: str | dict[str, Any]) -> None:
        """``send_message`` under its synchronous name."""
        self.send_message(message)

    def clear_output(self) -> None:
        """Drop emitted audio that has not been sent yet (e.g. on barge-in)."""
        if self._context is not None:
            self._context.clear_output()

    def clear_queue(self) -> None:
        """``clear_output`` under its other name."""
        self.clear_output()

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


class AsyncStreamHandler(StreamHandler):
    """Base class for handlers written with coroutines: ``async def receive``,
    ``async def emit`` and, optionally, ``async def start_up``; ``shutdown`` may be sync or
    async.

    All of them run on one private event loop per connection, on a worker thread, never
    on the server's loop: awaiting (a model's API, a queue) blocks nothing else, while
    blocking calls without ``await`` block only this connection. ``start_up`` runs as a
    task of its own beside ``receive`` and ``emit``. Parameters as for ``StreamHandler``.
    """

    @abstractmethod
    async def receive(self, frame: tuple[int, np.ndarray]) -> None:  # type: ignore[override]
        """Take one input frame ``(rate, int16 ndarray (1, N))``."""

    @abstractmethod
    async def emit(self) -> Any:  # type: ignore[override]
        """Return the next output, or ``None`` if nothing is ready (may await)."""

    @abstractmethod
    def copy(self) -> AsyncStreamHandler:
        """Return a fresh handler for a new connection."""

    async def start_up(self) -> None:  # type: ignore[override]
        """Optional: runs once when the stream starts (see ``StreamHandler.start_up``)."""

    async def wait_for_args(self, timeout: float | None = 5.0) -> bool:  # type: ignore[override]
        """Ask the browser for current input values and await them; True when they
        arrived within ``timeout`` seconds. Awaits on the connection's loop."""
        return await self._wait_for_args_async(timeout)


class AudioVideoStreamHandler(StreamHandler):
    """Base class for handlers of ``modality="audio-video"`` (camera and microphone in one
    peer connection): the audio methods of :class:`StreamHandler` plus ``video_receive``
    and ``video_emit``.

    - ``video_receive(frame)`` gets the browser's newest camera frame, an RGB
      ``ndarray (H, W, 3) uint8`` (C-contiguous, writable), on a worker of its own. When
      it is slower than the camera, stale frames are dropped: the newest frame wins.
    - ``video_emit()`` returns the next frame to show, the same form, or ``None`` when
      none is ready (it may block, like ``emit``; the runtime calls it again after every
      ``video_receive`` and at least every 33 ms). It may return ``AdditionalOutputs``,
      ``CloseStream``, ``Warning``/``WebRTCError`` beside or instead of a frame, as audio
      outputs may. Frames leave as soon as they are returned, stamped with the time they
      were returned, so audio and video returned together play together.
    - Audio (``receive`` / ``emit``) and video run on separate workers: a slow
      ``video_receive`` never delays audio in or out, and a handler that holds video back
      does not hold audio.

    Parameters as for :class:`StreamHandler`.
    """

    @abstractmethod
    def video_receive(self, frame: np.ndarray) -> None:
        """Take the newest camera frame, RGB ``ndarray (H, W, 3) uint8``."""

    @abstractmethod
    def video_emit(self) -> Any:
        """Return the next video frame (RGB ``ndarray (H, W, 3) uint8``), or ``None``."""

    @abstractmethod
    def copy(self) -> AudioVideoStreamHandler:
        """Return a fresh handler for a new connection."""


class AsyncAudioVideoStreamHandler(AsyncStreamHandler):
    """:class:`AudioVideoStreamHandler` written with coroutines: ``async def receive``,
    ``emit``, ``video_receive``, ``video_emit`` and, optionally, ``start_up``.

    All of them are tasks of one private event loop per connection (so they may share
    asyncio objects such as an upstream session opened in ``start_up``), on a worker
    thread, never the server's loop. Frames reach ``video_receive`` newest-first as for
    the sync class; a coroutine that computes without awaiting blocks the other tasks of
    its own connection only (move such work to ``asyncio.to_thread``).
    """

    @abstractmethod
    async def video_receive(self, frame: np.ndarray) -> None:
        """Take the newest camera frame, RGB ``ndarray (H, W, 3) uint8``."""

    @abstractmethod
    async def video_emit(self) -> Any:
        """Return the next video frame (RGB ``ndarray (H, W, 3) uint8``), or ``None``."""

    @abstractmethod
    def copy(self) -> AsyncAudioVideoStreamHandler:
        """Return a fresh handler for a new connection."""


def handles_video(handler: object) -> bool:
    """True when ``handler`` is a stream handler with ``video_receive`` and ``video_emit``
    (an audio-video stream needs one)."""
    return (
        isinstance(handler, StreamHandler)
        and callable(getattr(handler, "video_receive", None))
        and callable(getattr(handler, "video_emit", None))
    )


def overrides_start_up(handler: StreamHandler) -> bool:
    """True when ``handler``'s class defines its own ``start_up`` (and, for a class that
    says whether it has work for it in ``has_start_up``, that one does)."""
    declared = getattr(handler, "has_start_up", None)
    if isinstance(declared, bool):
        return declared
    own = type(handler).start_up
    return own is not StreamHandler.start_up and own is not AsyncStreamHandler.start_up


class VideoStreamHandler:
    """A video stream function with options: ``WebRTC.stream(fn=VideoStreamHandler(fn,
    fps=..., skip_frames=...))``.

    Parameters:
        callable: the video function, ``fn(frame, *inputs)`` as for a bare function
            (``frame``: RGB ``ndarray (H, W, 3) uint8``).
        fps: the frame rate at which the returned frames are sent (receive mode paces
            at it), > 0.
        skip_frames: True: when ``callable`` is slower than the camera, the newest frame
            wins and stale ones are dropped (what a bare function gets). False (default):
            every frame in order, from a backlog of at most one second of frames (the
            oldest are dropped beyond it).
    """

    def __init__(
        self, callable: Callable[..., Any], fps: float = 30, skip_frames: bool = False
    ) -> None:
        if not _is_callable(callable):
            raise TypeError(f"VideoStreamHandler(callable) must be callable, got {callable!r}")
        if isinstance(fps, bool) or not isinstance(fps, (int, float)) or not 0 < fps <= 240:
            raise ValueError(f"fps must be a number in (0, 240], got {fps!r}")
        if not isinstance(skip_frames, bool):
            raise TypeError(f"skip_frames must be a bool, got {skip_frames!r}")
        self.callable = callable
        self.fps = float(fps)
        self.skip_frames = skip_frames

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.callable(*args, **kwargs)

    def __repr__(self) -> str:
        return (
            f"VideoStreamHandler({self.callable!r}, fps={self.fps:g}, "
            f"skip_frames={self.skip_frames})"
        )


def _is_callable(value: object) -> bool:
    return callable(value)
