"""One peer: its RTCPeerConnection, data channel, runner, tracks and lifecycle.

Every exit (client stop message or close, ICE failure, connect timeout, time limit, user
error, handler finished, the handler's ``CloseStream``, ``StreamServer.close``, server
shutdown) goes through :meth:`Connection.close`, which is
idempotent: it tells the workers to stop (and gives running user calls a moment, so what
they produced is sent first), tells the browser why (``end_stream``), stops the runner
(the handler's ``shutdown`` runs exactly once), closes the peer connection, drops its
references to everything it held (so the peer connection's codecs, transports
and their native threads are freed at once, not by the garbage collector) and frees the
registry slot, last. The closing runs in a task of its own: an exception in one step is
logged and the next step still runs, and cancelling a caller of ``close`` does not
cancel the closing.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from aiortc import (
    RTCConfiguration,
    RTCDataChannel,
    RTCIceServer,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from webrtc_ref import jitter
from webrtc_ref.drops import MAX_BACKLOG_BYTES, DropCounter, MessageBacklog
from webrtc_ref.errors import report_handler_error
from webrtc_ref.handlers import StreamHandler, VideoStreamHandler, encode_message
from webrtc_ref.jitter import AdaptiveJitterBuffer, JitterBufferChoice
from webrtc_ref.outputs import AdditionalOutputs, OutputQueue
from webrtc_ref.runner import AudioVideoRunner, GeneratorRunner, HandlerRunner, Runner, VideoRunner
from webrtc_ref.signaling import (
    MAX_TRICKLED_CANDIDATES,
    Modality,
    Mode,
    Offer,
    log_tag,
    track_kinds,
)
from webrtc_ref.threads import run_in_thread
from webrtc_ref.tracks import OutboundAudioTrack, OutboundVideoTrack

log = logging.getLogger("webrtc_ref.connection")

#: Close reasons, as sent in ``end_stream`` messages.
CLOSE_REASONS = (
    "client_closed",
    "ice_failed",
    "connect_timeout",
    "time_limit",
    "error",
    "handler_finished",
    "server_shutdown",
    "superseded",
    "invalid_offer",
    "handler_closed",
    "server_closed",
    "server_draining",
)


#: Seconds between the last frame of a finished receive stream and the end of the
#: connection, so the browser plays what is still in its jitter buffer.
FINISH_GRACE = 0.5
#: Seconds an error may wait for the data channel to open so the browser hears of it.
ERROR_DELIVERY_WAIT = 5.0
#: Messages kept for a data channel that is not open yet; older ones are dropped beyond.
MAX_PENDING_MESSAGES = 256
#: Seconds ``end_stream`` may take to leave through the data channel.
GOODBYE_WAIT = 0.5
#: Seconds close waits for the runner to stop (``shutdown()`` included) before going on.
SHUTDOWN_WAIT = 5.0
#: After a ``CloseStream``: seconds beyond the queued audio's own length that the
#: connection waits for it to be sent before closing anyway.
CLOSE_STREAM_SLACK = 2.0


def _never() -> bool:
    return False


#: Default of :attr:`StreamSpec.output_buffer_s`: 20 s (at most 3.8 MB of 48 kHz stereo s16
#: per connection) holds a typical spoken reply whole, so that what a generator yields
#: after its audio (a transcript) is not held back until the audio has played.
DEFAULT_OUTPUT_BUFFER_S = 20.0


#: How a connection's client spells the two signals of the data channel: "inputs wanted"
#: and "outputs waiting". Gradio pages (gradio_webrtc's client, and webrtc_ref's, which
#: reads both) get bare strings; clients of the mounted ``/webrtc/offer`` route get
#: fastrtc's JSON messages, since its documented client parses every message as JSON.
MessageDialect = Literal["gradio_webrtc", "fastrtc"]
DIALECT_MESSAGES: dict[str, tuple[str, str]] = {
    "gradio_webrtc": ("tick", "change"),
    "fastrtc": ('{"type": "send_input", "data": ""}', '{"type": "fetch_output", "data": ""}'),
}


@dataclass(frozen=True)
class StreamSpec:
    """What every connection of one stream event shares."""

    mode: Mode
    modality: Modality
    handler: StreamHandler | Callable[..., Any]
    has_inputs: bool = False
    time_limit: float | None = None
    connect_timeout: float = 15.0
    ice_servers: list[dict[str, Any]] = field(default_factory=list)
    video_fps: float = 30.0
    #: Seconds of handler audio that may wait to be played: a producer faster than real
    #: time (a text-to-speech generator) runs this far ahead of playback, then waits.
    output_buffer_s: float = DEFAULT_OUTPUT_BUFFER_S
    #: Inbound audio: webrtc_ref's adaptive jitter buffer or aiortc's (:mod:`webrtc_ref.jitter`).
    jitter_buffer: JitterBufferChoice = "aiortc"
    #: Whether the app shows exception texts to users (Gradio's ``launch(show_error=...)``);
    #: read when an error happens, since the app is launched after the stream is set up.
    show_error: Callable[[], bool] = _never


def _ice_configuration(servers: list[dict[str, Any]]) -> RTCConfiguration:
    """aiortc configuration; no servers by default, so nothing leaves the machine."""
    return RTCConfiguration(
        iceServers=[
            RTCIceServer(
                urls=server["urls"],
                username=server.get("username"),
                credential=server.get("credential"),
            )
            for server in servers
        ]
    )


class Connection:
    """The server side of one browser connection (see the module docstring)."""

    def __init__(
        self,
        webrtc_id: str,
        spec: StreamSpec,
        on_closed: Callable[[Connection], None],
        *,
        handler: StreamHandler | None = None,
        owner: str | None = None,
        on_connected: Callable[[Connection], None] | None = None,
        dialect: MessageDialect = "gradio_webrtc",
    ) -> None:
        """Set up the connection (on the event loop; runs no user code).

        ``handler`` is this connection's copy of the stream's ``StreamHandler`` (audio send
        modes; the caller made it off the loop). ``owner`` is the Gradio session that
        offered it. ``on_connected`` is called once when the peer connects. ``dialect``
        says how "inputs wanted" and "outputs waiting" are spelled on the data channel
        (:data:`DIALECT_MESSAGES`).
        """
        if dialect not in DIALECT_MESSAGES:
            raise ValueError(f"dialect must be one of {tuple(DIALECT_MESSAGES)}; got {dialect!r}")
        self._wanted, self._waiting = DIALECT_MESSAGES[dialect]
        self.webrtc_id = webrtc_id
        self.tag = log_tag(webrtc_id)
        self.owner = owner
        self.spec = spec
        self._on_closed = on_closed
        self._on_connected = on_connected
        self._loop = asyncio.get_running_loop()
        #: The event loop this connection lives on (the server's).
        self.loop = self._loop
        self.pc = RTCPeerConnection(_ice_configuration(spec.ice_servers))
        self.outputs = OutputQueue(tag=self.tag)
        self.channel: RTCDataChannel | None = None
        self.message_drops = DropCounter(
            log,
            f"messages for a data channel that is not open (more than {MAX_PENDING_MESSAGES} "
            f"or {MAX_BACKLOG_BYTES} bytes)",
            self.tag,
        )
        self._pending_messages = MessageBacklog(self.message_drops, MAX_PENDING_MESSAGES)
        self._tasks: set[asyncio.Future[Any]] = set()
        self._timers: list[asyncio.TimerHandle] = []
        #: The browser's tracks by kind (audio-video has one of each).
        self._inbound: dict[str, MediaStreamTrack] = {}
        self._closing = False
        self._close_task: asyncio.Task[None] | None = None
        self._channel_open = asyncio.Event()
        self._peer_gone = asyncio.Event()
        self.closed = asyncio.Event()
        self.close_reason: str | None = None
        self.connected_at: float | None = None
        self.created_at = time.monotonic()
        self.out_track: OutboundAudioTrack | OutboundVideoTrack | None = None
        #: audio-video: the outbound video (``out_track`` is then the audio).
        self.video_out_track: OutboundVideoTrack | None = None
        #: The inbound audio's adaptive jitter buffer (``jitter_buffer="adaptive"``), once
        #: the track arrived; closed but readable (``stats()``) after the connection ends.
        self.jitter_buffer: AdaptiveJitterBuffer | None = None
        #: The message of the handler's ``CloseStream``, once it asked to end the stream.
        self._ending: str | None = None
        self._trickled = 0
        self.runner: Runner = self._make_runner(handler)

    # -- setup -----------------------------------------------------------------------
    def _make_runner(self, handler: StreamHandler | None) -> Runner:
        spec = self.spec
        sends_back = spec.mode in ("send-receive", "receive")
        if spec.modality == "audio-video":
            self.out_track = OutboundAudioTrack(self._loop, max_buffer_s=spec.output_buffer_s)
            self.video_out_track = OutboundVideoTrack(self._loop, paced=False)
            return AudioVideoRunner(
                self._attached(handler), self, self.out_track, self.video_out_track
            )
        if spec.modality == "audio":
            self.out_track = (
                OutboundAudioTrack(self._loop, max_buffer_s=spec.output_buffer_s)
                if sends_back
                else None
            )
        else:
            self.out_track = (
                OutboundVideoTrack(self._loop, paced=spec.mode == "receive", fps=spec.video_fps)
                if sends_back
                else None
            )
        if spec.mode == "receive":
            assert self.out_track is not None and not isinstance(spec.handler, StreamHandler)
            return GeneratorRunner(spec.handler, self, self.out_track, has_inputs=spec.has_inputs)
        if spec.modality == "audio":
            assert self.out_track is None or isinstance(self.out_track, OutboundAudioTrack)
            return HandlerRunner(self._attached(handler), self, self.out_track)
        assert self.out_track is None or isinstance(self.out_track, OutboundVideoTrack)
        assert not isinstance(spec.handler, StreamHandler)
        options = spec.handler if isinstance(spec.handler, VideoStreamHandler) else None
        return VideoRunner(
            options.callable if options is not None else spec.handler,
            self,
            self.out_track,
            has_inputs=spec.has_inputs,
            skip_frames=options.skip_frames if options is not None else True,
            fps=spec.video_fps,
        )

    def _attached(self, handler: StreamHandler | None) -> StreamHandler:
        """The connection's handler copy, attached to this connection (audio and
        audio-video send modes)."""
        if not isinstance(handler, StreamHandler):
            raise TypeError(
                f"a {self.spec.modality} {self.spec.mode} stream needs the connection's "
                f"StreamHandler copy; got {type(handler).__name__}"
            )
        handler._attach(self)
        return handler

    async def accept(self, offer: Offer) -> str:
        """Apply the offer, start the runtime and return the answer SDP (ICE gathered)."""
        pc = self.pc
        pc.on("datachannel", self._on_datachannel)
        pc.on("connectionstatechange", self._on_connection_state)
        pc.on("track", self._on_track)
        if self.out_track is not None:
            self.out_track.on("ended", self._on_out_track_ended)
        await pc.setRemoteDescription(RTCSessionDescription(sdp=offer.sdp, type="offer"))
        if self.spec.mode == "receive":
            assert self.out_track is not None
            pc.addTrack(self.out_track)
        await pc.setLocalDescription(await pc.createAnswer())
        self._watch_transports()
        self._timers.append(
            self._loop.call_later(self.spec.connect_timeout, self._connect_timed_out)
        )
        if self.spec.has_inputs:
            self.request_inputs()  # sent as soon as the data channel opens
        self.runner.start()
        return pc.localDescription.sdp

    def _watch_transports(self) -> None:
        """aiortc does not turn a DTLS close (the browser closed its peer connection)
        into a connection state change; watch the transports directly."""
        transports = {id(t.sender.transport): t.sender.transport for t in self.pc.getTransceivers()}
        if self.pc.sctp is not None:
            transports[id(self.pc.sctp.transport)] = self.pc.sctp.transport
        for transport in transports.values():
            transport.on("statechange", self._on_transport_state)

    def _on_transport_state(self) -> None:
        transports = [t.sender.transport for t in self.pc.getTransceivers()]
        if self.pc.sctp is not None:
            transports.append(self.pc.sctp.transport)
        states = {t.state for t in transports}
        if not self._closing and states & {"closed", "failed"}:
            reason = "ice_failed" if "failed" in states else "client_closed"
            self._spawn(self.close(reason))

    def _on_track(self, track: MediaStreamTrack) -> None:
        if track.kind not in track_kinds(self.spec.modality) or track.kind in self._inbound:
            log.info("%s: ignoring extra %s track", self.tag, track.kind)
            return
        self._inbound[track.kind] = track
        if track.kind == "audio" and self.spec.jitter_buffer == "adaptive":
            self._install_jitter_buffer(track)
        if track.kind == "video":
            receiver = self._receiver_of(track)
            if receiver is not None:
                jitter.install_video(receiver)
        if self.spec.mode == "send-receive":
            out = self._out_track_of(track.kind)
            if out is not None:
                self.pc.addTrack(out)
        self._spawn(self._read(track))

    def _out_track_of(self, kind: str) -> OutboundAudioTrack | OutboundVideoTrack | None:
        """The outbound track of ``kind`` (audio-video has two)."""
        if kind == "video" and self.video_out_track is not None:
            return self.video_out_track
        out = self.out_track
        return out if out is not None and out.kind == kind else None

    def _receiver_of(self, track: MediaStreamTrack) -> Any:
        return next(
            (t.receiver for t in self.pc.getTransceivers() if t.receiver.track is track), None
        )

    def _install_jitter_buffer(self, track: MediaStreamTrack) -> None:
        """Give the inbound audio track's receiver webrtc_ref's jitter buffer (the
        receiver has not started yet: aiortc starts it once the transport connects)."""
        receiver = self._receiver_of(track)
        if receiver is None:
            log.warning("%s: no receiver for the inbound audio track", self.tag)
            return
        try:
            self.jitter_buffer = jitter.install(receiver, loop=self._loop)
        except (RuntimeError, ValueError):
            # StreamServer checked the aiortc version already; keep aiortc's buffer
            log.exception("%s: keeping aiortc's jitter buffer", self.tag)

    async def _read(self, track: MediaStreamTrack) -> None:
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            self.runner.deliver(frame)

    def _on_datachannel(self, channel: RTCDataChannel) -> None:
        if self.channel is not None:
            return
        self.channel = channel
        channel.on("message", self._on_message)
        channel.on("open", self._flush_messages)
        channel.on("close", self._on_channel_closed)
        self._flush_messages()

    def _on_channel_closed(self) -> None:
        if not self._closing:
            self._spawn(self.close("client_closed"))

    def _on_message(self, message: object) -> None:
        if not isinstance(message, str) or not message.startswith("{"):
            return
        try:
            data = json.loads(message)
        except ValueError:
            return
        if isinstance(data, dict) and data.get("type") == "stop":
            self._spawn(self.close("client_closed"))

    async def _on_connection_state(self) -> None:
        state = self.pc.connectionState
        log.debug("%s: connection %s", self.tag, state)
        if state == "connected" and self.connected_at is None and not self._closing:
            self.connected_at = time.monotonic()
            if self._on_connected is not None:
                self._on_connected(self)
            if self._ending is not None:
                self._play_out_and_close()
            if self.spec.time_limit is not None:
                self._timers.append(
                    self._loop.call_later(
                        self.spec.time_limit,
                        lambda: self._spawn(self.close("time_limit")),
                    )
                )
        elif state == "failed":
            self._peer_gone.set()
            await self.close("ice_failed")
        elif state == "closed":
            self._peer_gone.set()
            await self.close("client_closed")

    def _connect_timed_out(self) -> None:
        if self.connected_at is None:
            self._spawn(self.close("connect_timeout"))

    def _on_out_track_ended(self) -> None:
        if self._closing:
            return
        if self._ending is not None:
            self._spawn(self._finish("handler_closed", self._ending))
        elif self.spec.mode == "receive":
            self._spawn(self._finish("handler_finished", None))

    async def _finish(self, reason: str, message: str | None) -> None:
        """The handler is done and its last frame sent: let the browser's jitter
        buffer play it out before saying goodbye."""
        await asyncio.sleep(FINISH_GRACE)
        await self.close(reason, message)

    def _handler_closed(self, message: str) -> None:
        """``CloseStream`` (event loop): once connected, end the outbound track after
        what is queued, then close (at once when no media goes out)."""
        if self._closing or self._ending is not None:
            return
        self._ending = message
        if self.connected_at is not None:
            self._play_out_and_close()
        # else: _on_connection_state does it on connecting (connect_timeout still applies)

    def _play_out_and_close(self) -> None:
        message = self._ending or ""
        track = self.out_track
        if track is None or track.readyState != "live":
            self._spawn(self.close("handler_closed", message))
            return
        queued_s = self.queued_audio_frames * 0.02
        track.finish()
        if self.video_out_track is not None:
            self.video_out_track.finish()
        self._timers.append(
            self._loop.call_later(
                queued_s + FINISH_GRACE + CLOSE_STREAM_SLACK,
                lambda: self._spawn(self.close("handler_closed", message)),
            )
        )

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- messages to the browser (thread-safe) ---------------------------------------
    def _post(self, text: str) -> None:
        try:
            self._loop.call_soon_threadsafe(self._send_now, text)
        except RuntimeError:  # loop closed at interpreter exit
            pass

    def _send_now(self, text: str) -> None:
        channel = self.channel
        if channel is not None and channel.readyState == "open":
            channel.send(text)
        elif not self._closing:
            self._pending_messages.append(text)

    def _flush_messages(self) -> None:
        channel = self.channel
        if channel is None or channel.readyState != "open":
            return
        self._channel_open.set()
        for text in self._pending_messages.take_all():
            channel.send(text)

    @property
    def queued_audio_frames(self) -> int:
        """Output audio frames waiting to be sent."""
        return self.out_track.queued if isinstance(self.out_track, OutboundAudioTrack) else 0

    # -- RuntimeHooks / HandlerContext -----------------------------------------------
    def request_inputs(self) -> None:
        self._post(self._wanted)

    def send_message(self, message: str | dict[str, Any]) -> None:
        self._post(encode_message(message))

    def close_stream(self, message: str) -> None:
        try:
            self._loop.call_soon_threadsafe(self._handler_closed, message)
        except RuntimeError:  # loop closed at interpreter exit
            pass

    def clear_output(self) -> None:
        if isinstance(self.out_track, OutboundAudioTrack):
            self.out_track.clear()
        if isinstance(self.runner, HandlerRunner):
            self.runner.discard_output()

    def additional_outputs(self, outputs: AdditionalOutputs) -> None:
        self.outputs.put(outputs)
        self._post(self._waiting)

    def report_error(self, where: str, exc: BaseException) -> str:
        """Log ``exc`` with its traceback and an error id; tell the browser (what it may
        see: :mod:`webrtc_ref.errors`). Returns the browser's text. Any thread."""
        message = report_handler_error(log, self.tag, where, exc, show_error=self.spec.show_error())
        self.send_message({"type": "error", "message": message, "data": message})
        return message

    def user_error(self, where: str, exc: BaseException) -> None:
        message = self.report_error(where, exc)
        try:
            self._loop.call_soon_threadsafe(lambda: self._spawn(self.close("error", message)))
        except RuntimeError:
            pass

    # -- inputs ------------------------------------------------------------------------
    def set_inputs(self, args: list[Any]) -> None:
        self.runner.set_inputs(args)

    async def add_ice_candidate(self, candidate: Any) -> bool:
        """Add a browser candidate gathered after its offer left (trickle ICE; event loop).

        Returns False (and adds nothing) once :data:`MAX_TRICKLED_CANDIDATES` came, when
        closing, or when aiortc refuses it (no such media section)."""
        if self._closing or self._trickled >= MAX_TRICKLED_CANDIDATES:
            return False
        self._trickled += 1
        try:
            await self.pc.addIceCandidate(candidate)
        except Exception as exc:  # an unknown sdpMid / index: the client's mistake
            log.info("%s: trickled candidate refused: %r", self.tag, exc)
            return False
        return True

    # -- lifecycle ---------------------------------------------------------------------
    async def close(self, reason: str, message: str | None = None, *, notify: bool = True) -> None:
        """End this connection for ``reason`` (one of :data:`CLOSE_REASONS`); idempotent.

        ``notify=False`` skips telling the browser (an offer that failed, or one a newer
        offer superseded, has no data channel to tell it on). Returns when the connection
        is closed; cancelling the caller does not stop the closing.
        """
        if self._close_task is None:
            self._closing = True
            self.close_reason = reason
            self._close_task = asyncio.ensure_future(self._close(reason, message, notify))
        await asyncio.shield(self._close_task)

    async def _close(self, reason: str, message: str | None, notify: bool) -> None:
        log.info("%s: closing (%s)", self.tag, reason)
        for timer in self._timers:
            timer.cancel()
        # 1. No new user calls; the ones running get a moment to finish, so what they
        #    produced (messages, "change" for outputs) is queued before end_stream.
        try:
            await run_in_thread(self.runner.quiesce, f"quiesce-{self.tag}")
        except Exception:
            log.exception("%s: stopping the workers failed", self.tag)
        # 2. Tell the browser why.
        try:
            if notify and reason == "error":
                await self._await_channel(ERROR_DELIVERY_WAIT)
            if notify and reason != "client_closed":
                await self._say_goodbye(reason, message)
        except Exception:
            log.exception("%s: telling the browser why the connection ends failed", self.tag)
        self._step("stopping the outbound track", self._stop_out_track)
        if self.jitter_buffer is not None:
            self._step("closing the jitter buffer", self.jitter_buffer.close)
        current = asyncio.current_task()
        for task in list(self._tasks):
            if task is not current:
                task.cancel()
        # 3. The handler's shutdown() and the rest of the workers, bounded.
        stopping = asyncio.ensure_future(run_in_thread(self.runner.stop, f"stop-{self.tag}"))
        try:
            await asyncio.wait_for(asyncio.shield(stopping), SHUTDOWN_WAIT)
        except asyncio.TimeoutError:
            log.warning(
                "%s: the handler's shutdown() has not returned %.0f s after the connection "
                "ended; the connection is released anyway",
                self.tag,
                SHUTDOWN_WAIT,
            )
        except Exception:
            log.exception("%s: stopping the handler failed", self.tag)
        # 4. The peer connection, then everything this object held; the slot last.
        try:
            await self.pc.close()
        except Exception:
            log.exception("%s: closing the peer connection failed", self.tag)
        self._step("releasing the connection's objects", self._release_objects)
        try:
            self._on_closed(self)
        finally:
            self.closed.set()

    def _step(self, what: str, fn: Callable[[], Any]) -> None:
        try:
            fn()
        except Exception:
            log.exception("%s: %s failed", self.tag, what)

    def _stop_out_track(self) -> None:
        if self.out_track is not None:
            self.out_track.stop()
        if self.video_out_track is not None:
            self.video_out_track.stop()

    def _release_objects(self) -> None:
        """Drop the references that tie the peer connection, its tracks and transports
        to this connection (event listeners hold bound methods of it), so all of it is
        freed when the last reference goes, without waiting for the garbage collector."""
        pc = self.pc
        for transceiver in pc.getTransceivers():
            transceiver.sender.transport.remove_all_listeners()
        if pc.sctp is not None:
            pc.sctp.transport.remove_all_listeners()
        pc.remove_all_listeners()
        if self.channel is not None:
            self.channel.remove_all_listeners()
        if self.out_track is not None:
            self.out_track.remove_all_listeners()
        if self.video_out_track is not None:
            self.video_out_track.remove_all_listeners()
        self._tasks.clear()
        self._timers.clear()
        self._inbound = {}
        self.runner.detach()

    async def _await_channel(self, timeout: float) -> None:
        """An error before the data channel opened (say, a generator that raises at
        once) must still reach the browser: wait for the channel while the peer is
        still connecting, then send what is pending."""
        if self.pc.connectionState not in ("new", "connecting", "connected"):
            return
        waits = [
            asyncio.ensure_future(self._channel_open.wait()),
            asyncio.ensure_future(self._peer_gone.wait()),
        ]
        try:
            await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for wait in waits:
                wait.cancel()
        self._flush_messages()

    async def _say_goodbye(self, reason: str, message: str | None) -> None:
        """Send ``end_stream`` and give the data channel up to ``GOODBYE_WAIT`` s to hand
        it to the transport (aiortc's ``bufferedamountlow``)."""
        channel = self.channel
        if channel is None or channel.readyState != "open":
            return
        payload: dict[str, Any] = {"type": "end_stream", "reason": reason}
        if message:
            payload["message"] = message
            payload["data"] = message  # the field fastrtc's clients read
        sent = self._loop.create_future()

        def drained() -> None:
            if not sent.done():
                sent.set_result(None)

        channel.bufferedAmountLowThreshold = 0
        channel.on("bufferedamountlow", drained)
        try:
            channel.send(json.dumps(payload))
            if channel.bufferedAmount:
                await asyncio.wait_for(sent, GOODBYE_WAIT)
        except asyncio.TimeoutError:
            pass
        finally:
            channel.remove_listener("bufferedamountlow", drained)
