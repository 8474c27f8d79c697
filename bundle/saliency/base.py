"""The one saliency interface: ``method(model, images, target) -> maps``.

The model is an argument of the call, not the constructor, because a study
applies one configured method to many models (replicates, architectures, every
randomisation step). Parameters live in the constructor and in ``repr``, which
is what gets logged as MLflow parameters.
"""

from __future__ import annotations

import contextlib
import zlib
from collections.abc import Iterator

import torch
from torch import nn

OUTPUTS = ("logit", "probability")
# default input voxels per forward/backward pass: 32 images of 128², 10 of 224², 5 of 299²; on 2-core CPUs
# larger passes run slower per image (DenseNet121 at 224²: IG 127 ms per input at 8 per pass, 248 ms at 64;
# forward only 59 ms at 10 per pass, 112 ms at 64)
PASS_VOXELS = 2**19


@contextlib.contextmanager
def inference_state(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode with frozen weights, and restore both afterwards.

    Freezing the weights makes every backward pass stop at the input instead of
    filling weight gradients, which costs about 1.3x more.
    """
    training = model.training
    flags = [(p, p.requires_grad) for p in model.parameters()]
    model.eval()
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield model
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
        model.train(training)


def budget_inputs(images: torch.Tensor, explicit: int | None = None) -> int:
    """Inputs per pass: ``explicit`` when given, else as many of these images as fit :data:`PASS_VOXELS`."""
    return explicit or max(1, PASS_VOXELS // images[0].numel())


def inputs_per_pass(images: torch.Tensor, internal_batch_size: int | None) -> int:
    """captum's ``internal_batch_size``: explicit, or the voxel budget but at least the batch (captum's minimum)."""
    if internal_batch_size is not None:
        return internal_batch_size
    return max(images.shape[0], budget_inputs(images))


def target_tensor(target: int | torch.Tensor, batch: int, device: torch.device) -> torch.Tensor:
    """A (B,) long tensor of class indices from an int or a per-image tensor."""
    t = torch.as_tensor(target, device=device).long().reshape(-1)
    if t.numel() == 1:
        t = t.expand(batch)
    if t.numel() != batch:
        raise ValueError(f"target has {t.numel()} entries for a batch of {batch} images")
    return t.contiguous()


def image_seed(image: torch.Tensor, seed: int) -> int:
    """A seed derived from ``seed`` and the image's content.

    Random methods draw each image's randomness from its own seed, so a map does
    not depend on which other images share its batch (batched equals per-image,
    and a partly cached rerun equals a fresh run).
    """
    # the CRC reads the image's bytes on the CPU: one copy per image per call, against its method's many passes
    return (seed * 1_000_003 + zlib.crc32(image.detach().cpu().numpy().tobytes())) % (2**63)


def image_generators(images: torch.Tensor, seed: int) -> list[torch.Generator]:
    """One CPU generator per image of a batch, seeded by :func:`image_seed`."""
    return [torch.Generator().manual_seed(image_seed(image, seed)) for image in images]


def has_relu_modules(model: nn.Module) -> bool:
    """Whether guided backpropagation can hook this model: it needs ``nn.ReLU`` modules, not functional ReLUs."""
    return any(isinstance(m, nn.ReLU) for m in model.modules())


def require_relu_modules(model: nn.Module) -> None:
    """Refuse a model that guided backpropagation cannot guide, rather than return unguided gradients."""
    if not has_relu_modules(model):
        raise ValueError(f"{type(model).__name__} has no nn.ReLU modules: guided backpropagation cannot guide it")


def scoring_function(model: nn.Module, output: str) -> nn.Module:
    """The class scores a map explains: raw logits (default) or softmax probabilities.

    Always a module (not a lambda), so hook-based attributions such as guided
    backpropagation see the model's ReLU modules.
    """
    if output not in OUTPUTS:
        raise ValueError(f"output must be one of {OUTPUTS}, got {output!r}")
    if output == "logit":
        return model
    return nn.Sequential(model, nn.Softmax(dim=1))


class SaliencyMethod:
    """Base class: subclasses implement :meth:`attribute` on a frozen, eval-mode model.

    Returns maps (B, *spatial) at input resolution, on the images' device.

    ``signed`` says what a map is (TRUST_METRICS section 0): a signed attribution
    (gradients, IG, occlusion, ...), whose magnitude is the evidence, so the ``pair``
    normalisation folds it by ``|.|``; or a ranking score (CAMs, XRAI regions), where
    higher already means more salient and the sign is kept. A signed attribution of a
    multi-channel input is reduced over channels as ``sum_c |a_c|`` (PAIR's
    ``VisualizeImageGrayscale``); a single channel keeps its sign.

    ``published`` holds the pass counts of the published method (``published_method()``
    builds it), so a study can measure what its cut counts change.
    """

    name: str = ""
    signed: bool = True
    published: dict = {}

    def __init__(self, output: str = "logit") -> None:
        """The setting every method has (subclasses without their own ``__init__`` take only this one).

        Args:
            output: the class score the map explains: ``logit`` (default, the raw logit) or ``probability``
                (its softmax probability).
        """
        if output not in OUTPUTS:
            raise ValueError(f"output must be one of {OUTPUTS}, got {output!r}")
        self.output = output

    def params(self) -> dict:
        """Constructor parameters, for ``repr``, logging and the map cache key."""
        return dict(vars(self))

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in sorted(self.params().items()))
        return f"{self.name}({args})"

    def is_cut(self) -> bool:
        """Whether this configuration runs fewer (or other) passes than the published method."""
        return any(self.params().get(k) != v for k, v in self.published.items())

    def published_method(self) -> SaliencyMethod:
        """The same method and settings with the published pass counts."""
        return type(self)(**{**self.params(), **self.published})

    def applies_to(self, model: nn.Module) -> bool:
        """Whether this method is defined on ``model`` (attention maps need a transformer; the rest any model)."""
        return True

    def attribute(self, model: nn.Module, images: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def reduce_channels(self, maps: torch.Tensor) -> torch.Tensor:
        """(B, C, *spatial) -> (B, *spatial): ``sum_c |a_c|`` for a signed multi-channel attribution, else the sum."""
        if self.signed and maps.shape[1] > 1:
            return maps.abs().sum(dim=1)
        return maps.sum(dim=1)

    def __call__(self, model: nn.Module, images: torch.Tensor, target: int | torch.Tensor) -> torch.Tensor:
        if images.ndim < 3:
            raise ValueError(f"images must be (B, C, *spatial), got shape {tuple(images.shape)}")
        target = target_tensor(target, images.shape[0], images.device)
        with inference_state(model), torch.enable_grad():
            maps = self.attribute(model, images.detach(), target)
        if maps.ndim == images.ndim:
            maps = self.reduce_channels(maps)
        return maps.detach()
