"""Gradio apps the browser tests launch besides the demos (``webrtc_ref.demos``).

Each is built fresh per module and launched in-process on a free loopback port
(``webrtc_ref.testing.launched``).
"""

from __future__ import annotations

from typing import Any

import gradio as gr
import numpy as np

from browser_tests.helpers import NO_PROCESSING
from webrtc_ref import WebRTC

#: Seconds the ``timed`` stream of the lifecycle app may last.
TIME_LIMIT = 3.0
EXPLOSION = "the handler exploded on purpose"


def echo_audio_app() -> gr.Blocks:
    """The user guide's EchoHandler (from the echo-audio demo), with Chrome's audio
    processing off so that levels can be compared."""
    from webrtc_ref.demos.echo_audio import EchoHandler

    with gr.Blocks(title="Echo, no audio processing") as demo:
        audio = WebRTC(
            label="Echo",
            mode="send-receive",
            modality="audio",
            track_constraints=NO_PROCESSING,
            elem_id="echo",
        )
        audio.stream(fn=EchoHandler(), inputs=[audio], outputs=[audio], time_limit=30)
    return demo


#: The receive-video app's frames: 10 s at 30 fps, each a barcode of its own index.
RECEIVE_WIDTH, RECEIVE_HEIGHT, RECEIVE_FPS = 640, 360, 30


def receive_video_app() -> gr.Blocks:
    """The guide's server-to-client video (a Start button triggers a generator), with
    frames that say which they are: ``fixtures.video`` barcodes of their index, which a
    reader cannot mistake for another frame's (a periodic pattern repeats)."""
    from fixtures.video import make_frame

    def generation() -> Any:
        for index in range(10 * RECEIVE_FPS):
            yield np.asarray(make_frame(index, RECEIVE_WIDTH, RECEIVE_HEIGHT))

    with gr.Blocks(title="Server-to-client video, barcoded") as demo:
        output_video = WebRTC(label="Video Stream", mode="receive", modality="video")
        button = gr.Button("Start", variant="primary")
        output_video.stream(
            fn=generation, inputs=None, outputs=[output_video], trigger=button.click
        )
    return demo


def identity(frame: np.ndarray) -> np.ndarray:
    """Send the webcam frame back unchanged (RGB uint8 in, RGB uint8 out)."""
    return frame


def fragile(frame: np.ndarray, explode: bool) -> np.ndarray:
    """Echo the frame, or raise while this session's "explode" checkbox is ticked."""
    if explode:
        raise RuntimeError(EXPLOSION)
    return frame


def lifecycle_app() -> tuple[gr.Blocks, dict[str, WebRTC]]:
    """Three video echo streams: ``timed`` (time_limit), ``limited`` (concurrency_limit=1)
    and ``fragile`` (unlimited; raises while its checkbox is ticked)."""
    components: dict[str, WebRTC] = {}
    with gr.Blocks(title="lifecycle") as demo:
        timed = WebRTC(label="Timed", elem_id="timed", time_limit=TIME_LIMIT, height=160)
        timed.stream(identity, inputs=[timed], outputs=[timed])
        limited = WebRTC(label="Limited", elem_id="limited", height=160)
        limited.stream(identity, inputs=[limited], outputs=[limited], concurrency_limit=1)
        fragile_video = WebRTC(label="Fragile", elem_id="fragile", height=160)
        explode = gr.Checkbox(label="explode", value=False, elem_id="explode")
        fragile_video.stream(
            fragile,
            inputs=[fragile_video, explode],
            outputs=[fragile_video],
            concurrency_limit=None,
        )
        components.update(timed=timed, limited=limited, fragile=fragile_video)
    return demo, components


def turn_app(ice_servers: list[dict[str, Any]]) -> tuple[gr.Blocks, WebRTC]:
    """A video echo whose browser side may only use the TURN relay (``iceTransportPolicy:
    "relay"``) and whose server side also knows the relay (``server_rtc_configuration``)."""
    with gr.Blocks(title="TURN") as demo:
        video = WebRTC(
            label="Through TURN",
            elem_id="turn",
            rtc_configuration={"iceServers": ice_servers, "iceTransportPolicy": "relay"},
            server_rtc_configuration={"iceServers": ice_servers},
        )
        video.stream(identity, inputs=[video], outputs=[video], time_limit=60)
    return demo, video


def unreachable_stun_app(stun_url: str) -> tuple[gr.Blocks, WebRTC]:
    """A video echo whose browser is configured with a STUN server that never answers."""
    with gr.Blocks(title="Unreachable STUN") as demo:
        video = WebRTC(
            label="With an unreachable STUN server",
            elem_id="stun",
            rtc_configuration={"iceServers": [{"urls": stun_url}]},
        )
        video.stream(identity, inputs=[video], outputs=[video], time_limit=60)
    return demo, video


#: track_constraints of the audio-video echo: nested per kind; Chrome's audio processing
#: off (levels are compared) and the fake camera's own size.
AV_CONSTRAINTS: dict[str, Any] = {
    "audio": NO_PROCESSING,
    "video": {"width": {"ideal": 320}, "height": {"ideal": 240}},
}
#: A camera constraint no device meets (the client must fail before any offer).
AV_IMPOSSIBLE: dict[str, Any] = {"audio": NO_PROCESSING, "video": {"width": {"exact": 9999}}}


def av_echo_handler() -> Any:
    """An AudioVideoStreamHandler that sends back what it gets: audio through one queue,
    video frames (unchanged, so their barcodes read back) through another."""
    from queue import Empty, Queue

    from webrtc_ref import AudioVideoStreamHandler

    class EchoBoth(AudioVideoStreamHandler):
        def __init__(self) -> None:
            super().__init__()
            self.audio: Queue[tuple[int, np.ndarray]] = Queue()
            self.video: Queue[np.ndarray] = Queue(maxsize=30)

        def receive(self, frame: tuple[int, np.ndarray]) -> None:
            self.audio.put(frame)

        def emit(self) -> tuple[int, np.ndarray] | None:
            try:
                return self.audio.get(timeout=0.5)
            except Empty:
                return None

        def video_receive(self, frame: np.ndarray) -> None:
            if not self.video.full():
                self.video.put(frame)

        def video_emit(self) -> np.ndarray | None:
            try:
                return self.video.get(timeout=0.1)
            except Empty:
                return None

        def copy(self) -> EchoBoth:
            return EchoBoth()

    return EchoBoth()


def av_app() -> tuple[gr.Blocks, dict[str, WebRTC]]:
    """Three audio-video echo streams: ``echo`` (time_limit 60), ``timed`` (time_limit
    TIME_LIMIT) and ``impossible`` (a camera constraint no device can meet)."""
    components: dict[str, WebRTC] = {}
    with gr.Blocks(title="audio-video") as demo:
        for name, limit, constraints in (
            ("echo", 60.0, AV_CONSTRAINTS),
            ("timed", TIME_LIMIT, AV_CONSTRAINTS),
            ("impossible", 60.0, AV_IMPOSSIBLE),
        ):
            av = WebRTC(
                label=name,
                elem_id=name,
                mode="send-receive",
                modality="audio-video",
                track_constraints=constraints,
                height=240 if name == "echo" else 120,
            )
            av.stream(av_echo_handler(), inputs=[av], outputs=[av], time_limit=limit)
            components[name] = av
    return demo, components
