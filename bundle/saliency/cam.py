"""Class activation maps: Grad-CAM and Guided Grad-CAM on captum; Grad-CAM++ and batched Score-CAM here.

CAM target layers come from ``bundle.networks`` for the model's architecture
unless ``layer`` names one; maps are upsampled to the input grid (bilinear in
2-D, trilinear in 3-D).
"""

from __future__ import annotations

import torch
from captum.attr import GuidedGradCam as CaptumGuidedGradCam
from captum.attr import LayerAttribution, LayerGradCam
from torch import nn

from bundle.networks import cam_layer_of
from bundle.saliency.base import SaliencyMethod, budget_inputs, require_relu_modules, scoring_function


def get_submodule(model: nn.Module, path: str) -> nn.Module:
    """The module at a dotted path, with an error naming the path when it does not exist."""
    try:
        return model.get_submodule(path)
    except AttributeError:
        raise ValueError(f"{type(model).__name__} has no layer {path!r}; set the method's `layer` to one of its "
                         f"modules (e.g. {', '.join(repr(n) for n, _ in list(model.named_children())[-3:])})") from None


def interpolation_mode(spatial: tuple[int, ...]) -> str:
    """Bilinear in 2-D, trilinear in 3-D."""
    return "bilinear" if len(spatial) == 2 else "trilinear"


def upsample(maps: torch.Tensor, spatial: tuple[int, ...]) -> torch.Tensor:
    """(B, 1, *small) maps to (B, 1, *spatial) at the input grid."""
    return LayerAttribution.interpolate(maps, spatial, interpolate_mode=interpolation_mode(spatial))


