"""Classifier factories, and per architecture what the trust tests need to know about it.

Each architecture records its Grad-CAM target layer and its cascading
randomisation order (TRUST_METRICS.md section 2, output to input), so no other
module hard-codes layer names.
"""

from __future__ import annotations

import copy
import logging
import weakref
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
from monai.networks.nets import ViT, DenseNet, DenseNet121, DenseNet169
from torch import nn
from torchvision.models import DenseNet as TorchvisionDenseNet
from torchvision.models import Inception3, ResNet
from torchvision.models import inception as tv_inception

from bundle.errors import brief

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Architecture:
    """How to build a network and where its trust-relevant layers are (``None``: derived from the built model's
    type, as for a user's network registered with :func:`register_config_network`)."""

    name: str
    factory: Callable[..., nn.Module]
    cam_layer: str | None
    # (block name, module paths reset together), from the output back to the input
    randomisation_blocks: tuple[tuple[str, tuple[str, ...]], ...] | None
    spatial_dims: int | None = 2  # 3: a network for volumes (its name ends in _3d); None: either
    sized: bool = False  # its factory takes the image size (a transformer's position embeddings fix it)


def _densenet121(in_channels: int = 1, num_classes: int = 2, spatial_dims: int = 2) -> nn.Module:
    return DenseNet121(spatial_dims=spatial_dims, in_channels=in_channels, out_channels=num_classes)


def _densenet169(in_channels: int = 1, num_classes: int = 2, spatial_dims: int = 2) -> nn.Module:
    return DenseNet169(spatial_dims=spatial_dims, in_channels=in_channels, out_channels=num_classes)


class ConvBNReLU(tv_inception.BasicConv2d):
    """torchvision's Inception conv block with its ReLU as a module, so guided backpropagation can hook it.

    Same parameters and state-dict keys as ``BasicConv2d``; only the functional ReLU becomes ``nn.ReLU``.
    """

    def __init__(self, in_channels: int, out_channels: int, **kwargs) -> None:
        super().__init__(in_channels, out_channels, **kwargs)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn(self.conv(x)))


def _inception_v3(in_channels: int = 1, num_classes: int = 2, spatial_dims: int = 2) -> nn.Module:
    """torchvision InceptionV3 trained from scratch; the stem conv takes ``in_channels`` (grayscale)."""
    if spatial_dims != 2:
        raise ValueError("inception_v3 is 2-D only")
    blocks = [ConvBNReLU] + [partial(getattr(tv_inception, n), conv_block=ConvBNReLU) for n in (
        "InceptionA", "InceptionB", "InceptionC", "InceptionD", "InceptionE", "InceptionAux")]
    net = Inception3(
        num_classes=num_classes, aux_logits=False, transform_input=False, inception_blocks=blocks, init_weights=True)
    stem = net.Conv2d_1a_3x3.conv
    net.Conv2d_1a_3x3.conv = nn.Conv2d(in_channels, stem.out_channels, stem.kernel_size, stem.stride, bias=False)
    nn.init.trunc_normal_(net.Conv2d_1a_3x3.conv.weight, std=0.1, a=-2, b=2)
    return net


class TokenGrid(nn.Module):
    """A transformer's patch tokens as a feature map: (B, 1 + N, C) tokens, class token first, to (B, C, *grid).

    The layer CAM methods hook on a vision transformer (pytorch-grad-cam's ``reshape_transform``, as a module so
    that every hook-based method finds it by path).
    """

    def __init__(self, grid: Sequence[int]) -> None:
        super().__init__()
        self.grid = tuple(int(g) for g in grid)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return tokens[:, 1:].transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], *self.grid)


