"""The WebSocket transport: ``WS {path}/websocket/offer`` of a mounted ``Stream``, served
by a real uvicorn on 127.0.0.1 and driven by a ``websockets`` client streaming fixture
audio as G.711 mu-law (fastrtc's documented protocol)."""

from __future__ import annotations

import asyncio
import base64
import json
import queue
import secrets
import statistics
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np
import pytest
import uvicorn
from fastapi import FastAPI

from fixtures import timestamps
from fixtures.analysis import dominant_frequency
from fixtures.audio import tone
from fixtures.tracks import ToneAudioTrack
from webrtc_ref import AdditionalOutputs, ReplyOnPause, StreamHandler
from webrtc_ref.handlers import AsyncStreamHandler
from webrtc_ref.outputs import CloseStream
from webrtc_ref.stream import Stream
from webrtc_ref.testing import async_wait_until, free_port, wait_until
from webrtc_ref.websocket import MAX_MESSAGE_BYTES, mulaw_decode, mulaw_encode

websockets = pytest.importorskip("websockets")
from websockets.asyncio.client import ClientConnection, connect  # noqa: E402
from websockets.exceptions import ConnectionClosed  # noqa: E402

pytestmark = pytest.mark.timeout(120)


class Echo(StreamHandler):
    """Echoes its input; reports new input values as AdditionalOutputs; an id starting
    with ``boom`` raises in ``receive`` after 10 frames; ``close_after`` frames end the
    stream with ``CloseStream``."""

    shutdowns: queue.SimpleQueue[str] = queue.SimpleQueue()

    def __init__(self, rate_in: int = 16000, rate_out: int = 16000, close_after: int = 0):
        super().__init__(input_sample_rate=rate_in, output_sample_rate=rate_out)
        self.rate_in, self.rate_out, self.close_after = rate_in, rate_out, close_after
        self.queue: queue.Queue[Any] = queue.Queue()
        self.frames = 0
        self.reported: Any = None

    def receive(self, frame: tuple[int, np.ndarray]) -> None:
        self.frames += 1
        if (self.webrtc_id or "").startswith("boom") and self.frames == 10:
            raise RuntimeError("boom in receive")
        self.queue.put(frame)
        if self.close_after and self.frames == self.close_after:
            self.queue.put(CloseStream("enough"))

    def emit(self) -> Any:
        if self.latest_args != "not_set" and self.latest_args != self.reported:
            self.reported = self.latest_args
            return AdditionalOutputs(*self.latest_args[1:])
        try:
            return self.queue.get(timeout=0.05)
        except queue.Empty:
            return None

    def copy(self) -> Echo:
        return Echo(self.rate_in, self.rate_out, self.close_after)

    def shutdown(self) -> None:
        Echo.shutdowns.put(self.webrtc_id or "")


def video_fn(frame: np.ndarray) -> np.ndarray:
    return frame


class AsyncEcho(AsyncStreamHandler):
    """The echo, written with coroutines (its own private loop, off the server's)."""

    def __init__(self) -> None:
        super().__init__(input_sample_rate=16000, output_sample_rate=16000)
        self.queue: asyncio.Queue[Any] = asyncio.Queue()

    async def receive(self, frame: tuple[int, np.ndarray]) -> None:
        await self.queue.put(frame)

    async def emit(self) -> Any:
        return await self.queue.get()

    def copy(self) -> AsyncEcho:
        return AsyncEcho()


class Uncopyable(Echo):
    def copy(self) -> Echo:
        raise RuntimeError("no copies today")


REPLY_HZ = 1000.0


def reply(audio: tuple[int, np.ndarray]) -> Iterator[Any]:
    """Each turn: its length as an output, then 0.3 s of a 1 kHz tone."""
    rate, array = audio
    yield AdditionalOutputs(array.shape[1] / rate)
    yield (24000, tone(REPLY_HZ, 0.3, sample_rate=24000).reshape(1, -1))


@dataclass
class App:
    url: str
    ws: str
    streams: dict[str, Stream]