def layer_activations_and_gradients(
    scorer: nn.Module, layer: nn.Module, images: torch.Tensor, target: torch.Tensor, with_gradients: bool = True
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """Activations of ``layer``, d(target score)/d(activations), and the target scores, for a batch.

    One forward and (optionally) one backward pass that stops at the layer; the
    hook is removed even when the forward pass fails. The input requires a
    gradient so that the graph exists with frozen weights.
    """
    captured: list[torch.Tensor] = []
    handle = layer.register_forward_hook(lambda module, args, output: captured.append(output))
    try:
        with torch.set_grad_enabled(with_gradients):
            scores = scorer(images.detach().requires_grad_(with_gradients)).gather(1, target[:, None])[:, 0]
    finally:
        handle.remove()
    activations = captured[-1]
    gradients = torch.autograd.grad(scores.sum(), activations)[0] if with_gradients else None
    return activations.detach(), gradients, scores.detach()


class _CAM(SaliencyMethod):
    signed = False  # a CAM ranks locations (after its ReLU): higher = more salient
    def __init__(self, layer: str | None = None, output: str = "logit") -> None:
        """The settings of the CAM methods (Grad-CAM, Grad-CAM++, Guided Grad-CAM share this ``__init__``).

        Args:
            layer: dotted path of the target layer in the model (``None``: the architecture's CAM layer from
                ``bundle.networks``, e.g. ``class_layers.relu`` on DenseNet121).
            output: the class score explained: ``logit`` (default) or ``probability`` (softmax).
        """
        super().__init__(output)
        self.layer = layer

    def _layer(self, model: nn.Module) -> nn.Module:
        return get_submodule(model, self.layer or cam_layer_of(model))


class GradCAM(_CAM):
    """Grad-CAM (Selvaraju et al. 2017): ReLU of the gradient-weighted target-layer activations."""

    name = "gradcam"

    def attribute(self, model: nn.Module, images: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        cam = LayerGradCam(scoring_function(model, self.output), self._layer(model))
        maps = cam.attribute(images, target=target, relu_attributions=True)
        return upsample(maps, tuple(images.shape[2:]))


class GradCAMPlusPlus(_CAM):
    """Grad-CAM++ (Chattopadhay et al. 2018), with the closed-form pixel weights of the paper.

    Not in captum; this follows pytorch-grad-cam's formulation so the two agree.
    """

    name = "gradcampp"

    def attribute(self, model: nn.Module, images: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        acts, grads, _ = layer_activations_and_gradients(
            scoring_function(model, self.output), self._layer(model), images, target)
        dims = tuple(range(2, acts.ndim))
        g2, g3 = grads.pow(2), grads.pow(3)
        denominator = 2 * g2 + acts.sum(dim=dims, keepdim=True) * g3
        alpha = g2 / torch.where(denominator != 0, denominator, torch.ones_like(denominator))
        weights = (alpha * torch.relu(grads)).sum(dim=dims, keepdim=True)
        cam = torch.relu((weights * acts).sum(dim=1, keepdim=True))
        return upsample(cam, tuple(images.shape[2:]))


class ScoreCAM(_CAM):
    """Score-CAM (Wang et al. 2020): channels weighted by the class score of the input masked by each.

    Batched across images and channels (``batch_size`` masked inputs per forward
    pass; ``None`` sizes passes by ``PASS_VOXELS``); captum has no Score-CAM and
    pytorch-grad-cam runs one image at a time.
    Channel weights are the softmax over channels of the masked-input target scores.
    ``max_channels`` keeps only each image's highest-variance channels (Faster
    Score-CAM, from the Score-CAM authors' repository); ``None``, the published
    default, scores every channel (1024 forward passes per image on DenseNet121).

    Args:
        layer: dotted path of the target layer (``None``: the architecture's CAM layer from ``bundle.networks``).
        batch_size: masked inputs per forward pass, across images and channels (``None``: sized by ``PASS_VOXELS``).
        max_channels: keep each image's highest-variance channels, at most this many (``None``: every channel,
            as published).
        output: the class score explained: ``logit`` (default) or ``probability`` (softmax).
    """

    name = "scorecam"
    published = {"max_channels": None}

    def __init__(
        self, layer: str | None = None, batch_size: int | None = None, max_channels: int | None = None,
        output: str = "logit",
    ) -> None:
        super().__init__(layer, output)
        if max_channels is not None and max_channels < 1:
            raise ValueError(f"max_channels must be positive or None, got {max_channels}")
        self.batch_size, self.max_channels = batch_size, max_channels

    @torch.no_grad()
    def attribute(self, model: nn.Module, images: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        scorer = scoring_function(model, self.output)
        acts, _, _ = layer_activations_and_gradients(scorer, self._layer(model), images, target, with_gradients=False)
        if self.max_channels is not None and self.max_channels < acts.shape[1]:
            variance = acts.flatten(2).var(dim=2, correction=0)  # a 1 x 1 activation has variance 0, not NaN
            # stable sort: tied channels are kept in index order, whatever else shares the batch
            keep = variance.argsort(dim=1, descending=True, stable=True)[:, : self.max_channels]
            acts = acts.gather(1, keep.reshape(*keep.shape, *([1] * (acts.ndim - 2))).expand(-1, -1, *acts.shape[2:]))
        b, k = acts.shape[:2]
        spatial = tuple(images.shape[2:])
        channels = acts.reshape(b * k, 1, *acts.shape[2:])
        # a constant channel masks nothing: decided on the activation itself, because upsampling a constant
        # can leave rounding noise that min-max scaling would blow up into a random mask
        varies = channels.flatten(1).amax(dim=1) > channels.flatten(1).amin(dim=1)
        scores = torch.empty(b * k, device=images.device)
        image_index = torch.arange(b, device=images.device).repeat_interleave(k)
        chunk = budget_inputs(images, self.batch_size)
        for start in range(0, b * k, chunk):  # upsample per chunk: all channels at once can take GBs
            idx = slice(start, start + chunk)
            rows = image_index[idx]
            masks = upsample(channels[idx], spatial)
            flat = masks.reshape(masks.shape[0], -1)
            low, high = flat.amin(dim=1, keepdim=True), flat.amax(dim=1, keepdim=True)
            scaled = (flat - low) / torch.where(high > low, high - low, torch.ones_like(high))
            masks = torch.where(varies[idx, None], scaled, torch.zeros_like(scaled)).reshape(masks.shape)
            scores[idx] = scorer(images[rows] * masks).gather(1, target[rows][:, None])[:, 0]
        weights = torch.softmax(scores.reshape(b, k), dim=1)
        cam = torch.relu((weights.reshape(b, k, *([1] * len(spatial))) * acts).sum(dim=1, keepdim=True))
        return upsample(cam, spatial)


class GuidedGradCAM(_CAM):
    """Guided Grad-CAM (Selvaraju et al. 2017): guided backpropagation times the upsampled Grad-CAM."""

    name = "ggcam"
    signed = True  # guided gradients times the CAM: a signed pixel attribution

    def attribute(self, model: nn.Module, images: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        require_relu_modules(model)
        ggcam = CaptumGuidedGradCam(scoring_function(model, self.output), self._layer(model))
        return ggcam.attribute(images, target=target, interpolate_mode=interpolation_mode(tuple(images.shape[2:])))
