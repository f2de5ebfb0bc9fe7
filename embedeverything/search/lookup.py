"""What ``ee query`` asks of an index: may it be used for this store and side, and the nearest rows.

An index is used only when it records the store asked about, the adapter as it is now, the array that
side reads, and exactly the done rows of that array; anything else is stale, and the caller is told
what, to search exactly instead. Scores are recomputed from the stored vectors, so a hit found through
the index has the same score an exact scan gives it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..store import DONE, EmbeddingArray
from .state import (
    INDEX_TYPE,
    NPROBES,
    array_record,
    current_record,
    lancedb_installed,
    read_record,
    side_staleness,
    table_name,
    whole_staleness,
)


@dataclass
class SearchIndex:
    """An index found for a query, with what is wrong with it (``stale``: empty when usable)."""

    path: Path
    db: Any
    record: dict[str, Any]
    stale: list[str] = field(default_factory=list)

    def usable(self, side: str, arr: EmbeddingArray, n_rows: int) -> tuple[Any, str]:
        """(the side's table, "") when it holds exactly the array's done rows, else (None, why not)."""
        if self.stale:
            return None, "; ".join(self.stale)
        why = side_staleness(self.record, {"arrays": {side: array_record(arr)}}, side)
        if why:
            return None, why
        if side not in self.record.get("arrays", {}):
            return None, f"side {side} was not indexed"
        try:
            table = self.db.open_table(table_name(side))
        except (ValueError, FileNotFoundError):
            return None, f"side {side} has no rows in it"
        have = table.search().select(["row"]).limit(None).to_arrow()["row"].to_numpy()
        done = np.flatnonzero(arr.state()[:n_rows] == DONE)
        if not np.array_equal(np.sort(have), done):
            new = np.setdiff1d(done, have).size
            gone = np.setdiff1d(have, done).size
            what = ", ".join(
                x
                for x in (
                    new and f"{new} rows of side {side} embedded since it was indexed",
                    gone and f"{gone} indexed rows of side {side} no longer done",
                )
                if x
            )
            return None, what
        return table, ""

    def describe(self, table: Any) -> str:
        """How a search through ``table`` runs, for the user."""
        if table.list_indices():
            return f"index {self.path} ({INDEX_TYPE}, nprobes {NPROBES})"
        return f"index {self.path} (exact, {table.count_rows()} rows)"


def open_index(
    index_dir: str | os.PathLike[str],
    adapter_path: str | os.PathLike[str],
    store_location: str,
    arrays: dict[str, EmbeddingArray],
) -> SearchIndex | None:
    """The index at ``index_dir`` with its staleness for this adapter and store; None where there is
    none, or lancedb is not installed (then ``ee query`` scans, as it does without an index)."""
    path = Path(index_dir)
    record = read_record(path)
    if record is None or not lancedb_installed():
        return None
    import lancedb

    now = current_record(adapter_path, store_location, arrays)
    return SearchIndex(path, lancedb.connect(str(path)), record, whole_staleness(record, now))


def nearest(table: Any, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Scores and rows ``[n_queries, <=k]``, best first (ties by row), for unit ``queries``."""
    scores, rows = [], []
    for q in queries:
        hits = (
            table.search(q.astype(np.float32))
            .distance_type("dot")
            .nprobes(NPROBES)
            .limit(k)
            .select(["row", "vector", "_distance"])
            .to_arrow()
        )
        r = hits["row"].to_numpy().astype(np.int64)
        v = np.asarray(hits["vector"].to_pylist(), dtype=np.float32).reshape(len(r), -1)
        s = v @ q if len(r) else np.zeros(0, np.float32)
        order = np.lexsort((r, -s))
        scores.append(s[order])
        rows.append(r[order])
    width = min((len(r) for r in rows), default=0)
    return np.stack([s[:width] for s in scores]), np.stack([r[:width] for r in rows])
