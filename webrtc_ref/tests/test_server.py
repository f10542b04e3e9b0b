"""The streaming core end to end: real aiortc client peers talk to a StreamServer in-process.

Each test asserts what arrives (frame ids, tone frequencies, messages), not just that a
connection was made. Where a test guards against something gradio_webrtc got wrong,
its docstring says what that was.
"""

from __future__ import annotations

import asyncio
import json
import re
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
from fixtures.video import detect_channel_order, make_frame, read_frame_id
from webrtc_ref.demos.echo_audio import EchoHandler  # the user guide's, verbatim
from webrtc_ref.handlers import StreamHandler
from webrtc_ref.outputs import AdditionalOutputs
from webrtc_ref.server import StreamServer
from webrtc_ref.testing import ClientPeer, async_wait_until

pytestmark = pytest.mark.timeout(60)


class Recording(StreamHandler):
    """Records what it receives and how often each hook runs; emits nothing."""

    instances: list[Recording]

    def __init__(self, instances: list[Recording] | None = None) -> None:
        super().__init__()
        self.instances = instances if instances is not None else []
        self.frames: list[tuple[int, np.ndarray]] = []
        self.emits = 0
        self.shutdowns = 0

    def receive(self, frame: tuple[int, np.ndarray]) -> None:
        self.frames.append(frame)

    def emit(self) -> None:
        self.emits += 1
        return None

    def copy(self) -> Recording:
        clone = Recording(self.instances)
        self.instances.append(clone)
        return clone

    def shutdown(self) -> None:
        self.shutdowns += 1


@pytest.fixture
async def servers() -> AsyncIterator[Callable[..., StreamServer]]:
    """Make StreamServers; every one is shut down after the test."""
    made: list[StreamServer] = []

    def make(**kwargs: Any) -> StreamServer:
        server = StreamServer(**kwargs)
        made.append(server)
        return server

    yield make
    for server in made:
        await server.shutdown()


async def collect_audio(track: MediaStreamTrack, seconds: float) -> np.ndarray:
    """Receive ``seconds`` of audio (48 kHz) from a remote track; return it mono float."""
    chunks: list[np.ndarray] = []
    total = 0
    while total < seconds * 48000:
        frame = await asyncio.wait_for(track.recv(), 5)
        data = frame.to_ndarray().reshape(-1, len(frame.layout.channels))[:, 0]
        chunks.append(data.astype(np.float64) / 32768)
        total += frame.samples
    return np.concatenate(chunks)


async def collect_ids(track: MediaStreamTrack, count: int) -> list[int | None]:
    ids: list[int | None] = []
    while len(ids) < count:
        frame = await asyncio.wait_for(track.recv(), 5)
        ids.append(read_frame_id(frame.to_ndarray(format="rgb24")))
    return ids


def our_threads() -> list[str]:
    prefixes = ("receive-", "emit-", "handler-", "video-", "generator-")
    return [t.name for t in threading.enumerate() if t.name.startswith(prefixes)]


# -- every mode x modality, by content ------------------------------------------------


async def test_audio_send_receive_echoes_the_tone(servers: Any, peers: Any) -> None:
    server = servers(mode="send-receive", modality="audio", handler=EchoHandler())
    peer = peers(send=ToneAudioTrack(660.0))
    reply = await peer.connect(server.offer)
    assert reply["type"] == "answer"
    audio = await collect_audio(await peer.wait_remote(), 1.5)
    tail = audio[-48000:]
    assert dominant_frequency(tail, 48000) == pytest.approx(660.0, abs=5)
    assert np.sqrt(np.mean(tail**2)) > 0.1, "echo is (nearly) silent"


async def test_audio_send_delivers_mono_int16_blocks(servers: Any, peers: Any) -> None:
    made: list[Recording] = []
    server = servers(mode="send", modality="audio", handler=Recording(made))
    peer = peers(send=ToneAudioTrack(440.0))
    assert (await peer.connect(server.offer))["type"] == "answer"
    await async_wait_until(lambda: made and len(made[0].frames) >= 50, 10, "50 input blocks")
    rate, block = made[0].frames[-1]
    assert rate == 48000
    assert block.dtype == np.int16 and block.shape == (1, 960)
    audio = np.concatenate([b.reshape(-1) for _, b in made[0].frames[-40:]]) / 32768
    assert dominant_frequency(audio, 48000) == pytest.approx(440.0, abs=5)


