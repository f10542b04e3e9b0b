"""The standalone client in Chromium: the plain page of ``webrtc-ref serve`` (no Gradio),
``webrtc_ref.standalone.standalone_app`` served by uvicorn on 127.0.0.1, streaming through
``/client.js`` and the mounted Stream's routes with the fixture media as camera and
microphone.

1. audio echo (EchoHandler): signature 57 comes back, identified by content;
2. video filter (the echo-video demo's Stream): barcode frames come back in order,
   filtered, and the page's slider (an additional input, through ``setInput`` and the
   input route) retunes the filter while streaming;
3. receive mode: the generator's barcoded frames are shown, in order, in real time;
4. inputs and outputs: a video handler returns its input's value as ``AdditionalOutputs``,
   which reach the page through the output route (server-sent events) and follow the
   input when it changes;
5. fastrtc's documented client JavaScript, verbatim, against a mounted Stream
   (``require_token=False``): it streams, and its stop() ends the server's connection.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import gradio as gr
import numpy as np
import pytest

from browser_tests.helpers import (
    NO_PROCESSING,
    SIGNATURE_ID,
    Peer,
    assert_in_order,
    frame_ids,
    poll,
)
from browser_tests.test_video import green_fraction
from fixtures import analysis
from fixtures.video import read_frame_id
from webrtc_ref import AdditionalOutputs, Stream
from webrtc_ref.standalone import demo_stream, standalone_app
from webrtc_ref.testing import free_port, wait_until

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ROOT = ".webrtc-ref"


@contextmanager
def served(stream: Stream, title: str = "standalone") -> Iterator[str]:
    """``standalone_app(stream)`` on a free loopback port until the block exits; then
    every connection of the stream is closed."""
    import uvicorn

    from webrtc_ref.lifecycle import watch_uvicorn

    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            standalone_app(stream, title), host="127.0.0.1", port=port, log_level="warning"
        )
    )
    watch_uvicorn(server)
    thread = threading.Thread(target=server.run, name="uvicorn-standalone", daemon=True)
    thread.start()
    wait_until(lambda: server.started, 20, "uvicorn to start")
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        server.should_exit = True
        thread.join(20)
    assert stream.server.stats().connections == 0


def outputs_of(peer: Peer) -> list[list[Any]]:
    return list(peer.eval("(root) => root.__webrtc.outputs.slice()"))


@pytest.mark.timeout(60)
def test_audio_echo_through_the_standalone_client(
    open_peer: Callable[..., Peer], timings: Any
) -> None:
    """1: the page's microphone (signature 57) comes back from EchoHandler, identified."""
    from webrtc_ref.demos.echo_audio import EchoHandler

    stream = Stream(EchoHandler(), modality="audio", track_constraints=NO_PROCESSING, time_limit=30)
    with served(stream) as url:
        peer = open_peer(url, root=ROOT, name="echo")
        assert peer.page.evaluate("() => !!document.querySelector('script[type=module]')")
        peer.start()
        assert peer.wait_state("streaming", "error") == "streaming", peer.text(".wr-error")
        token = peer.eval("(root) => root.__webrtc.token")
        assert isinstance(token, str) and len(token) >= 32, token
        session = peer.wait_first_media()
        first_audible = session["firstAudioAt"]
        poll(lambda: peer.now() - first_audible > 2000, 10, "2 s of echoed audio")
        audio = peer.audio()
        peer.stop()
        assert peer.wait_state("idle") == "idle"
        assert peer.text(".wr-status") == "Stopped."
        wait_until(lambda: stream.server.stats().connections == 0, 10, "the server to close it")

    step = audio.rate // 10
    start = audio.sample_at(first_audible) + 2 * step
    windows = range(start, len(audio.remote) - step + 1, step)
    sent = [analysis.identify_signature(audio.local[i : i + step], audio.rate) for i in windows]
    heard = [analysis.identify_signature(audio.remote[i : i + step], audio.rate) for i in windows]
    assert len(heard) >= 15, "recording too short"
    assert set(sent) == {SIGNATURE_ID}, sent
    assert set(heard) <= {SIGNATURE_ID, None}, heard
    assert heard.count(SIGNATURE_ID) >= 0.7 * len(heard), heard
    sent_db = float(np.median([analysis.level_dbfs(audio.local[i : i + step]) for i in windows]))
    heard_db = float(np.median([analysis.level_dbfs(audio.remote[i : i + step]) for i in windows]))
    assert abs(heard_db - sent_db) < 3.0, (sent_db, heard_db)
    timings.record(
        "standalone: echo audio",
        session,
        "echo",
        windows_identified=f"{heard.count(SIGNATURE_ID)}/{len(heard)}",
    )


