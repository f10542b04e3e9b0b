"""Python side of the browser tests: one :class:`Peer` per browser tab, media files,
a loopback coturn relay, and small analysis helpers.

A ``Peer`` drives one ``.webrtc-ref`` element of one page and reads back what the page
received through ``probe.js`` (installed in every page): getStats, the grey level of
presented remote video frames, and the sent/received audio, sample-aligned. Nothing here
sleeps for a fixed time: every wait polls a condition against a deadline.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import os
import secrets
import socket
import struct
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from webrtc_ref.testing import TIMEOUT_SCALE

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / "build"
#: Fake-device media, built once from ``fixtures`` and reused across runs.
MEDIA_DIR = BUILD / "browser-media"
#: Traces, console logs, screenshots of failed tests; demo screenshots.
ARTIFACTS = BUILD / "browser-artifacts"
TIMINGS_FILE = BUILD / "browser-timings.json"
PROBE_JS = (Path(__file__).parent / "probe.js").read_text(encoding="utf-8")

#: getUserMedia constraints that switch Chrome's audio processing off (it attenuates tones
#: by ~15-20 dB and would falsify level checks).
NO_PROCESSING: dict[str, Any] = {
    "echoCancellation": False,
    "noiseSuppression": False,
    "autoGainControl": False,
}

#: Default deadline for one wait, in seconds (scaled by WEBRTC_REF_TIMEOUT_SCALE).
DEADLINE = 20.0


def scaled(seconds: float) -> float:
    return seconds * TIMEOUT_SCALE


def poll(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.05) -> Any:
    """Call ``predicate`` until it returns something truthy (returned); fail after ``timeout``."""
    deadline = time.monotonic() + scaled(timeout)
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {scaled(timeout):.1f} s waiting for {what}")
        time.sleep(interval)


# ----------------------------------------------------------------------------- media files


@dataclass(frozen=True)
class MediaSet:
    """The fake capture files one Chromium process plays (Chromium reads them per process)."""

    name: str
    video: Path
    audio: Path

    def chromium_args(self) -> list[str]:
        return [
            f"--use-file-for-fake-video-capture={self.video}",
            f"--use-file-for-fake-audio-capture={self.audio}",
        ]


SIGNATURE_ID = 57
BARCODE_SIZE = (320, 240)
SPEECH_SCENARIO = "speech_pause_speech"


def _write_if_missing(path: Path, make: Callable[[Path], None]) -> Path:
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        make(tmp)
        tmp.replace(path)
    return path


def build_media(directory: Path = MEDIA_DIR) -> dict[str, MediaSet]:
    """Write (once) the files the tests play and return the two media sets.

    ``tone``: 10 s of 320x240 barcode frames (ids 0..299, looping) and 10 s of audio
    signature 57 (550 + 1600 + 2650 Hz). ``speech``: the same video and the
    ``speech_pause_speech`` espeak-ng scenario (two utterances, two pauses; loops).
    """
    from fixtures import audio, files, speech, video

    width, height = BARCODE_SIZE
    barcode = _write_if_missing(
        directory / f"barcode_{width}x{height}.y4m",
        lambda p: files.write_y4m(p, (video.make_frame(i, width, height) for i in range(300)), 30),
    )
    tone = _write_if_missing(
        directory / f"signature_{SIGNATURE_ID}.wav",
        lambda p: files.write_wav(p, audio.signature(SIGNATURE_ID, 10.0), 48000),
    )
    scenario = speech.build_scenario(SPEECH_SCENARIO)
    speech_wav = _write_if_missing(
        directory / f"{SPEECH_SCENARIO}.wav",
        lambda p: files.write_wav(p, scenario.audio, scenario.sample_rate),
    )
    return {
        "tone": MediaSet("tone", barcode, tone),
        "speech": MediaSet("speech", barcode, speech_wav),
    }


# ----------------------------------------------------------------------------- the peer


@dataclass
class Audio:
    """Audio recorded in the page: what the page sent (``local``) and received (``remote``),
    both mono int16 at ``rate``, sample-aligned (sample ``i`` of each happened together)."""

    rate: int
    local: np.ndarray
    remote: np.ndarray
    block: int
    block_at: list[float]
    remote_from: int | None  # first sample index where the remote track was connected

    def time_of(self, sample: int) -> float:
        """performance.now() (ms) of the end of the 1024-sample block holding ``sample``."""
        k = min(max(sample // self.block, 0), len(self.block_at) - 1)
        return float(self.block_at[k])

    def sample_at(self, t_ms: float) -> int:
        """The first sample of the block that ends at or after performance.now() ``t_ms``."""
        k = int(np.searchsorted(np.asarray(self.block_at), t_ms))
        return min(k, len(self.block_at)) * self.block


@dataclass
class Frame:
    """One presented remote video frame, as grey levels (mean of R, G, B)."""

    at: float
    presented: int
    grey: np.ndarray


@dataclass
class Peer:
    """One browser tab streaming with one WebRTC component of an app.

    ``root`` is the CSS selector of the component's ``.webrtc-ref`` element.
    """

    name: str
    context: Any
    page: Any
    root: str = ".webrtc-ref"
    console: list[str] = field(default_factory=list)

    # -- page and element ---------------------------------------------------------------
    def open(self, url: str, timeout: float = DEADLINE) -> None:
        self.page.goto(url, wait_until="domcontentloaded", timeout=scaled(timeout) * 1000)
        self.page.wait_for_selector(self.root, timeout=scaled(timeout) * 1000)
        # js_on_load has run once the client's API is on the element.
        self.page.wait_for_function(
            "(sel) => { const r = document.querySelector(sel); return r && r.__webrtc; }",
            arg=self.root,
            timeout=scaled(timeout) * 1000,
        )

    def el(self, sub: str = "") -> str:
        return f"{self.root} {sub}".strip()

    def eval(self, script: str, arg: Any = None) -> Any:
        """Evaluate ``(root, arg) => ...`` with the component's root element."""
        return self.page.evaluate(
            f"([sel, arg]) => ({script})(document.querySelector(sel), arg)", [self.root, arg]
        )

    @property
    def state(self) -> str:
        return str(self.page.get_attribute(self.root, "data-state"))

    def attr(self, name: str) -> str | None:
        value = self.page.get_attribute(self.root, name)
        return None if value is None else str(value)

    def text(self, sub: str) -> str:
        return str(self.page.inner_text(self.el(sub)))

    # -- lifecycle ----------------------------------------------------------------------
    def start(self) -> None:
        """Press Start (send / send-receive modes)."""
        self.page.click(self.el(".wr-start"))

    def stop(self) -> None:
        self.page.click(self.el(".wr-stop"))

    def wait_state(self, *states: str, timeout: float = DEADLINE) -> str:
        selector = ", ".join(f'{self.root}[data-state="{s}"]' for s in states)
        self.page.wait_for_selector(selector, timeout=scaled(timeout) * 1000)
        return self.state

    def sessions(self) -> list[dict[str, Any]]:
        """The probe's record of every connection attempt of this element (oldest first)."""
        return list(self.eval("(root) => window.__probe.sessions(root)"))

    def session(self, index: int = -1) -> dict[str, Any]:
        sessions = self.sessions()
        assert sessions, f"{self.name}: no connection was attempted"
        return sessions[index]

    def wait_session(
        self, predicate: Callable[[dict[str, Any]], bool], what: str, timeout: float = DEADLINE
    ) -> dict[str, Any]:
        def check() -> dict[str, Any] | None:
            sessions = self.sessions()
            return sessions[-1] if sessions and predicate(sessions[-1]) else None

        return dict(poll(check, timeout, f"{self.name}: {what}"))

    def wait_first_media(self, timeout: float = DEADLINE) -> dict[str, Any]:
        """Wait until the current session presented a frame / played audible audio."""
        return self.wait_session(
            lambda s: (
                (s["firstFrameAt"] is not None or s["firstAudioAt"] is not None)
                and s["firstRtpAt"] is not None
            ),
            "first remote media",
            timeout,
        )

    # -- stats --------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        """getStats of the current peer connection, by type (inbound-rtp by kind, the
        selected candidate pair with its local and remote candidates)."""
        return dict(
            self.eval(
                """async (root) => {
                const pc = root.__webrtc.pc;
                if (!pc) return {};
                const all = {}, out = {inbound: {}, outbound: {}, local: {}, remote: {}};
                (await pc.getStats()).forEach((s) => { all[s.id] = s; });
                for (const s of Object.values(all)) {
                    if (s.type === 'inbound-rtp') out.inbound[s.kind] = s;
                    if (s.type === 'outbound-rtp') out.outbound[s.kind] = s;
                    if (s.type === 'local-candidate') out.local[s.id] = s;
                    if (s.type === 'remote-candidate') out.remote[s.id] = s;
                    if (s.type === 'transport' && s.selectedCandidatePairId) {
                        const pair = all[s.selectedCandidatePairId];
                        out.pair = pair;
                        out.pairLocal = all[pair.localCandidateId];
                        out.pairRemote = all[pair.remoteCandidateId];
                    }
                }
                return out;
            }"""
            )
            or {}
        )

    def frames_decoded(self) -> int:
        return int(self.stats().get("inbound", {}).get("video", {}).get("framesDecoded", 0))

    # -- video --------------------------------------------------------------------------
    def capture_frames(self, count: int, timeout: float = DEADLINE) -> list[Frame]:
        """The next ``count`` presented remote frames, as grey images."""
        self.eval("(root, n) => window.__probe.startCapture(root, n)", count)
        poll(
            lambda: self.eval(
                "(root, n) => root.__probe.capture && root.__probe.capture.frames.length >= n",
                count,
            ),
            timeout,
            f"{self.name}: {count} remote video frames",
        )
        frames = []
        for f in self.eval("(root) => window.__probe.takeCapture(root)"):
            grey = np.frombuffer(base64.b64decode(f["data"]), np.uint8)
            frames.append(Frame(f["at"], f["presented"], grey.reshape(f["height"], f["width"])))
        return frames

    def grab(self) -> tuple[np.ndarray, float]:
        """The remote video frame shown now, RGB (H, W, 3), and performance.now() (ms)."""
        data = poll(
            lambda: self.eval("(root) => window.__probe.grab(root)"), 10, "a remote video frame"
        )
        rgb = np.frombuffer(base64.b64decode(data["data"]), np.uint8)
        return rgb.reshape(data["height"], data["width"], 3), float(data["at"])

    def now(self) -> float:
        """performance.now() in the page (ms), the clock of every probe timestamp."""
        return float(self.page.evaluate("() => performance.now()"))

    # -- audio --------------------------------------------------------------------------
    def audio(self, index: int = -1) -> Audio:
        """Everything the audio tap recorded in session ``index`` so far."""
        data = self.eval("(root, i) => window.__probe.audio(root, i)", index)
        assert data is not None, f"{self.name}: no audio was recorded"
        pcm = np.frombuffer(base64.b64decode(data["data"]), np.int16).reshape(-1, 2)
        return Audio(
            rate=int(data["rate"]),
            local=pcm[:, 0].copy(),
            remote=pcm[:, 1].copy(),
            block=int(data["block"]),
            block_at=list(data["blockAt"]),
            remote_from=None
            if data["remote"] is None or data["remote"]["sample"] is None
            else int(data["remote"]["sample"]),
        )

    def recorded_seconds(self, index: int = -1) -> float:
        return float(
            self.eval(
                """(root, i) => {
                const ss = root.__probe ? root.__probe.sessions : [];
                const s = ss[i < 0 ? ss.length + i : i];
                return s && s.tap ? s.tap.samples / s.tap.rate : 0;
            }""",
                index,
            )
        )

    # -- screenshots --------------------------------------------------------------------
    def screenshot(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(path))
        return path


def timing_of(session: dict[str, Any]) -> dict[str, float | None]:
    """Milliseconds from the starting click to connected / first RTP / first media."""

    def since(key: str) -> float | None:
        value = session.get(key)
        return None if value is None else round(float(value) - float(session["startedAt"]), 1)

    media = session.get("firstFrameAt") or session.get("firstAudioAt")
    return {
        "connected_ms": since("connectedAt"),
        "first_rtp_ms": since("firstRtpAt"),
        "first_media_ms": None
        if media is None
        else round(float(media) - float(session["startedAt"]), 1),
    }


# ----------------------------------------------------------------------------- analysis


def frame_ids(frames: list[Frame]) -> list[int | None]:
    from fixtures import read_frame_id

    return [read_frame_id(f.grey) for f in frames]


def unwrap_ids(ids: list[int], period: int = 300) -> list[int]:
    """Frame ids of a looping file (0..period-1) made monotonic across loop points."""
    out: list[int] = []
    offset = 0
    for i in ids:
        if out and i + offset < out[-1] - period // 2:
            offset += period
        out.append(i + offset)
    return out


def assert_in_order(ids: list[int | None], min_readable: float = 0.9) -> list[int]:
    """Check barcode ids read from consecutive presented frames: mostly readable, never
    going back, few repeats (Chrome's fake camera repeats a frame now and then); return
    the readable ids, unwrapped across the file's loop point."""
    readable = [i for i in ids if i is not None]
    assert len(readable) >= min_readable * len(ids), f"unreadable frames: {ids}"
    ordered = unwrap_ids(readable)
    backwards = [(a, b) for a, b in itertools.pairwise(ordered) if b < a]
    assert not backwards, f"frames out of order {backwards}: {ids}"
    repeats = sum(b == a for a, b in itertools.pairwise(ordered))
    assert repeats <= max(1, len(ordered) // 10), f"{repeats} repeated frames: {ids}"
    return ordered


def tone_fraction(x: np.ndarray, rate: int, freq: float, block: int) -> np.ndarray:
    """Per block of ``block`` samples: the share of the block's power at ``freq`` (a pure
    tone at ``freq`` gives ~1, silence or other frequencies ~0)."""
    n = len(x) // block
    if n == 0:
        return np.zeros(0)
    blocks = x[: n * block].astype(np.float64).reshape(n, block) / 32768
    window = np.hanning(block)
    ref = np.exp(-2j * np.pi * freq * np.arange(block) / rate) * window
    amplitude = 2 * np.abs(blocks @ ref) / window.sum()
    return np.asarray((amplitude**2 / 2) / (np.mean(blocks**2, axis=1) + 1e-12))


# ----------------------------------------------------------------------------- coturn


def free_udp_port(host: str = "127.0.0.1") -> int:
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
class TurnRelay:
    """A coturn relay on loopback, started by the tests with credentials made up here."""

    port: int
    username: str
    password: str
    realm: str
    log: Path

    def ice_servers(self) -> list[dict[str, str]]:
        return [
            {
                "urls": f"turn:127.0.0.1:{self.port}?transport=udp",
                "username": self.username,
                "credential": self.password,
            }
        ]


@contextlib.contextmanager
def turn_relay(workdir: Path, binary: str = "turnserver") -> Iterator[TurnRelay]:
    """Run ``turnserver`` on 127.0.0.1 (UDP only, long-term credentials, loopback peers
    allowed, a small relay port range) until the block exits."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_udp_port()
    base = 50000 + (os.getpid() * 97 + port) % 10000
    relay = TurnRelay(
        port=port,
        username="u" + secrets.token_hex(4),
        password=secrets.token_hex(12),
        realm="webrtc-ref.test",
        log=workdir / "turnserver.log",
    )
    command = [
        binary,
        "-n",
        "-L",
        "127.0.0.1",
        "-E",
        "127.0.0.1",
        "--allow-loopback-peers",
        "-a",
        "-u",
        f"{relay.username}:{relay.password}",
        "-r",
        relay.realm,
        "--no-tls",
        "--no-dtls",
        "--no-tcp",
        "--min-port",
        str(base),
        "--max-port",
        str(base + 60),
        "--no-cli",
        "--listening-port",
        str(port),
        "--pidfile",
        str(workdir / "turnserver.pid"),
        "--userdb",
        str(workdir / "turndb"),
        "-l",
        "stdout",
        "--simple-log",
        "-v",
    ]
    with open(relay.log, "wb") as log:
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        try:
            poll(
                lambda: proc.poll() is not None or stun_binding_ok(port),
                10,
                f"turnserver on UDP port {port}",
            )
            if proc.poll() is not None:
                raise RuntimeError(
                    f"turnserver exited with {proc.returncode}: {relay.log.read_text()[-2000:]}"
                )
            yield relay
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
