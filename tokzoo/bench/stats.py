"""Uncertainty of the bench's numbers.

``BOOTSTRAP`` is part of the measurement protocol: a mean over images gets a
95 % percentile-bootstrap interval over the images measured (scipy's
``stats.bootstrap``, 1,000 resamples, seed 0), so two numbers can be told
apart from noise.
"""
from __future__ import annotations

import math

import numpy as np

BOOTSTRAP = {"method": "percentile", "confidence": 0.95, "resamples": 1000, "seed": 0,
             "over": "images measured (scipy.stats.bootstrap)"}


def bootstrap_interval(values) -> tuple[float, float] | None:
    """95 % percentile-bootstrap interval of the mean of ``values``; None for
    fewer than two values (no spread to resample)."""
    from scipy.stats import bootstrap

    v = np.asarray(values, dtype=np.float64).reshape(-1)
    v = np.sort(v[np.isfinite(v)])  # order-free: one process or several give the same interval
    if len(v) < 2:
        return None
    if np.all(v == v[0]):  # every image the same: the interval is that value
        return float(v[0]), float(v[0])
    res = bootstrap((v,), np.mean, n_resamples=BOOTSTRAP["resamples"], confidence_level=BOOTSTRAP["confidence"],
                    method=BOOTSTRAP["method"], random_state=np.random.default_rng(BOOTSTRAP["seed"]),
                    vectorized=True)
    lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
    return (lo, hi) if math.isfinite(lo) and math.isfinite(hi) else None


def half_width(interval) -> float | None:
    """Half the width of an interval ``[lo, hi]`` (the ± shown), or None."""
    if not interval or len(interval) != 2:
        return None
    return (float(interval[1]) - float(interval[0])) / 2
