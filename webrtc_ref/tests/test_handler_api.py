"""fastrtc's handler API on webrtc_ref, end to end: real aiortc client peers talk to a
StreamServer in-process (and, for ``WebRTC.close``, to a launched Gradio app).

Covered: ``AsyncStreamHandler`` (own loop, ``start_up``, async ``wait_for_args``),
``StreamHandler.start_up``, ``CloseStream``, ``StreamServer.close`` / ``WebRTC.close``,
``Warning`` / ``WebRTCError``, ``get_current_context``, ``send_message`` forms and
``VideoStreamHandler``.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import numpy as np
import pytest
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from fixtures.analysis import dominant_frequency
from fixtures.audio import tone
from fixtures.tracks import BarcodeVideoTrack, ToneAudioTrack
from fixtures.video import read_frame_id
from webrtc_ref import (
    AsyncStreamHandler,
    CloseStream,
    StreamHandler,
    VideoStreamHandler,
    Warning,
    WebRTCError,
    get_current_context,
)
from webrtc_ref.demos.echo_audio import EchoHandler
from webrtc_ref.handlers import MAX_MESSAGE_BYTES
from webrtc_ref.server import StreamServer
from webrtc_ref.testing import ClientPeer, async_wait_until

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def servers() -> AsyncIterator[Callable[..., StreamServer]]:
    made: list[StreamServer] = []

    def make(**kwargs: Any) -> StreamServer:
        kwargs.setdefault("mode", "send-receive")
        kwargs.setdefault("modality", "audio")
        kwargs.setdefault("concurrency_limit", None)
        server = StreamServer(**kwargs)
        made.append(server)
        return server

    yield make
    for server in made:
        await server.shutdown()


async def connect(server: StreamServer, peer: ClientPeer, *, wait: bool = True) -> None:
    """Offer and apply the answer; ``wait``: until connected (a handler that fails at once
    may end the connection before the client sees it connected)."""
    reply = await peer.connect(server.offer)
    assert reply.get("type") == "answer", reply
    if wait:
        await peer.wait_connected()


def end_stream(peer: ClientPeer) -> dict[str, Any] | None:
    return next((m for m in peer.json_messages() if m.get("type") == "end_stream"), None)


async def collect_until_end(track: MediaStreamTrack, limit_s: float = 10.0) -> np.ndarray:
    """Audio (mono float, 48 kHz) from ``track`` until it ends (or ``limit_s`` of it)."""
    chunks: list[np.ndarray] = []
    total = 0
    while total < limit_s * 48000:
        try:
            frame = await asyncio.wait_for(track.recv(), 5)
        except MediaStreamError:
            break
        data = frame.to_ndarray().reshape(-1, len(frame.layout.channels))[:, 0]
        chunks.append(data.astype(np.float64) / 32768)
        total += frame.samples
    return np.concatenate(chunks) if chunks else np.zeros(0)


def tone_seconds(audio: np.ndarray, freq: float, rate: int = 48000) -> float:
    """Seconds of 20 ms blocks of ``audio`` whose dominant frequency is ``freq``."""
    block = rate // 50
    hits = 0
    for k in range(0, audio.size - block + 1, block):
        piece = audio[k : k + block]
        if np.abs(piece).max() > 0.05 and abs(dominant_frequency(piece, rate) - freq) < 30:
            hits += 1
    return hits * 0.02


# ------------------------------------------------------------------ AsyncStreamHandler


class AsyncEcho(AsyncStreamHandler):
    """Echoes through an asyncio.Queue; records the loop and context it runs in."""

    def __init__(self, record: dict[str, Any], start_up_s: float = 0.0) -> None:
        super().__init__()
        self.record = record
        self.start_up_s = start_up_s
        self.queue: asyncio.Queue[Any] | None = None

    async def start_up(self) -> None:
        self.record["start_up_loop"] = asyncio.get_running_loop()
        self.record["start_up_id"] = get_current_context().webrtc_id
        await self.send_message(json.dumps({"type": "log", "data": "starting"}))
        await asyncio.sleep(self.start_up_s)
        self.record["started"] = time.monotonic()

    async def receive(self, frame: tuple[int, np.ndarray]) -> None:
        self.record["receive_loop"] = asyncio.get_running_loop()
        self.record["receive_id"] = get_current_context().webrtc_id
        if self.queue is None:
            self.queue = asyncio.Queue(maxsize=100)
        if not self.queue.full():
            self.queue.put_nowait(frame)

    async def emit(self) -> Any:
        if self.queue is None:
            await asyncio.sleep(0.02)
            return None
        self.record["emit_id"] = get_current_context().webrtc_id
        return await self.queue.get()

    def copy(self) -> AsyncEcho:
        return AsyncEcho(self.record, self.start_up_s)

    def shutdown(self) -> None:
        self.record["shutdown_id"] = get_current_context().webrtc_id


async def test_an_async_handler_runs_on_its_own_loop_with_its_context(
    servers: Any, peers: Any
) -> None:
    record: dict[str, Any] = {}
    server = servers(handler=AsyncEcho(record))
    peer = peers(send=ToneAudioTrack(440))
    await connect(server, peer)
    track = await peer.wait_remote()
    audio = await collect_until_end(track, limit_s=1.5)  # type: ignore[arg-type]
    assert tone_seconds(audio, 440) > 0.5
    loop = asyncio.get_running_loop()
    assert record["receive_loop"] is not loop and record["start_up_loop"] is not loop
    assert record["receive_loop"] is record["start_up_loop"]
    assert record["start_up_id"] == record["receive_id"] == record["emit_id"] == peer.webrtc_id
    await peer.wait_message(lambda m: "starting" in m, 5, "start_up's message")
    assert '{"type": "log", "data": "starting"}' in peer.messages  # a str goes verbatim
    await server.close_connection(peer.webrtc_id)
    assert record["shutdown_id"] == peer.webrtc_id


async def test_a_slow_async_start_up_does_not_stall_another_connections_audio(
    servers: Any, peers: Any
) -> None:
    """One connection's start_up awaits 1 s; another connection's handler keeps getting
    its 20 ms blocks without a gap over 50 ms meanwhile."""
    arrivals: list[float] = []

    class Timed(EchoHandler):
        def receive(self, frame: tuple[int, np.ndarray]) -> None:
            arrivals.append(time.monotonic())
            super().receive(frame)

        def copy(self) -> Timed:
            return Timed()

    steady = servers(handler=Timed())
    record: dict[str, Any] = {}
    slow = servers(handler=AsyncEcho(record, start_up_s=1.0))
    first = peers(send=ToneAudioTrack(440))
    await connect(steady, first)
    await async_wait_until(lambda: len(arrivals) > 25, 5, "steady audio")
    second = peers(send=ToneAudioTrack(660))
    begun = time.monotonic()
    await connect(slow, second)
    await async_wait_until(lambda: "started" in record, 5, "the slow start_up to finish")
    window = [t for t in arrivals if begun <= t <= record["started"]]
    assert len(window) >= 40, len(window)
    gaps = np.diff(window)
    assert gaps.max() < 0.05, f"longest gap {gaps.max() * 1000:.0f} ms"


async def test_async_wait_for_args_awaits_the_inputs(servers: Any, peers: Any) -> None:
    got: dict[str, Any] = {}

    class Waits(AsyncStreamHandler):
        async def start_up(self) -> None:
            got["arrived"] = await self.wait_for_args()
            got["args"] = self.latest_args

        async def receive(self, frame: Any) -> None:
            pass

        async def emit(self) -> None:
            await asyncio.sleep(0.02)

        def copy(self) -> Waits:
            return Waits()

    server = servers(handler=Waits(), has_inputs=True)
    peer = peers(send=ToneAudioTrack(440))
    await connect(server, peer)
    await peer.wait_message(lambda m: m == "tick", 5, "the request for inputs")
    server.set_input(peer.webrtc_id, ["a", 2])
    await async_wait_until(lambda: "args" in got, 5, "wait_for_args to return")
    assert got == {"arrived": True, "args": ["__webrtc_value__", "a", 2]}


# ------------------------------------------------------------------ start_up (sync)


class StartsUp(EchoHandler):
    def __init__(self, fail: bool = False) -> None:
        super().__init__()
        self.fail = fail

    def start_up(self) -> None:
        self.send_message("ready")
        self.send_message_sync({"type": "log", "data": "dict form"})
        if self.fail:
            raise RuntimeError("could not open the model session")

    def copy(self) -> StartsUp:
        return StartsUp(self.fail)


async def test_start_up_runs_once_beside_receive_and_emit(servers: Any, peers: Any) -> None:
    server = servers(handler=StartsUp())
    peer = peers(send=ToneAudioTrack(440))
    await connect(server, peer)
    await peer.wait_message(lambda m: m == "ready", 5, "start_up's message")
    # The dict form is sent after "ready" and may arrive a moment later.
    await async_wait_until(
        lambda: {"type": "log", "data": "dict form"} in peer.json_messages(),
        5,
        "start_up's dict-form message",
    )
    audio = await collect_until_end(await peer.wait_remote(), limit_s=1.0)  # type: ignore[arg-type]
    assert tone_seconds(audio, 440) > 0.3
    assert peer.messages.count("ready") == 1


async def test_start_up_that_raises_ends_the_stream_visibly(servers: Any, peers: Any) -> None:
    server = servers(handler=StartsUp(fail=True), show_error=lambda: True)
    peer = peers(send=ToneAudioTrack(440))
    await connect(server, peer, wait=False)
    await peer.wait_message(lambda m: "end_stream" in m, 10, "end_stream")
    errors = [m for m in peer.json_messages() if m.get("type") == "error"]
    assert errors and "could not open the model session" in str(errors[0]["message"])
    assert end_stream(peer) == {"type": "end_stream", "reason": "error", **_msg(errors[0])}


def _msg(error: dict[str, Any]) -> dict[str, Any]:
    return {"message": error["message"], "data": error["message"]}


# ------------------------------------------------------------------ CloseStream


class SaysGoodbye(StreamHandler):
    """Emits ``seconds`` of 440 Hz at once, then CloseStream (or the tone beside it)."""

    def __init__(self, seconds: float = 0.6, beside: bool = False) -> None:
        super().__init__(output_sample_rate=48000)
        self.seconds = seconds
        self.beside = beside
        self.sent = False

    def receive(self, frame: Any) -> None:
        pass

    def emit(self) -> Any:
        if self.sent:
            return None
        self.sent = True
        chunk = (48000, tone(440, self.seconds, 48000).reshape(1, -1))
        if self.beside:
            return chunk, CloseStream("goodbye")
        return chunk

    def copy(self) -> SaysGoodbye:
        return SaysGoodbye(self.seconds, self.beside)


class ThenClose(SaysGoodbye):
    def emit(self) -> Any:
        if self.sent:
            return CloseStream("goodbye")
        return super().emit()

    def copy(self) -> ThenClose:
        return ThenClose(self.seconds)


@pytest.mark.parametrize(
    "handler", [ThenClose(), SaysGoodbye(beside=True)], ids=["after", "beside"]
)
async def test_close_stream_plays_out_what_came_before_then_ends(
    servers: Any, peers: Any, handler: StreamHandler
) -> None:
    server = servers(handler=handler)
    peer = peers(send=ToneAudioTrack(1000))
    await connect(server, peer)
    audio = await collect_until_end(await peer.wait_remote())  # type: ignore[arg-type]
    assert tone_seconds(audio, 440) >= 0.5, "the audio before CloseStream was cut"
    await peer.wait_message(lambda m: "end_stream" in m, 5, "end_stream")
    assert end_stream(peer) == {
        "type": "end_stream",
        "reason": "handler_closed",
        "message": "goodbye",
        "data": "goodbye",
    }
    await async_wait_until(lambda: len(server) == 0, 5, "the connection to be released")


async def test_a_receive_mode_generator_ends_with_close_stream(servers: Any, peers: Any) -> None:
    def generator() -> Any:
        yield (48000, tone(440, 0.5, 48000).reshape(1, -1))
        yield CloseStream("that is all")
        yield (48000, tone(880, 0.5, 48000).reshape(1, -1))  # never sent

    server = servers(mode="receive", handler=generator)
    peer = peers(receive="audio")
    await connect(server, peer)
    audio = await collect_until_end(await peer.wait_remote())  # type: ignore[arg-type]
    assert tone_seconds(audio, 440) >= 0.4 and tone_seconds(audio, 880) == 0
    await peer.wait_message(lambda m: "end_stream" in m, 5, "end_stream")
    assert end_stream(peer)["reason"] == "handler_closed"  # type: ignore[index]
    assert end_stream(peer)["message"] == "that is all"  # type: ignore[index]


# ------------------------------------------------------------------ server-side close


async def test_the_server_hangs_up_a_connection_from_another_thread(
    servers: Any, peers: Any
) -> None:
    shut: list[str] = []

    class Recorded(EchoHandler):
        def shutdown(self) -> None:
            shut.append("yes")
            super().shutdown()

        def copy(self) -> Recorded:
            return Recorded()

    server = servers(handler=Recorded())
    peer, other = peers(send=ToneAudioTrack(440)), peers(send=ToneAudioTrack(660))
    await connect(server, peer)
    await connect(server, other)
    results: list[bool] = []
    worker = threading.Thread(
        target=lambda: results.extend(
            [server.close(peer.webrtc_id, "the operator ended the call"), server.close("nope")]
        )
    )
    worker.start()
    await asyncio.to_thread(worker.join)
    assert results == [True, False]
    await peer.wait_message(lambda m: "end_stream" in m, 5, "end_stream")
    assert end_stream(peer) == {
        "type": "end_stream",
        "reason": "server_closed",
        "message": "the operator ended the call",
        "data": "the operator ended the call",
    }
    await async_wait_until(lambda: len(server) == 1, 5, "one connection left")
    assert shut == ["yes"]
    assert server.connection(other.webrtc_id) is not None and end_stream(other) is None
    with pytest.raises(TypeError, match="message must be a str"):
        server.close(other.webrtc_id, 3)  # type: ignore[arg-type]


# ------------------------------------------------------------------ Warning / WebRTCError


class Warns(EchoHandler):
    """Warns once on creation (fastrtc's call form), once raised from emit, goes on."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def emit(self) -> Any:
        self.calls += 1
        if self.calls == 1:
            Warning("the microphone is quiet")
            return None
        if self.calls == 2:
            raise Warning("still quiet")
        return super().emit()

    def copy(self) -> Warns:
        return Warns()


async def test_warnings_are_shown_and_the_stream_goes_on(servers: Any, peers: Any) -> None:
    server = servers(handler=Warns())
    peer = peers(send=ToneAudioTrack(440))
    await connect(server, peer)
    await peer.wait_message(lambda m: "still quiet" in m, 5, "the raised warning")
    warnings = [m for m in peer.json_messages() if m.get("type") == "warning"]
    assert warnings == [
        {
            "type": "warning",
            "message": "the microphone is quiet",
            "data": "the microphone is quiet",
        },
        {"type": "warning", "message": "still quiet", "data": "still quiet"},
    ]
    audio = await collect_until_end(await peer.wait_remote(), limit_s=1.0)  # type: ignore[arg-type]
    assert tone_seconds(audio, 440) > 0.3 and end_stream(peer) is None


class Fails(EchoHandler):
    def __init__(self, how: str) -> None:
        super().__init__()
        self.how = how

    def emit(self) -> Any:
        if self.how == "raise":
            raise WebRTCError("Your API key was refused")
        return WebRTCError("Your API key was refused")

    def copy(self) -> Fails:
        return Fails(self.how)


@pytest.mark.parametrize("how", ["raise", "yield"])
async def test_a_webrtc_error_is_shown_as_written_and_ends_the_stream(
    servers: Any, peers: Any, how: str
) -> None:
    server = servers(handler=Fails(how))  # show_error is off: other texts stay hidden
    peer = peers(send=ToneAudioTrack(440))
    await connect(server, peer, wait=False)
    await peer.wait_message(lambda m: "end_stream" in m, 10, "end_stream")
    errors = [m for m in peer.json_messages() if m.get("type") == "error"]
    assert errors == [
        {"type": "error", "message": "Your API key was refused", "data": "Your API key was refused"}
    ]
    assert end_stream(peer)["reason"] == "error"  # type: ignore[index]


# ------------------------------------------------------------------ context, messages


def test_get_current_context_outside_a_handler_says_so() -> None:
    with pytest.raises(RuntimeError, match="outside a stream handler"):
        get_current_context()
    Warning("nobody hears this")  # outside a handler: sends nothing, raises nothing


def test_send_message_checks_what_it_is_given() -> None:
    handler = EchoHandler()
    with pytest.raises(TypeError, match="str or a dict"):
        handler.send_message(3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=f"at most {MAX_MESSAGE_BYTES}"):
        handler.send_message("x" * (MAX_MESSAGE_BYTES + 1))
    assert asyncio.run(_awaited(handler)) is None


async def _awaited(handler: StreamHandler) -> Any:
    return await handler.send_message({"type": "log", "data": "x"})


def test_clear_queue_and_reset_are_the_guide_calls_under_fastrtc_names() -> None:
    handler = EchoHandler()
    handler.set_args([1])
    assert handler.args_set
    handler.reset()
    assert not handler.args_set
    assert handler.wait_for_args_sync(0) is False
    handler.clear_queue()  # no connection: nothing to clear, no error


# ------------------------------------------------------------------ VideoStreamHandler


@pytest.mark.parametrize("skip_frames", [False, True])
async def test_video_stream_handler_skip_frames(
    servers: Any, peers: Any, skip_frames: bool
) -> None:
    """skip_frames=False: a slow function still sees every frame, in order; True: the
    newest wins and frames are skipped."""
    seen: list[int] = []

    def slow(frame: np.ndarray) -> np.ndarray:
        frame_id = read_frame_id(frame)
        if frame_id is not None:
            seen.append(frame_id)
        time.sleep(0.045)  # slower than the 30 fps camera
        return frame

    server = servers(
        modality="video", handler=VideoStreamHandler(slow, fps=30, skip_frames=skip_frames)
    )
    peer = peers(send=BarcodeVideoTrack(fps=30))
    await connect(server, peer)
    await async_wait_until(lambda: len(seen) >= 25, 15, "25 frames through the function")
    steps = np.diff(seen[:25])
    assert (steps > 0).all(), f"out of order: {seen[:25]}"
    if skip_frames:
        assert (steps > 1).sum() >= 5, f"expected skipped frames: {seen[:25]}"
    else:
        assert (steps == 1).all(), f"frames were skipped: {seen[:25]}"


def test_video_stream_handler_checks_its_arguments() -> None:
    with pytest.raises(TypeError, match="must be callable"):
        VideoStreamHandler(3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="fps must be a number"):
        VideoStreamHandler(lambda f: f, fps=0)
    with pytest.raises(TypeError, match="skip_frames must be a bool"):
        VideoStreamHandler(lambda f: f, skip_frames="yes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="modality='video'"):
        StreamServer(mode="receive", modality="audio", handler=VideoStreamHandler(print))


# ------------------------------------------------------------------ trickled ICE candidates


async def test_trickled_candidates_reach_the_servers_ice_agent(servers: Any, peers: Any) -> None:
    """A candidate the browser gathered after its offer left is added to the connection's
    ICE transport, for the offering session only, and within bounds."""
    server = servers(handler=EchoHandler())
    peer = peers(send=ToneAudioTrack(440))

    async def still_gathering(body: dict[str, str]) -> dict[str, Any]:
        # a browser that sends its offer before gathering ends says no end-of-candidates
        trimmed = {**body, "sdp": body["sdp"].replace("a=end-of-candidates\r\n", "")}
        return await server.offer(trimmed)

    assert (await peer.connect(still_gathering))["type"] == "answer"
    await peer.wait_connected()
    line = "candidate:1 1 udp 2130706431 127.0.0.1 40404 typ host"
    body = {
        "webrtc_id": peer.webrtc_id,
        "candidate": {"candidate": line, "sdpMid": "0", "sdpMLineIndex": 0},
    }
    assert await server.add_ice_candidate(body, owner=None) == {"status": "ok"}
    connection = server.connection(peer.webrtc_id)
    assert connection is not None
    ice = connection.pc.getTransceivers()[0].receiver.transport.transport
    remote = [(c.ip, c.port) for c in ice.getRemoteCandidates()]
    assert ("127.0.0.1", 40404) in remote
    # another session's request is treated like an unknown id
    reply = await server.add_ice_candidate(body, owner="someone-else")
    assert reply["meta"]["error"] == "unknown_connection"


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ([], "JSON object"),
        ({"webrtc_id": "../x", "candidate": {}}, "webrtc_id"),
        ({"webrtc_id": "abc", "candidate": "candidate:1"}, "must be an object"),
        (
            {"webrtc_id": "abc", "candidate": {"candidate": "host 1.2.3.4", "sdpMid": "0"}},
            "starting",
        ),
        (
            {
                "webrtc_id": "abc",
                "candidate": {"candidate": "candidate:" + "x" * 600, "sdpMid": "0"},
            },
            "at most 512",
        ),
        ({"webrtc_id": "abc", "candidate": {"candidate": "candidate:1 1 udp"}}, "sdpMid or"),
        (
            {"webrtc_id": "abc", "candidate": {"candidate": "candidate:1", "sdpMLineIndex": 99}},
            "0-15",
        ),
        (
            {"webrtc_id": "abc", "candidate": {"candidate": "candidate:garbage", "sdpMid": "0"}},
            "does not parse",
        ),
    ],
)
async def test_bad_trickled_candidates_get_a_specific_error(
    servers: Any, body: Any, says: str
) -> None:
    reply = await servers(handler=EchoHandler()).add_ice_candidate(body)
    assert reply["status"] == "failed" and reply["meta"]["error"] == "invalid_candidate", reply
    assert says in reply["meta"]["message"], reply


async def test_a_connection_takes_a_bounded_number_of_trickled_candidates(
    servers: Any, peers: Any
) -> None:
    from webrtc_ref.signaling import MAX_TRICKLED_CANDIDATES

    server = servers(handler=EchoHandler())
    peer = peers(send=ToneAudioTrack(440))
    await connect(server, peer)
    replies = []
    for port in range(MAX_TRICKLED_CANDIDATES + 3):
        line = f"candidate:{port} 1 udp 2130706431 127.0.0.1 {41000 + port} typ host"
        body = {"webrtc_id": peer.webrtc_id, "candidate": {"candidate": line, "sdpMid": "0"}}
        replies.append((await server.add_ice_candidate(body))["status"])
    assert replies == ["ok"] * MAX_TRICKLED_CANDIDATES + ["failed"] * 3
