"""Cascading and independent weight randomisation of a trained network, in place and restorable
(TRUST_METRICS.md section 2; Adebayo et al. 2018).

Each block is re-initialised with its modules' own ``reset_parameters()`` (BatchNorm
running statistics too) under a local generator seeded by (seed, block index), so a
block gets the same random weights at every step it is part of, the global RNG is
untouched, and the same seed gives the same randomised models. The trained weights are
saved once and copied back after each step: no model is rebuilt.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from monai.utils import look_up_option
from torch import nn

RANDOMIZATION_MODES = ("cascading", "independent")


def reset_block(model: nn.Module, paths: Sequence[str], seed: int) -> None:
    """Re-initialise every module under ``paths`` of ``model`` in place, under a local seed."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for path in paths:
            for module in model.get_submodule(path).modules():
                if isinstance(module, nn.modules.batchnorm._NormBase):
                    module.reset_running_stats()
                if hasattr(module, "reset_parameters"):
                    module.reset_parameters()


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
        self.model, self.blocks = model, [(name, tuple(paths)) for name, paths in blocks]
        self.mode, self.seed = look_up_option(mode, RANDOMIZATION_MODES), seed
        names = [name for name, _ in self.blocks]
        unknown = [s for s in steps or () if s not in names]
        if unknown:
            raise ValueError(f"unknown randomisation step(s) {unknown}; the blocks are {names}")
        self.steps = [n for n in names if steps is None or n in steps]
        self._trained = {k: v.detach().clone() for k, v in model.state_dict().items()}

    def step_name(self, block: str) -> str:
        """The step's name in records and map-cache keys, e.g. ``cascading:denseblock4``."""
        return f"{self.mode}:{block}"

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
        try:
            self._reset(block)
            yield self.model.eval()
        finally:
            self.model.load_state_dict(self._trained)
            self.model.train(training)

    def __iter__(self) -> Iterator[tuple[str, nn.Module]]:
        """``(step name, randomised model)`` for every step in order, restoring the trained weights in between."""
        for block in self.steps:
            with self.randomized(block) as model:
                yield self.step_name(block), model
