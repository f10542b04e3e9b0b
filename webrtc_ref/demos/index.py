"""The default demo: a page with one of each demo."""

from __future__ import annotations

import gradio as gr

from webrtc_ref._version import __version__


def build() -> gr.Blocks:
    """Build the index page."""
    with gr.Blocks(title="webrtc_ref demos") as demo:
        gr.Markdown(f"# webrtc_ref {__version__}\nReal-time audio and video with Gradio.")
    return demo
