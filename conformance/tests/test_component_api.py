"""The component API: WebRTC(...), .stream(...) rules, .on_additional_outputs(...), exports.

These tests build Gradio Blocks with the implementation's classes; nothing is launched.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from typing import Any

import gradio as gr
import pytest

from conformance.adapters import Adapter, Api
from conformance.helpers import echo_handler


@pytest.fixture(autouse=True)
def _component(adapter: Adapter) -> None:
    """These requirements are about the Gradio component: not applicable without one."""
    adapter.require("component")


GUIDE_NAMES = ("WebRTC", "StreamHandler", "ReplyOnPause", "AdditionalOutputs")
MODES = ("send-receive", "send", "receive")
MODALITIES = ("audio", "video")


def dependencies(blocks: Any) -> list[dict[str, Any]]:
    """The event listeners of ``blocks`` as the app config lists them."""
    return list(blocks.get_config_file().get("dependencies", []))


def video_fn(frame: Any, *args: Any) -> Any:
    return frame


def generation() -> Iterator[Any]:
    yield from ()


def stream_fn(api: Api, mode: str, modality: str) -> Any:
    """A valid ``fn`` for the mode and modality."""
    if mode == "receive":
        return generation
    if modality == "audio":
        return echo_handler(api)
    return video_fn


@pytest.mark.requirement("API-001")
def test_package_exports_the_guide_names(adapter: Adapter) -> None:
    """The package exports WebRTC, StreamHandler, ReplyOnPause and AdditionalOutputs."""
    module = importlib.import_module(adapter.module)
    missing = [name for name in GUIDE_NAMES if not hasattr(module, name)]
    assert not missing, f"`from {adapter.module} import ...` lacks {missing}"


@pytest.mark.requirement("API-002")
@pytest.mark.parametrize("modality", MODALITIES)
@pytest.mark.parametrize("mode", MODES)
def test_component_builds_for_every_mode(api: Api, mode: str, modality: str) -> None:
    """WebRTC(label=..., mode=M, modality=X) can be created inside gr.Blocks for every mode
    (send-receive, send, receive) and modality (audio, video)."""
    with gr.Blocks():
        component = api.WebRTC(label="Stream", mode=mode, modality=modality)
    assert component.mode == mode and component.modality == modality


@pytest.mark.requirement("API-003")
@pytest.mark.parametrize("modality", MODALITIES)
@pytest.mark.parametrize("mode", ["send-receive", "send"])
def test_stream_accepts_the_guide_call(api: Api, mode: str, modality: str) -> None:
    """In send-receive and send modes, stream(fn, inputs=[webrtc, *others],
    outputs=[webrtc], time_limit=T) is accepted, and it registers the listener that hands
    the other inputs to the stream (inputs [webrtc, *others], protocol §4)."""
    with gr.Blocks() as blocks:
        component = api.WebRTC(label="Stream", mode=mode, modality=modality)
        slider = gr.Slider(0, 1, value=0.3)
        component.stream(
            fn=stream_fn(api, mode, modality),
            inputs=[component, slider],
            outputs=[component],
            time_limit=10,
        )
    feeding = [
        d for d in dependencies(blocks) if d.get("inputs", [])[:2] == [component._id, slider._id]
    ]
    assert feeding, "stream() registered no listener taking [webrtc, slider] as inputs"


@pytest.mark.requirement("API-004")
@pytest.mark.parametrize("case", ["other first", "missing", "empty"])
@pytest.mark.parametrize("mode", ["send-receive", "send"])
def test_component_must_be_the_first_input(api: Api, mode: str, case: str) -> None:
    """In send-receive and send modes, stream() raises ValueError when the WebRTC component
    is not the first input (including when inputs is empty)."""
    with gr.Blocks():
        component = api.WebRTC(label="Stream", mode=mode, modality="video")
        slider = gr.Slider(0, 1)
        inputs = {"other first": [slider, component], "missing": [slider], "empty": []}[case]
        with pytest.raises(ValueError):
            component.stream(fn=video_fn, inputs=inputs, outputs=[component])


@pytest.mark.requirement("API-005")
@pytest.mark.parametrize("case", ["other", "self and other", "other and self", "empty"])
@pytest.mark.parametrize("mode", MODES)
def test_component_must_be_the_only_output(api: Api, mode: str, case: str) -> None:
    """stream() raises ValueError unless outputs is exactly [webrtc]: [other],
    [webrtc, other], [other, webrtc] and [] are all refused."""
    with gr.Blocks():
        component = api.WebRTC(label="Stream", mode=mode, modality="video")
        other = gr.Textbox()
        button = gr.Button()
        outputs = {
            "other": [other],
            "self and other": [component, other],
            "other and self": [other, component],
            "empty": [],
        }[case]
        kwargs: dict[str, Any] = {"outputs": outputs}
        if mode == "receive":
            kwargs.update(fn=generation, inputs=None, trigger=button.click)
        else:
            kwargs.update(fn=video_fn, inputs=[component])
        with pytest.raises(ValueError):
            component.stream(**kwargs)


@pytest.mark.requirement("API-006")
@pytest.mark.parametrize("modality", MODALITIES)
def test_receive_mode_needs_a_trigger(api: Api, modality: str) -> None:
    """In receive mode, stream() raises ValueError when no trigger is given."""
    with gr.Blocks():
        component = api.WebRTC(label="Stream", mode="receive", modality=modality)
        with pytest.raises(ValueError):
            component.stream(fn=generation, inputs=None, outputs=[component])


@pytest.mark.requirement("API-007")
@pytest.mark.parametrize("with_inputs", [False, True])
@pytest.mark.parametrize("modality", MODALITIES)
def test_receive_mode_accepts_a_trigger(api: Api, modality: str, with_inputs: bool) -> None:
    """In receive mode, stream(fn, inputs=[...] or None, outputs=[webrtc],
    trigger=button.click) is accepted, and the trigger gets a listener that updates the
    component (which starts the browser)."""
    with gr.Blocks() as blocks:
        component = api.WebRTC(label="Stream", mode="receive", modality=modality)
        steps = gr.Slider(1, 10, value=5, step=1)
        button = gr.Button("Generate")

        def generate(*args: Any) -> Iterator[Any]:
            yield from ()

        component.stream(
            fn=generate,
            inputs=[steps] if with_inputs else None,
            outputs=[component],
            trigger=button.click,
        )
    clicks = [
        d
        for d in dependencies(blocks)
        if [button._id, "click"] in [list(t) for t in d.get("targets", [])]
        and component._id in d.get("outputs", [])
    ]
    assert clicks, "the trigger's click has no listener that updates the component"


@pytest.mark.requirement("API-008")
def test_receive_mode_refuses_the_component_as_input(api: Api) -> None:
    """In receive mode, stream() raises ValueError when the WebRTC component is one of the
    inputs."""
    with gr.Blocks():
        component = api.WebRTC(label="Stream", mode="receive", modality="video")
        button = gr.Button()
        with pytest.raises(ValueError):
            component.stream(
                fn=generation, inputs=[component], outputs=[component], trigger=button.click
            )


@pytest.mark.requirement("API-009")
def test_audio_send_receive_needs_a_stream_handler(api: Api) -> None:
    """In send-receive audio mode, stream() raises ValueError at build time when fn is not a
    StreamHandler."""
    with gr.Blocks():
        component = api.WebRTC(label="Stream", mode="send-receive", modality="audio")

        def not_a_handler(audio: Any) -> Any:
            return audio

        with pytest.raises(ValueError):
            component.stream(fn=not_a_handler, inputs=[component], outputs=[component])


@pytest.mark.requirement("API-010")
@pytest.mark.parametrize(
    ("mode", "modality"), [("bogus", "video"), ("send-receive", "smell"), ("SEND", "audio")]
)
def test_unknown_mode_or_modality_is_refused(api: Api, mode: str, modality: str) -> None:
    """WebRTC() raises ValueError for an unknown mode or modality."""
    with gr.Blocks(), pytest.raises(ValueError):
        api.WebRTC(label="Stream", mode=mode, modality=modality)


@pytest.mark.requirement("API-011")
def test_on_additional_outputs_as_the_guide_calls_it(api: Api) -> None:
    """on_additional_outputs(fn, outputs=[...], queue=False, show_progress='hidden') is
    accepted without inputs, and registers a listener of the component that updates those
    outputs, off the queue as asked."""
    with gr.Blocks() as blocks:
        state = gr.State(value=[])
        with gr.Row():
            component = api.WebRTC(label="Stream", mode="send", modality="video")
            transcript = gr.JSON()
        component.stream(video_fn, inputs=[component, state, transcript], outputs=[component])
        component.on_additional_outputs(
            lambda s, a: (s, a), outputs=[state, transcript], queue=False, show_progress="hidden"
        )
    updating = [
        d
        for d in dependencies(blocks)
        if d.get("outputs") == [state._id, transcript._id]
        and any(t[0] == component._id for t in d.get("targets", []))
    ]
    assert updating, "no listener of the component updates [state, transcript]"
    assert updating[0].get("queue") is False, "queue=False was not honoured"


@pytest.mark.requirement("API-012")
def test_reply_on_pause_is_a_stream_handler(api: Api) -> None:
    """ReplyOnPause is a StreamHandler (a subclass of the exported StreamHandler)."""
    assert isinstance(api.ReplyOnPause, type) and issubclass(api.ReplyOnPause, api.StreamHandler)


@pytest.mark.requirement("API-013")
async def test_guide_echo_handler_can_be_instantiated(adapter: Adapter) -> None:
    """StreamHandler is subclassed by implementing receive, emit and copy; the guide's
    EchoHandler (calling super().__init__()) can be instantiated, and a stream with it
    drives a copy of it for a connection (copy() is called, receive() gets the audio)."""
    from conformance.adapters import Scenario
    from conformance.helpers import Probe
    from conformance.wire import eventually, serving
    from fixtures.tracks import ToneAudioTrack

    api = adapter.api()
    handler = echo_handler(api)
    assert isinstance(handler, api.StreamHandler)
    clone = handler.copy()
    assert isinstance(clone, api.StreamHandler) and clone is not handler
    probe = Probe()

    def counted(api: Api) -> Any:
        base = type(echo_handler(api))

        class Counted(base):  # type: ignore[valid-type,misc]
            def receive(self, frame: Any) -> None:
                probe.bump("receive")
                super().receive(frame)

            def copy(self) -> Any:
                probe.bump("copy")
                return Counted()

        return Counted()

    async with serving(adapter, Scenario("send-receive", "audio", counted)) as wire:
        peer = wire.peer(send=ToneAudioTrack(440.0))
        await peer.connect_ok()
        assert await eventually(lambda: probe.count("receive") >= 5, 5.0), "receive() never ran"
        assert probe.count("copy") >= 1, "the stream did not copy the handler"
