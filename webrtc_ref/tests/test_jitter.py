"""The adaptive inbound audio jitter buffer (``webrtc_ref.jitter``).

Unit tests drive the buffer with synthetic RTP packets and a manual clock (no sleeping):
ordering, delay, concealment, late drops, wrap-around, duplicates and restarts. The
integration tests put it into real aiortc peers on loopback: it must beat aiortc's
buffer on into-handler latency by a clear margin in the same run, and keep the stream
continuous and its delay flat through an impaired link (``fixtures.netem``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import heapq
import itertools
import logging
import random
import statistics
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import numpy as np
import pytest
from aiortc.rtp import RtpPacket
from hypothesis import given, settings
from hypothesis import strategies as st

from fixtures import timestamps
from fixtures.netem import RTP_ONLY, ImpairedPath, Impairment
from fixtures.tracks import TimestampAudioTrack
from webrtc_ref import jitter
from webrtc_ref.handlers import StreamHandler
from webrtc_ref.jitter import (
    TESTED_AIORTC_VERSIONS,
    AdaptiveJitterBuffer,
    JitterStats,
    opus_concealment,
)
from webrtc_ref.server import StreamServer
from webrtc_ref.testing import ClientPeer, async_wait_until

PT = 111
TICKS = 960  # 20 ms at 48 kHz
PERIOD = 0.020
TOC = 0x78  # Opus config 15 (CELT fullband, 20 ms), mono, one frame


# --------------------------------------------------------------------------- harness


class _Timer:
    def __init__(self, loop: ManualLoop, when: float, callback: Callable[[], object]) -> None:
        self.when, self.callback, self.cancelled = when, callback, False
        self._loop = loop

    def cancel(self) -> None:
        self.cancelled = True


class ManualLoop:
    """A clock and ``call_at`` timers that run only when the test advances time."""

    def __init__(self, start: float = 100.0) -> None:
        self.now = start
        self._timers: list[tuple[float, int, _Timer]] = []
        self._n = 0
        self.fired = 0

    def time(self) -> float:
        return self.now

    def call_at(self, when: float, callback: Callable[[], object], /) -> _Timer:
        timer = _Timer(self, when, callback)
        self._n += 1
        heapq.heappush(self._timers, (when, self._n, timer))
        return timer

    @property
    def pending(self) -> int:
        return sum(not t.cancelled for *_, t in self._timers)

    def advance(self, to: float) -> None:
        """Run every timer due up to ``to`` (each at its own time), then set the clock."""
        while self._timers and self._timers[0][0] <= to:
            when, _, timer = heapq.heappop(self._timers)
            if timer.cancelled:
                continue
            self.now = max(self.now, when)
            self.fired += 1
            timer.callback()
        self.now = max(self.now, to)


def packet(
    k: int, *, seq0: int = 1000, ts0: int = 50_000, ssrc: int = 1, payload: bytes | None = None
) -> RtpPacket:
    """Packet ``k`` of a stream: sequence ``seq0 + k``, timestamp ``ts0 + 960 k`` (wrapped);
    its payload names ``k`` (a TOC byte, then ``k``)."""
    data = bytes([TOC]) + k.to_bytes(4, "big", signed=True) if payload is None else payload
    return RtpPacket(
        payload_type=PT,
        sequence_number=(seq0 + k) & 0xFFFF,
        timestamp=(ts0 + TICKS * k) & 0xFFFFFFFF,
        ssrc=ssrc,
        payload=data,
    )


class Out:
    """One frame the buffer let out."""

    def __init__(self, at: float, timestamp: int, data: bytes) -> None:
        self.at, self.timestamp, self.data = at, timestamp, data

    @property
    def concealed(self) -> bool:
        return len(self.data) == 1

    @property
    def k(self) -> int | None:
        return None if self.concealed else int.from_bytes(self.data[1:5], "big", signed=True)


class Harness:
    def __init__(self, **options: Any) -> None:
        self.loop = ManualLoop()
        self.t0 = self.loop.now
        self.out: list[Out] = []
        self.buffer = AdaptiveJitterBuffer(self._sink, loop=self.loop, **options)

    def _sink(self, frame: Any, payload_type: int) -> None:
        assert payload_type == PT
        self.out.append(Out(self.loop.now, frame.timestamp, frame.data))

    def at(self, t: float, pkt: RtpPacket) -> None:
        """Deliver ``pkt`` at ``t`` seconds after the start."""
        self.loop.advance(self.t0 + t)
        self.buffer.add(pkt)

    def run(self, until: float) -> None:
        self.loop.advance(self.t0 + until)

    def stream(
        self, ks: range | list[int], delay: Callable[[int], float] = lambda k: 0.001, **kw: Any
    ) -> None:
        """Deliver packets ``ks`` now, in arrival order, packet k at ``k * 20 ms + delay(k)``
        (the clock and its timers advance to each arrival)."""
        arrivals = sorted((k * PERIOD + delay(k), i, k) for i, k in enumerate(ks))
        for t, _, k in arrivals:
            self.at(t, packet(k, **kw))

    def ks(self) -> list[int | None]:
        return [o.k for o in self.out]

    @property
    def stats(self) -> JitterStats:
        return self.buffer.stats()


def unwrapped(timestamps_: list[int]) -> list[int]:
    out, base, last = [], 0, None
    for ts in timestamps_:
        if last is not None and ts < last - (1 << 31):
            base += 1 << 32
        last = ts
        out.append(ts + base)
    return out


def strictly_increasing(values: list[int]) -> bool:
    return all(b > a for a, b in itertools.pairwise(values))


# --------------------------------------------------------------------------- clean link


def test_clean_link_early_release_hands_each_packet_on_as_it_arrives() -> None:
    h = Harness()
    h.stream(range(100))
    h.run(2.1)
    assert h.ks() == list(range(100))
    assert [round(o.at - h.t0 - k * PERIOD, 6) for k, o in enumerate(h.out)] == [0.001] * 100
    expected = JitterStats(received=100, released=100, target_delay_ms=3, reorder_wait_ms=3)
    assert dataclasses.asdict(h.stats) == pytest.approx(dataclasses.asdict(expected))
    # a timer is armed for a stall after each packet, but none has fired: no polling
    assert h.loop.fired == 0 and h.loop.pending == 1
    # the sender stops: frame 100 is waited for up to max_delay, then 10 are concealed
    h.run(3.0)
    assert h.ks()[100:] == [None] * 10 and h.stats.concealed == 10
    assert h.out[100].at - h.t0 == pytest.approx(100 * PERIOD + 0.001 + 0.200)
    assert h.loop.fired == 10 and h.loop.pending == 0


def test_clean_link_paced_release_waits_at_most_about_a_packet() -> None:
    h = Harness(release="paced")
    rng = random.Random(1)
    h.stream(range(200), lambda k: 0.001 + rng.uniform(0, 0.002))
    h.run(4.1)
    real = [o for o in h.out if not o.concealed]
    assert [o.k for o in real] == list(range(200))
    waits = [o.at - h.t0 - o.k * PERIOD for o in real]  # type: ignore[operator]
    assert max(waits) <= PERIOD, f"waited up to {max(waits) * 1000:.1f} ms"
    assert h.stats.target_delay_ms <= 2 + 3 + 0.5  # spread + margin
    # frames leave at their playout time: evenly spaced once the estimate settled
    gaps = np.diff([o.at for o in real[50:]])
    assert np.allclose(gaps, PERIOD, atol=0.0025)


# --------------------------------------------------------------------------- loss, reordering


def test_lost_packet_is_concealed_when_the_next_one_shows_the_gap() -> None:
    h = Harness()
    h.stream([k for k in range(30) if k != 10])
    h.run(0.7)
    assert h.ks()[:12] == [*range(10), None, 11]
    concealed = h.out[10]
    assert concealed.data == bytes([TOC]) and concealed.timestamp == 50_000 + 10 * TICKS
    # concealed as soon as packet 11 shows the gap: frame 10 was due 3 ms after its
    # expected arrival (the target delay); no reordering was seen, so no waiting for it
    assert concealed.at - h.t0 == pytest.approx(11 * PERIOD + 0.001)
    assert h.out[11].at == concealed.at
    stats = h.stats
    assert (stats.released, stats.concealed, stats.late) == (29, 1, 0)


def test_reorder_wait_learns_from_a_late_packet() -> None:
    """The first reordered packet comes after a 3 ms wait and is late; the buffer then
    waits long enough for the same reordering."""
    h = Harness()
    delays = {k: 0.001 for k in range(80)}
    for k in (20, 40, 60):
        delays[k] = 0.001 + PERIOD + 0.005  # arrives 5 ms after k + 1
    h.stream(range(80), delays.__getitem__)
    h.run(2.0)
    assert h.stats.late == 1
    assert h.ks()[:22] == [*range(20), None, 21]
    real = [k for k in h.ks() if k is not None]
    assert real == sorted(real) and real[20:] == [21, *range(22, 80)]
    assert h.stats.reorder_wait_ms >= 5 + 3 - 0.01
    assert h.stats.concealed == 1 + 10  # the first reordered one; the final stall


def test_packet_after_its_playout_time_is_dropped_as_late() -> None:
    h = Harness(release="paced")
    delays = {k: 0.001 for k in range(60)}
    delays[30] = 0.150
    h.stream(range(60), delays.__getitem__)
    h.run(1.3)
    ks = h.ks()
    assert ks.index(None) == 30 and ks.count(31) == 1 and 30 not in ks
    assert h.stats.late == 1
    # the late packet raised the target delay (lateness is measured) ...
    assert h.stats.target_delay_ms >= 140
    # ... which stays within max_delay
    assert h.buffer.target_delay <= h.buffer.max_delay


def test_target_delay_grows_with_jitter_is_bounded_and_decays_slowly() -> None:
    h = Harness(release="paced")
    rng = random.Random(7)
    h.stream(range(250), lambda k: 0.001 + rng.uniform(0, 0.060))
    during = h.stats.target_delay_ms
    assert 50 <= during <= 64
    assert h.stats.late <= 250 * 0.02
    # the window still holds jittery transits for 250 packets, then the target falls by
    # at most decay (10 ms/s), not at once
    h.stream(range(250, 525))
    assert 30 < h.stats.target_delay_ms < during
    h.stream(range(525, 1000))
    assert h.stats.target_delay_ms == pytest.approx(3.0)
    assert h.stats.late <= 250 * 0.02
    bounded = Harness(release="paced", max_delay=0.1)
    huge = random.Random(3)
    bounded.stream(range(400), lambda k: huge.uniform(0, 0.5))
    bounded.run(9)
    assert bounded.buffer.target_delay == pytest.approx(0.1)


def test_stall_is_waited_out_up_to_max_delay_then_concealed_and_the_stream_resumes() -> None:
    """A sender pause (its timestamps frozen): the buffer conceals max_conceal frames
    after max_delay, waits, and the stream resumes with the first packet after it."""
    h = Harness(max_conceal=5)
    h.stream(range(10))
    h.run(1.0)
    assert h.ks() == [*range(10), None, None, None, None, None]
    first = h.out[10]
    # frame 10 was due 0.2 s + 1 ms; waited out up to max_delay
    assert first.at - h.t0 == pytest.approx(10 * PERIOD + 0.001 + 0.2, abs=1e-9)
    assert h.loop.pending == 0, "the buffer keeps a timer running while stalled"
    for k in range(10, 20):  # resumes 1 s later with the next sequence numbers
        h.at(1.0 + (k - 10) * PERIOD, packet(k, ts0=50_000))
    h.run(1.5)
    assert h.ks()[15:25] == list(range(10, 20)), "the resumed packets were dropped"
    assert strictly_increasing([o.timestamp for o in h.out])
    assert h.stats.late == 0 and h.stats.resyncs >= 1


def test_short_network_stall_loses_nothing() -> None:
    """A 150 ms hold-up (the packets then arrive at once, in order) is waited out."""
    h = Harness()
    h.stream(range(40), lambda k: max(0.001, 0.351 - k * PERIOD) if 10 <= k < 18 else 0.001)
    h.run(1.0)
    assert h.ks() == list(range(40))
    assert h.stats.concealed == h.stats.late == 0


def test_long_gap_conceals_max_conceal_frames_then_skips() -> None:
    h = Harness(max_delay=1.0)  # no stall concealment before the gap is seen
    h.stream([*range(10), *range(30, 40)])
    h.run(1.0)
    assert h.ks() == [*range(10), *[None] * 10, *range(30, 40)]
    assert h.stats.skipped == 10 and h.stats.concealed == 10


def test_stall_longer_than_max_conceal_then_a_gap_skips() -> None:
    h = Harness()
    h.stream([*range(10), *range(30, 40)])
    h.run(1.0)
    assert h.ks() == [*range(10), *[None] * 10, *range(30, 40)]
    assert h.stats.skipped == 10 and h.stats.concealed == 10 and h.stats.late == 0


def test_duplicates_are_dropped() -> None:
    h = Harness()
    for k in range(10):
        h.at(k * PERIOD, packet(k))
        if k in (3, 7):
            h.at(k * PERIOD + 0.005, packet(k))
    h.at(0.5, packet(5))
    assert h.ks()[:10] == list(range(10))
    assert h.stats.duplicates == 3 and h.stats.late == 0


def test_empty_payload_is_concealed() -> None:
    h = Harness()
    for k in range(6):
        h.at(k * PERIOD, packet(k, payload=b"" if k == 3 else None))
    assert h.ks() == [0, 1, 2, None, 4, 5]
    assert h.stats.discarded == 1 and h.stats.concealed == 1


# --------------------------------------------------------------------------- wrap, restart


def test_sequence_numbers_wrap() -> None:
    h = Harness()
    h.stream(range(40), seq0=65_520)
    h.at(0.9, packet(39, seq0=65_520))  # a duplicate across the wrap
    assert h.ks()[:40] == list(range(40))
    assert h.stats.resyncs == 0 and h.stats.duplicates == 1


def test_timestamps_wrap() -> None:
    h = Harness()
    ts0 = (1 << 32) - 10 * TICKS
    h.stream([k for k in range(30) if k != 10], ts0=ts0)  # the lost one at the wrap
    out = h.out[:30]
    assert [o.k for o in out] == [*range(10), None, *range(11, 30)]
    assert [o.timestamp for o in out] == [(ts0 + TICKS * k) & 0xFFFFFFFF for k in range(30)]
    assert h.stats.resyncs == 0


def test_big_jump_restarts_the_stream_and_keeps_timestamps_increasing() -> None:
    h = Harness(release="paced")
    h.stream(range(20))
    h.run(0.5)
    # the sender restarts: new sequence numbers and timestamps, from t = 0.5 s
    for k in range(20):
        h.at(0.5 + k * PERIOD + 0.001, packet(k, seq0=30_000, ts0=7))
    h.run(1.5)
    real = [o for o in h.out if not o.concealed]
    assert [o.k for o in real] == [*range(20), *range(20)]
    assert strictly_increasing(unwrapped([o.timestamp for o in h.out]))
    assert h.stats.resyncs >= 1 and h.stats.late == 0


def test_new_ssrc_restarts_the_stream() -> None:
    h = Harness()
    h.stream(range(10))
    for k in range(10, 20):
        h.at(k * PERIOD + 0.001, packet(k, ssrc=2, seq0=5, ts0=123))
    assert [o.k for o in h.out if not o.concealed] == list(range(20))
    assert h.stats.resyncs == 1
    assert strictly_increasing(unwrapped([o.timestamp for o in h.out]))


def test_start_with_reordered_first_packets_paced() -> None:
    """Paced release waits before the first frame, so earlier packets still fit."""
    h = Harness(release="paced", min_delay=0.03)
    h.at(0.021, packet(1))
    h.at(0.025, packet(0))
    h.stream(range(2, 10))
    h.run(0.5)
    assert h.ks()[:10] == list(range(10))


def test_close_stops_the_timer_and_the_sink() -> None:
    h = Harness()
    h.stream(range(5))
    assert h.loop.pending == 1
    h.buffer.close()
    assert h.loop.pending == 0
    h.at(0.2, packet(5))
    h.run(2)
    assert h.ks() == list(range(5)) and h.buffer.closed


def test_options_are_validated() -> None:
    with pytest.raises(ValueError, match="release must be"):
        AdaptiveJitterBuffer(lambda f, p: None, loop=ManualLoop(), release="fast")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="min_delay"):
        AdaptiveJitterBuffer(lambda f, p: None, loop=ManualLoop(), min_delay=0.3)
    with pytest.raises(ValueError, match="quantile"):
        AdaptiveJitterBuffer(lambda f, p: None, loop=ManualLoop(), quantile=0)


def test_opus_concealment_keeps_the_toc_configuration() -> None:
    assert opus_concealment(PT, bytes([0x7B, 1, 2])) == bytes([0x78])  # code 3 -> code 0
    assert opus_concealment(PT, b"") is None


# --------------------------------------------------------------------------- property


@settings(max_examples=150)
@given(
    data=st.data(),
    release=st.sampled_from(["early", "paced"]),
    n=st.integers(2, 60),
    depth_ms=st.integers(0, 80),
    seq0=st.integers(0, 0xFFFF),
    ts0=st.integers(0, 0xFFFFFFFF),
)
def test_any_arrival_order_within_the_depth_comes_out_in_order(
    data: st.DataObject, release: str, n: int, depth_ms: int, seq0: int, ts0: int
) -> None:
    """Arrival k * 20 ms + d_k with d_k within the depth (min_delay): every packet leaves
    once, in order, none concealed, except (early release) packets older than the first
    one to arrive, which cannot be waited for."""
    depth = depth_ms / 1000
    delays = data.draw(st.lists(st.integers(0, depth_ms), min_size=n, max_size=n))
    h = Harness(release=release, min_delay=depth + 0.001)
    h.stream(range(n), lambda k: delays[k] / 1000, seq0=seq0, ts0=ts0)
    h.run(n * PERIOD + 1.0)
    first = min(range(n), key=lambda k: (k * PERIOD + delays[k] / 1000, k))
    expected = list(range(n)) if release == "paced" else list(range(first, n))
    real = [o.k for o in h.out if not o.concealed]
    assert real == expected
    assert h.stats.late == n - len(expected)
    assert all(o.concealed for o in h.out[len(expected) :])  # only the final stall
    assert strictly_increasing(unwrapped([o.timestamp for o in h.out]))


@settings(max_examples=150)
@given(
    data=st.data(),
    release=st.sampled_from(["early", "paced"]),
    n=st.integers(1, 48),  # fewer than RESYNC_AFTER_LATE
    seq0=st.integers(0, 0xFFFF),
    ts0=st.integers(0, 0xFFFFFFFF),
)
def test_any_arrivals_leave_in_order_each_timestamp_at_most_once(
    data: st.DataObject, release: str, n: int, seq0: int, ts0: int
) -> None:
    """Whatever arrives when (loss, duplicates, any delay up to a second): frames leave
    with strictly increasing timestamps, each packet at most once and in order, and
    every packet is accounted for."""
    arrivals = data.draw(
        st.lists(
            st.tuples(st.integers(0, n - 1), st.floats(0, 1.0, allow_nan=False)),
            max_size=2 * n,
        )
    )
    h = Harness(release=release)
    for t, k in sorted((k * PERIOD + d, k) for k, d in arrivals):
        h.at(t, packet(k, seq0=seq0, ts0=ts0))
    h.run(n * PERIOD + 3.0)
    timestamps_ = unwrapped([o.timestamp for o in h.out])
    assert strictly_increasing(timestamps_)
    real = [o.k for o in h.out if not o.concealed]
    assert len(real) == len(set(real))
    assert real == sorted(real)  # one stream, no restarts: packet order is kept
    s = h.stats
    assert s.received == len(arrivals)
    assert s.released + s.late + s.duplicates + s.discarded == s.received
    assert s.released == len(real) and s.concealed == len(h.out) - len(real)
    assert h.loop.pending == 0 and s.buffered == 0


# --------------------------------------------------------------------------- the hook


def test_unknown_aiortc_version_fails_loudly() -> None:
    with pytest.raises(RuntimeError) as info:
        jitter.check_aiortc_version("0.0.1")
    message = str(info.value)
    assert "0.0.1" in message and "jitter_buffer='aiortc'" in message
    assert TESTED_AIORTC_VERSIONS[0] in message
    jitter.check_aiortc_version(TESTED_AIORTC_VERSIONS[0])


def test_server_validates_the_option(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match=r"jitter_buffer must be one of 'adaptive', 'aiortc'"):
        StreamServer(
            mode="send",
            modality="audio",
            handler=MarkerHandler(),
            jitter_buffer="big",  # type: ignore[arg-type]
        )
    import aiortc

    monkeypatch.setattr(aiortc, "__version__", "9.9.9")
    with pytest.raises(RuntimeError, match=r"aiortc 9\.9\.9 is installed"):
        StreamServer(
            mode="send", modality="audio", handler=MarkerHandler(), jitter_buffer="adaptive"
        )
    # aiortc's own buffer (the default), and modes without inbound audio, need no tested
    # version
    StreamServer(mode="send", modality="audio", handler=MarkerHandler())
    StreamServer(mode="send", modality="audio", handler=MarkerHandler(), jitter_buffer="aiortc")
    StreamServer(mode="send-receive", modality="video", handler=lambda frame: frame)


def test_component_validates_the_option() -> None:
    from webrtc_ref.component import WebRTC

    with pytest.raises(ValueError, match="jitter_buffer must be one of"):
        WebRTC(modality="audio", jitter_buffer="none")  # type: ignore[arg-type]
    assert WebRTC(modality="audio", jitter_buffer="aiortc").jitter_buffer == "aiortc"


async def test_install_replaces_only_audio_receivers_before_they_start() -> None:
    from aiortc import RTCPeerConnection

    pc = RTCPeerConnection()
    try:
        audio = pc.addTransceiver("audio").receiver
        video = pc.addTransceiver("video").receiver
        buffer = jitter.install(audio)
        assert audio._RTCRtpReceiver__jitter_buffer is buffer
        assert jitter.install(audio) is buffer
        with pytest.raises(ValueError, match="video keeps aiortc's"):
            jitter.install(video)
    finally:
        await pc.close()


# --------------------------------------------------------------------------- integration


class MarkerHandler(StreamHandler):
    """Records when each timestamp marker of the client's audio reaches ``receive``.

    ``arrivals``: (sent sample, ``time.time()`` at the receive call of the block holding
    the marker's start), shared by every copy.
    """

    def __init__(self, arrivals: list[tuple[int, float]] | None = None) -> None:
        super().__init__(input_sample_rate=48000)
        self.arrivals = arrivals if arrivals is not None else []
        self.blocks = 0
        self._decoder = timestamps.TimestampDecoder(48000)
        self._starts: list[tuple[int, float]] = []  # (position, receive time) per block
        self._n = 0

    def receive(self, frame: tuple[int, np.ndarray]) -> None:
        now = time.time()
        _, block = frame
        mono = block.reshape(-1)
        self._starts.append((self._n, now))
        self._n += mono.size
        self.blocks += 1
        for marker in self._decoder.push(mono):
            arrival = next(t for pos, t in reversed(self._starts) if pos <= marker.position)
            self.arrivals.append((marker.sent_sample, arrival))
        del self._starts[:-20]

    def emit(self) -> None:
        return None

    def copy(self) -> MarkerHandler:
        return MarkerHandler(self.arrivals)


def latencies(track: TimestampAudioTrack, arrivals: list[tuple[int, float]]) -> list[float]:
    """Into-handler latency (s) of each marker: receive time - send time of its sample."""
    sent = track.sent_markers
    return [t - sent[s] for s, t in arrivals if s in sent]


@pytest.fixture
async def cleanup() -> AsyncIterator[list[Any]]:
    """Servers (shut down), peers and impaired paths (closed) made by a test."""
    made: list[Any] = []
    yield made
    for thing in reversed(made):
        if isinstance(thing, StreamServer):
            await thing.shutdown()
        else:
            await thing.close()


async def _stream_markers(
    cleanup: list[Any], jitter_buffer: str, markers: int, path: ImpairedPath | None = None
) -> tuple[list[float], StreamServer, TimestampAudioTrack]:
    arrivals: list[tuple[int, float]] = []
    server = StreamServer(
        mode="send",
        modality="audio",
        handler=MarkerHandler(arrivals),
        jitter_buffer=jitter_buffer,  # type: ignore[arg-type]
    )
    cleanup.append(server)
    track = TimestampAudioTrack()
    peer = ClientPeer(send=track)
    cleanup.append(peer)

    async def signal(body: dict[str, str]) -> dict[str, Any]:
        if path is not None:
            body = {**body, "sdp": path.rewrite_sdp(body["sdp"], "client")}
        reply = await server.offer(body)
        if path is not None and reply.get("type") == "answer":
            reply = {**reply, "sdp": path.rewrite_sdp(str(reply["sdp"]), "server")}
        return reply

    assert (await peer.connect(signal))["type"] == "answer"
    await async_wait_until(
        lambda: len(arrivals) >= markers, 5 + markers * 0.2, f"{markers} markers at the handler"
    )
    return latencies(track, arrivals), server, track


@pytest.mark.timeout(90)
async def test_adaptive_buffer_beats_aiortc_into_the_handler(cleanup: list[Any]) -> None:
    """The same timestamped audio into two handlers at once, one connection behind each
    buffer: adaptive's median into-handler latency is at least 40 ms below aiortc's."""
    (adaptive, server, _), (aiortc_, _, _) = await asyncio.gather(
        _stream_markers(cleanup, "adaptive", 40), _stream_markers(cleanup, "aiortc", 40)
    )
    a, b = statistics.median(adaptive[5:]), statistics.median(aiortc_[5:])
    logging.getLogger(__name__).info(
        "into handler: adaptive p50 %.1f ms, aiortc p50 %.1f ms", a * 1000, b * 1000
    )
    assert b - a >= 0.040, f"adaptive {a * 1000:.1f} ms vs aiortc {b * 1000:.1f} ms"
    connection = server.connections[0]
    assert connection.jitter_buffer is not None
    stats = connection.jitter_buffer.stats()
    assert stats.released > 100 and stats.skipped == 0
    # and the server reports it per connection
    assert server.stats().jitter[connection.tag].released >= stats.released


@pytest.mark.slow
@pytest.mark.timeout(120)
@pytest.mark.parametrize("reorders", [False, True], ids=["fifo", "reordering"])
async def test_impaired_link_stays_continuous_without_growing_delay(
    cleanup: list[Any], caplog: pytest.LogCaptureFixture, reorders: bool
) -> None:
    """30 ms jitter (uniform, on 40 ms delay) and 2 % loss on the client's RTP for about
    10 s: lost packets are concealed, at most 2 % of frames are late, the handler gets a
    continuous stream, and the into-handler delay does not grow."""
    path = ImpairedPath(
        upstream=Impairment(
            delay_s=0.040,
            jitter_s=0.030,
            jitter_reorders=reorders,
            loss=0.02,
            applies_to=RTP_ONLY,
            seed=17,
        )
    )
    await path.start()
    cleanup.append(path)
    with caplog.at_level(logging.WARNING, logger="aiortc"):
        delays, server, track = await _stream_markers(cleanup, "adaptive", 100, path)
    connection = server.connections[0]
    assert connection.jitter_buffer is not None
    stats = connection.jitter_buffer.stats()
    lost = path.upstream.stats.dropped
    frames = stats.released + stats.concealed
    logging.getLogger(__name__).info("impaired (%s): %s, lost %d", reorders, stats, lost)
    assert lost > 0 and stats.late <= 0.02 * frames, stats
    assert stats.concealed <= lost + 0.02 * frames, (stats, lost)
    assert stats.skipped == 0 and stats.resyncs == 0, stats
    # continuous: every frame sent reached the decoder, but those still in flight
    assert frames >= track.samples_sent // 960 - 20, (frames, track.samples_sent)
    assert not [r for r in caplog.records if "failed to decode" in r.getMessage()]
    # no growing delay: the last 3 s are no slower than the first 3 s (after warm-up)
    early, late_ = statistics.median(delays[5:35]), statistics.median(delays[-30:])
    assert late_ - early <= 0.030, f"{early * 1000:.0f} ms -> {late_ * 1000:.0f} ms"


def test_opus_concealment_decodes_with_aiortcs_decoder() -> None:
    """aiortc's Opus decoder turns a concealment payload into 20 ms of audio that goes on
    from the last frame, and keeps decoding after it; an empty payload would end it."""
    import fractions

    import av
    from aiortc.codecs.opus import OpusDecoder, OpusEncoder
    from aiortc.jitterbuffer import JitterFrame

    encoder, payloads = OpusEncoder(), []
    for k in range(12):
        t = (k * 960 + np.arange(960)) / 48000
        pcm = (0.5 * np.sin(2 * np.pi * 440 * t) * 32767).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate, frame.pts = 48000, k * 960
        frame.time_base = fractions.Fraction(1, 48000)
        payloads += encoder.encode(frame)[0]
    decoder = OpusDecoder()
    levels = []
    for k, payload in enumerate(payloads):
        data = opus_concealment(PT, payloads[k - 1]) if k in (6, 7) else payload
        (decoded,) = decoder.decode(JitterFrame(data, k * 960))
        assert decoded.samples == 960
        levels.append(float(np.abs(decoded.to_ndarray()).mean()))
    assert min(levels[6:8]) > 0.3 * statistics.median(levels), levels  # not silence
    assert decoder.decode(JitterFrame(b"", 99 * 960)) == []
    with pytest.raises(EOFError):
        decoder.decode(JitterFrame(payloads[-1], 100 * 960))


# -- inbound video: frames out at their marker packet --------------------------------------


def _video_packet(seq: int, ts: int, marker: bool, data: bytes) -> RtpPacket:
    packet = RtpPacket(payload_type=96, sequence_number=seq & 0xFFFF, timestamp=ts)
    packet.marker = int(marker)
    packet._data = data  # type: ignore[attr-defined]  # what aiortc's depayloader sets
    return packet


def _frames_of(packets: list[RtpPacket], buffer: Any) -> list[tuple[int, int, bytes]]:
    """(index of the packet after which a frame came out, its timestamp, its data)."""
    out = []
    for index, packet in enumerate(packets):
        _, frame = buffer.add(packet)
        if frame is not None:
            out.append((index, frame.timestamp, frame.data))
    return out


def test_video_frame_leaves_at_its_marker_packet_not_with_the_next_frame() -> None:
    from aiortc.jitterbuffer import JitterBuffer

    # three frames of 3, 1 and 2 packets, sequence numbers wrapping past 65535
    layout = [(3000, [b"a1", b"a2", b"a3"]), (6000, [b"b1"]), (9000, [b"c1", b"c2"])]
    packets, seq = [], 65533
    for ts, parts in layout:
        for i, part in enumerate(parts):
            packets.append(_video_packet(seq, ts, i == len(parts) - 1, part))
            seq += 1
    eager = jitter.EagerVideoJitterBuffer(capacity=128)
    assert _frames_of(packets, eager) == [
        (2, 3000, b"a1a2a3"),
        (3, 6000, b"b1"),
        (5, 9000, b"c1c2"),
    ]
    assert eager.eager_frames == 3
    # aiortc's own buffer lets each frame out only with the next frame's first packet
    stock = JitterBuffer(capacity=128, is_video=True)
    assert [(i, ts) for i, ts, _ in _frames_of(packets, stock)] == [(3, 3000), (4, 6000)]


def test_video_frame_with_a_missing_packet_waits_as_aiortc_would() -> None:
    # frame 1's middle packet comes after its marker packet; frame 2 follows
    a1, a2, a3 = (_video_packet(100 + i, 3000, i == 2, b"a%d" % i) for i in range(3))
    b1 = _video_packet(103, 6000, True, b"b")
    eager = jitter.EagerVideoJitterBuffer(capacity=128)
    assert _frames_of([a1, a3], eager) == []  # the gap: nothing yet
    assert _frames_of([a2], eager) == [(0, 3000, b"a0a1a2")]  # whole, in order
    assert _frames_of([b1], eager) == [(0, 6000, b"b")]


async def test_video_receivers_get_the_eager_buffer(peers: Callable[..., ClientPeer]) -> None:
    from fixtures.tracks import BarcodeVideoTrack

    server = StreamServer(
        mode="send-receive", modality="video", handler=lambda frame: frame, concurrency_limit=None
    )
    try:
        peer = peers(send=BarcodeVideoTrack(160, 120))
        reply = await peer.connect(server.offer)
        assert reply.get("type") == "answer", reply
        await peer.wait_connected()
        connection = server.connection(peer.webrtc_id)
        assert connection is not None
        receiver = next(t.receiver for t in connection.pc.getTransceivers())
        buffer = getattr(receiver, jitter._PRIVATE + "jitter_buffer")
        assert isinstance(buffer, jitter.EagerVideoJitterBuffer)
        await async_wait_until(lambda: buffer.eager_frames >= 10, 10, "frames out at their marker")
    finally:
        await server.shutdown()
