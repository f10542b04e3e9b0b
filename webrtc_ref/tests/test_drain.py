"""Draining: new offers get ``server_draining`` while live sessions keep their media, a
deadline closes what is left, and SIGTERM drains before the process stops.

Real aiortc peers against a real StreamServer in-process; the SIGTERM path against the
lifecycle app in a subprocess of its own (``webrtc_ref.tests.lifecycle_app``).
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from aiortc.mediastreams import MediaStreamTrack

from fixtures.analysis import dominant_frequency
from fixtures.tracks import ToneAudioTrack
from webrtc_ref import lifecycle
from webrtc_ref.demos.echo_audio import EchoHandler
from webrtc_ref.handlers import StreamHandler
from webrtc_ref.server import DRAIN_DEADLINE_MESSAGE, DRAINING_MESSAGE, StreamServer
from webrtc_ref.signaling import ERROR_CODES, SERVER_DRAINING
from webrtc_ref.testing import TIMEOUT_SCALE, ClientPeer, async_wait_until
from webrtc_ref.tests.test_lifecycle import EXIT_BOUND_S, app_process, end_reasons

pytestmark = pytest.mark.timeout(120)


class CountingEcho(EchoHandler):
    """The guide's echo; counts the ``shutdown()`` of every copy; unblocks ``emit``."""

    def __init__(self, shutdowns: list[str] | None = None) -> None:
        super().__init__()
        self.shutdowns = shutdowns if shutdowns is not None else []

    def copy(self) -> StreamHandler:
        return CountingEcho(self.shutdowns)

    def shutdown(self) -> None:
        self.shutdowns.append(self.webrtc_id or "?")
        self.queue.put((48000, np.zeros((1, 960), dtype=np.int16)))


@pytest.fixture
async def servers() -> AsyncIterator[Callable[..., StreamServer]]:
    made: list[StreamServer] = []

    def make(**kwargs: Any) -> StreamServer:
        kwargs.setdefault("mode", "send-receive")
        kwargs.setdefault("modality", "audio")
        kwargs.setdefault("concurrency_limit", None)
        server = StreamServer(**kwargs)
        made.append(server)
        return server

    yield make
    for server in made:
        await server.shutdown()


async def collect_audio(track: MediaStreamTrack, seconds: float) -> np.ndarray:
    """``seconds`` of the remote track's audio (48 kHz), mono float."""
    chunks: list[np.ndarray] = []
    total = 0
    while total < seconds * 48000:
        frame = await asyncio.wait_for(track.recv(), 5 * TIMEOUT_SCALE)
        data = frame.to_ndarray().reshape(-1, len(frame.layout.channels))[:, 0]
        chunks.append(data.astype(np.float64) / 32768)
        total += frame.samples
    return np.concatenate(chunks)


async def echoes(peer: ClientPeer, freq: float, seconds: float = 1.0) -> None:
    """The peer hears its own tone back, loud (the last ``seconds`` of a longer take)."""
    audio = await collect_audio(await peer.wait_remote(), seconds + 0.5)
    tail = audio[-int(seconds * 48000) :]
    assert dominant_frequency(tail, 48000) == pytest.approx(freq, abs=5)
    assert np.sqrt(np.mean(tail**2)) > 0.1, "the echo is (nearly) silent"


def failure_code(reply: dict[str, Any]) -> str | None:
    meta = reply.get("meta")
    return meta.get("error") if reply.get("status") == "failed" and isinstance(meta, dict) else None


async def test_draining_refuses_new_offers_while_a_live_session_keeps_its_media(
    servers: Any, peers: Any
) -> None:
    shutdowns: list[str] = []
    server = servers(handler=CountingEcho(shutdowns))
    live = peers(send=ToneAudioTrack(440.0))
    assert (await live.connect(server.offer))["type"] == "answer"
    await live.wait_connected()
    await echoes(live, 440.0)

    drain = server.drain()
    try:
        assert server.draining and server.stats().draining
        assert not server.stats().accepting
        refused = peers(send=ToneAudioTrack(660.0))
        reply = await refused.connect(server.offer)
        assert failure_code(reply) == SERVER_DRAINING, reply
        assert SERVER_DRAINING in ERROR_CODES
        # The browser shows this text as it is: it must say what to do.
        assert reply["meta"]["message"] == DRAINING_MESSAGE
        assert "try again" in DRAINING_MESSAGE.lower()
        assert server.stats().connections == 1, "a refused offer must not take a slot"

        # The live session goes on: its echo still comes back, and the drain waits.
        await echoes(live, 440.0)
        assert not drain.done(), "the drain ended while a session was live"
        assert end_reasons(live) == []

        # It ends on its own (the browser's Stop): the drain completes.
        live.send(json.dumps({"type": "stop"}))
        await asyncio.wait_for(asyncio.shield(drain), 10 * TIMEOUT_SCALE)
        assert server.stats().connections == 0
        assert shutdowns == [live.webrtc_id]
        # Still draining afterwards: a later offer is refused too.
        later = peers(send=ToneAudioTrack(660.0))
        assert failure_code(await later.connect(server.offer)) == SERVER_DRAINING
    finally:
        drain.cancel()

    server.resume()
    again = peers(send=ToneAudioTrack(660.0))
    assert (await again.connect(server.offer))["type"] == "answer"
    await echoes(again, 660.0)


