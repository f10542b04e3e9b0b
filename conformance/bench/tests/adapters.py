"""Adapters the benchmark's own tests serve (``--impl conformance.bench.tests.adapters:X``).

- :class:`LaggingVideo`: webrtc_ref whose audio-video handlers get every camera frame
  :data:`LAG_S` late, a delay line in front of ``video_receive``, as a handler that spends
  that long on each frame without falling behind would. Audio is untouched, so the audio-
  video echo's skew (audio - video) must come out :data:`LAG_S` lower than webrtc_ref's.
- :class:`NoAudioVideo`: webrtc_ref not claiming the audio-video modality.
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

from conformance.adapters.base import Api
from conformance.adapters.webrtc_ref import WebrtcRefAdapter

LAG_S = 0.1


class LaggingVideo(WebrtcRefAdapter):
    """webrtc_ref with every audio-video handler's ``video_receive`` :data:`LAG_S` late."""

    def api(self) -> Api:
        api = super().api()
        base = api.AsyncAudioVideoStreamHandler

        class Lagging(base):  # type: ignore[misc,valid-type]
            def __init_subclass__(cls, **kwargs: Any) -> None:
                super().__init_subclass__(**kwargs)
                receive = cls.__dict__.get("video_receive")
                if receive is None:
                    return

                async def video_receive(self: Any, frame: Any) -> None:
                    loop = asyncio.get_running_loop()
                    tasks: set[asyncio.Task[None]] = self.__dict__.setdefault("_lag_tasks", set())

                    def later() -> None:
                        task = loop.create_task(receive(self, frame))
                        tasks.add(task)
                        task.add_done_callback(tasks.discard)

                    loop.call_later(LAG_S, later)

                cls.video_receive = video_receive  # type: ignore[method-assign]

        return dataclasses.replace(api, AsyncAudioVideoStreamHandler=Lagging)


class NoAudioVideo(WebrtcRefAdapter):
    """webrtc_ref claiming everything but the audio-video modality."""

    capabilities = WebrtcRefAdapter.capabilities - {"audio-video.send-receive"}
    unsupported = {"audio-video.send-receive": "not claimed in this test"}  # noqa: RUF012
