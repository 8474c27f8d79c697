"""What happens to a bad item where data enters: it is skipped, or repaired where the right reading is unambiguous,
with one warning line naming the file or row, the reason and the action; the counts by reason travel with the
datalist (:class:`ItemList`) to the study's table and MLflow. docs/bad_input.md lists every rule.
"""

from __future__ import annotations

import logging
import sys
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

SKIPPED, REPAIRED = "skipped", "repaired"


@dataclass(frozen=True)
class ImageCheck:
    """What screening one image file found: ``problem`` (why it cannot be used, else None) under ``reason``
    (``unreadable_image`` or ``image_shape``), its ``shape`` (rows, columns) and ``repair`` (what reading it will
    change, e.g. a colour capture read as one channel)."""

    problem: str | None = None
    shape: tuple[int, int] | None = None
    repair: str | None = None
    reason: str = "unreadable_image"


@dataclass(frozen=True)
class ItemIssue:
    """One bad item: ``where`` (a file, or a table row), ``reason`` (a short key counted in tables and MLflow),
    ``detail`` (what is wrong) and ``action`` (``skipped`` or ``repaired``, with what was done)."""

    where: str
    reason: str
    detail: str
    action: str = SKIPPED
    done: str = ""

    def line(self) -> str:
        """The warning line: file or row, what is wrong, what the bundle did."""
        detail = " ".join(self.detail.split())
        return f"{self.where}: {detail}; {self.action}{' (' + self.done + ')' if self.done else ''}"


class ItemList(list):
    """A datalist (MONAI data dicts) that also carries the items left out or repaired on the way in."""

    def __init__(self, items=(), issues: list[ItemIssue] | None = None) -> None:
        super().__init__(items)
        self.issues = list(issues or [])

    def counts(self, action: str) -> dict[str, int]:
        """How many items got ``action`` (``skipped`` / ``repaired``), by reason."""
        return dict(Counter(i.reason for i in self.issues if i.action == action))


def report(issue: ItemIssue, issues: list[ItemIssue]) -> None:
    """Warn once about ``issue`` and keep it."""
    logger.warning(issue.line())
    issues.append(issue)


def data_issue_counts(datalist) -> dict[str, dict[str, int]]:
    """``{"skipped": {reason: n}, "repaired": {reason: n}}`` of a datalist (empty for a plain list)."""
    if not isinstance(datalist, ItemList):
        return {SKIPPED: {}, REPAIRED: {}}
    return {SKIPPED: datalist.counts(SKIPPED), REPAIRED: datalist.counts(REPAIRED)}


def check_box(box: list[float], shape: tuple[int, int]) -> tuple[str | None, list[float] | None, str]:
    """``(reason, box, detail)`` for an (x, y, w, h) box on an image of ``shape`` (rows, columns): no reason for a
    box inside the image; ``box_clipped`` with the box cut to the image when it runs past an edge; ``box_nan``,
    ``box_size`` or ``box_outside`` (the box is unusable, ``None``) otherwise. A box past the edge would silently
    shrink the lesion and one outside would make every localisation score of its image NaN."""
    x, y, w, h = box
    if not np.isfinite(box).all():
        return "box_nan", None, f"box {box} has a missing or non-numeric coordinate"
    if w <= 0 or h <= 0:
        return "box_size", None, f"box {box} has a non-positive width or height"
    rows, columns = shape
    x0, y0, x1, y1 = max(x, 0.0), max(y, 0.0), min(x + w, float(columns)), min(y + h, float(rows))
    if x1 <= x0 or y1 <= y0:
        return "box_outside", None, f"box {box} lies outside the {columns} x {rows} image"
    if (x0, y0, x1, y1) != (x, y, x + w, y + h):
        clipped = [x0, y0, x1 - x0, y1 - y0]
        return "box_clipped", clipped, f"box {box} runs past the edge of the {columns} x {rows} image"
    return None, list(box), ""


