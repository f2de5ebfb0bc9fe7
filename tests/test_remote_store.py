"""Stores addressed by fsspec URLs: s3:// against a local S3-compatible server (moto) on 127.0.0.1."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import run_ee, text_manifest

from embedeverything.store import Store

pytest.importorskip("s3fs")
pytest.importorskip("moto.server")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def s3_env():
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    env = {
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
    }
    try:
        t0 = time.time()
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if time.time() - t0 > 30:
                    raise
                time.sleep(0.2)
        import s3fs

        s3fs.S3FileSystem(endpoint_url=env["AWS_ENDPOINT_URL"], key="test", secret="test").mkdir("ee-bucket")
        yield env
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_embed_into_s3_and_read_back(tmp_path, s3_env):
    m = text_manifest(tmp_path / "m.jsonl", 12)
    url = "s3://ee-bucket/run1/store.zarr"
    r = run_ee("embed", str(m), "-e", "test-text", "--store", url, "--chunk-rows", "4", env=s3_env)
    assert r.code == 0, r.err
    again = run_ee("embed", str(m), "-e", "test-text", "--store", url, env=s3_env)
    assert again.code == 0 and "up to date" in again.out
    info = run_ee("store", "info", url, "--json", env=s3_env)
    assert info.code == 0, info.err
    assert json.loads(info.out)["arrays"][0]["done"] == 12
    # the same bytes as a local store
    local = run_ee(
        "embed", str(m), "-e", "test-text", "--store", str(tmp_path / "l.zarr"), "--chunk-rows", "4"
    )
    assert local.code == 0
    import os

    old = {k: os.environ.get(k) for k in s3_env}
    os.environ.update(s3_env)
    try:
        remote = Store.open(url).arrays()[0].read()
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    # bitwise: both embedded in chunks of 4 with the same batches and threads; only the storage differs
    assert np.array_equal(remote, Store.open(tmp_path / "l.zarr").arrays()[0].read())


def test_missing_remote_store_is_one_line(s3_env):
    r = run_ee("store", "info", "s3://ee-bucket/nothing-here.zarr", env=s3_env)
    assert r.code == 2 and len(r.err.strip().splitlines()) == 1 and "Traceback" not in r.err


def test_index_a_remote_store_locally_and_query_through_it(tmp_path, s3_env, monkeypatch, capsys):
    """The index of a store in object storage is a local folder beside the adapter; the manifest, which
    no local folder holds beside the store, is named with --manifest (without it: one line, exit 2)."""
    pytest.importorskip("lancedb")
    from conftest import ee_main

    from embedeverything.train import make_config, train

    for k, v in s3_env.items():
        monkeypatch.setenv(k, v)
    m = text_manifest(tmp_path / "m.jsonl", 24)
    url = "s3://ee-bucket/indexed/store.zarr"
    for side, dim in (("a", "12"), ("b", "20")):
        opts = ["-o", f"dim={dim}", "-o", f"seed={ord(side)}"]
        assert ee_main("embed", str(m), "-e", "test-text", "--side", side, "--store", url, *opts) == 0
    run = train(url, None, None, tmp_path / "run", make_config(epochs=2, checkpoint_every_s=1e9, threads=1))
    capsys.readouterr()
    assert ee_main("index", str(run.adapter_path)) == 2
    assert "--manifest" in capsys.readouterr().err
    assert ee_main("index", str(run.adapter_path), "--manifest", str(m)) == 0
    out = capsys.readouterr().out
    assert f"of store {url}" in out and "24 rows, 24 added" in out
    assert (run.adapter_path.parent / "index" / "ee-index.json").is_file()
    assert ee_main("query", str(run.adapter_path), "t0003", "--k", "3") == 0
    got = capsys.readouterr()
    assert "searched: index" in got.err, got.err
