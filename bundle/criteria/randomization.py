"""Sensitivity to the model (TRUST_METRICS.md sections 2-3): a trustworthy map changes when the model's
weights are randomised (cascading or independent re-initialisation) or when the model is retrained on
permuted labels (Adebayo et al. 2018; Arun et al. 2021; Venkatesh et al. 2024)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from itertools import combinations

import numpy as np
import pandas as pd
import torch
from monai.utils import look_up_option

from bundle.criteria.base import (
    FAIL, INCONCLUSIVE, PASS, POWER, VERDICT_COLUMNS, Criterion, Record, images_needed, records_for,
)
from bundle.models import ModelSpec
from bundle.networks import get_architecture, randomisation_blocks_of
from bundle.trust.localization import localization_scores
from bundle.trust.normalization import normalize_maps
from bundle.trust.randomization import RANDOMIZATION_MODES, WeightRandomization
from bundle.trust.similarity import spearman, ssim
from bundle.trust.stats import bootstrap_summary, images_for_mean_test, one_sample_test

UNRELATED = "unrelated_ssim"  # the baseline: SSIM between the trained model's maps of two different images


class MapSensitivity(Criterion):
    """Maps of a changed model against the trained model's maps of the same images, per step.

    Records per image and step: SSIM and Spearman of the normalised maps, and the changed
    map's localisation AUPRC; per model and source, the unrelated-pairs baseline (SSIM of
    the trained maps of ``unrelated_pairs`` distinct image pairs). Verdict (MURA study): a
    step passes when a one-sided one-sample t-test says the mean SSIM is below the
    baseline, Holm-adjusted across the study's grid (p_Holm < ``alpha``); a source PASSES
    when its last step passes on every model, FAILS when it does not on some model, and is
    INCONCLUSIVE with fewer than ``min_images`` defined images. Baselines get verdicts
    too: a map that ignores the model (the edge map) must FAIL.

    The settings are documented on ``__init__``, which :class:`LabelRandomization` shares (and
    :class:`CascadingRandomization` receives through ``**settings``).
    """

    headline = "ssim"
    higher_is_better = False  # a map that changes with the model is less similar to the trained model's
    _judged = True  # whether the last step is the changed model the pass rule is defined on
    _unjudged_reason = ""

    def __init__(self, n_images: int | None = None, normalization: str = "pair", data_range: float = 1.0,
                 unrelated_pairs: int = 50, alpha: float = 0.05, seed: int = 0, min_images: int = 3) -> None:
        """The settings shared by the map-sensitivity criteria.

        Args:
            n_images: the first N study images (all when ``None``): every step costs a map per image.
            normalization: map normalisation before SSIM and Spearman: ``pair`` (default), ``minmax``,
                ``sum_to_one``.
            data_range: SSIM's data range, 1.0 for maps in [0, 1]; 2.0 reproduces the published code.
            unrelated_pairs: image pairs behind the baseline (all distinct pairs when there are fewer).
            alpha: significance level of the one-sided t-tests (Holm-adjusted for methods).
            seed: seeds the draw of the unrelated pairs.
            min_images: fewest defined images for a verdict other than INCONCLUSIVE.
        """
        self.n_images, self.normalization, self.data_range = n_images, normalization, data_range
        self.unrelated_pairs, self.alpha, self.seed, self.min_images = unrelated_pairs, alpha, seed, min_images

    def compared_models(self, primary: ModelSpec) -> list[ModelSpec]:
        """The trained models whose maps are compared with their changed versions."""
        return [primary]

    def changed_maps(self, ctx, spec: ModelSpec, name: str, batch) -> Iterator[tuple[str, torch.Tensor]]:
        """``(step, maps of the changed model)`` for each step, in order."""
        raise NotImplementedError

    def sources(self, ctx) -> list[str]:
        return [n for n, kind in ctx.kinds.items() if kind != "reference"]  # the oracle has no model to change

    def evaluate_method(self, ctx, name: str) -> list[Record]:
        signed, records = ctx.signed(name), []
        for spec in ctx.applicable(self.compared_models(ctx.primary), name):
            fields = {"model": spec.name, "method": name, "criterion": self.name}
            for batch in ctx.batches(self.n_images):
                ids, masks = ctx.image_ids(batch), ctx.masks(batch)
                trained, flat = normalize_maps(ctx.maps(spec, name, batch), self.normalization, signed)
                for step, maps in self.changed_maps(ctx, spec, name, batch):
                    unit, changed_flat = normalize_maps(maps, self.normalization, signed)
                    undefined = (flat | changed_flat).to(unit.device)
                    scores = {"ssim": ssim(trained, unit, self.data_range), "spearman": spearman(trained, unit),
                              "auprc": localization_scores(maps, masks, ["auprc"], self.normalization, signed)["auprc"]}
                    for metric, values in scores.items():
                        if metric != "auprc":
                            values = torch.where(undefined.to(values.device), float("nan"), values)
                        records += records_for(ids, values.tolist(), metric=metric, step=step, **fields)
        return records

    def evaluate_across_images(self, ctx, name: str) -> list[Record]:
        """Per compared model, the unrelated-pairs baseline: SSIM of the trained maps of distinct image pairs
        (seeded draw), what a changed map must go below. Pairs span every image, so it runs after the per-image
        records (the maps come from the cache)."""
        signed, records = ctx.signed(name), []
        for spec in ctx.applicable(self.compared_models(ctx.primary), name):
            units, ids = [], []
            for batch in ctx.study_batches(self.n_images):
                trained, flat = normalize_maps(ctx.maps(spec, name, batch), self.normalization, signed)
                units.append(torch.where(flat.reshape(-1, *[1] * (trained.ndim - 1)), float("nan"), trained))
                ids += ctx.image_ids(batch)
            records += self._unrelated(torch.cat(units), ids, {"model": spec.name, "method": name,
                                                               "criterion": self.name})
        return records

    def _unrelated(self, units: torch.Tensor, ids: list[str], fields: Mapping) -> list[Record]:
        """SSIM of the trained maps of ``unrelated_pairs`` distinct image pairs (seeded draw)."""
        pairs = list(combinations(range(len(ids)), 2))
        if len(pairs) > self.unrelated_pairs:
            chosen = np.random.default_rng([self.seed, 11]).choice(len(pairs), self.unrelated_pairs, replace=False)
            pairs = [pairs[i] for i in sorted(chosen)]
        if not pairs:
            return []
        first, second = (torch.as_tensor(side) for side in zip(*pairs))
        values = ssim(units[first], units[second], self.data_range)
        return records_for([f"{ids[i]}|{ids[j]}" for i, j in pairs], values.tolist(), metric=UNRELATED,
                           step="trained", **fields)

    def deciding(self, records: pd.DataFrame) -> pd.DataFrame:
        """The unrelated-pairs baseline and the SSIM of each model's last step."""
        mine = records[records.criterion == self.name]
        similarity = mine[mine.metric == "ssim"]
        last = similarity.groupby("model", sort=False).step.last()  # steps come in cascade order
        return mine[(mine.metric == UNRELATED) | ((mine.metric == "ssim") & mine.step.eq(mine.model.map(last)))]

    def comparisons(self, records: pd.DataFrame, kinds: Mapping[str, str], n_resamples: int, seed: int) -> pd.DataFrame:
        """Per model, source and step: one-sided t-test of SSIM below the unrelated-pairs mean. Each model's last
        step decides the verdict; for methods it enters Holm's family, earlier steps and the baselines' sanity
        rows keep their raw p (outside the method grid)."""
        mine = records[records.criterion == self.name]
        baselines = mine[mine.metric == UNRELATED].groupby(["model", "method"]).value.mean()
        similarity = mine[mine.metric == "ssim"]
        last = similarity.groupby(["model", "method"], sort=False).step.last()  # steps come in cascade order
        out = []
        # one grouping, each step's values in image-id order (the order of its bootstrap)
        for (model, method, step), values in similarity.sort_values("image_id", kind="stable").groupby(
                ["model", "method", "step"], sort=False).value:
            values, baseline = values.to_numpy(), float(baselines.get((model, method), np.nan))
            test = one_sample_test(values, baseline, "less")
            s = bootstrap_summary(values - baseline, n_resamples, seed=seed)
            decides = step == last[(model, method)]
            out.append({"criterion": self.name, "method": method, "metric": "ssim", "model": model, "step": step,
                        "baseline": "unrelated_pairs", "baseline_value": baseline, "n_pairs": test.n,
                        "mean_diff": s.mean, "ci_low": s.ci_low, "ci_high": s.ci_high, "sd_diff": test.sd,
                        "p_value": test.p_value,
                        "direction": int(np.sign(s.mean)) if np.isfinite(s.mean) else 0,
                        "unscored_baselines": "", "decides": decides,
                        "in_grid": decides and kinds.get(method) == "method"})
        return pd.DataFrame(out)

    def verdicts(self, summary: pd.DataFrame, comparisons: pd.DataFrame) -> pd.DataFrame:
        mine = comparisons[comparisons.criterion == self.name] if len(comparisons) else comparisons
        mine = mine[mine.decides.eq(True)] if len(mine) else mine  # no rows: every source failed, no column either
        rows, by_method = [], {}
        for c in mine.itertuples(index=False):  # one pass: itertuples is costly, and verdicts are bootstrapped
            by_method.setdefault(c.method, []).append(c)
        for method, group in by_method.items():
            outcomes, texts, needed = [], [], []
            for c in group:
                p = c.p_holm if c.in_grid else c.p_value  # baselines' sanity rows: outside the method grid
                if c.n_pairs < self.min_images or not np.isfinite(p):
                    outcome = INCONCLUSIVE
                    family = int(c.n_tests) if c.in_grid else 1
                    needed.append(images_needed(outcome, images_for_mean_test(
                        c.mean_diff, c.sd_diff, self.alpha, POWER, sides=1, family=family), int(c.n_pairs),
                        self.min_images))
                else:
                    outcome = PASS if p < self.alpha and c.direction < 0 else FAIL
                outcomes.append(outcome)
                texts.append(f"{c.model} at {c.step}: SSIM {c.baseline_value + c.mean_diff:.3f} vs unrelated pairs "
                             f"{c.baseline_value:.3f} (n {c.n_pairs}, one-sided t-test p {c.p_value:.2g}"
                             + (f", p_Holm {c.p_holm:.2g}" if c.in_grid else "") + f") {outcome}")
            verdict = FAIL if FAIL in outcomes else PASS if outcomes and set(outcomes) == {PASS} else INCONCLUSIVE
            rule = (f"PASS needs SSIM(trained, changed) below the unrelated-pairs baseline (p_Holm < {self.alpha} "
                    f"for methods) on every model: " + "; ".join(texts))
            if not self._judged:
                verdict, rule, needed = INCONCLUSIVE, f"{self._unjudged_reason}; last steps: " + "; ".join(texts), []
            rows.append({"criterion": self.name, "method": method, "verdict": verdict, "rule": rule,
                         "images_needed": max(needed) if verdict == INCONCLUSIVE and needed else float("nan")})
        return pd.DataFrame(rows, columns=list(VERDICT_COLUMNS))


