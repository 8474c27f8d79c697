"""Performance information curves, SIC and AIC (TRUST_METRICS.md section 6; Kapishnikov et al. 2019).

Same numbers as PAIR's ``saliency.metrics.pic.compute_pic_metric`` (tested to 1e-6),
computed for a batch: every blurred image of every image and reveal fraction is made
first (scipy's ``griddata`` and the WebP encoding per image, across worker processes
when given an executor: Qhull holds the GIL, so threads do not help), then the model
scores them all in a few forward passes instead of one call per image and fraction, and
SIC and AIC are read from the same logits.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from itertools import chain, repeat
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from scipy import interpolate

from bundle.passes import work

PIC_FRACTIONS = (0.005, 0.01, 0.02, 0.03, 0.04, 0.05, 0.07, 0.10, 0.13, 0.21, 0.34, 0.5, 0.75)
PIC_KINDS = ("sic", "aic")
INFORMATION = ("webp", "entropy")
# why an image gets no curve (PAIR raises ComputePicMetricError for each): the original scores below
# min_score; the fully blurred image is not less informative; it does not score lower than the original
SKIP_REASONS = ("min_score", "blur", "blur_score")


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


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(B, 1, H, W) intensities in [0, 1] as the (B, H, W) uint8 images PIC blurs and encodes: round(255 x)."""
    if images.ndim != 4 or images.shape[1] != 1:
        raise ValueError(f"PIC curves are defined here for one-channel 2-D images (B, 1, H, W), got "
                         f"{tuple(images.shape)}")
    # PIC blurs and encodes with scipy and PIL on the CPU (the published method's own codecs): one copy per batch
    return np.clip(np.round(255.0 * images[:, 0].detach().cpu().numpy()), 0, 255).astype(np.uint8)


@dataclass(frozen=True)
class PicResult:
    """Per image: the curve on ``n_points + 1`` points of [0, 1] (NaN rows for skipped images), its
    trapezoid area, the (x, y) points the curve interpolates (one per reveal fraction; NaN when skipped),
    and why an image was skipped (a :data:`SKIP_REASONS` entry, empty when it was scored)."""

    curve_x: np.ndarray
    curves: np.ndarray
    auc: np.ndarray
    points_x: np.ndarray
    points_y: np.ndarray
    skipped: list[str]


