"""Performance information curves, SIC and AIC (TRUST_METRICS.md section 6; Kapishnikov et al. 2019).

Same numbers as PAIR's ``saliency.metrics.pic.compute_pic_metric`` (tested to 1e-6),
computed for a batch: every blurred image of every image and reveal fraction is made
first (scipy's ``griddata`` per image, in a thread pool), then the model scores them
all in a few forward passes instead of one call per image and fraction.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from scipy import interpolate

PIC_FRACTIONS = (0.005, 0.01, 0.02, 0.03, 0.04, 0.05, 0.07, 0.10, 0.13, 0.21, 0.34, 0.5, 0.75)
PIC_KINDS = ("sic", "aic")
INFORMATION = ("webp", "entropy")


def random_reveal_mask(shape: tuple[int, int], fraction: float = 0.01, seed: int = 0) -> np.ndarray:
    """The seeded random ``fraction`` of pixels every blurred image keeps (PAIR's ``generate_random_mask``)."""
    mask = np.zeros(shape, dtype=bool)
    indices = np.random.default_rng(seed).choice(mask.size, replace=False, size=int(mask.size * fraction))
    mask[np.unravel_index(indices, shape)] = True
    return mask


def blurred_image(image: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """A uint8 (H, W) image rebuilt from the kept pixels (and the four corners) by linear interpolation,
    the mean grey outside their hull; PAIR's ``create_blurred_image`` for one channel."""
    keep = keep.copy()
    h, w = keep.shape
    keep[[0, 0, h - 1, h - 1], [0, w - 1, 0, w - 1]] = True
    if keep.all():
        return image.copy()
    out = image.astype(np.float32) * keep.astype(np.float32)
    known, unknown = np.argwhere(keep), np.argwhere(~keep)
    out[tuple(unknown.T)] = interpolate.griddata(known, image[tuple(known.T)], unknown, method="linear",
                                                 fill_value=np.mean(image))
    return np.round(out).astype(np.uint8)


def information(image: np.ndarray, kind: str = "webp") -> float:
    """Information in a uint8 image: lossless-WebP byte length (default, PAIR) or 256-bin histogram entropy."""
    if kind == "webp":
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="webp", lossless=True, quality=100)
        return float(buffer.tell())
    if kind == "entropy":
        counts = np.bincount(image.ravel(), minlength=256).astype(np.float64)
        p = counts[counts > 0] / counts.sum()
        return float(-(p * np.log2(p)).sum())
    raise ValueError(f"information must be one of {INFORMATION}, got {kind!r}")


@dataclass(frozen=True)
class PicResult:
    """Per image: the curve on ``n_points + 1`` points of [0, 1] (NaN rows for skipped images), its
    trapezoid area, and why an image was skipped (empty string when it was scored)."""

    curve_x: np.ndarray
    curves: np.ndarray
    auc: np.ndarray
    skipped: list[str]


def _scores(model: Callable, images: np.ndarray, target: int, kind: str, batch_size: int,
            device: torch.device) -> np.ndarray:
    """SIC: the softmax probability of ``target``; AIC: 1 when ``target`` is the arg-max, else 0."""
    out = []
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            x = torch.as_tensor(images[start:start + batch_size], dtype=torch.float32, device=device)[:, None] / 255.0
            logits = model(x)
            if kind == "sic":
                out.append(torch.softmax(logits, dim=1)[:, target].double().cpu().numpy())
            else:
                out.append((logits.argmax(dim=1) == target).double().cpu().numpy())
    return np.concatenate(out)


def pic_curves(
    model: Callable, images: np.ndarray, maps: np.ndarray, reveal_mask: np.ndarray, target: int = 1,
    kind: str = "sic", fractions: Sequence[float] = PIC_FRACTIONS, min_score: float = 0.8, monotonic: bool = True,
    n_points: int = 1000, information_kind: str = "webp", batch_size: int = 64, workers: int = 2,
    device: torch.device | str = "cpu",
) -> PicResult:
    """SIC or AIC curves of a batch: ``images`` uint8 (N, H, W), ``maps`` (N, H, W) higher = more salient
    (fold signed maps first), one ``reveal_mask`` (H, W) for all (the seeded random 1%).

    Skipped (NaN curve, reason recorded): the original's score is below ``min_score``, the fully
    blurred image is not less informative than the original, or it does not score lower.
    """
    if kind not in PIC_KINDS:
        raise ValueError(f"kind must be one of {PIC_KINDS}, got {kind!r}")
    images, maps = np.asarray(images), np.asarray(maps)
    if images.dtype != np.uint8 or images.ndim != 3 or maps.shape != images.shape:
        raise ValueError(f"images must be uint8 (N, H, W) and maps the same shape; got {images.dtype} "
                         f"{images.shape} and {maps.shape}")

    def blurred_set(i: int) -> list[np.ndarray]:  # fully blurred, each fraction, the original
        keeps = [reveal_mask] + [np.logical_or(maps[i] >= np.quantile(maps[i], 1 - t), reveal_mask)
                                 for t in fractions]
        return [blurred_image(images[i], keep) for keep in keeps] + [images[i]]

    with ThreadPoolExecutor(max_workers=workers) as pool:  # griddata and WebP release the GIL
        sets = list(pool.map(blurred_set, range(len(images))))
        info = np.array(list(pool.map(lambda s: [information(b, information_kind) for b in s], sets)))
    stacked = np.stack([b for s in sets for b in s])
    scores = _scores(model, stacked, target, kind, batch_size, torch.device(device)).reshape(len(images), -1)

    curve_x = np.append(np.linspace(0.0, 1.0, num=n_points, endpoint=False), 1.0)
    curves, aucs, skipped = np.full((len(images), n_points + 1), np.nan), np.full(len(images), np.nan), []
    for i in range(len(images)):
        blur_info, steps_info, orig_info = info[i, 0], info[i, 1:-1], info[i, -1]
        blur_score, steps_score, orig_score = scores[i, 0], scores[i, 1:-1], scores[i, -1]
        if orig_score < min_score:
            skipped.append(f"min_score: the original scores {orig_score:.3f} < {min_score}")
            continue
        if blur_info >= orig_info:
            skipped.append("blur: the fully blurred image is not less informative than the original")
            continue
        if blur_score >= orig_score:
            skipped.append("blur_score: the fully blurred image does not score lower than the original")
            continue
        x = np.clip((steps_info - blur_info) / (orig_info - blur_info), 0.0, 1.0)
        y = np.clip((steps_score - blur_score) / (orig_score - blur_score), 0.0, 1.0)
        if monotonic:
            y = np.maximum.accumulate(y)
        # PAIR's interpolation of the (x, y) points with (0, 0) and (1, 1) appended, then a trapezoid area
        line = interpolate.interp1d(np.append(x, [0.0, 1.0]), np.append(y, [0.0, 1.0]))
        curves[i] = np.append(line(curve_x[:-1]), 1.0)
        aucs[i] = np.trapezoid(curves[i], curve_x)
        skipped.append("")
    return PicResult(curve_x, curves, aucs, skipped)


def aggregate_pic(result: PicResult) -> tuple[np.ndarray, float]:
    """The point-wise median curve of the scored images and its trapezoid area (PAIR's aggregation)."""
    scored = result.curves[~np.isnan(result.auc)]
    if not len(scored):
        return np.full_like(result.curve_x, np.nan), float("nan")
    median = np.median(scored, axis=0)
    return median, float(np.trapezoid(median, result.curve_x))
