"""Browser fixtures: Debian Chromium driven by Playwright, found in one place.

``WEBRTC_REF_CHROMIUM`` overrides the executable (default ``/usr/bin/chromium``). Never
``playwright install``: no browser download is reachable; the ``browser`` nox session
installs Debian's chromium with apt-get when missing.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
    "--autoplay-policy=no-user-gesture-required",
    "--disable-features=WebRtcHideLocalIpsWithMdns",
]


@pytest.fixture(scope="session")
def executable_path() -> str:
    """The Chromium executable every browser test uses."""
    path = os.environ.get("WEBRTC_REF_CHROMIUM", "/usr/bin/chromium")
    if not Path(path).exists():
        pytest.fail(
            f"Chromium not found at {path}; install it with "
            "'apt-get update && apt-get install -y chromium' or set WEBRTC_REF_CHROMIUM"
        )
    return path


@pytest.fixture(scope="session")
def browser(executable_path: str) -> Iterator[object]:
    """One headless Chromium for the whole session."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=executable_path, headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield chromium
        finally:
            chromium.close()
