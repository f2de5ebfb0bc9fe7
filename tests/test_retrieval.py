"""One tie rule for training's R@1 and evaluation's ranks: the blocked R@1 against the ranks it must equal."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch

from embedeverything.retrieval import (
    cosine_matrix,
    recall_at_1,
    recall_at_1_matrix,
    recall_at_1_mixed,
    true_ranks,
)


def _r1_from_ranks(za: torch.Tensor, zb: torch.Tensor) -> tuple[float, float]:
    sim = cosine_matrix(za, zb)
    n = sim.shape[0]
    return int((true_ranks(sim) == 1).sum()) / n, int((true_ranks(sim.T) == 1).sum()) / n


@pytest.mark.parametrize("block", [1, 3, 7, 2048])
def test_blocked_r1_equals_the_ranks(block):
    g = torch.Generator().manual_seed(block)
    za = torch.randn(40, 6, generator=g)
    zb = za + 1.5 * torch.randn(40, 6, generator=g)
    got = recall_at_1(za, zb, block=block)
    assert got == _r1_from_ranks(za, zb)
    assert 0 < got[0] < 1 and 0 < got[1] < 1


@pytest.mark.parametrize("block", [2, 2048])
def test_ties_count_against_the_true_pair(block):
    # all similarities equal: no row's own pair is strictly nearest, either way
    assert recall_at_1(torch.ones(5, 3), torch.ones(5, 3), block=block) == (0.0, 0.0)
    # a gallery item duplicated: rows 0 and 1 of b tie for queries 0 and 1 of a (and back)
    za = torch.eye(4)
    zb = torch.eye(4)
    zb[1] = zb[0]
    r_ab, r_ba = recall_at_1(za, zb, block=block)
    assert (r_ab, r_ba) == _r1_from_ranks(za, zb)
    assert r_ab == 0.5  # a_0 ties between b_0 and b_1; a_1 is as near to every b (0) as to its own
    assert r_ba == 0.75  # b_0 finds a_0; b_1 is nearer to a_0 than to a_1


def test_single_pair_is_found():
    assert recall_at_1(torch.randn(1, 4), torch.randn(1, 4)) == (1.0, 1.0)


def test_training_and_evaluation_share_the_rule():
    from embedeverything.evaluate import metrics
    from embedeverything.train import recall_at_1 as train_r1

    assert train_r1 is recall_at_1 and metrics.true_ranks is true_ranks


def test_retrieval_is_a_low_level_module():
    src = Path(__file__).parents[1] / "embedeverything" / "retrieval.py"
    imported = set()
    for node in ast.walk(ast.parse(src.read_text())):
        if isinstance(node, ast.ImportFrom):
            imported.add("." * node.level + (node.module or ""))
        elif isinstance(node, ast.Import):
            imported.update(a.name for a in node.names)
    assert not {m for m in imported if m.startswith(".") or m.startswith("embedeverything")}, imported


@pytest.mark.parametrize("seed", [0, 1])
def test_mixed_r1_equals_each_fused_matrix(seed):
    g = torch.Generator().manual_seed(seed)
    za = torch.randn(30, 5, generator=g)
    cos = cosine_matrix(za, za + torch.randn(30, 5, generator=g))
    rel = (torch.rand(30, 30, generator=g) * 4).round() / 4  # coarse values: many exact ties
    rel.diagonal().add_(0.25)
    cos[3] = cos[3, 0]  # a row of one value: its true pair ties with every candidate
    weights = [0.0, 0.1, 0.5, 0.9, 1.0]
    got = recall_at_1_mixed(cos, rel, weights)
    assert got == [recall_at_1_matrix(torch.add(cos, rel - cos, alpha=w)) for w in weights]
    assert len(set(got)) > 1
