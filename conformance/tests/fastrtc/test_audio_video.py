"""fastrtc profile: the audio-video modality (AudioVideoStreamHandler,
AsyncAudioVideoStreamHandler) through real Gradio apps and aiortc peers.

Each client sends the fixtures' timestamp carrier (audio: every 100 ms block names the
client's sample counter) and barcoded video (every frame names its id) in one peer
connection; what comes back, and what the handlers got, is matched by content. The timing
requirements (FAV-006, FAV-007) are recorded alone, each in a session of its own.
"""

from __future__ import annotations

import asyncio
import queue
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from conformance.adapters import Adapter, Api, FastrtcApi, Scenario
from conformance.avsync import arrival_gaps, measure_skew
from conformance.helpers import MANY, Probe
from conformance.recording import Plan, Recordings, record_all
from conformance.wire import Wire, WirePeer, eventually

WIDTH, HEIGHT = 320, 240
#: The second client's frame ids and audio counter start here (the first's at 0).
SECOND_START_ID = 100_000
SECOND_START_SAMPLE = 48000 * 3600  # a multiple of the 960-sample frame and 4800-sample block
#: Each client's frame ids and audio counters.
ID_RANGES = {0: (0, SECOND_START_ID), 1: (SECOND_START_ID, 2 * SECOND_START_ID)}
COUNTER_RANGES = {0: (0, SECOND_START_SAMPLE), 1: (SECOND_START_SAMPLE, 2 * SECOND_START_SAMPLE)}
#: How long each session streams once both media are echoed.
STREAM_S = 4.5
#: The measured window (after the echo has settled).
WINDOW_S = 4.0
SETTLE_S = 0.5
SLOW_VIDEO_RECEIVE_S = 0.15
MAX_AUDIO_GAP_S = 0.050
MAX_SKEW_S = 0.040


def av_tracks(start_id: int = 0, start_sample: int = 0) -> tuple[Any, Any]:
    """A client's microphone (timestamp carrier) and camera (barcode frames, 30 fps)."""
    from fixtures.tracks import BarcodeVideoTrack, TimestampAudioTrack

    audio = TimestampAudioTrack(start_sample=start_sample, clock=time.time)
    video = BarcodeVideoTrack(WIDTH, HEIGHT, start_id=start_id, clock=time.time)
    return audio, video


def frame_id(image: Any) -> int | None:
    from fixtures.video import read_frame_id

    found = read_frame_id(np.asarray(image))
    return None if found is None else int(found)


def _note_video(probe: Probe, handler: Any, frame: Any) -> None:
    """Record what video_receive got: its kind and the frame id it carries."""
    probe.add(
        "video_in",
        (
            id(handler),
            type(frame).__name__,
            str(getattr(frame, "dtype", None)),
            getattr(frame, "shape", None),
            frame_id(frame),
        ),
    )


def _note_audio(probe: Probe, handler: Any, frame: Any, *, keep: bool) -> None:
    """Record what receive got (the first frames' kinds; with ``keep`` every array)."""
    rate, array = frame
    if probe.bump(f"audio_in:{id(handler)}") <= 5:
        probe.add(
            "audio_in",
            (id(handler), type(rate).__name__, type(array).__name__, getattr(array, "shape", None)),
        )
    if keep:
        probe.add("audio", (id(handler), int(rate), np.array(array, copy=True)))


def async_echo(
    api: Api,
    probe: Probe,
    *,
    keep_audio: bool = False,
    outputs: bool = False,
) -> Any:
    """The docs' asynchronous handler reflecting the webcam (video_receive puts each frame
    into an asyncio.Queue, video_emit awaits it), echoing the audio the same way.

    ``outputs``: every 30th frame leaves as ``(frame, AdditionalOutputs("video", n))``,
    every 50th audio frame as ``((rate, array), AdditionalOutputs("audio", n))``.
    """

    class AsyncAVEcho(api.AsyncAudioVideoStreamHandler):  # type: ignore[misc,name-defined]
        def __init__(self) -> None:
            super().__init__()
            self.queue: asyncio.Queue[Any] = asyncio.Queue()
            self.video_queue: asyncio.Queue[Any] = asyncio.Queue()
            self.frames_out = 0
            self.audio_out = 0

        async def receive(self, frame: Any) -> None:
            _note_audio(probe, self, frame, keep=keep_audio)
            await self.queue.put(frame)

        async def emit(self) -> Any:
            frame = await self.queue.get()
            self.audio_out += 1
            if outputs and self.audio_out % 50 == 0:
                return frame, api.AdditionalOutputs("audio", self.audio_out)
            return frame

        async def video_receive(self, frame: Any) -> None:
            _note_video(probe, self, frame)
            self.video_queue.put_nowait(frame)

        async def video_emit(self) -> Any:
            frame = await self.video_queue.get()
            self.frames_out += 1
            if outputs and self.frames_out % 30 == 0:
                return frame, api.AdditionalOutputs("video", self.frames_out)
            return frame

        def copy(self) -> Any:
            clone = AsyncAVEcho()
            probe.add("copy", id(clone))
            return clone

    template = AsyncAVEcho()
    probe.add("template", id(template))
    return template


