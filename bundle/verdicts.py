"""From per-image records to verdicts, and how far each verdict can be trusted.

:func:`judge` is the one path from records to the summary, the Holm-adjusted comparisons and the verdicts (the
study, the stability bootstrap and the calibration all call it). :func:`verdict_stability` repeats it on
bootstrap resamples of the images, from the records alone (no new maps), and reports per method and criterion the
share of resamples that give the reported verdict (TRUST_METRICS.md section 10).
"""

from __future__ import annotations

import json
import multiprocessing
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from bundle import threads
from bundle.passes import work
from bundle.criteria.base import INCONCLUSIVE, POWER, VERDICT_COLUMNS, Criterion
from bundle.summary import adjust_across_grid, summarise

STABLE = 0.8  # below this share of resamples reproducing it, a verdict is marked unstable
POWER_TARGET = POWER  # a known-good control must PASS in at least this share of calibration draws
MONOTONE = 0.8  # a graded control's score must move with its level at least this strongly (Spearman)
PAIR_SEPARATOR = "|"  # records of an image pair (the unrelated-pairs baseline) have ids "a|b"
CALIBRATION_SUFFIX = "_calibration.json"  # what ``run calibrate`` writes beside the study's results
REPLICATE = "_replicate"  # the files of the replicate with the next seed's model: <run>_replicate_records.csv


@dataclass(frozen=True)
class Judgement:
    """What a study reports from its records."""

    summary: pd.DataFrame
    comparisons: pd.DataFrame
    verdicts: pd.DataFrame


@work("statistics")
def judge(criteria: Mapping[str, Criterion], records: pd.DataFrame, kinds: Mapping[str, str], n_resamples: int,
          seed: int, adjust: Callable[[pd.DataFrame], pd.DataFrame] = adjust_across_grid,
          intervals: bool = True) -> Judgement:
    """Summary (means with bootstrap CIs and each criterion's aggregates), comparisons (p-values adjusted by
    ``adjust``: Holm across the study's grid) and every criterion's verdicts, from ``records`` alone.

    Without ``intervals`` only the bootstrap intervals a verdict is decided by are computed
    (``Criterion.interval_decides``); the others are NaN: the same verdicts, for a fraction of the time."""
    def resamples(criterion: Criterion | None = None) -> int:
        return n_resamples if intervals or getattr(criterion, "interval_decides", False) else 0

    aggregates = [c.aggregates(records, kinds, resamples(c), seed) for c in criteria.values()]
    summary = pd.concat([summarise(records, kinds, resamples(), seed), *[a for a in aggregates if len(a)]],
                        ignore_index=True)
    comparisons = adjust(pd.concat([c.comparisons(records, kinds, resamples(c), seed) for c in criteria.values()]))
    verdicts = pd.concat([c.verdicts(summary, comparisons) for c in criteria.values()], ignore_index=True)
    return Judgement(summary, comparisons, verdicts.reindex(columns=list(VERDICT_COLUMNS)))


class ImageResampler:
    """Bootstrap resamples of each criterion's images in a records table: its image ids drawn with replacement (as
    many as it has), every record of a drawn image copied under the draw's number as its id, so that pairing by id
    still pairs the records of one draw; records of image pairs (ids ``a|b``) are resampled among themselves.

    The rows of every image are found once; a resample is then a gather of row numbers (verdicts are judged on
    hundreds of resamples)."""

    def __init__(self, records: pd.DataFrame) -> None:
        # text columns as Python objects: hundreds of judgements index them, and Arrow-backed strings (pandas 3's
        # default) cost a conversion at every access
        self.records = records.reset_index(drop=True)
        self.records = self.records.astype({c: object for c in self.records.columns
                                            if pd.api.types.is_string_dtype(self.records[c])})
        self.units = []  # per criterion and kind of id: the row numbers of each image (or pair)
        for _, mine in self.records.groupby("criterion", sort=False):
            pairs = mine.image_id.astype(str).str.contains(PAIR_SEPARATOR, regex=False)
            for part in (mine[~pairs], mine[pairs]):
                if len(part):
                    rows = part.index.to_numpy()
                    self.units.append([rows[i] for i in part.groupby("image_id", sort=True).indices.values()])

    def resample(self, rng: np.random.Generator) -> pd.DataFrame:
        rows, ids, offset = [], [], 0
        for units in self.units:
            drawn = rng.integers(0, len(units), len(units))
            rows += [units[d] for d in drawn]
            ids += [np.full(len(units[d]), offset + draw) for draw, d in enumerate(drawn)]  # never two units' ids
            offset += len(units)
        if not rows:
            return self.records.iloc[:0]
        out = self.records.take(np.concatenate(rows))
        return out.assign(image_id=np.concatenate(ids))


