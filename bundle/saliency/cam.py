"""Class activation maps on captum's layer attribution, upsampled to the input grid."""

from __future__ import annotations

import torch
from captum.attr import LayerAttribution, LayerGradCam
from torch import nn

from bundle.networks import cam_layer_of
from bundle.saliency.base import SaliencyMethod, scoring_function


def get_submodule(model: nn.Module, path: str) -> nn.Module:
    """The module at a dotted path, with an error naming the path when it does not exist."""
    try:
        return model.get_submodule(path)
    except AttributeError:
        raise ValueError(f"{type(model).__name__} has no layer {path!r}") from None


class GradCAM(SaliencyMethod):
    """Grad-CAM (Selvaraju et al. 2017): ReLU of the gradient-weighted target-layer activations.

    The target layer comes from ``bundle.networks`` for the model's architecture
    unless ``layer`` names one; the map is upsampled (bilinear, or trilinear in 3-D).
    """

    name = "gradcam"

    def __init__(self, layer: str | None = None, output: str = "logit") -> None:
        super().__init__(output)
        self.layer = layer

    def attribute(self, model: nn.Module, images: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        layer = get_submodule(model, self.layer or cam_layer_of(model))
        cam = LayerGradCam(scoring_function(model, self.output), layer)
        maps = cam.attribute(images, target=target, relu_attributions=True)
        mode = "bilinear" if images.ndim == 4 else "trilinear"
        return LayerAttribution.interpolate(maps, tuple(images.shape[2:]), interpolate_mode=mode)
