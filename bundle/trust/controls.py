"""Calibration controls (TRUST_METRICS.md section 10): map sources whose verdict under each criterion is known
before any run, so that a criterion's verdict rule can be checked on them (``bundle.calibration``).

They share the saliency interface, ``control(model, images, target) -> maps``, and wrap another source (a
method, a baseline, the oracle): graded degradations of a known-good map (noise, a shift by a fraction of the
lesion's size), a shuffle that keeps a map's look but breaks its correspondence with the image, and a map built
to change exactly as the model's prediction does. Every random draw is seeded by the image and the control's seed,
so a control gives the same map for the same image and seed.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage
from torch import nn

from bundle.saliency.base import image_generators, target_tensor
from bundle.trust.normalization import normalize_maps


def _call(source, model: nn.Module | None, images: torch.Tensor, target, masks: torch.Tensor | None) -> torch.Tensor:
    if getattr(source, "needs_ground_truth", False):
        return source(model, images, target, masks=masks)
    return source(model, images, target)


class _Wrapping:
    """A control made from another map source: it needs the ground truth when that source does."""

    signed = False  # a control's map ranks pixels: higher is more salient

    def __init__(self, source) -> None:
        self.source = source
        self.needs_ground_truth = bool(getattr(source, "needs_ground_truth", False))
        self.ignores_model = bool(getattr(source, "ignores_model", False))

    def unit(self, model, images, target, masks) -> torch.Tensor:
        """The source's maps folded and scaled to [0, 1] (``pair`` without the clip)."""
        maps = _call(self.source, model, images, target, masks)
        return normalize_maps(maps, "pair", bool(getattr(self.source, "signed", True)), clip=False)[0].to(maps.dtype)


class DegradedMap(_Wrapping):
    """A source's map (scaled to [0, 1]) plus Gaussian noise of standard deviation ``noise``: a graded
    degradation of a known-good map, the noise the same for the same image whichever the model.

    Args:
        source: the map source degraded (the oracle, a method on a glass-box model).
        noise: the noise's standard deviation, in units of the map's maximum.
        seed: seeds the noise (with the image).
    """

    def __init__(self, source, noise: float, seed: int = 0) -> None:
        super().__init__(source)
        if noise < 0:
            raise ValueError(f"noise must be non-negative, got {noise}")
        self.noise, self.seed = float(noise), seed

    def __repr__(self) -> str:
        return f"degraded({self.source!r}, noise={self.noise:g}, seed={self.seed})"

    def independent_draw(self) -> DegradedMap:
        """The same degradation with another noise draw (the agreement criteria's second map)."""
        return DegradedMap(self.source, self.noise, self.seed + 1)

    def __call__(self, model, images: torch.Tensor, target=None, masks: torch.Tensor | None = None) -> torch.Tensor:
        unit = self.unit(model, images, target, masks)
        noise = torch.stack([torch.randn(unit.shape[1:], generator=g, dtype=torch.float64)
                             for g in image_generators(images, self.seed)])
        return (unit.double() + self.noise * noise.to(unit.device)).to(unit.dtype)


class ShiftedMap(_Wrapping):
    """A source's map moved by ``fraction`` of the lesion's equivalent diameter (2 sqrt(area / pi) of the
    ground-truth mask), diagonally, filled with zeros: a graded miss of the right place.

    Args:
        source: the map source shifted (the oracle).
        fraction: the shift in lesion diameters.
    """

    needs_ground_truth = True

    def __init__(self, source, fraction: float) -> None:
        super().__init__(source)
        self.needs_ground_truth, self.fraction = True, float(fraction)

    def __repr__(self) -> str:
        return f"shifted({self.source!r}, fraction={self.fraction:g})"

    def __call__(self, model, images: torch.Tensor, target=None, masks: torch.Tensor | None = None) -> torch.Tensor:
        if masks is None:
            raise ValueError("the shifted control needs the ground-truth masks (its shift is in lesion sizes)")
        unit = self.unit(model, images, target, masks)
        spatial = unit.ndim - 1
        areas = (masks.reshape(len(masks), -1) > 0.5).sum(dim=1).double().cpu().numpy()
        diameters = 2 * (areas / np.pi) ** (1 / 2) if spatial == 2 else 2 * (3 * areas / (4 * np.pi)) ** (1 / 3)
        # scipy's sub-pixel shift (linear interpolation) on the CPU: a control's maps, no pass of the model waits on it
        moved = [ndimage.shift(m, [self.fraction * d / np.sqrt(spatial)] * spatial, order=1, mode="constant")
                 for m, d in zip(unit.double().cpu().numpy(), diameters)]
        return torch.as_tensor(np.stack(moved), dtype=unit.dtype, device=unit.device)


