"""``ee query``: the nearest items of the other modality for one input (a file, or words).

The gallery is a store's array of the other side, projected through the adapter chunk by chunk with a
running top-k, so a store of any size is searched in bounded memory. Words are accepted whenever the
adapter has a text side, or a side whose space a text encoder shares (``clip-text`` for ``clip``), so
``ee query adapter.safetensors "a dog barking" --against store`` finds sounds.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..adapter import Adapter, load_adapter
from ..errors import EEWarning, UserError
from ..files import read_user_text
from ..inference import (
    decode_files,
    embed_items,
    file_kind,
    find_text_tower,
    side_encoder,
    side_for_modality,
)
from ..search.lookup import SearchIndex, open_index
from ..search.state import default_index
from ..store import Store
from .data import matching_array, projected_chunks, resolve_store_location

# an input ending like this is meant as a file, not as words
KNOWN_SUFFIXES = frozenset({".wav", ".mp3", ".flac", ".ogg", ".jpg", ".jpeg", ".png", ".mp4", ".txt"})


@dataclass
class Hit:
    rank: int
    id: str
    score: float
    label: str
    split: str


@dataclass
class QueryResult:
    query: str
    side: str  # the side the input went through
    gallery: str  # the side searched
    how: str
    hits: list[Hit] = field(default_factory=list)
    searched: str = "exact scan of the store"  # or the index that answered


def _plan(adapter: Adapter, item: str, side: str | None) -> tuple[str, str, str | Path]:
    """Where one input goes, checked without loading an encoder: (side or "tower", modality, payload).

    A file of a known kind is read as that modality (a video as the frame for an image side, else as
    audio); a ``.txt`` file and anything that is not a file are words.
    """
    cfg = adapter.config
    path = Path(item)
    if path.exists() and file_kind(path) != "text":
        modality = file_kind(path)
        if modality == "video":  # the frame for an image side, else the audio
            takes = {getattr(cfg, s).identity.modality for s in ("ab" if side is None else side)}
            modality = "image" if "image" in takes else "audio"
        return side_for_modality(adapter, modality, side), modality, path
    if not path.exists() and path.suffix.lower() in KNOWN_SUFFIXES:
        raise UserError(f"no such file: {path}")
    text = read_user_text(path).strip() if path.is_file() else item
    for s in ("a", "b"):
        if getattr(cfg, s).identity.modality == "text" and side in (None, s):
            return s, "text", text
    return "tower", "text", text


def embed_queries(
    adapter: Adapter, items: Sequence[str], side: str | None = None
) -> list[tuple[np.ndarray, str, str]]:
    """Each input in the shared space ``[dim]``, with the side it went through and how.

    Every input is checked before any encoder loads; inputs of one kind are embedded in one call, and each
    encoder is loaded once.
    """
    plans = [_plan(adapter, item, side) for item in items]
    groups: dict[tuple[str, str], list[int]] = {}
    for i, (s, modality, _) in enumerate(plans):
        groups.setdefault((s, modality), []).append(i)
    out: list[tuple[np.ndarray, str, str]] = [None] * len(items)  # type: ignore[list-item]
    for (s, modality), idx in groups.items():
        payload = [plans[i][2] for i in idx]
        if s == "tower":
            tower = find_text_tower(adapter)
            s, enc, how = tower.side, tower.encoder, tower.how
        else:
            enc = side_encoder(adapter, s)
            how = f"{enc.name} (side {s})"
        decoded = payload if modality == "text" else decode_files(payload, modality, enc.decoding)
        z = embed_items(adapter, s, enc, decoded)
        for row, i in enumerate(idx):
            out[i] = (z[row], s, how)
    return out


def _nearest(
    adapter: Adapter, side: str, arr: Any, queries: np.ndarray, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scores and rows ``[n_queries, <=k]`` of the ``k`` nearest rows of ``arr`` for each query, best
    first, over the gallery chunk by chunk."""
    q = F.normalize(torch.from_numpy(queries), dim=-1)  # [nq, dim]
    best_s = torch.empty(len(q), 0)
    best_r = torch.empty(len(q), 0, dtype=torch.long)
    for rows, zg in projected_chunks(adapter, side, arr, normalize=True):
        best_s = torch.cat([best_s, q @ torch.from_numpy(zg).T], dim=1)  # [nq, m + rows]
        best_r = torch.cat([best_r, torch.from_numpy(rows).expand(len(q), -1)], dim=1)
        if best_s.shape[1] > k:
            top = torch.topk(best_s, k, dim=1)
            best_s, best_r = top.values, torch.gather(best_r, 1, top.indices)
    order = torch.argsort(best_s, dim=1, descending=True, stable=True)[:, :k]
    return torch.gather(best_s, 1, order), torch.gather(best_r, 1, order)


