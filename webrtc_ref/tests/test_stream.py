"""``Stream``: ``.mount(app)`` on a FastAPI app served by uvicorn on 127.0.0.1, reached by
real aiortc client peers through ``POST /webrtc/offer`` (fastrtc's JSON), the hooks
``set_input`` / ``output_stream``, the input and output routes, and ``.ui``.

Media is checked by content: barcoded video frames come back in order, a tone comes back
at its frequency.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import gradio as gr
import httpx
import numpy as np
import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.responses import StreamingResponse

from fixtures.analysis import dominant_frequency
from fixtures.tracks import AudioRecorder, BarcodeVideoTrack, FrameRecorder, ToneAudioTrack
from fixtures.video import make_frame
from webrtc_ref import AdditionalOutputs, Stream, get_current_context
from webrtc_ref.demos.echo_audio import EchoHandler
from webrtc_ref.testing import ClientPeer, async_wait_until, free_port, launched, wait_until
from webrtc_ref.tests.test_audio_video import EchoAV

pytestmark = pytest.mark.timeout(90)

#: what the video function saw, by webrtc_id: the slider values it was called with
SEEN: dict[str, list[Any]] = {}


def video_fn(frame: np.ndarray, threshold: float) -> Any:
    webrtc_id = get_current_context().webrtc_id
    seen = SEEN.setdefault(webrtc_id, [])
    seen.append(threshold)
    if len(seen) % 10 == 0:
        return frame, AdditionalOutputs(len(seen), threshold)
    return frame


def barcodes() -> Iterator[np.ndarray]:
    """Receive mode: barcode frames 0, 1, 2, ... (the sender paces them)."""
    for frame_id in range(100_000):
        yield make_frame(frame_id, 320, 240)


@dataclass
class App:
    url: str
    video: Stream
    audio: Stream
    av: Stream
    limited: Stream
    receive: Stream


@pytest.fixture(scope="module")
def app() -> Iterator[App]:
    video = Stream(
        video_fn,
        modality="video",
        mode="send-receive",
        concurrency_limit=None,
        additional_inputs=[gr.Slider(minimum=0, maximum=1, value=0.3)],
        additional_outputs=[gr.Number(), gr.Number()],
    )
    audio = Stream(EchoHandler(), modality="audio", mode="send-receive", concurrency_limit=None)
    av = Stream(EchoAV(), modality="audio-video", mode="send-receive", concurrency_limit=None)
    limited = Stream(EchoHandler(), modality="audio", concurrency_limit=1)
    receive = Stream(barcodes, modality="video", mode="receive", concurrency_limit=None)
    fastapi_app = FastAPI()
    video.mount(fastapi_app)
    video.mount(fastapi_app, path="/open", require_token=False)
    receive.mount(fastapi_app, path="/receive")
    audio.mount(fastapi_app, path="/audio")
    av.mount(fastapi_app, path="/av")
    limited.mount(fastapi_app, path="/limited")

    # fastrtc's documented output hook, verbatim but for the serialisation
    @fastapi_app.get("/updates")
    async def stream_updates(webrtc_id: str) -> StreamingResponse:
        async def output_stream() -> AsyncIterator[str]:
            async for output in video.output_stream(webrtc_id):
                yield f"data: {json.dumps(list(output.args))}\n\n"

        return StreamingResponse(output_stream(), media_type="text/event-stream")

    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(fastapi_app, host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    wait_until(lambda: server.started, 20, "uvicorn to start")
    try:
        yield App(f"http://127.0.0.1:{port}", video, audio, av, limited, receive)
    finally:
        server.should_exit = True
        thread.join(20)
    # the app's lifespan ended: every stream closed its connections
    for stream in (video, audio, av, limited, receive):
        assert stream.server.stats().connections == 0
        assert stream.server.stats().shutting_down


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=20) as client:
        yield client


def poster(http: httpx.AsyncClient, url: str) -> Any:
    async def post(body: Any) -> dict[str, Any]:
        response = await http.post(url, json=body)
        assert response.status_code == 200, response.text
        return response.json()  # type: ignore[no-any-return]

    return post


async def connect(peer: ClientPeer, http: httpx.AsyncClient, url: str) -> dict[str, Any]:
    reply = await peer.connect(poster(http, url))
    assert reply.get("type") == "answer", reply
    assert isinstance(reply.get("token"), str) and len(str(reply["token"])) >= 32
    await peer.wait_connected()
    return reply


# ---------------------------------------------------------------------------- media


async def test_video_echo_through_the_mounted_offer_route(
    app: App, http: httpx.AsyncClient, peers: Any
) -> None:
    peer = peers(send=BarcodeVideoTrack(320, 240, fps=30))
    await connect(peer, http, f"{app.url}/webrtc/offer")
    video = FrameRecorder(await peer.wait_remote())
    await video.start()
    assert await video.wait_for(30, 20), f"readable frames back: {len(video.ids())}"
    ids = video.ids()
    assert ids == sorted(ids) and len(set(ids)) == len(ids), ids
    # the data channel speaks fastrtc's JSON: inputs are asked for with send_input
    await peer.wait_message(lambda m: '"send_input"' in m, 10, "send_input")
    assert "tick" not in peer.messages
    await video.stop()


async def test_audio_echo_through_the_mounted_offer_route(
    app: App, http: httpx.AsyncClient, peers: Any
) -> None:
    peer = peers(send=ToneAudioTrack(660))
    await connect(peer, http, f"{app.url}/audio/webrtc/offer")
    audio = AudioRecorder(await peer.wait_remote(), decode_timestamps=False)
    await audio.start()
    assert await audio.wait_until(lambda: len(audio.frames) >= 100, 20), len(audio.frames)
    tail = audio.samples()[-48000:]
    assert abs(dominant_frequency(tail, audio.sample_rate or 48000) - 660) < 5
    await audio.stop()


async def test_audio_video_echo_through_the_mounted_offer_route(
    app: App, http: httpx.AsyncClient, peers: Any
) -> None:
    peer = peers(send=[ToneAudioTrack(550), BarcodeVideoTrack(320, 240, fps=30)])
    await connect(peer, http, f"{app.url}/av/webrtc/offer")
    await async_wait_until(lambda: set(peer.remotes) == {"audio", "video"}, 10, "both tracks")
    audio = AudioRecorder(peer.remotes["audio"], decode_timestamps=False)
    video = FrameRecorder(peer.remotes["video"])
    await audio.start()
    await video.start()
    assert await video.wait_for(20, 20), len(video.ids())
    assert await audio.wait_until(lambda: len(audio.frames) >= 100, 20), len(audio.frames)
    tail = audio.samples()[-48000:]
    assert abs(dominant_frequency(tail, audio.sample_rate or 48000) - 550) < 5
    await audio.stop()
    await video.stop()


async def test_receive_mode_video_through_the_mounted_offer_route(
    app: App, http: httpx.AsyncClient, peers: Any
) -> None:
    peer = peers(receive="video")
    await connect(peer, http, f"{app.url}/receive/webrtc/offer")
    video = FrameRecorder(await peer.wait_remote())
    await video.start()
    assert await video.wait_for(20, 20), len(video.ids())
    ids = video.ids()
    assert ids == sorted(ids) and ids[-1] - ids[0] >= 19, ids
    await video.stop()


# ---------------------------------------------------------------------------- trickle ICE

_CANDIDATE = re.compile(r"^a=(candidate:.*)$", re.MULTILINE)


async def test_candidates_trickled_before_the_offer_reach_the_servers_ice_agent(
    app: App, http: httpx.AsyncClient, peers: Any
) -> None:
    """fastrtc's client posts its candidates as ``type: "ice-candidate"`` bodies while its
    offer (without candidates) is in flight: they are held and added once it is answered,
    as host candidates (not learned as peer-reflexive from the checks)."""
    url = f"{app.url}/audio/webrtc/offer"
    peer = peers(send=ToneAudioTrack(440))
    body = await peer.offer_body()
    lines = _CANDIDATE.findall(body["sdp"])
    assert lines
    stripped = re.sub(r"^a=(candidate:.*|end-of-candidates)\r\n", "", body["sdp"], flags=re.M)
    ports = set()
    for line in lines[:1]:
        ports.add(int(line.split()[5]))
        candidate = {"candidate": line, "sdpMid": "0", "sdpMLineIndex": 0}
        trickle = {"candidate": candidate, "webrtc_id": peer.webrtc_id, "type": "ice-candidate"}
        assert (await http.post(url, json=trickle)).json() == {"status": "ok"}
    reply = (await http.post(url, json={**body, "sdp": stripped})).json()
    assert reply["type"] == "answer", reply
    from aiortc import RTCSessionDescription

    await peer.pc.setRemoteDescription(RTCSessionDescription(reply["sdp"], "answer"))
    await peer.wait_connected()
    connection = app.audio.server.connection(peer.webrtc_id)
    assert connection is not None
    ice = connection.pc.getTransceivers()[0].receiver.transport.transport
    remote = {(c.port, c.type) for c in ice.getRemoteCandidates()}
    assert {(port, "host") for port in ports} <= remote, remote

    # once connected, a candidate needs the connection's token
    line = "candidate:9 1 udp 2130706431 127.0.0.1 40404 typ host"
    late = {
        "candidate": {"candidate": line, "sdpMid": "0", "sdpMLineIndex": 0},
        "webrtc_id": peer.webrtc_id,
        "type": "ice-candidate",
    }
    refused = (await http.post(url, json=late)).json()
    assert refused["meta"]["error"] == "unknown_connection", refused
    wrong = (await http.post(url, json={**late, "token": "x" * 32})).json()
    assert wrong["meta"]["error"] == "unknown_connection", wrong
    ok = (await http.post(url, json={**late, "token": reply["token"]})).json()
    assert ok == {"status": "ok"}
    assert ("127.0.0.1", 40404) in {(c.ip, c.port) for c in ice.getRemoteCandidates()}


# ---------------------------------------------------------------------------- hostile bodies


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (b"not json", "invalid_offer"),
        (b'"a string"', "invalid_offer"),
        (b'{"sdp": "v=0", "type": "offer"}', "invalid_offer"),
        (b'{"sdp": "nonsense", "type": "offer", "webrtc_id": "abc"}', "invalid_offer"),
        (b'{"sdp": "v=0", "type": "offer", "webrtc_id": "../etc"}', "invalid_offer"),
        (b'{"sdp": "v=0", "type": "answer", "webrtc_id": "abc"}', "invalid_offer"),
        (
            json.dumps(
                {"sdp": "v=0\r\n" + "a=x\r\n" * 20000, "type": "offer", "webrtc_id": "a"}
            ).encode(),
            "offer_too_large",
        ),
        (b'{"type": "ice-candidate", "webrtc_id": "abc", "candidate": "x"}', "invalid_candidate"),
        (
            json.dumps(
                {
                    "type": "ice-candidate",
                    "webrtc_id": "abc",
                    "candidate": {"candidate": "candidate:" + "x" * 600, "sdpMid": "0"},
                }
            ).encode(),
            "invalid_candidate",
        ),
    ],
)
async def test_hostile_offer_bodies_get_the_gradio_paths_failure_replies(
    app: App, http: httpx.AsyncClient, raw: bytes, code: str
) -> None:
    response = await http.post(
        f"{app.url}/audio/webrtc/offer",
        content=raw,
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 200
    reply = response.json()
    assert reply["status"] == "failed" and reply["meta"]["error"] == code, reply
    assert reply["meta"]["message"]
    assert app.audio.server.stats().pending == 0


async def test_a_body_of_unbounded_size_is_refused_without_being_read_whole(
    app: App, http: httpx.AsyncClient
) -> None:
    async def endless() -> AsyncIterator[bytes]:
        yield b'{"sdp": "'
        for _ in range(10_000):  # 640 MB if it were all read
            yield b"x" * 65536

    response = await http.post(f"{app.url}/audio/webrtc/offer", content=endless())
    assert response.json()["meta"]["error"] == "offer_too_large"


async def test_concurrency_limit_and_duplicate_ids_are_refused(
    app: App, http: httpx.AsyncClient, peers: Any
) -> None:
    url = f"{app.url}/limited/webrtc/offer"
    first = peers(send=ToneAudioTrack(440))
    await connect(first, http, url)
    second = peers(send=ToneAudioTrack(440))
    reply = await second.connect(poster(http, url))
    assert reply["meta"] == {**reply["meta"], "error": "concurrency_limit_reached", "limit": 1}
    # the same id again, from another client (another token): refused, not revealed
    again = peers(send=ToneAudioTrack(440), webrtc_id=first.webrtc_id)
    reply = await again.connect(poster(http, url))
    assert reply["meta"]["error"] == "invalid_offer" and reply["meta"]["field"] == "webrtc_id"
    assert app.limited.server.stats().connections == 1
    await first.close()
    connection = app.limited.server.connection(first.webrtc_id)
    if connection is not None:
        await asyncio.wrap_future(
            asyncio.run_coroutine_threadsafe(
                app.limited.server.close_connection(first.webrtc_id), connection.loop
            )
        )


# ---------------------------------------------------------------------------- hooks


async def test_set_input_and_the_input_route_reach_the_handler(
    app: App, http: httpx.AsyncClient, peers: Any
) -> None:
    peer = peers(send=BarcodeVideoTrack(160, 120, fps=30))
    reply = await connect(peer, http, f"{app.url}/webrtc/offer")
    seen = SEEN.setdefault(peer.webrtc_id, [])
    app.video.set_input(peer.webrtc_id, 0.7)
    await async_wait_until(lambda: 0.7 in seen, 10, "the hook's value in the video function")

    route = f"{app.url}/webrtc/input"
    body = {"webrtc_id": peer.webrtc_id, "token": reply["token"], "inputs": [0.9]}
    wrong = await http.post(route, json={**body, "token": "y" * 32, "inputs": [0.1]})
    assert wrong.status_code == 404 and wrong.json()["meta"]["error"] == "unknown_connection"
    missing = await http.post(route, json={"webrtc_id": peer.webrtc_id, "inputs": [0.2]})
    assert missing.status_code == 404
    bad = await http.post(route, json={**body, "inputs": [1, 2]})
    assert bad.status_code == 400 and bad.json()["meta"]["error"] == "invalid_input"
    assert (await http.post(route, content=b"[")).status_code == 400
    huge = await http.post(route, json={**body, "inputs": ["x" * 70000]})
    assert huge.status_code == 413
    ok = await http.post(route, json=body)
    assert ok.status_code == 200 and ok.json() == {"status": "ok"}, ok.text
    await async_wait_until(lambda: seen[-1] == 0.9, 10, "the route's value")
    assert 0.1 not in seen and 0.2 not in seen

    # mounted with require_token=False, the id alone is enough (fastrtc-style clients)
    opened = await http.post(
        f"{app.url}/open/webrtc/input", json={"webrtc_id": peer.webrtc_id, "inputs": [0.4]}
    )
    assert opened.status_code == 200, opened.text
    await async_wait_until(lambda: seen[-1] == 0.4, 10, "the token-less route's value")


async def _sse_items(response: httpx.Response, n: int) -> list[Any]:
    items = []
    async for line in response.aiter_lines():
        if line.startswith("data: "):
            items.append(json.loads(line[6:]))
            if len(items) >= n:
                break
    return items


async def test_outputs_reach_output_stream_and_the_sse_route(
    app: App, http: httpx.AsyncClient, peers: Any
) -> None:
    peer = peers(send=BarcodeVideoTrack(160, 120, fps=30))
    reply = await connect(peer, http, f"{app.url}/webrtc/offer")
    app.video.set_input(peer.webrtc_id, 0.5)
    # the documented custom route around output_stream
    async with http.stream("GET", f"{app.url}/updates", params={"webrtc_id": peer.webrtc_id}) as r:
        items = await asyncio.wait_for(_sse_items(r, 2), 20)
    assert [type(i[0]) for i in items] == [int, int] and items[0][0] < items[1][0], items
    assert all(i[0] % 10 == 0 for i in items), items

    # the built-in route, with the token; without it, or a second time, refused
    route = f"{app.url}/webrtc/outputs"
    denied = await http.get(route, params={"webrtc_id": peer.webrtc_id, "token": "z" * 32})
    assert denied.status_code == 404 and denied.json()["meta"]["error"] == "unknown_connection"
    params = {"webrtc_id": peer.webrtc_id, "token": reply["token"]}
    async with http.stream("GET", route, params=params) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        twice = await http.get(route, params=params)
        assert twice.status_code == 409
        items = await asyncio.wait_for(_sse_items(r, 2), 20)
    assert items[0][0] < items[1][0] and items[1][1] == 0.5, items


async def test_output_stream_of_an_unknown_id_ends_at_once(app: App) -> None:
    assert [item async for item in app.video.output_stream("nobody")] == []


# ---------------------------------------------------------------------------- the UI


async def test_ui_is_a_launchable_blocks_sharing_the_streams_server(
    app: App, http: httpx.AsyncClient, peers: Any
) -> None:
    stream = app.limited
    ui = stream.ui
    assert isinstance(ui, gr.Blocks)
    assert stream.webrtc_component.stream_server is stream.server
    peer = peers(send=ToneAudioTrack(440))
    await connect(peer, http, f"{app.url}/limited/webrtc/offer")
    with launched(ui) as url:
        page = await http.get(url)
        assert page.status_code == 200
        config = (await http.get(f"{url}/config")).json()
        component_id = stream.webrtc_component._id
        assert any(c["id"] == component_id for c in config["components"])
        # the UI's offers go to the same server: the route's connection fills its limit
        body = await peers(send=ToneAudioTrack(440)).offer_body()
        reply = await http.post(
            f"{url}/gradio_api/component_server/",
            json={
                "component_id": component_id,
                "fn_name": "offer",
                "data": body,
                "session_hash": "ui-session",
            },
        )
        assert reply.json()["meta"]["error"] == "concurrency_limit_reached", reply.text
    await peer.close()


def test_stream_options_are_checked_early() -> None:
    with pytest.raises(ValueError, match="StreamHandler"):
        Stream(lambda frame: frame, modality="audio")
    with pytest.raises(ValueError, match="allow_extra_tracks"):
        Stream(video_fn, allow_extra_tracks=True)
    with pytest.raises(ValueError, match="mode"):
        Stream(video_fn, mode="sideways")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="ui_args"):
        Stream(video_fn, ui_args={"colour": "red"})
    with pytest.raises(ValueError, match="full_screen"):
        Stream(video_fn, ui_args={"full_screen": "yes"})
    assert Stream(video_fn, ui_args={"full_screen": False}).webrtc_component.full_screen is False
    stream = Stream(video_fn, ui_args={"title": "Flip", "icon": "x.png"})
    with pytest.raises(ValueError, match="path"):
        stream.mount(FastAPI(), path="api/")
    with pytest.raises(ValueError, match=r"gr\.Blocks"):
        stream.ui = "not blocks"  # type: ignore[assignment]
    replacement = gr.Blocks()
    stream.ui = replacement
    assert stream.ui is replacement
