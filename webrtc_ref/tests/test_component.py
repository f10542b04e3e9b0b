"""The ``WebRTC`` Gradio component: options, ``.stream()`` rules, additional outputs, the
``offer`` server function over HTTP, and the browser client in headless Chromium.

Exact messages are gradio_webrtc 0.0.16's where it had one; where it misbehaved (an
IndexError instead of a ValueError, a concurrency limit or time limit silently replaced,
None outputs that clear components, identity pre/postprocessing without an API type) the
fix has a test here.
"""

from __future__ import annotations

import inspect
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from webrtc_ref import component as component_module
from webrtc_ref.component import (
    DEFAULT_AUDIO_CONSTRAINTS,
    DEFAULT_VIDEO_CONSTRAINTS,
    MSG_AUDIO_HANDLER,
    MSG_FIRST_INPUT,
    MSG_ONLY_OUTPUT,
    MSG_RECEIVE_INPUT,
    MSG_RECEIVE_OUTPUT,
    MSG_RECEIVE_TRIGGER,
    MSG_SEND_AUDIO_HANDLER,
    START_SENTINEL,
    TRIGGER_JS,
    WebRTC,
    client_script,
    module_as_script,
    static_asset,
)
from webrtc_ref.handlers import StreamHandler
from webrtc_ref.outputs import AdditionalOutputs, OutputQueue
from webrtc_ref.server import StreamServer
from webrtc_ref.testing import TIMEOUT_SCALE, launched

# ---------------------------------------------------------------------------- helpers


class Echo(StreamHandler):
    """The user guide's echo handler, non-blocking."""

    def __init__(self) -> None:
        super().__init__()
        import queue

        self.queue: queue.Queue[Any] = queue.Queue()

    def receive(self, frame: tuple[int, np.ndarray]) -> None:
        self.queue.put(frame)

    def emit(self) -> Any:
        try:
            return self.queue.get(timeout=0.02)
        except Exception:
            return None

    def copy(self) -> StreamHandler:
        return Echo()


def video_fn(frame: np.ndarray, *args: Any) -> np.ndarray:
    return frame


def generator_fn(*args: Any) -> Iterator[np.ndarray]:
    yield np.zeros((16, 16, 3), dtype=np.uint8)


def listeners(demo: gr.Blocks, component: gr.components.Component, event: str) -> list[Any]:
    """BlockFunctions of ``demo`` triggered by ``component``'s ``event``."""
    return [f for f in demo.fns.values() if (component._id, event) in f.targets]


# ---------------------------------------------------------------------------- constructor


def test_signature_defaults() -> None:
    """gradio_webrtc's parameters with its defaults, keyword-only after ``value``."""
    params = inspect.signature(WebRTC.__init__).parameters
    expected = {
        "value": None,
        "label": None,
        "mode": "send-receive",
        "modality": "video",
        "rtc_configuration": None,
        "track_constraints": None,
        "time_limit": None,
        "mirror_webcam": True,
        "rtp_params": None,
        "height": None,
        "width": None,
        "show_label": None,
        "container": True,
        "scale": None,
        "min_width": 160,
        "interactive": None,
        "visible": True,
        "elem_id": None,
        "elem_classes": None,
        "render": True,
        "key": None,
        "every": None,
        "inputs": None,
    }
    for name, default in expected.items():
        assert params[name].default == default, name
    assert params["value"].kind is inspect.Parameter.POSITIONAL_OR_KEYWORD
    assert params["mode"].kind is inspect.Parameter.KEYWORD_ONLY


def test_construction_state() -> None:
    """Events, concurrency 1, no handler, empty rtp_params (gradio_webrtc's defaults)."""
    assert [e.event_name for e in WebRTC.EVENTS] == [
        "tick",
        "state_change",
        "start_recording",
        "stop_recording",
    ]
    w = WebRTC()
    assert w.concurrency_limit == 1
    assert w.event_handler is None
    assert w.stream_server is None
    assert w.rtp_params == {}
    assert w.rtc_configuration is None
    assert callable(w.tick) and callable(w.state_change)
    assert callable(w.start_recording) and callable(w.stop_recording)


@pytest.mark.parametrize(
    ("modality", "expected"),
    [("audio", DEFAULT_AUDIO_CONSTRAINTS), ("video", DEFAULT_VIDEO_CONSTRAINTS)],
)
def test_default_track_constraints(modality: str, expected: dict[str, Any]) -> None:
    """gradio_webrtc's default constraints; a user dict is passed through unchanged."""
    assert WebRTC(modality=modality).track_constraints == expected  # type: ignore[arg-type]
    assert expected["facingMode" if modality == "video" else "channelCount"]
    mine = {"echoCancellation": False}
    assert WebRTC(modality=modality, track_constraints=mine).track_constraints is mine  # type: ignore[arg-type]


def test_defaults_are_not_shared() -> None:
    a, b = WebRTC(modality="audio"), WebRTC(modality="audio")
    a.track_constraints["echoCancellation"] = False
    assert b.track_constraints["echoCancellation"] is True
    assert DEFAULT_AUDIO_CONSTRAINTS["echoCancellation"] is True


BAD_OPTIONS: list[tuple[str, Any, str]] = [
    ("mode", "bogus", "'send-receive', 'send', 'receive'"),
    ("mode", None, "'send-receive', 'send', 'receive'"),
    ("modality", "smell", "'video', 'audio'"),
    ("modality", "audio+video", "'video', 'audio', 'audio-video'"),
    ("rtc_configuration", "turn:x", "a dict (JSON object) or None"),
    ("rtc_configuration", {"iceServers": {1, 2}}, "JSON-serialisable"),
    ("server_rtc_configuration", [], "a dict (JSON object) or None"),
    ("server_rtc_configuration", {"iceServers": [{"url": "x"}]}, "'urls'"),
    ("track_constraints", True, "a dict (JSON object)"),
    ("track_constraints", {"deviceId": object()}, "JSON-serialisable"),
    ("time_limit", 0, "a positive number of seconds or None"),
    ("time_limit", -3, "a positive number of seconds or None"),
    ("time_limit", "10", "a positive number of seconds or None"),
    ("time_limit", True, "a positive number of seconds or None"),
    ("time_limit", float("nan"), "positive number"),
    ("time_limit", float("inf"), "finite positive number"),
    ("mirror_webcam", "yes", "True or False"),
    ("rtp_params", [1], "a dict (JSON object) or None"),
    ("height", -1, "positive int (pixels) or a CSS size string"),
    ("width", 1.5, "positive int (pixels) or a CSS size string"),
    ("value", 12, "None or a webrtc_id string"),
    ("button_labels", "Go", "a dict with the keys 'start', 'stop' and/or 'waiting'"),
    ("button_labels", {"begin": "Go"}, "allowed: 'start', 'stop', 'waiting'"),
    ("button_labels", {"start": 3}, "a string of at most 100 characters"),
    ("button_labels", {"stop": "x" * 101}, "a string of at most 100 characters"),
    ("full_screen", "yes", "True, False or None"),
    ("full_screen", 1, "True, False or None"),
]