def sync_echo(api: Api, probe: Probe, *, video_receive_s: float = 0.0) -> Any:
    """A synchronous handler echoing both media; emit and video_emit wait for the next
    item (as the guide's EchoHandler does; None after 0.5 s without one).
    ``video_receive_s``: how long video_receive takes per frame."""

    class AVEcho(api.AudioVideoStreamHandler):  # type: ignore[misc,name-defined]
        def __init__(self) -> None:
            super().__init__()
            self.queue: queue.Queue[Any] = queue.Queue()
            self.video_queue: queue.Queue[Any] = queue.Queue()

        def receive(self, frame: Any) -> None:
            _note_audio(probe, self, frame, keep=False)
            self.queue.put(frame)

        def emit(self) -> Any:
            try:
                return self.queue.get(timeout=0.5)
            except queue.Empty:
                return None

        def video_receive(self, frame: Any) -> None:
            _note_video(probe, self, frame)
            if video_receive_s:
                time.sleep(video_receive_s)
            self.video_queue.put(frame)

        def video_emit(self) -> Any:
            try:
                return self.video_queue.get(timeout=0.5)
            except queue.Empty:
                return None

        def copy(self) -> Any:
            clone = AVEcho()
            probe.add("copy", id(clone))
            return clone

    template = AVEcho()
    probe.add("template", id(template))
    return template


def av_scenario(handler: Callable[[Api], Any], **kwargs: Any) -> Scenario:
    return Scenario("send-receive", "audio-video", handler, needs_fastrtc=True, **kwargs)


def echoing(peer: WirePeer) -> bool:
    """Both media of ``peer`` are coming back (a readable frame and a timestamp marker)."""
    video, audio = peer.recorders.get("video"), peer.recorders.get("audio")
    return (
        video is not None
        and audio is not None
        and any(f.frame_id is not None for f in video.frames)
        and bool(audio.markers)
    )


async def stream_echo(peers: list[WirePeer], seconds: float = STREAM_S) -> float:
    """Connect ``peers``, wait until each echoes both media, stream ``seconds`` more;
    return when the echo was established (``time.time()``)."""
    for peer in peers:
        await peer.connect_ok()
    for peer in peers:
        await peer.wait_remote()
    await eventually(lambda: all(echoing(p) for p in peers), 10.0)
    started = time.time()
    await eventually(lambda: time.time() > started + seconds, seconds + 1.0)
    return started


def _echo_plan(make: Callable[[Api, Probe], Any], *, timed: bool = False) -> Plan:
    """One client (frame ids from 0, counter from 0) and an echo handler."""

    def scenario(probe: Probe) -> Scenario:
        return av_scenario(lambda api: make(api, probe))

    async def script(wire: Wire, probe: Probe) -> dict[str, Any]:
        audio, video = av_tracks()
        peer = wire.peer(send=[audio, video], timestamps=True, rtp_timing=timed)
        started = await stream_echo([peer])
        await peer.close()
        return {"audio": audio, "video": video, "started": started}

    return Plan(scenario, script)


def _copies_plan() -> Plan:
    """Two clients at once (distinct frame ids and audio counters), the async echo."""

    def scenario(probe: Probe) -> Scenario:
        return av_scenario(
            lambda api: async_echo(api, probe, keep_audio=True), concurrency_limit=MANY
        )

    async def script(wire: Wire, probe: Probe) -> dict[str, Any]:
        tracks = [av_tracks(), av_tracks(SECOND_START_ID, SECOND_START_SAMPLE)]
        peers = [wire.peer(send=list(pair), timestamps=True) for pair in tracks]
        await stream_echo(peers, 3.0)
        for peer in peers:
            await peer.close()
        return {"tracks": tracks}

    return Plan(scenario, script)


