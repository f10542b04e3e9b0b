"""fastrtc profile: StreamHandler and AsyncStreamHandler (start_up, send_message,
clear_queue, the inputs, the connection's context, async shutdown), through real Gradio
apps and aiortc peers."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from conformance.adapters import Adapter, Api, FastrtcApi, Input, Scenario
from conformance.helpers import MANY, Probe
from conformance.recording import Plan, Recordings, record_all
from conformance.tests.fastrtc.media import (
    chunk,
    contexts_check,
    heard,
    note_context,
    tone_frames,
    tone_track,
)
from conformance.wire import Wire, eventually

ECHO_FREQS = (440.0, 660.0)


def _async_echo_plan(fapi: FastrtcApi) -> Plan:
    """The docs' AsyncEchoHandler, recording its frames, start_up, shutdown and context;
    two clients."""

    def scenario(probe: Probe) -> Scenario:
        def handler(api: Api) -> Any:
            class AsyncEchoHandler(fapi.AsyncStreamHandler):  # type: ignore[misc,name-defined]
                def __init__(self) -> None:
                    super().__init__(input_sample_rate=24000)
                    self.queue: asyncio.Queue[Any] = asyncio.Queue()

                async def receive(self, frame: Any) -> None:
                    rate, array = frame
                    if probe.bump(f"receive:{id(self)}") <= 5:
                        probe.add("frame", (rate, str(array.dtype), array.shape))
                    note_context(fapi, probe, "receive", id(self))
                    await self.queue.put(frame)

                async def emit(self) -> Any:
                    note_context(fapi, probe, "emit", id(self))
                    return await fapi.wait_for_item(self.queue)

                def copy(self) -> Any:
                    clone = AsyncEchoHandler()
                    probe.add("copy", id(clone))
                    return clone

                async def start_up(self) -> None:
                    await asyncio.sleep(0)
                    probe.add("start_up", id(self))
                    note_context(fapi, probe, "start_up", id(self))

                async def shutdown(self) -> None:
                    await asyncio.sleep(0.01)
                    probe.add("shutdown", id(self))

            template = AsyncEchoHandler()
            probe.add("template", id(template))
            return template

        return Scenario(
            "send-receive", "audio", handler, concurrency_limit=MANY, needs_fastrtc=True
        )

    async def script(wire: Wire, probe: Probe) -> dict[str, Any]:
        peers = [wire.peer(send=tone_track(freq)) for freq in ECHO_FREQS]
        for peer in peers:
            await peer.connect_ok()
        for peer in peers:
            recorder = await peer.wait_remote()
            await recorder.wait_for_samples(int(48000 * 2.0), 8.0)
        for peer in peers:
            await peer.close()
        await eventually(lambda: len(probe.get("shutdown")) >= 2, 5.0)
        return {"ids": [p.webrtc_id for p in peers]}

    return Plan(scenario, script)


def _sync_start_up_plan(fapi: FastrtcApi) -> Plan:
    """A StreamHandler whose emit plays a tone only once its start_up has run; two clients."""

    def scenario(probe: Probe) -> Scenario:
        def handler(api: Api) -> Any:
            class Starting(api.StreamHandler):  # type: ignore[misc,name-defined]
                def __init__(self) -> None:
                    super().__init__()
                    self.ready = False
                    self.sent = 0

                def start_up(self) -> None:
                    probe.add("start_up", id(self))
                    note_context(fapi, probe, "start_up", id(self))
                    self.ready = True

                def receive(self, frame: Any) -> None:
                    note_context(fapi, probe, "receive", id(self))

                def emit(self) -> Any:
                    note_context(fapi, probe, "emit", id(self))
                    if self.ready and self.sent < 50:
                        self.sent += 1
                        return chunk(500.0, 0.02)
                    time.sleep(0.02)
                    return None

                def copy(self) -> Any:
                    clone = Starting()
                    probe.add("copy", id(clone))
                    return clone

            template = Starting()
            probe.add("template", id(template))
            return template

        return Scenario(
            "send-receive", "audio", handler, concurrency_limit=MANY, needs_fastrtc=True
        )

    async def script(wire: Wire, probe: Probe) -> dict[str, Any]:
        peers = [wire.peer(send=tone_track(440.0)) for _ in range(2)]
        for peer in peers:
            await peer.connect_ok()
        for peer in peers:
            recorder = await peer.wait_remote()
            await eventually(lambda r=recorder: heard(r, 500.0) >= 0.8, 6.0)
        for peer in peers:
            await peer.close()
        return {"ids": [p.webrtc_id for p in peers]}

    return Plan(scenario, script)


def _long_start_up_plan(fapi: FastrtcApi, kind: str) -> Plan:
    """start_up keeps running until shutdown (an API session held open); emit plays a tone."""

    def scenario(probe: Probe) -> Scenario:
        def handler(api: Api) -> Any:
            if kind == "async":

                class LongAsync(fapi.AsyncStreamHandler):  # type: ignore[misc,name-defined]
                    def __init__(self) -> None:
                        super().__init__()
                        self.closed = False
                        self.sent = 0

                    async def start_up(self) -> None:
                        probe.add("began", time.time())
                        deadline = time.time() + 15.0
                        while not self.closed and time.time() < deadline:
                            await asyncio.sleep(0.05)
                        probe.add("ended", time.time())

                    async def receive(self, frame: Any) -> None:
                        probe.add("receive", time.time())

                    async def emit(self) -> Any:
                        if self.sent < 50:
                            self.sent += 1
                            return chunk(700.0, 0.02)
                        await asyncio.sleep(0.02)
                        return None

                    def copy(self) -> Any:
                        return LongAsync()

                    async def shutdown(self) -> None:
                        self.closed = True

                return LongAsync()

            class LongSync(api.StreamHandler):  # type: ignore[misc,name-defined]
                def __init__(self) -> None:
                    super().__init__()
                    self.closed = False
                    self.sent = 0

                def start_up(self) -> None:
                    probe.add("began", time.time())
                    deadline = time.time() + 15.0
                    while not self.closed and time.time() < deadline:
                        time.sleep(0.05)
                    probe.add("ended", time.time())

                def receive(self, frame: Any) -> None:
                    probe.add("receive", time.time())

                def emit(self) -> Any:
                    if self.sent < 50:
                        self.sent += 1
                        return chunk(700.0, 0.02)
                    time.sleep(0.02)
                    return None

                def copy(self) -> Any:
                    return LongSync()

                def shutdown(self) -> None:
                    self.closed = True

            return LongSync()

        return Scenario("send-receive", "audio", handler, needs_fastrtc=True)

    async def script(wire: Wire, probe: Probe) -> dict[str, Any]:
        peer = wire.peer(send=tone_track(440.0))
        await peer.connect_ok()
        recorder = await peer.wait_remote()
        await eventually(lambda: heard(recorder, 700.0) >= 0.5, 6.0)
        closing = time.time()
        await peer.close()
        await eventually(lambda: bool(probe.get("ended")), 5.0)
        return {"closing": closing}

    return Plan(scenario, script)


def _send_message_plan(fapi: FastrtcApi, kind: str) -> Plan:
    """Each connection's handler sends one string once the clients' channels are open."""

    def scenario(probe: Probe) -> Scenario:
        def handler(api: Api) -> Any:
            if kind == "async":

                class AsyncSender(fapi.AsyncStreamHandler):  # type: ignore[misc,name-defined]
                    def __init__(self) -> None:
                        super().__init__()
                        self.sent = False

                    async def receive(self, frame: Any) -> None:
                        pass

                    async def emit(self) -> Any:
                        if not self.sent and probe.get("go"):
                            self.sent = True
                            k = probe.bump("senders")
                            await self.send_message(f"hello from copy {k} (async)")
                        await asyncio.sleep(0.02)
                        return None

                    def copy(self) -> Any:
                        return AsyncSender()

                return AsyncSender()

            class SyncSender(api.StreamHandler):  # type: ignore[misc,name-defined]
                def __init__(self) -> None:
                    super().__init__()
                    self.sent = False

                def receive(self, frame: Any) -> None:
                    pass

                def emit(self) -> Any:
                    if not self.sent and probe.get("go"):
                        self.sent = True
                        k = probe.bump("senders")
                        self.send_message_sync(f"hello from copy {k} (sync)")
                    time.sleep(0.02)
                    return None

                def copy(self) -> Any:
                    return SyncSender()

            return SyncSender()

        return Scenario(
            "send-receive", "audio", handler, concurrency_limit=MANY, needs_fastrtc=True
        )

    async def script(wire: Wire, probe: Probe) -> dict[str, Any]:
        peers = [wire.peer(send=tone_track(440.0)) for _ in range(2)]
        for peer in peers:
            await peer.connect_ok()
            await peer.wait_channel_open()
        probe.add("go")

        def delivered() -> bool:
            return all(any(m.text.startswith("hello from") for m in p.messages) for p in peers)

        await eventually(delivered, 6.0)
        await eventually(lambda: probe.count("senders") >= 2, 2.0)
        for peer in peers:
            await peer.close()
        return {}

    return Plan(scenario, script)


def _clear_queue_plan(fapi: FastrtcApi) -> Plan:
    """emit returns 4 s of 500 Hz at once; receive calls clear_queue() 1 s later; emit then
    returns 0.5 s of 900 Hz."""

    def scenario(probe: Probe) -> Scenario:
        def handler(api: Api) -> Any:
            class Clearing(api.StreamHandler):  # type: ignore[misc,name-defined]
                def __init__(self) -> None:
                    super().__init__()
                    self.first: float | None = None
                    self.cleared = False
                    self.after = False

                def receive(self, frame: Any) -> None:
                    due = self.first is not None and time.time() - self.first >= 1.0
                    if due and not self.cleared:
                        probe.add("cleared", time.time())
                        self.clear_queue()
                        self.cleared = True

                def emit(self) -> Any:
                    if self.first is None:
                        self.first = time.time()
                        probe.add("emitted", self.first)
                        return chunk(500.0, 4.0)
                    if self.cleared and not self.after:
                        self.after = True
                        return chunk(900.0, 0.5)
                    time.sleep(0.02)
                    return None

                def copy(self) -> Any:
                    return Clearing()

            return Clearing()

        return Scenario("send-receive", "audio", handler, needs_fastrtc=True)

    async def script(wire: Wire, probe: Probe) -> dict[str, Any]:
        peer = wire.peer(send=tone_track(440.0))
        await peer.connect_ok()
        recorder = await peer.wait_remote()
        await eventually(lambda: bool(probe.get("cleared")), 6.0)
        await eventually(lambda: heard(recorder, 900.0) >= 0.4, 4.0)
        cleared = probe.get("cleared")
        if cleared:  # the 4 s tone would have run until here
            start = probe.get("emitted")[0]
            await eventually(lambda: time.time() > start + 4.5, 5.0)
        await peer.close()
        return {}

    return Plan(scenario, script)


def _args_plan(fapi: FastrtcApi, kind: str) -> Plan:
    """emit fetches the inputs, then, once the client changed its input from 7 to 9,
    reset()s and fetches them again."""

    def scenario(probe: Probe) -> Scenario:
        def handler(api: Api) -> Any:
            if kind == "async":

                class AsyncAsking(fapi.AsyncStreamHandler):  # type: ignore[misc,name-defined]
                    def __init__(self) -> None:
                        super().__init__()
                        self.stage = 0

                    async def receive(self, frame: Any) -> None:
                        pass

                    async def emit(self) -> Any:
                        if self.stage == 0:
                            self.stage = 1
                            await self.wait_for_args()
                            probe.add("args", list(self.latest_args))
                        elif self.stage == 1 and probe.get("go"):
                            self.stage = 2
                            self.reset()
                            await self.wait_for_args()
                            probe.add("args", list(self.latest_args))
                        await asyncio.sleep(0.02)
                        return None

                    def copy(self) -> Any:
                        return AsyncAsking()

                return AsyncAsking()

            class Asking(api.StreamHandler):  # type: ignore[misc,name-defined]
                def __init__(self) -> None:
                    super().__init__()
                    self.stage = 0

                def receive(self, frame: Any) -> None:
                    pass

                def emit(self) -> Any:
                    if self.stage == 0:
                        self.stage = 1
                        self.wait_for_args_sync()
                        probe.add("args", list(self.latest_args))
                    elif self.stage == 1 and probe.get("go"):
                        self.stage = 2
                        self.reset()
                        self.wait_for_args_sync()
                        probe.add("args", list(self.latest_args))
                    time.sleep(0.02)
                    return None

                def copy(self) -> Any:
                    return Asking()

            return Asking()

        return Scenario("send-receive", "audio", handler, inputs=(Input(7),), needs_fastrtc=True)

    async def script(wire: Wire, probe: Probe) -> dict[str, Any]:
        peer = wire.peer(send=tone_track(440.0))
        await peer.connect_ok()
        await eventually(lambda: len(probe.get("args")) >= 1, 8.0)
        await peer.set_inputs([9])
        # A tick fired before the change (on open, or for the first fetch) still carries
        # 7; once those have been delivered, every input the server gets carries 9.
        await peer.ticks_settled()
        probe.add("go")
        await eventually(lambda: len(probe.get("args")) >= 2, 8.0)
        await peer.close()
        return {}

    return Plan(scenario, script)


def _blocked_async_loop_plan(fapi: FastrtcApi) -> Plan:
    """An async emit that blocks its loop for 1 s, four times; another client's offer."""

    def scenario(probe: Probe) -> Scenario:
        def handler(api: Api) -> Any:
            class Blocking(fapi.AsyncStreamHandler):  # type: ignore[misc,name-defined]
                def __init__(self) -> None:
                    super().__init__()
                    self.blocks = 0

                async def receive(self, frame: Any) -> None:
                    pass

                async def emit(self) -> Any:
                    if probe.get("blocking-done"):
                        await asyncio.sleep(0.02)
                        return None
                    if self.blocks < 4:
                        self.blocks += 1
                        probe.add("entered", time.time())
                        time.sleep(1.0)  # a synchronous call in a coroutine
                        return None
                    await asyncio.sleep(0.02)
                    return None

                def copy(self) -> Any:
                    return Blocking()

            return Blocking()

        return Scenario(
            "send-receive", "audio", handler, concurrency_limit=MANY, needs_fastrtc=True
        )

    async def script(wire: Wire, probe: Probe) -> dict[str, Any]:
        busy = wire.peer(send=tone_track(440.0))
        await busy.connect_ok()
        await eventually(lambda: len(probe.get("entered")) >= 2, 8.0)
        other = wire.peer(send=tone_track(440.0))
        body = await other.offer_body()
        start = time.time()
        reply = await wire.offer(body)
        elapsed = time.time() - start
        probe.add("blocking-done")
        for peer in (busy, other):
            await peer.close()
        return {"elapsed": elapsed, "reply": reply}

    return Plan(scenario, script)