async def test_the_deadline_closes_the_sessions_still_live(servers: Any, peers: Any) -> None:
    shutdowns: list[str] = []
    server = servers(handler=CountingEcho(shutdowns))
    live = [peers(send=ToneAudioTrack(f)) for f in (440.0, 550.0)]
    for peer in live:
        assert (await peer.connect(server.offer))["type"] == "answer"
        await peer.wait_connected()
    deadline = 1.5
    started = time.monotonic()
    ended_at: dict[str, float] = {}

    def watch(peer: ClientPeer) -> None:
        def on_message(message: object) -> None:
            if isinstance(message, str) and '"end_stream"' in message:
                ended_at.setdefault(peer.webrtc_id, time.monotonic())

        assert peer.channel is not None
        peer.channel.on("message", on_message)

    for peer in live:
        watch(peer)
    await asyncio.wait_for(server.drain(deadline=deadline), (deadline + 10) * TIMEOUT_SCALE)

    assert server.stats().connections == 0
    assert sorted(shutdowns) == sorted(p.webrtc_id for p in live)
    for peer in live:
        ends = [m for m in peer.json_messages() if m.get("type") == "end_stream"]
        assert [m.get("reason") for m in ends] == ["server_draining"], peer.messages
        assert ends[0].get("message") == DRAIN_DEADLINE_MESSAGE
        # Not before the deadline: the sessions ran on until then.
        assert ended_at[peer.webrtc_id] - started >= deadline - 0.05


async def test_a_shorter_later_deadline_brings_the_end_forward(servers: Any, peers: Any) -> None:
    server = servers(handler=CountingEcho())
    peer = peers(send=ToneAudioTrack(440.0))
    assert (await peer.connect(server.offer))["type"] == "answer"
    await peer.wait_connected()
    first = server.drain()  # no deadline: would wait forever
    try:
        await asyncio.wait_for(server.drain(deadline=0.2), 10 * TIMEOUT_SCALE)
        await asyncio.wait_for(asyncio.shield(first), 5 * TIMEOUT_SCALE)
        assert end_reasons(peer) == ["server_draining"]
    finally:
        first.cancel()


async def test_resume_cancels_a_waiting_drain_and_closes_nothing(servers: Any, peers: Any) -> None:
    server = servers(handler=CountingEcho())
    peer = peers(send=ToneAudioTrack(440.0))
    assert (await peer.connect(server.offer))["type"] == "answer"
    await peer.wait_connected()
    drain = server.drain(deadline=30)
    assert server.draining
    server.resume()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(drain, 5 * TIMEOUT_SCALE)
    assert not server.draining and server.stats().accepting
    await echoes(peer, 440.0)
    assert end_reasons(peer) == []
    # Drain, resume and drain again at once: the new drain has a waiter of its own.
    server.drain(deadline=30)
    await async_wait_until(
        lambda: server._drain_task is not None and not server._drain_task.done(),
        5,
        "the drain's task to run",
    )
    server.resume()
    again = server.drain(deadline=0.3)
    await asyncio.wait_for(again, 10 * TIMEOUT_SCALE)
    assert end_reasons(peer) == ["server_draining"]


async def test_drain_without_connections_and_bad_deadlines(servers: Any) -> None:
    server = servers(handler=CountingEcho())
    await asyncio.wait_for(server.drain(), 5)  # never served: done at once
    assert server.draining
    for bad in (-1, "5", True, float("nan")):
        with pytest.raises(ValueError, match="deadline"):
            server.start_drain(bad)  # type: ignore[arg-type]


def test_drain_grace_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(lifecycle.DRAIN_GRACE_ENV, raising=False)
    lifecycle.set_drain_grace(None)
    assert lifecycle.drain_grace() == lifecycle.DEFAULT_DRAIN_GRACE
    monkeypatch.setenv(lifecycle.DRAIN_GRACE_ENV, "12.5")
    assert lifecycle.drain_grace() == 12.5
    monkeypatch.setenv(lifecycle.DRAIN_GRACE_ENV, "soon")
    with pytest.raises(ValueError, match=lifecycle.DRAIN_GRACE_ENV):
        lifecycle.drain_grace()
    lifecycle.set_drain_grace(3)
    try:
        assert lifecycle.drain_grace() == 3.0
    finally:
        lifecycle.set_drain_grace(None)
    with pytest.raises(ValueError, match="drain grace"):
        lifecycle.set_drain_grace(-1)


# -- SIGTERM in a real app process ------------------------------------------------------


async def probe_draining(app: Any, session: Any) -> bool:
    return bool((await app.probe(session)).get("draining"))


