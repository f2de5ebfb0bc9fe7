"""The trainer on real Zarr stores: planted relation recovered, split, resume (in process and kill -9),
streaming under a tiny memory budget, third-party loss by name, and the user's mistakes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import run_ee
from safetensors import safe_open

import embedeverything as ee
from embedeverything.adapter import load_adapter, read_adapter_file
from embedeverything.encoder import EncoderIdentity
from embedeverything.errors import UserError
from embedeverything.manifest import MediaRef, Pair
from embedeverything.plugins import register_plugin, unregister_plugin
from embedeverything.store import DONE, FAILED, Store
from embedeverything.train import make_config, recall_at_1, train
from embedeverything.train.data import StreamingPairs
from embedeverything.train.interrupt import TrainingInterrupted
from embedeverything.train.split import load_split, rows_hash


def make_store(
    path: Path,
    n: int = 600,
    da: int = 32,
    db: int = 16,
    noise: float = 0.1,
    seed: int = 0,
    shared_a: str | None = None,
    chunk: int = 128,
    splits: list[str] | None = None,
    labels: list[str] | None = None,
    failed_b: tuple[int, ...] = (),
) -> Store:
    """A store whose side b is a planted linear function of side a plus noise: B = A W + noise."""
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((n, da)).astype(np.float32) * 3 + 5  # off-centre: normalisation must matter
    W = rng.standard_normal((da, db)).astype(np.float32) / np.sqrt(da)
    B = (A @ W + noise * rng.standard_normal((n, db))).astype(np.float32)
    store = Store.open(str(path), create=True)
    pairs = [
        Pair(
            id=f"p{i}",
            a=MediaRef(kind="text", text=f"a{i}"),
            b=MediaRef(kind="text", text=f"b{i}"),
            group=f"g{i // 3}",
            split=None if splits is None else splits[i],
            label=None if labels is None else labels[i],
        )
        for i in range(n)
    ]
    store.sync_rows(pairs)
    for side, X, d, shared in (("a", A, da, shared_a), ("b", B, db, None)):
        arr = store.ensure_embedding(
            f"{side}.enc{side}-0123456789",
            side=side,
            encoder=f"enc{side}",
            options={},
            dim=d,
            chunk_rows=chunk,
        )
        for k in range(arr.n_chunks()):
            lo, hi = arr.chunk_bounds(k)
            state = np.full(hi - lo, DONE, np.uint8)
            if side == "b":
                for r in failed_b:
                    if lo <= r < hi:
                        state[r - lo] = FAILED
            arr.write_chunk(k, X[lo:hi], state, [""] * (hi - lo))
        arr.set_identity(_identity(side, d, shared))
    return store


def _identity(side: str, dim: int, shared: str | None) -> EncoderIdentity:
    return EncoderIdentity(
        name=f"enc{side}",
        modality="text",
        dim=dim,
        plugin="tests",
        plugin_version="1",
        model_id=f"test/{side}",
        weights="sha256:00",
        shared_space=shared,
    )


FAST = dict(checkpoint_every_s=0, threads=1)


def test_planted_relation_is_recovered(tmp_path):
    make_store(tmp_path / "s.zarr", n=900, failed_b=(5, 6, 7))
    res = train(str(tmp_path / "s.zarr"), None, None, tmp_path / "out", make_config(epochs=40, **FAST))
    assert res.metrics["val_r1"] > 0.95, res.metrics
    assert res.adapter_path.exists()
    # split: disjoint, grouped, failed rows left out, saved for evaluation
    split = load_split(tmp_path / "out" / "split.json")
    parts = [set(split.train.tolist()), set(split.val.tolist()), set(split.test.tolist())]
    assert not (parts[0] & parts[1]) and not (parts[0] & parts[2]) and not (parts[1] & parts[2])
    assert sum(len(p) for p in parts) == 900 - 3 and not ({5, 6, 7} & set.union(*parts))
    groups = [{r // 3 for r in p} for p in parts]
    assert not (groups[0] & groups[2]) and not (groups[1] & groups[2])
    assert abs(len(parts[2]) / 897 - 0.33) < 0.03
    raw = json.loads((tmp_path / "out" / "split.json").read_text())
    assert raw["parts"]["test"][:2] == [f"p{r}" for r in sorted(parts[2])[:2]]
    lines = (tmp_path / "out" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == res.epochs_run and {"loss", "val_r1"} <= set(json.loads(lines[-1]))
    # the adapter maps the held-out test rows well too
    ad = load_adapter(res.adapter_path)
    store = Store.open(str(tmp_path / "s.zarr"))
    za = ad.a(torch.from_numpy(store.embedding("a.enca-0123456789").read(split.test)))
    zb = ad.b(torch.from_numpy(store.embedding("b.encb-0123456789").read(split.test)))
    from embedeverything.train import recall_at_1

    assert min(recall_at_1(za, zb)) > 0.9
    # the default refits on train + val for the best epoch count: the adapter records those rows
    t = ad.config.training
    both = np.sort(np.concatenate([split.train, split.val]))
    assert t.refit_epochs == res.best_epoch == res.refit_epochs and t.rows == both.size
    assert t.row_ids_sha256 == rows_hash(store.ids(), both) != rows_hash(store.ids(), split.train)
    refit_lines = (tmp_path / "out" / "metrics-refit.jsonl").read_text().splitlines()
    assert len(refit_lines) == res.best_epoch and "val_r1" not in json.loads(refit_lines[-1])


def test_shared_space_side_stays_identity(tmp_path):
    make_store(tmp_path / "s.zarr", n=300, da=16, db=8, shared_a="clip-space")
    res = train(str(tmp_path / "s.zarr"), "enca", "encb", tmp_path / "out", make_config(epochs=3, **FAST))
    ad = load_adapter(res.adapter_path)
    assert ad.config.a.head.kind == "identity" and ad.config.b.head.kind == "linear"
    assert ad.config.shared_dim == 16 and ad.config.b.head.out_dim == 16
    # the anchor part is for two trained heads only: an identity side stays exactly identity
    assert ad.config.b.head.anchors is None and ad.config.training.anchors is None
    x = np.random.default_rng(0).standard_normal((4, 16)).astype(np.float32)
    assert np.array_equal(ad.a(x), x)  # untouched, so a text tower of that space still lands there
    with safe_open(str(res.adapter_path), framework="pt") as f:
        assert not [k for k in f.keys() if k.startswith("a.")]


def test_paper_preset_settings():
    cfg = make_config("paper")
    assert (cfg.optimizer, cfg.lr, cfg.batch_size, cfg.epochs, cfg.patience) == (
        "adam",
        1e-4,
        4096,
        300,
        None,
    )
    assert cfg.loss == "clip" and cfg.loss_options["temperature"] == 0.07
    assert abs(cfg.fractions[0] + cfg.fractions[1] - 0.67) < 1e-9 and cfg.fractions[2] == 0.33
    assert make_config("paper", epochs=3).epochs == 3
    assert (cfg.refit, cfg.anchors) == (False, "off")  # the paper's run: no refit, no anchor part
    assert (make_config().refit, make_config().anchors) == (True, "auto")
    assert (cfg.dim, make_config().dim, make_config("paper", dim=64).dim) == (256, "auto", 64)
    with pytest.raises(UserError, match="lr"):
        make_config(lr=-1)
    with pytest.raises(UserError, match="unknown preset"):
        make_config("fast")


def test_paper_preset_trains_as_before(tmp_path):
    """No refit, no anchor part: the selection run's best heads on the train rows, as the paper's run."""
    make_store(tmp_path / "s.zarr", n=300)
    res = train(
        str(tmp_path / "s.zarr"), None, None, tmp_path / "out", make_config("paper", epochs=3, **FAST)
    )
    ad = load_adapter(res.adapter_path)
    t = ad.config.training
    split = load_split(tmp_path / "out" / "split.json")
    assert t.refit_epochs is None and t.anchors is None and res.anchors is None
    assert ad.config.a.head.anchors is None and ad.config.b.head.anchors is None
    assert ad.config.shared_dim == 256 and t.rows == split.train.size
    assert t.row_ids_sha256 == rows_hash(Store.open(str(tmp_path / "s.zarr")).ids(), split.train)
    assert set(os.listdir(tmp_path / "out")) == {
        "adapter.safetensors",
        "checkpoint.safetensors",
        "metrics.jsonl",
        "split.json",
    }
    assert set(ad.config.metrics) == {"val_loss", "val_r1", "val_r1_a2b", "val_r1_b2a", "best_epoch"}


def test_auto_dim_follows_the_training_pairs(tmp_path):
    """``dim="auto"``: 1024 up to 10,000 training pairs, 256 above; an explicit dim wins; both phases (and
    the adapter's settings) carry the dim resolved from the selection run's training pairs."""
    from embedeverything.train.config import auto_dim

    assert [auto_dim("auto", n) for n in (1, 10_000, 10_001)] == [1024, 1024, 256]
    assert auto_dim(48, 5) == auto_dim(48, 10**6) == 48
    make_store(tmp_path / "s.zarr", n=200)
    for dim, want in (("auto", 1024), (32, 32)):
        res = train(
            str(tmp_path / "s.zarr"), None, None, tmp_path / f"o{dim}", make_config(epochs=2, dim=dim, **FAST)
        )
        ad = load_adapter(res.adapter_path)
        assert ad.config.training.settings["dim"] == want and ad.config.training.refit_epochs is not None
        assert ad.config.a.head.out_dim == ad.config.b.head.out_dim == want


def test_chosen_anchor_part_scores_on_validation_what_the_adapter_gives(tmp_path):
    """Weak heads (3 epochs): the grid picks an anchor part; ``val_r1`` is the fused score, and the
    adapter (no refit: anchors = train rows) gives that R@1 on the validation rows."""
    make_store(tmp_path / "s.zarr", n=300, noise=1.0)
    cfg = make_config(epochs=3, head_kind="mlp", dim=256, refit=False, **FAST)
    res = train(str(tmp_path / "s.zarr"), None, None, tmp_path / "out", cfg)
    ad = load_adapter(res.adapter_path)
    an, spec = ad.config.training.anchors, ad.config.a.head.anchors
    assert an is not None and an["weight"] > 0 and spec is not None and spec == ad.config.b.head.anchors
    split = load_split(tmp_path / "out" / "split.json")
    assert spec.count == an["count"] == split.train.size and ad.config.shared_dim == 256 + spec.count
    assert res.metrics["val_r1"] == an["val_r1"] > an["val_r1_heads_alone"] == res.metrics["val_r1_heads"]
    store = Store.open(str(tmp_path / "s.zarr"))
    za = ad.a(torch.from_numpy(store.embedding("a.enca-0123456789").read(split.val)))
    zb = ad.b(torch.from_numpy(store.embedding("b.encb-0123456789").read(split.val)))
    assert torch.allclose(za.norm(dim=1), torch.ones(len(za)), atol=1e-5)
    r_ab, r_ba = recall_at_1(za, zb)
    tol = 1 / split.val.size  # one pair's rank may flip: the grid sums two cosines, the adapter one
    assert abs(r_ab - an["val_r1_a2b"]) <= tol and abs(r_ba - an["val_r1_b2a"]) <= tol
    grid = json.loads((tmp_path / "out" / "anchors.json").read_text())["grid"]
    ks = {min(k, spec.count) for k in (16, 64, 256, 800)}  # ASIF's k, capped at the anchor count
    assert len(grid) == 1 + len(ks) * 3 * 9
    best = max(grid, key=lambda g: g["val_mrr"])  # the first of equals, as the grid keeps it
    assert (best["k"], best["power"], best["weight"]) == (spec.k, spec.power, spec.weight)


def _adapter_state(path: Path) -> tuple[dict, dict]:
    config, tensors = read_adapter_file(path)
    return config.without_timing(), tensors


def _assert_same_adapter(p1: Path, p2: Path) -> None:
    c1, t1 = _adapter_state(p1)
    c2, t2 = _adapter_state(p2)
    assert c1 == c2
    assert t1.keys() == t2.keys()
    for k in t1:
        assert torch.equal(t1[k], t2[k]), k  # bitwise


def _checkpoint_epoch(path: Path) -> int:
    with safe_open(str(path), framework="pt") as f:
        return json.loads(f.metadata()["state"])["epoch"]


def _last_epoch(metrics: Path) -> int:
    return json.loads(metrics.read_text().splitlines()[-1])["epoch"]


SLOW_CHECKPOINTS = dict(checkpoint_every_s=1e9, threads=1)  # no checkpoint but the last (or a signal's)


@pytest.mark.parametrize("phase", ["select", "refit"])
def test_resume_after_interruption_in_process_is_bitwise_equal(tmp_path, phase):
    """A real SIGINT in the selection run or in the refit: the epoch under way ends and is kept, with no
    periodic checkpoint before it; the same call goes on from there (dropout draws from the restored RNG)."""
    make_store(tmp_path / "s.zarr", n=400)
    cfg = make_config(epochs=8, head_kind="mlp", mlp_width=24, dropout=0.2, patience=None, **SLOW_CHECKPOINTS)
    full = train(str(tmp_path / "s.zarr"), None, None, tmp_path / "full", cfg)
    assert full.refit_epochs == full.best_epoch >= 3

    def sigint_at_3(rep):
        if rep.phase == phase and rep.epoch == 3 and rep.loss is not None:
            os.kill(os.getpid(), signal.SIGINT)

    cut = tmp_path / "cut"
    with pytest.raises(TrainingInterrupted) as stop:
        train(str(tmp_path / "s.zarr"), None, None, cut, cfg, progress=sigint_at_3)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # given back
    where, of = ("in the refit ", full.refit_epochs) if phase == "refit" else ("", 8)
    assert stop.value.exit_code == 130 and str(stop.value) == (
        f"interrupted {where}at epoch 3 of {of}: checkpoint kept in {cut}; run the same command again to go on"
    )
    assert not (cut / "adapter.safetensors").exists()
    ckpt, metrics = (
        ("checkpoint-refit.safetensors", "metrics-refit.jsonl")
        if phase == "refit"
        else ("checkpoint.safetensors", "metrics.jsonl")
    )
    assert _checkpoint_epoch(cut / ckpt) == _last_epoch(cut / metrics) == 3
    assert (cut / "checkpoint-refit.safetensors").exists() == (phase == "refit")
    other = make_config(**{**cfg.model_dump(), "lr": 0.5, "epochs": 9})
    with pytest.raises(
        UserError, match=r"holds a run with other settings \(lr 0\.001 -> 0\.5, epochs 8 -> 9\)"
    ):
        train(str(tmp_path / "s.zarr"), None, None, cut, other)
    res = train(str(tmp_path / "s.zarr"), None, None, cut, cfg)
    assert res.resumed_from == (3 if phase == "select" else 8) and res.epochs_run == 8
    _assert_same_adapter(full.adapter_path, res.adapter_path)
    assert (cut / "metrics.jsonl").read_text().count("\n") == 8
    assert (cut / "metrics-refit.jsonl").read_text().count("\n") == full.refit_epochs
    # a finished run, run again, writes the same adapter again
    again = train(str(tmp_path / "s.zarr"), None, None, cut, cfg)
    _assert_same_adapter(full.adapter_path, again.adapter_path)
    # force: the run of other settings starts over
    fresh = train(str(tmp_path / "s.zarr"), None, None, cut, other, force=True)
    assert fresh.resumed_from is None and _last_epoch(cut / "metrics.jsonl") == 9
    assert load_adapter(fresh.adapter_path).config.training.settings["lr"] == 0.5


def test_a_second_signal_stops_at_once_and_a_rerun_says_it_starts_over(tmp_path):
    make_store(tmp_path / "s.zarr", n=200)
    cfg = make_config(epochs=6, patience=None, refit=False, anchors="off", **SLOW_CHECKPOINTS)

    def twice_at_2(rep):
        if rep.epoch == 2 and rep.loss is not None:
            os.kill(os.getpid(), signal.SIGTERM)
            os.kill(os.getpid(), signal.SIGTERM)

    out = tmp_path / "out"
    with pytest.raises(TrainingInterrupted) as stop:
        train(str(tmp_path / "s.zarr"), None, None, out, cfg, progress=twice_at_2)
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    assert stop.value.exit_code == 128 + signal.SIGTERM and stop.value.kept is None
    assert str(stop.value).endswith(
        "before the first checkpoint: nothing kept; run the same command again to start over"
    )
    assert not (out / "checkpoint.safetensors").exists() and _last_epoch(out / "metrics.jsonl") == 2
    with pytest.warns(
        UserWarning, match="no checkpoint of the epochs in metrics.jsonl.*starting training over"
    ):
        res = train(str(tmp_path / "s.zarr"), None, None, out, cfg)
    assert res.resumed_from is None and res.epochs_run == 6


@pytest.mark.slow
def test_ctrl_c_in_ee_train_keeps_the_epoch_and_the_same_command_goes_on(tmp_path):
    """`ee train` under a real Ctrl-C: it keeps the epoch it ends (exit 130, says so), other settings are
    refused by name, the same command says it resumes, and the adapter is the uninterrupted one's, bit
    for bit; --force starts over. (SIGTERM takes the same path: the in-process tests send it.)"""
    make_store(tmp_path / "s.zarr", n=400)
    out = tmp_path / "out"
    metrics = out / "metrics.jsonl"
    # no checkpoint but a signal's
    args = [
        "train",
        str(tmp_path / "s.zarr"),
        "--out",
        str(out),
        "--patience",
        "0",
        "--no-refit",
        "--anchors",
    ]
    args += ["off", "--threads", "1", "--checkpoint-every", "1e9"]
    cmd = [sys.executable, "-m", "embedeverything", *args, "--epochs", "30"]
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (metrics.exists() and metrics.read_text()):  # an epoch done
        assert p.poll() is None and time.monotonic() < deadline, p.stderr.read() if p.stderr else ""
        time.sleep(0.02)
    p.send_signal(signal.SIGINT)
    err = p.communicate(timeout=120)[1].splitlines()
    assert p.returncode == 130, err
    epoch = _checkpoint_epoch(out / "checkpoint.safetensors")
    assert epoch == _last_epoch(metrics) < 30 and not (out / "adapter.safetensors").exists()
    assert err[-1] == (
        f"interrupted at epoch {epoch} of 30: checkpoint kept in {out}; run the same command again to go on"
    )
    other = run_ee(*args, "--epochs", "30", "--lr", "3e-4", "--resume")  # the old flag: accepted
    assert other.code == 2 and other.err == (
        f"error: {out} holds a run with other settings (lr 0.001 -> 0.0003); "
        "rerun with the same settings to resume, or --force to start over\n"
    )
    assert _checkpoint_epoch(out / "checkpoint.safetensors") == epoch
    done = run_ee(*args, "--epochs", "30")
    assert done.code == 0, done.err
    assert f"train: resuming after epoch {epoch} of 30 from the checkpoint in {out}" in done.err
    cfg = make_config(epochs=30, patience=None, refit=False, anchors="off", **SLOW_CHECKPOINTS)
    full = train(str(tmp_path / "s.zarr"), None, None, tmp_path / "full", cfg)
    _assert_same_adapter(full.adapter_path, out / "adapter.safetensors")
    fresh = run_ee(*args, "--epochs", "3", "--lr", "3e-4", "--force")
    assert fresh.code == 0 and "resuming" not in fresh.err, fresh.err
    assert [json.loads(x)["epoch"] for x in metrics.read_text().splitlines()] == [1, 2, 3]
    assert load_adapter(out / "adapter.safetensors").config.training.settings["lr"] == 3e-4


@pytest.mark.slow
@pytest.mark.parametrize("phase", ["select", "refit"])
def test_resume_after_kill_9_is_bitwise_equal(tmp_path, phase):
    make_store(tmp_path / "s.zarr", n=600, chunk=256)
    args = ["--epochs", "80", "--patience", "0", "--checkpoint-every", "0", "--threads", "1", "--head", "mlp"]
    cfg = make_config(epochs=80, patience=None, head_kind="mlp", **FAST)
    cmd = [
        sys.executable,
        "-c",
        "from embedeverything.cli import main; main()",
        "train",
        str(tmp_path / "s.zarr"),
    ]
    out = tmp_path / "killed"
    proc = subprocess.Popen(
        [*cmd, "--out", str(out), *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    ckpt = out / ("checkpoint.safetensors" if phase == "select" else "checkpoint-refit.safetensors")
    deadline = time.monotonic() + 120
    while not ckpt.exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.02)
    time.sleep(0.3)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read() if proc.stderr else ""
    assert not (out / "adapter.safetensors").exists(), "the run finished before the kill"
    refit_lines = out / "metrics-refit.jsonl"
    refit_done = refit_lines.read_text().count("\n") if refit_lines.exists() else 0
    done = subprocess.run(
        [*cmd, "--out", str(out), *args, "--resume"], capture_output=True, text=True, timeout=240
    )
    assert done.returncode == 0, done.stderr
    full = train(str(tmp_path / "s.zarr"), None, None, tmp_path / "full", cfg)
    assert full.refit_epochs is not None and full.refit_epochs > 10
    if phase == "refit":  # killed during the refit, not after it
        assert 0 < refit_done < full.refit_epochs, (refit_done, full.refit_epochs)
    _assert_same_adapter(full.adapter_path, out / "adapter.safetensors")


def test_streaming_under_a_tiny_memory_budget(tmp_path):
    make_store(tmp_path / "s.zarr", n=900, chunk=64)
    cfg = make_config(epochs=30, memory_budget=64 * 48 * 4 * 3 * 2, **FAST)  # two chunks a block
    res = train(str(tmp_path / "s.zarr"), None, None, tmp_path / "out", cfg)
    assert res.streamed and res.metrics["val_r1"] > 0.9
    # every epoch: full batches of distinct rows, blocks of chunks in a seed-fixed order
    store = Store.open(str(tmp_path / "s.zarr"))
    rows = load_split(tmp_path / "out" / "split.json").train
    src = StreamingPairs(
        store.embedding("a.enca-0123456789"),
        store.embedding("b.encb-0123456789"),
        rows,
        None,
        64 * 48 * 4 * 3 * 2,
    )
    assert src.ranges_per_block == 2
    batches = list(src.batches(1, 50, seed=0))
    assert len(batches) == rows.size // 50 and all(b[0].shape == (50, 32) for b in batches)
    seen = torch.cat([b[0] for b in batches])
    assert torch.unique(seen, dim=0).shape[0] == seen.shape[0]
    again = list(src.batches(1, 50, seed=0))
    assert all(torch.equal(x[0], y[0]) for x, y in zip(batches, again, strict=True))
    assert src.blocks_read > 2


def test_manifest_split_is_used_and_val_carved_from_train(tmp_path):
    splits = ["test" if i % 3 == 0 else "train" for i in range(300)]
    make_store(tmp_path / "s.zarr", n=300, splits=splits)
    train(str(tmp_path / "s.zarr"), None, None, tmp_path / "out", make_config(epochs=2, **FAST))
    split = load_split(tmp_path / "out" / "split.json")
    assert split.test.tolist() == list(range(0, 300, 3))
    assert split.val.size > 0 and split.source == "manifest+carved"
    assert not (set(split.val.tolist()) & set(range(0, 300, 3)))


class OwnLoss(torch.nn.Module):
    def forward(self, za, zb, labels=None):
        return (1 - torch.nn.functional.cosine_similarity(za, zb, dim=1)).mean()


class OwnLossPlugin:
    @staticmethod
    @ee.hookimpl
    def register_losses(register):
        register("own-cosine", OwnLoss)


@pytest.mark.parametrize("loss", ["own-cosine", "siglip", "vse-hinge", "clip-label"])
def test_other_losses_train_by_name(tmp_path, loss):
    labels = [str(i % 5) for i in range(300)]
    make_store(tmp_path / "s.zarr", n=300, labels=labels)
    register_plugin(OwnLossPlugin(), name="ee-own-loss")
    try:
        res = train(
            str(tmp_path / "s.zarr"), None, None, tmp_path / "out", make_config(epochs=2, loss=loss, **FAST)
        )
    finally:
        unregister_plugin("ee-own-loss")
    ad = load_adapter(res.adapter_path)
    assert ad.config.loss.name == loss
    assert ad.config.loss.plugin == ("ee-own-loss" if loss == "own-cosine" else "embedeverything.losses")


def test_users_mistakes_are_named(tmp_path):
    make_store(tmp_path / "s.zarr", n=60)
    s = str(tmp_path / "s.zarr")
    with pytest.raises(UserError, match="--a 'nope'.*a.enca-0123456789"):
        train(s, "nope", None, tmp_path / "o", make_config(epochs=1, **FAST))
    with pytest.raises(UserError, match="holds side a, not side b"):
        train(s, None, "a.enca-0123456789", tmp_path / "o", make_config(epochs=1, **FAST))
    with pytest.raises(UserError, match="unknown loss"):
        train(s, None, None, tmp_path / "o", make_config(epochs=1, loss="nope", **FAST))
    with pytest.raises(UserError, match="nothing to train"):
        train(
            s, None, None, tmp_path / "o", make_config(epochs=1, head_a="identity", head_b="identity", **FAST)
        )
    with pytest.raises(UserError, match="no embedding store"):
        train(str(tmp_path / "missing"), None, None, tmp_path / "o", make_config(epochs=1))


def test_cli_train_runs_and_reports(tmp_path, capsys):
    from embedeverything.cli import main

    make_store(tmp_path / "s.zarr", n=300)
    base = ["train", str(tmp_path / "s.zarr")]
    with pytest.raises(SystemExit) as e:
        main(
            [
                *base,
                "--out",
                str(tmp_path / "o"),
                "--epochs",
                "3",
                "--threads",
                "1",
                "--loss-opt",
                "temperature=0.1",
            ]
        )
    out = capsys.readouterr()
    assert e.value.code == 0, out.err
    assert "val R@1" in out.out and (tmp_path / "o" / "adapter.safetensors").exists()
    assert "refit on train + val for" in out.out and "anchor part:" in out.out
    assert load_adapter(tmp_path / "o" / "adapter.safetensors").config.loss.options == {"temperature": 0.1}
    with pytest.raises(SystemExit) as e:
        main(
            [
                *base,
                "--out",
                str(tmp_path / "o3"),
                "--epochs",
                "2",
                "--threads",
                "1",
                "--no-refit",
                "--anchors",
                "off",
            ]
        )
    assert e.value.code == 0 and "refit" not in capsys.readouterr().out
    t = load_adapter(tmp_path / "o3" / "adapter.safetensors").config.training
    assert (t.settings["refit"], t.settings["anchors"], t.refit_epochs, t.anchors) == (
        False,
        "off",
        None,
        None,
    )
    with pytest.raises(SystemExit) as e:
        main([*base, "--out", str(tmp_path / "o2"), "--a", "nope"])
    assert e.value.code == 2 and capsys.readouterr().err.startswith("error: --a 'nope'")


def test_which_side_stays_identity():
    from embedeverything.train.trainer import choose_heads

    def ident(name, dim, shared=None):
        return EncoderIdentity(
            name=name,
            modality="image",
            dim=dim,
            plugin="t",
            plugin_version="1",
            model_id="m",
            weights="w",
            shared_space=shared,
        )

    cfg = make_config()
    a, b, d = choose_heads(ident("clip", 512, "clip-ViT-B-32"), ident("vggish", 128), cfg)
    assert (a.kind, b.kind, d) == ("identity", "linear", 512)
    a, b, d = choose_heads(ident("vggish", 128), ident("clip", 512, "clip-ViT-B-32"), cfg)
    assert (a.kind, b.kind, d) == ("linear", "identity", 512)
    # both in one shared space (clip + clip-text): side a stays, side b is trained into it
    a, b, d = choose_heads(ident("clip", 512, "s"), ident("clip-text", 512, "s"), cfg)
    assert (a.kind, b.kind, d) == ("identity", "linear", 512)
    a, b, d = choose_heads(ident("x", 64), ident("y", 32), make_config(dim=48, head_kind="mlp", mlp_width=20))
    assert (a.kind, b.kind, d, a.width) == ("mlp", "mlp", 48, 20)
