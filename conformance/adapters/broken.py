"""The ``broken`` adapter: webrtc_ref with deliberate defects (a bowtie "fauxmplementation").

The meta tests run the suite against it and check that exactly the requirements these
defects violate fail, while the rest still pass: proof that the suite can fail, and that
it fails for the right reason.

Defects (each mirrors a real one of gradio_webrtc 0.0.16 or a plausible regression):

- video frames are handed to ``fn`` in BGR order (VID-003, VID-006);
- ``stream()`` accepts any ``outputs`` (API-005);
- ``time_limit`` is ignored (LIM-001);
- ``concurrency_limit`` is ignored: connections are unlimited (LIM-002);
- ``on_additional_outputs`` registers nothing (OUT-001).
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from conformance.adapters.base import no_pyi_stubs
from conformance.adapters.webrtc_ref import WebrtcRefAdapter


def _bgr(fn: Any) -> Any:
    @functools.wraps(fn)
    def wrapper(frame: Any, *args: Any) -> Any:
        if isinstance(frame, np.ndarray) and frame.ndim == 3:
            frame = np.ascontiguousarray(frame[:, :, ::-1])
        return fn(frame, *args)

    return wrapper


def _broken_webrtc() -> type:
    from webrtc_ref.component import WebRTC

    with no_pyi_stubs():

        class BrokenWebRTC(WebRTC):  # type: ignore[misc]
            def stream(  # type: ignore[override]
                self, fn: Any = None, inputs: Any = None, outputs: Any = None, **kwargs: Any
            ) -> Any:
                if self.modality == "video" and self.mode != "receive" and callable(fn):
                    fn = _bgr(fn)
                kwargs["concurrency_limit"] = None
                kwargs["time_limit"] = None
                self.time_limit = None
                return super().stream(fn, inputs, [self], **kwargs)

            def on_additional_outputs(self, *args: Any, **kwargs: Any) -> None:  # type: ignore[override]
                return None

    return BrokenWebRTC


class BrokenAdapter(WebrtcRefAdapter):
    """webrtc_ref with the defects listed in the module docstring."""

    name = "broken"

    def api(self) -> Any:
        import dataclasses

        return dataclasses.replace(super().api(), WebRTC=_broken_webrtc())
