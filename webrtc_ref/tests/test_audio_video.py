"""modality="audio-video": one peer connection carries camera and microphone both ways,
through an ``AudioVideoStreamHandler`` (sync) or ``AsyncAudioVideoStreamHandler``.

Real aiortc client peers send fixture audio (a tone, timestamp markers) and barcoded
video to a ``StreamServer`` in-process; what comes back is checked by content.
"""

from __future__ import annotations

import asyncio
import queue
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import numpy as np
import pytest

from fixtures.analysis import dominant_frequency
from fixtures.tracks import AudioRecorder, BarcodeVideoTrack, FrameRecorder, ToneAudioTrack
from webrtc_ref import (
    AdditionalOutputs,
    AsyncAudioVideoStreamHandler,
    AudioVideoStreamHandler,
    CloseStream,
    WebRTC,
)
from webrtc_ref.demos.echo_audio import EchoHandler
from webrtc_ref.server import StreamServer
from webrtc_ref.testing import ClientPeer, async_wait_until

pytestmark = pytest.mark.timeout(60)


class EchoAV(AudioVideoStreamHandler):
    """Echoes both tracks; ``video_delay`` s of work in every ``video_receive``."""

    def __init__(self, video_delay: float = 0.0, close_after: int | None = None) -> None:
        super().__init__(input_sample_rate=48000, output_sample_rate=48000)
        self.audio: queue.Queue[Any] = queue.Queue()
        self.video: queue.Queue[Any] = queue.Queue()
        self.video_delay = video_delay
        self.close_after = close_after
        self.receives = 0
        self.video_receives = 0
        self.video_emits = 0

    def receive(self, frame: tuple[int, np.ndarray]) -> None:
        self.receives += 1
        self.audio.put(frame)

    def emit(self) -> Any:
        return self.audio.get()

    def video_receive(self, frame: np.ndarray) -> None:
        assert frame.dtype == np.uint8 and frame.ndim == 3 and frame.shape[2] == 3
        if self.video_delay:
            time.sleep(self.video_delay)
        self.video_receives += 1
        self.video.put(frame)

    def video_emit(self) -> Any:
        frame = self.video.get()
        if frame is None:
            return None
        self.video_emits += 1
        if self.close_after is not None and self.video_emits >= self.close_after:
            return frame, CloseStream("enough video")
        if self.video_emits % 10 == 0:
            return frame, AdditionalOutputs(self.video_emits)
        return frame

    def copy(self) -> EchoAV:
        return EchoAV(self.video_delay, self.close_after)


class AsyncEchoAV(AsyncAudioVideoStreamHandler):
    """The async twin of :class:`EchoAV`; its queues live on the connection's loop."""

    def __init__(self) -> None:
        super().__init__(input_sample_rate=48000, output_sample_rate=48000)
        self.audio: asyncio.Queue[Any] | None = None
        self.video: asyncio.Queue[Any] | None = None
        self.loops: set[int] = set()

    async def start_up(self) -> None:
        self.audio, self.video = asyncio.Queue(), asyncio.Queue()

    async def receive(self, frame: tuple[int, np.ndarray]) -> None:
        self.loops.add(id(asyncio.get_running_loop()))
        if self.audio is not None:
            self.audio.put_nowait(frame)

    async def emit(self) -> Any:
        return None if self.audio is None else await self.audio.get()

    async def video_receive(self, frame: np.ndarray) -> None:
        self.loops.add(id(asyncio.get_running_loop()))
        if self.video is not None:
            self.video.put_nowait(frame)

    async def video_emit(self) -> Any:
        return None if self.video is None else await self.video.get()

    def copy(self) -> AsyncEchoAV:
        return AsyncEchoAV()


@pytest.fixture
async def servers() -> AsyncIterator[Callable[..., StreamServer]]:
    made: list[StreamServer] = []

    def make(handler: Any, **kwargs: Any) -> StreamServer:
        server = StreamServer(
            mode="send-receive",
            modality="audio-video",
            handler=handler,
            concurrency_limit=None,
            **kwargs,
        )
        made.append(server)
        return server

    yield make
    for server in made:
        await server.shutdown()


def av_peer(peers: Callable[..., ClientPeer], freq: float = 660.0) -> ClientPeer:
    return peers(send=[ToneAudioTrack(freq), BarcodeVideoTrack(320, 240, fps=30)])


async def connect(server: StreamServer, peer: ClientPeer) -> None:
    reply = await peer.connect(server.offer)
    assert reply.get("type") == "answer", reply
    await peer.wait_connected()
    await async_wait_until(lambda: set(peer.remotes) == {"audio", "video"}, 10, "both tracks")


async def check_echo(peer: ClientPeer, freq: float) -> tuple[AudioRecorder, FrameRecorder]:
    audio = AudioRecorder(peer.remotes["audio"], decode_timestamps=False)
    video = FrameRecorder(peer.remotes["video"])
    await audio.start()
    await video.start()
    assert await video.wait_for(20, 15), f"readable frames back: {len(video.ids())}"
    assert await audio.wait_until(lambda: len(audio.frames) >= 100, 15), len(audio.frames)
    ids = video.ids()
    assert ids == sorted(ids) and len(set(ids)) == len(ids), f"frame ids out of order: {ids}"
    tail = audio.samples()[-48000:]
    assert abs(dominant_frequency(tail, audio.sample_rate or 48000) - freq) < 5
    return audio, video


