"""The core browser scenarios in Firefox (Debian's firefox-esr over WebDriver BiDi).

Firefox's fake devices (``media.navigator.streams.fake``) cannot play the fixture files the
Chromium tests use: its microphone is a steady 1 kHz tone, its camera a picture of one
colour that changes over time. So each scenario checks what can be known about that media
on both sides: the server's handler measures what arrived (the tone's frequency, the
frames' size and colour), and the page measures what came back (the probe's audio tap,
presented frames, getStats).

1. audio echo: the handler hears 1 kHz; the page hears the same 1 kHz back at its level;
2. video filter: the handler sees the camera's frames; the page shows them inverted, with
   the filter's marker in the corner;
3. receive audio and video (button triggers): the generator's notes arrive in order and in
   tune; the generator's barcoded frames arrive in order, at its rate;
4. a handler that raises: that page shows the error, another tab keeps streaming;
5. ``time_limit``: the stream ends on time and the page says so.
"""

from __future__ import annotations

import collections
import itertools
import threading
from collections.abc import Callable, Iterator
from typing import Any

import gradio as gr
import numpy as np
import pytest

from browser_tests.helpers import (
    DEADLINE,
    NO_PROCESSING,
    Peer,
    poll,
    tone_fraction,
)
from browser_tests.test_audio import note_sequence
from fixtures import analysis
from fixtures.video import make_frame, read_frame_id
from webrtc_ref import StreamHandler, WebRTC
from webrtc_ref.testing import launched

pytestmark = [pytest.mark.browser, pytest.mark.slow]

#: Firefox's fake microphone plays this tone.
FAKE_TONE_HZ = 1000.0
TIME_LIMIT = 3.0
EXPLOSION = "the handler exploded on purpose"
#: The filter's marker: the top-left eighth of each returned frame, magenta.
MARKER = (255, 0, 255)
RECEIVE_W, RECEIVE_H, RECEIVE_FPS = 320, 180, 30
#: The receive-audio generator's notes, in semitones above 220 Hz, 0.3 s each.
NOTES = [0, 4, 7, 12, 7]


