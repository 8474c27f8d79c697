"""Faithfulness curves (TRUST_METRICS.md section 6): does revealing the pixels a map ranks first bring back
the model's score sooner than revealing random pixels? Performance information curves, SIC and AIC
(Kapishnikov et al. 2019; Brima & Atemkeng 2024), on the model under study."""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterator, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from monai.utils import look_up_option

from bundle import threads
from bundle.criteria.base import (
    INCONCLUSIVE, VERDICT_COLUMNS, Criterion, Record, chosen_methods, images_needed_against_baseline, records_for,
    verdict_against_baseline,
)
from bundle.saliency.base import budget_inputs
from bundle.summary import SUMMARY_COLUMNS, compare_to_baseline
from bundle.trust.normalization import normalize_maps
from bundle.trust.pic import (
    INFORMATION, PIC_FRACTIONS, PIC_KINDS, SKIP_REASONS, PicResult, curve_through, curves_from_logits, median_curve,
    pic_measurements, random_reveal_mask, to_uint8,
)

MODEL_ROW = "model"  # the records' method column for what depends on the image and model only (skip reasons)
CURVE_STEPS = 51  # points of the logged median curve (every 20th of PAIR's 1001)


def reveal_step(fraction: float) -> str:
    return f"reveal:{fraction:g}"