def query_many(
    adapter_path: str | os.PathLike[str],
    items: Sequence[str],
    store_location: str | None = None,
    k: int = 5,
    side: str | None = None,
    gallery: str | None = None,
    index: str | os.PathLike[str] | None = None,
) -> list[QueryResult]:
    """The ``k`` nearest stored items of the other side for each input; the adapter, its encoders and
    the store are opened once (``gallery`` overrides which side is searched).

    A search index (``index``, default ``index/`` beside the adapter; see :mod:`..search`) answers
    where it is current for the store and side; where it is stale a warning says what, and the store
    is scanned exactly."""
    if k < 1:
        raise UserError(f"--k must be >= 1, not {k}")
    if gallery not in (None, "a", "b"):
        raise UserError(f"gallery side must be a or b, not {gallery!r}")
    if not items:
        raise UserError("give at least one query")
    path = Path(adapter_path)
    adapter = load_adapter(path)
    embedded = embed_queries(adapter, items, side)
    location = resolve_store_location(path, adapter, store_location)
    store = Store.open(location, read_only=True)
    meta = store.rows()
    results = [
        QueryResult(str(item), s, gallery or ("b" if s == "a" else "a"), how)
        for item, (_, s, how) in zip(items, embedded, strict=True)
    ]
    wanted = sorted({r.gallery for r in results})
    arrays = {g: matching_array(store, g, getattr(adapter.config, g)) for g in wanted}
    found = open_index(index if index is not None else default_index(path), path, location, arrays)
    for g in wanted:
        idx = [i for i, r in enumerate(results) if r.gallery == g]
        arr = arrays[g]
        queries = np.stack([embedded[i][0] for i in idx])
        scores, rows, searched = _search(adapter, g, arr, queries, k, found, meta["id"])
        if scores.shape[1] == 0:
            raise UserError(f"array {arr.key} of store {store.location} has no embedded rows to search")
        for i, sc, rw in zip(idx, scores.tolist(), rows.tolist(), strict=True):
            results[i].searched = searched
            results[i].hits = [
                Hit(rank + 1, str(meta["id"][r]), float(v), str(meta["label"][r]), str(meta["split"][r]))
                for rank, (v, r) in enumerate(zip(sc, rw, strict=True))
            ]
    return results


def _search(
    adapter: Adapter,
    side: str,
    arr: Any,
    queries: np.ndarray,
    k: int,
    found: SearchIndex | None,
    ids: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, str]:
    """(scores, rows, how it was searched): through the index where it is current, else exactly."""
    if found is not None:
        table, why = found.usable(side, arr, ids)
        if table is not None:
            unit = queries / np.maximum(np.linalg.norm(queries, axis=1, keepdims=True), 1e-12)
            return found.search(side, table, unit.astype(np.float32), k)
        warnings.warn(
            f"index {found.path} is stale for side {side} ({why}): searching exactly; "
            "run `ee index` to bring it up to date",
            EEWarning,
            stacklevel=3,
        )
    scores, rows = _nearest(adapter, side, arr, queries, k)
    return scores.numpy(), rows.numpy(), "exact scan of the store"


def query(
    adapter_path: str | os.PathLike[str],
    item: str,
    store_location: str | None = None,
    k: int = 5,
    side: str | None = None,
    gallery: str | None = None,
) -> QueryResult:
    """The ``k`` nearest stored items of the other side (``gallery`` overrides which side is searched)."""
    return query_many(adapter_path, [item], store_location, k, side, gallery)[0]
