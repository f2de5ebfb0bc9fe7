"""Evaluation on real stores and a real trained adapter: the learned MLP head against the baselines on a
relation no linear map can capture, the metrics against slow reference loops, diagnostics, the model card,
export, and the user's mistakes through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ee_main

from embedeverything.encoder import EncoderIdentity
from embedeverything.errors import UserError
from embedeverything.evaluate import baselines as bl
from embedeverything.evaluate.diagnostics import alignment, csls, hubness, modality_gap, uniformity
from embedeverything.evaluate.metrics import cosine_matrix, retrieval_metrics
from embedeverything.manifest import MediaRef, Pair
from embedeverything.store import DONE, FAILED, Store
from embedeverything.train import make_config, train


def planted(n: int, da: int = 16, db: int = 16, noise: float = 0.05, seed: int = 0, kind: str = "mlp"):
    """(A, B, labels): B = g(A) + noise, g a fixed random two-layer MLP with |.| units (a ReLU pair each),
    whose linear part is exactly zero: no linear map from A predicts B better than a constant."""
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((n, da)).astype(np.float32)
    W1 = rng.standard_normal((da, 32)) / np.sqrt(da)
    W2 = rng.standard_normal((32, db)) / np.sqrt(32)
    B = np.abs(A @ W1) @ W2 if kind == "mlp" else A @ W2[:da, :db] * 0 + A @ rng.standard_normal((da, db))
    B = (B - B.mean(0)) / B.std() + noise * rng.standard_normal((n, db))
    labels = np.array([f"class{int(np.argmax(np.abs(A[i, :4])))}" for i in range(n)])
    return A, B.astype(np.float32), labels


def write_store(
    path: Path, A: np.ndarray, B: np.ndarray, labels=None, failed_b=(), space_a=None, weights_b="sha256:00"
) -> str:
    n = A.shape[0]
    store = Store.open(str(path), create=True)
    store.sync_rows(
        [
            Pair(
                id=f"p{i}",
                a=MediaRef(kind="text", text=f"a{i}"),
                b=MediaRef(kind="text", text=f"b{i}"),
                group=f"g{i // 2}",
                label=None if labels is None else str(labels[i]),
            )
            for i in range(n)
        ]
    )
    for side, X in (("a", A), ("b", B)):
        arr = store.ensure_embedding(
            f"{side}.enc{side}-0123456789",
            side=side,
            encoder=f"enc{side}",
            options={},
            dim=X.shape[1],
            chunk_rows=128,
        )
        for k in range(arr.n_chunks()):
            lo, hi = arr.chunk_bounds(k)
            state = np.full(hi - lo, DONE, np.uint8)
            if side == "b":
                state[[r - lo for r in failed_b if lo <= r < hi]] = FAILED
            arr.write_chunk(k, X[lo:hi], state, [""] * (hi - lo))
        arr.set_identity(
            EncoderIdentity(
                name=f"enc{side}",
                modality="text",
                dim=X.shape[1],
                plugin="tests",
                plugin_version="1",
                model_id=f"test/{side}",
                weights=weights_b if side == "b" else "sha256:00",
                shared_space=space_a if side == "a" else None,
            )
        )
    return str(path)


N = 900
FAST = dict(checkpoint_every_s=1e9, threads=1)


@pytest.fixture(scope="module")
def mlp_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("planted")
    A, B, labels = planted(N)
    store = write_store(root / "s.zarr", A, B, labels, failed_b=(3, 4))
    cfg = make_config(epochs=15, head_kind="mlp", mlp_width=128, dim=32, lr=5e-3, **FAST)
    res = train(store, None, None, root / "run", cfg)
    return root, store, res


def test_mlp_head_beats_linear_baselines_on_a_nonlinear_relation(mlp_run):
    from embedeverything.evaluate import evaluate

    _, store, res = mlp_run
    rep = evaluate(res.adapter_path)
    assert rep.store == store and rep.test_rows_used == rep.counts["test"] > 250
    names = [m.name for m in rep.methods]
    assert names == [
        "adapter",
        "adapter + CSLS",
        "adapter + QB-norm",
        "ridge a->b",
        "ridge b->a",
        "procrustes",
        "cca",
        "asif",
    ]
    r1 = {m.name: m.metrics["r1"] for m in rep.methods}
    assert r1["adapter"] > 0.5, r1
    for linear in ("ridge a->b", "ridge b->a", "procrustes", "cca"):
        assert r1["adapter"] > 5 * r1[linear] + 0.1, r1  # linear maps stay near chance
        assert rep.method(linear).val_r1 is not None
    assert rep.method("ridge a->b").params["alpha"] in bl.RIDGE_ALPHAS
    adapter = rep.method("adapter").metrics
    assert {"a2b_r1", "b2a_r10", "a2b_median_rank", "map", "class_r1", "class_r5"} <= set(adapter)
    assert adapter["a2b_median_rank"] <= 2
    assert rep.classes == 4 and 0 < adapter["map"] <= 1
    # diagnostics present and sane
    d = rep.diagnostics
    assert 0 <= d["modality_gap"] <= 2 and 0 <= d["alignment"] <= 4 and d["uniformity_a"] < 0
    assert d["hubness_a2b_top1pct_share"] < 0.2
    back = json.loads(rep.to_json())
    assert back["methods"][0]["name"] == "adapter" and back["counts"]["test"] == rep.counts["test"]


def test_evaluation_uses_exactly_the_test_rows(mlp_run):
    from embedeverything.evaluate.data import load_split_rows, open_eval_data

    root, _, res = mlp_run
    data = open_eval_data(res.adapter_path)
    split = load_split_rows(data)
    raw = json.loads((root / "run" / "split.json").read_text())
    assert split.test.tolist() == raw["rows"]["test"]
    assert not set(split.test) & (set(split.train) | set(split.val))
    assert not {3, 4} & set(np.concatenate([split.train, split.val, split.test]).tolist())


def _slow_metrics(sim: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Reference from the definitions: rank of the true pair, AP over the ranked gallery."""
    n = sim.shape[0]
    ranks, aps, cls1 = [], [], []
    for i in range(n):
        order = sorted(range(n), key=lambda j: (-sim[i, j], j != i))  # ties: the true pair after others
        ranks.append(
            order.index(i) + 1 if sum(sim[i] == sim[i, i]) == 1 else int((sim[i] >= sim[i, i]).sum())
        )
        order = sorted(range(n), key=lambda j: -sim[i, j])
        rel = [labels[j] == labels[i] for j in order]
        hits, ap = 0, 0.0
        for r, ok in enumerate(rel, 1):
            if ok:
                hits += 1
                ap += hits / r
        aps.append(ap / sum(rel))
        cls1.append(rel[0])
    ranks = np.array(ranks)
    return {
        "r1": float((ranks <= 1).mean()),
        "r5": float((ranks <= 5).mean()),
        "median_rank": float(np.median(ranks)),
        "map": float(np.mean(aps)),
        "class_r1": float(np.mean(cls1)),
    }