@pytest.mark.timeout(60)
def test_video_filter_and_its_slider_through_the_standalone_client(
    open_peer: Callable[..., Peer], timings: Any
) -> None:
    """2: filtered frames come back in order; the page's plain slider retunes the filter."""
    with served(demo_stream("echo-video")) as url:
        peer = open_peer(url, root=ROOT, name="webcam")
        slider = peer.page.locator("#inputs input[type=range]")
        assert slider.count() == 1
        peer.start()
        assert peer.wait_state("streaming", "error") == "streaming", peer.text(".wr-error")
        session = peer.wait_first_media()
        frames = peer.capture_frames(45)
        assert_in_order(frame_ids(frames))
        rgb, _ = peer.grab()
        assert 0.01 < green_fraction(rgb) < 0.3, green_fraction(rgb)  # threshold 0.3
        moved = peer.now()
        slider.fill("0")  # every pixel is an edge at threshold 0
        all_green = poll(
            lambda: (g := peer.grab()) and green_fraction(g[0]) > 0.95 and g,
            10,
            "the whole frame to turn green (threshold 0)",
        )
        peer.stop()
        assert peer.wait_state("idle") == "idle"
    timings.record(
        "standalone: video filter",
        session,
        "webcam",
        slider_to_green_ms=round(all_green[1] - moved),
    )


#: The receive stream's frames: barcodes of their index, 10 s at 30 fps.
RECEIVE_SIZE, RECEIVE_FPS = (640, 360), 30


def barcodes() -> Iterator[np.ndarray]:
    from fixtures.video import make_frame

    for index in range(10 * RECEIVE_FPS):
        yield np.asarray(make_frame(index, *RECEIVE_SIZE))


@pytest.mark.timeout(60)
def test_receive_mode_through_the_standalone_client(
    open_peer: Callable[..., Peer], timings: Any
) -> None:
    """3: the page shows the generator's frames, in order, at the generator's rate."""
    with served(Stream(barcodes, modality="video", mode="receive")) as url:
        peer = open_peer(url, root=ROOT, name="viewer")
        assert peer.page.is_hidden(".wr-local")
        peer.start()
        assert peer.wait_state("streaming", "error") == "streaming", peer.text(".wr-error")
        session = peer.wait_first_media()
        shown: list[tuple[float, int]] = []
        for _ in range(4):
            count = peer.session()["frames"]
            poll(lambda c=count: peer.session()["frames"] >= c + 10, 10, "10 more frames")
            rgb, at = peer.grab()
            assert rgb.shape == (RECEIVE_SIZE[1], RECEIVE_SIZE[0], 3)
            index = read_frame_id(rgb)
            assert index is not None, "the shown frame is none of the generator's"
            shown.append((at, index))
        peer.stop()
        assert peer.wait_state("idle") == "idle"
    indices = [i for _, i in shown]
    assert all(b > a for a, b in itertools.pairwise(indices)), shown
    rate = (indices[-1] - indices[0]) / ((shown[-1][0] - shown[0][0]) / 1000)
    assert 20 < rate < 40, (rate, shown)
    timings.record("standalone: receive video", session, "viewer")


def level_echo(frame: np.ndarray, level: float) -> tuple[np.ndarray, AdditionalOutputs]:
    """The frame back, and the input's value with the frame's mean as outputs."""
    return frame, AdditionalOutputs(level, round(float(frame.mean()), 1))