@pytest.fixture(scope="module")
def handler_sessions(adapter: Adapter, fapi: FastrtcApi) -> Recordings:
    return record_all(
        adapter,
        {
            "async-echo": _async_echo_plan(fapi),
            "sync-start-up": _sync_start_up_plan(fapi),
            "send-async": _send_message_plan(fapi, "async"),
            "send-sync": _send_message_plan(fapi, "sync"),
            "clear-queue": _clear_queue_plan(fapi),
        },
    )


@pytest.fixture(scope="module")
def lifecycle_sessions(adapter: Adapter, fapi: FastrtcApi) -> Recordings:
    return record_all(
        adapter,
        {
            "long-sync": _long_start_up_plan(fapi, "sync"),
            "long-async": _long_start_up_plan(fapi, "async"),
            "args-sync": _args_plan(fapi, "sync"),
            "args-async": _args_plan(fapi, "async"),
        },
    )


@pytest.fixture(scope="module")
def blocking_sessions(adapter: Adapter, fapi: FastrtcApi) -> Recordings:
    """The loop-blocking handler, recorded alone (it measures an offer's latency)."""
    return record_all(adapter, {"blocked": _blocked_async_loop_plan(fapi)})


@pytest.mark.requirement("FHND-001")
def test_async_echo_handler_echoes(handler_sessions: Recordings) -> None:
    """An AsyncStreamHandler serves a send-receive audio stream: async receive gets
    (24000, int16) frames, async emit's returns are played; the docs' AsyncEchoHandler
    echoes a 440 Hz tone as 440 Hz."""
    recording = handler_sessions["async-echo"]
    frames = recording.probe.get("frame")
    assert frames, "async receive was never called"
    assert {(rate, dtype) for rate, dtype, _ in frames} == {(24000, "int16")}, frames[:3]
    for peer, freq in zip(recording.peers, ECHO_FREQS, strict=True):
        assert peer.recorder is not None, "no audio track came back"
        seconds = heard(peer.recorder, freq)
        assert seconds >= 1.0, f"the client sending {freq:.0f} Hz heard {seconds:.2f} s of it"


