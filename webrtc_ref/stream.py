"""``Stream``: one handler, a ready Gradio UI (``.ui``) and plain routes on a FastAPI app
(``.mount(app, path)``), over one :class:`~webrtc_ref.server.StreamServer`.

The UI is built when the ``Stream`` is: a ``gr.Blocks`` holding a :class:`WebRTC`
component whose ``.stream()`` creates the stream's ``StreamServer``. The mounted routes
hand their offers to that same server, so the concurrency limit, the time limit and every
hostile-input check of the Gradio path apply to both, and connections from the UI and
from the routes count against one limit.

Routes (``{path}`` is ``mount``'s prefix; see docs/stream.md for the wire format):

- ``POST {path}/webrtc/offer``: an offer ``{"sdp", "type": "offer", "webrtc_id"}`` gets
  ``{"sdp", "type": "answer", "token"}`` or the Gradio path's failure reply (HTTP 200);
  a trickled candidate ``{"candidate": {...}, "webrtc_id", "type": "ice-candidate"}``
  gets ``{"status": "ok"}`` or a failure reply.
- ``POST {path}/webrtc/input``: ``{"webrtc_id", "token", "inputs": [...]}`` sets the
  connection's additional inputs.
- ``GET {path}/webrtc/outputs?webrtc_id=...&token=...``: the connection's
  ``AdditionalOutputs`` as server-sent events.
- ``GET {path}/client.js``: the standalone browser client, an ES module exporting
  ``connect`` (docs/stream.md).
- ``WS {path}/websocket/offer``: fastrtc's WebSocket audio protocol
  (:mod:`webrtc_ref.websocket`); a session counts against the same limits and is
  reachable by its ``websocket_id`` through the hooks and the routes above.

A connection offered through the routes belongs to its token: the input and output
routes act only when the token matches (``mount(..., require_token=False)`` drops that
check for clients written against fastrtc's documented routes, which know no token).
The hooks :meth:`Stream.set_input` and :meth:`Stream.output_stream` are server-side
calls and trust their caller, like ``WebRTC.set_input``.
"""

from __future__ import annotations

import collections
import contextlib
import hmac
import html
import json
import logging
import re
import secrets
import time
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any, Literal

import gradio as gr
from fastapi import Request  # at run time: FastAPI reads the routes' annotations
from gradio.blocks import Block

from webrtc_ref.component import WebRTC, _component_list
from webrtc_ref.errors import new_error_id
from webrtc_ref.outputs import AdditionalOutputs
from webrtc_ref.registry import DEFAULT_MAX_PENDING_PER_ADDRESS
from webrtc_ref.signaling import (
    DEFAULT_MAX_OFFER_BYTES,
    INTERNAL_ERROR,
    INVALID_CANDIDATE,
    INVALID_INPUT,
    INVALID_OFFER,
    MAX_TRICKLED_CANDIDATES,
    OFFER_TOO_LARGE,
    TOO_MANY_REQUESTS,
    UNKNOWN_CONNECTION,
    WEBRTC_ID_PATTERN,
    Modality,
    Mode,
    SignalingError,
    failure,
    parse_candidate,
)

if TYPE_CHECKING:
    from fastapi import FastAPI
    from starlette.responses import Response

    from webrtc_ref.server import StreamServer

log = logging.getLogger("webrtc_ref.stream")

#: Owners of connections offered through the mounted routes are this prefix + the token
#: (Gradio sessions own the UI's connections; the routes never reach those).
OWNER_PREFIX = "stream-token:"
#: Largest body of the input route, and of a trickled candidate, in bytes.
MAX_INPUT_BODY_BYTES = 64 * 1024
#: Candidates may arrive before their offer (a client trickles while its offer is in
#: flight): at most this many ids are held, each for :data:`EARLY_CANDIDATE_TTL` seconds.
MAX_EARLY_IDS = 256
EARLY_CANDIDATE_TTL = 10.0
#: Seconds between keep-alive comments on an idle output stream.
SSE_KEEPALIVE = 15.0
#: Keys of fastrtc's ``ui_args``: ``title``, ``subtitle``, ``hide_title`` and
#: ``full_screen`` (the component's full-screen toggle) are used, the others (styling of
#: fastrtc's own component) are accepted and ignored.
UI_ARGS_USED = ("title", "subtitle", "hide_title", "full_screen")
UI_ARGS_IGNORED = (
    "icon",
    "icon_button_color",
    "pulse_color",
    "icon_radius",
    "send_input_on",
)
_PATH = re.compile(r"^(/[A-Za-z0-9._~-]+)*$")


