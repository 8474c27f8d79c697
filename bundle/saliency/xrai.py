"""XRAI (Kapishnikov et al. 2019): region attribution by greedy growth of over-segmentation regions.

Follows the published algorithm (PAIR ``saliency`` library by the XRAI authors,
XRAI "full"): Integrated Gradients from a black and a white baseline, averaged,
integrated as PAIR does; Felzenszwalb segmentations of the image at several
scales (image scaled to [-1, 1], then resized to 224 bicubically, in PAIR's
order), each segment dilated by a disk; then regions are added greedily by the
mean attribution of the pixels they newly cover, each newly covered pixel
taking its region's gain. Own code because no maintained PyTorch
implementation exists and PAIR's loop costs about 0.5-0.9 s per 128² image: the
dilation is done for all segments at once with label shifts, the greedy step
keeps per-region sums and counts that are updated (through a sparse
pixel-to-region index) only at newly covered pixels, the segmentations of a
batch run in a thread pool (scikit-image releases the GIL), and an image's
regions, which depend on the image alone, are kept for the next map of the same
image (another model, cascade step or criterion).
"""

from __future__ import annotations

import hashlib
import os
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from scipy import sparse
from skimage.segmentation import felzenszwalb
from skimage.transform import resize
from torch import nn

from bundle.passes import work
from bundle.saliency.base import SaliencyMethod, budget_inputs, scoring_function

FELZENSZWALB_SCALES = (50, 100, 150, 250, 500, 1200)
FELZENSZWALB_SIGMA = 0.8
FELZENSZWALB_MIN_SIZE = 150
SEGMENTATION_SIZE = 224
# bytes of dilated regions kept, as bits (about 0.5 MB an image at 128 x 128, 1.4 MB at 224 x 224): a study asks for
# the same image's regions for every model, cascade step and criterion, and segmenting one takes 0.4 s of a core (D)
KEPT_REGION_BYTES = 128 * 2**20
_regions: OrderedDict[tuple, tuple[np.ndarray, int]] = OrderedDict()


def _disk_offsets(radius: int) -> np.ndarray:
    r = np.arange(-radius, radius + 1)
    dy, dx = np.meshgrid(r, r, indexing="ij")
    keep = dy**2 + dx**2 <= radius**2
    return np.stack([dy[keep], dx[keep]], axis=1)


def dilated_segment_masks(segmentation: np.ndarray, radius: int) -> np.ndarray:
    """(n_segments, H*W) boolean masks of each segment dilated by a disk of ``radius``.

    Equals ``skimage.morphology.dilation(segmentation == s, disk(radius))`` for every
    segment s, computed for all segments together by shifting the label image.
    """
    h, w = segmentation.shape
    labels = np.unique(segmentation, return_inverse=True)[1].reshape(h, w)
    n = int(labels.max()) + 1
    masks = np.zeros((n, h * w), dtype=bool)
    pixel = np.arange(h * w).reshape(h, w)
    for dy, dx in _disk_offsets(radius):
        # pixel p is in the dilation of segment s if some p + d (d in the disk) has label s
        ys = slice(max(0, -dy), h - max(0, dy))
        xs = slice(max(0, -dx), w - max(0, dx))
        src = labels[max(0, dy) : h - max(0, -dy), max(0, dx) : w - max(0, -dx)]
        masks[src.ravel(), pixel[ys, xs].ravel()] = True
    return masks


def _segmentation_input(image: np.ndarray) -> np.ndarray:
    """An (H, W, C) image as PAIR segments it: scaled to [-1, 1] over all channels, then resized to 224 x 224.

    The order matters: resizing first and scaling after changes the bicubic overshoot and so the segments.
    """
    image = image.astype(np.float64)
    low, high = image.min(), image.max()
    scaled = (image - low) / (high - low) * 2.0 - 1.0 if high > low else np.zeros_like(image)
    return resize(scaled, (SEGMENTATION_SIZE, SEGMENTATION_SIZE), order=3, mode="constant", preserve_range=True,
                  anti_aliasing=True)