def _outputs_plan() -> Plan:
    def scenario(probe: Probe) -> Scenario:
        return av_scenario(lambda api: async_echo(api, probe, outputs=True), outputs=2)

    async def script(wire: Wire, probe: Probe) -> dict[str, Any]:
        peer = wire.peer(send=list(av_tracks()), timestamps=True)
        await stream_echo([peer], 0.5)

        def both() -> bool:
            kinds = {v[0] for v in peer.output_values() if isinstance(v, list) and v}
            return {"audio", "video"} <= kinds

        await eventually(both, 6.0)
        await peer.close()
        return {}

    return Plan(scenario, script)


@pytest.fixture(scope="module")
def av_sessions(adapter: Adapter, fapi: FastrtcApi) -> dict[str, Recordings]:
    """The sync echo, two clients of the async echo, and AdditionalOutputs, recorded one
    after the other: an audio-video session runs four VP8 codecs and two Opus ones in
    the suite's process, and three at once would starve each other's video."""
    plans = {
        "sync": _echo_plan(lambda api, probe: sync_echo(api, probe)),
        "copies": _copies_plan(),
        "outputs": _outputs_plan(),
    }
    return {name: record_all(adapter, {name: plan}) for name, plan in plans.items()}


@pytest.fixture(scope="module")
def async_session(adapter: Adapter, fapi: FastrtcApi) -> Recordings:
    """The docs' async echo, recorded alone with RTP timing (FAV-007 measures it)."""
    return record_all(
        adapter, {"async": _echo_plan(lambda api, probe: async_echo(api, probe), timed=True)}
    )


@pytest.fixture(scope="module")
def slow_session(adapter: Adapter, fapi: FastrtcApi) -> Recordings:
    """The sync echo with a slow video_receive, recorded alone with RTP timing (FAV-006)."""
    return record_all(
        adapter,
        {
            "slow": _echo_plan(
                lambda api, probe: sync_echo(api, probe, video_receive_s=SLOW_VIDEO_RECEIVE_S),
                timed=True,
            )
        },
    )


# -- what the checks read -------------------------------------------------------------------


def first_ids(peer: WirePeer) -> list[int]:
    """The frame ids the client got back, each once, in the order they first arrived."""
    seen: list[int] = []
    known: set[int] = set()
    for frame in peer.recorders["video"].frames if "video" in peer.recorders else []:
        if frame.frame_id is not None and frame.frame_id not in known:
            known.add(frame.frame_id)
            seen.append(frame.frame_id)
    return seen


def markers(peer: WirePeer) -> list[int]:
    """The client sample counters named by the timestamp markers it got back, in order."""
    recorder = peer.recorders.get("audio")
    return [m.sent_sample for m in recorder.markers] if recorder is not None else []


def check_echo(recording: Any, *, start_id: int = 0, start_sample: int = 0) -> None:
    """The client got back its own video (ids in order, >= 60 distinct) and audio
    (markers of its own counter, in order, >= 25), and the handler got numpy frames."""
    peer = recording.peer
    ids = first_ids(peer)
    assert len(ids) >= 60, f"the client got {len(ids)} distinct frames back: {ids[:10]}"
    assert ids == sorted(ids), f"echoed frames out of order: {ids[:30]}"
    sent_ids = set(recording.notes["video"].sent)
    assert set(ids) <= sent_ids, f"frames the client never sent: {sorted(set(ids) - sent_ids)[:5]}"
    counters = markers(peer)
    assert len(counters) >= 25, f"{len(counters)} timestamp markers came back in the audio"
    assert counters == sorted(counters), f"echoed audio out of order: {counters[:20]}"
    audio = recording.notes["audio"]
    assert all(start_sample <= c < start_sample + audio.samples_sent for c in counters), (
        f"audio markers {counters[:5]}... are not of the client's counter"
    )
    kinds = {v[1:4] for v in recording.probe.get("video_in")}
    assert kinds == {("ndarray", "uint8", (HEIGHT, WIDTH, 3))}, f"video_receive got {kinds}"
    audio_in = {(v[1], v[2]) for v in recording.probe.get("audio_in")}
    assert audio_in == {("int", "ndarray")}, f"receive got (rate, array) of types {audio_in}"


def _sdp_directions(sdp: str) -> dict[str, list[str]]:
    """Media kind -> the direction of each of its m-sections."""
    out: dict[str, list[str]] = {}
    for section in sdp.split("\nm=")[1:]:
        kind = section.split(" ", 1)[0]
        direction = next(
            (
                line.strip()[2:]
                for line in section.splitlines()
                if line.strip() in ("a=sendrecv", "a=sendonly", "a=recvonly", "a=inactive")
            ),
            "sendrecv",
        )
        out.setdefault(kind, []).append(direction)
    return out


# -- the requirements -------------------------------------------------------------------------