def blurred_measurements(image: np.ndarray, saliency: np.ndarray, reveal_mask: np.ndarray,
                         fractions: Sequence[float], information_kind: str,
                         ends: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """One image's fully blurred version, its version at each reveal fraction (the pixels whose saliency is in the
    top fraction, OR the random mask, revealed) and the original, (F + 2, H, W) uint8, with their information;
    without ``ends``, the F reveal fractions' only (the two ends depend on the image alone)."""
    keeps = [np.logical_or(saliency >= np.quantile(saliency, 1 - t), reveal_mask) for t in fractions]
    if ends:
        keeps = [reveal_mask, *keeps, np.ones_like(reveal_mask)]
    # a map's ties keep the same pixels at several fractions (an occlusion, KernelSHAP or LIME map's blocks, XRAI's
    # regions): each kept set is blurred and encoded once
    keys = [np.packbits(keep).tobytes() for keep in keeps]
    measured: dict[bytes, tuple[np.ndarray, float]] = {}
    for key, keep in zip(keys, keeps):
        if key not in measured:
            blurred = blurred_image(image, keep)
            measured[key] = blurred, information(blurred, information_kind)
    images, info = zip(*(measured[key] for key in keys))
    return np.stack(images), np.array(info)


def _logits(model: Callable, images: np.ndarray, batch_size: int, device: torch.device) -> torch.Tensor:
    """Logits of uint8 (N, H, W) images scored as the model sees them, x / 255 in the model's dtype, in passes of
    ``batch_size``."""
    out = []
    tensors = chain(model.parameters(), model.buffers()) if isinstance(model, torch.nn.Module) else ()
    dtype = next((t.dtype for t in tensors if t.is_floating_point()), torch.float32)
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            x = torch.as_tensor(images[start:start + batch_size], dtype=dtype, device=device)[:, None] / 255.0
            out.append(model(x).double().cpu())
    return torch.cat(out)


def class_scores(logits: torch.Tensor, target: int, kind: str) -> np.ndarray:
    """SIC: the softmax probability of ``target``; AIC: 1 when ``target`` is the arg-max, else 0."""
    if kind == "sic":
        return torch.softmax(logits, dim=-1)[..., target].numpy()
    if kind == "aic":
        return (logits.argmax(dim=-1) == target).double().numpy()
    raise ValueError(f"kind must be one of {PIC_KINDS}, got {kind!r}")


def curves_from_measurements(info: np.ndarray, scores: np.ndarray, min_score: float = 0.8, monotonic: bool = True,
                             n_points: int = 1000) -> PicResult:
    """PIC curves from per-image measurements (N, F + 2): information and score of the fully blurred image,
    of each reveal fraction, and of the original, in that order (PAIR's normalisation and interpolation)."""
    n, fractions = info.shape[0], info.shape[1] - 2
    curve_x = np.append(np.linspace(0.0, 1.0, num=n_points, endpoint=False), 1.0)
    curves, aucs = np.full((n, n_points + 1), np.nan), np.full(n, np.nan)
    points_x, points_y, skipped = np.full((n, fractions), np.nan), np.full((n, fractions), np.nan), []
    for i in range(n):
        blur_info, steps_info, orig_info = info[i, 0], info[i, 1:-1], info[i, -1]
        blur_score, steps_score, orig_score = scores[i, 0], scores[i, 1:-1], scores[i, -1]
        if orig_score < min_score:
            skipped.append("min_score")
            continue
        if blur_info >= orig_info:
            skipped.append("blur")
            continue
        if blur_score >= orig_score:
            skipped.append("blur_score")
            continue
        x = np.clip((steps_info - blur_info) / (orig_info - blur_info), 0.0, 1.0)
        y = np.clip((steps_score - blur_score) / (orig_score - blur_score), 0.0, 1.0)
        if monotonic:
            y = np.maximum.accumulate(y)
        curves[i] = curve_through(x, y, curve_x)
        aucs[i] = np.trapezoid(curves[i], curve_x)
        points_x[i], points_y[i] = x, y
        skipped.append("")
    return PicResult(curve_x, curves, aucs, points_x, points_y, skipped)


def curve_through(x: np.ndarray, y: np.ndarray, curve_x: np.ndarray) -> np.ndarray:
    """PAIR's curve: the (x, y) points with (0, 0) and (1, 1) appended, linearly interpolated at ``curve_x``."""
    line = interpolate.interp1d(np.append(x, [0.0, 1.0]), np.append(y, [0.0, 1.0]))
    return np.append(line(curve_x[:-1]), 1.0)


def _check_kinds(kinds: Sequence[str]) -> None:
    for kind in kinds:
        if kind not in PIC_KINDS:
            raise ValueError(f"kind must be one of {PIC_KINDS}, got {kind!r}")


def pic_measurements(
    model: Callable, images: np.ndarray, maps: np.ndarray, reveal_mask: np.ndarray,
    fractions: Sequence[float] = PIC_FRACTIONS, information_kind: str = "webp", batch_size: int = 64,
    executor: Executor | None = None, device: torch.device | str = "cpu", ends: bool = True,
) -> tuple[np.ndarray, torch.Tensor]:
    """What the curves are read from, per image: the information (N, F + 2) and the model's float64 logits
    (N, F + 2, C) of its fully blurred version, its version at each reveal fraction and the original (without
    ``ends``, of the F reveal fractions only: (N, F) and (N, F, C)).

    ``executor`` (e.g. a process pool) makes the blurred images of different images in parallel; the model then
    scores them all in passes of ``batch_size``."""
    images, maps = np.asarray(images), np.asarray(maps)
    if images.dtype != np.uint8 or images.ndim != 3 or maps.shape != images.shape:
        raise ValueError(f"images must be uint8 (N, H, W) and maps the same shape; got {images.dtype} "
                         f"{images.shape} and {maps.shape}")
    mapper = executor.map if executor is not None else map
    with work("pic_blurring"):
        measured = list(mapper(blurred_measurements, images, maps, repeat(reveal_mask), repeat(tuple(fractions)),
                               repeat(information_kind), repeat(ends)))
    info, stacked = np.stack([m[1] for m in measured]), np.concatenate([m[0] for m in measured])
    return info, _logits(model, stacked, batch_size, torch.device(device)).reshape(len(images), info.shape[1], -1)


def curves_from_logits(info: np.ndarray, logits: torch.Tensor, target: int = 1, kinds: Sequence[str] = PIC_KINDS,
                       min_score: float = 0.8, monotonic: bool = True, n_points: int = 1000) -> dict[str, PicResult]:
    """SIC and / or AIC curves from :func:`pic_measurements`' information and logits, every kind from the same
    logits."""
    _check_kinds(kinds)
    return {kind: curves_from_measurements(info, class_scores(logits, target, kind), min_score, monotonic, n_points)
            for kind in kinds}


def pic_curves(
    model: Callable, images: np.ndarray, maps: np.ndarray, reveal_mask: np.ndarray, target: int = 1,
    kinds: Sequence[str] = PIC_KINDS, fractions: Sequence[float] = PIC_FRACTIONS, min_score: float = 0.8,
    monotonic: bool = True, n_points: int = 1000, information_kind: str = "webp", batch_size: int = 64,
    executor: Executor | None = None, device: torch.device | str = "cpu",
) -> dict[str, PicResult]:
    """SIC and / or AIC curves of a batch: ``images`` uint8 (N, H, W), ``maps`` (N, H, W) higher = more
    salient (fold signed maps first), one ``reveal_mask`` (H, W) for all (the seeded random 1%).

    Every kind is read from the same blurred images and logits; ``executor`` (e.g. a process pool) makes
    the blurred images of different images in parallel. Skipped images (NaN curve, reason recorded): the
    original scores below ``min_score``, the fully blurred image is not less informative than the original,
    or it does not score lower.
    """
    _check_kinds(kinds)
    info, logits = pic_measurements(model, images, maps, reveal_mask, fractions, information_kind, batch_size,
                                    executor, device)
    return curves_from_logits(info, logits, target, kinds, min_score, monotonic, n_points)


def aggregate_pic(curve_x: np.ndarray, curves: np.ndarray) -> tuple[np.ndarray, float]:
    """The point-wise median curve of the scored images (rows without NaN) and its trapezoid area (PAIR's
    aggregation); NaN when no image was scored."""
    scored = curves[~np.isnan(curves).any(axis=1)]
    if not len(scored):
        return np.full_like(curve_x, np.nan), float("nan")
    median = np.median(scored, axis=0)
    return median, float(np.trapezoid(median, curve_x))


@dataclass(frozen=True)
class MedianCurve:
    """The point-wise median curve of the scored images and its area, each with a percentile bootstrap
    interval over images (resampled with replacement, seeded); ``n`` images scored, ``n_skipped`` not."""

    curve: np.ndarray
    curve_low: np.ndarray
    curve_high: np.ndarray
    auc: float
    auc_low: float
    auc_high: float
    n: int
    n_skipped: int


def median_curve(curve_x: np.ndarray, curves: np.ndarray, n_resamples: int = 1000, confidence: float = 0.95,
                 seed: int = 0, chunk: int = 100) -> MedianCurve:
    """:func:`aggregate_pic` with bootstrap intervals: each resample draws the images anew and takes the median
    curve and its area, in vectorised chunks of ``chunk`` resamples (no interval, NaN, with ``n_resamples`` 0)."""
    scored = curves[~np.isnan(curves).any(axis=1)]
    n, skipped = len(scored), len(curves) - len(scored)
    median, area = aggregate_pic(curve_x, curves)
    if n < 2:
        return MedianCurve(median, median, median, area, area, area, n, skipped)
    if n_resamples == 0:
        nan = np.full_like(median, np.nan)
        return MedianCurve(median, nan, nan, area, float("nan"), float("nan"), n, skipped)
    rng = np.random.default_rng(seed)
    medians = []
    for start in range(0, n_resamples, chunk):
        draws = rng.integers(0, n, size=(min(chunk, n_resamples - start), n))
        medians.append(np.median(scored[draws], axis=1))
    medians = np.concatenate(medians)
    areas = np.trapezoid(medians, curve_x, axis=1)
    tails = (100 * (1 - confidence) / 2, 100 * (1 + confidence) / 2)
    low, high = np.percentile(medians, tails, axis=0)
    auc_low, auc_high = np.percentile(areas, tails)
    return MedianCurve(median, low, high, area, float(auc_low), float(auc_high), n, skipped)
