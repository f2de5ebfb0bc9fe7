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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .encoder import EncoderIdentity
from .errors import StoreError, UserError

STORE_FORMAT = 1
PENDING, DONE, FAILED = 0, 1, 2
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


@dataclass
class EmbeddingArray:
    """One (side, encoder, options) array of a store, with its per-row state."""

    store: Store
    key: str
    group: Any  # zarr.Group

    @property
    def side(self) -> str:
        return str(self.group.attrs["side"])

    @property
    def encoder(self) -> str:
        return str(self.group.attrs["encoder"])

    @property
    def options(self) -> dict[str, Any]:
        return dict(self.group.attrs.get("options", {}))

    @property
    def dim(self) -> int:
        return int(self.group.attrs["dim"])

    @property
    def chunk_rows(self) -> int:
        return int(self.group.attrs["chunk_rows"])

    @property
    def identity(self) -> EncoderIdentity | None:
        raw = self.group.attrs.get("identity")
        return None if raw is None else EncoderIdentity.model_validate(raw)

    def set_identity(self, identity: EncoderIdentity) -> None:
        self.group.attrs["identity"] = identity.model_dump(mode="json")

    @property
    def data(self) -> Any:
        return self.group["data"]

    @property
    def n_rows(self) -> int:
        return int(self.group["state"].shape[0])

    def state(self) -> np.ndarray:
        return np.asarray(self.group["state"][:], dtype=np.uint8)

    def errors(self) -> np.ndarray:
        return np.asarray(self.group["error"][:], dtype=object)

    def counts(self) -> dict[str, int]:
        st = self.state()
        return {
            "rows": int(st.size),
            "done": int((st == DONE).sum()),
            "failed": int((st == FAILED).sum()),
            "pending": int((st == PENDING).sum()),
        }

    def n_chunks(self) -> int:
        return -(-self.n_rows // self.chunk_rows)

    def chunk_bounds(self, chunk: int) -> tuple[int, int]:
        lo = chunk * self.chunk_rows
        return lo, min(lo + self.chunk_rows, self.n_rows)

    def pending_chunks(self, rows: np.ndarray | None = None) -> list[int]:
        """Chunks holding pending rows (restricted to ``rows`` when given: rows still in the manifest)."""
        st = self.state()
        mask = st == PENDING
        if rows is not None:
            keep = np.zeros_like(mask)
            keep[rows[rows < st.size]] = True
            mask &= keep
        return sorted({int(r) // self.chunk_rows for r in np.flatnonzero(mask)})

    def resize(self, n: int) -> None:
        if n < self.n_rows:
            raise StoreError(f"array {self.key} has {self.n_rows} rows; it never shrinks (asked {n})")
        # each array on its own: a kill between two resizes leaves them of different lengths
        for name in ("data", "error", "state"):
            arr = self.group[name]
            if arr.shape[0] != n:
                arr.resize((n, *arr.shape[1:]))

    def write_chunk(self, chunk: int, values: np.ndarray, state: np.ndarray, errors: Sequence[str]) -> None:
        """Write one whole row block: data first, then reasons, then state (the commit mark)."""
        lo, hi = self.chunk_bounds(chunk)
        n = hi - lo
        if values.shape != (n, self.dim) or state.shape != (n,) or len(errors) != n:
            raise StoreError(f"chunk {chunk} of {self.key}: block of {n} rows expected")
        self.group["data"][lo:hi] = values.astype(np.float32, copy=False)
        self.group["error"][lo:hi] = np.asarray(list(errors), dtype=str)
        self.group["state"][lo:hi] = state.astype(np.uint8, copy=False)

    def read_chunk(self, chunk: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        lo, hi = self.chunk_bounds(chunk)
        return (
            np.asarray(self.group["data"][lo:hi], dtype=np.float32),
            np.asarray(self.group["state"][lo:hi], dtype=np.uint8),
            np.asarray(self.group["error"][lo:hi], dtype=object),
        )

    def read(self, rows: np.ndarray | None = None) -> np.ndarray:
        """The embeddings of ``rows`` (all rows when None), float32 ``[len(rows), dim]``."""
        if rows is None:
            return np.asarray(self.group["data"][:], dtype=np.float32)
        rows = np.asarray(rows, dtype=np.int64)
        if rows.size and np.all(np.diff(rows) == 1):
            return np.asarray(self.group["data"][int(rows[0]) : int(rows[-1]) + 1], dtype=np.float32)
        return np.asarray(self.group["data"].get_orthogonal_selection((rows, slice(None))), dtype=np.float32)


def paired_rows(a: EmbeddingArray, b: EmbeddingArray, n_rows: int | None = None) -> np.ndarray:
    """Rows that both sides have embedded: the only rows training and evaluation may use.

    ``n_rows`` caps them at the store's row count (an array may have grown ahead of the row list)."""
    n = min(a.n_rows, b.n_rows, a.n_rows if n_rows is None else n_rows)
    return np.flatnonzero((a.state()[:n] == DONE) & (b.state()[:n] == DONE))


class Store:
    """A dataset's embeddings. Open with :meth:`open` (a path or an fsspec URL)."""

    def __init__(self, location: str, root: Any):
        self.location = location
        self.root = root

    # ---- opening ------------------------------------------------------------------------------
    @classmethod
    def open(cls, location: str | os.PathLike[str], create: bool = False, read_only: bool = False) -> Store:
        import zarr

        loc = str(location)
        path = local_path(loc)
        if path is not None and not (path / "zarr.json").exists():
            if not create:
                raise UserError(f"no embedding store at {loc} (run `ee embed` first)")
            path.mkdir(parents=True, exist_ok=True)
        mode = "r" if read_only else "a"
        try:
            root = zarr.open_group(str(path) if path is not None else loc, mode=mode, zarr_format=3)
        except FileNotFoundError:
            raise UserError(f"no embedding store at {loc}") from None
        except Exception as e:
            raise StoreError(f"cannot open store {loc}: {type(e).__name__}: {e}") from None
        fmt = root.attrs.get("ee_store")
        if fmt is None:
            if read_only or any(True for _ in root.members()):
                raise StoreError(f"{loc} is a Zarr group but not an embedeverything store")
            root.attrs.update({"ee_store": STORE_FORMAT, "rows": 0})  # one write: whole or absent
        elif int(fmt) > STORE_FORMAT:
            raise StoreError(f"{loc}: store format {fmt} is newer than this embedeverything ({STORE_FORMAT})")
        return cls(loc, root)

    # ---- rows ---------------------------------------------------------------------------------
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

        Returns the row of every pair (aligned with ``pairs``) and how many rows were appended.
        """
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
        self, key: str, *, side: str, encoder: str, options: dict[str, Any], dim: int, chunk_rows: int
    ) -> EmbeddingArray:
        """The array for ``key``, created if new, grown to the store's row count."""
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

    # ---- locking and housekeeping ----------------------------------------------------------------
    @contextlib.contextmanager
    def writer_lock(self, key: str) -> Iterator[None]:
        """One ``ee embed`` per array at a time (on local disk; the OS drops the lock if we die)."""
        path = local_path(self.location)
        if path is None:
            yield
            return
        import fcntl

        lock_dir = path / ".ee-locks"
        lock_dir.mkdir(exist_ok=True)
        with open(lock_dir / f"{key}.lock", "a+") as f:
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                f.seek(0)
                other = f.read().strip() or "another process"
                raise UserError(f"array {key} is being written by {other}; wait for it or stop it") from None
            f.seek(0)
            f.truncate()
            f.write(f"pid {os.getpid()}")
            f.flush()
            try:
                self.remove_partial_files(key)
                yield
            finally:
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)

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
