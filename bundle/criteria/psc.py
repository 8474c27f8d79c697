"""Prediction-saliency correlation (TRUST_METRICS.md section 5; Zhang et al. 2024): when an attack within a
small L-infinity ball changes the prediction, does the map change with it, and when it moves the map, does
the prediction move too?"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pandas as pd
import torch

from bundle.criteria.base import (
    FAIL, INCONCLUSIVE, PASS, POWER, VERDICT_COLUMNS, Criterion, Record, chosen_methods, images_needed, records_for,
)
from bundle.saliency import get_method
from bundle.saliency.base import target_tensor
from bundle.saliency.differentiable import DIFFERENTIABLE, differentiable_map
from bundle.summary import SUMMARY_COLUMNS
from bundle.trust.stats import images_for_correlation
from bundle.trust.psc import (
    PSC_ATTACKS, Attack, attacked_images, class_probability, map_divergence, prediction_divergence, psc,
)

PUBLISHED = {"sensitivity": "0.25 [0.12, 0.38]", "robustness": "0.12 [0.00, 0.25]"}  # Zhang et al. 2024, CheXpert
# the pass counts of the maps an attack differentiates: every iteration costs a double backward pass per count
SURROGATES = {"ig": {"n_steps": 10}, "smoothgrad": {"nt_samples": 10}, "smoothig": {"nt_samples": 4, "n_steps": 4}}


class AttackedWith:
    """The images an attack makes by attacking one method's differentiable map (its repr keys the cache)."""

    def __init__(self, attack: Attack, method) -> None:
        self.attack, self.method = attack, method

    def __repr__(self) -> str:
        return f"{self.attack!r} on {self.method!r}"


