"""LRP for CNNs: equal to captum's LRP where captum is right (no tensor feeding two layers), and conserving the
target logit on DenseNet121, 2-D and 3-D, where captum is not."""

from __future__ import annotations

import pytest
import torch
from captum.attr import LRP as CaptumLRP
from captum.attr._utils.lrp_rules import EpsilonRule
from torch import nn

from bundle.networks import build_network
from bundle.saliency import get_method


def randomised(net: nn.Module) -> nn.Module:
    """Every weight and batch-norm statistic drawn at random, so that each term of each rule matters."""
    torch.manual_seed(0)
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0, 1)
        for m in net.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.normal_(0, 1)
                m.running_var.uniform_(0.5, 2.0)
    return net.eval()


def plain_cnn() -> nn.Module:
    return randomised(nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(4, 3, 3), nn.ReLU(), nn.AvgPool2d(2), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 2)))


class Concatenating(nn.Module):
    """A dense block in miniature: the stem's features feed both the next layer and the concatenation."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 3, 3, padding=1, bias=False)
        self.norm, self.relu, self.conv = nn.BatchNorm2d(3), nn.ReLU(), nn.Conv2d(3, 2, 3, padding=1, bias=False)
        self.pool, self.flatten, self.out = nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(5, 2)

    def forward(self, x):
        features = self.stem(x)
        features = torch.cat([features, self.conv(self.relu(self.norm(features)))], dim=1)
        return self.out(self.flatten(self.pool(features)))


@pytest.fixture
def images():
    return torch.rand(3, 1, 12, 12, generator=torch.Generator().manual_seed(1))


def test_lrp_equals_captums_where_no_tensor_feeds_two_layers(images):
    net = plain_cnn()
    ours = get_method("lrp")(net, images, 1)
    net[8].rule = EpsilonRule()  # captum has no default rule for Flatten (a reshape: any rule passes relevance)
    reference = CaptumLRP(net).attribute(images, target=1)[:, 0]
    torch.testing.assert_close(ours, reference.detach(), atol=1e-5 * float(reference.abs().max()), rtol=0)
    assert not torch.allclose(get_method("lrp", epsilon=0.5)(net, images, 1), ours, atol=1e-4, rtol=0)


def without_shifts(net: nn.Module) -> nn.Module:
    """Biases, batch-norm shifts and running means zeroed: what LRP-epsilon conserves is then the whole logit
    (each bias and shift would take its share)."""
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.zero_()
            if getattr(m, "bias", None) is not None:
                m.bias.zero_()
    return net


def _conservation_gap(net: nn.Module, images: torch.Tensor, relevance: torch.Tensor) -> float:
    with torch.no_grad():
        logit = net(images)[:, 1]
    return float(((relevance.flatten(1).sum(dim=1) - logit).abs() / logit.abs()).max())


def test_relevance_is_conserved_through_concatenations_where_captums_is_not(images):
    net = without_shifts(randomised(Concatenating()))
    assert _conservation_gap(net, images, get_method("lrp")(net, images, 1)) < 1e-5
    net.flatten.rule = EpsilonRule()
    theirs = CaptumLRP(net).attribute(images, target=1)[:, 0].detach()
    assert _conservation_gap(net, images, theirs) > 0.01  # the concatenated relevance is lost
    shifted = randomised(Concatenating())  # with shifts and biases, they take a share
    assert _conservation_gap(shifted, images, get_method("lrp")(shifted, images, 1)) > 1e-3


@pytest.mark.parametrize("name, shape, epsilon", [("densenet121", (2, 1, 64, 64), 0.0),
                                                  ("densenet121", (2, 1, 64, 64), 1e-9),
                                                  ("densenet121_3d", (2, 1, 32, 32, 32), 1e-9)])
def test_lrp_conserves_the_logit_on_densenet(name, shape, epsilon):
    torch.manual_seed(0)
    net = build_network(name).eval()
    with torch.no_grad():  # batch norms with scales and variances of their own (every term of the rule matters)
        for m in net.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.weight.uniform_(0.5, 1.5), m.running_var.uniform_(0.5, 2.0)
    without_shifts(net)
    images = torch.rand(*shape, generator=torch.Generator().manual_seed(2))
    relevance = get_method("lrp", epsilon=epsilon)(net, images, 1)
    assert relevance.shape == (2, *shape[2:])
    assert _conservation_gap(net, images, relevance) < 1e-5
    assert all(m.inplace for m in net.modules() if isinstance(m, nn.ReLU)), "in-place ReLUs are restored"
    assert not any(m._forward_hooks or m._backward_hooks or m._backward_pre_hooks for m in net.modules())


def test_lrp_0_is_gradient_times_input_on_a_relu_network_and_epsilon_departs_from_it():
    """Ancona et al. 2018: on a network of ReLUs, linear layers, pooling and batch norms, the rules at epsilon 1e-9
    equal gradient x input whatever the biases and shifts (an independent reference for every layer's rule, and why
    LRP-0 is computed as gradient x input); a larger epsilon does not."""
    torch.manual_seed(0)
    net = build_network("densenet121").eval()
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.weight.uniform_(0.5, 1.5), m.bias.normal_(0, 0.1), m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 2.0)
    images = torch.rand(2, 1, 64, 64, generator=torch.Generator().manual_seed(5))
    gradient_x_input = get_method("grad")(net, images, 1) * images[:, 0]
    scale = float(gradient_x_input.abs().max())
    torch.testing.assert_close(get_method("lrp", epsilon=1e-9)(net, images, 1), gradient_x_input, atol=1e-4 * scale,
                               rtol=0)
    torch.testing.assert_close(get_method("lrp")(net, images, 1), gradient_x_input, atol=1e-6 * scale, rtol=0)
    assert float((get_method("lrp", epsilon=0.1)(net, images, 1) - gradient_x_input).abs().max()) > 0.1 * scale


def test_a_failing_model_leaves_no_hook_and_its_relus_in_place(images):
    class Failing(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.relu = nn.Conv2d(1, 2, 3), nn.ReLU(inplace=True)

        def forward(self, x):
            self.relu(self.conv(x))
            raise RuntimeError("broken model")

    net = Failing().eval()
    with pytest.raises(RuntimeError, match="broken model"):
        get_method("lrp", epsilon=1e-9)(net, images, 1)
    assert net.relu.inplace
    assert not (net.conv._forward_hooks or net.conv._backward_hooks or net.conv._backward_pre_hooks)


def test_lrp_refuses_what_its_rules_do_not_cover(images):
    assert not get_method("lrp").applies_to(build_network("vit"))
    assert get_method("lrp").applies_to(build_network("densenet121"))
    with pytest.raises(ValueError, match=r"ViTClassifier has layers with no LRP rule here \(.*GELU"):
        get_method("lrp")(build_network("vit", image_size=32), torch.rand(1, 1, 32, 32), 1)
    with pytest.raises(ValueError, match="lrp explains the logit"):
        get_method("lrp", output="probability")


def biased_cnn() -> nn.Module:
    """Convolutions with biases and no batch norm (zennit passes relevance over one it cannot merge, we do not)."""
    return randomised(nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(4, 3, 3), nn.ReLU(), nn.Conv2d(3, 3, 1),
        nn.ReLU(), nn.AvgPool2d(2), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 2)))


def test_the_epsilon_gamma_box_composite_equals_zennits(images):
    """z^B on the first convolution, the generalised gamma rule on the others (inputs of both signs reach the last
    convolution: its input is a ReLU's, but the middle one reads the first convolution's pooled ReLU output, and the
    stem reads the image), epsilon on the linear layer and pooling; relevance at the top is the logit, as ours. Ours at
    its defaults: epsilon 1e-6 and gamma 0.25, zennit's."""
    from zennit.attribution import Gradient
    from zennit.composites import EpsilonGammaBox

    net = biased_cnn()
    method = get_method("lrp", composite="epsilon_gamma_box")
    assert method.epsilon == 1e-6 and get_method("lrp").epsilon == 0.0
    ours = method(net, images, 1)
    composite = EpsilonGammaBox(low=torch.zeros_like(images), high=torch.ones_like(images), epsilon=1e-6, gamma=0.25)
    with Gradient(model=net, composite=composite) as attributor:
        _, reference = attributor(images, lambda out: torch.eye(2)[[1] * len(out)] * out)
    assert not torch.allclose(ours, get_method("lrp", epsilon=1e-6)(net, images, 1), atol=1e-3)  # the rules matter
    torch.testing.assert_close(ours, reference[:, 0].detach(), atol=1e-5 * float(reference.abs().max()), rtol=0)


