"""Synthetic projection radiographs with implanted lesions of known extent.

No public chest or musculoskeletal data with localisation ships offline, so the
default dataset is generated here. Each image is formed like a projection
radiograph: an attenuation map (line integrals through body, lungs, heart,
spine, ribs, clavicles, diaphragm; or a long bone in soft tissue) plus an
optional lesion attenuation map, then Beer-Lambert, detector blur, quantum
noise, log transform and a random window/gamma. The lesion's own attenuation
map is the ground-truth mask, and the same sample seed with and without the
lesion gives a pixel-identical background (a paired sample).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
from scipy import ndimage

CHEST = "chest"
MSK = "msk"
VARIANTS = (CHEST, MSK)


@dataclass
class SyntheticConfig:
    """Difficulty knobs and image-formation parameters of the generator.

    ``lesion_contrast`` is the peak extra attenuation of a lesion (line-integral
    units, the lungs span about 1.0); the default range is learnable by a
    DenseNet121 in a few CPU epochs without being trivial. Sweep it (and
    ``photons``, the quantum noise) to move a study from easy to hard.
    """

    size: int = 128
    variant: str = CHEST
    lesion_contrast: tuple[float, float] = (0.5, 1.0)
    # RSNA pneumonia box priors (fractions of the image side), DATASETS.md.
    lesion_width: tuple[float, float, float] = (0.12, 0.21, 0.31)
    lesion_height: tuple[float, float, float] = (0.12, 0.29, 0.61)
    two_lesion_prob: float = 0.35
    nodule_prob: float = 0.3
    photons: float = 3.0e4
    detector_blur: float = 0.6
    monochrome1_prob: float = 0.25
    shortcut_prob: float = 0.0
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {self.variant!r}")
        if self.size < 32:
            raise ValueError(f"size must be at least 32 pixels, got {self.size}")
        lo, hi = self.lesion_contrast
        if not 0 < lo <= hi:
            raise ValueError(f"lesion_contrast must be 0 < low <= high, got {self.lesion_contrast}")

    def to_dict(self) -> dict:
        return asdict(self)


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates in [-1, 1], x to the right, y downwards."""
    c = (np.arange(size) + 0.5) / size * 2.0 - 1.0
    return np.meshgrid(c, c, indexing="xy")


