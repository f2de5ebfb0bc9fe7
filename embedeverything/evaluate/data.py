"""What every evaluation command starts from: an adapter, the store it maps, and the split it was trained on.

The store and split default to what the adapter records (``training.store``) and what the trainer wrote
next to it (``split.json``). Each is checked before any number is computed: the store's arrays must hold
the encoders the adapter was trained on (same identity, same dim), and the split's row ids must be the
store's ids at those rows; a mismatch is a one-line :class:`UserError` naming what differs.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..adapter import Adapter, SideConfig, load_adapter
from ..errors import UserError
from ..store import DONE, EmbeddingArray, Store, is_url, paired_rows

SPLIT_FILE = "split.json"


@dataclass
class Labels:
    """Class codes per store row (``-1``: none) and their names."""

    codes: np.ndarray
    names: list[str]

    @classmethod
    def from_rows(cls, labels: np.ndarray) -> Labels | None:
        lab = np.asarray(labels).astype(str)
        if not (lab != "").any():
            return None
        names = sorted(set(lab[lab != ""].tolist()))
        index = {n: i for i, n in enumerate(names)}
        codes = np.array([index.get(x, -1) for x in lab], dtype=np.int64)
        return cls(codes, names)


@dataclass
class EvalData:
    """An adapter and its store, opened and checked once: ``ee pair`` hands the same one to the report,
    the figures, the model card and the export instead of each loading the adapter again."""

    adapter: Adapter
    adapter_path: Path
    store: Store
    arrays: dict[str, EmbeddingArray]
    meta: dict[str, np.ndarray]
    usable: np.ndarray  # rows done on both sides
    labels: Labels | None


#: what the evaluation functions take: an adapter file, or an :class:`EvalData` already open
AdapterSource = str | os.PathLike[str] | EvalData


def resolve_store_location(adapter_path: Path, adapter: Adapter, store_location: str | None) -> str:
    """The store the adapter was trained on: ``--store`` if given, else the recorded path relative to the
    adapter's folder, then the absolute one (older adapters: relative to where training ran)."""
    if store_location is not None:
        return str(store_location)
    info = adapter.config.training
    recorded = info.store
    if is_url(recorded):
        return recorded
    tried = [adapter_path.parent / recorded]
    if info.store_absolute:
        tried.append(Path(info.store_absolute))
    tried.append(Path(recorded))
    for p in tried:
        if p.exists():
            return os.path.normpath(p)
    raise UserError(
        f"the store the adapter was trained on ({info.store_absolute or recorded}) is not there; name the "
        "store to use (--store, or --against for ee query)"
    )


def matching_array(store: Store, side: str, sc: SideConfig) -> EmbeddingArray:
    """The store array of ``side`` holding embeddings of the adapter's encoder for that side."""
    want = sc.identity
    candidates = [store.embedding(sc.array)] if sc.array in store.keys() else []
    candidates += [a for a in store.find(side=side) if a.key != sc.array]
    problems = []
    for arr in candidates:
        ident = arr.identity
        if ident is None:
            problems.append(f"{arr.key}: no identity recorded")
            continue
        hard, _ = want.differences(ident)
        if not hard:
            if arr.dim != sc.head.in_dim:
                raise UserError(
                    f"array {arr.key} holds dim {arr.dim}, adapter side {side} ({want.name}) takes {sc.head.in_dim}"
                )
            return arr
        problems.append(
            f"{arr.key}: " + ", ".join(f"{f} {getattr(ident, f)!r} != {getattr(want, f)!r}" for f in hard[:3])
        )
    listing = "; ".join(problems) or "no arrays on that side"
    raise UserError(
        f"store {store.location} has no side-{side} array of encoder {want.name!r} (dim {want.dim}) as the "
        f"adapter was trained on ({listing}); embed it with `ee embed` or pass another --store"
    )


