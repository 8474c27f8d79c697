"""Summary statistics with uncertainty (TRUST_METRICS.md section 8)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import special, stats


@dataclass(frozen=True)
class Summary:
    """Mean of the defined values with a bootstrap CI, and how many values were NaN."""

    mean: float
    ci_low: float
    ci_high: float
    n: int
    n_nan: int


def bootstrap_summary(values, n_resamples: int = 1000, confidence: float = 0.95, seed: int = 0) -> Summary:
    """NaN-skipping mean with a seeded, non-parametric percentile bootstrap interval over images (no interval, NaN,
    with ``n_resamples`` 0: what a verdict that reads no interval needs)."""
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    defined = values[np.isfinite(values)]
    n_nan = int(values.size - defined.size)
    if defined.size == 0:
        return Summary(float("nan"), float("nan"), float("nan"), 0, n_nan)
    mean = float(defined.mean())
    if defined.size < 2 or np.all(defined == defined[0]):
        return Summary(mean, mean, mean, int(defined.size), n_nan)
    if n_resamples == 0:
        return Summary(mean, float("nan"), float("nan"), int(defined.size), n_nan)
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
    sd_diff: float = float("nan")


def paired_comparison(a, b, n_resamples: int = 1000, confidence: float = 0.95, seed: int = 0) -> PairedComparison:
    """Compare per-image values ``a`` and ``b`` (same images, same order) on the images where both are defined."""
    a, b = np.asarray(a, dtype=np.float64).reshape(-1), np.asarray(b, dtype=np.float64).reshape(-1)
    if a.shape != b.shape:
        raise ValueError(f"paired values must have the same length, got {a.size} and {b.size}")
    d = (a - b)[np.isfinite(a) & np.isfinite(b)]
    s = bootstrap_summary(d, n_resamples, confidence, seed)
    sd = float(d.std(ddof=1)) if d.size > 1 else float("nan")
    nonzero = d[d != 0]
    if nonzero.size == 0:
        return PairedComparison(int(d.size), s.mean, s.ci_low, s.ci_high, float("nan") if d.size == 0 else 1.0, 0, sd)
    ranks = stats.rankdata(np.abs(nonzero))
    direction = int(np.sign(ranks[nonzero > 0].sum() - ranks[nonzero < 0].sum()))
    return PairedComparison(int(d.size), s.mean, s.ci_low, s.ci_high, signed_rank_p(nonzero, ranks), direction, sd)


EXHAUSTIVE_SIGNS = 13  # scipy's wilcoxon enumerates every sign assignment of up to 13 tied differences


def signed_rank_p(nonzero: np.ndarray, ranks: np.ndarray) -> float:
    """Two-sided Wilcoxon signed-rank p-value of non-zero differences, as ``scipy.stats.wilcoxon`` computes it.

    With ties among at most 13 differences scipy runs a permutation test over every sign assignment in a Python
    loop (50 ms at 8 images); the same enumeration here is one matrix product, so that a verdict can be
    bootstrapped hundreds of times in seconds. Every other case is scipy's."""
    if len(np.unique(ranks)) == len(ranks) or len(ranks) > EXHAUSTIVE_SIGNS:
        return float(stats.wilcoxon(nonzero, alternative="two-sided").pvalue)
    signs = (np.arange(2 ** len(ranks))[:, None] >> np.arange(len(ranks))) & 1
    null = signs @ ranks  # the positive-rank sum of every sign assignment
    observed = ranks[nonzero > 0].sum()
    tolerance = 1e-14 * abs(observed)  # sums of half ranks are exact in float64; no tie needs a wider margin
    less, greater = np.mean(null <= observed + tolerance), np.mean(null >= observed - tolerance)
    return float(min(1.0, 2 * min(less, greater)))


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
    sd: float = float("nan")


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
    sd = float(defined.std(ddof=1))
    if np.all(defined == defined[0]):  # no spread: the t statistic is infinite, the side decides
        below = defined[0] < reference if alternative == "less" else defined[0] > reference
        return OneSampleTest(int(defined.size), mean, float(reference), float("nan"), 0.0 if below else 1.0, sd)
    # scipy.stats.ttest_1samp's arithmetic without its per-call overhead (0.7 ms; verdicts are bootstrapped)
    t = (mean - reference) / np.sqrt(np.var(defined, ddof=1) / defined.size)
    p = special.stdtr(defined.size - 1, t if alternative == "less" else -t)
    return OneSampleTest(int(defined.size), mean, float(reference), float(t), float(p), sd)


WILCOXON_EFFICIENCY = 3 / np.pi  # Wilcoxon's asymptotic relative efficiency to the t-test under normality


def images_for_mean_test(effect: float, sd: float, alpha: float, power: float = 0.8, sides: int = 2,
                         family: int = 1, efficiency: float = 1.0) -> float:
    """Images a test of a mean (one-sample, or paired differences) needs to reject at ``power`` when the true mean
    difference is ``effect`` with spread ``sd``: the normal approximation n = ((z_(1 - a) + z_power) sd / effect)^2,
    a = alpha / (sides x family) (Bonferroni over ``family`` tests: Holm's first step, its strictest), divided by the
    test's relative ``efficiency`` (:data:`WILCOXON_EFFICIENCY` for the signed-rank test). Infinite without an effect.
    """
    if not (np.isfinite(effect) and np.isfinite(sd)) or effect == 0:
        return float("inf")
    z = stats.norm.ppf(1 - alpha / (sides * max(family, 1))) + stats.norm.ppf(power)
    return float(np.ceil((z * sd / abs(effect)) ** 2 / efficiency))


def images_for_correlation(r: float, threshold: float, alpha: float, power: float = 0.8) -> float:
    """Images for a two-sided 1 - ``alpha`` interval of a Pearson correlation observed at ``r`` to exclude
    ``threshold`` at ``power``: Fisher's z, n = ((z_(1 - alpha/2) + z_power) / |atanh r - atanh threshold|)^2 + 3.
    Infinite when r equals the threshold or is undefined."""
    if not np.isfinite(r) or r == threshold:
        return float("inf")
    r = float(np.clip(r, -1 + 1e-12, 1 - 1e-12))  # a perfect correlation: the +3 term is all it needs
    z = stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power)
    return float(np.ceil((z / abs(np.arctanh(r) - np.arctanh(threshold))) ** 2 + 3))


def images_for_sign_test(share: float, alpha: float, power: float = 0.8) -> float:
    """Untied pairs a one-sided sign test (H0: share 0.5) needs at ``power`` when the true share of positive signs
    is ``share``: n = ((z_(1 - alpha) 0.5 + z_power sqrt(share (1 - share))) / (share - 0.5))^2. Infinite at 0.5."""
    if not np.isfinite(share) or share == 0.5:
        return float("inf")
    z = stats.norm.ppf(1 - alpha) * 0.5 + stats.norm.ppf(power) * np.sqrt(share * (1 - share))
    return float(np.ceil((z / (share - 0.5)) ** 2))


def clopper_pearson(successes: int, trials: int, confidence: float = 0.95) -> tuple[float, float]:
    """Exact (Clopper-Pearson) interval of a binomial proportion; (nan, nan) without trials."""
    if trials == 0:
        return float("nan"), float("nan")
    ci = stats.binomtest(int(successes), int(trials)).proportion_ci(confidence, method="exact")
    return float(ci.low), float(ci.high)