class CascadingRandomization(MapSensitivity):
    """Weight randomisation (TRUST_METRICS.md section 2): blocks re-initialised from the output back to the
    input, cumulatively (``cascading``) or one at a time (``independent``), in place from one saved state.

    Args:
        architectures: the architectures randomised (each trained with the primary model's seed); the
            primary model is always one of them.
        mode: ``cascading`` (default) or ``independent``.
        steps: per architecture, the block names to stop at (all blocks when missing or ``None``):
            a cheaper profile can skip intermediate steps and keep the fully randomised one.
        randomization_seed: seeds each block's re-initialisation.
    """

    name = "cascading_randomization"
    figure = "randomization_curves"

    def __init__(self, architectures: Sequence[str] = (), mode: str = "cascading",
                 steps: Mapping[str, Sequence[str] | None] | None = None, randomization_seed: int = 0,
                 **settings) -> None:
        super().__init__(**settings)
        self.architectures, self.mode = tuple(architectures), look_up_option(mode, RANDOMIZATION_MODES)
        self.steps = {k: list(v) if v is not None else None for k, v in (steps or {}).items()}
        self.randomization_seed = randomization_seed
        for architecture, chosen in self.steps.items():
            blocks = get_architecture(architecture).randomisation_blocks
            last = blocks[-1][0] if blocks else None  # a user's network: its blocks are known once it is built
            if mode == "cascading" and chosen is not None and last is not None and chosen[-1:] != [last]:
                raise ValueError(f"{self.name}: the {architecture} steps {chosen} must end at {last!r}, the fully "
                                 "randomised model the pass rule is defined on")
        self._judged = mode == "cascading"
        self._unjudged_reason = ("independent randomisation changes one block at a time: no step is the fully "
                                "randomised model the pass rule needs, read the per-step table")

    def models(self, primary: ModelSpec) -> list[ModelSpec]:
        return [primary] + [ModelSpec(a, primary.seed) for a in dict.fromkeys(self.architectures)
                            if a != primary.architecture]

    def compared_models(self, primary: ModelSpec) -> list[ModelSpec]:
        return self.models(primary)

    def _randomization(self, ctx, spec: ModelSpec) -> WeightRandomization:
        model = ctx.model(spec)
        return WeightRandomization(model, randomisation_blocks_of(model), self.mode, self.randomization_seed,
                                   self.steps.get(spec.architecture))

    def changed_maps(self, ctx, spec: ModelSpec, name: str, batch) -> Iterator[tuple[str, torch.Tensor]]:
        randomization = self._randomization(ctx, spec)
        if getattr(ctx.sources[name], "ignores_model", False):  # the same maps on every step: nothing to re-initialise
            trained = ctx.maps(spec, name, batch)
            yield from ((randomization.step_name(block), trained) for block in randomization.steps)
            return
        # the cache key's step carries the seed and device: either changes the randomised model
        yield from randomization.map_steps(
            lambda cache_step, randomised: ctx.maps(spec, name, batch, step=cache_step, model=randomised))


class LabelRandomization(MapSensitivity):
    """Label randomisation (TRUST_METRICS.md section 3): the same architecture and seed retrained on
    permuted labels (the study trains it when missing); its maps should differ from the trained model's."""

    name = "label_randomization"
    STEP = "permuted_labels"

    def models(self, primary: ModelSpec) -> list[ModelSpec]:
        return [primary, ModelSpec(primary.architecture, primary.seed, permuted_labels=True)]

    def changed_maps(self, ctx, spec: ModelSpec, name: str, batch) -> Iterator[tuple[str, torch.Tensor]]:
        changed = spec if getattr(ctx.sources[name], "ignores_model", False) else self.models(spec)[1]
        yield self.STEP, ctx.maps(changed, name, batch)
