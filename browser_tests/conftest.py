"""Browser fixtures: Debian Chromium driven by Playwright, one BrowserContext per peer.

- ``executable_path``: the one place the Chromium binary is chosen (``WEBRTC_REF_CHROMIUM``,
  default ``/usr/bin/chromium``). Never ``playwright install``: no browser download is
  reachable; the ``browser`` nox session installs Debian's chromium with apt-get.
- ``chromium(media)``: one Chromium process per set of fake capture files (Chromium reads
  ``--use-file-for-fake-*-capture`` per process), launched on first use and kept for the
  session: ``tone`` (barcode video + audio signature 57) and ``speech`` (barcode video +
  the speech_pause_speech scenario). The files are built from ``fixtures`` into
  ``build/browser-media`` once.
- ``open_peer(url, ...)``: a new BrowserContext (mobile-ish 412x915 viewport) and page with
  ``probe.js`` installed, console messages kept and a Playwright trace recording. If the
  test fails, the trace, the console log, a screenshot and the probe's records are kept
  under ``build/browser-artifacts/<test>/``; the terminal summary prints where.
- ``open_firefox(url, ...)``: the same ``Peer`` in a window of Debian's Firefox ESR,
  driven over WebDriver BiDi (``browser_tests.bidi``), with Firefox's own fake devices.
- ``timings``: browser-measured times to connected / first media per scenario, printed at
  the end and written to ``build/browser-timings.json``.

Environment: ``WEBRTC_REF_CHROMIUM`` and ``WEBRTC_REF_FIREFOX`` (the browsers),
``WEBRTC_REF_TRACE=0`` (no Playwright traces), ``WEBRTC_REF_UPDATE_SCREENSHOTS=1``
(refresh docs/screenshots),
``WEBRTC_REF_TIMEOUT_SCALE`` (multiplies every deadline).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from browser_tests.bidi import DEFAULT_FIREFOX, Firefox
from browser_tests.helpers import (
    ARTIFACTS,
    PROBE_JS,
    TIMINGS_FILE,
    MediaSet,
    Peer,
    build_media,
    timing_of,
)

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
    # Receive-only pages would otherwise offer mDNS .local candidates and wait on them.
    "--disable-features=WebRtcHideLocalIpsWithMdns",
    # The in-process server only offers 127.0.0.1 candidates (root conftest.py).
    "--allow-loopback-in-peer-connection",
    # Several peers share one browser: keep every page running at full speed.
    "--disable-background-timer-throttling",
    "--disable-renderer-backgrounding",
    "--disable-backgrounding-occluded-windows",
]
VIEWPORT = {"width": 412, "height": 915}
TRACE = os.environ.get("WEBRTC_REF_TRACE", "1") != "0"
#: Set to 1 to refresh docs/screenshots/*.png from this run (otherwise only artifacts).
UPDATE_SCREENSHOTS = os.environ.get("WEBRTC_REF_UPDATE_SCREENSHOTS", "0") == "1"
DOCS_SCREENSHOTS = Path(__file__).resolve().parents[1] / "docs" / "screenshots"

_failed_artifacts: list[Path] = []
_timings: list[dict[str, Any]] = []
_report_key = pytest.StashKey[dict[str, pytest.TestReport]]()


def pytest_configure(config: pytest.Config) -> None:
    # Gradio's queue trips pandas deprecation warnings on every event; not ours to fix.
    config.addinivalue_line("filterwarnings", "ignore::DeprecationWarning:gradio.queueing")
    config.addinivalue_line("filterwarnings", "ignore:.*(no_silent_downcasting|copy keyword)")


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    item.stash.setdefault(_report_key, {})[report.when] = report
    return report


def _failed(node: pytest.Item) -> bool:
    reports = node.stash.get(_report_key, {})
    return any(r.failed for r in reports.values())


def _slug(nodeid: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", nodeid.split("::", 1)[-1])[:120]


# ----------------------------------------------------------------------------- browsers


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
def media() -> dict[str, MediaSet]:
    """The fake capture files, built from ``fixtures`` (cached in build/browser-media)."""
    return build_media()


@pytest.fixture(scope="session")
def playwright() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="session")
def chromium(
    playwright: Any, executable_path: str, media: dict[str, MediaSet]
) -> Iterator[Callable[[str], Any]]:
    """``chromium(name)``: the session's Chromium playing media set ``name``."""
    launched: dict[str, Any] = {}

    def get(name: str) -> Any:
        if name not in launched:
            launched[name] = playwright.chromium.launch(
                executable_path=executable_path,
                headless=True,
                args=[*CHROMIUM_ARGS, *media[name].chromium_args()],
            )
        return launched[name]

    try:
        yield get
    finally:
        for browser in launched.values():
            browser.close()


