"""The user guide's webcam input/output example, with a real offline filter.

``detection`` outlines edges (a Sobel filter in numpy) and tints everything whose edge
strength is below ``conf_threshold``; move the slider while streaming to see it change.
"""

from __future__ import annotations

import gradio as gr
import numpy as np

from webrtc_ref import WebRTC


def detection(image: np.ndarray, conf_threshold: float = 0.3) -> np.ndarray:
    """RGB uint8 (H, W, 3) in, RGB uint8 (H, W, 3) out."""
    grey = image.astype(np.float32).mean(axis=2)
    gx = np.zeros_like(grey)
    gy = np.zeros_like(grey)
    gx[:, 1:-1] = grey[:, 2:] - grey[:, :-2]
    gy[1:-1, :] = grey[2:, :] - grey[:-2, :]
    strength = np.hypot(gx, gy) / 360.0
    modified_frame = image.copy()
    edges = strength >= conf_threshold
    modified_frame[edges] = (0, 255, 0)
    modified_frame[~edges] = (modified_frame[~edges] * 0.6).astype(np.uint8)
    return modified_frame


def build() -> gr.Blocks:
    with gr.Blocks(title="Webcam filter") as demo:
        image = WebRTC(label="Stream", mode="send-receive", modality="video")
        conf_threshold = gr.Slider(
            label="Confidence Threshold", minimum=0.0, maximum=1.0, step=0.05, value=0.30
        )
        image.stream(fn=detection, inputs=[image, conf_threshold], outputs=[image], time_limit=10)
    return demo


if __name__ == "__main__":
    build().launch()
