"""Retrieval metrics on paired embeddings: row i of ``za`` belongs with row i of ``zb``.

Everything is computed from one similarity matrix ``S [n, n]`` (cosine unless a hubness correction has
rewritten it), so that plain cosine, CSLS and query-bank normalisation are scored by the same code.
Direction a->b ranks the row ``S[i]`` (queries of side a against the gallery of side b); b->a ranks
the column. Ranks follow the tie rule of :mod:`embedeverything.retrieval`, the one training's R@1 uses:
ties count against the true pair.

With labels (class per row, ``-1`` for none): class-level mAP (every gallery item of the query's class
is relevant; the mean over queries of the average precision) and same-class R@K (the share of queries
with at least one item of their class among the K nearest). Rows without a label are neither queries
nor relevant items for those two. Both need a full sort per query, so they are measured on a seeded
subsample of at most ``MAX_LABEL_QUERIES`` queries (against the whole gallery).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ..retrieval import as_tensor as as_tensor  # re-exported: evaluate's modules take it from here
from ..retrieval import cosine_matrix, true_ranks

KS: tuple[int, ...] = (1, 5, 10)
MAX_LABEL_QUERIES = 1000


def _label_metrics(
    sim: torch.Tensor, labels: np.ndarray, ks: Sequence[int], max_queries: int | None = MAX_LABEL_QUERIES
) -> dict[str, float]:
    """Class-level mAP and same-class R@K for the rows of ``sim`` as queries (a seeded subsample of at
    most ``max_queries`` of them: each needs a full sort of its row)."""
    lab = np.asarray(labels, dtype=np.int64)
    queries = np.flatnonzero(lab >= 0)
    if queries.size == 0:
        return {}
    if max_queries is not None and queries.size > max_queries:
        queries = np.sort(np.random.default_rng(0).choice(queries, max_queries, replace=False))
    s = sim.numpy() if isinstance(sim, torch.Tensor) else np.asarray(sim)
    kmax = min(max(ks), s.shape[1])
    aps, hits = [], dict.fromkeys(ks, 0)
    ranks = np.arange(1, s.shape[1] + 1, dtype=np.float64)
    for lo in range(0, queries.size, 512):
        q = queries[lo : lo + 512]
        order = np.argsort(-s[q], axis=1)  # numpy's SIMD sort: several times torch's on CPU
        rel = lab[order] == lab[q][:, None]  # [m, n] relevant at each rank
        n_rel = rel.sum(1)
        ap = (np.cumsum(rel, axis=1) / ranks * rel).sum(1) / np.maximum(n_rel, 1)
        aps.append(ap[n_rel > 0])
        for k in ks:
            hits[k] += int(rel[:, : min(k, kmax)].any(1).sum())
    out = {"map": float(np.concatenate(aps).mean())}
    out.update({f"class_r{k}": hits[k] / queries.size for k in ks})
    return out


def direction_metrics(
    sim: torch.Tensor, labels: np.ndarray | None = None, ks: Sequence[int] = KS
) -> dict[str, float]:
    """R@K, median and mean rank (and label metrics) with the rows of ``sim`` as queries."""
    ranks = true_ranks(sim)
    out = {f"r{k}": float((ranks <= k).float().mean()) for k in ks}
    out["median_rank"] = float(ranks.float().median())
    out["mean_rank"] = float(ranks.float().mean())
    if labels is not None:
        out.update(_label_metrics(sim, labels, ks))
    return out


def retrieval_metrics(
    sim: torch.Tensor, labels: np.ndarray | None = None, ks: Sequence[int] = KS
) -> dict[str, float]:
    """Both directions of a square similarity matrix: keys ``a2b_r1`` ... ``b2a_map``, plus means ``r1``...

    ``sim[i, j]`` scores a-row i against b-row j; b->a reads the transpose (for a corrected matrix that
    is not symmetric in its roles, pass the b->a matrix through :func:`direction_metrics` yourself).
    """
    ab = direction_metrics(sim, labels, ks)
    ba = direction_metrics(sim.T, labels, ks)
    return combine(ab, ba)


def combine(ab: dict[str, float], ba: dict[str, float]) -> dict[str, float]:
    out = {f"a2b_{k}": v for k, v in ab.items()}
    out.update({f"b2a_{k}": v for k, v in ba.items()})
    for k in ab:
        if k in ba:
            out[k] = (ab[k] + ba[k]) / 2
    return out


def mean_r1(za: np.ndarray | torch.Tensor, zb: np.ndarray | torch.Tensor) -> float:
    """Mean R@1 both ways: the score that picks baselines' hyper-parameters on the validation rows."""
    sim = cosine_matrix(za, zb)
    return (float((true_ranks(sim) == 1).float().mean()) + float((true_ranks(sim.T) == 1).float().mean())) / 2
