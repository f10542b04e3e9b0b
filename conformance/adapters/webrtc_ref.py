"""The adapter for webrtc_ref, the reference implementation (claims every capability)."""

from __future__ import annotations

from typing import Any

from conformance.adapters.base import CAPABILITIES, Adapter, Api, exported


def _remote_candidates(pc: Any) -> set[tuple[str, int, str]]:
    """(ip, port, type) of the remote candidates the ICE agents of ``pc`` (an aiortc
    RTCPeerConnection, or None) know."""
    found: set[tuple[str, int, str]] = set()
    if pc is None:
        return found
    for transceiver in pc.getTransceivers():
        transport = transceiver.receiver.transport
        if transport is not None:
            found |= {(c.ip, c.port, c.type) for c in transport.transport.getRemoteCandidates()}
    sctp = pc.sctp
    if sctp is not None:
        found |= {(c.ip, c.port, c.type) for c in sctp.transport.transport.getRemoteCandidates()}
    return found


class WebrtcRefAdapter(Adapter):
    """webrtc_ref from this repository (Gradio 6)."""

    name = "webrtc_ref"
    module = "webrtc_ref"
    capabilities = CAPABILITIES
    periodic_ticks = True
    tick_on_open = True

    async def rtc_configuration_for(self, peer: Any) -> Any:
        # with a function as rtc_configuration (prop rtc_configuration_per_connection) its
        # client calls the rtc_config server function before each connection
        component = await peer.wire.app.component(peer.ids.webrtc)
        props = component.get("props", {})
        props = props.get("props", props)  # the browser's options (an HTML component's)
        if props.get("rtc_configuration_per_connection") is not True:
            return props.get("rtc_configuration")
        reply = await peer.wire.app.server_fn(
            peer.ids.webrtc, "rtc_config", {"webrtc_id": peer.webrtc_id}, peer.session.session_hash
        )
        body = reply.body
        assert reply.status == 200 and isinstance(body, dict), f"rtc_config: {body!r}"[:300]
        return body.get("rtc_configuration", body)

    def server_remote_candidates(self, stream: Any, webrtc_id: str) -> set[tuple[str, int, str]]:
        connection = stream.server.connection(webrtc_id)
        return _remote_candidates(connection.pc if connection is not None else None)

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
            AudioVideoStreamHandler=exported("webrtc_ref", "AudioVideoStreamHandler"),
            AsyncAudioVideoStreamHandler=exported("webrtc_ref", "AsyncAudioVideoStreamHandler"),
        )