async def test_audio_receive_plays_the_generator(servers: Any, peers: Any) -> None:
    def generate() -> Any:
        for _ in range(3):
            yield (24000, tone(880.0, 0.4, sample_rate=24000).reshape(1, -1))

    server = servers(mode="receive", modality="audio", handler=generate)
    peer = peers(receive="audio")
    assert (await peer.connect(server.offer))["type"] == "answer"
    audio = await collect_audio(await peer.wait_remote(), 1.0)
    assert dominant_frequency(audio[-24000:], 48000) == pytest.approx(880.0, abs=5)
    await peer.wait_message(lambda m: "end_stream" in m, 10, "end_stream")
    assert {"type": "end_stream", "reason": "handler_finished"} in peer.json_messages()


@pytest.mark.parametrize(("buffer_s", "ahead"), [(20.0, True), (2.0, False)])
async def test_a_fast_generator_runs_ahead_of_playback_by_the_output_buffer(
    servers: Any, peers: Any, buffer_s: float, ahead: bool
) -> None:
    """A generator yields 6 s of audio at once, then AdditionalOutputs (a transcript after
    text-to-speech). With the default 20 s output buffer the outputs are queued while
    nearly all of the audio still waits to be played; with a 2 s buffer the generator is
    held until at most 2 s of audio are left."""

    def generate() -> Any:
        for _ in range(12):
            yield (24000, tone(440.0, 0.5, sample_rate=24000).reshape(1, -1))
        yield AdditionalOutputs("transcript")

    server = servers(mode="receive", modality="audio", handler=generate, output_buffer_s=buffer_s)
    peer = peers(receive="audio")
    assert (await peer.connect(server.offer))["type"] == "answer"
    queued: list[int] = []

    def outputs_arrived() -> bool:
        outputs = server.outputs_of(peer.webrtc_id)
        connection = server.connection(peer.webrtc_id)
        if outputs is None or not len(outputs) or connection is None:
            return False
        assert connection.out_track is not None
        queued.append(connection.out_track.queued)
        return True

    await async_wait_until(outputs_arrived, 10.0, "the generator's AdditionalOutputs")
    waiting_s = queued[0] * 0.020
    if ahead:
        assert waiting_s >= 4.0, f"only {waiting_s:.2f} s of audio waited when outputs came"
    else:
        assert waiting_s <= 2.0 + 0.1, f"{waiting_s:.2f} s of audio waited (buffer 2 s)"


def test_output_buffer_s_is_checked() -> None:
    for bad in (0, -1.0, 301.0, True, "20"):
        with pytest.raises(ValueError, match=r"output_buffer_s must be a number of seconds"):
            StreamServer(
                mode="receive", modality="audio", handler=lambda: iter(()), output_buffer_s=bad
            )


async def test_video_send_receive_returns_processed_frames_in_order(
    servers: Any, peers: Any
) -> None:
    seen: list[tuple[int, int, int]] = []

    def process(frame: np.ndarray, level: int) -> np.ndarray:
        seen.append(frame.shape)
        out = frame.copy()
        out[-8:, :, :] = level  # a processing mark the client can see
        return out

    server = servers(mode="send-receive", modality="video", handler=process, has_inputs=True)
    peer = peers(send=BarcodeVideoTrack(320, 240))
    assert (await peer.connect(server.offer))["type"] == "answer"
    await peer.wait_message(lambda m: m == "tick", 10, "the server's request for inputs")
    server.set_input(peer.webrtc_id, [200])
    track = await peer.wait_remote()
    marked = 0
    ids: list[int] = []
    deadline = time.monotonic() + 10
    while marked < 30 and time.monotonic() < deadline:
        frame = (await asyncio.wait_for(track.recv(), 5)).to_ndarray(format="rgb24")
        frame_id = read_frame_id(frame)
        if frame_id is not None:
            ids.append(frame_id)
        if abs(float(frame[-4:, :, :].mean()) - 200) < 12:
            marked += 1
    assert marked >= 30, "processed frames (with the mark) did not come back"
    assert ids == sorted(ids), f"frames came back out of order: {ids}"
    assert seen[-1] == (240, 320, 3)