@pytest.mark.parametrize("n", [7, 40])
def test_metrics_match_slow_reference(n):
    rng = np.random.default_rng(n)
    za = rng.standard_normal((n, 5)).astype(np.float32)
    zb = za + rng.standard_normal((n, 5)).astype(np.float32)
    labels = rng.integers(0, 3, n)
    sim = cosine_matrix(za, zb)
    got = retrieval_metrics(sim, labels)
    ref = _slow_metrics(sim.numpy(), labels)
    for key, v in ref.items():
        assert got[f"a2b_{key}"] == pytest.approx(v, abs=1e-6), key
    ref_t = _slow_metrics(sim.numpy().T.copy(), labels)
    assert got["b2a_r1"] == pytest.approx(ref_t["r1"]) and got["b2a_map"] == pytest.approx(ref_t["map"])
    # torch's median is the lower middle value; numpy's averages: equal for odd n
    if n % 2:
        assert got["a2b_median_rank"] == ref["median_rank"]


def test_ties_count_against_the_true_pair():
    sim = torch.ones(4, 4)
    m = retrieval_metrics(sim)
    assert m["r1"] == 0.0 and m["median_rank"] == 4


def test_baselines_recover_a_linear_relation():
    """Sanity of each baseline on the relation it is made for: a linear map, and a rotation plus a shift."""
    rng = np.random.default_rng(1)
    A = rng.standard_normal((900, 12)).astype(np.float32) * 3 + 7
    B = (A @ rng.standard_normal((12, 10)) + 0.05 * rng.standard_normal((900, 10))).astype(np.float32)
    R = np.linalg.qr(rng.standard_normal((12, 12)))[0]
    C = ((A - 7) @ R + 4 + 0.05 * rng.standard_normal((900, 12))).astype(np.float32)
    tr, va, te = slice(0, 600), slice(600, 700), slice(700, 900)

    def r1(fitted: bl.Fitted, X: np.ndarray, Y: np.ndarray) -> float:
        za, zb = fitted.embed(X[te], Y[te])
        return retrieval_metrics(cosine_matrix(za, zb))["r1"]

    for fitted in bl.fit_all(A[tr], B[tr], A[va], B[va], only=["ridge a->b", "ridge b->a", "cca", "asif"]):
        floor = 0.3 if fitted.name == "asif" else 0.9
        assert r1(fitted, A, B) > floor, (fitted.name, fitted.params)
    rotation = bl.fit_procrustes(A[tr], C[tr], A[va], C[va])
    assert r1(rotation, A, C) > 0.95