@pytest.mark.parametrize(("name", "value", "allowed"), BAD_OPTIONS)
def test_bad_option_names_parameter_value_and_allowed(name: str, value: Any, allowed: str) -> None:
    """An unknown mode/modality or ill-typed option raises ValueError (never IndexError) that
    names the parameter, shows the value and says what is allowed."""
    with pytest.raises(ValueError) as info:
        WebRTC(**{name: value})
    message = str(info.value)
    assert message.startswith(name), message
    assert repr(value)[:20] in message or name == "rtc_configuration", message
    assert allowed in message, message


def test_good_options_are_kept() -> None:
    rtc = {"iceServers": [{"urls": "turn:127.0.0.1:3478", "username": "u", "credential": "p"}]}
    w = WebRTC(
        "abc",
        label="Cam",
        mode="receive",
        modality="audio",
        rtc_configuration=rtc,
        time_limit=2.5,
        mirror_webcam=False,
        rtp_params={"degradationPreference": "maintain-framerate"},
        height=300,
        width="50%",
    )
    assert (w.value, w.label, w.mode, w.modality) == ("abc", "Cam", "receive", "audio")
    assert w.rtc_configuration is rtc
    assert (w.time_limit, w.mirror_webcam, w.height, w.width) == (2.5, False, 300, "50%")


# ---------------------------------------------------------------------------- config


def test_config_reaches_the_page() -> None:
    """Props, server_fns and the inlined client are in the component config."""
    w = WebRTC(label="L", mode="send", modality="audio", time_limit=9, rtp_params={"a": 1})
    config = w.get_config()
    for key in (
        "mode",
        "modality",
        "track_constraints",
        "time_limit",
        "mirror_webcam",
        "rtp_params",
    ):
        assert config[key] == getattr(w, key), key
        assert config["props"][key] == getattr(w, key), key
    assert config["server_fns"] == ["ice_candidate", "offer", "rtc_config"]
    assert config["component_class_name"] == "WebRTC"
    assert config["js_on_load"] == client_script()
    assert config["html_template"] == static_asset("webrtc.html")
    assert config["css_template"] == static_asset("webrtc.css")
    assert "'tick'" in config["js_on_load"] or '"tick"' in config["js_on_load"]
    assert '"state_change"' in config["js_on_load"]


def test_ui_options_reach_the_page() -> None:
    """button_labels (completed with the defaults; blank keeps a default) and full_screen
    (None means True) are props the page reads; the recording events are in the config."""
    w = WebRTC(modality="audio", button_labels={"start": "Talk", "waiting": ""})
    assert w.button_labels == {"start": "Talk", "stop": "Stop", "waiting": "Connecting…"}
    assert w.full_screen is True
    config = w.get_config()
    assert config["props"]["button_labels"] == w.button_labels
    assert config["props"]["full_screen"] is True
    assert WebRTC(full_screen=None).full_screen is True
    off = WebRTC(full_screen=False, button_labels={"stop": "End", "waiting": "Wait"})
    props = off.get_config()["props"]
    assert props["full_screen"] is False
    assert props["button_labels"] == {"start": "Start", "stop": "End", "waiting": "Wait"}
    script = config["js_on_load"]
    assert '"start_recording"' in script and '"stop_recording"' in script
    assert "button_labels" in script and "full_screen" in script


def test_recording_events_take_listeners() -> None:
    """``.start_recording(fn, inputs, outputs)`` registers a Gradio event on the component."""
    with gr.Blocks() as demo:
        w = WebRTC(modality="audio")
        box = gr.Textbox()
        w.start_recording(lambda: "started", None, box)
        w.stop_recording(lambda: "stopped", None, box)
    names = {t[1] for f in demo.fns.values() for t in f.targets if t[0] == w._id}
    assert {"start_recording", "stop_recording"} <= names


def test_server_ice_configuration_is_not_sent_to_the_browser() -> None:
    secret = {"iceServers": [{"urls": "turn:x", "username": "u", "credential": "SECRET"}]}
    w = WebRTC(server_rtc_configuration=secret)
    assert "SECRET" not in json.dumps(w.get_config(), default=str)


def test_values_and_api_info() -> None:
    """Identity pre/postprocess; api_info describes a string (not left undescribed)."""
    w = WebRTC()
    assert w.preprocess("id123") == "id123"
    assert w.postprocess(START_SENTINEL) == START_SENTINEL
    assert w.postprocess(None) is None
    assert w.api_info()["type"] == "string"
    assert isinstance(w.example_payload(), str)


def test_static_assets_survive_template_evaluation() -> None:
    """gr.HTML evaluates html/css templates with Handlebars and a JS template literal."""
    for name in ("webrtc.html", "webrtc.css"):
        text = static_asset(name)
        for bad in ("`", "${", "{{", "\\"):
            assert bad not in text, (name, bad)
    assert 'class="webrtc-ref"' in static_asset("webrtc.html")