async def test_video_handler_gets_rgb(servers: Any, peers: Any) -> None:
    """The guide says frames are (height, width, RGB); gradio_webrtc hands BGR."""
    orders: list[str | None] = []

    def inspect_colour(frame: np.ndarray) -> None:
        orders.append(detect_channel_order(frame))

    server = servers(mode="send", modality="video", handler=inspect_colour)
    peer = peers(send=BarcodeVideoTrack(320, 240))
    assert (await peer.connect(server.offer))["type"] == "answer"
    await async_wait_until(lambda: len(orders) >= 10, 10, "10 frames at the handler")
    assert orders[-5:] == ["rgb"] * 5


async def test_video_send_passes_additional_outputs(servers: Any, peers: Any) -> None:
    def detect(frame: np.ndarray) -> AdditionalOutputs:
        return AdditionalOutputs(read_frame_id(frame))

    server = servers(mode="send", modality="video", handler=detect)
    peer = peers(send=BarcodeVideoTrack(320, 240))
    assert (await peer.connect(server.offer))["type"] == "answer"
    await async_wait_until(lambda: peer.messages.count("change") >= 5, 10, "5 'change' messages")
    outputs = [server.pop_additional_outputs(peer.webrtc_id) for _ in range(5)]
    ids = [o.args[0] for o in outputs if o is not None]
    assert len(ids) == 5 and ids == sorted(ids)


async def test_video_receive_streams_generated_frames(servers: Any, peers: Any) -> None:
    def frames(count: int) -> Any:
        for i in range(count):
            yield make_frame(i, 320, 240)

    server = servers(mode="receive", modality="video", handler=frames, has_inputs=True)
    peer = peers(receive="video")
    assert (await peer.connect(server.offer))["type"] == "answer"
    await peer.wait_message(lambda m: m == "tick", 10, "the server's request for inputs")
    server.set_input(peer.webrtc_id, [45])
    ids = await collect_ids(await peer.wait_remote(), 30)
    decoded = [i for i in ids if i is not None]
    assert len(decoded) >= 25
    assert decoded == sorted(decoded) and decoded[-1] - decoded[0] >= 20
    await peer.wait_message(lambda m: "handler_finished" in m, 10, "end of stream")


# -- errors and isolation --------------------------------------------------------------


@pytest.mark.parametrize("show_error", [True, False])
async def test_handler_exception_surfaces_and_others_keep_streaming(
    servers: Any, peers: Any, caplog: pytest.LogCaptureFixture, show_error: bool
) -> None:
    """The error reaches the browser: its text when the app shows errors, otherwise a
    generic message whose error id is on the server's log line with the traceback."""

    def fragile(frame: np.ndarray, explode: bool) -> np.ndarray:
        if explode:
            raise RuntimeError("model exploded at /secret/path?token=abc")
        return frame

    server = servers(
        mode="send-receive",
        modality="video",
        handler=fragile,
        has_inputs=True,
        concurrency_limit=2,
        show_error=lambda: show_error,
    )
    bad, good = peers(send=BarcodeVideoTrack(320, 240)), peers(send=BarcodeVideoTrack(320, 240))
    for peer in (bad, good):
        assert (await peer.connect(server.offer))["type"] == "answer"
    server.set_input(good.webrtc_id, [False])
    server.set_input(bad.webrtc_id, [True])
    await bad.wait_message(lambda m: '"error"' in m, 10, "the error message")
    (error,) = [m for m in bad.json_messages() if m.get("type") == "error"]
    if show_error:
        assert error["message"] == "RuntimeError: model exploded at /secret/path?token=abc"
    else:
        text = str(error["message"])
        assert "secret" not in text and "exploded" not in text, text
        match = re.search(r"error id ([0-9a-f]{8})", text)
        assert match, text
        (record,) = [r for r in caplog.records if match.group(1) in r.getMessage()]
        assert record.exc_info and "model exploded" in str(record.exc_info[1])
    await async_wait_until(lambda: server.connection(bad.webrtc_id) is None, 10, "cleanup")
    assert "model exploded" in caplog.text and "Traceback" in caplog.text
    assert bad.webrtc_id not in caplog.text, "the connection's id was logged"
    ids = [i for i in await collect_ids(await good.wait_remote(), 30) if i is not None]
    assert len(ids) >= 25 and ids == sorted(ids), "the other connection stopped streaming"


