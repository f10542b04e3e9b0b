"""fastrtc profile: ``Stream`` (FSTR). Its parameters and ``.ui``; ``.mount(app)`` on a
FastAPI app served by uvicorn on 127.0.0.1 (``conformance.adapters.base.served_app``),
reached by aiortc clients that speak the documented JavaScript client's JSON
(:mod:`conformance.tests.fastrtc.route_client`); the input and output hooks called from
routes of the app, as the documentation's examples do.

Each session serves its own app (one stream, mounted at ``""`` or ``/<name>``) and is
recorded once per module, when a test first reads it; media is checked by content (a tone
comes back at its frequency, barcoded frames in order with the function's mark).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import queue
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np
import pytest

from conformance.adapters import Adapter, Api
from conformance.adapters.base import launched, served_app
from conformance.helpers import MANY, MARK_ROWS, Probe, echo_handler, run_async
from conformance.tests.fastrtc.media import barcode, tone_track
from conformance.tests.fastrtc.route_client import RoutePeer, host_address
from conformance.wire import eventually, scaled

pytestmark = pytest.mark.timeout(300)

#: The level the suite's video functions paint into the bottom rows of each frame.
MARK = 250


# -- handlers ------------------------------------------------------------------------------


def marking_fn(probe: Probe) -> Callable[..., Any]:
    """A video function that paints the bottom rows of the frame (no additional inputs)."""

    def fn(frame: np.ndarray) -> np.ndarray:
        probe.bump("calls")
        out = np.array(frame, copy=True)
        out[-MARK_ROWS:, :, :] = MARK
        return out

    return fn


def threshold_fn(probe: Probe) -> Callable[..., Any]:
    """The docs' detection(image, conf_threshold=0.3): records (frame width, threshold)."""

    def detection(image: np.ndarray, conf_threshold: Any = 0.3) -> np.ndarray:
        probe.add("call", (int(np.asarray(image).shape[1]), conf_threshold))
        return image

    return detection


def counting_fn(api: Api, probe: Probe) -> Callable[..., Any]:
    """A video function returning ``(frame, AdditionalOutputs(n))`` on every 10th call."""

    def detection(image: np.ndarray, conf_threshold: Any = 0.3) -> Any:
        n = probe.bump("calls")
        if n % 10 == 0:
            return image, api.AdditionalOutputs(n)
        return image

    return detection


def asking_handler(api: Api, probe: Probe) -> Any:
    """An echo StreamHandler whose first emit calls wait_for_args_sync() and records
    latest_args (fastrtc's handler API)."""

    class Asking(api.StreamHandler):  # type: ignore[name-defined,misc]
        def __init__(self) -> None:
            super().__init__()
            self.queue: queue.Queue[Any] = queue.Queue()
            self.asked = False

        def receive(self, frame: Any) -> None:
            self.queue.put(frame)

        def emit(self) -> Any:
            if not self.asked:
                self.asked = True
                probe.add("asking", time.time())
                self.wait_for_args_sync()
                probe.add("args", list(self.latest_args))
            return self.queue.get()

        def copy(self) -> Any:
            return Asking()

    return Asking()


class AVEcho:
    """Builds an AudioVideoStreamHandler echo with ``api``'s base class."""

    @staticmethod
    def make(api: Api) -> Any:
        class Echo(api.AudioVideoStreamHandler):  # type: ignore[name-defined,misc]
            def __init__(self) -> None:
                super().__init__()
                self.audio: queue.Queue[Any] = queue.Queue()
                self.video: queue.Queue[Any] = queue.Queue()

            def receive(self, frame: Any) -> None:
                self.audio.put(frame)

            def emit(self) -> Any:
                return self.audio.get()

            def video_receive(self, frame: Any) -> None:
                self.video.put(frame)

            def video_emit(self) -> Any:
                return self.video.get()

            def copy(self) -> Any:
                return Echo()

        return Echo()


