"""On-disk cache of saliency maps, keyed by value: (model, derived step, checkpoint digest, method and
parameters, target, data context), then image id.

Every metric of a study reuses a map instead of recomputing it, and the cache
survives a restart: maps are written one file per image, atomically. The key is
computed from values passed with the model, never from the network currently
loaded, so a randomised or attacked model (a derived step of a trained one) can
never store its maps under the trained model's key.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from bundle.passes import work


def file_digest(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """SHA-256 of a file (a checkpoint), the weights part of a cache key."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


class MapCache:
    """A folder of ``<key>/<image id>.npy`` maps, with ``<key>/key.json`` describing the key."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)

    @staticmethod
    def describe(
        model: str, model_digest: str, method: object, target: int, context: dict | None = None, step: str = "trained"
    ) -> dict:
        """Everything a map depends on: the model's name and weights digest, the derived ``step`` of that model
        (``trained``, or e.g. ``cascade:denseblock4``), the method's ``repr`` (every parameter), the target
        class, and ``context``, the data pipeline (dataset, image size, ...)."""
        from bundle import __version__  # a new bundle version may change a method's code: never reuse its maps

        return {"model": model, "step": step, "weights": model_digest, "method": repr(method), "target": int(target),
                "context": {k: str(v) for k, v in sorted((context or {}).items())}, "bundle": __version__}

    @staticmethod
    def key(description: dict) -> str:
        """The key of a :meth:`describe` result; a pure function of it (nothing is written)."""
        return hashlib.sha256(json.dumps(description, sort_keys=True).encode()).hexdigest()[:20]

    @staticmethod
    def _safe(image_id: str) -> str:
        """A file name for an image id: readable, plus a hash so that ids like 'a/b' and 'a_b' never collide."""
        readable = "".join(c if c.isalnum() or c in "-_." else "_" for c in str(image_id))[:80]
        return f"{readable}-{hashlib.sha256(str(image_id).encode()).hexdigest()[:12]}"

    @work("map_cache")
    def load(self, key: str, image_ids: Sequence[str]) -> list[np.ndarray | None]:
        """Cached maps for ``image_ids`` (None where a map is not cached yet)."""
        out = []
        for image_id in image_ids:
            path = self.root / key / f"{self._safe(image_id)}.npy"
            out.append(np.load(path) if path.exists() else None)
        return out

    def save(self, description: dict, image_ids: Sequence[str], maps: torch.Tensor | np.ndarray) -> None:
        """Store one map per image id; written to a temporary name then renamed, so a crash leaves no torn file."""
        maps = maps.detach().cpu().numpy() if torch.is_tensor(maps) else maps  # waits on a GPU's passes: not timed
        with work("map_cache"):
            folder = self.root / self.key(description)
            folder.mkdir(parents=True, exist_ok=True)
            if not (folder / "key.json").exists():
                (folder / "key.json").write_text(json.dumps(description, indent=2))
            for image_id, m in zip(image_ids, maps):
                final = folder / f"{self._safe(image_id)}.npy"
                tmp = folder / f".{final.name}.{os.getpid()}.tmp"
                with open(tmp, "wb") as f:
                    np.save(f, m)
                os.replace(tmp, final)

    def fetch(
        self, description: dict, image_ids: Sequence[str], compute: Callable[[list[int]], torch.Tensor],
        device: torch.device | str = "cpu",
    ) -> torch.Tensor:
        """Maps of ``image_ids``: cached ones loaded, the missing ones computed together (``compute`` gets their
        positions) and stored."""
        if len(set(image_ids)) != len(image_ids):
            raise ValueError(f"image ids must be unique within a batch to be cached, got {list(image_ids)}")
        maps = self.load(self.key(description), image_ids)
        missing = [i for i, m in enumerate(maps) if m is None]
        if missing:
            computed = compute(missing).detach().cpu().numpy()
            self.save(description, [image_ids[i] for i in missing], computed)
            for i, m in zip(missing, computed):
                maps[i] = m
        return torch.as_tensor(np.stack(maps), device=device)