@pytest.mark.requirement("FHND-002")
def test_async_start_up_runs_once_per_connection(handler_sessions: Recordings) -> None:
    """An AsyncStreamHandler's async start_up is awaited once for each connection, on that
    connection's copy."""
    probe = handler_sessions["async-echo"].probe
    copies, started = probe.get("copy"), probe.get("start_up")
    assert probe.get("template")[0] not in started, "start_up ran on the template"
    assert sorted(started) == sorted(set(started)), f"start_up ran twice on a copy: {started}"
    assert len(started) == 2 and set(started) <= set(copies), (
        f"start_up ran on {len(started)} handlers for two connections (copies: {len(copies)})"
    )


@pytest.mark.requirement("FHND-003")
def test_sync_start_up_runs_once_per_connection(handler_sessions: Recordings) -> None:
    """A StreamHandler's start_up is called once for each connection, on its copy."""
    recording = handler_sessions["sync-start-up"]
    probe = recording.probe
    started, copies = probe.get("start_up"), probe.get("copy")
    assert probe.get("template")[0] not in started, "start_up ran on the template"
    assert len(started) == 2 and len(set(started)) == 2 and set(started) <= set(copies), (
        f"start_up calls {started} for the copies {copies}"
    )
    for peer in recording.peers:
        seconds = heard(peer.recorder, 500.0)
        assert seconds >= 0.8, f"emit's tone (played once start_up ran) heard for {seconds:.2f} s"


