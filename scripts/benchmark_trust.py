"""Benchmark the trust criteria against their peer libraries on the same model, images and maps.

Each pair runs in this process on the same inputs, ours and theirs alternating after warm-ups (best of
each). Per row: seconds per image for both, theirs / ours (above 1: ours faster), and the largest absolute
difference of the per-image values where the definitions coincide (else what differs). JSON is written
after every row.

- localisation (Quantus 0.6.0): ``hit`` vs ``PointingGame``, ``mass`` vs ``RelevanceMassAccuracy``,
  ``rank`` vs ``RelevanceRankAccuracy``, ``roc_auc`` vs ``AUC``, on normalised |gradient| maps of
  synthetic radiographs with their lesion masks (Quantus with ``normalise=False, abs=False``);
- cascading randomisation: our steps (``WeightRandomization``, gradient maps, batched SSIM) vs Quantus
  ``MPRT`` given the same block order and re-initialisation (its layer generator yields our steps), the
  same maps and scikit-image SSIM (7 x 7, data_range 1) per image;
- SSIM alone: batched ``ssim`` vs ``skimage.metrics.structural_similarity`` in a loop;
- SIC and AIC: ``pic_curves`` (both kinds from one set of blurred images, blurred in worker processes,
  scored in a few forward passes) vs PAIR ``saliency.metrics.pic.compute_pic_metric`` per image and kind.

    pip install -e ".[bench]" && pip install --no-deps quantus==0.6.0
    python scripts/benchmark_trust.py --n-images 16 --json eval/benchmark_trust.json

Quantus is installed without its dependencies because it asks for ``opencv-python`` beside the bundle's
``opencv-python-headless`` (the same ``cv2``, installed twice); everything else it needs is here already.
"""

from __future__ import annotations

import argparse
import copy
import json
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch
from threadpoolctl import threadpool_limits
from timing import alternate  # scripts/timing.py, beside this script

from bundle.allocator import keep_freed_memory
from bundle.data.synthetic import SyntheticConfig, render
from bundle.networks import build_network, get_architecture, load_checkpoint
from bundle.saliency import get_method
from bundle.trust.localization import hit, mass_accuracy, rank_accuracy, roc_auc
from bundle.trust.normalization import normalize_maps
from bundle.trust.pic import PIC_FRACTIONS, pic_curves, random_reveal_mask, to_uint8
from bundle.trust.randomization import WeightRandomization
from bundle.trust.similarity import ssim


