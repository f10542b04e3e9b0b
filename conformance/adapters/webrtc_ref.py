"""The adapter for webrtc_ref, the reference implementation (claims every capability)."""

from __future__ import annotations

from conformance.adapters.base import CAPABILITIES, Adapter, Api


class WebrtcRefAdapter(Adapter):
    """webrtc_ref from this repository (Gradio 6)."""

    name = "webrtc_ref"
    module = "webrtc_ref"
    capabilities = CAPABILITIES
    periodic_ticks = True
    tick_on_open = True

    def version(self) -> str:
        from webrtc_ref import __version__

        return str(__version__)

    def api(self) -> Api:
        from webrtc_ref.component import WebRTC
        from webrtc_ref.handlers import StreamHandler
        from webrtc_ref.outputs import AdditionalOutputs
        from webrtc_ref.reply_on_pause import ReplyOnPause

        return Api(
            WebRTC=WebRTC,
            StreamHandler=StreamHandler,
            AdditionalOutputs=AdditionalOutputs,
            ReplyOnPause=ReplyOnPause,
            reply_on_pause=ReplyOnPause,
        )
