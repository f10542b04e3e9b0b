"""The ``broken`` adapter: webrtc_ref with deliberate defects (a bowtie "fauxmplementation").

The meta tests run the whole suite against it and check that exactly the requirements
these defects violate fail, while every other requirement still passes: proof that the
suite can fail, and that it fails for the right reason. Each defect mirrors a real one of
gradio_webrtc or fastrtc, or a plausible regression; at least one sits in every area of
the catalogue. :data:`DEFECTS` maps each defect to the requirements it violates (what the
meta tests expect to fail); ``WEBRTC_REF_BROKEN_DEFECTS`` (comma-separated names) injects
only some of them, which the meta tests use to show that each defect alone is caught by
its requirements.

The defects patch webrtc_ref's modules in the process that runs the suite against this
adapter (a subprocess of the meta tests), when the adapter's API is first asked for.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from conformance.adapters.base import no_pyi_stubs
from conformance.adapters.webrtc_ref import WebrtcRefAdapter

#: defect -> (what it does, the requirements it violates)
DEFECTS: dict[str, tuple[str, tuple[str, ...]]] = {
    # component API
    "outputs_unchecked": ("stream() accepts any outputs", ("API-005",)),
    "receive_without_trigger": (
        "stream() in receive mode without a trigger registers nothing instead of raising",
        ("API-006",),
    ),
    # signalling
    "duplicate_replaces": (
        "an offer with a live connection's webrtc_id replaces that connection's entry",
        ("SIG-009", "SIG-021"),
    ),
    "no_end_stream": (
        "the server ends connections without telling the client why (no end_stream)",
        ("SIG-017",),
    ),
    # audio
    "stereo_dropped": ("stereo output chunks are dropped", ("AUD-011",)),
    # video
    "bgr": ("video frames reach fn in BGR order", ("VID-003", "VID-006", "FVID-004")),
    "size_fixed": (
        "a frame fn returns is cropped or padded to the input frame's size",
        ("VID-008",),
    ),
    # handlers
    "no_copy": (
        "the handler given to stream() serves every connection (copy() returns itself)",
        # copy() is how a connection gets a handler of its own: HND-008's connections each
        # need a handler configured for them, ERR-006's copy() never runs, and HND-005's
        # eight echo sessions share one queue; so do FHND-001's two async echo sessions,
        # FHND-006's senders share one flag, start_up and shutdown run on the template
        # (FHND-002, FHND-003, FHND-010), FHND-009's handlers see two connections each,
        # and FROP-003 never sees the copies it triggers
        (
            "HND-001",
            "HND-005",
            "HND-008",
            "API-013",
            "ERR-006",
            "FHND-001",
            "FHND-002",
            "FHND-003",
            "FHND-006",
            "FHND-009",
            "FHND-010",
            "FROP-003",
            # FAV-004's two audio-video clients feed one handler's queues
            "FAV-004",
        ),
    ),
    "busy_idle_emit": (
        "an emit that returns None is called again after 0.5 ms instead of a frame period",
        ("HND-006",),
    ),
    # reply on pause
    "inputs_not_passed": (
        "ReplyOnPause passes None instead of the additional inputs' values",
        ("ROP-005",),
    ),
    "utterance_clipped": (
        "ReplyOnPause's fn gets only the second half of the utterance",
        ("ROP-002", "ROP-006"),
    ),
    # additional outputs
    "outputs_reversed": (
        "AdditionalOutputs(a, b) reaches the function as fn(b, a)",
        # OUT-003's items carry one value each: their order is unaffected
        ("OUT-002", "FAV-005"),
    ),
    "outputs_latest_only": (
        "state_change delivers only the newest of the queued outputs",
        ("OUT-003",),
    ),
    # limits
    "time_limit_ignored": ("time_limit is ignored", ("LIM-001", "LIM-007", "SIG-017")),
    "concurrency_unlimited": (
        "concurrency_limit is ignored: connections are unlimited",
        ("LIM-002", "LIM-004"),
    ),
    # lifecycle
    "shutdown_never": (
        "the handler's shutdown() is never called",
        ("LIFE-001", "LIFE-003", "HND-009", "FHND-010"),
    ),
    "foreign_tick": (
        "the tick event feeds whatever connection its webrtc_id names, from any session",
        ("LIFE-007",),
    ),
    # errors
    "errors_unreported": (
        "exceptions in user code are logged but never reported to the client",
        ("ERR-001", "ERR-004", "ERR-005", "ERR-007", "FMSG-004", "FMSG-005"),
    ),
    "texts_revealed": (
        "exception texts reach the client even when the app does not show errors",
        ("ERR-007",),
    ),
    # the fastrtc profile
    "export_missing": ("audio_to_file is not exported", ("FAPI-001", "FUTL-007")),
    "sync_start_up_skipped": (
        "a StreamHandler's start_up is never called (AsyncStreamHandler's still is)",
        ("FHND-003", "FHND-004", "FHND-009"),
    ),
    "startup_fn_ignored": (
        "ReplyOnPause ignores startup_fn",
        ("FROP-001", "FROP-002"),
    ),
    "can_interrupt_ignored": (
        "ReplyOnPause ignores can_interrupt=True (its reply cannot be interrupted)",
        ("FROP-004",),
    ),
    "close_stream_unknown": (
        "the exported CloseStream is not the class the runtime recognises",
        ("FMSG-001", "FMSG-002"),
    ),
    "video_options_ignored": (
        "VideoStreamHandler ignores fps and skip_frames",
        ("FVID-001", "FVID-003"),
    ),
    "int16_wraps": (
        "audio_to_int16 scales by 32768 without clipping: 1.0 wraps to -32768",
        ("FUTL-002",),
    ),
    "rtc_configuration_once": (
        "a function as rtc_configuration is called once and its value reused",
        ("FICE-001", "FICE-002"),
    ),
    "av_not_abstract": (
        "AudioVideoStreamHandler's video_receive and video_emit are not abstract",
        ("FAV-001",),
    ),
    "av_video_frozen": (
        "an audio-video handler's first video_emit frame is sent in place of every later one",
        # every check of the echoed video: the echoes (FAV-002, FAV-003, FAV-004), the
        # video beside the outputs (FAV-005), and the skew (FAV-007), which has no frames
        # to match
        ("FAV-002", "FAV-003", "FAV-004", "FAV-005", "FAV-007"),
    ),
    "av_shared_worker": (
        "an audio-video handler's receive waits while its video_receive runs (as if "
        "audio and video shared one worker)",
        ("FAV-006",),
    ),
    # Stream (the fastrtc profile)
    "stream_attribute_lost": ("Stream.event_handler is None, not the handler", ("FSTR-001",)),
    "stream_modes_unchecked": (
        "Stream accepts any mode and modality (it is built with valid ones and keeps the "
        "given names)",
        ("FSTR-002",),
    ),
    "stream_ui_empty": ("Stream.ui is an empty gr.Blocks", ("FSTR-003",)),
    "stream_audio_muted": (
        "an audio Stream's connections play silence instead of what emit returns",
        ("FSTR-004",),
    ),
    "stream_video_unprocessed": (
        "a video Stream without additional inputs echoes the client's frames without "
        "calling its handler (fastrtc's departure)",
        ("FSTR-005",),
    ),
    "stream_routes_at_root": (
        "mount(app, path) also mounts the routes without the prefix",
        ("FSTR-006",),
    ),
    "trickle_refused": (
        "trickled candidates get a failure reply (invalid_candidate)",
        ("FSTR-007", "FSTR-008"),
    ),
    "early_candidates_dropped": (
        "a candidate posted before its offer is acknowledged and dropped",
        ("FSTR-008",),
    ),
    "stream_set_input_ignored": (
        "Stream.set_input does nothing",
        # FSTR-010's handler waits for the input the hook never delivers
        ("FSTR-009", "FSTR-010"),
    ),
    "stream_dialect_gradio": (
        "connections made through the route get the Gradio page's 'tick' and 'change' "
        "instead of send_input and fetch_output",
        ("FSTR-010", "FSTR-012"),
    ),
    "stream_outputs_dropped": ("Stream.output_stream yields nothing", ("FSTR-011",)),
    "bad_offer_http_422": (
        "an offer body that is not an object with a webrtc_id gets HTTP 422 (fastrtc's "
        "pydantic validation)",
        ("FSTR-013",),
    ),
    "stream_limit_ignored": (
        "Stream's concurrency_limit is kept as an attribute but not applied",
        ("FSTR-014",),
    ),
    "stream_time_limit_ignored": (
        "Stream's time_limit is kept as an attribute but not applied",
        ("FSTR-015",),
    ),
}


def active_defects() -> tuple[str, ...]:
    """The defects this run injects (``WEBRTC_REF_BROKEN_DEFECTS``; default: all)."""
    chosen = os.environ.get("WEBRTC_REF_BROKEN_DEFECTS", "").strip()
    if not chosen:
        return tuple(DEFECTS)
    names = tuple(name.strip() for name in chosen.split(",") if name.strip())
    unknown = [name for name in names if name not in DEFECTS]
    if unknown:
        raise ValueError(
            f"unknown defect(s) {unknown} in WEBRTC_REF_BROKEN_DEFECTS; known: {sorted(DEFECTS)}"
        )
    return names


def expected_failures(defects: tuple[str, ...]) -> set[str]:
    """The requirements that fail when ``defects`` are injected."""
    return {rid for name in defects for rid in DEFECTS[name][1]}


# -- the defects -------------------------------------------------------------------------


def _inside(wrap: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """``wrap`` applied to a video function, or to the function inside a
    VideoStreamHandler (keeping its fps and skip_frames)."""

    @functools.wraps(wrap)
    def apply(fn: Any) -> Any:
        from webrtc_ref.handlers import VideoStreamHandler

        if isinstance(fn, VideoStreamHandler):
            return VideoStreamHandler(wrap(fn.callable), fps=fn.fps, skip_frames=fn.skip_frames)
        return wrap(fn)

    return apply


@_inside
def _bgr(fn: Any) -> Any:
    @functools.wraps(fn)
    def wrapper(frame: Any, *args: Any) -> Any:
        if isinstance(frame, np.ndarray) and frame.ndim == 3:
            frame = np.ascontiguousarray(frame[:, :, ::-1])
        return fn(frame, *args)

    return wrapper


@_inside
def _size_fixed(fn: Any) -> Any:
    @functools.wraps(fn)
    def wrapper(frame: Any, *args: Any) -> Any:
        result = fn(frame, *args)
        if isinstance(result, np.ndarray) and isinstance(frame, np.ndarray):
            fixed = np.zeros_like(frame)
            h, w = min(frame.shape[0], result.shape[0]), min(frame.shape[1], result.shape[1])
            fixed[:h, :w] = result[:h, :w]
            return fixed
        return result

    return wrapper


def _no_stereo(fn: Any) -> Any:
    def drop(item: Any) -> Any:
        if isinstance(item, tuple) and len(item) == 3 and item[2] == "stereo":
            return None
        return item

    @functools.wraps(fn)
    def wrapper(*args: Any) -> Any:
        for item in fn(*args):
            kept = drop(item)
            if kept is not None:
                yield kept

    return wrapper


def _patch(defects: tuple[str, ...]) -> None:
    """Patch webrtc_ref's modules for the module-level defects (once per process)."""
    import webrtc_ref.component as component
    import webrtc_ref.connection as connection
    import webrtc_ref.errors as errors
    import webrtc_ref.outputs as outputs
    import webrtc_ref.registry as registry
    import webrtc_ref.runner as runner
    import webrtc_ref.server as server

    if getattr(runner, "_broken_patched", False):
        return
    runner._broken_patched = True  # type: ignore[attr-defined]

    if "duplicate_replaces" in defects:
        original_reserve = registry.Registry.reserve

        def reserve(self: Any, webrtc_id: str, **kwargs: Any) -> Any:
            with self._lock:
                self._entries.pop(webrtc_id, None)
            return original_reserve(self, webrtc_id, **kwargs)

        registry.Registry.reserve = reserve  # type: ignore[method-assign]

    if "no_end_stream" in defects:

        async def no_goodbye(self: Any, reason: str, message: str | None) -> None:
            return None

        connection.Connection._say_goodbye = no_goodbye  # type: ignore[method-assign]

    if "busy_idle_emit" in defects:

        def barely_wait(self: Any, timeout: float) -> bool:
            time.sleep(0.0005)  # 1000-2000 calls a second instead of 50, even on a busy machine
            return False

        runner._Doorbell.wait = barely_wait  # type: ignore[method-assign]

    if "outputs_latest_only" in defects:
        original_pop = outputs.OutputQueue.pop

        def newest(self: Any) -> Any:
            item = original_pop(self)
            while (newer := original_pop(self)) is not None:
                item = newer
            return item

        outputs.OutputQueue.pop = newest  # type: ignore[method-assign]

    if "shutdown_never" in defects:

        def no_shutdown(self: Any) -> None:
            self.handler._detach()

        runner.HandlerRunner._shutdown_user_code = no_shutdown  # type: ignore[method-assign]

    if "foreign_tick" in defects:

        def any_session(self: Any, session: Any, webrtc_id: Any, *args: Any) -> None:
            server = self.stream_server
            if server is None or not isinstance(webrtc_id, str) or not webrtc_id:
                return
            connection_ = server.connection(webrtc_id)
            if connection_ is not None:
                connection_.set_inputs(list(args))

        component.WebRTC._session_set_input = any_session  # type: ignore[method-assign]

    if "errors_unreported" in defects:

        def log_only(self: Any, where: str, exc: BaseException) -> str:
            connection.log.error("%s: error in %s", self.tag, where, exc_info=exc)
            return ""

        connection.Connection.report_error = log_only  # type: ignore[method-assign]

    if "export_missing" in defects:
        import webrtc_ref

        webrtc_ref._EXPORTS.pop("audio_to_file", None)  # type: ignore[attr-defined]
        webrtc_ref.__dict__.pop("audio_to_file", None)

    if "texts_revealed" in defects:
        original_public = errors.public_message

        def reveal(exc: BaseException, error_id: str, *, show_error: bool) -> str:
            return str(original_public(exc, error_id, show_error=True))

        errors.public_message = reveal  # type: ignore[assignment]
        connection.public_message = reveal  # type: ignore[attr-defined]
        server.public_message = reveal  # type: ignore[attr-defined]


