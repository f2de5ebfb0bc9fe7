"""The Zarr store: rows keyed by ids, per-row state in arrays, atomic chunks, one writer per array."""

from __future__ import annotations

import numpy as np
import pytest

from embedeverything.errors import StoreError, UserError
from embedeverything.manifest import MediaRef, Pair
from embedeverything.store import DONE, FAILED, PENDING, Store


def pairs(ids: list[str]) -> list[Pair]:
    return [
        Pair(id=i, a=MediaRef(kind="text", text=i), b=MediaRef(kind="text", text=i), group="g" + i[:1])
        for i in ids
    ]


def test_rows_keyed_by_id_and_grown_manifest_appends(tmp_path):
    s = Store.open(tmp_path / "s.zarr", create=True)
    rows, new = s.sync_rows(pairs(["m", "c", "x"]))
    assert list(rows) == [0, 1, 2] and new == 3
    # a grown manifest, sorted differently, with new ids before and after the old ones
    rows, new = s.sync_rows(pairs(["a", "c", "m", "b", "x", "z"]))
    assert new == 3
    assert dict(zip(["a", "c", "m", "b", "x", "z"], rows.tolist(), strict=True)) == {
        "m": 0,
        "c": 1,
        "x": 2,
        "a": 3,
        "b": 4,
        "z": 5,
    }
    reopened = Store.open(tmp_path / "s.zarr")
    assert list(reopened.ids()) == ["m", "c", "x", "a", "b", "z"]
    assert list(reopened.rows()["group"]) == ["gm", "gc", "gx", "ga", "gb", "gz"]


def test_state_lives_in_arrays_chunked_like_data(tmp_path):
    s = Store.open(tmp_path / "s.zarr", create=True)
    s.sync_rows(pairs([f"r{i}" for i in range(10)]))
    arr = s.ensure_embedding("a.x-1", side="a", encoder="x", options={}, dim=3, chunk_rows=4)
    for name in ("data", "state", "error"):
        assert arr.group[name].chunks[0] == 4
    assert arr.pending_chunks() == [0, 1, 2]
    lo, hi = arr.chunk_bounds(2)
    assert (lo, hi) == (8, 10)
    arr.write_chunk(2, np.ones((2, 3), np.float32), np.array([DONE, FAILED], np.uint8), ["", "bad file"])
    assert arr.pending_chunks() == [0, 1]
    assert arr.counts() == {"rows": 10, "done": 1, "failed": 1, "pending": 8}
    assert arr.errors()[9] == "bad file"
    assert arr.state()[0] == PENDING
    with pytest.raises(StoreError):
        arr.write_chunk(0, np.ones((3, 3), np.float32), np.zeros(3, np.uint8), ["", "", ""])


def test_leftover_partial_files_do_not_trip_the_next_writer(tmp_path):
    s = Store.open(tmp_path / "s.zarr", create=True)
    s.sync_rows(pairs(["a", "b"]))
    arr = s.ensure_embedding("a.x-1", side="a", encoder="x", options={}, dim=2, chunk_rows=2)
    junk = tmp_path / "s.zarr" / "embeddings" / "a.x-1" / "data" / "c" / "0"
    junk.mkdir(parents=True, exist_ok=True)
    (junk / "0.3f2a.partial").write_bytes(b"half a chunk")
    with s.writer_lock("a.x-1"):
        assert not list((tmp_path / "s.zarr").rglob("*.partial"))
        arr.write_chunk(0, np.zeros((2, 2), np.float32), np.array([DONE, DONE], np.uint8), ["", ""])
    assert Store.open(tmp_path / "s.zarr").embedding("a.x-1").counts()["done"] == 2


def test_second_writer_is_refused(tmp_path):
    s = Store.open(tmp_path / "s.zarr", create=True)
    other = Store.open(tmp_path / "s.zarr")
    with s.writer_lock("a.k"):
        with pytest.raises(UserError, match="being written"):
            with other.writer_lock("a.k"):
                pass
    with other.writer_lock("a.k"):  # released when the first writer is done
        pass


def test_open_errors(tmp_path):
    with pytest.raises(UserError, match="no embedding store"):
        Store.open(tmp_path / "missing.zarr")
    import zarr

    g = zarr.open_group(str(tmp_path / "foreign.zarr"), mode="a", zarr_format=3)
    g.create_array("x", shape=(1,), dtype="f4")
    with pytest.raises(StoreError, match="not an embedeverything store"):
        Store.open(tmp_path / "foreign.zarr")


