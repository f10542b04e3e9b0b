"""The ``null`` adapter: a baseline that implements nothing (bowtie's null implementation).

Its ``WebRTC`` is a plain ``gr.HTML`` that accepts every argument and registers nothing,
so apps build and launch but there is no ``offer`` server function, no validation and no
media; its module exports no ``Stream`` (``Adapter.make_stream`` fails, as the fastrtc
profile's FSTR tests must). It claims every capability, so every requirement is tried, and
the meta tests check that it fails them: a suite that passes ``null`` proves nothing.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

from conformance.adapters.base import CAPABILITIES, Adapter, Api, FastrtcApi, no_pyi_stubs


class NullStreamHandler(ABC):
    """receive/emit/copy, and nothing behind them."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    @abstractmethod
    def receive(self, frame: Any) -> None: ...

    @abstractmethod
    def emit(self) -> Any: ...

    @abstractmethod
    def copy(self) -> Any: ...


class NullAudioVideoStreamHandler(NullStreamHandler):
    """Abstract as the real one, and nothing behind it."""

    @abstractmethod
    def video_receive(self, frame: Any) -> None: ...

    @abstractmethod
    def video_emit(self) -> Any: ...


class NullAsyncAudioVideoStreamHandler(NullAudioVideoStreamHandler):
    pass


class NullAdditionalOutputs:
    def __init__(self, *args: Any) -> None:
        self.args = args


class NullReplyOnPause:
    """Not a StreamHandler, and never calls fn."""

    def __init__(self, fn: Any, *args: Any, **kwargs: Any) -> None:
        self.fn = fn


# -- fastrtc's handler API (the fastrtc profile): nothing behind it, and not exported under
# fastrtc's names (FAPI-001)


class NullAsyncStreamHandler:
    """Not abstract, and never driven."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass


class NullVideoStreamHandler:
    def __init__(self, callable: Any, fps: int = 30, skip_frames: bool = False) -> None:
        self.callable, self.fps, self.skip_frames = callable, fps, skip_frames


class NullCloseStream:
    def __init__(self, msg: str = "Stream closed") -> None:
        self.msg = msg


class NullWebRTCError(Exception):
    pass


def _nothing(*args: Any, **kwargs: Any) -> None:
    return None


async def _nothing_async(*args: Any, **kwargs: Any) -> None:
    return None


def _no_context() -> Any:
    raise RuntimeError("no context")


def _no_arrays(chunks: Any) -> Any:
    return iter(())


async def _no_arrays_async(chunks: Any) -> Any:
    for _ in ():
        yield None


NULL_FASTRTC_API = FastrtcApi(
    AsyncStreamHandler=NullAsyncStreamHandler,
    VideoStreamHandler=NullVideoStreamHandler,
    CloseStream=NullCloseStream,
    Warning=_nothing,
    WebRTCError=NullWebRTCError,
    get_current_context=_no_context,
    wait_for_item=_nothing_async,
    audio_to_bytes=_nothing,
    audio_to_file=_nothing,
    audio_to_float32=_nothing,
    audio_to_int16=_nothing,
    aggregate_bytes_to_16bit=_no_arrays,
    async_aggregate_bytes_to_16bit=_no_arrays_async,
)


def _null_webrtc() -> type:
    import gradio as gr

    with no_pyi_stubs():

        class NullWebRTC(gr.HTML):  # type: ignore[misc]
            def __init__(self, value: Any = None, **kwargs: Any) -> None:
                super().__init__(value=value, label=kwargs.get("label"))

            def stream(self, *args: Any, **kwargs: Any) -> None:  # type: ignore[override]
                return None

            def on_additional_outputs(self, *args: Any, **kwargs: Any) -> None:  # type: ignore[override]
                return None

    return NullWebRTC


class NullAdapter(Adapter):
    """Implements nothing; fails everything it can be asked."""

    name = "null"
    module = "conformance.adapters.null"
    capabilities = CAPABILITIES
    periodic_ticks = True
    tick_on_open = True

    def version(self) -> str:
        return "0"

    def fastrtc_api(self) -> FastrtcApi:
        return NULL_FASTRTC_API

    def api(self) -> Api:
        return Api(
            WebRTC=_null_webrtc(),
            StreamHandler=NullStreamHandler,
            AdditionalOutputs=NullAdditionalOutputs,
            ReplyOnPause=NullReplyOnPause,
            reply_on_pause=NullReplyOnPause,
            AudioVideoStreamHandler=NullAudioVideoStreamHandler,
            AsyncAudioVideoStreamHandler=NullAsyncAudioVideoStreamHandler,
        )
