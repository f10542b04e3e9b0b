"""Helpers for tests of webrtc_ref apps: free loopback ports, launched apps, deadlines, a
loopback TURN server (coturn with TURN REST credentials).

Used by webrtc_ref's own tests, the conformance suite and the browser tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import socket
import struct
import subprocess
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import gradio as gr

#: Multiplies every deadline in tests; raise it on slow machines (env WEBRTC_REF_TIMEOUT_SCALE).
TIMEOUT_SCALE = float(os.environ.get("WEBRTC_REF_TIMEOUT_SCALE", "1"))


@contextlib.contextmanager
def loopback_ice() -> Iterator[None]:
    """Make every aiortc peer in this process gather ICE host candidates on 127.0.0.1 only.

    Tests keep all media on the loopback interface this way; production servers gather
    on every interface, as clients on other machines need.
    """
    import aioice.ice

    original = aioice.ice.get_host_addresses

    def loopback(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        return ["127.0.0.1"] if use_ipv4 else []

    aioice.ice.get_host_addresses = loopback
    try:
        yield
    finally:
        aioice.ice.get_host_addresses = original


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port that is free on ``host`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def launched(app: gr.Blocks, host: str = "127.0.0.1") -> Iterator[str]:
    """Launch ``app`` on a free loopback port in this process; yield its base URL; close it."""
    port = free_port(host)
    app.launch(
        server_name=host,
        server_port=port,
        prevent_thread_lock=True,
        quiet=True,
        show_error=True,
    )
    try:
        yield f"http://{host}:{port}"
    finally:
        app.close()


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``predicate`` until true; raise ``TimeoutError`` naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout * TIMEOUT_SCALE
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"timed out after {timeout * TIMEOUT_SCALE:.1f} s waiting for {what}"
            )
        time.sleep(0.01)


async def async_wait_until(
    predicate: Callable[[], bool | Awaitable[bool]], timeout: float, what: str
) -> None:
    """Async :func:`wait_until`; ``predicate`` may be sync or async."""
    deadline = time.monotonic() + timeout * TIMEOUT_SCALE
    while True:
        result = predicate()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"timed out after {timeout * TIMEOUT_SCALE:.1f} s waiting for {what}"
            )
        await asyncio.sleep(0.01)


def aiortc_configuration(configuration: dict[str, Any] | None) -> Any:
    """aiortc's ``RTCConfiguration`` for a browser-style RTCConfiguration dict (``None``: no
    ICE servers). Only ``iceServers`` and ``iceTransportPolicy`` carry over."""
    from aiortc import RTCConfiguration, RTCIceServer, RTCIceTransportPolicy

    configuration = configuration or {}
    servers = [
        RTCIceServer(
            urls=server["urls"],
            username=server.get("username"),
            credential=server.get("credential"),
        )
        for server in configuration.get("iceServers") or []
    ]
    policy = RTCIceTransportPolicy(configuration.get("iceTransportPolicy", "all"))
    return RTCConfiguration(iceServers=servers, iceTransportPolicy=policy)


class ClientPeer:
    """A browser stand-in: a real aiortc peer speaking webrtc_ref's signalling protocol.

    It creates the ``"text"`` data channel first (as the browser client does), adds
    ``send`` as its outgoing track (or tracks: audio-video sends a list, audio first) or a
    receive-only transceiver for ``receive``, gathers
    ICE completely and posts the offer through ``signal`` (any async callable taking the
    offer body and returning the reply: ``StreamServer.offer`` in-process, or an HTTP
    call to the component server route). Data-channel messages are recorded in
    ``messages``; the first remote track is ``remote``, every remote track is in
    ``remotes`` by kind. ``rtc_configuration`` is a
    browser-style RTCConfiguration dict (ICE servers, ``iceTransportPolicy``); by default
    no ICE servers.
    """

    def __init__(
        self,
        *,
        send: object | None = None,
        receive: str | None = None,
        data_channel: bool = True,
        webrtc_id: str | None = None,
        rtc_configuration: dict[str, Any] | None = None,
    ) -> None:
        from aiortc import RTCPeerConnection

        self.pc = RTCPeerConnection(aiortc_configuration(rtc_configuration))
        self.webrtc_id = webrtc_id or secrets.token_hex(8)
        self.messages: list[str] = []
        self.remote: object | None = None
        self.remotes: dict[str, Any] = {}
        self._remote_ready = asyncio.Event()
        self.channel = self.pc.createDataChannel("text") if data_channel else None
        if self.channel is not None:
            self.channel.on("message", self._on_message)
        if isinstance(send, list | tuple):
            for track in send:
                self.pc.addTrack(track)
        elif send is not None:
            self.pc.addTrack(send)  # type: ignore[arg-type]
        elif receive is not None:
            self.pc.addTransceiver(receive, direction="recvonly")
        self.pc.on("track", self._on_track)
        self.reply: dict[str, object] | None = None

    def _on_message(self, message: object) -> None:
        if isinstance(message, str):
            self.messages.append(message)

    def _on_track(self, track: Any) -> None:
        self.remotes.setdefault(track.kind, track)
        if self.remote is None:
            self.remote = track
            self._remote_ready.set()

    async def offer_body(self) -> dict[str, str]:
        await self.pc.setLocalDescription(await self.pc.createOffer())
        return {"sdp": self.pc.localDescription.sdp, "type": "offer", "webrtc_id": self.webrtc_id}

    async def connect(
        self, signal: Callable[[dict[str, str]], Awaitable[dict[str, object]]]
    ) -> dict[str, object]:
        """Send the offer; apply the answer if there is one; return the server's reply."""
        from aiortc import RTCSessionDescription

        reply = await signal(await self.offer_body())
        self.reply = reply
        if reply.get("type") == "answer":
            await self.pc.setRemoteDescription(
                RTCSessionDescription(sdp=str(reply["sdp"]), type="answer")
            )
        return reply

    async def wait_connected(self, timeout: float = 10.0) -> None:
        """Wait until the peer connection is connected and, if this peer has a data
        channel, that channel is open (so messages the server sends from now on arrive)."""
        await async_wait_until(
            lambda: (
                self.pc.connectionState == "connected"
                and (self.channel is None or self.channel.readyState == "open")
            ),
            timeout,
            "connectionState connected and the data channel open",
        )

    async def wait_remote(self, timeout: float = 10.0) -> object:
        await asyncio.wait_for(self._remote_ready.wait(), timeout * TIMEOUT_SCALE)
        return self.remote

    def json_messages(self) -> list[dict[str, object]]:
        import json

        out = []
        for text in self.messages:
            if text.startswith("{"):
                out.append(json.loads(text))
        return out

    async def wait_message(
        self, predicate: Callable[[str], bool], timeout: float, what: str
    ) -> str:
        await async_wait_until(lambda: any(predicate(m) for m in self.messages), timeout, what)
        return next(m for m in self.messages if predicate(m))

    def send(self, text: str) -> None:
        assert self.channel is not None
        self.channel.send(text)

    async def close(self) -> None:
        await self.pc.close()


