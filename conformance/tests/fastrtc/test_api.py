"""fastrtc profile: the names fastrtc exports, and AsyncStreamHandler as an abstract class."""

from __future__ import annotations

import asyncio
import importlib
from typing import Any

import pytest

from conformance.adapters import FASTRTC_NAMES, Adapter, FastrtcApi


@pytest.mark.requirement("FAPI-001")
def test_package_exports_fastrtc_names(adapter: Adapter, fapi: FastrtcApi) -> None:
    """The package exports AsyncStreamHandler, VideoStreamHandler, CloseStream, Warning,
    WebRTCError, get_current_context, wait_for_item and the audio utilities."""
    module = importlib.import_module(adapter.module)
    missing = [name for name in FASTRTC_NAMES if not hasattr(module, name)]
    assert not missing, f"{adapter.module} does not export {missing}"
    assert isinstance(module.AsyncStreamHandler, type)
    assert isinstance(module.CloseStream, type)
    assert isinstance(module.WebRTCError, type) and issubclass(module.WebRTCError, Exception)
    not_callable = [name for name in FASTRTC_NAMES if not callable(getattr(module, name))]
    assert not not_callable, f"not callable: {not_callable}"


@pytest.mark.requirement("FAPI-002")
def test_async_stream_handler_is_abstract(fapi: FastrtcApi) -> None:
    """AsyncStreamHandler is an abstract base class: a subclass lacking receive, emit or
    copy cannot be instantiated; the docs' AsyncEchoHandler can, with the base class's
    attributes."""
    base = fapi.AsyncStreamHandler

    async def receive(self: Any, frame: Any) -> None:
        pass

    async def emit(self: Any) -> Any:
        return None

    def copy(self: Any) -> Any:
        return type(self)()

    methods = {"receive": receive, "emit": emit, "copy": copy}
    for lacking in methods:
        partial = type(
            f"Without_{lacking}", (base,), {k: v for k, v in methods.items() if k != lacking}
        )
        with pytest.raises(TypeError):
            partial()

    class AsyncEchoHandler(base):  # type: ignore[misc,valid-type]
        """The docs' AsyncEchoHandler, verbatim."""

        def __init__(self) -> None:
            super().__init__(input_sample_rate=24000)
            self.queue: asyncio.Queue[Any] = asyncio.Queue()

        async def receive(self, frame: Any) -> None:
            await self.queue.put(frame)

        async def emit(self) -> Any:
            return await fapi.wait_for_item(self.queue)

        def copy(self) -> Any:
            return AsyncEchoHandler()

        async def shutdown(self) -> None:
            pass

        async def start_up(self) -> None:
            pass

    handler = AsyncEchoHandler()
    assert handler.expected_layout == "mono"
    assert handler.output_sample_rate == 24000
    assert handler.input_sample_rate == 24000
    assert isinstance(handler.copy(), AsyncEchoHandler)
