"""An adaptive jitter buffer for inbound audio, and the hook that puts it into aiortc.

aiortc's ``RTCRtpReceiver`` gives every audio packet to ``JitterBuffer(capacity=16,
prefetch=4)``, which hands a frame to the decoder only once four later packets are
buffered: about 80 ms for every packet, whatever the network. After a lost packet it
waits until 16 packets are buffered (320 ms) and then skips the missing audio.
:class:`AdaptiveJitterBuffer` replaces it for audio; :func:`install` puts it into a
receiver.

For video, aiortc's buffer hands a frame on only when the first packet of the *next*
frame arrives: one frame period (33 ms at 30 fps) for every frame.
:class:`EagerVideoJitterBuffer` (put in by :func:`install_video`, always, when aiortc is a
tested version) also hands a frame on as soon as its last packet (the RTP marker bit)
has arrived and every packet of it before that is there, and is aiortc's otherwise.

**What comes out.** Frames leave in sequence-number order, which for audio (one packet
per frame) is timestamp order. Every sequence number leaves at most once, as its packet
or as a concealment frame; the timestamps handed on strictly increase, across restarts
too. Sequence numbers (16 bits) and timestamps (32 bits) are unwrapped internally, so
wrap-around changes nothing.

**When**, ``release="early"`` (the default, for handlers, which do not play audio out in
real time). A frame leaves as soon as it and every frame before it are done: on a clean
link a packet goes to the decoder the moment it arrives. A *missing* frame is waited for

* while later packets wait behind it (a gap: loss or reordering) until the reorder wait
  has passed since the gap was seen, or until its playout time (below), whichever comes
  first. The reorder wait is the ``quantile`` of how long reordered packets came after the
  packet that revealed their gap, over the last ``REORDER_MEMORY_S`` seconds, plus
  ``margin`` (``margin`` alone while no reordering was seen), within
  ``[min_delay, max_delay]``;
* while nothing waits (a stall: the network or the sender paused) until it is
  ``max_delay`` later than the fastest packets arrive.

**When**, ``release="paced"``. Every frame leaves at its playout time, received or not.

**Playout time** of the frame with (unwrapped) RTP timestamp ``ts``: ``ts / clock_rate +
min_transit + target``. Each packet's ``transit`` is ``arrival - ts / clock_rate``;
``min_transit`` is the least transit of the last ``window`` packets (the fastest path);
``target`` is the ``quantile`` of those transits minus ``min_transit``, plus ``margin``,
within ``[min_delay, max_delay]``. A rise of the target takes effect at once, a fall by at
most ``decay`` seconds per second. Late packets are measured too, so lateness raises it.

**Missing frames.** A frame whose time has come without its packet is concealed: the
``concealment`` callable gives a payload the decoder turns into a stand-in frame (for
Opus, :func:`opus_concealment`: the previous packet's TOC byte alone, which libopus
decodes with its packet-loss concealment). At most ``max_conceal`` frames in a row are
concealed: the rest of a longer gap is skipped (the stream goes on with the next packet);
after a longer stall the buffer waits. A packet whose frame was concealed while later
packets were waiting, or was skipped, is dropped and counted as late. A packet whose frame
was concealed during a stall resumes the stream instead (nothing later had come, so the
concealment only filled the pause): the stream goes on from it. A packet seen before is a
duplicate.

**Restarts.** A new SSRC or payload type, a sequence jump of ``SEQ_JUMP`` or more, an
in-order packet whose timestamp is not after the previous frame's, or
``RESYNC_AFTER_LATE`` late packets in a row restart the buffer at that packet (what is
buffered leaves first, at once). An in-order packet more than ``max_delay`` off the timing
model (a sender that paused without advancing its timestamps, a timestamp jump) restarts
the timing model only. Both count as ``resyncs``.

**Threads.** :meth:`AdaptiveJitterBuffer.add`, the timer and
:meth:`~AdaptiveJitterBuffer.close` run on the event loop given to the buffer (the
receiver's: aiortc calls ``add`` from ``RTCRtpReceiver._handle_rtp_packet``); the sink is
called there, synchronously, and must not block. :meth:`~AdaptiveJitterBuffer.stats` may be
called from any thread.
"""

from __future__ import annotations

import asyncio
import bisect
import collections
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from aiortc.jitterbuffer import JitterBuffer, JitterFrame