def open_eval_data(adapter_path: str | os.PathLike[str], store_location: str | None = None) -> EvalData:
    """The adapter, its store (``store_location``, else the one it records) and both matching arrays,
    checked up front: a store that does not fit is one clear error before any number is computed."""
    path = Path(adapter_path)
    adapter = load_adapter(path)
    location = resolve_store_location(path, adapter, store_location)
    store = Store.open(location, read_only=True)
    arrays = {side: matching_array(store, side, getattr(adapter.config, side)) for side in ("a", "b")}
    meta = store.rows()
    usable = paired_rows(arrays["a"], arrays["b"], len(meta["id"]))
    return EvalData(adapter, path, store, arrays, meta, usable, Labels.from_rows(meta["label"]))


def eval_data(source: AdapterSource, store_location: str | None = None) -> EvalData:
    """``source`` itself when it is open already, else opened; an open one has its store, so naming
    another is a mistake of the caller's, not something to resolve silently."""
    if isinstance(source, EvalData):
        if store_location is not None:
            raise ValueError("give store_location with an adapter path, not with an open EvalData")
        return source
    return open_eval_data(source, store_location)


@dataclass
class SplitRows:
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    path: Path
    dropped: int  # rows of the split no longer done on both sides

    def part(self, name: str) -> np.ndarray:
        return getattr(self, name)


def load_split_rows(data: EvalData, split_path: str | os.PathLike[str] | None = None) -> SplitRows:
    """The split's rows, checked against the store's ids; rows not done on both sides are left out."""
    path = Path(split_path) if split_path is not None else data.adapter_path.parent / SPLIT_FILE
    if not path.is_file():
        raise UserError(
            f"no split file at {path} (the trainer writes split.json next to the adapter); pass --split"
        )
    try:
        raw = json.loads(path.read_text())
        rows = {p: np.asarray(raw["rows"][p], dtype=np.int64) for p in ("train", "val", "test")}
        ids = {p: [str(x) for x in raw["parts"][p]] for p in ("train", "val", "test")}
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise UserError(f"cannot read split file {path}: {type(e).__name__}: {e}") from None
    store_ids = data.meta["id"]
    ok = np.zeros(len(store_ids), bool)
    ok[data.usable] = True
    dropped = 0
    for p in rows:
        r = rows[p]
        if len(ids[p]) != r.size or (r.size and (r.min() < 0 or r.max() >= len(store_ids))):
            raise UserError(f"split {path} part {p!r} has rows outside store {data.store.location}")
        mismatch = [(int(i), x) for i, x in zip(r, ids[p], strict=True) if str(store_ids[i]) != x]
        if mismatch:
            i, x = mismatch[0]
            raise UserError(
                f"split {path} does not belong to store {data.store.location}: row {i} is {store_ids[i]!r} "
                f"there, {x!r} in the split ({len(mismatch)} rows differ); pass the matching --split or --store"
            )
        dropped += int((~ok[r]).sum())
        rows[p] = r[ok[r]]
    if rows["test"].size < 2:
        raise UserError(f"split {path} leaves {rows['test'].size} test rows; evaluation needs at least 2")
    return SplitRows(rows["train"], rows["val"], rows["test"], path, dropped)


def projected_chunks(
    adapter: Adapter, side: str, arr: EmbeddingArray, normalize: bool, wanted: np.ndarray | None = None
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(rows, embeddings through the adapter) of the done rows, chunk by chunk: memory stays one chunk.

    ``wanted`` (a boolean mask over rows) keeps only those rows; a chunk with none is not read at all,
    so bringing an index up to date costs the new rows, not the whole array."""
    for c in range(arr.n_chunks()):
        lo, hi = arr.chunk_bounds(c)
        if wanted is not None and not wanted[lo:hi].any():
            continue
        data, state, _ = arr.read_chunk(c)
        keep = state == DONE
        if wanted is not None:
            mask = np.zeros(hi - lo, bool)
            mask[: max(0, min(hi, wanted.size) - lo)] = wanted[lo:hi]
            keep &= mask
        done = np.flatnonzero(keep)
        if done.size == 0:
            continue
        with torch.no_grad():
            z = getattr(adapter, side)(torch.from_numpy(data[done])).float()
            if normalize:
                z = F.normalize(z, dim=-1)
        yield done + lo, z.numpy().astype(np.float32)
