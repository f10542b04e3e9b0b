"""Turn-taking on audio and video: the turn's state is drawn over your mirrored picture.

Speak, then pause: the handler notices the pause from the microphone's energy, "thinks"
for a moment and answers with your last utterance played back, then a short beep. The
returned video shows the state as a coloured banner with its name: LISTENING (blue),
THINKING (amber), SPEAKING (green), YOUR TURN (grey). The same turn events go to the
browser as data-channel "log" messages, so the widget's turn line follows them too.
Everything runs offline: the pause detection is a simple energy threshold, the drawing
is numpy.
"""

from __future__ import annotations

import threading
import time
from queue import Empty, Full, Queue

import gradio as gr
import numpy as np

from webrtc_ref import AudioVideoStreamHandler, WebRTC

#: A 20 ms frame louder than this is speech.
SPEECH_DBFS = -40.0
#: Speech for this long (within the last START_WINDOW_S) starts a turn.
START_SPEECH_S = 0.2
START_WINDOW_S = 0.3
#: Silence for this long ends the turn.
PAUSE_S = 0.6
#: How long the handler "thinks" before it answers.
THINK_S = 0.4
#: Longest utterance kept (a turn is forced after it).
MAX_UTTERANCE_S = 15.0

#: state -> (banner text, banner colour RGB, turn event sent on entering it)
STATES: dict[str, tuple[str, tuple[int, int, int], str]] = {
    "waiting": ("YOUR TURN", (110, 110, 110), "response_finished"),
    "listening": ("LISTENING", (30, 110, 255), "started_talking"),
    "thinking": ("THINKING", (255, 170, 0), "pause_detected"),
    "speaking": ("SPEAKING", (20, 190, 70), "response_starting"),
}

# A 5x7 pixel font for the banner texts.
GLYPHS: dict[str, tuple[str, ...]] = {
    " ": (".....",) * 7,
    "A": (".###.", "#...#", "#...#", "#####", "#...#", "#...#", "#...#"),
    "E": ("#####", "#....", "#....", "####.", "#....", "#....", "#####"),
    "G": (".###.", "#...#", "#....", "#.###", "#...#", "#...#", ".###."),
    "H": ("#...#", "#...#", "#...#", "#####", "#...#", "#...#", "#...#"),
    "I": (".###.", "..#..", "..#..", "..#..", "..#..", "..#..", ".###."),
    "K": ("#...#", "#..#.", "#.#..", "##...", "#.#..", "#..#.", "#...#"),
    "L": ("#....", "#....", "#....", "#....", "#....", "#....", "#####"),
    "N": ("#...#", "##..#", "#.#.#", "#..##", "#...#", "#...#", "#...#"),
    "O": (".###.", "#...#", "#...#", "#...#", "#...#", "#...#", ".###."),
    "P": ("####.", "#...#", "#...#", "####.", "#....", "#....", "#...."),
    "R": ("####.", "#...#", "#...#", "####.", "#.#..", "#..#.", "#...#"),
    "S": (".####", "#....", "#....", ".###.", "....#", "....#", "####."),
    "T": ("#####", "..#..", "..#..", "..#..", "..#..", "..#..", "..#.."),
    "U": ("#...#", "#...#", "#...#", "#...#", "#...#", "#...#", ".###."),
    "Y": ("#...#", "#...#", ".#.#.", "..#..", "..#..", "..#..", "..#.."),
}


def text_mask(text: str, scale: int) -> np.ndarray:
    """A boolean image of ``text`` in the 5x7 font, each font pixel ``scale`` pixels."""
    columns = []
    for char in text:
        glyph = np.array([[c == "#" for c in row] for row in GLYPHS[char]])
        columns.extend([glyph, np.zeros((7, 1), bool)])
    mask = np.concatenate(columns[:-1], axis=1)
    return np.kron(mask, np.ones((scale, scale), bool)).astype(bool)


