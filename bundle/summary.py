"""From per-image records to what a study reports: means with bootstrap CIs, paired tests against the
strongest baseline, Holm's adjustment across the method x criterion grid (TRUST_METRICS.md section 8).

Computed from the records only, never kept separately.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from bundle.trust.stats import bootstrap_summary, holm, paired_comparison

SUMMARY_KEYS = ["model", "method", "criterion", "metric", "step"]
SUMMARY_COLUMNS = [*SUMMARY_KEYS, "kind", "mean", "ci_low", "ci_high", "n", "n_nan"]


def summarise(records: pd.DataFrame, kinds: Mapping[str, str], n_resamples: int = 1000, seed: int = 0) -> pd.DataFrame:
    """One row per (model, method, criterion, metric, step): NaN-skipping mean, 95% bootstrap CI, n, NaN count.

    Values are bootstrapped in image-id order, so the interval does not depend on the order the images came in.
    """
    rows = []
    for keys, group in records.groupby(SUMMARY_KEYS, sort=False):
        s = bootstrap_summary(group.sort_values("image_id")["value"].to_numpy(), n_resamples=n_resamples, seed=seed)
        rows.append({**dict(zip(SUMMARY_KEYS, keys)), "kind": kinds.get(keys[1], "model"), "mean": s.mean,
                     "ci_low": s.ci_low, "ci_high": s.ci_high, "n": s.n, "n_nan": s.n_nan})
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)


def strongest_baseline(rows: pd.DataFrame, kinds: Mapping[str, str], higher_is_better: bool = True) -> str | None:
    """The baseline with the best mean among the records of one criterion and metric (references such as
    the oracle are not baselines)."""
    means = rows[rows.method.map(kinds).eq("baseline")].groupby("method")["value"].mean().dropna()
    if means.empty:
        return None
    return str(means.idxmax() if higher_is_better else means.idxmin())


def compare_to_strongest_baseline(
    records: pd.DataFrame, kinds: Mapping[str, str], criterion: str, metric: str, higher_is_better: bool = True,
    n_resamples: int = 1000, seed: int = 0,
) -> pd.DataFrame:
    """Each method against the strongest baseline (:func:`compare_to_baseline`); empty when none was scored."""
    rows = records[(records.criterion == criterion) & (records.metric == metric)]
    baseline = strongest_baseline(rows, kinds, higher_is_better)
    if baseline is None:
        return pd.DataFrame()
    compared = compare_to_baseline(rows, kinds, criterion, metric, baseline, higher_is_better, n_resamples, seed)
    # a configured baseline that failed may have been the strongest: a verdict must not rest on the weaker ones
    scored = set(rows.method)
    unscored = ", ".join(b for b, kind in kinds.items() if kind == "baseline" and b not in scored)
    return compared.assign(unscored_baselines=unscored) if len(compared) else compared


def compare_to_baseline(
    records: pd.DataFrame, kinds: Mapping[str, str], criterion: str, metric: str, baseline: str,
    higher_is_better: bool = True, n_resamples: int = 1000, seed: int = 0,
) -> pd.DataFrame:
    """Each method against ``baseline`` on the same images: the paired difference (method minus baseline,
    signed so that positive is better) with its bootstrap CI, and the Wilcoxon signed-rank p-value.

    ``unscored_baselines`` names the baseline when it has no records here (it failed).
    """
    rows = records[(records.criterion == criterion) & (records.metric == metric)]
    unscored = "" if (rows.method == baseline).any() else baseline
    # one row per image (and model, step), one column per source: paired by image id, never by position
    wide = rows.pivot(index=["image_id", "model", "step"], columns="method", values="value").sort_index()
    theirs = wide[baseline].to_numpy() if baseline in wide else np.full(len(wide), np.nan)
    sign = 1.0 if higher_is_better else -1.0
    out = []
    for method in dict.fromkeys(rows.method[rows.method.map(kinds).eq("method")]):
        c = paired_comparison(sign * wide[method].to_numpy(), sign * theirs, n_resamples, seed=seed)
        out.append({"criterion": criterion, "method": method, "metric": metric, "baseline": baseline, "n_pairs": c.n,
                    "mean_diff": c.mean_diff, "ci_low": c.ci_low, "ci_high": c.ci_high, "sd_diff": c.sd_diff,
                    "p_value": c.p_value, "direction": c.direction, "unscored_baselines": unscored})
    return pd.DataFrame(out)


def adjust_across_grid(comparisons: pd.DataFrame) -> pd.DataFrame:
    """Holm-adjusted p-values over every test of the study that decides a verdict (the method x criterion grid).

    Rows with ``in_grid`` False (e.g. the intermediate steps of a cascade) are reported with their raw
    p-value and are neither adjusted nor counted.
    """
    comparisons = comparisons.reset_index(drop=True).copy()
    if not len(comparisons):
        return comparisons.assign(p_holm=np.array([]), n_tests=0)
    in_grid = comparisons["in_grid"].fillna(True).astype(bool) if "in_grid" in comparisons else \
        pd.Series(True, index=comparisons.index)
    p = comparisons["p_value"].to_numpy(dtype=np.float64)
    adjusted = np.full_like(p, np.nan)
    adjusted[in_grid.to_numpy()] = holm(p[in_grid.to_numpy()])
    comparisons["p_holm"] = adjusted
    comparisons["in_grid"] = in_grid
    comparisons["n_tests"] = int(np.isfinite(p[in_grid.to_numpy()]).sum())
    return comparisons