def _segments(small: np.ndarray, shape: tuple[int, int], scale: int) -> np.ndarray:
    seg = felzenszwalb(small, scale=scale, sigma=FELZENSZWALB_SIGMA, min_size=FELZENSZWALB_MIN_SIZE, channel_axis=-1)
    return resize(seg, shape, order=0, preserve_range=True, anti_aliasing=False).astype(np.int64)


def _scale_masks(small: np.ndarray, shape: tuple[int, int], scale: int, radius: int) -> np.ndarray:
    return dilated_segment_masks(_segments(small, shape, scale), radius)


def superpixels(image: np.ndarray, scale: int) -> np.ndarray:
    """(H, W) labels 0..M-1 of the Felzenszwalb segments of an (H, W, C) image at ``scale``, segmented as XRAI
    segments (PAIR's input: [-1, 1], 224 x 224) and resized back to the image (LIME's features)."""
    segments = _segments(_segmentation_input(image), image.shape[:2], scale)
    return np.unique(segments, return_inverse=True)[1].reshape(segments.shape)


def felzenszwalb_masks(
    image: np.ndarray, radius: int = 5, scales=FELZENSZWALB_SCALES, pool: ThreadPoolExecutor | None = None
) -> np.ndarray:
    """All dilated segments of an (H, W, C) image over the Felzenszwalb scales, stacked as (n_regions, H*W); those
    of the last images (by content) whose regions fit :data:`KEPT_REGION_BYTES` come from memory."""
    image = np.ascontiguousarray(image)
    key = (hashlib.blake2b(image.tobytes(), digest_size=16).digest(), image.shape, image.dtype.str, radius,
           tuple(scales))
    if key in _regions:
        _regions.move_to_end(key)
        packed, pixels = _regions[key]
        return np.unpackbits(packed, axis=1, count=pixels).astype(bool)
    small = _segmentation_input(image)
    run = pool.map if pool is not None else map
    masks = np.concatenate(list(run(lambda scale: _scale_masks(small, image.shape[:2], scale, radius), scales)))
    _regions[key] = np.packbits(masks, axis=1), masks.shape[1]
    while sum(packed.nbytes for packed, _ in _regions.values()) > KEPT_REGION_BYTES:
        _regions.popitem(last=False)
    return masks


def xrai_regions(
    attribution: np.ndarray, masks: np.ndarray, min_pixel_diff: int = 50, area_threshold: float = 1.0
) -> tuple[np.ndarray, list[int]]:
    """Greedy XRAI growth: returns the region map (H*W,) and the order in which regions were added.

    At each step the region whose newly covered pixels have the highest mean
    attribution is added; regions adding fewer than ``min_pixel_diff`` pixels are
    dropped. Pixels never covered get the mean attribution of the uncovered pixels.
    """
    attr = attribution.reshape(-1).astype(np.float64)
    n_pixels = attr.size
    pixel_regions = sparse.csr_matrix(masks.T, dtype=np.float64)  # pixel -> regions containing it
    new_count = np.asarray(pixel_regions.sum(axis=0)).ravel()
    new_sum = pixel_regions.T @ attr
    alive = new_count >= min_pixel_diff
    covered = np.zeros(n_pixels, dtype=bool)
    output = np.full(n_pixels, -np.inf)
    order: list[int] = []
    while covered.mean() <= area_threshold and alive.any():
        gain = np.where(alive, new_sum / np.maximum(new_count, 1), -np.inf)
        best = int(np.argmax(gain))
        added = masks[best] & ~covered
        output[added] = gain[best]
        order.append(best)
        covered |= added
        alive[best] = False
        if added.any():  # only regions touching the newly covered pixels change
            touched = pixel_regions[np.flatnonzero(added)]
            new_count -= np.asarray(touched.sum(axis=0)).ravel()
            new_sum -= touched.T @ attr[added]
        alive &= new_count >= min_pixel_diff
    if (~covered).any():
        output[~covered] = attr[~covered].mean()
    return output, order


