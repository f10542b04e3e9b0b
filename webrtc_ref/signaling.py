"""Offer bodies in; answers or failure replies out. The error codes live here only.

An offer body is ``{"sdp": str, "type": "offer", "webrtc_id": str}``. A success reply is
``{"sdp": str, "type": "answer"}``; a failure reply is
``{"status": "failed", "meta": {"error": CODE, "message": str, ...}}``. The ``status``
key keeps gradio_webrtc's browser client working (it rejects on ``status == "failed"``).

Every check here is cheap and runs before any aiortc work, in order of cost: the body's
shape and the ``webrtc_id``, the SDP's size (:data:`DEFAULT_MAX_OFFER_BYTES`), its number
of media sections (a line count, before parsing), then the parsed SDP's ICE credentials,
DTLS fingerprint, RTCP multiplexing, mids and data channel (:func:`parse_offer`), and the
media the mode needs (:func:`check_media`). An offer that passes them is one that aiortc
can apply at once, so a hostile client cannot make the server work on it for long.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any, Literal

from aiortc.sdp import SessionDescription

Mode = Literal["send-receive", "send", "receive"]
Modality = Literal["video", "audio", "audio-video"]
MODES: tuple[str, ...] = ("send-receive", "send", "receive")
MODALITIES: tuple[str, ...] = ("video", "audio", "audio-video")
#: Kinds of media sections (tracks); the data channel's section is "application".
MEDIA_KINDS: tuple[str, ...] = ("video", "audio")
#: The modes each modality supports (audio-video: a handler both ways, send-receive only).
MODES_OF: dict[str, tuple[str, ...]] = {
    "video": MODES,
    "audio": MODES,
    "audio-video": ("send-receive",),
}


def track_kinds(modality: Modality | str) -> tuple[str, ...]:
    """The track kinds a stream of ``modality`` carries each way, in offer order."""
    return ("audio", "video") if modality == "audio-video" else (str(modality),)


CONCURRENCY_LIMIT_REACHED = "concurrency_limit_reached"
CONNECTION_ALREADY_EXISTS = "connection_already_exists"
INVALID_OFFER = "invalid_offer"
UNSUPPORTED_MEDIA = "unsupported_media"
NOT_CONFIGURED = "not_configured"
HANDLER_ERROR = "handler_error"
OFFER_TOO_LARGE = "offer_too_large"
TOO_MANY_PENDING_OFFERS = "too_many_pending_offers"
INTERNAL_ERROR = "internal_error"
SERVER_SHUTDOWN = "server_shutdown"
SERVER_DRAINING = "server_draining"
INVALID_CANDIDATE = "invalid_candidate"
UNKNOWN_CONNECTION = "unknown_connection"
# Codes of the rtc_config server function (per-connection ICE configuration).
RTC_CONFIGURATION_FAILED = "rtc_configuration_failed"
TOO_MANY_REQUESTS = "too_many_requests"
# Code of a mounted Stream's input route (a body that is not {webrtc_id, token, inputs}).
INVALID_INPUT = "invalid_input"
ERROR_CODES: tuple[str, ...] = (
    CONCURRENCY_LIMIT_REACHED,
    CONNECTION_ALREADY_EXISTS,
    INVALID_OFFER,
    UNSUPPORTED_MEDIA,
    NOT_CONFIGURED,
    HANDLER_ERROR,
    OFFER_TOO_LARGE,
    TOO_MANY_PENDING_OFFERS,
    INTERNAL_ERROR,
    SERVER_SHUTDOWN,
    SERVER_DRAINING,
    INVALID_CANDIDATE,
    UNKNOWN_CONNECTION,
    RTC_CONFIGURATION_FAILED,
    TOO_MANY_REQUESTS,
    INVALID_INPUT,
)

#: What a webrtc_id may look like: 1-128 letters, digits, ``-`` and ``_``.
WEBRTC_ID_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
#: The value a receive-mode trigger gives the component; never a connection's id.
START_SENTINEL = "start_webrtc_stream"
#: Default cap on an offer's SDP, in bytes. A browser's offer for one track and a data
#: channel is 2-6 KiB; 64 KiB leaves room for many codecs and candidates.
DEFAULT_MAX_OFFER_BYTES = 64 * 1024


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
            if m.kind in MEDIA_KINDS and (m.direction or "sendrecv") in wanted and m.port != 0
        ]

    @property
    def has_data_channel(self) -> bool:
        return any(m.kind == "application" for m in self.description.media)


def _limit_hint(parameter: str) -> str:
    return f"raise it with WebRTC({parameter}=...) or StreamServer({parameter}=...)"


def parse_offer(
    body: object,
    *,
    max_bytes: int = DEFAULT_MAX_OFFER_BYTES,
    max_media_sections: int | None = None,
) -> Offer:
    """Validate an offer body; raise :class:`SignalingError` if it cannot be used.

    Codes: ``invalid_offer`` (malformed body, id or SDP; ``field`` says which),
    ``offer_too_large`` (the SDP exceeds ``max_bytes``; ``limit`` and ``size``) and
    ``unsupported_media`` (more than ``max_media_sections`` media sections; ``limit`` and
    ``offered``). Size and section count are checked before the SDP is parsed.
    """
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
            INVALID_OFFER, f"offer 'type' must be 'offer'; got {body['type'][:40]!r}", field="type"
        )
    webrtc_id = body["webrtc_id"]
    if not WEBRTC_ID_PATTERN.match(webrtc_id):
        raise SignalingError(
            INVALID_OFFER,
            "webrtc_id must be 1-128 characters from A-Z, a-z, 0-9, '-' and '_'; "
            f"got {webrtc_id[:40]!r}{'...' if len(webrtc_id) > 40 else ''} "
            f"({len(webrtc_id)} characters)",
            field="webrtc_id",
        )
    if webrtc_id == START_SENTINEL:
        raise SignalingError(
            INVALID_OFFER,
            f"webrtc_id {START_SENTINEL!r} is reserved (it starts receive-mode streams); "
            "use a fresh random id for every connection",
            field="webrtc_id",
        )
    sdp = body["sdp"]
    size = len(sdp) if sdp.isascii() else len(sdp.encode("utf-8", "surrogatepass"))
    if size > max_bytes:
        raise SignalingError(
            OFFER_TOO_LARGE,
            f"the offer SDP is {size} bytes; this stream accepts at most {max_bytes} "
            f"({_limit_hint('max_offer_bytes')})",
            field="sdp",
            limit=max_bytes,
            size=size,
        )
    if max_media_sections is not None:
        sections = sdp.count("\nm=") + sdp.startswith("m=")
        if sections > max_media_sections:
            raise SignalingError(
                UNSUPPORTED_MEDIA,
                f"the offer has {sections} media sections; this stream takes at most "
                f"{max_media_sections} (its media and the 'text' data channel)",
                field="sdp",
                limit=max_media_sections,
                offered=sections,
            )
    if not sdp.startswith("v=0"):
        raise SignalingError(
            INVALID_OFFER, "offer SDP must start with 'v=0' (is it an SDP offer?)", field="sdp"
        )
    try:
        description = SessionDescription.parse(sdp)
    except Exception as exc:  # aiortc raises assorted errors on malformed SDP
        raise SignalingError(
            INVALID_OFFER, f"offer SDP could not be parsed: {type(exc).__name__}", field="sdp"
        ) from exc
    if not description.media:
        raise SignalingError(
            INVALID_OFFER, "offer SDP has no media sections (is it an SDP offer?)", field="sdp"
        )
    _check_transport(description)
    return Offer(sdp=sdp, webrtc_id=webrtc_id, description=description)


def _check_transport(description: SessionDescription) -> None:
    """What aiortc needs to apply the offer and connect: per live section, ICE credentials,
    a DTLS fingerprint, RTCP multiplexing for media; unique mids; exactly one data channel."""
    mids: set[str] = set()
    channels = 0
    for index, media in enumerate(description.media):
        where = f"media section {index} ({media.kind})"
        if media.kind not in (*MEDIA_KINDS, "application"):
            raise SignalingError(
                UNSUPPORTED_MEDIA,
                f"{where}: media kind {media.kind[:20]!r} is not supported; "
                "only audio, video and the data channel are",
                field="sdp",
            )
        if media.port == 0:
            continue  # a rejected section carries nothing
        if not media.ice or not media.ice.usernameFragment or not media.ice.password:
            raise SignalingError(
                INVALID_OFFER, f"{where} lacks a=ice-ufrag / a=ice-pwd", field="sdp"
            )
        if not media.dtls or not media.dtls.fingerprints:
            raise SignalingError(INVALID_OFFER, f"{where} lacks a=fingerprint", field="sdp")
        if media.kind in MEDIA_KINDS and not media.rtcp_mux:
            raise SignalingError(INVALID_OFFER, f"{where} lacks a=rtcp-mux", field="sdp")
        mid = media.rtp.muxId
        if mid:
            if mid in mids:
                raise SignalingError(
                    INVALID_OFFER, f"{where} repeats mid {mid[:20]!r}", field="sdp"
                )
            mids.add(mid)
        if media.kind == "application":
            channels += 1
    if channels != 1:
        raise SignalingError(
            INVALID_OFFER,
            f"the offer must carry exactly one data channel section; it has {channels} "
            "(create the 'text' data channel before createOffer)",
            field="sdp",
        )


def check_media(offer: Offer, mode: Mode, modality: Modality) -> None:
    """Raise ``unsupported_media`` unless the offer carries what ``mode``/``modality`` need.

    The offer may have at most one media section of each of ``modality``'s track kinds
    (audio-video: one audio and one video) and none of another kind; a foreign section
    is refused rather than silently ignored. send-receive and send need the client to
    send each kind (send-receive also to receive it); receive needs the client to accept
    each kind.
    """
    kinds = track_kinds(modality)
    other = [m.kind for m in offer.description.media if m.kind in MEDIA_KINDS and m.port != 0]
    carries = " and ".join(kinds)
    foreign = sorted({kind for kind in other if kind not in kinds})
    if foreign:
        raise SignalingError(
            UNSUPPORTED_MEDIA,
            f"this stream carries {carries} only; the offer has {', '.join(foreign)}",
            expected=modality,
            offered=other,
        )
    for kind in kinds:
        count = other.count(kind)
        if count > 1:  # none at all: the direction checks below say what is missing
            raise SignalingError(
                UNSUPPORTED_MEDIA,
                f"this stream carries one {kind} track; the offer has {count} {kind} sections",
                expected=modality,
                offered=other,
            )
    needs_send = mode in ("send-receive", "send")
    needs_receive = mode in ("send-receive", "receive")
    sending = offer.media_kinds(sending=True)
    receiving = offer.media_kinds(sending=False)
    for kind in kinds:
        if needs_send and kind not in sending:
            raise SignalingError(
                UNSUPPORTED_MEDIA,
                f"mode {mode!r} needs the client to send {kind}; the offer sends none",
                expected=modality,
                offered=other,
            )
        if needs_receive and kind not in receiving:
            raise SignalingError(
                UNSUPPORTED_MEDIA,
                f"mode {mode!r} needs the client to receive {kind}; the offer accepts none",
                expected=modality,
                offered=other,
            )


def media_sections(modality: Modality) -> int:
    """How many media sections an offer for ``modality`` may have: its tracks' sections
    plus the data channel."""
    return len(track_kinds(modality)) + 1


def answer_reply(sdp: str) -> dict[str, Any]:
    """The success reply for the browser."""
    return {"sdp": sdp, "type": "answer"}


def log_tag(webrtc_id: str) -> str:
    """What logs and thread names call a connection: a short digest of its ``webrtc_id``.

    The id itself is what a browser presents to feed or read its connection, so it is kept
    out of logs; the digest still tells one connection's lines from another's.
    """
    return "c" + hashlib.sha256(webrtc_id.encode("utf-8", "surrogatepass")).hexdigest()[:8]


#: Longest ``candidate`` attribute accepted from a trickled candidate (a real one is
#: under 200 characters).
MAX_CANDIDATE_CHARS = 512
#: Candidates one connection may trickle; later ones are refused.
MAX_TRICKLED_CANDIDATES = 32


@dataclass(frozen=True)
class TrickledCandidate:
    """A late ICE candidate of the browser's, checked (:func:`parse_candidate`)."""

    webrtc_id: str
    candidate: Any  # aiortc's RTCIceCandidate


