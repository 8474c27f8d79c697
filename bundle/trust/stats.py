"""Summary statistics with uncertainty (TRUST_METRICS.md section 8)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats


@dataclass(frozen=True)
class Summary:
    """Mean of the defined values with a bootstrap CI, and how many values were NaN."""

    mean: float
    ci_low: float
    ci_high: float
    n: int
    n_nan: int


def bootstrap_summary(values, n_resamples: int = 1000, confidence: float = 0.95, seed: int = 0) -> Summary:
    """NaN-skipping mean with a seeded, non-parametric percentile bootstrap interval over images."""
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    defined = values[np.isfinite(values)]
    n_nan = int(values.size - defined.size)
    if defined.size == 0:
        return Summary(float("nan"), float("nan"), float("nan"), 0, n_nan)
    mean = float(defined.mean())
    if defined.size < 2 or np.all(defined == defined[0]):
        return Summary(mean, mean, mean, int(defined.size), n_nan)
    result = stats.bootstrap(
        (defined,), np.mean, n_resamples=n_resamples, confidence_level=confidence,
        method="percentile", rng=np.random.default_rng(seed),
    )
    ci = result.confidence_interval
    return Summary(mean, float(ci.low), float(ci.high), int(defined.size), n_nan)
