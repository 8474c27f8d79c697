"""Layer-wise relevance propagation (Bach et al. 2015) for CNNs: LRP-0, LRP-epsilon and the epsilon-gamma-box
composite, one rule per layer type.

Rules: the epsilon rule (``R_in = x * J^T (R_out / (z + epsilon sign z))``) on convolutions, linear layers,
pooling and batch norms (captum's defaults); ReLU, dropout, ``Flatten`` and concatenation pass relevance as their
gradient does. Biases and batch-norm shifts absorb their share of relevance, as in every LRP-epsilon: the shifts
cannot be folded into a convolution, because MONAI's DenseNets are pre-activation (batch norm, ReLU, then the
convolution) and each batch norm reads channels that several convolutions wrote; passing relevance over a batch
norm unchanged instead hands relevance to inputs at zero, which the ReLU before them then drops. With zero biases
and shifts relevance is conserved from the target logit to the input (tested to 1e-5 on DenseNet121, 2-D and 3-D).

LRP-0 (epsilon 0, the default) is computed as gradient x input, which it equals exactly on a network of linear
and piecewise-linear layers (Ancona et al. 2018: with ``R = a * dlogit/da`` at a layer's output, the rule gives
``x * dlogit/dx`` at its input): one forward and one backward pass, and the layers a model calls as functions (a
torchvision InceptionV3's average pools, a ResNet's residual sums) get the epsilon rule too. The hooked rules at
epsilon 1e-9 equal it to 1e-4 of the map's range on DenseNet121 (tested). A larger epsilon runs the rules on the
hooked modules; a function-called layer then passes relevance as its gradient does (an average pool R/n to each
input; a residual sum is not split by any rule, its relevance not conserved).

The composite ``epsilon_gamma_box`` (zennit's ``EpsilonGammaBox``; Montavon et al. 2019) puts the generalised
LRP-gamma rule on every convolution but the first, z^B (the input's bounds ``low`` and ``high``) on the first,
and keeps the epsilon rule on linear layers, pooling and batch norms (zennit passes relevance over a batch norm
it cannot merge, which loses relevance here, see above). It equals zennit's on a CNN without batch norms (tested).
Each gamma convolution costs two more convolutions forward and one backward, at twice the batch, beside its own
backward (6-8x a gradient's time on DenseNet121 and InceptionV3).

Own code rather than captum's ``LRP``: captum hooks each layer's input tensor, so where a tensor feeds two
consumers (a DenseNet's features feed the next batch norm and the concatenation) its rule replaces the relevance of
both with that of one, and the concatenated relevance is lost; module backward hooks see one consumer each.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.utils import look_up_option
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


COMPOSITES = ("epsilon", "epsilon_gamma_box")
STABILIZER = 1e-6  # the gamma and z^B rules' stabiliser (zennit's default)


def stabilised(z: torch.Tensor, epsilon: float) -> torch.Tensor:
    """``z + epsilon * sign(z)``, zero counted positive (captum's stabiliser)."""
    return z + epsilon * torch.where(z >= 0, 1.0, -1.0).to(z.dtype)


class LRP(SaliencyMethod):
    """LRP of the target logit (module docstring for the rule of each layer type), signed.

    Args:
        epsilon: the epsilon rule's stabiliser (0: LRP-0, computed as gradient x input; larger values absorb weak,
            contradictory relevance). ``None``: 0, or 1e-6 (zennit's) in the composite, whose epsilon rule divides
            by outputs that can be zero; the composite refuses 0.
        composite: ``epsilon`` (the epsilon rule on every layer) or ``epsilon_gamma_box`` (gamma on the
            convolutions, z^B on the first, epsilon elsewhere).
        gamma: the gamma rule's weight on the positive (for positive outputs) contributions (0.25, zennit's).
        low: the lowest intensity an input can take, z^B's box (0: images scaled to [0, 1]).
        high: the highest intensity an input can take (1).
        output: ``logit`` only: the rules propagate a logit's relevance; a softmax probability has none.
    """

    name = "lrp"

    def __init__(self, epsilon: float | None = None, composite: str = "epsilon", gamma: float = 0.25, low: float = 0.0,
                 high: float = 1.0, output: str = "logit") -> None:
        if output != "logit":
            raise ValueError("lrp explains the logit (output 'logit'): its rules do not propagate through a softmax")
        super().__init__(output)
        self.composite = look_up_option(composite, COMPOSITES)
        if epsilon is None:
            epsilon = STABILIZER if self.composite == "epsilon_gamma_box" else 0.0
        if self.composite == "epsilon_gamma_box" and epsilon <= 0:
            raise ValueError(f"lrp's composite epsilon_gamma_box needs epsilon > 0 (its epsilon rule divides by "
                             f"outputs that can be zero), got {epsilon}")
        self.epsilon = epsilon
        self.gamma, self.low, self.high = gamma, low, high

    def applies_to(self, model: nn.Module) -> bool:
        return not layers_without_rule(model)

    def rules(self, model: nn.Module) -> dict[nn.Module, str]:
        """The rule of each layer that has one other than passing relevance as its gradient does."""
        layers = [m for m in model.modules() if isinstance(m, EPSILON_LAYERS)]
        rules = dict.fromkeys(layers, "epsilon")
        if self.composite == "epsilon_gamma_box":
            convolutions = [m for m in layers if isinstance(m, nn.modules.conv._ConvNd)]
            rules.update(dict.fromkeys(convolutions, "gamma"))
            if convolutions:
                rules[convolutions[0]] = "box"
        return rules

    def attribute(self, model: nn.Module, images: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        missing = layers_without_rule(model)
        if missing:
            raise ValueError(f"{type(model).__name__} has layers with no LRP rule here ({', '.join(missing)}): lrp "
                             "applies to CNNs of convolutions, batch norms, ReLUs, pooling and linear layers")
        if self.epsilon == 0 and self.composite == "epsilon":  # LRP-0 is gradient x input (module docstring)
            inputs = images.detach().requires_grad_(True)
            logits = model(inputs).gather(1, target[:, None])
            return inputs.detach() * torch.autograd.grad(logits.sum(), inputs)[0]
        stored: dict[nn.Module, tuple[torch.Tensor, torch.Tensor]] = {}

        def remember(module, args, output):
            stored[module] = (args[0].detach(), output.detach())

        def divide(module, grad_output):  # relevance arrives as the gradient of the output: R_out / z
            return (grad_output[0] / stabilised(stored[module][1], self.epsilon),)

        def multiply(module, grad_input, grad_output):  # x * J^T (R_out / z)
            return (grad_input[0] * stored[module][0], *grad_input[1:])

        def gamma(module, grad_input, grad_output):
            return (gamma_relevance(module, *stored[module], grad_output[0], self.gamma), *grad_input[1:])

        def box(module, grad_input, grad_output):
            return (box_relevance(module, stored[module][0], grad_output[0], self.low, self.high), *grad_input[1:])

        in_place = [m for m in model.modules() if isinstance(m, nn.ReLU) and m.inplace]
        handles = []
        try:
            for relu in in_place:  # an in-place ReLU cannot modify a hooked module's output
                relu.inplace = False
            for module, rule in self.rules(model).items():
                handles.append(module.register_forward_hook(remember))
                if rule == "epsilon":
                    handles += [module.register_full_backward_pre_hook(divide),
                                module.register_full_backward_hook(multiply)]
                else:
                    handles.append(module.register_full_backward_hook(gamma if rule == "gamma" else box))
            inputs = images.detach().requires_grad_(True)
            logits = model(inputs).gather(1, target[:, None])
            (relevance,) = torch.autograd.grad(logits, inputs, grad_outputs=logits.detach())  # R at the top: z
        finally:
            for handle in handles:
                handle.remove()
            for relu in in_place:
                relu.inplace = True
        return relevance


def layer_forward(module: nn.Module, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """A convolution or linear layer applied with other parameters (a rule's modified weights)."""
    if isinstance(module, nn.Linear):
        return F.linear(x, weight, bias)
    return module._conv_forward(x, weight, bias)


def gamma_relevance(module: nn.Module, x: torch.Tensor, z: torch.Tensor, relevance: torch.Tensor,
                    gamma: float) -> torch.Tensor:
    """The generalised gamma rule (Andeol et al. 2021; zennit's ``Gamma``): a positive output's relevance goes to the
    contributions ``x+ (w + gamma w+)`` and ``x- (w + gamma w-)``, a negative output's to ``x+ (w + gamma w-)`` and
    ``x- (w + gamma w+)``. Both signs of input through each modified weight in one batch of 2B: two layer passes
    forward and one backward to the input."""
    weight, bias, b = module.weight, module.bias, x.shape[0]
    up, down = weight + gamma * weight.clamp(min=0), weight + gamma * weight.clamp(max=0)
    signed = torch.cat([x.clamp(min=0), x.clamp(max=0)]).requires_grad_(True)
    with torch.enable_grad():
        through_up, through_down = layer_forward(module, signed, up, None), layer_forward(module, signed, down, None)
    positive = through_up[:b] + through_down[b:]  # x+ w_up + x- w_down
    negative = through_down[:b] + through_up[b:]  # x+ w_down + x- w_up
    if bias is not None:  # the bias (modified) sides with the positive inputs; zennit zeroes it for the negative
        shape = (1, -1) + (1,) * (z.ndim - 2)
        positive = positive + (bias + gamma * bias.clamp(min=0)).reshape(shape)
        negative = negative + (bias + gamma * bias.clamp(max=0)).reshape(shape)
    to_positive = (z > 0) * relevance / stabilised(positive.detach(), STABILIZER)
    to_negative = (z < 0) * relevance / stabilised(negative.detach(), STABILIZER)
    (gradient,) = torch.autograd.grad((through_up, through_down), signed, (torch.cat([to_positive, to_negative]),
                                                                           torch.cat([to_negative, to_positive])))
    return (signed.detach() * gradient).reshape(2, *x.shape).sum(dim=0)


def box_relevance(module: nn.Module, x: torch.Tensor, relevance: torch.Tensor, low: float,
                  high: float) -> torch.Tensor:
    """The z^B rule (Montavon et al. 2017; zennit's ``ZBox``) of the first layer, whose inputs lie in
    ``[low, high]``: ``R_in = (x w - low w+ - high w-) R_out / z^B``, the bias clamped as the weights are."""
    weight, bias = module.weight, module.bias
    clamped = (None, None) if bias is None else (bias.clamp(min=0), bias.clamp(max=0))
    sides = [(x, weight, bias), (torch.full_like(x, low), weight.clamp(min=0), clamped[0]),
             (torch.full_like(x, high), weight.clamp(max=0), clamped[1])]
    inputs = [side[0].detach().requires_grad_(True) for side in sides]
    with torch.enable_grad():
        outputs = [layer_forward(module, i, w, b) for i, (_, w, b) in zip(inputs, sides)]
    denominator = outputs[0] - outputs[1] - outputs[2]
    scaled = relevance / stabilised(denominator.detach(), STABILIZER)
    gradients = torch.autograd.grad(outputs, inputs, (scaled, scaled, scaled))
    return inputs[0] * gradients[0] - inputs[1] * gradients[1] - inputs[2] * gradients[2]
