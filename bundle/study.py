"""The evaluation workflow that ``configs/evaluate.json`` runs: models, maps, criteria, summary, outputs.

The study only orchestrates: it makes sure every model the criteria need is
trained, hands the criteria a :class:`~bundle.criteria.StudyContext`, writes their
per-image records to disk as they come, summarises the records (means, bootstrap
CIs, paired tests Holm-adjusted across the grid), asks each criterion for its
verdicts, and hands everything to the report, the figures and MLflow.
"""

from __future__ import annotations

import contextlib
import json
import logging
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, replace
from pathlib import Path

import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader

from bundle import distributed
from bundle.calibration import controls_now
from bundle.console import StudyProgress
from bundle.criteria import Criterion, Record, StudyContext
from bundle.criteria.agreement import SECOND_READER
from bundle.data.screening import data_issue_counts
from bundle.errors import brief
from bundle.handlers.trust import latest_epoch_trust_curves
from bundle.models import ModelSpec, ensure_trained
from bundle.networks import build_network, load_checkpoint
from bundle.passes import PassCounter, counting, floor_seconds
from bundle.records import RecordWriter, merge_shares
from bundle.result import StudyResult
from bundle.report import FIGURES, agreement_scatter, format_report, saliency_gallery, write_html_report
from bundle.saliency.cache import MapCache, file_digest
from bundle.verdicts import (
    REPLICATE, apply_calibration, calibration_status, judge, latest_calibration, replicate_agreement, verdict_stability,
)
from bundle.mirror import mirror_or_explain
from bundle.tracking import calibration_metrics, check_store, export_executed_config, log_study, unique_run_name
from bundle.trust.normalization import normalize_maps

logger = logging.getLogger(__name__)
# the report times a kind's larger batches only within this many seconds each: the default study's floor timing took
# 61 s, most of it DenseNet121's second-order pass at batches of 16 and 32, slower per image than 8 on a CPU
FLOOR_BUDGET_S = 5.0

# what each criterion figure shows, for the HTML report
FIGURE_CAPTIONS = {
    "randomization_curves": "mean SSIM of the changed model's maps to the trained model's per step (95% CI band), "
                            "one line per model, the unrelated-pairs baseline dashed",
    "pic_curves": "median SIC and AIC curves per method (95% bootstrap band), the random map dashed, the oracle dotted",
    "psc_scatter": "JSD of the prediction against JSD of the map per attacked image, per attack",
}


