"""Maps from a vision transformer's attention: attention rollout (Abnar & Zuidema 2020) and gradient-weighted
attention rollout (Chefer et al. 2021, ICCV, "Generic attention-model explainability").

Both read each block's post-softmax attention weights (B, heads, N, N) with a forward hook on the module they
enter: the attention dropout of MONAI's ``SABlock`` (so any model built of MONAI transformer blocks, with or
without ``save_attn``; ``save_attn`` keeps detached weights, which have no gradient), or the modules a user names
(``layers``). The map is the class token's row over the patch tokens, on the token grid, upsampled to the input
as CAMs are. Neither is in captum; rollout costs one forward pass, the gradient-weighted one a forward and a
backward pass.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import torch
from monai.networks.blocks.selfattention import SABlock
from torch import nn

from bundle.saliency.base import SaliencyMethod, scoring_function
from bundle.saliency.cam import upsample


def attention_layers(model: nn.Module, layers: str | None = None) -> list[nn.Module]:
    """The modules whose forward input is each block's attention weights (B, heads, N, N), first block first.

    Args:
        model: a transformer built of MONAI ``SABlock`` attention, or any model when ``layers`` is given.
        layers: the last name of the modules that take the attention weights as their first input (timm's
            ``attn_drop`` with fused attention off); ``None``: the ``drop_weights`` of every MONAI ``SABlock``.
    """
    if layers is not None:
        found = [m for name, m in model.named_modules() if name.rsplit(".", 1)[-1] == layers]
        if not found:
            raise ValueError(f"{type(model).__name__} has no module named {layers!r} (the method's `layers`)")
        return found
    blocks = [m for m in model.modules() if isinstance(m, SABlock)]
    if not blocks:
        raise ValueError(f"{type(model).__name__} has no attention blocks (MONAI SABlock): attention maps apply to "
                         "transformers; name the modules that take the attention weights as the method's `layers`")
    if any(block.use_flash_attention for block in blocks):
        raise ValueError(f"{type(model).__name__} uses flash attention, which never forms the attention weights: "
                         "build it with use_flash_attention=False")
    return [block.drop_weights for block in blocks]


@contextlib.contextmanager
def recorded_attention(model: nn.Module, layers: str | None = None) -> Iterator[list[torch.Tensor]]:
    """Collect each block's attention weights, in graph, during the forward pass run inside the context; an error
    when none reached the hooked modules (fused attention skips them)."""
    captured: list[torch.Tensor] = []
    handles = [m.register_forward_hook(lambda module, args, output: captured.append(args[0]))
               for m in attention_layers(model, layers)]
    try:
        yield captured
    finally:
        for handle in handles:
            handle.remove()
    if not captured:
        raise ValueError(f"no attention weights reached {layers or 'drop_weights'!r} in {type(model).__name__}'s "
                         "forward pass: a fused attention skips that module; turn fused attention off")


def token_grid(n_patches: int, spatial: tuple[int, ...]) -> tuple[int, ...]:
    """The grid of ``n_patches`` patch tokens over an image of shape ``spatial`` (the same aspect), or an error
    when they do not tile it (a model without a class token first, or with extra tokens)."""
    scale = (n_patches / math.prod(spatial)) ** (1 / len(spatial))
    grid = tuple(max(1, round(side * scale)) for side in spatial)
    if math.prod(grid) != n_patches:
        raise ValueError(f"{n_patches} tokens after the first do not tile a {spatial} image: attention maps need the "
                         "class token first and then one token per patch")
    return grid


def class_token_maps(relevance: torch.Tensor, spatial: tuple[int, ...]) -> torch.Tensor:
    """(B, N, N) token-to-token relevance to (B, *spatial): the class token's row over the patch tokens, laid on
    the token grid and upsampled to the input (bilinear in 2-D, trilinear in 3-D)."""
    rows = relevance[:, 0, 1:]
    grid = token_grid(rows.shape[1], spatial)
    return upsample(rows.reshape(rows.shape[0], 1, *grid), spatial)[:, 0]


class _AttentionMap(SaliencyMethod):
    """What the attention maps share: where the attention is read, and that they apply to transformers only."""

    signed = False  # relevance of tokens, non-negative: higher = more salient

    def __init__(self, layers: str | None = None, output: str = "logit") -> None:
        """The settings of the attention maps.

        Args:
            layers: the last name of the modules whose first input is each block's attention weights (``None``:
                every MONAI ``SABlock``'s ``drop_weights``; timm: ``attn_drop``, with fused attention off).
            output: the class score a gradient-weighted map explains: ``logit`` (default) or ``probability``.
        """
        super().__init__(output)
        self.layers = layers

    def applies_to(self, model: nn.Module) -> bool:
        try:
            return bool(attention_layers(model, self.layers))
        except ValueError:
            return False


class AttentionRollout(_AttentionMap):
    """Attention rollout (Abnar & Zuidema 2020): the product, last block first, of each block's head-averaged
    attention mixed half and half with the identity for the residual connection, ``A_l = (mean_h A + I) / 2``;
    the map is the class token's row. Class-agnostic: the same map for every target."""

    name = "rollout"

    def __init__(self, layers: str | None = None) -> None:
        """The setting of attention rollout (no class score: the map is the same for every target).

        Args:
            layers: the last name of the modules whose first input is each block's attention weights (``None``:
                every MONAI ``SABlock``'s ``drop_weights``).
        """
        super().__init__(layers)

    def params(self) -> dict:
        return {"layers": self.layers}  # no class score to name: the repr and the map cache's key leave it out

    @torch.no_grad()
    def attribute(self, model: nn.Module, images: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        with recorded_attention(model, self.layers) as attention:
            model(images)
        identity = torch.eye(attention[0].shape[-1], dtype=images.dtype, device=images.device)
        rollout = identity
        for weights in attention:  # rows of (A + I) / 2 sum to 1: Abnar & Zuidema's renormalisation is a no-op
            rollout = (0.5 * weights.mean(dim=1) + 0.5 * identity) @ rollout
        return class_token_maps(rollout, tuple(images.shape[2:]))


class GradientWeightedRollout(_AttentionMap):
    """Chefer et al. 2021 (ICCV), the gradient-weighted attention rollout: with ``R = I``, each block from the
    first adds ``mean_h((dy/dA * A)^+) @ R`` to ``R``, where ``y`` is the target's score; the map is the class
    token's row of ``R`` (their ViT notebook's ``generate_relevance``)."""

    name = "chefer"

    def attribute(self, model: nn.Module, images: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        with recorded_attention(model, self.layers) as attention:
            scores = scoring_function(model, self.output)(images.requires_grad_(True)).gather(1, target[:, None])
        gradients = torch.autograd.grad(scores.sum(), attention)  # images are independent: one backward for all
        relevance = torch.eye(attention[0].shape[-1], dtype=images.dtype, device=images.device).expand(
            images.shape[0], -1, -1)
        for weights, gradient in zip(attention, gradients):
            relevance = relevance + (gradient * weights).clamp(min=0).mean(dim=1) @ relevance
        return class_token_maps(relevance.detach(), tuple(images.shape[2:]))
