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


@dataclass(frozen=True)
class PairedComparison:
    """A paired comparison of two scores on the same images: ``a - b``.

    ``mean_diff`` with its percentile bootstrap CI, the two-sided Wilcoxon
    signed-rank p-value, and the direction of the signed-rank statistic
    (+1: a ranks higher, -1: lower, 0: no non-zero difference).
    """

    n: int
    mean_diff: float
    ci_low: float
    ci_high: float
    p_value: float
    direction: int


def paired_comparison(a, b, n_resamples: int = 1000, confidence: float = 0.95, seed: int = 0) -> PairedComparison:
    """Compare per-image values ``a`` and ``b`` (same images, same order) on the images where both are defined."""
    a, b = np.asarray(a, dtype=np.float64).reshape(-1), np.asarray(b, dtype=np.float64).reshape(-1)
    if a.shape != b.shape:
        raise ValueError(f"paired values must have the same length, got {a.size} and {b.size}")
    d = (a - b)[np.isfinite(a) & np.isfinite(b)]
    s = bootstrap_summary(d, n_resamples, confidence, seed)
    nonzero = d[d != 0]
    if nonzero.size == 0:
        return PairedComparison(int(d.size), s.mean, s.ci_low, s.ci_high, float("nan") if d.size == 0 else 1.0, 0)
    test = stats.wilcoxon(nonzero, alternative="two-sided")
    ranks = stats.rankdata(np.abs(nonzero))
    direction = int(np.sign(ranks[nonzero > 0].sum() - ranks[nonzero < 0].sum()))
    return PairedComparison(int(d.size), s.mean, s.ci_low, s.ci_high, float(test.pvalue), direction)


def holm(p_values) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values (step-down, monotone, capped at 1); NaN stays NaN and is not counted."""
    p = np.asarray(p_values, dtype=np.float64).reshape(-1)
    adjusted = np.full_like(p, np.nan)
    defined = np.flatnonzero(np.isfinite(p))
    m = defined.size
    order = defined[np.argsort(p[defined], kind="stable")]
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[index]))
        adjusted[index] = running
    return adjusted


@dataclass(frozen=True)
class OneSampleTest:
    """A one-sided one-sample t-test of per-image values against a reference value."""

    n: int
    mean: float
    reference: float
    statistic: float
    p_value: float


def one_sample_test(values, reference: float, alternative: str) -> OneSampleTest:
    """``scipy.stats.ttest_1samp`` of the defined values against ``reference``; ``alternative`` is
    ``less`` (randomisation: similarity below the unrelated-pairs baseline) or ``greater`` (agreement above 0.5).

    NaN p-value with fewer than two defined values or a reference that is not finite.
    """
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    defined = values[np.isfinite(values)]
    mean = float(defined.mean()) if defined.size else float("nan")
    if defined.size < 2 or not np.isfinite(reference):
        return OneSampleTest(int(defined.size), mean, float(reference), float("nan"), float("nan"))
    if np.all(defined == defined[0]):  # no spread: the t statistic is infinite, the side decides
        below = defined[0] < reference if alternative == "less" else defined[0] > reference
        return OneSampleTest(int(defined.size), mean, float(reference), float("nan"), 0.0 if below else 1.0)
    test = stats.ttest_1samp(defined, reference, alternative=alternative)
    return OneSampleTest(int(defined.size), mean, float(reference), float(test.statistic), float(test.pvalue))
