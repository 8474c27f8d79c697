"""Study profiles: the CPU cuts of the published settings, or the published settings themselves.

``configs/evaluate.json`` holds the ``cpu`` profile (every cut listed in docs/criteria.md with its measured
effect); ``configs/published.json`` is an ordinary override file restoring the published studies' settings (a GPU
job), and labels the run ``published``. A config file cannot pick another file by the hardware it runs on, so the
choice is the user's; a run on the cuts says so when CUDA is available.
"""

from __future__ import annotations

import logging

import torch

logger = logging.getLogger(__name__)

PROFILES = ("cpu", "published")


def profile_label(name: str, cuda_available: bool | None = None) -> str:
    """``name``, the profile a study runs (logged as the MLflow param ``profile``), checked; on the ``cpu`` profile
    with CUDA present, a warning naming the override file that restores the published settings.

    Args:
        name: ``cpu`` (evaluate.json's settings) or ``published`` (as set by ``configs/published.json``).
        cuda_available: whether CUDA is present (``torch.cuda.is_available()`` when ``None``).
    """
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}; choose one of {PROFILES}")
    cuda_available = torch.cuda.is_available() if cuda_available is None else cuda_available
    if name == "cpu" and cuda_available:
        logger.warning("CUDA is available but the study runs the cpu profile's cuts: add configs/published.json "
                       "(--config_file \"['configs/evaluate.json','configs/published.json']\") for the published "
                       "studies' settings")
    return name