async def test_echo_both_tracks_by_content(
    servers: Callable[..., StreamServer], peers: Callable[..., ClientPeer]
) -> None:
    handler = EchoAV()
    server = servers(handler)
    peer = av_peer(peers)
    await connect(server, peer)
    audio, video = await check_echo(peer, 660.0)
    await async_wait_until(
        lambda: any('"change"' in m or m == "change" for m in peer.messages), 10, "change"
    )
    connection = server.connection(peer.webrtc_id)
    assert connection is not None and connection.video_out_track is not None
    await audio.stop()
    await video.stop()


async def test_async_handler_echoes_both_on_one_private_loop(
    servers: Callable[..., StreamServer], peers: Callable[..., ClientPeer]
) -> None:
    server = servers(AsyncEchoAV())
    peer = av_peer(peers, 550.0)
    await connect(server, peer)
    audio, video = await check_echo(peer, 550.0)
    connection = server.connection(peer.webrtc_id)
    assert connection is not None
    handler = connection.runner.handler  # type: ignore[attr-defined]
    assert len(handler.loops) == 1 and id(asyncio.get_running_loop()) not in handler.loops
    await audio.stop()
    await video.stop()


async def test_slow_video_receive_does_not_hold_audio(
    servers: Callable[..., StreamServer], peers: Callable[..., ClientPeer]
) -> None:
    """video_receive takes 150 ms per frame (5x slower than the camera): audio still
    reaches the handler every 20 ms and comes back whole; video keeps the newest frame."""
    server = servers(EchoAV(video_delay=0.15))
    peer = av_peer(peers, 440.0)
    await connect(server, peer)
    connection = server.connection(peer.webrtc_id)
    assert connection is not None
    handler = connection.runner.handler  # type: ignore[attr-defined]
    audio = AudioRecorder(peer.remotes["audio"], decode_timestamps=False)
    video = FrameRecorder(peer.remotes["video"])
    await audio.start()
    await video.start()
    assert await video.wait_for(3, 15)
    start_receives, start = handler.receives, time.monotonic()
    start_frames = len(audio.frames)
    await asyncio.sleep(2.0)  # a measured window, not a wait for a condition
    elapsed = time.monotonic() - start
    receives = handler.receives - start_receives
    frames = len(audio.frames) - start_frames
    assert receives >= 0.85 * elapsed / 0.02, f"{receives} receive calls in {elapsed:.2f} s"
    assert frames >= 0.85 * elapsed / 0.02, f"{frames} audio frames back in {elapsed:.2f} s"
    arrivals = [arrival for _, _, arrival in audio.frames[start_frames:]]
    gaps = np.diff(arrivals)
    assert gaps.max() < 0.1, f"largest gap in the returned audio: {gaps.max() * 1000:.0f} ms"
    assert handler.video_receives <= elapsed / 0.15 + 10
    assert connection.runner.dropped_video_frames > 0  # type: ignore[attr-defined]
    ids = video.ids()
    assert ids == sorted(ids)
    await audio.stop()
    await video.stop()


async def test_close_stream_from_video_emit(
    servers: Callable[..., StreamServer], peers: Callable[..., ClientPeer]
) -> None:
    server = servers(EchoAV(close_after=15))
    peer = av_peer(peers)
    await connect(server, peer)
    video = FrameRecorder(peer.remotes["video"])
    await video.start()
    await async_wait_until(
        lambda: any(m.get("type") == "end_stream" for m in peer.json_messages()), 15, "end"
    )
    end = next(m for m in peer.json_messages() if m.get("type") == "end_stream")
    assert end["reason"] == "handler_closed" and end["message"] == "enough video", end
    assert len(video.ids()) >= 5
    await video.stop()


async def test_offer_must_carry_both_kinds(
    servers: Callable[..., StreamServer], peers: Callable[..., ClientPeer]
) -> None:
    server = servers(EchoAV())
    audio_only = peers(send=ToneAudioTrack())
    reply = await audio_only.connect(server.offer)
    meta = reply.get("meta")
    assert isinstance(meta, dict) and meta["error"] == "unsupported_media", reply
    assert "send video" in meta["message"], meta
    two_video = peers(send=[BarcodeVideoTrack(160, 120), BarcodeVideoTrack(160, 120)])
    reply = await two_video.connect(server.offer)
    meta = reply.get("meta")
    assert isinstance(meta, dict) and meta["error"] == "unsupported_media", reply
    assert "one video track" in meta["message"], meta
    assert server.stats().connections == 0


def test_construction_rules() -> None:
    with pytest.raises(ValueError, match="mode 'send' is not supported for modality"):
        WebRTC(modality="audio-video", mode="send")
    with pytest.raises(ValueError, match="mode 'receive' is not supported for modality"):
        WebRTC(modality="audio-video", mode="receive")
    component = WebRTC(modality="audio-video", mode="send-receive")
    assert set(component.track_constraints) == {"audio", "video"}
    with pytest.raises(ValueError, match="track_constraints"):
        WebRTC(modality="audio-video", track_constraints={"width": 640})
    with pytest.raises(ValueError, match="AudioVideoStreamHandler"):
        StreamServer(mode="send-receive", modality="audio-video", handler=EchoHandler())
