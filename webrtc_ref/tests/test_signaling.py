"""Offer parsing, media checks and admission: every failure code, with its message."""

from __future__ import annotations

import asyncio

import pytest
from aiortc import RTCPeerConnection

from fixtures.offers import BAD_IDS, CLASSES, hostile_offer
from webrtc_ref.registry import Registry
from webrtc_ref.signaling import (
    CONCURRENCY_LIMIT_REACHED,
    CONNECTION_ALREADY_EXISTS,
    DEFAULT_MAX_OFFER_BYTES,
    INVALID_OFFER,
    OFFER_TOO_LARGE,
    TOO_MANY_PENDING_OFFERS,
    UNSUPPORTED_MEDIA,
    SignalingError,
    check_media,
    log_tag,
    media_sections,
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
        ({"sdp": "garbage", "type": "offer", "webrtc_id": "x"}, "sdp", "must start with"),
        ({"sdp": "v=0\r\n", "type": "offer", "webrtc_id": "x"}, "sdp", "no media sections"),
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


# -- hostile offers: each class refused with its own code, before aiortc sees it --------

#: The code webrtc_ref replies to each hostile class (fixtures.offers) for an audio stream.
HOSTILE_CODES = {
    "many_sections": UNSUPPORTED_MEDIA,
    "padded": OFFER_TOO_LARGE,
    "no_ice": INVALID_OFFER,
    "no_fingerprint": INVALID_OFFER,
    "foreign_kind": UNSUPPORTED_MEDIA,
    "duplicate_kind": UNSUPPORTED_MEDIA,
    "duplicate_mid": INVALID_OFFER,
    "no_channel": INVALID_OFFER,
}


def refusal(sdp: str, **overrides: object) -> SignalingError:
    with pytest.raises(SignalingError) as info:
        offer = parse_offer(body(sdp, **overrides), max_media_sections=media_sections("audio"))
        check_media(offer, "send-receive", "audio")
    return info.value


def test_every_hostile_class_is_known() -> None:
    assert set(HOSTILE_CODES) == set(CLASSES)


@pytest.mark.parametrize("kind", CLASSES)
def test_hostile_offers_are_refused_with_their_code(audio_sdp: str, kind: str) -> None:
    n = {"many_sections": 3, "padded": DEFAULT_MAX_OFFER_BYTES + 1}.get(kind, 0)
    error = refusal(hostile_offer(audio_sdp, kind, n))
    assert error.code == HOSTILE_CODES[kind], (kind, error.code, error.message)
    assert error.message


def test_the_real_offer_passes_every_check(audio_sdp: str) -> None:
    offer = parse_offer(body(audio_sdp), max_media_sections=media_sections("audio"))
    check_media(offer, "send-receive", "audio")


def test_too_large_names_the_limit_the_size_and_how_to_raise_it(audio_sdp: str) -> None:
    sdp = hostile_offer(audio_sdp, "padded", 100_000)
    error = refusal(sdp)
    assert error.code == OFFER_TOO_LARGE
    assert error.meta["limit"] == DEFAULT_MAX_OFFER_BYTES
    assert error.meta["size"] == len(sdp)
    assert str(DEFAULT_MAX_OFFER_BYTES) in error.message and str(len(sdp)) in error.message
    assert "max_offer_bytes" in error.message
    # a raised limit admits it
    parse_offer(body(sdp), max_bytes=200_000, max_media_sections=2)


def test_section_count_is_checked_before_parsing(
    audio_sdp: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """3000 sections are refused without aiortc parsing them (parsing them stalls the
    loop for seconds)."""
    import webrtc_ref.signaling as signaling

    def no_parse(sdp: str) -> object:
        raise AssertionError("the SDP was parsed")

    monkeypatch.setattr(signaling.SessionDescription, "parse", staticmethod(no_parse))
    error = refusal(hostile_offer(audio_sdp, "many_sections", 40))
    assert error.code == UNSUPPORTED_MEDIA
    assert error.meta["offered"] == 40 and error.meta["limit"] == 2


@pytest.mark.parametrize("bad_id", BAD_IDS)
def test_bad_ids_are_refused(audio_sdp: str, bad_id: str) -> None:
    error = refusal(audio_sdp, webrtc_id=bad_id)
    assert error.code == INVALID_OFFER
    assert error.meta["field"] == "webrtc_id"


def test_log_tag_hides_the_id() -> None:
    tag = log_tag("secret-id-123")
    assert "secret" not in tag and tag == log_tag("secret-id-123") != log_tag("other")


# -- admission: owners, pending offers, addresses --------------------------------------


def test_a_duplicate_id_of_another_owner_learns_nothing() -> None:
    registry: Registry[object] = Registry(None)
    registry.reserve("abc", owner="s1")
    with pytest.raises(SignalingError) as same:
        registry.reserve("abc", owner="s1")
    assert same.value.code == CONNECTION_ALREADY_EXISTS
    with pytest.raises(SignalingError) as other:
        registry.reserve("abc", owner="s2")
    assert other.value.code == INVALID_OFFER
    assert "exist" not in other.value.message and "live" not in other.value.message


def test_lookups_by_another_owner_find_nothing() -> None:
    registry: Registry[str] = Registry(None)
    registry.reserve("abc", owner="s1")
    registry.attach("abc", "connection")
    assert registry.get("abc", "s1") == "connection"
    assert registry.get("abc", "s2") is None
    assert registry.get("abc") is None
    assert registry.any_owner("abc") == "connection"


def test_a_newer_offer_of_a_session_supersedes_its_pending_one() -> None:
    registry: Registry[str] = Registry(1)
    assert registry.reserve("a", owner="s1") is None
    registry.attach("a", "first")
    assert registry.reserve("b", owner="s1") == "first"  # freed: the limit of 1 admits b
    assert "a" not in registry and "b" in registry
    registry.attach("b", "second")
    registry.connected("b", "second")
    # a connected one is not superseded; the limit applies
    with pytest.raises(SignalingError) as info:
        registry.reserve("c", owner="s1")
    assert info.value.code == CONCURRENCY_LIMIT_REACHED
    assert registry.pending == 0


def test_pending_offers_per_address_are_capped() -> None:
    registry: Registry[str] = Registry(None, max_pending_per_address=3)
    for i in range(3):
        registry.reserve(f"id{i}", owner=f"s{i}", address="10.0.0.1")
    with pytest.raises(SignalingError) as info:
        registry.reserve("id9", owner="s9", address="10.0.0.1")
    assert info.value.code == TOO_MANY_PENDING_OFFERS
    assert info.value.meta["limit"] == 3 and "max_pending_per_address" in info.value.message
    registry.reserve("other", owner="t", address="10.0.0.2")  # another address is fine
    registry.attach("id0", "c0")
    registry.connected("id0", "c0")  # connected ones do not count
    registry.reserve("id9", owner="s9", address="10.0.0.1")


def test_release_of_a_superseded_connection_keeps_the_new_entry() -> None:
    registry: Registry[str] = Registry(None)
    registry.reserve("a", owner="s1")
    registry.attach("a", "old")
    registry.release("a", "other-value")
    assert "a" in registry
    registry.release("a", "old")
    assert "a" not in registry
