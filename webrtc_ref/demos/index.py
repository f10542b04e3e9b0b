"""The default demo: one of each demo on one page, in tabs, each tab saying what its demo
does and what to try (``webrtc_ref.demos.DEMOS``)."""

from __future__ import annotations

import importlib

import gradio as gr

from webrtc_ref._version import __version__

#: (tab title, demo name) in page order.
TABS: list[tuple[str, str]] = [
    ("Reply on pause", "reply-on-pause"),
    ("Echo", "echo-audio"),
    ("Server audio", "receive-audio"),
    ("Webcam filter", "echo-video"),
    ("Server video", "receive-video"),
    ("Additional outputs", "additional-outputs"),
    ("Echo, audio+video", "echo-av"),
    ("Turns, audio+video", "av-turns"),
]


def build() -> gr.Blocks:
    """Build the index page."""
    from webrtc_ref.demos import DEMOS

    overview = "\n".join(f"- **{title}**: {DEMOS[name].about}" for title, name in TABS)
    with gr.Blocks(title="webrtc_ref demos") as demo:
        gr.Markdown(
            f"# webrtc_ref {__version__}\nReal-time audio and video with Gradio. "
            f"Each tab is one demo:\n\n{overview}"
        )
        for title, name in TABS:
            with gr.Tab(title):
                gr.Markdown(DEMOS[name].about, elem_classes=["demo-about"])
                # A Blocks built inside a layout context renders there.
                importlib.import_module(DEMOS[name].module).build()
    return demo
