"""The adapter protocol: how the suite gets a scenario served by an implementation.

An **adapter** wraps one implementation (a package with the user guide's API). It says
which capabilities it claims, hands the suite the implementation's public classes
(:class:`Api`), and **serves** a :class:`Scenario`: it builds the Gradio app the user guide
would write for it (a ``WebRTC`` component, its ``stream`` event, extra inputs, a trigger
button, ``on_additional_outputs``), launches it on 127.0.0.1 in this process, and yields a
:class:`Served`: the app's URL plus the component ids the wire client needs. Everything
after that is the implementation's wire protocol, spoken by :mod:`conformance.wire`.

A scenario's handler is written once, against :class:`Api` (``api.StreamHandler`` as the
base class, ``api.AdditionalOutputs(...)`` to yield, ``api.reply_on_pause(fn)``), so the
same user code runs on every implementation. Because the app runs in the suite's process,
handlers can record what they see into probes (thread-safe lists) that tests assert on.

Capabilities an adapter does not claim make the tests that need them UNSUPPORTED (with the
adapter's reason), never FAIL. See docs/adding-an-implementation.md.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import socket
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

Mode = Literal["send-receive", "send", "receive"]
Modality = Literal["audio", "video", "audio-video"]
MODES: tuple[Mode, ...] = ("send-receive", "send", "receive")
#: The user guide's modalities (every mode). fastrtc's "audio-video" exists in send-receive
#: mode only (the fastrtc profile).
MODALITIES: tuple[Modality, ...] = ("audio", "video")

#: Every capability the suite knows. ``<modality>.<mode>`` are the stream kinds.
CAPABILITIES: frozenset[str] = frozenset(
    {f"{modality}.{mode}" for modality in MODALITIES for mode in MODES}
    | {
        # fastrtc's AudioVideoStreamHandler / AsyncAudioVideoStreamHandler (Api's fields)
        "audio-video.send-receive",
    }
    | {
        "reply_on_pause",  # ReplyOnPause works offline (its pause detector is available)
        "additional_outputs",  # AdditionalOutputs + on_additional_outputs
        "fastrtc",  # fastrtc's handler API (the fastrtc profile): FastrtcApi's names
        "stream",  # fastrtc's Stream: .ui, .mount(app), set_input, output_stream
        "component",  # the Gradio WebRTC component itself (its constructor, props, events)
    }
)


class Unsupported(Exception):
    """A test needs a capability the adapter does not claim (reported UNSUPPORTED)."""


@dataclass(frozen=True)
class Api:
    """The implementation's public API, as the user guide uses it.

    ``reply_on_pause(fn, **kwargs)`` constructs a ``ReplyOnPause``; adapters use it to
    inject an offline pause detector where the implementation accepts one.
    ``AudioVideoStreamHandler`` / ``AsyncAudioVideoStreamHandler``: the base classes of
    the ``audio-video`` modality (fastrtc's names), a :class:`NotExported` where the
    package has none (see :func:`exported`).
    """

    WebRTC: type
    StreamHandler: type
    AdditionalOutputs: type
    ReplyOnPause: type
    reply_on_pause: Callable[..., Any]
    AudioVideoStreamHandler: Any = None
    AsyncAudioVideoStreamHandler: Any = None


#: The names of fastrtc's handler API (the fastrtc profile) the suite uses, as exported by
#: the implementation's package (FAPI-001).
FASTRTC_NAMES: tuple[str, ...] = (
    "AsyncStreamHandler",
    "VideoStreamHandler",
    "CloseStream",
    "Warning",
    "WebRTCError",
    "get_current_context",
    "wait_for_item",
    "audio_to_bytes",
    "audio_to_file",
    "audio_to_float32",
    "audio_to_int16",
    "aggregate_bytes_to_16bit",
    "async_aggregate_bytes_to_16bit",
)


class NotExported:
    """Stands for a name of :data:`FASTRTC_NAMES` the package does not export: using it
    (calling, subclassing) fails with a message naming it."""

    def __init__(self, module: str, name: str) -> None:
        self.module, self.name = module, name

    def _fail(self, *args: Any, **kwargs: Any) -> Any:
        raise AttributeError(f"{self.module} does not export {self.name}")

    __call__ = _fail
    __mro_entries__ = _fail


def exported(module_name: str, name: str) -> Any:
    """``module_name``'s export ``name``, or a :class:`NotExported` standing for it."""
    module = importlib.import_module(module_name)
    try:
        return getattr(module, name)
    except AttributeError:
        return NotExported(module_name, name)


@dataclass(frozen=True)
class FastrtcApi:
    """fastrtc's handler API, as fastrtc's documentation uses it (the fastrtc profile):
    each field is the package's export of that name (:data:`FASTRTC_NAMES`)."""

    AsyncStreamHandler: Any
    VideoStreamHandler: Any
    CloseStream: Any
    Warning: Any
    WebRTCError: Any
    get_current_context: Any
    wait_for_item: Any
    audio_to_bytes: Any
    audio_to_file: Any
    audio_to_float32: Any
    audio_to_int16: Any
    aggregate_bytes_to_16bit: Any
    async_aggregate_bytes_to_16bit: Any

    @classmethod
    def from_module(cls, module_name: str) -> FastrtcApi:
        """The names as ``module_name`` exports them (:class:`NotExported` where it does not)."""
        module = importlib.import_module(module_name)
        values = {}
        for name in FASTRTC_NAMES:
            try:
                values[name] = getattr(module, name)
            except AttributeError:
                values[name] = NotExported(module_name, name)
        return cls(**values)


@dataclass(frozen=True)
class Input:
    """Another input component of the stream, with its initial value.

    ``kind``: ``"number"`` (gr.Number), ``"checkbox"``, ``"text"`` or ``"state"``
    (gr.State; the browser never sends its value, the server keeps it).
    """

    value: Any = 0
    kind: Literal["number", "checkbox", "text", "state"] = "number"


@dataclass(frozen=True)
class Scenario:
    """What to serve: one or more WebRTC components, each with one stream event.

    Parameters:
        mode, modality: of every component.
        handler: ``handler(api) -> fn``; called once per component to build the stream's
            ``fn`` (a StreamHandler instance, a video function, a generator function).
        inputs: the stream's other inputs (after the component in send modes; the
            trigger's inputs in receive mode).
        outputs: number of components updated by ``on_additional_outputs``; 0 registers no
            ``on_additional_outputs``. They are ``gr.Textbox``es and each value the fn
            returns is sent as JSON text (the wire client decodes it): any JSON value
            survives every Gradio version, streaming included.
        on_outputs: the ``on_additional_outputs`` fn; default returns its arguments,
            one per output.
        outputs_inputs: inputs passed to ``on_additional_outputs`` (indices into
            ``inputs``); the guide passes none.
        outputs_queue: ``queue=`` of ``on_additional_outputs`` (the guide uses False).
        time_limit: ``stream(time_limit=...)``.
        constructor_time_limit: ``WebRTC(time_limit=...)``.
        concurrency_limit: ``stream(concurrency_limit=...)``; ``"default"`` passes nothing.
        components: how many WebRTC components (each with its own stream).
        show_error: ``launch(show_error=...)`` of the app.
        webrtc_kwargs: more keyword arguments of ``WebRTC(...)`` (``rtc_configuration``).
        needs_fastrtc: the handler uses fastrtc's handler API (capability ``fastrtc``).
    """

    mode: Mode
    modality: Modality
    handler: Callable[[Api], Any]
    inputs: tuple[Input, ...] = ()
    outputs: int = 0
    on_outputs: Callable[..., Any] | None = None
    outputs_inputs: tuple[int, ...] = ()
    outputs_queue: bool = True
    time_limit: float | None = None
    constructor_time_limit: float | None = None
    concurrency_limit: int | Literal["default"] | None = "default"
    components: int = 1
    show_error: bool = True
    webrtc_kwargs: dict[str, Any] = field(default_factory=dict)
    needs_fastrtc: bool = False

    @property
    def needs(self) -> frozenset[str]:
        """The capabilities serving this scenario requires."""
        needs = {f"{self.modality}.{self.mode}"}
        if self.outputs:
            needs.add("additional_outputs")
        if self.needs_fastrtc:
            needs.add("fastrtc")
        return frozenset(needs)


@dataclass
class ServedStream:
    """Component ids of one served WebRTC component and its companions."""

    webrtc: int
    inputs: list[int]
    input_kinds: list[str]
    outputs: list[int]
    trigger: int | None


@dataclass
class Served:
    """A scenario being served: where it is and how the browser client of the
    implementation behaves (the wire client imitates it).

    ``periodic_ticks``: the client fires ``tick`` every 0.5 s (video send modes) / 1 s
    (receive mode) while connected, as gradio_webrtc's client does. ``tick_on_open``: the
    client fires ``tick`` when the data channel opens. ``rtc_configuration_for(peer)``:
    the RTCPeerConnection configuration the client would use for ``peer``'s next
    connection (:meth:`Adapter.rtc_configuration_for`).
    """

    url: str
    scenario: Scenario
    streams: list[ServedStream]
    periodic_ticks: bool = True
    tick_on_open: bool = True
    rtc_configuration_for: Callable[[Any], Awaitable[Any]] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class Adapter(ABC):
    """One implementation under test (see the module docstring)."""

    #: Short id used by ``--impl`` and in reports.
    name: str = ""
    #: The importable package users import the guide's names from (API-001).
    module: str = ""
    #: Capabilities claimed (a subset of :data:`CAPABILITIES`).
    capabilities: frozenset[str] = frozenset()
    #: Why a capability is not claimed: shown as the UNSUPPORTED message.
    unsupported: dict[str, str] = {}  # noqa: RUF012 - read-only class default
    #: Whose expectation file (conformance/expectations/<name>.toml) applies; None: its own.
    expectations: str | None = None
    #: How the implementation's browser client ticks (see :class:`Served`).
    periodic_ticks: bool = True
    tick_on_open: bool = True
    #: The implementation keeps connection state per process, not per app (gradio_webrtc):
    #: scenarios are then recorded one at a time and :meth:`reset` runs before each test,
    #: as if each test had a process of its own. (LIM-008 still checks the sharing.)
    shared_state: bool = False

    def reset(self) -> None:
        """Forget connection state left by earlier tests (only for ``shared_state``)."""

    def ticks_on_open(self, scenario: Scenario) -> bool:
        """Whether the implementation's browser client fires ``tick`` once connected."""
        return self.tick_on_open

    @abstractmethod
    def version(self) -> str:
        """The implementation's version (for the report)."""

    @abstractmethod
    def api(self) -> Api:
        """The implementation's public API."""

    async def rtc_configuration_for(self, peer: Any) -> Any:
        """The RTCPeerConnection configuration the implementation's browser client would
        use for the next connection of ``peer`` (a :class:`~conformance.wire.WirePeer`).

        Default: the component's ``rtc_configuration`` prop; adapters whose client asks
        the server before each connection (a function as ``rtc_configuration``) do that.
        """
        component = await peer.wire.app.component(peer.ids.webrtc)
        return component.get("props", {}).get("rtc_configuration")

    def fastrtc_api(self) -> FastrtcApi:
        """fastrtc's handler API as the implementation's package exports it (the fastrtc
        profile); :class:`Unsupported` unless the adapter claims ``fastrtc``."""
        self.require("fastrtc")
        return FastrtcApi.from_module(self.module)

    # -- fastrtc's Stream (the fastrtc profile's FSTR requirements) ------------------------
    def stream_class(self) -> Any:
        """The package's ``Stream`` class (:class:`NotExported` if it has none);
        :class:`Unsupported` unless the adapter claims ``stream``."""
        self.require("stream")
        return exported(self.module, "Stream")

    def make_stream(self, handler: Any, **kwargs: Any) -> Any:
        """``Stream(handler=handler, **kwargs)`` as fastrtc's documentation writes it."""
        with _LAUNCH_LOCK:  # it builds a gr.Blocks (.ui): one at a time, as serve() does
            _ensure_event_loop()
            return self.stream_class()(handler=handler, **kwargs)

    def mount(self, stream: Any, app: Any, path: str = "") -> None:
        """``stream.mount(app, path)``: the stream's routes on the FastAPI ``app``."""
        stream.mount(app, path=path)

    def set_input(self, stream: Any, webrtc_id: str, *args: Any) -> None:
        """The input hook, ``stream.set_input(webrtc_id, *args)``."""
        stream.set_input(webrtc_id, *args)

    def output_stream(self, stream: Any, webrtc_id: str) -> Any:
        """The output hook, ``stream.output_stream(webrtc_id)`` (an async iterator of
        ``AdditionalOutputs``; iterated on the app's loop, in a route)."""
        return stream.output_stream(webrtc_id)

    def ui_of(self, stream: Any) -> Any:
        """``stream.ui``."""
        return stream.ui

    def set_ui(self, stream: Any, blocks: Any) -> None:
        """``stream.ui = blocks``."""
        stream.ui = blocks

    def server_remote_candidates(self, stream: Any, webrtc_id: str) -> set[tuple[str, int, str]]:
        """(ip, port, type) of every remote candidate the ICE agent of the server's peer
        connection for ``webrtc_id`` knows (``"host"`` for a signalled host candidate,
        ``"prflx"`` for one learnt from a connectivity check): an implementation detail
        only the adapter knows; the trickle requirements look for the trickled candidates
        there. Default: none known."""
        return set()

    def require(self, *capabilities: str) -> None:
        """Raise :class:`Unsupported` (with the adapter's reason) unless all are claimed."""
        for capability in capabilities:
            if capability not in CAPABILITIES:
                raise ValueError(f"unknown capability {capability!r}")
            if capability not in self.capabilities:
                reason = self.unsupported.get(capability, "not claimed by the adapter")
                raise Unsupported(f"{self.name} does not support {capability}: {reason}")

    def build(self, scenario: Scenario) -> tuple[Any, list[ServedStream]]:
        """Build the Gradio Blocks for ``scenario`` with this implementation's API."""
        return build_blocks(self.api(), scenario)

    @contextlib.contextmanager
    def serve(self, scenario: Scenario) -> Iterator[Served]:
        """Serve ``scenario`` on 127.0.0.1 in this process; close the app afterwards."""
        self.require(*scenario.needs)
        if self.shared_state:
            self.reset()
        with _LAUNCH_LOCK:  # Gradio's Blocks context is process-global: build one at a time
            _ensure_event_loop()
            blocks, streams = self.build(scenario)
        with launched(blocks, show_error=scenario.show_error) as url:
            yield Served(
                url=url,
                scenario=scenario,
                streams=streams,
                periodic_ticks=self.periodic_ticks,
                tick_on_open=self.ticks_on_open(scenario),
                rtc_configuration_for=self.rtc_configuration_for,
            )


# -- building the guide's app ---------------------------------------------------------------


def _input_component(spec: Input) -> Any:
    import gradio as gr

    if spec.kind == "number":
        precision = 0 if isinstance(spec.value, int) and not isinstance(spec.value, bool) else None
        return gr.Number(value=spec.value, precision=precision)
    if spec.kind == "checkbox":
        return gr.Checkbox(value=bool(spec.value))
    if spec.kind == "text":
        return gr.Textbox(value=str(spec.value))
    if spec.kind == "state":
        return gr.State(value=spec.value)
    raise ValueError(f"unknown input kind {spec.kind!r}")


def _identity(*values: Any) -> Any:
    return values[0] if len(values) == 1 else values


def _as_json_text(fn: Callable[..., Any], count: int) -> Callable[..., Any]:
    """Wrap an ``on_additional_outputs`` fn so each output value leaves as JSON text."""
    import functools
    import json

    @functools.wraps(fn)
    def wrapper(*args: Any) -> Any:
        result = fn(*args)
        values = [result] if count == 1 else list(result)
        encoded = [json.dumps(value, default=repr) for value in values]
        return encoded[0] if count == 1 else tuple(encoded)

    return wrapper


def build_blocks(api: Api, scenario: Scenario) -> tuple[Any, list[ServedStream]]:
    """The app the user guide would write for ``scenario``, with ``api``'s classes."""
    import gradio as gr

    streams: list[ServedStream] = []
    with gr.Blocks() as blocks:
        for index in range(scenario.components):
            kwargs: dict[str, Any] = {
                "label": f"Stream {index}",
                "mode": scenario.mode,
                "modality": scenario.modality,
            }
            if scenario.constructor_time_limit is not None:
                kwargs["time_limit"] = scenario.constructor_time_limit
            kwargs.update(scenario.webrtc_kwargs)
            webrtc = api.WebRTC(**kwargs)
            inputs = [_input_component(spec) for spec in scenario.inputs]
            button = gr.Button("Start") if scenario.mode == "receive" else None
            stream_kwargs: dict[str, Any] = {
                "fn": scenario.handler(api),
                "outputs": [webrtc],
            }
            if scenario.mode == "receive":
                assert button is not None
                stream_kwargs["inputs"] = inputs or None
                stream_kwargs["trigger"] = button.click
            else:
                stream_kwargs["inputs"] = [webrtc, *inputs]
            if scenario.time_limit is not None:
                stream_kwargs["time_limit"] = scenario.time_limit
            if scenario.concurrency_limit != "default":
                stream_kwargs["concurrency_limit"] = scenario.concurrency_limit
            webrtc.stream(**stream_kwargs)
            outputs: list[Any] = []
            if scenario.outputs:
                outputs = [gr.Textbox(label=f"output {i}") for i in range(scenario.outputs)]
                extra: dict[str, Any] = {}
                if scenario.outputs_inputs:
                    extra["inputs"] = [inputs[i] for i in scenario.outputs_inputs]
                webrtc.on_additional_outputs(
                    _as_json_text(scenario.on_outputs or _identity, scenario.outputs),
                    outputs=outputs,
                    queue=scenario.outputs_queue,
                    show_progress="hidden",
                    **extra,
                )
            streams.append(
                ServedStream(
                    webrtc=webrtc._id,
                    inputs=[c._id for c in inputs],
                    input_kinds=[spec.kind for spec in scenario.inputs],
                    outputs=[c._id for c in outputs],
                    trigger=button._id if button is not None else None,
                )
            )
    return blocks, streams


@contextlib.contextmanager
def no_pyi_stubs() -> Iterator[None]:
    """Define Gradio component subclasses without Gradio writing a ``.pyi`` beside them."""
    import gradio.component_meta as component_meta

    original = component_meta.create_or_modify_pyi
    component_meta.create_or_modify_pyi = lambda *args, **kwargs: None
    try:
        yield
    finally:
        component_meta.create_or_modify_pyi = original


# -- launching ---------------------------------------------------------------------------------

_LAUNCH_LOCK = threading.RLock()


def _ensure_event_loop() -> None:
    """Give this thread an event loop if it has none.

    Gradio 5 creates its queue's locks when Blocks are built, with
    ``asyncio.get_event_loop()``; in a worker thread without a loop it silently stores
    ``None`` and every queued event then fails with HTTP 500.
    """
    import asyncio
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            asyncio.get_event_loop()
        except RuntimeError:
            asyncio.set_event_loop(asyncio.new_event_loop())


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def launched(blocks: Any, host: str = "127.0.0.1", *, show_error: bool = True) -> Iterator[str]:
    """Launch ``blocks`` on a free loopback port in this process; yield its URL; close it."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    with _LAUNCH_LOCK:
        for attempt in range(3):
            port = free_port(host)
            try:
                blocks.launch(
                    server_name=host,
                    server_port=port,
                    prevent_thread_lock=True,
                    quiet=True,
                    show_error=show_error,
                )
                break
            except OSError:
                if attempt == 2:
                    raise
                time.sleep(0.05)
    try:
        yield f"http://{host}:{port}"
    finally:
        blocks.close()


@contextlib.contextmanager
def served_app(
    app: Any, host: str = "127.0.0.1", *, start_timeout: float = 20.0, stop_timeout: float = 5.0
) -> Iterator[str]:
    """Serve the ASGI ``app`` (a FastAPI app with mounted streams) with uvicorn on a free
    loopback port, in a thread of its own (its own event loop); yield its URL; stop it.

    Stopping waits for open responses at most 3 s (uvicorn's graceful shutdown), then for
    the thread at most ``stop_timeout`` seconds: an implementation whose user code still
    blocks a worker of that loop's executor (the guide's EchoHandler waits in
    ``queue.get()`` for ever) holds the loop's closing, and its daemon thread is left
    behind (the suite reports such threads when it exits).
    """
    import uvicorn

    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host=host,
            port=free_port(host),
            log_level="warning",
            timeout_graceful_shutdown=3,
        )
    )
    thread = threading.Thread(target=server.run, name="conformance-uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + start_timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise RuntimeError("uvicorn did not start serving the app")
        time.sleep(0.02)
    try:
        yield f"http://{host}:{server.config.port}"
    finally:
        server.should_exit = True
        thread.join(stop_timeout)


def stream_ids(streams: Sequence[ServedStream]) -> list[int]:
    return [s.webrtc for s in streams]