@pytest.fixture(scope="session")
def browser(chromium: Callable[[str], Any]) -> Any:
    """The Chromium playing the ``tone`` media set."""
    return chromium("tone")


@pytest.fixture(scope="session")
def firefox() -> Iterator[Firefox]:
    """Debian's Firefox ESR over WebDriver BiDi, with fake media (``browser_tests.bidi``),
    started on first use and kept for the session."""
    executable = os.environ.get("WEBRTC_REF_FIREFOX", DEFAULT_FIREFOX)
    missing = [b for b in (executable, "pulseaudio") if not shutil.which(b)]
    if missing:
        pytest.fail(
            f"the Firefox scenarios need {' and '.join(missing)} "
            "(the browser nox session installs firefox-esr and pulseaudio with apt-get)"
        )
    browser = Firefox(executable)
    try:
        yield browser
    finally:
        browser.close()


# ----------------------------------------------------------------------------- peers


@pytest.fixture
def artifacts(request: pytest.FixtureRequest) -> Path:
    """This test's artifact directory (created on demand; emptied of an earlier run's)."""
    path = ARTIFACTS / _slug(request.node.nodeid)
    shutil.rmtree(path, ignore_errors=True)
    return path


@pytest.fixture
def open_peer(
    request: pytest.FixtureRequest, chromium: Callable[[str], Any], artifacts: Path
) -> Iterator[Callable[..., Peer]]:
    """``open_peer(url, media="tone", root=".webrtc-ref", name=None)``: a new tab in its
    own BrowserContext, on ``url``, with the component's client loaded."""
    peers: list[Peer] = []

    def make(
        url: str, *, media: str = "tone", root: str = ".webrtc-ref", name: str | None = None
    ) -> Peer:
        context = chromium(media).new_context(viewport=VIEWPORT)
        context.add_init_script(script=PROBE_JS)
        if TRACE:
            context.tracing.start(screenshots=True, snapshots=True)
        page = context.new_page()
        peer = Peer(name or f"peer{len(peers) + 1}", context, page, root)
        page.on("console", lambda m: peer.console.append(f"[{m.type}] {m.text}"))
        page.on("pageerror", lambda e: peer.console.append(f"[pageerror] {e}"))
        peers.append(peer)
        peer.open(url)
        return peer

    yield make

    failed = _failed(request.node)
    for peer in peers:
        _close_peer(peer, artifacts if failed else None)
    if failed and artifacts.exists():
        _failed_artifacts.append(artifacts)


@pytest.fixture
def open_firefox(
    request: pytest.FixtureRequest, firefox: Firefox, artifacts: Path
) -> Iterator[Callable[..., Peer]]:
    """``open_firefox(url, root=".webrtc-ref", name=None)``: a new Firefox tab in its own
    user context, on ``url``, with the component's client loaded. A failed test keeps each
    tab's screenshot and console log under ``build/browser-artifacts/<test>/``."""
    peers: list[Peer] = []

    def make(url: str, *, root: str = ".webrtc-ref", name: str | None = None) -> Peer:
        peer = Peer(
            name=name or f"firefox{len(peers)}", context=None, page=firefox.new_page(), root=root
        )
        peers.append(peer)
        peer.open(url)
        # Opening Firefox's audio output for a page takes up to 2 s here (PulseAudio's
        # null sink), and it closes again with the page's last AudioContext. Keep one
        # open, so that the probe's audio tap, made when a stream starts, records from
        # the start.
        peer.page.evaluate(
            "async () => { window.__audioOutput = new AudioContext();"
            " await window.__audioOutput.resume(); }"
        )
        return peer

    yield make
    keep = artifacts if _failed(request.node) else None
    for peer in peers:
        if keep is not None:
            keep.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(Exception):
                peer.page.screenshot(str(keep / f"{peer.name}.png"))
            (keep / f"{peer.name}-console.txt").write_text(
                "\n".join(firefox.console(peer.page.context)), encoding="utf-8"
            )
            _failed_artifacts.append(keep)
        peer.page.close()


