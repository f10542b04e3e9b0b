"""Every demo, launched as a real Gradio app on 127.0.0.1 and driven over the wire.

An aiortc peer plays the browser: its offer goes through Gradio's component server route,
input values through the component's ``tick`` event on Gradio's queue, additional outputs
come back through ``state_change``. Each test checks the media or values that come back.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import numpy as np
import pytest
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from conformance.gradio_http import GradioApp, GradioSession
from fixtures.analysis import dominant_frequency
from fixtures.speech import build_scenario
from fixtures.tracks import ArrayAudioTrack, BarcodeVideoTrack, ToneAudioTrack
from webrtc_ref.demos import build_demo
from webrtc_ref.testing import ClientPeer, async_wait_until, launched

pytestmark = [pytest.mark.timeout(120), pytest.mark.slow]


class DemoClient:
    """One browser tab of a launched demo, speaking webrtc_ref's wire protocol.

    Like the browser client it keeps the components' current values, answers the
    server's ``"tick"`` with the tick event and its ``"change"`` with state_change, whose
    outputs update those values.
    """

    def __init__(self, app: GradioApp, session: GradioSession, config: dict[str, Any]):
        self.app = app
        self.session = session
        self.config = config
        self.webrtc_id = next(
            c["id"]
            for c in config["components"]
            if c.get("props", {}).get("component_class_name") == "WebRTC"
        )
        self.values: dict[int, Any] = {
            c["id"]: c.get("props", {}).get("value") for c in config["components"]
        }
        self.labels: dict[str, int] = {
            str(c.get("props", {}).get("label")): c["id"] for c in config["components"]
        }
        self.peer: ClientPeer | None = None
        self._seen = 0
        self._browser: asyncio.Task[None] | None = None

    def dependency(self, event: str) -> dict[str, Any] | None:
        for dependency in self.config["dependencies"]:
            if [self.webrtc_id, event] in [list(t) for t in dependency["targets"]]:
                return dependency
        return None

    async def connect(self, peer: ClientPeer) -> None:
        async def signal(body: dict[str, str]) -> dict[str, Any]:
            reply = await self.app.server_fn(
                self.webrtc_id, "offer", body, self.session.session_hash
            )
            assert reply.status == 200, reply
            return dict(reply.body)

        self.peer = peer
        self.values[self.webrtc_id] = peer.webrtc_id
        reply = await peer.connect(signal)
        assert reply.get("type") == "answer", reply
        self._browser = asyncio.ensure_future(self._answer_messages())

    def set(self, label: str, value: Any) -> None:
        """Change an input's value, as a user moving a slider would."""
        self.values[self.labels[label]] = value

    async def tick(self) -> None:
        """Run the tick event with the inputs' current values."""
        dependency = self.dependency("tick")
        assert dependency is not None, "the demo registers no tick event"
        await self.session.run(dependency, [self.values[c] for c in dependency["inputs"]])

    async def pull_outputs(self) -> None:
        dependency = self.dependency("state_change")
        assert dependency is not None, "the demo registers no state_change event"
        outputs = await self.session.run(dependency, [self.values[c] for c in dependency["inputs"]])
        for cid, value in zip(dependency["outputs"], outputs, strict=True):
            if not (isinstance(value, dict) and value.get("__type__") == "update"):
                self.values[cid] = value
            elif "value" in value:
                self.values[cid] = value["value"]

    async def _answer_messages(self) -> None:
        assert self.peer is not None
        while True:
            await async_wait_until(lambda: len(self.peer.messages) > self._seen, 3600, "msg")  # type: ignore[union-attr]
            message = self.peer.messages[self._seen]
            self._seen += 1
            if message == "tick":
                await self.tick()
            elif message == "change":
                await self.pull_outputs()

    async def aclose(self) -> None:
        if self._browser is not None:
            self._browser.cancel()
        if self.peer is not None:
            await self.peer.close()


@asynccontextmanager
async def demo_client(name: str) -> AsyncIterator[DemoClient]:
    with launched(build_demo(name)) as url:
        app = GradioApp(url)
        session = app.session()
        client = DemoClient(app, session, await app.config())
        try:
            yield client
        finally:
            await client.aclose()
            await session.aclose()
            await app.aclose()


async def receive_audio(track: MediaStreamTrack, seconds: float) -> list[np.ndarray]:
    """20 ms blocks (mono float) received within ``seconds`` of wall time."""
    blocks: list[np.ndarray] = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            frame = await asyncio.wait_for(track.recv(), 0.5)
        except asyncio.TimeoutError:
            continue
        except MediaStreamError:
            break
        blocks.append(frame.to_ndarray().reshape(-1, 2)[:, 0].astype(np.float64) / 32768)
    return blocks