@pytest.mark.slow
async def test_sigterm_drains_then_the_process_exits_when_the_last_session_ends(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a long grace, SIGTERM refuses new offers (server_draining) while the live
    session keeps its media; when that session ends, the process stops at once."""
    monkeypatch.setenv(lifecycle.DRAIN_GRACE_ENV, "60")
    async with app_process(tmp_path) as app:
        session, other, probing = app.app.session(), app.app.session(), app.app.session()
        peer = await app.connect(session)
        try:
            await peer.wait_connected()
            await echoes(peer, 440.0)
            app.proc.send_signal(signal.SIGTERM)
            await async_wait_until(
                lambda: probe_draining(app, probing), 10, "the app to start draining"
            )
            refused = ClientPeer(send=ToneAudioTrack(660.0))
            try:
                body = await refused.offer_body()
                reply = await app.app.server_fn(app.webrtc, "offer", body, other.session_hash)
                assert failure_code(dict(reply.body)) == SERVER_DRAINING, reply.body
            finally:
                await refused.close()
            await echoes(peer, 440.0)
            assert app.proc.poll() is None, "the app stopped while a session was live"
            peer.send(json.dumps({"type": "stop"}))
            await app.wait_exit(EXIT_BOUND_S)
            assert app.proc.returncode == 0, app.log_tail()
            assert end_reasons(peer) == []
            assert app.shutdown_marker(peer).exists()
        finally:
            await peer.close()
            for s in (session, other, probing):
                await s.aclose()


@pytest.mark.slow
@pytest.mark.parametrize("how", ["grace_over", "second_sigterm"])
async def test_sigterm_stops_at_the_grace_or_at_a_second_signal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    """At the end of the grace (or at a second SIGTERM) the live session hears
    end_stream server_shutdown and the process exits."""
    grace = 1.0 if how == "grace_over" else 60.0
    monkeypatch.setenv(lifecycle.DRAIN_GRACE_ENV, str(grace))
    async with app_process(tmp_path) as app:
        session, probing = app.app.session(), app.app.session()
        peer = await app.connect(session)
        try:
            await peer.wait_connected()
            signalled = time.monotonic()
            app.proc.send_signal(signal.SIGTERM)
            if how == "second_sigterm":
                await async_wait_until(
                    lambda: probe_draining(app, probing), 10, "the app to start draining"
                )
                app.proc.send_signal(signal.SIGTERM)
            await app.wait_exit(grace + EXIT_BOUND_S if how == "grace_over" else EXIT_BOUND_S)
            took = time.monotonic() - signalled
            assert app.proc.returncode == 0, app.log_tail()
            assert end_reasons(peer) == ["server_shutdown"], peer.messages
            assert app.shutdown_marker(peer).exists()
            if how == "grace_over":
                assert took >= grace, "the process stopped before the grace was over"
        finally:
            await peer.close()
            for s in (session, probing):
                await s.aclose()


# -- SIGTERM in a uvicorn-served app (a mounted Stream) ----------------------------------


#: ``webrtc-ref serve`` as a child process (the console script may not be on PATH).
SERVE = "import sys; from webrtc_ref.cli import main; sys.exit(main(sys.argv[1:]))"


@pytest.mark.slow
async def test_sigterm_drains_a_stream_served_by_uvicorn(tmp_path: Path) -> None:
    """``webrtc-ref serve`` (uvicorn in the main thread, which installs its own signal
    handlers): the first SIGTERM refuses new offers with server_draining while the live
    session keeps its echo; a second one stops the process."""
    import os
    import subprocess
    import sys

    import httpx

    from webrtc_ref.testing import free_port

    port = free_port()
    log_path = tmp_path / "serve.log"
    env = {**os.environ, lifecycle.DRAIN_GRACE_ENV: "60", "GRADIO_ANALYTICS_ENABLED": "False"}
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-c", SERVE, "serve", "echo-audio", "--port", str(port)],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=env,
        )
    base = f"http://127.0.0.1:{port}"
    peer = ClientPeer(send=ToneAudioTrack(440.0))
    try:
        async with httpx.AsyncClient(base_url=base, timeout=10) as http:

            async def up() -> bool:
                try:
                    return (await http.get("/")).status_code == 200
                except httpx.HTTPError:
                    return proc.poll() is not None

            await async_wait_until(up, 60, "uvicorn to serve")
            assert proc.poll() is None, log_path.read_text(errors="replace")

            async def signal_(body: dict[str, str]) -> dict[str, Any]:
                return dict((await http.post("/webrtc/offer", json=body)).json())

            assert (await peer.connect(signal_)).get("type") == "answer"
            await peer.wait_connected()
            await echoes(peer, 440.0)
            proc.send_signal(signal.SIGTERM)

            async def draining() -> bool:
                attempt = ClientPeer(send=ToneAudioTrack(660.0))
                try:
                    reply = await signal_(await attempt.offer_body())
                finally:
                    await attempt.close()
                return failure_code(reply) == SERVER_DRAINING

            await async_wait_until(draining, 10, "new offers to get server_draining")
            await echoes(peer, 440.0)
            assert proc.poll() is None, "the server stopped while a session was live"
            proc.send_signal(signal.SIGTERM)
            await async_wait_until(lambda: proc.poll() is not None, EXIT_BOUND_S, "the exit")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        await peer.close()
