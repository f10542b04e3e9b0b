"""What the benchmark's client peers send and how it reads what comes back.

Two kinds of client media:

- the **full** client, used where one session is measured (audio echo, isolation, turns):
  ``fixtures.tracks.TimestampAudioTrack`` generates the ``fixtures.timestamps`` carrier
  frame by frame, aiortc encodes it, and the echo is decoded by aiortc and recorded by
  ``fixtures.tracks.AudioRecorder``, as a browser would;
- the **light** client, used where many sessions run at once (capacity, CPU), so that the
  server, not the client, runs out of CPU first. Measured on this machine (2 cores, 8 echo
  sessions against webrtc_ref), the full client spent about 8 % of a core per session:
  Opus encoding in aiortc's executor (~2 %), generating the carrier (~1 %), aiortc's
  pure-Python RTP audio level of every sent frame (~0.6 %), Opus decoding in aiortc's
  decoder threads (~0.8 %) and handing every decoded frame to the recorder (~0.8 %), the
  rest being aiortc's per-packet SRTP/ICE/asyncio work. The light client keeps only that
  last part: :class:`PacketTrack` sends the same carrier **pre-encoded once** (Opus
  packets reused by every session; aiortc packs ``av.Packet`` s without encoding and without
  computing an audio level), and :class:`RtpLog` replaces the receiver's depacketising,
  jitter buffer and decoder with a log of each RTP packet's arrival, timestamp and payload.
  The payloads are decoded **after** the measured window, so markers are still checked
  (round trip, coverage) without costing CPU while it matters.

Analysis, the same for both (``recorder.frames`` is ``(position, n, arrival)`` either way):

- :func:`round_trips`: markers sent in a window -> echo arrival - send time;
- :func:`frame_lateness`: late or missing 20 ms frames of an echoed stream.
"""

from __future__ import annotations

import asyncio
import bisect
import fractions
import time
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

FRAME_S = 0.020
RATE = 48_000
SAMPLES_PER_FRAME = 960
#: A frame is late when it arrives this long after its due time.
LATE_AFTER_S = 0.040
#: Markers sent in the last GRACE_S of a window are not counted (their echo may be in flight).
GRACE_S = 0.5
#: Seconds of carrier :func:`carrier_packets` pre-encodes (a longer session loops over it).
CARRIER_S = 90.0


# --------------------------------------------------------------------------- analysis


def round_trips(link: Any, t_from: float, t_to: float) -> tuple[list[float], int, int]:
    """(round trips, markers sent, markers back) for markers sent in ``[t_from, t_to - GRACE]``.

    ``link.track.sent_markers``: sent sample -> send time; ``link.recorder``: ``frames``
    (``(position, n, arrival)``), ``samples()`` and ``sample_rate``.
    """
    from fixtures.timestamps import decode

    rec = link.recorder
    sent = {k: t for k, t in link.track.sent_markers.items() if t_from <= t <= t_to - GRACE_S}
    if rec is None or not rec.frames or not sent:
        return [], len(sent), 0
    rate = rec.sample_rate or RATE
    positions = [f[0] for f in rec.frames]
    first: dict[int, float] = {}
    for marker in decode(rec.samples(), rate):
        if marker.sent_sample in sent and marker.sent_sample not in first:
            i = bisect.bisect_right(positions, marker.position) - 1
            first[marker.sent_sample] = rec.frames[i][2]
    latencies = [first[k] - sent[k] for k in first]
    return latencies, len(sent), len(first)


def frame_lateness(link: Any, t_from: float, t_to: float) -> tuple[int, int, int]:
    """(late, missing, expected) 20 ms frames of one echoed stream in ``[t_from, t_to]``.

    A frame's due time is ``anchor + position / rate``, the anchor being the stream's
    earliest ``arrival - position / rate`` since its first frame (a robust "first frame"):
    so latency that built up at any time since the stream started counts as lateness.
    A frame is late when it arrives more than :data:`LATE_AFTER_S` after it is due.
    """
    expected = round((t_to - t_from) / FRAME_S)
    rec = link.recorder
    if rec is None or not rec.frames:
        return 0, expected, expected
    rate = rec.sample_rate or RATE
    pos = np.array([f[0] for f in rec.frames], dtype=np.float64)
    arrival = np.array([f[2] for f in rec.frames])
    upto = arrival <= t_to
    offsets = arrival[upto] - pos[upto] / rate
    if offsets.size == 0:
        return 0, expected, expected
    in_window = arrival[upto] >= t_from
    late = int(np.count_nonzero(offsets[in_window] - offsets.min() > LATE_AFTER_S))
    missing = max(0, expected - int(np.count_nonzero(in_window)) - 1)
    return late, missing, expected


# --------------------------------------------------------------------------- light sender


@lru_cache(maxsize=1)
def carrier_packets(seconds: float = CARRIER_S) -> tuple[bytes, ...]:
    """The ``fixtures.timestamps`` carrier (48 kHz mono, amplitude 0.5, counter from 0),
    Opus-encoded by aiortc's own encoder in 20 ms packets: what ``TimestampAudioTrack``
    through aiortc would send, computed once per process."""
    import av
    from aiortc.codecs.opus import OpusEncoder

    from fixtures.timestamps import encode

    frames = round(seconds / FRAME_S)
    pcm = np.asarray(encode(0, frames * SAMPLES_PER_FRAME, RATE, amplitude=0.5), dtype=np.int16)
    encoder = OpusEncoder()
    packets: list[bytes] = []
    for k in range(frames):
        frame = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(pcm[k * SAMPLES_PER_FRAME : (k + 1) * SAMPLES_PER_FRAME])[None],
            format="s16",
            layout="mono",
        )
        frame.sample_rate = RATE
        frame.pts = k * SAMPLES_PER_FRAME
        frame.time_base = fractions.Fraction(1, RATE)
        payloads, _ = encoder.encode(frame)
        packets.extend(payloads)
    return tuple(packets)