def draw_state(frame: np.ndarray, state: str) -> np.ndarray:
    """``frame`` with the state's banner across its top (drawn in place)."""
    text, colour, _ = STATES[state]
    height, width = frame.shape[:2]
    banner = max(12, height // 6)
    scale = max(1, min((banner - 4) // 7, (width - 8) // (6 * len(text))))
    frame[:banner] = colour
    mask = text_mask(text, scale)
    top = (banner - mask.shape[0]) // 2
    left = max(0, (width - mask.shape[1]) // 2)
    region = frame[top : top + mask.shape[0], left : left + mask.shape[1]]
    region[mask[: region.shape[0], : region.shape[1]]] = (255, 255, 255)
    return frame


def beep(rate: int, seconds: float = 0.2, freq: float = 660.0) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (0.2 * 32767 * np.sin(2 * np.pi * freq * t)).astype(np.int16)


class TurnsAV(AudioVideoStreamHandler):
    """Energy-based turn-taking on the audio; the state drawn on the mirrored video."""

    def __init__(self) -> None:
        super().__init__()
        self.lock = threading.Lock()
        self.state = "waiting"
        self.recent: list[bool] = []  # speech flags of the last START_WINDOW_S
        self.utterance: list[np.ndarray] = []
        self.rate = 48000
        self.silent_s = 0.0
        self.think_until = 0.0
        self.speak_until = 0.0
        self.reply: tuple[int, np.ndarray] | None = None
        self.frames: Queue[np.ndarray] = Queue(maxsize=2)

    def _enter(self, state: str) -> None:
        self.state = state
        self.send_message({"type": "log", "data": STATES[state][2]})

    def receive(self, frame: tuple[int, np.ndarray]) -> None:
        rate, array = frame
        samples = array.reshape(-1)
        duration = len(samples) / rate
        x = samples.astype(np.float64) / 32768
        loud = 20 * np.log10(float(np.sqrt(np.mean(x * x))) + 1e-9) > SPEECH_DBFS
        now = time.monotonic()
        with self.lock:
            self.rate = rate
            self.recent = [*self.recent, loud][-max(1, round(START_WINDOW_S / duration)) :]
            if self.state == "waiting":
                self.utterance = [*self.utterance, samples][-round(START_WINDOW_S / duration) :]
                if sum(self.recent) * duration >= START_SPEECH_S:
                    self.silent_s = 0.0
                    self._enter("listening")
            elif self.state == "listening":
                self.utterance.append(samples)
                self.silent_s = 0.0 if loud else self.silent_s + duration
                spoken = len(self.utterance) * duration
                if self.silent_s >= PAUSE_S or spoken >= MAX_UTTERANCE_S:
                    self.think_until = now + THINK_S
                    self._enter("thinking")
            elif self.state == "thinking" and now >= self.think_until:
                speech = np.concatenate(self.utterance)
                cut = len(speech) - round(self.silent_s * rate)  # the pause is not replayed
                answer = np.concatenate([speech[: max(0, cut)], beep(rate)])
                self.reply = (rate, answer.reshape(1, -1))
                self.speak_until = now + len(answer) / rate
                self.utterance = []
                self._enter("speaking")
            elif self.state == "speaking" and now >= self.speak_until:
                self.recent = []
                self._enter("waiting")

    def emit(self) -> tuple[int, np.ndarray] | None:
        with self.lock:
            reply, self.reply = self.reply, None
        return reply

    def video_receive(self, frame: np.ndarray) -> None:
        try:
            self.frames.put_nowait(frame)
        except Full:
            try:
                self.frames.get_nowait()
            except Empty:
                pass
            self.frames.put_nowait(frame)

    def video_emit(self) -> np.ndarray | None:
        try:
            frame = self.frames.get(timeout=0.1)
        except Empty:
            return None
        with self.lock:
            state = self.state
        return draw_state(np.ascontiguousarray(frame[:, ::-1]), state)

    def copy(self) -> TurnsAV:
        return TurnsAV()


def build() -> gr.Blocks:
    with gr.Blocks(title="Turns on audio and video") as demo:
        with gr.Column(), gr.Group():
            av = WebRTC(label="Talk to the camera", mode="send-receive", modality="audio-video")
        av.stream(fn=TurnsAV(), inputs=[av], outputs=[av], time_limit=60)
    return demo


if __name__ == "__main__":
    build().launch()
