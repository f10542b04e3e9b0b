"""Load reporting: ``/metrics`` (Prometheus text) and ``/ready`` on a real uvicorn server
on 127.0.0.1, their values against ``stats()`` with live aiortc sessions; the same routes
on a launched Gradio app; the HAProxy agent-check responder through a plain TCP client.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import json
import shutil
import socket
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import gradio as gr
import httpx
import prometheus_client
import pytest
import uvicorn
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families

from fixtures.tracks import ToneAudioTrack
from webrtc_ref import WebRTC, metrics
from webrtc_ref.demos.echo_audio import EchoHandler
from webrtc_ref.server import Stats, StreamServer
from webrtc_ref.stream import Stream
from webrtc_ref.testing import ClientPeer, async_wait_until, free_port, launched, wait_until

pytestmark = pytest.mark.timeout(120)


def samples(text: str) -> dict[tuple[str, str], float]:
    """``{(sample name, stream label): value}`` of a scrape, parsed by prometheus_client."""
    out: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, sample.labels.get("stream", ""))] = sample.value
    return out


def expected(stats: Stats, name: str) -> dict[tuple[str, str], float]:
    """What a scrape must say about one stream with these stats."""
    p = metrics.PREFIX
    values = {
        f"{p}_connections": stats.connections,
        f"{p}_pending_connections": stats.pending,
        f"{p}_connected_connections": stats.connected,
        f"{p}_closed_connections_total": stats.closed_total,
        f"{p}_stuck_workers": stats.stuck_workers,
        f"{p}_leftover_connections": stats.leftover_connections,
        f"{p}_draining": float(stats.draining),
        f"{p}_shutting_down": float(stats.shutting_down),
        f"{p}_ready": float(stats.accepting),
    }
    if stats.concurrency_limit is not None:
        values[f"{p}_concurrency_limit"] = stats.concurrency_limit
        values[f"{p}_free_slots"] = stats.concurrency_limit - stats.connections
    return {(k, name): float(v) for k, v in values.items()}


@contextlib.asynccontextmanager
async def serving(app: FastAPI) -> AsyncIterator[str]:
    """Serve ``app`` with uvicorn on 127.0.0.1 on this loop; yield its URL."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    task = asyncio.ensure_future(server.serve())
    try:
        await async_wait_until(lambda: server.started or task.done(), 20, "uvicorn to start")
        assert server.started, task
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 20)


async def connect(peer: ClientPeer, http: httpx.AsyncClient, url: str) -> dict[str, Any]:
    async def post(body: Any) -> dict[str, Any]:
        response = await http.post(url, json=body)
        assert response.status_code == 200, response.text
        return response.json()  # type: ignore[no-any-return]

    return await peer.connect(post)