def test_static_asset_check_rejects_template_syntax(monkeypatch: pytest.MonkeyPatch) -> None:
    class FakeAsset:
        def joinpath(self, part: str) -> FakeAsset:
            return self

        def read_text(self, encoding: str) -> str:
            return "<div>${oops}</div>"

    monkeypatch.setattr(component_module.resources, "files", lambda package: FakeAsset())
    component_module.static_asset.cache_clear()
    try:
        with pytest.raises(ValueError, match=r"'x\.html' contains '\$\{'"):
            component_module.static_asset("x.html")
    finally:
        monkeypatch.undo()
        component_module.static_asset.cache_clear()


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_client_script_is_a_valid_function_body() -> None:
    """The JS is compiled by gr.HTML as ``new Function(element, trigger, props, server,
    upload, watch, body)``; compile it the same way."""
    script = (
        "const src = require('fs').readFileSync(0, 'utf8');"
        "new Function('element','trigger','props','server','upload','watch', src);"
    )
    subprocess.run(["node", "-e", script], input=client_script(), text=True, check=True)


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_client_module_imports_as_an_es_module(tmp_path: Path) -> None:
    """client.js is a plain ES module (no imports, no browser globals at import time)
    exporting connect, Connection and ClientError; the component script defines the same
    names on its ``client`` object."""
    module = tmp_path / "client.mjs"
    module.write_text(static_asset("client.js"), encoding="utf-8")
    script = (
        f"const m = await import({json.dumps(module.as_uri())});"
        "const names = Object.keys(m).sort();"
        "for (const n of ['connect', 'Connection', 'ClientError', 'getLocalMedia', 'STATES'])"
        "  if (!(n in m)) throw new Error('missing export ' + n);"
        "let refused = null;"
        "await m.connect({ mode: 'sideways', url: '' }).catch((e) => { refused = e; });"
        "if (!(refused instanceof TypeError) || !/mode must be/.test(refused.message))"
        "  throw new Error('bad mode not refused: ' + refused);"
        "console.log(JSON.stringify(names));"
    )
    out = subprocess.run(
        ["node", "--input-type=module", "-e", script], text=True, check=True, capture_output=True
    )
    exported = json.loads(out.stdout)
    script = module_as_script(static_asset("client.js"), "client")
    assert script in client_script()
    core = script.rsplit("return { ", 1)[1].split(" };", 1)[0].split(", ")
    assert sorted(core) == exported


def test_module_as_script_refuses_what_a_script_cannot_run() -> None:
    assert "const c = (() =>" in module_as_script("export function f() {}\n", "c")
    for bad in ("import x from 'y';\nexport const a = 1;", "export default 1;", "const a = 1;"):
        with pytest.raises(ValueError, match="client module"):
            module_as_script(bad)


# ---------------------------------------------------------------------------- .stream() rules

FN_KINDS: dict[str, Callable[[], Any]] = {
    "handler": Echo,
    "function": lambda: video_fn,
    "generator": lambda: generator_fn,
    "not_callable": lambda: 42,
    "none": lambda: None,
}
INPUT_SHAPES = ["none", "empty", "self", "bare_self", "self_other", "other_self", "other"]
OUTPUT_SHAPES = ["none", "empty", "self", "bare_self", "other", "self_other", "other_self"]


def _shape(shape: str, me: WebRTC, other: gr.components.Component) -> Any:
    return {
        "none": None,
        "empty": [],
        "self": [me],
        "bare_self": me,
        "self_other": [me, other],
        "other_self": [other, me],
        "other": [other],
    }[shape]


def expected_outcome(
    mode: str, modality: str, fn_kind: str, inputs: str, outputs: str, trigger: bool
) -> str | None:
    """The rules of ``stream`` written independently of the implementation: the error
    message expected, or ``None`` for success."""
    if modality == "audio" and mode == "send-receive" and fn_kind != "handler":
        return MSG_AUDIO_HANDLER
    if modality == "audio" and mode == "send" and fn_kind != "handler":
        return MSG_SEND_AUDIO_HANDLER
    output_ok = outputs in ("self", "bare_self")
    if mode != "receive":
        if inputs not in ("self", "bare_self", "self_other"):
            return MSG_FIRST_INPUT
        if not output_ok:
            return MSG_ONLY_OUTPUT
    else:
        if inputs in ("self", "bare_self", "self_other", "other_self"):
            return MSG_RECEIVE_INPUT
        if not output_ok:
            return MSG_RECEIVE_OUTPUT
        if not trigger:
            return MSG_RECEIVE_TRIGGER
    if (modality == "video" or mode == "receive") and fn_kind not in ("function", "generator"):
        return "fn must be"
    return None


def run_stream(
    mode: str, modality: str, fn_kind: str, inputs: str, outputs: str, trigger: bool
) -> tuple[WebRTC, gr.components.Component, Any]:
    """Call ``stream`` in the current Blocks context."""
    me = WebRTC(mode=mode, modality=modality)  # type: ignore[arg-type]
    other = gr.Slider()
    button = gr.Button()
    dep = me.stream(
        FN_KINDS[fn_kind](),
        inputs=_shape(inputs, me, other),
        outputs=_shape(outputs, me, other),
        trigger=button.click if trigger else None,
    )
    return me, other, dep


def test_stream_rules() -> None:
    """Every combination of mode x modality x fn kind x inputs/outputs shape x trigger either
    raises the expected ValueError (never IndexError) or registers the stream."""
    with gr.Blocks() as demo:  # one app for all examples: building a Blocks costs ~0.15 s

        @settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
        @given(
            mode=st.sampled_from(["send-receive", "send", "receive"]),
            modality=st.sampled_from(["video", "audio"]),
            fn_kind=st.sampled_from(list(FN_KINDS)),
            inputs=st.sampled_from(INPUT_SHAPES),
            outputs=st.sampled_from(OUTPUT_SHAPES),
            trigger=st.booleans(),
        )
        def check(
            mode: str, modality: str, fn_kind: str, inputs: str, outputs: str, trigger: bool
        ) -> None:
            expected = expected_outcome(mode, modality, fn_kind, inputs, outputs, trigger)
            if expected is not None:
                with pytest.raises(ValueError) as info:
                    run_stream(mode, modality, fn_kind, inputs, outputs, trigger)
                if expected == "fn must be":
                    assert f"In the {mode} mode for {modality}, fn must be" in str(info.value)
                else:
                    assert str(info.value) == expected
                return
            me, other, dep = run_stream(mode, modality, fn_kind, inputs, outputs, trigger)
            assert isinstance(me.stream_server, StreamServer)
            assert me.concurrency_limit == 1
            others = [other] if inputs in ("self_other", "other") else []
            ticks = listeners(demo, me, "tick")
            assert len(ticks) == 1
            tick = ticks[0]
            assert [b._id for b in tick.inputs] == [me._id] + [o._id for o in others]
            assert tick.outputs == []
            assert tick.concurrency_limit is None
            assert tick.trigger_mode == "always_last"
            assert dep is not None and dep["id"] == tick._id
            assert len(listeners(demo, other, "change")) == len(others)
            if mode == "receive":
                clicks = [f for f in demo.fns.values() if f.outputs == [me]]
                assert len(clicks) == 1
                assert clicks[0].fn() == START_SENTINEL
                # and a client-side listener that starts the browser at the click itself
                key = me.props["trigger_key"]
                early = [
                    f
                    for f in demo.fns.values()
                    if f.fn is None and f.js == TRIGGER_JS % json.dumps(key)
                ]
                assert len(early) == 1 and not early[0].queue
                assert early[0].targets == clicks[0].targets

        check()