class PredictionSaliencyCorrelation(Criterion):
    """Per image and attack: JSD_pred and JSD_map between the original and the attacked image, whether the
    predicted class changed, and the L-infinity norm used; per source and attack, PSC (Pearson correlation
    of the two divergences across images) with a bootstrap interval.

    Methods with a differentiable map (``bundle.saliency.differentiable.DIFFERENTIABLE``) are attacked
    directly; the others (Score-CAM, XRAI, occlusion, KernelSHAP) and the baselines are scored on the
    images found by attacking ``transfer_from``'s map (a transfer attack), and the report says which.

    Verdict (the published reading: PSC near 1 is trustworthy; Zhang et al. 2024 found at most 0.25
    for sensitivity and 0.12 for robustness): PASS when the 95 % interval of PSC lies above ``threshold``
    under every attack, FAIL when it lies below under some attack, INCONCLUSIVE otherwise, with fewer
    than ``min_images`` images, or when PSC is undefined (a side with no variation). Baselines, whose
    maps ignore the model, are judged too and must not PASS.

    Args:
        n_images: the first N study images (all when ``None``): each costs two attacks per attacked map.
        attacks: ``sensitivity`` and / or ``robustness``.
        epsilon: the attacks' L-infinity radius on [0, 1] intensities (0.03, Zhang et al.).
        iterations: projected Adam steps per attack (1000, Zhang et al.'s most).
        lr: the attacks' Adam learning rate (2e-4, Zhang et al.).
        beta: softplus beta replacing ReLU during an attack, at its first and last step (geometric growth;
            10 and 100, Dombrowski et al.).
        target_side: side of the robustness attack's target square, as a fraction of the image side (0.12).
        prediction: the target class's probability the attacks and JSD_pred read: ``softmax`` (default) or the
            ``sigmoid`` of its logit.
        keep_weights: per attack, the weight of the term that keeps the map (sensitivity) or the
            prediction (robustness).
        attacked: methods attacked directly (``None``: every differentiable one); the rest transfer.
        transfer_from: the method whose attacked images the others are scored on (``grad``).
        threshold: the PSC an interval must clear (0.5).
        min_images: fewest images for a verdict other than INCONCLUSIVE.
        methods: the methods scored (``None``: every one of the study's).
        surrogates: per method name, the pass counts of the map the attack differentiates (the scored map
            keeps the configured counts); default :data:`SURROGATES`, as Zhang et al. attacked IG with 10
            steps and SmoothGrad with 10 samples.
    """

    name = "psc"
    headline = "sensitivity"
    figure = "psc_scatter"
    interval_decides = True
    tabled = ("sensitivity", "robustness", "attacked_directly", "sensitivity_class_changed",
              "robustness_class_changed", "sensitivity_linf", "robustness_linf")  # attacked_directly 0: transfer

    def __init__(self, n_images: int | None = None, attacks: Sequence[str] = PSC_ATTACKS, epsilon: float = 0.03,
                 iterations: int = 1000, lr: float = 2e-4, keep_weights: Mapping[str, float] | None = None,
                 beta: Sequence[float] = (10.0, 100.0), target_side: float = 0.12, prediction: str = "softmax",
                 attacked: Sequence[str] | None = None, transfer_from: str = "grad", threshold: float = 0.5,
                 min_images: int = 6, methods: Sequence[str] | None = None,
                 surrogates: Mapping[str, Mapping] | None = None) -> None:
        self.methods = None if methods is None else list(methods)
        self.surrogates = {k: dict(v) for k, v in (surrogates if surrogates is not None else SURROGATES).items()}
        weights = {"sensitivity": 10.0, "robustness": 10.0, **(keep_weights or {})}
        self._attacks = [Attack(kind, epsilon, iterations, lr, weights[kind], tuple(beta), target_side, prediction)
                         for kind in attacks]
        self.n_images, self.attacks, self.epsilon, self.iterations, self.lr = (
            n_images, tuple(attacks), epsilon, iterations, lr)
        self.keep_weights, self.beta, self.target_side, self.prediction = weights, tuple(beta), target_side, prediction
        self.attacked = None if attacked is None else tuple(attacked)
        if transfer_from not in DIFFERENTIABLE:
            raise ValueError(f"transfer_from must be a differentiable method {DIFFERENTIABLE}, got {transfer_from!r}")
        self.transfer_from, self.threshold, self.min_images = transfer_from, threshold, min_images
        self._logits = {}

    def sources(self, ctx) -> list[str]:
        chosen = chosen_methods(ctx, self.name, self.methods)
        return [n for n, kind in ctx.kinds.items() if kind == "baseline" or n in chosen]  # the oracle ignores the image

    def attacked_source(self, ctx, name: str) -> tuple[object, bool]:
        """The method whose map the attack targets for source ``name``, and whether that is the source itself:
        its own differentiable map (with the pass counts in ``surrogates``, if any), else ``transfer_from``'s."""
        source = ctx.sources[name]
        direct = (ctx.kinds[name] == "method" and getattr(source, "name", "") in DIFFERENTIABLE
                  and (self.attacked is None or name in self.attacked))
        if not direct:
            return get_method(self.transfer_from), False
        params = source.params()  # the attack's counts never exceed the configured method's
        counts = {k: min(v, params[k]) for k, v in self.surrogates.get(source.name, {}).items() if k in params}
        if all(params[k] == v for k, v in counts.items()):
            return source, True
        return type(source)(**{**params, **counts}), True

    def evaluate(self, ctx):
        self._logits = {}  # the model's logits of each batch (original and attacked), shared by every source
        yield from super().evaluate(ctx)

    def _logits_of(self, model, ctx, ids: list[str], what: str, images: torch.Tensor) -> torch.Tensor:
        key = (ctx.primary, tuple(ids), what)
        if key not in self._logits:
            with torch.no_grad():
                self._logits[key] = model(images)
        return self._logits[key]

    def evaluate_method(self, ctx, name: str) -> list[Record]:
        (attacked, direct), model = self.attacked_source(ctx, name), ctx.model(ctx.primary)
        fields = {"model": ctx.primary.name, "method": name, "criterion": self.name, "step": "trained"}
        signed, records = ctx.signed(name), []
        for batch in ctx.batches(self.n_images):
            ids, images = ctx.image_ids(batch), ctx.images(batch)
            target = target_tensor(ctx.target, len(ids), images.device)
            logits = self._logits_of(model, ctx, ids, "original", images)
            before = class_probability(logits, target, self.prediction)
            maps = ctx.maps(ctx.primary, name, batch)
            records += records_for(ids, [float(direct)] * len(ids), metric="attacked_directly",
                                   **fields)
            for attack in self._attacks:
                what = AttackedWith(attack, attacked)

                def compute(positions: list[int]) -> torch.Tensor:
                    return attacked_images(model, images[positions], target[positions],
                                           lambda m, x, t: differentiable_map(attacked, m, x, t), attack,
                                           attacked.signed)

                adversarial = ctx.cached(ctx.primary, what, batch, compute, step="psc_images")
                adversarial_logits = self._logits_of(model, ctx, ids, repr(what), adversarial)
                after = class_probability(adversarial_logits, target, self.prediction)
                adversarial_maps = ctx.maps(ctx.primary, name, {**batch, ctx.image_key: adversarial},
                                            step=f"psc:{what!r}", model=model)
                scores = {
                    "jsd_pred": prediction_divergence(before.double(), after.double()),
                    "jsd_map": map_divergence(maps, adversarial_maps, signed),
                    "class_changed": (logits.argmax(dim=1) != adversarial_logits.argmax(dim=1)).double(),
                    "linf": (adversarial - images).flatten(1).abs().amax(dim=1).double(),
                }
                for metric, values in scores.items():
                    records += records_for(ids, values.tolist(), metric=f"{attack.kind}_{metric}", **fields)
        return records

    def aggregates(self, records: pd.DataFrame, kinds: Mapping[str, str], n_resamples: int, seed: int) -> pd.DataFrame:
        """PSC per source and attack (metric ``<attack>``), from the per-image divergences in image-id order."""
        mine = records[records.criterion == self.name]
        # one pivot for every source (each image's divergences side by side, in image-id order): verdicts are
        # bootstrapped, and a pivot per source cost more than the correlations
        wide = mine.pivot_table(index=["model", "method", "image_id"], columns="metric", values="value",
                                aggfunc="first").reindex(columns=[f"{a}_jsd_{side}" for a in self.attacks
                                                                  for side in ("pred", "map")])
        rows = []
        for model, method in dict.fromkeys(zip(mine.model, mine.method)):
            values = wide.loc[(model, method)] if (model, method) in wide.index.droplevel(2) else wide.iloc[:0]
            for attack in self.attacks:
                r = psc(values[f"{attack}_jsd_pred"], values[f"{attack}_jsd_map"], n_resamples, seed=seed)
                rows.append({"model": model, "method": method, "criterion": self.name, "metric": attack,
                             "step": "trained", "kind": kinds.get(method, "model"), "mean": r.psc,
                             "ci_low": r.ci_low, "ci_high": r.ci_high, "n": r.n, "n_nan": r.n_replaced})
        return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)

    def verdicts(self, summary: pd.DataFrame, comparisons: pd.DataFrame) -> pd.DataFrame:
        mine = summary[summary.criterion == self.name]
        value = {(r.method, r.metric): r for r in mine.itertuples(index=False)}
        rows = []
        for method in dict.fromkeys(mine[mine.kind.isin(["method", "baseline"])].method):
            outcomes, texts, needed = [], [], []
            for attack in self.attacks:
                r = value.get((method, attack))
                if r is None:
                    continue
                if r.n < self.min_images or pd.isna(r.mean):
                    outcome = INCONCLUSIVE
                else:
                    outcome = (PASS if r.ci_low > self.threshold else FAIL if r.ci_high < self.threshold
                               else INCONCLUSIVE)
                outcomes.append(outcome)
                if outcome == INCONCLUSIVE:  # Fisher's z approximates the bootstrap interval of the correlation
                    needed.append(images_needed(outcome, images_for_correlation(r.mean, self.threshold, 0.05, POWER),
                                                int(r.n), self.min_images))
                changed, linf = value.get((method, f"{attack}_class_changed")), value.get((method, f"{attack}_linf"))
                psc_text = "undefined (no variation)" if pd.isna(r.mean) else \
                    f"{r.mean:.2f} [{r.ci_low:.2f}, {r.ci_high:.2f}]"
                texts.append(f"{attack} PSC {psc_text} on {r.n} images"
                             + (f" ({r.n_nan} NaN map divergences replaced by the mean)" if r.n_nan else "")
                             + (f", class changed in {changed.mean:.0%}, mean L-inf {linf.mean:.4f}"
                                if changed is not None and linf is not None else "") + f" {outcome}")
            direct = value.get((method, "attacked_directly"))
            how = "attacked directly" if direct is not None and direct.mean == 1 else \
                f"scored on the images found for {self.transfer_from}'s map (transfer attack)"
            verdict = FAIL if FAIL in outcomes else PASS if outcomes and set(outcomes) == {PASS} else INCONCLUSIVE
            rule = (f"PASS needs the 95% CI of PSC above {self.threshold} under every attack (PSC near 1 is "
                    f"trustworthy; Zhang et al. 2024's best on CheXpert: sensitivity {PUBLISHED['sensitivity']}, "
                    f"robustness {PUBLISHED['robustness']}); {how}: " + "; ".join(texts))
            # a FAIL under one attack decides; otherwise every undecided attack must be decided
            rows.append({"criterion": self.name, "method": method, "verdict": verdict, "rule": rule,
                         "images_needed": max(needed) if verdict == INCONCLUSIVE and needed else float("nan")})
        return pd.DataFrame(rows, columns=list(VERDICT_COLUMNS))