async def test_metrics_and_ready_follow_stats_with_live_sessions(peers: Any) -> None:
    echo = Stream(EchoHandler(), modality="audio", mode="send-receive", concurrency_limit=2)
    other = StreamServer(
        mode="send-receive", modality="audio", handler=EchoHandler(), concurrency_limit=None
    )
    app = FastAPI()
    echo.mount(app, path="/echo", metrics=True)  # /echo/metrics, /echo/ready: that stream
    metrics.mount(app, {"echo": echo.server, "other": other})  # /metrics, /ready: both
    async with serving(app) as url, httpx.AsyncClient(timeout=20) as http:
        scrape = await http.get(f"{url}/metrics")
        assert scrape.status_code == 200
        assert scrape.headers["content-type"].startswith("text/plain")
        assert (await http.get(f"{url}/ready")).status_code == 200

        live = [peers(send=ToneAudioTrack(440.0)) for _ in range(2)]
        for peer in live:
            assert (await connect(peer, http, f"{url}/echo/webrtc/offer"))["type"] == "answer"
            await peer.wait_connected()
        await async_wait_until(
            lambda: echo.server.stats().connected == 2, 10, "both sessions connected"
        )

        got = samples((await http.get(f"{url}/metrics")).text)
        want = {**expected(echo.server.stats(), "echo"), **expected(other.stats(), "other")}
        assert {k: got.get(k) for k in want} == want
        assert got[(f"{metrics.PREFIX}_connections", "echo")] == 2
        assert (f"{metrics.PREFIX}_concurrency_limit", "other") not in got  # unlimited
        single = samples((await http.get(f"{url}/echo/metrics")).text)
        assert single[(f"{metrics.PREFIX}_connections", "0")] == 2

        # Full: not ready, and says why.
        ready = await http.get(f"{url}/ready")
        assert ready.status_code == 503
        body = ready.json()
        assert body["ready"] is False
        assert body["streams"]["echo"] == {"state": "full", "connections": 2, "limit": 2}
        assert body["streams"]["other"]["state"] == "ready"

        # One session leaves: ready again, the figures follow.
        live[0].send(json.dumps({"type": "stop"}))
        await async_wait_until(lambda: echo.server.stats().connections == 1, 10, "a free slot")
        assert (await http.get(f"{url}/ready")).status_code == 200
        got = samples((await http.get(f"{url}/metrics")).text)
        assert got[(f"{metrics.PREFIX}_free_slots", "echo")] == 1
        assert got[(f"{metrics.PREFIX}_closed_connections_total", "echo")] == 1

        # Draining: not ready; the live session is still counted.
        drain = other.drain()
        ready = await http.get(f"{url}/ready")
        assert ready.status_code == 503
        assert ready.json()["streams"]["other"]["state"] == "draining"
        got = samples((await http.get(f"{url}/metrics")).text)
        assert got[(f"{metrics.PREFIX}_draining", "other")] == 1
        assert got[(f"{metrics.PREFIX}_ready", "other")] == 0
        assert got[(f"{metrics.PREFIX}_connections", "echo")] == 1
        await asyncio.wait_for(drain, 5)  # nothing was live there
        other.resume()
        assert (await http.get(f"{url}/ready")).status_code == 200
    await other.shutdown()
    # The app stopped: the stream shut down, and nothing went to the global registry.
    assert echo.server.stats().shutting_down
    assert not [m for m in prometheus_client.REGISTRY.collect() if m.name.startswith("webrtc_ref")]


async def test_two_apps_in_one_process_keep_their_own_figures() -> None:
    a = StreamServer(
        mode="send-receive", modality="audio", handler=EchoHandler(), concurrency_limit=3
    )
    b = StreamServer(
        mode="send-receive", modality="audio", handler=EchoHandler(), concurrency_limit=5
    )
    app_a, app_b = FastAPI(), FastAPI()
    metrics.mount(app_a, [a], names=["voice"])
    metrics.mount(app_b, [b], names=["voice"])  # the same label, another registry
    async with serving(app_a) as url_a, serving(app_b) as url_b, httpx.AsyncClient() as http:
        got_a = samples((await http.get(f"{url_a}/metrics")).text)
        got_b = samples((await http.get(f"{url_b}/metrics")).text)
    assert got_a[(f"{metrics.PREFIX}_concurrency_limit", "voice")] == 3
    assert got_b[(f"{metrics.PREFIX}_concurrency_limit", "voice")] == 5


def test_bad_sources_are_refused_early() -> None:
    with pytest.raises(ValueError, match="at least one source"):
        metrics.router([])
    with pytest.raises(TypeError, match="StreamServer"):
        metrics.router([object()])
    server = StreamServer(mode="send-receive", modality="audio", handler=EchoHandler())
    with pytest.raises(ValueError, match="2 names for 1 sources"):
        metrics.router([server], names=["a", "b"])
    with pytest.raises(ValueError, match="distinct"):
        metrics.router([server, server], names=["a", "a"])
    with pytest.raises(ValueError, match="route path"):
        metrics.router([server], metrics_path="metrics")


