"""`ee embed`: resumable after kill -9 with equal bytes, bad media recorded, no-op reruns, grown manifests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import ee_main, image_manifest, run_ee, text_manifest

from embedeverything.embed import embed_side
from embedeverything.manifest import read_manifest
from embedeverything.plugins import get_encoder
from embedeverything.store import DONE, FAILED, Store


def only_array(store_path):
    s = Store.open(store_path)
    (arr,) = s.arrays()
    return arr


def test_embeds_what_the_encoder_computes(tmp_path):
    m = text_manifest(tmp_path / "m.jsonl", 21)
    report = embed_side(str(tmp_path / "s.zarr"), str(m), "a", "test-text", {"dim": 12}, chunk_rows=8)
    assert (report.done, report.failed, report.exit_code) == (21, 0, 0)
    arr = only_array(tmp_path / "s.zarr")
    texts = [p.a.text for p in read_manifest(m).pairs]
    # the store's batches: chunks of 8 rows, batch size 8 (the encoder's default divides the chunk) -> 8, 8, 5;
    # the same batches on the same threads, so the same bytes
    expected = get_encoder("test-text", dim=12).embed(texts, batch_size=8)
    assert np.array_equal(arr.read(), expected)
    ident = arr.identity
    assert ident is not None and ident.name == "test-text" and ident.dim == 12 and ident.plugin == "testenc"
    assert ident.weights == "seed:0" and ident.options["dim"] == 12


def test_bad_media_is_recorded_and_the_run_finishes(tmp_path):
    bad = {2: "missing", 5: "empty", 7: "text", 11: "truncated"}
    m = image_manifest(tmp_path / "data", 14, bad)
    store = tmp_path / "s.zarr"
    r = run_ee("embed", str(m), "-e", "test-image", "--store", str(store), "--chunk-rows", "8")
    assert r.code == 1, r.err
    assert "10 done, 4 failed" in r.out
    arr = only_array(store)
    st = arr.state()
    assert sorted(np.flatnonzero(st == FAILED).tolist()) == sorted(bad)
    assert (st == DONE).sum() == 10
    f = run_ee("store", "failures", str(store))
    assert f.code == 0
    reasons = {line.split("\t")[1]: line.split("\t")[2] for line in f.out.strip().splitlines()}
    assert "file not found" in reasons["p0002"]
    assert "empty file" in reasons["p0005"]
    assert "unreadable image" in reasons["p0007"]
    assert "unreadable image" in reasons["p0011"] or "truncated" in reasons["p0011"].lower()
    info = run_ee("store", "info", str(store), "--json")
    assert info.code == 0 and '"failed": 4' in info.out


def test_failed_rows_are_kept_until_retry_failed_asks_again(tmp_path):
    from PIL import Image

    m = image_manifest(tmp_path / "data", 12, {3: "missing", 9: "text"})
    store = tmp_path / "s.zarr"
    args = ("embed", str(m), "-e", "test-image", "--store", str(store), "--chunk-rows", "4")
    first = run_ee(*args)
    assert first.code == 1 and "--retry-failed" in first.err
    before = only_array(store).read()
    chunk1 = {  # rows 4-7: nothing failed there, so a retry must not rewrite it
        f: f.stat().st_mtime_ns for f in (store / "embeddings").rglob("*") if "/c/1" in f.as_posix()
    }
    assert len(chunk1) >= 3  # data, state, error
    # the missing file appears; the text file stays bad
    Image.fromarray(np.full((30, 40, 3), 7, dtype=np.uint8)).save(tmp_path / "data" / "img0003.png")
    again = run_ee(*args)
    assert again.code == 1 and "up to date (10 done, 2 failed)" in again.out
    retry = run_ee(*args, "--retry-failed")
    assert retry.code == 1, retry.err
    assert "1 embedded, 1 failed this run; 11 done, 1 failed" in retry.out
    arr = only_array(store)
    st, after = arr.state(), arr.read()
    assert st[3] == DONE and st[9] == FAILED and "unreadable image" in str(arr.errors()[9])
    expected = get_encoder("test-image").embed([np.full((30, 40, 3), 7, dtype=np.uint8)])
    assert np.array_equal(after[3], expected[0])
    keep = [r for r in range(12) if r != 3]
    assert np.array_equal(after[keep], before[keep])
    assert {f: f.stat().st_mtime_ns for f in chunk1} == chunk1


def test_rerun_is_a_noop_and_other_options_make_a_new_array(tmp_path):
    m = text_manifest(tmp_path / "m.jsonl", 10)
    store = str(tmp_path / "s.zarr")
    embed_side(store, str(m), "b", "test-text", {}, chunk_rows=4)
    data_dir = tmp_path / "s.zarr" / "embeddings"
    before = {p: p.stat().st_mtime_ns for p in data_dir.rglob("*") if p.is_file()}
    again = embed_side(store, str(m), "b", "test-text", {}, chunk_rows=4)
    assert again.chunks_run == 0 and again.new_done == 0 and again.done == 10
    after = {p: p.stat().st_mtime_ns for p in data_dir.rglob("*") if p.is_file()}
    assert after == before
    old = only_array(tmp_path / "s.zarr").read()
    other = embed_side(store, str(m), "b", "test-text", {"seed": 3}, chunk_rows=4)
    assert other.new_done == 10 and other.key != again.key
    s = Store.open(store)
    assert len(s.keys()) == 2
    assert np.array_equal(s.embedding(again.key).read(), old)
    assert not np.array_equal(s.embedding(other.key).read(), old)


def test_grown_manifest_embeds_only_the_new_ids(tmp_path):
    store = str(tmp_path / "s.zarr")
    m = text_manifest(tmp_path / "m.jsonl", 10, prefix="k", start=10)
    embed_side(store, str(m), "a", "test-text", {}, chunk_rows=4)
    old = only_array(tmp_path / "s.zarr").read()
    # new ids that sort before, between and after the known ones
    from conftest import Pair, write_manifest

    grown = read_manifest(m).pairs
    extra = read_manifest(text_manifest(tmp_path / "x.jsonl", 5, prefix="k", start=0)).pairs
    extra += read_manifest(text_manifest(tmp_path / "y.jsonl", 3, prefix="z", start=0)).pairs
    pairs: list[Pair] = extra[:2] + grown + extra[2:]
    write_manifest(m, pairs, "text", "text")
    r = embed_side(store, str(m), "a", "test-text", {}, chunk_rows=4)
    assert r.new_done == 8 and r.done == 18
    s = Store.open(store)
    arr = s.embedding(r.key)
    assert np.array_equal(arr.read(np.arange(10)), old)
    ids = list(s.ids())
    assert ids[:10] == [f"k{i:04d}" for i in range(10, 20)]
    enc = get_encoder("test-text")
    by_id = {p.id: p.a.text for p in pairs}
    # The new rows were embedded in the store's batches (chunks of 4, and in chunk 2 only the two new rows
    # beside two done ones), not in the encoder's default batches of 8: other shapes may run another BLAS
    # kernel (OPENBLAS_CORETYPE, AMX or not), so equal within float32 tolerance only; the old rows, never
    # recomputed, are compared bitwise above.
    np.testing.assert_allclose(arr.read(), enc.embed([by_id[i] for i in ids]), rtol=1e-5, atol=1e-6)
    # each chunk's new rows, embedded in the batch the store gave them, are the same bytes
    new_rows = {2: [10, 11], 3: [12, 13, 14, 15], 4: [16, 17]}
    for rows in new_rows.values():
        batch = enc.embed([by_id[ids[r]] for r in rows], batch_size=len(rows))
        assert np.array_equal(arr.read(np.array(rows)), batch), rows


@pytest.mark.parametrize("fault,needle", [("shape", "shape"), ("nan", "NaN"), ("dtype", "dtype")])
def test_contract_breaking_output_is_stopped_naming_the_plugin(tmp_path, fault, needle):
    m = text_manifest(tmp_path / "m.jsonl", 4)
    r = run_ee(
        "embed", str(m), "-e", "test-text", "-o", f"fault={fault}", "--store", str(tmp_path / "s.zarr")
    )
    assert r.code == 2
    assert "testenc" in r.err and "test-text" in r.err and needle in r.err
    if fault == "nan":  # the input was finite: the message says the plugin is at fault
        assert "finite input" in r.err and "plugin" in r.err
    assert "Traceback" not in r.err and len(r.err.strip().splitlines()) == 1


def test_nan_in_one_audio_file_fails_that_row_only(tmp_path):
    """Non-finite input is bad data (its row fails with the reason); the other rows are embedded."""
    import soundfile as sf
    from media import write_tone

    from embedeverything.manifest import MediaRef, Pair, write_manifest

    pairs = []
    for i in range(4):
        path = write_tone(tmp_path / f"tone{i}.wav", 1.0, 220.0 * (i + 1))
        if i == 2:
            data, sr = sf.read(str(path), dtype="float32")
            data[100] = np.nan
            sf.write(str(path), data, sr, subtype="FLOAT")
        pairs.append(
            Pair(id=f"s{i}", a=MediaRef(kind="audio", path=path.name), b=MediaRef(kind="text", text="x"))
        )
    m = write_manifest(tmp_path / "m.jsonl", pairs, "audio", "text")
    store = tmp_path / "s.zarr"
    r = run_ee("embed", str(m), "-e", "test-audio", "--store", str(store))
    assert r.code == 1, r.err
    assert "3 done, 1 failed" in r.out
    f = run_ee("store", "failures", str(store))
    assert "s2" in f.out and "NaN or infinite audio samples" in f.out, f.out


def test_user_mistakes_are_one_line_exit_2(tmp_path):
    m = text_manifest(tmp_path / "m.jsonl", 4)
    cases = [
        ["embed", str(m), "-e", "no-such-encoder"],
        ["embed", str(tmp_path / "missing.jsonl"), "-e", "test-text"],
        ["embed", str(m), "-e", "test-image"],  # image encoder on a text side
        ["embed", str(m), "-e", "test-text", "-o", "dim=many"],
        ["embed", str(m), "-e", "test-text", "-o", "nonsense"],
        ["embed", str(m), "-e", "test-text", "--batch-size", "3", "--chunk-rows", "8"],
        ["embed", str(m), "-e", "test-text", "--side", "c"],
        ["store", "info", str(tmp_path / "nothing.zarr")],
        ["embed", str(m)],  # missing --encoder
    ]
    for args in cases:
        assert ee_main(*args) == 2, args


def test_strict_stops_at_first_failure(tmp_path):
    m = image_manifest(tmp_path / "d", 24, {3: "empty", 20: "empty"})
    r = embed_side(str(tmp_path / "s.zarr"), str(m), "a", "test-image", {}, chunk_rows=8, strict=True)
    assert r.stopped_early and r.exit_code == 1
    assert r.chunks_run == 1 and r.failed == 1


def _embed_cmd(manifest, store, *extra):
    return [
        sys.executable,
        "-m",
        "embedeverything",
        "embed",
        str(manifest),
        "-e",
        "test-image",
        "--store",
        str(store),
        "--chunk-rows",
        "8",
        "--batch-size",
        "4",
        "--threads",
        "1",
        *extra,
    ]


def _wait_done(store, at_least, proc, limit=60.0):
    t0 = time.time()
    while time.time() - t0 < limit:
        assert proc.poll() is None, "the run ended before it could be interrupted"
        try:
            arr = only_array(store)
            if arr.counts()["done"] >= at_least:
                return arr.counts()["done"]
        except Exception:
            pass
        time.sleep(0.05)
    raise AssertionError("no progress")


@pytest.mark.slow
def test_kill_9_then_resume_gives_the_bytes_of_an_uninterrupted_run(tmp_path):
    m = image_manifest(tmp_path / "d", 64, {9: "empty"})
    # uninterrupted reference
    ref = subprocess.run(_embed_cmd(m, tmp_path / "ref.zarr"), capture_output=True, text=True)
    assert ref.returncode == 1, ref.stderr  # one bad file
    # interrupted: slow batches, killed with SIGKILL after a few chunks
    slow = ["-o", "delay=0.15"]
    p = subprocess.Popen(
        _embed_cmd(m, tmp_path / "s.zarr", *slow), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    done_at_kill = _wait_done(tmp_path / "s.zarr", 16, p)
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert p.returncode == -signal.SIGKILL
    assert done_at_kill < 63
    # resume (the delay option is the same: it is part of the array's identity)
    r = subprocess.run(_embed_cmd(m, tmp_path / "s.zarr", *slow), capture_output=True, text=True)
    assert r.returncode == 1, r.stderr
    # finished chunks were not recomputed
    first = only_array(tmp_path / "s.zarr")
    assert first.counts() == {"rows": 64, "done": 63, "failed": 1, "pending": 0}
    embedded_now = int(r.stdout.split(" embedded")[0].rsplit(" ", 1)[-1])
    assert embedded_now <= 63 - done_at_kill + 8  # at most the chunk in flight is redone
    ref_arr = Store.open(tmp_path / "ref.zarr").arrays()[0]
    # the delay option changes the array key, not the math: compare bytes
    assert first.read().tobytes() == ref_arr.read().tobytes()
    assert np.array_equal(first.state(), ref_arr.state())


@pytest.mark.slow
def test_ctrl_c_exits_130_and_keeps_finished_chunks(tmp_path):
    m = image_manifest(tmp_path / "d", 48)
    p = subprocess.Popen(
        _embed_cmd(m, tmp_path / "s.zarr", "-o", "delay=0.15"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    _wait_done(tmp_path / "s.zarr", 8, p)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 130, err
    assert "Traceback" not in err
    kept = only_array(tmp_path / "s.zarr").counts()["done"]
    assert kept >= 8
    r = subprocess.run(_embed_cmd(m, tmp_path / "s.zarr", "-o", "delay=0.15"), capture_output=True, text=True)
    assert r.returncode == 0 and only_array(tmp_path / "s.zarr").counts()["done"] == 48
    assert os.path.exists(tmp_path / "s.zarr")


def test_chunk_rows_fit_the_run():
    from embedeverything.chunks import MAX_CHUNK_ROWS, chunk_rows_for

    # a slow encoder over a short run: a twentieth of the run per chunk, in whole batches
    assert chunk_rows_for(0.1, 200, 4) == 8
    # never less than one batch, always whole batches
    assert chunk_rows_for(1.0, 10, 8) == 8
    assert chunk_rows_for(0.013, 1000, 8) % 8 == 0
    # a long run: a few seconds per chunk, not a twentieth of hours
    assert chunk_rows_for(0.05, 1_000_000, 8) * 0.05 <= 5.0
    # a fast encoder: capped
    assert chunk_rows_for(1e-7, 10_000_000, 32) == MAX_CHUNK_ROWS


def test_new_array_times_a_batch_and_keeps_its_chunks_on_resume(tmp_path):
    m = text_manifest(tmp_path / "m.jsonl", 40)
    store = str(tmp_path / "s.zarr")
    ticks: list[int] = []
    # 0.05 s per batch of 8 over 40 rows: the whole run is 0.25 s, so a chunk is one batch
    rep = embed_side(store, str(m), "a", "test-text", {"delay": 0.05}, on_progress=ticks.append)
    arr = only_array(tmp_path / "s.zarr")
    assert arr.chunk_rows == 8 and rep.done == 40
    assert arr.group.attrs["chunk_rows_source"].startswith("timed:")
    assert ticks and max(ticks) <= 8 and sum(ticks) == 40
    # the manifest grows tenfold: the array keeps its chunks (a resume computes the same batches)
    m2 = text_manifest(tmp_path / "m2.jsonl", 400)
    embed_side(store, str(m2), "a", "test-text", {"delay": 0.05})
    assert only_array(tmp_path / "s.zarr").chunk_rows == 8
    # --chunk-rows still decides a new array's chunks
    embed_side(store, str(m), "b", "test-text", {}, chunk_rows=12, batch_size=4)
    b = Store.open(store).find(side="b")[0]
    assert b.chunk_rows == 12 and b.group.attrs["chunk_rows_source"] == "--chunk-rows"


def test_progress_moves_per_batch_within_a_chunk(tmp_path):
    m = text_manifest(tmp_path / "m.jsonl", 16)
    ticks: list[int] = []
    embed_side(str(tmp_path / "s.zarr"), str(m), "a", "test-text", {}, chunk_rows=16, batch_size=4,
               on_progress=ticks.append)  # fmt: skip
    assert ticks == [4, 4, 4, 4]


def _array_made(store):
    return any((store / "embeddings").glob("*/state/zarr.json")) if (store / "embeddings").exists() else False


@pytest.mark.slow
def test_ctrl_c_half_way_keeps_most_of_what_was_done(tmp_path):
    """Ctrl-C half way through a run of a slow encoder keeps >= 40% of the rows (a chunk fits the run)."""
    m = image_manifest(tmp_path / "d", 96)

    def cmd(store):
        return [sys.executable, "-m", "embedeverything", "embed", str(m), "-e", "test-image",
                "--store", str(store), "-o", "delay=0.15", "--threads", "1"]  # fmt: skip

    def start(store):
        p = subprocess.Popen(cmd(store), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        t0 = time.time()
        while not _array_made(store):  # made once the encoder is loaded and timed: the embedding starts
            assert p.poll() is None and time.time() - t0 < 60, "no array made"
            time.sleep(0.02)
        return p, time.time()

    p, t0 = start(tmp_path / "ref.zarr")  # uninterrupted: how long the embedding takes here, now
    out, _ = p.communicate(timeout=120)
    whole = time.time() - t0
    assert p.returncode == 0 and "96 embedded" in out
    p, t0 = start(tmp_path / "s.zarr")
    time.sleep(whole / 2)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 130, err
    assert "Traceback" not in err and out == ""
    done = only_array(tmp_path / "s.zarr").counts()["done"]
    assert done >= 0.4 * 96, (done, whole)
    line = err.strip().splitlines()[-1]
    assert (
        line.startswith(f"interrupted: {done} of 96 rows of a.test-image-") and "run the same command" in line
    )
    assert f"the {96 - done} left" in line
    # resumed: the same chunks, the bytes of the uninterrupted run
    r = subprocess.run(cmd(tmp_path / "s.zarr"), capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("\n") == 1  # stdout: the result line only; the bar is on stderr
    ref = only_array(tmp_path / "ref.zarr")
    got = only_array(tmp_path / "s.zarr")
    assert got.chunk_rows == ref.chunk_rows and ref.chunk_rows < 64
    assert got.read().tobytes() == ref.read().tobytes()
