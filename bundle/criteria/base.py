"""What every criterion is: the records it makes, and the interface the study calls.

A criterion declares the models it needs, turns maps (and models) into per-image
:class:`Record` rows, and owns its verdict rule. It calls ``bundle.trust``
functions directly and never logs to MLflow or writes files: the study does that
with the records it hands back.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, fields

import numpy as np
import pandas as pd

from bundle.models import ModelSpec
from bundle.progress import progress
from bundle.trust.stats import WILCOXON_EFFICIENCY, images_for_mean_test

PASS, FAIL, INCONCLUSIVE = "PASS", "FAIL", "INCONCLUSIVE"
# images_needed: for an INCONCLUSIVE, the images its deciding test would need at 80 % power (inf: no effect to detect)
VERDICT_COLUMNS = ("criterion", "method", "verdict", "rule", "images_needed")
POWER = 0.8


@dataclass(frozen=True)
class Record:
    """One value of the study; each column names one thing.

    ``image_id``: the image (the datalist's ``image_id``; a patient may have several images). ``model``: the
    model the value is of (``densenet121_seed0``, ...). ``method``: the value's source, a map source (a saliency
    method, a baseline, the reference) or, where no map is involved, ``model`` (the model alone) or ``readers``
    (the second reader against the first). ``criterion`` and ``metric``: what was measured. ``step``: the row's
    place in its metric's series, logged as the MLflow step: ``trained`` (no series), a derived model state
    (``cascading:<block>``, ``permuted_labels``, ``epoch:<n>``) or a point of a curve (``reveal:<fraction>``).
    """

    image_id: str
    model: str
    method: str
    criterion: str
    metric: str
    step: str
    value: float


RECORD_COLUMNS = tuple(f.name for f in fields(Record))


def records_for(ids, values, **fields_) -> list[Record]:
    """Records pairing each image id with its value, refusing to pair lists of different lengths."""
    values = [float(v) for v in values]
    if len(values) != len(ids):
        raise RuntimeError(f"{len(values)} values for {len(ids)} images ({fields_})")
    return [Record(image_id=str(i), value=v, **fields_) for i, v in zip(ids, values)]


class Criterion:
    """Base class. Subclasses set ``name`` and implement :meth:`evaluate_method` and :meth:`verdicts`.

    :meth:`evaluate` yields one list of records per scored map source, so the study
    can write each to disk as soon as it exists; a source whose maps cannot be
    computed or scored is reported (by the context) and skipped, and the study goes on.
    """

    name: str = ""
    headline: str = ""  # the metric the report's verdict table shows for this criterion
    figure: str = ""  # the figure the study draws for it (a name in bundle.report.FIGURES), if any
    tabled: tuple[str, ...] | None = None  # the metrics of its table in the report (None: every metric)
    interval_decides = False  # whether a bootstrap interval (not a test's p-value) decides its verdicts
    higher_is_better = True  # the direction of its headline score (calibration reads the trend of degradations)

    def models(self, primary: ModelSpec) -> list[ModelSpec]:
        """The trained models this criterion needs (the study trains missing ones first)."""
        return [primary]

    def sources(self, ctx) -> list[str]:
        """Names of the map sources (methods, baselines, references) this criterion scores."""
        return list(ctx.sources)

    def evaluate_method(self, ctx, name: str) -> list[Record]:
        raise NotImplementedError

    def evaluate(self, ctx) -> Iterator[list[Record]]:
        try:
            names = self.sources(ctx)
        except Exception as error:  # a criterion that cannot start is reported; the other criteria still run
            ctx.report_failure(self.name, "*", error)
            return
        for name in progress(names, self.name, unit="source"):
            try:
                records = self.evaluate_method(ctx, name)
            except Exception as error:  # one source's failure is reported and never stops the study
                ctx.report_failure(self.name, name, error)
                continue
            yield records

    def evaluate_across_images(self, ctx, name: str) -> list[Record]:
        """Records that pair or pool images (a baseline drawn from image pairs), for a source whose per-image records
        are all in: the study calls it once, in the process that merges the records (none by default)."""
        return []

    def aggregates(self, records: pd.DataFrame, kinds: Mapping[str, str], n_resamples: int, seed: int) -> pd.DataFrame:
        """Summary rows of statistics that are not a mean over images (a correlation across images, the area
        of a median curve), in the summary's columns, computed from the records (none by default)."""
        return pd.DataFrame()

    def comparisons(self, records: pd.DataFrame, kinds: Mapping[str, str], n_resamples: int, seed: int) -> pd.DataFrame:
        """Paired tests whose p-values the study Holm-adjusts across every criterion (none by default)."""
        return pd.DataFrame()

    def verdicts(self, summary: pd.DataFrame, comparisons: pd.DataFrame) -> pd.DataFrame:
        """PASS / FAIL / INCONCLUSIVE per method with the rule that decided it and, for an INCONCLUSIVE, the images
        its deciding test would need at :data:`POWER` (:data:`VERDICT_COLUMNS`)."""
        raise NotImplementedError

    def deciding(self, records: pd.DataFrame) -> pd.DataFrame:
        """The records its verdicts are computed from (all of this criterion's by default): what a bootstrap of the
        verdicts resamples, so that it repeats only the work a verdict needs."""
        return records[records.criterion == self.name]

    def params(self) -> dict:
        """Settings that change a number, for MLflow params and the report."""
        return {k: v for k, v in vars(self).items() if not k.startswith("_")}

    def __repr__(self) -> str:
        return f"{self.name}({', '.join(f'{k}={v!r}' for k, v in sorted(self.params().items()))})"


