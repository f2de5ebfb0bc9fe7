"""Ranking paired embeddings: row i of ``za`` belongs with row i of ``zb``. One tie rule for all callers.

Training (validation R@1 each epoch, which picks the best heads) and ``ee eval`` rank with this module,
so that the R@1 a run reports and the R@1 evaluation measures follow the same rule.

The rule: the rank of the true pair is the number of candidates whose similarity is at least the true
pair's, the true pair included. Ties count against the true pair: a candidate exactly as similar as the
true pair is ranked before it, so R@1 holds only when the true pair is strictly more similar than every
other candidate, and a constant similarity scores as badly as it deserves (rank n, not 1).

Direction a->b ranks row ``S[i]`` of the similarity matrix (queries of side a against the gallery of
side b); b->a ranks column ``S[:, j]``.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

#: rows of the similarity matrix held at once: [block, n] fp32
BLOCK = 4096


def as_tensor(x: np.ndarray | torch.Tensor) -> torch.Tensor:
    """fp32 tensor view of an array or tensor (numpy arrays are not copied when already fp32, contiguous)."""
    return x.float() if isinstance(x, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(x, np.float32))


def cosine_matrix(za: np.ndarray | torch.Tensor, zb: np.ndarray | torch.Tensor) -> torch.Tensor:
    """``S [n_a, n_b]``: cosine similarity of every a row to every b row."""
    return F.normalize(as_tensor(za), dim=-1) @ F.normalize(as_tensor(zb), dim=-1).T


def true_ranks(sim: torch.Tensor) -> torch.Tensor:
    """``[n]`` 1-based rank of the true pair (the diagonal) in each row of ``sim [n, n]``; ties against it."""
    n = sim.shape[0]
    ranks = torch.empty(n, dtype=torch.long)
    for lo in range(0, n, BLOCK):
        s = sim[lo : lo + BLOCK]  # [m, n]
        diag = s[torch.arange(s.shape[0]), torch.arange(lo, lo + s.shape[0])]  # [m]
        ranks[lo : lo + BLOCK] = (s >= diag[:, None]).sum(1)  # includes the true pair itself
    return ranks


@torch.no_grad()
def recall_at_1(za: torch.Tensor, zb: torch.Tensor, block: int = 2048) -> tuple[float, float]:
    """R@1 both ways (a->b, b->a) of ``za``, ``zb`` ``[n, D]`` by cosine, without the ``[n, n]`` matrix.

    Equal to ``(true_ranks(S) == 1).mean()`` for ``S`` and ``S.T``: a hit is a true pair strictly more
    similar than every other candidate. One pass over blocks of rows serves both directions: the row's
    best other candidate within its block, the column's carried from block to block, the diagonal
    masked out of both so that it is compared, not counted.
    """
    za, zb = F.normalize(za.float(), dim=-1), F.normalize(zb.float(), dim=-1)
    n = za.shape[0]
    hits_ab = 0
    col_other = torch.full((n,), -float("inf"))  # [n] best similarity of a non-pair in each column
    col_true = torch.empty(n)  # [n] the true pair's similarity in each column
    for lo in range(0, n, block):
        sims = za[lo : lo + block] @ zb.t()  # [m, n]
        rows = torch.arange(sims.shape[0])
        diag = sims[rows, rows + lo]  # [m]
        col_true[lo : lo + sims.shape[0]] = diag
        sims[rows, rows + lo] = -float("inf")
        hits_ab += int((diag > sims.max(1).values).sum())
        col_other = torch.maximum(col_other, sims.max(0).values)
    hits_ba = int((col_true > col_other).sum())
    return hits_ab / n, hits_ba / n


@torch.no_grad()
def recall_at_1_matrix(sim: torch.Tensor) -> tuple[float, float]:
    """R@1 both ways (a->b over rows, b->a over columns) of a full similarity matrix ``sim [n, n]`` whose
    diagonal holds the true pairs; the same rule as :func:`recall_at_1` (a hit beats every other candidate
    strictly). For a matrix that is not one cosine, e.g. a weighted sum of two."""
    diag = sim.diagonal().clone()
    others = sim.clone()
    others.fill_diagonal_(-float("inf"))
    n = max(1, sim.shape[0])
    hits_ab = int((diag > others.max(1).values).sum())
    hits_ba = int((diag > others.max(0).values).sum())
    return hits_ab / n, hits_ba / n


@torch.no_grad()
def recall_at_1_mixed(
    cos: torch.Tensor, rel: torch.Tensor, weights: list[float] | tuple[float, ...]
) -> list[tuple[float, float]]:
    """R@1 both ways of the fused similarity ``cos + w (rel - cos)``, i.e. ``(1 - w) cos + w rel``, for
    each ``w`` of ``weights``: :func:`recall_at_1_matrix` of each fused matrix, with one difference matrix
    and one buffer for all of them instead of new matrices per ``w``."""
    diff = rel - cos
    fused = torch.empty_like(cos)
    out = []
    for w in weights:
        torch.add(cos, diff, alpha=w, out=fused)
        diag = fused.diagonal().clone()
        fused.fill_diagonal_(-float("inf"))
        n = max(1, fused.shape[0])
        out.append((int((diag > fused.amax(1)).sum()) / n, int((diag > fused.amax(0)).sum()) / n))
    return out


@torch.no_grad()
def mrr_mixed(
    cos: torch.Tensor, rel: torch.Tensor, weights: list[float] | tuple[float, ...]
) -> list[tuple[float, float]]:
    """Mean reciprocal rank both ways of ``(1 - w) cos + w rel`` for each ``w`` of ``weights``, ranked with
    the tie rule of :func:`true_ranks`. Every row's rank counts, not only first places: on a few hundred
    validation rows it tells close settings apart where R@1 moves by single rows."""
    diff = rel - cos
    fused = torch.empty_like(cos)
    out = []
    for w in weights:
        torch.add(cos, diff, alpha=w, out=fused)
        diag = fused.diagonal()
        rank_ab = (fused >= diag[:, None]).sum(1).float()
        rank_ba = (fused >= diag[None, :]).sum(0).float()
        out.append((float(rank_ab.reciprocal().mean()), float(rank_ba.reciprocal().mean())))
    return out