def test_the_routes_on_a_launched_gradio_app() -> None:
    """The documented way for ``demo.launch()``: launch without blocking, mount the routes
    on ``demo.app``, then block. A component passed before ``.stream()`` is resolved at
    each request."""
    with gr.Blocks() as demo:
        webrtc = WebRTC(mode="send-receive", modality="audio")
        webrtc.stream(EchoHandler(), inputs=[webrtc], outputs=[webrtc], concurrency_limit=4)
    with launched(demo) as url:
        metrics.mount(demo.app, {"echo": webrtc})
        with httpx.Client(timeout=20) as http:
            scrape = http.get(f"{url}/metrics")
            assert scrape.status_code == 200, scrape.text[:300]
            got = samples(scrape.text)
            assert got[(f"{metrics.PREFIX}_concurrency_limit", "echo")] == 4
            assert got[(f"{metrics.PREFIX}_ready", "echo")] == 1
            assert http.get(f"{url}/ready").status_code == 200
            server = webrtc.stream_server
            assert server is not None
            server.start_drain()  # any thread
            wait_until(lambda: http.get(f"{url}/ready").status_code == 503, 10, "not ready")
            assert http.get(f"{url}/ready").json()["streams"]["echo"]["state"] == "draining"
            # The page itself is still Gradio's.
            assert "<html" in http.get(f"{url}/").text.lower()
            # The agent, from this (the main) thread, without Gradio's loop.
            agent = metrics.start_agent_thread({"echo": webrtc})
            try:
                assert agent_line_sync(agent.port) == b"drain\n"
                server.resume()
                assert agent_line_sync(agent.port) == b"ready 100%\n"
            finally:
                agent.close()
            assert not agent.serving
            with pytest.raises(OSError):
                agent_line_sync(agent.port)


async def test_the_routes_beside_a_gradio_app_mounted_on_fastapi(peers: Any) -> None:
    """The other documented way: the routes on a FastAPI app that ``gr.mount_gradio_app``
    serves the Gradio app from; a session offered through Gradio's route is counted."""
    with gr.Blocks() as demo:
        webrtc = WebRTC(mode="send-receive", modality="audio")
        webrtc.stream(EchoHandler(), inputs=[webrtc], outputs=[webrtc], concurrency_limit=1)
    app = FastAPI()
    metrics.mount(app, {"echo": webrtc})
    app = gr.mount_gradio_app(app, demo, path="/")
    async with serving(app) as url, httpx.AsyncClient(timeout=20) as http:
        assert (await http.get(f"{url}/ready")).status_code == 200
        config = (await http.get(f"{url}/config")).json()
        component = next(
            c["id"]
            for c in config["components"]
            if c.get("props", {}).get("component_class_name") == "WebRTC"
        )
        peer = peers(send=ToneAudioTrack(440.0))

        async def signal_(body: dict[str, str]) -> dict[str, Any]:
            response = await http.post(
                f"{url}/gradio_api/component_server/",
                json={
                    "fn_name": "offer",
                    "component_id": component,
                    "session_hash": "s1",
                    "data": body,
                },
            )
            assert response.status_code == 200, response.text
            return response.json()  # type: ignore[no-any-return]

        assert (await peer.connect(signal_))["type"] == "answer"
        await peer.wait_connected()
        got = samples((await http.get(f"{url}/metrics")).text)
        assert got[(f"{metrics.PREFIX}_connected_connections", "echo")] == 1
        ready = await http.get(f"{url}/ready")
        assert ready.status_code == 503 and ready.json()["streams"]["echo"]["state"] == "full"
        assert "<html" in (await http.get(f"{url}/")).text.lower()
        peer.send(json.dumps({"type": "stop"}))
        server = webrtc.stream_server
        assert server is not None
        await async_wait_until(lambda: server.stats().connections == 0, 10, "the slot freed")
        assert (await http.get(f"{url}/ready")).status_code == 200