log = logging.getLogger("webrtc_ref.jitter")

#: The ``jitter_buffer`` option: webrtc_ref's buffer or aiortc's own.
JitterBufferChoice = Literal["adaptive", "aiortc"]
JITTER_BUFFERS: tuple[str, ...] = ("adaptive", "aiortc")

#: aiortc versions whose ``RTCRtpReceiver`` internals :func:`install` was tested with.
TESTED_AIORTC_VERSIONS: tuple[str, ...] = ("1.16.0",)

#: A sequence jump (either way) from which the stream counts as restarted.
SEQ_JUMP = 256
#: Late packets (distinct sequence numbers) in a row after which the stream counts as
#: restarted.
RESYNC_AFTER_LATE = 50
#: Seconds for which an observed reordering delay counts towards the reorder wait.
REORDER_MEMORY_S = 20.0
#: Reordering delays kept (the most recent).
REORDER_SAMPLES = 64
#: Released sequence numbers remembered to tell duplicates from late packets.
DUPLICATE_MEMORY = 512
#: Longest audio packet a timestamp step is believed for (Opus: 120 ms).
MAX_PACKET_S = 0.120

_MASK16 = 0xFFFF
_MASK32 = 0xFFFFFFFF
_PRIVATE = "_RTCRtpReceiver__"


class _Handle(Protocol):
    def cancel(self) -> None: ...


class Scheduler(Protocol):
    """What the buffer needs of an event loop: ``time()`` and ``call_at()``.

    An ``asyncio`` event loop is one; tests pass a manual clock.
    """

    def time(self) -> float: ...

    def call_at(self, when: float, callback: Callable[[], object], /) -> _Handle: ...


#: ``sink(frame, payload_type)``: a frame leaves the buffer (on the loop).
Sink = Callable[[JitterFrame, int], None]
#: ``concealment(payload_type, previous_payload)``: the payload standing in for a missing
#: frame, or ``None`` when it cannot be concealed (the frame is then skipped).
Concealment = Callable[[int, bytes], "bytes | None"]


def opus_concealment(payload_type: int, previous: bytes) -> bytes | None:
    """A one-byte Opus packet: ``previous``'s TOC byte with frame-count code 0.

    libopus decodes a packet whose only frame is empty with its packet-loss concealment,
    for the TOC's frame duration (the previous packet's, 20 ms from browsers). An empty
    packet cannot stand in: FFmpeg takes it for the end of the stream.
    """
    if not previous:
        return None
    return bytes([previous[0] & 0xFC])


def repeat_concealment(payload_type: int, previous: bytes) -> bytes | None:
    """The previous payload again (for codecs without a concealment of their own)."""
    return previous or None


@dataclass(frozen=True)
class JitterStats:
    """Counters of one :class:`AdaptiveJitterBuffer` (one inbound audio stream).

    Attributes:
        received: packets given to the buffer.
        released: frames that left with their own packet.
        concealed: frames that left as concealment (lost, late or unusable packets, and
            stalls).
        late: packets dropped because their frame had already been concealed (while
            later packets waited) or skipped.
        duplicates: packets dropped because their sequence number was seen before.
        discarded: unusable packets dropped (empty payload, timestamp not after the
            previous frame's).
        skipped: missing frames neither received nor concealed (the part of a gap beyond
            ``max_conceal`` frames, frames that could not be concealed).
        resyncs: restarts of the stream or of its timing model (see the module docstring).
        buffered: packets waiting in the buffer now.
        target_delay_ms: the current target delay (the playout delay of paced release).
        reorder_wait_ms: how long a gap is waited for (early release).
    """

    received: int = 0
    released: int = 0
    concealed: int = 0
    late: int = 0
    duplicates: int = 0
    discarded: int = 0
    skipped: int = 0
    resyncs: int = 0
    buffered: int = 0
    target_delay_ms: float = 0.0
    reorder_wait_ms: float = 0.0


