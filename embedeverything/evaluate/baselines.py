"""Baselines that a learned adapter must beat to earn its keep, fitted on the same training rows.

Each baseline is fitted on the TRAIN rows, its hyper-parameters chosen by mean R@1 on the VAL rows, and
then maps test rows into a space where cosine compares them, exactly as the adapter's heads do:

- ``ridge a->b`` / ``ridge b->a``: linear least squares with an L2 penalty, from one encoder's space into
  the other's (closed form over one SVD, so the whole alpha grid costs one decomposition);
- ``procrustes``: the best rotation after centring, matching dims by PCA (to the smaller dim) and
  L2-normalising (Schönemann 1966; the standard cross-lingual embedding alignment);
- ``cca``: regularised canonical correlation analysis in closed form (whiten each side, SVD of the
  cross-covariance), a number of components and a ridge chosen on validation;
- ``asif``: training-free relative representations in the spirit of ASIF (Norelli et al. 2023): each item
  becomes its similarities to the training anchors of its own modality, sparsified to the top k and raised
  to a power p; two items of different modalities are compared through the anchors' pairing.

Input features are standardised (or centred) with the train part's statistics only.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..heads import (
    ASIF_KS,
    ASIF_POWERS,
    anchor_pick,
    anchor_topk,
    relative_representation,
    sparse_relative,
)
from .metrics import mean_r1

Embed = Callable[[np.ndarray, np.ndarray], tuple[torch.Tensor, torch.Tensor]]


@dataclass
class Fitted:
    """A fitted baseline: its name, chosen hyper-parameters, and the map of raw rows into its space."""

    name: str
    params: dict[str, Any]
    embed: Embed
    val_r1: float
    seconds: float = 0.0
    grid: list[dict[str, Any]] = field(default_factory=list)


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    """Small dense decompositions (d x d) on one thread: on a busy machine a multi-threaded LAPACK call
    waits at every barrier for a descheduled thread, which costs far more than the work it shares."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _t(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).double()


class _Stats:
    """Mean and std of the train part (a constant feature keeps std 1)."""

    def __init__(self, x: torch.Tensor):
        self.mean = x.mean(0)
        std = x.std(0, unbiased=False)
        self.std = torch.where(std > 1e-8, std, torch.ones_like(std))

    def centre(self, x: np.ndarray) -> torch.Tensor:
        return _t(x) - self.mean

    def standardise(self, x: np.ndarray) -> torch.Tensor:
        return (_t(x) - self.mean) / self.std


def _select(
    name: str,
    candidates: Iterable[tuple[dict[str, Any], Embed]],
    val_a: np.ndarray,
    val_b: np.ndarray,
    t0: float,
) -> Fitted:
    """The candidate with the best mean R@1 on the validation rows (the first one on ties)."""
    best: tuple[float, dict[str, Any], Embed] | None = None
    grid = []
    for params, embed in candidates:
        za, zb = embed(val_a, val_b)
        score = mean_r1(za, zb)
        grid.append({**params, "val_r1": score})
        if best is None or score > best[0]:
            best = (score, params, embed)
    assert best is not None
    return Fitted(name, best[1], best[2], best[0], time.perf_counter() - t0, grid)


# ---- ridge -----------------------------------------------------------------------------------------

RIDGE_ALPHAS = (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0)  # times n_train (inputs are standardised)


