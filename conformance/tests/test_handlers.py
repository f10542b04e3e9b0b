"""How user code is driven: StreamHandler's receive/emit/copy, blocking and idle handlers,
and user code kept off the server's event loop."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from conformance.adapters import Adapter, Api, Scenario
from conformance.helpers import (
    MANY,
    Probe,
    echo_handler,
    loud_seconds,
    recording_handler,
    run_async,
)
from conformance.recording import Plan, Recordings, record_all
from conformance.wire import Wire, eventually

ECHO_FREQS = tuple(400.0 + 100.0 * i for i in range(8))


def tone_track(freq: float) -> Any:
    from fixtures.tracks import ToneAudioTrack

    return ToneAudioTrack(freq)


def _two_connections_plan() -> Plan:
    def scenario(probe: Probe) -> Scenario:
        return Scenario(
            "send-receive",
            "audio",
            lambda api: recording_handler(api, probe, keep_audio=False),
            concurrency_limit=MANY,
        )

    async def script(wire: Wire, probe: Probe) -> dict[str, Any]:
        peers = [wire.peer(send=tone_track(440.0)) for _ in range(2)]
        for peer in peers:
            await peer.connect_ok()
        await eventually(lambda: len({r[4] for r in probe.get("receive")}) >= 2, 6.0)
        for peer in peers:
            await peer.close()
        return {}

    return Plan(scenario, script)


def _idle_plan() -> Plan:
    def scenario(probe: Probe) -> Scenario:
        return Scenario(
            "send-receive", "audio", lambda api: recording_handler(api, probe, keep_audio=False)
        )

    async def script(wire: Wire, probe: Probe) -> dict[str, Any]:
        peer = wire.peer(send=tone_track(440.0))
        await peer.connect_ok()
        await eventually(lambda: probe.count("receive") >= 25, 6.0)
        start, emits = time.time(), probe.count("emit")
        await eventually(lambda: time.time() > start + 1.0, 2.0)
        rate = (probe.count("emit") - emits) / (time.time() - start)
        await peer.close()
        return {"rate": rate}

    return Plan(scenario, script)


def _blocking_echo_plan() -> Plan:
    def scenario(probe: Probe) -> Scenario:
        return Scenario("send-receive", "audio", echo_handler, concurrency_limit=MANY)

    async def script(wire: Wire, probe: Probe) -> dict[str, Any]:
        peers = [wire.peer(send=tone_track(freq)) for freq in ECHO_FREQS]
        for peer in peers:
            await peer.connect_ok()
        for peer in peers:
            recorder = await peer.wait_remote()
            await recorder.wait_for_samples(48000 * 2, 8.0)
        for peer in peers:
            await peer.close()
        return {}

    return Plan(scenario, script)


def _blocked_loop_plan() -> Plan:
    """A video fn that blocks for 1 s per frame, and another client's offer meanwhile."""

    def scenario(probe: Probe) -> Scenario:
        def blocking(image: np.ndarray) -> np.ndarray:
            probe.add("entered", time.time())
            time.sleep(1.0)
            return image

        return Scenario("send-receive", "video", lambda api: blocking, concurrency_limit=MANY)

    async def script(wire: Wire, probe: Probe) -> dict[str, Any]:
        from fixtures.tracks import BarcodeVideoTrack

        busy = wire.peer(send=BarcodeVideoTrack(320, 240))
        await busy.connect_ok()
        await eventually(lambda: len(probe.get("entered")) >= 2, 6.0)
        other = wire.peer(send=BarcodeVideoTrack(320, 240))
        body = await other.offer_body()
        start = time.time()
        reply = await wire.offer(body)
        elapsed = time.time() - start
        for peer in (busy, other):
            await peer.close()
        return {"elapsed": elapsed, "reply": reply}

    return Plan(scenario, script)