def _close_peer(peer: Peer, keep: Path | None) -> None:
    """Close the peer's context; with ``keep``, save its trace, console, screenshot, probe."""
    try:
        if keep is not None:
            keep.mkdir(parents=True, exist_ok=True)
            if not peer.page.is_closed():
                try:
                    peer.page.screenshot(path=str(keep / f"{peer.name}.png"))
                    sessions = peer.sessions()
                    (keep / f"{peer.name}-probe.json").write_text(json.dumps(sessions, indent=1))
                    _save_audio(peer, len(sessions), keep)
                except Exception as exc:  # the page may be wedged; keep what we can
                    peer.console.append(f"[artifacts] {exc!r}")
            (keep / f"{peer.name}-console.log").write_text("\n".join(peer.console) + "\n")
        if TRACE:
            if keep is not None:
                peer.context.tracing.stop(path=str(keep / f"{peer.name}-trace.zip"))
            else:
                peer.context.tracing.stop()
    finally:
        peer.context.close()


def _save_audio(peer: Peer, sessions: int, keep: Path) -> None:
    """Each recorded audio session as a stereo WAV: left = sent, right = received."""
    import numpy as np

    from fixtures.files import write_wav

    for index in range(sessions):
        try:
            audio = peer.audio(index)
        except AssertionError:
            continue  # not an audio session
        stereo = np.stack([audio.local, audio.remote], axis=1)
        write_wav(keep / f"{peer.name}-session{index}-sent-received.wav", stereo, audio.rate)


# ----------------------------------------------------------------------------- records


class Timings:
    """Browser-measured timings per scenario (see ``helpers.timing_of``)."""

    def record(
        self, scenario: str, session: dict[str, Any], peer: str = "", **extra: Any
    ) -> dict[str, Any]:
        row = {"scenario": scenario, "peer": peer, **timing_of(session), **extra}
        _timings.append(row)
        return row


@pytest.fixture(scope="session")
def timings() -> Timings:
    return Timings()


def save_screenshot(peer: Peer, demo: str) -> Path:
    """Screenshot of a demo: kept as an artifact; copied to docs/screenshots when
    WEBRTC_REF_UPDATE_SCREENSHOTS=1."""
    path = peer.screenshot(ARTIFACTS / "screenshots" / f"{demo}.png")
    if UPDATE_SCREENSHOTS:
        DOCS_SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, DOCS_SCREENSHOTS / f"{demo}.png")
    return path


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _timings:
        TIMINGS_FILE.parent.mkdir(parents=True, exist_ok=True)
        TIMINGS_FILE.write_text(json.dumps(_timings, indent=1) + "\n")


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: Any) -> None:
    if _timings:
        tr = terminalreporter
        tr.section("browser timings (ms from the starting click, measured in the page)")
        header = ("scenario", "peer", "connected", "1st RTP", "1st media")
        tr.write_line(f"{header[0]:44} {header[1]:10} {header[2]:>9} {header[3]:>8} {header[4]:>9}")

        def fmt(value: Any) -> str:
            return "-" if value is None else f"{value:.0f}"

        for row in _timings:
            tr.write_line(
                f"{row['scenario'][:44]:44} {row['peer'][:10]:10} {fmt(row['connected_ms']):>9} "
                f"{fmt(row['first_rtp_ms']):>8} {fmt(row['first_media_ms']):>9}"
            )
        tr.write_line(f"written to {TIMINGS_FILE}")
    if _failed_artifacts:
        terminalreporter.section("browser test artifacts (traces, console logs, screenshots)")
        for path in _failed_artifacts:
            terminalreporter.write_line(str(path))
        terminalreporter.write_line("open a trace with: playwright show-trace <trace.zip>")
