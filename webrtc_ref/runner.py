"""Runs user code off the event loop: one set of worker threads per connection.

Three runners adapt the three kinds of stream functions to one small interface
(``start``, ``deliver``, ``set_inputs``, ``stop``):

- :class:`HandlerRunner` drives a ``StreamHandler`` copy (audio send-receive / send).
  Sync handlers get two threads, one calling ``receive`` for each 20 ms input block and
  one calling ``emit``; so the guide's blocking ``emit`` (``Queue.get()``) blocks only its
  own connection. ``emit`` returning ``None`` costs one call per wake-up: the emit thread
  sleeps until the next ``receive`` or for one frame period (20 ms), never spinning.
  Async handlers (``async def receive/emit``) run as two tasks on one private event loop.
- :class:`AudioVideoRunner` adds a ``video_receive`` and a ``video_emit`` worker to a
  :class:`HandlerRunner` for ``AudioVideoStreamHandler`` (audio-video send-receive):
  audio and video never wait for each other.
- :class:`VideoRunner` calls ``fn(frame, *inputs)`` for video send-receive / send on one
  worker thread, always on the newest frame: when ``fn`` is slower than the camera,
  stale frames are dropped (and counted), so latency stays bounded and order is kept.
- :class:`GeneratorRunner` runs a receive-mode generator ``fn(*inputs)`` once, pushing
  what it yields into the outbound track with back-pressure; ``StopIteration`` or a
  yielded ``None`` ends the stream after the queued media has been sent.

What user code yields, returns or raises besides media (:func:`Runner._dispatch`):
``AdditionalOutputs`` are queued for the browser; a ``Warning`` is shown and the stream
goes on (also when raised); a ``WebRTCError`` is shown as written and ends the stream;
``CloseStream`` ends the stream after what was produced before it has been sent.
Every worker runs with the connection's :class:`~webrtc_ref.context.Context` set
(:func:`~webrtc_ref.context.get_current_context`).

Every user exception goes to ``hooks.user_error`` (logged with its traceback, reported
to the browser, connection closed); ``stop`` ends the threads and calls the handler's
``shutdown`` exactly once.

The worker contract (docs/handlers.md): to end a worker blocked in user code, ``stop``
calls the handler's ``shutdown()``, which may run while ``emit`` is still blocked and must
unblock it; the runtime also puts ``None`` into every ``queue.Queue`` and
``queue.SimpleQueue`` attribute of the handler, so the guide's ``Queue.get()`` pattern
needs no shutdown code at all. A worker still in user code ``STOP_GRACE`` seconds later
is left behind: logged once with the handler's class and what to do, and counted in
:data:`STUCK_WORKERS`; it holds nothing of its connection's (slot, peer connection,
registry entry) and exits when the user call returns.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import queue
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, Literal, Protocol

import av
import numpy as np

from webrtc_ref.context import Context, bound
from webrtc_ref.drops import DropCounter
from webrtc_ref.errors import Warning, WebRTCError, warning_message
from webrtc_ref.frames import (
    AudioInputConverter,
    AudioOutputFramer,
    FrameContractError,
    array_to_video_frame,
    split_output,
    video_frame_to_array,
)
from webrtc_ref.handlers import StreamHandler, overrides_start_up
from webrtc_ref.outputs import AdditionalOutputs, CloseStream
from webrtc_ref.tracks import OutboundAudioTrack, OutboundVideoTrack

log = logging.getLogger("webrtc_ref.runner")

#: Rate and layout of audio handed to aiortc: Opus' own, so its resampler is a pass-through.
OUTPUT_RATE = 48_000
OUTPUT_LAYOUT: Literal["mono", "stereo"] = "stereo"
FRAME_PERIOD = 0.02
#: Samples of silence (at OUTPUT_RATE) closing a finished receive-mode audio stream.
END_PADDING = OUTPUT_RATE // 10
#: Input blocks waiting for a slow ``receive`` before the oldest are dropped (1 s).
INPUT_BACKLOG = 50
#: How long a receive-mode generator waits for its input values before failing.
INPUTS_TIMEOUT = 10.0
#: How long ``stop`` waits for workers to leave user code before ``shutdown()`` runs.
QUIESCE_S = 0.2
#: How long ``stop`` waits, after ``shutdown()``, for workers still in user code.
STOP_GRACE = 1.0


class StuckWorkers:
    """Worker threads that were still in user code after their connection stopped.

    Thread-safe. ``count`` is how many of them are still alive (they leave as soon as the
    user call they are in returns); ``total`` counts every one ever left behind.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self.total = 0

    def add(self, thread: threading.Thread) -> None:
        with self._lock:
            self._threads = [t for t in self._threads if t.is_alive()]
            self._threads.append(thread)
            self.total += 1

    @property
    def count(self) -> int:
        with self._lock:
            self._threads = [t for t in self._threads if t.is_alive()]
            return len(self._threads)


