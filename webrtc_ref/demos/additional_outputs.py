"""The user guide's "Additional Outputs" example, with an offline "model".

The guide transcribes with Qwen2-Audio; here ``transcribe`` describes each utterance
(duration and loudness) so the demo runs offline with no model download. Two changes
for Gradio 6: ``gr.Chatbot(type="messages")`` is just ``gr.Chatbot()`` (messages is the
only format), and the conversation lists are copied before appending (Gradio 6 may hand
the same list object to consecutive events).
"""

from __future__ import annotations

from collections.abc import Iterator

import gradio as gr
import numpy as np

from webrtc_ref import AdditionalOutputs, ReplyOnPause, WebRTC


def describe(audio: tuple[int, np.ndarray]) -> str:
    rate, array = audio
    samples = array.reshape(-1).astype(np.float64) / 32768
    seconds = len(samples) / rate
    rms = np.sqrt(np.mean(samples**2)) if len(samples) else 0.0
    level = 20 * np.log10(max(rms, 1e-9))
    return f"I heard {seconds:.1f} s of speech at {level:.0f} dBFS."


def transcribe(
    audio: tuple[int, np.ndarray], transformers_convo: list[dict], gradio_convo: list[dict]
) -> Iterator[AdditionalOutputs]:
    response = describe(audio)
    transformers_convo = [*transformers_convo, {"role": "assistant", "content": response}]
    gradio_convo = [*gradio_convo, {"role": "assistant", "content": response}]
    yield AdditionalOutputs(transformers_convo, gradio_convo)


def build() -> gr.Blocks:
    with gr.Blocks(title="Additional outputs") as demo:
        gr.HTML(
            """
            <h1 style='text-align: center'>
            Talk to an offline describer (Powered by WebRTC ⚡️)
            </h1>
            """
        )
        transformers_convo = gr.State(value=[])
        with gr.Row():
            with gr.Column():
                audio = WebRTC(label="Stream", mode="send", modality="audio")
            with gr.Column():
                transcript = gr.Chatbot(label="transcript")
        audio.stream(
            ReplyOnPause(transcribe),
            inputs=[audio, transformers_convo, transcript],
            outputs=[audio],
            time_limit=90,
        )
        audio.on_additional_outputs(
            lambda s, a: (s, a),
            outputs=[transformers_convo, transcript],
            queue=False,
            show_progress="hidden",
        )
    return demo


if __name__ == "__main__":
    build().launch()
