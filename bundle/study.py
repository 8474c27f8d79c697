"""The evaluation workflow that ``configs/evaluate.json`` runs: models, maps, trust tests, MLflow.

The study makes sure the trained model exists (running ``configs/train.json``
when its checkpoint is missing), then, for every saliency method and baseline,
runs a stock MONAI ``SupervisedEvaluator`` whose inferer returns maps and whose
metric handlers score them. Per-image records are the unit of storage; the
summary table (mean, bootstrap CI, NaN count) is computed from them.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import mlflow
import pandas as pd
import torch
from ignite.handlers import ProgressBar
from monai.engines import SupervisedEvaluator
from monai.engines.utils import PrepareBatch
from monai.handlers import from_engine
from torch import nn
from torch.utils.data import DataLoader

from bundle.handlers import LocalizationScore, PerImageRecords
from bundle.networks import load_checkpoint
from bundle.report import saliency_gallery
from bundle.saliency import SaliencyInferer
from bundle.saliency.cache import MapCache, file_digest
from bundle.tracking import ensure_experiment
from bundle.trust.baselines import mean_mask
from bundle.trust.normalization import normalize_maps
from bundle.trust.stats import bootstrap_summary

logger = logging.getLogger(__name__)


class MaskAsLabel(PrepareBatch):
    """Batch preparation for saliency evaluation: (image, ground-truth mask, image ids for the map cache)."""

    def __init__(self, image_key: str = "image", mask_key: str = "mask", id_key: str = "patient_id") -> None:
        self.image_key, self.mask_key, self.id_key = image_key, mask_key, id_key

    def __call__(self, batchdata, device=None, non_blocking=False, **kwargs):
        image = batchdata[self.image_key].to(device=device, non_blocking=non_blocking)
        mask = batchdata[self.mask_key].to(device=device, non_blocking=non_blocking)
        return image, mask, (), {"image_ids": [str(i) for i in batchdata[self.id_key]]}


def location_prior(dataloader: DataLoader, mask_key: str = "mask") -> torch.Tensor:
    """Average ground-truth mask over a (training-split) dataloader: the location-prior baseline map."""
    total, count = 0.0, 0
    for batch in dataloader:
        masks = batch[mask_key]
        total = total + mean_mask(masks) * masks.shape[0]
        count += masks.shape[0]
    if not count:
        raise ValueError("cannot build a location prior from an empty dataloader")
    return total / count


def ensure_checkpoint(checkpoint: str | Path, train_config: str | Path, overrides: Mapping | None = None) -> Path:
    """Train with ``train_config`` (MONAI bundle ``run``) when ``checkpoint`` does not exist yet."""
    checkpoint = Path(checkpoint)
    if checkpoint.is_file():
        logger.info("using trained model %s", checkpoint)
        return checkpoint
    logger.info("checkpoint %s missing: training with %s", checkpoint, train_config)
    from monai.bundle import run

    run("run", config_file=str(train_config), **dict(overrides or {}))
    if not checkpoint.is_file():
        raise FileNotFoundError(f"{checkpoint}: training finished but wrote no checkpoint here; check ckpt_dir/ckpt_name")
    return checkpoint


def summarise(records: pd.DataFrame, n_resamples: int = 1000, seed: int = 0) -> pd.DataFrame:
    """One row per (model, method, test, step): NaN-skipping mean, 95% bootstrap CI, n and NaN count."""
    rows = []
    for (model, method, test, step), group in records.groupby(["model", "method", "test", "step"], sort=False):
        s = bootstrap_summary(group["value"].to_numpy(), n_resamples=n_resamples, seed=seed)
        rows.append({"model": model, "method": method, "test": test, "step": step, "mean": s.mean,
                     "ci_low": s.ci_low, "ci_high": s.ci_high, "n": s.n, "n_nan": s.n_nan})
    return pd.DataFrame(rows)


class SaliencyStudy:
    """Localisation study of saliency methods on one trained model, logged to one closed MLflow run.

    ``methods`` and ``baselines`` map table names to callables with the saliency
    interface; baselines are scored identically and marked as such in the table.
    """

    def __init__(
        self,
        network: nn.Module,
        checkpoint: str,
        dataloader: DataLoader,
        methods: Mapping[str, object],
        baselines: Mapping[str, object],
        model_name: str,
        output_dir: str,
        tracking_uri: str,
        experiment_name: str,
        run_name: str,
        device: torch.device | str = "cpu",
        scores: Sequence[str] = ("auprc", "ap"),
        normalization: str = "pair",
        target: int = 1,
        params: Mapping | None = None,
        n_resamples: int = 1000,
        seed: int = 0,
        cache_dir: str | None = None,
        gallery_images: int = 4,
    ) -> None:
        if not methods:
            raise ValueError("the study needs at least one saliency method")
        if set(methods) & set(baselines):
            raise ValueError(f"methods and baselines share names {sorted(set(methods) & set(baselines))}")
        self.network, self.checkpoint, self.dataloader = network, checkpoint, dataloader
        self.methods, self.baselines = dict(methods), dict(baselines)
        self.model_name, self.output_dir = model_name, Path(output_dir)
        self.tracking_uri, self.experiment_name, self.run_name = tracking_uri, experiment_name, run_name
        self.device, self.scores, self.normalization, self.target = torch.device(device), scores, normalization, target
        self.params, self.n_resamples, self.seed = dict(params or {}), n_resamples, seed
        self.cache = MapCache(cache_dir) if cache_dir else None
        self.gallery_images = gallery_images
        self.model_digest = ""
        self._inferers: dict[str, SaliencyInferer] = {}

    def _per_image_csv(self) -> Path:
        return self.output_dir / f"{self.run_name}_per_image.csv"

    def _evaluate_method(self, name: str, method) -> list[dict]:
        metrics = {
            score: LocalizationScore(score, self.normalization, output_transform=from_engine(["pred", "label"]))
            for score in self.scores
        }
        key = self.scores[0]
        self._inferers[name] = SaliencyInferer(
            method, self.target, self.cache,
            self.cache.key(self.model_digest, method, self.target, self.params) if self.cache else None,
        )
        evaluator = SupervisedEvaluator(
            device=self.device,
            val_data_loader=self.dataloader,
            network=self.network,
            prepare_batch=MaskAsLabel(),
            inferer=self._inferers[name],
            key_val_metric={key: metrics[key]},
            additional_metrics={k: v for k, v in metrics.items() if k != key},
            decollate=False,
        )
        ProgressBar(desc=f"saliency {name}", persist=False).attach(evaluator)
        recorder = PerImageRecords(self.model_name, name)
        recorder.attach(evaluator)
        evaluator.run()
        return recorder.records

    def run(self) -> pd.DataFrame:
        """Compute every method's and baseline's maps, score them, print and log the summary; return it."""
        load_checkpoint(self.network, self.checkpoint, map_location=self.device)
        self.model_digest = file_digest(self.checkpoint)
        self.network.to(self.device).eval()
        self.output_dir.mkdir(parents=True, exist_ok=True)
        records = []
        for name, method in {**self.methods, **self.baselines}.items():
            logger.info("scoring %s: %r", name, method)
            records += self._evaluate_method(name, method)
            pd.DataFrame(records).to_csv(self._per_image_csv(), index=False)  # finished work survives a later failure
        per_image = pd.DataFrame(records)
        summary = summarise(per_image, self.n_resamples, self.seed)
        summary.insert(2, "kind", ["baseline" if m in self.baselines else "method" for m in summary["method"]])
        self._save_and_log(summary, self._gallery())
        return summary

    def _gallery(self) -> Path | None:
        """Every method's and baseline's maps of the first images, side by side (cached maps: no recomputation)."""
        if self.gallery_images < 1:
            return None
        image, mask, _, kwargs = MaskAsLabel()(next(iter(self.dataloader)), self.device)
        n = min(self.gallery_images, image.shape[0])
        ids = kwargs["image_ids"][:n]
        maps = {name: normalize_maps(inferer(image[:n], self.network, image_ids=ids), "pair")[0].cpu().numpy()
                for name, inferer in self._inferers.items()}  # displayed as PAIR's VisualizeImageGrayscale does
        return saliency_gallery(image[:n, 0].cpu().numpy(), mask[:n, 0].cpu().numpy(), maps, ids,
                                self.output_dir / f"{self.run_name}_maps.png")

    def _save_and_log(self, summary: pd.DataFrame, gallery: Path | None = None) -> None:
        per_image_csv = self._per_image_csv()
        summary_csv = self.output_dir / f"{self.run_name}_summary.csv"
        summary.to_csv(summary_csv, index=False)
        table = format_summary(summary, self.normalization)
        print(table, flush=True)

        experiment_id = ensure_experiment(self.tracking_uri, self.experiment_name, self.output_dir)
        mlflow.set_tracking_uri(self.tracking_uri)
        with mlflow.start_run(experiment_id=experiment_id, run_name=self.run_name):
            mlflow.log_params({
                **{k: str(v) for k, v in self.params.items()},
                "model": self.model_name, "checkpoint": str(self.checkpoint), "normalization": self.normalization,
                "target": self.target, "bootstrap_resamples": self.n_resamples,
                **{f"method.{k}": repr(v) for k, v in {**self.methods, **self.baselines}.items()},
            })
            for row in summary.itertuples(index=False):
                prefix = f"{row.method}.{row.test}"
                values = {f"{prefix}": row.mean, f"{prefix}.ci_low": row.ci_low, f"{prefix}.ci_high": row.ci_high,
                          f"{prefix}.n": row.n, f"{prefix}.n_nan": row.n_nan}
                mlflow.log_metrics({k: float(v) for k, v in values.items() if pd.notna(v)})
            mlflow.log_artifact(str(per_image_csv))
            mlflow.log_artifact(str(summary_csv))
            if gallery is not None:
                mlflow.log_artifact(str(gallery))
            mlflow.log_text(table, "summary.txt")
        logger.info("per-image records: %s; summary: %s", per_image_csv, summary_csv)


def format_summary(summary: pd.DataFrame, normalization: str) -> str:
    """The printed table: one line per method and test, mean [95% CI], n, NaN count."""
    lines = [f"Localisation (maps normalised '{normalization}'; mean [95% bootstrap CI] over images)"]
    header = f"{'method':<10} {'kind':<9} {'test':<6} {'mean':>7}  {'95% CI':<17} {'n':>4} {'NaN':>4}"
    lines += [header, "-" * len(header)]
    for r in summary.itertuples(index=False):
        ci = f"[{r.ci_low:.3f}, {r.ci_high:.3f}]"
        lines.append(f"{r.method:<10} {r.kind:<9} {r.test:<6} {r.mean:>7.3f}  {ci:<17} {r.n:>4} {r.n_nan:>4}")
    return "\n".join(lines)
