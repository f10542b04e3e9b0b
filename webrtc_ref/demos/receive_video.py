"""The user guide's server-to-client video example, generating its frames offline.

The guide reads a remote MP4 with OpenCV; here ``generation`` renders ten seconds of a
moving test pattern with numpy (any frame source works: PyAV's ``av.open(path).decode()``
yields frames that ``frame.to_ndarray(format="rgb24")`` turns into the same arrays).
"""

from __future__ import annotations

from collections.abc import Iterator

import gradio as gr
import numpy as np

from webrtc_ref import WebRTC

WIDTH, HEIGHT, FPS = 640, 360, 30


def frame_at(index: int) -> np.ndarray:
    """A colourful moving pattern: RGB uint8 (HEIGHT, WIDTH, 3)."""
    y, x = np.mgrid[0:HEIGHT, 0:WIDTH]
    t = index / FPS
    red = 128 + 127 * np.sin(x / 40 + 2 * t)
    green = 128 + 127 * np.sin(y / 30 - 3 * t)
    blue = 128 + 127 * np.sin((x + y) / 60 + t)
    frame = np.stack([red, green, blue], axis=2).astype(np.uint8)
    cx = int((WIDTH - 60) * (0.5 + 0.5 * np.sin(t)))
    frame[HEIGHT // 2 - 30 : HEIGHT // 2 + 30, cx : cx + 60] = 255
    return frame


def generation() -> Iterator[np.ndarray]:
    for index in range(10 * FPS):
        yield frame_at(index)


def build() -> gr.Blocks:
    with gr.Blocks(title="Server-to-client video") as demo:
        output_video = WebRTC(label="Video Stream", mode="receive", modality="video")
        button = gr.Button("Start", variant="primary")
        output_video.stream(
            fn=generation, inputs=None, outputs=[output_video], trigger=button.click
        )
    return demo


if __name__ == "__main__":
    build().launch()
