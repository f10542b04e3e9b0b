"""Shared by every test directory: loopback-only ICE and hypothesis profiles."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, settings

from webrtc_ref.testing import loopback_ice

# CI runs derandomized (the same examples every run, so a red build is reproducible);
# local runs explore new examples each time.
settings.register_profile(
    "ci", derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("dev", deadline=None)
settings.load_profile("ci" if os.environ.get("CI") else "dev")


@pytest.fixture(autouse=True, scope="session")
def _loopback_ice() -> Iterator[None]:
    with loopback_ice():
        yield
