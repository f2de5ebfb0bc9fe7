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

from ..errors import UserError
from ..store import DONE, EmbeddingArray
from .state import (
    CALIBRATION_QUERIES,
    INDEX_TYPE,
    MAX_NPROBES,
    NPROBES,
    TARGET_RECALL,
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

    def usable(self, side: str, arr: EmbeddingArray, ids: np.ndarray) -> tuple[Any, str]:
        """(the side's table, "") when it holds exactly the array's done rows under the store's ids
        (``ids``, in row order), else (None, why not)."""
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
        cur = table.search().select(["row", "id"]).limit(None).to_arrow()
        have = cur["row"].to_numpy().astype(np.int64)
        done = np.flatnonzero(arr.state()[: len(ids)] == DONE)
        if (have >= len(ids)).any() or (
            ids[np.minimum(have, len(ids) - 1)] != cur["id"].to_numpy(False)
        ).any():
            return None, f"the store's rows are no longer the indexed ones (ids of side {side} differ)"
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

    def nprobes(self, side: str) -> int:
        """The probes ``ee index`` found to reach the recall target on this side's rows."""
        return int((self.record.get("search", {}).get(side) or {}).get("nprobes", NPROBES))

    def search(
        self, side: str, table: Any, queries: np.ndarray, k: int
    ) -> tuple[np.ndarray, np.ndarray, str]:
        """(scores, rows, how it ran) of the ``k`` nearest rows of ``side`` for unit ``queries``."""
        scores, rows = nearest(table, queries, k, self.nprobes(side))
        if table.list_indices():
            how = f"index {self.path} ({INDEX_TYPE}, nprobes {self.nprobes(side)})"
        else:
            how = f"index {self.path} (exact, {table.count_rows()} rows)"
        return scores, rows, how


def open_index(
    index_dir: str | os.PathLike[str],
    adapter_path: str | os.PathLike[str],
    store_location: str,
    arrays: dict[str, EmbeddingArray],
) -> SearchIndex | None:
    """The index at ``index_dir`` with its staleness for this adapter and store; None where there is
    none, or lancedb is not installed (then ``ee query`` scans, as it does without an index)."""
    path = Path(index_dir)
    try:
        record = read_record(path)
    except UserError as e:  # an index that cannot be read is stale, not a reason to refuse the query
        return SearchIndex(path, None, {}, [str(e)])
    if record is None or not lancedb_installed():
        return None
    import lancedb

    now = current_record(adapter_path, store_location, arrays)
    return SearchIndex(path, lancedb.connect(str(path)), record, whole_staleness(record, now))


def nearest(table: Any, queries: np.ndarray, k: int, nprobes: int = NPROBES) -> tuple[np.ndarray, np.ndarray]:
    """Scores and rows ``[n_queries, <=k]``, best first (ties by row), for unit ``queries``."""
    found = [nearest_one(table, q, k, nprobes) for q in queries]
    width = min((len(f[1]) for f in found), default=0)
    return np.stack([f[0][:width] for f in found]), np.stack([f[1][:width] for f in found])


def nearest_one(
    table: Any, query: np.ndarray, k: int, nprobes: int = NPROBES, columns: tuple[str, ...] = ()
) -> tuple[np.ndarray, np.ndarray, list[dict[str, Any]]]:
    """(scores, rows, the hits' ``columns``) of the ``k`` nearest rows to one unit ``query``, best first,
    ties by row; scores recomputed from the stored vectors."""
    hits = (
        table.search(query.astype(np.float32))
        .distance_type("dot")
        .nprobes(nprobes)
        .limit(k)
        .select(["row", "vector", "_distance", *columns])
        .to_arrow()
    )
    r = hits["row"].to_numpy().astype(np.int64)
    s = _vectors(hits["vector"], len(r)) @ query if len(r) else np.zeros(0, np.float32)
    order = np.lexsort((r, -s))
    extra = hits.select(list(columns)).to_pylist() if columns else [{} for _ in r]
    return s[order], r[order], [extra[i] for i in order]


def _vectors(column: Any, n: int) -> np.ndarray:
    """A fixed-size-list column of vectors as float32 ``[n, dim]``."""
    flat = column.combine_chunks() if hasattr(column, "combine_chunks") else column
    return np.asarray(flat.flatten().to_numpy(zero_copy_only=False), np.float32).reshape(n, -1)


def calibrate(table: Any, n_queries: int = CALIBRATION_QUERIES, seed: int = 0) -> dict[str, float]:
    """The fewest probes (from :data:`NPROBES`, doubling) at which the ANN index finds at least
    :data:`TARGET_RECALL` of the true 10 nearest rows, measured on the table's own rows as queries (each
    query's own row left out), against an exact pass over every stored vector.

    How many partitions must be probed depends on how clustered the embeddings are: on well-clustered
    data 20 suffice, on nearly uniform data far more; measuring it per index keeps the recall promise."""
    k = 10
    rows = table.search().select(["row"]).limit(None).to_arrow()["row"].to_numpy()
    pick = np.random.default_rng(seed).choice(rows, min(n_queries, rows.size), replace=False)
    where = f"row IN ({', '.join(str(int(r)) for r in pick)})"
    chosen = table.search().where(where).select(["row", "vector"]).limit(None).to_arrow()
    pick = chosen["row"].to_numpy().astype(np.int64)
    queries = _vectors(chosen["vector"], len(pick))
    best = np.full((pick.size, 0), -np.inf, np.float32)
    best_rows = np.zeros((pick.size, 0), np.int64)
    for batch in table.search().select(["row", "vector"]).limit(None).to_batches(65536):
        r = batch.column("row").to_numpy().astype(np.int64)
        best = np.concatenate([best, queries @ _vectors(batch.column("vector"), len(r)).T], 1)
        best_rows = np.concatenate([best_rows, np.broadcast_to(r, (pick.size, r.size))], 1)
        top = np.argsort(-best, axis=1, kind="stable")[:, : k + 1]
        best, best_rows = np.take_along_axis(best, top, 1), np.take_along_axis(best_rows, top, 1)
    truth = [set(t[t != q].tolist()[:k]) for t, q in zip(best_rows, pick, strict=True)]
    nprobes = NPROBES
    while True:
        _, got = nearest(table, queries, k + 1, nprobes)
        recall = float(
            np.mean(
                [len(set(g[g != q].tolist()[:k]) & t) / k for g, t, q in zip(got, truth, pick, strict=True)]
            )
        )
        if recall >= TARGET_RECALL or nprobes >= MAX_NPROBES:
            return {"nprobes": nprobes, "recall_at_10": round(recall, 4), "queries": int(pick.size)}
        nprobes *= 2
