"""``WebRTC``: the Gradio component that streams audio or video between browser and server.

It is a ``gr.HTML`` subclass, the way Gradio 6 hosts a custom component without a Svelte
build: the browser client lives in ``webrtc_ref/static`` (``webrtc.html`` is the static
``html_template``, ``webrtc.css`` the ``css_template``, and the ``js_on_load`` body is
:func:`client_script`: the standalone client module ``client.js``, which owns the
connection, followed by ``webrtc.js``, the component's UI on top of it). They are read
from the package when the module is imported and inlined into the component config, so
nothing is fetched from a CDN and no npm build exists.

Signalling goes through the ``offer`` server function (``POST
/gradio_api/component_server`` with ``fn_name="offer"``); the component's value on the wire
is the client-chosen ``webrtc_id`` string. The wire protocol is written down in
``docs/protocol.md``. This module knows Gradio and nothing about RTP: every connection is
handled by the :class:`webrtc_ref.server.StreamServer` that :meth:`WebRTC.stream` creates.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import json
import logging
import re
import secrets
from collections.abc import Callable, Sequence
from importlib import resources
from typing import TYPE_CHECKING, Any, Literal

import gradio as gr
import gradio.component_meta as component_meta
from gradio.blocks import Block
from gradio.components.base import server
from gradio.events import Dependency

from webrtc_ref import lifecycle, warmup
from webrtc_ref.handlers import StreamHandler, handles_video
from webrtc_ref.jitter import JITTER_BUFFERS
from webrtc_ref.registry import DEFAULT_MAX_PENDING_PER_ADDRESS
from webrtc_ref.signaling import (
    DEFAULT_MAX_OFFER_BYTES,
    MODALITIES,
    MODES,
    MODES_OF,
    START_SENTINEL,
    Modality,
    Mode,
)

if TYPE_CHECKING:
    from webrtc_ref.ice import RTCConfigurationFunction, RTCConfigurationSource
    from webrtc_ref.outputs import OutputQueue
    from webrtc_ref.server import Client, Stats, StreamServer

log = logging.getLogger("webrtc_ref.component")


#: ``track_constraints`` used when none is given (gradio_webrtc 0.0.16's defaults).
DEFAULT_AUDIO_CONSTRAINTS: dict[str, Any] = {
    "echoCancellation": True,
    "noiseSuppression": {"exact": True},
    "autoGainControl": {"exact": True},
    "sampleRate": {"ideal": 24000},
    "sampleSize": {"ideal": 16},
    "channelCount": {"exact": 1},
}
DEFAULT_VIDEO_CONSTRAINTS: dict[str, Any] = {
    "facingMode": "user",
    "width": {"ideal": 500},
    "height": {"ideal": 500},
    "frameRate": {"ideal": 30},
}

# The exact messages of gradio_webrtc 0.0.16 (user code and tests may match on them).
MSG_AUDIO_HANDLER = (
    "In the send-receive mode for audio, the event handler must be an instance of StreamHandler."
)
MSG_FIRST_INPUT = (
    "In the webrtc stream event, the first input component must be the WebRTC component."
)
MSG_ONLY_OUTPUT = (
    "In the webrtc stream event, the only output component must be the WebRTC component."
)
MSG_RECEIVE_INPUT = "In the receive mode stream event, the WebRTC component cannot be an input."
MSG_RECEIVE_OUTPUT = (
    "In the receive mode stream, the only output component must be the WebRTC component."
)
MSG_RECEIVE_TRIGGER = "In the receive mode stream event, the trigger parameter must be provided"
# New in webrtc_ref (gradio_webrtc crashed at offer time instead).
MSG_AUDIO_VIDEO_HANDLER = (
    "In the send-receive mode for audio-video, the event handler must be an instance of "
    "AudioVideoStreamHandler or AsyncAudioVideoStreamHandler (a StreamHandler with "
    "video_receive and video_emit)."
)
MSG_SEND_AUDIO_HANDLER = (
    "In the send mode for audio, the event handler must be an instance of StreamHandler "
    "(for example ReplyOnPause(fn))."
)

#: The receive-mode trigger's client-side listener: it tells the component with this key
#: (``props.trigger_key``) to start at once, without waiting for the queued listener.
TRIGGER_JS = (
    "() => { window.dispatchEvent(new CustomEvent('webrtc-ref-trigger', "
    "{ detail: { key: %s } })); }"
)

_STATIC = "static"
# html_template and css_template pass through Handlebars and a JS template literal in
# the browser, so these sequences would be interpreted instead of shown.
_TEMPLATE_FORBIDDEN = ("`", "${", "{{", "\\")


@functools.cache
def static_asset(name: str) -> str:
    """The text of ``webrtc_ref/static/<name>``; raises ``FileNotFoundError`` if missing.

    The HTML and CSS assets are checked for the sequences that Gradio's template
    evaluation would interpret (backtick, ``${``, ``{{``, backslash): ``ValueError``.
    """
    text = (
        resources.files("webrtc_ref").joinpath(_STATIC).joinpath(name).read_text(encoding="utf-8")
    )
    if name.endswith((".html", ".css")):
        for bad in _TEMPLATE_FORBIDDEN:
            if bad in text:
                raise ValueError(
                    f"static asset {name!r} contains {bad!r}, which Gradio's html/css "
                    "template evaluation would interpret; remove it"
                )
    return text


#: A top-level export of client.js: ``export`` (then the declaration) at a line's start.
_EXPORT = re.compile(
    r"^export (?=(?:async function|function|class|const) ([A-Za-z_$][\w$]*))", re.M
)
#: What client.js may not contain: other export forms, imports (a script cannot import).
_MODULE_ONLY = re.compile(r"^\s*(?:export\b|import\b)", re.M)


def module_as_script(source: str, name: str = "client") -> str:
    """The ES module ``source`` as script text defining ``const <name>``, an object of the
    module's exports.

    The module is wrapped in a function (its declarations stay private) whose result holds
    every ``export function|async function|class|const NAME`` at the start of a line,
    with the ``export`` keyword removed. Raises ``ValueError`` for anything else a script
    cannot run: another form of export, an ``import``, or no export at all.
    """
    names = [m.group(1) for m in _EXPORT.finditer(source)]
    body = _EXPORT.sub("", source)
    leftover = _MODULE_ONLY.search(body)
    if leftover is not None:
        line = body[leftover.start() :].splitlines()[0].strip()
        raise ValueError(
            f"the client module has {line!r}: only 'export function|async function|class|"
            "const NAME' at the start of a line can be turned into a script; no imports"
        )
    if not names:
        raise ValueError("the client module exports nothing")
    exports = ", ".join(names)
    return f'const {name} = (() => {{\n"use strict";\n{body}\nreturn {{ {exports} }};\n}})();\n'


@functools.cache
def client_script() -> str:
    """The component's ``js_on_load`` body: ``client.js`` (as :func:`module_as_script`,
    the object ``client``) followed by ``webrtc.js``, which uses it."""
    ui = static_asset("webrtc.js")
    strict = '"use strict";\n'
    core = module_as_script(static_asset("client.js"), "client")
    if ui.find(strict) >= 0:
        # "use strict" must stay the first statement of the function body
        head, _, tail = ui.partition(strict)
        return f"{head}{strict}{core}{tail}"
    return core + ui


# -- validation helpers ------------------------------------------------------------------


def _one_of(name: str, value: object, allowed: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in allowed:
        raise ValueError(
            f"{name} must be one of {', '.join(repr(a) for a in allowed)}; got {value!r}"
        )
    return value


def _json_dict(name: str, value: object, *, allow_none: bool = True) -> dict[str, Any] | None:
    """``value`` must be a dict that JSON can encode (it is sent to the browser)."""
    if value is None and allow_none:
        return None
    if not isinstance(value, dict):
        allowed = "a dict (JSON object) or None" if allow_none else "a dict (JSON object)"
        raise ValueError(f"{name} must be {allowed}; got {value!r}")
    try:
        json.dumps(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(
            f"{name} must be JSON-serialisable (it is sent to the browser); got {value!r}: {exc}"
        ) from exc
    return value


def _rtc_source(value: object) -> RTCConfigurationSource | None:
    """A per-connection ``rtc_configuration`` (a function, or an ``RTCConfigurationSource``)
    as a source; ``None`` for a dict or ``None`` (which go into the page's props)."""
    if value is None or isinstance(value, dict):
        return None
    from webrtc_ref.ice import RTCConfigurationSource

    if isinstance(value, RTCConfigurationSource):
        return value
    if not callable(value):
        raise ValueError(
            "rtc_configuration must be a dict (JSON object) or None, or a function returning "
            f"one for each connection; got {value!r}"
        )
    return RTCConfigurationSource(value)  # type: ignore[arg-type]


def _positive_number(name: str, value: object, *, allow_none: bool = True) -> float | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        allowed = "a positive number of seconds or None" if allow_none else "a positive number"
        raise ValueError(f"{name} must be {allowed}; got {value!r}")
    if value != value or value == float("inf"):
        raise ValueError(f"{name} must be a finite positive number or None; got {value!r}")
    return value


def _size(name: str, value: object) -> int | str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(
            f"{name} must be None, a positive int (pixels) or a CSS size string; got {value!r}"
        )
    return value


def _component_list(name: str, value: object) -> list[Block]:
    """``None`` -> ``[]``; a Block -> ``[Block]``; a list/tuple/set of Blocks -> list."""
    if value is None:
        return []
    if isinstance(value, Block):
        return [value]
    if isinstance(value, list | tuple | set | frozenset):
        items = list(value)
        for item in items:
            if not isinstance(item, Block):
                raise ValueError(
                    f"{name} must contain only Gradio components; got {item!r} in {name}"
                )
        return items
    raise ValueError(
        f"{name} must be None, a Gradio component or a list of Gradio components; got {value!r}"
    )


def _concurrency(value: object) -> int | None:
    """``"default"`` -> 1 (one stream at a time), ``None`` -> unlimited, int >= 1 -> itself."""
    if value == "default" and isinstance(value, str):
        return 1
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(
            "concurrency_limit must be 'default' (one connection at a time), None "
            f"(unlimited) or an int >= 1; got {value!r}"
        )
    return value


# -- additional outputs: merging the results of several items ----------------------------

_UNSET: Any = object()


def _is_update(value: object) -> bool:
    return isinstance(value, dict) and value.get("__type__") == "update"


def _is_skip(value: object) -> bool:
    return isinstance(value, dict) and _is_update(value) and set(value) == {"__type__"}


def _merge(previous: Any, new: Any) -> Any:
    """Combine two results for one output so that applying the result equals applying both.

    A skip keeps ``previous``; an update without ``value`` keeps the previous value and adds
    its props; anything else replaces ``previous``.
    """
    if _is_skip(new):
        return previous
    if _is_update(new) and "value" not in new:
        if previous is _UNSET:
            return new
        if _is_update(previous):
            return {**previous, **new}
        return {**new, "value": previous}
    return new


def _split(result: Any, outputs: Sequence[Block]) -> list[Any]:
    """One value per output from what an ``on_additional_outputs`` fn returned."""
    n = len(outputs)
    if n == 0:
        return []
    if isinstance(result, dict) and result and all(isinstance(k, Block) for k in result):
        return [result.get(o, _UNSET) for o in outputs]
    if n == 1:
        return [result]
    if isinstance(result, list | tuple) and len(result) == n:
        return list(result)
    raise ValueError(
        f"the on_additional_outputs function must return {n} values (one per output), "
        f"got {result!r}"
    )


def _plain_value(value: Any) -> Any:
    """The value an input would see after ``value`` was applied, or ``_UNSET``."""
    if value is _UNSET:
        return _UNSET
    if _is_update(value):
        return value.get("value", _UNSET)
    return value


def _watch_server_of(request: Any) -> None:
    """Have the connections closed when the Gradio server that got ``request`` stops."""
    app = getattr(request, "app", None) if request is not None else None
    get_blocks = getattr(app, "get_blocks", None)
    if callable(get_blocks):
        with contextlib.suppress(Exception):
            lifecycle.watch_uvicorn(getattr(get_blocks(), "server", None))


def _session_of(request: Any) -> str | None:
    """The Gradio session hash of an event's request (``None`` when there is none)."""
    session = getattr(request, "session_hash", None) if request is not None else None
    return session if isinstance(session, str) else None


async def _client_of(request: Any) -> Client:
    """Who posted an offer to the component server route.

    Gradio hands component server functions the raw HTTP request; its JSON body (already
    read and cached by the route) carries the session hash. The address is the TCP
    peer's (behind a reverse proxy, run uvicorn with ``forwarded_allow_ips`` so that it is
    the client's).
    """
    from webrtc_ref.server import Client

    if request is None:
        return Client()
    session = None
    with contextlib.suppress(AttributeError):
        session = request.session_hash
    if not isinstance(session, str):
        json_body = getattr(request, "json", None)
        if callable(json_body):
            with contextlib.suppress(Exception):
                data = await json_body()
                session = data.get("session_hash") if isinstance(data, dict) else None
    peer = getattr(request, "client", None)
    address = getattr(peer, "host", None) if peer is not None else None
    return Client(
        session=session if isinstance(session, str) else None,
        address=address if isinstance(address, str) else None,
    )


# Gradio writes a ``.pyi`` stub beside the source of every component class it sees
# defined. Importing this package must leave the source tree untouched (it may be
# read-only, or shared), so the stub writer is switched off while WebRTC is defined.
_write_stub = component_meta.create_or_modify_pyi
component_meta.create_or_modify_pyi = lambda *args, **kwargs: None


def default_track_constraints(modality: str) -> dict[str, Any]:
    """The ``getUserMedia`` constraints used when none are given: audio-video nests
    both kinds' defaults as ``{"audio": ..., "video": ...}``."""
    if modality == "audio":
        return dict(DEFAULT_AUDIO_CONSTRAINTS)
    if modality == "video":
        return dict(DEFAULT_VIDEO_CONSTRAINTS)
    return {"audio": dict(DEFAULT_AUDIO_CONSTRAINTS), "video": dict(DEFAULT_VIDEO_CONSTRAINTS)}


BUTTON_LABEL_KEYS = ("start", "stop", "waiting")
DEFAULT_BUTTON_LABELS = {"start": "Start", "stop": "Stop", "waiting": "Connecting…"}
MAX_BUTTON_LABEL = 100


def _button_labels(labels: Any) -> dict[str, str]:
    """``button_labels`` checked and completed with the defaults: a dict with only the keys
    ``start``/``stop``/``waiting``, each a string of at most 100 characters (``""`` keeps
    the default). Raises ``ValueError`` naming the bad key or value."""
    if labels is None:
        return dict(DEFAULT_BUTTON_LABELS)
    if not isinstance(labels, dict):
        raise ValueError(
            "button_labels must be None or a dict with the keys 'start', 'stop' and/or "
            f"'waiting'; got {labels!r}"
        )
    unknown = sorted(str(k) for k in labels if k not in BUTTON_LABEL_KEYS)
    if unknown:
        raise ValueError(
            f"button_labels has unknown keys {unknown} in {labels!r}; allowed: 'start', "
            "'stop', 'waiting'"
        )
    result = dict(DEFAULT_BUTTON_LABELS)
    for key, text in labels.items():
        if not isinstance(text, str) or len(text) > MAX_BUTTON_LABEL:
            raise ValueError(
                f"button_labels[{key!r}] must be a string of at most {MAX_BUTTON_LABEL} "
                f"characters; got {labels!r}"
            )
        if text.strip():
            result[key] = text
    return result


def _check_nested_constraints(constraints: dict[str, Any]) -> None:
    """audio-video constraints are ``{"audio": dict | bool, "video": dict | bool}``."""
    unknown = sorted(set(constraints) - {"audio", "video"})
    if unknown:
        raise ValueError(
            "track_constraints for audio-video must be {'audio': ..., 'video': ...} "
            f"(each a dict of getUserMedia constraints, or True); got keys {unknown}"
        )
    for kind in ("audio", "video"):
        value = constraints.get(kind, True)
        if value is not True and not isinstance(value, dict):
            raise ValueError(
                f"track_constraints[{kind!r}] must be a dict of getUserMedia constraints "
                f"or True (an audio-video stream needs both tracks); got {value!r}"
            )


class WebRTC(gr.HTML):
    """Stream audio or video between the browser and Python over WebRTC.

    Parameters:
        value: the component's value is the browser's connection id (``webrtc_id``);
            leave it ``None``.
        label: the label shown above the component.
        mode: ``"send-receive"`` (browser media in, processed media back), ``"send"``
            (browser media in, nothing back) or ``"receive"`` (server media only,
            started by the ``trigger`` of :meth:`stream`).
        modality: ``"video"``, ``"audio"`` or ``"audio-video"`` (camera and microphone
            in one peer connection, send-receive only, handled by an
            ``AudioVideoStreamHandler``).
        rtc_configuration: the browser's ``RTCPeerConnection`` configuration, e.g.
            ``{"iceServers": [{"urls": "turn:...", "username": ..., "credential": ...}]}``
            (sent to every page), or a function (or async function) of no arguments
            returning one, called on the server for each connection just before the
            browser creates it (never put into the page; e.g.
            ``webrtc_ref.turn_rest_configuration(secret, urls)``). The function runs off
            the event loop with a timeout and rate limits; pass a
            ``webrtc_ref.ice.RTCConfigurationSource`` to change them. With a function,
            the ``rtc_configuration`` attribute is ``None``. See docs/turn.md.
        server_rtc_configuration: ICE servers for the server's own peer connections
            (``{"iceServers": [...]}``); default none (host candidates only).
        track_constraints: ``getUserMedia`` constraints for the audio/video track; by
            default gradio_webrtc's (mono 24 kHz audio with echo cancellation, or
            500x500@30 user-facing video). A dict given here is used unchanged. For
            audio-video it nests both: ``{"audio": {...}, "video": {...}}`` (each
            defaults as above when left out).
        time_limit: seconds a stream may last once connected; ``stream(time_limit=...)``
            overrides it.
        mirror_webcam: mirror the local webcam preview (the frames sent are never mirrored).
        rtp_params: merged into each sender's ``RTCRtpSender.setParameters`` (``encodings``
            entries are merged index by index), e.g. ``{"encodings": [{"maxBitrate": 1e6}]}``.
        height: height of the media area: pixels (int) or a CSS size (str).
        width: width of the media area: pixels (int) or a CSS size (str).
        max_offer_bytes: the largest offer SDP the server accepts, in bytes (default 64
            KiB; a browser's offer is 2-6 KiB). Larger offers get ``offer_too_large``.
        max_pending_per_address: how many offers from one client address may be
            connecting at once (default 32; ``None``: no cap). More get
            ``too_many_pending_offers``. Each Gradio session has at most one connecting
            offer per component: a newer one supersedes it.
        shutdown_timeout: seconds the component's connections may take to close when the
            app stops (``Blocks.close()``, Ctrl-C, SIGTERM, interpreter exit); each gets
            ``end_stream`` with reason ``server_shutdown`` and its handler's
            ``shutdown()``. Gradio itself waits at most 5 s for its server to stop.
        jitter_buffer: how the server buffers the browser's audio (send and send-receive
            audio, audio-video): ``"aiortc"``, aiortc's own (about 80 ms per packet); or
            ``"adaptive"``, webrtc_ref's jitter buffer, which hands each packet on as soon
            as it is in order and conceals lost ones with Opus packet-loss concealment.
            ``None`` (default): ``"adaptive"`` on a tested aiortc version, ``"aiortc"``
            (logged) on another (``webrtc_ref.jitter.default_choice``). An explicit ``"adaptive"``
            needs an aiortc version it was tested with
            (``webrtc_ref.jitter.TESTED_AIORTC_VERSIONS``); ``stream()`` raises
            ``RuntimeError`` otherwise. Video frames go to the handler as soon as their
            last packet is in (``webrtc_ref.jitter.EagerVideoJitterBuffer``).
        button_labels: the text of the buttons, a dict with any of the keys ``"start"``
            (the start button), ``"stop"`` (the stop button while streaming) and
            ``"waiting"`` (the stop button while connecting); each a string of at most 100
            characters. Keys left out (or ``""``) keep the defaults "Start",
            "Stop" and "Connecting…".
        full_screen: video and audio-video: show a full-screen toggle button (default
            ``True``; ``None`` means ``True``). ``False``: no toggle.
        output_buffer_s: seconds of the stream's audio that may wait to be played
            (default 20, at most 300). A generator that yields audio faster than real
            time (text-to-speech) runs this far ahead of playback before it waits, so what
            it yields after the audio (``AdditionalOutputs`` with the transcript) arrives
            at once; barge-in drops what waits.
        show_label: as for every Gradio component.
        container: as for every Gradio component.
        scale: as for every Gradio component.
        min_width: as for every Gradio component.
        interactive: as for every Gradio component.
        visible: as for every Gradio component.
        elem_id: as for every Gradio component.
        elem_classes: as for every Gradio component.
        render: as for every Gradio component.
        key: as for every Gradio component.
        every: as for every Gradio component.
        inputs: as for every Gradio component.
        _stream_origin: internal. Gradio rebuilds a component from its constructor
            arguments when an event updates its props (``gr.update(label=...)``); the
            rebuilt copy gets the original here and serves the original's stream.

    Raises:
        ValueError: naming the parameter, the value and what is allowed, for an unknown
            ``mode``/``modality`` or an option of the wrong type.

    Events: ``tick`` (the browser asks for the inputs' values to be sent to the stream)
    and ``state_change`` (additional outputs are waiting); use :meth:`stream` and
    :meth:`on_additional_outputs` rather than these directly. ``start_recording`` fires
    once a stream is connected (the page shows "streaming") and ``stop_recording`` once
    that stream has ended (stopped, time limit, error or server end), each once per
    stream: ``webrtc.start_recording(fn, inputs, outputs)``.
    """

    EVENTS = ["tick", "state_change", "start_recording", "stop_recording"]  # type: ignore[assignment]  # noqa: RUF012

    def __init__(
        self,
        value: str | None = None,
        *,
        label: str | None = None,
        mode: Mode = "send-receive",
        modality: Modality = "video",
        rtc_configuration: dict[str, Any]
        | RTCConfigurationFunction
        | RTCConfigurationSource
        | None = None,
        server_rtc_configuration: dict[str, Any] | None = None,
        track_constraints: dict[str, Any] | None = None,
        time_limit: float | None = None,
        mirror_webcam: bool = True,
        rtp_params: dict[str, Any] | None = None,
        height: int | str | None = None,
        width: int | str | None = None,
        max_offer_bytes: int = DEFAULT_MAX_OFFER_BYTES,
        max_pending_per_address: int | None = DEFAULT_MAX_PENDING_PER_ADDRESS,
        shutdown_timeout: float = 5.0,
        jitter_buffer: Literal["adaptive", "aiortc"] | None = None,
        output_buffer_s: float = 20.0,
        button_labels: dict[str, str] | None = None,
        full_screen: bool | None = True,
        show_label: bool | None = None,
        container: bool = True,
        scale: int | None = None,
        min_width: int = 160,
        interactive: bool | None = None,
        visible: bool = True,
        elem_id: str | None = None,
        elem_classes: list[str] | str | None = None,
        render: bool = True,
        key: int | str | None = None,
        every: float | None = None,
        inputs: Any = None,
        _stream_origin: WebRTC | None = None,
    ) -> None:
        mode = _one_of("mode", mode, MODES)  # type: ignore[assignment]
        modality = _one_of("modality", modality, MODALITIES)  # type: ignore[assignment]
        if mode not in MODES_OF[modality]:
            raise ValueError(
                f"mode {mode!r} is not supported for modality {modality!r}; allowed: "
                f"{', '.join(repr(m) for m in MODES_OF[modality])} (audio-video streams run "
                "one handler both ways)"
            )
        if value is not None and not isinstance(value, str):
            raise ValueError(f"value must be None or a webrtc_id string; got {value!r}")
        rtc_source = _rtc_source(rtc_configuration)
        rtc_configuration = (
            _json_dict("rtc_configuration", rtc_configuration) if rtc_source is None else None
        )
        server_rtc_configuration = _json_dict("server_rtc_configuration", server_rtc_configuration)
        if server_rtc_configuration is not None:
            servers = server_rtc_configuration.get("iceServers", [])
            if not isinstance(servers, list) or not all(
                isinstance(s, dict) and "urls" in s for s in servers
            ):
                raise ValueError(
                    "server_rtc_configuration['iceServers'] must be a list of dicts with "
                    f"'urls' (and optional 'username', 'credential'); "
                    f"got {server_rtc_configuration!r}"
                )
        if track_constraints is None:
            track_constraints = default_track_constraints(modality)
        track_constraints = _json_dict("track_constraints", track_constraints, allow_none=False)
        if modality == "audio-video" and track_constraints is not None:
            _check_nested_constraints(track_constraints)
            track_constraints = {**default_track_constraints(modality), **track_constraints}
        time_limit = _positive_number("time_limit", time_limit)
        if not isinstance(mirror_webcam, bool):
            raise ValueError(f"mirror_webcam must be True or False; got {mirror_webcam!r}")
        rtp_params = _json_dict("rtp_params", rtp_params) or {}
        height = _size("height", height)
        width = _size("width", width)
        from webrtc_ref.server import check_max_offer_bytes, check_output_buffer_s

        check_max_offer_bytes(max_offer_bytes)
        shutdown_timeout = _positive_number("shutdown_timeout", shutdown_timeout, allow_none=False)  # type: ignore[assignment]
        if jitter_buffer is not None:
            jitter_buffer = _one_of("jitter_buffer", jitter_buffer, JITTER_BUFFERS)  # type: ignore[assignment]
        check_output_buffer_s(output_buffer_s)
        button_labels = _button_labels(button_labels)
        if full_screen is None:
            full_screen = True
        if not isinstance(full_screen, bool):
            raise ValueError(f"full_screen must be True, False or None; got {full_screen!r}")
        if max_pending_per_address is not None and (
            isinstance(max_pending_per_address, bool)
            or not isinstance(max_pending_per_address, int)
            or max_pending_per_address < 1
        ):
            raise ValueError(
                "max_pending_per_address must be a positive int or None; "
                f"got {max_pending_per_address!r}"
            )
        if _stream_origin is not None and not isinstance(_stream_origin, WebRTC):
            raise ValueError(f"_stream_origin must be a WebRTC component; got {_stream_origin!r}")

        # Private state first: Gradio inspects attributes while constructing.
        self._server: StreamServer | None = None
        self._origin = _stream_origin
        self._root: Any = None  # the gr.Blocks of the stream event (for show_error)
        # A per-connection configuration: never in props (it may mint TURN credentials).
        self._rtc_source = rtc_source
        self.max_offer_bytes = max_offer_bytes
        self.max_pending_per_address = max_pending_per_address
        self.shutdown_timeout = float(shutdown_timeout)
        self.jitter_buffer = jitter_buffer
        self.output_buffer_s = float(output_buffer_s)

        self.mode = mode
        self.modality = modality
        self.rtc_configuration = rtc_configuration
        # Not a public attribute: Gradio would send it (and any TURN secret) to the browser.
        self._server_rtc_configuration = server_rtc_configuration
        self.track_constraints = track_constraints
        self.time_limit = time_limit
        self.mirror_webcam = mirror_webcam
        self.rtp_params = rtp_params
        self.height = height
        self.width = width
        self.button_labels = button_labels
        self.full_screen = full_screen
        self.concurrency_limit: int | None = 1
        self.event_handler: StreamHandler | Callable[..., Any] | None = None

        super().__init__(
            value=value,
            label=label,
            html_template=static_asset("webrtc.html"),
            css_template=static_asset("webrtc.css"),
            js_on_load=client_script(),
            apply_default_css=False,
            every=every,
            inputs=inputs,
            show_label=bool(show_label) if show_label is not None else container,
            scale=scale,
            min_width=min_width,
            visible=visible,
            elem_id=elem_id,
            elem_classes=elem_classes,
            render=render,
            key=key,
            container=container,
            **self._browser_props(),
        )
        self.interactive = interactive
        # Gradio rebuilds a component from its constructor arguments when an event
        # updates its props (gr.update(...)); the rebuilt copy must find this stream.
        if self._constructor_args:
            self._constructor_args[0]["_stream_origin"] = _stream_origin or self

    def set_rtc_configuration_function(self, rtc_configuration: Callable[..., Any]) -> None:
        """Make this component's ICE configuration per connection, as if it had been built
        with ``WebRTC(rtc_configuration=fn)``: the page holds none, each connection asks the
        ``rtc_config`` server function, which calls ``rtc_configuration`` (a function or an
        ``RTCConfigurationSource``). For code that configures an app it did not build
        (``webrtc_ref.cluster`` routes a replica's browsers through its TURN servers). Call
        it before the app is launched (the page reads the props at load), from the thread
        that built the app. Raises ``ValueError`` for a value that is not callable."""
        if rtc_configuration is None or isinstance(rtc_configuration, dict):
            raise ValueError(
                "set_rtc_configuration_function takes a function returning a configuration "
                f"for each connection; got {rtc_configuration!r} (pass a dict to the "
                "constructor instead)"
            )
        self._rtc_source = _rtc_source(rtc_configuration)
        self.rtc_configuration = None
        self.props["rtc_configuration"] = None
        self.props["rtc_configuration_per_connection"] = True
        # Gradio rebuilds a component from its constructor arguments on gr.update(...).
        if self._constructor_args:
            self._constructor_args[0]["rtc_configuration"] = rtc_configuration

    def _browser_props(self) -> dict[str, Any]:
        """The options the browser client reads from ``props``."""
        return {
            "mode": self.mode,
            "modality": self.modality,
            "rtc_configuration": self.rtc_configuration,
            "rtc_configuration_per_connection": self._rtc_source is not None,
            "track_constraints": self.track_constraints,
            "time_limit": self.time_limit,
            "mirror_webcam": self.mirror_webcam,
            "rtp_params": self.rtp_params,
            "height": self.height,
            "width": self.width,
            "button_labels": self.button_labels,
            "full_screen": self.full_screen,
        }

    def _shows_errors(self) -> bool:
        """Whether the app was launched with ``show_error=True`` (read at error time)."""
        return bool(getattr(self._root, "show_error", False))

    # -- values ---------------------------------------------------------------------
    def preprocess(self, payload: str | None) -> str | None:
        """The ``webrtc_id`` string (identity)."""
        return payload

    def postprocess(self, value: str | None) -> str | None:
        """Identity: the value is a ``webrtc_id`` or ``"start_webrtc_stream"``."""
        return value

    def api_info(self) -> dict[str, Any]:
        return {"type": "string", "description": "the browser's webrtc_id"}

    def example_payload(self) -> Any:
        return "k3v9x0q2m7ab1c4d"

    def example_value(self) -> Any:
        return "k3v9x0q2m7ab1c4d"

    def stats(self) -> Stats | None:
        """What the component's stream holds right now (``StreamServer.stats()``), or
        ``None`` before :meth:`stream`."""
        stream_server = self.stream_server
        return stream_server.stats() if stream_server is not None else None

    @property
    def stream_server(self) -> StreamServer | None:
        """The :class:`StreamServer` of the last :meth:`stream` call (``None`` before)."""
        origin = self._origin
        return origin._server if origin is not None else self._server

    def close(self, webrtc_id: str, message: str | None = None) -> bool:
        """Hang up the live connection ``webrtc_id`` of this component's stream (any
        thread; never blocks): the browser is told ``end_stream`` with reason
        ``"server_closed"`` and ``message``. False when there is no such connection
        (or no stream yet). See :meth:`StreamServer.close`."""
        stream_server = self.stream_server
        return stream_server.close(webrtc_id, message) if stream_server is not None else False

    def drain(self, deadline: float | None = None) -> asyncio.Future[None]:
        """Stop taking new streams on this component now; ``await`` the result to wait
        until its live ones have ended.

        New offers get the failure reply ``server_draining`` (its message, shown by the
        browser, asks to try again); live connections run on to their end, and after
        ``deadline`` seconds (``None``: no deadline) those still open get ``end_stream``
        with reason ``server_draining`` and are closed. The component keeps refusing
        offers afterwards, until :meth:`resume`. Needs a running event loop (an async
        event handler has one); before :meth:`stream` the future is done at once. See
        :meth:`webrtc_ref.server.StreamServer.drain` (and ``start_drain`` for threads).
        """
        stream_server = self.stream_server
        if stream_server is not None:
            return stream_server.drain(deadline)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done

    def resume(self) -> None:
        """Take new streams again after :meth:`drain` (any thread; a waiting drain is
        cancelled)."""
        stream_server = self.stream_server
        if stream_server is not None:
            stream_server.resume()

    # -- signalling -----------------------------------------------------------------
    @server
    async def offer(self, body: Any, request: gr.Request | None = None) -> dict[str, Any]:
        """The ``offer`` server function: answer the browser's SDP offer.

        ``body`` is ``{"sdp", "type": "offer", "webrtc_id"}``; Gradio passes the HTTP
        ``request``, whose session hash becomes the connection's owner. Returns
        ``{"sdp", "type": "answer"}`` or ``{"status": "failed", "meta": {"error", "message",
        ...}}``; ``not_configured`` when :meth:`stream` was never called. Never raises.
        """
        from webrtc_ref.signaling import INTERNAL_ERROR, NOT_CONFIGURED, failure

        stream_server = self.stream_server
        if stream_server is None:
            return failure(
                NOT_CONFIGURED,
                "This WebRTC component has no stream: call .stream(fn, ...) on it "
                "before launching the app.",
            )
        _watch_server_of(request)
        try:
            return await stream_server.offer(body, await _client_of(request))
        except Exception:  # StreamServer.offer should not raise; say so if it does
            from webrtc_ref.errors import new_error_id

            error_id = new_error_id()
            log.exception("error %s: offer failed unexpectedly", error_id)
            return failure(
                INTERNAL_ERROR, f"the server failed to answer the offer (error id {error_id})"
            )

    @server
    async def ice_candidate(self, body: Any, request: gr.Request | None = None) -> dict[str, Any]:
        """The ``ice_candidate`` server function: a browser candidate gathered after its
        offer left (trickle ICE), for the calling session's own connection only.

        ``body`` is ``{"webrtc_id", "candidate": {"candidate", "sdpMid", "sdpMLineIndex"}}``.
        Returns ``{"status": "ok"}`` or a failure reply; never raises.
        """
        from webrtc_ref.signaling import NOT_CONFIGURED, failure

        stream_server = self.stream_server
        if stream_server is None:
            return failure(NOT_CONFIGURED, "This WebRTC component has no stream.")
        return await stream_server.add_ice_candidate(body, owner=_session_of(request))

    @server
    async def rtc_config(self, body: Any, request: gr.Request | None = None) -> dict[str, Any]:
        """The ``rtc_config`` server function: the RTCConfiguration of one connection.

        The browser calls it just before it creates each peer connection when
        ``rtc_configuration`` is a function; ``body`` is ``{"webrtc_id": ...}`` (the id is
        only used to tag log lines). Returns ``{"rtc_configuration": {...}}`` or a failure
        reply: ``not_configured`` (``rtc_configuration`` is not a function, or no
        :meth:`stream`), ``too_many_requests`` or ``rtc_configuration_failed``
        (``webrtc_ref.ice``), or the reply an offer would get now when the stream has no
        room (``server_draining``, ``server_shutdown``, ``concurrency_limit_reached``:
        the function is not called). Never raises.
        """
        from webrtc_ref.ice import webrtc_id_of
        from webrtc_ref.signaling import INTERNAL_ERROR, NOT_CONFIGURED, failure

        origin = self._origin or self
        source = origin._rtc_source
        if source is None:
            return failure(
                NOT_CONFIGURED,
                "This WebRTC component's rtc_configuration is not a function; the browser "
                "finds it in the component's props.",
            )
        if self.stream_server is None:
            return failure(
                NOT_CONFIGURED,
                "This WebRTC component has no stream: call .stream(fn, ...) on it "
                "before launching the app.",
            )
        client = await _client_of(request)
        refused = self.stream_server.refusal(client)
        if refused is not None:  # the offer would be refused: mint no credentials for it
            return refused
        try:
            return await source.get(
                client,
                webrtc_id=webrtc_id_of(body),
                show_error=origin._shows_errors(),
            )
        except Exception:  # RTCConfigurationSource.get should not raise; say so if it does
            from webrtc_ref.errors import new_error_id

            error_id = new_error_id()
            log.exception("error %s: rtc_config failed unexpectedly", error_id)
            return failure(
                INTERNAL_ERROR,
                f"the server failed to prepare the connection (error id {error_id})",
            )

    def set_input(self, webrtc_id: str | None, *args: Any) -> None:
        """Give connection ``webrtc_id`` the current values of the stream's other inputs.

        For server-side code: acts on the connection whichever session offered it (the
        ``tick`` listener acts only for the session that made the offer). Unknown ids,
        and values that are not ids (``None``, ``""``, ``"start_webrtc_stream"``), are
        ignored.
        """
        stream_server = self.stream_server
        if stream_server is None or not isinstance(webrtc_id, str):
            return
        if not webrtc_id or webrtc_id == START_SENTINEL:
            return
        connection = stream_server.connection(webrtc_id)
        if connection is not None:
            stream_server.set_input(webrtc_id, list(args), owner=connection.owner)

    def _session_set_input(self, session: str | None, webrtc_id: str | None, *args: Any) -> None:
        """The ``tick`` listener's work: feed ``webrtc_id`` only if ``session`` offered it."""
        stream_server = self.stream_server
        if stream_server is None or not isinstance(webrtc_id, str) or not webrtc_id:
            return
        stream_server.set_input(webrtc_id, list(args), owner=session)

    # -- stream ---------------------------------------------------------------------
    def stream(  # type: ignore[override]  # replaces gr.HTML's "stream" event
        self,
        fn: StreamHandler | Callable[..., Any] | None = None,
        inputs: Block | Sequence[Block] | set[Block] | None = None,
        outputs: Block | Sequence[Block] | set[Block] | None = None,
        js: str | None = None,
        concurrency_limit: int | Literal["default"] | None = "default",
        concurrency_id: str | None = None,
        time_limit: float | None = None,
        trigger: Callable[..., Any] | None = None,
    ) -> Dependency:
        """Stream through ``fn``. Rules (each broken rule raises ``ValueError``):

        - send-receive/send: ``inputs[0]`` is this component; ``outputs`` is exactly
          ``[self]``. Video: ``fn(frame, *other_inputs)`` is callable. Audio: ``fn`` is a
          :class:`StreamHandler` instance (``ReplyOnPause`` is one). Audio-video
          (send-receive only): ``fn`` is an :class:`AudioVideoStreamHandler` instance.
        - receive: this component is not an input; ``outputs`` is exactly ``[self]``;
          ``trigger`` (an event listener such as ``button.click``) is given; ``fn`` is a
          generator function called as ``fn(*inputs)``. The trigger sets the value to
          ``"start_webrtc_stream"``, which starts the browser.
        - ``concurrency_limit``: ``"default"`` -> 1 connection at a time, ``None`` ->
          unlimited, or an int >= 1.
        - ``time_limit``: seconds after connecting at which the stream ends; ``None``
          keeps the constructor's ``time_limit``.

        Other inputs reach the stream through the ``tick`` event (on the server's request
        and periodically for video) and through their own ``change`` events.

        A component has one stream: calling ``stream`` a second time on it raises
        ``ValueError`` (use another ``WebRTC`` component for another stream).

        Returns:
            the ``tick`` dependency that delivers the inputs to the stream.
        """
        if self._server is not None or self._origin is not None:
            raise ValueError(
                "stream() was already called on this WebRTC component; a component has one "
                "stream. Create another WebRTC component for another stream."
            )
        mode = _one_of("mode", self.mode, MODES)
        modality = _one_of("modality", self.modality, MODALITIES)
        inputs_list = _component_list("inputs", inputs)
        outputs_list = _component_list("outputs", outputs)
        limit = _concurrency(concurrency_limit)
        effective_time_limit = _positive_number("time_limit", time_limit)
        if effective_time_limit is None:
            effective_time_limit = self.time_limit

        if mode == "send-receive" and modality == "audio" and not isinstance(fn, StreamHandler):
            raise ValueError(MSG_AUDIO_HANDLER)
        if mode == "send" and modality == "audio" and not isinstance(fn, StreamHandler):
            raise ValueError(MSG_SEND_AUDIO_HANDLER)
        if modality == "audio-video" and not handles_video(fn):
            raise ValueError(f"{MSG_AUDIO_VIDEO_HANDLER} Got {type(fn).__name__}.")
        if mode in ("send-receive", "send"):
            if not inputs_list or inputs_list[0] is not self:
                raise ValueError(MSG_FIRST_INPUT)
            if len(outputs_list) != 1 or outputs_list[0] is not self:
                raise ValueError(MSG_ONLY_OUTPUT)
            others = inputs_list[1:]
        else:
            if any(component is self for component in inputs_list):
                raise ValueError(MSG_RECEIVE_INPUT)
            if len(outputs_list) != 1 or outputs_list[0] is not self:
                raise ValueError(MSG_RECEIVE_OUTPUT)
            if trigger is None:
                raise ValueError(MSG_RECEIVE_TRIGGER)
            if not callable(trigger):
                raise ValueError(
                    f"trigger must be an event listener such as button.click; got {trigger!r}"
                )
            others = inputs_list
        if (modality == "video" or mode == "receive") and (
            not callable(fn) or isinstance(fn, StreamHandler)
        ):
            kind = (
                "a generator function fn(*inputs) yielding frames"
                if mode == "receive"
                else "a function fn(frame, *inputs) returning a frame"
            )
            raise ValueError(f"In the {mode} mode for {modality}, fn must be {kind}; got {fn!r}")
        if js is not None and not isinstance(js, str):
            raise ValueError(f"js must be None or a JavaScript string; got {js!r}")

        from gradio.context import Context

        from webrtc_ref.server import StreamServer

        self._root = Context.root_block
        ice_servers = (self._server_rtc_configuration or {}).get("iceServers") or None
        self._server = StreamServer(
            mode=mode,  # type: ignore[arg-type]
            modality=modality,  # type: ignore[arg-type]
            handler=fn,  # type: ignore[arg-type]
            concurrency_limit=limit,
            time_limit=effective_time_limit,
            has_inputs=bool(others),
            ice_servers=ice_servers,
            max_offer_bytes=self.max_offer_bytes,
            max_pending_per_address=self.max_pending_per_address,
            show_error=self._shows_errors,
            shutdown_timeout=self.shutdown_timeout,
            jitter_buffer=self.jitter_buffer,
            output_buffer_s=self.output_buffer_s,
        )
        lifecycle.install_signal_handlers()
        warmup.warm_up()
        self.event_handler = fn
        self.concurrency_limit = limit
        self.time_limit = effective_time_limit
        self.props["time_limit"] = effective_time_limit

        def set_input(request: gr.Request, webrtc_id: str | None, *args: Any) -> None:
            self._session_set_input(_session_of(request), webrtc_id, *args)

        if mode == "receive":
            assert trigger is not None
            # The browser starts at the trigger itself: a client-side listener (no queue
            # round trip), registered first so that it runs first; the queued listener's
            # sentinel then only confirms the start (docs/protocol.md).
            key = secrets.token_hex(8)
            self.props["trigger_key"] = key
            trigger(
                None,
                inputs=None,
                outputs=None,
                js=TRIGGER_JS % json.dumps(key),
                queue=False,
                show_progress="hidden",
            )
            trigger(lambda: START_SENTINEL, inputs=None, outputs=self, show_progress="hidden")
        dependency = self.tick(  # type: ignore[call-arg]
            set_input,
            inputs=[self, *others],
            outputs=None,
            js=js,
            concurrency_limit=None,
            concurrency_id=concurrency_id,
            time_limit=None,
            stream_every=0.5,
            trigger_mode="always_last",
            show_progress="hidden",
            queue=False,
        )
        # Other inputs also reach the stream as soon as they change (not only on ticks).
        for component in others:
            if component is self or not callable(getattr(type(component), "change", None)):
                continue
            component.change(  # type: ignore[attr-defined]
                set_input,
                inputs=[self, *others],
                outputs=None,
                concurrency_limit=None,
                trigger_mode="always_last",
                show_progress="hidden",
                api_visibility="undocumented",
                queue=False,
            )
        return dependency

    # -- additional outputs ---------------------------------------------------------
    def on_additional_outputs(
        self,
        fn: Callable[..., Any],
        inputs: Block | Sequence[Block] | set[Block] | None = None,
        outputs: Block | Sequence[Block] | set[Block] | None = None,
        js: str | None = None,
        concurrency_limit: int | Literal["default"] | None = "default",
        concurrency_id: str | None = None,
        show_progress: Literal["full", "minimal", "hidden"] = "full",
        queue: bool = True,
    ) -> Dependency:
        """Send the handler's ``AdditionalOutputs`` to other components.

        Every ``AdditionalOutputs(*values)`` the stream yields reaches
        ``fn(*input_values, *values)`` exactly once, in the order yielded; its return value
        (one per output, like any Gradio listener) updates ``outputs``.

        Delivery: the server sends ``"change"``; the browser fires ``state_change``; this
        listener drains *every* pending item of the connection and calls ``fn`` once per
        item, in order. When an output is also an input, the value ``fn`` returned for it
        is passed as that input to the call for the next item, so accumulating functions
        (``lambda history, msg: history + [msg]``) see each other's results. The merged
        result of the batch is returned (a ``gr.skip()`` in one call keeps the previous
        call's value). With nothing pending, every output gets ``gr.skip()``: no update,
        never ``None``. The listener runs with ``trigger_mode="always_last"``, so a
        ``"change"`` that arrives while it runs causes one more run with fresh inputs.

        Isolation: the listener serves only the session that offered the connection, and
        runs for one connection are serialised by that connection's own lock, so items
        are handled once and in order. ``concurrency_limit="default"`` means no limit
        across sessions (one session's slow ``fn`` never delays another's updates); pass
        an int to bound how many sessions run ``fn`` at once. With ``queue=False`` the
        updates of overlapping runs may still arrive out of order.
        """
        if not callable(fn):
            raise ValueError(f"fn must be callable; got {fn!r}")
        inputs_list = _component_list("inputs", inputs)
        outputs_list = _component_list("outputs", outputs)
        if concurrency_limit == "default":
            concurrency_limit = None
        else:
            _concurrency(concurrency_limit)
        _one_of("show_progress", show_progress, ("full", "minimal", "hidden"))
        if not isinstance(queue, bool):
            raise ValueError(f"queue must be True or False; got {queue!r}")
        n_out = len(outputs_list)
        feeds: dict[int, int] = {}
        for j, out in enumerate(outputs_list):
            for i, inp in enumerate(inputs_list):
                if inp is out:
                    feeds[j] = i
                    break

        def skip() -> Any:
            if n_out == 0:
                return None
            if n_out == 1:
                return gr.skip()
            return tuple(gr.skip() for _ in range(n_out))

        def queue_of(request: gr.Request, webrtc_id: Any) -> OutputQueue | None:
            stream_server = self.stream_server
            if stream_server is None or not isinstance(webrtc_id, str) or not webrtc_id:
                return None
            return stream_server.outputs_of(webrtc_id, owner=_session_of(request))

        def drain(queue: OutputQueue) -> list[Any]:
            items = []
            while (item := queue.pop()) is not None:
                items.append(item)
            return items

        def pack(merged: list[Any]) -> Any:
            final = [gr.skip() if m is _UNSET else m for m in merged]
            if n_out == 0:
                return None
            return final[0] if n_out == 1 else tuple(final)

        def fold(merged: list[Any], current: list[Any], result: Any) -> None:
            for j, value in enumerate(_split(result, outputs_list)):
                merged[j] = _merge(merged[j], value)
                plain = _plain_value(value)
                if j in feeds and plain is not _UNSET:
                    current[feeds[j]] = plain

        if inspect.iscoroutinefunction(fn):

            async def handler(request: gr.Request, webrtc_id: str | None, *args: Any) -> Any:
                queue = queue_of(request, webrtc_id)
                if queue is None:
                    return skip()
                async with queue.async_consumer_lock():
                    items = drain(queue)
                    if not items:
                        return skip()
                    merged, current = [_UNSET] * n_out, list(args)
                    for item in items:
                        fold(merged, current, await fn(*current, *item.args))
                    return pack(merged)

        else:

            def handler(  # type: ignore[misc]
                request: gr.Request, webrtc_id: str | None, *args: Any
            ) -> Any:
                queue = queue_of(request, webrtc_id)
                if queue is None:
                    return skip()
                with queue.consumer_lock:
                    items = drain(queue)
                    if not items:
                        return skip()
                    merged, current = [_UNSET] * n_out, list(args)
                    for item in items:
                        fold(merged, current, fn(*current, *item.args))
                    return pack(merged)

        return self.state_change(
            handler,
            inputs=[self, *inputs_list],
            outputs=outputs_list,
            js=js,
            concurrency_limit=concurrency_limit,
            concurrency_id=concurrency_id,
            show_progress=show_progress,
            queue=queue,
            trigger_mode="always_last",
        )


component_meta.create_or_modify_pyi = _write_stub
