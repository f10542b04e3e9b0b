"""The demo apps: every example of the user guide, completed with offline processing.

Each demo is a module with a ``build() -> gradio.Blocks`` function. ``webrtc-ref demo NAME``
launches one; ``build_demo(NAME)`` builds it for tests.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import gradio as gr


@dataclass(frozen=True)
class Demo:
    """A demo: the module that builds it and a one-line description."""

    module: str
    description: str


DEMOS: dict[str, Demo] = {
    "all": Demo("webrtc_ref.demos.index", "a page with one of each demo"),
    "reply-on-pause": Demo(
        "webrtc_ref.demos.reply_on_pause", "voice: replies when you pause (chipmunk echo)"
    ),
    "echo-audio": Demo("webrtc_ref.demos.echo_audio", "voice: the guide's EchoHandler"),
    "receive-audio": Demo(
        "webrtc_ref.demos.receive_audio", "server-to-client audio started by a button"
    ),
    "echo-video": Demo(
        "webrtc_ref.demos.video_filter", "webcam in, filtered video out, slider-controlled"
    ),
    "receive-video": Demo(
        "webrtc_ref.demos.receive_video", "server-to-client video started by a button"
    ),
    "additional-outputs": Demo(
        "webrtc_ref.demos.additional_outputs", "voice turns described in a Chatbot"
    ),
    "echo-av": Demo(
        "webrtc_ref.demos.echo_av", "camera and voice: mirrored picture with your level, echo"
    ),
    "av-turns": Demo(
        "webrtc_ref.demos.av_turns", "camera and voice: turn state drawn over your picture"
    ),
}

DEFAULT_DEMO = "all"


class UnknownDemoError(ValueError):
    """Raised for a demo name that is not in :data:`DEMOS`."""


def build_demo(name: str) -> gr.Blocks:
    """Build the demo called ``name``; raise :class:`UnknownDemoError` listing valid names."""
    demo = DEMOS.get(name)
    if demo is None:
        valid = ", ".join(DEMOS)
        raise UnknownDemoError(f"unknown demo {name!r}; valid demos: {valid}")
    return importlib.import_module(demo.module).build()
