"""ReplyOnPause over a real peer connection: speech in, reply audio out, by content."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from aiortc.mediastreams import MediaStreamError

from fixtures.analysis import dominant_frequency
from fixtures.audio import tone
from fixtures.speech import build_scenario
from fixtures.tracks import ArrayAudioTrack
from webrtc_ref import AdditionalOutputs, ReplyOnPause
from webrtc_ref.server import StreamServer
from webrtc_ref.testing import ClientPeer

pytestmark = [pytest.mark.timeout(90), pytest.mark.slow]

REPLY_HZ = 1000.0


def reply(audio: tuple[int, np.ndarray]) -> Iterator[Any]:
    """Answer each turn with 0.3 s of a 1 kHz tone and the utterance length."""
    rate, array = audio
    yield AdditionalOutputs(array.shape[1] / rate)
    yield (24000, tone(REPLY_HZ, 0.3, sample_rate=24000).reshape(1, -1))


async def reply_onsets(track: Any, seconds: float) -> list[float]:
    """Wall-clock times (``time.time()``) at which the reply tone starts arriving."""
    onsets: list[float] = []
    last_reply = 0.0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            frame = await asyncio.wait_for(track.recv(), 0.5)
        except (asyncio.TimeoutError, MediaStreamError):
            continue
        data = frame.to_ndarray().reshape(-1, 2)[:, 0].astype(np.float64) / 32768
        is_reply = np.sqrt(np.mean(data**2)) > 0.1 and (
            abs(dominant_frequency(data, 48000) - REPLY_HZ) < 60
        )
        if not is_reply:
            continue
        # Replies are >= 0.6 s apart; closer reply-like frames (the codec's ring-out
        # after a burst) belong to the same reply.
        if time.time() - last_reply > 0.6:
            onsets.append(time.time())
        last_reply = time.time()
    return onsets


async def test_one_reply_per_pause_over_the_wire() -> None:
    scenario = build_scenario("speech_pause_speech")
    server = StreamServer(mode="send-receive", modality="audio", handler=ReplyOnPause(reply))
    source = ArrayAudioTrack(scenario.audio, scenario.sample_rate)
    peer = ClientPeer(send=source)
    try:
        assert (await peer.connect(server.offer))["type"] == "answer"
        track = await peer.wait_remote()
        duration = len(scenario.audio) / scenario.sample_rate
        onsets = await reply_onsets(track, duration + 1.5)
        assert source.start_time is not None
        heard = [t - source.start_time for t in onsets]  # s into the fixture
        ends = scenario.expected_turn_ends
        assert len(heard) == len(ends), f"replies at {heard} s, turns end at {ends} s"
        for at, end in zip(heard, ends, strict=True):
            latency = at - end
            print(f"end of speech -> reply heard by the client: {latency * 1000:.0f} ms")
            assert 0 < latency < 0.8, f"reply heard {latency:.2f} s after the end of speech"
        lengths = []
        while (item := server.pop_additional_outputs(peer.webrtc_id)) is not None:
            lengths.append(item.args[0])
        speech = [s for s in scenario.segments if s.kind == "speech"]
        assert len(lengths) == len(speech)
        for got, seg in zip(lengths, speech, strict=True):
            assert got == pytest.approx(seg.end_s - seg.start_s, abs=0.06)
    finally:
        await peer.close()
        await server.shutdown()
