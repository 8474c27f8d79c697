"""Figures: a contact sheet of radiographs with their boxes, and a gallery of saliency maps per method."""

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


def saliency_gallery(
    images: np.ndarray,
    masks: np.ndarray,
    maps: dict[str, np.ndarray],
    image_ids: Sequence[str],
    path: str | Path,
) -> Path:
    """Save a grid: one row per image (with its lesion outlined), one column per method's normalised map.

    ``images`` and ``masks`` are (N, H, W); ``maps`` maps a column title to (N, H, W)
    maps already normalised to [0, 1] the way the study scores them.
    """
    n, columns = len(images), 1 + len(maps)
    fig, axes = plt.subplots(n, columns, figsize=(1.5 * columns, 1.6 * n), squeeze=False)
    for row in range(n):
        panels = [("image", None)] + [(name, m[row]) for name, m in maps.items()]
        for ax, (title, saliency) in zip(axes[row], panels):
            ax.imshow(images[row], cmap="gray", vmin=0, vmax=1)
            if saliency is not None:
                ax.imshow(saliency, cmap="inferno", vmin=0, vmax=1, alpha=0.6)
            ax.contour(masks[row] > 0.5, levels=[0.5], colors="cyan", linewidths=0.6)
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(title, fontsize=8)
        axes[row][0].set_ylabel(str(image_ids[row])[-12:], fontsize=6)
    fig.tight_layout(pad=0.3)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
