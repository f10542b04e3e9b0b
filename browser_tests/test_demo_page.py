"""The demo page renders in real Chromium."""

from __future__ import annotations

from typing import Any

from webrtc_ref import __version__
from webrtc_ref.demos import build_demo
from webrtc_ref.testing import launched


def test_default_demo_renders(browser: Any) -> None:
    """Gradio's frontend loads and renders the default demo's heading."""
    with launched(build_demo("all")) as url:
        context = browser.new_context()
        try:
            page = context.new_page()
            page.goto(url, wait_until="domcontentloaded")
            heading = page.get_by_role("heading", name=f"webrtc_ref {__version__}")
            heading.wait_for(timeout=20_000)
            assert heading.is_visible()
        finally:
            context.close()