def tone_purity(block: np.ndarray, freq: float) -> float:
    """Share of the block's energy at ``freq`` (about 1 for a pure tone, low for speech)."""
    energy = float(np.sum(block**2))
    if energy < 1e-4:
        return 0.0
    t = np.arange(len(block)) / 48000
    power = abs(np.sum(block * np.exp(-2j * np.pi * freq * t))) ** 2 * 2 / len(block)
    return power / energy


async def test_echo_audio_demo() -> None:
    async with demo_client("echo-audio") as client:
        await client.connect(ClientPeer(send=ToneAudioTrack(523.0)))
        blocks = await receive_audio(await client.peer.wait_remote(), 1.5)  # type: ignore[union-attr]
        tail = np.concatenate(blocks[-40:])
        assert dominant_frequency(tail, 48000) == pytest.approx(523.0, abs=5)


async def test_reply_on_pause_demo_replies_once_per_pause() -> None:
    scenario = build_scenario("speech_pause_speech")
    async with demo_client("reply-on-pause") as client:
        await client.connect(ClientPeer(send=ArrayAudioTrack(scenario.audio)))
        blocks = await receive_audio(
            await client.peer.wait_remote(),  # type: ignore[union-attr]
            len(scenario.audio) / 48000 + 2.5,
        )
        # Each reply ends with a 0.2 s 880 Hz confirmation beep: count the beeps.
        beeps, inside = 0, False
        for block in blocks:
            is_beep = tone_purity(block, 880.0) > 0.8
            beeps += is_beep and not inside
            inside = is_beep
        assert beeps == len(scenario.expected_turn_ends)


async def test_receive_audio_demo_plays_the_requested_steps() -> None:
    async with demo_client("receive-audio") as client:
        client.set("Number of Steps", 2)
        await client.connect(ClientPeer(receive="audio"))
        blocks = await receive_audio(await client.peer.wait_remote(), 4.0)  # type: ignore[union-attr]
        loud = sum(len(b) for b in blocks if np.sqrt(np.mean(b**2)) > 0.05) / 48000
        assert loud == pytest.approx(2 * 0.6, abs=0.1), "two 0.6 s phrases expected"
        await client.peer.wait_message(  # type: ignore[union-attr]
            lambda m: "handler_finished" in m, 5, "the end of the stream"
        )


async def test_echo_video_demo_filters_and_follows_the_slider() -> None:
    async with demo_client("echo-video") as client:
        await client.connect(ClientPeer(send=BarcodeVideoTrack(320, 240)))
        track = await client.peer.wait_remote()  # type: ignore[union-attr]

        async def green_fraction() -> float:
            fractions = []
            for _ in range(10):
                rgb = (await asyncio.wait_for(track.recv(), 5)).to_ndarray(format="rgb24")
                green = (rgb[..., 1] > 200) & (rgb[..., 0] < 80) & (rgb[..., 2] < 80)
                fractions.append(float(green.mean()))
            return float(np.median(fractions))

        client.set("Confidence Threshold", 0.1)
        await client.tick()
        await async_wait_until(
            lambda: asyncio.ensure_future(green_fraction_above(green_fraction, 0.02)),
            10,
            "green edges at a low threshold",
        )
        client.set("Confidence Threshold", 1.0)
        await client.tick()
        await async_wait_until(
            lambda: asyncio.ensure_future(green_fraction_below(green_fraction, 0.001)),
            10,
            "no edges at threshold 1.0",
        )


async def green_fraction_above(measure: Any, level: float) -> bool:
    return bool(await measure() > level)


async def green_fraction_below(measure: Any, level: float) -> bool:
    return bool(await measure() < level)


async def test_receive_video_demo_frames_advance() -> None:
    async with demo_client("receive-video") as client:
        await client.connect(ClientPeer(receive="video"))
        track = await client.peer.wait_remote()  # type: ignore[union-attr]
        frames = [
            (await asyncio.wait_for(track.recv(), 5)).to_ndarray(format="rgb24") for _ in range(15)
        ]
        assert frames[0].shape == (360, 640, 3)
        changes = [np.abs(a.astype(int) - b).mean() for a, b in itertools.pairwise(frames)]
        assert min(changes) > 0.5, "the video froze"


async def test_additional_outputs_demo_fills_the_chatbot() -> None:
    scenario = build_scenario("speech_pause_speech")
    turns = len(scenario.expected_turn_ends)
    async with demo_client("additional-outputs") as client:
        peer = ClientPeer(send=ArrayAudioTrack(scenario.audio))
        await client.connect(peer)
        chatbot = client.labels["transcript"]
        await async_wait_until(
            lambda: len(client.values[chatbot] or []) == turns, 20, f"{turns} chat messages"
        )
        texts = [message_text(m) for m in client.values[chatbot]]
        assert all(t.startswith("I heard ") for t in texts), texts


def message_text(message: dict[str, Any]) -> str:
    """A Chatbot message's text (Gradio 6 sends content as a list of typed parts)."""
    content = message["content"]
    if isinstance(content, str):
        return content
    return "".join(part.get("text", "") for part in content if isinstance(part, dict))
