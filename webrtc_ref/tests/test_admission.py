"""Admission through the real Gradio route: owners, per-session and per-address pending
offers, hostile offers with their codes, user code kept off the event loop.

Each app is a real Gradio app on 127.0.0.1; offers go through ``component_server`` with a
session hash, as the browser's Gradio client posts them.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import gradio as gr
import pytest

from conformance.gradio_http import GradioApp
from fixtures.offers import BAD_IDS, CLASSES, hostile_offer
from fixtures.tracks import ToneAudioTrack
from webrtc_ref import StreamHandler, WebRTC
from webrtc_ref.demos.echo_audio import EchoHandler
from webrtc_ref.testing import ClientPeer, async_wait_until, launched
from webrtc_ref.tests.test_signaling import HOSTILE_CODES

pytestmark = pytest.mark.timeout(90)


@dataclass
class App:
    url: str
    http: GradioApp
    component: WebRTC

    @property
    def server(self) -> Any:
        return self.component.stream_server

    async def offer(self, body: Any, session: str) -> dict[str, Any]:
        reply = await self.http.server_fn(self.component._id, "offer", body, session)
        assert reply.status == 200, reply
        assert isinstance(reply.body, dict)
        return reply.body

    def signal(self, session: str) -> Any:
        async def post(body: dict[str, str]) -> dict[str, Any]:
            return await self.offer(body, session)

        return post


@asynccontextmanager
async def echo_app(handler: StreamHandler | None = None, **options: Any) -> AsyncIterator[App]:
    stream_options = {
        key: options.pop(key) for key in ("concurrency_limit", "time_limit") if key in options
    }
    with gr.Blocks() as demo:
        webrtc = WebRTC(mode="send-receive", modality="audio", **options)
        webrtc.stream(handler or EchoHandler(), inputs=[webrtc], outputs=[webrtc], **stream_options)
    with launched(demo) as url:
        http = GradioApp(url)
        try:
            yield App(url, http, webrtc)
        finally:
            await http.aclose()
            server = webrtc.stream_server
            connections = server.connections if server is not None else []
            if connections:  # close them on the server's loop before the app stops
                loop = connections[0]._loop
                await asyncio.wrap_future(
                    asyncio.run_coroutine_threadsafe(server.shutdown(), loop)  # type: ignore[union-attr]
                )


async def real_offer() -> str:
    peer = ClientPeer(send=ToneAudioTrack(440))
    try:
        return (await peer.offer_body())["sdp"]
    finally:
        await peer.close()


async def test_the_offering_session_owns_the_connection(peers: Any) -> None:
    async with echo_app(concurrency_limit=None) as app:
        peer = peers(send=ToneAudioTrack(440))
        reply = await peer.connect(app.signal("session-a"))
        assert reply["type"] == "answer", reply
        connection = app.server.connection(peer.webrtc_id)
        assert connection.owner == "session-a"
        # the same id from another session: refused without saying it is live
        forged = {
            **(await peers(send=ToneAudioTrack(440)).offer_body()),
            "webrtc_id": peer.webrtc_id,
        }
        again = await app.offer(forged, "session-b")
        assert again["status"] == "failed"
        assert again["meta"]["error"] == "invalid_offer", again
        assert "exist" not in again["meta"]["message"]
        # and from the same session: the owner learns it reused its own id
        mine = {**(await peers(send=ToneAudioTrack(440)).offer_body()), "webrtc_id": peer.webrtc_id}
        assert (await app.offer(mine, "session-a"))["meta"]["error"] == "connection_already_exists"
        assert app.server.connection(peer.webrtc_id) is connection


@pytest.mark.parametrize("kind", CLASSES)
async def test_hostile_offers_get_their_code_at_once_and_hold_no_slot(
    peers: Any, kind: str
) -> None:
    """With concurrency_limit=1, a hostile offer is refused with its own code, and a real
    user right behind it is admitted."""
    sdp = await real_offer()
    n = {"many_sections": 3000, "padded": 2_000_000}.get(kind, 0)
    hostile = {"sdp": hostile_offer(sdp, kind, n), "type": "offer", "webrtc_id": "hostile1"}
    async with echo_app(concurrency_limit=1) as app:
        posted = time.monotonic()
        reply = await app.offer(hostile, "attacker")
        elapsed = time.monotonic() - posted
        expected = "offer_too_large" if kind == "many_sections" else HOSTILE_CODES[kind]
        assert reply.get("status") == "failed", str(reply)[:200]
        assert reply["meta"]["error"] == expected, reply["meta"]
        assert len(app.server) == 0, "the refused offer holds a slot"
        assert elapsed < 1.0, f"refused after {elapsed:.2f} s"
        peer = peers(send=ToneAudioTrack(440))
        assert (await peer.connect(app.signal("user")))["type"] == "answer"


@pytest.mark.parametrize("bad_id", BAD_IDS)
async def test_bad_ids_are_refused_through_the_route(bad_id: str) -> None:
    sdp = await real_offer()
    async with echo_app() as app:
        reply = await app.offer({"sdp": sdp, "type": "offer", "webrtc_id": bad_id}, "s")
        assert reply["meta"]["error"] == "invalid_offer"
        assert reply["meta"]["field"] == "webrtc_id"


async def test_an_offer_that_aiortc_cannot_apply_frees_its_slot_at_once() -> None:
    """An offer that passes the checks but fails in aiortc (an unknown DTLS setup role)
    is answered at once and leaves the slot free."""
    sdp = (await real_offer()).replace("a=setup:actpass", "a=setup:bogus")
    async with echo_app(concurrency_limit=1) as app:
        posted = time.monotonic()
        reply = await app.offer({"sdp": sdp, "type": "offer", "webrtc_id": "x1"}, "s")
        elapsed = time.monotonic() - posted
        assert reply.get("status") == "failed", str(reply)[:200]
        assert len(app.server) == 0
        assert elapsed < 1.0, f"the failed offer was answered after {elapsed:.2f} s"


async def test_a_newer_offer_of_the_same_session_supersedes_one_that_never_connected(
    peers: Any,
) -> None:
    """The browser gave up on a connection that never connected (it cannot tell the
    server); with concurrency_limit=1 its next Start must still work."""
    async with echo_app(concurrency_limit=1) as app:
        abandoned = peers(send=ToneAudioTrack(440))
        reply = await app.offer(await abandoned.offer_body(), "tab")
        assert reply["type"] == "answer"  # never applied: the peer never connects
        first = app.server.connection(abandoned.webrtc_id)
        again = peers(send=ToneAudioTrack(440))
        assert (await again.connect(app.signal("tab")))["type"] == "answer"
        await again.wait_connected()
        await async_wait_until(lambda: first.closed.is_set(), 5, "the superseded one to close")
        assert first.close_reason == "superseded"
        # another session is not superseded by it: the limit applies
        other = peers(send=ToneAudioTrack(440))
        refused = await other.connect(app.signal("other-tab"))
        assert refused["meta"]["error"] == "concurrency_limit_reached"


async def test_pending_offers_per_address_are_capped(peers: Any) -> None:
    async with echo_app(concurrency_limit=None, max_pending_per_address=3) as app:
        for i in range(3):
            pending = peers(send=ToneAudioTrack(440))
            assert (await app.offer(await pending.offer_body(), f"s{i}"))["type"] == "answer"
        extra = peers(send=ToneAudioTrack(440))
        reply = await app.offer(await extra.offer_body(), "s9")
        assert reply["meta"]["error"] == "too_many_pending_offers"
        assert reply["meta"]["limit"] == 3
        assert "max_pending_per_address" in reply["meta"]["message"]


class SlowSetup(EchoHandler):
    """The guide's echo, with a copy() and shutdown() that take 1 s (a model loading)."""

    def __init__(self, events: list[tuple[str, float]] | None = None) -> None:
        super().__init__()
        self.events = events if events is not None else []

    def copy(self) -> SlowSetup:
        time.sleep(1.0)
        self.events.append(("copy", time.monotonic()))
        return SlowSetup(self.events)

    def shutdown(self) -> None:
        time.sleep(1.0)
        self.events.append(("shutdown", time.monotonic()))
        super().shutdown()