#: Every worker left behind in this process (see the module docstring).
STUCK_WORKERS = StuckWorkers()


class RuntimeHooks(Protocol):
    """What a connection offers its runner. Every method is thread-safe."""

    webrtc_id: str
    #: What logs and thread names call the connection (never the id itself).
    tag: str

    def request_inputs(self) -> None:
        """Ask the browser for the inputs' current values (data channel ``"tick"``)."""

    def send_message(self, message: str | dict[str, Any]) -> None:
        """Send a message to the browser (a dict as JSON)."""

    def clear_output(self) -> None:
        """Drop output audio emitted but not yet sent."""

    def additional_outputs(self, outputs: AdditionalOutputs) -> None:
        """Queue additional outputs and tell the browser (``"change"``)."""

    def close_stream(self, message: str) -> None:
        """The handler ended the stream (``CloseStream``): once the media already handed
        over has been sent, tell the browser and close the connection."""

    def user_error(self, where: str, exc: BaseException) -> None:
        """User code raised: log, report to the browser, close this connection."""


class _Detached:
    """The hooks of a runner whose connection is gone: everything is a no-op.

    A worker left in user code that returns late finds these instead of its connection,
    and the connection is not kept alive by its runner.
    """

    def __init__(self, webrtc_id: str, tag: str) -> None:
        self.webrtc_id = webrtc_id
        self.tag = tag

    def request_inputs(self) -> None:
        pass

    def send_message(self, message: str | dict[str, Any]) -> None:
        pass

    def clear_output(self) -> None:
        pass

    def additional_outputs(self, outputs: AdditionalOutputs) -> None:
        pass

    def close_stream(self, message: str) -> None:
        pass

    def user_error(self, where: str, exc: BaseException) -> None:
        log.info(
            "%s: error in user code after the connection closed (%s): %r", self.tag, where, exc
        )


class Runner(ABC):
    """The per-connection runtime of one stream function."""

    def __init__(self, hooks: RuntimeHooks) -> None:
        self.hooks = hooks
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._stopped = False
        self._stop_lock = threading.Lock()
        #: Workers of this runner left in user code after ``stop`` (see StuckWorkers).
        self.stuck: list[threading.Thread] = []
        #: What ``get_current_context()`` returns in this runner's workers.
        self.context = Context(hooks.webrtc_id, lambda: self.hooks)
        #: The message of the ``CloseStream`` user code produced, once it did.
        self.close_message: str | None = None

    @abstractmethod
    def start(self) -> None:
        """Start the worker threads."""

    def deliver(self, item: Any) -> None:
        """Hand over one input frame (called on the event loop; never blocks)."""

    @abstractmethod
    def set_inputs(self, args: list[Any]) -> None:
        """New values of the stream's other inputs (any thread)."""

    def _spawn(self, target: Callable[[], None], name: str) -> None:
        thread = threading.Thread(
            target=self._guard(target, name), name=f"{name}-{self.hooks.tag}", daemon=True
        )
        self._threads.append(thread)
        thread.start()

    def _guard(self, target: Callable[[], None], where: str) -> Callable[[], None]:
        def run() -> None:
            try:
                with bound(self.context):
                    target()
            except BaseException as exc:
                if not self._stopping.is_set():
                    self.hooks.user_error(where, exc)

        return run

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def request_stop(self) -> None:
        """Tell the workers to stop (any thread; never blocks): they leave at their next
        wait for work, and no new user call starts."""
        self._stopping.set()
        self._wake()

    def quiesce(self) -> None:
        """Request the stop and give the workers up to ``QUIESCE_S`` to leave user code
        (blocking; idempotent). Queues of the handler are unblocked first, so the guide's
        ``Queue.get()`` returns at once. Afterwards no worker posts anything more, unless
        it is stuck in user code."""
        self.request_stop()
        self._unblock()
        current = threading.current_thread()
        deadline = time.monotonic() + QUIESCE_S
        for thread in self._threads:
            if thread is not current:
                thread.join(max(0.0, deadline - time.monotonic()))

    def stop(self) -> None:
        """End the workers and release user resources; idempotent; blocks up to about
        ``QUIESCE_S + STOP_GRACE`` plus the time ``shutdown()`` takes.

        Order: :meth:`quiesce` (so ``shutdown()`` rarely runs beside ``receive``);
        ``shutdown()`` runs once; queues are unblocked again; workers get ``STOP_GRACE``
        more. Workers still alive are left behind (see the module docstring).
        """
        with self._stop_lock:
            if self._stopped:
                return
            self._stopped = True
        try:
            self.quiesce()
        except Exception:
            log.exception("%s: stopping the workers failed; shutting down anyway", self.hooks.tag)
            self.request_stop()
        current = threading.current_thread()
        others = [t for t in self._threads if t is not current]
        try:
            with bound(self.context):
                self._shutdown_user_code()
        finally:
            self._unblock()
            deadline = time.monotonic() + STOP_GRACE
            for thread in others:
                thread.join(max(0.0, deadline - time.monotonic()))
            for thread in others:
                if thread.is_alive():
                    self._left_behind(thread)

    def _left_behind(self, thread: threading.Thread) -> None:
        self.stuck.append(thread)
        STUCK_WORKERS.add(thread)
        log.warning(
            "%s: worker %s of %s is still in user code %.1f s after its connection "
            "stopped; it is left behind and exits when that call returns. Make the "
            "handler's shutdown() unblock whatever it waits on (see docs/handlers.md, "
            "'The worker contract').",
            self.hooks.tag,
            thread.name,
            self._user_class(),
            STOP_GRACE,
        )

    def _user_class(self) -> str:
        return type(self).__name__

    def detach(self) -> None:
        """Forget the connection (after ``stop``): late calls from workers left in user
        code go nowhere, and no reference cycle keeps the connection alive."""
        self.hooks = _Detached(self.hooks.webrtc_id, self.hooks.tag)
        self._release_outputs()

    def _release_outputs(self) -> None:
        """Drop the outbound track and what frames for it (after ``stop``)."""

    def _wake(self) -> None:
        """Wake worker threads waiting for work (they then see ``stopping``)."""

    def _shutdown_user_code(self) -> None:
        """Call the user's cleanup hook, once."""

    def _unblock(self) -> None:
        """Best effort to release a worker blocked in user code."""

    # -- what user code produces besides media ---------------------------------------
    def _dispatch(self, item: Any) -> Any:
        """Handle what goes beside media in one output of user code; return the media
        (or ``None``). Raises the ``WebRTCError`` it carries (the stream then ends)."""
        media, extra = split_output(item)
        if extra is None:
            return media
        if isinstance(extra, AdditionalOutputs):
            self.hooks.additional_outputs(extra)
        elif isinstance(extra, CloseStream):
            if self.close_message is None:
                self.close_message = extra.msg
        elif isinstance(extra, Warning):
            self._warn(extra)
        elif isinstance(extra, WebRTCError):
            raise extra
        return media

    def _warn(self, warning: Warning) -> None:
        """Show ``warning`` in the browser (once); the stream goes on."""
        message = warning_message(warning)
        if message is not None:
            self.hooks.send_message(message)

    def _end_stream(self) -> None:
        """After a ``CloseStream``: no more user calls; the connection closes once the
        media handed over has been sent."""
        self._stopping.set()
        self.hooks.close_stream(self.close_message or "")

    @property
    def alive_threads(self) -> int:
        return sum(t.is_alive() for t in self._threads)

    @property
    def dropped_inputs(self) -> int:
        """Input frames dropped because user code fell behind (see ``_InputBacklog``)."""
        return 0


