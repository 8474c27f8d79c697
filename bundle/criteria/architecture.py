"""Localisation across architectures: do the model under study's maps point at the lesion better than another
architecture's best map, on the same images? The question the radiology literature left open for vision
transformers (Wollek et al. 2023 reported attention maps localising pneumothorax better than CNN saliency)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pandas as pd

from bundle.criteria.base import (
    VERDICT_COLUMNS, Record, chosen_methods, images_needed_against_baseline, verdict_against_baseline,
)
from bundle.criteria.localization import Localization
from bundle.models import ModelSpec
from bundle.trust.stats import paired_comparison


class ArchitectureLocalization(Localization):
    """Per image, the ``verdict_metric`` (AUPRC) of the study model's maps and of every map of the ``other``
    model, against the same ground-truth masks (the localisation criterion's scoring).

    The other model's best map is its method with the highest mean on these images; chosen on the same images,
    which favours it, so a PASS is conservative. Verdict per method of the study model: paired Wilcoxon
    signed-rank test of its scores against that best map's, image by image, Holm-adjusted across the study's
    grid: PASS when the study model's map localises better, FAIL when worse, otherwise (or with fewer than
    ``min_pairs`` images) INCONCLUSIVE.

    Args:
        other: the other model, ``{"architecture", "seed"}`` (seed: the study model's when missing).
        methods: the study model's methods compared (``None``: every one that runs on it); every method that
            runs on the other model competes for its best map.
        verdict_metric: the localisation score compared (``auprc``, or another of the localisation criterion's).
        normalization: map normalisation before scoring, as the localisation criterion's (``pair`` default).
        binarize: binarisation behind IoU and Dice, as the localisation criterion's (``otsu`` default).
        true_positive_only: IoU and Dice are NaN when either mask is empty.
        alpha: significance level of the Holm-adjusted test.
        min_pairs: fewest paired images for a verdict other than INCONCLUSIVE.
    """

    name = "architecture_localization"
    tabled = None

    def __init__(self, other: Mapping, methods: Sequence[str] | None = None, verdict_metric: str = "auprc",
                 normalization: str = "pair", binarize: str = "otsu", true_positive_only: bool = True,
                 alpha: float = 0.05, min_pairs: int = 6) -> None:
        if "architecture" not in other:
            raise ValueError(f"{self.name}: `other` must name the architecture compared with, got {dict(other)}")
        super().__init__([verdict_metric], normalization, binarize, true_positive_only, verdict_metric, alpha,
                         min_pairs)
        self.other, self.methods = dict(other), None if methods is None else list(methods)

    def other_model(self, primary: ModelSpec) -> ModelSpec:
        return ModelSpec(**{"seed": primary.seed, **self.other})

    def models(self, primary: ModelSpec) -> list[ModelSpec]:
        other = self.other_model(primary)
        if other.architecture == primary.architecture:
            raise ValueError(f"{self.name} compares two architectures, but `other` is the study's own "
                             f"({primary.architecture}); two seeds of one architecture are repeatability's question")
        return [primary, other]

    def sources(self, ctx) -> list[str]:
        chosen, other = chosen_methods(ctx, self.name, self.methods), self.other_model(ctx.primary)
        return [n for n, kind in ctx.kinds.items() if kind == "method" and (n in chosen or ctx.applicable([other], n))]

    def evaluate_method(self, ctx, name: str) -> list[Record]:
        """The source's scores on each model it is compared on: the study model when chosen, the other when it
        runs there."""
        specs = [self.other_model(ctx.primary)]
        if name in chosen_methods(ctx, self.name, self.methods):
            specs.insert(0, ctx.primary)
        records = []
        for spec in ctx.applicable(specs, name):
            for batch in ctx.batches():
                records += self.score(ctx.maps(spec, name, batch), ctx.masks(batch), ctx.image_ids(batch),
                                      ctx.signed(name), model=spec.name, method=name, step="trained")
        return records

    def comparisons(self, records: pd.DataFrame, kinds: Mapping[str, str], n_resamples: int, seed: int) -> pd.DataFrame:
        rows = records[(records.criterion == self.name) & (records.metric == self.verdict_metric)]
        other = rows.model.str.rsplit("_seed", n=1).str[0] == self.other["architecture"]  # <architecture>_seed<n>
        theirs, mine = rows[other], rows[~other]
        means = theirs.groupby("method")["value"].mean().dropna()
        if means.empty or mine.empty:
            return pd.DataFrame()
        best = str(means.idxmax())
        best_rows = theirs[theirs.method == best]
        reference = best_rows.set_index("image_id")["value"]
        label = f"{best} on {best_rows.model.iloc[0]}"
        out = []
        for (model, method), group in mine.groupby(["model", "method"], sort=False):
            values = group.set_index("image_id")["value"]
            ids = sorted(set(values.index) & set(reference.index))  # paired by image id, never by position
            c = paired_comparison(values[ids].to_numpy(), reference[ids].to_numpy(), n_resamples, seed=seed)
            out.append({"criterion": self.name, "method": method, "metric": self.verdict_metric, "baseline": label,
                        "n_pairs": c.n, "mean_diff": c.mean_diff, "ci_low": c.ci_low, "ci_high": c.ci_high,
                        "sd_diff": c.sd_diff, "p_value": c.p_value, "direction": c.direction,
                        "unscored_baselines": ""})
        return pd.DataFrame(out)

    def verdicts(self, summary: pd.DataFrame, comparisons: pd.DataFrame) -> pd.DataFrame:
        rows = []
        mine = comparisons[comparisons.criterion == self.name] if len(comparisons) else comparisons
        for c in mine.itertuples(index=False):
            verdict, rule = verdict_against_baseline(c, self.verdict_metric, self.alpha, self.min_pairs)
            rows.append({"criterion": self.name, "method": c.method, "verdict": verdict, "rule": rule,
                         "images_needed": images_needed_against_baseline(c, verdict, self.alpha, self.min_pairs)})
        return pd.DataFrame(rows, columns=list(VERDICT_COLUMNS))
