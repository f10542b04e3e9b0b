"""The WebSocket transport of a mounted :class:`~webrtc_ref.stream.Stream`:
``WS {path}/websocket/offer``, fastrtc's documented audio protocol (docs/stream.md).

One WebSocket is one session, admitted by the stream's
:class:`~webrtc_ref.server.StreamServer` exactly like a WebRTC offer
(:meth:`~webrtc_ref.server.StreamServer.open_session`): the same registry slot, so the
concurrency limit counts both transports; the handler copied off the loop; the same
:class:`~webrtc_ref.runner.HandlerRunner`, so user code runs on the session's own worker
threads; the same time limit, hooks (``set_input`` / ``output_stream`` by
``websocket_id``), shutdown and stats. Only audio in ``send-receive`` mode is served
(as in fastrtc); other streams refuse the socket with a close reason.

The wire (JSON text frames):

- client -> server: ``{"event": "start", "websocket_id": ID}`` first (an id as for
  WebRTC: 1-128 of ``[A-Za-z0-9_-]``), then ``{"event": "media", "media": {"payload":
  BASE64}}`` with G.711 mu-law mono at the handler's ``input_sample_rate``;
  ``{"event": "stop"}`` ends the session; ``{"event": "ping"}`` gets ``{"event": "pong"}``.
- server -> client: ``{"event": "started", "websocket_id", "token"}`` once admitted (the
  token of the mounted input and output routes); ``{"event": "media", "media":
  {"payload": BASE64}}``, mu-law mono at the handler's ``output_sample_rate`` in 20 ms
  messages paced in real time (up to 0.2 s ahead); the handler's messages
  (``{"type": "log" | "warning" | "error" | "send_input" | "fetch_output", ...}``), and,
  when the server ends the session, ``{"type": "end_stream", "reason", "message"?}``
  before the close frame. A refused start gets the WebRTC failure reply
  ``{"status": "failed", "meta": {...}}`` before the close frame.

Bounds (each one a specific error and close code, see :data:`CLOSE_CODES`): a message is
at most :data:`MAX_MESSAGE_BYTES`, text, a JSON object with a known ``event``; a payload
is strict base64 of at most :data:`MAX_PAYLOAD_S` of audio; audio may not arrive more
than :data:`MAX_AHEAD_S` ahead of real time, nor messages faster than
:data:`MAX_MESSAGES_PER_S`; ``start`` must come within :data:`START_TIMEOUT`. What waits
to be sent is bounded: audio by the stream's ``output_buffer_s`` (the handler's worker
waits beyond it, as with WebRTC), messages by :data:`MAX_QUEUED_MESSAGES` and
``drops.MAX_BACKLOG_BYTES`` (oldest dropped, counted); a client that reads nothing for
:data:`SEND_TIMEOUT` is closed.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import fractions
import json
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import av
import numpy as np
from aiortc.mediastreams import MediaStreamError
from fastapi import WebSocket  # at run time: FastAPI reads the route's annotation
from starlette.websockets import WebSocketDisconnect

from webrtc_ref.connection import CLOSE_STREAM_SLACK, DIALECT_MESSAGES, SHUTDOWN_WAIT
from webrtc_ref.drops import MAX_BACKLOG_BYTES, DropCounter, MessageBacklog
from webrtc_ref.errors import report_handler_error
from webrtc_ref.handlers import StreamHandler, encode_message
from webrtc_ref.outputs import AdditionalOutputs, OutputQueue
from webrtc_ref.runner import HandlerRunner
from webrtc_ref.signaling import (
    UNSUPPORTED_MEDIA,
    WEBRTC_ID_PATTERN,
    failure,
    log_tag,
)
from webrtc_ref.threads import run_in_thread
from webrtc_ref.tracks import OutboundAudioTrack

if TYPE_CHECKING:
    from webrtc_ref.connection import StreamSpec
    from webrtc_ref.server import StreamServer

log = logging.getLogger("webrtc_ref.websocket")

#: Largest text message accepted from a client, in bytes (2 s of 16 kHz mu-law in base64
#: fits; so does 1 s at 48 kHz). uvicorn's ``--ws-max-size`` (16 MiB by default) bounds
#: a frame before the application sees it.
MAX_MESSAGE_BYTES = 64 * 1024
#: Most audio one media message may carry, in seconds at the handler's input rate.
MAX_PAYLOAD_S = 1.0
#: How far ahead of real time (since ``start``) the client's audio may run, in seconds.
MAX_AHEAD_S = 2.0
#: Messages per second a client may send on average (a burst of as many is allowed).
MAX_MESSAGES_PER_S = 200
#: Seconds a client has, after the socket opens, to send ``start``.
START_TIMEOUT = 10.0
#: Pings a client may send before ``start``.
MAX_PINGS_BEFORE_START = 10
#: Seconds one send may wait for a client that does not read before the session ends.
SEND_TIMEOUT = 10.0
#: Text messages (the handler's, the runtime's) waiting to be sent; older ones are dropped.
MAX_QUEUED_MESSAGES = 256
#: Seconds the goodbye (queued messages, ``end_stream``, the close frame) may take.
GOODBYE_WAIT = 1.0

#: The close code of each way a session ends (RFC 6455 section 7.4.1); the close
#: reason is the key, and the error or ``end_stream`` message before it says more.
CLOSE_CODES: dict[str, int] = {
    "client_closed": 1000,
    "handler_closed": 1000,
    "time_limit": 1000,
    "server_closed": 1000,
    "server_shutdown": 1001,
    "binary_message": 1003,
    "invalid_json": 1007,
    "invalid_message": 1008,
    "unknown_event": 1008,
    "media_before_start": 1008,
    "duplicate_start": 1008,
    "invalid_payload": 1008,
    "rate_limited": 1008,
    "start_timeout": 1008,
    "unsupported_media": 1008,
    "invalid_offer": 1008,
    "connection_already_exists": 1008,
    "message_too_large": 1009,
    "error": 1011,
    "send_timeout": 1011,
    "handler_error": 1011,
    "internal_error": 1011,
    "concurrency_limit_reached": 1013,
    "too_many_pending_offers": 1013,
}
KNOWN_EVENTS = ("start", "media", "stop", "ping")


# --------------------------------------------------------------------------- mu-law

_BIAS = 0x84
#: Encoding works on 14-bit magnitudes (the sample arithmetically shifted right by 2, as
#: the G.711 reference code and Python's former ``audioop.lin2ulaw`` do; so negative
#: samples round away from zero), biased by 33 and clipped at 8159.
_BIAS14 = 33
_CLIP14 = 8159


def _encode_table() -> np.ndarray:
    x = np.arange(-32768, 32768, dtype=np.int32) >> 2
    sign = np.where(x < 0, 0x80, 0)
    magnitude = np.minimum(np.abs(x), _CLIP14) + _BIAS14
    segment = np.frexp(magnitude.astype(np.float64))[1] - 6  # floor(log2) - 5, exact
    mantissa = (magnitude >> (segment + 1)) & 0x0F
    level = np.where(segment >= 8, 0x7F, (segment << 4) | mantissa)  # 8192: the top code
    codes = ~(sign | level) & 0xFF
    # indexed by the int16 sample viewed as uint16
    return np.roll(codes.astype(np.uint8), -32768)


def _decode_table() -> np.ndarray:
    u = ~np.arange(256, dtype=np.int32) & 0xFF
    exponent = (u >> 4) & 0x07
    magnitude = ((((u & 0x0F) << 3) + _BIAS) << exponent) - _BIAS
    return np.where(u & 0x80, -magnitude, magnitude).astype(np.int16)


_ENCODE = _encode_table()
_DECODE = _decode_table()


def mulaw_encode(samples: np.ndarray) -> bytes:
    """G.711 mu-law bytes of int16 ``samples`` (any shape, read in C order)."""
    array = np.ascontiguousarray(samples, dtype=np.int16).reshape(-1)
    return _ENCODE[array.view(np.uint16)].tobytes()


def mulaw_decode(data: bytes) -> np.ndarray:
    """int16 samples of G.711 mu-law ``data`` (one sample per byte)."""
    return _DECODE[np.frombuffer(data, dtype=np.uint8)]


class _MulawEncoder:
    """The outbound track's 20 ms s16 frames as mu-law mono at ``rate`` (frames of other
    rates or layouts are downmixed and resampled)."""

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self._resampler: av.AudioResampler | None = None
        self._in_rate = 0

    def encode(self, frame: av.AudioFrame) -> bytes:
        channels = frame.layout.nb_channels
        samples = frame.to_ndarray().reshape(-1, channels)
        mono = (
            samples[:, 0]
            if channels == 1
            else np.round(samples.astype(np.float64).mean(axis=1)).astype(np.int16)
        )
        if frame.sample_rate != self.rate:
            if self._resampler is None or self._in_rate != frame.sample_rate:
                self._resampler = av.AudioResampler(format="s16", layout="mono", rate=self.rate)
                self._in_rate = frame.sample_rate
            source = av.AudioFrame.from_ndarray(mono.reshape(1, -1), format="s16", layout="mono")
            source.sample_rate = frame.sample_rate
            parts = [f.to_ndarray().reshape(-1) for f in self._resampler.resample(source)]
            mono = np.concatenate(parts) if parts else np.zeros(0, np.int16)
        return mulaw_encode(mono)


# --------------------------------------------------------------------------- errors


class ProtocolViolation(Exception):
    """A client message broke the protocol: ``reason`` (a :data:`CLOSE_CODES` key) and a
    human ``message`` for the client's error event."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def _error_event(reason: str, message: str) -> str:
    return json.dumps({"type": "error", "code": reason, "message": message, "data": message})