@pytest.fixture(scope="module")
def handler_sessions(adapter: Adapter) -> Recordings:
    return record_all(
        adapter,
        {
            "two": _two_connections_plan(),
            "idle": _idle_plan(),
            "blocked-loop": _blocked_loop_plan(),
        },
    )


@pytest.fixture(scope="module")
def blocking_sessions(adapter: Adapter) -> Recordings:
    """Eight blocking echo handlers at once (recorded alone: it is CPU-heavy)."""
    return record_all(adapter, {"eight": _blocking_echo_plan()})


@pytest.mark.requirement("HND-001")
def test_copy_gives_each_connection_its_own_handler(handler_sessions: Recordings) -> None:
    """copy() is called at the beginning of each stream so each connection has its own
    handler; the instance given to stream() is never driven."""
    probe = handler_sessions["two"].probe
    template = probe.get("template")[0]
    copies = probe.get("copy")
    served_by = {r[4] for r in probe.get("receive")} | set(probe.get("emitter"))
    assert len(copies) >= 2, f"copy() was called {len(copies)} times for two connections"
    assert template not in served_by, "the handler passed to stream() was driven directly"
    receivers = {r[4] for r in probe.get("receive")}
    assert len(receivers) == 2, f"two connections were served by {len(receivers)} handler(s)"
    assert receivers <= {clone for _, clone in copies}, "a handler that copy() did not return ran"


@pytest.mark.requirement("HND-002")
def test_receive_is_called_for_each_frame(audio_sessions: Recordings) -> None:
    """receive is called for each frame received from the client (tens of calls per second)."""
    calls = audio_sessions["receiver"].probe.get("receive")
    assert len(calls) >= 50, f"receive was called {len(calls)} times"
    span = calls[-1][0] - calls[0][0]
    rate = (len(calls) - 1) / span if span > 0 else 0.0
    assert rate >= 20, f"receive was called {rate:.1f} times per second"


@pytest.mark.requirement("HND-003")
def test_emit_output_is_sent(audio_sessions: Recordings) -> None:
    """emit is called repeatedly for the whole stream, and each value it returns is sent as
    the next output."""
    recording = audio_sessions["receiver"]
    recorder = recording.peer.recorder
    assert recorder is not None, "the client received no audio track"
    emits = recording.probe.count("emit")
    assert emits >= 50, f"emit was called {emits} times"
    heard = loud_seconds(recorder.samples(), recorder.sample_rate or 48000)
    expected = 0.02 * (recording.probe.count("receive"))
    assert heard >= 0.6 * expected, f"{heard:.2f} s of the {expected:.2f} s emitted was heard"


@pytest.mark.requirement("HND-004")
def test_emit_none_means_not_ready(audio_sessions: Recordings) -> None:
    """emit returning None means nothing is ready; the stream continues and later frames are
    still sent."""
    recording = audio_sessions["receiver"]
    assert recording.probe.count("emit_none") > 0, "emit never returned None in this session"
    recorder = recording.peer.recorder
    assert recorder is not None, "the client received no audio track"
    samples = recorder.samples()
    rate = recorder.sample_rate or 48000
    last_second = samples[-rate:]
    assert loud_seconds(last_second, rate) >= 0.5, "output stopped after emit returned None"


@pytest.mark.requirement("HND-005")
def test_blocking_emit_blocks_only_its_connection(blocking_sessions: Recordings) -> None:
    """A blocking emit (the guide's own EchoHandler blocks in Queue.get()) blocks only its own
    connection: eight such connections all echo at once."""
    from fixtures.analysis import dominant_frequency

    peers = blocking_sessions["eight"].peers
    for freq, peer in zip(ECHO_FREQS, peers, strict=True):
        recorder = peer.recorder
        assert recorder is not None, f"the {freq:.0f} Hz client received no audio"
        samples = recorder.samples().astype(np.float64)[-24000:] / 32768
        assert loud_seconds(samples, 48000) >= 0.25, f"the {freq:.0f} Hz client got no echo"
        found = dominant_frequency(samples, 48000)
        assert found == pytest.approx(freq, abs=5), f"the {freq:.0f} Hz client heard {found:.0f} Hz"


