"""Small networks shared by the tests."""

from __future__ import annotations

import torch
from torch import nn


def relu_net() -> nn.Module:
    """A small CNN built from modules (so guided backprop can hook its ReLUs and an attack can smooth them);
    conv "2" is the CAM layer."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 6, 3, stride=2, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 2),
    ).eval()