def _is_async_callable(fn: Any) -> bool:
    """True for coroutine functions, also behind partials and callable objects."""
    while hasattr(fn, "func"):  # functools.partial
        fn = fn.func
    if inspect.iscoroutinefunction(fn) or inspect.isasyncgenfunction(fn):
        return True
    call = getattr(fn, "__call__", None)  # noqa: B004
    return call is not None and (
        inspect.iscoroutinefunction(call) or inspect.isasyncgenfunction(call)
    )


_WAKE = object()  # a backlog entry that only wakes the worker


class _InputBacklog:
    """Input frames waiting for a worker: bounded, drops the oldest when full.

    Built on ``queue.SimpleQueue``, whose blocking ``get`` waits in C: waking a worker 50
    times a second costs about a third of what a ``threading.Condition`` costs (measured
    on a 2-core VM: 0.17 % of a core against 0.6 %), and that is most of what an idle
    connection costs. Drops are counted in ``drops`` (thread-safe, logged rate-limited).
    """

    def __init__(self, capacity: int, drops: DropCounter) -> None:
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._capacity = capacity
        self.drops = drops

    @property
    def dropped(self) -> int:
        return self.drops.count

    def put(self, item: Any) -> None:
        self._queue.put(item)
        dropped = 0
        while self._queue.qsize() > self._capacity:
            try:
                if self._queue.get_nowait() is not _WAKE:
                    dropped += 1
            except queue.Empty:
                break
        self.drops.add(dropped)

    def take(self, stopping: threading.Event, newest_only: bool = False) -> Any | None:
        """Wait for an item (``None`` once ``stopping``); ``newest_only`` drops older ones."""
        while True:
            if stopping.is_set():
                return None
            try:
                item = self._queue.get(timeout=0.5)
            except queue.Empty:
                continue
            if item is _WAKE:
                continue
            if stopping.is_set():
                return None
            if newest_only:
                stale = 0
                while True:
                    try:
                        newer = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if newer is not _WAKE:
                        stale += 1
                        item = newer
                self.drops.add(stale)
            return item

    def wake(self) -> None:
        self._queue.put(_WAKE)


