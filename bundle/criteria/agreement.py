"""Repeatability and reproducibility (TRUST_METRICS.md section 4): do two models trained alike (another
seed), or two architectures, point at the same place? Judged against a second reader's agreement."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
import torch

from bundle.criteria.base import (
    FAIL, INCONCLUSIVE, PASS, POWER, VERDICT_COLUMNS, Criterion, Record, images_needed,
    images_needed_against_baseline, records_for,
)
from bundle.models import ModelSpec
from bundle.summary import compare_to_strongest_baseline
from bundle.trust.agreement import AGREEMENT_METRICS, EQUAL_AREA, agreement_binarization, map_agreement, mask_overlap
from bundle.trust.similarity import ssim
from bundle.trust.stats import images_for_mean_test, one_sample_test, paired_comparison

SECOND_READER = "readers"  # the reference row: a second reader's outline against the ground truth


class ModelAgreement(Criterion):
    """Per image: SSIM of the two models' normalised maps, IoU and Dice of their binarised maps.

    Both maps of a pair are binarised at the same area (``binarize="area"``, the default): their
    top k % of pixels, k the mean area of the ground-truth masks of the criterion's images, so two
    independent random maps agree at chance, IoU about k / (200 - k) (TRUST_METRICS.md section 4).
    Otsu (``binarize="otsu"``, cheXlocalize's binarisation) fills holes and turns noise into
    near-full masks: two random maps agreed at IoU 0.86 under it, above two radiologists.

    A source is scored on the second model with an independent draw of itself when it has one
    (``independent_draw``: the uniform random map, the calibration controls); maps that ignore the
    model and have none (edge, prior) would agree trivially and are left out. Where the data has a
    second reader's outline, the reader-vs-ground-truth agreement is the ``readers`` reference row.

    Verdict on ``verdict_metric``: weak rule, the mean is above ``weak_threshold`` (one-sided
    one-sample t-test); strong rule, it is not significantly below the readers' agreement on
    the same images (paired Wilcoxon, reported, not deciding); and, as for every criterion, it
    must beat the strongest baseline (paired Wilcoxon). The deciding tests are
    Holm-adjusted across the study's grid. PASS when the weak rule holds and the baseline is
    beaten (the rule says whether the strong rule holds too); FAIL when the weak rule fails or
    the method is significantly below the baseline; INCONCLUSIVE otherwise or with fewer than
    ``min_images`` defined images.

    The settings are documented on ``__init__``, which :class:`Repeatability` and :class:`Reproducibility` share.
    """

    def __init__(self, other: Mapping | None = None, n_images: int | None = None, normalization: str = "pair",
                 binarize: str = EQUAL_AREA, data_range: float = 1.0, verdict_metric: str = "iou",
                 weak_threshold: float = 0.5, alpha: float = 0.05, min_images: int = 3) -> None:
        """The settings of a two-model agreement criterion.

        Args:
            other: the second model, ``{"architecture", "seed"}``; missing keys take the subclass's default
                (:class:`Repeatability`: seed + 1, :class:`Reproducibility`: another architecture).
            n_images: the first N study images (all when ``None``).
            normalization: map normalisation before SSIM and binarisation, as in the localisation criterion
                (``pair`` default, ``minmax``, ``sum_to_one``).
            binarize: ``area`` (default: both maps at the reference masks' mean area), or any localisation
                binarisation (``otsu``, ``topk:p``, ``threshold:t``, ``bbox``) applied to each map on its own.
            data_range: SSIM's data range, 1.0 for maps in [0, 1] (2.0 reproduces the published code).
            verdict_metric: the agreement score the verdict is decided on: ``iou`` (default), ``dice`` or ``ssim``.
            weak_threshold: the mean ``verdict_metric`` the weak rule's one-sided t-test must exceed (0.5).
            alpha: significance level of the Holm-adjusted tests.
            min_images: fewest defined images for a verdict other than INCONCLUSIVE.
        """
        agreement_binarization(binarize, 0.5)  # checked here, before any map is computed
        self.other, self.n_images = dict(other or {}), n_images
        self.normalization, self.binarize, self.data_range = normalization, binarize, data_range
        self._area = None  # the reference masks' mean area (percent), once measured
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
        masks = [ctx.masks(batch) > 0.5 for batch in ctx.study_batches(self.n_images)]
        self._area = float(100 * torch.cat([m.reshape(len(m), -1) for m in masks]).double().mean())
        has_readers = any(ctx.reader_masks(batch) is not None for batch in ctx.study_batches(1))
        return names + [SECOND_READER] * has_readers

    def evaluate_method(self, ctx, name: str) -> list[Record]:
        primary, other = ctx.primary, self.other_model(ctx.primary)
        if name != SECOND_READER and len(ctx.applicable([primary, other], name)) < 2:
            raise ValueError(f"{name} is defined on one of {primary.name} and {other.name} only: no pair of maps "
                             "to compare (an attention map needs a transformer on both sides)")
        fields = {"model": primary.name, "method": name, "criterion": self.name, "step": "trained"}
        binarization, records = agreement_binarization(self.binarize, self._area), []
        for batch in ctx.batches(self.n_images):
            ids = ctx.image_ids(batch)
            if name == SECOND_READER:
                truth, reader = ctx.masks(batch)[:, 0] > 0.5, ctx.reader_masks(batch)[:, 0] > 0.5
                scores = {"ssim": ssim(truth.double(), reader.double(), 1.0), **mask_overlap(truth, reader)}
            else:
                source = ctx.sources[name]
                second = source.independent_draw() if hasattr(source, "independent_draw") else name
                scores = map_agreement(ctx.maps(primary, name, batch), ctx.maps(other, second, batch),
                                       ctx.signed(name), self.normalization, binarization, self.data_range)
            for metric in AGREEMENT_METRICS:
                records += records_for(ids, scores[metric].tolist(), metric=metric, **fields)
        return records

    def deciding(self, records: pd.DataFrame) -> pd.DataFrame:
        return records[(records.criterion == self.name) & (records.metric == self.verdict_metric)]

    def comparisons(self, records: pd.DataFrame, kinds: Mapping[str, str], n_resamples: int, seed: int) -> pd.DataFrame:
        mine = self.deciding(records)
        wide = mine.pivot(index="image_id", columns="method", values="value").sort_index()  # paired by image id
        readers = wide[SECOND_READER] if SECOND_READER in wide else None
        out = []
        for method in dict.fromkeys(mine.method[mine.method.map(kinds).eq("method")]):
            values = wide[method]
            weak = one_sample_test(values.to_numpy(), self.weak_threshold, "greater")
            row = {"criterion": self.name, "method": method, "metric": self.verdict_metric, "unscored_baselines": "",
                   "in_grid": True}
            out.append({**row, "test": "weak", "baseline": f"threshold {self.weak_threshold}",
                        "baseline_value": self.weak_threshold,
                        "n_pairs": weak.n, "mean_diff": weak.mean - self.weak_threshold, "ci_low": np.nan,
                        "ci_high": np.nan, "sd_diff": weak.sd, "p_value": weak.p_value,
                        "direction": int(np.sign(weak.mean - self.weak_threshold)) if weak.n else 0})
            if readers is not None:
                c = paired_comparison(values.to_numpy(), readers.to_numpy(), n_resamples, seed=seed)
                out.append({**row, "in_grid": False, "test": "strong", "baseline": SECOND_READER,
                            "baseline_value": float(readers.mean()), "n_pairs": c.n,
                            "mean_diff": c.mean_diff, "ci_low": c.ci_low, "ci_high": c.ci_high, "sd_diff": c.sd_diff,
                            "p_value": c.p_value, "direction": c.direction})
        versus_baseline = compare_to_strongest_baseline(records[records.method != SECOND_READER], kinds, self.name,
                                                        self.verdict_metric, True, n_resamples, seed)
        return pd.concat([pd.DataFrame(out), versus_baseline.assign(test="baseline", in_grid=True)],
                         ignore_index=True)

    def verdicts(self, summary: pd.DataFrame, comparisons: pd.DataFrame) -> pd.DataFrame:
        mine = comparisons[comparisons.criterion == self.name] if len(comparisons) else comparisons
        rows, tests = [], {}
        for c in mine.itertuples(index=False):  # one pass: itertuples is costly, and verdicts are bootstrapped
            tests.setdefault(c.method, {})[c.test] = c
        for method, found in tests.items():
            weak, b, s = found["weak"], found.get("baseline"), found.get("strong")
            mean = weak.baseline_value + weak.mean_diff
            weak_holds = weak.p_holm < self.alpha
            text = (f"weak: mean {self.verdict_metric} {mean:.3f} {'above' if weak_holds else 'not above'} "
                    f"{self.weak_threshold} (one-sided t-test, n {weak.n_pairs}, p_Holm {weak.p_holm:.2g})")
            beats = below = False
            if b is not None:
                beats, below = b.p_holm < self.alpha and b.direction > 0, b.p_holm < self.alpha and b.direction < 0
                text += (f"; vs {b.baseline}: diff {b.mean_diff:+.3f} [{b.ci_low:+.3f}, {b.ci_high:+.3f}], "
                         f"Wilcoxon p_Holm {b.p_holm:.2g} "
                         f"({'beats it' if beats else 'below it' if below else 'not distinguishable'})")
            else:
                text += "; no baseline scored"
            if s is not None:
                below_readers = s.p_value < self.alpha and s.direction < 0
                outcome = "untested" if not np.isfinite(s.p_value) else \
                    "FAILS, significantly below" if below_readers else "holds, not below"
                text += f"; strong: {outcome} the readers' {s.baseline_value:.3f} (paired Wilcoxon p {s.p_value:.2g})"
            else:
                text += "; strong: no second reader in this data"
            needed = float("nan")
            if weak.n_pairs < self.min_images or not np.isfinite(weak.p_holm):
                verdict = INCONCLUSIVE
                needed = images_needed(verdict, images_for_mean_test(weak.mean_diff, weak.sd_diff, self.alpha, POWER,
                                                                     sides=1, family=int(weak.n_tests)),
                                       int(weak.n_pairs), self.min_images)
            elif not weak_holds or below:
                verdict = FAIL
            else:
                verdict = PASS if beats else INCONCLUSIVE
                if b is not None:
                    needed = images_needed_against_baseline(b, verdict, self.alpha, self.min_images)
            if self.binarize == EQUAL_AREA and self._area is not None:
                text += f"; maps binarised at equal area, the top {self._area:.1f} % (the reference masks' mean area)"
            rows.append({"criterion": self.name, "method": method, "verdict": verdict, "rule": text,
                         "images_needed": needed})
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