class Faithfulness(Criterion):
    """Per image and map source: the SIC and AIC curves and their areas; per source, the point-wise median
    curve and its area (PAIR's aggregate) with bootstrap intervals.

    Images are quantised to uint8 (round(255 x) of the study's [0, 1] intensities), as PIC's blurring
    and WebP information estimate need; the model scores the quantised images. Maps rank pixels by
    their folded value (signed attributions by ``|.|``); a constant map ranks nothing and its curves
    are NaN (counted). Images the model scores below ``min_score``, or whose fully blurred version is
    not less informative or does not score lower, are skipped for every source and counted by reason.
    Records per image: ``<kind>_auc``, and per reveal fraction (step ``reveal:<t>``) the curve's point,
    ``<kind>_information`` (x) and ``<kind>_score`` (y).

    Verdict: a method PASSES when its per-image ``verdict_metric`` area is above the ``baseline``'s
    (the uniform random map) in a paired Wilcoxon test, Holm-adjusted across the study's grid
    (p_Holm < ``alpha``); FAILS when it is significantly below; INCONCLUSIVE otherwise or with fewer
    than ``min_pairs`` images scored.

    Args:
        n_images: the first N study images (all when ``None``).
        kinds: ``sic`` (softmax score) and / or ``aic`` (arg-max indicator).
        fractions: the reveal fractions (PAIR's 13 by default).
        min_score: the lowest score of the original for an image to be scored (0.8, PAIR).
        monotonic: running maximum of the score fraction (default on).
        information: ``webp`` (lossless-WebP byte length, default) or ``entropy`` (256-bin histogram).
        reveal_fraction: the fraction of random pixels every blurred image keeps (0.01, PAIR's 1 %).
        seed: seeds the draw of those kept random pixels (the same pixels for every image and source).
        baseline: the map source a method must beat (``random``, the uniform random map, by default).
        verdict_metric: the per-image area the verdict is decided on, ``sic_auc`` (default) or ``aic_auc``.
        alpha: significance level of the Holm-adjusted paired test.
        min_pairs: fewest paired images for a verdict other than INCONCLUSIVE.
        workers: processes that make the blurred images, one thread each (1: in the study's process; ``None``:
            :func:`bundle.threads.pool_workers`, the study's intra-op threads, at most 2).
        methods: the methods scored (``None``: every one of the study's).
    """

    name = "faithfulness"
    figure = "pic_curves"
    tabled = ("sic_auc", "sic_median_auc", "aic_auc", "aic_median_auc")  # the curves are in the figure and CSVs

    def __init__(self, n_images: int | None = None, kinds: Sequence[str] = PIC_KINDS,
                 fractions: Sequence[float] = PIC_FRACTIONS, min_score: float = 0.8, monotonic: bool = True,
                 information: str = "webp", reveal_fraction: float = 0.01, seed: int = 0, baseline: str = "random",
                 verdict_metric: str = "sic_auc", alpha: float = 0.05, min_pairs: int = 6, workers: int | None = None,
                 methods: Sequence[str] | None = None) -> None:
        self.methods = None if methods is None else list(methods)
        self.n_images, self.kinds = n_images, tuple(look_up_option(k, PIC_KINDS) for k in kinds)
        self.fractions, self.min_score, self.monotonic = tuple(float(f) for f in fractions), min_score, monotonic
        self.information = look_up_option(information, INFORMATION)
        self.reveal_fraction, self.seed, self.baseline = reveal_fraction, seed, baseline
        if verdict_metric not in {f"{k}_auc" for k in self.kinds}:
            raise ValueError(f"verdict_metric must be the area of a recorded kind {[f'{k}_auc' for k in self.kinds]}, "
                             f"got {verdict_metric!r}")
        self.verdict_metric, self.alpha, self.min_pairs = verdict_metric, alpha, min_pairs
        self._workers = threads.pool_workers() if workers is None else workers
        self._pool, self._unscored = None, set()

    @property
    def headline(self) -> str:
        return self.verdict_metric

    def sources(self, ctx) -> list[str]:
        batch = next(iter(ctx.study_batches(1)))
        images = ctx.images(batch)
        if images.ndim != 4 or images.shape[1] != 1:
            ctx.warn_once(f"{self.name}: skipped, PIC curves are defined here for one-channel 2-D images "
                          f"(the study's are {tuple(images.shape[1:])})")
            return []
        if self.baseline not in ctx.kinds:
            raise ValueError(f"{self.name}: baseline {self.baseline!r} is not among the study's map sources")
        # the methods beside the uniform random map (TRUST_METRICS section 6) and the references (the oracle)
        chosen = chosen_methods(ctx, self.name, self.methods)
        return [MODEL_ROW, *[n for n, kind in ctx.kinds.items()
                             if (kind == "method" and n in chosen) or kind == "reference" or n == self.baseline]]

    def evaluate(self, ctx) -> Iterator[list[Record]]:
        self._unscored = set()  # images every kind skips, found by the model row and then not blurred again
        if self._workers < 2 or "fork" not in multiprocessing.get_all_start_methods():  # Windows has no fork
            yield from super().evaluate(ctx)
            return
        # forked once for the whole criterion; the workers only blur and encode (scipy, PIL), never run torch, and
        # run one BLAS thread each (two forked OpenBLAS pools on two cores ran 20x slower than one process)
        with threads.worker_pool(self._workers) as self._pool:
            yield from super().evaluate(ctx)
        self._pool = None

    def _curves(self, ctx, batch, source: str, maps: np.ndarray | None, fractions: Sequence[float], keep: list[int]):
        """Curves of the images at positions ``keep``, as arrays over the whole batch (NaN elsewhere). What they are
        read from (information and logits of every blurred image) is cached like a map: a rerun blurs nothing. The
        two ends (the fully blurred image and the original) depend on the image alone: measured once, by the model
        row, and shared by every source."""
        images = to_uint8(ctx.images(batch))
        n, mask = len(images), random_reveal_mask(images.shape[1:], self.reveal_fraction, self.seed)

        def measurer(chosen: np.ndarray, steps: Sequence[float], ends: bool):
            def measure(positions: list[int]) -> torch.Tensor:
                info, logits = pic_measurements(ctx.model(ctx.primary), images[positions], chosen[positions], mask,
                                                steps, self.information, budget_inputs(ctx.images(batch)),
                                                self._pool, ctx.device, ends)
                return torch.cat([torch.as_tensor(info)[..., None], logits], dim=-1)  # (n, F [+ 2], 1 + classes)
            return measure

        settings = f"information={self.information!r}, reveal_fraction={self.reveal_fraction}, seed={self.seed})"
        results = {}
        if keep:
            ends = ctx.cached(ctx.primary, f"pic_measurements(source='{MODEL_ROW}', fractions=(), {settings}", batch,
                              measurer(np.zeros(images.shape), (), True), positions=keep).cpu()
            measured = ends
            if fractions:
                named = ctx.sources[source] if source in ctx.sources else source
                steps = ctx.cached(ctx.primary, f"pic_steps(source={named!r}, fractions={tuple(fractions)}, {settings}",
                                   batch, measurer(maps, fractions, False), positions=keep).cpu()
                measured = torch.cat([ends[:, :1], steps, ends[:, 1:]], dim=1)
            results = curves_from_logits(measured[..., 0].numpy(), measured[..., 1:], ctx.target, self.kinds,
                                         self.min_score, self.monotonic)
        out = {}
        for kind in self.kinds:
            r = results.get(kind, PicResult(None, None, np.zeros(0), np.zeros((0, len(fractions))),
                                            np.zeros((0, len(fractions))), []))
            auc, px, py = np.full(n, np.nan), np.full((n, len(fractions)), np.nan), np.full((n, len(fractions)), np.nan)
            auc[keep], px[keep], py[keep] = r.auc, r.points_x, r.points_y
            skipped = ["min_score"] * n  # positions not kept were skipped for every kind, a reason already counted
            for position, reason in zip(keep, r.skipped):
                skipped[position] = reason
            out[kind] = (auc, px, py, skipped)
        return out

    def evaluate_method(self, ctx, name: str) -> list[Record]:
        fields = {"model": ctx.primary.name, "method": name, "criterion": self.name}
        records = []
        for batch in ctx.batches(self.n_images):
            ids = ctx.image_ids(batch)
            if name == MODEL_ROW:  # the skip rules read only the original and the fully blurred image
                everything = list(range(len(ids)))
                results = self._curves(ctx, batch, MODEL_ROW, None, (), everything)
                for kind, (*_, skipped) in results.items():
                    for reason in SKIP_REASONS:
                        records += records_for(ids, [float(s == reason) for s in skipped],
                                               metric=f"{kind}_skipped_{reason}", step="trained", **fields)
                self._unscored |= {i for j, i in enumerate(ids) if all(r[3][j] for r in results.values())}
                continue
            maps, constant = normalize_maps(ctx.maps(ctx.primary, name, batch), "pair", ctx.signed(name), clip=False)
            for image_id in (i for i, flat in zip(ids, constant.tolist()) if flat):
                ctx.warn_once(f"{self.name}: the {name} map of {image_id} is constant or not finite: it ranks no "
                              "pixel before another, its curves are NaN (counted)")
            keep = [j for j, i in enumerate(ids) if i not in self._unscored]
            results = self._curves(ctx, batch, name, maps.cpu().numpy(), self.fractions, keep)
            undefined = constant.cpu().numpy()[:, None]
            for kind, (auc, points_x, points_y, _) in results.items():
                records += records_for(ids, np.where(undefined[:, 0], np.nan, auc), metric=f"{kind}_auc",
                                       step="trained", **fields)
                for what, values in {"score": points_y, "information": points_x}.items():
                    values = np.where(undefined, np.nan, values)
                    for j, fraction in enumerate(self.fractions):
                        records += records_for(ids, values[:, j], metric=f"{kind}_{what}",
                                               step=reveal_step(fraction), **fields)
        return records

    def aggregates(self, records: pd.DataFrame, kinds: Mapping[str, str], n_resamples: int, seed: int) -> pd.DataFrame:
        """Per source and kind: the area of the point-wise median curve (``<kind>_median_auc``) and the median
        curve itself on :data:`CURVE_STEPS` points (``<kind>_median_curve``, step ``x:<x>``), rebuilt from the
        per-image points exactly as the per-image curves were."""
        mine = records[(records.criterion == self.name) & (records.method != MODEL_ROW)]
        steps = [reveal_step(f) for f in self.fractions]
        curve_x = np.append(np.linspace(0.0, 1.0, num=1000, endpoint=False), 1.0)
        shown = np.linspace(0, len(curve_x) - 1, CURVE_STEPS).round().astype(int)
        rows = []
        for (model, method), group in mine[mine.step.isin(steps)].groupby(["model", "method"], sort=False):
            points = group.pivot_table(index="image_id", columns=["metric", "step"], values="value", dropna=False,
                                       aggfunc="first")
            for kind in self.kinds:
                x, y = points[f"{kind}_information"][steps].to_numpy(), points[f"{kind}_score"][steps].to_numpy()
                curves = np.array([curve_through(xi, yi, curve_x) if np.isfinite(xi).all() and np.isfinite(yi).all()
                                   else np.full_like(curve_x, np.nan) for xi, yi in zip(x, y)])
                m = median_curve(curve_x, curves, n_resamples, seed=seed)
                base = {"model": model, "method": method, "criterion": self.name, "kind": kinds.get(method, "model"),
                        "n": m.n, "n_nan": m.n_skipped}
                rows.append({**base, "metric": f"{kind}_median_auc", "step": "trained", "mean": m.auc,
                             "ci_low": m.auc_low, "ci_high": m.auc_high})
                rows += [{**base, "metric": f"{kind}_median_curve", "step": f"x:{curve_x[i]:.2f}", "mean": m.curve[i],
                          "ci_low": m.curve_low[i], "ci_high": m.curve_high[i]} for i in shown]
        return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)

    def deciding(self, records: pd.DataFrame) -> pd.DataFrame:
        """The verdict metric's per-image areas and the skip counts (not the curves' points)."""
        kind = self.verdict_metric.split("_")[0]
        mine = records[records.criterion == self.name]
        return mine[(mine.metric == self.verdict_metric) | mine.metric.str.startswith(f"{kind}_skipped_")]

    def comparisons(self, records: pd.DataFrame, kinds: Mapping[str, str], n_resamples: int, seed: int) -> pd.DataFrame:
        """Each method's per-image area against the baseline's, paired by image; the verdict metric's test
        enters Holm's family, the other kind's is reported with its raw p-value."""
        tables = [compare_to_baseline(records, kinds, self.name, f"{kind}_auc", self.baseline, True, n_resamples,
                                      seed).assign(in_grid=f"{kind}_auc" == self.verdict_metric)
                  for kind in self.kinds]
        tables = [t for t in tables if len(t)]
        return pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()

    def verdicts(self, summary: pd.DataFrame, comparisons: pd.DataFrame) -> pd.DataFrame:
        mine = summary[summary.criterion == self.name]
        value = {(r.method, r.metric): r for r in mine.itertuples(index=False)}
        kind = self.verdict_metric.split("_")[0]
        skipped = ", ".join(f"{reason} {round(r.mean * r.n)}" for reason in SKIP_REASONS
                            if (r := value.get((MODEL_ROW, f"{kind}_skipped_{reason}"))) is not None and r.mean > 0)
        tested = comparisons[(comparisons.criterion == self.name) & (comparisons.metric == self.verdict_metric)] \
            if len(comparisons) else comparisons
        rows = []
        for c in tested.itertuples(index=False):
            verdict, rule = verdict_against_baseline(c, self.verdict_metric, self.alpha, self.min_pairs)
            area = [value.get((m, f"{kind}_median_auc")) for m in (c.method, c.baseline)]
            if all(a is not None for a in area):
                rule += (f"; median-curve {kind.upper()} area {area[0].mean:.3f} [{area[0].ci_low:.3f}, "
                         f"{area[0].ci_high:.3f}] vs {c.baseline} {area[1].mean:.3f}; {area[0].n} images scored"
                         + (f" (skipped: {skipped})" if skipped else ""))
            rows.append({"criterion": self.name, "method": c.method, "verdict": verdict, "rule": rule,
                         "images_needed": images_needed_against_baseline(c, verdict, self.alpha, self.min_pairs)})
        compared = {row["method"] for row in rows}
        scored = mine[(mine.kind == "method") & (mine.metric == self.verdict_metric)].method.unique()
        rows += [{"criterion": self.name, "method": m, "verdict": INCONCLUSIVE, "rule": "no baseline to compare with"}
                 for m in scored if m not in compared]
        return pd.DataFrame(rows, columns=list(VERDICT_COLUMNS))