def agent_line_sync(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as client:
        data = b""
        while chunk := client.recv(256):
            data += chunk
    return data


# -- the HAProxy agent check ---------------------------------------------------------------


async def agent_line(port: int) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        data = await asyncio.wait_for(reader.read(), 5)  # the responder closes after its line
    finally:
        writer.close()
    return data


async def test_agent_reports_free_capacity_drain_and_maint(peers: Any) -> None:
    limited = StreamServer(
        mode="send-receive", modality="audio", handler=EchoHandler(), concurrency_limit=4
    )
    agent = await metrics.start_agent([limited])
    try:
        assert await agent_line(agent.port) == b"ready 100%\n"
        peer = peers(send=ToneAudioTrack(440.0))
        assert (await peer.connect(limited.offer))["type"] == "answer"
        assert await agent_line(agent.port) == b"ready 75%\n"
        drain = limited.drain()
        assert await agent_line(agent.port) == b"drain\n"
        limited.resume()
        with contextlib.suppress(asyncio.CancelledError):
            await drain
        assert await agent_line(agent.port) == b"ready 75%\n"
        await limited.shutdown()  # the last server on this loop: the agent closes
        assert not agent.serving
        with pytest.raises(OSError):
            await agent_line(agent.port)
    finally:
        await agent.close()


async def test_an_agent_thread_closes_when_its_streams_shut_down() -> None:
    server = StreamServer(
        mode="send-receive", modality="audio", handler=EchoHandler(), concurrency_limit=2
    )
    agent = metrics.start_agent_thread([server])
    try:
        assert await agent_line(agent.port) == b"ready 100%\n"
        await server.shutdown()
        await async_wait_until(lambda: not agent.serving, 10, "the agent thread to close")
        with pytest.raises(OSError):
            await agent_line(agent.port)
    finally:
        agent.close()


def test_agent_reply_rules() -> None:
    def stats(connections: int, limit: int | None, **flags: bool) -> Stats:
        return Stats(
            connections=connections,
            pending=0,
            connected=connections,
            closed_total=0,
            worker_threads=0,
            stuck_workers=0,
            input_frames_dropped=0,
            messages_dropped=0,
            outputs_dropped=0,
            output_queue_depths={},
            pending_messages=0,
            leftover_connections=0,
            leftover_outputs=0,
            audio_frames_queued=0,
            shutting_down=flags.get("shutting_down", False),
            draining=flags.get("draining", False),
            concurrency_limit=limit,
        )

    assert metrics.agent_reply([stats(0, None)]) == "ready 100%\n"
    assert metrics.agent_reply([stats(3, 3)]) == "ready 0%\n"
    assert metrics.agent_reply([stats(1, 3), stats(0, 1)]) == "ready 75%\n"
    assert metrics.agent_reply([stats(0, 3), stats(0, None, draining=True)]) == "drain\n"
    assert metrics.agent_reply([stats(0, 3, shutting_down=True)]) == "maint\n"
    assert metrics.agent_reply([None]) == "drain\n"


# -- a real HAProxy reading the agent --------------------------------------------------------

#: What to install when HAProxy is missing (``nox -s tests`` does).
HAPROXY_HINT = "haproxy is not installed: apt-get install -y haproxy (nox -s tests does)"


def haproxy_stat(sock: Path) -> dict[str, dict[str, str]]:
    """``show stat`` over HAProxy's admin socket: {server name: its CSV row}."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
        client.settimeout(5)
        client.connect(str(sock))
        client.sendall(b"show stat\n")
        data = b""
        while chunk := client.recv(65536):
            data += chunk
    lines = data.decode().lstrip("# ").splitlines()
    rows = csv.DictReader(lines)
    return {row["svname"]: row for row in rows if row.get("pxname") == "replicas"}


@contextlib.contextmanager
def haproxy(workdir: Path, replicas: dict[str, tuple[int, int]]) -> Iterator[tuple[str, Path]]:
    """HAProxy on 127.0.0.1 in front of ``replicas`` ({name: (http port, agent port)}),
    each checked by TCP and by its agent every 100 ms; yields its URL and admin socket."""
    binary = shutil.which("haproxy") or "/usr/sbin/haproxy"
    if not Path(binary).exists():
        raise RuntimeError(HAPROXY_HINT)
    port = free_port()
    sock = workdir / "admin.sock"
    servers = "\n".join(
        f"    server {name} 127.0.0.1:{http} check inter 100ms agent-check "
        f"agent-port {agent} agent-inter 100ms weight 100"
        for name, (http, agent) in replicas.items()
    )
    config = workdir / "haproxy.cfg"
    config.write_text(
        f"""global
    stats socket {sock} mode 600 level admin
defaults
    mode http
    timeout connect 2s
    timeout client 10s
    timeout server 10s
frontend web
    bind 127.0.0.1:{port}
    default_backend replicas
backend replicas
    balance roundrobin
{servers}
"""
    )
    log = (workdir / "haproxy.log").open("wb")
    process = subprocess.Popen([binary, "-db", "-f", str(config)], stdout=log, stderr=log)
    try:
        wait_until(lambda: process.poll() is not None or sock.exists(), 10, "haproxy's socket")
        assert process.poll() is None, (workdir / "haproxy.log").read_text()
        yield f"http://127.0.0.1:{port}", sock
    finally:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


@pytest.mark.slow
async def test_haproxy_weighs_replicas_by_the_agent_and_drains_one(
    tmp_path: Path, peers: Any
) -> None:
    """Two replicas behind a real HAProxy: the agent's ``ready 75%`` becomes weight 75,
    ``drain`` puts the replica in DRAIN (no new requests but persistent ones) so new
    requests go to the other one, and ``resume()`` brings it back."""
    streams = {
        name: StreamServer(
            mode="send-receive", modality="audio", handler=EchoHandler(), concurrency_limit=4
        )
        for name in ("r1", "r2")
    }
    apps: dict[str, FastAPI] = {}
    for name, server in streams.items():
        app = FastAPI()
        metrics.mount(app, [server])

        async def who(name: str = name) -> dict[str, str]:
            return {"replica": name}

        app.add_api_route("/who", who, methods=["GET"])
        apps[name] = app
    agents = {name: await metrics.start_agent([s]) for name, s in streams.items()}
    try:
        async with (
            serving(apps["r1"]) as url1,
            serving(apps["r2"]) as url2,
            httpx.AsyncClient(timeout=20) as http,
        ):
            ports = {
                "r1": (int(url1.rsplit(":", 1)[1]), agents["r1"].port),
                "r2": (int(url2.rsplit(":", 1)[1]), agents["r2"].port),
            }
            with haproxy(tmp_path, ports) as (front, sock):
                last: dict[str, dict[str, str]] = {}

                async def state_is(name: str, status: str, weight: str) -> bool:
                    row = last[name] = (await asyncio.to_thread(haproxy_stat, sock)).get(name, {})
                    # HAProxy says "DRAIN (agent)" when the agent asked for it
                    return (
                        row.get("status", "").split(" ")[0] == status
                        and row.get("weight") == weight
                    )

                await async_wait_until(lambda: state_is("r1", "UP", "100"), 20, "r1 UP 100")
                peer = peers(send=ToneAudioTrack(440.0))
                assert (await peer.connect(streams["r1"].offer))["type"] == "answer"
                await async_wait_until(lambda: state_is("r1", "UP", "75"), 20, "r1 weight 75")

                drain = streams["r1"].drain()
                await async_wait_until(
                    lambda: state_is("r1", "DRAIN", "75"), 20, f"r1 DRAIN ({last})"
                )
                assert await state_is("r2", "UP", "100")
                seen = [(await http.get(f"{front}/who")).json()["replica"] for _ in range(12)]
                assert seen == ["r2"] * 12, seen

                streams["r1"].resume()
                with contextlib.suppress(asyncio.CancelledError):
                    await drain
                await async_wait_until(lambda: state_is("r1", "UP", "75"), 20, "r1 back")
                seen = [(await http.get(f"{front}/who")).json()["replica"] for _ in range(12)]
                assert "r1" in seen and "r2" in seen, seen
    finally:
        for agent in agents.values():
            await agent.close()
        for server in streams.values():
            await server.shutdown()