class _Doorbell:
    """A binary semaphore on a C lock: ``ring`` from any thread, ``wait`` for a ring (or
    a timeout). Rings while nobody waits collapse into one. Cheaper than ``threading.Event``,
    whose ``wait`` is a ``Condition`` in Python."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._lock.acquire()

    def ring(self) -> None:
        try:
            self._lock.release()
        except RuntimeError:  # already rung
            pass

    def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s for a ring; consume it. True if it rang."""
        return self._lock.acquire(timeout=timeout)


class _AudioSink:
    """Frames handler audio for the outbound track (or discards it in send mode).

    Producers (the emit or generator worker) call :meth:`push`, :meth:`idle` and
    :meth:`flush`. The last partial frame of a burst (under 20 ms, plus the resampler's
    delay) is held back until more audio comes or the burst is over; it is over when the
    producer says so (``idle``, ``flush``) or when the track runs dry while the producer
    is busy elsewhere (a blocking ``emit``, a generator waiting on a model): the track
    then calls :meth:`tail_due` on the event loop, which flushes the tail without waiting
    (the track's queue is empty, so there is room). A lock keeps the two sides in order.

    It knows its runner only by the runner's ``stopping`` event and log tag: no reference
    cycle ties the resampler (an FFmpeg filter graph with threads of its own) to the
    runner, so it is freed as soon as the runner is.
    """

    def __init__(
        self,
        stopping: threading.Event,
        tag: str,
        track: OutboundAudioTrack | None,
        rate: int = OUTPUT_RATE,
        layout: Literal["mono", "stereo"] = OUTPUT_LAYOUT,
    ) -> None:
        self._stopping = stopping
        self._tag = tag
        self._track = track
        self._rate, self._layout = rate, layout
        self._framer = AudioOutputFramer(sample_rate=rate, layout=layout)
        self._last_push = 0.0
        self._warned = False
        self._discard = threading.Event()
        self._lock = threading.Lock()
        self._busy = False  # a producer is between framing and handing frames over
        if track is not None:
            track.on_underrun = self.tail_due

    def discard(self) -> None:
        """Drop audio not yet handed to the track (any thread; barge-in)."""
        self._discard.set()

    def close(self) -> None:
        """Forget the track (the connection is gone); later pushes are dropped silently."""
        with self._lock:
            self._warned = True
            if self._track is not None:
                self._track.on_underrun = None
            self._track = None
            # a fresh framer holds no resampler: the old one's filter graph goes now
            self._framer = AudioOutputFramer(sample_rate=self._rate, layout=self._layout)

    def _take_discard(self) -> bool:
        """Reset the framer if a discard was asked for (call with the lock held)."""
        if not self._discard.is_set():
            return False
        self._discard.clear()
        self._framer = AudioOutputFramer(sample_rate=self._rate, layout=self._layout)
        return True

    def push(self, media: Any) -> None:
        if self._track is None:
            if not self._warned:
                self._warned = True
                log.warning(
                    "%s: audio emitted in mode 'send' is discarded (nothing is sent back)",
                    self._tag,
                )
            return
        with self._lock:
            self._take_discard()
            frames = self._framer.push(media)
            self._busy = True
        try:
            self._send(frames)
        finally:
            with self._lock:
                self._busy = False
                self._last_push = time.monotonic()

    def idle(self) -> None:
        """Nothing new from the handler: flush a held-back tail once a frame period passed."""
        with self._lock:
            self._take_discard()
            due = (
                self._track is not None
                and self._framer.pending_samples
                and time.monotonic() - self._last_push >= FRAME_PERIOD
            )
            frames = self._framer.flush() if due else []
            self._busy = bool(frames)
        if frames:
            try:
                self._send(frames)
            finally:
                with self._lock:
                    self._busy = False

    def flush(self) -> None:
        with self._lock:
            frames = self._framer.flush() if self._track is not None else []
            self._busy = bool(frames)
        if frames:
            try:
                self._send(frames)
            finally:
                with self._lock:
                    self._busy = False

    def tail_due(self) -> None:
        """The track ran dry (event loop; never blocks): flush a held-back tail if the
        producer is not handing frames over and its last push is a frame period old."""
        with self._lock:
            track = self._track
            if (
                track is None
                or self._busy
                or not self._framer.pending_samples
                or time.monotonic() - self._last_push < FRAME_PERIOD
            ):
                return
            if self._take_discard():
                return
            for frame in self._framer.flush():
                if not track.push(frame, timeout=0):
                    break

    def _send(self, frames: list[av.AudioFrame]) -> None:
        track = self._track
        if track is None:
            return
        for frame in frames:
            while not track.push(frame, timeout=0.25):
                if self._stopping.is_set() or track.readyState != "live":
                    return
            if self._discard.is_set():
                with self._lock:
                    self._take_discard()
                track.clear()
                return