def parse_message(text: object) -> dict[str, Any]:
    """The client message ``text`` as a dict with a known ``event``, or raise
    :class:`ProtocolViolation` (cheap checks first: type, size, JSON, shape)."""
    if not isinstance(text, str):
        raise ProtocolViolation(
            "binary_message", "binary messages are not accepted: send JSON text messages"
        )
    if len(text) > MAX_MESSAGE_BYTES:  # characters <= bytes; the exact check follows
        raise ProtocolViolation(
            "message_too_large", f"a message may be at most {MAX_MESSAGE_BYTES} bytes"
        )
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_MESSAGE_BYTES:
        raise ProtocolViolation(
            "message_too_large", f"a message may be at most {MAX_MESSAGE_BYTES} bytes"
        )
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):  # RecursionError: nesting deeper than Python's stack
        raise ProtocolViolation("invalid_json", "a message must be JSON") from None
    if not isinstance(data, dict):
        raise ProtocolViolation(
            "invalid_message", 'a message must be a JSON object {"event": ..., ...}'
        )
    event = data.get("event")
    if event not in KNOWN_EVENTS:
        raise ProtocolViolation(
            "unknown_event",
            f"unknown event {str(event)[:40]!r}; known: {', '.join(KNOWN_EVENTS)}",
        )
    return data


