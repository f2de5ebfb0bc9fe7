"""The anchor grid on validation: its fast scoring (MRR both ways) picks what scoring every fused matrix on its
own picks."""

from __future__ import annotations

import pytest
import torch

from embedeverything.heads import ASIF_KS, ASIF_POWERS, relative_representation
from embedeverything.retrieval import cosine_matrix, true_ranks
from embedeverything.train import anchors, make_config
from embedeverything.train.setup import prepare
from embedeverything.train.trainer import fit, select
from tests.test_train import FAST, make_store


def _mrr(sim: torch.Tensor) -> float:
    """Mean reciprocal rank both ways, from the one tie rule's ranks of each direction."""
    return float(
        (true_ranks(sim).double().reciprocal().mean() + true_ranks(sim.T).double().reciprocal().mean()) / 2
    )


@torch.no_grad()
def _straightforward(run) -> tuple[tuple[int | None, float | None, float], list[float]]:
    """Every (k, p, w) scored from its own fused matrix; w = 0 first, a later setting only when better."""
    idx = torch.from_numpy(anchors._grid_rows(run))
    xa, xb = run.val.xa[idx], run.val.xb[idx]
    cos = cosine_matrix(run.heads.a.eval()(xa), run.heads.b.eval()(xb))
    pool = anchors.anchor_pool(run)
    m = pool.count
    best_score, best = _mrr(cos), (None, None, 0.0)
    scores = [best_score]
    for k in dict.fromkeys(min(k, m) for k in ASIF_KS):
        for p in ASIF_POWERS:
            rel_a = relative_representation(xa - pool.mean_a, pool.anchors_a, k, p)
            rel_b = relative_representation(xb - pool.mean_b, pool.anchors_b, k, p)
            rel = rel_a @ rel_b.T
            for w in anchors.ANCHOR_WEIGHTS[1:]:
                score = _mrr(torch.add(cos, rel - cos, alpha=w))
                scores.append(score)
                if score > best_score:
                    best_score, best = score, (k, p, w)
    return best, scores


@pytest.mark.parametrize("val_rows", [3000, 40])  # all validation rows; a subsample of them
def test_grid_picks_what_the_straightforward_grid_picks(tmp_path, monkeypatch, val_rows):
    monkeypatch.setattr(anchors, "ANCHOR_VAL_ROWS", val_rows)
    make_store(tmp_path / "s.zarr", n=300, noise=1.0)
    cfg = make_config(epochs=3, head_kind="mlp", dim=256, refit=False, **FAST)
    run, state, _ = prepare(str(tmp_path / "s.zarr"), None, None, tmp_path / "out", cfg)
    fit(run, state)
    choice = select(run, state).anchors  # the best heads loaded, then the grid
    assert choice is not None
    (k, p, w), scores = _straightforward(run)
    assert choice.val_rows == min(val_rows, run.val.n)
    assert [g["val_mrr"] for g in choice.grid] == pytest.approx(scores, abs=1e-6)
    assert choice.weight == w > 0  # weak heads: some anchor part wins
    assert (min(choice.k, run.rows.size), choice.power) == (k, p)