_JUDGED: tuple | None = None  # what the forked workers of verdict_stability judge (inherited, never pickled)


def _agreements(draws: range) -> np.ndarray:
    """Per reported verdict, how many of the resamples ``draws`` give it again (resample r is drawn from its own
    seed, so the sum does not depend on which worker judged which draws)."""
    criteria, resampler, kinds, reported, inner_resamples, seed = _JUDGED
    agree = np.zeros(len(reported), dtype=np.int64)
    for r in draws:
        rng = np.random.default_rng([seed, r, zlib.crc32(b"stability")])
        again = judge(criteria, resampler.resample(rng), kinds, inner_resamples, seed, intervals=False).verdicts
        again = again.set_index(["criterion", "method"]).verdict.reindex(reported.index)
        agree += (again == reported).to_numpy()
    return agree


@work("statistics")
def verdict_stability(criteria: Mapping[str, Criterion], records: pd.DataFrame, kinds: Mapping[str, str],
                      verdicts: pd.DataFrame, n_resamples: int = 200, seed: int = 0,
                      inner_resamples: int = 1000, workers: int | None = None) -> pd.DataFrame:
    """Per verdict (criterion, method): the share of ``n_resamples`` bootstrap resamples of the images
    (:class:`ImageResampler`, seeded) whose verdict equals the reported one, and ``unstable`` below :data:`STABLE`.

    Each resample is judged exactly as the study judged the records (:func:`judge`, Holm across the grid), from the
    records each verdict is computed from (``Criterion.deciding``); ``inner_resamples`` are the bootstrap resamples
    of the intervals inside a verdict (PSC's). The resamples are shared among ``workers`` forked processes of one
    thread each (default: :func:`bundle.threads.pool_workers`, this process's intra-op threads, at most 2): judging
    is pandas work that one core does alone, and the shares are the same whatever the number of workers."""
    global _JUDGED
    resampler = ImageResampler(pd.concat([c.deciding(records) for c in criteria.values()], ignore_index=True))
    reported = verdicts.set_index(["criterion", "method"]).verdict
    workers = threads.pool_workers() if workers is None else workers
    _JUDGED = (criteria, resampler, kinds, reported, inner_resamples, seed)
    try:
        if workers > 1 and n_resamples >= 2 * workers and "fork" in multiprocessing.get_all_start_methods():
            with threads.worker_pool(workers) as pool:
                agree = sum(pool.map(_agreements, [range(w, n_resamples, workers) for w in range(workers)]))
        else:
            agree = _agreements(range(n_resamples))
    finally:
        _JUDGED = None
    share = agree / max(n_resamples, 1)
    return pd.DataFrame({"criterion": reported.index.get_level_values(0), "method": reported.index.get_level_values(1),
                         "stability": share, "unstable": share < STABLE})


def latest_calibration(output_dir: str | Path) -> tuple[dict | None, Path | None]:
    """The newest calibration written in ``output_dir`` (by its date), and its file; ``(None, None)`` when none."""
    found = []
    for path in Path(output_dir).glob(f"*{CALIBRATION_SUFFIX}"):
        try:
            found.append((json.loads(path.read_text()), path))
        except (OSError, ValueError):  # a half-written or foreign file is not a calibration
            continue
    return max(found, key=lambda f: f[0].get("date", "")) if found else (None, None)


