"""Bootstrap summaries: seeded, NaN-counting, interval around the mean."""

from __future__ import annotations

import math

import numpy as np

from bundle.trust import bootstrap_summary


def test_bootstrap_interval_contains_mean_and_is_seeded():
    values = np.random.default_rng(0).normal(0.4, 0.1, 200)
    a, b = bootstrap_summary(values, seed=1), bootstrap_summary(values, seed=1)
    assert a == b
    assert a.ci_low < a.mean < a.ci_high
    assert a.mean == values.mean() and a.n == 200 and a.n_nan == 0
    # the percentile interval of the mean is about mean +- 1.96 * sd / sqrt(n)
    half = 1.96 * values.std(ddof=1) / np.sqrt(200)
    assert abs((a.ci_high - a.ci_low) / 2 - half) < 0.2 * half


def test_nan_values_are_skipped_and_counted():
    s = bootstrap_summary([0.2, float("nan"), 0.4, float("nan")])
    assert s.n == 2 and s.n_nan == 2 and abs(s.mean - 0.3) < 1e-12
    empty = bootstrap_summary([float("nan")])
    assert math.isnan(empty.mean) and empty.n_nan == 1
