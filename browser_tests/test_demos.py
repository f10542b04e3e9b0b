"""Every demo of ``webrtc-ref demo NAME`` renders in Chromium, streams, and is
photographed in a mobile-sized viewport (412x915): ``build/browser-artifacts/screenshots``
always, ``docs/screenshots`` with WEBRTC_REF_UPDATE_SCREENSHOTS=1. ``docs/demos.md``
must describe each demo with its command and screenshot.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from browser_tests.conftest import DOCS_SCREENSHOTS, save_screenshot
from browser_tests.helpers import Peer, poll
from webrtc_ref import __version__
from webrtc_ref.demos import DEMOS, build_demo
from webrtc_ref.testing import launched

pytestmark = [pytest.mark.browser, pytest.mark.slow]

DEMOS_DOC = Path(__file__).resolve().parents[1] / "docs" / "demos.md"

#: name -> (media set, how the stream starts: "start" = the component's Start button,
#: else the label of the trigger button; None = the index page, which is only rendered)
PLAN: dict[str, tuple[str, str | None]] = {
    "all": ("tone", None),
    "reply-on-pause": ("speech", "start"),
    "echo-audio": ("tone", "start"),
    "receive-audio": ("tone", "Generate"),
    "echo-video": ("tone", "start"),
    "receive-video": ("tone", "Start"),
    "additional-outputs": ("speech", "start"),
    "echo-av": ("tone", "start"),
    "av-turns": ("speech", "start"),
}


def test_plan_covers_every_demo() -> None:
    assert set(PLAN) == set(DEMOS)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("name", list(PLAN))
def test_demo_streams_and_screenshot(
    name: str, open_peer: Callable[..., Peer], timings: Any
) -> None:
    """The demo renders; its stream starts and delivers media; then it is photographed."""
    media, starter = PLAN[name]
    with launched(build_demo(name)) as url:
        peer = open_peer(url, media=media, name=name)
        page = peer.page
        if starter is None:
            heading = page.get_by_role("heading", name=f"webrtc_ref {__version__}")
            assert heading.is_visible()
            # A phone-sized viewport shows the first tabs and folds the rest into a menu.
            tabs = page.get_by_role("tab")
            poll(lambda: tabs.count() >= 2, 10, "the demo tabs")
            assert tabs.first.inner_text().strip() == "Reply on pause"
            assert page.locator(".webrtc-ref").first.is_visible()
            config_tabs = page.evaluate(
                "() => window.gradio_config.components"
                ".filter((c) => c.type === 'tabitem').map((c) => c.props.label)"
            )
            assert config_tabs == [
                "Reply on pause",
                "Echo",
                "Server audio",
                "Webcam filter",
                "Server video",
                "Additional outputs",
                "Echo, audio+video",
                "Turns, audio+video",
            ], config_tabs
            save_screenshot(peer, name)
            return
        if starter == "start":
            peer.start()
        else:
            page.get_by_role("button", name=starter, exact=True).click()
        assert peer.wait_state("streaming", "error") == "streaming", peer.text(".wr-error")
        if name == "additional-outputs":
            poll(
                lambda: page.locator('[data-testid="bot"]').count() >= 1,
                20,
                "a Chatbot message",
            )
            session = peer.session()
        else:
            # reply-on-pause: the first reply comes after the first utterance (~4 s).
            session = peer.wait_first_media(timeout=20)
        if peer.attr("data-modality") in ("video", "audio-video"):
            poll(lambda: peer.session()["frames"] >= 15, 10, "half a second of video")
        save_screenshot(peer, name)
        peer.stop()
        assert peer.wait_state("idle", "ended") in ("idle", "ended")
    timings.record(f"demo {name}", session, name)


def test_demos_doc_lists_every_demo() -> None:
    """docs/demos.md: a section per demo with its command and screenshot, which exists."""
    text = DEMOS_DOC.read_text(encoding="utf-8")
    for name in DEMOS:
        command = "webrtc-ref demo" if name == "all" else f"webrtc-ref demo {name}"
        assert re.search(rf"^## .*`{re.escape(name)}`", text, re.M), f"no section for {name}"
        assert command in text, command
        assert f"screenshots/{name}.png" in text, name
        assert (DOCS_SCREENSHOTS / f"{name}.png").is_file(), f"missing screenshot of {name}"