def test_diagnostics_on_known_cases():
    rng = np.random.default_rng(0)
    z = rng.standard_normal((300, 8)).astype(np.float32)
    assert modality_gap(z, z) == pytest.approx(0, abs=1e-6) and alignment(z, z) == pytest.approx(0, abs=1e-6)
    shifted = z + 10 * np.eye(8, dtype=np.float32)[0]
    assert modality_gap(z, shifted) > 0.5
    collapsed = np.ones((50, 8), np.float32)
    assert uniformity(collapsed) == pytest.approx(0, abs=1e-6)
    assert uniformity(z) < -1
    # one gallery item made a hub: it is among the 5 nearest of a third of the queries; CSLS tames it
    sim = cosine_matrix(z, z + 0.3 * rng.standard_normal(z.shape).astype(np.float32))
    sim[:, 0] += 0.6
    plain = hubness(sim, k=5)
    assert plain["max_occurrence"] > 90 and plain["skewness"] > 10
    fixed = csls(sim, k=5)
    assert hubness(fixed, k=5)["max_occurrence"] < 50
    assert retrieval_metrics(fixed)["a2b_r1"] > retrieval_metrics(sim)["a2b_r1"]


def front_matter(card: str) -> dict:
    """The YAML between the ``---`` lines that open a model card, as the Hugging Face Hub reads it."""
    import yaml

    assert card.startswith("---\n"), card[:80]
    head, sep, _ = card[4:].partition("\n---\n")
    assert sep, "the front matter is not closed"
    return yaml.safe_load(head)


