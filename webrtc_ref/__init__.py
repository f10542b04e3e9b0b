"""webrtc_ref: a reference implementation of the Gradio ``WebRTC`` streaming component.

Public API::

    from webrtc_ref import WebRTC, StreamHandler, ReplyOnPause, AdditionalOutputs
    from webrtc_ref import AlgoOptions, SileroVadOptions
    # fastrtc's handler API
    from webrtc_ref import AsyncStreamHandler, VideoStreamHandler, CloseStream
    from webrtc_ref import AudioVideoStreamHandler, AsyncAudioVideoStreamHandler
    from webrtc_ref import Warning, WebRTCError, get_current_context
    from webrtc_ref import audio_to_float32, audio_to_int16, audio_to_bytes, audio_to_file
    from webrtc_ref import aggregate_bytes_to_16bit, async_aggregate_bytes_to_16bit
    from webrtc_ref import wait_for_item
    from webrtc_ref import turn_rest_credentials, turn_rest_configuration
    # fastrtc's Stream: a ready UI and routes on a FastAPI app
    from webrtc_ref import Stream

Names are imported lazily, so ``import webrtc_ref`` does not import Gradio or aiortc.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from webrtc_ref._version import __version__

if TYPE_CHECKING:
    from webrtc_ref.audio_utils import (
        aggregate_bytes_to_16bit,
        async_aggregate_bytes_to_16bit,
        audio_to_bytes,
        audio_to_file,
        audio_to_float32,
        audio_to_int16,
        wait_for_item,
    )
    from webrtc_ref.component import WebRTC
    from webrtc_ref.context import Context, get_current_context
    from webrtc_ref.errors import Warning, WebRTCError
    from webrtc_ref.handlers import (
        AsyncAudioVideoStreamHandler,
        AsyncStreamHandler,
        AudioVideoStreamHandler,
        StreamHandler,
        VideoStreamHandler,
    )
    from webrtc_ref.ice import turn_rest_configuration, turn_rest_credentials
    from webrtc_ref.outputs import AdditionalOutputs, CloseStream
    from webrtc_ref.pause_detection import PauseDetectionModel
    from webrtc_ref.reply_on_pause import AlgoOptions, ReplyOnPause, SileroVadOptions
    from webrtc_ref.stream import Stream

_EXPORTS: dict[str, str] = {
    "WebRTC": "webrtc_ref.component",
    "Stream": "webrtc_ref.stream",
    "StreamHandler": "webrtc_ref.handlers",
    "AsyncStreamHandler": "webrtc_ref.handlers",
    "VideoStreamHandler": "webrtc_ref.handlers",
    "AudioVideoStreamHandler": "webrtc_ref.handlers",
    "AsyncAudioVideoStreamHandler": "webrtc_ref.handlers",
    "AdditionalOutputs": "webrtc_ref.outputs",
    "CloseStream": "webrtc_ref.outputs",
    "Warning": "webrtc_ref.errors",
    "WebRTCError": "webrtc_ref.errors",
    "Context": "webrtc_ref.context",
    "get_current_context": "webrtc_ref.context",
    "ReplyOnPause": "webrtc_ref.reply_on_pause",
    "AlgoOptions": "webrtc_ref.reply_on_pause",
    "SileroVadOptions": "webrtc_ref.reply_on_pause",
    "PauseDetectionModel": "webrtc_ref.pause_detection",
    "aggregate_bytes_to_16bit": "webrtc_ref.audio_utils",
    "async_aggregate_bytes_to_16bit": "webrtc_ref.audio_utils",
    "audio_to_bytes": "webrtc_ref.audio_utils",
    "audio_to_file": "webrtc_ref.audio_utils",
    "audio_to_float32": "webrtc_ref.audio_utils",
    "audio_to_int16": "webrtc_ref.audio_utils",
    "wait_for_item": "webrtc_ref.audio_utils",
    "turn_rest_credentials": "webrtc_ref.ice",
    "turn_rest_configuration": "webrtc_ref.ice",
}

__all__ = [
    "AdditionalOutputs",
    "AlgoOptions",
    "AsyncAudioVideoStreamHandler",
    "AsyncStreamHandler",
    "AudioVideoStreamHandler",
    "CloseStream",
    "Context",
    "PauseDetectionModel",
    "ReplyOnPause",
    "SileroVadOptions",
    "Stream",
    "StreamHandler",
    "VideoStreamHandler",
    "Warning",
    "WebRTC",
    "WebRTCError",
    "__version__",
    "aggregate_bytes_to_16bit",
    "async_aggregate_bytes_to_16bit",
    "audio_to_bytes",
    "audio_to_file",
    "audio_to_float32",
    "audio_to_int16",
    "get_current_context",
    "turn_rest_configuration",
    "turn_rest_credentials",
    "wait_for_item",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'webrtc_ref' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
