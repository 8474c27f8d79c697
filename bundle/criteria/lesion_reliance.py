"""Does the model use the lesion at all? A saliency map cannot be judged against a lesion the model ignores.

On synthetic data every positive image has a lesion-free twin with the same
background; a model that relies on the lesion scores the positive higher
(Zhou et al., AAAI 2022, on models that ignore the annotated finding).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import pandas as pd
import torch
from monai.data import list_data_collate
from scipy.stats import binomtest

from bundle.criteria.base import (
    FAIL, INCONCLUSIVE, PASS, POWER, VERDICT_COLUMNS, Criterion, Record, images_needed, records_for,
)
from bundle.passes import work
from bundle.trust.stats import images_for_sign_test
from bundle.data.synthetic_dataset import write_lesion_free_twins
from bundle.data.synthetic_volume import write_volume_twins

TWIN_WRITERS = {"synthetic": write_lesion_free_twins, "synthetic_brain": write_volume_twins}  # datasets with twins

logger = logging.getLogger(__name__)

MODEL_ROW = "model"  # the records' method column: this criterion is about the model, not a saliency method


class LesionReliance(Criterion):
    """Per image pair: whether the positive's target logit is above its lesion-free twin's, and by how much.

    Verdict (about the model): PASS when a one-sided sign test says the positive scores
    higher in more than half of the pairs (p < ``alpha``; ties dropped); FAIL when it
    scores higher in at most half of them (the maps of such a model cannot be expected
    to point at the lesion); INCONCLUSIVE in between, or with too few pairs for the test
    to reach ``alpha``. Only synthetic data has twins; on other data the criterion is
    skipped with a message.

    Args:
        dataset_name: the study's dataset; twins exist for ``synthetic`` and ``synthetic_brain`` only.
        dataset_dir: the synthetic dataset folder (twins are written under it).
        transform: the study's image preprocessing (without ground truth), applied to the twins.
        alpha: significance level of the sign test.
    """

    name = "lesion_reliance"
    headline = "positive_higher"

    def __init__(self, dataset_name: str, dataset_dir: str, transform: Callable, alpha: float = 0.05) -> None:
        self.dataset_name, self.dataset_dir, self.alpha = dataset_name, str(dataset_dir), alpha
        self._transform = transform

    def sources(self, ctx) -> list[str]:
        if self.dataset_name not in TWIN_WRITERS:
            logger.info("%s: skipped, only synthetic data has lesion-free twins (dataset %r)", self.name,
                        self.dataset_name)
            return []
        return [MODEL_ROW]

    def evaluate_method(self, ctx, name: str) -> list[Record]:
        model = ctx.model(ctx.primary)
        records = []
        for batch in ctx.batches():
            ids = ctx.image_ids(batch)
            with work("data"):
                twins = [self._transform(item) for item in TWIN_WRITERS[self.dataset_name](self.dataset_dir, ids,
                                                                                            ctx.image_key, ctx.id_key)]
                twin_images = list_data_collate(twins)[ctx.image_key]
            twin_images = twin_images.to(ctx.device)
            with torch.no_grad():
                positive = model(ctx.images(batch))[:, ctx.target]
                twin = model(twin_images)[:, ctx.target]
            difference = (positive - twin).tolist()
            fields = {"model": ctx.primary.name, "method": MODEL_ROW, "criterion": self.name, "step": "trained"}
            # a tie or an undefined difference says nothing either way: undefined, as a sign test drops it
            higher = [float(d > 0) if d == d and d != 0 else float("nan") for d in difference]
            records += records_for(ids, higher, metric="positive_higher", **fields)
            records += records_for(ids, difference, metric="logit_difference", **fields)
        return records

    def verdicts(self, summary: pd.DataFrame, comparisons: pd.DataFrame) -> pd.DataFrame:
        mine = summary[summary.criterion == self.name]
        rows = mine[mine.metric == "positive_higher"]
        differences = {r.method: r for r in mine[mine.metric == "logit_difference"].itertuples(index=False)}
        out = []
        for r in rows.itertuples(index=False):
            higher = int(round(r.mean * r.n)) if r.n else 0
            if r.n == 0 or 0.5**r.n >= self.alpha:
                verdict, rule = INCONCLUSIVE, f"{r.n} untied pairs: too few for a sign test to reach p < {self.alpha}"
            else:
                p = binomtest(higher, r.n, 0.5, alternative="greater").pvalue
                verdict = PASS if p < self.alpha else FAIL if higher <= r.n / 2 else INCONCLUSIVE
                d = differences[r.method]
                rule = (f"positive above its lesion-free twin in {higher}/{r.n} pairs, mean logit difference "
                        f"{d.mean:+.2f} [{d.ci_low:+.2f}, {d.ci_high:+.2f}]; one-sided sign test "
                        f"p {p:.2g} {'<' if verdict == PASS else '>='} {self.alpha}")
            needed = images_needed(verdict, images_for_sign_test(r.mean if r.n else float("nan"), self.alpha, POWER),
                                   int(r.n))
            out.append({"criterion": self.name, "method": r.method, "verdict": verdict, "rule": rule,
                        "images_needed": needed})
        return pd.DataFrame(out, columns=list(VERDICT_COLUMNS))

    def params(self) -> dict:
        return {"dataset_name": self.dataset_name, "alpha": self.alpha}