def verdict_against_baseline(c, metric: str, alpha: float, min_pairs: int, which: str = "the") -> tuple[str, str]:
    """PASS / FAIL / INCONCLUSIVE and its rule from one row of a baseline comparison (``bundle.summary``):
    PASS when the Holm-adjusted paired test favours the method, FAIL when it favours the baseline,
    INCONCLUSIVE when neither, with fewer than ``min_pairs`` images, or when a baseline was not scored
    (``which`` names the baseline that is then unknown, e.g. "the strongest")."""
    test = (f"{metric} vs {c.baseline}: diff {c.mean_diff:+.3f} [{c.ci_low:+.3f}, {c.ci_high:+.3f}], "
            f"Wilcoxon p {c.p_value:.2g}, Holm over {c.n_tests} tests p {c.p_holm:.2g}")
    if isinstance(c.unscored_baselines, str) and c.unscored_baselines:
        verdict, why = INCONCLUSIVE, f"baseline(s) {c.unscored_baselines} not scored: {which} baseline is unknown"
    elif c.n_pairs < min_pairs:
        verdict, why = INCONCLUSIVE, f"only {c.n_pairs} paired images (< {min_pairs})"
    elif c.p_holm < alpha and c.direction > 0:
        verdict, why = PASS, f"beats {c.baseline} (signed ranks favour it, p_Holm < {alpha})"
    elif c.p_holm < alpha and c.direction < 0:
        verdict, why = FAIL, f"below {c.baseline} (signed ranks favour {c.baseline}, p_Holm < {alpha})"
    else:
        verdict, why = INCONCLUSIVE, f"not distinguishable from {c.baseline} (p_Holm >= {alpha})"
    return verdict, f"{why}; {test}"


def images_needed(verdict: str, needed: float, have: int = 0, least: int = 0) -> float:
    """``needed`` for an INCONCLUSIVE (at least ``least``, and never fewer than the ``have`` images already scored
    plus one), NaN for a decided verdict."""
    if verdict != INCONCLUSIVE:
        return float("nan")
    return float(max(needed, least, have + 1)) if np.isfinite(needed) else needed


def images_needed_against_baseline(c, verdict: str, alpha: float, min_pairs: int) -> float:
    """Images the paired Wilcoxon test of a baseline comparison row would need at :data:`POWER` for its observed mean
    difference and spread (normal approximation, Bonferroni over the Holm family, Wilcoxon's efficiency 3/pi); NaN
    when the comparison cannot be decided by images (a baseline was not scored)."""
    if isinstance(c.unscored_baselines, str) and c.unscored_baselines:
        return float("nan")
    needed = images_for_mean_test(c.mean_diff, c.sd_diff, alpha, POWER, sides=2, family=int(c.n_tests),
                                  efficiency=WILCOXON_EFFICIENCY)
    return images_needed(verdict, needed, int(c.n_pairs), min_pairs)


def chosen_methods(ctx, criterion: str, methods) -> set[str]:
    """The study's methods a criterion scores: ``methods`` (a subset, checked) or all of them when ``None``."""
    available = {n for n, kind in ctx.kinds.items() if kind == "method"}
    unknown = sorted(set(methods or ()) - available)
    if unknown:
        raise ValueError(f"{criterion}: methods {unknown} are not among the study's methods {sorted(available)}")
    return available if methods is None else set(methods)
