"""Localisation utility (TRUST_METRICS.md section 1): do the maps point at the lesion, better than a baseline?"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pandas as pd
import torch
from monai.utils import look_up_option

from bundle.criteria.base import (
    INCONCLUSIVE, VERDICT_COLUMNS, Criterion, Record, images_needed_against_baseline, records_for,
    verdict_against_baseline,
)
from bundle.summary import compare_to_strongest_baseline
from bundle.trust.localization import (
    EXTRA_LOCALIZATION_METRICS, LOCALIZATION_METRICS, localization_scores, parse_binarization,
)
from bundle.trust.normalization import NORMALIZATIONS, normalize_maps


class Localization(Criterion):
    """Per-image AUPRC, AP, hit, mass, IoU and Dice of every map against the ground-truth mask.

    Verdict: a method PASSES when its ``verdict_metric`` beats the strongest baseline
    (highest mean among the baselines, e.g. the location prior) on the same images in a
    paired Wilcoxon signed-rank test whose p-value, Holm-adjusted across the study's grid,
    is below ``alpha``; it FAILS when it is significantly below that baseline; otherwise,
    or with fewer than ``min_pairs`` images scored by both, it is INCONCLUSIVE.

    Args:
        metrics: localisation scores to record (:data:`bundle.trust.LOCALIZATION_METRICS`, and ``rank`` and
            ``roc_auc`` by name).
        normalization: map normalisation before scoring: ``pair`` (default), ``minmax``, ``sum_to_one``.
        binarize: binarisation behind IoU and Dice: ``otsu`` (default), ``threshold:t``, ``topk:p``, ``bbox``.
        true_positive_only: IoU and Dice are NaN when either mask is empty (cheXlocalize's default).
        verdict_metric: the score the verdict is decided on.
        alpha: significance level of the Holm-adjusted test.
        min_pairs: fewest paired images for a verdict other than INCONCLUSIVE.
    """

    name = "localization"

    def __init__(
        self, metrics: Sequence[str] = LOCALIZATION_METRICS, normalization: str = "pair", binarize: str = "otsu",
        true_positive_only: bool = True, verdict_metric: str = "auprc", alpha: float = 0.05, min_pairs: int = 6,
    ) -> None:
        available = LOCALIZATION_METRICS + EXTRA_LOCALIZATION_METRICS
        self.metrics = tuple(look_up_option(m, available) for m in metrics)
        self.normalization = look_up_option(normalization, NORMALIZATIONS)
        parse_binarization(binarize)
        self.binarize, self.true_positive_only = binarize, true_positive_only
        if verdict_metric not in self.metrics:
            raise ValueError(f"verdict_metric {verdict_metric!r} must be one of the recorded metrics {self.metrics}")
        self.verdict_metric, self.alpha, self.min_pairs = verdict_metric, alpha, min_pairs

    @property
    def headline(self) -> str:
        return self.verdict_metric

    def evaluate_method(self, ctx, name: str) -> list[Record]:
        records = []
        for batch in ctx.batches():
            ids = ctx.image_ids(batch)
            maps, masks = ctx.maps(ctx.primary, name, batch), ctx.masks(batch)
            batch_records = self.score(maps, masks, ids, ctx.signed(name), model=ctx.primary.name, method=name,
                                       step="trained")
            self._report_undefined(ctx, name, ids, maps, masks)
            records += batch_records
        return records

    def score(self, maps: torch.Tensor, masks: torch.Tensor, ids: Sequence[str], signed: bool,
              **fields) -> list[Record]:
        """The records of one batch's maps against its masks under this criterion's settings, each metric in turn
        (``fields``: model, method, step): what the study and the per-epoch trust handler both record."""
        try:
            scores = localization_scores(maps, masks, self.metrics, self.normalization, signed, self.binarize,
                                         self.true_positive_only)
        except ValueError as error:
            raise ValueError(f"images {list(ids)}: {error}") from None
        return [record for metric, values in scores.items()
                for record in records_for(ids, values.tolist(), criterion=self.name, metric=metric, **fields)]

    def _report_undefined(self, ctx, name: str, ids: list[str], maps: torch.Tensor, masks: torch.Tensor) -> None:
        """Name every image whose scores are NaN by definition: empty mask, or a map with nothing to rank."""
        empty = masks.reshape(masks.shape[0], -1).amax(dim=1) <= 0.5
        degenerate = normalize_maps(maps, self.normalization, ctx.signed(name))[1]
        for image_id, no_lesion, flat in zip(ids, empty.tolist(), degenerate.tolist()):
            if no_lesion:
                ctx.warn_once(f"{image_id}: empty ground-truth mask; its localisation scores are NaN (counted)")
            if flat:
                ctx.warn_once(f"{self.name}: the {name} map of {image_id} is constant or not finite; its scores "
                              "are NaN (counted)")

    def deciding(self, records: pd.DataFrame) -> pd.DataFrame:
        return records[(records.criterion == self.name) & (records.metric == self.verdict_metric)]

    def comparisons(self, records: pd.DataFrame, kinds: Mapping[str, str], n_resamples: int, seed: int) -> pd.DataFrame:
        return compare_to_strongest_baseline(records, kinds, self.name, self.verdict_metric, True, n_resamples, seed)

    def verdicts(self, summary: pd.DataFrame, comparisons: pd.DataFrame) -> pd.DataFrame:
        rows = []
        mine = comparisons[comparisons.criterion == self.name] if len(comparisons) else comparisons
        for c in mine.itertuples(index=False):
            verdict, rule = verdict_against_baseline(c, self.verdict_metric, self.alpha, self.min_pairs,
                                                     "the strongest")
            rows.append({"criterion": self.name, "method": c.method, "verdict": verdict, "rule": rule,
                         "images_needed": images_needed_against_baseline(c, verdict, self.alpha, self.min_pairs)})
        compared = {row["method"] for row in rows}
        scored = summary[(summary.criterion == self.name) & (summary.kind == "method")].method.unique()
        rows += [{"criterion": self.name, "method": m, "verdict": INCONCLUSIVE, "rule": "no baseline to compare with"}
                 for m in scored if m not in compared]
        return pd.DataFrame(rows, columns=list(VERDICT_COLUMNS))
