"""A MONAI inferer that returns saliency maps, so stock Ignite evaluators can score them."""

from __future__ import annotations

import torch
from monai.inferers import Inferer
from torch import nn

from bundle.saliency.base import SaliencyMethod


class SaliencyInferer(Inferer):
    """``inferer(images, network) -> maps`` for a saliency method and a target class.

    MONAI evaluators run the inferer under ``torch.no_grad()``; saliency methods
    re-enable gradients themselves, so this plugs into ``SupervisedEvaluator`` and
    its metric handlers unchanged.
    """

    def __init__(self, method: SaliencyMethod, target: int = 1) -> None:
        super().__init__()
        self.method, self.target = method, target

    def __call__(self, inputs: torch.Tensor, network: nn.Module, *args, **kwargs) -> torch.Tensor:
        return self.method(network, inputs, self.target)
