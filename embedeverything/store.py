"""The Zarr (v3) embedding store: one per dataset, one array per (side, encoder, options).

Layout (see docs/store.md)::

    STORE/                       attrs: ee_store (format), manifest
      rows/id, rows/group, rows/split, rows/label     [N] str, keyed by the manifest's ids
      embeddings/<side>.<encoder>-<hash>/             attrs: side, encoder, options, dim, chunk_rows, identity
        data   [N, dim] float32, chunks (R, dim)
        state  [N] uint8, chunks (R,)    0 pending, 1 done, 2 failed
        error  [N] str,   chunks (R,)    the reason of a failure

``data``, ``state`` and ``error`` are chunked along rows alike, so the writer of row block k owns chunk k
of all three: no two writers ever share a chunk, and zarr (>= 3.1.3) writes each chunk file atomically.
A block is marked done (``state``) only after its data are written: a kill between the two costs a
recomputation of that block, never a row marked done without its data. No sharding codec: a shard is
rewritten whole on every write, which would make the shard, not the chunk, the unit of ownership.
Rows are appended, never reordered: a grown manifest maps every known id to its row.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from . import locks
from .arrays import DONE, FAILED, PENDING, EmbeddingArray, paired_rows
from .errors import StoreError, UserError, writing

__all__ = ["DONE", "FAILED", "PENDING", "EmbeddingArray", "Store", "is_url", "local_path", "paired_rows"]

STORE_FORMAT = 1
ROW_FIELDS = ("id", "group", "split", "label")
ROWS_CHUNK = 65536
DEFAULT_CHUNK_ROWS = 256


def is_url(location: str) -> bool:
    return "://" in location and not location.startswith("file://")


def local_path(location: str) -> Path | None:
    """The folder of a store on local disk, or None for object storage."""
    if location.startswith("file://"):
        return Path(location[len("file://") :])
    return None if is_url(location) else Path(location)


def _open_root(loc: str, path: Path | None, read_only: bool) -> Any:
    """The root group, initialised as an empty store if new (under the index lock for a writer)."""
    import zarr

    try:
        root = zarr.open_group(
            str(path) if path is not None else loc, mode="r" if read_only else "a", zarr_format=3
        )
    except FileNotFoundError:
        raise UserError(f"no embedding store at {loc}") from None
    except Exception as e:
        raise StoreError(f"cannot open store {loc}: {type(e).__name__}: {e}") from None
    fmt = root.attrs.get("ee_store")
    if fmt is None:
        if read_only or _has_members(root):
            raise StoreError(f"{loc} is a Zarr group but not an embedeverything store")
        root.attrs.update({"ee_store": STORE_FORMAT, "rows": 0})  # one write: whole or absent
    elif int(fmt) > STORE_FORMAT:
        raise StoreError(f"{loc}: store format {fmt} is newer than this embedeverything ({STORE_FORMAT})")
    return root


def _has_members(root: Any) -> bool:
    import warnings

    with warnings.catch_warnings():  # our own lock folder is no Zarr node, and zarr says so
        warnings.filterwarnings("ignore", message=".*not recognized as a component of a Zarr hierarchy")
        return any(True for _ in root.members())


class Store:
    """A dataset's embeddings. Open with :meth:`open` (a path or an fsspec URL)."""

    def __init__(self, location: str, root: Any):
        self.location = location
        self.root = root

    # ---- opening ------------------------------------------------------------------------------
    @classmethod
    def open(cls, location: str | os.PathLike[str], create: bool = False, read_only: bool = False) -> Store:
        loc = str(location)
        path = local_path(loc)
        if path is not None and not (path / "zarr.json").exists():
            if not create:
                raise UserError(f"no embedding store at {loc} (run `ee embed` first)")
            path.mkdir(parents=True, exist_ok=True)
        # a writer makes the root under the index lock: two first writers must not both initialise it
        with contextlib.nullcontext() if read_only else locks.index_lock(path):
            return cls(loc, _open_root(loc, path, read_only))

    # ---- rows ---------------------------------------------------------------------------------
    @contextlib.contextmanager
    def index_lock(self) -> Iterator[None]:
        """Hold the store's index lock with the root's metadata read afresh (see ``locks.py``)."""
        with locks.index_lock(local_path(self.location)):
            import zarr

            self.root = zarr.open_group(self._zarr_location(), mode="a", zarr_format=3)
            yield

    def _zarr_location(self) -> str:
        path = local_path(self.location)
        return str(path) if path is not None else self.location

    def _rows_array(self, name: str) -> Any:
        if f"rows/{name}" not in self.root:
            self.root.create_array(f"rows/{name}", shape=(0,), chunks=(ROWS_CHUNK,), dtype=str)
        return self.root[f"rows/{name}"]

    @property
    def n_rows(self) -> int:
        """Rows committed: the ``rows`` attribute, written only after the row arrays hold them.

        A kill in the middle of appending rows leaves longer arrays behind; their tail is ignored and
        overwritten by the next sync.
        """
        return int(self.root.attrs.get("rows", 0))

    def _field(self, name: str) -> np.ndarray:
        n = self.n_rows
        if f"rows/{name}" not in self.root or n == 0:
            return np.array([], object)
        return np.asarray(self.root[f"rows/{name}"][:n], dtype=object)

    def ids(self) -> np.ndarray:
        return self._field("id")

    def rows(self) -> dict[str, np.ndarray]:
        """Row metadata: id, group, split, label ("" where unknown), in row order."""
        return {f: self._field(f) for f in ROW_FIELDS}

    def sync_rows(self, pairs: Sequence[Any]) -> tuple[np.ndarray, int]:
        """Append the pairs whose ids are new (in manifest order); refresh the others' metadata.

        Returns the row of every pair (aligned with ``pairs``) and how many rows were appended. The whole
        read-modify-write runs under the index lock, on the row list as it is on disk then: a writer
        that read it before another appended would give its rows the other's row numbers.
        """
        with self.index_lock(), writing(self.location, "the row index"):
            return self._sync_rows(pairs)

    def _sync_rows(self, pairs: Sequence[Any]) -> tuple[np.ndarray, int]:
        old = self.rows()
        n_old = len(old["id"])
        index = {str(i): r for r, i in enumerate(old["id"])}
        new = [p for p in pairs if p.id not in index]
        for k, p in enumerate(new):
            index[p.id] = n_old + k
        rows = np.array([index[p.id] for p in pairs], dtype=np.int64)
        n = n_old + len(new)
        full = {f: np.concatenate([old[f], np.full(len(new), "", dtype=object)]) for f in ROW_FIELDS}
        changed = bool(new)
        for p, r in zip(pairs, rows, strict=True):
            for f, v in (
                ("id", p.id),
                ("group", p.group_key),
                ("split", p.split or ""),
                ("label", p.label or ""),
            ):
                if full[f][r] != v:
                    full[f][r] = v
                    changed = True
        if changed:
            for f in ROW_FIELDS:
                arr = self._rows_array(f)
                if arr.shape[0] < n:
                    arr.resize((n,))
                arr[:n] = np.asarray(full[f], dtype=str)
            self.root.attrs["rows"] = n  # the commit: only now do readers see the new rows
        return rows, len(new)

    # ---- embedding arrays -----------------------------------------------------------------------
    def keys(self) -> list[str]:
        """Arrays that exist whole (a creation cut short by a kill has no ``state`` yet)."""
        if "embeddings" not in self.root:
            return []
        groups = self.root["embeddings"]
        return sorted(k for k in groups.group_keys() if "state" in groups[k])

    def arrays(self) -> list[EmbeddingArray]:
        return [self.embedding(k) for k in self.keys()]

    def embedding(self, key: str) -> EmbeddingArray:
        if key not in self.keys():
            known = ", ".join(self.keys()) or "none"
            raise UserError(f"store {self.location} has no array {key!r} (arrays: {known})")
        return EmbeddingArray(self, key, self.root[f"embeddings/{key}"])

    def failures(self, key: str | None = None) -> Iterator[tuple[str, str, str]]:
        """(array, row id, reason) of every failed row, of array ``key`` or of every array."""
        ids = self.ids()
        for arr in self.arrays() if key is None else [self.embedding(key)]:
            errs = arr.errors()
            for r in np.flatnonzero(arr.state() == FAILED):
                yield arr.key, str(ids[r]), str(errs[r])

    def find(self, side: str | None = None, encoder: str | None = None) -> list[EmbeddingArray]:
        return [
            a
            for a in self.arrays()
            if (side is None or a.side == side) and (encoder is None or a.encoder == encoder)
        ]

    def ensure_embedding(
        self,
        key: str,
        *,
        side: str,
        encoder: str,
        options: dict[str, Any],
        dim: int,
        chunk_rows: int,
        chunk_source: str = "",
    ) -> EmbeddingArray:
        """The array for ``key``, created if new, grown to the store's row count (under the index lock:
        two writers creating arrays at once would both create the ``embeddings`` group).

        ``chunk_source`` says how ``chunk_rows`` was chosen; both stay for the array's life."""
        with self.index_lock(), writing(self.location, f"array {key}"):
            return self._ensure_embedding(key, side, encoder, options, dim, chunk_rows, chunk_source)

    def _ensure_embedding(
        self,
        key: str,
        side: str,
        encoder: str,
        options: dict[str, Any],
        dim: int,
        chunk_rows: int,
        chunk_source: str,
    ) -> EmbeddingArray:
        path = f"embeddings/{key}"
        if key not in self.keys():
            # new, or a creation that a kill cut short: (re)made whole; nothing in it was marked done
            g = self.root.create_group(path, overwrite=True)
            g.attrs.update(
                {
                    "side": side,
                    "encoder": encoder,
                    "options": options,
                    "dim": int(dim),
                    "chunk_rows": int(chunk_rows),
                    "chunk_rows_source": chunk_source,
                }
            )
            n = self.n_rows
            # state last: it is what makes the array count as present
            g.create_array("data", shape=(n, dim), chunks=(chunk_rows, dim), dtype="float32", fill_value=0.0)
            g.create_array("error", shape=(n,), chunks=(chunk_rows,), dtype=str)
            g.create_array("state", shape=(n,), chunks=(chunk_rows,), dtype="uint8", fill_value=PENDING)
        arr = self.embedding(key)
        if arr.dim != dim:
            raise StoreError(f"array {key} holds dim {arr.dim}, the encoder now says {dim}")
        arr.resize(self.n_rows)
        return arr

    def remove_embedding(self, key: str) -> None:
        """Delete one array, ``state`` first: a kill part-way leaves a creation cut short, which
        :meth:`keys` does not list and :meth:`ensure_embedding` makes again whole. Take the array's
        :meth:`writer_lock` around it."""
        self.embedding(key)  # an unknown key is the user's mistake, said as such
        group = self.root[f"embeddings/{key}"]
        del group["state"]
        del self.root["embeddings"][key]

    # ---- locking and housekeeping ----------------------------------------------------------------
    @contextlib.contextmanager
    def writer_lock(self, key: str) -> Iterator[None]:
        """One ``ee embed`` per array at a time (on local disk; see ``locks.py``)."""
        with locks.array_lock(local_path(self.location), key):
            self.remove_partial_files(key)
            yield

    def remove_partial_files(self, key: str) -> int:
        """Delete temporary chunk files a killed writer left (zarr writes ``*.partial`` then renames)."""
        path = local_path(self.location)
        if path is None:
            return 0
        n = 0
        for p in (path / "embeddings" / key).rglob("*.partial"):
            p.unlink(missing_ok=True)
            n += 1
        return n
