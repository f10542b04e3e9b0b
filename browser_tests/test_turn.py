"""Scenario 10: media through a real TURN relay (coturn, started here on loopback).

The browser may only use relay candidates (``iceTransportPolicy: "relay"``); the server
learns the relay from the component's ``server_rtc_configuration``. The page's getStats
must show a selected candidate pair whose local candidate is a relay, and the barcode
frames must come back through it.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from browser_tests.apps import turn_app
from browser_tests.helpers import Peer, TurnRelay, assert_in_order, frame_ids, poll, turn_relay
from webrtc_ref.testing import launched

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture(scope="module")
def relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TurnRelay]:
    binary = shutil.which("turnserver")
    if binary is None:
        pytest.fail("coturn is not installed: apt-get install -y coturn (nox -s browser does)")
    with turn_relay(tmp_path_factory.mktemp("coturn"), binary) as server:
        yield server


@pytest.mark.timeout(60)
def test_media_flows_through_turn_relay(
    open_peer: Callable[..., Peer], timings: Any, relay: TurnRelay
) -> None:
    """Scenario 10: relay-only ICE on the browser side; frames come back via coturn."""
    demo, component = turn_app(relay.ice_servers())
    with launched(demo) as url:
        peer = open_peer(url, root="#turn .webrtc-ref", name="relayed")
        config = peer.eval("(root) => root.__webrtc.pc === null && root.__webrtc.config()")
        assert config["rtcConfiguration"]["iceTransportPolicy"] == "relay"
        peer.start()
        state = peer.wait_state("streaming", "error", timeout=30)
        log = relay.log.read_text(errors="replace")[-3000:]
        assert state == "streaming", f"{peer.text('.wr-error')}\ncoturn log:\n{log}"
        session = peer.wait_first_media()
        ids = frame_ids(peer.capture_frames(30))
        stats = peer.stats()
        peer.stop()
        server = component.stream_server
        assert server is not None
        poll(lambda: len(server) == 0, 5, "the server to release the connection")

    assert_in_order(ids)
    local_types = {c["candidateType"] for c in stats["local"].values()}
    remote_types = {c["candidateType"] for c in stats["remote"].values()}
    assert local_types == {"relay"}, local_types  # the policy allowed nothing else
    assert stats["pairLocal"]["candidateType"] == "relay", stats["pairLocal"]
    assert stats["pairLocal"]["address"] == "127.0.0.1"
    assert stats["pair"]["state"] == "succeeded"
    assert stats["pair"]["bytesReceived"] > 10_000, stats["pair"]
    assert stats["pair"]["bytesSent"] > 10_000, stats["pair"]
    # The server gathered a relay candidate too: server_rtc_configuration reached aiortc.
    assert "relay" in remote_types, remote_types
    timings.record(
        "10 TURN relay (iceTransportPolicy relay)",
        session,
        "relayed",
        selected_pair=f"{stats['pairLocal']['candidateType']}->"
        f"{stats['pairRemote']['candidateType']}",
    )