def _check_path(path: object) -> str:
    if not isinstance(path, str) or not _PATH.match(path):
        raise ValueError(
            "path must be '' or a URL prefix like '/api' or '/a/b' (segments of letters, "
            f"digits, '.', '_', '~', '-'; no trailing '/'); got {path!r}"
        )
    return path


def _check_ui_args(ui_args: object) -> dict[str, Any]:
    if ui_args is None:
        return {}
    if not isinstance(ui_args, dict):
        raise ValueError(f"ui_args must be a dict or None; got {ui_args!r}")
    unknown = sorted(set(ui_args) - set(UI_ARGS_USED) - set(UI_ARGS_IGNORED))
    if unknown:
        raise ValueError(
            f"ui_args has unknown keys {unknown}; known: {UI_ARGS_USED + UI_ARGS_IGNORED}"
        )
    for key in ("title", "subtitle"):
        if ui_args.get(key) is not None and not isinstance(ui_args[key], str):
            raise ValueError(f"ui_args[{key!r}] must be a str; got {ui_args[key]!r}")
    return dict(ui_args)


def _default_outputs_handler(n_outputs: int) -> Callable[..., Any]:
    """Without an ``additional_outputs_handler`` the values of each ``AdditionalOutputs``
    replace the outputs' values (one value per output)."""

    def replace(*args: Any) -> Any:
        values = args[n_outputs:]
        return values[0] if n_outputs == 1 and len(values) == 1 else tuple(values)

    return replace


async def _read_body(request: Request, limit: int) -> bytes | None:
    """The request body, or ``None`` once it exceeds ``limit`` bytes (read no further)."""
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _json_or_none(raw: bytes) -> tuple[bool, Any]:
    try:
        return True, json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return False, None


async def _client_js() -> Response:
    """``GET {path}/client.js``: the standalone browser client (static/client.js)."""
    from fastapi.responses import Response as PlainResponse

    from webrtc_ref.component import static_asset

    return PlainResponse(
        static_asset("client.js"),
        media_type="text/javascript",
        headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"},
    )


class _HeldCandidates:
    """Candidates whose offer has not been answered yet, by ``webrtc_id`` (bounded)."""

    def __init__(self) -> None:
        #: offers being answered now -> candidates that came meanwhile
        self.offering: dict[str, list[dict[str, Any]]] = {}
        #: ids no offer arrived for yet -> (expiry, candidates), oldest first
        self.early: collections.OrderedDict[str, tuple[float, list[dict[str, Any]]]] = (
            collections.OrderedDict()
        )

    def _prune(self, now: float) -> None:
        while self.early:
            key, (expiry, _) = next(iter(self.early.items()))
            if expiry >= now:
                break
            del self.early[key]

    def hold(self, webrtc_id: str, body: dict[str, Any]) -> bool:
        """Keep ``body`` until the offer of ``webrtc_id`` is answered; False when that id
        already holds :data:`MAX_TRICKLED_CANDIDATES` candidates."""
        held = self.offering.get(webrtc_id)
        if held is None:
            now = time.monotonic()
            self._prune(now)
            entry = self.early.get(webrtc_id)
            if entry is None:
                entry = (now + EARLY_CANDIDATE_TTL, [])
                self.early[webrtc_id] = entry
                while len(self.early) > MAX_EARLY_IDS:
                    self.early.popitem(last=False)
            held = entry[1]
        if len(held) >= MAX_TRICKLED_CANDIDATES:
            return False
        held.append(body)
        return True

    def start(self, webrtc_id: str) -> None:
        """An offer of ``webrtc_id`` is being answered: its early candidates wait for it."""
        self._prune(time.monotonic())
        entry = self.early.pop(webrtc_id, None)
        self.offering.setdefault(webrtc_id, entry[1] if entry is not None else [])

    def finish(self, webrtc_id: str) -> list[dict[str, Any]]:
        return self.offering.pop(webrtc_id, [])