def audio_generator() -> Any:
    rate = 24000
    for _ in range(10):
        yield (rate, np.zeros((1, rate // 10), dtype=np.int16))


def video_generator() -> Any:
    for _ in range(10):
        yield np.zeros((240, 320, 3), dtype=np.uint8)


# -- sessions --------------------------------------------------------------------------------


@dataclass
class Served:
    """A stream mounted on a served app, as a session's script sees it."""

    url: str
    path: str
    stream: Any
    adapter: Adapter
    http: httpx.AsyncClient
    probe: Probe

    @property
    def offer_url(self) -> str:
        return f"{self.url}{self.path}/webrtc/offer"

    def peer(self, **kwargs: Any) -> RoutePeer:
        return RoutePeer(self.http, self.offer_url, **kwargs)


Script = Callable[[Served], Awaitable[dict[str, Any]]]


@dataclass
class Session:
    """How to make a session's stream (``build(api, probe) -> (Stream kwargs)``), where to
    mount it, and the script that drives it."""

    build: Callable[[Api, Probe], dict[str, Any]]
    script: Script
    path: str = ""
    hooks: bool = False  # add the docs' POST {path}/input_hook and GET {path}/updates


@dataclass
class Result:
    probe: Probe
    notes: dict[str, Any] = field(default_factory=dict)


def _add_hooks(app: Any, adapter: Adapter, api: Api, stream: Any, path: str) -> None:
    """The documentation's input and output hooks as routes of ``app``: POST
    ``{path}/input_hook`` ({webrtc_id, value} -> ``stream.set_input(webrtc_id, value)``)
    and GET ``{path}/updates?webrtc_id=`` (``output_stream`` as server-sent events)."""
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response, StreamingResponse

    async def input_hook(request: Request) -> Response:
        body = await request.json()
        adapter.set_input(stream, body["webrtc_id"], body["value"])
        return JSONResponse({"status": "ok"})

    async def updates(request: Request) -> Response:
        webrtc_id = request.query_params["webrtc_id"]

        async def events() -> AsyncIterator[str]:
            async for output in adapter.output_stream(stream, webrtc_id):
                item = {
                    "additional_outputs": isinstance(output, api.AdditionalOutputs),
                    "args": list(getattr(output, "args", ())),
                }
                yield f"data: {json.dumps(item, default=repr)}\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    app.add_route(f"{path}/input_hook", input_hook, methods=["POST"])
    app.add_route(f"{path}/updates", updates, methods=["GET"])


def record(adapter: Adapter, api: Api, session: Session) -> Result:
    """Make the session's stream, mount it on a FastAPI app, serve it, run the script."""
    from fastapi import FastAPI

    adapter.require("stream")
    probe = Probe()
    stream = adapter.make_stream(**session.build(api, probe))
    app = FastAPI()
    adapter.mount(stream, app, session.path)
    if session.hooks:
        _add_hooks(app, adapter, api, stream, session.path)

    async def run(url: str) -> dict[str, Any]:
        async with httpx.AsyncClient(timeout=scaled(20.0)) as http:
            served = Served(url, session.path, stream, adapter, http, probe)
            return await session.script(served)

    with served_app(app) as url:
        notes = run_async(run(url))
    return Result(probe, notes)


class Sessions:
    """The module's sessions, each recorded when a test first reads it (an exception
    while recording is raised again in every test that reads that session)."""

    def __init__(self, adapter: Adapter, api: Api) -> None:
        self.adapter, self.api = adapter, api
        self._results: dict[str, Result | BaseException] = {}

    def __getitem__(self, name: str) -> Result:
        if name not in self._results:
            try:
                self._results[name] = record(self.adapter, self.api, SESSIONS[name])
            except BaseException as exc:
                if not isinstance(exc, Exception):
                    raise
                self._results[name] = exc
        result = self._results[name]
        if isinstance(result, BaseException):
            raise result
        return result


@pytest.fixture(scope="module")
def sessions(adapter: Adapter, api: Api) -> Sessions:
    return Sessions(adapter, api)


async def closing(*peers: RoutePeer) -> None:
    await asyncio.gather(*(peer.close() for peer in peers), return_exceptions=True)


# -- scripts ---------------------------------------------------------------------------------


async def _audio_echo(served: Served) -> dict[str, Any]:
    from fixtures.analysis import dominant_frequency

    peer = served.peer(send=tone_track(440.0))
    try:
        response = await peer.offer()
        reply = response.json()
        notes: dict[str, Any] = {"status": response.status_code, "reply": reply}
        await peer.apply(reply)
        await peer.wait_connected()
        recorder = await peer.recorder("audio")
        await recorder.wait_for_samples(int(48000 * 2.0), scaled(10.0))
        rate = recorder.sample_rate or 48000
        tail = recorder.samples()[-rate:]
        loud = float(np.sqrt(np.mean((tail.astype(np.float64) / 32768) ** 2)))
        notes["rms"] = loud
        notes["frequency"] = float(dominant_frequency(tail, rate)) if loud > 0.01 else 0.0
        return notes
    finally:
        await closing(peer)


async def _video_echo(served: Served) -> dict[str, Any]:
    peer = served.peer(send=barcode(320, 240))
    try:
        await peer.connect()
        recorder = await peer.recorder("video")
        await eventually(lambda: len(_marked(recorder)) >= 30, 10.0)
        return {
            "frames": [(f.frame_id, round(f.mark)) for f in recorder.frames],
            "marked": _marked(recorder),
        }
    finally:
        await closing(peer)


def _marked(recorder: Any) -> list[int]:
    return [
        f.frame_id for f in recorder.frames if f.frame_id is not None and abs(f.mark - MARK) < 20
    ]


async def _prefixed(served: Served) -> dict[str, Any]:
    peer = served.peer(send=tone_track(440.0))
    try:
        reply = await peer.connect()
        body = {"sdp": "v=0", "type": "offer", "webrtc_id": "outside1"}
        root = await served.http.post(f"{served.url}/webrtc/offer", json=body)
        return {"reply_type": reply.get("type"), "root_status": root.status_code}
    finally:
        await closing(peer)


async def _trickle(served: Served) -> dict[str, Any]:
    """Peer ``after``: createOffer()'s SDP, candidates posted after the answer came and
    before it is applied. Peer ``before``: a candidate posted before the offer."""
    notes: dict[str, Any] = {}
    after = served.peer(send=tone_track(440.0))
    before = served.peer(send=tone_track(660.0))
    try:
        body = await after.make_offer(trickle=True)
        notes["offer_has_candidates"] = "a=candidate" in body["sdp"]
        reply = (await after.post(body)).json()
        trickled = []
        for candidate in after.candidates:
            response = await after.trickle(candidate)
            trickled.append((response.status_code, _json(response)))
        notes["after_replies"] = trickled
        await after.apply(reply)
        await after.wait_connected()
        hosts = {host_address(c) for c in after.candidates}
        notes["after_hosts"] = sorted(hosts)
        await eventually(
            lambda: (
                hosts <= served.adapter.server_remote_candidates(served.stream, after.webrtc_id)
            ),
            5.0,
        )
        notes["after_known"] = sorted(
            served.adapter.server_remote_candidates(served.stream, after.webrtc_id)
        )

        body = await before.make_offer(trickle=True)
        early = before.candidates[0]
        response = await before.trickle(early)
        notes["before_reply"] = (response.status_code, _json(response))
        reply = (await before.post(body)).json()
        await before.apply(reply)
        await before.wait_connected()
        notes["before_host"] = host_address(early)
        await eventually(
            lambda: (
                host_address(early)
                in served.adapter.server_remote_candidates(served.stream, before.webrtc_id)
            ),
            5.0,
        )
        notes["before_known"] = sorted(
            served.adapter.server_remote_candidates(served.stream, before.webrtc_id)
        )
        return notes
    finally:
        await closing(after, before)


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return response.text[:200]


async def _post_input(served: Served, webrtc_id: str, value: Any) -> None:
    response = await served.http.post(
        f"{served.url}{served.path}/input_hook", json={"webrtc_id": webrtc_id, "value": value}
    )
    assert response.status_code == 200, f"input_hook: HTTP {response.status_code}"


async def _inputs(served: Served) -> dict[str, Any]:
    """Two clients (320 and 160 pixels wide); each gets its own value via the hook."""
    wide = served.peer(send=barcode(320, 240))
    narrow = served.peer(send=barcode(160, 120))
    try:
        await wide.connect()
        await narrow.connect()
        await _post_input(served, wide.webrtc_id, 0.7)
        await _post_input(served, narrow.webrtc_id, 0.2)
        calls = lambda: served.probe.get("call")  # noqa: E731
        await eventually(lambda: {(320, 0.7), (160, 0.2)} <= set(calls()), 10.0)
        # a few more calls after both values were seen
        count = len(calls())
        await eventually(lambda: len(calls()) >= count + 20, 5.0)
        return {"calls": calls()}
    finally:
        await closing(wide, narrow)


async def _ask(served: Served) -> dict[str, Any]:
    asked: list[float] = []
    peer_box: list[RoutePeer] = []

    async def on_message(text: str) -> None:
        try:
            kind = json.loads(text).get("type")
        except (ValueError, AttributeError):
            return
        if kind == "send_input" and not asked:
            asked.append(time.time())
            await _post_input(served, peer_box[0].webrtc_id, 0.61)

    peer = served.peer(send=tone_track(440.0), on_message=on_message)
    peer_box.append(peer)
    try:
        await peer.connect()
        await eventually(lambda: bool(served.probe.get("args")), 10.0)
        return {"asked": asked, "messages": [m.text for m in peer.messages][:20]}
    finally:
        await closing(peer)


async def _outputs(served: Served) -> dict[str, Any]:
    peer = served.peer(send=barcode(160, 120))
    try:
        await peer.connect()
        await _post_input(served, peer.webrtc_id, 0.5)  # inputs set, as a client does
        items: list[Any] = []

        async def read() -> None:
            async with served.http.stream(
                "GET", f"{served.url}{served.path}/updates", params={"webrtc_id": peer.webrtc_id}
            ) as response:
                async for line in response.aiter_lines():
                    if line.startswith("data: "):
                        items.append(json.loads(line[6:]))
                        if len(items) >= 3:
                            return

        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(read(), scaled(15.0))
        await eventually(
            lambda: any(m.get("type") == "fetch_output" for m in peer.json_messages()), 5.0
        )
        return {"items": items, "messages": [m.text for m in peer.messages][:20]}
    finally:
        await closing(peer)


async def _bad_bodies(served: Served) -> dict[str, Any]:
    bodies = {
        "not JSON": b"not json",
        "a JSON string": b'"a string"',
        "no webrtc_id": b'{"sdp": "v=0", "type": "offer"}',
        "an SDP that does not parse": b'{"sdp": "nonsense", "type": "offer", "webrtc_id": "ab1"}',
    }
    replies = {}
    for what, raw in bodies.items():
        response = await served.http.post(
            served.offer_url, content=raw, headers={"Content-Type": "application/json"}
        )
        replies[what] = (response.status_code, _json(response))
    return {"replies": replies}


async def _limited(served: Served) -> dict[str, Any]:
    first = served.peer(send=tone_track(440.0))
    second = served.peer(send=tone_track(440.0))
    later: list[RoutePeer] = []
    try:
        await first.connect()
        response = await second.offer()
        notes: dict[str, Any] = {"second": (response.status_code, _json(response))}
        await first.close()
        left = time.monotonic()
        answered_after: float | None = None
        deadline = left + scaled(10.0)
        while time.monotonic() < deadline:
            peer = served.peer(send=tone_track(440.0))
            later.append(peer)
            reply = _json(await peer.offer())
            if isinstance(reply, dict) and reply.get("type") == "answer":
                answered_after = time.monotonic() - left
                break
            await peer.close()
            await asyncio.sleep(0.25)  # the next attempt, as a client retrying would
        notes["answered_after"] = answered_after
        return notes
    finally:
        await closing(first, second, *later)


async def _timed(served: Served) -> dict[str, Any]:
    peer = served.peer(send=tone_track(440.0))
    try:
        await peer.connect()
        connected = peer.connected_at or time.time()
        await eventually(lambda: peer.ended, 8.0)
        ended = next(
            (t for t, state in peer.states if state in ("closed", "failed")),
            next((m.t for m in peer.messages if '"end_stream"' in m.text), None),
        )
        return {"after": None if ended is None else ended - connected, "states": peer.states}
    finally:
        await closing(peer)


def _echo(api: Api, probe: Probe, **kwargs: Any) -> dict[str, Any]:
    return {
        "handler": echo_handler(api),
        "modality": "audio",
        "mode": "send-receive",
        "concurrency_limit": MANY,
        **kwargs,
    }


def _slider() -> Any:
    import gradio as gr

    return gr.Slider(minimum=0, maximum=1, step=0.01, value=0.3)


def _number() -> Any:
    import gradio as gr

    return gr.Number()


SESSIONS: dict[str, Session] = {
    "audio_echo": Session(lambda api, probe: _echo(api, probe), _audio_echo),
    "video_echo": Session(
        lambda api, probe: {
            "handler": marking_fn(probe),
            "modality": "video",
            "mode": "send-receive",
            "concurrency_limit": MANY,
        },
        _video_echo,
    ),
    "prefixed": Session(lambda api, probe: _echo(api, probe), _prefixed, path="/prefix"),
    "trickle": Session(lambda api, probe: _echo(api, probe), _trickle, path="/trickle"),
    "inputs": Session(
        lambda api, probe: {
            "handler": threshold_fn(probe),
            "modality": "video",
            "mode": "send-receive",
            "concurrency_limit": MANY,
            "additional_inputs": [_slider()],
        },
        _inputs,
        path="/inputs",
        hooks=True,
    ),
    "ask": Session(
        lambda api, probe: {
            "handler": asking_handler(api, probe),
            "modality": "audio",
            "mode": "send-receive",
            "concurrency_limit": MANY,
            "additional_inputs": [_slider()],
        },
        _ask,
        path="/ask",
        hooks=True,
    ),
    "outputs": Session(
        lambda api, probe: {
            "handler": counting_fn(api, probe),
            "modality": "video",
            "mode": "send-receive",
            "concurrency_limit": MANY,
            "additional_inputs": [_slider()],
            "additional_outputs": [_number()],
            "additional_outputs_handler": lambda previous, n: n,
        },
        _outputs,
        path="/outputs",
        hooks=True,
    ),
    "bad": Session(lambda api, probe: _echo(api, probe), _bad_bodies, path="/bad"),
    "limited": Session(
        lambda api, probe: _echo(api, probe, concurrency_limit=1), _limited, path="/limited"
    ),
    "timed": Session(lambda api, probe: _echo(api, probe, time_limit=2), _timed, path="/timed"),
}


# -- the constructor and .ui -------------------------------------------------------------------


def _documented_handlers(api: Api, probe: Probe) -> dict[tuple[str, str], Any]:
    return {
        ("video", "send-receive"): marking_fn(probe),
        ("video", "send"): marking_fn(probe),
        ("video", "receive"): video_generator,
        ("audio", "send-receive"): echo_handler(api),
        ("audio", "send"): echo_handler(api),
        ("audio", "receive"): audio_generator,
        ("audio-video", "send-receive"): AVEcho.make(api),
    }


@pytest.mark.requirement("FSTR-001")
def test_stream_is_made_with_the_documented_parameters(adapter: Adapter, api: Api) -> None:
    """Stream(handler, modality, mode, additional inputs and outputs, their handler,
    concurrency_limit, time_limit) for every documented handler, keeping the documented
    attributes."""
    adapter.require("stream")
    # the package's own WebRTC (an adapter may hand the suite a wrapper of it as api.WebRTC)
    webrtc_class = getattr(importlib.import_module(adapter.module), "WebRTC", api.WebRTC)
    probe = Probe()
    for (modality, mode), handler in _documented_handlers(api, probe).items():
        inputs, outputs = [_slider()], [_number()]

        def outputs_handler(previous: Any, n: Any) -> Any:
            return n

        stream = adapter.make_stream(
            handler,
            modality=modality,
            mode=mode,
            additional_inputs=inputs,
            additional_outputs=outputs,
            additional_outputs_handler=outputs_handler,
            concurrency_limit=5,
            time_limit=30,
        )
        where = f"Stream(modality={modality!r}, mode={mode!r})"
        assert stream.mode == mode and stream.modality == modality, where
        assert stream.event_handler is handler, f"{where}.event_handler is not the handler"
        assert stream.concurrency_limit == 5, (
            f"{where}.concurrency_limit: {stream.concurrency_limit}"
        )
        assert stream.time_limit == 30, f"{where}.time_limit: {stream.time_limit}"
        assert [id(c) for c in stream.additional_input_components] == [id(c) for c in inputs]
        assert [id(c) for c in stream.additional_output_components] == [id(c) for c in outputs]
        assert stream.additional_outputs_handler is outputs_handler, where
        assert isinstance(stream.webrtc_component, webrtc_class), (
            f"{where}.webrtc_component is a {type(stream.webrtc_component).__name__}"
        )


@pytest.mark.requirement("FSTR-002")
def test_stream_refuses_undocumented_modes_and_modalities(adapter: Adapter, api: Api) -> None:
    """ValueError at construction for an unknown mode or modality and for audio-video in
    send or receive mode."""
    adapter.require("stream")
    probe = Probe()
    adapter.make_stream(marking_fn(probe), modality="video", mode="send-receive")
    refused = {
        "mode='sideways'": {"handler": marking_fn(probe), "modality": "video", "mode": "sideways"},
        "modality='text'": {"handler": marking_fn(probe), "modality": "text", "mode": "send"},
        "audio-video, send": {
            "handler": AVEcho.make(api),
            "modality": "audio-video",
            "mode": "send",
        },
        "audio-video, receive": {
            "handler": AVEcho.make(api),
            "modality": "audio-video",
            "mode": "receive",
        },
    }
    accepted = []
    for what, kwargs in refused.items():
        try:
            adapter.make_stream(**kwargs)
        except ValueError:
            continue
        accepted.append(what)
    assert not accepted, f"Stream accepted {accepted}"


@pytest.mark.requirement("FSTR-003")
def test_ui_is_a_blocks_holding_the_component(adapter: Adapter, api: Api) -> None:
    """stream.ui is a gr.Blocks with the component and the additional inputs and outputs;
    launched, its config lists them; it can be replaced."""
    import gradio as gr

    adapter.require("stream")
    inputs, outputs = [_slider()], [_number()]
    stream = adapter.make_stream(
        threshold_fn(Probe()),
        modality="video",
        mode="send-receive",
        additional_inputs=inputs,
        additional_outputs=outputs,
        additional_outputs_handler=lambda previous, n: n,
    )
    ui = adapter.ui_of(stream)
    assert isinstance(ui, gr.Blocks), f"stream.ui is a {type(ui).__name__}"
    wanted = {stream.webrtc_component._id, inputs[0]._id, outputs[0]._id}
    assert wanted <= set(ui.blocks), f"stream.ui lacks blocks {wanted - set(ui.blocks)}"
    with launched(ui) as url:
        config = httpx.get(f"{url}/config", timeout=20).json()
    listed = {c["id"] for c in config["components"]}
    assert wanted <= listed, f"the launched UI's config lacks {wanted - listed}"
    replacement = gr.Blocks()
    adapter.set_ui(stream, replacement)
    assert adapter.ui_of(stream) is replacement, "assigning stream.ui did not replace it"


# -- mount and the route -------------------------------------------------------------------------


@pytest.mark.requirement("FSTR-004")
def test_audio_echo_through_the_mounted_route(sessions: Sessions) -> None:
    """mount(app): POST /webrtc/offer answers the offer; the echo returns the tone."""
    notes = sessions["audio_echo"].notes
    assert notes["status"] == 200 and notes["reply"].get("type") == "answer", notes["reply"]
    assert notes["rms"] > 0.05, f"the echo is silent (RMS {notes['rms']:.3f})"
    assert abs(notes["frequency"] - 440.0) < 10, f"the echo is at {notes['frequency']:.0f} Hz"


@pytest.mark.requirement("FSTR-005")
def test_video_handler_applied_through_the_mounted_route(sessions: Sessions) -> None:
    """The video function's frames come back over the route, in order."""
    notes = sessions["video_echo"].notes
    marked = notes["marked"]
    assert len(marked) >= 30, (
        f"{len(marked)} frames with the function's mark came back in 10 s (of "
        f"{len(notes['frames'])}; (id, mark) of the first: {notes['frames'][:5]})"
    )
    assert marked == sorted(marked), f"frames out of order: {marked[:40]}"


@pytest.mark.requirement("FSTR-006")
def test_mount_path_prefixes_the_routes(sessions: Sessions) -> None:
    """mount(app, path='/prefix'): the route is under the prefix and only there."""
    notes = sessions["prefixed"].notes
    assert notes["reply_type"] == "answer"
    assert notes["root_status"] in (404, 405), (
        f"POST /webrtc/offer (outside the prefix) got HTTP {notes['root_status']}"
    )


@pytest.mark.requirement("FSTR-007")
def test_candidates_trickled_after_the_answer_are_accepted(sessions: Sessions) -> None:
    notes = sessions["trickle"].notes
    assert not notes["offer_has_candidates"], "createOffer()'s SDP had candidates"
    replies = notes["after_replies"]
    assert replies, "the client gathered no candidates"
    refused = [
        r
        for r in replies
        if r[0] != 200 or (isinstance(r[1], dict) and r[1].get("status") == "failed")
    ]
    assert not refused, f"trickled candidates were refused: {refused}"
    hosts = {tuple(h) for h in notes["after_hosts"]}
    known = {tuple(k) for k in notes["after_known"]}
    assert hosts <= known, f"the server's ICE agent knows {sorted(known)}, not {sorted(hosts)}"


@pytest.mark.requirement("FSTR-008")
def test_a_candidate_trickled_before_its_offer_is_kept(sessions: Sessions) -> None:
    notes = sessions["trickle"].notes
    status, reply = notes["before_reply"]
    assert status == 200 and not (isinstance(reply, dict) and reply.get("status") == "failed"), (
        f"a candidate posted before its offer got HTTP {status}: {reply}"
    )
    host = tuple(notes["before_host"])
    known = {tuple(k) for k in notes["before_known"]}
    assert host in known, f"the server's ICE agent knows {sorted(known)}, not {host}"


# -- the hooks ---------------------------------------------------------------------------------


@pytest.mark.requirement("FSTR-009")
def test_set_input_reaches_the_connections_handler(sessions: Sessions) -> None:
    calls = sessions["inputs"].notes["calls"]
    wide = [value for width, value in calls if width == 320]
    narrow = [value for width, value in calls if width == 160]
    assert 0.7 in wide, f"after set_input(0.7) the function got {sorted(set(map(str, wide)))}"
    assert 0.2 in narrow, f"after set_input(0.2) the function got {sorted(set(map(str, narrow)))}"
    after_wide = wide[wide.index(0.7) :]
    after_narrow = narrow[narrow.index(0.2) :]
    assert set(after_wide) == {0.7}, f"the 320-pixel client's calls after its value: {after_wide}"
    assert set(after_narrow) == {0.2}, (
        f"the 160-pixel client's calls after its value: {after_narrow}"
    )


@pytest.mark.requirement("FSTR-010")
def test_wait_for_args_asks_with_send_input(adapter: Adapter, sessions: Sessions) -> None:
    adapter.require("fastrtc")
    result = sessions["ask"]
    asked = result.notes["asked"]
    assert asked, f"no send_input message came; messages: {result.notes['messages']}"
    args = result.probe.get("args")
    assert args, "wait_for_args_sync() did not return after the input hook was called"
    assert args[0][-1] == 0.61, f"latest_args after the hook: {args[0]}"


@pytest.mark.requirement("FSTR-011")
def test_output_stream_yields_the_handlers_outputs(sessions: Sessions) -> None:
    items = sessions["outputs"].notes["items"]
    assert len(items) >= 3, f"output_stream yielded {len(items)} items in 15 s: {items}"
    assert all(item["additional_outputs"] for item in items), (
        f"output_stream yielded something else than AdditionalOutputs: {items}"
    )
    values = [item["args"][0] for item in items]
    assert all(isinstance(v, int) and v % 10 == 0 for v in values), values
    assert values == sorted(set(values)), f"outputs out of order: {values}"


@pytest.mark.requirement("FSTR-012")
def test_outputs_are_announced_with_fetch_output(sessions: Sessions) -> None:
    messages = sessions["outputs"].notes["messages"]
    kinds = []
    for text in messages:
        try:
            kinds.append(json.loads(text).get("type"))
        except (ValueError, AttributeError):
            kinds.append(text)
    assert "fetch_output" in kinds, f"the data channel carried {messages}"


# -- failures and limits -----------------------------------------------------------------------


@pytest.mark.requirement("FSTR-013")
def test_bad_offer_bodies_get_failure_replies(sessions: Sessions) -> None:
    replies = sessions["bad"].notes["replies"]
    wrong = {
        what: reply
        for what, reply in replies.items()
        if not (
            reply[0] == 200
            and isinstance(reply[1], dict)
            and reply[1].get("status") == "failed"
            and isinstance(reply[1].get("meta"), dict)
            and isinstance(reply[1]["meta"].get("error"), str)
        )
    }
    assert not wrong, f"not a failure reply with HTTP 200: {wrong}"


@pytest.mark.requirement("FSTR-014")
def test_concurrency_limit_applies_on_the_route(sessions: Sessions) -> None:
    notes = sessions["limited"].notes
    status, reply = notes["second"]
    assert status == 200, f"the second offer got HTTP {status}"
    meta = reply.get("meta") if isinstance(reply, dict) else None
    assert isinstance(reply, dict) and reply.get("status") == "failed" and isinstance(meta, dict), (
        f"the second offer, over the limit, got {str(reply)[:200]}"
    )
    assert meta.get("error") == "concurrency_limit_reached" and meta.get("limit") == 1, meta
    assert notes["answered_after"] is not None, (
        "10 s after the first client left, offers were still refused"
    )


@pytest.mark.requirement("FSTR-015")
def test_time_limit_ends_route_connections(sessions: Sessions) -> None:
    notes = sessions["timed"].notes
    after = notes["after"]
    assert after is not None, f"the connection did not end within 8 s: {notes['states']}"
    assert 1.5 <= after <= 6.0, f"the connection ended {after:.1f} s after connecting"
