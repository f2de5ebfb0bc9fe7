"""Where training batches come from: tensors in memory, or blocks of chunks streamed from the store.

Both yield the same thing, ``(xa [B, dim_a], xb [B, dim_b], labels [B] or None)`` fp32, in an order fixed
by ``(seed, epoch)`` alone, so that a resumed run sees exactly the batches an uninterrupted one would.
In memory, batches are slices of one permutation (no per-item DataLoader: at 4096 rows a batch, indexing
costs microseconds, collating millions of tuples costs seconds). Streaming, for arrays larger than the
memory budget: each epoch shuffles the store's row chunks, reads a few at a time (as many as fit the
budget), shuffles the rows of that block and slices batches from it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any, Protocol

import numpy as np
import torch

from ..store import EmbeddingArray

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed) * 1_000_003 + int(epoch))


def n_batches(n: int, batch_size: int) -> int:
    """Full batches only (a tail of a few pairs is a poor contrastive batch); one batch if n < B."""
    return max(1, n // batch_size)


def default_memory_budget() -> int:
    """Half of the memory available now (Linux), else 4 GiB."""
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 2)
    except (ValueError, OSError, AttributeError):
        return 4 << 30


def label_codes(labels: np.ndarray) -> np.ndarray | None:
    """Labels as ints (-1: none); None when no row has a label."""
    labels = labels.astype(str)
    if not (labels != "").any():
        return None
    uniq, inv = np.unique(labels, return_inverse=True)
    codes = inv.astype(np.int64)
    if "" in uniq:
        codes[labels == ""] = -1
    return codes


class PairSource(Protocol):
    n: int

    def batches(self, epoch: int, batch_size: int, seed: int) -> Iterator[Batch]: ...

    def stats(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]: ...


def _mean_std(s: np.ndarray, ss: np.ndarray, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    mean = s / n
    var = np.maximum(ss / n - mean**2, 0.0)
    return torch.from_numpy(mean.astype(np.float32)), torch.from_numpy(np.sqrt(var).astype(np.float32))


class InMemoryPairs:
    """Both sides as fp32 tensors; batches are rows of one permutation per epoch."""

    def __init__(self, xa: torch.Tensor, xb: torch.Tensor, labels: np.ndarray | None = None):
        self.xa, self.xb = xa.contiguous(), xb.contiguous()
        self.n = int(xa.shape[0])
        self.labels = None if labels is None else torch.from_numpy(np.asarray(labels, dtype=np.int64))

    @classmethod
    def from_store(
        cls, arr_a: EmbeddingArray, arr_b: EmbeddingArray, rows: np.ndarray, labels: np.ndarray | None
    ) -> InMemoryPairs:
        xa = torch.from_numpy(arr_a.read(rows))
        xb = torch.from_numpy(arr_b.read(rows))
        return cls(xa, xb, labels)

    def batches(self, epoch: int, batch_size: int, seed: int) -> Iterator[Batch]:
        perm = torch.randperm(self.n, generator=epoch_generator(seed, epoch))
        bs = min(batch_size, self.n)
        for k in range(n_batches(self.n, bs)):
            idx = perm[k * bs : (k + 1) * bs]
            lab = None if self.labels is None else self.labels.index_select(0, idx)
            yield self.xa.index_select(0, idx), self.xb.index_select(0, idx), lab

    def stats(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        out = []
        for x in (self.xa, self.xb):
            x64 = x.double()
            out += [x64.mean(0).float(), x64.std(0, unbiased=False).float()]
        return out[0], out[1], out[2], out[3]


class StreamingPairs:
    """Rows ``rows`` of two store arrays, read block by block within ``budget_bytes``.

    A block is ``k`` randomly chosen row ranges of ``span`` rows (the larger of the two arrays' chunk
    sizes, so every read covers whole chunks). Leftover rows of a block that do not fill a batch are
    carried into the next block, so every batch but the epoch's last is full.
    """

    def __init__(
        self,
        arr_a: EmbeddingArray,
        arr_b: EmbeddingArray,
        rows: np.ndarray,
        labels: np.ndarray | None,
        budget_bytes: int,
    ):
        self.arr_a, self.arr_b = arr_a, arr_b
        self.rows = np.sort(np.asarray(rows, dtype=np.int64))
        self.n = int(self.rows.size)
        self.labels = None if labels is None else np.asarray(labels, dtype=np.int64)  # aligned with rows
        self.span = max(arr_a.chunk_rows, arr_b.chunk_rows)
        n_total = max(arr_a.n_rows, arr_b.n_rows)
        self.ranges = [(lo, min(lo + self.span, n_total)) for lo in range(0, n_total, self.span)]
        # keep only ranges holding some of our rows
        self.ranges = [
            (lo, hi)
            for lo, hi in self.ranges
            if np.searchsorted(self.rows, hi) > np.searchsorted(self.rows, lo)
        ]
        bytes_per_range = self.span * (arr_a.dim + arr_b.dim) * 4 * 3  # data, shuffled copy, batch
        self.ranges_per_block = max(1, int(budget_bytes // max(1, bytes_per_range)))
        self.blocks_read = 0

    def _read(self, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        i, j = np.searchsorted(self.rows, lo), np.searchsorted(self.rows, hi)
        sel = self.rows[i:j]
        lab = None if self.labels is None else self.labels[i:j]
        return self.arr_a.read(sel), self.arr_b.read(sel), lab

    def _blocks(self, order: list[int]) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray | None]]:
        k = self.ranges_per_block
        for s in range(0, len(order), k):
            parts = [self._read(*self.ranges[r]) for r in order[s : s + k]]
            self.blocks_read += 1
            yield (
                np.concatenate([p[0] for p in parts]),
                np.concatenate([p[1] for p in parts]),
                None if self.labels is None else np.concatenate([p[2] for p in parts]),  # type: ignore[misc]
            )

    def batches(self, epoch: int, batch_size: int, seed: int) -> Iterator[Batch]:
        g = epoch_generator(seed, epoch)
        order = torch.randperm(len(self.ranges), generator=g).tolist()
        bs = min(batch_size, self.n)
        total = n_batches(self.n, bs)
        done = 0
        carry: list[Any] | None = None
        for xa, xb, lab in self._blocks(order):
            ta, tb = torch.from_numpy(xa), torch.from_numpy(xb)
            tl = None if lab is None else torch.from_numpy(lab)
            if carry is not None:
                ta, tb = torch.cat([carry[0], ta]), torch.cat([carry[1], tb])
                tl = None if tl is None else torch.cat([carry[2], tl])
            perm = torch.randperm(ta.shape[0], generator=g)
            m = ta.shape[0] // bs
            for k in range(m):
                if done == total:
                    return
                idx = perm[k * bs : (k + 1) * bs]
                yield ta[idx], tb[idx], None if tl is None else tl[idx]
                done += 1
            rest = perm[m * bs :]
            carry = [ta[rest], tb[rest], None if tl is None else tl[rest]]

    def stats(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        acc = [
            np.zeros(d, np.float64) for d in (self.arr_a.dim, self.arr_a.dim, self.arr_b.dim, self.arr_b.dim)
        ]
        for xa, xb, _ in self._blocks(list(range(len(self.ranges)))):
            acc[0] += xa.sum(0, dtype=np.float64)
            acc[1] += (xa.astype(np.float64) ** 2).sum(0)
            acc[2] += xb.sum(0, dtype=np.float64)
            acc[3] += (xb.astype(np.float64) ** 2).sum(0)
        ma, sa = _mean_std(acc[0], acc[1], self.n)
        mb, sb = _mean_std(acc[2], acc[3], self.n)
        return ma, sa, mb, sb
