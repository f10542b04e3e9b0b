"""The lifecycle without leaks: shutdown on every signal, and a soak that counts what the
server process holds from the operating system's side.

The app runs in a subprocess of its own (``webrtc_ref.tests.lifecycle_app``), as an app
script does, so that signals, thread counts (``/proc``), file descriptors and UDP sockets
are the server's alone; the clients are real aiortc peers in this process.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import gradio as gr
import pytest

from conformance.gradio_http import GradioApp, GradioSession
from fixtures.tracks import ToneAudioTrack
from webrtc_ref import WebRTC
from webrtc_ref.demos.echo_audio import EchoHandler
from webrtc_ref.testing import TIMEOUT_SCALE, ClientPeer, async_wait_until, free_port, launched
from webrtc_ref.tests.lifecycle_app import KINDS

pytestmark = [pytest.mark.timeout(300), pytest.mark.slow]

#: How long the app may take to close its connections and exit after a signal.
EXIT_BOUND_S = 5.0 + 2.0


class AppProcess:
    """The lifecycle app in a subprocess; its HTTP side through :class:`GradioApp`."""

    def __init__(self, markers: Path) -> None:
        self.markers = markers
        self.port = free_port()
        self.log = markers / "app.log"
        self._log_file = self.log.open("w")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "webrtc_ref.tests.lifecycle_app",
                "--port",
                str(self.port),
                "--markers",
                str(markers),
            ],
            stdout=subprocess.PIPE,
            stderr=self._log_file,
            text=True,
            env={**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"},
        )
        self.url = f"http://127.0.0.1:{self.port}"
        self.app = GradioApp(self.url, timeout=30)
        self.webrtc = -1
        self._probe: dict[str, Any] | None = None

    async def ready(self, timeout: float = 60.0) -> None:
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(
            asyncio.to_thread(self.proc.stdout.readline), timeout * TIMEOUT_SCALE
        )
        assert line.startswith("READY"), f"the app did not start: {line!r}"
        config = await self.app.config()
        self.webrtc = next(
            c["id"]
            for c in config["components"]
            if c.get("props", {}).get("component_class_name") == "WebRTC"
        )
        buttons = {
            c["id"] for c in config["components"] if c.get("props", {}).get("value") == "probe"
        }
        self._probe = next(
            d for d in config["dependencies"] if any(t[0] in buttons for t in d["targets"])
        )

    async def probe(self, session: GradioSession) -> dict[str, Any]:
        assert self._probe is not None
        (report,) = await session.run(self._probe, [])
        return report if isinstance(report, dict) else json.loads(report)

    async def connect(
        self, session: GradioSession, kind: str = "queue", *, apply_answer: bool = True
    ) -> ClientPeer:
        peer = ClientPeer(send=ToneAudioTrack(440.0), webrtc_id=f"{kind}-{secrets.token_hex(6)}")

        async def signal_(body: dict[str, str]) -> dict[str, Any]:
            reply = await self.app.server_fn(self.webrtc, "offer", body, session.session_hash)
            assert reply.status == 200, reply
            return dict(reply.body)

        if apply_answer:
            reply = await peer.connect(signal_)
        else:
            reply = await signal_(await peer.offer_body())
        assert reply.get("type") == "answer", reply
        return peer

    def shutdown_marker(self, peer: ClientPeer) -> Path:
        return self.markers / f"shutdown-{peer.webrtc_id}"

    async def wait_exit(self, timeout: float) -> float:
        started = time.monotonic()
        await async_wait_until(lambda: self.proc.poll() is not None, timeout, "the app to exit")
        return time.monotonic() - started

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    async def aclose(self) -> None:
        await self.app.aclose()
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._log_file.close()


@contextlib.asynccontextmanager
async def app_process(tmp_path: Path) -> AsyncIterator[AppProcess]:
    process = AppProcess(tmp_path)
    try:
        await process.ready()
        yield process
    finally:
        await process.aclose()


def end_reasons(peer: ClientPeer) -> list[str]:
    return [str(m.get("reason")) for m in peer.json_messages() if m.get("type") == "end_stream"]


# -- shutdown -------------------------------------------------------------------------


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
async def test_a_signal_closes_every_stream_then_the_process_exits(
    tmp_path: Path, signum: int
) -> None:
    """Both live peers hear end_stream server_shutdown before their connection closes,
    each handler's shutdown() runs, and the process exits within the bound."""
    async with app_process(tmp_path) as app:
        sessions = [app.app.session(), app.app.session()]
        peers = [await app.connect(session) for session in sessions]
        try:
            for peer in peers:
                await peer.wait_connected()
            closed_at: dict[str, float] = {}
            for peer in peers:

                def on_state(peer: ClientPeer = peer) -> None:
                    if peer.pc.connectionState == "closed" and peer.webrtc_id not in closed_at:
                        closed_at[peer.webrtc_id] = time.monotonic()

                peer.pc.on("connectionstatechange", on_state)
            app.proc.send_signal(signum)
            took = await app.wait_exit(EXIT_BOUND_S)
            assert app.proc.returncode == 0, f"exit code {app.proc.returncode}"
            for peer in peers:
                assert end_reasons(peer) == ["server_shutdown"], peer.messages
                assert app.shutdown_marker(peer).exists(), "shutdown() did not run"
            assert took <= EXIT_BOUND_S
        finally:
            for peer in peers:
                await peer.close()
            for session in sessions:
                await session.aclose()