def _called_once(fn: Any) -> Any:
    """``fn`` (sync or async), called the first time only; its value is reused."""
    import inspect

    kept: list[Any] = []
    if inspect.iscoroutinefunction(fn):

        async def once_async() -> Any:
            if not kept:
                kept.append(await fn())
            return kept[0]

        return once_async

    def once() -> Any:
        if not kept:
            kept.append(fn())
        return kept[0]

    return once


def _without_start_up(handler: Any) -> Any:
    """``handler`` whose start_up, and its copies', does nothing (synchronous
    StreamHandlers only)."""
    original = handler.copy

    def copy() -> Any:
        clone = original()
        clone.start_up = lambda: None
        return clone

    handler.copy = copy
    handler.start_up = lambda: None
    return handler


def _first_frame_forever(item: Any, kept: list[Any]) -> Any:
    """``item`` (a video_emit output) with its frame replaced by the first one seen."""
    media, extra = item if isinstance(item, tuple) and len(item) == 2 else (item, None)
    if not isinstance(media, np.ndarray):
        return item
    if not kept:
        kept.append(media)
    return kept[0] if extra is None else (kept[0], extra)


def _av_variant(handler: Any, defects: tuple[str, ...]) -> Any:
    """``handler`` (an audio-video handler) as an instance of a subclass of its class with
    the audio-video defects, and its copies likewise."""
    import inspect
    import threading

    base = type(handler)
    frozen = "av_video_frozen" in defects
    shared = "av_shared_worker" in defects and not inspect.iscoroutinefunction(base.video_receive)
    if not frozen and not shared:
        return handler
    namespace: dict[str, Any] = {}

    def copy(self: Any) -> Any:
        clone = base.copy(self)
        clone.__class__ = variant
        return clone

    namespace["copy"] = copy
    if frozen:
        if inspect.iscoroutinefunction(base.video_emit):

            async def video_emit_async(self: Any) -> Any:
                kept = self.__dict__.setdefault("_broken_first_frame", [])
                return _first_frame_forever(await base.video_emit(self), kept)

            namespace["video_emit"] = video_emit_async
        else:

            def video_emit(self: Any) -> Any:
                kept = self.__dict__.setdefault("_broken_first_frame", [])
                return _first_frame_forever(base.video_emit(self), kept)

            namespace["video_emit"] = video_emit
    if shared:
        lock = threading.Lock()  # one per stream: enough to serialise each connection

        def receive(self: Any, frame: Any) -> Any:
            with lock:
                return base.receive(self, frame)

        def video_receive(self: Any, frame: Any) -> Any:
            with lock:
                return base.video_receive(self, frame)

        namespace["receive"] = receive
        namespace["video_receive"] = video_receive
    variant = type(base.__name__, (base,), namespace)
    handler.__class__ = variant
    return handler