def test_ee_eval_writes_json_and_model_card(mlp_run, tmp_path, capsys):
    root, _, res = mlp_run
    out = tmp_path / "report.json"
    awkward = 'other: "mine" – née # not a comment'
    meta = ["--license", awkward, "--dataset", "someone/pairs", "--dataset", "x: y"]
    assert ee_main("eval", str(res.adapter_path), "--json-out", str(out), *meta) == 0
    printed = capsys.readouterr().out
    assert "ridge a->b" in printed and "R@1 a→b" in printed and "modality_gap" in printed
    report = json.loads(out.read_text())
    assert report["methods"][0]["metrics"]["r1"] > 0.5
    card = (root / "run" / "README.md").read_text()
    assert "## Retrieval on the test rows" in card and "| procrustes |" in card and "enca" in card
    assert "Prefer the" not in card  # the MLP heads beat every baseline on this relation
    meta = front_matter(card)
    assert meta["library_name"] == "embedeverything" and meta["license"] == awkward
    assert meta["tags"] == ["embedeverything", "text", "contrastive", "adapter"]  # both sides are text here
    assert meta["base_model"] == ["test/a", "test/b"] and meta["datasets"] == ["someone/pairs", "x: y"]
    (result,) = meta["model-index"][0]["results"]
    assert result["dataset"] == {"type": "someone/pairs", "name": "someone/pairs", "split": "test"}
    ours = report["methods"][0]["metrics"]
    shown = {m["type"]: m["value"] for m in result["metrics"]}
    assert {"a2b_r1", "b2a_r1", "a2b_r10", "b2a_r10", "a2b_map"} <= set(shown)
    assert all(v == round(ours[k], 4) for k, v in shown.items())
    assert "## Intended use" in card and "## Limitations\n\n- Trained on " in card
    assert "RANDOM" not in card
    # without --license and --dataset, neither is in the metadata: nothing in a run says them
    assert ee_main("eval", str(res.adapter_path), "--no-baselines") == 0
    meta = front_matter((root / "run" / "README.md").read_text())
    assert "license" not in meta and "datasets" not in meta
    assert meta["model-index"][0]["results"][0]["dataset"]["type"] == "custom"
    capsys.readouterr()
    assert ee_main("eval", str(res.adapter_path), "--license", "a\nb") == 2
    assert "--license: give an id of one line" in capsys.readouterr().err


def test_model_card_says_when_a_baseline_won_and_when_weights_were_random(tmp_path):
    """A linear relation and heads that barely trained: ridge wins on the test rows, and the card says so;
    side b's encoder ran with random weights, which the card's limitations say and its base_model leaves
    out."""
    from embedeverything.evaluate import evaluate, write_model_card

    A, B, labels = planted(300, kind="linear")
    store = write_store(tmp_path / "s.zarr", A, B, labels, weights_b="random-init")
    cfg = make_config(epochs=1, lr=1e-6, anchors="off", refit=False, **FAST)
    res = train(store, None, None, tmp_path / "run", cfg)
    with pytest.warns(UserWarning, match="RANDOM"):
        rep = evaluate(res.adapter_path)
    mean = {
        m.name: (m.metrics["a2b_r1"] + m.metrics["b2a_r1"]) / 2 for m in rep.methods if m.kind != "correction"
    }
    best = max((n for n in mean if n != "adapter"), key=mean.get)
    assert mean[best] > mean["adapter"] + 0.2, mean
    with pytest.warns(UserWarning, match="RANDOM"):
        card = write_model_card(res.adapter_path, rep).read_text()
    assert f"**Prefer the `{best}` baseline for this data**" in card
    limitations = card.split("## Limitations", 1)[1].split("\n## ", 1)[0]
    assert f"The `{best}` baseline did at least as well" in limitations
    assert "RANDOMLY initialised encoder weights (encb)" in limitations and card.count("RANDOMLY") == 1
    assert front_matter(card)["base_model"] == ["test/a"]


