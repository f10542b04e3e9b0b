"""Fixtures of the fastrtc profile (conformance/requirements_fastrtc.toml)."""

from __future__ import annotations

import pytest

from conformance.adapters import Adapter, FastrtcApi


@pytest.fixture(scope="session")
def fapi(adapter: Adapter) -> FastrtcApi:
    """fastrtc's handler API as the implementation exports it (UNSUPPORTED unless the
    adapter claims ``fastrtc``)."""
    return adapter.fastrtc_api()
