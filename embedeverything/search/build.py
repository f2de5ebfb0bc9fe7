"""``ee index``: a store's done rows, projected through an adapter, into the index (see :mod:`.state`).

Incremental by row set, never by count: chunks finish out of order (Dask, ``--retry-failed``), so the
rows a table holds are read first, then the array's state, and exactly the done rows the table lacks
are projected and added; rows that finish meanwhile are left for the next run. Labels and splits are
refreshed from the store on every run. Only done rows are read, so ``ee index`` may run beside
``ee embed``. Each row carries its media reference from the manifest (path, time, audio window, text).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..adapter import Adapter, load_adapter
from ..errors import UserError
from ..evaluate.data import matching_array, projected_chunks, resolve_store_location
from ..manifest import Pair, read_manifest
from ..store import DONE, EmbeddingArray, Store, local_path
from .lookup import calibrate
from .state import (
    ANN_MIN_ROWS,
    SIDES,
    build_lock,
    current_record,
    default_index,
    lancedb,
    read_record,
    side_staleness,
    table_name,
    whole_staleness,
    write_record,
)


@dataclass
class SideReport:
    side: str
    array: str
    rows: int  # rows the table holds now
    added: int
    relabelled: int
    ann: bool  # an ANN index serves this side (else exact search)
    rebuilt: str = ""  # why this side's table was made anew
    search: dict[str, Any] = field(default_factory=dict)  # an ANN index's probes and measured recall


@dataclass
class IndexReport:
    index: Path
    store: str
    rebuilt: list[str] = field(default_factory=list)  # why the whole index was made anew
    sides: list[SideReport] = field(default_factory=list)


def manifest_path(store_location: str, manifest: str | os.PathLike[str] | None) -> Path:
    """``--manifest``, else ``manifest.jsonl`` beside a local store; either must exist."""
    if manifest is not None:
        path = Path(manifest)
    else:
        store_dir = local_path(store_location)
        if store_dir is None:
            raise UserError(f"store {store_location} is not on local disk: give its manifest with --manifest")
        path = store_dir.parent / "manifest.jsonl"
    if not path.is_file():
        raise UserError(f"no manifest at {path}: the index takes each row's media from it; give --manifest")
    return path


def build_index(
    adapter_path: str | os.PathLike[str],
    store_location: str | None = None,
    sides: tuple[str, ...] = SIDES,
    index: str | os.PathLike[str] | None = None,
    manifest: str | os.PathLike[str] | None = None,
    ann_min_rows: int = ANN_MIN_ROWS,
) -> IndexReport:
    """Bring the index of ``sides`` up to date (made anew where stale); see the module docstring."""
    ldb = lancedb()
    if not sides or any(s not in SIDES for s in sides):
        raise UserError(f"sides must be a and/or b, not {sides!r}")
    path = Path(adapter_path)
    adapter = load_adapter(path)
    location = resolve_store_location(path, adapter, store_location)
    m = read_manifest(manifest_path(location, manifest))
    store = Store.open(location, read_only=True)
    arrays = {s: matching_array(store, s, getattr(adapter.config, s)) for s in sides}
    index_dir = Path(index) if index is not None else default_index(path)
    with build_lock(index_dir):
        db = ldb.connect(str(index_dir))
        new = current_record(path, location, arrays)
        try:
            old = read_record(index_dir)
            report = IndexReport(index_dir, new["store"], whole_staleness(old, new) if old else [])
        except UserError as e:  # unreadable: made anew, as a stale one is
            old = None
            report = IndexReport(index_dir, new["store"], [str(e)])
        if report.rebuilt:
            for s in SIDES:
                _drop(db, s)
        kept = {} if old is None or report.rebuilt else old.get("arrays", {})
        stale = {s: (side_staleness(old, new, s) if kept else None) or "" for s in sides}
        for s, why in stale.items():
            if why:
                _drop(db, s)
        # the record first: which rows are indexed is read from the tables, never from it
        record = {**new, "arrays": {**kept, **new["arrays"]}}
        record["search"] = {s: v for s, v in (old or {}).get("search", {}).items() if s in kept}
        write_record(index_dir, record)
        meta = store.rows()
        pairs = {p.id: p for p in m.pairs}
        for s in sides:
            side = _index_side(db, s, adapter, arrays[s], meta, (pairs, m.root), ann_min_rows, stale[s])
            if side.ann and (side.added or side.rebuilt or s not in record["search"]):
                record["search"][s] = calibrate(_open(db, s))
            elif not side.ann:
                record["search"].pop(s, None)
            side.search = record["search"].get(s, {})
            report.sides.append(side)
        write_record(index_dir, record)
    return report


def _open(db: Any, side: str) -> Any:
    try:
        return db.open_table(table_name(side))
    except (ValueError, FileNotFoundError):
        return None


def _drop(db: Any, side: str) -> None:
    if _open(db, side) is not None:
        db.drop_table(table_name(side))


def _index_side(
    db: Any,
    side: str,
    adapter: Adapter,
    arr: EmbeddingArray,
    meta: dict[str, np.ndarray],
    media: tuple[dict[str, Pair], Path],
    ann_min_rows: int,
    rebuilt: str,
) -> SideReport:
    n = len(meta["id"])
    table = _open(db, side)
    have = np.array([], np.int64)
    relabelled = 0
    if table is not None:
        cur = table.search().select(["row", "id", "label", "split"]).limit(None).to_arrow()
        have = cur["row"].to_numpy().astype(np.int64)
        ids = np.asarray(cur["id"].to_pylist(), dtype=object)
        if (have >= n).any() or (meta["id"][have[have < n]] != ids[have < n]).any():
            db.drop_table(table_name(side))
            table, have = None, np.array([], np.int64)
            rebuilt = "the store's rows are no longer the indexed ones (ids differ)"
        else:
            relabelled = _refresh_labels(table, cur, meta)
    wanted = arr.state()[:n] == DONE  # read after the table: rows done from now on are the next run's
    wanted[have] = False
    added = 0
    for rows, z in projected_chunks(adapter, side, arr, True, wanted):
        batch = _batch(side, rows, z, meta, media)
        if table is None:
            table = db.create_table(table_name(side), data=batch)
        else:
            table.add(batch)
        added += rows.size
    total = 0 if table is None else int(table.count_rows())
    ann = table is not None and bool(table.list_indices())
    if table is not None and total >= ann_min_rows:
        if not ann:
            from lancedb.index import IvfFlat

            from . import state

            config = IvfFlat(distance_type="dot", target_partition_size=state.PARTITION_ROWS)
            table.create_index("vector", config=config)
            ann = True
        elif added:
            table.optimize()  # folds the new rows into the ANN index
    return SideReport(side, arr.key, total, added, relabelled, ann, rebuilt)


def _refresh_labels(table: Any, cur: Any, meta: dict[str, np.ndarray]) -> int:
    """Labels and splits as the store has them now (a grown or edited manifest changes them)."""
    rows = cur["row"].to_numpy().astype(np.int64)
    old = list(zip(cur["label"].to_pylist(), cur["split"].to_pylist(), strict=True))
    changed: dict[tuple[str, str], list[int]] = {}
    for r, was in zip(rows.tolist(), old, strict=True):
        now = (str(meta["label"][r]), str(meta["split"][r]))
        if now != tuple(was):
            changed.setdefault(now, []).append(r)
    for (label, split), rs in changed.items():
        for lo in range(0, len(rs), 1000):
            where = f"row IN ({', '.join(str(r) for r in rs[lo : lo + 1000])})"
            table.update(where=where, values={"label": label, "split": split})
    return sum(len(rs) for rs in changed.values())


def _batch(
    side: str,
    rows: np.ndarray,
    z: np.ndarray,
    meta: dict[str, np.ndarray],
    media: tuple[dict[str, Pair], Path],
) -> Any:
    """One Arrow batch: row, id, side, label, split, the media reference, and the vector."""
    import pyarrow as pa

    pairs, root = media
    refs = [pairs[p].side(side) if (p := str(meta["id"][r])) in pairs else None for r in rows]

    def ref_field(name: str) -> list[Any]:
        return [None if ref is None else getattr(ref, name) for ref in refs]

    paths = [None if p is None else str(root / p) for p in ref_field("path")]
    return pa.table(
        {
            "row": pa.array(rows, pa.int64()),
            "id": pa.array([str(meta["id"][r]) for r in rows], pa.string()),
            "side": pa.array([side] * rows.size, pa.string()),
            "label": pa.array([str(meta["label"][r]) for r in rows], pa.string()),
            "split": pa.array([str(meta["split"][r]) for r in rows], pa.string()),
            "kind": pa.array(ref_field("kind"), pa.string()),
            "path": pa.array(paths, pa.string()),
            "text": pa.array(ref_field("text"), pa.string()),
            "t": pa.array(ref_field("t"), pa.float64()),
            "start": pa.array(ref_field("start"), pa.float64()),
            "end": pa.array(ref_field("end"), pa.float64()),
            "vector": pa.FixedSizeListArray.from_arrays(pa.array(z.reshape(-1), pa.float32()), z.shape[1]),
        }
    )
