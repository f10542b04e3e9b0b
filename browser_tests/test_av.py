"""modality="audio-video" in Chromium: camera and microphone in one peer connection.

The app (``apps.av_app``) echoes both kinds with an ``AudioVideoStreamHandler``; the page
plays Chromium's fake camera (barcode frames, ids 0..299) and microphone (signature 57).
Checked by content: the remote <video> shows the camera's frames in order and plays the
microphone's signature at the level it was sent; one getUserMedia opened both with the
nested ``track_constraints``; the offer is audio then video, both sendrecv; both device
pickers list their devices and each reopens only its own kind; the states, the
time-limit ending and the media errors (an impossible constraint, a denied permission)
are those of the other modalities.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest

from browser_tests import apps
from browser_tests.conftest import CHROMIUM_ARGS
from browser_tests.helpers import (
    DEADLINE,
    SIGNATURE_ID,
    MediaSet,
    Peer,
    assert_in_order,
    frame_ids,
    poll,
    scaled,
)
from fixtures import analysis
from webrtc_ref.testing import launched

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture(scope="module")
def av_url() -> Iterator[str]:
    demo, _ = apps.av_app()
    with launched(demo) as url:
        yield url


def sdp_media(sdp: str) -> list[tuple[str, str | None]]:
    """(kind, direction) of each m-section of ``sdp``, in order."""
    sections: list[tuple[str, str | None]] = []
    for line in sdp.splitlines():
        if line.startswith("m="):
            sections.append((line[2:].split(" ", 1)[0], None))
        elif sections and line in ("a=sendrecv", "a=sendonly", "a=recvonly", "a=inactive"):
            sections[-1] = (sections[-1][0], line[2:])
    return sections


PAGE_FACTS = """(root) => {
    const api = root.__webrtc, pc = api.pc;
    const remote = root.querySelector('.wr-remote'), local = root.querySelector('.wr-local');
    const ids = (stream) => stream ? stream.getTracks().map((t) => t.kind + ':' + t.id) : [];
    const select = (cls) => {
        const s = root.querySelector(cls);
        return {hidden: s.hidden, label: s.getAttribute('aria-label'),
                values: [...s.options].map((o) => o.value)};
    };
    const meter = (cls) => {
        const m = root.querySelector(cls);
        return {hidden: m.hidden, visible: m.offsetParent !== null,
                level: Number(m.dataset.level || 0)};
    };
    const audioTrack = api.localStream && api.localStream.getAudioTracks()[0];
    return {
        localSdp: pc.localDescription.sdp,
        remoteSdp: pc.remoteDescription.sdp,
        transceivers: pc.getTransceivers().map((t) => [
            t.receiver.track.kind, t.direction, t.currentDirection,
            t.sender.track ? t.sender.track.kind : null]),
        senders: pc.getSenders().filter((s) => s.track).map((s) => s.track.kind + ':' + s.track.id),
        receivers: pc.getReceivers().map((r) => r.track.kind + ':' + r.track.id),
        local: ids(api.localStream),
        localShown: ids(local.srcObject),
        localVisible: !local.hidden && local.classList.contains('wr-pip'),
        mirrored: getComputedStyle(local).transform,
        remoteShown: ids(remote.srcObject),
        remoteVisible: !remote.hidden,
        remoteMuted: remote.muted, remoteVolume: remote.volume, remotePaused: remote.paused,
        audioElement: ids(root.querySelector('.wr-audio').srcObject),
        audioSettings: audioTrack ? audioTrack.getSettings() : null,
        camera: select('.wr-device:not(.wr-device-mic)'),
        microphone: select('.wr-device-mic'),
        meterIn: meter('.wr-meter-in'),
        meterOut: meter('.wr-meter-out'),
        icon: root.querySelector('.wr-icon').getBoundingClientRect().width,
    };
}"""

METER_LEVEL = "(root, cls) => Number(root.querySelector(cls).dataset.level || 0)"

DEVICES = """async () => {
    const all = await navigator.mediaDevices.enumerateDevices();
    const of = (kind) => all.filter((d) => d.kind === kind && d.deviceId).map((d) => d.deviceId);
    return {camera: of('videoinput'), microphone: of('audioinput')};
}"""


@pytest.mark.timeout(90)
def test_av_echo_picture_and_sound(
    open_peer: Callable[..., Peer], timings: Any, av_url: str
) -> None:
    """The camera's frames and the microphone's signature come back through one element,
    from one getUserMedia, over one audio and one video sendrecv transceiver."""
    peer = open_peer(av_url, root="#echo .webrtc-ref", name="av")
    assert peer.state == "idle"
    assert peer.attr("data-modality") == "audio-video"
    peer.start()
    assert peer.wait_state("streaming", "error") == "streaming", peer.text(".wr-error")
    # Both kinds arrive: a presented frame and audible audio.
    session = peer.wait_session(
        lambda s: s["firstFrameAt"] is not None and s["firstAudioAt"] is not None,
        "a remote frame and audible remote audio",
    )
    first_audible = session["firstAudioAt"]

    # Video: the fake camera's barcodes, in order and live.
    frames = peer.capture_frames(45)
    ids = frame_ids(frames)
    ordered = assert_in_order(ids)
    span_s = (frames[-1].at - frames[0].at) / 1000
    # Live, not replayed: ids advance at about the camera's 30 fps. A loaded machine may
    # present a backlog first and then catch up, so up to 1.5 s (45 frames) more is fine.
    assert ordered[-1] - ordered[0] <= 30 * span_s + 45, (ids, span_s)

    # Audio: 2 s of the echo, recorded while the picture plays.
    poll(lambda: peer.now() - first_audible > 2500, 15, "2.5 s of echoed audio")
    # Each meter shows a level while sound flows. A meter reads one 1024-sample window per
    # animation frame, which a dropout can leave quiet, so wait for a frame that is not.
    for meter in (".wr-meter-in", ".wr-meter-out"):
        poll(
            lambda cls=meter: peer.eval(METER_LEVEL, cls) > 0.01,
            5,
            f"a level above 0.01 on {meter}",
        )
    facts = peer.eval(PAGE_FACTS)
    devices = peer.page.evaluate(DEVICES)
    audio = peer.audio()
    stats = peer.stats()
    peer.stop()
    assert peer.wait_state("idle") == "idle"
    assert peer.eval("(root) => root.querySelector('.wr-remote').srcObject") is None

    # The offer: audio, then video, both sendrecv, then the data channel.
    assert sdp_media(facts["localSdp"]) == [
        ("audio", "sendrecv"),
        ("video", "sendrecv"),
        ("application", None),
    ], facts["localSdp"]
    assert [k for k, _ in sdp_media(facts["remoteSdp"])] == ["audio", "video", "application"]
    assert facts["transceivers"] == [
        ["audio", "sendrecv", "sendrecv", "audio"],
        ["video", "sendrecv", "sendrecv", "video"],
    ], facts["transceivers"]
    # One getUserMedia stream holds both tracks; they are what is sent; the preview shows it.
    assert sorted(t.split(":")[0] for t in facts["local"]) == ["audio", "video"], facts["local"]
    assert sorted(facts["senders"]) == sorted(facts["local"])
    assert facts["localShown"] == facts["local"] and facts["localVisible"]
    assert facts["mirrored"] not in ("none", ""), facts["mirrored"]  # mirror_webcam=True
    # The nested audio constraints reached getUserMedia.
    settings = facts["audioSettings"]
    assert settings["echoCancellation"] is False, settings
    assert settings["autoGainControl"] is False, settings
    # The remote <video> holds both received tracks and plays them with sound.
    assert sorted(facts["remoteShown"]) == sorted(facts["receivers"]), facts
    assert len(facts["remoteShown"]) == 2 and facts["remoteVisible"]
    assert facts["remoteMuted"] is False and facts["remoteVolume"] == 1
    assert facts["remotePaused"] is False
    assert facts["audioElement"] == []  # no second element plays the sound
    # Both pickers, each listing its own kind; the audio modality's meters, no icon.
    assert facts["camera"]["label"] == "Camera" and not facts["camera"]["hidden"]
    assert facts["microphone"]["label"] == "Microphone" and not facts["microphone"]["hidden"]
    assert facts["camera"]["values"] == devices["camera"] and devices["camera"], facts
    assert facts["microphone"]["values"] == devices["microphone"] and devices["microphone"]
    for meter in ("meterIn", "meterOut"):
        assert facts[meter]["visible"], facts[meter]
    assert facts["icon"] == 0

    # The sound: the signature in (nearly) every 100 ms window, at the level it was sent.
    step = audio.rate // 10
    start = audio.sample_at(first_audible) + 2 * step
    windows = range(start, len(audio.remote) - step + 1, step)
    sent = [analysis.identify_signature(audio.local[i : i + step], audio.rate) for i in windows]
    heard = [analysis.identify_signature(audio.remote[i : i + step], audio.rate) for i in windows]
    assert len(heard) >= 15, "recording too short"
    assert set(sent) == {SIGNATURE_ID}, sent
    assert set(heard) <= {SIGNATURE_ID, None}, heard
    assert heard.count(SIGNATURE_ID) >= 0.7 * len(heard), heard
    sent_db = float(np.median([analysis.level_dbfs(audio.local[i : i + step]) for i in windows]))
    heard_db = float(np.median([analysis.level_dbfs(audio.remote[i : i + step]) for i in windows]))
    assert abs(sent_db - (-13.8)) < 1.5, sent_db
    assert abs(heard_db - sent_db) < 3.0, (sent_db, heard_db)
    assert stats["inbound"]["video"]["framesDecoded"] > 30
    assert stats["inbound"]["audio"]["totalSamplesReceived"] > audio.rate
    timings.record(
        "audio-video echo",
        session,
        "av",
        frames_read=len(ordered),
        sent_dbfs=round(sent_db, 1),
        heard_dbfs=round(heard_db, 1),
        windows_identified=f"{heard.count(SIGNATURE_ID)}/{len(heard)}",
    )


SENDER_IDS = """(root) => Object.fromEntries(root.__webrtc.pc.getSenders()
    .filter((s) => s.track).map((s) => [s.track.kind, s.track.id + ':' + s.track.readyState]))"""


def pick(peer: Peer, selector: str, value: str) -> None:
    """Choose ``value`` in the picker ``selector`` as a user does (Playwright fires
    "change" even when ``value`` was already selected)."""
    peer.page.select_option(peer.el(selector), value)


@pytest.mark.timeout(90)
def test_av_pickers_switch_only_their_kind(open_peer: Callable[..., Peer], av_url: str) -> None:
    """The microphone picker reopens only the microphone, the camera picker only the
    camera; the other track goes on, and both kinds keep arriving."""
    peer = open_peer(av_url, root="#echo .webrtc-ref", name="picker")
    peer.start()
    assert peer.wait_state("streaming", "error") == "streaming", peer.text(".wr-error")
    peer.wait_session(lambda s: s["firstFrameAt"] is not None, "a remote frame")
    devices = peer.page.evaluate(DEVICES)
    before = peer.eval(SENDER_IDS)

    mic = devices["microphone"][-1]
    pick(peer, ".wr-device-mic", mic)
    after_mic = poll(
        lambda: (ids := peer.eval(SENDER_IDS))["audio"] != before["audio"] and ids,
        DEADLINE,
        "a new microphone track on the audio sender",
    )
    assert after_mic["video"] == before["video"], (before, after_mic)  # camera untouched
    assert after_mic["audio"].endswith(":live"), after_mic
    assert (
        peer.eval("(root) => root.__webrtc.localStream.getAudioTracks()[0].getSettings().deviceId")
        == mic
    )

    camera = devices["camera"][0]
    pick(peer, ".wr-device:not(.wr-device-mic)", camera)
    after_cam = poll(
        lambda: (ids := peer.eval(SENDER_IDS))["video"] != after_mic["video"] and ids,
        DEADLINE,
        "a new camera track on the video sender",
    )
    assert after_cam["audio"] == after_mic["audio"], (after_mic, after_cam)  # mic untouched
    kinds = peer.eval(
        "(root) => root.__webrtc.localStream.getTracks().map((t) => t.kind + ':' + t.readyState)"
    )
    assert kinds == ["audio:live", "video:live"], kinds
    # The preview follows the new camera; the far end still gets frames from it.
    shown = peer.eval("(root) => root.querySelector('.wr-local').srcObject.getVideoTracks()[0].id")
    assert after_cam["video"].startswith(shown + ":"), (shown, after_cam)
    assert_in_order(frame_ids(peer.capture_frames(20)))
    assert peer.state == "streaming"
    heard = poll(
        lambda: (a := peer.audio()) and len(a.remote) > a.rate and a,
        DEADLINE,
        "a second of recorded audio",
    )
    tail = heard.remote[-heard.rate // 2 :]
    assert analysis.identify_signature(tail, heard.rate) == SIGNATURE_ID
    peer.stop()
    assert peer.wait_state("idle") == "idle"


@pytest.mark.timeout(60)
def test_av_time_limit_ends_the_stream(open_peer: Callable[..., Peer], av_url: str) -> None:
    """connecting -> streaming -> ended with reason time_limit, as for the other modalities."""
    peer = open_peer(av_url, root="#timed .webrtc-ref", name="timed")
    peer.start()
    assert peer.wait_state("streaming", "error") == "streaming", peer.text(".wr-error")
    assert not peer.page.is_hidden(peer.el(".wr-timebar"))
    assert peer.wait_state("ended", "error", timeout=apps.TIME_LIMIT + 10) == "ended"
    assert peer.attr("data-end-reason") == "time_limit"
    assert peer.text(".wr-status") == f"Time limit reached ({apps.TIME_LIMIT:g} s)."
    session = peer.session()
    assert [s for s, _ in session["states"]] == ["connecting", "streaming", "ended"], session
    assert peer.eval("(root) => root.__webrtc.pc") is None
    assert peer.page.is_visible(peer.el(".wr-start"))


@pytest.mark.timeout(60)
def test_av_unmeetable_constraint_fails_before_any_offer(
    open_peer: Callable[..., Peer], av_url: str
) -> None:
    """A nested camera constraint no device meets: a media error naming the camera; no
    peer connection is made."""
    peer = open_peer(av_url, root="#impossible .webrtc-ref", name="impossible")
    peer.start()
    assert peer.wait_state("streaming", "error") == "error"
    assert peer.attr("data-error-code") == "media_error"
    assert peer.text(".wr-error") == (
        "The camera cannot satisfy track_constraints (constraint: width)."
    )
    assert peer.eval("(root) => root.__webrtc.pc") is None
    assert peer.session()["connectedAt"] is None


@pytest.mark.timeout(60)
def test_av_denied_permission(
    playwright: Any, executable_path: str, media: dict[str, MediaSet], av_url: str
) -> None:
    """Without the fake permission prompt, headless Chromium denies camera and
    microphone: the widget says so and offers Start again."""
    args = [a for a in CHROMIUM_ARGS if a != "--use-fake-ui-for-media-stream"]
    browser = playwright.chromium.launch(
        executable_path=executable_path,
        headless=True,
        args=[*args, *media["tone"].chromium_args()],
    )
    try:
        page = browser.new_page()
        root = "#echo .webrtc-ref"
        page.goto(av_url, wait_until="domcontentloaded", timeout=scaled(DEADLINE) * 1000)
        page.wait_for_function(
            "(sel) => { const r = document.querySelector(sel); return r && r.__webrtc; }",
            arg=root,
            timeout=scaled(DEADLINE) * 1000,
        )
        page.click(f"{root} .wr-start")
        page.wait_for_selector(
            f'{root}[data-state="error"], {root}[data-state="streaming"]',
            timeout=scaled(DEADLINE) * 1000,
        )
        assert page.get_attribute(root, "data-state") == "error"
        assert page.get_attribute(root, "data-error-code") == "media_error"
        assert page.inner_text(f"{root} .wr-error") == (
            "Permission to use the camera and microphone was denied. Allow it in the "
            "browser and press Start again."
        )
        assert page.is_visible(f"{root} .wr-start")
    finally:
        browser.close()


# ----------------------------------------------------------------------------- demos


def bar_fill(rgb: np.ndarray) -> float | None:
    """The echo-av demo's level bar, read from the bottom of a received frame: the share
    of the bar's width that is filled, or None when the bottom rows are not a level bar."""
    from webrtc_ref.demos.echo_av import BAR_HEIGHT

    height = rgb.shape[0]
    bar = max(4, round(height * BAR_HEIGHT))
    row = rgb[height - bar + 3 : height - 3].astype(np.int16).mean(axis=0)  # (W, 3)
    r, g, b = row[:, 0], row[:, 1], row[:, 2]
    filled = (g > 150) & (r < 130) & (b < 130)
    track = (r < 90) & (g < 90) & (b < 90)
    if np.mean(filled | track) < 0.95:
        return None
    return float(np.mean(filled))


