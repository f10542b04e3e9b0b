"""Offer parsing, media checks and admission: every failure code, with its message."""

from __future__ import annotations

import asyncio

import pytest
from aiortc import RTCPeerConnection

from webrtc_ref.registry import Registry
from webrtc_ref.signaling import (
    CONCURRENCY_LIMIT_REACHED,
    CONNECTION_ALREADY_EXISTS,
    INVALID_OFFER,
    UNSUPPORTED_MEDIA,
    SignalingError,
    check_media,
    parse_offer,
)


async def make_sdp(*, audio: str | None = None, video: str | None = None) -> str:
    """A real aiortc offer with optional audio/video transceivers in the given direction."""
    pc = RTCPeerConnection()
    try:
        pc.createDataChannel("text")
        if audio:
            pc.addTransceiver("audio", direction=audio)
        if video:
            pc.addTransceiver("video", direction=video)
        offer = await pc.createOffer()
        return offer.sdp
    finally:
        await pc.close()


def body(sdp: str, **overrides: object) -> dict[str, object]:
    return {"sdp": sdp, "type": "offer", "webrtc_id": "abc123", **overrides}


@pytest.fixture(scope="module")
def audio_sdp() -> str:
    return asyncio.run(make_sdp(audio="sendrecv"))


@pytest.mark.parametrize(
    ("bad", "field", "fragment"),
    [
        ("not a dict", None, "must be a JSON object"),
        ({"type": "offer", "webrtc_id": "x"}, "sdp", "missing 'sdp'"),
        ({"sdp": "v=0", "webrtc_id": "x"}, "type", "missing 'type'"),
        ({"sdp": "v=0", "type": "offer"}, "webrtc_id", "missing 'webrtc_id'"),
        ({"sdp": 3, "type": "offer", "webrtc_id": "x"}, "sdp", "must be a string; got int"),
        ({"sdp": "v=0", "type": "answer", "webrtc_id": "x"}, "type", "must be 'offer'; got"),
        ({"sdp": "v=0", "type": "offer", "webrtc_id": ""}, "webrtc_id", "webrtc_id must be"),
        ({"sdp": "v=0", "type": "offer", "webrtc_id": "a b"}, "webrtc_id", "webrtc_id must be"),
        ({"sdp": "v=0", "type": "offer", "webrtc_id": "x" * 129}, "webrtc_id", "must be"),
        ({"sdp": "garbage", "type": "offer", "webrtc_id": "x"}, "sdp", "no media sections"),
    ],
)
def test_invalid_offers_are_refused_with_a_reason(
    bad: object, field: str | None, fragment: str
) -> None:
    with pytest.raises(SignalingError) as info:
        parse_offer(bad)
    reply = info.value.reply()
    assert reply["status"] == "failed"
    assert reply["meta"]["error"] == INVALID_OFFER
    assert fragment in reply["meta"]["message"]
    if field is not None:
        assert reply["meta"]["field"] == field


def test_valid_offer_parses(audio_sdp: str) -> None:
    offer = parse_offer(body(audio_sdp))
    assert offer.webrtc_id == "abc123"
    assert offer.media_kinds(sending=True) == ["audio"]
    assert offer.has_data_channel


@pytest.mark.parametrize(
    ("mode", "modality", "tracks", "ok"),
    [
        ("send-receive", "audio", {"audio": "sendrecv"}, True),
        ("send-receive", "audio", {"audio": "recvonly"}, False),
        ("send-receive", "audio", {"audio": "sendonly"}, False),
        ("send", "audio", {"audio": "sendonly"}, True),
        ("send", "audio", {"audio": "sendrecv"}, True),
        ("receive", "audio", {"audio": "recvonly"}, True),
        ("receive", "audio", {"audio": "sendonly"}, False),
        ("receive", "video", {"video": "recvonly"}, True),
        ("send-receive", "video", {"audio": "sendrecv"}, False),
        ("send-receive", "video", {"video": "sendrecv", "audio": "sendrecv"}, False),
        ("send", "video", {}, False),
    ],
)
def test_media_must_match_mode_and_modality(
    mode: str, modality: str, tracks: dict[str, str], ok: bool
) -> None:
    offer = parse_offer(body(asyncio.run(make_sdp(**tracks))))
    if ok:
        check_media(offer, mode, modality)  # type: ignore[arg-type]
        return
    with pytest.raises(SignalingError) as info:
        check_media(offer, mode, modality)  # type: ignore[arg-type]
    assert info.value.code == UNSUPPORTED_MEDIA
    assert modality in info.value.message


def test_registry_refuses_duplicates_and_counts_reservations() -> None:
    registry: Registry[object] = Registry(2)
    registry.reserve("a")
    with pytest.raises(SignalingError) as info:
        registry.reserve("a")
    assert info.value.code == CONNECTION_ALREADY_EXISTS
    registry.reserve("b")
    with pytest.raises(SignalingError) as info:
        registry.reserve("c")
    assert info.value.code == CONCURRENCY_LIMIT_REACHED
    assert info.value.reply()["meta"]["limit"] == 2
    registry.release("a")
    registry.reserve("c")
    assert len(registry) == 2


def test_registry_unlimited() -> None:
    registry: Registry[object] = Registry(None)
    for i in range(500):
        registry.reserve(str(i))
    assert len(registry) == 500


@pytest.mark.parametrize("limit", [0, -1, 1.5, True, "2"])
def test_registry_rejects_bad_limits(limit: object) -> None:
    with pytest.raises(ValueError, match="limit must be a positive int or None"):
        Registry(limit)  # type: ignore[arg-type]
