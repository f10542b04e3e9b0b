"""How the component sits in Gradio's frame, in Chromium and Firefox: the label's icon
says what the component captures, and a component inside a ``gr.Group`` has no frame of
its own (the Group draws one), while one outside has the theme's block border.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import gradio as gr
import pytest

from browser_tests.apps import identity
from browser_tests.helpers import Peer
from webrtc_ref import WebRTC
from webrtc_ref.demos.echo_audio import EchoHandler
from webrtc_ref.demos.echo_av import EchoAV
from webrtc_ref.testing import launched

pytestmark = [pytest.mark.browser, pytest.mark.slow]

FRAME_JS = """(root) => {
    const block = root.closest('.block');
    const svg = block.querySelector('[data-testid="block-label"] svg');
    const probe = document.createElement('div');
    probe.style.borderTop = 'var(--block-border-width) solid';
    block.parentElement.appendChild(probe);
    const theme = getComputedStyle(probe).borderTopWidth;
    probe.remove();
    return {border: getComputedStyle(block).borderTopWidth, theme,
            icon: svg ? svg.dataset.wrIcon || null : null,
            paths: svg ? svg.querySelectorAll('path').length : 0};
}"""


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    with gr.Blocks() as demo:
        with gr.Group():
            grouped = WebRTC(label="Grouped", modality="audio", elem_id="grouped")
        grouped.stream(EchoHandler(), inputs=[grouped], outputs=[grouped])
        alone = WebRTC(label="Alone", modality="video", elem_id="alone")
        alone.stream(identity, inputs=[alone], outputs=[alone])
        both = WebRTC(label="Both", modality="audio-video", elem_id="both")
        both.stream(EchoAV(), inputs=[both], outputs=[both])
    with launched(demo) as served:
        yield served


def check_frame(open_page: Callable[..., Peer], url: str) -> list[dict[str, Any]]:
    seen = []
    for elem, icon, in_group in (("grouped", "audio", True), ("alone", "video", False)):
        peer = open_page(url, root=f"#{elem} .webrtc-ref", name=elem)
        frame = peer.eval(FRAME_JS)
        assert frame["icon"] == icon, frame
        assert frame["paths"] == 1, frame
        if in_group:
            assert frame["border"] == "0px", frame  # the Group draws the frame
        else:
            assert frame["border"] == frame["theme"] != "0px", frame
        seen.append(frame)
    both = open_page(url, root="#both .webrtc-ref", name="both").eval(FRAME_JS)
    assert both["icon"] == "audio-video" and both["paths"] == 2, both
    return seen


def test_frame_and_label_icon_in_chromium(open_peer: Callable[..., Peer], url: str) -> None:
    check_frame(open_peer, url)


def test_frame_and_label_icon_in_firefox(open_firefox: Callable[..., Peer], url: str) -> None:
    check_frame(open_firefox, url)
