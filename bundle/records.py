"""Per-image records on disk: appended as they come, so finished work survives a later failure."""

from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
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


def merge_shares(shares: Sequence[tuple[list[dict], list[dict]]], criteria: Sequence[str], sources: Sequence[str],
                 image_ids: Sequence[str]) -> tuple[list[dict], list[dict]]:
    """The records and failures of every process of a sharded study (``(records, failures)`` per rank, rank order)
    as one process makes them: records ordered by criterion, source, then image in study order, each record's own
    order kept (so every statistic sees its values in one order); a failure met by several ranks reported once,
    and a source that failed on any rank left out of that criterion, as one process leaves it out."""
    failures = {}
    for _, share_failures in shares:
        for failure in share_failures:
            failures.setdefault((failure["criterion"], failure["method"]), failure)
    criterion_at, source_at, image_at = ({n: i for i, n in enumerate(names)}
                                         for names in (criteria, sources, image_ids))
    rows = sorted((row for share_rows, _ in shares for row in share_rows
                   if (row["criterion"], row["method"]) not in failures),
                  key=lambda r: (criterion_at[r["criterion"]], source_at.get(r["method"], len(source_at)),
                                 image_at.get(r["image_id"], len(image_at))))
    return rows, list(failures.values())