class _Window:
    """The last ``size`` values (with ``memory``: only those younger than it) with order
    statistics."""

    def __init__(self, size: int, memory: float | None = None) -> None:
        self._items: collections.deque[tuple[float, float]] = collections.deque()
        self._sorted: list[float] = []
        self._size = size
        self._memory = memory

    def add(self, now: float, value: float) -> None:
        self._items.append((now, value))
        bisect.insort(self._sorted, value)
        if len(self._items) > self._size:
            self._drop()
        self.expire(now)

    def expire(self, now: float) -> None:
        if self._memory is not None:
            while self._items and now - self._items[0][0] > self._memory:
                self._drop()

    def _drop(self) -> None:
        _, value = self._items.popleft()
        del self._sorted[bisect.bisect_left(self._sorted, value)]

    def clear(self) -> None:
        self._items.clear()
        self._sorted.clear()

    def __len__(self) -> int:
        return len(self._sorted)

    def min(self) -> float:
        return self._sorted[0]

    def quantile(self, q: float) -> float:
        """The smallest value with at least a fraction ``q`` of the values at or below it."""
        n = len(self._sorted)
        return self._sorted[min(n - 1, max(0, math.ceil(q * n) - 1))]


@dataclass
class _Entry:
    ts: int  # unwrapped RTP timestamp
    payload_type: int
    data: bytes


def _clamp(value: float, lo: float, hi: float) -> float:
    return min(hi, max(lo, value))


