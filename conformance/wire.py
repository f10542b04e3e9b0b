"""The wire client: a browser stand-in that speaks the component's protocol to a launched app.

:class:`Wire` is the suite's view of one served scenario over HTTP (offers through the
component server function ``offer``, events through the Gradio queue). :class:`WirePeer`
is one browser tab with a real aiortc peer connection:

- it creates the ``"text"`` data channel first, then its media (a track to send, or a
  receive-only transceiver), gathers ICE completely and posts the offer;
- on the data channel it sends ``"handshake"`` when it opens and reacts like the
  implementation's browser client: an inputs request (``"tick"``, or fastrtc's
  ``{"type": "send_input"}``) fires the component's ``tick`` event with the current
  input values, an outputs notice (``"change"`` / ``{"type": "fetch_output"}``) fires
  ``state_change`` and records what it returns; periodic ticks and a tick on open are
  sent when the served implementation's client does so (:class:`~conformance.adapters.Served`);
- changing an input value (:meth:`WirePeer.set_inputs`) fires that input's ``change``
  listeners, as moving a slider does;
- what comes back is recorded: data-channel messages with their arrival time, outputs,
  connection states, and the remote media (``fixtures.tracks`` recorders, one per remote
  track: an audio-video peer sends and receives an audio and a video track);
- with ``rtp_timing=True`` it also times its RTP (:class:`conformance.avsync.RtpTiming`):
  when each remote frame's packets arrived, before aiortc's jitter buffer, and when each
  frame of its own tracks was encoded and sent.

Every wait has a deadline (scaled by ``CONFORMANCE_TIMEOUT_SCALE``); nothing sleeps a
fixed time to let something happen.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from aiortc import (
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamTrack

from conformance.adapters.base import Adapter, Scenario, Served
from conformance.gradio_http import GradioApp, GradioSession, HttpReply
from webrtc_ref.testing import aiortc_configuration

#: Multiplies every deadline (env ``CONFORMANCE_TIMEOUT_SCALE``) for slow machines.
TIMEOUT_SCALE = float(os.environ.get("CONFORMANCE_TIMEOUT_SCALE", "1"))

START_VALUE = "start_webrtc_stream"


def scaled(seconds: float) -> float:
    return seconds * TIMEOUT_SCALE


async def wait_for(
    predicate: Callable[[], bool | Awaitable[bool]], timeout: float, what: str
) -> None:
    """Poll ``predicate`` until true; raise ``TimeoutError`` naming ``what`` at the deadline."""
    deadline = time.time() + scaled(timeout)
    while True:
        result = predicate()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if time.time() > deadline:
            raise TimeoutError(f"timed out after {scaled(timeout):.1f} s waiting for {what}")
        await asyncio.sleep(0.01)


async def eventually(predicate: Callable[[], bool], timeout: float) -> bool:
    """Like :func:`wait_for` but returns the final value instead of raising."""
    try:
        await wait_for(predicate, timeout, "a condition")
    except TimeoutError:
        return bool(predicate())
    return True


# -- data-channel messages ------------------------------------------------------------------

INPUTS, OUTPUTS, ERROR, END, LOG, OTHER = "inputs", "outputs", "error", "end", "log", "other"


def parse_json(text: str) -> dict[str, Any] | None:
    if not text.startswith("{"):
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def classify(text: str) -> str:
    """What a server -> client data-channel message means, in any known dialect.

    The pinned protocol's strings ``"tick"``/``"change"`` and JSON ``error``/``end_stream``/
    ``log``/``warning``, and fastrtc's JSON ``send_input``/``fetch_output``.
    """
    if text == "tick":
        return INPUTS
    if text == "change":
        return OUTPUTS
    data = parse_json(text)
    if data is None:
        return OTHER
    kind = data.get("type")
    return {
        "send_input": INPUTS,
        "fetch_output": OUTPUTS,
        "error": ERROR,
        "end_stream": END,
        "log": LOG,
        "warning": LOG,
    }.get(str(kind), OTHER)


def message_text(text: str) -> str:
    """The human text of an error/end message (``message`` or fastrtc's ``data``)."""
    data = parse_json(text) or {}
    for key in ("message", "data", "reason"):
        value = data.get(key)
        if isinstance(value, str) and value:
            return value
    return text


@dataclass(frozen=True)
class Message:
    """A data-channel message from the server, with ``time.time()`` at arrival."""

    t: float
    text: str

    @property
    def kind(self) -> str:
        return classify(self.text)


@dataclass(frozen=True)
class OutputUpdate:
    """What one ``state_change`` run gave its outputs (skips removed)."""

    t: float
    values: list[Any]


def is_skip(value: Any) -> bool:
    """Gradio's "no update" value (``gr.skip()`` / ``gr.update()`` without a value)."""
    return isinstance(value, dict) and value.get("__type__") == "update" and "value" not in value


def update_value(value: Any) -> Any:
    """The value an output got: updates unwrapped, JSON text (the suite's outputs carry
    JSON, see ``Scenario.outputs``) decoded."""
    if isinstance(value, dict) and value.get("__type__") == "update":
        value = value.get("value")
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


# -- received video ---------------------------------------------------------------------------

#: Rows at the bottom of a frame that the suite's video functions paint (helpers.MARK_ROWS).
MARK_ROWS = 16


@dataclass(frozen=True)
class ReceivedFrame:
    """One video frame the client received."""

    arrival: float
    frame_id: int | None
    width: int
    height: int
    mark: float  # mean of the bottom rows (where the suite's functions paint a level)
    order: str | None  # "rgb"/"bgr" from the colour patches of a fixtures frame, else None


def video_recorder(track: MediaStreamTrack) -> Any:
    """A ``fixtures.tracks.FrameRecorder`` that also keeps a :class:`ReceivedFrame` per frame
    in ``.frames`` and the last frame (RGB) in ``.last_frame``."""
    import numpy as np

    from fixtures.tracks import FrameRecorder
    from fixtures.video import detect_channel_order, read_frame_id

    class VideoRecorder(FrameRecorder):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__(track, clock=time.time, keep_last=True)
            self.frames: list[ReceivedFrame] = []

        def _on_frame(self, frame: Any, arrival: float) -> None:
            rgb = np.asarray(frame.to_ndarray(format="rgb24"), dtype=np.uint8)
            self.last_frame = rgb
            try:
                frame_id = read_frame_id(rgb)
            except ValueError:
                frame_id = None
            try:
                order = detect_channel_order(rgb)
            except ValueError:
                order = None
            mark = float(rgb[-MARK_ROWS // 2 :, :, :].mean())
            self.records.append(_record(frame_id, arrival, frame.width, frame.height, frame.pts))
            self.frames.append(
                ReceivedFrame(arrival, frame_id, frame.width, frame.height, mark, order)
            )

    return VideoRecorder()


def audio_recorder(track: MediaStreamTrack, *, timestamps: bool = False) -> Any:
    """A ``fixtures.tracks.AudioRecorder`` (timestamp markers decoded if ``timestamps``)
    that also keeps each frame's ``pts`` in ``.pts`` (aligned with ``.frames``)."""
    from fixtures.tracks import AudioRecorder

    class Recorder(AudioRecorder):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__(track, decode_timestamps=timestamps, clock=time.time)
            self.pts: list[int | None] = []

        def _on_frame(self, frame: Any, arrival: float) -> None:
            self.pts.append(frame.pts)
            super()._on_frame(frame, arrival)

    return Recorder()


def _record(*args: Any) -> Any:
    from fixtures.tracks import FrameRecord

    return FrameRecord(*args)


# -- the wire --------------------------------------------------------------------------------


class Wire:
    """One served scenario, seen over HTTP (see the module docstring)."""

    def __init__(self, served: Served) -> None:
        self.served = served
        self.app = GradioApp(served.url)
        self.peers: list[WirePeer] = []

    @property
    def scenario(self) -> Scenario:
        return self.served.scenario

    async def aclose(self) -> None:
        await asyncio.gather(*(peer.close() for peer in self.peers), return_exceptions=True)
        await self.app.aclose()

    async def offer(
        self, body: Any, *, stream: int = 0, session_hash: str | None = None
    ) -> HttpReply:
        """POST ``body`` to the component's ``offer`` server function."""
        return await self.app.server_fn(
            self.served.streams[stream].webrtc,
            "offer",
            body,
            session_hash or secrets.token_hex(6),
        )

    async def dependency(self, event: str, *, stream: int = 0) -> dict[str, Any] | None:
        return await self.app.dependency(self.served.streams[stream].webrtc, event)

    def peer(self, **kwargs: Any) -> WirePeer:
        peer = WirePeer(self, **kwargs)
        self.peers.append(peer)
        return peer


@contextlib.asynccontextmanager
async def serving(adapter: Adapter, scenario: Scenario) -> AsyncIterator[Wire]:
    """Serve ``scenario`` with ``adapter`` and yield its :class:`Wire`; clean up after."""
    with adapter.serve(scenario) as served:
        wire = Wire(served)
        try:
            yield wire
        finally:
            await wire.aclose()


class WirePeer:
    """One browser tab with a real aiortc peer (see the module docstring).

    Parameters:
        send: a track to send (send-receive/send modes), or several (an audio and a video
            track for the audio-video modality), added in order.
        receive: accept media of the scenario's modality with a receive-only transceiver
            (receive mode); ignored when ``send`` is given.
        timestamps: decode timestamp markers (``fixtures.timestamps``) in received audio.
        rtp_timing: time the RTP of every transceiver (``.rtp``, see the module docstring).
        inputs: current values of the stream's other inputs (default: the scenario's).
        webrtc_id: default: 16 random hex characters.
        data_channel: create the ``"text"`` data channel (the browser always does).
        stream: which WebRTC component of the scenario to talk to.
        session: the browser tab (Gradio session) to use; default: a tab of its own.
        rtc_configuration: a browser-style RTCConfiguration dict (``iceServers``,
            ``iceTransportPolicy``) for the peer connection; default: no ICE servers.
    """

    def __init__(
        self,
        wire: Wire,
        *,
        send: MediaStreamTrack | Sequence[MediaStreamTrack] | None = None,
        receive: bool | None = None,
        timestamps: bool = False,
        rtp_timing: bool = False,
        inputs: list[Any] | None = None,
        webrtc_id: str | None = None,
        data_channel: bool = True,
        stream: int = 0,
        session: GradioSession | None = None,
        rtc_configuration: dict[str, Any] | None = None,
    ) -> None:
        self.wire = wire
        self.scenario = wire.scenario
        self.stream_index = stream
        self.ids = wire.served.streams[stream]
        self.webrtc_id = webrtc_id or secrets.token_hex(8)
        self.inputs: list[Any] = (
            list(inputs) if inputs is not None else [spec.value for spec in self.scenario.inputs]
        )
        self._own_session = session is None
        self.session: GradioSession = session or wire.app.session()
        self.pc = RTCPeerConnection(aiortc_configuration(rtc_configuration))
        self.messages: list[Message] = []
        self.outputs: list[OutputUpdate] = []
        self.errors: list[str] = []
        self.states: list[tuple[float, str]] = []
        self.channel_opened_at: float | None = None
        self.connected_at: float | None = None
        self.reply: HttpReply | None = None
        self.offer_rtt_s: float | None = None  # offer posted -> reply received
        self.trigger_output: list[Any] | None = None
        self.recorder: Any = None  # the first remote track's
        self.remote: MediaStreamTrack | None = None
        #: remote tracks and their recorders by kind ("audio", "video")
        self.remotes: dict[str, MediaStreamTrack] = {}
        self.recorders: dict[str, Any] = {}
        self.timestamps = timestamps
        self.rtp: Any = None
        self.ticks_sent = 0
        self._closed = False
        self._tasks: set[asyncio.Task[Any]] = set()
        self._remote_ready = asyncio.Event()
        self.channel = self.pc.createDataChannel("text") if data_channel else None
        if self.channel is not None:
            self.channel.on("open", self._on_open)
            self.channel.on("message", self._on_message)
        if receive is None:
            receive = send is None and self.scenario.mode == "receive"
        tracks = [send] if isinstance(send, MediaStreamTrack) else list(send or ())
        for track in tracks:
            self.pc.addTrack(track)
        if not tracks and receive:
            self.pc.addTransceiver(self.scenario.modality, direction="recvonly")
        self._expected_remotes = max(1, len({t.kind for t in tracks}))
        if rtp_timing:
            from conformance.avsync import RtpTiming

            self.rtp = RtpTiming()
            self.rtp.attach(self.pc)
        self.pc.on("track", self._on_track)
        self.pc.on("connectionstatechange", self._on_state)

    # -- async context manager ---------------------------------------------------------------
    async def __aenter__(self) -> WirePeer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- signalling -----------------------------------------------------------------------------
    async def offer_body(self) -> dict[str, str]:
        """Create the offer and gather ICE completely (aiortc does it in setLocalDescription)."""
        await self.pc.setLocalDescription(await self.pc.createOffer())
        return {"sdp": self.pc.localDescription.sdp, "type": "offer", "webrtc_id": self.webrtc_id}

    async def connect(self, *, trigger: bool | None = None) -> HttpReply:
        """Offer and apply the answer; in receive mode run the trigger first (the button).

        When the trigger also has a client-side listener (``js`` and no server function,
        as webrtc_ref's), a browser starts at the click itself: the offer then goes out
        while the queued listener runs, and its outputs are collected after the answer.
        """
        if trigger is None:
            trigger = self.scenario.mode == "receive"
        pressed: asyncio.Task[list[Any]] | None = None
        if trigger:
            if await self.trigger_starts_at_click():
                pressed = asyncio.ensure_future(self.press_trigger())
            else:
                self.trigger_output = await self.press_trigger()
        try:
            return await self._offer()
        finally:
            if pressed is not None:
                self.trigger_output = await pressed

    async def fetch_rtc_configuration(self) -> Any:
        """The RTCPeerConnection configuration the implementation's browser client would
        use for its next connection, fetched as that client does (see
        :meth:`~conformance.adapters.Adapter.rtc_configuration_for`). The suite's own peer
        keeps host candidates on loopback whatever it says."""
        fetch = self.wire.served.rtc_configuration_for
        assert fetch is not None, "the adapter says nothing about rtc_configuration"
        return await fetch(self)

    async def trigger_starts_at_click(self) -> bool:
        """Whether the trigger's click has a client-side listener (the browser starts at
        once instead of waiting for the queued listener's output)."""
        trigger = self.ids.trigger
        if trigger is None:
            return False
        return any(
            d.get("js") and not d.get("backend_fn", True)
            for d in await self.wire.app.dependencies(trigger, "click")
        )

    async def _offer(self) -> HttpReply:
        body = await self.offer_body()
        posted = time.time()
        reply = await self.wire.offer(
            body, stream=self.stream_index, session_hash=self.session.session_hash
        )
        self.offer_rtt_s = time.time() - posted
        self.reply = reply
        if self.answered:
            await self.pc.setRemoteDescription(
                RTCSessionDescription(sdp=str(reply.body["sdp"]), type="answer")
            )
            self._start_periodic_ticks()
        return reply

    @property
    def answered(self) -> bool:
        reply = self.reply
        return (
            reply is not None
            and reply.status == 200
            and isinstance(reply.body, dict)
            and reply.body.get("type") == "answer"
            and isinstance(reply.body.get("sdp"), str)
        )

    async def connect_ok(self, timeout: float = 10.0) -> None:
        """Connect and wait for ``connected``; fail with the server's reply otherwise."""
        reply = await self.connect()
        assert self.answered, f"the offer was not answered: HTTP {reply.status}: {reply.body!r}"
        await self.wait_connected(timeout)

    async def press_trigger(self) -> list[Any]:
        """Run the receive-mode trigger (the Start button's click); return its outputs."""
        trigger = self.ids.trigger
        assert trigger is not None, "this scenario has no trigger"
        # the listeners a server runs (a client-side one, ``js`` only, has no server part)
        served = [
            d
            for d in await self.wire.app.dependencies(trigger, "click")
            if d.get("backend_fn", True)
        ]
        assert served, "the trigger button has no click listener that runs on the server"
        return await self.session.run(served[0], [], trigger_id=trigger)

    # -- events ----------------------------------------------------------------------------------
    def _event_data(self, dependency: dict[str, Any]) -> list[Any]:
        values: dict[int, Any] = {self.ids.webrtc: self.webrtc_id}
        for component, value, kind in zip(
            self.ids.inputs, self.inputs, self.ids.input_kinds, strict=True
        ):
            values[component] = None if kind == "state" else value
        return [values.get(component) for component in dependency.get("inputs", [])]

    async def tick(self) -> asyncio.Future[Any] | None:
        """Fire the component's ``tick`` event with the current input values."""
        dependency = await self.wire.app.dependency(self.ids.webrtc, "tick")
        if dependency is None or self._closed:
            return None
        self.ticks_sent += 1
        return self.session.fire(
            dependency,
            self._event_data(dependency),
            trigger_id=self.ids.webrtc,
            on_error=lambda exc: self.errors.append(f"tick: {exc}"),
        )

    async def ticks_settled(self, timeout: float = 10.0) -> None:
        """Return once every ``tick`` fired so far has been answered by the server, so the
        input values it carried have been delivered (later ticks carry the current ones)."""
        dependency = await self.wire.app.dependency(self.ids.webrtc, "tick")
        if dependency is not None:
            await self.session.settled(dependency, timeout)

    async def set_inputs(self, values: list[Any]) -> None:
        """Change the other inputs' values, firing their ``change`` listeners."""
        changed = [i for i, (a, b) in enumerate(zip(self.inputs, values, strict=True)) if a != b]
        self.inputs = list(values)
        for index in changed:
            component = self.ids.inputs[index]
            dependency = await self.wire.app.dependency(component, "change")
            if dependency is not None:
                self.session.fire(
                    dependency,
                    self._event_data(dependency),
                    trigger_id=component,
                    on_error=lambda exc: self.errors.append(f"change: {exc}"),
                )

    async def pull_outputs(self) -> asyncio.Future[Any] | None:
        """Fire the component's ``state_change`` event; record what it gives the outputs."""
        dependency = await self.wire.app.dependency(self.ids.webrtc, "state_change")
        if dependency is None or self._closed:
            return None

        def record(data: list[Any]) -> None:
            values = [update_value(v) for v in data if not is_skip(v)]
            if values:
                self.outputs.append(OutputUpdate(time.time(), values))

        return self.session.fire(
            dependency,
            self._event_data(dependency),
            trigger_id=self.ids.webrtc,
            on_output=record,
            on_error=lambda exc: self.errors.append(f"state_change: {exc}"),
            timeout=60.0,
        )

    def _start_periodic_ticks(self) -> None:
        if not self.wire.served.periodic_ticks:
            return
        scenario = self.scenario
        if scenario.mode == "receive":
            period = 1.0
        elif scenario.modality in ("video", "audio-video"):
            period = 0.5
        else:
            return

        async def ticker() -> None:
            while not self._closed:
                await asyncio.sleep(period)
                if self.pc.connectionState == "connected":
                    await self.tick()

        self._spawn(ticker())

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- callbacks -----------------------------------------------------------------------------
    def _on_open(self) -> None:
        self.channel_opened_at = time.time()
        assert self.channel is not None
        self.channel.send("handshake")
        if self.wire.served.tick_on_open:
            self._spawn(self.tick())

    def _on_message(self, message: object) -> None:
        if not isinstance(message, str):
            return
        self.messages.append(Message(time.time(), message))
        kind = classify(message)
        if kind == INPUTS:
            self._spawn(self.tick())
        elif kind == OUTPUTS:
            self._spawn(self.pull_outputs())

    def _on_track(self, track: MediaStreamTrack) -> None:
        if track.kind in self.remotes:
            return
        if track.kind == "video":
            recorder = video_recorder(track)
        else:
            recorder = audio_recorder(track, timestamps=self.timestamps)
        self.remotes[track.kind] = track
        self.recorders[track.kind] = recorder
        if self.remote is None:
            self.remote, self.recorder = track, recorder
        self._spawn(recorder.start())
        if len(self.remotes) >= self._expected_remotes:
            self._remote_ready.set()

    def _on_state(self) -> None:
        state = self.pc.connectionState
        self.states.append((time.time(), state))
        if state == "connected" and self.connected_at is None:
            self.connected_at = time.time()

    # -- waiting ---------------------------------------------------------------------------------
    async def wait_connected(self, timeout: float = 10.0) -> None:
        await wait_for(
            lambda: self.pc.connectionState == "connected", timeout, "connectionState connected"
        )

    async def wait_channel_open(self, timeout: float = 10.0) -> None:
        await wait_for(
            lambda: self.channel is not None and self.channel.readyState == "open",
            timeout,
            "the data channel to open",
        )

    async def wait_remote(self, timeout: float = 10.0) -> Any:
        """Wait for the remote track (one of each kind sent, when several were); return the
        first one's recorder (all are in ``.recorders``)."""
        await asyncio.wait_for(self._remote_ready.wait(), scaled(timeout))
        return self.recorder

    async def wait_message(
        self, predicate: Callable[[Message], bool], timeout: float, what: str
    ) -> Message:
        await wait_for(lambda: any(predicate(m) for m in self.messages), timeout, what)
        return next(m for m in self.messages if predicate(m))

    def messages_of(self, kind: str) -> list[Message]:
        return [m for m in self.messages if m.kind == kind]

    @property
    def ended(self) -> bool:
        """The server ended this connection: end_stream, or the connection closed/failed."""
        return bool(self.messages_of(END)) or self.pc.connectionState in ("closed", "failed")

    def output_values(self) -> list[list[Any]]:
        return [update.values for update in self.outputs]

    # -- closing ---------------------------------------------------------------------------------
    def send(self, text: str) -> None:
        assert self.channel is not None and self.channel.readyState == "open"
        self.channel.send(text)

    async def close(self, *, stop_message: bool = False) -> None:
        """Close like a browser tab does (optionally sending ``{"type": "stop"}`` first)."""
        if self._closed:
            return
        channel = self.channel
        if stop_message and channel is not None and channel.readyState == "open":
            channel.send(json.dumps({"type": "stop"}))
            with contextlib.suppress(Exception):
                await wait_for(lambda: channel.bufferedAmount == 0, 1.0, "flush")
        self._closed = True
        for task in list(self._tasks):
            task.cancel()
        steps = [self.pc.close()]
        if self._own_session:
            steps.append(self.session.aclose())
        for recorder in self.recorders.values():
            steps.insert(0, recorder.stop())
        for step in steps:  # teardown never hangs a run: each step gets a deadline
            try:
                await asyncio.wait_for(step, scaled(5.0))
            except (Exception, asyncio.TimeoutError) as exc:
                self.errors.append(f"close: {exc!r}")