def decode_payload(data: dict[str, Any], sample_rate: int) -> np.ndarray:
    """The int16 samples of a media message, or raise :class:`ProtocolViolation`."""
    media = data.get("media")
    payload = media.get("payload") if isinstance(media, dict) else None
    if not isinstance(payload, str):
        raise ProtocolViolation(
            "invalid_payload", 'a media message is {"event": "media", "media": {"payload": str}}'
        )
    limit = int(sample_rate * MAX_PAYLOAD_S)
    too_long = ProtocolViolation(
        "invalid_payload",
        f"a media message may carry at most {MAX_PAYLOAD_S:g} s of audio "
        f"({limit} mu-law bytes at {sample_rate} Hz)",
    )
    if len(payload) > 4 * ((limit + 2) // 3):  # before decoding anything
        raise too_long
    try:
        raw = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise ProtocolViolation("invalid_payload", "the payload is not valid base64") from None
    if len(raw) > limit:
        raise too_long
    return mulaw_decode(raw)


# --------------------------------------------------------------------------- the session


class WebSocketSession:
    """One WebSocket client's session: the WebSocket counterpart of
    :class:`~webrtc_ref.connection.Connection`, with the attributes
    :class:`~webrtc_ref.server.StreamServer` reads of a connection (``webrtc_id``, ``tag``,
    ``owner``, ``outputs``, ``runner``, ``connected_at``, ``close()``...), and the hooks of
    :class:`~webrtc_ref.runner.RuntimeHooks` for its runner.

    Every exit goes through :meth:`close` (idempotent, in a task of its own): the workers
    are quiesced, queued messages and ``end_stream`` are sent (not when the client left),
    the socket is closed with the reason's code, the runner stops (``shutdown()`` once,
    off the loop, bounded), and the registry slot is freed last.
    """

    def __init__(
        self,
        websocket: WebSocket,
        webrtc_id: str,
        spec: StreamSpec,
        handler: StreamHandler,
        *,
        owner: str,
        on_closed: Callable[[Any], None],
    ) -> None:
        self.websocket = websocket
        self.webrtc_id = webrtc_id
        self.tag = log_tag(webrtc_id)
        self.owner = owner
        self.spec = spec
        self._on_closed = on_closed
        self.loop = asyncio.get_running_loop()
        self._loop = self.loop
        self.outputs = OutputQueue(tag=self.tag)
        self.message_drops = DropCounter(
            log,
            f"messages for a client that does not read (more than {MAX_QUEUED_MESSAGES} "
            f"or {MAX_BACKLOG_BYTES} bytes)",
            self.tag,
        )
        self._pending_messages = MessageBacklog(self.message_drops, MAX_QUEUED_MESSAGES)
        self.jitter_buffer = None
        self.created_at = time.monotonic()
        self.connected_at: float | None = self.created_at
        self.closed = asyncio.Event()
        self.close_reason: str | None = None
        self._closing = False
        self._close_task: asyncio.Task[None] | None = None
        self._client_gone = False
        self._ending: str | None = None
        self._timers: list[asyncio.TimerHandle] = []
        self._tasks: set[asyncio.Future[Any]] = set()
        self._send_lock = asyncio.Lock()
        self._messages_ready = asyncio.Event()
        self._wanted, self._waiting = DIALECT_MESSAGES["fastrtc"]
        self.input_rate = handler.input_sample_rate
        self.output_rate = handler.output_sample_rate
        self.out_track = OutboundAudioTrack(self.loop, max_buffer_s=spec.output_buffer_s)
        self._encoder = _MulawEncoder(self.output_rate)
        handler._attach(self)
        # the runner frames the handler's audio at its own output rate, mono: the encoder
        # then only mu-laws it (it resamples only frames of another rate)
        self.runner = HandlerRunner(
            handler, self, self.out_track, output_rate=self.output_rate, output_layout="mono"
        )
        self._samples_in = 0
        self._tokens = float(MAX_MESSAGES_PER_S)
        self._tokens_at = self.created_at
        self.media_in = 0
        self.media_out = 0

    # -- running -------------------------------------------------------------------------
    def start(self) -> None:
        """Start the workers, the audio pump and the message writer (on the loop); not
        once closing (a shutdown may close the session before it starts)."""
        if self._closing:
            return
        if self.spec.time_limit is not None:
            self._timers.append(
                self.loop.call_later(
                    self.spec.time_limit, lambda: self._spawn(self.close("time_limit"))
                )
            )
        self._spawn(self._pump())
        self._spawn(self._write_messages())
        if self.spec.has_inputs:
            self.request_inputs()
        self.runner.start()

    def handle(self, data: dict[str, Any]) -> str | None:
        """One parsed client message after ``start`` (on the loop; never blocks). Returns
        a reply to send, if any; raises :class:`ProtocolViolation`."""
        self._rate_check()
        event = data["event"]
        if event == "media":
            samples = decode_payload(data, self.input_rate)
            self._samples_in += samples.size
            allowed = (time.monotonic() - self.created_at + MAX_AHEAD_S) * self.input_rate
            if self._samples_in > allowed:
                raise ProtocolViolation(
                    "rate_limited",
                    f"audio arrives faster than real time (more than {MAX_AHEAD_S:g} s ahead "
                    f"at {self.input_rate} Hz)",
                )
            if samples.size:
                frame = av.AudioFrame.from_ndarray(
                    samples.reshape(1, -1), format="s16", layout="mono"
                )
                frame.sample_rate = self.input_rate
                frame.pts = self._samples_in - samples.size
                frame.time_base = fractions.Fraction(1, self.input_rate)
                self.media_in += 1
                self.runner.deliver(frame)
            return None
        if event == "ping":
            return '{"event": "pong"}'
        if event == "stop":
            self._spawn(self.close("client_closed"))
            return None
        raise ProtocolViolation("duplicate_start", "start was already sent on this socket")

    def _rate_check(self) -> None:
        now = time.monotonic()
        self._tokens = min(
            float(MAX_MESSAGES_PER_S), self._tokens + (now - self._tokens_at) * MAX_MESSAGES_PER_S
        )
        self._tokens_at = now
        if self._tokens < 1:
            raise ProtocolViolation(
                "rate_limited", f"more than {MAX_MESSAGES_PER_S} messages per second"
            )
        self._tokens -= 1

    async def _pump(self) -> None:
        """Outbound audio: the track paces 20 ms frames in real time; each becomes a
        media message. Ends when the track does (stop, or the end of a CloseStream)."""
        while not self._closing:
            try:
                frame = await self.out_track.recv()
            except MediaStreamError:
                break
            payload = self._encoder.encode(frame)
            if not payload:
                continue
            text = (
                '{"event": "media", "media": {"payload": "'
                + base64.b64encode(payload).decode("ascii")
                + '"}}'
            )
            if not await self._send(text):
                return
            self.media_out += 1
        if self._ending is not None and not self._closing:
            self._spawn(self.close("handler_closed", self._ending))

    async def _write_messages(self) -> None:
        while not self._closing:
            await self._messages_ready.wait()
            self._messages_ready.clear()
            while self._pending_messages and not self._closing:
                if not await self._send(self._pending_messages.popleft()):
                    return

    async def _send(self, text: str) -> bool:
        """Send one text frame; False (and the session closing) when the client is gone
        or does not read for :data:`SEND_TIMEOUT` seconds."""
        try:
            async with self._send_lock:
                await asyncio.wait_for(self.websocket.send_text(text), SEND_TIMEOUT)
            return True
        except asyncio.TimeoutError:
            self._spawn(
                self.close("send_timeout", f"the client read nothing for {SEND_TIMEOUT:g} s")
            )
        except Exception:  # disconnected (starlette and uvicorn raise several kinds)
            self._client_gone = True
            self._spawn(self.close("client_closed"))
        return False

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- RuntimeHooks / HandlerContext (thread-safe) -----------------------------------
    def _post(self, text: str) -> None:
        try:
            self.loop.call_soon_threadsafe(self._queue_message, text)
        except RuntimeError:  # loop closed at interpreter exit
            pass

    def _queue_message(self, text: str) -> None:
        if self._close_task is not None and self._close_task.done():
            return
        self._pending_messages.append(text)
        self._messages_ready.set()

    def request_inputs(self) -> None:
        self._post(self._wanted)

    def send_message(self, message: str | dict[str, Any]) -> None:
        self._post(encode_message(message))

    def clear_output(self) -> None:
        self.out_track.clear()
        self.runner.discard_output()

    def additional_outputs(self, outputs: AdditionalOutputs) -> None:
        self.outputs.put(outputs)
        self._post(self._waiting)

    def close_stream(self, message: str) -> None:
        try:
            self.loop.call_soon_threadsafe(self._handler_closed, message)
        except RuntimeError:
            pass

    def _handler_closed(self, message: str) -> None:
        """``CloseStream``: end the track after what is queued; the pump then closes."""
        if self._closing or self._ending is not None:
            return
        self._ending = message
        queued_s = self.out_track.queued * 0.02
        self.out_track.finish()
        self._timers.append(
            self.loop.call_later(
                queued_s + CLOSE_STREAM_SLACK,
                lambda: self._spawn(self.close("handler_closed", message)),
            )
        )

    def report_error(self, where: str, exc: BaseException) -> str:
        """Log ``exc`` with an error id and send the client an error message (what it may
        see: :mod:`webrtc_ref.errors`); returns that text. Any thread."""
        message = report_handler_error(log, self.tag, where, exc, show_error=self.spec.show_error())
        self.send_message({"type": "error", "message": message, "data": message})
        return message

    def user_error(self, where: str, exc: BaseException) -> None:
        message = self.report_error(where, exc)
        try:
            self.loop.call_soon_threadsafe(lambda: self._spawn(self.close("error", message)))
        except RuntimeError:
            pass

    def set_inputs(self, args: list[Any]) -> None:
        self.runner.set_inputs(args)

    async def add_ice_candidate(self, candidate: Any) -> bool:
        """A WebSocket session has no ICE: every candidate is refused."""
        return False

    @property
    def queued_audio_frames(self) -> int:
        return self.out_track.queued

    # -- lifecycle -------------------------------------------------------------------------
    def client_left(self) -> None:
        """The socket is gone (read side): close without a goodbye."""
        self._client_gone = True
        self._spawn(self.close("client_closed"))

    async def close(self, reason: str, message: str | None = None, *, notify: bool = True) -> None:
        """End the session for ``reason`` (a :data:`CLOSE_CODES` key); idempotent; returns
        once closed; cancelling the caller does not stop the closing."""
        if self._close_task is None:
            self._closing = True
            self.close_reason = reason
            self._close_task = asyncio.ensure_future(self._close(reason, message, notify))
        await asyncio.shield(self._close_task)

    async def _close(self, reason: str, message: str | None, notify: bool) -> None:
        log.info("%s: closing websocket session (%s)", self.tag, reason)
        for timer in self._timers:
            timer.cancel()
        try:
            await run_in_thread(self.runner.quiesce, f"quiesce-{self.tag}")
        except Exception:
            log.exception("%s: stopping the workers failed", self.tag)
        self.out_track.stop()
        current = asyncio.current_task()
        tasks = [t for t in self._tasks if t is not current]
        for task in tasks:
            task.cancel()
        self._messages_ready.set()
        if tasks:
            # bounded: on Python 3.11 a wait_for that completes as it is cancelled swallows
            # the cancellation (the loops also stop on _closing)
            await asyncio.wait(tasks, timeout=GOODBYE_WAIT)
        if not self._client_gone:
            try:
                await asyncio.wait_for(self._goodbye(reason, message, notify), GOODBYE_WAIT)
            except Exception:  # timed out, or the client left meanwhile
                log.debug("%s: the goodbye did not complete", self.tag, exc_info=True)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(
                    self.websocket.close(CLOSE_CODES.get(reason, 1000), reason), GOODBYE_WAIT
                )
        stopping = asyncio.ensure_future(run_in_thread(self.runner.stop, f"stop-{self.tag}"))
        try:
            await asyncio.wait_for(asyncio.shield(stopping), SHUTDOWN_WAIT)
        except asyncio.TimeoutError:
            log.warning(
                "%s: the handler's shutdown() has not returned %.0f s after the session "
                "ended; the session is released anyway",
                self.tag,
                SHUTDOWN_WAIT,
            )
        except Exception:
            log.exception("%s: stopping the handler failed", self.tag)
        self._pending_messages.clear()
        self.out_track.remove_all_listeners()
        self._tasks.clear()
        self._timers.clear()
        self.runner.detach()
        try:
            self._on_closed(self)
        finally:
            self.closed.set()

    async def _goodbye(self, reason: str, message: str | None, notify: bool) -> None:
        async with self._send_lock:
            while self._pending_messages:
                await self.websocket.send_text(self._pending_messages.popleft())
            if notify and reason != "client_closed":
                payload: dict[str, Any] = {"type": "end_stream", "reason": reason}
                if message:
                    payload["message"] = message
                    payload["data"] = message
                await self.websocket.send_text(json.dumps(payload))


# --------------------------------------------------------------------------- the route


async def _refuse(websocket: WebSocket, reason: str, text: str) -> None:
    with contextlib.suppress(Exception):
        await websocket.send_text(text)
        await websocket.close(CLOSE_CODES.get(reason, 1008), reason)


async def _receive_text(websocket: WebSocket) -> object:
    """The next message's text (bytes for a binary one); raises WebSocketDisconnect."""
    message = await websocket.receive()
    if message["type"] == "websocket.disconnect":
        raise WebSocketDisconnect(message.get("code", 1000))
    text = message.get("text")
    return text if text is not None else message.get("bytes", b"")


def websocket_route(
    server: StreamServer, owner_prefix: str
) -> Callable[[WebSocket], Awaitable[None]]:
    """The ``{path}/websocket/offer`` endpoint for ``server``: sessions are owned by
    ``owner_prefix`` + a fresh token (the mounted routes' owners)."""

    async def websocket_offer(websocket: WebSocket) -> None:
        await serve(websocket, server, owner_prefix)

    return websocket_offer


async def serve(websocket: WebSocket, server: StreamServer, owner_prefix: str) -> None:
    """Serve one client on ``websocket`` until its session ends (see the module docstring)."""
    await websocket.accept()
    spec = server.spec
    if spec.modality != "audio" or spec.mode != "send-receive":
        text = (
            "WebSocket connections are only supported for audio in send-receive mode; this "
            f"stream is {spec.modality} {spec.mode}"
        )
        await _refuse(websocket, UNSUPPORTED_MEDIA, json.dumps(failure(UNSUPPORTED_MEDIA, text)))
        return
    try:
        start = await asyncio.wait_for(_start_message(websocket), START_TIMEOUT)
    except asyncio.TimeoutError:
        text = f"no start event within {START_TIMEOUT:g} s"
        await _refuse(websocket, "start_timeout", _error_event("start_timeout", text))
        return
    except ProtocolViolation as violation:
        await _refuse(
            websocket, violation.reason, _error_event(violation.reason, violation.message)
        )
        return
    except WebSocketDisconnect:
        return
    if start is None:
        return
    webrtc_id = start.get("websocket_id")
    if not isinstance(webrtc_id, str) or not WEBRTC_ID_PATTERN.match(webrtc_id):
        text = "websocket_id must be 1-128 characters of A-Z, a-z, 0-9, '_' and '-'"
        await _refuse(websocket, "invalid_message", _error_event("invalid_message", text))
        return
    token = secrets.token_urlsafe(24)
    address = websocket.client.host if websocket.client is not None else None

    def make(handler: StreamHandler) -> WebSocketSession:
        return WebSocketSession(
            websocket,
            webrtc_id,
            spec,
            handler,
            owner=owner_prefix + token,
            on_closed=server._release,
        )

    session, refusal = await server.open_session(
        webrtc_id, owner=owner_prefix + token, address=address, make=make
    )
    if session is None:
        assert refusal is not None
        code = refusal["meta"]["error"]
        await _refuse(websocket, code if code in CLOSE_CODES else "error", json.dumps(refusal))
        return
    assert isinstance(session, WebSocketSession)
    try:
        await websocket.send_text(
            json.dumps({"event": "started", "websocket_id": webrtc_id, "token": token})
        )
        session.start()
    except Exception:
        session.client_left()
    reader = asyncio.ensure_future(_read(websocket, session))
    try:
        await session.closed.wait()
    finally:
        reader.cancel()
        with contextlib.suppress(BaseException):
            await reader
        if not session.closed.is_set():  # the endpoint itself was cancelled
            await session.close("client_closed")


async def _start_message(websocket: WebSocket) -> dict[str, Any] | None:
    """Wait for ``start``, answering pings; raise :class:`ProtocolViolation` for anything
    else."""
    pings = 0
    while True:
        data = parse_message(await _receive_text(websocket))
        if data["event"] == "start":
            return data
        if data["event"] == "ping":
            pings += 1
            if pings > MAX_PINGS_BEFORE_START:
                raise ProtocolViolation(
                    "rate_limited", f"more than {MAX_PINGS_BEFORE_START} pings before start"
                )
            await websocket.send_text('{"event": "pong"}')
            continue
        if data["event"] == "stop":
            with contextlib.suppress(Exception):
                await websocket.close(1000, "client_closed")
            return None
        raise ProtocolViolation("media_before_start", "the first event must be start")


async def _read(websocket: WebSocket, session: WebSocketSession) -> None:
    """Hand the client's messages to ``session`` until it ends or breaks the protocol."""
    try:
        while not session._closing:
            reply = session.handle(parse_message(await _receive_text(websocket)))
            if reply is not None:
                session._queue_message(reply)
    except ProtocolViolation as violation:
        log.info("%s: %s (%s)", session.tag, violation.reason, violation.message)
        session._queue_message(_error_event(violation.reason, violation.message))
        await session.close(violation.reason, violation.message, notify=False)
    except WebSocketDisconnect:
        session.client_left()
    except Exception:
        if not session._closing:
            log.exception("%s: reading the websocket failed", session.tag)
            session.client_left()


__all__ = [
    "CLOSE_CODES",
    "MAX_MESSAGE_BYTES",
    "ProtocolViolation",
    "WebSocketSession",
    "mulaw_decode",
    "mulaw_encode",
    "serve",
    "websocket_route",
]
