"""Train / validation / test split, grouped by source, with a fixed seed; saved as ``split.json``.

Groups (all pairs cut from one video) never straddle two parts, or a test figure would measure
memory of the source rather than generalisation. When the manifest gives a split it is used as is;
rows without one, and a manifest with only train/test, get their validation part carved out of train by
group. The paper's 67/33 is (train + validation) / test. ``split.json`` holds the row ids of each part so
that evaluation touches exactly the test rows training never saw.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import UserError
from ..files import write_text_atomic

PARTS = ("train", "val", "test")
SPLIT_FILE = "split.json"


@dataclass
class Split:
    """Rows (store row indices, sorted) of each part, and how they were chosen."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    seed: int
    source: str  # "manifest", "manifest+carved" or "random"
    fractions: tuple[float, float, float]

    def part(self, name: str) -> np.ndarray:
        return getattr(self, name)

    def counts(self) -> dict[str, int]:
        return {p: int(self.part(p).size) for p in PARTS}

    def to_json(self, ids: np.ndarray) -> dict:
        return {
            "seed": self.seed,
            "source": self.source,
            "fractions": list(self.fractions),
            "counts": self.counts(),
            "parts": {p: [str(ids[r]) for r in self.part(p)] for p in PARTS},
            "rows": {p: self.part(p).tolist() for p in PARTS},
        }


def refit_rows(train: np.ndarray, val: np.ndarray) -> np.ndarray:
    """The rows a refit trains on: the train and validation parts together, sorted."""
    return np.sort(np.concatenate([np.asarray(train, np.int64), np.asarray(val, np.int64)]))


def rows_hash(ids: np.ndarray, rows: np.ndarray) -> str:
    """sha256 over the ids of ``rows`` in order: which data an adapter was trained on."""
    h = hashlib.sha256()
    for r in rows:
        h.update(str(ids[r]).encode())
        h.update(b"\n")
    return "sha256:" + h.hexdigest()


def _assign_groups(
    rows: np.ndarray, groups: np.ndarray, fractions: list[float], rng: np.random.Generator
) -> list[np.ndarray]:
    """Shuffle the groups, then fill the parts in order up to their share of rows."""
    uniq, inverse = np.unique(groups[rows].astype(str), return_inverse=True)
    order = rng.permutation(len(uniq))
    sizes = np.bincount(inverse, minlength=len(uniq))
    total = float(rows.size)
    bounds = np.cumsum(fractions) / max(1e-12, sum(fractions)) * total
    part_of_group = np.empty(len(uniq), dtype=np.int64)
    filled = 0.0
    k = 0
    for g in order:
        # a group goes to the first part whose share is not yet full at the group's midpoint
        mid = filled + sizes[g] / 2.0
        while k < len(fractions) - 1 and mid > bounds[k]:
            k += 1
        part_of_group[g] = k
        filled += sizes[g]
    part = part_of_group[inverse]
    return [np.sort(rows[part == i]) for i in range(len(fractions))]


def make_split(
    usable: np.ndarray,
    meta: dict[str, np.ndarray],
    seed: int = 0,
    fractions: tuple[float, float, float] = (0.57, 0.10, 0.33),
) -> Split:
    """Split ``usable`` rows (done on both sides) by the manifest's split, else grouped at random."""
    if len(fractions) != 3 or any(f < 0 for f in fractions) or not sum(fractions) > 0:
        raise UserError(f"split fractions {fractions!r}: expected three numbers >= 0 (train, val, test)")
    usable = np.sort(np.asarray(usable, dtype=np.int64))
    if usable.size < 3:
        raise UserError(f"only {usable.size} pairs are embedded on both sides; training needs at least 3")
    groups = meta["group"]
    given = meta["split"][usable].astype(str)
    rng = np.random.default_rng(seed)
    if (given != "").any():
        test = usable[given == "test"]
        val = usable[given == "val"]
        pool = usable[(given == "train") | (given == "")]
        source = "manifest"
        if val.size == 0 and pool.size:
            tr, va = fractions[0], fractions[1]
            pool, val = _assign_groups(pool, groups, [tr, va], rng)
            source = "manifest+carved"
        train = pool
        if (given == "").any():
            source += f" ({int((given == '').sum())} rows without a split went to train)"
    else:
        train, val, test = _assign_groups(usable, groups, list(fractions), rng)
        source = "random"
    if train.size < 2:
        raise UserError(
            f"the split leaves {train.size} training pairs; need at least 2 (more data, or other fractions)"
        )
    if val.size == 0:
        # tiny sets: borrow one group from train so that validation has something to measure
        train, val = _assign_groups(train, groups, [0.8, 0.2], rng)
        if val.size == 0 or train.size < 2:
            raise UserError(
                "too few groups to make a validation part; add pairs or give a split in the manifest"
            )
    return Split(train, val, test, seed, source, tuple(float(f) for f in fractions))


def save_split(split: Split, ids: np.ndarray, out_dir: str | os.PathLike[str]) -> Path:
    path = Path(out_dir) / SPLIT_FILE
    write_text_atomic(path, json.dumps(split.to_json(ids)))
    return path


def load_split(path: str | os.PathLike[str]) -> Split:
    """A split written by :func:`save_split` (evaluation uses its test rows)."""
    try:
        raw = json.loads(Path(path).read_text())
        rows = {p: np.asarray(raw["rows"][p], dtype=np.int64) for p in PARTS}
        return Split(
            rows["train"],
            rows["val"],
            rows["test"],
            int(raw["seed"]),
            str(raw["source"]),
            tuple(raw["fractions"]),
        )
    except (OSError, ValueError, KeyError) as e:
        raise UserError(f"cannot read split file {path}: {e}") from None
