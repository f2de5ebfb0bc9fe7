"""The anchor part of the default heads: ASIF-style relative representations fused with the learned maps.

After early stopping, with the selection run's best heads (trained on the train part only), a grid is
scored on validation rows: ASIF's k (16, 64, 256, 800, capped at the anchor count) and p (1, 4, 8), and
the weight w of the anchor part (0, 0.1, ..., 0.9). The score of a setting is the mean reciprocal rank,
both ways, of the fused similarity ``(1 - w) cos(h_a, h_b) + w rel_a . rel_b``, which is exactly the dot
product of the fused heads' outputs (:class:`..heads.Head`), ranked with the one tie rule of
:mod:`..retrieval`: every validation row's rank counts, so that on a few hundred rows close settings are
told apart by more than the handful of rows whose first place changes. The two matrices are computed once
per (k, p) on at most :data:`ANCHOR_VAL_ROWS` validation rows and every w is scored from them
(:func:`..retrieval.mrr_mixed`); the chosen setting's R@1 is reported. w = 0
(no anchor part) is scored first and kept on ties. The anchors are (a seeded subsample of at most
:data:`..heads.ASIF_MAX_ANCHORS` of) the rows the heads were fitted on: the train part for the grid, the
train and validation parts for the adapter after a refit. The relative representation itself is
:func:`..heads.relative_representation`, the same code as the ``asif`` baseline of ``ee eval``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..heads import (
    ASIF_KS,
    ASIF_POWERS,
    AnchorSpec,
    Head,
    anchor_pick,
    anchor_topk,
    sparse_relative,
    with_anchors,
)
from ..retrieval import cosine_matrix, mrr_mixed, recall_at_1_matrix, recall_at_1_mixed
from .setup import Run

#: weights of the anchor part tried on validation; 0 is none
ANCHOR_WEIGHTS = tuple(round(0.1 * i, 1) for i in range(10))
#: validation rows the grid is scored on at most (a seeded subsample): its cost is quadratic in them, and
#: 3,000 rows resolve R@1 to about one standard error of 0.01
ANCHOR_VAL_ROWS = 3000


@dataclass
class AnchorPool:
    """Each side's centring mean ``[d]`` and anchors ``[m, d]`` (centred with it, unit rows)."""

    mean_a: torch.Tensor
    anchors_a: torch.Tensor
    mean_b: torch.Tensor
    anchors_b: torch.Tensor

    @property
    def count(self) -> int:
        return int(self.anchors_a.shape[0])


def anchor_pool(run: Run) -> AnchorPool:
    """Anchors from the rows ``run`` trained on, centred with those rows' mean (the heads' statistics)."""
    rows = run.rows[anchor_pick(run.rows.size, run.cfg.seed)]
    parts = []
    for arr, mean in ((run.arr_a, run.means[0]), (run.arr_b, run.means[1])):
        x = torch.from_numpy(arr.read(rows))
        parts += [mean.float(), F.normalize(x - mean, dim=-1)]
    return AnchorPool(*parts)


@dataclass
class AnchorChoice:
    """What the grid chose (``k`` as in ASIF's grid, capped at the anchor count when attached)."""

    k: int
    power: float
    weight: float  # 0: no anchor part
    val_r1_a2b: float
    val_r1_b2a: float
    plain_r1: float  # the heads alone, on the same validation rows
    val_rows: int
    anchors: int  # anchors of the grid (train rows)
    grid: list[dict[str, Any]] = field(default_factory=list)

    @property
    def val_r1(self) -> float:
        return (self.val_r1_a2b + self.val_r1_b2a) / 2

    def spec(self, count: int) -> AnchorSpec | None:
        if self.weight == 0:
            return None
        return AnchorSpec(count=count, k=min(self.k, count), power=self.power, weight=self.weight)

    def info(self, count: int) -> dict[str, Any]:
        """For the adapter's ``training.anchors``: the settings attached and their validation scores."""
        spec = self.spec(count)
        return {
            **({"count": spec.count, "k": spec.k, "power": spec.power} if spec else {}),
            "weight": self.weight,
            "val_r1": self.val_r1,
            "val_r1_a2b": self.val_r1_a2b,
            "val_r1_b2a": self.val_r1_b2a,
            "val_r1_heads_alone": self.plain_r1,
            "val_rows": self.val_rows,
            "grid_anchors": self.anchors,
        }


def _grid_rows(run: Run) -> np.ndarray:
    assert run.val is not None
    n = run.val.n
    if n <= ANCHOR_VAL_ROWS:
        return np.arange(n)
    return np.sort(np.random.default_rng(run.cfg.seed).choice(n, ANCHOR_VAL_ROWS, replace=False))


@torch.no_grad()
def choose_anchors(run: Run) -> AnchorChoice:
    """The grid on validation with ``run``'s heads as they are (load the best ones first)."""
    assert run.val is not None
    idx = torch.from_numpy(_grid_rows(run))
    xa, xb = run.val.xa.index_select(0, idx), run.val.xb.index_select(0, idx)
    head_a, head_b = run.heads.a.eval(), run.heads.b.eval()
    cos = cosine_matrix(head_a(xa), head_b(xb))  # [nv, nv]
    pool = anchor_pool(run)
    m = pool.count
    ks: dict[int, int] = {}  # k as scored (capped at m) -> ASIF's k it stands for (the first one)
    for k in ASIF_KS:
        ks.setdefault(min(k, m), k)
    ta = anchor_topk(xa - pool.mean_a, pool.anchors_a, max(ks))
    tb = anchor_topk(xb - pool.mean_b, pool.anchors_b, max(ks))
    plain = recall_at_1_matrix(cos)
    base = sum(mrr_mixed(cos, cos, (0.0,))[0]) / 2
    best = (base, 0, 0.0, 0.0)
    grid: list[dict[str, Any]] = [{"k": None, "power": None, "weight": 0.0, "val_mrr": base}]
    best_rel = cos
    for k, k_nominal in ks.items():
        for p in ASIF_POWERS:
            rel = sparse_relative(*ta, k, p, m) @ sparse_relative(*tb, k, p, m).T  # [nv, nv]
            for w, both in zip(ANCHOR_WEIGHTS[1:], mrr_mixed(cos, rel, ANCHOR_WEIGHTS[1:]), strict=True):
                score = sum(both) / 2
                grid.append({"k": k, "power": p, "weight": w, "val_mrr": score})
                if score > best[0]:
                    best = (score, k_nominal, p, w)
                    best_rel = rel
    _, k_best, p_best, w_best = best
    r_ab, r_ba = plain if w_best == 0 else recall_at_1_mixed(cos, best_rel, (w_best,))[0]
    return AnchorChoice(k_best, p_best, w_best, r_ab, r_ba, sum(plain) / 2, int(idx.numel()), m, grid)


def attach(run: Run, choice: AnchorChoice) -> tuple[Head, Head, AnchorSpec | None]:
    """``run``'s heads with the chosen anchor part, its anchors from the rows ``run`` trained on."""
    head_a, head_b = run.heads.a, run.heads.b
    if choice.weight == 0:
        return head_a, head_b, None
    pool = anchor_pool(run)
    spec = choice.spec(pool.count)
    assert spec is not None
    return (
        with_anchors(head_a, spec, pool.mean_a, pool.anchors_a),
        with_anchors(head_b, spec, pool.mean_b, pool.anchors_b),
        spec,
    )