@pytest.mark.requirement("HND-006")
def test_idle_emit_is_not_busy_polled(handler_sessions: Recordings) -> None:
    """An idle handler (emit returns None) is not busy-polled: fewer than 200 emit calls per
    second."""
    rate = handler_sessions["idle"].notes["rate"]
    assert rate < 200, f"emit was called {rate:.0f} times per second while idle"


@pytest.mark.requirement("HND-007")
def test_user_code_does_not_block_signalling(handler_sessions: Recordings) -> None:
    """User code never runs on the server's event loop: while one connection's receive
    blocks, another client's offer is answered within 1 s."""
    notes = handler_sessions["blocked-loop"].notes
    reply = notes["reply"]
    assert reply.status == 200, f"HTTP {reply.status}"
    assert notes["elapsed"] < 1.0, (
        f"the offer took {notes['elapsed']:.2f} s while another user's fn was blocking"
    )


# -- property: input rate and layout ------------------------------------------------------------


class _Config:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.kwargs: dict[str, Any] = {}


@pytest.fixture(scope="module")
def configurable_stream(adapter: Adapter) -> Iterator[tuple[Any, _Config, Probe]]:
    """A send-mode stream whose handler copies take their constructor arguments from
    ``config`` (so each example gets a handler with another rate/layout)."""
    config, probe = _Config(), Probe()

    def handler(api: Api) -> Any:
        class Configurable(api.StreamHandler):  # type: ignore[name-defined,misc]
            def __init__(self, **kwargs: Any) -> None:
                super().__init__(**kwargs)
                self.tag = kwargs

            def receive(self, frame: tuple[int, np.ndarray]) -> None:
                rate, array = frame
                probe.add("frame", (time.time(), rate, np.array(array, copy=True), id(self)))

            def emit(self) -> None:
                return None

            def copy(self) -> Any:
                with config.lock:
                    return Configurable(**config.kwargs)

        return Configurable()

    scenario = Scenario("send", "audio", handler, concurrency_limit=MANY)
    with adapter.serve(scenario) as served:
        yield served, config, probe


