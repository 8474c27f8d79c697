"""PNG radiographs (NIH ChestX-ray14, MURA): screening and a MONAI reader that gives rows-by-columns greyscale."""

from __future__ import annotations

from pathlib import Path

from monai.data import PILReader

from bundle.data.screening import ImageCheck

GREY_MODES = ("1", "L", "I", "I;16", "I;16B", "I;16L", "F")  # one channel as PIL reads it
COLOUR_MODES = ("RGB", "RGBA", "LA", "P", "CMYK", "YCbCr")  # converted to one channel: PIL's L = 0.299 R + 0.587 G + ...


def to_grey(image):
    """One channel of a PIL image: colour modes (NIH ships some RGBA radiographs) converted to luminance ``L``."""
    return image.convert("L") if image.mode in COLOUR_MODES else image


class RadiographPNGReader(PILReader):
    """MONAI's PILReader with rows-by-columns arrays (as the DICOM reader and the masks), colour read as one
    channel. MONAI's default PILReader swaps the axes (x first), which would mirror boxes about the diagonal."""

    def __init__(self, **kwargs) -> None:
        kwargs.setdefault("reverse_indexing", False)
        kwargs.setdefault("converter", to_grey)
        super().__init__(**kwargs)

    def _get_spatial_shape(self, img):
        """(rows, columns) when the array is rows by columns: MONAI 1.6 reports (width, height) whatever
        ``reverse_indexing`` says, which would rescale the boxes of a non-square image along the wrong axes."""
        shape = super()._get_spatial_shape(img)
        return shape if self.reverse_indexing else shape[::-1].copy()


def inspect_png(path: str | Path) -> ImageCheck:
    """Screen ``path`` as one radiograph: readable and complete (decoded here), one frame, a greyscale or
    colour mode."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            mode, size, frames = image.mode, image.size, getattr(image, "n_frames", 1)
            image.load()
    except Exception as e:
        return ImageCheck(f"not a readable image file ({type(e).__name__}: {e})")
    if frames != 1:
        return ImageCheck(f"{frames} frames: one radiograph per file expected", reason="image_shape")
    if mode not in GREY_MODES + COLOUR_MODES:
        return ImageCheck(f"image mode {mode!r}: expected a greyscale or colour image", reason="image_shape")
    repair = f"colour ({mode}) image read as one channel (luminance)" if mode in COLOUR_MODES else None
    return ImageCheck(shape=(size[1], size[0]), repair=repair)
