"""Shared fixtures: a small synthetic dataset written once per test session."""

from __future__ import annotations

import pytest

from bundle.data.synthetic_dataset import write_synthetic_dataset


@pytest.fixture(scope="session")
def small_dataset(tmp_path_factory):
    """24 synthetic chest radiographs in the RSNA layout, half MONOCHROME1 to exercise the reader."""
    out = tmp_path_factory.mktemp("synthetic") / "chest"
    return write_synthetic_dataset(out, n_images=24, seed=3, monochrome1_prob=0.5)