def convolutional_stem(in_channels: int, hidden_size: int, patch_size: int, spatial_dims: int) -> nn.Sequential:
    """A ViT's patch embedding as stacked stride-2 3x3 convolutions (Xiao et al. 2021, "Early convolutions help
    transformers see better"), each with batch norm and ReLU, then a 1x1 projection to the token width: one token
    per ``patch_size`` pixels a side, as the linear patch embedding gives, but learnable from a thousand images."""
    if patch_size < 2 or patch_size & (patch_size - 1):
        raise ValueError(f"a convolutional stem needs a power-of-two patch size, got {patch_size}")
    conv, norm = (nn.Conv2d, nn.BatchNorm2d) if spatial_dims == 2 else (nn.Conv3d, nn.BatchNorm3d)
    widths = [in_channels] + [min(16 * 2**i, hidden_size) for i in range(patch_size.bit_length() - 1)]
    layers: list[nn.Module] = []
    for width_in, width_out in zip(widths, widths[1:]):
        layers += [conv(width_in, width_out, 3, stride=2, padding=1, bias=False), norm(width_out), nn.ReLU()]
    return nn.Sequential(*layers, conv(widths[-1], hidden_size, 1))


class ViTClassifier(ViT):
    """MONAI's ``ViT`` with its classification head, returning the logits alone (MONAI's returns them with every
    block's hidden states) and no Tanh on them (MONAI's default head squashes logits into [-1, 1]), optionally
    with a :func:`convolutional_stem` for its patch embedding.

    Its patch tokens entering the last block pass through :class:`TokenGrid` (``token_grid``, the CAM layer): the
    last block's output reaches the head only through the class token, so the gradient at its patch tokens is
    zero. The tokens are put back unchanged, so without the stem the logits equal MONAI's ``ViT`` with the same
    weights (same state-dict keys: a MONAI ViT checkpoint loads).

    Args:
        in_channels / num_classes / spatial_dims: as every network here.
        image_size: the input's side (or sides), fixed by the position embeddings.
        patch_size / hidden_size / mlp_dim / num_layers / num_heads: MONAI ``ViT``'s.
        stem: embed patches with a :func:`convolutional_stem` instead of MONAI's one linear projection.
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 2, spatial_dims: int = 2,
                 image_size: int | Sequence[int] = 128, patch_size: int = 16, hidden_size: int = 128,
                 mlp_dim: int = 512, num_layers: int = 4, num_heads: int = 4, stem: bool = False) -> None:
        sides = [image_size] * spatial_dims if isinstance(image_size, int) else list(image_size)
        if any(side % patch_size for side in sides):
            raise ValueError(f"a ViT's image size {sides} must be a multiple of its patch size {patch_size}")
        super().__init__(in_channels, sides, patch_size, hidden_size, mlp_dim, num_layers, num_heads,
                         classification=True, num_classes=num_classes, spatial_dims=spatial_dims,
                         post_activation=None)
        self.token_grid = TokenGrid([side // patch_size for side in sides])
        if stem:  # PatchEmbeddingBlock flattens whatever its patch_embeddings returns into tokens
            self.patch_embedding.patch_embeddings = convolutional_stem(in_channels, hidden_size, patch_size,
                                                                       spatial_dims)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embedding(x)
        x = torch.cat((self.cls_token.expand(x.shape[0], -1, -1), x), dim=1)
        last = len(self.blocks) - 1
        for index, block in enumerate(self.blocks):  # TorchScript iterates a ModuleList but cannot slice it
            if index == last:
                x = torch.cat((x[:, :1], self.token_grid(x).flatten(2).transpose(1, 2)), dim=1)
            x = block(x)
        return self.classification_head(self.norm(x)[:, 0])


def _vit(in_channels: int = 1, num_classes: int = 2, spatial_dims: int = 2,
         image_size: int | Sequence[int] = 128) -> nn.Module:
    """The bundle's ViT: 4 blocks of 4 heads on 128-wide tokens, a convolutional stem, 16-pixel patches in 2-D
    (8 x 8 tokens at 128^2), 8-voxel patches in 3-D (4^3 at 32^3). Without the stem it did not learn the synthetic
    radiographs on the CPU profile's budget (docs/README.md, "Training configuration")."""
    return ViTClassifier(in_channels, num_classes, spatial_dims, image_size, patch_size=16 if spatial_dims == 2 else 8,
                         stem=True)