def check_mask(mask: str | dict, shape: tuple[int, int]) -> str | None:
    """Why the lesion mask ``mask`` (an image or NIfTI file, or a COCO RLE whose runs were checked where it was read)
    cannot serve an image of ``shape`` (rows, columns; or a volume's grid), or None."""
    from PIL import Image

    if isinstance(mask, dict):
        height, width = mask["size"]
        return None if (height, width) == tuple(shape) else (
            f"lesion mask (RLE) is {width} x {height}, its image {shape[1]} x {shape[0]}")
    from bundle.data.nifti import is_nifti, volume_shape  # nifti imports this module

    if is_nifti(mask):
        try:
            found = volume_shape(mask)
        except Exception as e:
            return f"lesion mask {mask} cannot be read ({type(e).__name__}: {e})"
        return None if found == tuple(shape) else f"lesion mask {mask} has grid {found}, its volume {tuple(shape)}"
    try:
        with Image.open(mask) as image:
            size = image.size
            image.verify()
    except Exception as e:
        return f"lesion mask {mask} cannot be read ({type(e).__name__}: {e})"
    if (size[1], size[0]) != tuple(shape):
        return f"lesion mask {mask} is {size[0]} x {size[1]}, its image {shape[1]} x {shape[0]}"
    return None


def screen_item(item: dict, issues: list[ItemIssue], inspect: Callable[[str], ImageCheck]) -> bool:
    """Check one item's image (with ``inspect``, e.g. ``inspect_dicom``), boxes and masks where it enters; report
    what is wrong or repaired; whether the item is usable. Boxes past an edge are clipped in ``item``."""
    check = inspect(item["image"])
    if check.problem:
        report(ItemIssue(item["image"], check.reason, check.problem), issues)
        return False
    kept = []
    for box in item["boxes"]:
        reason, fixed, detail = check_box(box, check.shape)
        if fixed is None:
            report(ItemIssue(item["image"], reason, detail), issues)
            return False
        if reason:
            report(ItemIssue(item["image"], reason, detail, REPAIRED, "clipped to the image"), issues)
        kept.append(fixed)
    item["boxes"] = kept
    for key in ("mask", "reader_mask"):
        problem = check_mask(item[key], check.shape) if key in item else None
        if problem:
            report(ItemIssue(item["image"], "mask_unusable", problem), issues)
            return False
    if check.repair:
        report(ItemIssue(item["image"], "colour_image", check.repair, REPAIRED), issues)
    return True


def collect(root: Path, candidates: Iterable[dict], issues: list[ItemIssue], inspect: Callable[[str], ImageCheck] | None,
            limit: int | None, selection: str) -> ItemList:
    """A reader's screened datalist: the first ``limit`` of ``candidates`` (all when None) that pass
    :func:`screen_item` (every one when ``inspect`` is None), drawn lazily so a limited study screens only what it
    uses; a summary line when items were skipped, and an error naming the folder and the ``selection`` (e.g.
    ``split='test', labels=1``) when none is usable."""
    items = []
    for item in candidates:
        if inspect is None or screen_item(item, issues, inspect):
            items.append(item)
            if limit is not None and len(items) >= limit:
                break
    skipped = sum(i.action == SKIPPED for i in issues)
    if skipped:
        logger.warning("%s: skipped %d unusable item(s) of %s (reasons above)", root, skipped, selection)
    if not items:
        raise ValueError(f"{root}: no usable images for {selection}"
                         + (f" ({skipped} skipped, reasons in the warnings above)" if skipped else "")
                         + ": check dataset_dir")
    return ItemList(items, issues)


def print_preparation(written: int, what: str, folder: str | Path, issues: list[ItemIssue]) -> None:
    """What a ``scripts/prepare_<dataset>.py`` did: each unusable row on stderr, then one summary line."""
    for issue in issues:
        print(issue.line(), file=sys.stderr)
    print(f"wrote {written} {what} to {folder}; {len(issues)} row(s) not usable")
