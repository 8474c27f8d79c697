"""Datalist selections: label permutation for the label-randomisation test (TRUST_METRICS.md section 3), and a
seeded subset of images."""

from __future__ import annotations

import numpy as np


def permute_labels(items: list[dict], seed: int, enabled: bool = True, label_key: str = "label") -> list[dict]:
    """Copies of ``items`` whose labels are a seeded random permutation of theirs (same class balance).

    A model trained on them keeps the images and the epoch budget but loses every
    image-label association, so its maps show what a method makes of a model that learnt
    nothing about the finding. ``enabled=False`` returns the items unchanged (the configs' switch).

    Args:
        items: the datalist, MONAI data dicts each with a ``label_key`` entry.
        seed: seeds the permutation (the configs pass the training seed), so a seed gives the same labels.
        enabled: permute when true; when false return ``items`` itself, unchanged (``permute_labels`` switch).
        label_key: the key of the label permuted among the items.
    """
    if not enabled:
        return items
    order = np.random.default_rng([seed, 7]).permutation(len(items))
    labels = [items[i][label_key] for i in order]
    return [{**item, label_key: label} for item, label in zip(items, labels)]


def seeded_subset(items: list[dict], n: int | None, seed: int = 0) -> list[dict]:
    """``n`` of ``items`` drawn without replacement with a seeded generator, in their original order (all of them
    when ``n`` is ``None`` or not smaller): a fixed set that does not depend on how the folder lists its files.

    Args:
        items: the datalist to draw from.
        n: how many items to keep (all of them when ``None`` or at least ``len(items)``).
        seed: seeds the draw, so the same seed and items give the same subset.
    """
    if n is None or n >= len(items):
        return list(items)
    chosen = np.random.default_rng([seed, 13]).choice(len(items), size=n, replace=False)
    return [items[i] for i in sorted(chosen)]