def fit_ridge(
    train_x: np.ndarray, train_y: np.ndarray, val_x: np.ndarray, val_y: np.ndarray, direction: str
) -> Fitted:
    """Ridge from x's space into y's (``direction`` "a2b": x is side a). Scored in y's centred space."""
    t0 = time.perf_counter()
    sx, sy = _Stats(_t(train_x)), _Stats(_t(train_y))
    X, Y = sx.standardise(train_x), sy.centre(train_y)
    n = X.shape[0]
    # one eigendecomposition of the Gram matrix serves every alpha: W = V (w + lam)^-1 V^T X^T Y
    with _one_thread():
        w, V = torch.linalg.eigh(X.T @ X)  # [dx], [dx, dx]
    VtXtY = V.T @ (X.T @ Y)  # [dx, dy]

    def candidate(alpha: float) -> tuple[dict[str, Any], Embed]:
        lam = alpha * n
        W = V @ (VtXtY / (w.clamp(min=0) + lam)[:, None])  # [dx, dy]

        def embed(xa: np.ndarray, xb: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
            if direction == "a2b":
                return (sx.standardise(xa) @ W).float(), sy.centre(xb).float()
            return sy.centre(xa).float(), (sx.standardise(xb) @ W).float()

        return {"alpha": alpha}, embed

    if direction == "a2b":
        return _select("ridge a->b", (candidate(a) for a in RIDGE_ALPHAS), val_x, val_y, t0)
    return _select("ridge b->a", (candidate(a) for a in RIDGE_ALPHAS), val_y, val_x, t0)


# ---- orthogonal Procrustes -------------------------------------------------------------------------


def _pca(x: torch.Tensor, d: int) -> torch.Tensor:
    """The top ``d`` principal directions of centred ``x`` as columns ``[dim, d]``."""
    with _one_thread():
        _, V = torch.linalg.eigh(x.T @ x)  # ascending eigenvalues
    return V[:, -d:].flip(1)


def fit_procrustes(train_a: np.ndarray, train_b: np.ndarray, val_a: np.ndarray, val_b: np.ndarray) -> Fitted:
    t0 = time.perf_counter()
    sa, sb = _Stats(_t(train_a)), _Stats(_t(train_b))
    A, B = sa.centre(train_a), sb.centre(train_b)
    d = min(A.shape[1], B.shape[1])
    Pa, Pb = _pca(A, d), _pca(B, d)
    An, Bn = F.normalize(A @ Pa, dim=-1), F.normalize(B @ Pb, dim=-1)
    with _one_thread():
        U, _, Vt = torch.linalg.svd(An.T @ Bn)  # argmin_R ||An R - Bn||, R orthogonal: R = U Vt
    R = U @ Vt

    def embed(xa: np.ndarray, xb: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        za = F.normalize(sa.centre(xa) @ Pa, dim=-1) @ R
        zb = F.normalize(sb.centre(xb) @ Pb, dim=-1)
        return za.float(), zb.float()

    return _select("procrustes", [({"dim": d}, embed)], val_a, val_b, t0)


# ---- CCA -------------------------------------------------------------------------------------------

CCA_REGS = (1e-3, 1e-2, 1e-1)


def fit_cca(train_a: np.ndarray, train_b: np.ndarray, val_a: np.ndarray, val_b: np.ndarray) -> Fitted:
    """Regularised CCA: components k, ridge r (on standardised inputs) and weighting chosen on val."""
    t0 = time.perf_counter()
    sa, sb = _Stats(_t(train_a)), _Stats(_t(train_b))
    A, B = sa.standardise(train_a), sb.standardise(train_b)
    n = A.shape[0]
    dmax = min(A.shape[1], B.shape[1], max(1, n - 1))
    ks = sorted({k for k in (8, 16, 32, 64, 128, 256, dmax) if k <= dmax})
    Cab = A.T @ B / n
    with _one_thread():
        wa, Va = torch.linalg.eigh(A.T @ A / n)
        wb, Vb = torch.linalg.eigh(B.T @ B / n)

    def inv_sqrt(w: torch.Tensor, V: torch.Tensor, r: float) -> torch.Tensor:
        return V @ torch.diag((w.clamp(min=0) + r).rsqrt()) @ V.T  # (C + r I)^-1/2

    va, vb = sa.standardise(val_a), sb.standardise(val_b)  # once, not once per candidate
    best: tuple[float, dict[str, Any], torch.Tensor, torch.Tensor] | None = None
    grid = []
    for r in CCA_REGS:
        Wa, Wb = inv_sqrt(wa, Va, r), inv_sqrt(wb, Vb, r)
        with _one_thread():
            U, S, Vt = torch.linalg.svd(Wa @ Cab @ Wb, full_matrices=False)
        for k in ks:
            for weighted in (False, True):
                scale = S[:k] if weighted else torch.ones(k, dtype=S.dtype)
                Pa, Pb = Wa @ U[:, :k] * scale, Wb @ Vt[:k].T * scale
                score = mean_r1((va @ Pa).float(), (vb @ Pb).float())
                params = {"reg": r, "components": k, "weighted": weighted}
                grid.append({**params, "val_r1": score})
                if best is None or score > best[0]:
                    best = (score, params, Pa, Pb)
    assert best is not None
    _, params, Pa, Pb = best

    def embed(xa: np.ndarray, xb: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        return (sa.standardise(xa) @ Pa).float(), (sb.standardise(xb) @ Pb).float()

    return Fitted("cca", params, embed, best[0], time.perf_counter() - t0, grid)


# ---- ASIF-style relative representations -------------------------------------------------------------


def fit_asif(
    train_a: np.ndarray, train_b: np.ndarray, val_a: np.ndarray, val_b: np.ndarray, seed: int = 0
) -> Fitted:
    """No training: anchors are (a subsample of) the training pairs; k and p are chosen on val."""
    t0 = time.perf_counter()
    pick = anchor_pick(train_a.shape[0], seed)
    sa, sb = _Stats(_t(train_a)), _Stats(_t(train_b))
    anchors_a = F.normalize(sa.centre(train_a[pick]), dim=-1).float()  # [m, da]
    anchors_b = F.normalize(sb.centre(train_b[pick]), dim=-1).float()  # [m, db]
    m = anchors_a.shape[0]
    ks = sorted({min(k, m) for k in ASIF_KS})

    def embedder(k: int, p: float) -> Embed:
        def embed(xa: np.ndarray, xb: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
            return (
                relative_representation(sa.centre(xa), anchors_a, k, p),
                relative_representation(sb.centre(xb), anchors_b, k, p),
            )

        return embed

    # validation: the top-k of the largest k once, sliced for the smaller ones
    va, vb = (
        anchor_topk(sa.centre(val_a), anchors_a, ks[-1]),
        anchor_topk(sb.centre(val_b), anchors_b, ks[-1]),
    )
    best: tuple[float, dict[str, Any]] | None = None
    grid = []
    for k in ks:
        for p in ASIF_POWERS:
            score = mean_r1(sparse_relative(*va, k, p, m), sparse_relative(*vb, k, p, m))
            params = {"anchors": m, "k": k, "p": p}
            grid.append({**params, "val_r1": score})
            if best is None or score > best[0]:
                best = (score, params)
    assert best is not None
    embed = embedder(best[1]["k"], best[1]["p"])
    return Fitted("asif", best[1], embed, best[0], time.perf_counter() - t0, grid)


BASELINES = ("ridge a->b", "ridge b->a", "procrustes", "cca", "asif")


def fit_all(
    train_a: np.ndarray,
    train_b: np.ndarray,
    val_a: np.ndarray,
    val_b: np.ndarray,
    only: Iterable[str] | None = None,
) -> list[Fitted]:
    """Every baseline (or those named in ``only``), fitted on train, tuned on val.

    Fitting runs on one thread: its matrices are small (d x d, validation rows), where threads buy
    little and, on a busy machine, wait at every barrier for a descheduled thread.
    """
    want = set(BASELINES if only is None else only)
    out = []
    with _one_thread():
        _fit_into(out, want, train_a, train_b, val_a, val_b)
    return out


def _fit_into(
    out: list[Fitted],
    want: set[str],
    train_a: np.ndarray,
    train_b: np.ndarray,
    val_a: np.ndarray,
    val_b: np.ndarray,
) -> None:
    if "ridge a->b" in want:
        out.append(fit_ridge(train_a, train_b, val_a, val_b, "a2b"))
    if "ridge b->a" in want:
        out.append(fit_ridge(train_b, train_a, val_b, val_a, "b2a"))
    if "procrustes" in want:
        out.append(fit_procrustes(train_a, train_b, val_a, val_b))
    if "cca" in want:
        out.append(fit_cca(train_a, train_b, val_a, val_b))
    if "asif" in want:
        out.append(fit_asif(train_a, train_b, val_a, val_b))


def chance_r1(n: int) -> float:
    return 1.0 / max(1, n) if n else math.nan
