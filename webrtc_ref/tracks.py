"""aiortc media tracks that carry handler output to the browser. No user code runs here.

Worker threads push frames in (``push`` is thread-safe and applies back-pressure);
aiortc's sender pulls them out with ``recv`` on the event loop, paced in real time.

- :class:`OutboundAudioTrack`: 20 ms ``av.AudioFrame`` s16 frames. A frame is due one
  frame period after the previous one and may leave up to ``max_lead_s`` early. When the
  queue ran dry and audio arrives late, the clock re-anchors (the new burst starts at
  once, its timestamps jump by the gap), so a reply is never delayed to "catch up". With
  nothing queued, nothing is sent.
- :class:`OutboundVideoTrack`: ``av.VideoFrame`` frames. ``paced=False`` (send-receive)
  forwards each processed frame as soon as it is ready, keeping its capture timestamp
  (a frame without one, from an audio-video handler's ``video_emit``, is stamped when
  pushed);
  ``paced=True`` (receive mode) releases frames at ``fps`` with a 90 kHz clock.
"""

from __future__ import annotations

import asyncio
import collections
import fractions
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import av
import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

log = logging.getLogger("webrtc_ref.tracks")

VIDEO_CLOCK_RATE = 90_000
#: Silent frames sent after the last queued audio frame (100 ms).
TAIL_SILENCE_FRAMES = 5
#: How late the next frame may be before the tail silence starts (an underrun, not an end).
UNDERRUN_GRACE_S = 0.020


