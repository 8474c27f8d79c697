"""Architectures: build, forward, and the layer names the trust tests depend on."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from bundle.networks import _SAID_CAM_LAYERS, ARCHITECTURES, build_network, cam_layer_of, get_architecture


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_grayscale_forward_and_layer_names(name):
    size = 128 if get_architecture(name).spatial_dims in (2, None) else 32
    net = build_network(name, image_size=size).eval()
    with torch.no_grad():
        out = net(torch.rand(2, 1, *[size] * (2 if size == 128 else 3)))
    assert out.shape == (2, 2)
    assert net.get_submodule(cam_layer_of(net)) is not None
    arch = get_architecture(name)
    covered = set()
    for _, paths in arch.randomisation_blocks:
        for path in paths:
            if path in dict(net.named_parameters()):  # a bare parameter (a ViT's class token)
                covered.add(id(net.get_parameter(path)))
            else:
                covered |= {id(p) for p in net.get_submodule(path).parameters()}
    # cascading randomisation must be able to reach every weight of the network
    assert covered == {id(p) for p in net.parameters()}


def test_randomisation_orders_follow_the_published_lists():
    inception = [b for b, _ in get_architecture("inception_v3").randomisation_blocks]
    assert inception[:3] == ["fc", "Mixed_7c", "Mixed_7b"] and inception[-1] == "Conv2d_1a_3x3" and len(inception) == 17
    densenet = [b for b, _ in get_architecture("densenet121").randomisation_blocks]
    assert densenet == ["class_layers", "denseblock4", "transition3", "denseblock3", "transition2",
                        "denseblock2", "transition1", "denseblock1", "conv0"]


def test_unknown_network_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown network 'resnet9'"):
        build_network("resnet9")


def test_inception_relus_are_modules_and_the_network_is_torchvisions():
    from captum.attr import GuidedBackprop
    from torchvision.models import Inception3

    torch.manual_seed(0)
    ours = build_network("inception_v3").eval()
    plain = Inception3(num_classes=2, aux_logits=False, transform_input=False, init_weights=False)
    plain.Conv2d_1a_3x3.conv = torch.nn.Conv2d(1, 32, 3, 2, bias=False)
    assert plain.load_state_dict(ours.state_dict()) is not None  # same keys and shapes: checkpoints interchange
    plain.eval()
    x = torch.rand(2, 1, 80, 80, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():  # ours keeps channels-last weights: the same sums, rounded in another order; this
        # untrained network's logits reach 1e5 and differ by up to 1e-4 of that scale, a wrong network by ~1
        expected = plain(x)
        torch.testing.assert_close(ours(x), expected, rtol=0, atol=1e-3 * expected.abs().max().item())
    n_convs = sum(type(m).__name__ == "ConvBNReLU" for m in ours.modules())
    assert n_convs == sum(isinstance(m, torch.nn.ReLU) for m in ours.modules()) == 94
    # guided backprop now guides InceptionV3 through its ReLU modules
    maps = GuidedBackprop(ours).attribute(x.clone().requires_grad_(), target=1)
    assert maps.shape == x.shape and torch.isfinite(maps).all() and maps.abs().sum() > 0


def _users_models():
    """Classifiers as users bring them: built by MONAI or torchvision directly, not by ``build_network``."""
    from monai.networks.nets import DenseNet121, DenseNet169
    from torch import nn
    from torchvision import models

    return [
        ("monai DenseNet121", lambda: DenseNet121(spatial_dims=2, in_channels=3, out_channels=2), "class_layers.relu"),
        ("monai DenseNet169", lambda: DenseNet169(spatial_dims=2, in_channels=3, out_channels=2), "class_layers.relu"),
        ("torchvision resnet18", lambda: models.resnet18(num_classes=2), "layer4"),
        ("torchvision densenet121", lambda: models.densenet121(num_classes=2), "features"),
        ("torchvision inception_v3",
         lambda: models.inception_v3(num_classes=2, aux_logits=False, init_weights=False), "Mixed_7c"),
        ("other", lambda: nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3), nn.ReLU(),
                                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2)), "2"),
    ]


@pytest.mark.parametrize("label, factory, layer", _users_models(), ids=[m[0] for m in _users_models()])
def test_cam_layer_is_recognised_from_the_module_type(label, factory, layer, caplog):
    from bundle.saliency import get_method

    model = factory().eval()
    _SAID_CAM_LAYERS.clear()  # said once per process: another test may have said this one
    with caplog.at_level("INFO", logger="bundle.networks"):
        assert cam_layer_of(model) == layer
        assert cam_layer_of(factory().eval()) == layer
    assert caplog.text.count(repr(layer)) == 1, "the chosen layer is logged, once"
    size = 75 if "inception" in label else 32
    images = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    # Grad-CAM on the user's model without naming a layer equals Grad-CAM on the recognised layer
    torch.testing.assert_close(get_method("gradcam")(model, images, 1),
                               get_method("gradcam", layer=layer)(model, images, 1))


def test_a_cam_layer_chosen_while_info_is_held_back_is_said_when_it_is_shown(caplog):
    """A study's nested training (its INFO lines held back) chose the CAM layer first and it was never said."""
    from bundle.console import only_warnings

    _SAID_CAM_LAYERS.clear()
    with caplog.at_level("INFO", logger="bundle.networks"):
        with only_warnings():
            assert cam_layer_of(nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten())) == "0"
        assert "CAM layer" not in caplog.text
        assert cam_layer_of(nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten())) == "0"
    assert caplog.text.count("CAM layer of Sequential: '0' (the last convolutional block") == 1


def test_a_model_without_convolutions_asks_for_a_layer():
    from torch import nn

    with pytest.raises(ValueError, match="no convolutional layer for a CAM; set the method's `layer`"):
        cam_layer_of(nn.Sequential(nn.Flatten(), nn.Linear(4, 2)))


def test_a_torchscript_network_def_is_not_read_again_as_its_own_checkpoint(tmp_path, monkeypatch):
    """``torchscript_network(file)`` as network_def and the same file as its checkpoint: one read; a changed file,
    or another file, is read."""
    import os

    from bundle.networks import load_checkpoint, torchscript_network

    path = tmp_path / "scripted.pt"
    torch.jit.save(torch.jit.script(nn.Sequential(nn.Linear(3, 2))), str(path))
    reads = []
    load = torch.jit.load
    monkeypatch.setattr(torch.jit, "load", lambda *a, **k: reads.append(a[0]) or load(*a, **k))
    module = torchscript_network(path)
    assert load_checkpoint(module, str(path)) is module and reads == [str(path)]
    torch.jit.save(torch.jit.script(nn.Sequential(nn.Linear(3, 2))), str(path))  # retrained in place
    os.utime(path, ns=(1, 1))
    load_checkpoint(module, str(path))
    assert len(reads) == 2
