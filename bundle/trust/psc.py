"""Prediction-saliency correlation under attack (TRUST_METRICS.md section 5; Zhang et al. 2024).

Two attacks perturb each image within an L-infinity ball of radius ``epsilon`` (projected
Adam on the perturbation, the image kept in [0, 1]):

- *sensitivity*: change the prediction (cross-entropy towards the other side of the target
  class's probability) while keeping the map (``keep_weight`` x JSD to the original map);
- *robustness*: move the map towards a target region (JSD to a uniform map on the square of
  side ``target_side`` where the original map has the least mass) while keeping the prediction
  (``keep_weight`` x JSD of the predictions).

A trustworthy map changes with the prediction: PSC, the Pearson correlation across images of
JSD_pred (between [p, 1 - p] before and after) and JSD_map (between the ``sum_to_one`` maps),
is near 1. During the attack the model's ReLU modules are softplus(beta), beta growing
geometrically from ``beta[0]`` to ``beta[1]`` (Dombrowski et al. 2019), because the second
derivative of a ReLU network, which an attack on a gradient map needs, is zero almost everywhere;
the divergences are measured on the real model.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from monai.utils import look_up_option
from torch import nn

from bundle.passes import second_order, work
from bundle.saliency.base import inference_state
from bundle.saliency.differentiable import Activation, activations
from bundle.trust.normalization import normalize_maps

PSC_ATTACKS = ("sensitivity", "robustness")
PREDICTIONS = ("softmax", "sigmoid")
JSD_CLAMP = 1e-7  # Zhang et al.'s clamp of the mixture inside the logarithm


def jensen_shannon(p: torch.Tensor, q: torch.Tensor, clamp: float = JSD_CLAMP) -> torch.Tensor:
    """Jensen-Shannon divergence (natural log, nats; at most ln 2) of each pair of distributions (B, K):
    0.5 KL(p || m) + 0.5 KL(q || m), m = (p + q) / 2, every argument of a log clamped to [``clamp``, 1], 0 log 0 = 0.
    Equals ``scipy.spatial.distance.jensenshannon(p, q) ** 2`` (tested), and is exactly 0 for two equal maps:
    with m alone clamped, the entries of a map below ``clamp`` (a blurred mask's tails) gave a map compared with
    itself a divergence of -1e-9 or so, different per image, which PSC (a correlation, blind to scale) read as a
    pattern (the calibration found an unchanging map at PSC -0.70)."""
    log_m = ((p + q) / 2).clamp(clamp, 1.0).log()
    # p log(p / m) with 0 log 0 = 0, written so that its gradient stays finite where p is 0 (F.kl_div's is
    # -inf there, which turned an attack on a saturated prediction into NaN images)
    def kl(d: torch.Tensor) -> torch.Tensor:
        return (d * (d.clamp(clamp, 1.0).log() - log_m)).sum(-1)

    return 0.5 * (kl(p) + kl(q))


def class_probability(logits: torch.Tensor, target: torch.Tensor, prediction: str = "softmax") -> torch.Tensor:
    """p of the target class: its softmax probability (default) or the sigmoid of its logit."""
    chosen = logits.gather(1, target[:, None])[:, 0]
    if look_up_option(prediction, PREDICTIONS) == "sigmoid":
        return torch.sigmoid(chosen)
    return torch.softmax(logits, dim=1).gather(1, target[:, None])[:, 0]


@work("metrics")
def prediction_divergence(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """JSD_pred: the divergence of the two-point distributions [p, 1 - p] and [q, 1 - q]."""
    return jensen_shannon(torch.stack([p, 1 - p], dim=-1), torch.stack([q, 1 - q], dim=-1))


def map_distribution(maps: torch.Tensor, signed: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Maps (B, *spatial) as distributions (B, N): signed attributions folded by ``|.|`` (Zhang et al. sum the
    gradient's magnitude), then ``sum_to_one``; and the flags of maps with no mass (their divergences are NaN)."""
    folded = maps.abs() if signed else maps
    unit, degenerate = normalize_maps(folded, "sum_to_one")
    return unit.reshape(unit.shape[0], -1).double(), degenerate


@work("metrics")
def map_divergence(a: torch.Tensor, b: torch.Tensor, signed: bool) -> torch.Tensor:
    """JSD_map between two batches of maps of the same images; NaN where either map has no mass."""
    (p, flat_p), (q, flat_q) = map_distribution(a, signed), map_distribution(b, signed)
    jsd = jensen_shannon(p, q.to(p.device))
    return torch.where((flat_p | flat_q.to(flat_p.device)).to(jsd.device), torch.full_like(jsd, float("nan")), jsd)


@dataclass(frozen=True)
class PscResult:
    """PSC with its percentile bootstrap interval over images, the images used and the NaN map divergences
    replaced by the mean of the others."""

    psc: float
    ci_low: float
    ci_high: float
    n: int
    n_replaced: int


def _pearson(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    """Pearson's r along ``axis`` (vectorised over resamples); NaN where either side is constant."""
    varies = (np.ptp(x, axis=axis) > 0) & (np.ptp(y, axis=axis) > 0)  # exactly: centring leaves rounding noise
    x = x - x.mean(axis=axis, keepdims=True)
    y = y - y.mean(axis=axis, keepdims=True)
    denominator = np.sqrt((x * x).sum(axis=axis) * (y * y).sum(axis=axis))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(varies & (denominator > 0), (x * y).sum(axis=axis) / denominator, np.nan)


def psc(jsd_pred, jsd_map, n_resamples: int = 1000, confidence: float = 0.95, seed: int = 0) -> PscResult:
    """PSC = Pearson correlation of JSD_pred and JSD_map across images, NaN map divergences replaced by the mean
    of the others (Zhang et al.) and counted; NaN when fewer than 3 images or either side is constant."""
    pred, maps = np.asarray(jsd_pred, dtype=np.float64), np.asarray(jsd_map, dtype=np.float64).copy()
    keep = np.isfinite(pred)
    pred, maps = pred[keep], maps[keep]
    replaced = int((~np.isfinite(maps)).sum())
    if replaced < len(maps):
        maps[~np.isfinite(maps)] = maps[np.isfinite(maps)].mean()
    n = len(pred) if replaced < len(maps) else 0
    if n < 3:
        return PscResult(float("nan"), float("nan"), float("nan"), n, replaced)
    r = float(_pearson(pred, maps))
    if not np.isfinite(r):
        return PscResult(r, r, r, n, replaced)
    # percentile bootstrap over images (resampled in pairs); a resample with a constant side has no r and is left out
    draws = np.random.default_rng(seed).integers(0, n, size=(n_resamples, n))
    resampled = _pearson(pred[draws], maps[draws], axis=1)
    low, high = np.nanpercentile(resampled, [100 * (1 - confidence) / 2, 100 * (1 + confidence) / 2])
    return PscResult(r, float(low), float(high), n, replaced)


def target_region_map(maps: torch.Tensor, side: int) -> torch.Tensor:
    """The robustness attack's target: uniform mass on the ``side``-wide square (cube in 3-D) where the map
    (B, *spatial, non-negative) has the least mass (first such window), zero elsewhere; sums to one."""
    spatial = maps.shape[1:]
    side = max(1, min(side, *spatial))
    pool = F.avg_pool2d if len(spatial) == 2 else F.avg_pool3d
    mass = pool(maps[:, None].double(), side, stride=1)[:, 0]
    corner = np.array(np.unravel_index(mass.flatten(1).argmin(dim=1).cpu().numpy(), mass.shape[1:])).T
    target = torch.zeros_like(maps, dtype=torch.float64)
    for i, start in enumerate(corner):
        target[(i, *[slice(int(s), int(s) + side) for s in start])] = 1.0 / side ** len(spatial)
    return target


@dataclass(frozen=True)
class Attack:
    """One attack's settings (its ``repr`` identifies the perturbations it makes, e.g. in a cache key).

    Args:
        kind: ``sensitivity`` or ``robustness``.
        epsilon: L-infinity radius on [0, 1] intensities (Zhang et al.: 0.03).
        iterations / lr: projected Adam steps and learning rate (Zhang et al.: Adam, lr 2e-4, up to 1000).
        keep_weight: weight of the term that keeps the map (sensitivity) or the prediction (robustness).
        beta: softplus beta at the first and the last iteration (geometric growth; Dombrowski et al.: 10, 100).
        target_side: the robustness target square's side as a fraction of the image side.
        prediction: ``softmax`` probability of the target class or ``sigmoid`` of its logit.
    """

    kind: str
    epsilon: float = 0.03
    iterations: int = 1000
    lr: float = 2e-4
    keep_weight: float = 10.0
    beta: tuple[float, float] = (10.0, 100.0)
    target_side: float = 0.12
    prediction: str = "softmax"

    def __post_init__(self) -> None:
        look_up_option(self.kind, PSC_ATTACKS)
        look_up_option(self.prediction, PREDICTIONS)
        if self.epsilon <= 0 or self.iterations < 1 or self.lr <= 0:
            raise ValueError(f"an attack needs epsilon > 0, iterations >= 1 and lr > 0; got {self}")

    def betas(self) -> np.ndarray:
        if self.iterations == 1:
            return np.array([self.beta[1]])
        return self.beta[0] * (self.beta[1] / self.beta[0]) ** (np.arange(self.iterations) / (self.iterations - 1))


MapFunction = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]


@contextlib.contextmanager
def _outputs_on(model: nn.Module, x: torch.Tensor, smooth: list[Activation]) -> Iterator[list[torch.Tensor]]:
    """The outputs of ``model``'s passes on ``x`` itself inside the block, those with a guided backward rule left
    out (a prediction differentiated through them would get the guided, not the true, gradient)."""
    outputs: list[torch.Tensor] = []

    def keep(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
        if args and args[0] is x and not any(a.guided for a in smooth):
            outputs.append(output)

    handle = model.register_forward_hook(keep)
    try:
        yield outputs
    finally:
        handle.remove()


def attacked_images(model: nn.Module, images: torch.Tensor, target: torch.Tensor, map_fn: MapFunction,
                    attack: Attack, signed: bool = True) -> torch.Tensor:
    """The attack's images (B, C, *spatial): in [0, 1], and within ``epsilon`` of ``images`` in every pixel
    (to float rounding; the perturbation is projected after every step).

    ``map_fn(model, x, target)`` is a map differentiable with respect to ``x``
    (``bundle.saliency.differentiable.differentiable_map``). Deterministic: the perturbation starts
    at zero and the loss of each image depends on that image only, so a batch gives each image
    the perturbation it would get alone. The model's mode, weights and ReLU modules are restored.
    """
    images = images.detach()
    target = target.to(images.device)
    with inference_state(model), activations(model) as smooth, torch.enable_grad():
        reference_p = class_probability(model(images), target, attack.prediction).detach()
        reference_map = map_distribution(map_fn(model, images, target).detach(), signed)[0]
        goal = None
        if attack.kind == "robustness":
            side = int(round(attack.target_side * min(images.shape[2:])))
            goal = target_region_map(reference_map.reshape(images.shape[0], *images.shape[2:]), side)
            goal = goal.reshape(images.shape[0], -1)
        lower = reference_p >= 0.5  # the sensitivity attack pushes p across 0.5, away from where it starts
        delta = torch.zeros_like(images, requires_grad=True)
        optimiser = torch.optim.Adam([delta], lr=attack.lr)
        for beta in attack.betas():
            for a in smooth:
                a.beta = float(beta)
            x = images + delta
            with second_order(), _outputs_on(model, x, smooth) as shared:
                unit = map_distribution(map_fn(model, x, target), signed)[0]
            # the map's own pass on x gave the logits (one pass fewer per step), unless its backward rule is not
            # the gradient's (guided backpropagation) or it never scored x itself (IG's path, SmoothGrad's copies)
            logits = shared[0] if shared else model(x)
            with work("attack_steps"):
                p = class_probability(logits, target, attack.prediction)
                if attack.kind == "sensitivity":
                    change = -torch.where(lower, torch.log1p(-p.clamp(max=1 - 1e-7)), torch.log(p.clamp(min=1e-7)))
                    loss = change + attack.keep_weight * jensen_shannon(unit, reference_map)
                else:
                    loss = jensen_shannon(unit, goal) + attack.keep_weight * prediction_divergence(p, reference_p)
                optimiser.zero_grad()
            loss.sum().backward()
            with work("attack_steps"), torch.no_grad():
                delta.grad.nan_to_num_(0.0, posinf=0.0, neginf=0.0)  # a pixel without a finite gradient stays put
                optimiser.step()
                delta.clamp_(-attack.epsilon, attack.epsilon)
                delta.copy_((images + delta).clamp(0.0, 1.0) - images)
        for a in smooth:
            a.beta = None
    return (images + delta.detach()).clamp(0.0, 1.0)
