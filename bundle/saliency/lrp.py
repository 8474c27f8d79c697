"""Layer-wise relevance propagation (Bach et al. 2015) for CNNs, LRP-epsilon with one rule per layer type.

Rules: the epsilon rule (``R_in = x * J^T (R_out / (z + epsilon sign z))``; epsilon 1e-9 is LRP-0, captum's
default) on convolutions, linear layers, pooling and batch norms (captum's defaults); ReLU, dropout, ``Flatten``
and concatenation pass relevance as their gradient does. Biases and batch-norm shifts absorb their share of
relevance, as in every LRP-epsilon: the shifts cannot be folded into a convolution, because MONAI's DenseNets are
pre-activation (batch norm, ReLU, then the convolution) and each batch norm reads channels that several
convolutions wrote; passing relevance over a batch norm unchanged instead hands relevance to inputs at zero,
which the ReLU before them then drops. With zero biases and shifts relevance is conserved from the target logit
to the input (tested to 1e-5 on DenseNet121, 2-D and 3-D). Residual additions (ResNets) are not split by any
rule here: their relevance is not conserved. With epsilon near 0 (LRP-0, the default) these rules give gradient x
input on a ReLU network (Ancona et al. 2018; tested on DenseNet121): a larger epsilon, or the composites that
put other rules on the lower convolutions (LRP-gamma, z^B at the input; not here), are what depart from it.

Own code rather than captum's ``LRP``: captum hooks each layer's input tensor, so where a tensor feeds two
consumers (a DenseNet's features feed the next batch norm and the concatenation) its rule replaces the relevance of
both with that of one, and the concatenated relevance is lost; module backward hooks see one consumer each.
"""

from __future__ import annotations

import torch
from torch import nn

from bundle.saliency.base import SaliencyMethod

EPSILON_LAYERS = (nn.modules.conv._ConvNd, nn.Linear, nn.modules.pooling._MaxPoolNd, nn.modules.pooling._AvgPoolNd,
                  nn.modules.pooling._AdaptiveAvgPoolNd, nn.modules.batchnorm._BatchNorm)
PASSING_LAYERS = (nn.ReLU, nn.Dropout, nn.Flatten, nn.Identity)  # their gradient passes relevance unchanged


def layers_without_rule(model: nn.Module) -> list[str]:
    """The types of the leaf modules of ``model`` no rule here covers (a transformer's layer norms and GELUs)."""
    return sorted({type(m).__name__ for m in model.modules()
                   if not any(True for _ in m.children())
                   and not isinstance(m, EPSILON_LAYERS + PASSING_LAYERS)})


def stabilised(z: torch.Tensor, epsilon: float) -> torch.Tensor:
    """``z + epsilon * sign(z)``, zero counted positive (captum's stabiliser)."""
    return z + epsilon * torch.where(z >= 0, 1.0, -1.0).to(z.dtype)


class LRP(SaliencyMethod):
    """LRP-epsilon of the target logit (module docstring for the rule of each layer type), signed.

    Args:
        epsilon: the epsilon rule's stabiliser (1e-9, captum's default: LRP-0; larger values absorb weak,
            contradictory relevance).
        output: ``logit`` only: the rules propagate a logit's relevance; a softmax probability has none.
    """

    name = "lrp"

    def __init__(self, epsilon: float = 1e-9, output: str = "logit") -> None:
        if output != "logit":
            raise ValueError("lrp explains the logit (output 'logit'): its rules do not propagate through a softmax")
        super().__init__(output)
        self.epsilon = epsilon

    def applies_to(self, model: nn.Module) -> bool:
        return not layers_without_rule(model)

    def attribute(self, model: nn.Module, images: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        missing = layers_without_rule(model)
        if missing:
            raise ValueError(f"{type(model).__name__} has layers with no LRP rule here ({', '.join(missing)}): lrp "
                             "applies to CNNs of convolutions, batch norms, ReLUs, pooling and linear layers")
        stored: dict[nn.Module, tuple[torch.Tensor, torch.Tensor]] = {}

        def remember(module, args, output):
            stored[module] = (args[0].detach(), output.detach())

        def divide(module, grad_output):  # relevance arrives as the gradient of the output: R_out / z
            return (grad_output[0] / stabilised(stored[module][1], self.epsilon),)

        def multiply(module, grad_input, grad_output):  # x * J^T (R_out / z)
            return (grad_input[0] * stored[module][0], *grad_input[1:])

        in_place = [m for m in model.modules() if isinstance(m, nn.ReLU) and m.inplace]
        handles = []
        try:
            for relu in in_place:  # an in-place ReLU cannot modify a hooked module's output
                relu.inplace = False
            for module in (m for m in model.modules() if isinstance(m, EPSILON_LAYERS)):
                handles += [module.register_forward_hook(remember), module.register_full_backward_pre_hook(divide),
                            module.register_full_backward_hook(multiply)]
            inputs = images.detach().requires_grad_(True)
            logits = model(inputs).gather(1, target[:, None])
            (relevance,) = torch.autograd.grad(logits, inputs, grad_outputs=logits.detach())  # R at the top: z
        finally:
            for handle in handles:
                handle.remove()
            for relu in in_place:
                relu.inplace = True
        return relevance
