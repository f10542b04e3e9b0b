"""Selects the implementation under test (``--impl``, default ``webrtc_ref``)."""

from __future__ import annotations

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--impl",
        default="webrtc_ref",
        help="implementation under test: webrtc_ref (more adapters to come)",
    )


@pytest.fixture(scope="session")
def impl(request: pytest.FixtureRequest) -> str:
    return str(request.config.getoption("--impl"))