def test_a_kill_in_the_middle_of_appending_rows_or_making_an_array_is_harmless(tmp_path):
    s = Store.open(tmp_path / "s.zarr", create=True)
    s.sync_rows(pairs(["a", "b"]))
    # a kill after the row arrays grew but before the commit: longer arrays, old row count
    for f in ("id", "group"):
        arr = s.root[f"rows/{f}"]
        arr.resize((5,))
        arr[2:5] = np.array(["junk1", "junk2", "junk3"])
    assert s.n_rows == 2 and list(s.ids()) == ["a", "b"]
    rows, new = s.sync_rows(pairs(["a", "b", "c"]))
    assert list(rows) == [0, 1, 2] and new == 1
    assert list(Store.open(tmp_path / "s.zarr").ids()) == ["a", "b", "c"]
    # a kill while an array was being made: a group without its state array does not count
    g = s.root.create_group("embeddings/a.x-1")
    g.create_array("data", shape=(3, 2), chunks=(2, 2), dtype="float32")
    assert s.keys() == []
    arr = s.ensure_embedding("a.x-1", side="a", encoder="x", options={}, dim=2, chunk_rows=2)
    assert arr.n_rows == 3 and arr.pending_chunks() == [0, 1]
    # a kill between resizing data and state: each array is grown on its own
    s.sync_rows(pairs(["a", "b", "c", "d", "e"]))
    arr.group["data"].resize((5, 2))
    arr = s.ensure_embedding("a.x-1", side="a", encoder="x", options={}, dim=2, chunk_rows=2)
    assert [arr.group[n].shape[0] for n in ("data", "state", "error")] == [5, 5, 5]


def test_store_rm_and_prune_remove_arrays_under_their_lock(tmp_path, capsys):
    from conftest import ee_main, text_manifest

    from embedeverything.embed import embed_side

    m = text_manifest(tmp_path / "m.jsonl", 6)
    loc = str(tmp_path / "s.zarr")
    kept = embed_side(loc, str(m), "a", "test-text", {}).key
    s = Store.open(loc)
    # a run that stopped before its first chunk: an array with nothing done
    s.ensure_embedding(
        "b.test-text-0000000000", side="b", encoder="test-text", options={}, dim=16, chunk_rows=8
    )
    other = embed_side(loc, str(m), "b", "test-text", {"seed": 1}).key
    assert len(s.keys()) == 3
    assert ee_main("store", "prune", loc, "--dry-run") == 0
    assert "would remove b.test-text-0000000000" in capsys.readouterr().out and len(s.keys()) == 3
    with s.writer_lock("b.test-text-0000000000"):  # a writer at work on it: refused, nothing removed
        assert ee_main("store", "prune", loc) == 2
    assert "being written" in capsys.readouterr().err and len(s.keys()) == 3
    assert ee_main("store", "prune", loc) == 0
    assert capsys.readouterr().out == "removed b.test-text-0000000000\n"
    assert Store.open(loc).keys() == sorted([kept, other])
    assert ee_main("store", "rm", loc, other, "nosuch") == 2  # an unknown key: nothing removed
    assert "no array 'nosuch'" in capsys.readouterr().err and len(Store.open(loc).keys()) == 2
    assert ee_main("store", "rm", loc, other) == 0
    assert Store.open(loc).keys() == [kept]
    # a new array of the same key is made whole again
    again = embed_side(loc, str(m), "b", "test-text", {"seed": 1})
    assert again.key == other and again.done == 6


def test_an_encoder_that_cannot_load_leaves_no_array(tmp_path, monkeypatch):
    from conftest import image_manifest

    from embedeverything.embed import embed_side

    for var in ("EE_VGGISH_WEIGHTS", "EE_VGGISH_PCA"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("EE_OFFLINE", "1")
    m = image_manifest(tmp_path / "d", 4)
    loc = str(tmp_path / "s.zarr")
    embed_side(loc, str(m), "a", "test-image", {})
    with pytest.raises(UserError, match="--opt random_init=true"):
        embed_side(loc, str(m), "a", "clip", {"cache_dir": str(tmp_path / "empty"), "checkpoint": None})
    assert [a.encoder for a in Store.open(loc).arrays()] == ["test-image"]
