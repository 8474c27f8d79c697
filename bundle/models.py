"""Which trained models a study needs, named by value, and training the missing ones.

A :class:`ModelSpec` is the identity of a trained model (architecture and seed);
its checkpoint file is named after it, and the map cache keys maps by it, so a
criterion that asks for a model never depends on what happens to be loaded.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelSpec:
    """A trained classifier: ``architecture`` (a ``bundle.networks`` name) trained with ``seed``, on the true
    labels or, with ``permuted_labels``, on the training labels randomly permuted (TRUST_METRICS.md section 3)."""

    architecture: str
    seed: int = 0
    permuted_labels: bool = False

    @property
    def name(self) -> str:
        """The model's name in tables, records and MLflow, and its checkpoint's stem."""
        return f"{self.architecture}_seed{self.seed}" + ("_permuted_labels" if self.permuted_labels else "")

    def checkpoint(self, ckpt_dir: str | Path) -> Path:
        return Path(ckpt_dir) / f"{self.name}.pt"


def epochs_for(epochs: int | Mapping[str, int], architecture: str) -> int:
    """The training epochs of ``architecture`` (a transformer learns slower than a CNN on the same images:
    ``configs/transformer.json``).

    Args:
        epochs: the configs' ``epochs``: a number for every architecture, or a mapping from architecture names to
            epochs whose ``default`` entry covers the others.
        architecture: the architecture trained (``network_name``).
    """
    if not isinstance(epochs, Mapping):
        return int(epochs)
    if architecture not in epochs and "default" not in epochs:
        raise ValueError(f"epochs {dict(epochs)} has no entry for {architecture!r} and no 'default' entry")
    return int(epochs.get(architecture, epochs.get("default")))


def ensure_trained(
    spec: ModelSpec, ckpt_dir: str | Path, train_config: str | Path | None, overrides: Mapping | None = None,
    run_name: str | None = None,
) -> Path:
    """The checkpoint of ``spec``, trained first with ``train_config`` (MONAI bundle ``run``) when missing, as the
    MLflow run ``run_name`` when given."""
    checkpoint = spec.checkpoint(ckpt_dir)
    if checkpoint.is_file():
        logger.info("using trained model %s", checkpoint)
        return checkpoint
    if train_config is None:
        raise FileNotFoundError(f"{checkpoint}: no checkpoint, and no train_config to train one")
    logger.info("checkpoint %s missing: training with %s", checkpoint, train_config)
    settings = {**dict(overrides or {}), "network_name": spec.architecture, "seed": spec.seed,
                "permute_labels": spec.permuted_labels, "ckpt_dir": str(ckpt_dir), "ckpt_name": checkpoint.name,
                **({"run_name": run_name} if run_name else {})}
    from bundle import distributed

    if distributed.active():
        train_outside_the_group(str(train_config), settings)
    else:
        train(str(train_config), settings)
    if not checkpoint.is_file():
        raise FileNotFoundError(f"{checkpoint}: training finished but wrote no checkpoint here; check ckpt_dir/ckpt_name")
    return checkpoint


def train(train_config: str, settings: Mapping) -> None:
    """``monai.bundle run`` of ``train_config`` with ``settings`` as overrides, its INFO lines held back: the study
    says one line per training (its warnings and errors still show). MONAI's notice that a config runs code is
    left out too: the user's own command printed it, for the files that name this one."""
    import warnings

    from monai.bundle import run

    from bundle.console import only_warnings

    with only_warnings(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="parsing config_file")
        run("run", config_file=train_config, **settings)


def train_outside_the_group(train_config: str, settings: Mapping) -> None:
    """Under ``torchrun``, rank 0 trains a missing model alone: in a child process that does not see the process
    group (torchrun's variables removed), because Ignite's and MONAI's distributed helpers (a checkpoint saver asking
    for its rank) would otherwise start collectives the other ranks, waiting at a barrier, never join."""
    import json
    import subprocess
    import sys

    from bundle import distributed

    command = [sys.executable, "-m", "bundle.models", train_config, json.dumps(dict(settings))]
    if subprocess.run(command, env=distributed.environment_outside_the_group()).returncode != 0:
        raise RuntimeError(f"training {settings.get('ckpt_name')} with {train_config} failed in its own process "
                           "(its error is above)")


if __name__ == "__main__":  # python -m bundle.models <train_config> '<settings as JSON>': what rank 0 runs alone
    import json
    import sys

    train(sys.argv[1], json.loads(sys.argv[2]))