async def test_copy_and_shutdown_run_off_the_event_loop(peers: Any) -> None:
    """While copy() and shutdown() block for 1 s each, the server's event loop keeps
    running: a timer on it is never late by more than 50 ms."""
    events: list[tuple[str, float]] = []
    async with echo_app(SlowSetup(events), concurrency_limit=None) as app:
        first = peers(send=ToneAudioTrack(440))
        assert (await first.connect(app.signal("a")))["type"] == "answer"
        loop = app.server.connection(first.webrtc_id)._loop
        lateness: list[float] = []
        stop = threading.Event()

        def tick(expected: float) -> None:
            lateness.append(loop.time() - expected)
            if not stop.is_set():
                loop.call_at(expected + 0.01, tick, expected + 0.01)

        loop.call_soon_threadsafe(lambda: tick(loop.time()))
        second = peers(send=ToneAudioTrack(440))
        assert (await second.connect(app.signal("b")))["type"] == "answer"
        await second.close()
        closing = asyncio.run_coroutine_threadsafe(
            app.server.close_connection(second.webrtc_id, "client_closed"), loop
        )
        await asyncio.wrap_future(closing)
        stop.set()
        assert [e for e, _ in events] == ["copy", "copy", "shutdown"]
        assert len(lateness) > 150, len(lateness)
        assert max(lateness) < 0.05, f"the event loop stalled for {max(lateness) * 1000:.0f} ms"


async def test_webrtc_close_hangs_up_from_any_thread(peers: Any) -> None:
    """``WebRTC.close(webrtc_id)`` on the app's component, called from a thread of the
    app's own (not the server's loop): the browser hears why, the slot is freed."""
    async with echo_app(concurrency_limit=1) as app:
        peer = peers(send=ToneAudioTrack(440))
        assert (await peer.connect(app.signal("session-a")))["type"] == "answer"
        await peer.wait_connected()
        results: list[bool] = []
        worker = threading.Thread(
            target=lambda: results.append(app.component.close(peer.webrtc_id, "bye"))
        )
        worker.start()
        await asyncio.to_thread(worker.join)
        assert results == [True]
        await peer.wait_message(lambda m: "server_closed" in m, 5, "end_stream server_closed")
        assert {
            "type": "end_stream",
            "reason": "server_closed",
            "message": "bye",
            "data": "bye",
        } in peer.json_messages()
        await async_wait_until(lambda: len(app.server) == 0, 5, "the slot to be freed")
        assert app.component.close(peer.webrtc_id) is False
        # the freed slot takes the next offer
        again = peers(send=ToneAudioTrack(440))
        assert (await again.connect(app.signal("session-b")))["type"] == "answer"