async def test_blocking_emit_on_many_connections(servers: Any, peers: Any) -> None:
    """Eight guide EchoHandlers (blocking emit) all echo at once (a shared worker pool
    would starve)."""
    server = servers(
        mode="send-receive", modality="audio", handler=EchoHandler(), concurrency_limit=None
    )
    freqs = [400.0 + 100 * i for i in range(8)]
    clients = [peers(send=ToneAudioTrack(f)) for f in freqs]
    for client in clients:
        assert (await client.connect(server.offer))["type"] == "answer"
    remotes = [await c.wait_remote() for c in clients]
    audios = await asyncio.gather(*(collect_audio(r, 1.0) for r in remotes))
    for freq, audio in zip(freqs, audios, strict=True):
        assert dominant_frequency(audio[-24000:], 48000) == pytest.approx(freq, abs=5)


async def test_idle_emit_does_not_spin(servers: Any, peers: Any) -> None:
    """emit() returning None is called about once per 20 ms, not in a busy loop."""
    made: list[Recording] = []
    server = servers(mode="send-receive", modality="audio", handler=Recording(made))
    peer = peers(send=ToneAudioTrack(440.0))
    assert (await peer.connect(server.offer))["type"] == "answer"
    await async_wait_until(lambda: made and len(made[0].frames) >= 10, 10, "input blocks")
    start_emits, start = made[0].emits, time.monotonic()
    await asyncio.sleep(1.0)  # measuring a rate over a fixed window
    rate = (made[0].emits - start_emits) / (time.monotonic() - start)
    assert rate < 150, f"emit() called {rate:.0f} times per second while idle"


# -- admission ------------------------------------------------------------------------


async def test_concurrent_offers_admit_exactly_the_limit(servers: Any, peers: Any) -> None:
    server = servers(
        mode="send-receive", modality="audio", handler=EchoHandler(), concurrency_limit=3
    )
    clients = [peers(send=ToneAudioTrack(440.0)) for _ in range(10)]
    bodies = await asyncio.gather(*(c.offer_body() for c in clients))
    replies = await asyncio.gather(*(server.offer(b) for b in bodies))
    answers = [r for r in replies if r.get("type") == "answer"]
    refused = [r for r in replies if r.get("status") == "failed"]
    assert len(answers) == 3 and len(refused) == 7
    for reply in refused:
        assert reply["meta"]["error"] == "concurrency_limit_reached"
        assert reply["meta"]["limit"] == 3


async def test_duplicate_id_never_replaces_a_connection(servers: Any, peers: Any) -> None:
    server = servers(
        mode="send-receive", modality="audio", handler=EchoHandler(), concurrency_limit=None
    )
    first = peers(send=ToneAudioTrack(440.0), webrtc_id="same-id")
    assert (await first.connect(server.offer))["type"] == "answer"
    original = server.connection("same-id")
    second = peers(send=ToneAudioTrack(880.0), webrtc_id="same-id")
    reply = await second.connect(server.offer)
    assert reply["meta"]["error"] == "connection_already_exists"
    assert server.connection("same-id") is original
    audio = await collect_audio(await first.wait_remote(), 1.0)
    assert dominant_frequency(audio[-24000:], 48000) == pytest.approx(440.0, abs=5)


async def test_abandoned_offer_frees_its_slot(servers: Any, peers: Any) -> None:
    made: list[Recording] = []
    server = servers(
        mode="send-receive", modality="audio", handler=Recording(made), connect_timeout=0.5
    )
    ghost = peers(send=ToneAudioTrack(440.0))
    reply = await server.offer(await ghost.offer_body())  # the answer is never applied
    assert reply["type"] == "answer"
    assert len(server) == 1
    await async_wait_until(lambda: len(server) == 0, 5, "the abandoned slot to be freed")
    assert made[0].shutdowns == 1
    late = peers(send=ToneAudioTrack(440.0))
    assert (await late.connect(server.offer))["type"] == "answer"