class PacketTrack(MediaStreamTrack):
    """The timestamp carrier as pre-encoded Opus packets, paced every 20 ms.

    Duck-types ``fixtures.tracks.TimestampAudioTrack`` for the analysis: ``start_time``,
    ``sent`` (first sample of each packet -> send time) and ``sent_markers``. Past the end
    of :func:`carrier_packets` it loops (``sent_markers`` then only covers the first pass).
    """

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self.packets = carrier_packets()
        self.sent: dict[int, float] = {}
        self.count = 0
        self._start: float | None = None

    @property
    def start_time(self) -> float | None:
        return self._start

    async def recv(self) -> Any:
        import av

        if self.readyState != "live":
            raise MediaStreamError
        if self._start is None:
            self._start = time.time()
        else:
            wait = self._start + self.count * FRAME_S - time.time()
            if wait > 0:
                await asyncio.sleep(wait)
        k = self.count
        packet = av.Packet(self.packets[k % len(self.packets)])
        packet.pts = k * SAMPLES_PER_FRAME
        packet.time_base = fractions.Fraction(1, RATE)
        self.count += 1
        if k < len(self.packets):
            self.sent[k * SAMPLES_PER_FRAME] = time.time()
        return packet

    @property
    def sent_markers(self) -> dict[int, float]:
        """Block-start sample (every 100 ms) -> send time, like ``TimestampAudioTrack``."""
        from fixtures.timestamps import block_samples

        b = block_samples(RATE)
        return {s: t for s, t in self.sent.items() if s % b == 0}


# --------------------------------------------------------------------------- light receiver


class RtpLog:
    """Takes over the audio receivers of an aiortc peer: every RTP packet is logged
    (arrival ``time.time()``, RTP timestamp, payload) instead of being depacketised,
    buffered and decoded. Call :meth:`attach` before the peer connects.

    Duck-types ``AudioRecorder`` for the analysis: ``frames`` (``(position, n, arrival)``,
    position = RTP timestamp since the first packet, one entry per timestamp), ``sample_rate``
    and ``samples()`` (the payloads decoded now, placed at their positions).
    """

    sample_rate = RATE

    def __init__(self) -> None:
        self.log: list[tuple[float, int, bytes]] = []
        self._frames: list[tuple[int, int, float]] | None = None
        self._payloads: dict[int, bytes] = {}

    def attach(self, pc: Any) -> None:
        """Log the RTP of every audio receiver of ``pc`` (an ``RTCPeerConnection``)."""
        for transceiver in pc.getTransceivers():
            if transceiver.kind == "audio":
                transceiver.receiver._handle_rtp_packet = self._on_rtp

    async def _on_rtp(self, packet: Any, arrival_time_ms: int) -> None:
        self.log.append((time.time(), packet.timestamp, packet.payload))
        self._frames = None

    async def stop(self) -> None:
        """For ``Link.close``: nothing runs in the background."""

    @property
    def frames(self) -> list[tuple[int, int, float]]:
        if self._frames is None:
            self._frames, self._payloads = self._index(self.log)
        return self._frames

    @staticmethod
    def _index(
        log: Sequence[tuple[float, int, bytes]],
    ) -> tuple[list[tuple[int, int, float]], dict[int, bytes]]:
        if not log:
            return [], {}
        first = log[0][1]
        seen: dict[int, tuple[float, bytes]] = {}
        for arrival, timestamp, payload in log:
            delta = (timestamp - first) % (1 << 32)
            if delta >= 1 << 31:  # older than the first packet (reordered): not counted
                continue
            seen.setdefault(delta, (arrival, payload))  # a duplicate timestamp: the first
        positions = sorted(seen)
        frames = [(p, SAMPLES_PER_FRAME, seen[p][0]) for p in positions]
        return frames, {p: seen[p][1] for p in positions}

    def samples(self) -> np.ndarray:
        """Every logged payload decoded (mono int16), each at its RTP position; gaps are 0."""
        import av
        from aiortc.codecs.opus import OpusDecoder
        from aiortc.jitterbuffer import JitterFrame

        frames = self.frames
        if not frames:
            return np.zeros(0, dtype=np.int16)
        out = np.zeros(frames[-1][0] + 2 * SAMPLES_PER_FRAME, dtype=np.int16)
        decoder = OpusDecoder()
        for position, _, _ in frames:
            try:
                decoded = decoder.decode(JitterFrame(self._payloads[position], position))
            except Exception:  # a payload the decoder rejects: a gap
                continue
            at = position
            for frame in decoded:
                assert isinstance(frame, av.AudioFrame)
                pcm = frame.to_ndarray().reshape(-1, len(frame.layout.channels))
                mono = pcm.mean(axis=1).astype(np.int16)
                end = min(out.size, at + mono.size)
                out[at:end] = mono[: end - at]
                at = end
        return out
