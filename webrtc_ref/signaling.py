"""Offer bodies in; answers or failure replies out. The error codes live here only.

An offer body is ``{"sdp": str, "type": "offer", "webrtc_id": str}``. A success reply is
``{"sdp": str, "type": "answer"}``; a failure reply is
``{"status": "failed", "meta": {"error": CODE, "message": str, ...}}``. The ``status``
key keeps gradio_webrtc's browser client working (it rejects on ``status == "failed"``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

from aiortc.sdp import SessionDescription

Mode = Literal["send-receive", "send", "receive"]
Modality = Literal["video", "audio"]
MODES: tuple[str, ...] = ("send-receive", "send", "receive")
MODALITIES: tuple[str, ...] = ("video", "audio")

CONCURRENCY_LIMIT_REACHED = "concurrency_limit_reached"
CONNECTION_ALREADY_EXISTS = "connection_already_exists"
INVALID_OFFER = "invalid_offer"
UNSUPPORTED_MEDIA = "unsupported_media"
NOT_CONFIGURED = "not_configured"
HANDLER_ERROR = "handler_error"
ERROR_CODES: tuple[str, ...] = (
    CONCURRENCY_LIMIT_REACHED,
    CONNECTION_ALREADY_EXISTS,
    INVALID_OFFER,
    UNSUPPORTED_MEDIA,
    NOT_CONFIGURED,
    HANDLER_ERROR,
)

#: What a webrtc_id may look like: 1-128 characters, no whitespace or control characters.
WEBRTC_ID_PATTERN = re.compile(r"^[\x21-\x7e]{1,128}$")


class SignalingError(Exception):
    """A client error in signalling; becomes a failure reply, never an HTTP error."""

    def __init__(self, code: str, message: str, **meta: Any) -> None:
        if code not in ERROR_CODES:
            raise ValueError(f"unknown signalling error code {code!r}; known: {ERROR_CODES}")
        super().__init__(message)
        self.code = code
        self.message = message
        self.meta = meta

    def reply(self) -> dict[str, Any]:
        """The failure reply for the browser."""
        return failure(self.code, self.message, **self.meta)


def failure(code: str, message: str, **meta: Any) -> dict[str, Any]:
    """Build ``{"status": "failed", "meta": {"error": code, "message": message, **meta}}``."""
    return {"status": "failed", "meta": {"error": code, "message": message, **meta}}


@dataclass(frozen=True)
class Offer:
    """A validated offer: the SDP text, its parsed form and the client's connection id."""

    sdp: str
    webrtc_id: str
    description: SessionDescription

    def media_kinds(self, *, sending: bool) -> list[str]:
        """Kinds of the offer's media sections the client sends (``sending=True``) or
        accepts to receive (``sending=False``), judged by each section's direction."""
        wanted = ("sendrecv", "sendonly") if sending else ("sendrecv", "recvonly")
        return [
            m.kind
            for m in self.description.media
            if m.kind in MODALITIES and (m.direction or "sendrecv") in wanted and m.port != 0
        ]

    @property
    def has_data_channel(self) -> bool:
        return any(m.kind == "application" for m in self.description.media)


def parse_offer(body: object) -> Offer:
    """Validate an offer body; raise :class:`SignalingError` (``invalid_offer``) if malformed."""
    if not isinstance(body, dict):
        raise SignalingError(
            INVALID_OFFER,
            f"offer body must be a JSON object with sdp, type and webrtc_id; "
            f"got {type(body).__name__}",
        )
    for key in ("sdp", "type", "webrtc_id"):
        if key not in body:
            raise SignalingError(INVALID_OFFER, f"offer body is missing {key!r}", field=key)
        if not isinstance(body[key], str):
            raise SignalingError(
                INVALID_OFFER,
                f"offer field {key!r} must be a string; got {type(body[key]).__name__}",
                field=key,
            )
    if body["type"] != "offer":
        raise SignalingError(
            INVALID_OFFER, f"offer 'type' must be 'offer'; got {body['type']!r}", field="type"
        )
    webrtc_id = body["webrtc_id"]
    if not WEBRTC_ID_PATTERN.match(webrtc_id):
        raise SignalingError(
            INVALID_OFFER,
            "webrtc_id must be 1-128 printable ASCII characters without spaces; "
            f"got {webrtc_id[:40]!r}",
            field="webrtc_id",
        )
    sdp = body["sdp"]
    try:
        description = SessionDescription.parse(sdp)
    except Exception as exc:  # aiortc raises assorted errors on malformed SDP
        raise SignalingError(
            INVALID_OFFER, f"offer SDP could not be parsed: {exc!r}", field="sdp"
        ) from exc
    if not sdp.startswith("v=0") or not description.media:
        raise SignalingError(
            INVALID_OFFER, "offer SDP has no media sections (is it an SDP offer?)", field="sdp"
        )
    return Offer(sdp=sdp, webrtc_id=webrtc_id, description=description)


def check_media(offer: Offer, mode: Mode, modality: Modality) -> None:
    """Raise ``unsupported_media`` unless the offer carries what ``mode``/``modality`` need.

    send-receive and send need the client to send ``modality`` (send-receive also to
    receive it); receive needs the client to accept ``modality``. A media section of the
    other kind is refused rather than silently ignored.
    """
    other = [m.kind for m in offer.description.media if m.kind in MODALITIES and m.port != 0]
    foreign = sorted({kind for kind in other if kind != modality})
    if foreign:
        raise SignalingError(
            UNSUPPORTED_MEDIA,
            f"this stream carries {modality} only; the offer has {', '.join(foreign)}",
            expected=modality,
            offered=other,
        )
    needs_send = mode in ("send-receive", "send")
    needs_receive = mode in ("send-receive", "receive")
    if needs_send and modality not in offer.media_kinds(sending=True):
        raise SignalingError(
            UNSUPPORTED_MEDIA,
            f"mode {mode!r} needs the client to send {modality}; the offer sends none",
            expected=modality,
            offered=other,
        )
    if needs_receive and modality not in offer.media_kinds(sending=False):
        raise SignalingError(
            UNSUPPORTED_MEDIA,
            f"mode {mode!r} needs the client to receive {modality}; the offer accepts none",
            expected=modality,
            offered=other,
        )


def answer_reply(sdp: str) -> dict[str, Any]:
    """The success reply for the browser."""
    return {"sdp": sdp, "type": "answer"}
