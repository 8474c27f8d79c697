"""A MONAI inferer that returns saliency maps, so stock Ignite evaluators can score them."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from monai.inferers import Inferer
from torch import nn

from bundle.saliency.cache import MapCache


class SaliencyInferer(Inferer):
    """``inferer(images, network, image_ids=None) -> maps`` for a saliency method and a target class.

    MONAI evaluators run the inferer under ``torch.no_grad()``; saliency methods
    re-enable gradients themselves, so this plugs into ``SupervisedEvaluator`` and
    its metric handlers unchanged. With a ``cache`` and ``cache_key``, maps of
    images already seen are loaded, and only the missing ones are computed (as one batch).
    """

    def __init__(self, method, target: int = 1, cache: MapCache | None = None, cache_key: str | None = None) -> None:
        super().__init__()
        if (cache is None) != (cache_key is None):
            raise ValueError("give both cache and cache_key, or neither")
        self.method, self.target, self.cache, self.cache_key = method, target, cache, cache_key

    def __call__(
        self, inputs: torch.Tensor, network: nn.Module, *args, image_ids: Sequence[str] | None = None, **kwargs
    ) -> torch.Tensor:
        if self.cache is None or image_ids is None:
            return self.method(network, inputs, self.target)
        cached = self.cache.load(self.cache_key, image_ids)
        missing = [i for i, m in enumerate(cached) if m is None]
        if missing:
            computed = self.method(network, inputs[missing], self.target)
            self.cache.save(self.cache_key, [image_ids[i] for i in missing], computed)
            for i, m in zip(missing, computed.cpu().numpy()):
                cached[i] = m
        return torch.as_tensor(np.stack(cached), device=inputs.device)