class HandlerRunner(Runner):
    """Drives one ``StreamHandler`` copy (see the module docstring)."""

    def __init__(
        self,
        handler: StreamHandler,
        hooks: RuntimeHooks,
        audio_out: OutboundAudioTrack | None,
        *,
        output_rate: int = OUTPUT_RATE,
        output_layout: Literal["mono", "stereo"] = OUTPUT_LAYOUT,
    ) -> None:
        """``output_rate`` / ``output_layout``: the 20 ms frames pushed into ``audio_out``
        (48 kHz stereo for aiortc's Opus encoder; the WebSocket transport takes the
        handler's own rate, mono)."""
        super().__init__(hooks)
        self.handler = handler
        self._converter = AudioInputConverter(
            sample_rate=handler.input_sample_rate, layout=handler.expected_layout
        )
        self._backlog = _InputBacklog(
            INPUT_BACKLOG,
            DropCounter(
                log,
                f"input audio blocks (receive fell more than {INPUT_BACKLOG * 20} ms behind; "
                "the oldest go first)",
                hooks.tag,
            ),
        )
        self._sink = _AudioSink(self._stopping, hooks.tag, audio_out, output_rate, output_layout)
        self._wakeup = _Doorbell()
        self._async = _is_async_callable(handler.receive) or _is_async_callable(handler.emit)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._async_wakeup: asyncio.Event | None = None
        self._async_tasks: list[asyncio.Task[Any]] = []
        self.emit_calls = 0
        self.receive_calls = 0

    @property
    def dropped_inputs(self) -> int:
        return self._backlog.dropped

    def _user_class(self) -> str:
        return type(self.handler).__name__

    def start(self) -> None:
        if self._async:
            self._spawn(self._run_async, "handler")
        else:
            self._start_sync_workers()

    def _start_sync_workers(self) -> None:
        self._spawn(self._receive_loop, "receive")
        self._spawn(self._emit_loop, "emit")
        if overrides_start_up(self.handler):
            self._spawn(self._start_up, "start-up")

    def deliver(self, item: Any) -> None:
        self._backlog.put(item)

    def set_inputs(self, args: list[Any]) -> None:
        self.handler.set_args(list(args))

    def discard_output(self) -> None:
        """Drop output audio still being framed (the track's queue is cleared separately)."""
        self._sink.discard()

    def _release_outputs(self) -> None:
        self._sink.close()
        # the input converter's resampler (an FFmpeg filter graph with threads) goes now
        self._converter = AudioInputConverter(
            sample_rate=self.handler.input_sample_rate, layout=self.handler.expected_layout
        )

    # -- sync handlers -------------------------------------------------------------
    def _start_up(self) -> None:
        try:
            self.handler.start_up()
        except Warning as warning:
            self._warn(warning)

    def _receive_loop(self) -> None:
        while True:
            frame = self._backlog.take(self._stopping)
            if frame is None:
                return
            for block in self._converter.convert(frame):
                try:
                    self.handler.receive(block)
                except Warning as warning:
                    self._warn(warning)
                self.receive_calls += 1
            self._wakeup.ring()

    def _emit_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                item = self.handler.emit()
            except Warning as warning:
                self._warn(warning)
                item = None
            self.emit_calls += 1
            if self._stopping.is_set():
                return
            if item is None:
                self._sink.idle()
                self._wakeup.wait(FRAME_PERIOD)
                continue
            self._handle(item)
            if self.close_message is not None:
                self._sink.flush()
                self._end_stream()
                return

    def _handle(self, item: Any) -> None:
        media = self._dispatch(item)
        if media is not None:
            self._sink.push(media)

    # -- async handlers ------------------------------------------------------------
    def _run_async(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._amain())
        finally:
            loop.close()

    async def _amain(self) -> None:
        self._async_wakeup = asyncio.Event()
        tasks = [asyncio.ensure_future(work) for work in self._async_workers()]
        self._async_tasks = tasks
        if self._stopping.is_set():
            for task in tasks:
                task.cancel()
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                task.result()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def _async_workers(self) -> list[Any]:
        """The coroutines an async handler's private loop runs, as tasks."""
        works: list[Any] = [self._areceive(), self._aemit()]
        if overrides_start_up(self.handler):
            works.append(self._astart_up())
        return works

    async def _areceive(self) -> None:
        assert self._async_wakeup is not None
        while not self._stopping.is_set():
            frame = await asyncio.to_thread(self._backlog.take, self._stopping)
            if frame is None:
                return
            for block in self._converter.convert(frame):
                try:
                    result = self.handler.receive(block)
                    if inspect.isawaitable(result):
                        await result
                except Warning as warning:
                    self._warn(warning)
                self.receive_calls += 1
            self._async_wakeup.set()

    async def _astart_up(self) -> None:
        try:
            result = self.handler.start_up()
            if inspect.isawaitable(result):
                await result
        except Warning as warning:
            self._warn(warning)

    async def _aemit(self) -> None:
        assert self._async_wakeup is not None
        while not self._stopping.is_set():
            try:
                item = self.handler.emit()
                if inspect.isawaitable(item):
                    item = await item
            except Warning as warning:
                self._warn(warning)
                item = None
            self.emit_calls += 1
            if item is None:
                self._sink.idle()
                try:
                    await asyncio.wait_for(self._async_wakeup.wait(), FRAME_PERIOD)
                except asyncio.TimeoutError:
                    pass
                self._async_wakeup.clear()
                continue
            media = self._dispatch(item)
            if media is not None:
                await asyncio.to_thread(self._sink.push, media)
            if self.close_message is not None:
                await asyncio.to_thread(self._sink.flush)
                self._end_stream()
                return

    # -- lifecycle -----------------------------------------------------------------
    def _wake(self) -> None:
        self._backlog.wake()
        self._wakeup.ring()
        loop, event = self._loop, self._async_wakeup
        if loop is not None and event is not None and not loop.is_closed():

            def cancel() -> None:
                # an async handler awaiting something that never comes is cancelled
                event.set()
                for task in self._async_tasks:
                    task.cancel()

            try:
                loop.call_soon_threadsafe(cancel)
            except RuntimeError:
                pass

    def _shutdown_user_code(self) -> None:
        try:
            result: Any = self.handler.shutdown()  # type: ignore[func-returns-value]
            if inspect.isawaitable(result):
                asyncio.run(_as_coroutine(result))
        except Exception:
            log.exception("%s: StreamHandler.shutdown() raised", self.hooks.tag)
        finally:
            self.handler._detach()

    def _unblock(self) -> None:
        # The guide's EchoHandler blocks in ``Queue.get()``; a None wakes it, and the
        # emit loop then sees ``stopping`` and exits instead of leaking its thread.
        for value in vars(self.handler).values():
            if isinstance(value, queue.Queue | queue.SimpleQueue):
                try:
                    value.put_nowait(None)
                except queue.Full:
                    pass