class ShuffledMap(_Wrapping):
    """Each image gets the source's map of another image of its batch: the images are put on one seeded random
    cycle and each takes the map ``step`` places ahead, a map with realistic spatial statistics and no
    correspondence with the image (an image with no other ``step`` places away gets its own map turned by 180
    degrees).

    Args:
        source: the map source whose maps are shuffled (a method, the oracle).
        seed: seeds the cycle.
        step: how far ahead on the cycle; the independent draw (the agreement criteria's second map) takes the
            next step, so the two maps of a pair always come from two different other images.
    """

    def __init__(self, source, seed: int = 0, step: int = 1) -> None:
        super().__init__(source)
        self.seed, self.step = seed, step

    def __repr__(self) -> str:
        return f"shuffled({self.source!r}, seed={self.seed}, step={self.step})"

    def independent_draw(self) -> ShuffledMap:
        return ShuffledMap(self.source, self.seed, self.step + 1)

    def __call__(self, model, images: torch.Tensor, target=None, masks: torch.Tensor | None = None) -> torch.Tensor:
        unit = self.unit(model, images, target, masks)
        if len(unit) <= self.step:
            return unit.flip(dims=tuple(range(1, unit.ndim)))
        # seeded by the batch's images, so a cached batch and a recomputed one get the same cycle
        order = torch.randperm(len(unit), generator=image_generators(images[:1], self.seed)[0])
        source_of = torch.empty_like(order)
        source_of[order] = order.roll(-self.step)  # every image takes the map `step` places ahead on the cycle
        return unit[source_of.to(unit.device)]


class PredictionTrackingMap:
    """A map built to change exactly as the prediction does: p A + (1 - p) B, p the model's softmax probability
    of the target class, A the ground-truth lesion and B the rest of the image, each normalised to sum to one.
    A and B do not overlap, so the Jensen-Shannon divergence of two such maps equals that of the two
    predictions [p, 1 - p]: PSC is 1 by construction (the known-good control of the PSC criterion).

    With ``logit_noise`` it tracks the prediction through an error: p's logit plus a Gaussian error of that
    standard deviation, drawn per image from its ground-truth mask (seeded), so that an image and its attacked
    version share it. The map still follows every change of the logit, but the divergence a given change makes
    is weighted differently per image (JSD ~ p (1 - p) x the change squared / 8 for small changes), so PSC falls
    as the error grows whatever the attacks' size: PSC's graded control. An error drawn afresh for the attacked
    image, or noise on the map's pixels, swamps the prediction changes of a weak attack (JSD_pred 1e-7 in the
    quick study) at any level.

    Args:
        logit_noise: the standard deviation of the error on the target class's logit (0: the exact map).
        seed: seeds the error (with the mask).
    """

    name = "prediction_tracking"
    signed = False
    needs_ground_truth = True

    def __init__(self, logit_noise: float = 0.0, seed: int = 0) -> None:
        if logit_noise < 0:
            raise ValueError(f"logit_noise must be non-negative, got {logit_noise}")
        self.logit_noise, self.seed = float(logit_noise), seed

    def __repr__(self) -> str:
        return (f"prediction_tracking(logit_noise={self.logit_noise:g}, seed={self.seed})" if self.logit_noise
                else "prediction_tracking()")

    def __call__(self, model: nn.Module, images: torch.Tensor, target=None,
                 masks: torch.Tensor | None = None) -> torch.Tensor:
        if masks is None:
            raise ValueError("the prediction-tracking control needs the ground-truth masks")
        inside = (masks.reshape(len(masks), *images.shape[2:]) > 0.5).double()
        with torch.no_grad():
            p = torch.softmax(model(images).double(), dim=1).gather(1, target_tensor(target, len(images),
                                                                                     images.device)[:, None])
        if self.logit_noise:
            error = torch.stack([torch.randn(1, generator=g, dtype=torch.float64)
                                 for g in image_generators(inside, self.seed)])
            p = torch.sigmoid(torch.logit(p, eps=1e-12) + self.logit_noise * error.to(p.device))
        p = p.reshape(-1, *[1] * (inside.ndim - 1))
        axes = tuple(range(1, inside.ndim))
        lesion = inside / inside.sum(dim=axes, keepdim=True).clamp_min(1)
        rest = (1 - inside) / (1 - inside).sum(dim=axes, keepdim=True).clamp_min(1)
        return (p * lesion + (1 - p) * rest).float()


class RankedMap(_Wrapping):
    """A signed attribution read as a ranking map: ``sign`` x the map, unfolded, so that the pixels that add the
    most to the class score rank first (``sign`` 1) or last (``sign`` -1). On the glass-box model, Integrated
    Gradients is the exact contribution of each pixel, so ``sign`` 1 is the known-good faithfulness control and
    ``sign`` -1 a known-bad one (it reveals first what lowers the score).

    Args:
        source: a signed attribution (Integrated Gradients on the glass box). sign: 1 or -1.
    """

    def __init__(self, source, sign: int = 1) -> None:
        super().__init__(source)
        if sign not in (1, -1):
            raise ValueError(f"sign must be 1 or -1, got {sign}")
        self.sign = sign

    def __repr__(self) -> str:
        return f"ranked({self.source!r}, sign={self.sign})"

    def __call__(self, model, images: torch.Tensor, target=None, masks: torch.Tensor | None = None) -> torch.Tensor:
        return self.sign * _call(self.source, model, images, target, masks)


class CutOf(_Wrapping):
    """A map source presented to ``fidelity_to_published`` as a cut of ``published``: its maps are compared
    with ``published``'s as a method's cut pass counts are with its published ones.

    Args:
        source: the maps scored as the cut (a degraded copy of ``published``, a random map).
        published: the maps they should reproduce.
    """

    def __init__(self, source, published) -> None:
        super().__init__(source)
        self.published = published
        self.signed = bool(getattr(source, "signed", True))

    def __repr__(self) -> str:
        return f"cut_of({self.source!r}, published={self.published!r})"

    def is_cut(self) -> bool:
        return True

    def published_method(self):
        return self.published

    def __call__(self, model, images: torch.Tensor, target=None, masks: torch.Tensor | None = None) -> torch.Tensor:
        return _call(self.source, model, images, target, masks)