class Stream:
    """A stream handler with a built-in Gradio UI, mountable on a FastAPI app.

    Parameters (fastrtc's, with the same meaning):
        handler: what runs the media, by ``modality`` and ``mode`` (docs/handlers.md):
            video: ``fn(frame, *inputs) -> frame`` (send-receive, send) or a generator
            ``fn(*inputs)`` (receive); audio: a ``StreamHandler`` such as
            ``ReplyOnPause(fn)`` (send-receive, send) or a generator (receive);
            audio-video (send-receive only): an ``AudioVideoStreamHandler``.
        mode: ``"send-receive"``, ``"send"`` or ``"receive"``.
        modality: ``"video"``, ``"audio"`` or ``"audio-video"``.
        additional_inputs: Gradio components whose values follow the frame (video) or
            appear in ``latest_args`` (handlers), shown in the UI; over the routes, set
            with :meth:`set_input` or the input route.
        additional_outputs: Gradio components the UI updates from the handler's
            ``AdditionalOutputs``; over the routes, read them with :meth:`output_stream`
            or the output route.
        additional_outputs_handler: ``fn(*current_output_values, *outputs.args)`` returning
            the outputs' new values (UI only). Default: the ``AdditionalOutputs`` values
            replace the outputs' values.
        concurrency_limit: ``"default"`` (one connection at a time), ``None``
            (unlimited) or an int >= 1; shared by the UI and the routes.
        time_limit: seconds a connection may last once connected (``None``: no limit).
        allow_extra_tracks: must be ``False``: offers with tracks the stream does not
            take are refused (``unsupported_media``).
        rtp_params: the UI's sender parameters (``WebRTC(rtp_params=...)``).
        rtc_configuration: the browser's ``RTCPeerConnection`` configuration for the UI
            (a dict, or a function called per connection; see docs/turn.md).
        server_rtc_configuration: ICE servers for the server's own peer connections.
        track_constraints: ``getUserMedia`` constraints for the UI.
        ui_args: ``{"title": ..., "subtitle": ..., "hide_title": bool, "full_screen":
            bool}`` for the UI; fastrtc's styling keys are accepted and ignored.
        max_offer_bytes, max_pending_per_address, shutdown_timeout, jitter_buffer,
        output_buffer_s: as on :class:`WebRTC`; they bound the routes as they bound the UI.

    Raises:
        ValueError: early, naming the parameter, for a handler that does not fit the
            mode and modality or any option of the wrong kind.

    Attributes:
        webrtc_component: the UI's :class:`WebRTC` component.
        server: the :class:`StreamServer` of every connection of this stream.
    """

    def __init__(
        self,
        handler: Any,
        *,
        additional_outputs_handler: Callable[..., Any] | None = None,
        mode: Mode = "send-receive",
        modality: Modality = "video",
        concurrency_limit: int | Literal["default"] | None = "default",
        time_limit: float | None = None,
        allow_extra_tracks: bool = False,
        rtp_params: dict[str, Any] | None = None,
        rtc_configuration: Any = None,
        server_rtc_configuration: dict[str, Any] | None = None,
        track_constraints: dict[str, Any] | None = None,
        additional_inputs: list[Block] | None = None,
        additional_outputs: list[Block] | None = None,
        ui_args: dict[str, Any] | None = None,
        max_offer_bytes: int = DEFAULT_MAX_OFFER_BYTES,
        max_pending_per_address: int | None = DEFAULT_MAX_PENDING_PER_ADDRESS,
        shutdown_timeout: float = 5.0,
        jitter_buffer: Literal["adaptive", "aiortc"] | None = None,
        output_buffer_s: float = 20.0,
    ) -> None:
        if allow_extra_tracks is not False:
            raise ValueError(
                "allow_extra_tracks=True is not supported: a webrtc_ref stream takes exactly "
                "the tracks of its modality and refuses others (unsupported_media)"
            )
        if additional_outputs_handler is not None and not callable(additional_outputs_handler):
            raise ValueError(
                f"additional_outputs_handler must be callable or None; got "
                f"{additional_outputs_handler!r}"
            )
        self.mode = mode
        self.modality = modality
        self.event_handler = handler
        self.time_limit = time_limit
        self.allow_extra_tracks = False
        self.rtp_params = rtp_params
        self.rtc_configuration = rtc_configuration
        self.server_rtc_configuration = server_rtc_configuration
        self.track_constraints = track_constraints
        self.additional_input_components: list[Block] = _component_list(
            "additional_inputs", additional_inputs
        )
        self.additional_output_components: list[Block] = _component_list(
            "additional_outputs", additional_outputs
        )
        self.additional_outputs_handler = additional_outputs_handler
        self.ui_args = _check_ui_args(ui_args)
        # The component checks every option (mode, modality, sizes, ICE, limits) and its
        # stream() checks the handler against them; both raise ValueError early.
        self.webrtc_component = WebRTC(
            label="Stream",
            mode=mode,
            modality=modality,
            rtc_configuration=rtc_configuration,
            server_rtc_configuration=server_rtc_configuration,
            track_constraints=track_constraints,
            time_limit=time_limit,
            rtp_params=rtp_params,
            max_offer_bytes=max_offer_bytes,
            max_pending_per_address=max_pending_per_address,
            shutdown_timeout=shutdown_timeout,
            jitter_buffer=jitter_buffer,
            output_buffer_s=output_buffer_s,
            full_screen=self.ui_args.get("full_screen"),
            render=False,
        )
        self._ui = self._build_ui(concurrency_limit)
        server = self.webrtc_component.stream_server
        assert server is not None  # stream() made it
        self.server: StreamServer = server
        self.concurrency_limit = server.concurrency_limit
        self._held = _HeldCandidates()
        self._streaming: set[str] = set()

    # -- the UI -------------------------------------------------------------------------
    def _build_ui(self, concurrency_limit: Any) -> gr.Blocks:
        webrtc = self.webrtc_component
        inputs, outputs = self.additional_input_components, self.additional_output_components
        title = self.ui_args.get("title")
        subtitle = self.ui_args.get("subtitle")
        with gr.Blocks(title=title or "webrtc_ref stream") as ui:
            if not self.ui_args.get("hide_title"):
                heading = f"<h1 style='text-align: center'>{html.escape(title or 'Stream')}</h1>"
                if subtitle:
                    heading += f"<p style='text-align: center'>{html.escape(subtitle)}</p>"
                gr.HTML(heading)
            with gr.Row():
                with gr.Column():
                    webrtc.render()
                    start = gr.Button("Start") if self.mode == "receive" else None
                if inputs:
                    with gr.Column():
                        for component in inputs:
                            component.render()
                if outputs:
                    with gr.Column():
                        for component in outputs:
                            component.render()
            if self.mode == "receive":
                assert start is not None
                webrtc.stream(
                    self.event_handler,
                    inputs=inputs,
                    outputs=[webrtc],
                    trigger=start.click,
                    concurrency_limit=concurrency_limit,
                    time_limit=self.time_limit,
                )
            else:
                webrtc.stream(
                    self.event_handler,
                    inputs=[webrtc, *inputs],
                    outputs=[webrtc],
                    concurrency_limit=concurrency_limit,
                    time_limit=self.time_limit,
                )
            if outputs:
                webrtc.on_additional_outputs(
                    self.additional_outputs_handler or _default_outputs_handler(len(outputs)),
                    inputs=outputs,
                    outputs=outputs,
                )
        return ui

    @property
    def ui(self) -> gr.Blocks:
        """The Gradio app of this stream (launch it with ``stream.ui.launch()``)."""
        return self._ui

    @ui.setter
    def ui(self, blocks: gr.Blocks) -> None:
        """Replace the UI. The routes keep using this stream's server; a replacement that
        holds another ``WebRTC`` component streams through that component's own server."""
        if not isinstance(blocks, gr.Blocks):
            raise ValueError(f"ui must be a gr.Blocks; got {blocks!r}")
        self._ui = blocks

    # -- hooks --------------------------------------------------------------------------
    def set_input(self, webrtc_id: str, *args: Any) -> None:
        """Give connection ``webrtc_id`` new values of the additional inputs (the handler
        sees them from its next call). Server-side: acts on the connection whoever
        offered it; a route of yours taking ``webrtc_id`` from a client should check
        :meth:`authorized` first. Unknown ids are ignored. Any thread."""
        if not isinstance(webrtc_id, str):
            raise TypeError(f"webrtc_id must be a str; got {type(webrtc_id).__name__}")
        known, owner = self.server.owner_of(webrtc_id)
        if known:
            self.server.set_input(webrtc_id, list(args), owner=owner)

    async def output_stream(self, webrtc_id: str) -> AsyncIterator[AdditionalOutputs]:
        """The ``AdditionalOutputs`` of connection ``webrtc_id``, in order, as they come;
        ends when the connection has ended and its outputs are drained (at once for an
        unknown id). Server-side, like :meth:`set_input`; run it on the server's loop.
        Each item goes to one consumer: iterate once per connection."""
        if not isinstance(webrtc_id, str):
            raise TypeError(f"webrtc_id must be a str; got {type(webrtc_id).__name__}")
        async for item in self._outputs(webrtc_id, keepalive=None):
            if item is not None:
                yield item

    async def _outputs(
        self, webrtc_id: str, keepalive: float | None
    ) -> AsyncIterator[AdditionalOutputs | None]:
        """Outputs of ``webrtc_id``; ``None`` after ``keepalive`` idle seconds."""
        server = self.server
        while True:
            known, owner = server.owner_of(webrtc_id)
            queue = server.outputs_of(webrtc_id, owner=owner) if known else None
            if queue is None:
                return
            async with queue.async_consumer_lock():
                item = queue.pop()
            if item is not None:
                yield item
                continue
            if server.connection(webrtc_id) is None:
                return  # ended and drained
            idle = time.monotonic()
            # woken by the next item; every 0.5 s, see whether the connection ended
            while not await queue.wait(0.5):
                if server.connection(webrtc_id) is None:
                    break
                if keepalive is not None and time.monotonic() - idle >= keepalive:
                    idle = time.monotonic()
                    yield None

    def authorized(self, webrtc_id: object, token: object) -> bool:
        """Whether ``token`` is the one the answer to ``webrtc_id``'s offer carried (the
        connection must have been offered through the mounted route, and be live or
        ended less than a minute ago with outputs left). Compares in constant time."""
        return self._owner_for(webrtc_id, token, require_token=True) is not None

    def _owner_for(self, webrtc_id: object, token: object, *, require_token: bool) -> str | None:
        if not isinstance(webrtc_id, str) or not WEBRTC_ID_PATTERN.match(webrtc_id):
            return None
        known, owner = self.server.owner_of(webrtc_id)
        if not known or not isinstance(owner, str) or not owner.startswith(OWNER_PREFIX):
            return None
        if not require_token:
            return owner
        if not isinstance(token, str):
            return None
        return (
            owner if hmac.compare_digest(owner.encode(), (OWNER_PREFIX + token).encode()) else None
        )

    # -- the routes -------------------------------------------------------------------
    def mount(
        self, app: FastAPI, path: str = "", *, require_token: bool = True, metrics: bool = False
    ) -> None:
        """Add this stream's routes to ``app`` under ``path`` (see the module docstring
        and docs/stream.md), and close its connections when the app's lifespan ends.

        ``require_token=False`` lets the input and output routes act on a connection
        offered through these routes with its ``webrtc_id`` alone (fastrtc's clients know
        no token); anyone who learns a connection's id can then feed its inputs and read
        its outputs. Connections of the Gradio UI are never reachable through them.
        ``metrics=True`` also adds ``GET {path}/metrics`` and ``GET {path}/ready``
        (:mod:`webrtc_ref.metrics`).
        """
        from fastapi import FastAPI

        if not isinstance(app, FastAPI):
            raise ValueError(f"app must be a fastapi.FastAPI; got {app!r}")
        path = _check_path(path)
        if not isinstance(require_token, bool):
            raise ValueError(f"require_token must be True or False; got {require_token!r}")

        async def offer_route(request: Request) -> Response:
            return await self._offer_route(request)

        async def input_route(request: Request) -> Response:
            return await self._input_route(request, require_token)

        async def outputs_route(request: Request) -> Response:
            return await self._outputs_route(request, require_token)

        app.add_api_route(
            f"{path}/webrtc/offer", offer_route, methods=["POST"], include_in_schema=False
        )
        app.add_api_route(
            f"{path}/webrtc/input", input_route, methods=["POST"], include_in_schema=False
        )
        app.add_api_route(
            f"{path}/webrtc/outputs", outputs_route, methods=["GET"], include_in_schema=False
        )
        app.add_api_route(f"{path}/client.js", _client_js, methods=["GET"], include_in_schema=False)
        from webrtc_ref.websocket import websocket_route

        app.add_api_websocket_route(
            f"{path}/websocket/offer", websocket_route(self.server, OWNER_PREFIX)
        )
        if metrics:
            from webrtc_ref import metrics as load_reporting

            load_reporting.mount(
                app, [self.server], metrics_path=f"{path}/metrics", ready_path=f"{path}/ready"
            )
        original = app.router.lifespan_context
        server = self.server

        @contextlib.asynccontextmanager
        async def lifespan(lifespan_app: Any) -> AsyncIterator[Any]:
            async with original(lifespan_app) as state:
                try:
                    yield state
                finally:
                    await server.shutdown()

        app.router.lifespan_context = lifespan

    async def _offer_route(self, request: Request) -> Response:
        from fastapi.responses import JSONResponse

        try:
            reply = await self._offer_reply(request)
        except Exception:  # the server should not raise; say so if it does
            error_id = new_error_id()
            log.exception("error %s: /webrtc/offer failed unexpectedly", error_id)
            reply = failure(
                INTERNAL_ERROR, f"the server failed to answer the offer (error id {error_id})"
            )
        return JSONResponse(reply)

    async def _offer_reply(self, request: Request) -> dict[str, Any]:
        from webrtc_ref.server import Client

        limit = 2 * self.server.max_offer_bytes + 4096  # JSON escapes each "\r\n" in 4
        raw = await _read_body(request, limit)
        if raw is None:
            return failure(
                OFFER_TOO_LARGE,
                f"the offer body is larger than {limit} bytes",
                limit=self.server.max_offer_bytes,
                field="sdp",
            )
        ok, body = _json_or_none(raw)
        if not ok:
            return failure(INVALID_OFFER, "the body must be a JSON object")
        if isinstance(body, dict) and body.get("type") == "ice-candidate":
            return await self._candidate(body)
        webrtc_id = body.get("webrtc_id") if isinstance(body, dict) else None
        token = secrets.token_urlsafe(24)
        peer = request.client
        client = Client(
            session=OWNER_PREFIX + token,
            address=peer.host if peer is not None else None,
            dialect="fastrtc",
        )
        holding = isinstance(webrtc_id, str) and WEBRTC_ID_PATTERN.match(webrtc_id) is not None
        if holding:
            self._held.start(webrtc_id)  # type: ignore[arg-type]
        try:
            reply = await self.server.offer(body, client)
        finally:
            held = self._held.finish(webrtc_id) if holding else []  # type: ignore[arg-type]
        if reply.get("type") != "answer":
            return reply
        for candidate in held:
            result = await self.server.add_ice_candidate(candidate, owner=client.session)
            if result.get("status") != "ok":
                log.info("a candidate sent before the answer was refused: %s", result)
        return {**reply, "token": token}

    async def _candidate(self, body: dict[str, Any]) -> dict[str, Any]:
        """A trickled candidate: added to the connection if it was offered through this
        route and is still connecting (or the body carries its token); held until the
        answer if its offer is still being answered or has not arrived yet."""
        try:
            trickled = parse_candidate(body)
        except SignalingError as exc:
            return exc.reply()
        webrtc_id = trickled.webrtc_id
        if webrtc_id in self._held.offering or self.server.connection(webrtc_id) is None:
            if not self._held.hold(webrtc_id, body):
                return failure(
                    INVALID_CANDIDATE,
                    f"more than {MAX_TRICKLED_CANDIDATES} candidates for one connection",
                )
            return {"status": "ok"}
        owner = self._owner_for(webrtc_id, body.get("token"), require_token=True)
        if owner is None:
            connection = self.server.connection(webrtc_id)
            if (
                connection is not None
                and connection.connected_at is None
                and isinstance(connection.owner, str)
                and connection.owner.startswith(OWNER_PREFIX)
            ):
                owner = connection.owner  # still connecting: the trickle window
        if owner is None:
            return failure(UNKNOWN_CONNECTION, "no connecting connection with this webrtc_id")
        return await self.server.add_ice_candidate(body, owner=owner)

    async def _input_route(self, request: Request, require_token: bool) -> Response:
        from fastapi.responses import JSONResponse

        raw = await _read_body(request, MAX_INPUT_BODY_BYTES)
        if raw is None:
            return JSONResponse(
                failure(INVALID_INPUT, f"the body is larger than {MAX_INPUT_BODY_BYTES} bytes"),
                status_code=413,
            )
        ok, body = _json_or_none(raw)
        message = None
        if not ok or not isinstance(body, dict):
            message = 'the body must be a JSON object {"webrtc_id", "token", "inputs": [...]}'
        elif not isinstance(body.get("inputs"), list):
            message = "inputs must be a list: one value per additional input"
        elif self.additional_input_components and len(body["inputs"]) != len(
            self.additional_input_components
        ):
            message = (
                f"inputs must have {len(self.additional_input_components)} values (one per "
                f"additional input); got {len(body['inputs'])}"
            )
        if message is not None:
            return JSONResponse(failure(INVALID_INPUT, message), status_code=400)
        owner = self._owner_for(
            body.get("webrtc_id"), body.get("token"), require_token=require_token
        )
        if owner is None or self.server.connection(body["webrtc_id"]) is None:
            return JSONResponse(
                failure(UNKNOWN_CONNECTION, "no live connection with this webrtc_id and token"),
                status_code=404,
            )
        self.server.set_input(body["webrtc_id"], list(body["inputs"]), owner=owner)
        return JSONResponse({"status": "ok"})

    async def _outputs_route(self, request: Request, require_token: bool) -> Response:
        from fastapi.responses import JSONResponse, StreamingResponse

        webrtc_id = request.query_params.get("webrtc_id")
        token = request.query_params.get("token")
        owner = self._owner_for(webrtc_id, token, require_token=require_token)
        if owner is None or webrtc_id is None:
            return JSONResponse(
                failure(UNKNOWN_CONNECTION, "no connection with this webrtc_id and token"),
                status_code=404,
            )
        # An output stream whose response never started leaves its id behind: forget
        # the ids of connections that are gone.
        self._streaming = {i for i in self._streaming if self.server.owner_of(i)[0]}
        if webrtc_id in self._streaming:
            return JSONResponse(
                failure(
                    TOO_MANY_REQUESTS,
                    "this connection's outputs are already being streamed to another request",
                    retry_after=1,
                ),
                status_code=409,
            )
        self._streaming.add(webrtc_id)

        async def events() -> AsyncIterator[str]:
            try:
                async for item in self._outputs(webrtc_id, keepalive=SSE_KEEPALIVE):
                    if item is None:
                        yield ": keep-alive\n\n"
                    else:
                        data = json.dumps(list(item.args), default=str)
                        yield f"data: {data}\n\n"
                yield "event: end\ndata: {}\n\n"
            finally:
                self._streaming.discard(webrtc_id)

        try:
            return StreamingResponse(
                events(),
                media_type="text/event-stream",
                headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
            )
        except BaseException:
            self._streaming.discard(webrtc_id)
            raise


__all__ = ["Stream"]