#: Longest wait of an idle ``video_emit`` loop for the next ``video_receive`` (s).
VIDEO_IDLE_WAIT = 1 / 30


class AudioVideoRunner(HandlerRunner):
    """Drives an ``AudioVideoStreamHandler`` copy: the audio workers of
    :class:`HandlerRunner` plus two for video.

    Sync handlers get a ``video_receive`` thread (always the newest inbound frame: stale
    ones are dropped and counted, as for a video function) and a ``video_emit`` thread
    (it may block; an idle one sleeps until the next ``video_receive`` or
    :data:`VIDEO_IDLE_WAIT`). Audio and video never wait for each other, so a slow
    ``video_receive`` delays no audio. Async handlers get both as two more tasks of their
    private loop. Returned frames are stamped when they are handed to the outbound track,
    on the same clock as the audio, so content returned together plays together.
    """

    def __init__(
        self,
        handler: StreamHandler,
        hooks: RuntimeHooks,
        audio_out: OutboundAudioTrack | None,
        video_out: OutboundVideoTrack | None,
    ) -> None:
        super().__init__(handler, hooks, audio_out)
        # any coroutine method puts the whole handler on its private loop (sync methods
        # are called there too)
        self._async = self._async or any(
            _is_async_callable(getattr(handler, name, None))
            for name in ("video_receive", "video_emit")
        )
        self._video_out = video_out
        self._video_backlog = _InputBacklog(
            2,
            DropCounter(
                log,
                "stale video frames (video_receive is slower than the camera; newest wins)",
                hooks.tag,
                level=logging.DEBUG,
            ),
        )
        self._video_wakeup = _Doorbell()
        self._async_video_wakeup: asyncio.Event | None = None
        #: The newest inbound frame as given to ``video_receive`` (Context.video_frame).
        self.latest_video: np.ndarray | None = None
        self.context = Context(hooks.webrtc_id, lambda: self.hooks, lambda: self.latest_video)
        self.video_receive_calls = 0
        self.video_emit_calls = 0
        self.video_frames_out = 0

    @property
    def dropped_video_frames(self) -> int:
        """Inbound frames skipped because ``video_receive`` fell behind (newest wins)."""
        return self._video_backlog.dropped

    def deliver(self, item: Any) -> None:
        if isinstance(item, av.VideoFrame):
            self._video_backlog.put(item)
        else:
            self._backlog.put(item)

    def _start_sync_workers(self) -> None:
        super()._start_sync_workers()
        self._spawn(self._video_receive_loop, "video-receive")
        self._spawn(self._video_emit_loop, "video-emit")

    def _release_outputs(self) -> None:
        super()._release_outputs()
        self._video_out = None

    def _send_video(self, media: Any) -> None:
        out = self._video_out
        if out is not None:
            out.push(array_to_video_frame(media))  # stamped by the track when it leaves
            self.video_frames_out += 1

    def _take_video(self) -> np.ndarray | None:
        frame = self._video_backlog.take(self._stopping, newest_only=True)
        if frame is None:
            return None
        array = video_frame_to_array(frame)
        self.latest_video = array
        return array

    # -- sync handlers -------------------------------------------------------------
    def _video_receive_loop(self) -> None:
        while True:
            array = self._take_video()
            if array is None:
                return
            try:
                self.handler.video_receive(array)  # type: ignore[attr-defined]
            except Warning as warning:
                self._warn(warning)
            self.video_receive_calls += 1
            self._video_wakeup.ring()

    def _video_emit_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                item = self.handler.video_emit()  # type: ignore[attr-defined]
            except Warning as warning:
                self._warn(warning)
                item = None
            self.video_emit_calls += 1
            if self._stopping.is_set():
                return
            if item is None:
                self._video_wakeup.wait(VIDEO_IDLE_WAIT)
                continue
            media = self._dispatch(item)
            if media is not None:
                self._send_video(media)
            if self.close_message is not None:
                self._end_stream()  # the audio queued so far still plays out
                return

    # -- async handlers ------------------------------------------------------------
    def _async_workers(self) -> list[Any]:
        self._async_video_wakeup = asyncio.Event()
        return [*super()._async_workers(), self._avideo_receive(), self._avideo_emit()]

    async def _avideo_receive(self) -> None:
        event = self._async_video_wakeup
        assert event is not None
        while not self._stopping.is_set():
            array = await asyncio.to_thread(self._take_video)
            if array is None:
                return
            try:
                result = self.handler.video_receive(array)  # type: ignore[attr-defined]
                if inspect.isawaitable(result):
                    await result
            except Warning as warning:
                self._warn(warning)
            self.video_receive_calls += 1
            event.set()

    async def _avideo_emit(self) -> None:
        event = self._async_video_wakeup
        assert event is not None
        while not self._stopping.is_set():
            try:
                item = self.handler.video_emit()  # type: ignore[attr-defined]
                if inspect.isawaitable(item):
                    item = await item
            except Warning as warning:
                self._warn(warning)
                item = None
            self.video_emit_calls += 1
            if item is None:
                try:
                    await asyncio.wait_for(event.wait(), VIDEO_IDLE_WAIT)
                except asyncio.TimeoutError:
                    pass
                event.clear()
                continue
            media = self._dispatch(item)
            if media is not None:
                self._send_video(media)  # never blocks: the track drops the oldest
            if self.close_message is not None:
                self._end_stream()
                return

    # -- lifecycle -----------------------------------------------------------------
    def _wake(self) -> None:
        self._video_backlog.wake()
        self._video_wakeup.ring()
        super()._wake()


