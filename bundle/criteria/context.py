"""What a criterion may ask the study for: models, the study's images, and cached maps. Nothing else."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from bundle.models import ModelSpec
from bundle.passes import work
from bundle.saliency.cache import MapCache

logger = logging.getLogger(__name__)
_END = object()  # the end of the study's batches


@dataclass
class StudyContext:
    """The study's state as criteria see it.

    Args:
        primary: the trained model the study is about.
        load_model: builds and loads the trained network of a spec (called once per spec).
        checkpoint_digest: the weights digest of a spec's checkpoint (part of every map's cache key).
        dataloader: the study's images, batches of dicts with ``image_key``, ``mask_key`` and ``id_key``.
        sources: map sources by table name (methods, then baselines, then references), each with the
            saliency interface ``source(model, images, target)``.
        kinds: ``method``, ``baseline`` or ``reference`` per source name.
        target: the class the maps explain.
        cache / cache_context: the map cache and the data-pipeline description that goes into its keys.
        rank / world_size: this process's share of the images under ``torchrun`` (``bundle.distributed``):
            :meth:`batches` yields every ``world_size``-th batch, from batch ``rank``.
    """

    primary: ModelSpec
    load_model: Callable[[ModelSpec], nn.Module]
    checkpoint_digest: Callable[[ModelSpec], str]
    dataloader: object
    sources: Mapping[str, object]
    kinds: Mapping[str, str]
    target: int = 1
    device: torch.device = torch.device("cpu")
    cache: MapCache | None = None
    cache_context: Mapping[str, object] = field(default_factory=dict)
    id_key: str = "image_id"
    image_key: str = "image"
    mask_key: str = "mask"
    reader_mask_key: str = "reader_mask"
    rank: int = 0
    world_size: int = 1
    failures: list[dict] = field(default_factory=list)
    _models: dict = field(default_factory=dict)
    _digests: dict = field(default_factory=dict)
    _warned: set = field(default_factory=set)

    def model(self, spec: ModelSpec) -> nn.Module:
        """The trained network of ``spec`` in eval mode on the study's device."""
        if spec not in self._models:
            self._models[spec] = self.load_model(spec).to(self.device).eval()
        return self._models[spec]

    def applicable(self, specs: Sequence[ModelSpec], source: str) -> list[ModelSpec]:
        """The models of ``specs`` a source's maps are defined on (an attention map needs a transformer); a
        criterion that compares models scores a source on these only."""
        applies = getattr(self.sources[source], "applies_to", None)
        return [spec for spec in specs if applies is None or applies(self.model(spec))]

    def weights_digest(self, spec: ModelSpec) -> str:
        """The digest of a spec's checkpoint, read once per study."""
        if spec not in self._digests:
            self._digests[spec] = self.checkpoint_digest(spec)
        return self._digests[spec]

    def batches(self, limit: int | None = None) -> Iterator[dict]:
        """The batches this process scores, of :meth:`study_batches`: all of them in one process; under ``torchrun``
        batch ``i`` goes to rank ``i % world_size``. Each batch is exactly the one a single process scores (same
        images, same size), so a sharded study computes the same numbers."""
        for i, batch in enumerate(self.study_batches(limit)):
            if i % self.world_size == self.rank:
                yield batch

    def study_batches(self, limit: int | None = None) -> Iterator[dict]:
        """All the study's images in a fixed order (the first ``limit`` only, when given), whichever the process:
        what a criterion looks at before scoring (does the data have a second reader?) or across images."""
        seen, batches = 0, iter(self.dataloader)
        while limit is None or seen < limit:
            with work("data"):
                batch = next(batches, _END)
            if batch is _END:
                return
            if limit is not None:
                keep = limit - seen
                if len(batch[self.id_key]) > keep:
                    batch = {k: v[:keep] if isinstance(v, (torch.Tensor, list, tuple)) else v for k, v in batch.items()}
                seen += len(batch[self.id_key])
            yield batch

    def image_ids(self, batch: Mapping) -> list[str]:
        """The configured id of every image of a batch, in batch order: what records are keyed by."""
        return [str(i) for i in batch[self.id_key]]

    def images(self, batch: Mapping) -> torch.Tensor:
        return batch[self.image_key].to(self.device)

    def masks(self, batch: Mapping) -> torch.Tensor:
        return batch[self.mask_key].to(self.device)

    def reader_masks(self, batch: Mapping) -> torch.Tensor | None:
        """A second reader's masks of a batch, or ``None`` when the data has no second reader."""
        masks = batch.get(self.reader_mask_key)
        return None if masks is None else masks.to(self.device)

    def signed(self, source: str | object) -> bool:
        """Whether a source's maps are signed attributions (folded by ``|.|`` under ``pair``) or ranking maps."""
        return bool(getattr(self.sources[source] if isinstance(source, str) else source, "signed", True))

    def maps(self, spec: ModelSpec, source: str | object, batch: Mapping, step: str = "trained",
             model: nn.Module | Callable[[], nn.Module] | None = None) -> torch.Tensor:
        """Maps (B, *spatial) of a source (a name or a configured method) on model ``spec`` for a batch.

        Cached by value (spec, step, weights digest, the source's repr, target, data context,
        image id), so every criterion that needs a map shares one computation. A derived
        model (``step`` other than ``trained``, e.g. a randomised copy) is passed with its
        step, so its maps can never be computed from, or stored as, the trained model's; it may come as a function
        that makes it, called only when a map is missing (a randomised model is drawn only when it is needed).
        """
        method = self.sources[source] if isinstance(source, str) else source
        if (step == "trained") != (model is None):
            raise ValueError("pass a derived model together with its step, and neither for the trained model")
        images = self.images(batch)

        def compute(positions: list[int]) -> torch.Tensor:
            net = self.model(spec) if model is None else model if isinstance(model, nn.Module) else model()
            if getattr(method, "needs_ground_truth", False):
                maps = method(net, images[positions], self.target, masks=self.masks(batch)[positions])
            else:
                maps = method(net, images[positions], self.target)
            expected = (len(positions), *images.shape[2:])
            if tuple(maps.shape) != expected:  # checked before caching: a malformed map never enters the cache
                ids = [self.image_ids(batch)[i] for i in positions]
                raise ValueError(f"{method!r} returned maps of shape {tuple(maps.shape)} for images {ids}; "
                                 f"expected {expected} (batch, *spatial of the images)")
            return maps

        return self.cached(spec, method, batch, compute, step)

    def cached(self, spec: ModelSpec, what: object, batch: Mapping, compute: Callable[[list[int]], torch.Tensor],
               step: str = "trained", positions: Sequence[int] | None = None) -> torch.Tensor:
        """Per-image tensors of a batch that depend on model ``spec`` (at ``step``) and on ``what`` (its ``repr``:
        a method with its parameters, an attack, PIC's settings), from the cache when there, else
        ``compute(positions)`` of the missing images; ``positions`` keeps some of the batch's images (all by
        default). Without a cache everything is computed."""
        ids = self.image_ids(batch)
        chosen = list(range(len(ids))) if positions is None else list(positions)
        if self.cache is None:
            return compute(chosen)
        description = MapCache.describe(spec.name, self.weights_digest(spec), what, self.target,
                                        dict(self.cache_context), step)
        return self.cache.fetch(description, [ids[i] for i in chosen],
                                lambda missing: compute([chosen[i] for i in missing]), self.device)

    def warn_once(self, message: str) -> None:
        """Log a warning about the data once per study, however many sources meet it."""
        if message not in self._warned:
            self._warned.add(message)
            logger.warning(message)

    def report_failure(self, criterion: str, source: str, error: Exception) -> None:
        """Record that a source could not be scored for a criterion; the study goes on without it."""
        message = f"{type(error).__name__}: {error}"
        logger.error("%s: %s was not scored and is left out of this criterion: %s", criterion, source, message)
        self.failures.append({"criterion": criterion, "method": source, "error": message})
