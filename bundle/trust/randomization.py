"""Cascading and independent weight randomisation of a trained network, in place and restorable
(TRUST_METRICS.md section 2; Adebayo et al. 2018).

Each block is re-initialised with its modules' own ``reset_parameters()`` (BatchNorm
running statistics too) under a local generator seeded by (seed, block index), so a
block gets the same random weights at every step it is part of, the global RNG is
untouched, and the same seed gives the same randomised models. The trained weights are
saved once and copied back after each step: no model is rebuilt.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager

import torch
from monai.utils import look_up_option
from torch import nn

from bundle.passes import work

logger = logging.getLogger(__name__)
RANDOMIZATION_MODES = ("cascading", "independent")


def reset_block(model: nn.Module, paths: Sequence[str], seed: int) -> None:
    """Re-initialise every module under ``paths`` of ``model`` in place, under a local seed.

    The weights are drawn on the parameters' device, so CPU and CUDA give different randomised
    models for one seed (map-cache keys carry the device type); both generators are restored.
    """
    cuda = sorted({p.device.index or 0 for p in model.parameters() if p.device.type == "cuda"})
    with torch.random.fork_rng(devices=cuda):
        torch.manual_seed(seed)
        for path in paths:
            parameter = _parameter_at(model, path)
            if parameter is not None:
                redraw_bare_parameter(parameter, path)
                continue
            block = model.get_submodule(path)
            resettable = {m for m in block.modules() if hasattr(m, "reset_parameters")}
            if not resettable and any(True for _ in block.parameters()):  # else the "randomised" maps are the trained
                raise ValueError(f"{path}: no module of this block can re-initialise its weights (reset_parameters)")
            for module in block.modules():
                if isinstance(module, nn.modules.batchnorm._NormBase):
                    module.reset_running_stats()
                if module in resettable:
                    module.reset_parameters()
                else:  # a parameter beside resettable layers: a transformer's position embeddings
                    for name, own in module.named_parameters(recurse=False):
                        redraw_bare_parameter(own, f"{path}: {type(module).__name__}.{name}")


def _parameter_at(model: nn.Module, path: str) -> nn.Parameter | None:
    """The parameter at ``path`` when it names one (a ViT's ``cls_token``), else ``None`` (it names a module)."""
    try:
        return model.get_parameter(path)
    except AttributeError:
        return None


_SAID_REDRAWN: set[str] = set()  # the bare parameters already said redrawn


def redraw_bare_parameter(parameter: torch.Tensor, where: str) -> None:
    """Re-initialise a parameter no module's ``reset_parameters`` covers (a ViT's class token or position
    embeddings) as ViTs initialise their position embeddings (MONAI's ``PatchEmbeddingBlock``, timm): a normal of
    std 0.02 truncated at +-2; said once per parameter, since a user's layer of that kind is redrawn the same way."""
    if where not in _SAID_REDRAWN:
        logger.info("cascade: %s has no reset_parameters; redrawn from a normal of std 0.02", where)
        _SAID_REDRAWN.add(where)
    nn.init.trunc_normal_(parameter, std=0.02, a=-2.0, b=2.0)


class WeightRandomization:
    """The randomisation steps of one trained model: ``cascading`` (blocks re-initialised cumulatively from
    the output back to the input) or ``independent`` (one block at a time).

    Args:
        model: the trained network (changed in place inside :meth:`randomized`, restored afterwards).
        blocks: ``(block name, module paths)`` from the output back to the input
            (``bundle.networks.Architecture.randomisation_blocks``).
        mode: ``cascading`` or ``independent``.
        seed: seeds each block's re-initialisation (with its index).
        steps: block names to stop at (a subset, in cascade order); all blocks when ``None``. Cascading
            steps stay cumulative: a step re-initialises every block up to and including it.
    """

    def __init__(self, model: nn.Module, blocks: Sequence[tuple[str, Sequence[str]]], mode: str = "cascading",
                 seed: int = 0, steps: Sequence[str] | None = None) -> None:
        if isinstance(model, torch.jit.ScriptModule):
            raise ValueError("a TorchScript module cannot be re-initialised block by block: give its architecture as "
                             "network_def and the file as its checkpoint")
        self.model, self.blocks = model, [(name, tuple(paths)) for name, paths in blocks]
        self.mode, self.seed = look_up_option(mode, RANDOMIZATION_MODES), seed
        names = [name for name, _ in self.blocks]
        unknown = [s for s in steps or () if s not in names]
        if unknown:
            raise ValueError(f"unknown randomisation step(s) {unknown}; the blocks are {names}")
        self.steps = [n for n in names if steps is None or n in steps]
        self._trained: dict[str, torch.Tensor] | None = None  # saved when first randomised: a cached rerun never is

    def step_name(self, block: str) -> str:
        """The step's name in records, e.g. ``cascading:denseblock4``."""
        return f"{self.mode}:{block}"

    def cache_step(self, block: str) -> str:
        """The step's map-cache identity: the step, the seed and the device type that drew the weights."""
        device = next(self.model.parameters()).device.type
        return f"{self.step_name(block)}:seed{self.seed}:{device}"

    def _reset(self, block: str) -> None:
        names = [name for name, _ in self.blocks]
        last = names.index(block)
        chosen = range(last + 1) if self.mode == "cascading" else [last]
        for index in chosen:
            reset_block(self.model, self.blocks[index][1], self.seed * 1000 + index)

    @contextmanager
    def randomized(self, block: str) -> Iterator[nn.Module]:
        """The model with the weights of step ``block`` re-initialised; the trained weights come back on exit."""
        training = self.model.training
        with work("weights"):
            if self._trained is None:
                self._trained = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        try:
            with work("weights"):
                self._reset(block)
            yield self.model.eval()
        finally:
            with work("weights"):
                self.model.load_state_dict(self._trained)
            self.model.train(training)

    def map_steps(self, compute: Callable[[str, Callable[[], nn.Module]], object]) -> Iterator[tuple[str, object]]:
        """``(step name, compute(cache step, randomised))`` for every step in order.

        ``randomised()`` re-initialises the step's blocks when first called and returns the model, so a step
        whose maps are all cached (a rerun) neither re-initialises nor restores anything. The trained weights
        are back before each result is handed out, so nothing the caller does can meet a randomised model.
        """
        for block in self.steps:
            with ExitStack() as restore:
                drawn: list[nn.Module] = []

                def randomised(block: str = block) -> nn.Module:
                    if not drawn:
                        drawn.append(restore.enter_context(self.randomized(block)))
                    return drawn[0]

                result = compute(self.cache_step(block), randomised)
            yield self.step_name(block), result
