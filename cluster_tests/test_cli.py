"""``webrtc-ref cluster`` as a user runs it: a subprocess starting HAProxy, replicas of the
``echo-audio`` demo and a coturn, all on 127.0.0.1.

One simulated browser (the wire client, with its own cookie jar) loads the page through
HAProxy, gets its connection's relay-only TURN REST credentials from its replica (the demo
itself configures none: the command gives it a per-connection ``rtc_configuration``),
streams a tone through coturn and hears it back. SIGINT then stops the command, and every
process it started (HAProxy, each replica, coturn) is gone.
"""

from __future__ import annotations

import os
import re
import secrets
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from conformance.adapters.base import Scenario, Served, ServedStream
from conformance.gradio_http import GradioApp
from conformance.wire import Wire
from fixtures import analysis
from fixtures.tracks import ToneAudioTrack
from webrtc_ref.cluster import COOKIE, free_port
from webrtc_ref.testing import TIMEOUT_SCALE, wait_until

pytestmark = [pytest.mark.slow]

SCENARIO = Scenario(mode="send-receive", modality="audio", handler=lambda api: None)


def descendants(pid: int) -> set[int]:
    """Every live process below ``pid`` (read from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def nominated_local_type(pc: object) -> str:
    transport = pc.getTransceivers()[0].sender.transport.transport  # type: ignore[attr-defined]
    return str(transport._connection._nominated[1].local_candidate.type)


async def test_the_cluster_command_relays_through_coturn_and_stops_everything_on_sigint(
    tmp_path: Path,
) -> None:
    port = free_port()
    out = tmp_path / "cluster.out"
    command_line = [sys.executable, "-m", "webrtc_ref", "cluster", "echo-audio"]
    command_line += ["--replicas", "2", "--port", str(port)]
    with out.open("wb") as log:
        command = subprocess.Popen(
            command_line,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"},
        )
    try:
        wait_until(
            lambda: command.poll() is not None or "Open http" in out.read_text(),
            90,
            "the cluster command to print its URL",
        )
        text = out.read_text()
        assert command.poll() is None, text
        url = re.search(r"Open (http://127\.0\.0\.1:\d+)/", text)
        turn_url = re.search(r"coturn at (turn:\S+)", text)
        assert url and turn_url, text
        assert url.group(1) == f"http://127.0.0.1:{port}"
        started = descendants(command.pid)
        # HAProxy, two replicas and coturn at least (each may have helpers of its own).
        assert len(started) >= 4, (started, text)

        app = GradioApp(url.group(1))
        try:
            page = await app.http.get("/")
            assert page.status_code == 200 and app.http.cookies.get(COOKIE), page.headers
            config = await app.config()
            echo = next(
                c["id"] for c in config["components"] if c.get("props", {}).get("label") == "Echo"
            )
            props = next(c["props"] for c in config["components"] if c.get("id") == echo)
            assert props["props"]["rtc_configuration_per_connection"] is True, props["props"]
            webrtc_id = secrets.token_hex(8)
            reply = await app.server_fn(echo, "rtc_config", {"webrtc_id": webrtc_id}, "s1")
            assert reply.status == 200 and isinstance(reply.body, dict), reply
            rtc = reply.body["rtc_configuration"]
            assert rtc["iceTransportPolicy"] == "relay", rtc
            assert rtc["iceServers"][0]["urls"] == [turn_url.group(1)], rtc
            assert re.fullmatch(r"\d+:r[12]", rtc["iceServers"][0]["username"]), rtc
            served = Served(
                url=url.group(1),
                scenario=SCENARIO,
                streams=[ServedStream(echo, [], [], [], None)],
                periodic_ticks=False,
                tick_on_open=False,
            )
            wire = Wire(served)
            wire.app = app
            peer = wire.peer(
                send=ToneAudioTrack(440.0, 0.3), webrtc_id=webrtc_id, rtc_configuration=rtc
            )
            try:
                await peer.connect_ok(20)
                assert nominated_local_type(peer.pc) == "relay"
                recorder = peer.recorders["audio"]
                await recorder.wait_for_samples(24000, 10 * TIMEOUT_SCALE)
                samples = recorder.samples()[-int(0.3 * recorder.sample_rate) :]
                assert analysis.level_dbfs(samples) > -30, "the echo is silent"
                heard = analysis.dominant_frequency(samples, recorder.sample_rate)
                assert abs(heard - 440.0) < 10, heard
            finally:
                await peer.close()
        finally:
            await app.aclose()

        command.send_signal(signal.SIGINT)
        assert command.wait(30) == 0, out.read_text()
        wait_until(
            lambda: not any(alive(pid) for pid in started), 10, "every child process to exit"
        )
        assert "cluster stopped" in out.read_text()
    finally:
        if command.poll() is None:
            command.kill()
            command.wait(10)