@pytest.mark.requirement("FHND-004")
@pytest.mark.parametrize("kind", ["sync", "async"])
def test_long_running_start_up_does_not_hold_the_stream(
    lifecycle_sessions: Recordings, kind: str
) -> None:
    """A start_up that keeps running does not hold the stream back: receive and emit are
    called, and emit's audio played, while start_up still runs."""
    recording = lifecycle_sessions[f"long-{kind}"]
    probe = recording.probe
    assert probe.get("began"), "start_up was never called"
    ended = (probe.get("ended") or [recording.notes["closing"]])[0]
    frames = tone_frames(recording.peer.recorder, 700.0)
    assert frames, "emit's audio never reached the client"
    first = frames[0][0]
    assert first < ended, f"emit's audio came {first - ended:.2f} s after start_up returned"
    receives = [t for t in probe.get("receive") if t < ended]
    assert len(receives) >= 10, f"receive was called {len(receives)} times while start_up ran"


@pytest.mark.requirement("FHND-005")
def test_async_handler_does_not_block_the_server(blocking_sessions: Recordings) -> None:
    """While one connection's async emit blocks its loop, another client's offer is
    answered within 1 s."""
    recording = blocking_sessions["blocked"]
    reply = recording.notes["reply"]
    assert isinstance(reply.body, dict) and reply.body.get("type") == "answer", (
        f"the other offer was not answered: {str(reply.body)[:200]}"
    )
    elapsed = recording.notes["elapsed"]
    assert elapsed < 1.0, f"the other client's offer took {elapsed:.2f} s"


