"""The adapter for fastrtc-compact (0.0.1 from PyPI), in its own venv.

fastrtc-compact is fastrtc's ``Stream`` without the Gradio component: the same ``fastrtc``
package name, ``Stream(handler, mode, modality, concurrency_limit, time_limit, ...)``,
``.mount(app, path)`` with ``POST /webrtc/offer`` and ``WS /websocket/offer``, and the
``set_input`` / ``output_stream`` hooks, but no ``WebRTC`` component, no ``.ui`` and no
``additional_inputs`` / ``additional_outputs`` parameters. Its dependencies include no
Gradio; the venv has Gradio 5 only because the suite builds ``gr.Slider`` / ``gr.Number``
for the documented ``additional_inputs`` (which this package then refuses: those
requirements FAIL, listed in conformance/expectations/fastrtc_compact.toml).

The adapter claims ``stream`` (the FSTR requirements) and ``fastrtc`` (the handler API's
names, which it exports); every requirement that needs the Gradio component (a stream
kind served by a Gradio app, ``additional_outputs`` through ``on_additional_outputs``,
``reply_on_pause`` inside such an app) is UNSUPPORTED with that reason.
"""

from __future__ import annotations

from typing import Any

from conformance.adapters.base import Adapter, Api, NotExported, exported

_NO_COMPONENT = "fastrtc-compact has no Gradio WebRTC component (its Stream mounts on FastAPI only)"


class FastrtcCompactAdapter(Adapter):
    """fastrtc-compact's ``Stream`` on FastAPI (no Gradio component)."""

    name = "fastrtc_compact"
    module = "fastrtc"
    capabilities = frozenset({"stream", "fastrtc"})
    unsupported = {  # noqa: RUF012 - read-only class attribute
        **{
            f"{modality}.{mode}": _NO_COMPONENT
            for modality in ("audio", "video", "audio-video")
            for mode in ("send-receive", "send", "receive")
        },
        "additional_outputs": _NO_COMPONENT,
        "reply_on_pause": _NO_COMPONENT,
        "component": _NO_COMPONENT,
    }
    periodic_ticks = False
    tick_on_open = False

    def server_remote_candidates(self, stream: Any, webrtc_id: str) -> set[tuple[str, int, str]]:
        from conformance.adapters.webrtc_ref import _remote_candidates

        return _remote_candidates(stream.pcs.get(webrtc_id))  # its peer connections by id

    def version(self) -> str:
        from importlib.metadata import version

        return version("fastrtc-compact")

    def api(self) -> Api:
        import fastrtc

        def reply_on_pause(fn: Any, *args: Any, **kwargs: Any) -> Any:
            from webrtc_ref.pause_detection import get_silero_model

            kwargs.setdefault("model", get_silero_model())
            return fastrtc.ReplyOnPause(fn, *args, **kwargs)

        webrtc = exported("fastrtc", "WebRTC")  # a NotExported: the package has none
        assert isinstance(webrtc, NotExported), "fastrtc-compact unexpectedly exports WebRTC"
        return Api(
            WebRTC=webrtc,  # type: ignore[arg-type]
            StreamHandler=fastrtc.StreamHandler,
            AdditionalOutputs=fastrtc.AdditionalOutputs,
            ReplyOnPause=fastrtc.ReplyOnPause,
            reply_on_pause=reply_on_pause,
            AudioVideoStreamHandler=fastrtc.AudioVideoStreamHandler,
            AsyncAudioVideoStreamHandler=fastrtc.AsyncAudioVideoStreamHandler,
        )
