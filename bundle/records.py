"""Per-image records on disk: appended as they come, so finished work survives a later failure."""

from __future__ import annotations

import csv
from collections.abc import Iterable
from dataclasses import asdict
from pathlib import Path

import pandas as pd

from bundle.criteria.base import RECORD_COLUMNS, Record


class RecordWriter:
    """Appends records to a CSV as each batch of them arrives, so finished work survives a later failure."""

    def __init__(self, path: Path) -> None:
        self.path, self.rows = Path(path), []
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "w", newline="") as f:
            csv.writer(f).writerow(RECORD_COLUMNS)

    def add(self, records: Iterable[Record]) -> None:
        rows = [asdict(r) for r in records]
        with open(self.path, "a", newline="") as f:
            csv.DictWriter(f, RECORD_COLUMNS).writerows(rows)
        self.rows += rows

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows, columns=list(RECORD_COLUMNS))
