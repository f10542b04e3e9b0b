"""Lifecycle scenarios in Chromium against the lifecycle app (``apps.lifecycle_app``),
three video echo streams fed with the barcode fixture:

7. ``time_limit``: the stream ends on time and the page says so;
8. ``concurrency_limit=1``: a second tab is refused with the server's message, gets in once
   the first stopped, and stop-then-start in one tab works at once;
   a tab that vanishes without saying goodbye (tab closed / peer connection closed, no
   ``stop`` message) frees its slot within ~2 s;
9. a handler that raises: that page shows the error while another tab keeps streaming.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from browser_tests.apps import EXPLOSION, TIME_LIMIT, lifecycle_app
from browser_tests.helpers import Peer, assert_in_order, frame_ids, poll
from webrtc_ref import WebRTC
from webrtc_ref.testing import launched

pytestmark = [pytest.mark.browser, pytest.mark.slow]

LIMITED = "#limited .webrtc-ref"


@pytest.fixture(scope="module")
def lifecycle() -> Iterator[tuple[str, dict[str, WebRTC]]]:
    demo, components = lifecycle_app()
    with launched(demo) as url:
        yield url, components


def connections(component: WebRTC) -> int:
    server = component.stream_server
    assert server is not None
    return len(server)


def wait_slots_free(component: WebRTC, timeout: float = 5.0) -> float:
    """Seconds until the component's stream has no connection left."""
    t0 = time.monotonic()
    poll(lambda: connections(component) == 0, timeout, "the server to free every slot", 0.01)
    return time.monotonic() - t0


def start_streaming(peer: Peer) -> dict[str, Any]:
    """Start, and wait until connected and a remote frame was shown; return the session."""
    peer.start()
    assert peer.wait_state("streaming", "error") == "streaming", peer.text(".wr-error")
    return peer.wait_first_media()


def assert_frames_advance(peer: Peer, count: int = 20) -> list[int]:
    """The next ``count`` frames shown carry readable barcode ids, in order."""
    return assert_in_order(frame_ids(peer.capture_frames(count)))


@pytest.mark.timeout(60)
def test_time_limit_ends_the_stream_on_time(
    open_peer: Callable[..., Peer], timings: Any, lifecycle: tuple[str, dict[str, WebRTC]]
) -> None:
    """Scenario 7: the stream ends ``time_limit`` s after connecting, and the page says why."""
    url, components = lifecycle
    peer = open_peer(url, root="#timed .webrtc-ref", name="timed")
    session = start_streaming(peer)
    assert peer.page.is_visible(peer.el(".wr-timebar"))
    assert peer.text(".wr-timebar-label").endswith("s left")
    assert peer.wait_state("ended", "error", timeout=TIME_LIMIT + 10) == "ended"
    ended = peer.session()
    assert ended["endReason"] == "time_limit"
    assert ended["statusText"] == f"Time limit reached ({TIME_LIMIT:g} s)."
    lasted = (ended["endedAt"] - ended["connectedAt"]) / 1000
    assert TIME_LIMIT - 0.3 <= lasted <= TIME_LIMIT + 1.0, lasted
    # Media flowed until the end, not just a connection.
    assert ended["frames"] > 20 * (TIME_LIMIT - 1), ended["frames"]
    assert ended["endedAt"] - ended["lastFrameAt"] < 500, ended
    assert peer.page.is_hidden(peer.el(".wr-timebar"))
    assert peer.page.is_visible(peer.el(".wr-start"))
    wait_slots_free(components["timed"])
    timings.record("7 time_limit", session, "timed", lasted_s=round(lasted, 2))


