"""Audio and video together: your picture comes back mirrored with your voice's level
drawn onto it, and your voice comes back as it is.

One ``AudioVideoStreamHandler`` serves each connection: ``receive``/``emit`` echo the
audio through a queue (as the echo-audio demo does), ``video_receive``/``video_emit`` echo
the frames through another one, mirrored, with a level bar along the bottom edge. Audio
and video run on separate worker threads; the level is the one value they share.
"""

from __future__ import annotations

from queue import Empty, Full, Queue

import gradio as gr
import numpy as np

from webrtc_ref import AudioVideoStreamHandler, WebRTC

#: The level bar: -60 dBFS is empty, 0 dBFS full; its height is this share of the frame.
FLOOR_DBFS = -60.0
BAR_HEIGHT = 1 / 12
BAR_TRACK = (40, 40, 40)
BAR_FILL = (60, 220, 60)


def level_dbfs(samples: np.ndarray) -> float:
    """RMS level of int16 samples in dBFS (-inf for digital silence is floored)."""
    x = samples.astype(np.float64) / 32768
    rms = float(np.sqrt(np.mean(x * x))) if x.size else 0.0
    return max(FLOOR_DBFS, 20 * np.log10(rms)) if rms > 0 else FLOOR_DBFS


def draw_level(frame: np.ndarray, dbfs: float) -> np.ndarray:
    """``frame`` with a horizontal level bar along its bottom edge (drawn in place)."""
    height, width = frame.shape[:2]
    bar = max(4, round(height * BAR_HEIGHT))
    fraction = min(1.0, max(0.0, (dbfs - FLOOR_DBFS) / -FLOOR_DBFS))
    frame[height - bar :, :] = BAR_TRACK
    frame[height - bar :, : round(width * fraction)] = BAR_FILL
    return frame


class EchoAV(AudioVideoStreamHandler):
    def __init__(self) -> None:
        super().__init__()
        self.audio: Queue[tuple[int, np.ndarray]] = Queue()
        self.frames: Queue[np.ndarray] = Queue(maxsize=2)
        self.level = FLOOR_DBFS

    # audio: echoed unchanged; its level is measured on the way
    def receive(self, frame: tuple[int, np.ndarray]) -> None:
        level = level_dbfs(frame[1])
        # rises at once, falls back slowly (about 20 dB per second at 50 frames/s)
        self.level = max(level, self.level - 0.4)
        self.audio.put(frame)

    def emit(self) -> tuple[int, np.ndarray] | None:
        try:
            return self.audio.get(timeout=0.5)
        except Empty:
            return None

    # video: newest frame wins, mirrored, with the level drawn onto it
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
        return draw_level(np.ascontiguousarray(frame[:, ::-1]), self.level)

    def copy(self) -> EchoAV:
        return EchoAV()


def build() -> gr.Blocks:
    with gr.Blocks(title="Echo, audio and video") as demo:
        with gr.Column(), gr.Group():
            av = WebRTC(label="Echo", mode="send-receive", modality="audio-video")
        av.stream(fn=EchoAV(), inputs=[av], outputs=[av], time_limit=30)
    return demo


if __name__ == "__main__":
    build().launch()