class AdaptiveJitterBuffer:
    """An adaptive jitter buffer for one inbound audio stream (see the module docstring).

    Parameters:
        sink: called with each frame that leaves and its payload type. The frame's
            timestamp is a 32-bit RTP timestamp, strictly increasing (mod 2**32).
        loop: the event loop (or any :class:`Scheduler`) whose ``time()`` and
            ``call_at()`` drive the buffer; ``add`` must be called on it.
        clock_rate: the RTP clock rate, or a callable giving it for a payload type
            (``None``: unknown, 48000 is assumed); asked again at each restart.
        release: ``"early"`` (default) or ``"paced"``.
        min_delay, max_delay: bounds of the target delay and of the reorder wait, in
            seconds; ``max_delay`` is also how long a stall is waited out (early release).
        quantile: the quantile of transits (and of reordering delays) waited for.
        window: how many recent packets the target delay is measured on.
        margin: seconds added to the measured quantiles.
        decay: seconds per second by which the target delay may fall.
        max_conceal: most frames concealed in a row.
        concealment: the payload for a missing frame (default :func:`opus_concealment`).

    :meth:`add` has the signature of aiortc's ``JitterBuffer.add`` and always returns
    ``(False, None)``: frames leave through ``sink`` instead.
    """

    def __init__(
        self,
        sink: Sink,
        *,
        loop: Scheduler,
        clock_rate: int | Callable[[int], int | None] = 48000,
        release: Literal["early", "paced"] = "early",
        min_delay: float = 0.0,
        max_delay: float = 0.200,
        quantile: float = 0.99,
        window: int = 250,
        margin: float = 0.003,
        decay: float = 0.010,
        max_conceal: int = 10,
        concealment: Concealment = opus_concealment,
    ) -> None:
        if release not in ("early", "paced"):
            raise ValueError(f"release must be 'early' or 'paced'; got {release!r}")
        if not 0 <= min_delay <= max_delay:
            raise ValueError(
                "need 0 <= min_delay <= max_delay (seconds); got "
                f"min_delay={min_delay!r}, max_delay={max_delay!r}"
            )
        if not 0 < quantile <= 1:
            raise ValueError(f"quantile must be in (0, 1]; got {quantile!r}")
        if window < 1 or max_conceal < 0 or margin < 0 or decay < 0:
            raise ValueError(
                "window must be >= 1 and max_conceal, margin, decay >= 0; got "
                f"window={window!r}, max_conceal={max_conceal!r}, margin={margin!r}, "
                f"decay={decay!r}"
            )
        self._sink: Sink | None = sink
        self._loop = loop
        self._clock_rate = clock_rate
        self.release = release
        self.min_delay = float(min_delay)
        self.max_delay = float(max_delay)
        self.quantile = float(quantile)
        self.margin = float(margin)
        self.decay = float(decay)
        self.max_conceal = int(max_conceal)
        self._concealment: Concealment | None = concealment
        self._transits = _Window(window)
        self._reorders = _Window(REORDER_SAMPLES, REORDER_MEMORY_S)
        self._timer: _Handle | None = None
        self._timer_at: float | None = None
        self._closed = False
        # kept across restarts
        self._last_out: int | None = None  # unwrapped output timestamp of the last frame
        self._offset = 0  # output timestamp = input timestamp + offset
        self._align = False  # the next frame out re-aligns the offset
        self._last_data = b""  # payload of the last packet out (for concealment)
        self._last_pt = 0
        self._received = self._released = self._concealed = self._late = 0
        self._duplicates = self._discarded = self._skipped = self._resyncs = 0
        self._reset_stream()

    def _reset_stream(self) -> None:
        self._ssrc: int | None = None
        self._payload_type: int | None = None
        self._rate = 48000.0
        self._ticks = 960  # timestamp units per packet (estimated)
        self._hi_seq: int | None = None  # highest unwrapped sequence number seen
        self._hi_ts = 0  # unwrapped timestamp of that packet
        self._next = 0  # sequence number of the next frame to leave
        self._pending: dict[int, _Entry] = {}
        self._gap_seen: dict[int, float] = {}  # missing seq -> when a later packet came
        self._recent: collections.deque[int] = collections.deque()
        self._recent_set: set[int] = set()
        self._prev: tuple[int, int] | None = None  # (seq, ts) of the last frame out
        self._last_real: tuple[int, int] | None = None  # (seq, ts) of the last packet out
        self._run = 0  # frames concealed in a row
        self._stall_start: int | None = None  # first seq concealed in the current stall
        self._idle = False  # a stall outlasted max_conceal: wait for packets
        self._late_run: set[int] = set()  # late sequence numbers since the last good one
        self._reset_timing()

    def _reset_timing(self) -> None:
        self._transits.clear()
        self._target = _clamp(self.margin, self.min_delay, self.max_delay)
        self._target_at: float | None = None

    # -- public ----------------------------------------------------------------------
    @property
    def capacity(self) -> int:
        """Most packets the buffer holds (aiortc's ``JitterBuffer`` has this attribute)."""
        return SEQ_JUMP

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def target_delay(self) -> float:
        """The current target delay, in seconds."""
        return self._target

    @property
    def reorder_wait(self) -> float:
        """How long a gap is waited for (early release), in seconds."""
        wait = self.margin
        if len(self._reorders):
            wait += self._reorders.quantile(self.quantile)
        return _clamp(wait, self.min_delay, self.max_delay)

    def stats(self) -> JitterStats:
        """A snapshot of the counters (any thread)."""
        return JitterStats(
            received=self._received,
            released=self._released,
            concealed=self._concealed,
            late=self._late,
            duplicates=self._duplicates,
            discarded=self._discarded,
            skipped=self._skipped,
            resyncs=self._resyncs,
            buffered=len(self._pending),
            target_delay_ms=self._target * 1000.0,
            reorder_wait_ms=self.reorder_wait * 1000.0,
        )

    def close(self) -> None:
        """Stop: cancel the timer, drop what is buffered, let go of the sink (idempotent).

        Later packets are ignored; the counters stay readable.
        """
        self._closed = True
        self._cancel_timer()
        self._pending.clear()
        self._sink = None
        self._concealment = None

    def add(self, packet: Any) -> tuple[bool, None]:
        """Take one RTP packet (an aiortc ``RtpPacket``: its depayloaded ``_data`` is used
        when set, else ``payload``). Frames that may leave now go to the sink before this
        returns. Returns ``(False, None)``, aiortc's ``(pli_flag, frame)``."""
        if self._closed:
            return False, None
        now = self._loop.time()
        self._received += 1
        data = getattr(packet, "_data", None)
        data = bytes(packet.payload if data is None else data)
        if (
            self._hi_seq is None
            or packet.ssrc != self._ssrc
            or packet.payload_type != self._payload_type
        ):
            self._restart(packet)
        seq, ts = self._unwrap(packet)
        if abs(seq - self._hi) >= SEQ_JUMP or (
            seq >= self._next and self._prev is not None and ts <= self._prev[1]
        ):
            self._restart(packet)
            seq, ts = self._unwrap(packet)
        if seq in self._pending or seq in self._recent_set:
            self._duplicates += 1
            return False, None
        if seq < self._next:
            if self._prev is None:
                self._next = seq  # nothing has left yet: start earlier
            elif self._stall_start is not None and seq >= self._stall_start:
                self._resume(seq, ts)
            else:
                self._late += 1
                self._late_run.add(seq)
                self._learn(now, seq, ts)
                if len(self._late_run) < RESYNC_AFTER_LATE:
                    return False, None
                self._restart(packet)
                seq, ts = self._unwrap(packet)
        self._late_run.clear()
        self._stall_start = None
        transit = now - ts / self._rate
        if len(self._transits) and abs(transit - self._transits.min()) > self.max_delay:
            self._resyncs += 1
            self._reset_timing()
        self._learn(now, seq, ts)
        if seq > self._hi:
            for missing in range(max(self._hi + 1, seq - SEQ_JUMP), seq):
                self._gap_seen.setdefault(missing, now)
            self._hi_seq, self._hi_ts = seq, ts
        if self._idle:
            self._idle = False
            if seq > self._next:
                self._skipped += seq - self._next
                self._next = seq
        if data:
            self._pending[seq] = _Entry(ts, packet.payload_type, data)
        else:
            self._discarded += 1
        self._pump(now)
        return False, None

    # -- sequence and timing state ---------------------------------------------------
    @property
    def _hi(self) -> int:
        assert self._hi_seq is not None
        return self._hi_seq

    def _unwrap(self, packet: Any) -> tuple[int, int]:
        """Sequence number and timestamp unwrapped next to the highest packet's."""
        dseq = (packet.sequence_number - self._hi) & _MASK16
        dts = (packet.timestamp - self._hi_ts) & _MASK32
        if dseq >= 0x8000:
            dseq -= 0x10000
        if dts >= 0x80000000:
            dts -= 0x100000000
        return self._hi + dseq, self._hi_ts + dts

    def _restart(self, packet: Any) -> None:
        """A new stream (or the first packet): what is buffered leaves, then start over
        at ``packet``, its frames following the last one out."""
        if self._hi_seq is not None:
            self._resyncs += 1
            for seq in sorted(self._pending):
                self._emit(seq, self._pending.pop(seq), concealed=False)
        self._reset_stream()
        self._ssrc = packet.ssrc
        self._payload_type = packet.payload_type
        rate = self._clock_rate
        if callable(rate):
            try:
                rate = rate(packet.payload_type) or 48000
            except Exception:
                log.exception("looking up the RTP clock rate failed; assuming 48000")
                rate = 48000
        self._rate = float(rate)
        self._ticks = max(1, round(self._rate / 50))
        self._hi_seq = self._next = packet.sequence_number
        self._hi_ts = packet.timestamp
        self._align = True

    def _resume(self, seq: int, ts: int) -> None:
        """A packet of a frame concealed during a stall: the stream goes on from it."""
        self._resyncs += 1
        self._next = seq
        self._prev = (seq - 1, ts - self._ticks)
        self._last_real = None
        self._run = 0
        self._idle = False
        self._align = True

    def _learn(self, now: float, seq: int, ts: int) -> None:
        """Feed the timing model with one arrival (in order, reordered or late)."""
        seen = self._gap_seen.pop(seq, None)
        if seen is not None:
            self._reorders.add(now, now - seen)
        self._reorders.expire(now)
        self._transits.add(now, now - ts / self._rate)
        spread = self._transits.quantile(self.quantile) - self._transits.min()
        want = _clamp(spread + self.margin, self.min_delay, self.max_delay)
        if want >= self._target or self._target_at is None:
            self._target = want
        else:
            self._target = max(want, self._target - self.decay * (now - self._target_at))
        self._target_at = now
        if len(self._gap_seen) > 2 * SEQ_JUMP:
            floor = self._hi - SEQ_JUMP
            self._gap_seen = {s: t for s, t in self._gap_seen.items() if s >= floor}

    def _base(self) -> float:
        return self._transits.min() if len(self._transits) else -math.inf

    def _playout(self, ts: int) -> float:
        """When the frame with timestamp ``ts`` is due (paced) or given up (a gap)."""
        return ts / self._rate + self._base() + self._target

    def _missing_ts(self) -> int | None:
        """Timestamp of the missing frame ``self._next``: interpolated between the last
        frame out and the next one waiting, or one packet per frame after the last out."""
        assert self._prev is not None
        prev_seq, prev_ts = self._prev
        steps = self._next - prev_seq
        if self._pending:
            seq = min(self._pending)
            ahead = self._pending[seq].ts
            ts = prev_ts + (ahead - prev_ts) * steps // (seq - prev_seq)
            return ts if prev_ts < ts < ahead else None
        return prev_ts + self._ticks * steps

    # -- releasing -------------------------------------------------------------------
    def _pump(self, now: float) -> None:
        """Let out every frame whose time has come; arm the timer for the next one."""
        while not self._closed:
            entry = self._pending.get(self._next)
            if entry is not None:
                if self.release == "paced":
                    due = self._playout(entry.ts)
                    if now < due:
                        self._arm(due)
                        return
                del self._pending[self._next]
                self._emit(self._next, entry, concealed=False)
                continue
            waiting = bool(self._pending)
            if self._idle or (not waiting and self._prev is None):
                break
            if self._prev is None or self._run >= self.max_conceal:
                if not waiting:  # a stall outlasted max_conceal frames
                    self._idle = True
                    break
                ahead = min(self._pending)
                self._skipped += ahead - self._next
                self._next = ahead
                self._run = 0
                continue
            ts = self._missing_ts()
            if ts is None:
                self._skipped += 1
                self._next += 1
                continue
            if self.release == "paced":
                due = self._playout(ts)
            elif waiting:
                seen = self._gap_seen.setdefault(self._next, now)
                due = min(self._playout(ts), seen + self.reorder_wait)
            else:
                due = ts / self._rate + self._base() + self.max_delay
            if now < due:
                self._arm(due)
                return
            if not waiting and self._stall_start is None:
                self._stall_start = self._next
            self._conceal(ts)
        self._cancel_timer()

    def _emit(self, seq: int, entry: _Entry, *, concealed: bool) -> None:
        out = entry.ts + self._offset
        if self._align:
            self._align = False
            if self._last_out is not None and out <= self._last_out:
                self._offset = self._last_out + self._ticks - entry.ts
                out = entry.ts + self._offset
        self._next = seq + 1
        if self._last_out is not None and out <= self._last_out:
            self._discarded += 1
            return
        if concealed:
            self._concealed += 1
            self._run += 1
        else:
            if self._last_real is not None and self._last_real[0] == seq - 1:
                step = entry.ts - self._last_real[1]
                if 0 < step <= MAX_PACKET_S * self._rate:
                    self._ticks = step
            self._last_real = (seq, entry.ts)
            self._last_data = entry.data
            self._last_pt = entry.payload_type
            self._remember(seq)
            self._released += 1
            self._run = 0
            self._stall_start = None
        self._prev = (seq, entry.ts)
        self._last_out = out
        sink = self._sink
        if sink is None:
            return
        try:
            sink(JitterFrame(data=entry.data, timestamp=out & _MASK32), entry.payload_type)
        except Exception:
            log.exception("handing an audio frame to the decoder failed")

    def _remember(self, seq: int) -> None:
        if len(self._recent) >= DUPLICATE_MEMORY:
            self._recent_set.discard(self._recent.popleft())
        self._recent.append(seq)
        self._recent_set.add(seq)

    def _conceal(self, ts: int) -> None:
        data = None
        if self._concealment is not None:
            try:
                data = self._concealment(self._last_pt, self._last_data)
            except Exception:
                log.exception("making a concealment frame failed")
        if not data:
            self._skipped += 1
            self._next += 1
            self._run += 1
            return
        self._emit(self._next, _Entry(ts, self._last_pt, data), concealed=True)

    # -- timer -----------------------------------------------------------------------
    def _arm(self, when: float) -> None:
        if self._timer is not None and self._timer_at == when:
            return
        self._cancel_timer()
        self._timer = self._loop.call_at(when, self._on_timer)
        self._timer_at = when

    def _on_timer(self) -> None:
        due = self._timer_at if self._timer_at is not None else -math.inf
        self._timer = self._timer_at = None
        # asyncio may run a timer up to its clock resolution early: never before it is due
        self._pump(max(self._loop.time(), due))

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._timer_at = None


