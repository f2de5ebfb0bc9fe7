"""Zero-shot classification with words: the shared space is also a text space when one side's is.

Paper, section 5: CLIP's image space is shared with CLIP's text tower, so once VGGish is mapped into it,
audio can be labelled with words it never saw paired. The text tower is found through the encoders'
shared-space declaration, never by name (``inference.find_text_tower``, shared with ``ee query`` and the
public pipeline).

Each label becomes the mean of its normalised prompt embeddings (``TEMPLATES``, as CLIP's prompt
ensembling does); an item's label is the nearest of them by cosine.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..adapter import Adapter, load_adapter
from ..errors import UserError
from ..inference import (
    TextTower,
    decode_files,
    embed_items,
    file_kind,
    find_text_tower,
    side_encoder,
    side_for_modality,
)
from .data import SPLIT_FILE, AdapterSource

TEMPLATES: tuple[str, ...] = ("a photo of a {}.", "the sound of a {}.", "{}")


def parse_labels(labels: str | Sequence[str]) -> list[str]:
    items = labels.split(",") if isinstance(labels, str) else list(labels)
    out = [x.strip() for x in items if x.strip()]
    if len(out) < 2:
        raise UserError(f"give at least two labels (comma-separated), got {out!r}")
    if len(set(out)) != len(out):
        raise UserError(f"labels repeat: {out!r}")
    return out


def class_embeddings(
    adapter: Adapter, tower: TextTower, labels: Sequence[str], templates: Sequence[str] = TEMPLATES
) -> torch.Tensor:
    """``[n_labels, shared_dim]``, normalised: the mean of each label's normalised prompt embeddings."""
    prompts = [t.format(label.replace("_", " ")) for label in labels for t in templates]
    z = torch.from_numpy(embed_items(adapter, tower.side, tower.encoder, prompts))
    z = F.normalize(z, dim=-1).view(len(labels), len(templates), -1).mean(1)
    return F.normalize(z, dim=-1)


@dataclass
class ZeroShot:
    """Predictions for some items, and accuracy where their true labels are known."""

    labels: list[str]
    tower: str
    side: str
    names: list[str]  # file names or row ids
    top: list[list[tuple[str, float]]]  # per item: (label, cosine), best first
    truth: list[str | None] = field(default_factory=list)

    @property
    def scored(self) -> list[int]:
        return [i for i, t in enumerate(self.truth) if t is not None and t in self.labels]

    def accuracy(self, k: int = 1) -> float | None:
        idx = self.scored
        if not idx:
            return None
        return float(np.mean([self.truth[i] in [lab for lab, _ in self.top[i][:k]] for i in idx]))

    @property
    def chance(self) -> float:
        return 1.0 / len(self.labels)

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "labels": self.labels,
            "text_tower": self.tower,
            "side": self.side,
            "items": len(self.names),
        }
        if self.scored:
            out.update(
                {
                    "scored": len(self.scored),
                    "top1": self.accuracy(1),
                    "top5": self.accuracy(5),
                    "chance_top1": self.chance,
                    "chance_top5": min(1.0, 5 / len(self.labels)),
                }
            )
        return out


def classify(
    z: np.ndarray | torch.Tensor, classes: torch.Tensor, labels: Sequence[str], k: int = 5
) -> list[list[tuple[str, float]]]:
    zt = torch.from_numpy(np.asarray(z, np.float32)) if isinstance(z, np.ndarray) else z.float()
    sims = F.normalize(zt, dim=-1) @ classes.T  # [n, n_labels]
    top = torch.topk(sims, min(k, len(labels)), dim=1)
    return [
        [(labels[j], float(v)) for v, j in zip(vals.tolist(), idx.tolist(), strict=True)]
        for vals, idx in zip(top.values, top.indices, strict=True)
    ]


def _default_side(adapter: Adapter, tower: TextTower) -> str:
    """The side to label: the other side than the text tower's (audio, for clip + vggish)."""
    other = "b" if tower.side == "a" else "a"
    if getattr(adapter.config, other).identity.modality != "text":
        return other
    return tower.side


def _files_modality(adapter: Adapter, paths: Sequence[Path], side: str | None) -> str | None:
    """The one modality of the files (None for videos only, which fit either side), checked before any
    encoder loads: every file exists, and all but videos are of one modality the adapter takes."""
    first: tuple[Path, str] | None = None
    for p in paths:
        if not p.exists():
            raise UserError(f"no such file: {p}")
        kind = file_kind(p)
        if kind == "video":
            continue
        if first is None:
            first = (p, kind)
            side_for_modality(adapter, kind, side)
        elif kind != first[1]:
            raise UserError(f"{p} is {kind}, but {first[0]} is {first[1]}: label one modality per run")
    return None if first is None else first[1]