def parse_candidate(body: object) -> TrickledCandidate:
    """Check a trickled-candidate body, ``{"webrtc_id": str, "candidate": {"candidate":
    "candidate:...", "sdpMid": str | None, "sdpMLineIndex": int | None}}`` (the browser's
    ``RTCIceCandidate.toJSON()``); raise :class:`SignalingError` (``invalid_candidate``)
    naming what is wrong. Cheap: no aiortc work but parsing one line."""
    from aiortc.sdp import candidate_from_sdp

    if not isinstance(body, dict):
        raise SignalingError(
            INVALID_CANDIDATE, f"the body must be a JSON object, got {type(body).__name__}"
        )
    webrtc_id = body.get("webrtc_id")
    if not isinstance(webrtc_id, str) or not WEBRTC_ID_PATTERN.match(webrtc_id):
        raise SignalingError(
            INVALID_CANDIDATE, "webrtc_id must be 1-128 letters, digits, '-' or '_'"
        )
    raw = body.get("candidate")
    if not isinstance(raw, dict):
        raise SignalingError(
            INVALID_CANDIDATE,
            "candidate must be an object {candidate, sdpMid, sdpMLineIndex}, "
            f"got {type(raw).__name__}",
        )
    line = raw.get("candidate")
    if not isinstance(line, str) or not line.startswith("candidate:"):
        raise SignalingError(
            INVALID_CANDIDATE, "candidate.candidate must be a string starting 'candidate:'"
        )
    if len(line) > MAX_CANDIDATE_CHARS:
        raise SignalingError(
            INVALID_CANDIDATE,
            f"candidate.candidate is {len(line)} characters; at most {MAX_CANDIDATE_CHARS}",
        )
    mid = raw.get("sdpMid")
    index = raw.get("sdpMLineIndex")
    if mid is not None and (not isinstance(mid, str) or len(mid) > 32):
        raise SignalingError(INVALID_CANDIDATE, "candidate.sdpMid must be a short string or null")
    if index is not None and (
        isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < 16
    ):
        raise SignalingError(
            INVALID_CANDIDATE, "candidate.sdpMLineIndex must be an integer 0-15 or null"
        )
    if mid is None and index is None:
        raise SignalingError(INVALID_CANDIDATE, "candidate needs sdpMid or sdpMLineIndex")
    try:
        candidate = candidate_from_sdp(line.split(":", 1)[1])
    except (AssertionError, ValueError, IndexError) as exc:  # aiortc asserts the shape
        raise SignalingError(
            INVALID_CANDIDATE, f"candidate.candidate does not parse: {exc}"
        ) from None
    candidate.sdpMid = mid
    candidate.sdpMLineIndex = index
    return TrickledCandidate(webrtc_id, candidate)
