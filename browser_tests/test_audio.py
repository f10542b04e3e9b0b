"""Audio scenarios in Chromium: what the page hears is checked, not only "connected".

1. send-receive with the guide's EchoHandler: signature 57 comes back at the sent level;
2. ReplyOnPause (reply-on-pause demo) on the speech_pause_speech fixture: exactly one reply
   per pause, each the chipmunked utterance followed by one 880 Hz beep;
3. server-to-client audio started by the Generate button (receive-audio demo): the notes
   arrive in order, at their pitch, and the stream ends with ``handler_finished``;
6. additional outputs (additional-outputs demo): the Chatbot gets one message per turn, in
   order, never cleared.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest

from browser_tests.apps import echo_audio_app
from browser_tests.helpers import (
    SIGNATURE_ID,
    Audio,
    Peer,
    poll,
    tone_fraction,
)
from fixtures import analysis
from webrtc_ref.demos import build_demo
from webrtc_ref.testing import launched

pytestmark = [pytest.mark.browser, pytest.mark.slow]

#: Sent speech: words closer than this belong to one utterance.
WORD_GAP_S = 0.5
#: A reply must start within this many seconds after the end of the utterance.
REPLY_WITHIN_S = 1.5


@pytest.fixture(scope="module")
def echo_url() -> Iterator[str]:
    with launched(echo_audio_app()) as url:
        yield url


def utterances(audio: Audio, after_sample: int = 0) -> list[tuple[float, float]]:
    """(start_s, end_s) of the speech the page sent, in seconds of the recording."""
    spans = analysis.active_intervals(
        audio.local, audio.rate, threshold_dbfs=-45, min_gap_s=WORD_GAP_S
    )
    return [(a, b) for a, b in spans if b * audio.rate > after_sample]


@pytest.mark.timeout(60)
def test_echo_handler_returns_the_signature(
    open_peer: Callable[..., Peer], timings: Any, echo_url: str
) -> None:
    """Scenario 1: the tone signature the page sends comes back, at the level it was sent."""
    peer = open_peer(echo_url, root="#echo .webrtc-ref", name="echo")
    peer.start()
    assert peer.wait_state("streaming", "error") == "streaming", peer.text(".wr-error")
    session = peer.wait_first_media()
    first_audible = session["firstAudioAt"]
    poll(
        lambda: peer.now() - first_audible > 2000,
        10,
        "2 s of echoed audio",
    )
    audio = peer.audio()
    stats = peer.stats()
    peer.stop()
    assert peer.wait_state("idle") == "idle"

    # 100 ms windows from 0.2 s after the echo began: the signature in (nearly) all of them,
    # never another one. (On a loaded 2-core machine the jitter buffer now and then
    # stretches or conceals a few windows.)
    step = audio.rate // 10
    start = audio.sample_at(first_audible) + 2 * step
    windows = range(start, len(audio.remote) - step + 1, step)
    sent = [analysis.identify_signature(audio.local[i : i + step], audio.rate) for i in windows]
    heard = [analysis.identify_signature(audio.remote[i : i + step], audio.rate) for i in windows]
    assert len(heard) >= 15, "recording too short"
    assert set(sent) == {SIGNATURE_ID}, sent
    assert set(heard) <= {SIGNATURE_ID, None}, heard
    assert heard.count(SIGNATURE_ID) >= 0.7 * len(heard), heard
    # Three tones of peak 0.5/3: -13.8 dBFS; audio processing is off, so it is not
    # attenuated on the way out, nor on the way back.
    sent_db = float(np.median([analysis.level_dbfs(audio.local[i : i + step]) for i in windows]))
    heard_db = float(np.median([analysis.level_dbfs(audio.remote[i : i + step]) for i in windows]))
    assert abs(sent_db - (-13.8)) < 1.5, sent_db
    assert abs(heard_db - sent_db) < 3.0, (sent_db, heard_db)
    inbound = stats["inbound"]["audio"]
    assert inbound["totalSamplesReceived"] > audio.rate
    assert inbound["audioLevel"] > 0.05, inbound
    timings.record(
        "1 echo audio (EchoHandler)",
        session,
        "echo",
        sent_dbfs=round(sent_db, 1),
        heard_dbfs=round(heard_db, 1),
        windows_identified=f"{heard.count(SIGNATURE_ID)}/{len(heard)}",
    )


@pytest.mark.timeout(90)
def test_reply_on_pause_one_reply_per_pause(open_peer: Callable[..., Peer], timings: Any) -> None:
    """Scenario 2: each pause of the sent speech gets exactly one reply, heard in the page."""
    with launched(build_demo("reply-on-pause")) as url:
        peer = open_peer(url, media="speech", name="voice")
        peer.start()
        assert peer.wait_state("streaming", "error") == "streaming", peer.text(".wr-error")
        # The fixture's two utterances end at 3.3 and 7.2 s; replies follow within ~1 s and
        # last ~2 s. 12 s of recording covers both pauses and both replies.
        poll(lambda: peer.recorded_seconds() >= 12.0, 30, "12 s of recorded audio")
        audio = peer.audio()
        session = peer.session()
        turns = [t["state"] for t in peer.eval("(root) => root.__webrtc.turns")]
        peer.stop()

    # The page showed each turn's state from ReplyOnPause's turn events, in order.
    cycle = ["listening", "thinking", "speaking", "waiting"]
    assert turns[:8] == cycle * 2, turns
    rate = audio.rate
    end_s = len(audio.remote) / rate
    said = utterances(audio, after_sample=audio.sample_at(session["connectedAt"]))
    pauses = [b for _, b in said]
    heard = analysis.active_intervals(audio.remote, rate, threshold_dbfs=-40, min_gap_s=0.1)
    beeps = beep_runs(audio)
    detail = f"sent speech {said}, heard {heard}, beeps {beeps}"
    assert len(pauses) >= 2, detail
    assert all(h0 > pauses[0] for h0, _ in heard), f"a reply before the first pause: {detail}"
    latencies, stalls = [], []
    for i, pause in enumerate(pauses):
        # Everything heard between this pause and the next one is this pause's reply.
        slot_end = pauses[i + 1] if i + 1 < len(pauses) else end_s
        parts = [h for h in heard if pause < h[0] <= slot_end]
        slot_beeps = [b for b in beeps if pause < b[0] <= slot_end]
        assert len(slot_beeps) <= 1, f"more than one reply to pause {i}: {detail}"
        spoken_s = (said[i][1] - said[i][0]) / 1.5  # the utterance, sped up 1.5x
        if pause + REPLY_WITHIN_S + spoken_s + 1.0 > end_s:
            continue  # too recent to require its whole reply
        assert parts and len(slot_beeps) == 1, f"no reply to pause {i}: {detail}"
        latencies.append(parts[0][0] - pause)
        assert latencies[-1] <= REPLY_WITHIN_S, f"reply {i} late: {detail}"
        # The reply is the chipmunked utterance, then one 0.2 s beep that ends it (it may
        # ring on ~0.3 s, fading: the server stops sending RTP after a reply and Chrome's
        # jitter buffer conceals the silence by extending the last sound).
        beep_start, beep_end = slot_beeps[0]
        assert all(h1 <= beep_end + 0.5 for _, h1 in parts), f"sound after reply {i}: {detail}"
        stalls.append(max([b0 - a1 for (_, a1), (b0, _) in itertools.pairwise(parts)] or [0]))
        took = beep_start - parts[0][0]
        assert spoken_s - 0.3 < took < spoken_s + 1.5, (i, took, spoken_s, detail)
    timings.record(
        "2 ReplyOnPause (reply-on-pause demo)",
        session,
        "voice",
        pauses=len(pauses),
        pause_to_reply_ms=[round(x * 1000) for x in latencies],
        longest_gap_in_reply_ms=[round(x * 1000) for x in stalls],
    )


def beep_runs(audio: Audio) -> list[tuple[float, float]]:
    """(start_s, end_s) of the demo's 880 Hz reply beeps in the received audio."""
    rate = audio.rate
    audible = analysis.energy_envelope(audio.remote, rate, window_s=0.02) > -40
    fraction = tone_fraction(audio.remote, rate, 880, rate // 50)
    n = min(len(audible), len(fraction))
    runs = _runs((fraction[:n] > 0.8) & audible[:n], min_length=1)
    merged: list[tuple[int, int]] = []
    for a, b in runs:  # concealment may dent the tail of a beep: bridge gaps of <= 60 ms
        if merged and a - merged[-1][1] <= 3:
            merged[-1] = (merged[-1][0], b)
        else:
            merged.append((a, b))
    return [(a / 50, b / 50) for a, b in merged if b - a >= 5]  # >= 100 ms


def _runs(flags: np.ndarray, min_length: int) -> list[tuple[int, int]]:
    """[start, end) index ranges where ``flags`` is true for at least ``min_length``."""
    runs = []
    start = None
    for i, flag in enumerate([*flags.tolist(), False]):
        if flag and start is None:
            start = i
        elif not flag and start is not None:
            if i - start >= min_length:
                runs.append((start, i))
            start = None
    return runs


@pytest.mark.timeout(60)
def test_receive_audio_started_by_button(open_peer: Callable[..., Peer], timings: Any) -> None:
    """Scenario 3: Generate starts the server's audio: 3 steps of 3 notes, in order and in
    tune; the stream then ends by itself."""
    steps = 3
    with launched(build_demo("receive-audio")) as url:
        peer = open_peer(url, name="listener")
        page = peer.page
        assert peer.state == "idle"
        assert peer.page.is_hidden(peer.el(".wr-start"))
        number = page.get_by_label("number input for Number of Steps")
        number.fill(str(steps))
        number.press("Enter")
        page.wait_for_function(
            "(n) => document.querySelector('input[aria-label=\"range slider for Number of "
            "Steps\"]').value === String(n)",
            arg=steps,
        )
        page.get_by_role("button", name="Generate").click()
        assert peer.wait_state("streaming", "error") == "streaming", peer.text(".wr-error")
        assert peer.wait_state("ended", "error", timeout=30) == "ended", peer.text(".wr-error")
        assert peer.attr("data-end-reason") == "handler_finished"
        audio = peer.audio()
        session = peer.session()

    rate = audio.rate
    heard = analysis.active_intervals(audio.remote, rate, threshold_dbfs=-40, min_gap_s=0.1)
    assert heard, "nothing was heard"
    onset, offset = heard[0][0], heard[-1][1]
    # 0.6 s per step; the jitter buffer may stretch or squeeze it a little.
    assert steps * 0.6 - 0.2 < offset - onset < steps * 0.6 + 0.6, heard
    # Each note, in semitones above 220 Hz: steps 0, 1, 2 play (0, 4, 7), (1, 5, 8), (2, 6, 9).
    expected = [step + k for step in range(steps) for k in (0, 4, 7)]
    measured = note_sequence(audio.remote[int(onset * rate) : int(offset * rate)], rate)
    assert measured == expected, (measured, expected)
    timings.record(
        "3 receive audio (button trigger)",
        session,
        "listener",
        heard_s=round(offset - onset, 2),
    )


@pytest.mark.timeout(90)
def test_additional_outputs_fill_the_chatbot(open_peer: Callable[..., Peer], timings: Any) -> None:
    """Scenario 6: one Chatbot message per turn, in turn order, none ever removed."""
    with launched(build_demo("additional-outputs")) as url:
        peer = open_peer(url, media="speech", name="talker")
        peer.page.evaluate(CHAT_LOG_JS)
        peer.start()
        assert peer.wait_state("streaming", "error") == "streaming", peer.text(".wr-error")
        poll(lambda: len(_chat(peer)) >= 2, 30, "two Chatbot messages")
        audio = peer.audio()
        history = peer.page.evaluate("() => window.__chatLog")
        session = peer.session()
        now = peer.now()
        peer.stop()

    messages = history[-1]["texts"]
    # Never cleared: every snapshot extends the previous one.
    for before, after in itertools.pairwise(history):
        assert after["texts"][: len(before["texts"])] == before["texts"], history
    said = utterances(audio, after_sample=audio.sample_at(session["connectedAt"]))
    recorded_until = len(audio.local) / audio.rate
    age = (now - audio.time_of(len(audio.local) - 1)) / 1000
    finished = [u for u in said if u[1] + 1.5 < recorded_until + age]
    assert len(finished) <= len(messages) <= len(said), (said, messages)
    for i, text in enumerate(messages):
        match = re.fullmatch(r"I heard ([0-9.]+) s of speech at (-?\d+) dBFS\.", text)
        assert match, text
        start, stop = said[i]
        assert abs(float(match.group(1)) - (stop - start)) < 0.25, (i, said, messages)
    first_message_ms = history[1]["at"] - session["startedAt"] if len(history) > 1 else None
    timings.record(
        "6 additional outputs (Chatbot)",
        session,
        "talker",
        messages=len(messages),
        first_output_ms=None if first_message_ms is None else round(first_message_ms, 1),
    )


def note_sequence(samples: np.ndarray, rate: int) -> list[int]:
    """The notes played, as semitones above 220 Hz, from 100 ms windows every 20 ms;
    a note counts once it holds for >= 60 ms (windows across two notes are ambiguous)."""
    window, hop = rate // 10, rate // 50
    labels: list[int | None] = []
    for start in range(0, len(samples) - window + 1, hop):
        chunk = samples[start : start + window]
        if analysis.level_dbfs(chunk) < -40:
            labels.append(None)
            continue
        semitone = 12 * np.log2(analysis.dominant_frequency(chunk, rate) / 220)
        nearest = round(semitone)
        labels.append(nearest if abs(semitone - nearest) < 0.3 else None)
    notes: list[int] = []
    for label, group in itertools.groupby(labels):
        if label is not None and len(list(group)) >= 3 and (not notes or notes[-1] != label):
            notes.append(label)
    return notes


CHAT_LOG_JS = """() => {
    const texts = () => Array.from(document.querySelectorAll('[data-testid="bot"]'))
        .map((m) => m.innerText.trim()).filter((t) => t);  // skip bubbles still rendering
    window.__chatLog = [{at: performance.now(), texts: texts()}];
    new MutationObserver(() => {
        const now = texts();
        const last = window.__chatLog[window.__chatLog.length - 1].texts;
        if (JSON.stringify(now) !== JSON.stringify(last))
            window.__chatLog.push({at: performance.now(), texts: now});
    }).observe(document.body, {subtree: true, childList: true, characterData: true});
}"""


def _chat(peer: Peer) -> list[str]:
    log = peer.page.evaluate("() => window.__chatLog")
    return list(log[-1]["texts"])
