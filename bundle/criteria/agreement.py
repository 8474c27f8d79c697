"""Repeatability and reproducibility (TRUST_METRICS.md section 4): do two models trained alike (another
seed), or two architectures, point at the same place? Judged against a second reader's agreement."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from bundle.criteria.base import FAIL, INCONCLUSIVE, PASS, VERDICT_COLUMNS, Criterion, Record, records_for
from bundle.models import ModelSpec
from bundle.summary import compare_to_strongest_baseline
from bundle.trust.agreement import AGREEMENT_METRICS, map_agreement, mask_overlap
from bundle.trust.similarity import ssim
from bundle.trust.stats import one_sample_test, paired_comparison

READERS = "readers"  # the reference row: a second reader's outline against the ground truth


class ModelAgreement(Criterion):
    """Per image: SSIM of the two models' normalised maps, IoU and Dice of their binarised maps.

    A baseline is scored when it can draw an independent second map (``independent_draw``:
    two uniform random maps); maps that ignore the model (edge, prior) would agree
    trivially and are left out. Where the data has a second reader's outline, the
    reader-vs-ground-truth agreement is the ``readers`` reference row.

    Verdict on ``verdict_metric``: weak rule, the mean is above ``weak_threshold`` (one-sided
    one-sample t-test); strong rule, it is not significantly below the readers' agreement on
    the same images (paired Wilcoxon, reported, not deciding); and, as for every criterion, it
    must beat the strongest baseline (paired Wilcoxon; two random maps binarised by Otsu agree
    well, because hole filling turns noise into near-full masks). The deciding tests are
    Holm-adjusted across the study's grid. PASS when the weak rule holds and the baseline is
    beaten (the rule says whether the strong rule holds too); FAIL when the weak rule fails or
    the method is significantly below the baseline; INCONCLUSIVE otherwise or with fewer than
    ``min_images`` defined images.

    Args:
        other: the second model, ``{"architecture", "seed"}``; missing keys are the primary model's.
        n_images: the first N study images (all when ``None``).
        normalization / binarize: as in the localisation criterion. data_range: SSIM's data range.
    """

    def __init__(self, other: Mapping | None = None, n_images: int | None = None, normalization: str = "pair",
                 binarize: str = "otsu", data_range: float = 1.0, verdict_metric: str = "iou",
                 weak_threshold: float = 0.5, alpha: float = 0.05, min_images: int = 3) -> None:
        self.other, self.n_images = dict(other or {}), n_images
        self.normalization, self.binarize, self.data_range = normalization, binarize, data_range
        if verdict_metric not in AGREEMENT_METRICS:
            raise ValueError(f"verdict_metric must be one of {AGREEMENT_METRICS}, got {verdict_metric!r}")
        self.verdict_metric, self.weak_threshold, self.alpha, self.min_images = (
            verdict_metric, weak_threshold, alpha, min_images)

    @property
    def headline(self) -> str:
        return self.verdict_metric

    def default_other(self, primary: ModelSpec) -> dict:
        raise NotImplementedError

    def other_model(self, primary: ModelSpec) -> ModelSpec:
        spec = ModelSpec(**{**self.default_other(primary), **self.other})
        if spec == primary:
            raise ValueError(f"{self.name}: the second model must differ from the model under study ({primary.name})")
        return spec

    def models(self, primary: ModelSpec) -> list[ModelSpec]:
        return [primary, self.other_model(primary)]

    def sources(self, ctx) -> list[str]:
        names = [n for n, kind in ctx.kinds.items()
                 if kind == "method" or (kind == "baseline" and hasattr(ctx.sources[n], "independent_draw"))]
        has_readers = any(ctx.reader_masks(batch) is not None for batch in ctx.study_batches(1))
        return names + [READERS] * has_readers

    def evaluate_method(self, ctx, name: str) -> list[Record]:
        primary, other = ctx.primary, self.other_model(ctx.primary)
        fields = {"model": primary.name, "method": name, "criterion": self.name, "step": "trained"}
        records = []
        for batch in ctx.batches(self.n_images):
            ids = ctx.image_ids(batch)
            if name == READERS:
                truth, reader = ctx.masks(batch)[:, 0] > 0.5, ctx.reader_masks(batch)[:, 0] > 0.5
                scores = {"ssim": ssim(truth.double(), reader.double(), 1.0), **mask_overlap(truth, reader)}
            else:
                source = ctx.sources[name]
                second = source.independent_draw() if ctx.kinds[name] == "baseline" else name
                scores = map_agreement(ctx.maps(primary, name, batch), ctx.maps(other, second, batch),
                                       ctx.signed(name), self.normalization, self.binarize, self.data_range)
            for metric in AGREEMENT_METRICS:
                records += records_for(ids, scores[metric].tolist(), metric=metric, **fields)
        return records

    def comparisons(self, records: pd.DataFrame, kinds: Mapping[str, str], n_resamples: int, seed: int) -> pd.DataFrame:
        mine = records[(records.criterion == self.name) & (records.metric == self.verdict_metric)]
        readers = mine[mine.method == READERS].set_index("image_id").value
        out = []
        for method, group in mine[mine.method.map(kinds).eq("method")].groupby("method", sort=False):
            values = group.set_index("image_id").value.sort_index()
            weak = one_sample_test(values.to_numpy(), self.weak_threshold, "greater")
            row = {"criterion": self.name, "method": method, "metric": self.verdict_metric, "unscored_baselines": "",
                   "in_grid": True}
            out.append({**row, "test": "weak", "baseline": f"threshold {self.weak_threshold}",
                        "baseline_value": self.weak_threshold,
                        "n_pairs": weak.n, "mean_diff": weak.mean - self.weak_threshold, "ci_low": np.nan,
                        "ci_high": np.nan, "p_value": weak.p_value,
                        "direction": int(np.sign(weak.mean - self.weak_threshold)) if weak.n else 0})
            if len(readers):
                c = paired_comparison(values.to_numpy(), readers.reindex(values.index).to_numpy(), n_resamples,
                                      seed=seed)
                out.append({**row, "in_grid": False, "test": "strong", "baseline": READERS,
                            "baseline_value": float(readers.mean()), "n_pairs": c.n,
                            "mean_diff": c.mean_diff, "ci_low": c.ci_low, "ci_high": c.ci_high, "p_value": c.p_value,
                            "direction": c.direction})
        versus_baseline = compare_to_strongest_baseline(records[records.method != READERS], kinds, self.name,
                                                        self.verdict_metric, True, n_resamples, seed)
        return pd.concat([pd.DataFrame(out), versus_baseline.assign(test="baseline", in_grid=True)],
                         ignore_index=True)

    def verdicts(self, summary: pd.DataFrame, comparisons: pd.DataFrame) -> pd.DataFrame:
        mine = comparisons[comparisons.criterion == self.name] if len(comparisons) else comparisons
        rows = []
        for method, group in mine.groupby("method", sort=False):
            weak = next(group[group.test == "weak"].itertuples(index=False))
            mean = weak.baseline_value + weak.mean_diff
            weak_holds = weak.p_holm < self.alpha
            text = (f"weak: mean {self.verdict_metric} {mean:.3f} {'above' if weak_holds else 'not above'} "
                    f"{self.weak_threshold} (one-sided t-test, n {weak.n_pairs}, p_Holm {weak.p_holm:.2g})")
            versus = group[group.test == "baseline"]
            beats = below = False
            if len(versus):
                b = next(versus.itertuples(index=False))
                beats, below = b.p_holm < self.alpha and b.direction > 0, b.p_holm < self.alpha and b.direction < 0
                text += (f"; vs {b.baseline}: diff {b.mean_diff:+.3f} [{b.ci_low:+.3f}, {b.ci_high:+.3f}], "
                         f"Wilcoxon p_Holm {b.p_holm:.2g} "
                         f"({'beats it' if beats else 'below it' if below else 'not distinguishable'})")
            else:
                text += "; no baseline scored"
            strong = group[group.test == "strong"]
            if len(strong):
                s = next(strong.itertuples(index=False))
                below_readers = s.p_value < self.alpha and s.direction < 0
                outcome = "untested" if not np.isfinite(s.p_value) else \
                    "FAILS, significantly below" if below_readers else "holds, not below"
                text += f"; strong: {outcome} the readers' {s.baseline_value:.3f} (paired Wilcoxon p {s.p_value:.2g})"
            else:
                text += "; strong: no second reader in this data"
            if weak.n_pairs < self.min_images or not np.isfinite(weak.p_holm):
                verdict = INCONCLUSIVE
            elif not weak_holds or below:
                verdict = FAIL
            else:
                verdict = PASS if beats else INCONCLUSIVE
            rows.append({"criterion": self.name, "method": method, "verdict": verdict, "rule": text})
        return pd.DataFrame(rows, columns=list(VERDICT_COLUMNS))


class Repeatability(ModelAgreement):
    """The model under study against the same architecture trained with another seed (default: seed + 1)."""

    name = "repeatability"

    def default_other(self, primary: ModelSpec) -> dict:
        return {"architecture": primary.architecture, "seed": primary.seed + 1}


class Reproducibility(ModelAgreement):
    """The model under study against another architecture trained with the same seed (default: InceptionV3, or
    DenseNet121 when the model under study is an InceptionV3)."""

    name = "reproducibility"

    def default_other(self, primary: ModelSpec) -> dict:
        other = "densenet121" if primary.architecture == "inception_v3" else "inception_v3"
        return {"architecture": other, "seed": primary.seed}
