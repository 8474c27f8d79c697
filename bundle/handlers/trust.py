"""Trust of the model's saliency maps while it trains: an Ignite handler on the validator, every N epochs.

Quantus, captum and the studies' code evaluate one finished model; this handler shows, epoch by
epoch, whether the explanations of the model being trained get better or worse. It computes the
configured methods' maps of a fixed saliency set (positive validation images with their lesion
masks) with the study's own map code and trust functions, and puts the means in
``engine.state.metrics``, where MONAI's ``MLFlowHandler`` and ``StatsHandler`` find them (the
epoch is the MLflow step). It never changes training: the model's mode, its weights and every
random generator are as they were when it returns.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from ignite.engine import Engine, Events
from monai.utils import look_up_option
from torch import nn

from bundle.criteria.base import Record, records_for
from bundle.criteria.localization import Localization
from bundle.networks import randomisation_blocks_of
from bundle.records import RecordWriter
from bundle.report import epoch_trust_curves, saliency_gallery
from bundle.trust.normalization import normalize_maps
from bundle.trust.randomization import WeightRandomization
from bundle.switches import config_bool
from bundle.trust.similarity import ssim
from bundle.trust.stats import bootstrap_summary

logger = logging.getLogger(__name__)

# metric name -> (criterion, metric) of its MLflow key ``criterion/metric/method``
EPOCH_TRUST_METRICS: dict[str, tuple[str, str]] = {
    "auprc": ("localization", "auprc"),
    "hit": ("localization", "hit"),
    "ssim_to_previous": ("map_drift", "ssim"),  # SSIM to the maps of the previous evaluation
    "randomization_ssim": ("logits_randomization", "ssim"),  # SSIM to the maps with the logits layer re-initialised
}
SECONDS_KEY = "epoch_trust/seconds"


@contextmanager
def training_state_kept(model: nn.Module) -> Iterator[None]:
    """Python's, NumPy's and torch's (CPU and CUDA) random generators and the model's train/eval mode, as they
    were on entry, on exit: whatever runs inside cannot shift the training run's random draws."""
    python_state, numpy_state = random.getstate(), np.random.get_state()
    cuda = sorted({p.device.index or 0 for p in model.parameters() if p.device.type == "cuda"})
    training = model.training
    try:
        with torch.random.fork_rng(devices=cuda):
            yield
    finally:
        model.train(training)
        random.setstate(python_state)
        np.random.set_state(numpy_state)