class _FrameQueue:
    """A bounded, thread-safe FIFO that wakes an asyncio consumer.

    Producers (worker threads) block in ``put`` while it holds ``capacity`` items, unless
    ``drop_oldest`` is set. The consumer awaits ``get`` on ``loop``. ``close`` wakes both.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, capacity: int, drop_oldest: bool):
        self._loop = loop
        self._items: collections.deque[object] = collections.deque()
        self._capacity = capacity
        self._drop_oldest = drop_oldest
        self._cond = threading.Condition()
        self._ready = asyncio.Event()
        self._closed = False
        self.dropped = 0

    def put(self, item: object, timeout: float | None = None) -> bool:
        """Add ``item``; False if closed (or, blocking, still full after ``timeout``)."""
        with self._cond:
            if self._drop_oldest:
                while len(self._items) >= self._capacity:
                    self._items.popleft()
                    self.dropped += 1
            elif not self._cond.wait_for(
                lambda: self._closed or len(self._items) < self._capacity, timeout
            ):
                return False
            if self._closed:
                return False
            self._items.append(item)
        self._notify()
        return True

    def _notify(self) -> None:
        try:
            self._loop.call_soon_threadsafe(self._ready.set)
        except RuntimeError:  # loop closed: nobody is waiting any more
            pass

    def pop_nowait(self) -> object | None:
        with self._cond:
            if not self._items:
                return None
            item = self._items.popleft()
            self._cond.notify_all()
            return item

    async def get(self) -> object | None:
        """Next item, or ``None`` once closed and empty."""
        while True:
            item = self.pop_nowait()
            if item is not None:
                return item
            if self._closed:
                return None
            self._ready.clear()
            item = self.pop_nowait()
            if item is not None:
                return item
            if self._closed:
                return None
            await self._ready.wait()

    def clear(self) -> int:
        """Drop everything queued; return how many items were dropped."""
        with self._cond:
            count = len(self._items)
            self._items.clear()
            self._cond.notify_all()
            return count

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._notify()

    @property
    def closed(self) -> bool:
        return self._closed

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)


class OutboundAudioTrack(MediaStreamTrack):
    """Audio from the handler to the browser: 20 ms frames paced in real time.

    Frames may leave up to ``max_lead_s`` ahead of the real-time schedule, so a backlog
    (an echo after a hiccup, the start of a reply) drains at once instead of adding its
    length to the latency for the rest of the session; beyond that lead, frames leave in
    real time. ``max_buffer_s`` bounds what may wait in the queue; ``push`` blocks the
    producing worker beyond it (a fast text-to-speech generator waits instead of growing
    memory). ``finish()`` ends the track once everything queued has been sent.
    """

    kind = "audio"

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        max_buffer_s: float = 2.0,
        max_lead_s: float = 0.2,
    ) -> None:
        super().__init__()
        self._queue = _FrameQueue(loop, capacity=max(1, int(max_buffer_s * 50)), drop_oldest=False)
        self.max_lead = max_lead_s
        self._silence_left = 0
        self._last: av.AudioFrame | None = None
        self._filler: av.AudioFrame | None = None
        self._due: float | None = None
        self._pts = 0
        self._rate: int | None = None
        self.frames_sent = 0
        #: Called on the event loop when the sender wants a frame and none is queued
        #: (the producer may then hand over a held-back tail; must not block).
        self.on_underrun: Callable[[], None] | None = None

    def push(self, frame: av.AudioFrame, timeout: float | None = None) -> bool:
        """Queue one frame (thread-safe; blocks while the buffer is full; ``timeout=0``
        never blocks)."""
        return self._queue.put(frame, timeout)

    def clear(self) -> int:
        """Drop queued, unsent audio (barge-in); returns the number of frames dropped."""
        return self._queue.clear()

    def finish(self) -> None:
        """End the track after the queued audio has been sent."""
        self._queue.close()

    @property
    def queued(self) -> int:
        return len(self._queue)

    def stop(self) -> None:
        self._queue.close()
        self._queue.clear()
        super().stop()

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        frame: Any = self._queue.pop_nowait()
        if frame is None and self.on_underrun is not None:
            try:
                self.on_underrun()
            except Exception:
                log.exception("flushing the tail of the audio output failed")
            frame = self._queue.pop_nowait()
        queued = frame is not None
        if frame is None:
            frame = await self._next_or_silence()
        if frame is None or not isinstance(frame, av.AudioFrame):
            self.stop()
            raise MediaStreamError
        if frame is not self._filler:
            self._last = frame
            self._silence_left = TAIL_SILENCE_FRAMES
        rate = frame.sample_rate
        if self._rate != rate:  # a new rate restarts the timestamp clock in its units
            if self._rate is not None:
                self._pts = int(self._pts * rate / self._rate)
            self._rate = rate
        now = time.monotonic()
        # (the tail's first filler is one grace period late by design: not a gap)
        dry = not queued and frame is not self._filler
        if self._due is None or (dry and now > self._due + frame.samples / rate):
            # Starting, or the queue ran dry: start this burst now; timestamps jump by
            # the gap so the receiver's jitter buffer sees timing that matches arrival.
            # (A frame that was already waiting is merely late: it keeps continuous
            # timestamps and leaves at once.)
            if self._due is not None:
                self._pts += int((now - self._due) * rate)
            self._due = now
        elif self._due - now > self.max_lead:
            await asyncio.sleep(self._due - now - self.max_lead)
        frame.pts = self._pts
        frame.time_base = fractions.Fraction(1, rate)
        self._pts += frame.samples
        self._due += frame.samples / rate
        self.frames_sent += 1
        return frame

    async def _next_or_silence(self) -> object | None:
        """Wait for the next frame; right after audio ran out, fill the first
        ``TAIL_SILENCE_FRAMES`` frame periods with silence (the receiver then fades out
        cleanly instead of stretching the last sound)."""
        if self._silence_left <= 0 or self._due is None or self._last is None:
            return await self._queue.get()
        # The first filler waits one more frame period: a frame that is merely late (a
        # worker hiccup in an echo) leaves with continuous timestamps and the receiver's
        # jitter buffer absorbs it; filling at once would put 20 ms of silence into the
        # middle of the stream.
        grace = UNDERRUN_GRACE_S if self._silence_left == TAIL_SILENCE_FRAMES else 0.0
        try:
            timeout = max(0.0, self._due + grace - time.monotonic())
            return await asyncio.wait_for(self._queue.get(), timeout)
        except asyncio.TimeoutError:
            self._silence_left -= 1
            self._filler = _silence_like(self._last)
            return self._filler


def _silence_like(frame: av.AudioFrame) -> av.AudioFrame:
    channels = len(frame.layout.channels)
    silence = av.AudioFrame.from_ndarray(
        np.zeros((1, frame.samples * channels), np.int16), format="s16", layout=frame.layout.name
    )
    silence.sample_rate = frame.sample_rate
    return silence


class OutboundVideoTrack(MediaStreamTrack):
    """Video from the handler to the browser.

    ``paced=False``: frames keep the timestamps the producer set (the input frame's) and
    leave as soon as they are ready; if the encoder falls behind, the oldest waiting frame
    is dropped (newest wins). ``paced=True``: frames leave at ``fps`` with fresh
    timestamps, and ``push`` blocks the producer while ``capacity`` frames wait.
    """

    kind = "video"

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        *,
        paced: bool,
        fps: float = 30.0,
        capacity: int = 2,
    ) -> None:
        super().__init__()
        self._paced = paced
        self._period = 1.0 / fps
        self._queue = _FrameQueue(loop, capacity=capacity, drop_oldest=not paced)
        self._start: float | None = None
        self._due = 0.0
        self._stamp_lock = threading.Lock()
        self._epoch: float | None = None
        self._last_pts = -1
        self.frames_sent = 0

    def push(self, frame: av.VideoFrame, timeout: float | None = None) -> bool:
        """Queue ``frame`` (any thread). A frame without ``pts`` is stamped now, on a 90 kHz
        clock of this track (increasing), so frames leave spaced as they were produced."""
        if frame.pts is None and not self._paced:
            with self._stamp_lock:
                now = time.monotonic()
                if self._epoch is None:
                    self._epoch = now
                pts = max(int((now - self._epoch) * VIDEO_CLOCK_RATE), self._last_pts + 1)
                self._last_pts = pts
            frame.pts = pts
            frame.time_base = fractions.Fraction(1, VIDEO_CLOCK_RATE)
        return self._queue.put(frame, timeout)

    def finish(self) -> None:
        self._queue.close()

    @property
    def dropped(self) -> int:
        return self._queue.dropped

    def stop(self) -> None:
        self._queue.close()
        self._queue.clear()
        super().stop()

    async def recv(self) -> av.VideoFrame:
        if self.readyState != "live":
            raise MediaStreamError
        frame: Any = await self._queue.get()
        if frame is None or not isinstance(frame, av.VideoFrame):
            self.stop()
            raise MediaStreamError
        if self._paced:
            now = time.monotonic()
            if self._start is None:
                self._start = self._due = now
            elif now < self._due:
                await asyncio.sleep(self._due - now)
            elif now > self._due + self._period:  # producer was slow: do not burst
                self._due = now
            frame.pts = int((self._due - self._start) * VIDEO_CLOCK_RATE)
            frame.time_base = fractions.Fraction(1, VIDEO_CLOCK_RATE)
            self._due += self._period
        self.frames_sent += 1
        return frame