def _check_input(served: Any, config: _Config, probe: Probe, rate: int, layout: str) -> str | None:
    """Stream 1.6 s of a 440 Hz tone to a handler built for (rate, layout); what went wrong?"""
    from fixtures.analysis import dominant_frequency

    with config.lock:
        config.kwargs = {"expected_layout": layout, "input_sample_rate": rate}
    channels = 2 if layout == "stereo" else 1
    where = f"{layout} at {rate} Hz"

    async def stream() -> list[Any]:
        wire = Wire(served)
        try:
            peer = wire.peer(send=tone_track(440.0))
            await peer.connect_ok()
            start = time.time()
            await eventually(lambda: time.time() > start + 1.6, 3.0)
            frames = [f for f in probe.get("frame") if f[0] >= start]
            await peer.close()
            return frames
        finally:
            await wire.aclose()

    try:
        frames = run_async(stream())
    except Exception as exc:
        return f"{where}: {type(exc).__name__}: {exc}"
    if len(frames) < 10:
        return f"{where}: receive was called {len(frames)} times in 1.6 s"
    rates = {f[1] for f in frames}
    if rates != {rate}:
        return f"{where}: receive got rates {sorted(rates)}"
    arrays = [f[2] for f in frames]
    if {a.dtype.name for a in arrays} != {"int16"}:
        return f"{where}: receive got dtypes {sorted({a.dtype.name for a in arrays})}"
    shapes = sorted({a.shape for a in arrays})
    if not all(a.ndim == 2 and a.shape[0] == 1 and a.shape[1] % channels == 0 for a in arrays):
        return f"{where}: receive got shapes {shapes}"
    samples = np.concatenate([a.reshape(-1) for a in arrays[1:]])
    per_channel = samples.reshape(-1, channels)
    window = frames[-1][0] - frames[1][0]
    seconds = (per_channel.shape[0] - arrays[-1].size // channels) / rate
    if abs(seconds - window) > max(0.1, 0.3 * window):
        return f"{where}: {seconds:.2f} s of audio delivered over {window:.2f} s"
    if channels == 2:
        difference = np.abs(per_channel[:, 0].astype(int) - per_channel[:, 1].astype(int))
        if float(np.mean(difference)) >= 300:
            return f"{where}: the frames are not interleaved L/R"
    found = dominant_frequency(per_channel[:, 0].astype(np.float64) / 32768, rate)
    if abs(found - 440.0) > 10:
        return f"{where}: a 440 Hz tone arrived as {found:.0f} Hz"
    return None


@pytest.mark.requirement("HND-008")
def test_input_rate_and_layout_are_honoured(
    configurable_stream: tuple[Any, _Config, Probe],
) -> None:
    """StreamHandler(expected_layout=L, input_sample_rate=R): receive gets (R, int16 array)
    frames, mono (1, N) or stereo interleaved (1, 2N), delivering audio in real time."""
    served, config, probe = configurable_stream
    failures: list[str] = []

    @settings(
        max_examples=3,
        deadline=None,
        derandomize=True,
        database=None,
        phases=[Phase.explicit, Phase.generate],  # real streams: no shrinking, no replay
        suppress_health_check=list(HealthCheck),
    )
    @given(
        rate=st.sampled_from([8000, 16000, 24000, 32000, 48000]),
        layout=st.sampled_from(["mono", "stereo"]),
    )
    def example(rate: int, layout: str) -> None:
        problem = _check_input(served, config, probe, rate, layout)
        if problem is not None:
            failures.append(problem)

    example()
    assert not failures, "; ".join(failures)


@pytest.mark.requirement("HND-009")
async def test_slow_copy_and_shutdown_disturb_no_other_connection(adapter: Adapter) -> None:
    """A StreamHandler whose copy() and shutdown() block for 1 s does not disturb other
    connections: a live echo session's audio shows no gap over 50 ms while another client
    connects and leaves."""
    from conformance.helpers import audio_gap, echo_handler
    from conformance.wire import scaled, serving
    from fixtures.tracks import ToneAudioTrack

    probe = Probe()

    def slow_echo(api: Api) -> Any:
        base = type(echo_handler(api))

        class SlowSetupEcho(base):  # type: ignore[valid-type,misc]
            def copy(self) -> Any:
                time.sleep(1.0)
                probe.bump("copy")
                return SlowSetupEcho()

            def shutdown(self) -> None:
                time.sleep(1.0)
                probe.bump("shutdown")

        return SlowSetupEcho()

    scenario = Scenario("send-receive", "audio", slow_echo, concurrency_limit=4)
    async with serving(adapter, scenario) as wire:
        live = wire.peer(send=ToneAudioTrack(440.0))
        await live.connect_ok()
        recorder = await live.wait_remote()
        assert await recorder.wait_for_samples(48000, 5.0), "the live session gets no audio"
        started = time.time()
        visitor = wire.peer(send=ToneAudioTrack(440.0))
        await visitor.connect_ok()
        await visitor.close(stop_message=True)
        await eventually(lambda: probe.count("shutdown") >= 1, 8.0)
        ended = time.time() + 0.3
        await eventually(lambda: time.time() > ended, 2.0)
        assert probe.count("copy") >= 2, "copy() was not called for the second client"
        assert probe.count("shutdown") >= 1, "shutdown() never ran after the visitor left"
        gap = audio_gap(recorder, started, ended)
        assert gap <= scaled(0.05), (
            f"the live session's audio stopped for {gap * 1000:.0f} ms while another "
            "connection's copy() or shutdown() ran"
        )