def vit_randomisation_blocks(num_layers: int) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """A ViT's cascade, output first: the head (with the final norm), the blocks last to first, then the patch
    embedding with its position embeddings and the class token."""
    blocks = tuple((f"block{i}", (f"blocks.{i}",)) for i in reversed(range(num_layers)))
    return (("head", ("classification_head", "norm")), *blocks, ("patch_embedding", ("patch_embedding", "cls_token")))


class GlassBox(nn.Module):
    """A linear classifier of the image averaged over a grid of ``cells`` x ``cells`` cells: each logit is an
    explicit linear function of the pixels, so its exact attribution is known by construction (calibration's
    known-good model). Its gradient is the cell's weight divided by the cell's pixel count, the same for every
    image; Integrated Gradients from a black image is the image times that gradient.

    Args:
        in_channels / num_classes: as every network here. spatial_dims: 2 or 3. cells: cells per side.
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 2, spatial_dims: int = 2, cells: int = 16) -> None:
        super().__init__()
        self.pool = (nn.AdaptiveAvgPool2d if spatial_dims == 2 else nn.AdaptiveAvgPool3d)(cells)
        self.fc = nn.Linear(in_channels * cells ** spatial_dims, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(x).flatten(1))


class IntensityModel(nn.Module):
    """A fixed model whose target logit is ``sign`` x the image's mean intensity (the other logit 0): calibration's
    known answers for lesion reliance. On the synthetic radiographs a lesion adds attenuation, shown brighter, so
    ``sign`` 1 scores a positive above its lesion-free twin, ``sign`` -1 below it, and ``sign`` 0 ties them.

    Args:
        sign: 1, -1 or 0. target: the class whose logit carries the intensity.
    """

    def __init__(self, sign: int = 1, target: int = 1) -> None:
        super().__init__()
        self.sign, self.target = sign, target

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = torch.zeros(len(x), 2, dtype=x.dtype, device=x.device)
        logits[:, self.target] = self.sign * x.flatten(1).mean(dim=1)
        return logits


_DENSENET_BLOCKS = (
    ("class_layers", ("class_layers",)),
    ("denseblock4", ("features.norm5", "features.denseblock4")),
    ("transition3", ("features.transition3",)),
    ("denseblock3", ("features.denseblock3",)),
    ("transition2", ("features.transition2",)),
    ("denseblock2", ("features.denseblock2",)),
    ("transition1", ("features.transition1",)),
    ("denseblock1", ("features.denseblock1",)),
    ("conv0", ("features.norm0", "features.conv0")),
)
_INCEPTION_ORDER = (
    "fc", "Mixed_7c", "Mixed_7b", "Mixed_7a", "Mixed_6e", "Mixed_6d", "Mixed_6c", "Mixed_6b", "Mixed_6a",
    "Mixed_5d", "Mixed_5c", "Mixed_5b", "Conv2d_4a_3x3", "Conv2d_3b_1x1", "Conv2d_2b_3x3", "Conv2d_2a_3x3",
    "Conv2d_1a_3x3",
)

ARCHITECTURES: dict[str, Architecture] = {
    "densenet121": Architecture("densenet121", _densenet121, "class_layers.relu", _DENSENET_BLOCKS),
    "inception_v3": Architecture(
        "inception_v3", _inception_v3, "Mixed_7c", tuple((n, (n,)) for n in _INCEPTION_ORDER)
    ),
    # volumes: MONAI's DenseNets with 3-D convolutions (the same block names), two depths for reproducibility. Their
    # CAM layer is denseblock3 (1/16 of the input a side): the last one is 1/32, a single voxel at 32^3, whose CAM
    # is constant
    "glass_box": Architecture("glass_box", GlassBox, "pool", (("fc", ("fc",)),), None),
    "densenet121_3d": Architecture("densenet121_3d", _densenet121, "features.denseblock3", _DENSENET_BLOCKS, 3),
    "densenet169_3d": Architecture("densenet169_3d", _densenet169, "features.denseblock3", _DENSENET_BLOCKS, 3),
    # vision transformers: CAMs on the token grid entering the last block; four blocks
    "vit": Architecture("vit", _vit, "token_grid", vit_randomisation_blocks(4), sized=True),
    "vit_3d": Architecture("vit_3d", _vit, "token_grid", vit_randomisation_blocks(4), 3, sized=True),
}


def get_architecture(name: str) -> Architecture:
    """Look up an architecture by its config name, with a clear error for unknown names."""
    try:
        return ARCHITECTURES[name]
    except KeyError:
        raise ValueError(f"unknown network {name!r} (network_name, or an architecture of a criterion); choose one "
                         f"of {sorted(ARCHITECTURES)}") from None


def build_network(name: str = "densenet121", in_channels: int = 1, num_classes: int = 2,
                  spatial_dims: int | None = None, image_size: int | Sequence[int] = 128) -> nn.Module:
    """Build an untrained classifier by architecture name (the configs' ``network_def``); the name decides whether
    it takes images or volumes, and ``spatial_dims``, when given, must agree.

    2-D networks keep their weights channels-last: on CPU (oneDNN) that runs DenseNet121
    training 1.26x and input-gradient passes 1.25x faster at 128 x 128; outputs agree to float rounding.

    Args:
        name: the architecture (``network_name``): a key of :data:`ARCHITECTURES` (e.g. ``densenet121``,
            ``inception_v3``, ``glass_box``, ``densenet121_3d``) or a name :func:`register_config_network` registered.
        in_channels: input image channels (the configs' 1: grey-level images).
        num_classes: output logits (the configs' 2: the finding absent or present).
        spatial_dims: 2 or 3, checked against the architecture's own; it also sets the dimension of one that takes
            either (the glass box; 2 when ``None``). A user's registered network ignores these settings.
        image_size: the images' side (``image_size``), for the architectures whose weights fix it (``vit``,
            ``vit_3d``); the convolutional networks take any size.
    """
    architecture = get_architecture(name)
    if architecture.cam_layer is None:  # a user's network: its own config decides its shape
        return architecture.factory()
    if spatial_dims is not None and architecture.spatial_dims not in (None, spatial_dims):
        names = sorted(n for n, a in ARCHITECTURES.items() if a.spatial_dims == spatial_dims)
        raise ValueError(f"network {name!r} is {architecture.spatial_dims}-D but spatial_dims is {spatial_dims}: "
                         f"choose one of {names} (network_name)")
    spatial_dims = architecture.spatial_dims or spatial_dims or 2  # None: an architecture of either dimension
    sized = {"image_size": image_size} if architecture.sized else {}
    net = architecture.factory(in_channels=in_channels, num_classes=num_classes, spatial_dims=spatial_dims, **sized)
    if spatial_dims == 2:
        net = net.to(memory_format=torch.channels_last)
    net.architecture = name  # lets saliency methods find the CAM layer from the model alone
    return net


def register_config_network(name: str) -> None:
    """Make ``name`` (``network_name``) build the running bundle config's ``network_def`` when that is a user's
    network rather than :func:`build_network`, so the models a study trains besides the one under study (another
    seed, permuted labels) are that network too; its CAM layer and randomisation order come from its type.

    Args:
        name: the name the user's network is registered, trained and checkpointed under (``network_name``); must
            not be a built-in architecture's. Nothing is registered when ``network_def`` is :func:`build_network`.
    """
    from monai.bundle import ConfigParser

    from bundle.tracking import running_workflow

    workflow = running_workflow()
    raw = workflow.parser.get("network_def") if workflow is not None else None
    if raw is None or isinstance(raw, dict) and raw.get("_target_") == "bundle.networks.build_network":
        return
    if name in ARCHITECTURES and ARCHITECTURES[name].cam_layer is not None:
        raise ValueError(f"network_def is your own network but network_name {name!r} names a built-in architecture: "
                         "give it another name (its checkpoints are named after it)")
    config = copy.deepcopy(workflow.parser.get())
    ARCHITECTURES[name] = Architecture(name, lambda: ConfigParser(copy.deepcopy(config)).get_parsed_content(
        "network_def", lazy=False), None, None, None)
    logger.info("network %r: the config's network_def (%s)", name, str(raw)[:120])


# Grad-CAM layers of the classifier families users bring, recognised by module type (first match wins)
KNOWN_CAM_LAYERS: tuple[tuple[type[nn.Module], str], ...] = (
    (DenseNet, "class_layers.relu"),  # MONAI DenseNet121/169/201/264: the ReLU after the last norm
    (Inception3, "Mixed_7c"),
    (ResNet, "layer4"),
    (TorchvisionDenseNet, "features"),  # ends in norm5; torchvision applies the ReLU functionally
    (ViTClassifier, "token_grid"),  # a user's ViTClassifier of other sizes
)
_CHOSEN_CAM_LAYERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_SAID_CAM_LAYERS: set[tuple[str, str, str]] = set()  # (model type, layer, how chosen) already logged


def last_convolutional_block(model: nn.Module) -> str:
    """Path of the top-level child that holds the model's last convolution (the CAM fallback)."""
    last = None
    for child_name, child in model.named_children():
        if any(isinstance(m, nn.modules.conv._ConvNd) for m in child.modules()):
            last = child_name
    if last is None:
        raise ValueError(f"{type(model).__name__} has no convolutional layer for a CAM; set the method's `layer`")
    return last


def cam_layer_of(model: nn.Module) -> str:
    """The Grad-CAM target layer of ``model``, found without the user naming it.

    A network from :func:`build_network` knows its architecture; a user's MONAI
    DenseNet or torchvision Inception V3 / ResNet / DenseNet is recognised by type;
    any other model gets its last convolutional block. The choice is logged once per architecture and layer.
    """
    if model in _CHOSEN_CAM_LAYERS:
        return _CHOSEN_CAM_LAYERS[model]
    if isinstance(model, torch.jit.ScriptModule):
        raise ValueError("a TorchScript module cannot be hooked, so CAM methods cannot run on it: give its "
                         "architecture as network_def and the file as its checkpoint")
    name = getattr(model, "architecture", None)
    if name is not None:
        layer, how = get_architecture(name).cam_layer, f"architecture {name!r}"
    else:
        known = next(((cls, path) for cls, path in KNOWN_CAM_LAYERS if isinstance(model, cls)), None)
        if known is not None:
            layer, how = known[1], f"{known[0].__module__.split('.')[0]} {known[0].__name__}"
        else:
            layer, how = last_convolutional_block(model), "the last convolutional block"
    said = (type(model).__name__, layer, how)
    # every model of one architecture gets the same layer: said once, when it is shown (a nested training, whose
    # INFO lines the study holds back, may choose it first)
    if said not in _SAID_CAM_LAYERS and logger.isEnabledFor(logging.INFO):
        logger.info("CAM layer of %s: %r (%s; set the method's `layer` to choose another)", *said)
        _SAID_CAM_LAYERS.add(said)
    _CHOSEN_CAM_LAYERS[model] = layer
    return layer


# cascading-randomisation orders of the families users bring, recognised by module type
KNOWN_RANDOMISATION_BLOCKS: tuple[tuple[type[nn.Module], tuple[tuple[str, tuple[str, ...]], ...]], ...] = (
    (DenseNet, _DENSENET_BLOCKS),  # every MONAI DenseNet has the same block names
    (Inception3, ARCHITECTURES["inception_v3"].randomisation_blocks),
)


def randomisation_blocks_of(model: nn.Module) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """The cascading-randomisation blocks of ``model``, output first: its architecture's when it was built here
    or is a known family, else one block per top-level child with parameters, the last child first."""
    name = getattr(model, "architecture", None)
    if name is not None:
        return get_architecture(name).randomisation_blocks
    known = next((blocks for cls, blocks in KNOWN_RANDOMISATION_BLOCKS if isinstance(model, cls)), None)
    if known is not None:
        return known
    if isinstance(model, ViT) and hasattr(model, "classification_head"):  # MONAI's classifying ViT, any depth
        return vit_randomisation_blocks(len(model.blocks))
    children = [n for n, child in model.named_children() if any(True for _ in child.parameters())]
    if not children:
        raise ValueError(f"{type(model).__name__} has no child module with parameters to randomise")
    return tuple((n, (n,)) for n in reversed(children))


def is_torchscript(path: str | Path) -> bool:
    """Whether a file is a TorchScript archive (what MONAI's ``ckpt_export`` writes): a zip holding the module's
    code beside its weights, where a checkpoint holds weights only."""
    try:
        with zipfile.ZipFile(path) as archive:
            return any(name.endswith("/constants.pkl") for name in archive.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def torchscript_network(path: str | Path, map_location: str | torch.device = "cpu") -> nn.Module:
    """A TorchScript file as the study's ``network_def`` when its architecture is not one a config can build.
    Methods that hook a layer (the Grad-CAM family, guided backpropagation) cannot hook a scripted module and are
    reported not scored; give the architecture as ``network_def`` instead to score every method."""
    if not is_torchscript(path):
        raise ValueError(f"{path} is not a TorchScript file (torch.jit.save / ckpt_export writes one)")
    module = torch.jit.load(str(path), map_location=map_location)
    _SCRIPTED_FROM[module] = _file_identity(path)
    return module


# the file each TorchScript network_def was loaded from, so loading that same file as its checkpoint reads nothing
_SCRIPTED_FROM: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _file_identity(path: str | Path) -> tuple:
    """A file's resolved path, size and modification time: the same file, unchanged since it was read."""
    stat = Path(path).stat()
    return str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns


def load_checkpoint(model: nn.Module, path: str, map_location: str | torch.device = "cpu") -> nn.Module:
    """Load a state dict saved by the training config's CheckpointSaver, or the weights of a TorchScript file of
    the same network (``ckpt_export``'s output), into ``model``.

    A file that cannot be read (cut short by a full disk, not a checkpoint) or that holds another network's
    weights raises a ``ValueError`` naming the file and what to do.

    Args:
        model: the network, already built, whose weights are replaced (and which is returned).
        path: the checkpoint file (a state dict, a ``{"model": state dict}`` dict, or a TorchScript file).
        map_location: the device the stored tensors are loaded onto before they are copied into ``model``.
    """
    advice = "delete it to retrain, or point ckpt_dir elsewhere"
    if model in _SCRIPTED_FROM and Path(path).is_file() and _SCRIPTED_FROM[model] == _file_identity(path):
        return model  # torchscript_network loaded it from this very file: its weights are these
    try:
        if is_torchscript(path):  # its weights only: the module the config built runs (hooks work on it)
            state = torch.jit.load(str(path), map_location=map_location).state_dict()
        else:
            state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises RuntimeError, UnpicklingError, EOFError ... for damaged files
        raise ValueError(f"{path} cannot be read as a checkpoint (cut short, or not a torch checkpoint; torch says: "
                         f"{brief(e, 120)}): {advice}") from e
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    try:
        model.load_state_dict(state)
    except Exception as e:
        raise ValueError(f"{path} does not hold {type(model).__name__} weights ({brief(e, 120)}): {advice}") from e
    return model
