"""A client of a ``Stream`` mounted on a FastAPI app: an aiortc peer doing what fastrtc's
documented JavaScript client does (userguide/webrtc_docs.md, userguide/api.md).

It creates the ``"text"`` data channel and its media, makes its offer, posts
``{sdp, type: "offer", webrtc_id}`` to ``{path}/webrtc/offer`` and hands the JSON reply to
``setRemoteDescription``. With ``trickle`` the offer is the one ``createOffer()`` made (no
candidates in it) and each gathered candidate is posted as ``{candidate:
candidate.toJSON(), webrtc_id, type: "ice-candidate"}``, its line carrying the attributes a
browser adds (``generation``, ``ufrag``, ``network-id``). Without it the offer carries its
candidates (a client that gathers before offering). Data-channel messages are recorded
with their arrival time; remote media goes to the suite's recorders.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import httpx
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamTrack

from conformance.wire import Message, audio_recorder, scaled, video_recorder, wait_for

_CANDIDATE = re.compile(r"^a=candidate:(.*)$", re.MULTILINE)
_UFRAG = re.compile(r"^a=ice-ufrag:(\S+)$", re.MULTILINE)


def browser_candidates(sdp: str) -> list[dict[str, Any]]:
    """The candidates of ``sdp`` (an aiortc local description) as a browser's
    ``RTCIceCandidate.toJSON()`` gives them: the line with the attributes browsers add,
    ``sdpMid`` and ``sdpMLineIndex`` of the first media section (the bundle)."""
    ufrag_match = _UFRAG.search(sdp)
    ufrag = ufrag_match.group(1) if ufrag_match else "x"
    return [
        {
            "candidate": f"candidate:{line.strip()} generation 0 ufrag {ufrag} network-id 1",
            "sdpMid": "0",
            "sdpMLineIndex": 0,
        }
        for line in _CANDIDATE.findall(sdp)
    ]


def host_address(candidate: dict[str, Any]) -> tuple[str, int, str]:
    """(ip, port, type) of a candidate body's line."""
    parts = str(candidate["candidate"]).split()
    return parts[4], int(parts[5]), parts[parts.index("typ") + 1]


class RoutePeer:
    """One client of a mounted stream's ``/webrtc/offer`` route (see the module docstring).

    Parameters:
        http: the client's HTTP session.
        offer_url: ``{app}{path}/webrtc/offer``.
        send: tracks to send (added in order); none with ``receive`` for a receive-mode
            stream.
        receive: ``"audio"`` / ``"video"``: a receive-only transceiver of that kind.
        on_message: called with each data-channel message's text (after it is recorded).
    """

    def __init__(
        self,
        http: httpx.AsyncClient,
        offer_url: str,
        *,
        send: MediaStreamTrack | Sequence[MediaStreamTrack] | None = None,
        receive: str | None = None,
        on_message: Callable[[str], Awaitable[None] | None] | None = None,
    ) -> None:
        self.http = http
        self.offer_url = offer_url
        self.webrtc_id = secrets.token_hex(8)
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.channel = self.pc.createDataChannel("text")
        self.channel.on("message", self._on_message)
        self.on_message = on_message
        tracks = [send] if isinstance(send, MediaStreamTrack) else list(send or ())
        for track in tracks:
            self.pc.addTrack(track)
        if not tracks and receive:
            self.pc.addTransceiver(receive, direction="recvonly")
        self.messages: list[Message] = []
        self.recorders: dict[str, Any] = {}
        self.states: list[tuple[float, str]] = []
        self.connected_at: float | None = None
        self.candidates: list[dict[str, Any]] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self.pc.on("track", self._on_track)
        self.pc.on("connectionstatechange", self._on_state)

    # -- signalling -------------------------------------------------------------------------
    async def make_offer(self, *, trickle: bool) -> dict[str, Any]:
        """The offer body; with ``trickle`` the SDP is createOffer()'s (no candidates) and
        the gathered candidates are kept in ``.candidates`` for :meth:`trickle`."""
        offer = await self.pc.createOffer()
        await self.pc.setLocalDescription(offer)  # aiortc gathers here
        local = self.pc.localDescription
        self.candidates = browser_candidates(local.sdp)
        sdp = offer.sdp if trickle else local.sdp
        return {"sdp": sdp, "type": "offer", "webrtc_id": self.webrtc_id}

    async def post(self, body: Any) -> httpx.Response:
        return await self.http.post(self.offer_url, json=body)

    async def trickle(self, candidate: dict[str, Any]) -> httpx.Response:
        """Post one candidate as the documented client's onicecandidate does."""
        return await self.post(
            {"candidate": candidate, "webrtc_id": self.webrtc_id, "type": "ice-candidate"}
        )

    async def apply(self, reply: Any) -> None:
        """``setRemoteDescription(serverResponse)``."""
        assert isinstance(reply, dict) and reply.get("type") == "answer", (
            f"the offer was not answered: {str(reply)[:300]}"
        )
        await self.pc.setRemoteDescription(
            RTCSessionDescription(sdp=str(reply["sdp"]), type="answer")
        )

    async def offer(self) -> httpx.Response:
        """Post a non-trickle offer (its candidates in the SDP); the HTTP response."""
        return await self.post(await self.make_offer(trickle=False))

    async def connect(self, timeout: float = 10.0) -> dict[str, Any]:
        """Offer, apply the answer, wait for ``connected``; the reply."""
        response = await self.offer()
        assert response.status_code == 200, f"HTTP {response.status_code}: {response.text[:300]}"
        reply = response.json()
        await self.apply(reply)
        await self.wait_connected(timeout)
        return dict(reply)

    # -- callbacks ---------------------------------------------------------------------------
    def _on_message(self, message: object) -> None:
        if not isinstance(message, str):
            return
        self.messages.append(Message(time.time(), message))
        if self.on_message is not None:
            result = self.on_message(message)
            if result is not None:
                self._spawn(result)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _on_track(self, track: MediaStreamTrack) -> None:
        if track.kind in self.recorders:
            return
        recorder = video_recorder(track) if track.kind == "video" else audio_recorder(track)
        self.recorders[track.kind] = recorder
        self._spawn(recorder.start())

    def _on_state(self) -> None:
        state = self.pc.connectionState
        self.states.append((time.time(), state))
        if state == "connected" and self.connected_at is None:
            self.connected_at = time.time()

    # -- waiting -----------------------------------------------------------------------------
    async def wait_connected(self, timeout: float = 10.0) -> None:
        await wait_for(
            lambda: self.pc.connectionState == "connected", timeout, "connectionState connected"
        )

    async def recorder(self, kind: str, timeout: float = 10.0) -> Any:
        await wait_for(lambda: kind in self.recorders, timeout, f"a remote {kind} track")
        return self.recorders[kind]

    def json_messages(self) -> list[dict[str, Any]]:
        found = []
        for message in self.messages:
            with contextlib.suppress(ValueError):
                value = json.loads(message.text)
                if isinstance(value, dict):
                    found.append(value)
        return found

    @property
    def ended(self) -> bool:
        """The server ended the connection: it closed, or an end_stream message came."""
        return self.pc.connectionState in ("closed", "failed") or any(
            m.get("type") == "end_stream" for m in self.json_messages()
        )

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for recorder in self.recorders.values():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(recorder.stop(), scaled(5.0))
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.pc.close(), scaled(5.0))
