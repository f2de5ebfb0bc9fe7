"""One embedding array of the store (see :mod:`.store` for the layout): its attributes, its rows' state,
and chunk-aligned reads and writes, each chunk owned by one writer."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .encoder import EncoderIdentity
from .errors import StoreError, human_size, writing

PENDING, DONE, FAILED = 0, 1, 2


@dataclass
class EmbeddingArray:
    """One (side, encoder, options) array of a store, with its per-row state."""

    store: Any  # the .store.Store it belongs to (typed loosely: that module imports this one)
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
        with writing(self.store.location, f"the identity of array {self.key}"):
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
        with writing(self.store.location, f"chunk {chunk} of array {self.key}", self._space_needed):
            self.group["data"][lo:hi] = values.astype(np.float32, copy=False)
            self.group["error"][lo:hi] = np.asarray(list(errors), dtype=str)
            self.group["state"][lo:hi] = state.astype(np.uint8, copy=False)

    def _space_needed(self) -> str:
        pending = int((self.state() == PENDING).sum())
        return f"up to {human_size(pending * self.dim * 4)} for its {pending} rows still to embed"

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
