"""A MONAI inferer that returns saliency maps, so stock Ignite evaluators can score them."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.inferers import Inferer
from torch import nn

from bundle.saliency.cache import MapCache


class SaliencyInferer(Inferer):
    """``inferer(images, network, image_ids=None) -> maps`` for a saliency method and a target class.

    MONAI evaluators run the inferer under ``torch.no_grad()``; saliency methods
    re-enable gradients themselves, so this plugs into ``SupervisedEvaluator`` and
    its metric handlers unchanged. With a ``cache`` and the map ``description``
    (:meth:`MapCache.describe`), maps of images already seen are loaded, and only
    the missing ones are computed (as one batch).
    """

    def __init__(self, method, target: int = 1, cache: MapCache | None = None, description: dict | None = None) -> None:
        super().__init__()
        if (cache is None) != (description is None):
            raise ValueError("give both cache and description, or neither")
        self.method, self.target, self.cache, self.description = method, target, cache, description

    def __call__(
        self, inputs: torch.Tensor, network: nn.Module, *args, image_ids: Sequence[str] | None = None, **kwargs
    ) -> torch.Tensor:
        if self.cache is None or image_ids is None:
            return self.method(network, inputs, self.target)
        return self.cache.fetch(self.description, list(image_ids),
                                lambda missing: self.method(network, inputs[missing], self.target), inputs.device)