# -- the hook into aiortc ------------------------------------------------------------------


def default_choice(modality: str) -> JitterBufferChoice:
    """The jitter buffer a stream gets when none is chosen: ``"adaptive"`` for audio-video
    when aiortc is a tested version (its audio then leaves in step with video, whose
    buffer lets frames out at their last packet), ``"aiortc"`` otherwise."""
    import aiortc

    tested = str(getattr(aiortc, "__version__", "")) in TESTED_AIORTC_VERSIONS
    return "adaptive" if modality == "audio-video" and tested else "aiortc"


def check_choice(value: object) -> JitterBufferChoice:
    """``value`` must be one of :data:`JITTER_BUFFERS`; returns it."""
    if not isinstance(value, str) or value not in JITTER_BUFFERS:
        raise ValueError(
            "jitter_buffer must be one of "
            f"{', '.join(repr(c) for c in JITTER_BUFFERS)}; got {value!r}"
        )
    return value  # type: ignore[return-value]


def check_aiortc_version(version: str | None = None) -> None:
    """Raise ``RuntimeError`` unless ``version`` (default: the installed aiortc's) is one
    of :data:`TESTED_AIORTC_VERSIONS`."""
    if version is None:
        import aiortc

        version = str(getattr(aiortc, "__version__", "unknown"))
    if version not in TESTED_AIORTC_VERSIONS:
        raise RuntimeError(
            "webrtc_ref's adaptive jitter buffer hooks into private parts of aiortc's "
            f"RTCRtpReceiver and is tested with aiortc {', '.join(TESTED_AIORTC_VERSIONS)}; "
            f"aiortc {version} is installed. Install a tested aiortc version, or keep "
            "aiortc's own jitter buffer with jitter_buffer='aiortc' "
            "(WebRTC(..., jitter_buffer='aiortc') or StreamServer(..., jitter_buffer='aiortc'))."
        )