@pytest.mark.requirement("FHND-006")
@pytest.mark.parametrize("kind", ["sync", "async"])
def test_send_message_reaches_its_client_verbatim(handler_sessions: Recordings, kind: str) -> None:
    """send_message / send_message_sync send a string verbatim to the connection's client
    only."""
    recording = handler_sessions[f"send-{kind}"]
    got = [[m.text for m in p.messages if "hello from" in m.text] for p in recording.peers]
    expected = {f"hello from copy {k} ({kind})" for k in (1, 2)}
    assert all(len(texts) == 1 for texts in got), (
        f"each client should get exactly its handler's string; they got {got}"
    )
    assert {texts[0] for texts in got} == expected, f"got {got}, sent {sorted(expected)}"


@pytest.mark.requirement("FHND-007")
def test_clear_queue_drops_unplayed_audio(handler_sessions: Recordings) -> None:
    """clear_queue() drops the audio emitted but not yet played; later audio is played."""
    recording = handler_sessions["clear-queue"]
    assert recording.probe.get("cleared"), "receive never called clear_queue()"
    recorder = recording.peer.recorder
    before = heard(recorder, 500.0)
    after = heard(recorder, 900.0)
    assert before < 2.0, f"{before:.2f} s of the 4 s tone were played although cleared after 1 s"
    assert before >= 0.5, f"only {before:.2f} s of the tone played before the clear"
    assert after >= 0.4, f"the audio emitted after clear_queue() was heard for {after:.2f} s"