async def test_pending_connections_count_against_the_limit(servers: Any, peers: Any) -> None:
    server = servers(mode="send-receive", modality="audio", handler=EchoHandler())
    ghost = peers(send=ToneAudioTrack(440.0))
    assert (await server.offer(await ghost.offer_body()))["type"] == "answer"
    other = peers(send=ToneAudioTrack(440.0))
    reply = await other.connect(server.offer)
    assert reply["meta"]["error"] == "concurrency_limit_reached"


async def test_media_of_the_wrong_kind_is_refused(servers: Any, peers: Any) -> None:
    """Audio offered to a video stream gets ``unsupported_media`` (not an HTTP 500)."""
    server = servers(mode="send-receive", modality="video", handler=lambda f: f)
    peer = peers(send=ToneAudioTrack(440.0))
    reply = await peer.connect(server.offer)
    assert reply["meta"]["error"] == "unsupported_media"
    assert len(server) == 0


# -- lifecycle (time_limit, cleanup) ---------------------------------------------------


async def test_time_limit_ends_the_stream_and_says_why(servers: Any, peers: Any) -> None:
    made: list[Recording] = []
    server = servers(mode="send-receive", modality="audio", handler=Recording(made), time_limit=1.0)
    peer = peers(send=ToneAudioTrack(440.0))
    assert (await peer.connect(server.offer))["type"] == "answer"
    await peer.wait_connected()
    connected = time.monotonic()
    await peer.wait_message(lambda m: "time_limit" in m, 5, "end_stream time_limit")
    elapsed = time.monotonic() - connected
    assert 0.8 < elapsed < 2.0, f"ended after {elapsed:.2f} s, time_limit is 1.0 s"
    assert {"type": "end_stream", "reason": "time_limit"} in peer.json_messages()
    await async_wait_until(lambda: len(server) == 0, 5, "cleanup")
    assert made[0].shutdowns == 1


async def test_client_stop_message_frees_the_slot_at_once(servers: Any, peers: Any) -> None:
    made: list[Recording] = []
    server = servers(mode="send-receive", modality="audio", handler=Recording(made))
    peer = peers(send=ToneAudioTrack(440.0))
    assert (await peer.connect(server.offer))["type"] == "answer"
    await peer.wait_connected()
    await async_wait_until(lambda: peer.channel.readyState == "open", 5, "data channel")
    peer.send(json.dumps({"type": "stop"}))
    await async_wait_until(lambda: len(server) == 0, 2, "the slot to be freed")
    assert made[0].shutdowns == 1
    again = peers(send=ToneAudioTrack(440.0))
    assert (await again.connect(server.offer))["type"] == "answer"