async def _as_coroutine(awaitable: Any) -> Any:
    return await awaitable


class _PrivateLoop:
    """An event loop owned by one worker thread, for ``async def`` user functions."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None

    def run(self, awaitable: Any) -> Any:
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
        return self._loop.run_until_complete(_as_coroutine(awaitable))

    def close(self) -> None:
        if self._loop is not None:
            self._loop.close()
            self._loop = None


class VideoRunner(Runner):
    """Calls ``fn(frame_rgb, *inputs)`` on the newest input frame (see module docstring).

    Until the inputs' values first arrive (when the stream has other inputs), frames are
    sent back unchanged, as gradio_webrtc does.
    """

    def __init__(
        self,
        fn: Callable[..., Any],
        hooks: RuntimeHooks,
        video_out: OutboundVideoTrack | None,
        *,
        has_inputs: bool,
        skip_frames: bool = True,
        fps: float = 30.0,
    ) -> None:
        super().__init__(hooks)
        self.fn = fn
        self._out = video_out
        self._skip_frames = skip_frames
        self._backlog = _InputBacklog(
            2 if skip_frames else max(2, round(fps)),
            DropCounter(
                log,
                "stale video frames (the function is slower than the camera; newest wins)"
                if skip_frames
                else "video frames (the function fell more than a second behind the camera)",
                hooks.tag,
                level=logging.DEBUG,
            ),
        )
        self._inputs: list[Any] | None = None if has_inputs else []
        self.calls = 0

    @property
    def dropped(self) -> int:
        return self._backlog.dropped

    @property
    def dropped_inputs(self) -> int:
        return self._backlog.dropped

    def _user_class(self) -> str:
        return getattr(self.fn, "__qualname__", type(self.fn).__name__)

    def start(self) -> None:
        self._spawn(self._loop, "video")

    def deliver(self, item: Any) -> None:
        self._backlog.put(item)

    def set_inputs(self, args: list[Any]) -> None:
        self._inputs = list(args)

    def _wake(self) -> None:
        self._backlog.wake()

    def _release_outputs(self) -> None:
        self._out = None

    def _loop(self) -> None:
        private = _PrivateLoop()
        try:
            while True:
                frame = self._backlog.take(self._stopping, newest_only=self._skip_frames)
                if frame is None:
                    return
                inputs = self._inputs
                if inputs is None:
                    if self._out is not None:
                        self._out.push(frame)
                    continue
                try:
                    result = self.fn(video_frame_to_array(frame), *inputs)
                    if inspect.isawaitable(result):
                        result = private.run(result)
                except Warning as warning:
                    self._warn(warning)
                    continue
                self.calls += 1
                media = self._dispatch(result)
                if media is not None and self._out is not None:
                    out = array_to_video_frame(media)
                    out.pts = frame.pts
                    out.time_base = frame.time_base
                    self._out.push(out)
                if self.close_message is not None:
                    self._end_stream()
                    return
        finally:
            private.close()


class GeneratorRunner(Runner):
    """Runs a receive-mode generator once and streams what it yields."""

    def __init__(
        self,
        fn: Callable[..., Any],
        hooks: RuntimeHooks,
        out: OutboundAudioTrack | OutboundVideoTrack,
        *,
        has_inputs: bool,
        inputs_timeout: float = INPUTS_TIMEOUT,
    ) -> None:
        super().__init__(hooks)
        self.fn = fn
        self._out = out
        self._has_inputs = has_inputs
        self._inputs_timeout = inputs_timeout
        self._inputs: list[Any] = []
        self._inputs_ready = threading.Event()
        if not has_inputs:
            self._inputs_ready.set()
        self._audio = (
            _AudioSink(self._stopping, hooks.tag, out)
            if isinstance(out, OutboundAudioTrack)
            else None
        )
        self.items = 0

    def _user_class(self) -> str:
        return getattr(self.fn, "__qualname__", type(self.fn).__name__)

    def start(self) -> None:
        self._spawn(self._run, "generator")

    def set_inputs(self, args: list[Any]) -> None:
        if not self._inputs_ready.is_set():
            self._inputs = list(args)
            self._inputs_ready.set()

    def _wake(self) -> None:
        self._inputs_ready.set()
        self._out.finish()

    def _release_outputs(self) -> None:
        if self._audio is not None:
            self._audio.close()

    def _run(self) -> None:
        if not self._inputs_ready.wait(self._inputs_timeout):
            raise TimeoutError(
                f"the stream's input values did not arrive within {self._inputs_timeout:g} s "
                "(the browser never answered the 'tick' request)"
            )
        if self._stopping.is_set():
            return
        produced = self.fn(*self._inputs)
        private = _PrivateLoop()
        try:
            try:
                self._drain(produced, private)
            except Warning as warning:  # raised by the generator: it has ended
                self._warn(warning)
            if self._audio is not None and not self._stopping.is_set():
                self._audio.flush()
                # Trailing silence lets receivers that hold packets back (aiortc's
                # jitter buffer keeps 4) play the last sound before the stream ends.
                self._audio.push((OUTPUT_RATE, np.zeros((1, END_PADDING), np.int16)))
                self._audio.flush()
            if self.close_message is not None:
                self._end_stream()
        finally:
            private.close()
            self._out.finish()

    def _drain(self, produced: Any, private: _PrivateLoop) -> None:
        """Send what the generator yields until it ends, yields None or CloseStream, or
        the stream stops."""
        if inspect.isasyncgen(produced):
            while not self._stopping.is_set():
                try:
                    item = private.run(produced.__anext__())
                except StopAsyncIteration:
                    break
                if not self._emit(item):
                    break
            private.run(produced.aclose())
        elif inspect.isgenerator(produced) or hasattr(produced, "__next__"):
            try:
                for item in produced:
                    if self._stopping.is_set() or not self._emit(item):
                        break
            finally:
                close = getattr(produced, "close", None)
                if close is not None:
                    close()
        else:
            raise FrameContractError(
                "a receive-mode stream function must be a generator (use 'yield'); "
                f"got a call returning {type(produced).__name__}"
            )

    def _emit(self, item: Any) -> bool:
        """Send one yielded item; False when the stream should end (a yielded None)."""
        if item is None:
            return False
        self.items += 1
        media = self._dispatch(item)
        if media is None:
            return self.close_message is None
        if self._audio is not None:
            self._audio.push(media)
        else:
            out = self._out
            assert isinstance(out, OutboundVideoTrack)
            frame = array_to_video_frame(media)
            while not out.push(frame, timeout=0.25):
                if self._stopping.is_set():
                    return False
        return self.close_message is None
