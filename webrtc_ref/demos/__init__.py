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
    """A demo: the module that builds it, a one-line description (``webrtc-ref demo
    --list``) and ``about``: what it does and what to try, shown on its page."""

    module: str
    description: str
    about: str = ""


DEMOS: dict[str, Demo] = {
    "all": Demo("webrtc_ref.demos.index", "a page with one of each demo"),
    "reply-on-pause": Demo(
        "webrtc_ref.demos.reply_on_pause",
        "voice: replies when you pause (chipmunk echo)",
        "Waits until you stop talking, then answers with what you said, faster and higher, "
        "and a short beep. Press Start, say a sentence, pause for a second.",
    ),
    "echo-audio": Demo(
        "webrtc_ref.demos.echo_audio",
        "voice: the guide's EchoHandler",
        "Sends your microphone straight back. Press Start and speak (headphones avoid "
        "feedback); you hear yourself about a tenth of a second later.",
    ),
    "receive-audio": Demo(
        "webrtc_ref.demos.receive_audio",
        "server-to-client audio started by a button",
        "The server plays rising arpeggios, one per step; no microphone is needed. Pick a "
        "number of steps and press Generate; the stream ends by itself.",
    ),
    "echo-video": Demo(
        "webrtc_ref.demos.video_filter",
        "webcam in, filtered video out, slider-controlled",
        "Your webcam comes back with its edges outlined and the rest tinted. Press Start, "
        "then move the Confidence Threshold slider while it streams.",
    ),
    "receive-video": Demo(
        "webrtc_ref.demos.receive_video",
        "server-to-client video started by a button",
        "The server renders ten seconds of a moving test pattern; no camera is needed. "
        "Press Start.",
    ),
    "additional-outputs": Demo(
        "webrtc_ref.demos.additional_outputs",
        "voice turns described in a Chatbot",
        "Each thing you say, once you pause, is described (its length and loudness) in the "
        "chat beside the stream. Press Start, say a few sentences with pauses between.",
    ),
    "echo-av": Demo(
        "webrtc_ref.demos.echo_av",
        "camera and voice: mirrored picture with your level, echo",
        "Camera and microphone in one connection: your picture comes back mirrored with "
        "your voice's level drawn along the bottom, and your voice comes back as it is.",
    ),
    "av-turns": Demo(
        "webrtc_ref.demos.av_turns",
        "camera and voice: turn state drawn over your picture",
        "Talk, then pause: a banner over your mirrored picture shows LISTENING, THINKING "
        "and SPEAKING while the demo answers with your last sentence and a beep.",
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
    module = importlib.import_module(demo.module)
    if not demo.about:
        return module.build()
    import gradio as gr

    with gr.Blocks() as page:
        gr.Markdown(demo.about, elem_classes=["demo-about"])
        # A Blocks built inside a layout context renders there.
        page.title = module.build().title
    return page