def test_the_composite_conserves_the_logit_on_densenet_batched_as_per_image():
    """DenseNet121 as initialised (no biases or batch-norm shifts to absorb relevance; drawn at random as above, its
    logits overflow at 32²): the gamma rule conserves a positive output's relevance, z^B the stem's. Epsilon 1e-9:
    the default 1e-6 absorbs 3e-5 of the logit here, as an epsilon rule does."""
    net = build_network("densenet121").eval()
    images = torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(3))
    method = get_method("lrp", composite="epsilon_gamma_box", epsilon=1e-9)
    together = method(net, images, 1)
    alone = torch.cat([method(net, images[i:i + 1], 1) for i in range(2)])
    torch.testing.assert_close(together, alone, atol=1e-5 * float(alone.abs().max()), rtol=0)
    with torch.no_grad():
        logits = net(images)[:, 1]
    torch.testing.assert_close(together.sum(dim=(1, 2)), logits, atol=1e-5 * float(logits.abs().max()), rtol=0)
    assert method.rules(net)[net.features.conv0] == "box" and method.rules(net)[net.class_layers.out] == "epsilon"
    with pytest.raises(ValueError, match="needs epsilon > 0"):  # its epsilon rule would divide zero outputs by zero
        get_method("lrp", composite="epsilon_gamma_box", epsilon=0.0)