def _serve(streams: dict[str, Stream]) -> tuple[uvicorn.Server, threading.Thread, int]:
    fastapi_app = FastAPI()
    for path, stream in streams.items():
        stream.mount(fastapi_app, path=path)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(fastapi_app, host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    wait_until(lambda: server.started, 20, "uvicorn to start")
    return server, thread, port


@pytest.fixture(scope="module")
def app() -> Iterator[App]:
    streams = {
        "/echo": Stream(Echo(), modality="audio", mode="send-receive", concurrency_limit=None),
        "/rates": Stream(Echo(8000, 24000), modality="audio", concurrency_limit=None),
        "/limited": Stream(Echo(), modality="audio", concurrency_limit=1, time_limit=2.0),
        "/closing": Stream(Echo(close_after=50), modality="audio", concurrency_limit=None),
        "/video": Stream(video_fn, modality="video", concurrency_limit=None),
        "/async": Stream(AsyncEcho(), modality="audio", concurrency_limit=None),
        "/uncopyable": Stream(Uncopyable(), modality="audio", concurrency_limit=1),
        "/turns": Stream(
            ReplyOnPause(reply, input_sample_rate=16000), modality="audio", concurrency_limit=None
        ),
    }
    server, thread, port = _serve(streams)
    try:
        yield App(f"http://127.0.0.1:{port}", f"ws://127.0.0.1:{port}", streams)
    finally:
        server.should_exit = True
        thread.join(20)
    for stream in streams.values():
        assert stream.server.stats().connections == 0


# ---------------------------------------------------------------------------- the client


@dataclass
class Client:
    """One websocket client: the received media (int16 at ``rate``, with arrival times)
    and every other message."""

    ws: ClientConnection
    rate: int
    websocket_id: str
    token: str = ""
    audio: list[np.ndarray] = field(default_factory=list)
    arrivals: list[tuple[float, int]] = field(default_factory=list)  # (time, first sample)
    messages: list[dict[str, Any]] = field(default_factory=list)
    received: int = 0
    reader: asyncio.Task[None] | None = None

    async def read(self) -> None:
        try:
            async for text in self.ws:
                data = json.loads(text)
                if data.get("event") == "media":
                    samples = mulaw_decode(base64.b64decode(data["media"]["payload"]))
                    self.arrivals.append((time.monotonic(), self.received))
                    self.audio.append(samples)
                    self.received += samples.size
                else:
                    self.messages.append(data)
        except ConnectionClosed:
            pass

    def samples(self) -> np.ndarray:
        return np.concatenate(self.audio) if self.audio else np.zeros(0, np.int16)

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [m for m in self.messages if m.get("type") == kind]

    async def stream(self, samples: np.ndarray, rate: int, chunk_s: float = 0.02) -> list[float]:
        """Send ``samples`` in real time; returns each chunk's send time."""
        n = int(rate * chunk_s)
        start = time.monotonic()
        sent = []
        for i, at in enumerate(range(0, samples.size, n)):
            delay = start + i * chunk_s - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            payload = base64.b64encode(mulaw_encode(samples[at : at + n])).decode()
            sent.append(time.monotonic())
            await self.ws.send(json.dumps({"event": "media", "media": {"payload": payload}}))
        return sent

    async def closed(self, timeout: float = 10) -> tuple[int | None, str | None]:
        assert self.reader is not None
        await asyncio.wait_for(self.reader, timeout)
        return self.ws.close_code, self.ws.close_reason


async def open_client(app: App, path: str, rate: int, websocket_id: str | None = None) -> Client:
    ws = await connect(f"{app.ws}{path}/websocket/offer", max_size=2**22)
    websocket_id = websocket_id or secrets.token_hex(8)
    await ws.send(json.dumps({"event": "start", "websocket_id": websocket_id}))
    started = json.loads(await asyncio.wait_for(ws.recv(), 10))
    assert started.get("event") == "started", started
    assert started["websocket_id"] == websocket_id and len(started["token"]) >= 32
    client = Client(ws, rate, websocket_id, started["token"])
    client.reader = asyncio.ensure_future(client.read())
    return client


@pytest.fixture
async def clients() -> AsyncIterator[list[Client]]:
    made: list[Client] = []
    yield made
    for client in made:
        await client.ws.close()
        if client.reader is not None:
            await asyncio.wait_for(client.reader, 10)


def _stats(app: App, path: str) -> Any:
    return app.streams[path].server.stats()


# ---------------------------------------------------------------------------- mu-law


def test_mulaw_matches_g711() -> None:
    x = np.arange(-32768, 32768, dtype=np.int16)
    codes = np.frombuffer(mulaw_encode(x), np.uint8)
    # the G.711 reference points: 0 -> 0xFF, the clip level and the extremes
    assert codes[32768] == 0xFF
    assert codes[0] == 0x00 and codes[-1] == 0x80
    decoded = mulaw_decode(codes.tobytes())
    # every code decodes to a level that encodes to it again (but 0x7F, "negative zero",
    # which decodes to 0 and encodes as 0xFF), and quantisation keeps the sign and level
    again = np.frombuffer(mulaw_encode(decoded), np.uint8)
    assert np.array_equal(again[codes != 0x7F], codes[codes != 0x7F])
    assert np.all(np.sign(decoded[np.abs(x) > 8]) == np.sign(x[np.abs(x) > 8]))
    big = np.abs(x.astype(np.int32)) > 256
    err = np.abs(decoded[big].astype(np.int32) - x[big]) / np.abs(x[big].astype(np.int32))
    assert err.max() < 0.06
    try:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            import audioop  # gone in 3.13: the check runs where it still exists
    except ImportError:
        return
    assert mulaw_encode(x) == audioop.lin2ulaw(x.tobytes(), 2)
    assert np.array_equal(
        mulaw_decode(bytes(range(256))),
        np.frombuffer(audioop.ulaw2lin(bytes(range(256)), 2), np.int16),
    )


# ---------------------------------------------------------------------------- media


async def test_echo_of_timestamped_audio_latency_and_coverage(
    app: App, clients: list[Client]
) -> None:
    rate = 16000
    client = await open_client(app, "/echo", rate)
    clients.append(client)
    seconds = 4.0
    carrier = timestamps.encode(0, int(seconds * rate), rate)
    sent = await client.stream(carrier, rate)
    await async_wait_until(
        lambda: client.received >= carrier.size - rate // 5, 10, "the echo of the audio"
    )
    received = client.samples()
    markers = timestamps.decode(received, rate)
    blocks = carrier.size // timestamps.block_samples(rate)
    coverage = len({m.sent_sample for m in markers}) / blocks
    # in order, each block once, the content intact through two mu-law passes
    assert [m.sent_sample for m in markers] == sorted({m.sent_sample for m in markers})
    assert coverage >= 0.9, (coverage, len(markers), blocks)
    # latency of each block: when its first sample arrived back minus when it was sent
    latencies = []
    for marker in markers:
        index = max(i for i, (_, first) in enumerate(client.arrivals) if first <= marker.position)
        chunk = marker.sent_sample // int(rate * 0.02)
        latencies.append(client.arrivals[index][0] - sent[min(chunk, len(sent) - 1)])
    print(
        f"\nwebsocket echo 16 kHz mu-law: coverage {coverage:.1%} of {blocks} blocks; "
        f"latency median {statistics.median(latencies) * 1000:.1f} ms, "
        f"max {max(latencies) * 1000:.1f} ms"
    )
    assert all(lat > -0.05 for lat in latencies)  # nothing comes back before it was sent
    assert app.streams["/echo"].server.connection(client.websocket_id) is not None


async def test_concurrent_sessions_each_get_their_own_audio_back(
    app: App, clients: list[Client]
) -> None:
    """Six sessions at once, each sending its own tone: each hears only its own."""
    frequencies = [400.0 + 150.0 * i for i in range(6)]
    made = [await open_client(app, "/echo", 16000) for _ in frequencies]
    clients.extend(made)
    assert _stats(app, "/echo").connections >= len(made)
    cpu, wall = time.process_time(), time.monotonic()
    await asyncio.gather(
        *(
            client.stream(tone(f, 2.0, 16000).reshape(-1), 16000)
            for client, f in zip(made, frequencies, strict=True)
        )
    )
    for client in made:
        await async_wait_until(lambda c=client: c.received >= 1.8 * 16000, 10, "every echo")
    used = (time.process_time() - cpu) / (time.monotonic() - wall)
    for client, f in zip(made, frequencies, strict=True):
        assert abs(dominant_frequency(client.samples()[3200:28800], 16000) - f) < 3
    print(
        f"\n{len(made)} concurrent websocket echo sessions: this process (server and clients) "
        f"used {used:.0%} of a core"
    )


async def test_output_leaves_at_the_handlers_output_rate(app: App, clients: list[Client]) -> None:
    """input_sample_rate 8 kHz, output_sample_rate 24 kHz: a 1 kHz tone sent at 8 kHz
    comes back as a 1 kHz tone in 24 kHz samples (three times as many)."""
    client = await open_client(app, "/rates", 24000)
    clients.append(client)
    sent = tone(1000, 1.5, 8000, amplitude=0.5).reshape(-1)
    await client.stream(sent, 8000)
    await async_wait_until(lambda: client.received >= 3 * sent.size - 4800, 10, "the echo")
    received = client.samples()
    middle = received[4800 : 3 * sent.size - 4800]
    frequency = dominant_frequency(middle, 24000)
    print(
        f"\n8 kHz in, 24 kHz out: {client.received} samples back for {sent.size} sent, "
        f"tone at {frequency:.1f} Hz"
    )
    assert abs(frequency - 1000) < 5, frequency
    assert 2.9 * sent.size <= client.received <= 3.3 * sent.size


async def test_an_async_handler_echoes(app: App, clients: list[Client]) -> None:
    client = await open_client(app, "/async", 16000)
    clients.append(client)
    await client.stream(tone(880, 1.0, 16000).reshape(-1), 16000)
    await async_wait_until(lambda: client.received >= 0.9 * 16000, 10, "the echo")
    assert abs(dominant_frequency(client.samples()[1600:14400], 16000) - 880) < 3


@pytest.mark.slow
async def test_reply_on_pause_answers_each_turn(app: App, clients: list[Client]) -> None:
    from fixtures.speech import build_scenario

    scenario = build_scenario("speech_pause_speech", 16000)
    client = await open_client(app, "/turns", 24000)
    clients.append(client)
    sent = await client.stream(scenario.audio, 16000)
    await client.stream(np.zeros(24000, np.int16), 16000)  # 1.5 s of silence after it
    ends = scenario.expected_turn_ends
    await async_wait_until(
        lambda: (
            len([m for m in client.messages if m.get("data") == "response_starting"]) >= len(ends)
        ),
        10,
        "a response to every turn",
    )
    # the reply tones in what came back (24 kHz: the handler's output rate), by onset
    onsets: list[float] = []
    for (at, _), samples in zip(client.arrivals, client.audio, strict=True):
        chunk = samples.astype(np.float64) / 32768
        loud = chunk.size >= 160 and np.sqrt(np.mean(chunk**2)) > 0.1
        if (
            loud
            and abs(dominant_frequency(chunk, 24000) - REPLY_HZ) < 80
            and (not onsets or at - onsets[-1] > 0.6)
        ):
            onsets.append(at)
    heard = [at - sent[0] for at in onsets]
    assert len(heard) == len(ends), f"replies at {heard} s, turns end at {ends} s"
    for at, end in zip(heard, ends, strict=True):
        print(f"\nwebsocket ReplyOnPause: end of speech -> reply heard {1000 * (at - end):.0f} ms")
        assert 0 < at - end < 1.5
    logs = [m["data"] for m in client.of_type("log")]
    assert logs.count("pause_detected") >= len(ends) and "started_talking" in logs


async def test_set_input_outputs_and_token_routes_by_websocket_id(
    app: App, clients: list[Client]
) -> None:
    stream = app.streams["/echo"]
    client = await open_client(app, "/echo", 16000)
    clients.append(client)
    stream.set_input(client.websocket_id, 0.25)  # any thread, by websocket_id
    async with httpx.AsyncClient(timeout=20) as http:
        url = f"{app.url}/echo/webrtc/outputs"
        params = {"webrtc_id": client.websocket_id, "token": client.token}
        async with http.stream("GET", url, params=params) as response:
            assert response.status_code == 200
            lines = response.aiter_lines()
            first = await asyncio.wait_for(_next_data(lines), 10)
            assert first == [0.25]
            reply = await http.post(
                f"{app.url}/echo/webrtc/input",
                json={"webrtc_id": client.websocket_id, "token": client.token, "inputs": [7]},
            )
            assert reply.json() == {"status": "ok"}
            assert await asyncio.wait_for(_next_data(lines), 10) == [7]
        wrong = {"webrtc_id": client.websocket_id, "token": "x" * 32}
        assert (await http.get(url, params=wrong)).status_code == 404
    # the client was told outputs were waiting, in fastrtc's spelling
    await async_wait_until(lambda: bool(client.of_type("fetch_output")), 5, "fetch_output")


async def _next_data(lines: Any) -> Any:
    async for line in lines:
        if line.startswith("data: "):
            return json.loads(line[6:])
    raise AssertionError("the output stream ended")


async def test_close_stream_plays_out_then_ends(app: App, clients: list[Client]) -> None:
    client = await open_client(app, "/closing", 16000)
    clients.append(client)
    try:  # the server closes after 50 frames (1 s), maybe before the last one is sent
        await client.stream(tone(440, 1.2, 16000).reshape(-1), 16000)
    except ConnectionClosed:
        pass
    code, reason = await client.closed()
    assert (code, reason) == (1000, "handler_closed")
    # the 50 frames before CloseStream all came back (less what two resamplers hold)
    assert client.received >= 49 * 320
    assert client.of_type("end_stream")[-1] == {
        "type": "end_stream",
        "reason": "handler_closed",
        "message": "enough",
        "data": "enough",
    }
    await async_wait_until(lambda: _stats(app, "/closing").connections == 0, 5, "the slot")


async def test_server_close_hangs_up_one_session(app: App, clients: list[Client]) -> None:
    client = await open_client(app, "/echo", 16000)
    clients.append(client)
    assert app.streams["/echo"].server.close(client.websocket_id, "bye")  # any thread
    assert await client.closed() == (1000, "server_closed")
    assert client.of_type("end_stream") == [
        {"type": "end_stream", "reason": "server_closed", "message": "bye", "data": "bye"}
    ]


async def test_stop_event_ends_the_session_and_frees_everything(
    app: App, clients: list[Client]
) -> None:
    client = await open_client(app, "/echo", 16000)
    await client.stream(tone(440, 0.2, 16000).reshape(-1), 16000)
    before = _stats(app, "/echo").closed_total
    await client.ws.send(json.dumps({"event": "stop"}))
    assert await client.closed() == (1000, "client_closed")
    await async_wait_until(
        lambda: _stats(app, "/echo").closed_total == before + 1, 5, "the session to close"
    )
    assert app.streams["/echo"].server.connection(client.websocket_id) is None
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:  # shutdown() ran, for this session
        if Echo.shutdowns.get(timeout=5) == client.websocket_id:
            break
    else:
        raise AssertionError("shutdown() did not run for the session")
    assert _stats(app, "/echo").stuck_workers == 0


# ---------------------------------------------------------------------------- limits


async def test_websocket_and_webrtc_share_the_concurrency_limit_and_time_limit(
    app: App, clients: list[Client], peers: Any
) -> None:
    first = await open_client(app, "/limited", 16000)
    clients.append(first)
    # a second websocket: the failure reply, then 1013
    ws = await connect(f"{app.ws}/limited/websocket/offer")
    await ws.send(json.dumps({"event": "start", "websocket_id": "second"}))
    reply = json.loads(await ws.recv())
    assert reply["status"] == "failed"
    assert reply["meta"]["error"] == "concurrency_limit_reached" and reply["meta"]["limit"] == 1
    with pytest.raises(ConnectionClosed):
        await ws.recv()
    assert (ws.close_code, ws.close_reason) == (1013, "concurrency_limit_reached")
    # a WebRTC offer to the same stream is refused as well: one limit for both
    peer = peers(send=ToneAudioTrack(440))
    async with httpx.AsyncClient(timeout=20) as http:

        async def post(body: Any) -> dict[str, Any]:
            return (await http.post(f"{app.url}/limited/webrtc/offer", json=body)).json()  # type: ignore[no-any-return]

        answer = await peer.connect(post)
    assert answer["meta"]["error"] == "concurrency_limit_reached", answer
    # the time limit (2 s) ends the session: end_stream, then a normal close
    started = time.monotonic()
    assert await first.closed(10) == (1000, "time_limit")
    print(f"\ntime limit 2 s: the session ended after {time.monotonic() - started:.2f} s more")
    assert first.of_type("end_stream") == [{"type": "end_stream", "reason": "time_limit"}]
    await async_wait_until(lambda: _stats(app, "/limited").connections == 0, 5, "the slot")
    again = await open_client(app, "/limited", 16000)  # the slot is free again
    clients.append(again)


async def test_a_stream_that_is_not_audio_send_receive_refuses_websockets(app: App) -> None:
    async with connect(f"{app.ws}/video/websocket/offer") as ws:
        reply = json.loads(await ws.recv())
        assert reply["meta"]["error"] == "unsupported_media"
        assert "audio in send-receive" in reply["meta"]["message"]
        with pytest.raises(ConnectionClosed):
            await ws.recv()
        assert (ws.close_code, ws.close_reason) == (1008, "unsupported_media")


def _media(samples: int) -> str:
    payload = base64.b64encode(b"\xff" * samples).decode()
    return json.dumps({"event": "media", "media": {"payload": payload}})


HOSTILE: list[tuple[str, list[Any], int, str]] = [
    ("binary", [b"\x00\x01"], 1003, "binary_message"),
    ("not json", ["{nope"], 1007, "invalid_json"),
    ("nested too deep", ["[" * 60000], 1007, "invalid_json"),
    ("nested too deep, started", ["START", "[" * 60000], 1007, "invalid_json"),
    ("not an object", ["[1, 2]"], 1008, "invalid_message"),
    ("unknown event", ['{"event": "dance"}'], 1008, "unknown_event"),
    ("media first", [_media(320)], 1008, "media_before_start"),
    ("bad id", ['{"event": "start", "websocket_id": "../x"}'], 1008, "invalid_message"),
    ("too large", ["START", "x" * (MAX_MESSAGE_BYTES + 1)], 1009, "message_too_large"),
    (
        "bad base64",
        ["START", '{"event": "media", "media": {"payload": "@@@@"}}'],
        1008,
        "invalid_payload",
    ),
    ("payload missing", ["START", '{"event": "media", "media": {}}'], 1008, "invalid_payload"),
    ("payload too long", ["START", _media(16001)], 1008, "invalid_payload"),
    ("faster than real time", ["START", *[_media(16000)] * 4], 1008, "rate_limited"),
    ("message flood", ["START", *['{"event": "ping"}'] * 400], 1008, "rate_limited"),
    ("second start", ["START", "START"], 1008, "duplicate_start"),
    ("pings instead of start", ['{"event": "ping"}'] * 11, 1008, "rate_limited"),
]


async def test_hostile_frames_are_refused_without_disturbing_another_session(
    app: App, clients: list[Client]
) -> None:
    good = await open_client(app, "/echo", 16000)
    clients.append(good)
    baseline = _stats(app, "/echo").connections

    async def hostile(frames: list[Any]) -> tuple[int | None, str | None, list[Any]]:
        errors = []
        async with connect(f"{app.ws}/echo/websocket/offer", max_size=2**22) as ws:
            for frame in frames:
                if frame == "START":
                    frame = json.dumps({"event": "start", "websocket_id": secrets.token_hex(8)})
                try:
                    await ws.send(frame)
                except ConnectionClosed:
                    break
            try:
                async for text in ws:
                    data = json.loads(text)
                    if data.get("type") == "error":
                        errors.append(data)
            except ConnectionClosed:
                pass
            return ws.close_code, ws.close_reason, errors

    sending = asyncio.ensure_future(good.stream(tone(523.25, 3.0, 16000).reshape(-1), 16000))
    results = await asyncio.gather(*(hostile(frames) for _, frames, _, _ in HOSTILE))
    await sending
    for (name, _, code, reason), (got_code, got_reason, errors) in zip(
        HOSTILE, results, strict=True
    ):
        assert (got_code, got_reason) == (code, reason), name
        assert errors and errors[-1]["code"] == reason and errors[-1]["message"], name
    await async_wait_until(lambda: good.received >= 2.6 * 16000, 10, "the good session's echo")
    frequency = dominant_frequency(good.samples()[3200:40000], 16000)
    assert abs(frequency - 523.25) < 3, frequency
    await async_wait_until(
        lambda: _stats(app, "/echo").connections <= baseline, 5, "hostile sessions to go"
    )


async def test_a_handler_that_cannot_be_copied_is_refused_at_start(app: App) -> None:
    for _ in range(2):  # the slot is freed: the second attempt gets the same answer
        async with connect(f"{app.ws}/uncopyable/websocket/offer") as ws:
            await ws.send(json.dumps({"event": "start", "websocket_id": secrets.token_hex(8)}))
            reply = json.loads(await asyncio.wait_for(ws.recv(), 10))
            assert reply["meta"]["error"] == "handler_error", reply
            with pytest.raises(ConnectionClosed):
                await ws.recv()
            assert (ws.close_code, ws.close_reason) == (1011, "handler_error")
    assert _stats(app, "/uncopyable").connections == 0


async def test_start_must_come_in_time(app: App, monkeypatch: pytest.MonkeyPatch) -> None:
    from webrtc_ref import websocket as transport

    monkeypatch.setattr(transport, "START_TIMEOUT", 0.3)
    async with connect(f"{app.ws}/echo/websocket/offer") as ws:
        error = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert error["code"] == "start_timeout"
        with pytest.raises(ConnectionClosed):
            await ws.recv()
        assert (ws.close_code, ws.close_reason) == (1008, "start_timeout")


async def test_a_handler_exception_reaches_its_client_only(app: App, clients: list[Client]) -> None:
    calm = await open_client(app, "/echo", 16000)
    clients.append(calm)
    boom = await open_client(app, "/echo", 16000, websocket_id="boom-" + secrets.token_hex(4))
    signal = tone(660, 2.0, 16000).reshape(-1)
    sending = asyncio.ensure_future(calm.stream(signal, 16000))
    try:
        await boom.stream(tone(660, 1.0, 16000).reshape(-1), 16000)
    except ConnectionClosed:
        pass
    assert await boom.closed() == (1011, "error")
    errors = boom.of_type("error")
    assert errors and isinstance(errors[0]["message"], str) and errors[0]["message"]
    assert boom.of_type("end_stream")[-1]["reason"] == "error"
    assert app.streams["/echo"].server.connection(boom.websocket_id) is None
    await sending
    await async_wait_until(lambda: calm.received >= 1.8 * 16000, 10, "the calm session's echo")
    assert abs(dominant_frequency(calm.samples()[3200:28800], 16000) - 660) < 3
    assert not calm.of_type("error")
    assert app.streams["/echo"].server.connection(calm.websocket_id) is not None


# ---------------------------------------------------------------------------- shutdown


async def test_server_shutdown_and_uvicorn_exit_close_the_websockets() -> None:
    stream = Stream(Echo(), modality="audio", concurrency_limit=None)
    other = Stream(Echo(), modality="audio", concurrency_limit=None)
    server, thread, port = _serve({"/a": stream, "/b": other})
    app = App(f"http://127.0.0.1:{port}", f"ws://127.0.0.1:{port}", {"/a": stream, "/b": other})
    try:
        one = await open_client(app, "/a", 16000)
        await one.stream(tone(440, 0.2, 16000).reshape(-1), 16000)
        loop = stream.server._loop
        assert loop is not None
        await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(stream.server.shutdown(), loop))
        assert await one.closed() == (1001, "server_shutdown")
        assert one.of_type("end_stream") == [{"type": "end_stream", "reason": "server_shutdown"}]
        assert stream.server.stats().connections == 0
        # a stream shutting down refuses new sessions
        ws = await connect(f"{app.ws}/a/websocket/offer")
        await ws.send(json.dumps({"event": "start", "websocket_id": "late"}))
        assert json.loads(await ws.recv())["meta"]["error"] == "server_shutdown"
        await ws.close()
        # uvicorn stopping closes the other stream's socket too
        two = await open_client(app, "/b", 16000)
        await two.stream(tone(440, 0.2, 16000).reshape(-1), 16000)
        server.should_exit = True
        code, _ = await two.closed(20)
        assert code in (1001, 1012), code
    finally:
        server.should_exit = True
        await asyncio.to_thread(thread.join, 20)
    assert other.server.stats().connections == 0
    assert other.server.stats().shutting_down