def test_first_input_message_for_empty_inputs() -> None:
    """Empty inputs/outputs raise the documented ValueError, not IndexError."""
    with gr.Blocks():
        w = WebRTC()
        with pytest.raises(ValueError, match="first input component must be the WebRTC"):
            w.stream(video_fn, inputs=[], outputs=[w])
        with pytest.raises(ValueError, match="only output component must be the WebRTC"):
            w.stream(video_fn, inputs=[w], outputs=[])


def test_output_check_means_exactly_self() -> None:
    """``outputs=[other]`` and ``[self, other]`` are rejected (gradio_webrtc accepted them)."""
    with gr.Blocks():
        w, t = WebRTC(), gr.Textbox()
        for outputs in ([t], [w, t], [t, w]):
            with pytest.raises(ValueError) as info:
                w.stream(video_fn, inputs=[w], outputs=outputs)
            assert str(info.value) == MSG_ONLY_OUTPUT


def test_audio_handler_check_comes_first() -> None:
    """The StreamHandler check precedes the input/output checks (as in gradio_webrtc)."""
    with gr.Blocks():
        w = WebRTC(modality="audio")
        with pytest.raises(ValueError) as info:
            w.stream(video_fn, inputs=None, outputs=None)
        assert str(info.value) == MSG_AUDIO_HANDLER


def test_send_audio_needs_a_stream_handler() -> None:
    """A plain function for send audio fails at stream() time, clearly (not at the offer)."""
    with gr.Blocks():
        w = WebRTC(mode="send", modality="audio")
        with pytest.raises(ValueError) as info:
            w.stream(video_fn, inputs=[w], outputs=[w])
        assert str(info.value) == MSG_SEND_AUDIO_HANDLER
        w.stream(Echo(), inputs=[w], outputs=[w])


def test_bad_inputs_and_trigger_types() -> None:
    with gr.Blocks():
        w = WebRTC()
        with pytest.raises(ValueError, match=r"^inputs must contain only Gradio components"):
            w.stream(video_fn, inputs=[w, "slider"], outputs=[w])
        with pytest.raises(ValueError, match=r"^outputs must be None, a Gradio component"):
            w.stream(video_fn, inputs=[w], outputs="w")
        with pytest.raises(ValueError, match=r"^js must be None or a JavaScript string"):
            w.stream(video_fn, inputs=[w], outputs=[w], js=3)  # type: ignore[arg-type]
        r = WebRTC(mode="receive")
        with pytest.raises(ValueError, match=r"^trigger must be an event listener"):
            r.stream(generator_fn, outputs=[r], trigger="click")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("given_limit", "expected"), [("default", 1), (None, None), (1, 1), (5, 5)]
)
def test_concurrency_limit_mapping(given_limit: Any, expected: int | None) -> None:
    """ "default" -> 1, None -> unlimited (not 1), ints as given."""
    with gr.Blocks():
        w = WebRTC()
        w.stream(video_fn, inputs=[w], outputs=[w], concurrency_limit=given_limit)
    assert w.concurrency_limit == expected
    assert w.stream_server is not None
    assert w.stream_server.concurrency_limit == expected


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "two", "Default"])
def test_concurrency_limit_validation(bad: Any) -> None:
    with gr.Blocks():
        w = WebRTC()
        with pytest.raises(ValueError) as info:
            w.stream(video_fn, inputs=[w], outputs=[w], concurrency_limit=bad)
    message = str(info.value)
    assert message.startswith("concurrency_limit must be 'default'")
    assert "None" in message and "int >= 1" in message and repr(bad) in message


def test_time_limit_constructor_holds_unless_stream_sets_one() -> None:
    """The constructor's time_limit survives ``stream()`` without one (not reset to None)."""
    with gr.Blocks():
        a = WebRTC(time_limit=10)
        a.stream(video_fn, inputs=[a], outputs=[a])
        b = WebRTC(time_limit=10)
        b.stream(video_fn, inputs=[b], outputs=[b], time_limit=3)
        c = WebRTC()
        with pytest.raises(ValueError, match=r"^time_limit must be a positive number"):
            c.stream(video_fn, inputs=[c], outputs=[c], time_limit=-1)
    assert a.time_limit == 10 and a.stream_server.spec.time_limit == 10  # type: ignore[union-attr]
    assert b.time_limit == 3 and b.stream_server.spec.time_limit == 3  # type: ignore[union-attr]
    assert b.get_config()["props"]["time_limit"] == 3


def test_stream_passes_has_inputs_and_server_ice() -> None:
    ice = {"iceServers": [{"urls": "stun:127.0.0.1:3478"}]}
    with gr.Blocks():
        a = WebRTC(server_rtc_configuration=ice)
        a.stream(video_fn, inputs=[a], outputs=[a])
        s = gr.Slider()
        b = WebRTC(mode="receive")
        b.stream(generator_fn, inputs=[s], outputs=[b], trigger=gr.Button().click)
    assert a.stream_server.spec.has_inputs is False  # type: ignore[union-attr]
    assert a.stream_server.spec.ice_servers == ice["iceServers"]  # type: ignore[union-attr]
    assert b.stream_server.spec.has_inputs is True  # type: ignore[union-attr]


def test_stream_twice_is_refused() -> None:
    """A component has one stream: a second stream() raises, naming what to do, and the
    first stream is untouched."""
    with gr.Blocks():
        w = WebRTC()
        w.stream(video_fn, inputs=[w], outputs=[w])
        first = w.stream_server
        with pytest.raises(ValueError, match=r"already called.*another WebRTC component"):
            w.stream(video_fn, inputs=[w], outputs=[w])
    assert w.stream_server is first


