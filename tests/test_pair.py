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


def test_ctrl_c_in_training_keeps_the_epoch_and_the_same_command_goes_on(videos, tmp_path):
    """As `ee train`: the epoch under way ends and is kept (no periodic checkpoint here), exit 130 with
    what was kept; the same command resumes from it and finishes."""
    out = tmp_path / "out"
    args = pair_args(videos, out, "--epochs", "400", "--train-opt", "patience=100000")
    args += ["--train-opt", "checkpoint_every_s=1e9", "--no-refit", "--anchors", "off"]
    p = subprocess.Popen([sys.executable, "-m", "embedeverything", *args], stderr=subprocess.PIPE, text=True)
    metrics = out / "train" / "metrics.jsonl"
    t0 = time.time()
    while not (metrics.exists() and metrics.read_text()):
        assert p.poll() is None and time.time() - t0 < 240, p.stderr.read() if p.stderr else ""
        time.sleep(0.02)
    p.send_signal(signal.SIGINT)
    err = p.communicate(timeout=120)[1].splitlines()
    assert p.returncode == 130, err
    kept = int(err[-1].removeprefix("interrupted at epoch ").split(" ")[0])
    assert err[-1] == (
        f"interrupted at epoch {kept} of 400: checkpoint kept in {out / 'train'}; run the same command again to go on"
    )
    assert len(metrics.read_text().splitlines()) == kept < 400
    assert (out / "train" / "checkpoint.safetensors").exists()
    r = run_ee(*args)
    assert r.code == 0, r.err
    assert f"train: resuming after epoch {kept} of 400" in r.err
    assert len(metrics.read_text().splitlines()) == 400


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


def test_missing_weights_hint_names_the_flags_of_ee_pair_and_leaves_no_array(videos, tmp_path):
    out = tmp_path / "o"
    args = ["pair", "--a", "test-image", "--b", "vggish", "--data", str(videos), "--out", str(out)]
    env = {"EE_OFFLINE": "1", "EE_VGGISH_WEIGHTS": "", "EE_VGGISH_PCA": ""}
    r = run_ee(*args, "--b-opt", f"cache_dir={tmp_path / 'no-weights'}", "--no-figures", env=env)
    assert r.code == 2, r.err
    last = r.err.strip().splitlines()[-1]
    assert "--b-opt random_init=true" in last and "--b-opt cache_dir=DIR" in last
    assert "--opt" not in last.replace("--b-opt", "")
    info = run_ee("store", "info", str(out / "store.zarr"), "--json")
    assert '"encoder": "test-image"' in info.out and "vggish" not in info.out


def test_too_few_pairs_are_refused_before_embedding(tmp_path):
    few = tmp_path / "few"
    make_demo_videos(few, clips_per_class=2, duration=2.0, classes=4)  # 8 videos, one pair each
    out = tmp_path / "o"
    r = run_ee("pair", "--a", "test-image", "--b", "test-audio", "--data", str(few), "--out", str(out))
    assert r.code == 2, r.err
    assert "only 8 pairs" in r.err and "at least 10" in r.err and "--every" in r.err
    assert not (out / "store.zarr").exists()  # nothing embedded


def test_small_splits_are_said_and_class_level_figures_shown(videos, tmp_path):
    # 12 videos, one pair each: 1 validation row, 4 test rows
    args = [
        "pair",
        "--a",
        "test-image",
        "--b",
        "test-audio",
        "--data",
        str(videos),
        "--out",
        str(tmp_path / "o"),
    ]
    r = run_ee(*args, "--labels-from-folders", "--no-figures", "--threads", "1")
    assert r.code == 0, r.err
    assert "warning: only 1 validation row: the best epoch rests on it" in r.err
    assert "warning: only 4 test rows" in r.err
    lines = r.out.strip().splitlines()
    assert "baselines skipped: the split has fewer than 2 validation rows" in r.out
    assert any(
        line.startswith("class level (3 classes, chance about 0.33): adapter R@1 a→b ") for line in lines
    )
    assert any(line.startswith("meaning: on 4 test rows one row moves R@1 by 0.25") for line in lines)
    assert "warning" not in r.out  # warnings on stderr, results on stdout


def test_random_weights_are_said_beside_the_figures(tmp_path):
    from embedeverything.cli.pair import _summary_lines
    from embedeverything.pairing import PairSummary

    def method(name, kind, r1, class_r1):
        x = {
            f"{d}_{k}": v
            for d in ("a2b", "b2a")
            for k, v in (("r1", r1), ("r10", 0.3), ("class_r1", class_r1))
        }
        return {"name": name, "kind": kind, "metrics": {**x, "r1": r1, "a2b_map": 0.4, "b2a_map": 0.4}}

    summary = PairSummary(
        out=tmp_path, manifest=tmp_path / "m.jsonl", store="s", random_weights=["clip", "vggish"]
    )
    summary.metrics = {
        "test_rows_used": 78,
        "classes": 5,
        "chance_r1": 1 / 78,
        "counts": {"train": 100, "val": 40, "test": 78},
        "methods": [method("adapter", "adapter", 0.026, 0.41), method("cca", "baseline", 0.128, 0.52)],
    }
    lines = _summary_lines(summary)
    assert lines[2].startswith("best baseline (cca): R@1 a→b 0.128")
    assert lines[3].startswith("class level (5 classes, chance about 0.20): adapter R@1 a→b 0.410")
    assert "cca R@1 a→b 0.520" in lines[3]
    assert lines[4].startswith("meaning: clip and vggish ran with RANDOM weights") and "0.20" in lines[4]
