"""Ground-truth masks from boxes, following TRUST_METRICS.md section 1."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from bundle.trust.baselines import mean_mask


def boxes_to_mask(
    boxes: Sequence[Sequence[float]],
    original_size: tuple[int, int],
    mask_size: tuple[int, int] | None = None,
) -> np.ndarray:
    """Rasterise (x, y, w, h) boxes given in pixels of ``original_size`` (H, W) onto ``mask_size``.

    Boxes are rescaled to the mask grid and drawn with inclusive ends,
    ``mask[y0:y1 + 1, x0:x1 + 1] = 1`` (the published convention); several boxes are OR-ed.
    """
    h, w = original_size
    mh, mw = mask_size or original_size
    sy, sx = mh / h, mw / w
    mask = np.zeros((mh, mw), dtype=bool)
    for box in boxes:
        x, y, bw, bh = (float(v) for v in box)
        x0, y0 = int(np.floor(x * sx)), int(np.floor(y * sy))
        x1, y1 = int(np.floor((x + bw) * sx)), int(np.floor((y + bh) * sy))
        if x1 < 0 or y1 < 0 or x0 >= mw or y0 >= mh:  # entirely outside the image
            continue
        mask[max(y0, 0) : min(y1, mh - 1) + 1, max(x0, 0) : min(x1, mw - 1) + 1] = True
    return mask


def coco_rle_counts(rle: object) -> list[int]:
    """The run lengths (zeros first, column by column) of a COCO RLE ``{"size": [H, W], "counts": str}`` in the
    compressed-string form cheXlocalize writes; a ValueError saying what is wrong otherwise. Ours because
    pycocotools decodes a malformed string from uninitialised memory instead of failing."""
    if not (isinstance(rle, dict) and isinstance(rle.get("counts"), str) and isinstance(rle.get("size"), list)
            and len(rle["size"]) == 2 and all(isinstance(v, int) and v > 0 for v in rle["size"])):
        raise ValueError("not a COCO RLE {'size': [H, W], 'counts': str}")
    counts: list[int] = []
    value, shift = 0, 0
    for char in rle["counts"]:  # pycocotools' rleFrString: 5 bits a character, 0x20 continues, 0x10 signs
        code = ord(char) - 48
        if not 0 <= code < 64:
            raise ValueError(f"character {char!r} cannot occur in a COCO RLE string")
        value |= (code & 0x1F) << shift
        shift += 5
        if code & 0x20:
            continue
        if code & 0x10:
            value |= -1 << shift
        counts.append(value + (counts[-2] if len(counts) > 2 else 0))
        value, shift = 0, 0
    if shift or any(c < 0 for c in counts):
        raise ValueError("the RLE string is cut short or has a negative run")
    height, width = rle["size"]
    if sum(counts) != height * width:
        raise ValueError(f"its runs cover {sum(counts)} pixels, not the {width} x {height} = {height * width} of "
                         "its size")
    return counts


def coco_rle_decode(rle: dict) -> np.ndarray:
    """The bool (H, W) mask of a COCO RLE (:func:`coco_rle_counts`): runs alternate zeros and ones, column by
    column."""
    counts = coco_rle_counts(rle)
    height, width = rle["size"]
    values = np.arange(len(counts)) % 2 == 1
    return np.repeat(values, counts).reshape(width, height).T


def location_prior(dataloader, mask_key: str = "mask") -> torch.Tensor:
    """Average ground-truth mask over a (training-split) dataloader: the location-prior baseline map.

    Args:
        dataloader: yields batches of dicts holding the ground-truth masks under ``mask_key``; read once, every batch.
        mask_key: the batch key of the ground-truth masks.
    """
    total, count = 0.0, 0
    for batch in dataloader:
        masks = batch[mask_key]
        total = total + mean_mask(masks) * masks.shape[0]
        count += masks.shape[0]
    if not count:
        raise ValueError("cannot build a location prior from an empty dataloader")
    return total / count
