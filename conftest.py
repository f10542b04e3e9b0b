"""Shared by every test directory: keep ICE on the loopback interface."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from webrtc_ref.testing import loopback_ice


@pytest.fixture(autouse=True, scope="session")
def _loopback_ice() -> Iterator[None]:
    with loopback_ice():
        yield