@pytest.mark.timeout(60)
def test_inputs_reach_the_handler_and_outputs_reach_the_page(
    open_peer: Callable[..., Peer], timings: Any
) -> None:
    """4: the slider's value reaches the handler (setInput -> the input route) and comes
    back as AdditionalOutputs through the output route (server-sent events)."""
    stream = Stream(
        level_echo,
        modality="video",
        additional_inputs=[gr.Slider(label="level", minimum=0, maximum=10, step=1, value=3)],
        additional_outputs=[gr.Number(label="level"), gr.Number(label="mean")],
    )
    with served(stream) as url:
        peer = open_peer(url, root=ROOT, name="levels")
        peer.start()
        assert peer.wait_state("streaming", "error") == "streaming", peer.text(".wr-error")
        first = poll(lambda: outputs_of(peer), 15, "the first additional outputs")[0]
        assert first[0] == 3, first  # the slider's initial value, sent with the answer
        assert 10 < first[1] < 250, first  # a camera frame's mean grey, not a placeholder
        moved = time.monotonic()
        peer.page.locator("#inputs input[type=range]").fill("7")
        poll(lambda: any(o[0] == 7 for o in outputs_of(peer)), 10, "outputs with level 7")
        follow_ms = (time.monotonic() - moved) * 1000
        values = [o[0] for o in outputs_of(peer)]
        # once 7 arrived, never 3 again: the inputs changed once, in order
        assert 3 not in values[values.index(7) :], values
        shown = peer.page.inner_text("#outputs")
        assert "level: 7" in shown, shown
        # the same values through the connection's async iterator (they waited for a
        # reader, the oldest dropped beyond 256): 3s, then 7s, in order
        pulled = peer.eval(
            """async (root) => {
                const it = root.__webrtc.connection.outputs[Symbol.asyncIterator]();
                const levels = [];
                while (levels.length < 400) {
                    const { value, done } = await it.next();
                    if (done) break;
                    levels.push(value[0]);
                    if (value[0] === 7) break;
                }
                return levels;
            }"""
        )
        assert pulled[-1] == 7 and set(pulled[:-1]) <= {3}, pulled
        peer.stop()
        assert peer.wait_state("idle") == "idle"
    timings.record(
        "standalone: inputs -> outputs", peer.session(), "levels", input_to_output_ms=follow_ms
    )


# fastrtc's documented client (userguide/api.md, the WebRTC template rendered for
# mode="send-receive", modality="video"), verbatim, and its stop() (webrtc_docs.md).
FASTRTC_CLIENT = """
// pass any rtc_configuration params here
const pc = new RTCPeerConnection();
const video_output_component = document.getElementById("video_output_component_id");
async function setupWebRTC(peerConnection) {
    // Get video stream from webcam
    const stream = await navigator.mediaDevices.getUserMedia({
        video: true,
    })
    //  Send video stream to server
    stream.getTracks().forEach(async (track) => {
        const sender = pc.addTrack(track, stream);
    })
    peerConnection.addEventListener("track", (evt) => {
        if (video_output_component &&
            video_output_component.srcObject !== evt.streams[0]) {
            video_output_component.srcObject = evt.streams[0];
        }
    });
    // Create data channel (needed!)
    const dataChannel = peerConnection.createDataChannel("text");

    // Create and send offer
    const offer = await peerConnection.createOffer();
    await peerConnection.setLocalDescription(offer);

    let webrtc_id = Math.random().toString(36).substring(7)

    // Send ICE candidates to server
    // (especially needed when server is behind firewall)
    peerConnection.onicecandidate = ({ candidate }) => {
        if (candidate) {
            console.debug("Sending ICE candidate", candidate);
            fetch('/webrtc/offer', {
            method: 'POST',
            headers: { 'Content-Type': 'application/json' },
            body: JSON.stringify({
                candidate: candidate.toJSON(),
                webrtc_id: webrtc_id,
                type: "ice-candidate",
                    })
                })
            }
    };

    // Send offer to server
    const response = await fetch('/webrtc/offer', {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({
            sdp: offer.sdp,
            type: offer.type,
            webrtc_id: webrtc_id
        })
    });

    // Handle server response
    const serverResponse = await response.json();
    await peerConnection.setRemoteDescription(serverResponse);
}

function stop(pc) {
  // close transceivers
  if (pc.getTransceivers) {
    pc.getTransceivers().forEach((transceiver) => {
      if (transceiver.stop) {
        transceiver.stop();
      }
    });
  }

  // close local audio / video
  if (pc.getSenders()) {
    pc.getSenders().forEach((sender) => {
      if (sender.track && sender.track.stop) sender.track.stop();
    });
  }

  // close peer connection
  setTimeout(() => {
    pc.close();
  }, 500);
}
"""

