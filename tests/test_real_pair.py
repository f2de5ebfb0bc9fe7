"""The whole method on REAL pretrained encoders that run offline: efficientnet-lite0 (images) + minilm (text).

Rendered scenes of shapes, colours, sizes, positions and counts, with captions that describe them (720
combinations, 700 pairs: captions rarely repeat), through `ee pair` with default settings and fixed seeds.
"""

from __future__ import annotations

import json
import os

import pytest
from conftest import run_ee
from scenes import make_scenes

pytestmark = pytest.mark.slow


def _need(module: str) -> None:
    try:
        __import__(module)
    except ImportError:
        if os.environ.get("CI"):
            raise  # CI installs the examples: a missing one is a failure, not a skip
        pytest.skip(f"{module} is not installed (pip install -e examples/...)")


def test_efficientnet_and_minilm_pair_beats_chance_and_baselines(tmp_path):
    _need("ee_efficientnet_lite")
    _need("ee_minilm")
    table = make_scenes(tmp_path / "scenes", 700, seed=0)
    out = tmp_path / "out"
    r = run_ee(
        "pair",
        "--a",
        "efficientnet-lite0",
        "--b",
        "minilm",
        "--data",
        str(table),
        "--out",
        str(out),
        "--no-figures",
        timeout=1200,
    )
    assert r.code == 0, r.err
    metrics = json.loads((out / "metrics.json").read_text())
    methods = {m["name"]: m for m in metrics["methods"]}
    ours = next(m for m in metrics["methods"] if m["kind"] == "adapter")["metrics"]
    baselines = [m for m in metrics["methods"] if m["kind"] == "baseline"]
    assert {"ridge a->b", "procrustes", "cca", "asif"} <= {m["name"] for m in baselines} | set(methods)
    n = metrics["test_rows_used"]
    assert n >= 200
    chance = 1.0 / n
    best = max(baselines, key=lambda m: m["metrics"]["r1"])
    print(
        f"test rows {n}; adapter R@1 a->b {ours['a2b_r1']:.3f} b->a {ours['b2a_r1']:.3f} "
        f"R@10 a->b {ours['a2b_r10']:.3f} b->a {ours['b2a_r10']:.3f}; best baseline {best['name']} "
        f"R@1 {best['metrics']['r1']:.3f}"
    )
    assert ours["a2b_r1"] > 30 * chance and ours["b2a_r1"] > 30 * chance
    assert ours["r1"] > best["metrics"]["r1"], (ours, best)
    assert ours["r10"] > 0.8
