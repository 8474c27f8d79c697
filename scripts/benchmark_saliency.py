"""Benchmark every saliency method against its peer library and against its pass-count floor.

For each method on DenseNet121 and InceptionV3, and the ViT (``--networks vit``; untrained weights: speed
does not depend on them), on the same random batch, every method that applies to the network:
- maps per second and peak memory (GPU: max allocated; CPU: peak resident set);
- the peer implementation on the same model and input, timed in the same run,
  as a ratio (captum; pytorch-grad-cam for the CAMs, on the ViT's token grid too; PAIR ``saliency`` for XRAI),
  and MONAI's ``monai.visualize`` class where MONAI has the method;
- the floor: the method's pass count times the best per-image time of one pass
  of the kind it needs (forward only, or forward plus backward to the input with
  frozen weights), measured after warm-ups over several batch sizes.

    python scripts/benchmark_saliency.py --size 128 --batch-size 8 --json eval/benchmark.json
    python scripts/benchmark_saliency.py --networks densenet121 --methods ig smoothgrad occlusion
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from bundle.allocator import keep_freed_memory
from bundle.networks import build_network, cam_layer_of
from bundle.passes import per_image_seconds
from bundle.saliency import get_method, xrai
from bundle.saliency.base import budget_inputs, has_relu_modules, inputs_per_pass
from timing import timed  # scripts/timing.py, beside this script


def pass_count(name: str, params: dict, model: nn.Module, size: int, device: torch.device) -> tuple[float, str]:
    """Passes per image a method needs, and their kind (TRUST design, 'Performance model')."""
    if name in ("grad", "gradcam", "gradcampp", "gbp", "lrp", "lrp_gamma_box", "chefer"):  # a forward and a backward
        return 1, "backward"
    if name == "rollout":
        return 1, "forward"
    if name == "ggcam":
        return 2, "backward"
    if name == "ig":
        return params["n_steps"], "backward"
    if name == "smoothgrad":
        return params["nt_samples"], "backward"
    if name == "smoothig":
        return params["nt_samples"] * params["n_steps"], "backward"
    if name == "xrai":
        return 2 * params["n_steps"], "backward"
    if name == "occlusion":
        n = len(range(0, size - params["window"] + 1, params["stride"]))
        return n * n + 1, "forward"
    if name == "kernelshap":
        return params["n_samples"] + 1, "forward"
    if name == "lime":
        return params["n_samples"], "forward"
    if name == "eg":
        return params["n_samples"], "backward"
    if name == "scorecam":
        layer = model.get_submodule(cam_layer_of(model))
        captured = []
        handle = layer.register_forward_hook(lambda m, a, o: captured.append(o.shape[1]))
        try:
            with torch.no_grad():
                model(torch.rand(1, 1, size, size, device=device))
        finally:
            handle.remove()
        return captured[0] + 1, "forward"
    raise ValueError(name)


def references(images: torch.Tensor) -> torch.Tensor:
    """Expected Gradients' reference images for a benchmark: 16 random images of the input's shape."""
    return torch.rand(16, *images.shape[1:], generator=torch.Generator().manual_seed(0)).to(images.device)


def peer(name: str, params: dict, model: nn.Module, images: torch.Tensor) -> Callable[[], object] | None:
    """The same method in its peer library, on the same model and input (None where no peer has it)."""
    import captum.attr as ca

    target = 1
    layer = model.get_submodule(cam_layer_of(model))
    if name == "grad":
        return lambda: ca.Saliency(model).attribute(images, target=target, abs=False)
    if name == "ig":
        return lambda: ca.IntegratedGradients(model).attribute(
            images, target=target, n_steps=params["n_steps"], internal_batch_size=inputs_per_pass(images, None))
    if name == "smoothgrad":
        return lambda: ca.NoiseTunnel(ca.Saliency(model)).attribute(
            images, nt_type="smoothgrad", nt_samples=params["nt_samples"], stdevs=0.15, target=target, abs=False)
    if name == "smoothig":
        return lambda: ca.NoiseTunnel(ca.IntegratedGradients(model)).attribute(
            images, nt_type="smoothgrad", nt_samples=params["nt_samples"], stdevs=0.15, target=target,
            n_steps=params["n_steps"])
    if name == "gbp":
        return lambda: ca.GuidedBackprop(model).attribute(images, target=target)
    if name == "ggcam":
        return lambda: ca.GuidedGradCam(model, layer).attribute(images, target=target)
    if name == "occlusion":
        w, s = params["window"], params["stride"]
        return lambda: ca.Occlusion(model).attribute(
            images, sliding_window_shapes=(1, w, w), strides=(1, s, s), baselines=0.0, target=target)
    if name == "kernelshap":
        from bundle.saliency.perturbation import grid_feature_mask

        mask = grid_feature_mask(tuple(images.shape[2:]), params["cell"], images.device)
        return lambda: [ca.KernelShap(model).attribute(images[i : i + 1], baselines=0.0, target=target,
                                                       feature_mask=mask, n_samples=params["n_samples"])
                        for i in range(images.shape[0])]
    if name == "eg":  # GradientShap without noise is Expected Gradients; captum sizes its passes by the batch
        return lambda: ca.GradientShap(model).attribute(images, baselines=references(images),
                                                        n_samples=params["n_samples"], stdevs=0.0, target=target)
    if name == "lime":  # captum's Lime on our superpixels and fill, one image per call, our inputs per pass
        from bundle.saliency.perturbation import segment_means

        method = get_method("lime", **params)
        features = method.features(images)
        fills = segment_means(images, features)
        return lambda: [ca.Lime(model).attribute(images[i : i + 1], target=target, feature_mask=features[i][None, None],
                                                 baselines=fills[i : i + 1], n_samples=params["n_samples"],
                                                 perturbations_per_eval=budget_inputs(images))
                        for i in range(images.shape[0])]
    if name in ("gradcam", "gradcampp", "scorecam"):
        import pytorch_grad_cam as pgc
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

        cls = {"gradcam": pgc.GradCAM, "gradcampp": pgc.GradCAMPlusPlus, "scorecam": pgc.ScoreCAM}[name]

        def run():
            with cls(model=model, target_layers=[layer]) as cam:
                if name == "scorecam":
                    cam.batch_size = budget_inputs(images)  # the same inputs per pass as ours
                return cam(input_tensor=images, targets=[ClassifierOutputTarget(target)] * images.shape[0])

        return run
    if name == "xrai":
        return _pair_xrai(params, model, images)
    if name == "lrp":  # captum's LRP with its default rules (Flatten has none: a reshape passes relevance)
        from captum.attr._utils.lrp_rules import EpsilonRule

        def run():
            for module in model.modules():
                if isinstance(module, nn.Flatten):
                    module.rule = EpsilonRule()
            return ca.LRP(model).attribute(images, target=target)

        return run
    if name == "lrp_gamma_box":  # zennit's EpsilonGammaBox, the composite ours equals
        from zennit.attribution import Gradient
        from zennit.composites import EpsilonGammaBox

        composite = EpsilonGammaBox(low=torch.zeros_like(images), high=torch.ones_like(images), epsilon=1e-6)  # ours

        def run():
            with Gradient(model=model, composite=composite) as attributor:
                return attributor(images, lambda out: torch.eye(out.shape[1], device=out.device)[target] * out)[1]

        return run
    return None


def monai_peer(name: str, params: dict, model: nn.Module, images: torch.Tensor) -> Callable[[], object] | None:
    """The same method in ``monai.visualize`` (None where MONAI lacks it); its gradient and occlusion
    classes take one image per call, so they run in a loop over the batch, as their users run them."""
    import monai.visualize as mv


    layer = cam_layer_of(model)
    one_by_one = [images[i : i + 1] for i in range(images.shape[0])]
    if name == "gradcam":
        cam = mv.GradCAM(nn_module=model, target_layers=layer)
        return lambda: cam(images.clone(), class_idx=1)
    if name == "gradcampp":  # MONAI's Grad-CAM++ weights broadcast wrongly for batches of more than one image
        cam = mv.GradCAMpp(nn_module=model, target_layers=layer)
        return lambda: [cam(x.clone(), class_idx=1) for x in one_by_one]
    if name in ("grad", "smoothgrad", "gbp"):
        if name == "smoothgrad":
            grads = mv.SmoothGrad(model, stdev_spread=0.15, n_samples=params["nt_samples"], magnitude=False,
                                  verbose=False)
        else:
            grads = (mv.VanillaGrad if name == "grad" else mv.GuidedBackpropGrad)(model)
        return lambda: [grads(x.clone(), index=1) for x in one_by_one]
    if name == "occlusion":
        w, s = params["window"], params["stride"]
        occlusion = mv.OcclusionSensitivity(model, mask_size=w, n_batch=budget_inputs(images), mode=0.0,
                                            overlap=1 - s / w)
        return lambda: [occlusion(x) for x in one_by_one]
    return None


def _pair_xrai(params: dict, model: nn.Module, images: torch.Tensor) -> Callable[[], object]:
    """PAIR saliency's XRAI, one image at a time (its API), with gradients from the same PyTorch model."""
    import saliency.core as pair

    def call_model(x_value, call_model_args=None, expected_keys=None):
        x = torch.as_tensor(x_value, dtype=torch.float32, device=images.device).permute(0, 3, 1, 2)
        x.requires_grad_(True)
        out = model(x)[:, 1]
        grads = torch.autograd.grad(out.sum(), x)[0]
        return {pair.INPUT_OUTPUT_GRADIENTS: grads.permute(0, 2, 3, 1).detach().cpu().numpy()}

    xrai = pair.XRAI()
    parameters = pair.XRAIParameters(steps=params["n_steps"])
    batch = images.permute(0, 2, 3, 1).cpu().numpy()

    def run():
        return [xrai.GetMask(im, call_model, extra_parameters=parameters, batch_size=64) for im in batch]

    return run