@pytest.mark.timeout(90)
def test_echo_av_demo_mirrors_and_draws_the_level(open_peer: Callable[..., Peer]) -> None:
    """echo-av: the returned picture is the camera's frame mirrored (its barcode reads
    only when flipped back) with a level bar that the echoed tone fills partly; the tone
    comes back."""
    from fixtures.video import read_frame_id
    from webrtc_ref.demos import build_demo

    with launched(build_demo("echo-av")) as url:
        peer = open_peer(url, name="echo-av")
        peer.start()
        assert peer.wait_state("streaming", "error") == "streaming", peer.text(".wr-error")
        session = peer.wait_session(
            lambda s: s["firstFrameAt"] is not None and s["firstAudioAt"] is not None,
            "a remote frame and audible remote audio",
        )
        seen = []
        for _ in range(5):
            (rgb,) = poll(
                lambda: bar_fill(g := peer.grab()[0]) and (g,),
                DEADLINE,
                "a frame with a partly filled level bar",
            )
            seen.append((read_frame_id(rgb[:, ::-1]), read_frame_id(rgb), bar_fill(rgb)))
        poll(lambda: peer.now() - session["firstAudioAt"] > 1500, 10, "1.5 s of echo")
        audio = peer.audio()
        peer.stop()
        assert peer.wait_state("idle") == "idle"

    assert all(flipped is not None for flipped, _, _ in seen), seen  # mirrored camera frames
    assert all(plain is None for _, plain, _ in seen), seen  # ... and not unmirrored
    # The tone (-13.8 dBFS sent; Chrome's audio processing is on in the demo) fills the
    # -60..0 dBFS bar between a fifth and nearly all of its width.
    assert all(0.2 < fill < 0.98 for _, _, fill in seen), seen
    tail = audio.remote[-audio.rate // 2 :]
    assert analysis.identify_signature(tail, audio.rate) == SIGNATURE_ID


def banner_state(rgb: np.ndarray) -> str | None:
    """The av-turns demo's state, from the banner colour at the frame's top left."""
    from webrtc_ref.demos.av_turns import STATES

    height = rgb.shape[0]
    patch = rgb[2 : max(3, height // 6 - 2), 2:10].reshape(-1, 3).astype(np.float64)
    colour = np.median(patch, axis=0)
    distances = {s: float(np.linalg.norm(colour - np.array(c))) for s, (_, c, _) in STATES.items()}
    state = min(distances, key=lambda s: distances[s])
    return state if distances[state] < 60 else None


@pytest.mark.timeout(120)
def test_av_turns_demo_draws_each_turn(open_peer: Callable[..., Peer]) -> None:
    """av-turns on the speech fixture: the banner on the returned picture goes listening
    -> (thinking) -> speaking -> your turn, the widget's turn line follows the same
    events, and the reply (the utterance, then a 660 Hz beep) is heard only after the
    pause."""
    from webrtc_ref.demos import build_demo

    with launched(build_demo("av-turns")) as url:
        peer = open_peer(url, media="speech", name="av-turns")
        peer.start()
        assert peer.wait_state("streaming", "error") == "streaming", peer.text(".wr-error")
        peer.wait_session(lambda s: s["firstFrameAt"] is not None, "a remote frame")
        banners: list[str | None] = []

        def cycle_seen() -> bool:
            state = banner_state(peer.grab()[0])
            if not banners or banners[-1] != state:
                banners.append(state)
            shown = [b for b in banners if b]
            return "speaking" in shown and shown[-1] == "waiting" and "listening" in shown

        poll(cycle_seen, 30, "a whole turn on the banner", interval=0.02)
        turns = [t["state"] for t in peer.eval("(root) => root.__webrtc.turns")]
        audio = peer.audio()
        session = peer.session()
        peer.stop()

    shown = [b for b in banners if b]
    # The banner's states in turn order (a short one may fall between two grabs).
    order = ["waiting", "listening", "thinking", "speaking"]
    ranks = [order.index(s) for s in shown]
    first_listen = ranks.index(1)
    cycle = ranks[first_listen:]
    assert cycle[0] == 1 and 3 in cycle and cycle[-1] == 0, shown
    assert all(b >= a for a, b in itertools.pairwise(cycle[:-1])), shown
    assert turns[:4] == ["listening", "thinking", "speaking", "waiting"], turns
    # The reply: nothing heard before the first pause, then the beep at the reply's end.
    from browser_tests.helpers import tone_fraction

    rate = audio.rate
    connected = audio.sample_at(session["connectedAt"])
    said = analysis.active_intervals(
        audio.local[connected:], rate, threshold_dbfs=-45, min_gap_s=0.5
    )
    heard = analysis.active_intervals(
        audio.remote[connected:], rate, threshold_dbfs=-40, min_gap_s=0.1
    )
    assert said and heard, (said, heard)
    assert heard[0][0] > said[0][1], (said, heard)  # the reply waits for the pause
    beep = tone_fraction(audio.remote[connected:], rate, 660, rate // 50) > 0.8
    assert beep.sum() >= 5, "no 660 Hz beep after the reply"  # >= 100 ms
