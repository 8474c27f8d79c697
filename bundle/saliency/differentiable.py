"""Saliency maps that can be differentiated with respect to the input, for attacks on the maps (PSC).

An attack that changes a map needs d(map)/d(input). The configured methods return
detached maps (captum computes its gradients without ``create_graph``), so the
methods an attack targets have a second, differentiable form here, written to give
the configured method's map exactly on the same model (tested against each) and
taking its parameters (steps, samples, noise seed, CAM layer) from it. ReLU networks
have a zero second derivative almost everywhere; :func:`activations` swaps each
``nn.ReLU`` module for an :class:`Activation` whose ``beta`` makes it softplus(beta)
during an attack (Dombrowski et al. 2019) and whose ``guided`` flag gives guided
backpropagation's backward rule.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from captum.attr._utils.approximation_methods import approximation_parameters
from torch import nn

from bundle.passes import second_order
from bundle.saliency.base import SaliencyMethod, require_relu_modules, scoring_function
from bundle.saliency.cam import upsample

DIFFERENTIABLE = ("grad", "smoothgrad", "ig", "smoothig", "gradcam", "gradcampp", "gbp", "ggcam")


class _GuidedBackward(torch.autograd.Function):
    """Identity forward; backward keeps only the positive part of the incoming gradient (guided backprop).
    Written with differentiable operations, so a second backward pass goes through it."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return grad.clamp(min=0)


class Activation(nn.Module):
    """ReLU (``beta`` None) or softplus(beta) (a smooth ReLU whose second derivative is not zero), optionally
    with guided backpropagation's backward rule (only positive gradients pass)."""

    def __init__(self, beta: float | None = None, guided: bool = False) -> None:
        super().__init__()
        self.beta, self.guided = beta, guided

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(x) if self.beta is None else F.softplus(x, beta=self.beta)
        return _GuidedBackward.apply(out) if self.guided else out


@contextlib.contextmanager
def activations(model: nn.Module) -> Iterator[list[Activation]]:
    """Every ``nn.ReLU`` module of ``model`` replaced by an :class:`Activation` (ReLU until changed); yields all
    of the model's activations (those an enclosing call already placed too) and restores the ReLUs on exit."""
    replaced = []
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.ReLU):
                setattr(parent, name, Activation())
                replaced.append((parent, name, child))
    try:
        yield [m for m in model.modules() if isinstance(m, Activation)]
    finally:
        for parent, name, child in replaced:
            setattr(parent, name, child)


@contextlib.contextmanager
def guided(model: nn.Module) -> Iterator[None]:
    """Guided backpropagation's backward rule at every activation, for the duration of the block."""
    with activations(model) as acts:
        if not acts:
            require_relu_modules(model)  # names the problem: no nn.ReLU modules to guide
        for a in acts:
            a.guided = True
        try:
            yield
        finally:
            for a in acts:
                a.guided = False


def _tracked(images: torch.Tensor) -> torch.Tensor:
    """``images`` in the autograd graph (a new leaf when they are not), so frozen weights still give one."""
    return images if images.requires_grad else images.detach().requires_grad_(True)