def _not_abstract(api: Any) -> Any:
    """``api`` whose AudioVideoStreamHandler has concrete (do-nothing) video methods."""
    import dataclasses

    base = api.AudioVideoStreamHandler
    if not isinstance(base, type):
        return api

    class AudioVideoStreamHandler(base):  # type: ignore[misc,valid-type]
        def video_receive(self, frame: Any) -> None:
            return None

        def video_emit(self) -> Any:
            return None

    return dataclasses.replace(api, AudioVideoStreamHandler=AudioVideoStreamHandler)


def _broken_webrtc(defects: tuple[str, ...]) -> type:
    from webrtc_ref.component import WebRTC
    from webrtc_ref.handlers import AsyncStreamHandler, StreamHandler
    from webrtc_ref.reply_on_pause import ReplyOnPause

    with no_pyi_stubs():

        class BrokenWebRTC(WebRTC):  # type: ignore[misc]
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                configuration = kwargs.get("rtc_configuration")
                if "rtc_configuration_once" in defects and callable(configuration):
                    kwargs["rtc_configuration"] = _called_once(configuration)
                super().__init__(*args, **kwargs)

            def stream(  # type: ignore[override]
                self, fn: Any = None, inputs: Any = None, outputs: Any = None, **kwargs: Any
            ) -> Any:
                video_fn = self.modality == "video" and self.mode != "receive" and callable(fn)
                if "bgr" in defects and video_fn:
                    fn = _bgr(fn)
                if "size_fixed" in defects and video_fn:
                    fn = _size_fixed(fn)
                receive_audio = self.modality == "audio" and self.mode == "receive"
                if "stereo_dropped" in defects and receive_audio and callable(fn):
                    fn = _no_stereo(fn)
                if (
                    "sync_start_up_skipped" in defects
                    and isinstance(fn, StreamHandler)
                    and not isinstance(fn, AsyncStreamHandler | ReplyOnPause)
                ):
                    fn = _without_start_up(fn)
                if self.modality == "audio-video" and fn is not None:
                    fn = _av_variant(fn, defects)
                if "no_copy" in defects and isinstance(fn, StreamHandler):
                    original = fn
                    fn.copy = lambda: original  # type: ignore[method-assign]
                if "concurrency_unlimited" in defects:
                    kwargs["concurrency_limit"] = None
                if "time_limit_ignored" in defects:
                    kwargs["time_limit"] = None
                    self.time_limit = None
                if (
                    "receive_without_trigger" in defects
                    and self.mode == "receive"
                    and kwargs.get("trigger") is None
                ):
                    return None
                if "outputs_unchecked" in defects:
                    outputs = [self]
                return super().stream(fn, inputs, outputs, **kwargs)

        return BrokenWebRTC