def test_export_parquet_and_npy(mlp_run, tmp_path):
    import pyarrow.parquet as pq

    from embedeverything.adapter import load_adapter

    _, store, res = mlp_run
    assert (
        ee_main("export", store, "--adapter", str(res.adapter_path), "--out", str(tmp_path / "e.parquet"))
        == 0
    )
    t = pq.read_table(tmp_path / "e.parquet")
    assert t.num_rows == N + N - 2  # side b has two failed rows
    ids_b = [i for i, s in zip(t["id"].to_pylist(), t["side"].to_pylist(), strict=True) if s == "b"]
    assert "p3" not in ids_b and len(set(ids_b)) == N - 2
    emb = np.asarray(t["embedding"].to_pylist(), np.float32)
    dim = load_adapter(res.adapter_path).config.shared_dim  # the heads' 32, plus an anchor part if chosen
    assert emb.shape == (2 * N - 2, dim) and np.allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-5)
    assert set(t["label"].to_pylist()) == {f"class{i}" for i in range(4)}
    assert (
        ee_main(
            "export",
            store,
            "--adapter",
            str(res.adapter_path),
            "--format",
            "npy",
            "--out",
            str(tmp_path / "n"),
        )
        == 0
    )
    b = np.load(tmp_path / "n" / "b.npy")
    ids = (tmp_path / "n" / "b.ids.txt").read_text().split()
    assert b.shape == (N - 2, dim) and len(ids) == N - 2 and ids[3] == "p5"
    # row p5 of the store, projected by hand, is line 3
    ad = load_adapter(res.adapter_path)
    raw = Store.open(store).find(side="b")[0].read(np.array([5]))
    z = ad.b(raw)
    assert np.allclose(b[3], z[0] / np.linalg.norm(z[0]), atol=1e-5)


def test_user_errors_are_one_line_exit_2(mlp_run, tmp_path, capsys):
    root, store, res = mlp_run
    adapter = str(res.adapter_path)

    def fails(*args: str, match: str) -> None:
        assert ee_main(*args) == 2, args
        err = capsys.readouterr().err
        assert match in err and err.count("\n") == 1, err

    fails("eval", str(tmp_path / "none.safetensors"), match="no adapter file")
    fails("eval", adapter, "--store", str(tmp_path / "nowhere.zarr"), match="no embedding store")
    fails("eval", adapter, "--split", str(tmp_path / "split.json"), match="no split file")
    fails("export", store, "--adapter", adapter, "--format", "csv", match="unknown export format")
    fails("figures", adapter, "--max-points", "2", match="--max-points")
    # another run's split: its train rows are not the adapter's
    A, B, labels = planted(N)
    other = json.loads((root / "run" / "split.json").read_text())
    other["rows"]["train"], other["rows"]["test"] = other["rows"]["test"], other["rows"]["train"]
    other["parts"]["train"], other["parts"]["test"] = other["parts"]["test"], other["parts"]["train"]
    (tmp_path / "split.json").write_text(json.dumps(other))
    fails("eval", adapter, "--split", str(tmp_path / "split.json"), match="not the one adapter")
    # a store whose side-b encoder has another dim
    bad = write_store(tmp_path / "bad.zarr", A, B[:, :8])
    fails("eval", adapter, "--store", bad, match="no side-b array of encoder 'encb' (dim 16)")
    fails(
        "export", bad, "--adapter", adapter, "--format", "npy", "--out", str(tmp_path / "x"), match=""
    ) if False else None
    # a store of other ids
    fails(
        "eval", adapter, "--store", write_store(tmp_path / "few.zarr", A[:50], B[:50]), match="outside store"
    )
    # the planted encoders say "text": zero-shot looks for them by name, and says they are not installed
    fails("zeroshot", "--adapter", adapter, "--store", store, match="unknown encoder 'enca'")
    with pytest.raises(UserError, match="at least two labels"):
        from embedeverything.evaluate.zeroshot import parse_labels

        parse_labels("one")


def test_no_text_tower_is_a_clear_error(mlp_run):
    from embedeverything.adapter import load_adapter
    from embedeverything.evaluate.zeroshot import find_text_tower

    ad = load_adapter(mlp_run[2].adapter_path)
    c = ad.config
    sides = {
        s: getattr(c, s).model_copy(
            update={"identity": getattr(c, s).identity.model_copy(update={"modality": m})}
        )
        for s, m in (("a", "image"), ("b", "audio"))
    }
    ad.config = c.model_copy(update=sides)
    with pytest.raises(UserError, match="words need a text encoder in the adapter's space"):
        find_text_tower(ad)