class EpochTrust:
    """Saliency trust of the model being trained, every ``interval`` validations.

    Per method and image: localisation AUPRC and hit against the lesion mask, SSIM to the maps of the
    previous evaluation (how much the explanation still moves), and SSIM to the maps of the same model
    with its logits layer re-initialised (the first cascading-randomisation step: a map that keeps SSIM
    near 1 ignores what the model learnt). Means land in ``engine.state.metrics`` as
    ``localization/auprc/<method>``, ``localization/hit/<method>``, ``map_drift/ssim/<method>``,
    ``logits_randomization/ssim/<method>`` and the evaluation's cost as ``epoch_trust/seconds``. Under
    ``folder``: the per-image records (``epoch_trust_records.csv``, step ``epoch:<n>``), an overlay figure
    per evaluation (``epoch_<n>_maps.png``) and the per-epoch curves with 95 % bootstrap intervals
    (``epoch_trust_curves.png``); give the validator's ``MLFlowHandler`` the folder as ``artifacts``.

    Args:
        network: the network being trained (the validator's).
        dataloader: the saliency set: batches with ``image``, ``mask`` and ``id_key`` (a fixed, seeded set of
            positive validation images), read once.
        methods: saliency methods by table name (``bundle.saliency.get_method``).
        metrics: a subset of :data:`EPOCH_TRUST_METRICS`.
        interval: evaluate at every ``interval``-th validation epoch.
        enabled: ``False`` attaches nothing (a config switch).
        target: the class the maps explain.
        normalization: map normalisation before scoring and SSIM, as the study's criteria: ``pair`` (default),
            ``minmax``, ``sum_to_one``.
        data_range: SSIM's data range, 1.0 for the normalised maps in [0, 1] (as the study's criteria).
        randomization_seed: seeds the logits layer's re-initialisation.
        folder: where records and figures go (nothing is written when ``None``).
        model_name: the records' model column.
        figure_images: images in each overlay figure.
        n_resamples: bootstrap resamples of the curves' intervals.
        id_key: the batch key of each image's id, the records' ``image_id`` column.
    """

    def __init__(
        self, network: nn.Module, dataloader, methods: Mapping[str, object],
        metrics: Sequence[str] = tuple(EPOCH_TRUST_METRICS), interval: int = 1, enabled: bool = True, target: int = 1,
        normalization: str = "pair", data_range: float = 1.0, randomization_seed: int = 0,
        folder: str | Path | None = None, model_name: str = "model", figure_images: int = 4,
        n_resamples: int = 1000, id_key: str = "image_id",
    ) -> None:
        if interval < 1:
            raise ValueError(f"interval must be at least 1, got {interval}")
        self.enabled = config_bool(enabled, "enabled")
        if self.enabled and not methods:
            raise ValueError("the per-epoch trust handler needs at least one saliency method")
        self.network, self.dataloader, self.methods = network, dataloader, dict(methods)
        self.metrics = [look_up_option(m, tuple(EPOCH_TRUST_METRICS)) for m in metrics]
        self.interval, self.target = interval, target
        self.normalization, self.data_range, self.randomization_seed = normalization, data_range, randomization_seed
        self.folder = Path(folder) if folder is not None else None
        self.model_name, self.figure_images, self.n_resamples, self.id_key = (
            model_name, figure_images, n_resamples, id_key)
        self._batches: list[tuple[torch.Tensor, torch.Tensor, list[str]]] | None = None
        self._previous: dict[str, torch.Tensor] = {}
        self._writer: RecordWriter | None = None
        self._summary: list[dict] = []
        wanted = [m for m in self.metrics if EPOCH_TRUST_METRICS[m][0] == "localization"]
        # the study's own localisation criterion scores the maps, so an epoch's AUPRC is the study's AUPRC
        self._localization = Localization(metrics=wanted, normalization=normalization,
                                          verdict_metric=wanted[0]) if wanted else None

    def attach(self, engine: Engine) -> None:
        if self.enabled:
            engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def keys(self) -> list[str]:
        """The ``engine.state.metrics`` keys this handler sets."""
        return [k for m in self.metrics for name in self.methods for k in (self.key(m, name), f"{self.key(m, name)}/n")
                ] + [SECONDS_KEY]

    def key(self, metric: str, method: str) -> str:
        criterion, name = EPOCH_TRUST_METRICS[metric]
        return f"{criterion}/{name}/{method}"

    def __call__(self, engine: Engine) -> None:
        for key in self.keys():  # a validation without an evaluation must not re-log the last one's values
            engine.state.metrics.pop(key, None)
        epoch = engine.state.epoch
        if epoch % self.interval:
            return
        start = time.perf_counter()
        with training_state_kept(self.network):
            records = self.evaluate(epoch)
        means = self._summarise(records, epoch)
        self.curves()
        seconds = time.perf_counter() - start  # maps, scores, records and figures
        engine.state.metrics.update({**means, SECONDS_KEY: seconds})
        logger.info("epoch %d trust of %s (%.1f s): %s", epoch, ", ".join(self.methods), seconds,
                    ", ".join(f"{k} {v:.3f}" for k, v in means.items() if not k.endswith("/n")))

    def _saliency_set(self) -> list[tuple[torch.Tensor, torch.Tensor, list[str]]]:
        if self._batches is None:
            device = next(self.network.parameters()).device
            self._batches = [(batch["image"].to(device), batch["mask"].to(device), [str(i) for i in batch[self.id_key]])
                             for batch in self.dataloader]
            if not self._batches:
                raise ValueError("the per-epoch trust handler's saliency set has no images")
        return self._batches

    def evaluate(self, epoch: int) -> list[Record]:
        """Every configured metric of every method on the saliency set, as records of step ``epoch:<n>``."""
        step, records, units, shown = f"epoch:{epoch}", [], {}, {}
        batches = self._saliency_set()
        for name, method in self.methods.items():
            signed = bool(getattr(method, "signed", True))
            fields = {"model": self.model_name, "method": name, "step": step}
            maps = [method(self.network, images, self.target) for images, _, _ in batches]
            units[name] = torch.cat([normalize_maps(m, self.normalization, signed)[0] for m in maps]).cpu()
            shown[name] = normalize_maps(maps[0], "pair", signed)[0].cpu()
            for (_, masks, ids), m in zip(batches, maps):
                records += self._localization.score(m, masks, ids, signed, **fields) if self._localization else []
            ids = [i for _, _, batch_ids in batches for i in batch_ids]
            if "ssim_to_previous" in self.metrics and name in self._previous:
                records += records_for(ids, ssim(self._previous[name], units[name], self.data_range).tolist(),
                                       criterion="map_drift", metric="ssim", **fields)
        if "randomization_ssim" in self.metrics:
            records += self._randomization(batches, units, step)
        self._previous = units
        self._write(records, epoch, batches[0], shown)
        return records

    def _randomization(self, batches, units: Mapping[str, torch.Tensor], step: str) -> list[Record]:
        """SSIM of each method's maps to its maps with the logits layer re-initialised (weights restored after)."""
        block = randomisation_blocks_of(self.network)[0]
        randomization = WeightRandomization(self.network, [block], "cascading", self.randomization_seed)
        ids = [i for _, _, batch_ids in batches for i in batch_ids]
        records = []
        with randomization.randomized(block[0]) as randomized:
            for name, method in self.methods.items():
                signed = bool(getattr(method, "signed", True))
                maps = torch.cat([normalize_maps(method(randomized, images, self.target), self.normalization,
                                                 signed)[0] for images, _, _ in batches]).cpu()
                records += records_for(ids, ssim(units[name], maps, self.data_range).tolist(), model=self.model_name,
                                       method=name, criterion="logits_randomization", metric="ssim", step=step)
        return records

    def _summarise(self, records: list[Record], epoch: int) -> dict[str, float]:
        """Mean of each (criterion, metric, method) over the images that define it and their number (``.../n``), for
        the engine's metrics; a mean no image defines is left out, its ``/n`` is 0."""
        means = {}
        frame = pd.DataFrame(records)
        for (criterion, metric, method), group in frame.groupby(["criterion", "metric", "method"], sort=False):
            s = bootstrap_summary(group.value.to_numpy(), self.n_resamples)
            self._summary.append({"epoch": epoch, "criterion": criterion, "metric": metric, "method": method,
                                  "mean": s.mean, "ci_low": s.ci_low, "ci_high": s.ci_high, "n": s.n})
            key = f"{criterion}/{metric}/{method}"
            means[f"{key}/n"] = float(s.n)  # images that define it (a constant map defines no hit): never silent
            if np.isfinite(s.mean):
                means[key] = s.mean
        return means

    def _write(self, records: list[Record], epoch: int, first_batch, shown: Mapping[str, torch.Tensor]) -> None:
        if self.folder is None:
            return
        if self._writer is None:
            self._writer = RecordWriter(self.folder / "epoch_trust_records.csv")
        self._writer.add(records)
        images, masks, ids = first_batch
        k = min(self.figure_images, len(ids))
        if k:
            saliency_gallery(images[:k, 0].cpu().numpy(), masks[:k, 0].cpu().numpy(),
                             {n: m[:k].numpy() for n, m in shown.items()}, ids[:k],
                             self.folder / f"epoch_{epoch:03d}_maps.png")

    def curves(self) -> Path | None:
        """Draw the per-epoch curves of every evaluation so far (also done after each one)."""
        if self.folder is None or not self._summary:
            return None
        return epoch_trust_curves(pd.DataFrame(self._summary), self.folder / "epoch_trust_curves.png")


def latest_epoch_trust_curves(output_dir: str | Path, model_name: str) -> Path | None:
    """The per-epoch curves of the newest training of ``model_name`` under ``output_dir`` that ran with the handler
    (its folder's records name the model), or ``None``."""
    found = []
    for records in Path(output_dir).glob("*_epoch_trust/epoch_trust_records.csv"):
        curves = records.parent / "epoch_trust_curves.png"
        models = pd.read_csv(records, usecols=["model"], nrows=1).model
        if curves.is_file() and len(models) and models.iloc[0] == model_name:
            found.append(curves)
    return max(found, key=lambda p: p.stat().st_mtime) if found else None