class Heard:
    """What the server's handlers measured, shared with the test thread (bounded)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.audio: collections.deque[tuple[int, np.ndarray]] = collections.deque(maxlen=500)
        self.video: collections.deque[tuple[tuple[int, ...], np.ndarray]] = collections.deque(
            maxlen=300
        )

    def audio_seconds(self) -> float:
        with self.lock:
            return sum(a.shape[-1] / rate for rate, a in self.audio)

    def tone(self) -> tuple[np.ndarray, int]:
        with self.lock:
            frames = list(self.audio)
        rate = frames[-1][0]
        return np.concatenate([a.reshape(-1) for r, a in frames if r == rate]), rate


class ToneEcho(StreamHandler):
    """Echo the microphone and keep what arrived in :data:`HEARD` (mono int16)."""

    def __init__(self, heard: Heard) -> None:
        super().__init__()
        self.heard = heard
        self.queue: collections.deque[tuple[int, np.ndarray]] = collections.deque(maxlen=50)

    def receive(self, frame: tuple[int, np.ndarray]) -> None:
        rate, samples = frame
        with self.heard.lock:
            self.heard.audio.append((rate, samples[:1].copy()))
        self.queue.append(frame)

    def emit(self) -> tuple[int, np.ndarray] | None:
        return self.queue.popleft() if self.queue else None

    def copy(self) -> ToneEcho:
        return ToneEcho(self.heard)


def firefox_app(heard: Heard) -> gr.Blocks:
    """Every scenario's component on one page, each with an ``elem_id``; the handlers
    record what they receive in ``heard``."""

    def invert(frame: np.ndarray) -> np.ndarray:
        with heard.lock:
            heard.video.append((frame.shape, frame.reshape(-1, 3).mean(axis=0)))
        out = 255 - frame
        h, w = out.shape[:2]
        out[: h // 4, : w // 4] = MARKER
        return out

    def fragile(frame: np.ndarray, explode: bool) -> np.ndarray:
        if explode:
            raise RuntimeError(EXPLOSION)
        return frame

    def notes() -> Iterator[tuple[int, np.ndarray]]:
        rate = 24000
        t = np.arange(int(0.3 * rate)) / rate
        for semitone in NOTES:
            freq = 220 * 2 ** (semitone / 12)
            yield rate, (0.3 * 32767 * np.sin(2 * np.pi * freq * t)).astype(np.int16)[None]

    def frames() -> Iterator[np.ndarray]:
        for index in range(8 * RECEIVE_FPS):
            yield np.asarray(make_frame(index, RECEIVE_W, RECEIVE_H))

    with gr.Blocks(title="Firefox scenarios") as demo:
        echo = WebRTC(
            label="Echo",
            modality="audio",
            track_constraints=NO_PROCESSING,
            elem_id="echo",
        )
        echo.stream(ToneEcho(heard), inputs=[echo], outputs=[echo], time_limit=60)
        video = WebRTC(label="Invert", modality="video", elem_id="invert", height=160)
        video.stream(invert, inputs=[video], outputs=[video], concurrency_limit=None)
        listen = WebRTC(label="Notes", mode="receive", modality="audio", elem_id="notes")
        play = gr.Button("Play notes", elem_id="play-notes")
        listen.stream(notes, inputs=None, outputs=[listen], trigger=play.click)
        watch = WebRTC(label="Frames", mode="receive", modality="video", elem_id="frames")
        show = gr.Button("Show frames", elem_id="show-frames")
        watch.stream(frames, inputs=None, outputs=[watch], trigger=show.click)
        shaky = WebRTC(label="Fragile", modality="video", elem_id="fragile", height=160)
        explode = gr.Checkbox(label="explode", value=False, elem_id="explode")
        shaky.stream(fragile, inputs=[shaky, explode], outputs=[shaky], concurrency_limit=None)
        timed = WebRTC(label="Timed", modality="video", elem_id="timed", time_limit=TIME_LIMIT)
        timed.stream(lambda frame: frame, inputs=[timed], outputs=[timed])
    return demo


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def heard() -> Heard:
    return Heard()


@pytest.fixture(scope="module")
def app_url(heard: Heard) -> Iterator[str]:
    with launched(firefox_app(heard)) as url:
        yield url


@pytest.fixture
def open_tab(open_firefox: Callable[..., Peer], app_url: str) -> Callable[[str, str], Peer]:
    """``open_tab(root, name)``: a new Firefox tab on the app."""
    return lambda root, name: open_firefox(app_url, root=root, name=name)


def start_streaming(peer: Peer) -> dict[str, Any]:
    peer.start()
    assert peer.wait_state("streaming", "error") == "streaming", peer.text(".wr-error")
    return peer.wait_first_media()


def click_trigger(peer: Peer, selector: str) -> None:
    peer.page.click(f"{selector} button, button{selector}")


# ----------------------------------------------------------------------------- scenarios


@pytest.mark.timeout(90)
def test_firefox_audio_echo(
    open_tab: Callable[[str, str], Peer], heard: Heard, timings: Any
) -> None:
    """Scenario 1: the server hears Firefox's 1 kHz tone; the page hears it come back."""
    peer = open_tab("#echo .webrtc-ref", "echo")
    session = start_streaming(peer)
    first = session["firstAudioAt"]
    poll(lambda: peer.now() - first > 2000, DEADLINE, "2 s of echoed audio")
    poll(lambda: heard.audio_seconds() > 2, DEADLINE, "2 s of audio at the server")
    audio = peer.audio()
    stats = peer.stats()
    peer.stop()
    assert peer.wait_state("idle") == "idle"

    samples, rate = heard.tone()
    served = samples[-rate:]
    assert abs(analysis.dominant_frequency(served, rate) - FAKE_TONE_HZ) < 10
    assert analysis.level_dbfs(served) > -40

    step = audio.rate // 10
    start = audio.sample_at(first) + 2 * step
    remote = audio.remote[start:]
    local = audio.local[start:]
    assert len(remote) >= 15 * step, len(remote)
    back = tone_fraction(remote, audio.rate, FAKE_TONE_HZ, step)
    assert np.mean(back > 0.8) > 0.9, back.round(2).tolist()
    level_gap = analysis.level_dbfs(remote) - analysis.level_dbfs(local)
    assert abs(level_gap) < 6, level_gap
    inbound = stats["inbound"]["audio"]
    assert inbound["packetsReceived"] > 100 and inbound["packetsLost"] <= 2, inbound
    timings.record("Firefox: echo audio (1 kHz fake tone)", session, "ff-echo")


