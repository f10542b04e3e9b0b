"""The default demo: one of each demo on one page, in tabs."""

from __future__ import annotations

import importlib

import gradio as gr

from webrtc_ref._version import __version__

TABS: list[tuple[str, str]] = [
    ("Reply on pause", "reply_on_pause"),
    ("Echo", "echo_audio"),
    ("Server audio", "receive_audio"),
    ("Webcam filter", "video_filter"),
    ("Server video", "receive_video"),
    ("Additional outputs", "additional_outputs"),
    ("Echo, audio+video", "echo_av"),
    ("Turns, audio+video", "av_turns"),
]


def build() -> gr.Blocks:
    """Build the index page."""
    with gr.Blocks(title="webrtc_ref demos") as demo:
        gr.Markdown(f"# webrtc_ref {__version__}\nReal-time audio and video with Gradio.")
        for title, module in TABS:
            with gr.Tab(title):
                # A Blocks built inside a layout context renders there.
                importlib.import_module(f"webrtc_ref.demos.{module}").build()
    return demo
