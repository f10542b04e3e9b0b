"""Media helpers of the fastrtc profile's tests: tracks to send, and what the client heard."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from conformance.helpers import tone


def tone_track(freq: float, amplitude: float = 0.5) -> Any:
    """A client microphone playing a continuous tone (amplitude 0: silence)."""
    from fixtures.tracks import ToneAudioTrack

    return ToneAudioTrack(freq, amplitude=amplitude)


def silence_track() -> Any:
    return tone_track(440.0, amplitude=0.0)


def speech_track(audio: np.ndarray) -> Any:
    from fixtures.tracks import ArrayAudioTrack

    return ArrayAudioTrack(audio, 48000, on_end="silence")


def barcode(width: int = 320, height: int = 240) -> Any:
    from fixtures.tracks import BarcodeVideoTrack

    return BarcodeVideoTrack(width, height, clock=time.time)


def chunk(freq: float, seconds: float, rate: int = 24000) -> tuple[int, np.ndarray]:
    """An output chunk ``(rate, int16 array (1, N))`` of a tone."""
    return (rate, tone(freq, seconds, rate))


def tone_frames(recorder: Any, freq: float) -> list[tuple[float, float]]:
    """``(arrival, seconds)`` of each frame the client received that is loud (RMS over
    0.05) and dominated by ``freq`` (within 5 % + 60 Hz)."""
    from fixtures.analysis import dominant_frequency

    if recorder is None:
        return []
    rate = recorder.sample_rate or 48000
    x = recorder.samples().astype(np.float64) / 32768
    found = []
    for position, n, arrival in recorder.frames:
        window = x[position : position + n]
        if window.size < 64 or np.sqrt(np.mean(window**2)) < 0.05:
            continue
        if abs(dominant_frequency(window, rate) - freq) <= 0.05 * freq + 60:
            found.append((arrival, n / rate))
    return found


def heard(recorder: Any, freq: float, *, since: float = 0.0, until: float = float("inf")) -> float:
    """Seconds of ``freq`` the client received between ``since`` and ``until``."""
    return sum(s for t, s in tone_frames(recorder, freq) if since <= t <= until)


def texts(peer: Any) -> list[str]:
    """The data-channel messages the client got, in order."""
    return [m.text for m in peer.messages]


def note_context(fapi: Any, probe: Any, where: str, who: Any) -> None:
    """Record ``(where, who, webrtc_id)`` from ``get_current_context()`` (or the error it
    raised), once per ``(where, who)``."""
    key = f"context-seen:{where}:{who}"
    if probe.bump(key) > 1:
        return
    try:
        value = str(fapi.get_current_context().webrtc_id)
    except Exception as exc:
        value = f"error: {exc!r}"
    probe.add("context", (where, who, value))


def contexts_check(probe: Any, webrtc_ids: list[str], places: set[str]) -> None:
    """Assert that each handler (``who``) saw one webrtc_id everywhere, a different one per
    handler, and that they are the clients' ids; and that every place was seen."""
    seen = probe.get("context")
    assert seen, "the handler code never ran"
    errors = [c for c in seen if c[2].startswith("error:")]
    assert not errors, f"get_current_context() failed: {errors[:3]}"
    by_who: dict[Any, set[str]] = {}
    for _, who, value in seen:
        by_who.setdefault(who, set()).add(value)
    mixed = {who: ids for who, ids in by_who.items() if len(ids) > 1}
    assert not mixed, f"one handler saw several webrtc_ids: {mixed}"
    ids = [next(iter(v)) for v in by_who.values()]
    assert sorted(ids) == sorted(webrtc_ids), (
        f"the handlers saw webrtc_ids {sorted(ids)}; the clients' are {sorted(webrtc_ids)}"
    )
    missing = places - {where for where, _, _ in seen}
    assert not missing, f"never called (or never recorded) in {sorted(missing)}"
