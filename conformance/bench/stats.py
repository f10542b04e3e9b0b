"""The benchmark's statistics, in one place: percentiles, median, spread and ratios.

Every figure of :mod:`conformance.bench` (the side-by-side driver, its report and the
ReplyOnPause replay) computes its numbers with these, so "p95" or "IQR" means the same thing
everywhere: numpy's linear-interpolation percentile over the pooled samples. Missing data
gives ``None``, never NaN or an exception.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np


def finite(values: Iterable[Any] | None) -> list[float]:
    """The finite numbers of ``values`` (``None``, NaN, bools and non-numbers dropped)."""
    if values is None:
        return []
    out = []
    for value in values:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        number = float(value)
        if math.isfinite(number):
            out.append(number)
    return out


def pct(values: Sequence[float] | None, q: float) -> float | None:
    """The ``q``-th percentile (linear interpolation) of ``values``; None when empty."""
    data = finite(values)
    return float(np.percentile(np.asarray(data, dtype=np.float64), q)) if data else None


def median(values: Sequence[float] | None) -> float | None:
    return pct(values, 50)


def iqr(values: Sequence[float] | None) -> tuple[float, float] | None:
    """``(p25, p75)`` of ``values``; None when empty."""
    low, high = pct(values, 25), pct(values, 75)
    return None if low is None or high is None else (low, high)


def spread(values: Sequence[float] | None) -> dict[str, Any]:
    """``{"n", "p50", "p95", "p25", "p75", "min", "max"}`` of ``values`` (None when empty).

    The summary every figure stores beside its raw samples, so the report can show n and a
    spread without the samples themselves.
    """
    data = finite(values)
    return {
        "n": len(data),
        "p50": pct(data, 50),
        "p95": pct(data, 95),
        "p25": pct(data, 25),
        "p75": pct(data, 75),
        "min": min(data) if data else None,
        "max": max(data) if data else None,
    }


def ratio(value: float | None, base: float | None) -> float | None:
    """``value / base``; None when either is missing or ``base`` is not positive."""
    if value is None or base is None or not math.isfinite(value) or not math.isfinite(base):
        return None
    return value / base if base > 0 else None


def difference(value: float | None, base: float | None) -> float | None:
    """``value - base``; None when either is missing."""
    return None if value is None or base is None else value - base
