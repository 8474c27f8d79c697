"""On-disk cache of saliency maps keyed by (model checkpoint digest, method and parameters, target, image id).

Every metric of a study reuses a map instead of recomputing it, and the cache
survives a restart: maps are written one file per image, atomically.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch


def file_digest(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """SHA-256 of a file (a checkpoint), the model part of a cache key."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


class MapCache:
    """A folder of ``<key>/<image id>.npy`` maps, one key per (model, method with parameters, target)."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)

    def key(self, model_digest: str, method: object, target: int, context: dict | None = None) -> str:
        """The cache key of a configured method (its ``repr`` holds every parameter) on one model and target.

        ``context`` describes the data pipeline (dataset, image size, ...), so maps of
        differently prepared images never share a key.
        """
        from bundle import __version__  # a new bundle version may change a method's code: never reuse its maps

        description = {"model": model_digest, "method": repr(method), "target": int(target),
                       "context": {k: str(v) for k, v in sorted((context or {}).items())}, "bundle": __version__}
        key = hashlib.sha256(json.dumps(description, sort_keys=True).encode()).hexdigest()[:20]
        folder = self.root / key
        if not (folder / "key.json").exists():
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "key.json").write_text(json.dumps(description, indent=2))
        return key

    @staticmethod
    def _safe(image_id: str) -> str:
        """A file name for an image id: readable, plus a hash so that ids like 'a/b' and 'a_b' never collide."""
        readable = "".join(c if c.isalnum() or c in "-_." else "_" for c in str(image_id))[:80]
        return f"{readable}-{hashlib.sha256(str(image_id).encode()).hexdigest()[:12]}"

    def load(self, key: str, image_ids: Sequence[str]) -> list[np.ndarray | None]:
        """Cached maps for ``image_ids`` (None where a map is not cached yet)."""
        out = []
        for image_id in image_ids:
            path = self.root / key / f"{self._safe(image_id)}.npy"
            out.append(np.load(path) if path.exists() else None)
        return out

    def save(self, key: str, image_ids: Sequence[str], maps: torch.Tensor) -> None:
        """Store one map per image id; written to a temporary name then renamed, so a crash leaves no torn file."""
        folder = self.root / key
        folder.mkdir(parents=True, exist_ok=True)
        for image_id, m in zip(image_ids, maps.detach().cpu().numpy()):
            final = folder / f"{self._safe(image_id)}.npy"
            tmp = folder / f".{final.name}.{os.getpid()}.tmp"
            with open(tmp, "wb") as f:
                np.save(f, m)
            os.replace(tmp, final)
