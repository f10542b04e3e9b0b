"""``webrtc-ref serve NAME``: a demo's handler as a :class:`~webrtc_ref.stream.Stream`
mounted on FastAPI, with a plain HTML page (no Gradio) at ``/`` that streams through the
standalone browser client (``static/client.js``, served by ``Stream.mount`` at
``/client.js``).

:data:`STREAMS` names the demos that have a standalone form (the handlers of
``webrtc_ref.demos``); :func:`standalone_app` puts any ``Stream`` behind the page, and
:func:`page_html` is the page itself (``static/standalone.html`` with the stream's mode,
modality, track constraints, additional inputs and outputs filled in).
"""

from __future__ import annotations

import html
import json
from collections.abc import Callable, Iterator
from importlib import resources
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    from fastapi import FastAPI

    from webrtc_ref.outputs import AdditionalOutputs
    from webrtc_ref.stream import Stream


def _echo_audio() -> Stream:
    from webrtc_ref.demos.echo_audio import EchoHandler
    from webrtc_ref.stream import Stream

    return Stream(EchoHandler(), modality="audio", mode="send-receive", time_limit=15)


def _echo_video() -> Stream:
    import gradio as gr

    from webrtc_ref.demos.video_filter import detection
    from webrtc_ref.stream import Stream

    slider = gr.Slider(
        label="Confidence Threshold", minimum=0.0, maximum=1.0, step=0.05, value=0.30
    )
    return Stream(detection, modality="video", additional_inputs=[slider], time_limit=10)


def _receive_audio() -> Stream:
    import gradio as gr

    from webrtc_ref.demos.receive_audio import generation
    from webrtc_ref.stream import Stream

    steps = gr.Slider(label="Number of Steps", minimum=1, maximum=10, step=1, value=5)
    return Stream(generation, modality="audio", mode="receive", additional_inputs=[steps])


def _receive_video() -> Stream:
    from webrtc_ref.demos.receive_video import generation
    from webrtc_ref.stream import Stream

    return Stream(generation, modality="video", mode="receive")


def _reply_on_pause() -> Stream:
    from webrtc_ref import ReplyOnPause
    from webrtc_ref.demos.reply_on_pause import response
    from webrtc_ref.stream import Stream

    return Stream(ReplyOnPause(response), modality="audio", time_limit=60)


def describe_turn(audio: tuple[int, np.ndarray]) -> Iterator[AdditionalOutputs]:
    """One ``AdditionalOutputs`` per utterance: what the additional-outputs demo's
    describer heard (its duration and loudness)."""
    from webrtc_ref.demos.additional_outputs import describe
    from webrtc_ref.outputs import AdditionalOutputs

    yield AdditionalOutputs(describe(audio))


def _additional_outputs() -> Stream:
    import gradio as gr

    from webrtc_ref import ReplyOnPause
    from webrtc_ref.stream import Stream

    return Stream(
        ReplyOnPause(describe_turn),
        modality="audio",
        mode="send",
        additional_outputs=[gr.Textbox(label="heard")],
        time_limit=90,
    )


def _echo_av() -> Stream:
    from webrtc_ref.demos.echo_av import EchoAV
    from webrtc_ref.stream import Stream

    return Stream(EchoAV(), modality="audio-video", time_limit=30)


def _av_turns() -> Stream:
    from webrtc_ref.demos.av_turns import TurnsAV
    from webrtc_ref.stream import Stream

    return Stream(TurnsAV(), modality="audio-video", time_limit=60)


#: The demos ``webrtc-ref serve`` knows: name -> (description, a function making its Stream).
STREAMS: dict[str, tuple[str, Callable[[], Stream]]] = {
    "echo-audio": ("voice: the guide's EchoHandler", _echo_audio),
    "echo-video": ("webcam in, filtered video out, slider-controlled", _echo_video),
    "receive-audio": ("server-to-client audio, number of steps as an input", _receive_audio),
    "receive-video": ("server-to-client video", _receive_video),
    "reply-on-pause": ("voice: replies when you pause (chipmunk echo)", _reply_on_pause),
    "additional-outputs": ("voice turns described as additional outputs", _additional_outputs),
    "echo-av": ("camera and voice: mirrored picture with your level, echo", _echo_av),
    "av-turns": ("camera and voice: turn state drawn over your picture", _av_turns),
}