def _partial_and_full(base: Any, asynchronous: bool) -> tuple[type, type]:
    """A subclass of ``base`` with the audio methods and copy only, and one with all."""
    if asynchronous:

        class Partial(base):  # type: ignore[misc,valid-type]
            async def receive(self, frame: Any) -> None:
                return None

            async def emit(self) -> Any:
                return None

            def copy(self) -> Any:
                return type(self)()

        class Full(Partial):
            async def video_receive(self, frame: Any) -> None:
                return None

            async def video_emit(self) -> Any:
                return None

    else:

        class Partial(base):  # type: ignore[misc,valid-type,no-redef]
            def receive(self, frame: Any) -> None:
                return None

            def emit(self) -> Any:
                return None

            def copy(self) -> Any:
                return type(self)()

        class Full(Partial):  # type: ignore[no-redef]
            def video_receive(self, frame: Any) -> None:
                return None

            def video_emit(self) -> Any:
                return None

    return Partial, Full


@pytest.mark.requirement("FAV-001")
def test_audio_video_handlers_exist_and_the_modality_is_served(
    api: Api, async_session: Recordings
) -> None:
    """Both base classes are exported and abstract in the video methods; an audio-video
    send-receive stream answers an audio + video offer with both sections sendrecv."""
    for name, asynchronous in (
        ("AudioVideoStreamHandler", False),
        ("AsyncAudioVideoStreamHandler", True),
    ):
        base = getattr(api, name)
        assert isinstance(base, type), f"{name} is not exported ({base!r})"
        partial, full = _partial_and_full(base, asynchronous)
        with pytest.raises(TypeError):
            partial()
        full()
    reply = async_session["async"].peer.reply
    assert reply is not None and isinstance(reply.body, dict), "no reply to the offer"
    sdp = reply.body.get("sdp")
    assert isinstance(sdp, str), f"the offer was not answered: {reply.body!r}"[:300]
    directions = _sdp_directions(sdp)
    assert directions.get("audio") == ["sendrecv"] and directions.get("video") == ["sendrecv"], (
        f"the answer's media sections: {directions}"
    )
    assert "application" in directions, "the answer has no data channel section"


@pytest.mark.requirement("FAV-002")
def test_async_handler_echoes_audio_and_video(async_session: Recordings) -> None:
    """The docs' AsyncAudioVideoStreamHandler reflects the client's frames and audio."""
    check_echo(async_session["async"])


@pytest.mark.requirement("FAV-003")
def test_sync_handler_echoes_audio_and_video(av_sessions: dict[str, Recordings]) -> None:
    """An AudioVideoStreamHandler whose emit and video_emit wait on queues echoes both."""
    check_echo(av_sessions["sync"]["sync"])


@pytest.mark.requirement("FAV-004")
def test_each_connection_gets_its_own_copy(av_sessions: dict[str, Recordings]) -> None:
    """Two clients: each copy gets one client's media only, each client its own back."""
    from fixtures.timestamps import decode

    recording = av_sessions["copies"]["copies"]
    probe = recording.probe
    template = probe.get("template")[0]
    video_by_handler: dict[int, set[int]] = {}
    for handler, *_, fid in probe.get("video_in"):
        if fid is not None:
            video_by_handler.setdefault(handler, set()).add(fid)
    assert template not in video_by_handler, "the handler given to stream() got video"
    clients_of = {
        handler: {c for c, (lo, hi) in ID_RANGES.items() if any(lo <= i < hi for i in ids)}
        for handler, ids in video_by_handler.items()
    }
    assert sorted(map(sorted, clients_of.values())) == [[0], [1]], (
        f"video_receive of each handler got frames of clients {clients_of} (want one each)"
    )
    audio_by_handler: dict[int, list[np.ndarray]] = {}
    for handler, rate, array in probe.get("audio"):
        assert rate == 48000, f"receive got {rate} Hz audio"
        audio_by_handler.setdefault(handler, []).append(np.asarray(array).reshape(-1))
    assert template not in audio_by_handler, "the handler given to stream() got audio"
    for handler, chunks in audio_by_handler.items():
        found = [m.sent_sample for m in decode(np.concatenate(chunks), 48000)]
        assert found, f"no timestamp markers in the audio handler {handler} received"
        assert handler in clients_of, f"handler {handler} got audio but no readable video"
        (client,) = clients_of[handler]
        lo, hi = COUNTER_RANGES[client]
        foreign = [c for c in found if not lo <= c < hi]
        assert not foreign, (
            f"the handler serving client {client} received another client's audio: {foreign[:5]}"
        )
    for index, peer in enumerate(recording.peers):
        lo, hi = ID_RANGES[index]
        ids = first_ids(peer)
        assert len(ids) >= 30, f"client {index} got {len(ids)} frames back"
        assert all(lo <= i < hi for i in ids), f"client {index} got foreign frames back"
        counters = markers(peer)
        lo, hi = COUNTER_RANGES[index]
        assert len(counters) >= 10, f"client {index} got {len(counters)} markers back"
        assert all(lo <= c < hi for c in counters), (
            f"client {index} got another client's audio back: {counters[:5]}"
        )