def _private(receiver: Any, name: str) -> Any:
    try:
        return getattr(receiver, _PRIVATE + name)
    except AttributeError:
        raise RuntimeError(
            f"aiortc's RTCRtpReceiver has no attribute {_PRIVATE + name}: this aiortc is "
            "not one the adaptive jitter buffer works with; use jitter_buffer='aiortc'"
        ) from None


def install(
    receiver: Any, *, loop: asyncio.AbstractEventLoop | None = None, **options: Any
) -> AdaptiveJitterBuffer:
    """Replace the jitter buffer of aiortc audio ``receiver`` by an :class:`AdaptiveJitterBuffer`.

    Call it on the receiver's event loop before the receiver starts, i.e. in the peer
    connection's ``"track"`` event (aiortc calls ``RTCRtpReceiver.receive`` once the
    transport connects). ``options`` go to :class:`AdaptiveJitterBuffer`. Installing twice
    returns the buffer already installed.

    How it fits aiortc's receiver (:data:`TESTED_AIORTC_VERSIONS`): ``_handle_rtp_packet``
    calls ``self.__jitter_buffer.add(packet)`` on the loop after RTCP statistics, RTX
    unwrapping and depayloading, and decodes the frame it returns. The buffer returns
    none; it puts each frame it lets out into the receiver's decoder queue itself, as
    ``_handle_rtp_packet`` would: ``(codec, frame)`` with the codec of the packet's
    payload type and the timestamp mapped by the receiver's ``TimestampMapper``. The
    decoder thread pulls from that queue; a stopped receiver (its decoder thread gone)
    gets nothing more and the buffer closes. RTCP (receiver reports, jitter, loss) is
    computed before the buffer and is unchanged; audio has no NACK or PLI in aiortc.
    Missing Opus frames are concealed with libopus' packet-loss concealment
    (:func:`opus_concealment`), other codecs' by repeating the previous packet.

    Raises:
        RuntimeError: aiortc is not a tested version (see :func:`check_aiortc_version`),
            its receiver lacks an attribute the hook uses, or the receiver has started.
        ValueError: the receiver is not an audio receiver (video keeps aiortc's buffer).
    """
    check_aiortc_version()
    kind = _private(receiver, "kind")
    if kind != "audio":
        raise ValueError(
            f"install() replaces the jitter buffer of audio receivers only; got a {kind} "
            "receiver (video keeps aiortc's jitter buffer)"
        )
    current = _private(receiver, "jitter_buffer")
    if isinstance(current, AdaptiveJitterBuffer):
        return current
    if _private(receiver, "started"):
        raise RuntimeError(
            "install() must run before the receiver starts (in the peer connection's 'track' event)"
        )
    codecs: dict[int, Any] = _private(receiver, "codecs")  # filled in by receive()
    decoder_queue = _private(receiver, "decoder_queue")
    mapper = _private(receiver, "timestamp_mapper")
    _private(receiver, "decoder_thread")

    def deliver(frame: JitterFrame, payload_type: int) -> None:
        if _private(receiver, "decoder_thread") is None:  # stopped, or not started yet
            if _private(receiver, "started"):
                buffer.close()
            return
        codec = codecs.get(payload_type)
        if codec is None:
            return
        frame.timestamp = mapper.map(frame.timestamp)
        decoder_queue.put((codec, frame))

    def clock_rate(payload_type: int) -> int | None:
        codec = codecs.get(payload_type)
        return None if codec is None else int(codec.clockRate)

    def conceal(payload_type: int, previous: bytes) -> bytes | None:
        codec = codecs.get(payload_type)
        if codec is not None and str(codec.name).lower() == "opus":
            return opus_concealment(payload_type, previous)
        return repeat_concealment(payload_type, previous)

    options.setdefault("clock_rate", clock_rate)
    options.setdefault("concealment", conceal)
    buffer = AdaptiveJitterBuffer(
        deliver, loop=loop if loop is not None else asyncio.get_running_loop(), **options
    )
    setattr(receiver, _PRIVATE + "jitter_buffer", buffer)
    return buffer