def _input_gradients(scorer: nn.Module, images: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """d(target score)/d(images), kept in the graph (``create_graph``) so it can be differentiated again."""
    images = _tracked(images)
    scores = scorer(images).gather(1, target[:, None])[:, 0]
    return torch.autograd.grad(scores.sum(), images, create_graph=True)[0]


def _integrated_gradients(scorer: nn.Module, images: torch.Tensor, target: torch.Tensor, method) -> torch.Tensor:
    """captum's IG with the same integration points and weights (``method.integration``), all steps at once."""
    steps, alphas = approximation_parameters(getattr(method, "integration", "gausslegendre"))  # captum default
    weights, points = steps(method.n_steps), alphas(method.n_steps)
    baseline = torch.as_tensor(method.baseline, dtype=images.dtype, device=images.device).expand_as(images)
    path = torch.cat([baseline + a * (images - baseline) for a in points])
    grads = _input_gradients(scorer, path, target.repeat(len(points))).reshape(len(points), *images.shape)
    total = sum(w * g for w, g in zip(weights, grads))
    return total * (images - baseline)


def _smoothed(method, images: torch.Tensor, base) -> torch.Tensor:
    """The mean of ``base`` over the method's noisy copies (the same noise as the configured method)."""
    total = 0.0
    for noisy in method.noisy_copies(images):
        total = total + base(noisy.reshape(-1, *images.shape[1:])).reshape(noisy.shape).sum(dim=0)
    return total / method.nt_samples


def _layer_activations_and_gradients(scorer: nn.Module, layer: nn.Module, images: torch.Tensor,
                                     target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A layer's activations and d(target score)/d(activations), both kept in the graph."""
    captured: list[torch.Tensor] = []
    handle = layer.register_forward_hook(lambda module, args, output: captured.append(output))
    try:
        with second_order(False):  # differentiated again, the gradient to the layer adds little to the pass
            scores = scorer(_tracked(images)).gather(1, target[:, None])[:, 0]
    finally:
        handle.remove()
    return captured[-1], torch.autograd.grad(scores.sum(), captured[-1], create_graph=True)[0]


def _gradcam(method, scorer: nn.Module, model: nn.Module, images: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    acts, grads = _layer_activations_and_gradients(scorer, method._layer(model), images, target)
    dims = tuple(range(2, acts.ndim))
    cam = F.relu((grads.mean(dim=dims, keepdim=True) * acts).sum(dim=1, keepdim=True))
    return upsample(cam, tuple(images.shape[2:]))


def _gradcampp(method, scorer: nn.Module, model: nn.Module, images: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    acts, grads = _layer_activations_and_gradients(scorer, method._layer(model), images, target)
    dims = tuple(range(2, acts.ndim))
    g2, g3 = grads.pow(2), grads.pow(3)
    denominator = 2 * g2 + acts.sum(dim=dims, keepdim=True) * g3
    alpha = g2 / torch.where(denominator != 0, denominator, torch.ones_like(denominator))
    weights = (alpha * F.relu(grads)).sum(dim=dims, keepdim=True)
    return upsample(F.relu((weights * acts).sum(dim=1, keepdim=True)), tuple(images.shape[2:]))


def differentiable_map(method: SaliencyMethod, model: nn.Module, images: torch.Tensor,
                       target: torch.Tensor) -> torch.Tensor:
    """The map of ``method`` on ``model`` (B, *spatial), differentiable with respect to ``images``.

    Same values as ``method(model, images, target)`` (the model's weights should be frozen by the
    caller, e.g. with ``bundle.saliency.base.inference_state``). Methods outside :data:`DIFFERENTIABLE`
    (Score-CAM, XRAI, occlusion, KernelSHAP: scores of masked inputs or segment rankings) are refused.
    """
    if method.name not in DIFFERENTIABLE:
        raise ValueError(f"{method.name} maps are not differentiable with respect to the input; "
                         f"differentiable: {DIFFERENTIABLE}")
    scorer = scoring_function(model, method.output)
    name = method.name
    if name == "grad":
        maps = _input_gradients(scorer, images, target)
    elif name == "smoothgrad":
        maps = _smoothed(method, images, lambda x: _input_gradients(scorer, x, target.repeat(len(x) // len(target))))
    elif name == "ig":
        maps = _integrated_gradients(scorer, images, target, method)
    elif name == "smoothig":
        maps = _smoothed(method, images,
                         lambda x: _integrated_gradients(scorer, x, target.repeat(len(x) // len(target)), method))
    elif name == "gradcam":
        maps = _gradcam(method, scorer, model, images, target)
    elif name == "gradcampp":
        maps = _gradcampp(method, scorer, model, images, target)
    else:  # gbp, ggcam: guided backprop, times the upsampled Grad-CAM for Guided Grad-CAM
        with guided(model):
            maps = _input_gradients(scorer, images, target)
        if name == "ggcam":
            maps = maps * _gradcam(method, scorer, model, images, target)
    return method.reduce_channels(maps)