@pytest.mark.timeout(90)
def test_firefox_video_filter(
    open_tab: Callable[[str, str], Peer], heard: Heard, timings: Any
) -> None:
    """Scenario 2: the camera's frames reach the handler; the page shows them inverted,
    with the filter's marker."""
    peer = open_tab("#invert .webrtc-ref", "invert")
    session = start_streaming(peer)
    poll(lambda: len(heard.video) >= 30, DEADLINE, "30 frames at the server")
    with heard.lock:
        shape, _ = heard.video[-1]
    assert len(shape) == 3 and shape[2] == 3 and shape[0] >= 120 and shape[1] >= 160, shape
    checked = 0
    for _ in range(5):
        rgb, _at = peer.grab()
        h, w = rgb.shape[:2]
        marker = rgb[h // 32 : h // 4 - h // 32, w // 32 : w // 4 - w // 32].reshape(-1, 3)
        assert np.abs(marker.mean(axis=0) - MARKER).max() < 40, marker.mean(axis=0)
        rest = rgb[h // 2 :, w // 2 :].reshape(-1, 3).mean(axis=0)
        with heard.lock:
            sent = [255 - mean for _, mean in list(heard.video)[-60:]]
        # The shown picture is the inversion of one the server received lately.
        assert min(np.abs(rest - s).max() for s in sent) < 40, (rest, sent[-1])
        checked += 1
    frames = peer.session()["frames"]
    assert frames > 30, frames
    peer.stop()
    assert peer.wait_state("idle") == "idle"
    assert checked == 5
    timings.record("Firefox: video filter (fake camera)", session, "ff-invert")


@pytest.mark.timeout(90)
def test_firefox_receive_audio(open_tab: Callable[[str, str], Peer], timings: Any) -> None:
    """Scenario 3a: the button starts the notes; they arrive in order and in tune, and the
    stream ends by itself."""
    peer = open_tab("#notes .webrtc-ref", "notes")
    click_trigger(peer, "#play-notes")
    assert peer.wait_state("streaming", "error") == "streaming", peer.text(".wr-error")
    assert peer.wait_state("ended", "error", timeout=30) == "ended", peer.text(".wr-error")
    assert peer.attr("data-end-reason") == "handler_finished"
    audio = peer.audio()
    heard_spans = analysis.active_intervals(
        audio.remote, audio.rate, threshold_dbfs=-40, min_gap_s=0.1
    )
    assert heard_spans, "nothing was heard"
    onset, offset = heard_spans[0][0], heard_spans[-1][1]
    assert len(NOTES) * 0.3 - 0.2 < offset - onset < len(NOTES) * 0.3 + 0.5, heard_spans
    window = audio.remote[int(onset * audio.rate) : int(offset * audio.rate)]
    assert note_sequence(window, audio.rate) == NOTES
    timings.record("Firefox: receive audio (button trigger)", peer.session(), "ff-notes")


@pytest.mark.timeout(90)
def test_firefox_receive_video(open_tab: Callable[[str, str], Peer], timings: Any) -> None:
    """Scenario 3b: the button starts the generator's barcoded frames; the page shows
    them in order, at the generator's rate."""
    peer = open_tab("#frames .webrtc-ref", "frames")
    click_trigger(peer, "#show-frames")
    assert peer.wait_state("streaming", "error") == "streaming", peer.text(".wr-error")
    session = peer.wait_first_media()
    shown: list[tuple[float, int]] = []
    for _ in range(4):
        count = peer.session()["frames"]
        poll(lambda c=count: peer.session()["frames"] >= c + 10, DEADLINE, "10 more frames")
        rgb, at = peer.grab()
        assert rgb.shape == (RECEIVE_H, RECEIVE_W, 3), rgb.shape
        index = read_frame_id(rgb)
        assert index is not None, "the shown frame is none of the generator's"
        shown.append((at, index))
    peer.stop()
    assert peer.wait_state("idle") == "idle"
    indices = [i for _, i in shown]
    assert all(b > a for a, b in itertools.pairwise(indices)), shown
    fps = (indices[-1] - indices[0]) / ((shown[-1][0] - shown[0][0]) / 1000)
    assert 20 < fps < 40, (fps, shown)
    timings.record("Firefox: receive video (button trigger)", session, "ff-frames")


@pytest.mark.timeout(90)
def test_firefox_handler_error(open_tab: Callable[[str, str], Peer]) -> None:
    """Scenario 4: the raising connection's page shows the error; another tab streams on."""
    steady = open_tab("#fragile .webrtc-ref", "steady")
    doomed = open_tab("#fragile .webrtc-ref", "doomed")
    start_streaming(steady)
    start_streaming(doomed)
    doomed.page.click("#explode input[type=checkbox]")
    assert doomed.wait_state("error", "ended") == "error"
    assert doomed.attr("data-error-code") == "handler_error"
    shown = doomed.text(".wr-error")
    assert f"RuntimeError: {EXPLOSION}" in shown, shown
    assert steady.state == "streaming"
    before = steady.session()["frames"]
    poll(lambda: steady.session()["frames"] >= before + 30, DEADLINE, "30 more frames")
    assert steady.state == "streaming"
    steady.stop()
    assert steady.wait_state("idle") == "idle"


@pytest.mark.timeout(60)
def test_firefox_time_limit(open_tab: Callable[[str, str], Peer]) -> None:
    """Scenario 5: the stream ends ``time_limit`` s after connecting, and the page says why."""
    peer = open_tab("#timed .webrtc-ref", "timed")
    start_streaming(peer)
    assert peer.wait_state("ended", "error", timeout=TIME_LIMIT + 10) == "ended"
    ended = peer.session()
    assert ended["endReason"] == "time_limit"
    assert ended["statusText"] == f"Time limit reached ({TIME_LIMIT:g} s)."
    lasted = (ended["endedAt"] - ended["connectedAt"]) / 1000
    assert TIME_LIMIT - 0.3 <= lasted <= TIME_LIMIT + 1.0, lasted
    assert ended["frames"] > 15 * (TIME_LIMIT - 1), ended["frames"]