def zeroshot_files(
    adapter_path: str | os.PathLike[str],
    files: Sequence[str | os.PathLike[str]],
    labels: str | Sequence[str],
    templates: Sequence[str] = TEMPLATES,
    side: str | None = None,
    k: int = 5,
) -> ZeroShot:
    """Label each file with the nearest of ``labels``; the file's type picks the adapter side."""
    if not files:
        raise UserError("give at least one FILE to label (or --manifest / --store)")
    adapter = load_adapter(adapter_path)
    names = parse_labels(labels)
    modality = _files_modality(adapter, [Path(f) for f in files], side)
    tower = find_text_tower(adapter)
    if modality is None:  # videos only: they go to the side that is not the text tower's
        modality = getattr(adapter.config, side or _default_side(adapter, tower)).identity.modality
    s = side_for_modality(adapter, modality, side)
    enc = side_encoder(adapter, s)
    z = embed_items(adapter, s, enc, decode_files(files, modality, enc.decoding))
    top = classify(z, class_embeddings(adapter, tower, names, templates), names, k)
    return ZeroShot(names, tower.how, s, [str(f) for f in files], top, [None] * len(files))


def zeroshot_manifest(
    adapter_path: str | os.PathLike[str],
    manifest_path: str | os.PathLike[str],
    labels: str | Sequence[str] | None = None,
    templates: Sequence[str] = TEMPLATES,
    side: str | None = None,
    part: str | None = None,
    k: int = 5,
) -> ZeroShot:
    """Label one side of a manifest's pairs; top-1/top-5 accuracy against the manifest's labels.

    ``labels`` defaults to the manifest's own labels; ``part`` ("train", "val", "test") keeps the pairs of
    that part of the adapter's split.json only.
    """
    from ..decode import decode
    from ..errors import BadItem
    from ..manifest import read_manifest

    adapter = load_adapter(adapter_path)
    manifest = read_manifest(manifest_path)
    tower = find_text_tower(adapter)
    s = side or _default_side(adapter, tower)
    pairs = manifest.pairs
    if part is not None:
        keep = set(_split_ids(Path(adapter_path), part))
        pairs = [p for p in pairs if p.id in keep]
    truth_all = [p.label for p in pairs]
    names = parse_labels(labels) if labels is not None else sorted({t for t in truth_all if t})
    if labels is None and len(names) < 2:
        raise UserError(f"manifest {manifest_path} has {len(names)} distinct labels; give --labels")
    want = getattr(adapter.config, s).identity.modality
    if manifest.modality(s) != want:
        raise UserError(
            f"manifest side {s} holds {manifest.modality(s)}, adapter side {s} takes {want}; "
            "the manifest must have the adapter's sides"
        )
    enc = side_encoder(adapter, s)
    items, ids, truth, bad = [], [], [], 0
    for p in pairs:
        try:
            items.append(decode(p.side(s), manifest.root, enc.decoding))
        except BadItem:
            bad += 1
            continue
        ids.append(p.id)
        truth.append(p.label)
    if not items:
        raise UserError(f"no decodable side-{s} items in {manifest_path} ({bad} failed)")
    z = embed_items(adapter, s, enc, items)
    top = classify(z, class_embeddings(adapter, tower, names, templates), names, k)
    return ZeroShot(names, tower.how, s, ids, top, truth)


def zeroshot_store(
    adapter_path: AdapterSource,
    store_location: str | None = None,
    labels: str | Sequence[str] | None = None,
    templates: Sequence[str] = TEMPLATES,
    side: str | None = None,
    part: str | None = "test",
    k: int = 5,
) -> ZeroShot:
    """The same on embeddings already in the store (no decoding): the test rows of the split by default.

    ``adapter_path`` may be an open :class:`EvalData` (``ee eval --zeroshot`` passes the one it scored).
    """
    from .data import eval_data, load_split_rows

    data = eval_data(adapter_path, store_location)
    adapter = data.adapter
    tower = find_text_tower(adapter)
    s = side or _default_side(adapter, tower)
    rows = data.usable if part is None else load_split_rows(data, None).part(part)
    truth = [str(x) or None for x in data.meta["label"][rows]]
    names = parse_labels(labels) if labels is not None else sorted({t for t in truth if t})
    if labels is None and len(names) < 2:
        raise UserError(f"store {data.store.location} has {len(names)} distinct labels; give --labels")
    z = getattr(adapter, s)(data.arrays[s].read(rows))
    top = classify(z, class_embeddings(adapter, tower, names, templates), names, k)
    return ZeroShot(names, tower.how, s, [str(x) for x in data.meta["id"][rows]], top, truth)


def _split_ids(adapter_path: Path, part: str) -> list[str]:
    import json

    if part not in ("train", "val", "test"):
        raise UserError(f"part must be train, val or test, not {part!r}")
    path = adapter_path.parent / SPLIT_FILE
    try:
        return [str(x) for x in json.loads(path.read_text())["parts"][part]]
    except (OSError, ValueError, KeyError) as e:
        raise UserError(f"cannot read the split next to the adapter ({path}): {e}") from None
