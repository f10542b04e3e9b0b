"""Adapters: one per implementation under test, chosen with ``--impl``.

See :mod:`conformance.adapters.base` for the protocol and docs/adding-an-implementation.md
for writing one. ``--impl`` takes a registered name below or ``module:attribute`` naming an
:class:`~conformance.adapters.base.Adapter` subclass or instance of your own.
"""

from __future__ import annotations

import importlib

from conformance.adapters.base import (
    CAPABILITIES,
    FASTRTC_NAMES,
    Adapter,
    Api,
    FastrtcApi,
    Input,
    Scenario,
    Served,
    ServedStream,
    Unsupported,
)

#: Registered implementations: --impl name -> "module:attribute" of the adapter class.
REGISTRY: dict[str, str] = {
    "webrtc_ref": "conformance.adapters.webrtc_ref:WebrtcRefAdapter",
    "gradio_webrtc": "conformance.adapters.gradio_webrtc:GradioWebrtcAdapter",
    "gradio_webrtc-0.0.31": "conformance.adapters.gradio_webrtc:GradioWebrtcAdapter",
    "fastrtc": "conformance.adapters.fastrtc:FastrtcAdapter",
    "fastrtc_compact": "conformance.adapters.fastrtc_compact:FastrtcCompactAdapter",
    "null": "conformance.adapters.null:NullAdapter",
    "broken": "conformance.adapters.broken:BrokenAdapter",
}

__all__ = [
    "CAPABILITIES",
    "FASTRTC_NAMES",
    "REGISTRY",
    "Adapter",
    "Api",
    "FastrtcApi",
    "Input",
    "Scenario",
    "Served",
    "ServedStream",
    "Unsupported",
    "get_adapter",
]


def get_adapter(name: str) -> Adapter:
    """The adapter for ``--impl name`` (a registered name or ``module:attribute``)."""
    target = REGISTRY.get(name, name)
    if ":" not in target:
        known = ", ".join(sorted(REGISTRY))
        raise ValueError(f"unknown implementation {name!r}; known: {known} (or module:attribute)")
    module_name, _, attribute = target.partition(":")
    obj = getattr(importlib.import_module(module_name), attribute)
    adapter = obj() if isinstance(obj, type) else obj
    if not isinstance(adapter, Adapter):
        raise TypeError(f"{target} is not a conformance Adapter")
    if name in REGISTRY:
        adapter.name = name
    return adapter