def _ellipsoid(x, y, cx, cy, rx, ry) -> np.ndarray:
    """Projected thickness of an ellipsoid (1 at its centre, 0 outside)."""
    r2 = ((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2
    return np.sqrt(np.clip(1.0 - r2, 0.0, None))


def _smoothstep(edge0: float, edge1: float, v: np.ndarray) -> np.ndarray:
    t = np.clip((v - edge0) / (edge1 - edge0), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def powerlaw_noise(rng: np.random.Generator, size: int, beta: float = 3.0) -> np.ndarray:
    """Zero-mean, unit-variance 1/f^beta noise: the correlated texture of lung parenchyma."""
    f = np.fft.fftfreq(size)
    fr = np.sqrt(f[:, None] ** 2 + f[None, :] ** 2)
    fr[0, 0] = 1.0
    spectrum = (rng.standard_normal((size, size)) + 1j * rng.standard_normal((size, size))) / fr ** (beta / 2)
    spectrum[0, 0] = 0.0
    field_ = np.real(np.fft.ifft2(spectrum))
    return (field_ - field_.mean()) / (field_.std() + 1e-12)


def _chest_anatomy(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Attenuation of a PA chest without lesion, and the lung-field mask."""
    x, y = _grid(size)
    j = lambda s: 1.0 + s * rng.standard_normal()  # noqa: E731  per-sample shape jitter
    body = 2.2 * _ellipsoid(x, y, 0.0, 0.2, 0.88 * j(0.03), 1.3 * j(0.03))
    dome_y = 0.48 + 0.05 * rng.standard_normal(2)
    lungs = np.zeros_like(x)
    lung_mask = np.zeros(x.shape, dtype=bool)
    for side, dome in zip((-1.0, 1.0), dome_y):
        cx = side * 0.4 * j(0.04)
        shell = _ellipsoid(x, y, cx, -0.05, 0.31 * j(0.05), 0.68 * j(0.04))
        # diaphragm dome: lung ends at a curve rising towards the midline
        dome_curve = dome + 0.25 * ((x - cx) / 0.35) ** 2
        below = _smoothstep(-0.04, 0.04, y - dome_curve)
        lung = shell * (1.0 - below)
        lungs += lung
        lung_mask |= lung > 0.05
    heart = _ellipsoid(x, y, 0.12 * j(0.2), 0.28, 0.33 * j(0.06), 0.27 * j(0.06))
    mediastinum = _smoothstep(0.18, 0.12, np.abs(x)) * _smoothstep(0.45, 0.3, y)
    texture = powerlaw_noise(rng, size, beta=3.0)
    soft = body - 1.75 * lungs * (1.0 + 0.1 * texture) + 0.9 * heart + 0.6 * mediastinum

    spine = _smoothstep(0.09, 0.06, np.abs(x)) * (0.85 + 0.15 * np.cos(y * 22.0 + rng.uniform(0, 6.3)))
    bone = 0.55 * spine
    rib_phase = rng.uniform(-0.03, 0.03)
    for side in (-1.0, 1.0):
        for k in range(10):
            y0 = -0.78 + k * 0.145 + rib_phase
            centre = y0 + 0.55 * (np.abs(x) - 0.08) ** 2 + 0.05 * np.abs(x)
            band = _smoothstep(0.035, 0.018, np.abs(y - centre))
            extent = _smoothstep(0.06, 0.1, side * x) * _smoothstep(0.9, 0.8, side * x)
            bone += 0.13 * band * extent
        clav_centre = -0.72 + 0.12 * (side * x - 0.1)
        clav = _smoothstep(0.04, 0.02, np.abs(y - clav_centre)) * _smoothstep(0.08, 0.12, side * x)
        bone += 0.35 * clav * _smoothstep(0.7, 0.6, side * x)
    return soft + 1.6 * bone, lung_mask


def _msk_anatomy(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Attenuation of a long bone (cortex, medullary canal, flared metaphyses) in soft tissue."""
    x, y = _grid(size)
    cx = 0.05 * rng.standard_normal()
    limb = 1.2 * _ellipsoid(x, 0.0 * y, cx, 0.0, 0.75 + 0.05 * rng.standard_normal(), 1.0)
    flare = 1.0 + 0.7 * _smoothstep(0.55, 0.95, np.abs(y))
    outer = (0.2 + 0.02 * rng.standard_normal()) * flare
    inner = outer * (0.62 + 0.05 * rng.uniform())
    u = np.abs(x - cx)
    chord = lambda r: 2.0 * np.sqrt(np.clip(r**2 - u**2, 0.0, None))  # noqa: E731
    cortex = chord(outer) - chord(inner)
    texture = powerlaw_noise(rng, size, beta=2.5)
    bone = 2.4 * cortex + 0.5 * chord(inner) * (1.0 + 0.15 * texture)
    bone_mask = u < outer
    return limb + bone, bone_mask


def _lesion_centres(rng: np.random.Generator, n: int, variant: str) -> list[tuple[float, float]]:
    """Lesion centres in image fractions: bimodal in x (one per lung), 0.33-0.70 in y (RSNA)."""
    if variant == MSK:
        return [(0.5 + 0.03 * rng.standard_normal(), rng.uniform(0.25, 0.75)) for _ in range(n)]
    sides = rng.permutation([0.24, 0.77])[:n] if n <= 2 else rng.choice([0.24, 0.77], n)
    return [(float(s + 0.04 * rng.standard_normal()), float(rng.uniform(0.33, 0.70))) for s in sides]


def _lognormal_in(rng: np.random.Generator, lo: float, med: float, hi: float) -> float:
    """A size drawn around a median, its 5-95% range matching (lo, hi)."""
    sigma = (np.log(hi) - np.log(lo)) / (2 * 1.645)
    return float(np.clip(np.exp(np.log(med) + sigma * rng.standard_normal()), lo, hi))


def _chest_lesion(rng, cfg: SyntheticConfig, region: np.ndarray, contrast: float) -> tuple[np.ndarray, list[str]]:
    """Nodules (round, smooth) or consolidations (textured, clipped to the lung)."""
    size = cfg.size
    x, y = _grid(size)
    n = 2 if rng.uniform() < cfg.two_lesion_prob else 1
    lesion = np.zeros((size, size))
    kinds = []
    for fx, fy in _lesion_centres(rng, n, cfg.variant):
        cx, cy = fx * 2 - 1, fy * 2 - 1
        if rng.uniform() < cfg.nodule_prob:
            r = _lognormal_in(rng, 0.05, 0.08, 0.14)
            shape = _ellipsoid(x, y, cx, cy, r, r * rng.uniform(0.85, 1.15)) ** 0.7
            kinds.append("nodule")
        else:
            w = _lognormal_in(rng, *cfg.lesion_width)
            h = _lognormal_in(rng, *cfg.lesion_height)
            blob = _ellipsoid(x, y, cx, cy, w, h)
            texture = ndimage.gaussian_filter(rng.standard_normal((size, size)), size / 40)
            texture /= texture.std() + 1e-12
            shape = np.clip(blob * (1.0 + 0.6 * texture) - 0.15, 0.0, None)
            shape = np.clip(shape / (shape.max() + 1e-12), 0.0, 1.0) * region
            kinds.append("consolidation")
        lesion = np.maximum(lesion, shape)
    return contrast * lesion, kinds


def _msk_lesion(rng, cfg: SyntheticConfig, region: np.ndarray, contrast: float) -> tuple[np.ndarray, list[str]]:
    """A lytic lesion with a sclerotic rim, or a cortical fracture line (negative attenuation)."""
    size = cfg.size
    x, y = _grid(size)
    (fx, fy), = _lesion_centres(rng, 1, cfg.variant)
    cx, cy = fx * 2 - 1, fy * 2 - 1
    if rng.uniform() < 0.5:
        r = _lognormal_in(rng, 0.06, 0.1, 0.16)
        core = _ellipsoid(x, y, cx, cy, r, 1.4 * r)
        rim = _ellipsoid(x, y, cx, cy, 1.25 * r, 1.25 * 1.4 * r) - core
        return (-0.8 * contrast * core + 0.5 * contrast * np.clip(rim, 0, None)) * region, ["lytic"]
    angle = rng.uniform(-0.5, 0.5)
    dist = (y - cy) * np.cos(angle) - (x - cx) * np.sin(angle)
    line = _smoothstep(0.025, 0.008, np.abs(dist))
    return -1.2 * contrast * line * region, ["fracture"]


def _shortcut_marker(size: int) -> np.ndarray:
    """A small dense square in the upper-left corner, like a lead side marker."""
    marker = np.zeros((size, size))
    s = max(3, size // 16)
    marker[s : 2 * s, s : 2 * s] = 1.0
    return marker


@dataclass
class SyntheticSample:
    """One rendered radiograph with everything known about it."""

    image: np.ndarray  # float in [0, 1], MONOCHROME2 display values (bright = dense)
    mask: np.ndarray  # bool, the lesion's attenuation support
    reader_mask: np.ndarray  # bool, a second reader's outline of the same lesion (see second_reader_outline)
    boxes: list[tuple[int, int, int, int]]  # (x, y, width, height) in pixels
    knobs: dict


def render(seed: int, lesion: bool, cfg: SyntheticConfig | None = None, shortcut: bool = False) -> SyntheticSample:
    """Render sample ``seed``; ``lesion=False`` gives its paired negative with the same background."""
    cfg = cfg or SyntheticConfig()
    size = cfg.size
    anatomy_rng = np.random.default_rng([seed, 0])
    anatomy, region = (_chest_anatomy if cfg.variant == CHEST else _msk_anatomy)(anatomy_rng, size)
    # separate streams so the background does not depend on whether a lesion is drawn
    lesion_rng = np.random.default_rng([seed, 1])
    noise_rng = np.random.default_rng([seed, 2])
    contrast = float(lesion_rng.uniform(*cfg.lesion_contrast))
    region_soft = ndimage.gaussian_filter(region.astype(float), 1.0)
    make_lesion = _chest_lesion if cfg.variant == CHEST else _msk_lesion
    lesion_att, kinds = make_lesion(lesion_rng, cfg, region_soft, contrast)
    if not lesion:
        lesion_att, kinds = np.zeros_like(lesion_att), []
    attenuation = anatomy + lesion_att
    if shortcut:
        attenuation = attenuation + 1.5 * _shortcut_marker(size)

    # Beer-Lambert, detector blur, quantum noise (Gaussian approximation of Poisson,
    # so a paired sample shares its noise draw), log transform.
    intensity = cfg.photons * np.exp(-attenuation)
    intensity = ndimage.gaussian_filter(intensity, cfg.detector_blur, truncate=3.0)
    z = noise_rng.standard_normal((size, size))
    intensity = np.clip(intensity + np.sqrt(intensity) * z, 1.0, None)
    log_att = -np.log(intensity / cfg.photons)

    lo = np.percentile(anatomy, 1) + 0.1 * noise_rng.standard_normal()
    hi = np.percentile(anatomy, 99.5) + 0.1 * noise_rng.standard_normal()
    gamma = float(noise_rng.uniform(0.8, 1.25))
    image = np.clip((log_att - lo) / (hi - lo), 0.0, 1.0) ** gamma

    mask = np.abs(lesion_att) > 1e-3 * contrast
    reader_mask = second_reader_outline(mask, np.random.default_rng([seed, 3]))
    boxes = mask_to_boxes(mask)
    noise_sigma = float(np.median(1.0 / np.sqrt(cfg.photons * np.exp(-anatomy))))
    knobs = {
        "variant": cfg.variant,
        "lesion_kinds": "+".join(kinds),
        "lesion_contrast": contrast if lesion else 0.0,
        "lesion_area_frac": float(mask.mean()),
        "cnr": contrast / noise_sigma if lesion else 0.0,
        "photons": cfg.photons,
        "gamma": gamma,
        "shortcut": bool(shortcut),
    }
    return SyntheticSample(image=image.astype(np.float32), mask=mask, reader_mask=reader_mask, boxes=boxes,
                           knobs=knobs)


def second_reader_outline(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A second annotator's outline of the lesion in ``mask``: same lesion, a hand-drawn boundary.

    The mask is smoothed (a reader draws a smooth contour, not the attenuation support),
    its boundary moved in or out by a random level and a low-frequency wobble, the whole
    outline shifted by up to 2% of the side, and holes filled. Reader-vs-reader agreement
    (the reference of the repeatability criteria, TRUST_METRICS.md section 4) is then high
    but imperfect, as between radiologists.
    """
    if not mask.any():
        return np.zeros_like(mask, dtype=bool)
    size = mask.shape[0]
    soft = ndimage.gaussian_filter(mask.astype(float), size / 96)
    wobble = ndimage.gaussian_filter(rng.standard_normal(mask.shape), size / 16)
    wobble *= 0.12 / (wobble.std() + 1e-12)
    outline = soft + wobble > rng.uniform(0.3, 0.6)
    shift = np.rint(rng.uniform(-0.02, 0.02, size=2) * size).astype(int)
    outline = ndimage.shift(outline, shift, order=0, mode="constant", cval=False)
    outline = ndimage.binary_fill_holes(outline)
    return outline if outline.any() else mask.copy()


def mask_to_boxes(mask: np.ndarray) -> list[tuple[int, int, int, int]]:
    """Tight (x, y, width, height) box of each connected component, widths as pixel extents."""
    labels, _ = ndimage.label(mask)
    boxes = []
    for sl in ndimage.find_objects(labels):
        ys, xs = sl
        boxes.append((xs.start, ys.start, xs.stop - xs.start, ys.stop - ys.start))
    return boxes
