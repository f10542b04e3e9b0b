"""The component's controls in Chromium: ``button_labels``, the mute toggles (checked by
content: the echo of a muted microphone is silence), the full-screen toggle, the
``start_recording`` / ``stop_recording`` events updating their outputs, and keyboard and
screen-reader use (Tab order, Enter/Space, aria attributes, the live status region).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import gradio as gr
import pytest

from browser_tests.apps import identity
from browser_tests.helpers import NO_PROCESSING, Peer, poll
from webrtc_ref import WebRTC
from webrtc_ref.demos.echo_audio import EchoHandler
from webrtc_ref.demos.echo_av import EchoAV
from webrtc_ref.testing import launched

pytestmark = [pytest.mark.browser, pytest.mark.slow]

LABELS = {"start": "Talk to me", "stop": "Hang up", "waiting": "Dialling"}

#: The echo's RMS level (0..1) while the tone comes back, and the ceiling of silence.
AUDIBLE = 0.01
SILENT = 0.001


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    with gr.Blocks() as demo:
        audio = WebRTC(
            label="Echo",
            modality="audio",
            track_constraints=NO_PROCESSING,
            button_labels=LABELS,
            elem_id="echo",
        )
        audio.stream(EchoHandler(), inputs=[audio], outputs=[audio], time_limit=60)
        started = gr.Textbox(label="started", elem_id="started")
        stopped = gr.Textbox(label="stopped", elem_id="stopped")
        audio.start_recording(lambda: "recording started", None, started)
        audio.stop_recording(lambda: "recording stopped", None, stopped)
        video = WebRTC(label="Video", modality="video", elem_id="video")
        video.stream(identity, inputs=[video], outputs=[video])
        both = WebRTC(label="Both", modality="audio-video", elem_id="both")
        both.stream(EchoAV(), inputs=[both], outputs=[both])
        plain = WebRTC(label="Plain", modality="video", full_screen=False, elem_id="plain")
        plain.stream(identity, inputs=[plain], outputs=[plain])
    with launched(demo) as served:
        yield served


def out_level(peer: Peer) -> float:
    levels = [m["level"] for m in peer.eval("(r) => r.__webrtc.meters") if m["tag"] == "out"]
    return max(levels) if levels else 0.0


def textbox(peer: Peer, elem: str) -> str:
    return str(peer.page.input_value(f"#{elem} textarea"))


def test_labels_mute_events_and_live_region(open_peer: Callable[..., Peer], url: str) -> None:
    peer = open_peer(url, root="#echo .webrtc-ref", name="echo")
    assert peer.text(".wr-start") == LABELS["start"]
    status = peer.page.locator(peer.el(".wr-status"))
    assert status.get_attribute("aria-live") == "polite"
    assert status.get_attribute("role") == "status"
    # audio: no full-screen toggle; the mute toggles show once streaming
    assert peer.page.locator(peer.el(".wr-fullscreen")).is_hidden()
    assert peer.page.locator(peer.el(".wr-mute-mic")).is_hidden()

    # Start by keyboard: focus the start button and press Enter.
    peer.page.focus(peer.el(".wr-start"))
    peer.page.keyboard.press("Enter")
    seen = peer.wait_state("connecting", "streaming", "error")
    if seen == "connecting":
        label = peer.text(".wr-stop")
        assert label in (LABELS["waiting"], LABELS["stop"]), label
    assert peer.wait_state("streaming", "error") == "streaming", peer.text(".wr-error")
    assert peer.text(".wr-stop") == LABELS["stop"]
    assert status.inner_text() == "Streaming."
    poll(lambda: textbox(peer, "started") == "recording started", 20, "start_recording output")
    assert textbox(peer, "stopped") == ""
    poll(lambda: out_level(peer) > AUDIBLE, 20, "the echo is audible")

    # Tab order: stop, mute microphone, mute speaker (the device picker, if any, is first).
    peer.page.focus(peer.el(".wr-stop"))
    order = []
    for _ in range(2):
        peer.page.keyboard.press("Tab")
        order.append(peer.eval("() => document.activeElement.className"))
    assert order == ["wr-toggle wr-mute-mic", "wr-toggle wr-mute-speaker"], order
    focus = peer.eval(
        "() => { const s = getComputedStyle(document.activeElement);"
        " return [document.activeElement.matches(':focus-visible'), s.outlineStyle]; }"
    )
    assert focus == [True, "solid"], focus

    # Mute the microphone with Space: the echo falls silent; unmute: it comes back.
    mic = peer.page.locator(peer.el(".wr-mute-mic"))
    assert mic.get_attribute("aria-pressed") == "false"
    assert mic.get_attribute("aria-label") == "Mute microphone"
    mic.focus()
    peer.page.keyboard.press("Space")
    assert mic.get_attribute("aria-pressed") == "true"
    assert mic.get_attribute("aria-label") == "Unmute microphone"
    poll(lambda: out_level(peer) < SILENT, 20, "the echo of a muted microphone is silent")
    sent = peer.eval(
        "(r) => r.__webrtc.pc.getSenders().filter((s) => s.track)"
        ".map((s) => [s.track.kind, s.track.enabled])"
    )
    assert sent == [["audio", False]], sent
    peer.page.keyboard.press("Enter")
    assert mic.get_attribute("aria-pressed") == "false"
    poll(lambda: out_level(peer) > AUDIBLE, 20, "the echo is back after unmuting")

    # Mute the speaker: the stream keeps arriving, the page plays it muted.
    speaker = peer.page.locator(peer.el(".wr-mute-speaker"))
    speaker.click()
    assert speaker.get_attribute("aria-pressed") == "true"
    assert peer.eval("(r) => r.querySelector('.wr-audio').muted") is True
    assert out_level(peer) > AUDIBLE or poll(lambda: out_level(peer) > AUDIBLE, 10, "arriving")
    speaker.click()
    assert peer.eval("(r) => r.querySelector('.wr-audio').muted") is False

    peer.stop()
    assert peer.wait_state("idle") == "idle"
    poll(lambda: textbox(peer, "stopped") == "recording stopped", 20, "stop_recording output")
    assert peer.eval("(r) => r.__webrtc.recordingEvents") == ["start_recording", "stop_recording"]


def test_full_screen_toggle(open_peer: Callable[..., Peer], url: str) -> None:
    peer = open_peer(url, root="#video .webrtc-ref", name="video")
    toggle = peer.page.locator(peer.el(".wr-fullscreen"))
    assert toggle.is_visible()
    assert toggle.get_attribute("aria-label") == "Full screen"
    toggle.focus()
    peer.page.keyboard.press("Enter")
    poll(lambda: peer.eval("(r) => document.fullscreenElement === r"), 10, "the component fills")
    poll(lambda: toggle.get_attribute("aria-pressed") == "true", 10, "aria-pressed")
    assert toggle.get_attribute("aria-label") == "Exit full screen"
    peer.page.keyboard.press("Enter")
    poll(lambda: peer.eval("() => document.fullscreenElement === null"), 10, "full screen left")
    assert toggle.get_attribute("aria-pressed") == "false"

    plain = open_peer(url, root="#plain .webrtc-ref", name="plain")
    assert plain.page.locator(plain.el(".wr-fullscreen")).is_hidden()
    # every shown control is a native button or a labelled select: reachable and named
    names = plain.eval(
        "(r) => [...r.querySelectorAll('button:not([hidden]), select:not([hidden])')]"
        ".map((e) => e.getAttribute('aria-label') || e.textContent.trim())"
    )
    assert names and all(names), names


def test_audio_video_mutes_only_the_audio(open_peer: Callable[..., Peer], url: str) -> None:
    """audio-video: the microphone toggle silences the echoed sound while the camera track
    goes on; the speaker toggle mutes the remote <video>, which plays the sound."""
    peer = open_peer(url, root="#both .webrtc-ref", name="both")
    assert peer.page.locator(peer.el(".wr-fullscreen")).is_visible()
    peer.start()
    assert peer.wait_state("streaming", "error") == "streaming", peer.text(".wr-error")
    poll(lambda: out_level(peer) > AUDIBLE, 20, "the echo is audible")
    peer.page.click(peer.el(".wr-mute-mic"))
    poll(lambda: out_level(peer) < SILENT, 20, "the echo of a muted microphone is silent")
    sent = peer.eval(
        "(r) => Object.fromEntries(r.__webrtc.pc.getSenders().filter((s) => s.track)"
        ".map((s) => [s.track.kind, s.track.enabled]))"
    )
    assert sent == {"audio": False, "video": True}, sent
    peer.page.click(peer.el(".wr-mute-speaker"))
    assert peer.eval("(r) => r.querySelector('.wr-remote').muted") is True
    peer.stop()
    assert peer.wait_state("idle") == "idle"