class SaliencyStudy:
    """Every configured criterion on every configured map source for one trained model, logged to one MLflow run.

    Args:
        network: the configured network (``network_def``) of the model under study.
        model: the model under study, ``{"architecture": ..., "seed": ...}`` (its checkpoint is
            ``<ckpt_dir>/<architecture>_seed<seed>.pt``, trained with ``train_config`` when missing).
        dataloader: the study's images (batches with ``image``, ``mask`` and ``id_key``).
        methods: the saliency methods under study, by table name (at least one).
        baselines: map sources by table name that a method must beat (e.g. the random, edge and prior maps).
        criteria: the trust criteria by name (``bundle.criteria``).
        output_dir: where records, summaries, verdicts, the report and figures are written (and where the newest
            ``run calibrate`` is read from).
        tracking_uri: the local MLflow store every run is logged to first (a SQLite file next to the results).
        experiment_name: the MLflow experiment of the study's run (the configs': ``saliency_trust_<dataset_name>``).
        run_name: the study's MLflow run name, also the prefix of every file it writes in ``output_dir``.
        ckpt_dir: the folder of the models' checkpoints, where missing ones are trained to.
        train_config: the bundle training config that trains a missing model (``None``: nothing can be trained,
            and a criterion needing a model without a checkpoint is skipped, saying why).
        train_overrides: config overrides for every training the study starts (none when ``None``).
        references: map sources by table name that show each score's ceiling (the oracle; none when ``None``).
        device: where models run and maps are computed.
        target: the class the maps explain and the AUC is computed for (1: the finding present).
        params: settings of the data pipeline that change a number (logged, and part of map-cache keys).
        n_resamples: bootstrap resamples behind every confidence interval of the summary and the comparisons.
        seed: seeds the bootstrap resamples (of the intervals and of the verdicts' stability).
        cache_dir: the on-disk map cache, so a rerun reuses every map (``None``: a temporary one in ``output_dir``,
            removed at the end, so a map is still computed once per run).
        gallery_images: images in the figure of every source's maps (0: no such figure).
        id_key: the batch key of each image's id, unique among the study's images (the records' ``image_id``).
        auc_dataloader: labelled images of both classes (the validation split) on which every model the
            criteria use gets its classification AUC, printed beside the verdicts (agreement only means
            something between models of similar accuracy; a label-permuted model should be near 0.5).
        mirror_uri: a tracking server the study's runs are copied to at the end (``bundle.mirror``); when it
            cannot be reached, one line says how to log them later. ``None`` or ``tracking_uri``: no copy.
        stability_resamples: bootstrap resamples of the images behind each verdict's stability (0: none).
        image_settings: per criterion, the config id of its number of images (``["saliency", "psc_images"]``), so
            the report can say the override that would decide an INCONCLUSIVE.
        replicate: run the criteria again with the next seed's model as the model under study and report whether
            the two replicates' verdicts agree (criteria whose other models were not trained are named, not run).
        floor_batches: the batch sizes the report's floor times each kind of pass at (its best per-image time of
            them), a batch after the first only where its timing takes at most :data:`FLOOR_BUDGET_S` seconds;
            ``scripts/benchmark_study.py`` times every one of 8, 16 and 32.
    """

    def __init__(
        self,
        network: nn.Module,
        model: Mapping,
        dataloader: DataLoader,
        methods: Mapping[str, object],
        baselines: Mapping[str, object],
        criteria: Mapping[str, Criterion],
        output_dir: str,
        tracking_uri: str,
        experiment_name: str,
        run_name: str,
        ckpt_dir: str,
        train_config: str | None = None,
        train_overrides: Mapping | None = None,
        references: Mapping[str, object] | None = None,
        device: torch.device | str = "cpu",
        target: int = 1,
        params: Mapping | None = None,
        n_resamples: int = 1000,
        seed: int = 0,
        cache_dir: str | None = None,
        gallery_images: int = 4,
        id_key: str = "image_id",
        auc_dataloader: DataLoader | None = None,
        mirror_uri: str | None = None,
        stability_resamples: int = 200,
        image_settings: Mapping[str, Sequence[str]] | None = None,
        replicate: bool = False,
        floor_batches: Sequence[int] = (8, 16, 32),
    ) -> None:
        sources = {"method": dict(methods), "baseline": dict(baselines), "reference": dict(references or {})}
        names = [n for group in sources.values() for n in group]
        if not methods:
            raise ValueError("the study needs at least one saliency method")
        if len(set(names)) != len(names):
            raise ValueError(f"methods, baselines and references share names: {sorted(names)}")
        if not criteria:
            raise ValueError("the study needs at least one criterion")
        self.network, self.primary, self.dataloader = network, ModelSpec(**model), dataloader
        self.sources = {n: s for group in sources.values() for n, s in group.items()}
        self.kinds = {n: kind for kind, group in sources.items() for n in group}
        self.criteria = dict(criteria)
        self.output_dir, self.ckpt_dir = Path(output_dir), Path(ckpt_dir)
        self.tracking_uri, self.experiment_name, self.run_name = tracking_uri, experiment_name, run_name
        self.train_config, self.train_overrides = train_config, dict(train_overrides or {})
        self.device, self.target, self.params = torch.device(device), target, dict(params or {})
        finding = self._finding()
        if finding:  # a multi-label dataset's finding: in the title, the tags and the map-cache keys
            self.params["finding"] = finding
        self.n_resamples, self.seed, self.gallery_images, self.id_key = n_resamples, seed, gallery_images, id_key
        self.stability_resamples, self.replicate, self._replicate = stability_resamples, replicate, None
        self.floor_batches = tuple(floor_batches)
        self.image_settings = {k: "#".join(v) if not isinstance(v, str) else v for k, v in (image_settings or {}).items()}
        self.cache = MapCache(cache_dir) if cache_dir else None
        self.auc_dataloader = auc_dataloader
        self.mirror_uri, self._trained_runs, self._checked = mirror_uri, [], {}
        self._progress = StudyProgress()  # its stages' lines; run() adds the bar over them
        self.required_models()  # a criterion whose models cannot be named fails here, before any training

    def _finding(self) -> str | None:
        """The finding the study's images were read for (the ``finding`` of a multi-label dataset's items)."""
        items = getattr(getattr(self.dataloader, "dataset", None), "data", None)
        return items[0].get("finding") if items and isinstance(items[0], Mapping) else None

    def _load_model(self, spec: ModelSpec) -> nn.Module:
        """The trained network of ``spec``: the one :meth:`_ensure_models` loaded to check its checkpoint, else
        loaded now (each checkpoint is read once per study)."""
        if spec in self._checked:
            return self._checked.pop(spec)
        network = (self.network if spec == self.primary
                   else build_network(spec.architecture, image_size=self.train_overrides.get("image_size", 128)))
        return load_checkpoint(network, str(spec.checkpoint(self.ckpt_dir)), map_location=self.device)

    def required_models(self) -> list[ModelSpec]:
        """Every trained model the configured criteria need, the model under study first (no duplicates)."""
        return list(dict.fromkeys([self.primary] + [spec for c in self.criteria.values()
                                                     for spec in c.models(self.primary)]))

    def _skip_untrainable_criteria(self) -> list[dict]:
        """Without a ``train_config`` (a user's model whose training the bundle cannot run), leave out each criterion
        that needs a model with no checkpoint (another seed, permuted labels), saying which and why."""
        if self.train_config is not None:
            return []
        skipped = []
        for name, criterion in list(self.criteria.items()):
            missing = [s.name for s in criterion.models(self.primary)
                       if s != self.primary and not s.checkpoint(self.ckpt_dir).is_file()]
            if missing:
                reason = (f"skipped: it needs {', '.join(missing)}, which has no checkpoint in {self.ckpt_dir}, and "
                          "there is no train_config to train it")
                logger.warning("%s: %s", name, reason)
                skipped.append({"criterion": name, "method": "all", "error": reason, "kind": "criterion"})
                del self.criteria[name]
        return skipped

    def _ensure_models(self) -> list[ModelSpec]:
        """Train the missing models, each as an MLflow run that becomes a child of this study's run (a model already
        trained has no run of that name, so nothing is nested for it)."""
        specs = self.required_models()
        for spec in specs:  # a damaged checkpoint stops the study before any model is trained
            if spec.checkpoint(self.ckpt_dir).is_file():
                self._checked[spec] = self._load_model(spec)
        for spec in specs:
            self._trained_runs.append(unique_run_name("train", spec.name))
            if spec.checkpoint(self.ckpt_dir).is_file():
                ensure_trained(spec, self.ckpt_dir, self.train_config, self.train_overrides)
                continue
            with self._progress.stage(f"training {spec.name}"):
                ensure_trained(spec, self.ckpt_dir, self.train_config, self.train_overrides, self._trained_runs[-1])
        return specs

    def _model_aucs(self, ctx: StudyContext, specs: list[ModelSpec]) -> dict[str, float]:
        """Each model's ROC AUC for the target class on ``auc_dataloader`` (true labels)."""
        if self.auc_dataloader is None:
            return {}
        from monai.metrics import compute_roc_auc

        aucs = {}
        for spec in specs:
            model, scores, labels = ctx.model(spec), [], []
            with torch.no_grad():
                for batch in self.auc_dataloader:
                    scores.append(torch.softmax(model(batch["image"].to(self.device)), dim=1)[:, self.target].cpu())
                    labels.append(torch.as_tensor(batch["label"]).reshape(-1) == self.target)
            aucs[spec.name] = float(compute_roc_auc(torch.cat(scores), torch.cat(labels).float()))
            logger.info("model %s: AUC %.3f on %d labelled images", spec.name, aucs[spec.name], len(torch.cat(labels)))
        return aucs

    def context(self) -> StudyContext:
        return StudyContext(
            primary=self.primary, load_model=self._load_model,
            checkpoint_digest=lambda spec: file_digest(spec.checkpoint(self.ckpt_dir)),
            dataloader=self.dataloader, sources=self.sources, kinds=self.kinds, target=self.target,
            device=self.device, cache=self.cache, cache_context=self.params, id_key=self.id_key,
            rank=distributed.rank(), world_size=distributed.world_size(),
        )

    def run(self) -> StudyResult | None:
        """Train what is missing, run every criterion, print and save the report, log to MLflow; return the result.

        Under ``torchrun`` (``configs/multi_gpu_evaluate.json``) every process scores its share of the batches
        (:meth:`StudyContext.batches`) and rank 0 trains the missing models first, then merges the records,
        reports and logs once; the other ranks return ``None``."""
        start, passes = time.perf_counter(), PassCounter()
        with counting(passes), self._map_cache_for_this_run():
            return self._run(passes, start)

    @contextlib.contextmanager
    def _map_cache_for_this_run(self):
        """Without ``cache_dir``, a temporary map cache in ``output_dir`` for this run, removed at its end: the
        criteria share each map and a criterion's baseline across images reuses its per-image maps (before, 1,212
        images of the quick study went through the networks again)."""
        if self.cache is not None:
            yield
            return
        self.output_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="map_cache_", dir=self.output_dir) as folder:
            self.cache = MapCache(folder)
            try:
                yield
            finally:
                self.cache = None

    def _run(self, passes: PassCounter, start: float) -> StudyResult | None:
        """:meth:`run` with its network passes counted from ``start``."""
        if distributed.is_main():
            check_store(self.tracking_uri)
        missing = [s for s in self.required_models() if not s.checkpoint(self.ckpt_dir).is_file()]
        self._progress = StudyProgress(len(missing) * distributed.is_main() + len(self.criteria) * (1 + self.replicate)
                                       + 1)
        skipped = (self._skip_sources_of_other_dimensions() + self._skip_sources_not_defined_on_the_model()
                   + self._skip_untrainable_criteria())
        with distributed.main_process_first("training the missing models"):  # rank 0 trains, the others find them
            specs = self._ensure_models()
        ctx = self.context()
        ctx.failures.extend(skipped)
        n_images = self._check_image_ids(ctx)
        gathered = distributed.gather_to_main(self._score(ctx, self.criteria), "gathering the records")
        replica, replicated, not_replicated = self._replica(ctx)
        replica_shares = distributed.gather_to_main(self._score(replica, replicated, REPLICATE),
                                                    "gathering the replicate's records") if replica else None
        if gathered is None:
            return None
        records, seconds = self._merge(ctx, gathered, self.criteria)
        aucs = self._model_aucs(ctx, specs)
        kinds = {**self.kinds, SECOND_READER: "reference"}  # the second reader's agreement is a reference row
        judged = judge(self.criteria, records, kinds, self.n_resamples, self.seed)
        summary, comparisons, verdicts = judged.summary, judged.comparisons, judged.verdicts
        verdicts = self._trust_in_verdicts(records, kinds, verdicts)
        if self.replicate:  # judged and marked by the same calibration as the study's own verdicts
            again = judge(replicated, self._merge(replica, replica_shares, replicated, REPLICATE)[0], kinds,
                          self.n_resamples, self.seed).verdicts if replica is not None else verdicts.iloc[:0]
            again = apply_calibration(again, self._calibration["status"])
            self._replicate = replicate_agreement(verdicts, again, f"{self.primary.architecture}_seed"
                                                  f"{self.primary.seed + 1}", not_replicated)
        verdicts = pd.concat([verdicts, pd.DataFrame(
            [{**f, "verdict": "INCONCLUSIVE", "rule": f"not scored: {f['error']}"} for f in ctx.failures
             if self.kinds.get(f["method"], f.get("kind", "method")) == "method"],  # baselines, references: none
            columns=verdicts.columns)], ignore_index=True)
        verdicts["calibrated"] = verdicts.criterion.map(lambda c: self._calibration["status"].get(c, {}).get(
            "calibrated"))  # the sources not scored too
        result = StudyResult(
            title=self._title(n_images), summary=summary, verdicts=verdicts, order=[*self.sources, SECOND_READER],
            kinds=kinds, headlines={n: c.headline for n, c in self.criteria.items()},
            notes={n: repr(c) for n, c in self.criteria.items()}, records=records, comparisons=comparisons,
            failures=ctx.failures, aucs=aucs, seconds=seconds, tabled={n: c.tabled for n, c in self.criteria.items()},
            data_issues=data_issue_counts(getattr(getattr(self.dataloader, "dataset", None), "data", None)),
            timing=self._time_against_floor(passes, start),
            trust={**self._calibration, "stability_resamples": self.stability_resamples,
                   "image_settings": self.image_settings, "replicate": self._replicate, "study_images": n_images},
            replicate=self._replicate)
        report = format_report(result)
        print(report, flush=True)
        with self._progress.stage("outputs (records, figures, report, MLflow)"):
            self._save_and_log(ctx, result, report)
        self._progress.close()
        return result

    def _time_against_floor(self, passes: PassCounter, start: float) -> dict | None:
        """The study's time so far beside the floor of the passes it made (their images at this machine's best
        per-image time of each kind, timed now at ``floor_batches`` within :data:`FLOOR_BUDGET_S` a batch, uncounted);
        ``None`` under ``torchrun``, where each process counts only its own passes."""
        if distributed.active() or not passes.images:
            return None
        measured = time.perf_counter() - start
        passes.paused, timing_start = True, time.perf_counter()
        floor, per_image = floor_seconds(passes, batches=self.floor_batches, warmup=1, repeats=2,
                                         device=self.device, budget_s=FLOOR_BUDGET_S)
        logger.info("the floor's per-image pass times, measured in %.1f s", time.perf_counter() - timing_start)
        return {"measured_s": measured, "floor_s": floor, "images": passes.totals(), "per_image_s": per_image,
                "batches": self.floor_batches, "budget_s": FLOOR_BUDGET_S, "work_s": passes.work_totals()}

    def _trust_in_verdicts(self, records: pd.DataFrame, kinds: Mapping[str, str], verdicts: pd.DataFrame) -> pd.DataFrame:
        """Each verdict's stability (the share of bootstrap resamples of the images that give it again, from the
        records alone) and its criterion's calibration, read from the newest ``run calibrate`` in the output folder:
        a criterion that failed its calibration has its verdicts made INCONCLUSIVE by rule."""
        if self.stability_resamples > 0:
            start = time.perf_counter()
            verdicts = verdicts.merge(verdict_stability(self.criteria, records, kinds, verdicts,
                                                        self.stability_resamples, self.seed, self.n_resamples),
                                      on=["criterion", "method"], how="left")
            logger.info("verdict stability: %d bootstrap resamples of the images in %.1f s", self.stability_resamples,
                        time.perf_counter() - start)
        calibration, path = latest_calibration(self.output_dir)
        status = calibration_status(calibration, self.criteria, self.params,
                                    None if calibration is None else controls_now(calibration))
        self._calibration = {"record": calibration, "file": path, "status": status}
        return apply_calibration(verdicts, status)

    def _replica(self, ctx: StudyContext) -> tuple[StudyContext | None, dict[str, Criterion], dict[str, str]]:
        """With ``replicate``: the context with the next seed's model (trained for repeatability) as the model under
        study, the criteria whose models are all trained, and why each other criterion is not replicated."""
        if not self.replicate:
            return None, {}, {}
        spec = ModelSpec(self.primary.architecture, self.primary.seed + 1)
        runnable, skipped = {}, {}
        for name, criterion in self.criteria.items():
            try:
                missing = [s.name for s in criterion.models(spec) if not s.checkpoint(self.ckpt_dir).is_file()]
            except ValueError as error:  # e.g. repeatability's second model is that seed's model itself
                skipped[name] = str(error)
                continue
            if missing:
                skipped[name] = f"needs {', '.join(missing)}, which the study did not train"
            else:
                runnable[name] = criterion
        if not spec.checkpoint(self.ckpt_dir).is_file():
            return None, {}, {name: f"no {spec.name} was trained (add repeatability)" for name in self.criteria}
        return replace(ctx, primary=spec, failures=[]), runnable, skipped

    def _records_path(self, rank: int = 0, tag: str = "") -> Path:
        return self.output_dir / f"{self.run_name}{tag}_records{f'.rank{rank}' if rank else ''}.csv"

    def _score(self, ctx: StudyContext, criteria: Mapping[str, Criterion],
               tag: str = "") -> tuple[list[dict], list[dict], dict[str, float]]:
        """Every criterion on this process's batches: its records (also appended to disk as they come, so work
        survives a crash), its failures, and each criterion's seconds."""
        writer, seconds = RecordWriter(self._records_path(ctx.rank, tag)), {}
        for name, criterion in criteria.items():
            logger.debug("criterion %s: %r", name, criterion)
            start = time.perf_counter()
            with self._progress.stage(f"criterion {name}" + (" of the replicate" if tag else "")):
                for records in criterion.evaluate(ctx):
                    writer.add(records)
            seconds[name] = time.perf_counter() - start
        return writer.rows, ctx.failures, seconds

    def _merge(self, ctx: StudyContext, shares: list[tuple], criteria: Mapping[str, Criterion],
               tag: str = "") -> tuple[pd.DataFrame, dict[str, float]]:
        """Every process's records in one process's order (:func:`bundle.records.merge_shares`), then the records
        that pair images (:meth:`Criterion.evaluate_across_images`), written over ``<run><tag>_records.csv``."""
        rows, ctx.failures[:] = merge_shares([share[:2] for share in shares], list(criteria), list(self.sources),
                                             self._image_ids)
        seconds = {n: max(share[2].get(n, 0.0) for share in shares) for n in criteria}
        for name, criterion in criteria.items():
            start = time.perf_counter()
            for source in dict.fromkeys(row["method"] for row in rows if row["criterion"] == name):
                try:
                    rows += [asdict(r) for r in criterion.evaluate_across_images(ctx, source)]
                except Exception as error:  # reported like a failure in evaluate: the source's records are left out
                    ctx.report_failure(name, source, error)
                    rows = [row for row in rows if (row["criterion"], row["method"]) != (name, source)]
            seconds[name] += time.perf_counter() - start
        writer = RecordWriter(self._records_path(tag=tag))
        writer.add(Record(**row) for row in rows)
        for rank in range(1, len(shares)):
            self._records_path(rank, tag).unlink(missing_ok=True)
        return writer.frame(), seconds

    def _skip_sources(self, why: Callable[[object], str | None]) -> list[dict]:
        """Leave out each map source for which ``why(source)`` gives a reason, each said in a warning and listed
        with the sources not scored."""
        skipped = []
        for name, source in list(self.sources.items()):
            reason = why(source)
            if reason:
                logger.warning("%s: skipped: %s", name, reason)
                skipped.append({"criterion": "all", "method": name, "error": f"skipped: {reason}",
                                "kind": self.kinds.pop(name)})
                del self.sources[name]
        return skipped

    def _skip_sources_of_other_dimensions(self) -> list[dict]:
        """The map sources defined for other image dimensions than the study's (XRAI and the edge baseline are
        2-D), left out (:meth:`_skip_sources`)."""
        dims = next(iter(self.dataloader))["image"].ndim - 2

        def why(source) -> str | None:
            supported = getattr(source, "spatial_dims", None)
            if supported is None or dims in supported:
                return None
            return f"defined for {' or '.join(f'{d}-D' for d in supported)} images only, the study's are {dims}-D"

        return self._skip_sources(why)

    def _skip_sources_not_defined_on_the_model(self) -> list[dict]:
        """The methods the model under study has no maps of (the attention maps on a CNN, LRP on a transformer),
        left out (:meth:`_skip_sources`)."""
        reason = f"not defined on {self.primary.architecture} ({type(self.network).__name__})"
        return self._skip_sources(lambda source: None if getattr(source, "applies_to", lambda _: True)(self.network)
                                  else reason)

    def _check_image_ids(self, ctx: StudyContext) -> int:
        """Records and cached maps are keyed by image id: two images with one id would swap their maps.
        Returns the number of study images."""
        counts = Counter(i for batch in ctx.study_batches() for i in ctx.image_ids(batch))
        self._image_ids = list(counts)
        repeated = sorted(i for i, n in counts.items() if n > 1)
        if repeated:
            raise ValueError(f"image ids ({self.id_key!r}) must be unique among the study's images; repeated: "
                             f"{repeated[:10]}{' ...' if len(repeated) > 10 else ''}")
        return len(counts)

    def _title(self, n_images: int) -> str:
        p = self.params
        finding = f", {p['finding']}" if p.get("finding") else ""
        return (f"Saliency trust study: {self.primary.name} on {p.get('dataset', '?')}{finding} ({p.get('split', '?')} split, "
                f"{n_images} positive images), target class {self.target}")

    def _gallery(self, ctx: StudyContext) -> Path | None:
        """Every source's maps of the first images, side by side (cached maps: no recomputation)."""
        if self.gallery_images < 1:
            return None
        batch = next(ctx.study_batches(self.gallery_images))
        failed = {f["method"] for f in ctx.failures}
        maps = {name: normalize_maps(ctx.maps(ctx.primary, name, batch), "pair", ctx.signed(name))[0].cpu().numpy()
                for name in self.sources if name not in failed}  # displayed as PAIR's VisualizeImageGrayscale does
        images, masks = ctx.images(batch)[:, 0].cpu().numpy(), ctx.masks(batch)[:, 0].cpu().numpy()
        return saliency_gallery(images, masks, maps, ctx.image_ids(batch), self.output_dir / f"{self.run_name}_maps.png")

    def _figures(self, ctx, summary, records) -> dict[str, Path]:
        """Every figure of the study by caption: the maps gallery, each criterion's figure, the agreement scatter,
        and the per-epoch trust curves of the model under study when its training ran with the handler."""
        figures = {}
        gallery = self._gallery(ctx)
        if gallery:
            figures[f"Every map source on the first {self.gallery_images} test images, lesion outlined"] = gallery
        for name, criterion in self.criteria.items():
            if criterion.figure:
                figure = FIGURES[criterion.figure](summary, records, name, self.output_dir / f"{self.run_name}_{name}.png")
                if figure:
                    figures[f"{name}: {FIGURE_CAPTIONS[criterion.figure]}"] = figure
        if {"repeatability", "reproducibility"} <= set(self.criteria):
            figure = agreement_scatter(summary, self.output_dir / f"{self.run_name}_agreement.png")
            if figure:
                figures["repeatability against reproducibility: IoU of binarised maps, 95% CI"] = figure
        curves = latest_epoch_trust_curves(self.output_dir, self.primary.name)
        if curves:
            figures[f"{self.primary.name}: saliency trust per training epoch ({curves.parent.name})"] = curves
        return figures

    def _save_and_log(self, ctx, result: StudyResult, report: str) -> None:
        """Write the result's tables, report and figures beside the records (their paths into ``result.paths``), then
        log it as one MLflow run and copy that to the tracking server."""
        records_csv, replicate_csv = self._records_path(), self._records_path(tag=REPLICATE)
        files = {"summary": result.summary, "verdicts": result.verdicts, "comparisons": result.comparisons,
                 **({REPLICATE.strip("_"): result.replicate} if result.replicate is not None else {})}
        paths = result.paths
        paths += [records_csv] + [replicate_csv] * replicate_csv.is_file()
        for name, table in files.items():
            paths.append(self.output_dir / f"{self.run_name}_{name}.csv")
            table.to_csv(paths[-1], index=False)
        (self.output_dir / f"{self.run_name}_report.txt").write_text(report + "\n")  # MLflow gets it as report.txt
        result.figures.update(self._figures(ctx, result.summary, result.records))
        paths += list(result.figures.values())
        paths.append(write_html_report(self.output_dir / f"{self.run_name}_report.html", result))
        params = {**self.params, "model": self.primary.name,
                  "checkpoint_sha256": ctx.weights_digest(self.primary),
                  "target": self.target, "bootstrap_resamples": self.n_resamples, "seed": self.seed,
                  **{f"{self.kinds[n]}.{n}": repr(s) for n, s in self.sources.items()},
                  **{f"criterion.{n}.{k}": v for n, c in self.criteria.items() for k, v in c.params().items()}}
        settings = self.output_dir / f"{self.run_name}_settings.json"  # every setting that changes a number
        settings.write_text(json.dumps({k: str(v) for k, v in params.items()}, indent=1))
        paths.append(settings)
        config = export_executed_config(self.output_dir / f"{self.run_name}_config.json")
        paths += [config] if config else []
        from bundle import __version__

        extra = {**{f"model/{n}/auc": v for n, v in result.aucs.items()},
                 **{f"time/{n}_s": v for n, v in result.seconds.items()},
                 **{f"data/{action}/{reason}": n for action, counts in result.data_issues.items()
                    for reason, n in counts.items()},
                 **{f"data/{action}": sum(counts.values()) for action, counts in result.data_issues.items()}}
        status = self._calibration["status"]
        if any(s["calibrated"] is not None for s in status.values()):  # the calibration these verdicts rest on
            extra.update(calibration_metrics(self._calibration["record"]))
        replicated = {}
        if result.replicate is not None and result.replicate.agree.notna().any():
            extra["replicate/agreement"] = float(result.replicate.agree.dropna().astype(float).mean())
            replicated = {f"replicate/{r.criterion}/{r.method}": str(r.replicate)[:5000]
                          for r in result.replicate.itertuples(index=False)}

        def log(uri: str) -> str:
            return log_study(uri, self.experiment_name, self.run_name, self.output_dir, params, result.summary,
                             result.verdicts, result.comparisons, result.failures, paths, report,
                             tags={"bundle_version": __version__, "dataset": self.params.get("dataset", ""),
                                   "profile": self.params.get("profile", ""),
                                   **{f"calibrated/{n}": {True: "yes", False: "no"}.get(c["calibrated"], c["why"])
                                      for n, c in status.items()}, **replicated,
                                   **({"finding": self.params["finding"]} if "finding" in self.params else {})},
                             primary=self.primary.name, extra_metrics=extra, children=self._trained_runs)

        logger.info("records: %s; summary and verdicts in %s", records_csv, self.output_dir)
        try:
            log(self.tracking_uri)
        except Exception as error:  # the store broke during the study: everything is on disk; keep the run too
            self._log_elsewhere(log, error)
        mirror_or_explain(self.tracking_uri, self.mirror_uri, self.output_dir)

    def _log_elsewhere(self, log, error: Exception) -> None:
        """Log the run to a fresh store beside the results, then stop with what happened, where everything is and
        the command that copies the run into the intended store (the same copy as a server that was down)."""
        fallback = f"sqlite:///{(self.output_dir / f'{self.run_name}_mlruns.db').resolve()}"
        try:
            log(fallback)
            kept = f"the run is in {fallback}; copy it with: python scripts/log_to_mlflow.py {self.output_dir} " \
                   f"--from {fallback} --tracking-uri {self.tracking_uri}"
        except Exception:
            kept = "rerun the same command once the store works (models and maps are cached)"
        raise ValueError(f"{self.tracking_uri}: the MLflow store failed at the end of the study ({brief(error)}); nothing "
                         f"is lost: records, summary, report and figures are in {self.output_dir}, and {kept}") from error