@pytest.mark.requirement("FHND-008")
@pytest.mark.parametrize("kind", ["sync", "async"])
def test_wait_for_args_fetches_the_inputs(lifecycle_sessions: Recordings, kind: str) -> None:
    """wait_for_args_sync() / await wait_for_args() fetch the inputs: latest_args[0] is
    '__webrtc_value__' and it ends with the values; after reset() they are fetched again."""
    args = lifecycle_sessions[f"args-{kind}"].probe.get("args")
    assert len(args) == 2, f"latest_args after the two waits: {args}"
    first, second = args
    assert first and first[0] == "__webrtc_value__", f"latest_args is {first!r}"
    assert first[-1:] == [7], f"latest_args {first!r} does not end with the input's value 7"
    assert second[-1:] == [9], f"after reset() and a change to 9, latest_args is {second!r}"


@pytest.mark.requirement("FHND-009")
def test_context_in_stream_handler(handler_sessions: Recordings) -> None:
    """get_current_context().webrtc_id in a StreamHandler's receive, emit and start_up is
    the webrtc_id of the connection it serves."""
    recording = handler_sessions["sync-start-up"]
    contexts_check(recording.probe, recording.notes["ids"], {"receive", "emit", "start_up"})


@pytest.mark.requirement("FHND-009")
def test_context_in_async_stream_handler(handler_sessions: Recordings) -> None:
    """get_current_context().webrtc_id in an AsyncStreamHandler's coroutines is the
    webrtc_id of the connection it serves."""
    recording = handler_sessions["async-echo"]
    contexts_check(recording.probe, recording.notes["ids"], {"receive", "emit", "start_up"})


@pytest.mark.requirement("FHND-010")
def test_async_shutdown_is_awaited(handler_sessions: Recordings) -> None:
    """An AsyncStreamHandler's async shutdown() is awaited when the client leaves."""
    probe = handler_sessions["async-echo"].probe
    done, copies = probe.get("shutdown"), probe.get("copy")
    assert len(done) == 2 and set(done) <= set(copies), (
        f"async shutdown() completed for {len(done)} of the two connections' handlers"
    )
