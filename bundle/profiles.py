"""Study profiles: the settings that trade cost for fidelity to the published studies, one file each.

``configs/profiles/<name>.json`` holds every count a profile changes (images per criterion,
pass counts of the methods, randomisation steps), so the published settings are one
readable file and the CPU cuts another, never scattered conditionals. ``auto`` picks
``published`` when CUDA is available and ``cpu`` otherwise.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

logger = logging.getLogger(__name__)

PROFILES = ("cpu", "published")


def resolve_profile(name: str) -> str:
    """``auto`` -> ``published`` with CUDA, ``cpu`` without; a named profile is checked and returned."""
    if name == "auto":
        return "published" if torch.cuda.is_available() else "cpu"
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}; choose auto or one of {PROFILES}")
    return name


def load_profile(name: str, profiles_dir: str | Path) -> dict:
    """The settings of profile ``name`` (``auto`` resolved), with its resolved name under ``name``.

    Args:
        name: ``cpu``, ``published``, or ``auto`` (``published`` when CUDA is available, ``cpu`` otherwise).
        profiles_dir: the folder of ``<name>.json`` profile files (``configs/profiles`` in the bundle).
    """
    resolved = resolve_profile(name)
    path = Path(profiles_dir) / f"{resolved}.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: profile file missing")
    settings = json.loads(path.read_text())
    logger.info("profile %s%s: %s", resolved, " (auto)" if name == "auto" else "", settings.get("description", ""))
    return {**settings, "name": resolved}