def test_set_input_forwards_and_ignores_non_ids() -> None:
    """The tick listener ``(request, webrtc_id, *args)`` -> ``server.set_input(id,
    list(args), owner=<the request's session>)``; values that are not ids are ignored."""
    calls: list[tuple[str, list[Any], str | None]] = []
    w = WebRTC()
    w.set_input("abc", 1)  # no stream yet: ignored
    with gr.Blocks() as demo:
        w = WebRTC()
        w.stream(video_fn, inputs=[w, gr.Number()], outputs=[w])
    w.stream_server.set_input = lambda i, a, owner=None: calls.append((i, a, owner))  # type: ignore[union-attr, method-assign]
    (tick,) = listeners(demo, w, "tick")
    for not_an_id in (None, "", 5):
        tick.fn(None, not_an_id, 1)
    tick.fn(gr.Request(session_hash="s1"), "abc", 1)
    tick.fn(None, "abc", 2)
    assert calls == [("abc", [1], "s1"), ("abc", [2], None)]
    calls.clear()


# ---------------------------------------------------------------------------- offer


async def test_offer_without_stream_is_not_configured() -> None:
    reply = await WebRTC().offer({"sdp": "v=0", "type": "offer", "webrtc_id": "abc"})
    assert reply["status"] == "failed"
    assert reply["meta"]["error"] == "not_configured"
    assert ".stream(" in reply["meta"]["message"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (None, None),
        ({}, "sdp"),
        ({"sdp": "v=0", "type": "offer"}, "webrtc_id"),
        ({"sdp": 3, "type": "offer", "webrtc_id": "a"}, "sdp"),
        ({"sdp": "garbage", "type": "answer", "webrtc_id": "a"}, "type"),
        ({"sdp": "garbage", "type": "offer", "webrtc_id": "a b"}, "webrtc_id"),
    ],
)
async def test_offer_malformed_body_is_a_failure_reply(body: Any, field: str | None) -> None:
    with gr.Blocks():
        w = WebRTC()
        w.stream(video_fn, inputs=[w], outputs=[w])
    reply = await w.offer(body)
    assert reply["status"] == "failed"
    assert reply["meta"]["error"] == "invalid_offer"
    assert reply["meta"]["message"]
    if field is not None:
        assert reply["meta"].get("field") == field


async def test_offer_never_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    with gr.Blocks():
        w = WebRTC()
        w.stream(video_fn, inputs=[w], outputs=[w])

    async def broken(body: Any, client: Any = None) -> dict[str, Any]:
        raise RuntimeError("bug at /srv/secret")

    monkeypatch.setattr(w.stream_server, "offer", broken)
    reply = await w.offer({})
    assert reply["meta"]["error"] == "internal_error"
    assert "error id" in reply["meta"]["message"]
    assert "secret" not in reply["meta"]["message"], "an internal error's text reached the client"


def test_rebuilt_component_finds_the_stream() -> None:
    """gr.update(...) on the component makes Gradio rebuild it from its constructor
    arguments for that session; the rebuilt copy must still answer offers."""
    with gr.Blocks():
        w = WebRTC()
        w.stream(video_fn, inputs=[w], outputs=[w])
    kwargs = {**w.constructor_args, "label": "new", "render": False}
    copy = WebRTC(**kwargs)
    assert copy.stream_server is w.stream_server
    assert copy.constructor_args["_stream_origin"] is w
    assert "_stream_origin" not in copy.get_config()


# ---------------------------------------------------------------------------- additional outputs


class FakeServer:
    """Stands in for StreamServer.outputs_of: one real OutputQueue per id, owner None."""

    def __init__(self) -> None:
        self.queues: dict[str, OutputQueue] = {}

    def push(self, webrtc_id: str, *values: Any) -> None:
        self.queues.setdefault(webrtc_id, OutputQueue()).put(AdditionalOutputs(*values))

    def outputs_of(self, webrtc_id: str, *, owner: str | None = None) -> OutputQueue | None:
        return self.queues.get(webrtc_id) if owner is None else None


def outputs_app(
    fn: Callable[..., Any], n_inputs: int, n_outputs: int, overlap: bool = False, **kw: Any
) -> tuple[gr.Blocks, WebRTC, FakeServer, Any, list[Any], list[Any]]:
    with gr.Blocks() as demo:
        w = WebRTC()
        w.stream(video_fn, inputs=[w], outputs=[w])
        inputs = [gr.Textbox() for _ in range(n_inputs)]
        outputs = inputs[:n_outputs] if overlap else [gr.Textbox() for _ in range(n_outputs)]
        w.on_additional_outputs(fn, inputs=inputs, outputs=outputs, **kw)
    fake = FakeServer()
    w._server = fake  # type: ignore[assignment]
    handler = listeners(demo, w, "state_change")[0]
    return demo, w, fake, handler, inputs, outputs


def test_additional_outputs_registration() -> None:
    """state_change listener with inputs [self, *inputs]; sets are list-ified."""
    with gr.Blocks() as demo:
        w = WebRTC()
        a, b = gr.Textbox(), gr.Textbox()
        w.on_additional_outputs(
            lambda x, y: (x, y), inputs={a}, outputs={b}, queue=False, show_progress="hidden"
        )
    (handler,) = listeners(demo, w, "state_change")
    assert [c._id for c in handler.inputs] == [w._id, a._id]
    assert [c._id for c in handler.outputs] == [b._id]
    assert handler.queue is False
    assert handler.show_progress == "hidden"
    assert handler.trigger_mode == "always_last"


@pytest.mark.parametrize("n_outputs", [0, 1, 2])
def test_additional_outputs_empty_queue_skips(n_outputs: int) -> None:
    """B13 fixed: nothing pending (or an unknown id, or no stream) -> gr.skip(), never None."""
    _, w, _, handler, _, _ = outputs_app(lambda *a: a[0] if len(a) == 1 else a, 0, n_outputs)
    result = handler.fn(None, "nobody")
    if n_outputs == 0:
        assert result is None
    elif n_outputs == 1:
        assert result == gr.skip()
    else:
        assert result == (gr.skip(), gr.skip())
    w._server = None
    assert handler.fn(None, "nobody") == result


def test_additional_outputs_each_item_once_in_order() -> None:
    """fn(*inputs, *outputs.args) for every item, in order, exactly once."""
    calls: list[tuple[Any, ...]] = []

    def fn(extra: str, x: int, y: int) -> tuple[int, int]:
        calls.append((extra, x, y))
        return x, y

    _, _, fake, handler, _, _ = outputs_app(fn, 1, 2)
    for i in range(3):
        fake.push("id", i, -i)
    fake.push("other", 99, 99)
    assert handler.fn(None, "id", "E") == (2, -2)
    assert calls == [("E", 0, 0), ("E", 1, -1), ("E", 2, -2)]
    assert handler.fn(None, "id", "E") == (gr.skip(), gr.skip())
    assert len(calls) == 3


