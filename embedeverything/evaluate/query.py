"""``ee query``: the nearest items of the other modality for one input (a file, or words).

The gallery is a store's array of the other side, projected through the adapter chunk by chunk with a
running top-k, so a store of any size is searched in bounded memory. Words are accepted whenever the
adapter has a text side, or a side whose space a text encoder shares (``clip-text`` for ``clip``), so
``ee query adapter.safetensors "a dog barking" --against store`` finds sounds.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..adapter import Adapter, load_adapter
from ..errors import UserError
from ..inference import decode_files, embed_items, file_kind, side_encoder, side_for_modality
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


def embed_query(adapter: Adapter, item: str, side: str | None = None) -> tuple[np.ndarray, str, str]:
    """The input in the shared space ``[1, dim]``, the side it went through, and how."""
    cfg = adapter.config
    path = Path(item)
    if path.exists() and file_kind(path) != "text":
        modality = file_kind(path)
        if modality == "video":  # the frame for an image side, else the audio
            takes = {getattr(cfg, s).identity.modality for s in ("ab" if side is None else side)}
            modality = "image" if "image" in takes else "audio"
        s = side_for_modality(adapter, modality, side)
        enc = side_encoder(adapter, s)
        return embed_items(adapter, s, enc, decode_files([path], modality)), s, f"{enc.name} (side {s})"
    if not path.exists() and path.suffix.lower() in KNOWN_SUFFIXES:
        raise UserError(f"no such file: {path}")
    text = path.read_text(encoding="utf-8").strip() if path.is_file() else item
    for s in ("a", "b"):
        if getattr(cfg, s).identity.modality == "text" and side in (None, s):
            enc = side_encoder(adapter, s)
            return embed_items(adapter, s, enc, [text]), s, f"{enc.name} (side {s})"
    from .zeroshot import find_text_tower

    tower = find_text_tower(adapter)
    return embed_items(adapter, tower.side, tower.encoder, [text]), tower.side, tower.how


def query(
    adapter_path: str | os.PathLike[str],
    item: str,
    store_location: str | None = None,
    k: int = 5,
    side: str | None = None,
    gallery: str | None = None,
) -> QueryResult:
    """The ``k`` nearest stored items of the other side (``gallery`` overrides which side is searched)."""
    if k < 1:
        raise UserError(f"--k must be >= 1, not {k}")
    path = Path(adapter_path)
    adapter = load_adapter(path)
    z, s, how = embed_query(adapter, item, side)
    g = gallery or ("b" if s == "a" else "a")
    if g not in ("a", "b"):
        raise UserError(f"gallery side must be a or b, not {g!r}")
    store = Store.open(resolve_store_location(path, adapter, store_location), read_only=True)
    arr = matching_array(store, g, getattr(adapter.config, g))
    q = F.normalize(torch.from_numpy(z), dim=-1)[0]
    best_s = torch.empty(0)
    best_r = torch.empty(0, dtype=torch.long)
    for rows, zg in projected_chunks(adapter, g, arr, normalize=True):
        best_s = torch.cat([best_s, torch.from_numpy(zg) @ q])
        best_r = torch.cat([best_r, torch.from_numpy(rows)])
        if best_s.numel() > k:
            top = torch.topk(best_s, k)
            best_s, best_r = top.values, best_r[top.indices]
    if best_s.numel() == 0:
        raise UserError(f"array {arr.key} of store {store.location} has no embedded rows to search")
    order = torch.argsort(best_s, descending=True, stable=True)[:k]
    meta = store.rows()
    hits = [
        Hit(
            rank=i + 1,
            id=str(meta["id"][int(best_r[j])]),
            score=float(best_s[j]),
            label=str(meta["label"][int(best_r[j])]),
            split=str(meta["split"][int(best_r[j])]),
        )
        for i, j in enumerate(order.tolist())
    ]
    return QueryResult(str(item), s, g, how, hits)
