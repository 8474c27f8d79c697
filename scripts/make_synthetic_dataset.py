"""Generate a synthetic radiograph dataset in the RSNA Pneumonia layout.

    python scripts/make_synthetic_dataset.py --out data/synthetic_chest --n-images 1400 --seed 0
    python scripts/make_synthetic_dataset.py --out data/msk --variant msk --contrast 0.3 0.6
    python scripts/make_synthetic_dataset.py --contact-sheet docs/synthetic_examples.png
"""

from __future__ import annotations

import argparse
import logging

from bundle.data.synthetic import SyntheticConfig, render
from bundle.data.synthetic_dataset import write_synthetic_dataset
from bundle.report import contact_sheet


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", help="dataset folder to write (RSNA layout)")
    parser.add_argument("--n-images", type=int, default=1400)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", type=int, default=SyntheticConfig.size, help="image side in pixels")
    parser.add_argument("--variant", choices=["chest", "msk"], default="chest")
    parser.add_argument("--contrast", type=float, nargs=2, default=SyntheticConfig.lesion_contrast,
                        metavar=("LOW", "HIGH"), help="lesion peak extra attenuation range (difficulty)")
    parser.add_argument("--photons", type=float, default=SyntheticConfig.photons, help="quantum noise level")
    parser.add_argument("--shortcut-prob", type=float, default=0.0,
                        help="probability of a marker patch on training positives (shortcut variant)")
    parser.add_argument("--contact-sheet", help="also save a PNG of example pairs with their boxes here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)
    cfg = SyntheticConfig(size=args.size, variant=args.variant, lesion_contrast=tuple(args.contrast),
                          photons=args.photons, shortcut_prob=args.shortcut_prob)
    if args.out:
        out = write_synthetic_dataset(args.out, n_images=args.n_images, seed=args.seed, config=cfg)
        print(f"wrote {args.n_images} images to {out}")
    if args.contact_sheet:
        images, boxes, titles = [], [], []
        for i in range(6):
            for lesion in (True, False):
                sample = render(args.seed * 1_000_003 + i, lesion, cfg)
                images.append(sample.image)
                boxes.append(sample.boxes)
                kind = sample.knobs["lesion_kinds"] or "paired negative"
                titles.append(f"#{i} {kind}" + (f" c={sample.knobs['lesion_contrast']:.2f}" if lesion else ""))
        print(f"wrote {contact_sheet(images, boxes, titles, args.contact_sheet)}")
    if not (args.out or args.contact_sheet):
        parser.error("nothing to do: give --out and/or --contact-sheet")


if __name__ == "__main__":
    main()
