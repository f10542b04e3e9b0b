"""When audio and video leave the server: RTP timing of a wire peer, and the skew between
the two streams of an audio-video echo measured from it.

The client's own receive path would distort a skew measured at its decoders: aiortc's
audio receiver holds audio in a jitter buffer (prefetch 4, about 80 ms) that its video
receiver does not have. So the time a frame *left the server* is taken where it enters
the client, before any buffering, and the time content *reached the server* where it left
the client, after encoding (on loopback, wire time is negligible):

- :class:`RtpTiming` hooks a peer's aiortc receivers (``_handle_rtp_packet``: the arrival
  ``time.time()`` of each RTP timestamp's first packet, and of a video frame's marker
  packet) and their timestamp mapper (decoded frame ``pts`` -> RTP timestamp: aiortc's
  decoded frames carry the RTP timestamp minus the first frame's), and its senders
  (``_next_encoded_frame``: when each frame of the client's tracks was encoded and sent,
  keyed by the track's frame id or sample counter).
- :func:`measure_skew` matches content: a received video frame's barcode id names the
  client frame it echoes, a timestamp marker in the received audio the client sample
  (:mod:`fixtures.timestamps`). For each, *transit* = server leave time - server arrival
  time; for each echoed video frame, the audio transit at the same arrival instant is
  interpolated between neighbouring markers, and ``skew = audio transit - video transit``
  (positive: audio leaves later than the video that arrived with it).

The Opus codec's algorithmic delay (312 samples, 6.5 ms, per encoding) counts as audio
transit: content of a packet is that much older than its timestamp says.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: aiortc's name-mangled receiver attribute holding its ``TimestampMapper``.
_MAPPER = "_RTCRtpReceiver__timestamp_mapper"
AUDIO_RATE = 48000


@dataclass
class KindTiming:
    """RTP timing of one media kind of a peer."""

    #: RTP timestamp -> ``time.time()`` when its first packet arrived.
    first_arrival: dict[int, float] = field(default_factory=dict)
    #: RTP timestamp -> when its marker packet (a video frame's last) first arrived.
    marker_arrival: dict[int, float] = field(default_factory=dict)
    #: ``(time.time(), RTP timestamp)`` of each first arrival, in arrival order.
    arrivals: list[tuple[float, int]] = field(default_factory=list)
    #: decoded frame pts -> RTP timestamp.
    rtp_of_pts: dict[int, int] = field(default_factory=dict)
    #: the client's track: source index (frame id, or sample counter at the frame's start)
    #: -> ``time.time()`` when the sender had encoded it (and sent its packets).
    departures: dict[int, float] = field(default_factory=dict)

    def leave_time(self, pts: int | None) -> float | None:
        """When the frame decoded with ``pts`` left the server (its RTP reached the
        client): the marker packet's arrival, else the first packet's."""
        if pts is None:
            return None
        rtp = self.rtp_of_pts.get(int(pts))
        if rtp is None:
            return None
        return self.marker_arrival.get(rtp, self.first_arrival.get(rtp))


def _source_index(track: Any) -> int | None:
    """The frame a ``fixtures.tracks`` sender returned last: its frame id (video) or the
    sample counter at its first sample (audio)."""
    from fixtures.video import FRAME_ID_MODULO

    if track is None:
        return None
    if getattr(track, "kind", None) == "video" and hasattr(track, "frames_sent"):
        if not track.frames_sent:
            return None
        return int((track.start_id + track.frames_sent - 1) % FRAME_ID_MODULO)
    if hasattr(track, "samples_sent") and hasattr(track, "samples_per_frame"):
        if not track.samples_sent:
            return None
        return int(track.start_sample + track.samples_sent - track.samples_per_frame)
    return None


class RtpTiming:
    """RTP timing of an aiortc peer, per kind (see the module docstring).

    :meth:`attach` before the peer connects (its transceivers must exist).
    """

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.kinds: dict[str, KindTiming] = {"audio": KindTiming(), "video": KindTiming()}

    def __getitem__(self, kind: str) -> KindTiming:
        return self.kinds[kind]

    def attach(self, pc: Any) -> None:
        for transceiver in pc.getTransceivers():
            kind = transceiver.kind
            if kind not in self.kinds:
                continue
            self._hook_receiver(transceiver.receiver, self.kinds[kind])
            self._hook_sender(transceiver.sender, self.kinds[kind])

    def _hook_receiver(self, receiver: Any, timing: KindTiming) -> None:
        mapper = getattr(receiver, _MAPPER, None)
        if mapper is None or not hasattr(receiver, "_handle_rtp_packet"):
            import aiortc

            raise RuntimeError(
                f"aiortc {aiortc.__version__}: RTCRtpReceiver has no _handle_rtp_packet / "
                "timestamp mapper to time RTP arrivals with"
            )
        handle = receiver._handle_rtp_packet
        clock = self.clock

        async def timed(packet: Any, arrival_time_ms: int) -> None:
            now = clock()
            timestamp = int(packet.timestamp)
            if timestamp not in timing.first_arrival:
                timing.first_arrival[timestamp] = now
                timing.arrivals.append((now, timestamp))
            if packet.marker and timestamp not in timing.marker_arrival:
                timing.marker_arrival[timestamp] = now
            await handle(packet, arrival_time_ms)

        receiver._handle_rtp_packet = timed
        original_map = mapper.map

        def mapped(timestamp: int) -> int:
            pts = int(original_map(timestamp))
            timing.rtp_of_pts[pts] = int(timestamp)
            return pts

        mapper.map = mapped

    def _hook_sender(self, sender: Any, timing: KindTiming) -> None:
        if sender is None or not hasattr(sender, "_next_encoded_frame"):
            return
        encoded = sender._next_encoded_frame
        clock = self.clock

        async def timed(codec: Any) -> Any:
            result = await encoded(codec)
            index = _source_index(sender.track)
            if index is not None and result is not None:
                timing.departures.setdefault(index, clock())
            return result

        sender._next_encoded_frame = timed


# -- the skew ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Transit:
    """Content that reached the server at ``arrived`` and left it at ``left``."""

    arrived: float
    left: float

    @property
    def seconds(self) -> float:
        return self.left - self.arrived


@dataclass
class Skew:
    """The audio/video skew of an echo (see :func:`measure_skew`); seconds."""

    audio: list[Transit]
    video: list[Transit]
    #: ``(arrival instant, skew)`` per echoed video frame with audio on both sides of it.
    samples: list[tuple[float, float]]

    @property
    def values(self) -> np.ndarray:
        return np.array([s for _, s in self.samples], dtype=np.float64)

    def percentile(self, q: float, *, absolute: bool = False) -> float:
        values = self.values
        if absolute:
            values = np.abs(values)
        return float(np.percentile(values, q)) if values.size else float("nan")

    def summary(self) -> str:
        if not self.samples:
            return f"no skew samples ({len(self.audio)} audio, {len(self.video)} video transits)"
        audio = np.array([t.seconds for t in self.audio])
        video = np.array([t.seconds for t in self.video])
        return (
            f"skew (audio - video leave time, same arrival) over {len(self.samples)} frames: "
            f"p50 {self.percentile(50) * 1000:+.1f} ms, p95 {self.percentile(95) * 1000:+.1f} "
            f"ms, p5 {self.percentile(5) * 1000:+.1f} ms, |skew| p95 "
            f"{self.percentile(95, absolute=True) * 1000:.1f} ms; server transit p50 audio "
            f"{np.median(audio) * 1000:.1f} ms, video {np.median(video) * 1000:.1f} ms"
        )


def audio_transits(
    recorder: Any, timing: KindTiming, *, frame_samples: int = 960, rate: int = AUDIO_RATE
) -> list[Transit]:
    """One :class:`Transit` per timestamp marker in the received audio.

    ``recorder``: the wire's audio recorder (``markers``, ``frames`` and ``pts`` per frame).
    Arrival: when the client sent the frame holding the marker's sample, plus the sample's
    offset in it; leave: when the received frame holding the marker arrived, plus the
    marker's offset in that frame.
    """
    starts = [position for position, _, _ in recorder.frames]
    out = []
    for marker in recorder.markers:
        i = bisect.bisect_right(starts, marker.position) - 1
        if i < 0 or i >= len(recorder.pts):
            continue
        left = timing.leave_time(recorder.pts[i])
        sent = marker.sent_sample
        frame_start = sent - sent % frame_samples
        arrived = timing.departures.get(frame_start)
        if left is None or arrived is None:
            continue
        out.append(
            Transit(
                arrived + (sent - frame_start) / rate,
                left + (marker.position - starts[i]) / rate,
            )
        )
    return out


def video_transits(recorder: Any, timing: KindTiming) -> list[Transit]:
    """One :class:`Transit` per client frame id echoed back (its first echo)."""
    seen: set[int] = set()
    out = []
    for record in recorder.records:
        if record.frame_id is None or record.frame_id in seen:
            continue
        seen.add(record.frame_id)
        left = timing.leave_time(record.pts)
        arrived = timing.departures.get(record.frame_id)
        if left is not None and arrived is not None:
            out.append(Transit(arrived, left))
    return out


def skew_of(audio: Sequence[Transit], video: Sequence[Transit], *, max_span: float = 0.25) -> Skew:
    """Pair each video transit with the audio transit at the same arrival instant
    (interpolated between the markers around it, at most ``max_span`` apart)."""
    audio = sorted(audio, key=lambda t: t.arrived)
    times = [t.arrived for t in audio]
    samples = []
    for frame in video:
        j = bisect.bisect_left(times, frame.arrived)
        if j == 0 or j >= len(audio):
            continue
        before, after = audio[j - 1], audio[j]
        span = after.arrived - before.arrived
        if span <= 0 or span > max_span:
            continue
        w = (frame.arrived - before.arrived) / span
        audio_transit = before.seconds + w * (after.seconds - before.seconds)
        samples.append((frame.arrived, audio_transit - frame.seconds))
    return Skew(list(audio), list(video), samples)


def measure_skew(peer: Any, *, since: float = 0.0) -> Skew:
    """The skew of ``peer``'s (a :class:`~conformance.wire.WirePeer` made with
    ``rtp_timing=True``, sending a timestamp carrier and barcode video) echo, over content
    that reached the server after ``since``."""
    timing = peer.rtp
    assert timing is not None, "the peer was made without rtp_timing=True"
    audio = [
        t for t in audio_transits(peer.recorders["audio"], timing["audio"]) if t.arrived >= since
    ]
    video = [
        t for t in video_transits(peer.recorders["video"], timing["video"]) if t.arrived >= since
    ]
    return skew_of(audio, video)


def arrival_gaps(timing: KindTiming, start: float, end: float, *, frame_s: float = 0.02) -> float:
    """The longest time in ``[start, end]`` that no new audio reached the client beyond one
    frame period: the longest gap between first arrivals of consecutive RTP timestamps,
    minus ``frame_s`` (0 for packets arriving at the frame rate)."""
    arrivals = [t for t, _ in timing.arrivals if start <= t <= end]
    if len(arrivals) < 2:
        return end - start
    return max(0.0, float(np.max(np.diff(arrivals))) - frame_s)