NOT_CALIBRATED = "not calibrated"
COULD_NOT_CALIBRATE = "not calibrated: "  # a calibration of these settings found no known-good control; then why
CONTROLS_CHANGED = "calibrated with controls that have changed since (an earlier version's): run calibrate again"
SAID_ONE_BY_ONE = (COULD_NOT_CALIBRATE, CONTROLS_CHANGED)  # the report gives these statuses a line each


def calibration_status(calibration: Mapping | None, criteria: Mapping[str, Criterion], params: Mapping,
                       controls: Mapping[str, list[str]] | None) -> dict[str, dict]:
    """Per criterion: ``{"calibrated": True/False, "why": ...}`` when the calibration ran with the criterion's
    settings on the same data (its repr and the study's params) and with the controls it has now (``controls``:
    ``bundle.calibration.control_fingerprints`` at the calibration's levels), else ``{"calibrated": None, ...}``."""
    status = {}
    for name, criterion in criteria.items():
        if calibration is None:
            status[name] = {"calibrated": None, "why": NOT_CALIBRATED}
            continue
        found = {c["criterion"]: c for c in calibration.get("criteria", [])}.get(name)
        same = (calibration.get("settings", {}).get(name) == repr(criterion)
                and calibration.get("params") == {k: str(v) for k, v in params.items()})
        if found is None or not same:
            why = NOT_CALIBRATED if found is None else "calibrated with other settings or data"
            status[name] = {"calibrated": None, "why": why}
        elif calibration.get("controls", {}).get(name) != (controls or {}).get(name):
            status[name] = {"calibrated": None, "why": CONTROLS_CHANGED}
        elif found["calibrated"] is None:  # it could not be calibrated (no known-good control for this model)
            status[name] = {"calibrated": None, "why": f"{COULD_NOT_CALIBRATE}{found['why']}"}
        else:
            status[name] = {"calibrated": bool(found["calibrated"]), "why": found["why"]}
    return status


def apply_calibration(verdicts: pd.DataFrame, status: Mapping[str, Mapping]) -> pd.DataFrame:
    """The ``calibrated`` column (True, False, or None when not calibrated for these settings), and every verdict
    of an uncalibrated criterion made INCONCLUSIVE by rule, the rule saying why and what it would have been."""
    verdicts = verdicts.copy()
    verdicts["calibrated"] = verdicts.criterion.map(lambda c: status.get(c, {}).get("calibrated"))
    failed = verdicts.calibrated.eq(False)
    why = verdicts.criterion.map(lambda c: status.get(c, {}).get("why", ""))
    verdicts.loc[failed, "rule"] = ("uncalibrated criterion (" + why[failed] + "): its rule alone said "
                                    + verdicts.verdict[failed] + ": " + verdicts.rule[failed])
    verdicts.loc[failed, "verdict"] = INCONCLUSIVE
    verdicts.loc[failed, "images_needed"] = np.nan  # more images cannot repair an instrument
    return verdicts


def replicate_agreement(verdicts: pd.DataFrame, again: pd.DataFrame, model: str,
                        not_replicated: Mapping[str, str]) -> pd.DataFrame:
    """Per method and criterion: the study's verdict, the replicate's (the criteria again with ``model`` under study)
    and whether they agree; a criterion that was not replicated says why instead (``agree`` NaN)."""
    table = verdicts[["criterion", "method", "verdict"]].merge(
        again[["criterion", "method", "verdict"]].rename(columns={"verdict": "replicate"}), how="left")
    why = table.criterion.map(lambda c: f"not replicated: {not_replicated[c]}" if c in not_replicated else None)
    table["replicate"] = table.replicate.where(why.isna(), why)
    table["agree"] = (table.verdict == table.replicate).where(why.isna())
    return table.assign(model=model)