def synthetic_batch(n: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` synthetic radiographs with a lesion (B, 1, H, W) in [0, 1] and their lesion masks."""
    samples = [render(seed, lesion=True, cfg=SyntheticConfig(size=size)) for seed in range(n)]
    images = torch.as_tensor(np.stack([s.image for s in samples]))[:, None]
    masks = torch.as_tensor(np.stack([s.mask for s in samples]), dtype=torch.float32)[:, None]
    return images, masks


def unit_maps(model, images: torch.Tensor) -> torch.Tensor:
    """The gradient maps as every criterion scores them: |grad| scaled to [0, 1] (``pair``, no clip)."""
    return normalize_maps(get_method("grad")(model, images, 1), "pair", True, clip=False)[0]


def largest_difference(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
    both = np.isfinite(a) & np.isfinite(b)
    if (np.isfinite(a) != np.isfinite(b)).any():
        return float("inf")  # one side defined where the other is not
    return float(np.abs(a[both] - b[both]).max()) if both.any() else 0.0


def localisation_rows(images, masks, maps, args) -> list[dict]:
    import quantus

    plain = {"normalise": False, "abs": False, "disable_warnings": True, "display_progressbar": False}
    x, a, s = images.numpy(), maps[:, None].numpy(), masks.numpy()
    y = np.ones(len(x), dtype=int)
    pairs = {
        "hit / PointingGame": (hit, quantus.PointingGame(**plain)),
        "mass / RelevanceMassAccuracy": (mass_accuracy, quantus.RelevanceMassAccuracy(**plain)),
        "rank / RelevanceRankAccuracy": (rank_accuracy, quantus.RelevanceRankAccuracy(**plain)),
        "roc_auc / AUC": (roc_auc, quantus.AUC(**plain)),
    }
    rows = []
    for name, (ours_fn, metric) in pairs.items():
        ours = lambda: ours_fn(maps, masks)  # noqa: E731
        theirs = lambda: metric(  # noqa: E731
            model=None, x_batch=x, y_batch=y, a_batch=a, s_batch=s, channel_first=True)
        seconds = alternate(ours, theirs, args.warmup, args.repeats)
        rows.append(row("localisation", name, seconds, len(x), largest_difference(ours(), np.asarray(theirs(), float))))
    return rows


def randomisation_row(model, images, args) -> dict:
    import quantus
    from quantus.helpers.model.pytorch_model import PyTorchModel
    from skimage.metrics import structural_similarity

    blocks = get_architecture("densenet121").randomisation_blocks
    steps = args.steps or [name for name, _ in blocks]
    def ours():
        trained = unit_maps(model, images)
        randomization = WeightRandomization(model, blocks, "cascading", args.seed, steps)
        return {step: ssim(trained, maps).numpy()
                for step, maps in randomization.map_steps(lambda cache_step, m: unit_maps(m(), images))}

    def our_steps(self, order="top_down", seed=42):  # Quantus's layer generator, yielding our blocks instead
        work = copy.deepcopy(self.model)  # MPRT explains the trained model with self.model inside the loop
        randomization = WeightRandomization(work, blocks, "cascading", args.seed, steps)
        for block in randomization.steps:
            with randomization.randomized(block) as randomized:
                yield randomization.step_name(block), randomized

    PyTorchModel.get_random_layer_generator = our_steps
    PyTorchModel.random_layer_generator_length = property(lambda self: len(steps))

    def explain(model, inputs, targets, **kwargs):
        return unit_maps(model, torch.as_tensor(inputs))[:, None].numpy()

    def skimage_ssim(a, b, batched=True, **kwargs):
        shape = images.shape[2:]
        return np.array([structural_similarity(u.reshape(shape), v.reshape(shape), data_range=1.0, win_size=7)
                         for u, v in zip(a, b)])

    mprt = quantus.MPRT(similarity_func=skimage_ssim, layer_order="top_down", seed=args.seed, normalise=False,
                        abs=False, disable_warnings=True, display_progressbar=False)
    y = np.ones(len(images), dtype=int)

    def theirs():
        return mprt(model=model, x_batch=images.numpy(), y_batch=y, a_batch=None, channel_first=True,
                    explain_func=explain, device="cpu")

    seconds = alternate(ours, theirs, args.warmup, args.repeats)
    mine, quantus_scores = ours(), theirs()
    difference = max(largest_difference(mine[f"cascading:{s}"], quantus_scores[f"cascading:{s}"]) for s in steps)
    return row("cascading randomisation", f"{len(steps)} steps / MPRT", seconds, len(images), difference)


def ssim_row(maps, args) -> dict:
    from skimage.metrics import structural_similarity

    other = maps.roll(1, dims=0)

    def theirs():
        return [structural_similarity(a, b, data_range=1.0, win_size=7) for a, b in zip(maps.numpy(), other.numpy())]

    seconds = alternate(lambda: ssim(maps, other), theirs, args.warmup, args.repeats)
    return row("similarity", "ssim / skimage loop", seconds, len(maps), largest_difference(ssim(maps, other), theirs()))


def pic_row(model, images, maps, args) -> dict:
    from saliency.metrics import pic

    if not hasattr(np, "trapz"):
        np.trapz = np.trapezoid  # PAIR 0.2.1 integrates with np.trapz, which numpy 2 removed: the same rule
    uint8, saliency = to_uint8(images), maps.numpy()
    mask = random_reveal_mask(uint8.shape[1:], 0.01, args.seed)

    def score(kind, net):
        def pred_func(batch):
            with torch.no_grad():
                logits = net(torch.as_tensor(np.asarray(batch), dtype=next(net.parameters()).dtype)[:, None] / 255.0)
            if kind == "sic":
                return torch.softmax(logits, dim=1)[:, 1].double().numpy().tolist()
            return (logits.argmax(dim=1) == 1).double().numpy().tolist()
        return pred_func

    def theirs(net=model):
        out = {}
        for kind in ("sic", "aic"):
            areas = []
            for image, m in zip(uint8, saliency):
                try:
                    areas.append(pic.compute_pic_metric(image, m, mask, score(kind, net), PIC_FRACTIONS,
                                                        min_pred_value=args.min_score).auc)
                except pic.ComputePicMetricError:
                    areas.append(float("nan"))
            out[kind] = areas
        return out

    with ProcessPoolExecutor(args.workers, mp_context=multiprocessing.get_context("fork"),
                             initializer=threadpool_limits, initargs=(1,)) as pool:
        def ours(net=model):
            results = pic_curves(net, uint8, saliency, mask, 1, min_score=args.min_score, executor=pool)
            return {kind: r.auc for kind, r in results.items()}

        seconds = alternate(ours, theirs, args.warmup, args.repeats, rounds=1)
        # values on a float64 copy: in float32 the network's logits depend on the batch they are computed in
        # (PAIR and we batch differently) by about 1e-7, which moves an area by a few 1e-6
        double = copy.deepcopy(model).double()
        mine, pair = ours(double), theirs(double)
    difference = max(largest_difference(mine[k], pair[k]) for k in ("sic", "aic"))
    return row("faithfulness", "SIC + AIC / PAIR compute_pic_metric", seconds, len(images), difference)


def row(family: str, name: str, seconds: tuple[float, float], n: int, difference: float) -> dict:
    ours, theirs = seconds
    return {"family": family, "pair": name, "ours_ms_per_image": 1e3 * ours / n,
            "theirs_ms_per_image": 1e3 * theirs / n, "theirs_over_ours": theirs / ours,
            "largest_difference": difference}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-images", type=int, default=16)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--checkpoint", help="a trained DenseNet121 (default: untrained; speed does not depend on it)")
    parser.add_argument("--families", nargs="+", default=["localisation", "similarity", "randomisation", "pic"])
    parser.add_argument("--steps", nargs="*", help="cascade blocks (default: all nine of DenseNet121)")
    parser.add_argument("--min-score", type=float, default=0.0,
                        help="PIC's min_score (0 with an untrained model, whose scores sit near 0.5)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default="eval/benchmark_trust.json")
    args = parser.parse_args()
    keeps_freed_memory = keep_freed_memory()  # as a study does at initialize: ours, the peers and the floor alike
    torch.manual_seed(args.seed)
    model = build_network("densenet121").eval()
    if args.checkpoint:
        load_checkpoint(model, args.checkpoint)
    images, masks = synthetic_batch(args.n_images, args.size)
    maps = unit_maps(model, images)
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    rows = []

    def add(new: list[dict]) -> None:  # written after every row, so an interrupted run keeps what it measured
        for r in new:
            rows.append(r)
            out.write_text(json.dumps({"threads": torch.get_num_threads(), "n_images": args.n_images,
                                       "size": args.size, "keeps_freed_memory": keeps_freed_memory, "rows": rows},
                                      indent=2))
            print(f"{r['family']:<24} {r['pair']:<38} ours {r['ours_ms_per_image']:9.3f} ms/img  theirs "
                  f"{r['theirs_ms_per_image']:9.3f} ms/img  {r['theirs_over_ours']:7.1f}x  largest difference "
                  f"{r['largest_difference']:.2g}", flush=True)

    if "localisation" in args.families:
        add(localisation_rows(images, masks, maps, args))
    if "similarity" in args.families:
        add([ssim_row(maps, args)])
    if "randomisation" in args.families:
        add([randomisation_row(model, images, args)])
    if "pic" in args.families:
        add([pic_row(model, images, maps, args)])
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
