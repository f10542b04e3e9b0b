"""``StreamServer``: the server half of one ``WebRTC.stream`` event.

The Gradio component owns one StreamServer per ``.stream()`` call and forwards to it:

- ``await offer(body)``: the ``offer`` server function. ``body`` is the JSON the browser
  posted as ``data``: ``{"sdp": str, "type": "offer", "webrtc_id": str}``. Returns
  ``{"sdp": ..., "type": "answer"}`` or
  ``{"status": "failed", "meta": {"error": CODE, "message": str, ...}}`` with CODE one of
  ``concurrency_limit_reached`` (+ ``limit``), ``connection_already_exists``,
  ``invalid_offer``, ``unsupported_media``, ``handler_error``. Never raises for bad
  client input.
- ``set_input(webrtc_id, args)``: the ``tick`` event's values of the stream's *other*
  inputs (the component's own value, the webrtc_id, is not in ``args``). Unknown ids are
  ignored.
- ``pop_additional_outputs(webrtc_id)``: the next queued ``AdditionalOutputs`` of that
  connection, or ``None``.
- ``await shutdown()``: close every connection.

State is per instance; nothing is shared between servers.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from webrtc_ref.connection import Connection, StreamSpec
from webrtc_ref.handlers import StreamHandler
from webrtc_ref.outputs import AdditionalOutputs, OutputQueue
from webrtc_ref.registry import Registry
from webrtc_ref.signaling import (
    HANDLER_ERROR,
    INVALID_OFFER,
    MODALITIES,
    MODES,
    Modality,
    Mode,
    SignalingError,
    answer_reply,
    check_media,
    failure,
    parse_offer,
)

log = logging.getLogger("webrtc_ref.server")

#: Seconds for which additional outputs of an ended connection can still be fetched.
OUTPUTS_GRACE = 60.0


def _check_positive(name: str, value: object, *, allow_none: bool) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        allowed = "a positive number or None" if allow_none else "a positive number"
        raise ValueError(f"{name} must be {allowed}; got {value!r}")


class StreamServer:
    """Connections of one stream event (see the module docstring).

    Parameters:
        mode, modality: as on the component.
        handler: a ``StreamHandler`` (audio send-receive/send), ``fn(frame, *inputs)``
            (video send-receive/send) or a generator function ``fn(*inputs)`` (receive).
        concurrency_limit: at most this many connections at once (pending ones count);
            ``None`` means unlimited.
        time_limit: seconds after connecting at which a connection is ended.
        connect_timeout: seconds an accepted offer may take to connect before its slot
            is freed.
        has_inputs: whether the stream event has inputs besides the component, so the
            runtime must fetch their values.
        ice_servers: RTCIceServer dicts for the server's own peer connections (default
            none: only host candidates, nothing contacts the network).
    """

    def __init__(
        self,
        *,
        mode: Mode,
        modality: Modality,
        handler: StreamHandler | Callable[..., Any],
        concurrency_limit: int | None = 1,
        time_limit: float | None = None,
        connect_timeout: float = 15.0,
        has_inputs: bool = False,
        ice_servers: list[dict[str, Any]] | None = None,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}; got {mode!r}")
        if modality not in MODALITIES:
            raise ValueError(f"modality must be one of {MODALITIES}; got {modality!r}")
        if modality == "audio" and mode != "receive":
            if not isinstance(handler, StreamHandler):
                raise ValueError(
                    f"In the {mode} mode for audio, the event handler must be an instance of "
                    f"StreamHandler; got {type(handler).__name__}"
                )
        elif not callable(handler):
            raise ValueError(f"handler must be callable; got {type(handler).__name__}")
        _check_positive("time_limit", time_limit, allow_none=True)
        _check_positive("connect_timeout", connect_timeout, allow_none=False)
        self.spec = StreamSpec(
            mode=mode,
            modality=modality,
            handler=handler,
            has_inputs=has_inputs,
            time_limit=time_limit,
            connect_timeout=connect_timeout,
            ice_servers=list(ice_servers or []),
        )
        self._registry: Registry[Connection] = Registry(concurrency_limit)
        self._leftovers: dict[str, tuple[OutputQueue, float]] = {}

    @property
    def concurrency_limit(self) -> int | None:
        return self._registry.limit

    async def offer(self, body: object) -> dict[str, Any]:
        """Answer an offer, or explain in a failure reply why not."""
        try:
            offer = parse_offer(body)
            check_media(offer, self.spec.mode, self.spec.modality)
            self._registry.reserve(offer.webrtc_id)
        except SignalingError as exc:
            log.info("offer refused: %s (%s)", exc.code, exc.message)
            return exc.reply()
        webrtc_id = offer.webrtc_id
        try:
            connection = Connection(webrtc_id, self.spec, self._release)
        except Exception as exc:
            self._registry.release(webrtc_id)
            log.exception("%s: the stream handler could not be set up", webrtc_id)
            return failure(HANDLER_ERROR, f"{type(exc).__name__}: {exc}")
        self._registry.attach(webrtc_id, connection)
        try:
            sdp = await connection.accept(offer)
        except Exception as exc:
            log.info("%s: offer could not be applied: %r", webrtc_id, exc)
            await connection.close("error")
            return failure(INVALID_OFFER, f"the offer could not be applied: {exc}")
        return answer_reply(sdp)

    def _release(self, connection: Connection) -> None:
        if self._registry.get(connection.webrtc_id) is connection:
            self._registry.release(connection.webrtc_id)
        if len(connection.outputs):
            # Outputs yielded just before the end (say, at the time limit) are still
            # fetched by the browser's state_change events after the connection is gone.
            self._leftovers[connection.webrtc_id] = (
                connection.outputs,
                time.monotonic() + OUTPUTS_GRACE,
            )

    def connection(self, webrtc_id: str) -> Connection | None:
        """The live connection with this id, if any."""
        return self._registry.get(webrtc_id)

    @property
    def connections(self) -> list[Connection]:
        return self._registry.values()

    def __len__(self) -> int:
        return len(self._registry)

    def set_input(self, webrtc_id: str, args: list[Any]) -> None:
        """Give the connection the latest values of the stream's other inputs."""
        connection = self._registry.get(webrtc_id)
        if connection is not None:
            connection.set_inputs(list(args))

    def pop_additional_outputs(self, webrtc_id: str) -> AdditionalOutputs | None:
        """The next queued outputs of ``webrtc_id``; still served for ``OUTPUTS_GRACE``
        seconds after the connection ended."""
        connection = self._registry.get(webrtc_id)
        if connection is not None:
            return connection.outputs.pop()
        now = time.monotonic()
        for key, (_, expiry) in list(self._leftovers.items()):
            if expiry < now:
                del self._leftovers[key]
        leftover = self._leftovers.get(webrtc_id)
        if leftover is None:
            return None
        item = leftover[0].pop()
        if not len(leftover[0]):
            del self._leftovers[webrtc_id]
        return item

    async def close(self, webrtc_id: str, reason: str = "server_shutdown") -> None:
        connection = self._registry.get(webrtc_id)
        if connection is not None:
            await connection.close(reason)

    async def shutdown(self) -> None:
        """Close every connection (reason ``server_shutdown``)."""
        await asyncio.gather(
            *(c.close("server_shutdown") for c in self._registry.values()),
            return_exceptions=True,
        )