class UnknownStreamError(ValueError):
    """Raised for a name that is not in :data:`STREAMS`."""

    @classmethod
    def for_name(cls, name: str) -> UnknownStreamError:
        return cls(f"unknown demo {name!r}; valid demos: {', '.join(STREAMS)}")


def demo_stream(name: str) -> Stream:
    """The ``Stream`` of demo ``name``; :class:`UnknownStreamError` lists the valid names."""
    entry = STREAMS.get(name)
    if entry is None:
        raise UnknownStreamError.for_name(name)
    return entry[1]()


def _input_spec(component: Any) -> dict[str, Any]:
    """A plain form control for a Gradio input component (its label, kind and value)."""
    import gradio as gr

    label = getattr(component, "label", None)
    spec: dict[str, Any] = {"label": label if isinstance(label, str) else None}
    value = getattr(component, "value", None)
    if isinstance(component, gr.Slider):
        spec.update(
            kind="range",
            min=component.minimum,
            max=component.maximum,
            step=component.step,
            value=value,
        )
    elif isinstance(component, gr.Number):
        spec.update(kind="number", value=value)
    elif isinstance(component, gr.Checkbox):
        spec.update(kind="checkbox", value=bool(value))
    elif isinstance(component, gr.Dropdown | gr.Radio):
        choices = [c[1] if isinstance(c, tuple) else c for c in (component.choices or [])]
        spec.update(kind="select", choices=choices, value=value if value in choices else None)
        if spec["value"] is None and choices:
            spec["value"] = choices[0]
    else:
        spec.update(kind="text", value=value if isinstance(value, str) else "")
    return spec


def page_config(stream: Stream) -> dict[str, Any]:
    """What the page needs to know about ``stream`` (JSON-serialisable)."""
    outputs = [getattr(c, "label", None) for c in stream.additional_output_components]
    return {
        "mode": stream.mode,
        "modality": stream.modality,
        "constraints": stream.track_constraints,
        "timeLimit": stream.time_limit,
        "inputs": [_input_spec(c) for c in stream.additional_input_components],
        "outputs": [label if isinstance(label, str) else None for label in outputs],
    }


def page_html(stream: Stream, title: str) -> str:
    """The plain HTML page streaming with ``stream`` mounted at the page's own path."""
    config = json.dumps(page_config(stream), default=str)
    # inside <script>: no "</script>", no HTML comment openers
    config = config.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    # not component.static_asset: this page is no Gradio template, its script has backticks
    page = resources.files("webrtc_ref").joinpath("static/standalone.html").read_text("utf-8")
    return page.replace("__WEBRTC_REF_TITLE__", html.escape(title)).replace(
        "__WEBRTC_REF_CONFIG__", config
    )


def standalone_app(stream: Stream, title: str = "webrtc_ref stream") -> FastAPI:
    """A FastAPI app: ``stream`` mounted at the root (``/webrtc/...``, ``/client.js``) and
    the plain page at ``/``."""
    from fastapi import FastAPI
    from fastapi.responses import HTMLResponse

    app = FastAPI(title=title, docs_url=None, redoc_url=None, openapi_url=None)
    stream.mount(app)
    page = page_html(stream, title)

    async def index() -> HTMLResponse:
        return HTMLResponse(page, headers={"Cache-Control": "no-cache"})

    app.add_api_route("/", index, methods=["GET"], include_in_schema=False)
    return app


def serve(name: str, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Run demo ``name``'s standalone app with uvicorn until interrupted (Ctrl-C, SIGTERM);
    its connections are closed before uvicorn stops."""
    import uvicorn

    from webrtc_ref.lifecycle import watch_uvicorn

    description = STREAMS[name][0] if name in STREAMS else name
    app = standalone_app(demo_stream(name), title=f"webrtc_ref: {name} ({description})")
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="info"))
    watch_uvicorn(server)
    try:
        server.run()
    except KeyboardInterrupt:
        # uvicorn re-raises the signal it shut down on (SIGTERM is Ctrl-C here, see
        # lifecycle); the connections are closed and the server has stopped by now.
        pass


__all__ = ["STREAMS", "UnknownStreamError", "demo_stream", "page_html", "serve", "standalone_app"]
