"""What cutting a method's pass count changes: the Spearman correlation of the cut maps' magnitudes with the maps at
the published count (``fidelity_to_published``'s measure), per image, on a trained model and the study's first
positive test images, the method configured as ``configs/evaluate.json`` configures it.

    python scripts/measure_cut.py --method lime --param n_samples --counts 64 100 200 \\
        --dataset-dir data/synthetic_chest --checkpoint models/densenet121_seed0.pt
"""

from __future__ import annotations

import argparse

import torch
from monai.bundle import ConfigParser

from bundle.networks import build_network, load_checkpoint
from bundle.trust.similarity import spearman


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--method", required=True, help="a name under methods in configs/evaluate.json")
    parser.add_argument("--param", required=True, help="the pass count that is cut (e.g. n_samples)")
    parser.add_argument("--counts", type=int, nargs="+", required=True)
    parser.add_argument("--dataset-dir", required=True)
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--network", default="densenet121")
    parser.add_argument("--n-images", type=int, default=8)
    args = parser.parse_args()
    config = ConfigParser()
    config.read_config("configs/evaluate.json")
    config.update({"bundle_root": ".", "dataset_dir": args.dataset_dir, "saliency#batch_size": args.n_images})
    images = next(iter(config.get_parsed_content("test#dataloader")))["image"]
    network = load_checkpoint(build_network(args.network), args.checkpoint).eval()
    method = config.get_parsed_content(f"methods#{args.method}")
    published = method.published_method()
    full = published(network, images, 1).abs()
    print(f"{args.method}: {len(images)} images, published {args.param}={published.params()[args.param]}")
    for count in args.counts:
        cut = type(method)(**{**method.params(), args.param: count})(network, images, 1).abs()
        rho = spearman(cut, full)
        print(f"{args.param}={count}: Spearman per image {[round(v, 3) for v in rho.tolist()]}, "
              f"mean {float(rho.mean()):.3f}", flush=True)


if __name__ == "__main__":
    main()