def pair_integrated_gradients(
    scorer: nn.Module, images: torch.Tensor, baselines: torch.Tensor, target: torch.Tensor, n_steps: int,
    inputs_per_pass: int,
) -> torch.Tensor:
    """Integrated Gradients as PAIR integrates them for XRAI: the mean gradient at ``n_steps`` points of
    ``linspace(0, 1)`` (both ends, equal weights) times (image - baseline).

    Own loop because captum's public rules weigh the end points differently (its trapezoid halves them),
    which changes XRAI's region gains; (step, image) pairs of the whole batch share passes.
    """
    alphas = torch.linspace(0.0, 1.0, n_steps, dtype=images.dtype, device=images.device)
    b = images.shape[0]
    total = torch.zeros_like(images)
    view = (-1,) + (1,) * (images.ndim - 1)
    for chunk in torch.arange(n_steps * b, device=images.device).split(inputs_per_pass):
        steps, rows = chunk // b, chunk % b
        path = baselines[rows] + alphas[steps].reshape(view) * (images[rows] - baselines[rows])
        path.requires_grad_(True)
        score = scorer(path).gather(1, target[rows][:, None]).sum()
        total.index_add_(0, rows, torch.autograd.grad(score, path)[0])
    return total * (images - baselines) / n_steps


class XRAI(SaliencyMethod):
    """XRAI region attribution (2-D only): IG from black and white baselines, then greedy region growth.

    ``n_steps`` integration points per baseline (100, the default of PAIR's ``XRAIParameters``, from the
    XRAI authors); ``internal_batch_size`` inputs per pass (``None``: sized by ``PASS_VOXELS``). The map
    ranks regions (higher = more salient) and may be negative: it is not folded by ``|.|``.

    Args:
        n_steps: integration points per baseline, both ends included (100, PAIR's default; at least 2).
        internal_batch_size: interpolated inputs per pass (``None``: sized by ``PASS_VOXELS``).
        dilation_radius: radius of the disk every Felzenszwalb segment is dilated by, in pixels of the image (5).
        min_pixel_diff: regions that would newly cover fewer pixels than this are dropped from the growth (50).
        output: the class score explained: ``logit`` (default) or ``probability`` (softmax).
    """

    name = "xrai"
    signed = False
    published = {"n_steps": 100}
    spatial_dims = (2,)  # its segmentation is 2-D: the study leaves it out on volumes, saying so

    def __init__(
        self, n_steps: int = 100, internal_batch_size: int | None = None, dilation_radius: int = 5,
        min_pixel_diff: int = 50, output: str = "logit",
    ) -> None:
        super().__init__(output)
        if n_steps < 2:
            raise ValueError(f"n_steps must be at least 2, got {n_steps}")
        self.n_steps, self.internal_batch_size = n_steps, internal_batch_size
        self.dilation_radius, self.min_pixel_diff = dilation_radius, min_pixel_diff

    def region_maps(self, images: torch.Tensor, attributions: torch.Tensor) -> torch.Tensor:
        """The region step alone (segmentation and greedy growth) for given (B, H, W) attributions."""
        maps = []
        # the regions (scikit-image's Felzenszwalb, the greedy growth over their masks) run on the CPU; the copies wait
        # on a GPU's passes, so they come before the regions' time starts
        images_np, attributions_np = images.detach().cpu().numpy(), attributions.detach().cpu().numpy()
        with work("xrai_regions"), ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
            for image, attr in zip(images_np, attributions_np):
                masks = felzenszwalb_masks(image.transpose(1, 2, 0), self.dilation_radius, pool=pool)
                region_map, _ = xrai_regions(attr, masks, self.min_pixel_diff)
                maps.append(region_map.reshape(attr.shape))
        return torch.as_tensor(np.stack(maps), dtype=torch.float32, device=images.device)

    def attribute(self, model: nn.Module, images: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if images.ndim != 4:
            raise ValueError("xrai is defined for 2-D images only (its segmentation is 2-D)")
        dims = tuple(range(1, images.ndim))
        scorer = scoring_function(model, self.output)
        per_pass = budget_inputs(images, self.internal_batch_size)
        attributions = 0.0
        # each image's own black and white as baselines, as published; channels merged by max, as PAIR does
        for extreme in (images.amin(dim=dims, keepdim=True), images.amax(dim=dims, keepdim=True)):
            attributions = attributions + pair_integrated_gradients(
                scorer, images, extreme.expand_as(images), target, self.n_steps, per_pass) / 2.0
        return self.region_maps(images, attributions.amax(dim=1))