def test_additional_outputs_thread_outputs_into_inputs() -> None:
    """An output that is also an input gets the previous item's result."""
    _, _, fake, handler, _, _ = outputs_app(lambda log, x: [*log, x], 1, 1, overlap=True)
    for i in range(4):
        fake.push("id", i)
    assert handler.fn(None, "id", ["start"]) == ["start", 0, 1, 2, 3]


def test_additional_outputs_merge_skips_and_updates() -> None:
    results = iter([("a", gr.update(visible=True)), (gr.skip(), gr.skip()), (gr.skip(), "z")])
    _, _, fake, handler, _, _ = outputs_app(lambda x: next(results), 0, 2)
    for i in range(3):
        fake.push("id", i)
    first, second = handler.fn(None, "id")
    assert first == "a"
    assert second == "z"
    results = iter([("a", "b"), (gr.skip(), gr.update(visible=False))])
    for i in range(2):
        fake.push("id", i)
    assert handler.fn(None, "id") == ("a", {"__type__": "update", "visible": False, "value": "b"})


async def test_additional_outputs_async_fn() -> None:
    async def fn(x: int) -> int:
        return x * 10

    _, _, fake, handler, _, _ = outputs_app(fn, 0, 1)
    fake.push("id", 1)
    fake.push("id", 2)
    assert await handler.fn(None, "id") == 20


def test_additional_outputs_validation() -> None:
    with gr.Blocks():
        w = WebRTC()
        with pytest.raises(ValueError, match=r"^fn must be callable"):
            w.on_additional_outputs("nope")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match=r"^show_progress must be one of"):
            w.on_additional_outputs(print, show_progress="loud")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match=r"^concurrency_limit must be"):
            w.on_additional_outputs(print, concurrency_limit=0)
        with pytest.raises(ValueError, match=r"^inputs must be None"):
            w.on_additional_outputs(print, inputs=3)  # type: ignore[arg-type]


def test_additional_outputs_never_lose_or_reorder() -> None:
    """Items arrive in bursts between state_change events (events coalesce); applying every
    event's result to the UI in turn yields every item, in order, exactly once."""
    _, _, fake, handler, _, _ = outputs_app(lambda log, x: [*log, x], 1, 1, overlap=True)

    @settings(max_examples=300, deadline=None)
    @given(st.lists(st.integers(min_value=0, max_value=3), min_size=1, max_size=30))
    def check(bursts: list[int]) -> None:
        fake.queues.clear()
        ui: list[int] = []
        sent = 0
        for burst in [*bursts, 0]:
            for _ in range(burst):
                fake.push("id", sent)
                sent += 1
            result = handler.fn(None, "id", list(ui))
            if result != gr.skip():
                ui = result
        assert ui == list(range(sent))

    check()


def test_additional_outputs_handler_is_thread_safe() -> None:
    """Concurrent events (queue=False) drain disjoint batches; nothing is delivered twice."""
    seen: list[int] = []
    lock = threading.Lock()

    def fn(x: int) -> int:
        with lock:
            seen.append(x)
        return x

    _, _, fake, handler, _, _ = outputs_app(fn, 0, 1)
    for i in range(500):
        fake.push("id", i)
    threads = [threading.Thread(target=handler.fn, args=(None, "id")) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert seen == list(range(500))


# ---------------------------------------------------------------------------- launched app


def _post(url: str, payload: dict[str, Any]) -> tuple[int, Any]:
    request = urllib.request.Request(
        url + "/gradio_api/component_server/",
        data=json.dumps(payload).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, None


@pytest.fixture(scope="module")
def http_app() -> Iterator[tuple[str, WebRTC, WebRTC]]:
    with gr.Blocks() as demo:
        configured = WebRTC(label="configured")
        configured.stream(video_fn, inputs=[configured], outputs=[configured])
        bare = WebRTC(label="bare")
    with launched(demo) as url:
        yield url, configured, bare


@pytest.mark.slow
@pytest.mark.parametrize(
    ("data", "code"),
    [
        ({"sdp": "v=0", "type": "offer"}, "invalid_offer"),
        ("not an object", "invalid_offer"),
        ({"sdp": "nonsense", "type": "offer", "webrtc_id": "abc"}, "invalid_offer"),
    ],
)
def test_http_offer_failure_reply(
    http_app: tuple[str, WebRTC, WebRTC], data: Any, code: str
) -> None:
    url, configured, _ = http_app
    status, reply = _post(
        url,
        {"component_id": configured._id, "fn_name": "offer", "data": data, "session_hash": "s1"},
    )
    assert status == 200
    assert reply["status"] == "failed"
    assert reply["meta"]["error"] == code
    assert reply["meta"]["message"]


@pytest.mark.slow
def test_http_offer_not_configured_and_unknown_fn(http_app: tuple[str, WebRTC, WebRTC]) -> None:
    url, _, bare = http_app
    body = {"sdp": "v=0", "type": "offer", "webrtc_id": "abc"}
    status, reply = _post(
        url, {"component_id": bare._id, "fn_name": "offer", "data": body, "session_hash": "s"}
    )
    assert (status, reply["meta"]["error"]) == (200, "not_configured")
    status, _ = _post(
        url, {"component_id": bare._id, "fn_name": "shutdown", "data": {}, "session_hash": "s"}
    )
    assert status == 404


@pytest.mark.slow
def test_page_loads_the_client(http_app: tuple[str, WebRTC, WebRTC]) -> None:
    """The page and its config carry the inlined client; nothing comes from a CDN."""
    url, configured, _ = http_app
    with urllib.request.urlopen(url + "/", timeout=10) as response:
        assert response.status == 200
        page = response.read().decode()
    with urllib.request.urlopen(url + "/config", timeout=10) as response:
        config = json.loads(response.read())
    entry = next(c for c in config["components"] if c["id"] == configured._id)
    assert entry["type"] == "html"
    assert entry["props"]["component_class_name"] == "WebRTC"
    assert entry["props"]["server_fns"] == ["ice_candidate", "offer", "rtc_config"]
    assert entry["props"]["js_on_load"] == client_script()
    assert "webrtc-ref" in entry["props"]["html_template"]
    assert "<html" in page.lower()
    for asset in ("webrtc.js", "client.js", "webrtc.css", "webrtc.html"):
        assert "https://" not in static_asset(asset)


# ---------------------------------------------------------------------------- Chromium

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
    "--autoplay-policy=no-user-gesture-required",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-features=WebRtcHideLocalIpsWithMdns",
]
DEADLINE_MS = 20_000 * TIMEOUT_SCALE


class Recorder:
    """What the browser app's handlers saw, shared with the tests."""

    def __init__(self) -> None:
        self.slider: list[float] = []
        self.generator_args: list[tuple[Any, ...]] = []
        self.counter = 0


def build_browser_app(rec: Recorder) -> gr.Blocks:
    def process(frame: np.ndarray, k: float) -> Any:
        rec.slider.append(k)
        rec.counter += 1
        return frame, AdditionalOutputs(rec.counter)

    def frames(n: float) -> Iterator[np.ndarray]:
        rec.generator_args.append((n,))
        for _ in range(int(n)):
            time.sleep(1 / 30)
            yield np.full((96, 128, 3), 120, dtype=np.uint8)

    def boom(frame: np.ndarray) -> np.ndarray:
        raise RuntimeError("kaboom in handler")

    with gr.Blocks() as demo:
        audio = WebRTC(label="Audio", mode="send-receive", modality="audio", elem_id="audio")
        audio.stream(Echo(), inputs=[audio], outputs=[audio], time_limit=60)
        video = WebRTC(
            label="Video",
            elem_id="video",
            rtp_params={"degradationPreference": "balanced"},
            rtc_configuration={"iceServers": [], "bundlePolicy": "max-bundle"},
        )
        k = gr.Slider(0, 1, value=0.3, label="k", elem_id="k")
        log = gr.Textbox(label="log", elem_id="log")
        video.stream(process, inputs=[video, k], outputs=[video], time_limit=60)
        video.on_additional_outputs(lambda text, n: f"{text}{n},", inputs=[log], outputs=[log])
        receive = WebRTC(label="Receive", mode="receive", elem_id="receive")
        n = gr.Number(value=20, label="n", elem_id="n")
        go = gr.Button("go", elem_id="go")
        receive.stream(frames, inputs=[n], outputs=[receive], trigger=go.click)
        broken = WebRTC(label="Broken", elem_id="broken", mirror_webcam=False)
        broken.stream(boom, inputs=[broken], outputs=[broken])
        single = WebRTC(label="Single", elem_id="single", time_limit=3)
        single.stream(video_fn, inputs=[single], outputs=[single])
        relabel = gr.Button("relabel", elem_id="relabel")
        relabel.click(lambda: gr.update(label="Relabelled"), outputs=[single])
        WebRTC(label="Bare", elem_id="bare")
    return demo


@pytest.fixture(scope="module")
def browser_app() -> Iterator[tuple[str, Recorder, Any]]:
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"Chromium is not installed at {CHROMIUM}")
    sync_api = pytest.importorskip("playwright.sync_api")
    rec = Recorder()
    with launched(build_browser_app(rec)) as url, sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield url, rec, browser
        finally:
            browser.close()