def _broken_reply_on_pause(defects: tuple[str, ...]) -> Callable[..., Any]:
    from webrtc_ref.reply_on_pause import ReplyOnPause

    def make(fn: Any, *args: Any, **kwargs: Any) -> Any:
        reply = fn
        if "utterance_clipped" in defects:
            inner = reply

            def clipped(audio: Any, *inputs: Any) -> Any:
                rate, samples = audio
                return inner((rate, samples[:, samples.shape[1] // 2 :]), *inputs)

            reply = clipped
        if "inputs_not_passed" in defects:
            inner_ = reply

            def without_inputs(audio: Any, *inputs: Any) -> Any:
                return inner_(audio, *([None] * len(inputs)))

            reply = without_inputs
        if reply is not fn:
            reply = _same_arity(fn, reply)
        if "startup_fn_ignored" in defects:
            kwargs.pop("startup_fn", None)
        if "can_interrupt_ignored" in defects:
            kwargs.pop("can_interrupt", None)
        return ReplyOnPause(reply, *args, **kwargs)

    return make


def _same_arity(original: Any, replacement: Any) -> Any:
    """``replacement`` taking extra inputs exactly when ``original`` does (ReplyOnPause
    decides from the signature whether to fetch them)."""
    import inspect

    try:
        takes_extra = len(inspect.signature(original).parameters) > 1
    except (TypeError, ValueError):
        takes_extra = False
    if takes_extra:
        return replacement
    return lambda audio: replacement(audio)


def _broken_fastrtc_api(api: Any, defects: tuple[str, ...]) -> Any:
    import dataclasses

    changes: dict[str, Any] = {}
    if "close_stream_unknown" in defects:

        class CloseStream:
            def __init__(self, msg: str = "Stream closed") -> None:
                self.msg = msg

        changes["CloseStream"] = CloseStream
    if "video_options_ignored" in defects:
        video = api.VideoStreamHandler

        def VideoStreamHandler(callable: Any, fps: float = 30, skip_frames: bool = False) -> Any:
            return video(callable)

        changes["VideoStreamHandler"] = VideoStreamHandler
    if "int16_wraps" in defects:

        def audio_to_int16(audio: Any) -> Any:
            array = np.asarray(audio)
            if array.dtype == np.int16:
                return array
            return np.rint(array.astype(np.float64) * 32768).astype(np.int64).astype(np.int16)

        changes["audio_to_int16"] = audio_to_int16
    return dataclasses.replace(api, **changes) if changes else api


def _muted(handler: Any) -> Any:
    """``handler`` (a StreamHandler) whose copies' emitted audio is silence."""
    original = handler.copy

    def copy() -> Any:
        clone = original()
        emit = clone.emit

        def silent() -> Any:
            item = emit()
            if isinstance(item, tuple) and len(item) >= 2 and isinstance(item[1], np.ndarray):
                return (item[0], np.zeros_like(item[1]), *item[2:])
            return item

        clone.emit = silent
        return clone

    handler.copy = copy
    return handler


def _identity(frame: Any) -> Any:
    return frame


async def _nothing_yielded(webrtc_id: str) -> Any:
    for _ in ():
        yield None


def _broken_stream(
    make: Callable[..., Any], handler: Any, kwargs: dict[str, Any], defects: tuple[str, ...]
) -> Any:
    """webrtc_ref's ``Stream(handler=handler, **kwargs)`` (``make``) with the Stream
    defects."""
    import dataclasses

    from webrtc_ref.handlers import StreamHandler
    from webrtc_ref.signaling import INVALID_CANDIDATE, failure

    given = dict(kwargs)
    mode = kwargs.get("mode", "send-receive")
    modality = kwargs.get("modality", "video")
    if "stream_modes_unchecked" in defects:
        valid_mode = mode in ("send-receive", "send", "receive")
        valid_modality = modality in ("audio", "video", "audio-video")
        if not valid_mode or not valid_modality or modality == "audio-video":
            kwargs["mode"] = "send-receive"
        if not valid_modality:
            kwargs["modality"] = "video"
    real_handler = handler
    if (
        "stream_video_unprocessed" in defects
        and modality == "video"
        and mode == "send-receive"
        and not kwargs.get("additional_inputs")
        and callable(handler)
    ):
        real_handler = _identity
    if (
        "stream_audio_muted" in defects
        and modality == "audio"
        and isinstance(handler, StreamHandler)
    ):
        _muted(handler)
    if "stream_limit_ignored" in defects:
        kwargs["concurrency_limit"] = None
    if "stream_time_limit_ignored" in defects:
        kwargs["time_limit"] = None
    stream = make(handler=real_handler, **kwargs)
    # what the Stream says about itself is what it was given
    stream.event_handler = handler
    stream.mode, stream.modality = mode, modality
    if "concurrency_limit" in given:
        stream.concurrency_limit = given["concurrency_limit"]
    if "time_limit" in given:
        stream.time_limit = given["time_limit"]
    if "stream_attribute_lost" in defects:
        stream.event_handler = None
    if "stream_ui_empty" in defects:
        import gradio as gr

        stream._ui = gr.Blocks()
    if "trickle_refused" in defects:

        async def refuse(body: Any) -> Any:
            return failure(INVALID_CANDIDATE, "candidates are not taken")

        stream._candidate = refuse
    if "early_candidates_dropped" in defects:
        stream._held.hold = lambda webrtc_id, body: True
    if "stream_set_input_ignored" in defects:
        stream.set_input = lambda webrtc_id, *args: None
    if "stream_dialect_gradio" in defects:
        offer = stream.server.offer

        async def gradio_dialect(body: Any, client: Any = None) -> Any:
            if client is not None:
                client = dataclasses.replace(client, dialect="gradio_webrtc")
            return await offer(body, client)

        stream.server.offer = gradio_dialect
    if "stream_outputs_dropped" in defects:
        stream.output_stream = _nothing_yielded
    if "bad_offer_http_422" in defects:
        route = stream._offer_route

        async def validating(request: Any) -> Any:
            import json

            from fastapi.responses import JSONResponse

            raw = await request.body()  # cached: the route reads it again
            try:
                body = json.loads(raw)
            except ValueError:
                body = None
            if not isinstance(body, dict) or "webrtc_id" not in body:
                return JSONResponse({"detail": "validation error"}, status_code=422)
            return await route(request)

        stream._offer_route = validating
    return stream


class BrokenAdapter(WebrtcRefAdapter):
    """webrtc_ref with the defects listed in :data:`DEFECTS`."""

    name = "broken"
    #: broken is webrtc_ref: its deliberate departures are webrtc_ref's (expectation file)
    expectations = "webrtc_ref"

    def make_stream(self, handler: Any, **kwargs: Any) -> Any:
        defects = active_defects()
        _patch(defects)
        make = super().make_stream
        return _broken_stream(make, handler, kwargs, defects)

    def mount(self, stream: Any, app: Any, path: str = "") -> None:
        super().mount(stream, app, path)
        if "stream_routes_at_root" in active_defects() and path:
            super().mount(stream, app, "")

    def fastrtc_api(self) -> Any:
        defects = active_defects()
        _patch(defects)
        return _broken_fastrtc_api(super().fastrtc_api(), defects)

    def api(self) -> Any:
        import dataclasses

        defects = active_defects()
        _patch(defects)
        api = super().api()
        additional = api.AdditionalOutputs
        if "outputs_reversed" in defects:

            class ReversedOutputs(additional):  # type: ignore[valid-type,misc]
                def __init__(self, *args: Any) -> None:
                    super().__init__(*reversed(args))

            additional = ReversedOutputs
        if "av_not_abstract" in defects:
            api = _not_abstract(api)
        return dataclasses.replace(
            api,
            WebRTC=_broken_webrtc(defects),
            AdditionalOutputs=additional,
            reply_on_pause=_broken_reply_on_pause(defects),
        )
