"""MONAI transforms specific to this bundle; the rest of each pipeline is stock MONAI in the configs."""

from __future__ import annotations

import logging
from collections.abc import Hashable, Mapping

import numpy as np
import torch
from monai.data import MetaTensor, NibabelReader, PILReader
from monai.transforms import LoadImage, MapTransform, Resize

from bundle.data.masks import boxes_to_mask, coco_rle_decode

logger = logging.getLogger(__name__)


class GroundTruthMaskd(MapTransform):
    """Add a (1, *spatial) ground-truth mask at the (resized) image grid under ``mask_key``.

    ``source="mask"`` reads the segmentation at ``data[mask_key]`` (an image file, or a COCO RLE dict as
    CheXlocalize ships them) and resizes it nearest-neighbour; ``source="boxes"`` rasterises ``data[boxes_key]`` (pixels
    of the original image) with inclusive ends, as TRUST_METRICS.md section 1 says.
    When a record has no mask file, its boxes are used, with a warning naming the
    image; ``data["mask_source"]`` records which was used. The boxes entry is
    removed afterwards because ragged lists do not collate into a batch. With
    ``allow_missing`` a record without ``mask_key`` passes unchanged (a second reader's
    outline, which only some datasets have).

    Args:
        image_key: the key of the (resized) image whose grid the mask takes.
        mask_key: the key of the segmentation (image file or COCO RLE) to read, and where the mask is written.
        boxes_key: the key of the (x, y, w, h) boxes, in pixels of the original image; removed after use.
        source: ``mask`` (default: the segmentation, else the boxes with a warning) or ``boxes`` (always the boxes).
        allow_missing: pass a record without ``mask_key`` through unchanged instead of rasterising its boxes.
    """

    def __init__(
        self,
        image_key: str = "image",
        mask_key: str = "mask",
        boxes_key: str = "boxes",
        source: str = "mask",
        allow_missing: bool = False,
    ) -> None:
        super().__init__(keys=[image_key])
        if source not in ("mask", "boxes"):
            raise ValueError(f"source must be 'mask' or 'boxes', got {source!r}")
        self.image_key, self.mask_key, self.boxes_key, self.source = image_key, mask_key, boxes_key, source
        self.allow_missing = allow_missing
        self.loader = LoadImage(reader=[PILReader(reverse_indexing=False), NibabelReader()], image_only=True,
                                ensure_channel_first=True)

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        if self.allow_missing and self.mask_key not in d:
            return d
        image = d[self.image_key]
        spatial = tuple(image.shape[1:])
        original = tuple(int(s) for s in image.meta["spatial_shape"]) if isinstance(image, MetaTensor) else spatial
        mask_file = d.get(self.mask_key)
        if self.source == "mask" and isinstance(mask_file, (str, dict)):
            mask = self.loader(mask_file) if isinstance(mask_file, str) else coco_rle_decode(mask_file)[None].astype(np.float32)
            mask = Resize(spatial, mode="nearest")(mask) if tuple(mask.shape[1:]) != spatial else mask
            mask = torch.as_tensor(np.asarray(mask) > 0, dtype=torch.float32)
            d.setdefault("mask_source", "mask")
        else:
            if self.source == "mask":
                image_id = d.get("image_id") or getattr(image, "meta", {}).get("filename_or_obj", "?")
                logger.warning("%s: no lesion mask file; scoring against its boxes instead", image_id)
            d["mask_source"] = "boxes"
            boxes = d.get(self.boxes_key, [])
            mask = torch.from_numpy(boxes_to_mask(boxes, original, spatial)[None].astype(np.float32))
        d[self.mask_key] = mask
        d.pop(self.boxes_key, None)
        return d