@pytest.mark.timeout(90)
def test_concurrency_limit_one(
    open_peer: Callable[..., Peer], timings: Any, lifecycle: tuple[str, dict[str, WebRTC]]
) -> None:
    """Scenario 8: one connection at a time; the second tab waits its turn; restart works."""
    url, components = lifecycle
    limited = components["limited"]
    first = open_peer(url, root=LIMITED, name="first")
    second = open_peer(url, root=LIMITED, name="second")

    session = start_streaming(first)
    assert_frames_advance(first)
    timings.record("8 concurrency: first tab", session, "first")

    second.start()
    assert second.wait_state("error", "streaming") == "error"
    assert second.attr("data-error-code") == "concurrency_limit_reached"
    refused = second.text(".wr-error")
    assert "Too many concurrent connections (limit 1)" in refused, refused
    assert connections(limited) == 1

    first.stop()
    assert first.wait_state("idle") == "idle"
    freed_s = wait_slots_free(limited)
    session = start_streaming(second)
    assert_frames_advance(second)
    timings.record("8 concurrency: second tab", session, "second", freed_after_stop_s=freed_s)

    # Stop then Start at once: the new offer may reach the server before the old slot is
    # freed; the client retries and gets in.
    second.stop()
    second.start()
    assert second.wait_state("streaming", "error") == "streaming", second.text(".wr-error")
    session = second.wait_first_media()
    assert_frames_advance(second)
    assert connections(limited) == 1
    timings.record("8 concurrency: stop-then-start", session, "second")
    second.stop()
    wait_slots_free(limited)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("how", ["close_tab", "close_peer_connection"])
def test_vanished_client_frees_its_slot(
    open_peer: Callable[..., Peer],
    timings: Any,
    lifecycle: tuple[str, dict[str, WebRTC]],
    how: str,
) -> None:
    """Without the client's ``stop`` message, the server notices the browser closed the
    peer connection (DTLS / SCTP transports closed) and frees the slot within ~2 s."""
    url, components = lifecycle
    limited = components["limited"]
    gone = open_peer(url, root=LIMITED, name="gone")
    start_streaming(gone)
    assert connections(limited) == 1
    # No goodbye: the data channel silently drops what the client sends from now on.
    gone.eval("(root) => { root.__webrtc.dc.send = () => {}; }")
    closed = time.monotonic()
    if how == "close_tab":
        gone.page.close()
    else:
        gone.eval("(root) => root.__webrtc.pc.close()")
    wait_slots_free(limited, timeout=10)
    freed_s = time.monotonic() - closed
    assert freed_s < 2.0, freed_s

    after = open_peer(url, root=LIMITED, name="after")
    session = start_streaming(after)
    assert_frames_advance(after, 10)
    after.stop()
    timings.record(f"8 slot freed after {how}", session, "after", freed_s=round(freed_s, 2))


@pytest.mark.timeout(60)
def test_handler_error_is_shown_and_other_tab_keeps_streaming(
    open_peer: Callable[..., Peer], timings: Any, lifecycle: tuple[str, dict[str, WebRTC]]
) -> None:
    """Scenario 9: the raising connection's page shows the error; the other streams on."""
    url, components = lifecycle
    fragile = components["fragile"]
    steady = open_peer(url, root="#fragile .webrtc-ref", name="steady")
    doomed = open_peer(url, root="#fragile .webrtc-ref", name="doomed")
    session = start_streaming(steady)
    doomed_session = start_streaming(doomed)
    assert_frames_advance(doomed, 10)
    assert connections(fragile) == 2

    doomed.page.locator("#explode input[type=checkbox]").check()
    ticked_at = doomed.page.evaluate("() => window.__probe.lastClickAt")
    assert doomed.wait_state("error", "ended") == "error"
    assert doomed.attr("data-error-code") == "handler_error"
    shown = doomed.text(".wr-error")
    assert f"RuntimeError: {EXPLOSION}" in shown, shown
    assert doomed.session()["endReason"] == "error"

    # The other tab's connection is untouched: new frames keep coming, in order.
    assert steady.state == "streaming"
    error_at = doomed.session()["endedAt"]
    frames_before = steady.session()["frames"]
    assert_frames_advance(steady, 30)
    assert steady.session()["frames"] >= frames_before + 30
    assert steady.state == "streaming"
    poll(lambda: connections(fragile) == 1, 5, "the failed connection to be released")
    steady.stop()
    wait_slots_free(fragile)
    timings.record("9 handler error: steady tab", session, "steady")
    timings.record(
        "9 handler error: failing tab",
        doomed_session,
        "doomed",
        tick_to_error_ms=round(error_at - ticked_at, 1),
    )
