"""The user guide's server-to-client audio example, generating its audio offline.

The guide loads ``audio_file.wav`` with pydub; here each step is a synthesised phrase
(a rising arpeggio), made with numpy, so the demo needs no files or extra packages.
"""

from __future__ import annotations

from collections.abc import Iterator

import gradio as gr
import numpy as np

from webrtc_ref import WebRTC

SAMPLE_RATE = 24000


def phrase(step: int) -> np.ndarray:
    """0.6 s of three notes, a semitone higher per step; int16 (1, N)."""
    notes = []
    for k in (0, 4, 7):
        freq = 220 * 2 ** ((step + k) / 12)
        t = np.arange(int(0.2 * SAMPLE_RATE)) / SAMPLE_RATE
        envelope = np.minimum(1, np.minimum(t, t[::-1]) / 0.01)
        notes.append(0.3 * np.sin(2 * np.pi * freq * t) * envelope)
    return (np.concatenate(notes) * 32767).astype(np.int16).reshape(1, -1)


def generation(num_steps: int) -> Iterator[tuple[int, np.ndarray]]:
    for step in range(int(num_steps)):
        yield (SAMPLE_RATE, phrase(step))


def build() -> gr.Blocks:
    with gr.Blocks(title="Server-to-client audio") as demo:
        audio = WebRTC(label="Stream", mode="receive", modality="audio")
        num_steps = gr.Slider(label="Number of Steps", minimum=1, maximum=10, step=1, value=5)
        button = gr.Button("Generate")
        audio.stream(fn=generation, inputs=[num_steps], outputs=[audio], trigger=button.click)
    return demo


if __name__ == "__main__":
    build().launch()