@pytest.fixture
def page(browser_app: tuple[str, Recorder, Any]) -> Iterator[Any]:
    url, _, browser = browser_app
    context = browser.new_context()
    page = context.new_page()
    page.goto(url)
    page.wait_for_selector("#audio .webrtc-ref", timeout=DEADLINE_MS)
    yield page
    context.close()


def state_of(page: Any, elem_id: str) -> str:
    return page.get_attribute(f"#{elem_id} .webrtc-ref", "data-state")


def wait_state(page: Any, elem_id: str, *states: str) -> str:
    selector = ", ".join(f'#{elem_id} .webrtc-ref[data-state="{s}"]' for s in states)
    page.wait_for_selector(selector, timeout=DEADLINE_MS)
    return state_of(page, elem_id)


def inbound(page: Any, elem_id: str) -> dict[str, Any]:
    return page.evaluate(
        """async (id) => {
            const pc = document.querySelector('#' + id + ' .webrtc-ref').__webrtc.pc;
            const out = {};
            (await pc.getStats()).forEach((s) => {
                if (s.type === 'inbound-rtp') out[s.kind] = s;
            });
            return out;
        }""",
        elem_id,
    )


@pytest.mark.slow
@pytest.mark.browser
@pytest.mark.parametrize(("elem_id", "kind"), [("audio", "audio"), ("video", "video")])
def test_browser_send_receive_streams(page: Any, elem_id: str, kind: str) -> None:
    """Fake devices -> Start -> streaming, and the processed media comes back."""
    assert state_of(page, elem_id) == "idle"
    page.click(f"#{elem_id} .wr-start")
    assert wait_state(page, elem_id, "streaming", "error") == "streaming"
    webrtc_id = page.get_attribute(f"#{elem_id} .webrtc-ref", "data-webrtc-id")
    assert webrtc_id and len(webrtc_id) >= 12
    deadline = time.monotonic() + 10 * TIMEOUT_SCALE
    while time.monotonic() < deadline:
        stats = inbound(page, elem_id).get(kind, {})
        if stats.get("framesDecoded", 0) > 10 or stats.get("totalSamplesReceived", 0) > 48000:
            break
        time.sleep(0.1)
    else:
        pytest.fail(f"no {kind} came back: {inbound(page, elem_id)}")
    if kind == "audio":
        assert page.evaluate("() => !document.querySelector('#audio .wr-audio').paused")
    page.click(f"#{elem_id} .wr-stop")
    assert wait_state(page, elem_id, "idle") == "idle"


@pytest.mark.slow
@pytest.mark.browser
def test_browser_audio_meter_moves(page: Any) -> None:
    page.click("#audio .wr-start")
    wait_state(page, "audio", "streaming")
    page.wait_for_function(
        "() => parseFloat(document.querySelector('#audio .wr-meter-in').dataset.level) > 0.001",
        timeout=DEADLINE_MS,
    )


