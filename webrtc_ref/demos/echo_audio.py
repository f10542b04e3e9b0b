"""The user guide's "Stream Handler" example: echo the user's audio back.

Only the import differs from the guide (``from webrtc_ref import ...``).
"""

from __future__ import annotations

from queue import Queue

import gradio as gr
import numpy as np

from webrtc_ref import StreamHandler, WebRTC


class EchoHandler(StreamHandler):
    def __init__(self) -> None:
        super().__init__()
        self.queue: Queue[tuple[int, np.ndarray]] = Queue()

    def receive(self, frame: tuple[int, np.ndarray]) -> None:
        self.queue.put(frame)

    def emit(self) -> tuple[int, np.ndarray]:
        return self.queue.get()

    def copy(self) -> StreamHandler:
        return EchoHandler()


def build() -> gr.Blocks:
    with gr.Blocks(title="Echo (StreamHandler)") as demo:
        with gr.Column(), gr.Group():
            audio = WebRTC(label="Echo", mode="send-receive", modality="audio")
        audio.stream(fn=EchoHandler(), inputs=[audio], outputs=[audio], time_limit=15)
    return demo


if __name__ == "__main__":
    build().launch()
