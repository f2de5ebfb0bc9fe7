"""`ee embed` on a real Dask LocalCluster (worker processes): equal bytes, killed workers, clear failures."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import image_manifest, run_ee, text_manifest

from embedeverything.store import Store

distributed = pytest.importorskip("distributed")
pytestmark = pytest.mark.slow


def only(store):
    (arr,) = Store.open(store).arrays()
    return arr


@pytest.fixture
def cluster():
    """Two worker processes, non-daemonic (so each can keep a decoder process), one thread each."""
    import dask
    from distributed import Client, LocalCluster

    with dask.config.set({"distributed.worker.daemon": False, "distributed.scheduler.allowed-failures": 1}):
        lc = LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None, silence_logs=40
        )
        client = Client(lc)
        try:
            yield lc, client
        finally:
            client.close()
            lc.close()


def embed_args(manifest, store, *extra):
    return [
        "embed",
        str(manifest),
        "-e",
        "test-image",
        "-o",
        "backend=torch",
        "--store",
        str(store),
        "--chunk-rows",
        "8",
        "--batch-size",
        "4",
        *extra,
    ]


def test_local_cluster_gives_the_bytes_of_a_single_process_run(tmp_path):
    m = image_manifest(tmp_path / "d", 40, {6: "text", 33: "missing"})
    single = run_ee(*embed_args(m, tmp_path / "one.zarr", "--threads", "1"))
    assert single.code == 1, single.err
    multi = run_ee(*embed_args(m, tmp_path / "two.zarr", "--workers", "2"))
    assert multi.code == 1, multi.err
    a, b = only(tmp_path / "one.zarr"), only(tmp_path / "two.zarr")
    assert a.counts() == b.counts() == {"rows": 40, "done": 38, "failed": 2, "pending": 0}
    # bitwise: the same chunks of 8 in batches of 4 (the same failed rows left out), one thread each
    assert a.read().tobytes() == b.read().tobytes()
    assert list(a.errors()) == list(b.errors())  # decoding isolation works inside a worker too
    assert a.identity == b.identity


def test_worker_killed_mid_run_loses_and_duplicates_nothing(tmp_path, cluster):
    lc, client = cluster
    m = image_manifest(tmp_path / "d", 64)
    ref = run_ee(*embed_args(m, tmp_path / "ref.zarr", "--threads", "1", "-o", "delay=0.1"))
    assert ref.code == 0, ref.err
    pids = list(client.run(os.getpid).values())
    cmd = [
        sys.executable,
        "-m",
        "embedeverything",
        *embed_args(m, tmp_path / "s.zarr", "--scheduler", lc.scheduler_address, "-o", "delay=0.1"),
    ]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    t0 = time.time()
    while time.time() - t0 < 120:
        try:
            if only(tmp_path / "s.zarr").counts()["done"] >= 16:
                break
        except Exception:
            pass
        time.sleep(0.05)
    os.kill(pids[0], signal.SIGKILL)  # really killed, mid-run; the nanny starts a new one
    out, err = p.communicate(timeout=300)
    assert p.returncode == 0, err
    arr = only(tmp_path / "s.zarr")
    assert arr.counts() == {"rows": 64, "done": 64, "failed": 0, "pending": 0}
    # bitwise: a rerun task embeds its chunk in the same batches of 4 on one thread, as the reference did
    assert arr.read().tobytes() == only(tmp_path / "ref.zarr").read().tobytes()
    assert len(set(Store.open(tmp_path / "s.zarr").ids())) == 64


def test_repeated_worker_deaths_become_one_line_and_a_rerun_goes_on(tmp_path):
    import dask
    from distributed import LocalCluster

    m = text_manifest(tmp_path / "m.jsonl", 24)
    store = tmp_path / "s.zarr"
    args = [
        "embed",
        str(m),
        "-e",
        "test-text",
        "--store",
        str(store),
        "--chunk-rows",
        "8",
        "--batch-size",
        "8",
    ]
    os.environ["EE_TESTENC_DIE"] = "number 13 "  # row 13's text; workers inherit it
    try:
        with dask.config.set(
            {"distributed.worker.daemon": False, "distributed.scheduler.allowed-failures": 1}
        ):
            with LocalCluster(
                n_workers=1, threads_per_worker=1, dashboard_address=None, silence_logs=50
            ) as lc:
                r = run_ee(*args, "--scheduler", lc.scheduler_address, env={"EE_TESTENC_DIE": ""})
    finally:
        del os.environ["EE_TESTENC_DIE"]
    assert r.code == 1, r.err
    # stderr: the progress bar's last state, then the one error line (no log lines, no traceback)
    lines = [x for x in r.err.strip().splitlines() if not x.startswith("embed a with test-text")]
    assert len(lines) == 1 and lines[0].startswith("error:"), r.err
    assert "rows 8-15" in lines[0] and "rerun" in lines[0], r.err
    pending = only(store).counts()["pending"]
    assert 8 <= pending < 24  # the chunk that kills workers, and any queued behind it on the dead worker
    again = run_ee(*args, "--workers", "1")
    assert again.code == 0, again.err
    assert f"{pending} embedded" in again.out
    assert only(store).counts()["done"] == 24


def test_workers_without_dask_says_which_extra(tmp_path):
    fake = tmp_path / "nodask"
    fake.mkdir()
    (fake / "distributed.py").write_text("raise ImportError('No module named distributed')\n")
    m = text_manifest(tmp_path / "m.jsonl", 4)
    r = run_ee("embed", str(m), "-e", "test-text", "--workers", "2", env={"PYTHONPATH": str(fake)})
    assert r.code == 2 and "embedeverything[dask]" in r.err


def test_memory_store_single_process(tmp_path):
    from embedeverything.embed import embed_side

    m = text_manifest(tmp_path / "m.jsonl", 10)
    r = embed_side("memory://ee-test-store", str(m), "a", "test-text", {}, chunk_rows=4)
    assert r.done == 10
    assert np.isfinite(Store.open("memory://ee-test-store").arrays()[0].read()).all()
