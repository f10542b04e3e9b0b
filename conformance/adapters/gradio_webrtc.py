"""The adapter for gradio_webrtc from PyPI (0.0.16, whose user guide is the spec; 0.0.31, the
last release).

Runs in its own venv with the Gradio 5 release it needs (see noxfile.py). Its
``ReplyOnPause`` downloads a Silero model from a model hub when constructed and accepts no
injected model, so ``reply_on_pause`` is not claimed (set ``HF_HUB_OFFLINE=1`` so a stray
construction fails fast instead of retrying for 20 s).
"""

from __future__ import annotations

from typing import Any

from conformance.adapters.base import CAPABILITIES, Adapter, Api


class GradioWebrtcAdapter(Adapter):
    """gradio_webrtc's WebRTC component; its browser client ticks every 0.5 s / 1 s."""

    name = "gradio_webrtc"
    module = "gradio_webrtc"
    capabilities = CAPABILITIES - {
        "reply_on_pause",
        "fastrtc",
        "audio-video.send-receive",
        "stream",
    }
    unsupported = {  # noqa: RUF012
        "reply_on_pause": (
            "ReplyOnPause downloads its Silero VAD model from the Hugging Face hub at "
            "construction and has no parameter to inject an offline model"
        ),
        "fastrtc": "it predates fastrtc's handler API (the fastrtc profile)",
        "audio-video.send-receive": (
            "it has no audio-video modality (no AudioVideoStreamHandler; fastrtc added it)"
        ),
        "stream": "it has no Stream class (fastrtc added it)",
    }
    periodic_ticks = True
    tick_on_open = False
    shared_state = True  # WebRTC.connections & co. are class attributes, shared by every app

    def ticks_on_open(self, scenario: Any) -> bool:
        # 0.0.16's client never does; later releases tick once the webcam is connected
        return self.version() != "0.0.16" and (
            scenario.modality == "video" and scenario.mode != "receive"
        )

    def reset(self) -> None:
        from gradio_webrtc.webrtc import WebRTC

        for name in ("connections", "data_channels", "additional_outputs", "handlers", "pcs"):
            table = getattr(WebRTC, name, None)
            if table is not None:
                table.clear()

    def version(self) -> str:
        from importlib.metadata import version

        return version("gradio_webrtc")

    def api(self) -> Api:
        import gradio_webrtc

        return Api(
            WebRTC=gradio_webrtc.WebRTC,
            StreamHandler=gradio_webrtc.StreamHandler,
            AdditionalOutputs=gradio_webrtc.AdditionalOutputs,
            ReplyOnPause=gradio_webrtc.ReplyOnPause,
            reply_on_pause=gradio_webrtc.ReplyOnPause,
        )