class EagerVideoJitterBuffer(JitterBuffer):
    """aiortc's video ``JitterBuffer`` that also lets a frame out at its marker packet.

    A frame leaves when the packets from the buffer's origin are contiguous, share one
    timestamp and the last of them carries the RTP marker bit (the sender's "last packet
    of this frame"). Anything else (a gap, a sender that never sets the marker) is left
    to aiortc's own rule, so frames still leave in order and whole. Runs on the event
    loop, inside aiortc's ``RTCRtpReceiver._handle_rtp_packet``.
    """

    def __init__(self, capacity: int = 512) -> None:
        super().__init__(capacity=capacity, is_video=True)
        #: Frames let out at their marker packet (the rest waited for the next frame).
        self.eager_frames = 0

    def add(self, packet: Any) -> tuple[bool, JitterFrame | None]:
        pli_flag, frame = super().add(packet)
        if frame is None:  # the head frame may be whole now (its marker, or a late part)
            frame = self._complete_head()
            if frame is not None:
                self.eager_frames += 1
        return pli_flag, frame

    def _complete_head(self) -> JitterFrame | None:
        origin = self._origin
        if origin is None:
            return None
        packets: list[Any] = []
        timestamp: int | None = None
        for count in range(self.capacity):
            packet = self._packets[(origin + count) % self.capacity]
            if packet is None or (timestamp is not None and packet.timestamp != timestamp):
                return None
            timestamp = packet.timestamp
            packets.append(packet)
            if packet.marker:
                self.remove(count + 1)
                data = b"".join(getattr(p, "_data", b"") for p in packets)
                return JitterFrame(data=data, timestamp=timestamp)
        return None