FASTRTC_PAGE = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>fastrtc's documented client</title></head>
<body>
<div class="webrtc-ref">
  <video id="video_output_component_id" class="wr-remote" autoplay playsinline muted></video>
</div>
<script>{FASTRTC_CLIENT}</script>
<script>
  // test glue, not part of fastrtc's snippet: expose pc, start
  document.querySelector(".webrtc-ref").__webrtc = {{ pc }};
  window.setupDone = setupWebRTC(pc).then(() => "ok", (e) => String(e));
</script>
</body></html>
"""


@pytest.mark.timeout(60)
def test_fastrtcs_documented_client_streams_unchanged(
    open_peer: Callable[..., Peer], timings: Any
) -> None:
    """fastrtc's documented JavaScript, verbatim, against a mounted Stream
    (require_token=False): its offer leaves before ICE gathering, so it connects through
    the candidates it posts as they come (some before the offer); the shown frames are
    the camera's barcodes, advancing; its stop() closes the server's connection."""
    import uvicorn
    from fastapi import FastAPI
    from fastapi.responses import HTMLResponse

    stream = Stream(lambda frame: frame, modality="video", concurrency_limit=None)
    app = FastAPI()
    stream.mount(app, require_token=False)

    async def page() -> HTMLResponse:
        return HTMLResponse(FASTRTC_PAGE)

    app.add_api_route("/", page, methods=["GET"])
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, name="uvicorn-fastrtc", daemon=True)
    thread.start()
    wait_until(lambda: server.started, 20, "uvicorn to start")
    try:
        peer = open_peer(f"http://127.0.0.1:{port}/", root=ROOT, name="fastrtc")
        assert peer.page.evaluate("() => window.setupDone") == "ok"
        poll(
            lambda: peer.eval("(root) => root.__webrtc.pc.connectionState") == "connected",
            20,
            "fastrtc's client to connect",
        )
        assert stream.server.stats().connections == 1
        ids = []
        for _ in range(3):
            rgb, at = peer.grab()
            grey = rgb.mean(axis=2).astype(np.uint8)
            ids.append(read_frame_id(grey))
            poll(lambda t=at: peer.now() > t + 300, 5, "300 ms")
        assert all(i is not None for i in ids), ids
        assert ids[0] < ids[-1] or ids[-1] < 60, ids  # advancing (the file loops at 300)
        peer.page.evaluate("() => stop(pc)")
        wait_until(lambda: stream.server.stats().connections == 0, 15, "the server to close it")
    finally:
        server.should_exit = True
        thread.join(20)


@pytest.mark.timeout(60)
def test_a_refused_connection_shows_the_servers_error_code(
    open_peer: Callable[..., Peer],
) -> None:
    """With the default concurrency limit (one connection), a second page gets the
    server's refusal as state "error" with code concurrency_limit_reached and its message,
    while the first streams on."""
    with served(demo_stream("echo-video")) as url:
        first = open_peer(url, root=ROOT, name="first")
        first.start()
        assert first.wait_state("streaming", "error") == "streaming", first.text(".wr-error")
        second = open_peer(url, root=ROOT, name="second")
        second.start()
        assert second.wait_state("streaming", "error") == "error"
        assert second.attr("data-error-code") == "concurrency_limit_reached"
        assert "limit" in second.text(".wr-error").lower(), second.text(".wr-error")
        assert second.eval("(root) => root.__webrtc.connection.pc.signalingState") == "closed"
        assert first.state == "streaming"
        first.stop()
        assert first.wait_state("idle") == "idle"
