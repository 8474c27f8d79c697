"""Bootstrap summaries: seeded, NaN-counting, interval around the mean."""

from __future__ import annotations

import math

import numpy as np
import pytest

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


def test_paired_comparison_uses_the_defined_pairs_and_equals_scipy():
    from scipy import stats

    from bundle.trust import paired_comparison

    rng = np.random.default_rng(3)
    a = rng.normal(0.5, 0.1, 30)
    b = a - rng.normal(0.05, 0.05, 30)
    a[4], b[7] = np.nan, np.nan  # undefined on one side: the pair is left out
    c = paired_comparison(a, b, seed=2)
    keep = np.isfinite(a) & np.isfinite(b)
    d = a[keep] - b[keep]
    assert c.n == 28 and c.mean_diff == pytest.approx(d.mean())
    assert c.p_value == pytest.approx(stats.wilcoxon(d).pvalue) and c.direction == 1
    assert c.ci_low < c.mean_diff < c.ci_high and c == paired_comparison(a, b, seed=2)
    assert paired_comparison(b, a).direction == -1
    # the direction is the signed-rank statistic's, not the mean's: one huge negative, many small positives
    skewed = paired_comparison([0.1] * 9 + [-5.0], [0.0] * 10)
    assert skewed.mean_diff < 0 and skewed.direction == 1
    tied = paired_comparison([0.3, 0.3], [0.3, 0.3])
    assert tied.p_value == 1.0 and tied.direction == 0
    assert math.isnan(paired_comparison([np.nan], [0.1]).p_value)


def test_holm_adjustment_by_hand():
    from bundle.trust import holm

    p = [0.01, 0.04, 0.03, 0.005, float("nan")]
    # sorted: 0.005 x 4 = 0.02; 0.01 x 3 = 0.03; 0.03 x 2 = 0.06; 0.04 x 1 -> kept monotone at 0.06
    np.testing.assert_allclose(holm(p), [0.03, 0.06, 0.06, 0.02, np.nan])
    np.testing.assert_allclose(holm([0.5, 0.9]), [1.0, 1.0])


def test_spearman_equals_scipy_with_ties_and_nan_for_constant_maps():
    import torch
    from scipy import stats

    from bundle.trust import spearman

    g = torch.Generator().manual_seed(0)
    a = (torch.rand(5, 8, 8, generator=g) * 4).floor()  # many ties
    b = a + torch.rand(5, 8, 8, generator=g) * 3
    ours = spearman(a, b)
    for i in range(5):
        assert ours[i].item() == pytest.approx(stats.spearmanr(a[i].flatten(), b[i].flatten()).statistic, abs=1e-6)
    flat = spearman(torch.ones(1, 8, 8), b[:1])
    assert math.isnan(flat.item())
