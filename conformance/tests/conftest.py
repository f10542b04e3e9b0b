"""Recorded sessions shared by several test modules (session-scoped, recorded on first use).

The plans are in :mod:`conformance.sessions`.
"""

from __future__ import annotations

import pytest

from conformance.adapters import Adapter
from conformance.recording import Recordings, record_all
from conformance.sessions import audio_plans, rop_plans


@pytest.fixture(autouse=True)
def _fresh_state(adapter: Adapter) -> None:
    """Implementations with per-process connection state start each test with none."""
    if adapter.shared_state:
        adapter.reset()


@pytest.fixture(scope="session")
def audio_sessions(adapter: Adapter) -> Recordings:
    """Audio sessions in every mode, recorded concurrently."""
    return record_all(adapter, audio_plans())


@pytest.fixture(scope="session")
def rop_sessions(adapter: Adapter) -> Recordings:
    """ReplyOnPause sessions on speech fixtures, recorded concurrently.

    ``rop_sessions.scenarios[name]`` is the speech scenario (with ground truth) played.
    """
    adapter.require("reply_on_pause")
    plans, scenarios = rop_plans()
    recordings = record_all(adapter, plans)
    recordings.scenarios = scenarios
    return recordings
