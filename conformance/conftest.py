"""Fixtures of the conformance suite; its hooks live in :mod:`conformance.plugin`.

The implementation under test is chosen with ``--impl`` (default ``webrtc_ref``). Every
aiortc peer of the run, client and server alike (the app runs in this process), gathers
ICE host candidates on 127.0.0.1 only; the patch is applied here so that it holds in any
implementation's venv.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from conformance.adapters import Adapter, Api, get_adapter
from conformance.plugin import (  # noqa: F401 - pytest finds hooks by name here
    pytest_addoption,
    pytest_collection_finish,
    pytest_collection_modifyitems,
    pytest_configure,
    pytest_runtest_logreport,
    pytest_runtest_makereport,
    pytest_sessionfinish,
    pytest_terminal_summary,
    pytest_unconfigure,
)

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(autouse=True, scope="session")
def _loopback_only() -> Iterator[None]:
    """aioice gathers host candidates on 127.0.0.1 only (no other interface, no STUN)."""
    import aioice.ice

    original = aioice.ice.get_host_addresses

    def loopback(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        return ["127.0.0.1"] if use_ipv4 else []

    aioice.ice.get_host_addresses = loopback
    try:
        yield
    finally:
        aioice.ice.get_host_addresses = original


@pytest.fixture(scope="session")
def impl(request: pytest.FixtureRequest) -> str:
    """The ``--impl`` name."""
    return str(request.config.getoption("--impl"))


@pytest.fixture(scope="session")
def adapter(impl: str) -> Adapter:
    """The adapter of the implementation under test."""
    return get_adapter(impl)


@pytest.fixture(scope="session")
def api(adapter: Adapter) -> Api:
    """The implementation's public classes (WebRTC, StreamHandler, ...)."""
    return adapter.api()