@pytest.mark.requirement("FAV-005")
def test_additional_outputs_from_an_audio_video_handler(
    av_sessions: dict[str, Recordings],
) -> None:
    """(frame, AdditionalOutputs) from video_emit and ((rate, array), AdditionalOutputs)
    from emit reach on_additional_outputs, and the media is still played."""
    recording = av_sessions["outputs"]["outputs"]
    values = recording.peer.output_values()
    by_kind: dict[str, list[Any]] = {}
    for value in values:
        if isinstance(value, list) and len(value) == 2 and isinstance(value[0], str):
            by_kind.setdefault(value[0], []).append(value[1])
    assert set(by_kind) >= {"audio", "video"}, f"on_additional_outputs got {values[:6]}"
    for kind, step in (("video", 30), ("audio", 50)):
        counts = by_kind[kind]
        assert all(isinstance(n, int) and n % step == 0 for n in counts), (
            f"{kind} outputs carried {counts[:6]}"
        )
    assert len(first_ids(recording.peer)) >= 15, "the video did not come back with the outputs"
    assert len(markers(recording.peer)) >= 5, "the audio did not come back with the outputs"


def _quiet_run(recorder: Any, start: float, end: float) -> float:
    """The longest run (s) of quiet 10 ms blocks in the audio that arrived in
    ``[start, end]`` (RMS under 0.02 of full scale)."""
    rate = recorder.sample_rate or 48000
    frames = [(p, n) for p, n, arrival in recorder.frames if start <= arrival <= end]
    if not frames:
        return end - start
    samples = recorder.samples()[frames[0][0] : frames[-1][0] + frames[-1][1]]
    x = samples.astype(np.float64) / 32768
    block = rate // 100
    count = len(x) // block
    rms = np.sqrt(np.mean(x[: count * block].reshape(count, block) ** 2, axis=1))
    longest = run = 0
    for quiet in rms < 0.02:
        run = run + 1 if quiet else 0
        longest = max(longest, run)
    return longest * block / rate


@pytest.mark.requirement("FAV-006")
def test_slow_video_receive_does_not_gap_the_audio(slow_session: Recordings) -> None:
    """video_receive sleeping 150 ms per frame: the echoed audio keeps flowing, with no
    gap over 50 ms."""
    recording = slow_session["slow"]
    calls = [v for v in recording.probe.get("video_in") if v[4] is not None]
    assert calls, "video_receive was never called"
    peer = recording.peer
    start = recording.notes["started"] + SETTLE_S
    end = start + WINDOW_S
    audio = peer.recorders.get("audio")
    assert audio is not None and peer.rtp is not None, "no audio came back"
    rtp_gap = arrival_gaps(peer.rtp["audio"], start, end)
    quiet = _quiet_run(audio, start, end)
    timing = peer.rtp["audio"]
    packets = sum(start <= t <= end for t, _ in timing.arrivals)
    assert packets * 0.02 >= 0.9 * WINDOW_S, (
        f"{packets * 0.02:.2f} s of audio came back in {WINDOW_S:.0f} s"
    )
    assert rtp_gap <= MAX_AUDIO_GAP_S, (
        f"the echoed audio's packets paused {rtp_gap * 1000:.0f} ms (beyond a frame period)"
    )
    assert quiet <= MAX_AUDIO_GAP_S, f"the echoed audio fell silent for {quiet * 1000:.0f} ms"


@pytest.mark.requirement("FAV-007")
def test_audio_and_video_leave_together(
    async_session: Recordings, capsys: pytest.CaptureFixture[str]
) -> None:
    """Audio and video that reached the server together leave it within 40 ms (p95)."""
    recording = async_session["async"]
    peer = recording.peer
    skew = measure_skew(peer, since=recording.notes["started"])
    with capsys.disabled():
        print(f"\nFAV-007 {skew.summary()}")
    assert len(skew.samples) >= 60, f"too few frames to measure: {skew.summary()}"
    p95 = skew.percentile(95, absolute=True)
    assert p95 <= MAX_SKEW_S, f"|skew| p95 {p95 * 1000:.1f} ms > 40 ms: {skew.summary()}"
