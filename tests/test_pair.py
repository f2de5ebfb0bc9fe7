"""`ee pair`: the whole method through the CLI, stage skipping, kill -9 and resume, user mistakes."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import run_ee

from embedeverything.demo import make_demo_videos

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("av") / "videos"
    make_demo_videos(d, clips_per_class=4, duration=3.0, classes=3)
    return d


def pair_args(videos: Path, out: Path, *extra: str) -> list[str]:
    return [
        "pair",
        "--a",
        "test-image",
        "--b",
        "test-audio",
        "--data",
        str(videos),
        "--out",
        str(out),
        "--every",
        "1.0",
        "--window",
        "2.0",
        "--labels-from-folders",
        "--no-figures",
        "--a-opt",
        "backend=torch",
        "--b-opt",
        "backend=torch",
        "--threads",
        "1",
        *extra,
    ]


def adapter_state(path: Path) -> tuple[dict, dict]:
    from embedeverything.adapter import read_adapter_file

    config, tensors = read_adapter_file(path)
    return config.without_timing(), {k: v.numpy().tobytes() for k, v in tensors.items()}


def test_pair_runs_every_stage_then_skips_them(videos, tmp_path):
    out = tmp_path / "out"
    r = run_ee(*pair_args(videos, out))
    assert r.code == 0, r.err
    adapter = out / "train" / "adapter.safetensors"
    assert adapter.exists() and (out / "manifest.jsonl").exists() and (out / "store.zarr").exists()
    assert f"adapter: {adapter}" in r.out.strip().splitlines()[-1]
    assert "rows used: 36" in r.out
    again = run_ee(*pair_args(videos, out))
    assert again.code == 0, again.err
    assert "ingest: up to date" in again.err and "train: up to date" in again.err
    assert "(up to date)" in again.err
    from embedeverything import load_adapter

    ad = load_adapter(adapter)
    assert ad.config.a.identity.name == "test-image" and ad.config.b.identity.name == "test-audio"


@pytest.mark.parametrize("stage", ["embed", "train"])
def test_kill_9_during_a_stage_then_rerun_gives_the_same_adapter(videos, tmp_path, stage):
    out = tmp_path / "out"
    slow = [
        "--a-opt",
        "delay=0.05",
        "--epochs",
        "1500",
        "--train-opt",
        "patience=100000",
        "--train-opt",
        "checkpoint_every_s=0",
    ]
    ref = run_ee(*pair_args(videos, out, *slow))
    assert ref.code == 0, ref.err
    reference = adapter_state(out / "train" / "adapter.safetensors")
    shutil.rmtree(out)
    cmd = [sys.executable, "-m", "embedeverything", *pair_args(videos, out, *slow)]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    target = out / ("store.zarr" if stage == "embed" else "train/checkpoint.safetensors")
    t0 = time.time()
    while not target.exists():
        assert p.poll() is None, p.stderr.read().decode()[-2000:]
        assert time.time() - t0 < 180
        time.sleep(0.05)
    if stage == "train":  # a few epochs in, far from the last
        metrics = out / "train" / "metrics.jsonl"
        while not (metrics.exists() and len(metrics.read_text().splitlines()) >= 5):
            assert p.poll() is None and time.time() - t0 < 180
            time.sleep(0.02)
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert not (out / "train" / "adapter.safetensors").exists()
    r = run_ee(*pair_args(videos, out, *slow))
    assert r.code == 0, r.err
    assert adapter_state(out / "train" / "adapter.safetensors") == reference


def test_user_mistakes_are_one_line_exit_2(videos, tmp_path):
    cases = [
        ["pair", "--a", "no-such", "--b", "test-audio", "--data", str(videos)],
        ["pair", "--a", "test-image", "--b", "test-audio", "--data", str(tmp_path / "missing")],
        ["pair", "--a", "test-image", "--b", "test-image", "--data", str(videos)],
        [
            "pair",
            "--a",
            "test-audio",
            "--b",
            "test-image",
            "--data",
            str(videos),
            "--out",
            str(tmp_path / "o"),
        ],
        [
            "pair",
            "--a",
            "test-image",
            "--b",
            "test-audio",
            "--data",
            str(videos),
            "--lr",
            "-1",
            "--out",
            str(tmp_path / "o2"),
        ],
    ]
    for args in cases:
        r = run_ee(*args)
        assert r.code == 2, (args, r.err)
        assert len(r.err.strip().splitlines()) == 1 and "Traceback" not in r.err, r.err
