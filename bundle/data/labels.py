"""Label permutation for the label-randomisation test (TRUST_METRICS.md section 3)."""

from __future__ import annotations

import numpy as np


def permute_labels(items: list[dict], seed: int, enabled: bool = True, label_key: str = "label") -> list[dict]:
    """Copies of ``items`` whose labels are a seeded random permutation of theirs (same class balance).

    A model trained on them keeps the images and the epoch budget but loses every
    image-label association, so its maps show what a method makes of a model that learnt
    nothing about the finding. ``enabled=False`` returns the items unchanged (the configs' switch).
    """
    if not enabled:
        return items
    order = np.random.default_rng([seed, 7]).permutation(len(items))
    labels = [items[i][label_key] for i in order]
    return [{**item, label_key: label} for item, label in zip(items, labels)]