@pytest.mark.slow
@pytest.mark.browser
def test_browser_inputs_and_additional_outputs(
    page: Any, browser_app: tuple[str, Recorder, Any]
) -> None:
    """A slider change reaches the handler quickly; additional outputs arrive in order,
    each once; rtp_params were applied; the preview is mirrored by default."""
    _, rec, _ = browser_app
    page.click("#video .wr-start")
    wait_state(page, "video", "streaming")
    page.wait_for_function("() => document.querySelector('#log textarea').value.length > 20")
    page.fill("#k input[type=number]", "0.9")
    page.press("#k input[type=number]", "Enter")
    moved = time.monotonic()
    while 0.9 not in rec.slider:
        assert time.monotonic() - moved < 2 * TIMEOUT_SCALE, "slider value never reached fn"
        time.sleep(0.01)
    text = page.input_value("#log textarea")
    numbers = [int(x) for x in text.strip(",").split(",")]
    assert numbers == list(range(numbers[0], numbers[0] + len(numbers)))
    assert page.get_attribute("#video .webrtc-ref", "data-rtp-params") == "applied"
    applied = page.evaluate(
        """() => {
            const w = document.querySelector('#video .webrtc-ref').__webrtc;
            return {
                constraints: w.localStream.getVideoTracks()[0].getConstraints(),
                bundlePolicy: w.pc.getConfiguration().bundlePolicy,
            };
        }"""
    )
    # track_constraints (Chrome reports {"ideal": x} as x, and adds the chosen deviceId)
    constraints = applied["constraints"]
    assert constraints["facingMode"] == DEFAULT_VIDEO_CONSTRAINTS["facingMode"]
    for key in ("width", "height", "frameRate"):
        assert constraints[key] in (
            DEFAULT_VIDEO_CONSTRAINTS[key],
            DEFAULT_VIDEO_CONSTRAINTS[key]["ideal"],
        )
    assert applied["bundlePolicy"] == "max-bundle"  # rtc_configuration
    assert "wr-mirror" in (page.get_attribute("#video .wr-local", "class") or "")
    assert "wr-mirror" not in (page.get_attribute("#broken .wr-local", "class") or "")
    page.click("#video .wr-stop")


@pytest.mark.slow
@pytest.mark.browser
def test_browser_receive_mode(page: Any, browser_app: tuple[str, Recorder, Any]) -> None:
    """The trigger starts the stream with the inputs' values; the end is shown."""
    _, rec, _ = browser_app
    assert page.is_hidden("#receive .wr-start")
    page.fill("#n input", "45")
    page.press("#n input", "Enter")
    page.click("#go")
    assert wait_state(page, "receive", "streaming", "error") == "streaming"
    assert wait_state(page, "receive", "ended", "error") == "ended"
    assert page.get_attribute("#receive .webrtc-ref", "data-end-reason") == "handler_finished"
    assert (45,) in rec.generator_args
    # B16 fixed: a trigger while streaming replaces the connection instead of adding one.
    page.fill("#n input", "900")
    page.press("#n input", "Enter")
    for _ in range(2):
        old_id = page.get_attribute("#receive .webrtc-ref", "data-webrtc-id")
        page.evaluate(
            "() => { window.__oldPc = document.querySelector('#receive .webrtc-ref').__webrtc.pc; }"
        )
        page.click("#go")
        page.wait_for_function(
            "(old) => document.querySelector('#receive .webrtc-ref').dataset.webrtcId !== old",
            arg=old_id,
            timeout=DEADLINE_MS,
        )
        assert wait_state(page, "receive", "streaming", "ended", "error") == "streaming"
        assert page.evaluate("() => !window.__oldPc || window.__oldPc.connectionState === 'closed'")
    assert page.is_visible("#receive .wr-stop")
    page.click("#receive .wr-stop")
    assert wait_state(page, "receive", "idle") == "idle"


@pytest.mark.slow
@pytest.mark.browser
def test_browser_handler_error_is_shown(page: Any) -> None:
    page.click("#broken .wr-start")
    assert wait_state(page, "broken", "error") == "error"
    assert "kaboom in handler" in page.inner_text("#broken .wr-error")
    assert page.get_attribute("#broken .webrtc-ref", "data-error-code") == "handler_error"


@pytest.mark.slow
@pytest.mark.browser
def test_browser_not_configured_message(page: Any) -> None:
    page.click("#bare .wr-start")
    assert wait_state(page, "bare", "error") == "error"
    assert ".stream(" in page.inner_text("#bare .wr-error")
    assert page.get_attribute("#bare .webrtc-ref", "data-error-code") == "not_configured"


@pytest.mark.slow
@pytest.mark.browser
def test_browser_limit_restart_and_time_limit(browser_app: tuple[str, Recorder, Any]) -> None:
    """concurrency_limit=1: a second page gets the server's message (not a catch-all);
    stop -> start at once works; the time limit ends the stream with its reason."""
    url, _, browser = browser_app
    contexts = [browser.new_context() for _ in range(2)]
    try:
        one, two = (c.new_page() for c in contexts)
        for p in (one, two):
            p.goto(url)
            p.wait_for_selector("#single .webrtc-ref", timeout=DEADLINE_MS)
        one.click("#single .wr-start")
        wait_state(one, "single", "streaming")
        assert one.is_visible("#single .wr-timebar")
        two.click("#single .wr-start")
        assert wait_state(two, "single", "error") == "error"
        assert two.get_attribute("#single .webrtc-ref", "data-error-code") == (
            "concurrency_limit_reached"
        )
        assert "limit 1" in two.inner_text("#single .wr-error")
        one.click("#single .wr-stop")
        one.click("#single .wr-start")
        assert wait_state(one, "single", "streaming", "error") == "streaming"
        assert wait_state(one, "single", "ended", "error") == "ended"
        assert one.get_attribute("#single .webrtc-ref", "data-end-reason") == "time_limit"
        assert "Time limit" in one.inner_text("#single .wr-status")
        # gr.update() on the component rebuilds it for this session; it still streams.
        two.click("#relabel")
        two.wait_for_selector("text=Relabelled", timeout=DEADLINE_MS)
        two.click("#single .wr-start")
        assert wait_state(two, "single", "streaming", "error") == "streaming"
    finally:
        for c in contexts:
            c.close()


def test_stream_warms_up_gradios_first_event_work_in_the_background() -> None:
    """stream() imports in the background what Gradio's first event would import on its
    server loop (matplotlib.pyplot, about 0.35 s holding the GIL, freezing every
    connection's media); checked in a fresh interpreter, where nothing imported it yet."""
    pytest.importorskip("matplotlib")
    code = """
import sys
import gradio as gr
from webrtc_ref import WebRTC
assert "matplotlib.pyplot" not in sys.modules, "imported before stream()"
with gr.Blocks():
    video = WebRTC(mode="send-receive", modality="video")
    video.stream(lambda frame: frame, inputs=[video], outputs=[video])
from webrtc_ref import warmup
assert warmup.done.wait(60), "the warm-up did not finish"
print("pyplot" if "matplotlib.pyplot" in sys.modules else "missing")
"""
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().endswith("pyplot"), result.stdout + result.stderr[-2000:]
