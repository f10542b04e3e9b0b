"""The adapter for fastrtc (0.0.34 from PyPI), in its own venv with Gradio 5.

fastrtc's ``ReplyOnPause(fn, model=...)`` accepts any ``PauseDetectionModel``
(``vad((rate, audio), options) -> (speech_seconds, chunks)`` and ``warmup()``), so the
adapter injects webrtc_ref's offline Silero model (``webrtc_ref.pause_detection``, which
needs only numpy, av and onnxruntime) instead of letting fastrtc download one.

fastrtc's browser client sends no periodic ticks: it fires ``tick`` once connected (not in
the microphone component), other inputs reach the stream through their own ``change``
events, and the server asks with ``{"type": "send_input"}``. Before each connection it
calls the component's ``turn`` server function for its RTCPeerConnection configuration.
"""

from __future__ import annotations

import functools
from typing import Any

from conformance.adapters.base import CAPABILITIES, Adapter, Api


def _offline_model() -> Any:
    from webrtc_ref.pause_detection import get_silero_model

    return get_silero_model()


class FastrtcAdapter(Adapter):
    """fastrtc's WebRTC component with an injected offline pause detector."""

    name = "fastrtc"
    module = "fastrtc"
    capabilities = CAPABILITIES
    periodic_ticks = False
    tick_on_open = True

    def ticks_on_open(self, scenario: Any) -> bool:
        # fastrtc's client fires `tick` once connected, except in its microphone component
        return not (scenario.modality == "audio" and scenario.mode != "receive")

    async def rtc_configuration_for(self, peer: Any) -> Any:
        # its client calls the `turn` server function before each connection and uses
        # the reply as is (a function as rtc_configuration is called there)
        reply = await peer.wire.app.server_fn(
            peer.ids.webrtc, "turn", {}, peer.session.session_hash
        )
        assert reply.status == 200, f"turn: HTTP {reply.status}: {str(reply.body)[:200]}"
        return reply.body

    def server_remote_candidates(self, stream: Any, webrtc_id: str) -> set[tuple[str, int, str]]:
        from conformance.adapters.webrtc_ref import _remote_candidates

        return _remote_candidates(stream.pcs.get(webrtc_id))  # its peer connections by id

    def version(self) -> str:
        from importlib.metadata import version

        return version("fastrtc")

    def api(self) -> Api:
        import fastrtc

        @functools.wraps(fastrtc.ReplyOnPause)
        def reply_on_pause(fn: Any, *args: Any, **kwargs: Any) -> Any:
            kwargs.setdefault("model", _offline_model())
            return fastrtc.ReplyOnPause(fn, *args, **kwargs)

        return Api(
            WebRTC=fastrtc.WebRTC,
            StreamHandler=fastrtc.StreamHandler,
            AdditionalOutputs=fastrtc.AdditionalOutputs,
            ReplyOnPause=fastrtc.ReplyOnPause,
            reply_on_pause=reply_on_pause,
            AudioVideoStreamHandler=fastrtc.AudioVideoStreamHandler,
            AsyncAudioVideoStreamHandler=fastrtc.AsyncAudioVideoStreamHandler,
        )
