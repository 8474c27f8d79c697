"""Figures: a contact sheet of radiographs with their ground-truth boxes."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402


def contact_sheet(
    images: Sequence[np.ndarray],
    boxes: Sequence[Sequence[Sequence[float]]],
    titles: Sequence[str],
    path: str | Path,
    columns: int = 6,
) -> Path:
    """Save a grid of grayscale images with their (x, y, w, h) boxes outlined in red."""
    rows = int(np.ceil(len(images) / columns))
    fig, axes = plt.subplots(rows, columns, figsize=(2.4 * columns, 2.6 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, image_boxes, title in zip(axes.flat, images, boxes, titles):
        ax.imshow(image, cmap="gray", vmin=0, vmax=1, interpolation="lanczos")
        for x, y, w, h in image_boxes:
            ax.add_patch(Rectangle((x - 0.5, y - 0.5), w, h, fill=False, edgecolor="red", linewidth=1.0))
        ax.set_title(title, fontsize=7)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
