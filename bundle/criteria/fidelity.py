"""Fidelity to the published pass counts: does a CPU-sized method still make the published method's maps?"""

from __future__ import annotations

import pandas as pd

from bundle.criteria.base import (
    FAIL, INCONCLUSIVE, PASS, VERDICT_COLUMNS, Criterion, Record, chosen_methods, records_for,
)
from bundle.trust.similarity import spearman


class FidelityToPublished(Criterion):
    """Spearman correlation of each cut method's maps with its published-count maps on the first images.

    A study may cut pass counts (IG steps, SmoothGrad samples, ...) to fit a CPU; this
    check keeps such a cut from deciding a verdict unseen. Maps are compared as they are
    scored: signed attributions by magnitude, ranking maps as they are. Verdict: PASS
    when the mean correlation reaches ``threshold``, else FAIL (the table flags the method).
    Methods run with their published counts are not compared.

    Args:
        n_images: how many of the study's images (the first ones) are compared.
        threshold: the lowest mean Spearman correlation that passes.
        methods: which cut methods to compare (``None``: every one).
    """

    name = "fidelity_to_published"
    headline = "spearman"

    def __init__(self, n_images: int = 4, threshold: float = 0.9, methods: list[str] | None = None) -> None:
        if n_images < 1:
            raise ValueError(f"n_images must be positive, got {n_images}")
        self.n_images, self.threshold, self.methods = n_images, threshold, methods

    def sources(self, ctx) -> list[str]:
        chosen = chosen_methods(ctx, self.name, self.methods)
        return [name for name in ctx.sources
                if name in chosen and getattr(ctx.sources[name], "is_cut", lambda: False)()]

    def evaluate_method(self, ctx, name: str) -> list[Record]:
        published = ctx.sources[name].published_method()
        records = []
        for batch in ctx.batches(self.n_images):
            cut, full = ctx.maps(ctx.primary, name, batch), ctx.maps(ctx.primary, published, batch)
            if ctx.signed(name):
                cut, full = cut.abs(), full.abs()
            records += records_for(ctx.image_ids(batch), spearman(cut, full).tolist(), model=ctx.primary.name,
                                   method=name, criterion=self.name, metric="spearman", step="trained")
        return records

    def verdicts(self, summary: pd.DataFrame, comparisons: pd.DataFrame) -> pd.DataFrame:
        rows = []
        for r in summary[summary.criterion == self.name].itertuples(index=False):
            if r.n == 0:
                verdict, rule = INCONCLUSIVE, f"no defined correlation on {r.n_nan} images (constant maps)"
            else:
                verdict = PASS if r.mean >= self.threshold else FAIL
                rule = (f"mean Spearman of cut vs published-count maps on {r.n} images {r.mean:.3f} "
                        f"{'>=' if verdict == PASS else '<'} {self.threshold}")
            rows.append({"criterion": self.name, "method": r.method, "verdict": verdict, "rule": rule})
        return pd.DataFrame(rows, columns=list(VERDICT_COLUMNS))
