"""Uncertainty of the bench's numbers.

``BOOTSTRAP`` is part of the measurement protocol: a mean over images gets a
95 % percentile-bootstrap interval over the images measured (scipy's
``stats.bootstrap``, 1,000 resamples, seed 0), so two numbers can be told
apart from noise.

A number that is not a mean over images (codebook usage and perplexity, rFID)
gets its interval from :func:`resample_interval`: the images are resampled
with replacement (the same draws for every such number, seed 0), the number
is recomputed on each resample, and the interval is the value ± 1.96 standard
deviations of the resampled values (the *normal* bootstrap interval: centred
on the number measured, since a resample of distinct codes or of a Fréchet
distance is biased; only its width is used by ``compare``).
"""
from __future__ import annotations

import math

import numpy as np

from tokzoo.measures import Z95, resample_counts, resample_interval  # noqa: F401 (importable here)

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


#: the bootstrap of a number that is not a mean (codebook usage / perplexity; rFID has its own count)
RESAMPLED = {"method": "normal", "confidence": 0.95, "resamples": 1000, "seed": 0,
             "over": "images measured, resampled with replacement; the number recomputed on each resample"}
def half_width(interval) -> float | None:
    """Half the width of an interval ``[lo, hi]`` (the ± shown), or None."""
    if not interval or len(interval) != 2:
        return None
    return (float(interval[1]) - float(interval[0])) / 2