# ----------------------------------------------------------------------------- coturn


def free_udp_port(host: str = "127.0.0.1") -> int:
    """Return a UDP port that is free on ``host`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def stun_binding_ok(port: int, host: str = "127.0.0.1", timeout: float = 0.2) -> bool:
    """Whether a STUN Binding request to ``host:port`` (UDP) gets a success response."""
    txid = secrets.token_bytes(12)
    request = struct.pack("!HHI", 0x0001, 0, 0x2112A442) + txid
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.sendto(request, (host, port))
            data, _ = sock.recvfrom(2048)
        except OSError:
            return False
    return len(data) >= 20 and data[:2] == b"\x01\x01" and data[8:20] == txid


@dataclass
class Coturn:
    """A coturn TURN server on 127.0.0.1 taking TURN REST credentials made with ``secret``
    (``use-auth-secret``), started by :func:`coturn`."""

    port: int
    secret: str
    realm: str
    log: Path
    process: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        """Its ``turn:`` URL (UDP)."""
        return f"turn:127.0.0.1:{self.port}?transport=udp"

    def log_tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:]


#: What to install when coturn is missing (``nox -s tests`` and ``nox -s browser`` do).
COTURN_HINT = "coturn is not installed: apt-get install -y coturn (the nox sessions do)"


@contextlib.contextmanager
def coturn(
    workdir: Path, *, secret: str | None = None, binary: str | None = None
) -> Iterator[Coturn]:
    """Run coturn's ``turnserver`` on 127.0.0.1 until the block exits: UDP only, TURN REST
    credentials (``use-auth-secret``, ``static-auth-secret`` = ``secret``, random by
    default), relaying on 127.0.0.1 to loopback peers, no TLS, no CLI, a small relay port
    range. The secret is in a config file only its owner reads, not on the command line.

    Raises ``RuntimeError`` when ``turnserver`` is missing or exits before it answers STUN.
    """
    binary = binary or shutil.which("turnserver")
    if binary is None:
        raise RuntimeError(COTURN_HINT)
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_udp_port()
    base = 40000 + (os.getpid() * 131 + port) % 9000
    server_secret = secret or secrets.token_urlsafe(24)
    realm = "webrtc-ref.test"
    log_path = workdir / "turnserver.log"
    config = workdir / "turnserver.conf"
    settings = [
        "listening-ip=127.0.0.1",
        "relay-ip=127.0.0.1",
        f"listening-port={port}",
        f"min-port={base}",
        f"max-port={base + 80}",
        "use-auth-secret",
        f"static-auth-secret={server_secret}",
        f"realm={realm}",
        "allow-loopback-peers",
        "no-tls",
        "no-dtls",
        "no-tcp",
        "no-cli",
        "fingerprint",
        f"pidfile={workdir / 'turnserver.pid'}",
        f"userdb={workdir / 'turndb'}",
        "log-file=stdout",
        "simple-log",
        "verbose",
    ]
    config.touch(mode=0o600)
    config.write_text("\n".join(settings) + "\n")
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [binary, "-c", str(config)], stdout=log, stderr=subprocess.STDOUT
        )
        try:
            wait_until(
                lambda: process.poll() is not None or stun_binding_ok(port),
                10,
                f"turnserver on UDP port {port}",
            )
            if process.poll() is not None:
                raise RuntimeError(
                    f"turnserver exited with {process.returncode}: "
                    f"{log_path.read_text(errors='replace')[-2000:]}"
                )
            yield Coturn(port, server_secret, realm, log_path, process)
        finally:
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