async def test_blocks_close_closes_every_stream() -> None:
    """demo.close() in-process: the peer hears end_stream server_shutdown and the
    handler's shutdown() runs once, before close() returns."""
    shutdowns: list[float] = []

    class Recorded(EchoHandler):
        def copy(self) -> Recorded:
            return Recorded()

        def shutdown(self) -> None:
            shutdowns.append(time.monotonic())

    with gr.Blocks() as demo:
        webrtc = WebRTC(mode="send-receive", modality="audio")
        webrtc.stream(Recorded(), inputs=[webrtc], outputs=[webrtc])
    peer = ClientPeer(send=ToneAudioTrack(440.0))
    with launched(demo) as url:
        app = GradioApp(url)
        try:

            async def signal_(body: dict[str, str]) -> dict[str, Any]:
                return dict((await app.server_fn(webrtc._id, "offer", body, "tab")).body)

            assert (await peer.connect(signal_))["type"] == "answer"
            await peer.wait_connected()
            await asyncio.to_thread(demo.close)
            assert len(shutdowns) == 1, "shutdown() did not run exactly once on close()"
            await peer.wait_message(lambda m: "end_stream" in m, 5, "end_stream")
            assert end_reasons(peer) == ["server_shutdown"]
            stats = webrtc.stats()
            assert stats is not None and stats.connections == 0 and stats.shutting_down
        finally:
            await peer.close()
            await app.aclose()


# -- the soak ---------------------------------------------------------------------------

#: How a soak cycle ends: the client stops cleanly, the client vanishes (closes its peer
#: connection without a word), the offer is never followed up, or the handler raises.
ENDINGS = ("stop", "abrupt", "never_connects", "stop", "raises")
CYCLES = 300
LANES = 3


async def one_cycle(app: AppProcess, session: GradioSession, index: int) -> None:
    ending = ENDINGS[index % len(ENDINGS)]
    kind = "raises" if ending == "raises" else KINDS[index % (len(KINDS) - 1)]
    peer = await app.connect(session, kind, apply_answer=ending != "never_connects")
    try:
        if ending == "never_connects":
            return  # the session's next offer supersedes it
        await peer.wait_connected()
        if ending == "raises":
            await peer.wait_message(lambda m: "end_stream" in m, 10, "the error's end_stream")
            return
        remote = await peer.wait_remote()
        for _ in range(5):  # the echo flows
            await asyncio.wait_for(remote.recv(), 5)  # type: ignore[attr-defined]
        if ending == "stop":
            peer.send(json.dumps({"type": "stop"}))
            await async_wait_until(
                lambda: peer.channel is not None and peer.channel.bufferedAmount == 0, 5, "flush"
            )
    finally:
        await peer.close()


async def test_soak_leaves_nothing_behind(tmp_path: Path) -> None:
    """300 cycles of every ending and every blocking primitive; afterwards the server
    process's threads, fds, UDP sockets, live peer connections, registry and leftover
    entries are back to the warmed-up baseline, its RSS grew by less than 20 MB, and it
    accepts one more connection."""
    async with app_process(tmp_path) as app:
        sessions = [app.app.session() for _ in range(LANES)]
        counter = itertools.count()

        async def lane(session: GradioSession, cycles: int) -> None:
            for _ in range(cycles):
                await one_cycle(app, session, next(counter))

        async def settled() -> dict[str, Any]:
            report: dict[str, Any] = {}

            async def idle() -> bool:
                report.update(await app.probe(sessions[0]))
                return report["connections"] == 0 and report["stuck_workers"] == 0

            await async_wait_until(idle, 30, "every connection of the soak to close")
            # a closed connection's threads end right after its slot is freed
            await asyncio.sleep(0.5)
            report.update(await app.probe(sessions[0]))
            return report

        try:
            await asyncio.gather(*(lane(s, 5) for s in sessions))  # warm-up
            baseline = await settled()
            await asyncio.gather(*(lane(s, CYCLES // LANES) for s in sessions))
            after = await settled()
            # Thread pools (the event loop's default executor, Gradio's AnyIO workers) are
            # bounded and keep idle threads for reuse: they are not the connections'.
            for report in (baseline, after):
                report["threads"] -= sum(
                    name.startswith(("asyncio_", "AnyIO worker"))
                    for name in report["python_threads"]
                )
            for key in ("threads", "fds", "udp", "peer_connections", "leftovers"):
                assert after[key] <= baseline[key], (
                    f"{key}: {baseline[key]} -> {after[key]} (OS threads by name: "
                    f"{baseline['os_thread_names']} -> {after['os_thread_names']}; Python "
                    f"threads: {baseline['python_threads']} -> {after['python_threads']})"
                )
            assert after["connections"] == 0
            grown_mb = (after["rss_kb"] - baseline["rss_kb"]) / 1024
            assert grown_mb < 20, f"RSS grew by {grown_mb:.1f} MB"
            assert after["closed_total"] >= baseline["closed_total"] + CYCLES
            last = await app.connect(sessions[0])
            await last.wait_connected()
            await last.close()
        finally:
            for session in sessions:
                await session.aclose()