async def test_ice_failure_cleans_up(
    servers: Any, peers: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A client that vanishes (no close) is detected and cleaned up with shutdown()."""
    import aioice.ice

    monkeypatch.setattr(aioice.ice, "CONSENT_INTERVAL", 0.1)
    monkeypatch.setattr(aioice.ice, "CONSENT_FAILURES", 3)
    made: list[Recording] = []
    server = servers(mode="send-receive", modality="audio", handler=Recording(made))
    peer = peers(send=ToneAudioTrack(440.0))
    assert (await peer.connect(server.offer))["type"] == "answer"
    await async_wait_until(lambda: made and len(made[0].frames) >= 5, 10, "media flowing")
    # Vanish: stop the client's ICE transport without a DTLS/SCTP goodbye.
    for transceiver in peer.pc.getTransceivers():
        await transceiver.sender.transport.transport.stop()
    await async_wait_until(lambda: len(server) == 0, 10, "the dead connection to be removed")
    connection_reason = made[0].shutdowns
    assert connection_reason == 1
    await async_wait_until(lambda: not our_threads(), 5, "worker threads to end")


async def test_connect_disconnect_cycles_leave_nothing_behind(servers: Any) -> None:
    made: list[Recording] = []
    server = servers(
        mode="send-receive", modality="audio", handler=Recording(made), concurrency_limit=1
    )
    tasks_before = len(asyncio.all_tasks())
    for _ in range(200):
        peer = ClientPeer(send=ToneAudioTrack(440.0))
        assert (await peer.connect(server.offer))["type"] == "answer"
        await peer.wait_connected()
        await peer.close()
        await async_wait_until(lambda: len(server) == 0, 5, "the connection to be removed")
    assert len(made) == 200 and all(h.shutdowns == 1 for h in made)
    await async_wait_until(lambda: not our_threads(), 5, f"threads to end: {our_threads()}")
    await async_wait_until(lambda: len(asyncio.all_tasks()) <= tasks_before + 2, 5, "tasks to end")


# -- audio output framing -------------------------------------------------------------


async def test_mixed_output_rates_and_dtypes_all_arrive(servers: Any, peers: Any) -> None:
    def generate() -> Any:
        yield (24000, tone(500.0, 0.5, sample_rate=24000).reshape(1, -1))
        yield (16000, tone(500.0, 0.5, sample_rate=16000, dtype="float32").reshape(1, -1))
        yield (48000, tone(500.0, 0.5, sample_rate=48000).reshape(1, -1), "mono")

    server = servers(mode="receive", modality="audio", handler=generate)
    peer = peers(receive="audio")
    assert (await peer.connect(server.offer))["type"] == "answer"
    track = await peer.wait_remote()
    loud = 0
    try:
        while True:
            frame = await asyncio.wait_for(track.recv(), 3)
            data = frame.to_ndarray().astype(np.float64) / 32768
            if np.sqrt(np.mean(data**2)) > 0.05:
                loud += frame.samples
    except (MediaStreamError, asyncio.TimeoutError):
        pass
    assert loud / 48000 == pytest.approx(1.5, abs=0.08), "audio was dropped or duplicated"


async def test_tail_of_an_utterance_is_flushed(servers: Any, peers: Any) -> None:
    """0.1 s at 16 kHz arrives whole; gradio_webrtc held back its last frame."""

    def generate() -> Any:
        yield (16000, tone(700.0, 0.1, sample_rate=16000).reshape(1, -1))

    server = servers(mode="receive", modality="audio", handler=generate)
    peer = peers(receive="audio")
    assert (await peer.connect(server.offer))["type"] == "answer"
    track = await peer.wait_remote()
    loud = 0
    try:
        while True:
            frame = await asyncio.wait_for(track.recv(), 3)
            data = frame.to_ndarray().astype(np.float64) / 32768
            loud += int(np.sum(np.abs(data.reshape(-1, 2)[:, 0]) > 0.05))
    except (MediaStreamError, asyncio.TimeoutError):
        pass
    assert loud / 48000 == pytest.approx(0.1, abs=0.012)


# -- video latency stays bounded -------------------------------------------------------


async def test_slow_video_handler_keeps_latency_bounded(servers: Any, peers: Any) -> None:
    def slow(frame: np.ndarray) -> np.ndarray:
        time.sleep(0.1)
        return frame

    server = servers(mode="send-receive", modality="video", handler=slow)
    source = BarcodeVideoTrack(320, 240)
    peer = peers(send=source)
    assert (await peer.connect(server.offer))["type"] == "answer"
    track = await peer.wait_remote()
    lags: list[float] = []
    end = time.monotonic() + 4
    while time.monotonic() < end:
        frame = (await asyncio.wait_for(track.recv(), 5)).to_ndarray(format="rgb24")
        frame_id = read_frame_id(frame)
        if frame_id is not None:
            lags.append(time.time() - source.sent[frame_id])
    assert len(lags) >= 20, "the slow handler's frames did not come back"
    early, late = np.median(lags[: len(lags) // 3]), np.median(lags[-len(lags) // 3 :])
    assert late < 0.5, f"latency grew to {late:.2f} s"
    assert late - early < 0.15, f"latency grew from {early:.2f} s to {late:.2f} s"


async def test_outputs_yielded_at_the_end_are_still_served(servers: Any, peers: Any) -> None:
    """Outputs queued just before the time limit are fetched after the connection ended."""

    def detect(frame: np.ndarray) -> AdditionalOutputs:
        return AdditionalOutputs(read_frame_id(frame))

    server = servers(mode="send", modality="video", handler=detect, time_limit=1.0)
    peer = peers(send=BarcodeVideoTrack(320, 240))
    assert (await peer.connect(server.offer))["type"] == "answer"
    await peer.wait_message(lambda m: "time_limit" in m, 5, "end_stream time_limit")
    await async_wait_until(lambda: len(server) == 0, 5, "cleanup")
    changes = peer.messages.count("change")
    popped = []
    while (item := server.pop_additional_outputs(peer.webrtc_id)) is not None:
        popped.append(item.args[0])
    assert len(popped) == changes >= 10, "outputs announced with 'change' were lost"
    assert popped == sorted(popped)
    assert server.pop_additional_outputs("never-existed") is None


# -- bounded per-connection buffers -----------------------------------------------------


def test_output_queue_keeps_the_newest_and_counts_what_it_drops(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from webrtc_ref.outputs import OutputQueue

    queue = OutputQueue(capacity=10, tag="ctest")
    with caplog.at_level("WARNING", logger="webrtc_ref.outputs"):
        for i in range(25):
            queue.put(AdditionalOutputs(i))
    assert len(queue) == 10 and queue.drops.count == 15
    assert [queue.pop().args[0] for _ in range(10)] == list(range(15, 25))  # type: ignore[union-attr]
    warnings = [r for r in caplog.records if "dropped" in r.getMessage()]
    assert len(warnings) == 1, "the drop warning is not rate-limited"
    assert "ctest" in warnings[0].getMessage()


async def test_messages_and_outputs_for_a_channel_that_never_opens_are_bounded(
    servers: Any, peers: Any
) -> None:
    """A client that never connects: what the handler produces meanwhile is capped."""
    from webrtc_ref.connection import MAX_PENDING_MESSAGES
    from webrtc_ref.outputs import MAX_QUEUED_OUTPUTS

    produced = threading.Event()

    def flood() -> Any:
        for i in range(3000):
            yield AdditionalOutputs(i)
        produced.set()
        yield None

    server = servers(mode="receive", modality="video", handler=flood)
    peer = peers(receive="video")
    reply = await server.offer(await peer.offer_body())  # the answer is never applied
    assert reply["type"] == "answer"
    connection = server.connection(peer.webrtc_id)
    await async_wait_until(produced.is_set, 10, "the generator to finish")
    await async_wait_until(
        lambda: connection.outputs.drops.count == 3000 - MAX_QUEUED_OUTPUTS, 5, "drops"
    )
    assert len(connection.outputs) == MAX_QUEUED_OUTPUTS
    assert connection.outputs.pop().args == (3000 - MAX_QUEUED_OUTPUTS,)  # type: ignore[union-attr]
    assert len(connection._pending_messages) <= MAX_PENDING_MESSAGES
    assert connection.message_drops.count >= 3000 - MAX_PENDING_MESSAGES


async def test_leftover_outputs_are_served_to_their_session_only(servers: Any, peers: Any) -> None:
    """Outputs still queued when a connection ends are fetched by its own session only,
    and expired leftovers go."""
    from webrtc_ref.server import Client

    def two_outputs() -> Any:
        yield AdditionalOutputs("first")
        yield AdditionalOutputs("second")

    server = servers(mode="receive", modality="video", handler=two_outputs)
    peer = peers(receive="video")
    reply = await peer.connect(lambda body: server.offer(body, Client(session="mine")))
    assert reply["type"] == "answer"
    await async_wait_until(lambda: len(server) == 0, 10, "the stream to end")
    assert server.pop_additional_outputs(peer.webrtc_id, owner="theirs") is None
    assert server.pop_additional_outputs(peer.webrtc_id) is None
    first = server.pop_additional_outputs(peer.webrtc_id, owner="mine")
    assert first == AdditionalOutputs("first")
    # expiry: the rest goes once the grace period is over
    server._leftovers[peer.webrtc_id] = (
        *server._leftovers[peer.webrtc_id][:2],
        0.0,
    )
    assert server.pop_additional_outputs(peer.webrtc_id, owner="mine") is None


# -- the worker contract -----------------------------------------------------------------


async def test_a_worker_shutdown_cannot_free_is_left_behind_and_holds_nothing(
    servers: Any, peers: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """emit blocks on an Event that shutdown() does not set: the connection is released
    anyway (slot, peer connection), the worker is logged once and counted as stuck, and
    it leaves when its call finally returns."""
    release = threading.Event()

    class Stubborn(StreamHandler):
        def receive(self, frame: tuple[int, np.ndarray]) -> None:
            pass

        def emit(self) -> None:
            release.wait(30)

        def copy(self) -> Stubborn:
            return Stubborn()

    server = servers(mode="send-receive", modality="audio", handler=Stubborn())
    peer = peers(send=ToneAudioTrack(440.0))
    assert (await peer.connect(server.offer))["type"] == "answer"
    await peer.wait_connected()
    connection = server.connection(peer.webrtc_id)
    with caplog.at_level("WARNING", logger="webrtc_ref.runner"):
        started = time.monotonic()
        await server.close_connection(peer.webrtc_id, "client_closed")
        took = time.monotonic() - started
    assert len(server) == 0 and connection.pc.connectionState == "closed"
    assert took < 3.0, f"closing waited {took:.1f} s for the stuck worker"
    warnings = [r.getMessage() for r in caplog.records if "left behind" in r.getMessage()]
    assert len(warnings) == 1 and "Stubborn" in warnings[0], warnings
    assert server.stats().stuck_workers == 1
    release.set()
    await async_wait_until(lambda: server.stats().stuck_workers == 0, 5, "the worker to leave")


async def test_shutdown_unblocks_any_primitive_and_nothing_is_left(
    servers: Any, peers: Any
) -> None:
    """The documented pattern: emit waits on an Event, shutdown() sets it; the close is
    quick and no worker is left behind."""

    class Waiting(StreamHandler):
        def __init__(self) -> None:
            super().__init__()
            self.ready = threading.Event()

        def receive(self, frame: tuple[int, np.ndarray]) -> None:
            pass

        def emit(self) -> None:
            self.ready.wait()

        def shutdown(self) -> None:
            self.ready.set()

        def copy(self) -> Waiting:
            return Waiting()

    server = servers(mode="send-receive", modality="audio", handler=Waiting())
    peer = peers(send=ToneAudioTrack(440.0))
    assert (await peer.connect(server.offer))["type"] == "answer"
    await peer.wait_connected()
    started = time.monotonic()
    await server.close_connection(peer.webrtc_id, "client_closed")
    assert time.monotonic() - started < 1.5
    assert server.stats().stuck_workers == 0
    await async_wait_until(lambda: not our_threads(), 5, "the workers to end")


async def test_a_blocking_emit_gets_its_tail_flushed(servers: Any, peers: Any) -> None:
    """The guide's blocking emit (Queue.get) returns one 30 ms chunk at 24 kHz, then blocks:
    all 30 ms are played at once, not held back until the next chunk."""
    import queue as queue_module

    chunks: queue_module.Queue[Any] = queue_module.Queue()

    class OneShot(StreamHandler):
        def __init__(self) -> None:
            super().__init__()
            self.queue = chunks

        def receive(self, frame: tuple[int, np.ndarray]) -> None:
            pass

        def emit(self) -> Any:
            return self.queue.get()

        def copy(self) -> OneShot:
            return OneShot()

    server = servers(mode="send-receive", modality="audio", handler=OneShot())
    peer = peers(send=ToneAudioTrack(440.0))
    assert (await peer.connect(server.offer))["type"] == "answer"
    track = await peer.wait_remote()
    chunks.put((24000, tone(700.0, 0.03, sample_rate=24000).reshape(1, -1)))
    loud = 0
    deadline = time.monotonic() + 1.5
    while time.monotonic() < deadline:
        try:
            frame = await asyncio.wait_for(track.recv(), 0.5)
        except asyncio.TimeoutError:
            break
        data = frame.to_ndarray().astype(np.float64) / 32768
        loud += int(np.sum(np.abs(data.reshape(-1, 2)[:, 0]) > 0.05))
    assert loud / 48000 == pytest.approx(0.03, abs=0.005), f"{loud / 48:.1f} ms arrived"