def install_video(receiver: Any) -> EagerVideoJitterBuffer | None:
    """Give aiortc video ``receiver`` an :class:`EagerVideoJitterBuffer` (before it starts,
    in the ``"track"`` event). Returns None, keeping aiortc's buffer, when aiortc is not a
    tested version or the receiver is not a fresh video receiver."""
    import aiortc

    if str(getattr(aiortc, "__version__", "")) not in TESTED_AIORTC_VERSIONS:
        return None
    name = _PRIVATE + "jitter_buffer"
    current = getattr(receiver, name, None)
    if isinstance(current, EagerVideoJitterBuffer):
        return current
    if (
        getattr(receiver, _PRIVATE + "kind", None) != "video"
        or getattr(receiver, _PRIVATE + "started", True)
        or type(current) is not JitterBuffer
    ):
        return None
    buffer = EagerVideoJitterBuffer(capacity=current.capacity)
    setattr(receiver, name, buffer)
    return buffer


__all__ = [
    "JITTER_BUFFERS",
    "TESTED_AIORTC_VERSIONS",
    "AdaptiveJitterBuffer",
    "EagerVideoJitterBuffer",
    "JitterBufferChoice",
    "JitterStats",
    "Scheduler",
    "check_aiortc_version",
    "check_choice",
    "default_choice",
    "install",
    "install_video",
    "opus_concealment",
    "repeat_concealment",
]