def xrai_region_step(model: nn.Module, images: torch.Tensor, repeats: int) -> dict:
    """The region step alone (segmentation + greedy growth, no IG passes): ours vs PAIR's, seconds per image."""
    import saliency.core as pair

    method = get_method("xrai")
    attributions = torch.randn(images.shape[0], *images.shape[2:])
    ours, _ = timed(lambda: method.region_maps(images, attributions), 1, repeats)
    batch = images.permute(0, 2, 3, 1).cpu().numpy()
    base = attributions.numpy()[..., None]
    xrai = pair.XRAI()

    def theirs():
        for im, attr in zip(batch, base):
            xrai.GetMask(im, None, base_attribution=attr)

    theirs_s, _ = timed(theirs, 1, repeats)
    n = images.shape[0]
    return {"ours_s_per_image": ours / n, "pair_s_per_image": theirs_s / n, "speedup": theirs_s / ours}


PEER_FLAGS = {"peer": "library", "monai": "monai"}  # row key -> --peers choice
DEFAULT_PARAMS = {
    "grad": {}, "gradcam": {}, "gradcampp": {}, "gbp": {}, "ggcam": {},
    "ig": {"n_steps": 50},
    "smoothgrad": {"nt_samples": 50},
    "smoothig": {"nt_samples": 20, "n_steps": 20},
    "scorecam": {},
    "xrai": {"n_steps": 100},
    "occlusion": {"window": 16, "stride": 8},
    "kernelshap": {"n_samples": 200, "cell": 16},
    "lime": {"n_samples": 1000},
    "eg": {"n_samples": 50},
    "lrp": {}, "lrp_gamma_box": {"composite": "epsilon_gamma_box"}, "rollout": {}, "chefer": {},
}
METHOD_OF = {"lrp_gamma_box": "lrp"}  # rows of one method with other settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--networks", nargs="+", default=["densenet121", "inception_v3"])
    parser.add_argument("--methods", nargs="+", default=list(DEFAULT_PARAMS))
    parser.add_argument("--size", type=int, nargs="+", default=None,
                        help="image side; default 224 for DenseNet121 and 299 for InceptionV3")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps-scale", type=float, default=1.0,
                        help="multiply every step/sample count (e.g. 0.2 for a quick CPU run)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--peers", nargs="*", default=["library", "monai"], choices=["library", "monai"],
                        help="which peers to time beside ours (none: only ours and the floor)")
    parser.add_argument("--json", default="eval/benchmark_saliency.json")
    args = parser.parse_args()
    keeps_freed_memory = keep_freed_memory()  # as a study does at initialize: ours, the peers and the floor alike
    xrai.KEPT_REGION_BYTES = 0  # every timed XRAI map segments its image, as a study's first map of an image does
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)
    rows = []
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)

    def save() -> None:  # after every row, so an interrupted run keeps what it measured
        out.write_text(json.dumps({"device": str(device), "threads": torch.get_num_threads(),
                                   "batch_size": args.batch_size, "keeps_freed_memory": keeps_freed_memory,
                                   "xrai_kept_region_bytes": xrai.KEPT_REGION_BYTES, "rows": rows}, indent=2))

    for net_name in args.networks:
        sizes = args.size or [224 if net_name in ("densenet121", "vit") else 299]
        for size in sizes:
            model = build_network(net_name, image_size=size).to(device).eval()  # a ViT's size is in its weights
            images = torch.rand(args.batch_size, 1, size, size, device=device)
            batches = tuple(b for b in (8, 16, 32) if b <= max(8, args.batch_size * 4))
            floor = {kind: per_image_seconds(net_name, (1, size, size), kind, batches, args.warmup, device=device)
                     for kind in ("forward", "backward")}
            for name in args.methods:
                params = {k: (max(1, round(v * args.steps_scale)) if k in ("n_steps", "nt_samples", "n_samples") else v)
                          for k, v in DEFAULT_PARAMS[name].items()}
                if name == "kernelshap":  # a scaled count must still determine the fit (cells + intercept)
                    params["n_samples"] = max(params["n_samples"], math.ceil(size / params["cell"]) ** 2 + 2)
                if name in ("gbp", "ggcam") and not has_relu_modules(model):
                    continue
                method = get_method(METHOD_OF.get(name, name), **params,
                                    **({"references": references(images)} if name == "eg" else {}))
                if not method.applies_to(model):  # LRP on CNNs, the attention maps on the ViT
                    continue
                run_ours = lambda: method(model, images, 1)  # noqa: E731
                peers = {key: make(name, params, model, images)
                         for key, make in (("peer", peer), ("monai", monai_peer)) if PEER_FLAGS[key] in args.peers}
                peers = {key: run for key, run in peers.items() if run is not None}
                ours, peak = timed(run_ours, 1, args.repeats)
                peer_seconds = {}
                for key, run_peer in peers.items():  # peers run as their users run them: eval mode, weights trainable
                    # alternate ours and the peer, best of each, so neither gains from the other's warm-up
                    peer_seconds[key] = timed(run_peer, 1, args.repeats)[0]
                    ours = min(ours, timed(run_ours, 0, args.repeats)[0])
                    peer_seconds[key] = min(peer_seconds[key], timed(run_peer, 0, args.repeats)[0])
                passes, kind = pass_count(name, params, model, size, device)
                floor_s = passes * floor[kind] * args.batch_size
                row = {"network": net_name, "size": size, "method": name, "params": params,
                       "maps_per_s": args.batch_size / ours, "seconds": ours, "peak_mb": peak,
                       "floor_seconds": floor_s, "vs_floor": ours / floor_s, "passes_per_image": passes,
                       "pass_kind": kind}
                for key, seconds in peer_seconds.items():
                    row |= {f"{key}_seconds": seconds, f"{key}_over_ours": seconds / ours}
                rows.append(row)
                save()
                print(_format(row), flush=True)
            if "xrai" in args.methods and "library" in args.peers:
                region = xrai_region_step(model, images.cpu(), args.repeats)
                rows.append({"network": net_name, "size": size, "method": "xrai_region_step", **region})
                save()
                print(f"{net_name:<12} {size:>4} xrai region step: ours {region['ours_s_per_image']:.3f} s/img, "
                      f"PAIR {region['pair_s_per_image']:.3f} s/img, {region['speedup']:.1f}x faster", flush=True)
    print(f"wrote {args.json}")


def _format(row: dict) -> str:
    ratio = {key: f"{row[f'{key}_over_ours']:.2f}x" if f"{key}_over_ours" in row else "-" for key in PEER_FLAGS}
    return (f"{row['network']:<12} {row['size']:>4} {row['method']:<11} {row['maps_per_s']:8.2f} maps/s "
            f"{row['peak_mb']:8.0f} MB  vs floor {row['vs_floor']:5.2f}x  peer/ours {ratio['peer']}  "
            f"MONAI/ours {ratio['monai']}")


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
