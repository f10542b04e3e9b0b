"""The user guide's "Reply on Pause" example, with a real offline reply.

``response`` gets the whole utterance once the user pauses and answers with it played
back faster and higher (a chipmunk echo) followed by a short confirmation tone. Only the
import differs from the guide.
"""

from __future__ import annotations

from collections.abc import Iterator

import gradio as gr
import numpy as np

from webrtc_ref import ReplyOnPause, WebRTC


def chipmunk(samples: np.ndarray, factor: float = 1.5) -> np.ndarray:
    """Speed ``samples`` (1-D int16) up by ``factor`` (pitch rises with it)."""
    positions = np.arange(0, len(samples) - 1, factor)
    return np.interp(positions, np.arange(len(samples)), samples).astype(np.int16)


def response(audio: tuple[int, np.ndarray]) -> Iterator[tuple[int, np.ndarray, str]]:
    """Reply to the user's utterance: (rate, int16 (1, N)) in, 20 ms chunks out."""
    sampling_rate, array = audio
    reply = chipmunk(array.reshape(-1))
    chunk = sampling_rate // 50
    for start in range(0, len(reply), chunk):
        yield (sampling_rate, reply[start : start + chunk].reshape(1, -1), "mono")
    t = np.arange(sampling_rate // 5) / sampling_rate
    beep = (0.2 * 32767 * np.sin(2 * np.pi * 880 * t)).astype(np.int16)
    yield (sampling_rate, beep.reshape(1, -1), "mono")


def build() -> gr.Blocks:
    with gr.Blocks(title="Reply on Pause") as demo:
        gr.HTML(
            """
            <h1 style='text-align: center'>
            Chat (Powered by WebRTC ⚡️)
            </h1>
            """
        )
        with gr.Column(), gr.Group():
            audio = WebRTC(mode="send-receive", modality="audio")
        audio.stream(fn=ReplyOnPause(response), inputs=[audio], outputs=[audio], time_limit=60)
    return demo


if __name__ == "__main__":
    build().launch()
