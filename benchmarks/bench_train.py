"""Training speed and quality: `ee train` against the loop a user would write from the paper.

Part 1 (speed): the paper's settings (T_a identity on a 512-d CLIP-like side, T_b linear from 128-d,
symmetric InfoNCE with a learnable logit scale from 1/0.07 clamped at 100, Adam lr 1e-4, batch 4096),
the same data, initial weights and epochs, run by
  - naive: fp32, ``DataLoader(TensorDataset(...), batch_size=4096, shuffle=True)``, ``F.cross_entropy``
    on the logits and their transpose, as the paper's recipe reads;
  - ee: ``embedeverything.train.train(..., make_config("paper", ...))`` on a Zarr store.
Reports training pairs/s of each (validation excluded from both), the final validation R@1 of each on
10k+ validation rows, and achieved GFLOP/s against a plain fp32 and bf16 matmul on this machine (for ee
"effective": the FLOPs of the unfolded computation; it folds the linear head into the logits and does
fewer). The two runs happen one after the other; on a shared machine their load differs, so an
interleaved step-by-step comparison (one naive step, one ee step, alternately) is reported as well.

Part 2 (defaults): a planted relation B = f(A) + noise at 300, 3k and 30k pairs; `ee train` defaults
against the paper preset (whose batch 4096 means one step per epoch on small sets); test-part R@1.

Run: ``python benchmarks/bench_train.py`` (a few minutes on 2 cores); ``--quick`` for a smoke run.
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from embedeverything.encoder import EncoderIdentity
from embedeverything.manifest import MediaRef, Pair
from embedeverything.store import DONE, Store
from embedeverything.train import make_config, recall_at_1, train
from embedeverything.train.split import load_split


def planted(n: int, da: int, db: int, noise: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A: unit vectors (a CLIP-like side); B = A W + noise, standardised (a VGGish-like side)."""
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((n, da)).astype(np.float32)
    a /= np.linalg.norm(a, axis=1, keepdims=True)
    w = rng.standard_normal((da, db)).astype(np.float32) * math.sqrt(da / db)
    b = a @ w + noise * rng.standard_normal((n, db)).astype(np.float32)
    b = (b - b.mean(0)) / b.std(0)
    return a, b.astype(np.float32)


def write_store(path: Path, a: np.ndarray, b: np.ndarray, splits: list[str] | None = None) -> None:
    n = a.shape[0]
    store = Store.open(str(path), create=True)
    store.sync_rows(
        [
            Pair(
                id=f"p{i}",
                a=MediaRef(kind="text", text="-"),
                b=MediaRef(kind="text", text="-"),
                split=None if splits is None else splits[i],
            )
            for i in range(n)
        ]
    )
    for side, x, shared in (("a", a, "clip-like"), ("b", b, None)):
        arr = store.ensure_embedding(
            f"{side}.bench-0", side=side, encoder=f"bench-{side}", options={}, dim=x.shape[1], chunk_rows=8192
        )
        for k in range(arr.n_chunks()):
            lo, hi = arr.chunk_bounds(k)
            arr.write_chunk(k, x[lo:hi], np.full(hi - lo, DONE, np.uint8), [""] * (hi - lo))
        arr.set_identity(
            EncoderIdentity(
                name=f"bench-{side}",
                modality="image" if side == "a" else "audio",
                dim=x.shape[1],
                plugin="bench",
                plugin_version="0",
                model_id="bench",
                weights="random-init",
                shared_space=shared,
            )
        )


def naive_loop(xa, xb, va, vb, epochs: int, seed: int) -> tuple[float, float, float]:
    """The paper's recipe as a user writes it in PyTorch: fp32, DataLoader, two cross-entropies."""
    from torch.utils.data import DataLoader, TensorDataset

    torch.manual_seed(seed)
    head = nn.Linear(xb.shape[1], xa.shape[1])  # T_b; T_a = identity
    log_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
    opt = torch.optim.Adam([*head.parameters(), log_scale], lr=1e-4)
    loader = DataLoader(TensorDataset(xa, xb), batch_size=4096, shuffle=True)
    seen, t0 = 0, time.perf_counter()
    for _ in range(epochs):
        for a, b in loader:
            za = F.normalize(a, dim=-1)
            zb = F.normalize(head(b), dim=-1)
            logits = log_scale.exp() * za @ zb.t()
            target = torch.arange(a.shape[0])
            loss = (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target)) / 2
            opt.zero_grad()
            loss.backward()
            opt.step()
            with torch.no_grad():
                log_scale.clamp_(0, math.log(100))
            seen += a.shape[0]
    elapsed = time.perf_counter() - t0
    with torch.no_grad():
        r_ab, r_ba = recall_at_1(va, head(vb))
    return seen / elapsed, (r_ab + r_ba) / 2, elapsed


def interleaved_steps(xa: torch.Tensor, xb: torch.Tensor, rounds: int = 6) -> dict:
    """One naive step, one ee step, alternately: a ratio that other load on the machine skews less.

    The ee step is what `ee train` runs for this configuration (identity + linear head, CLIP loss):
    batch rows sliced from tensors, the head folded into the logits, Adam.
    """
    from embedeverything.heads import Head, HeadSpec
    from embedeverything.train.losses import get_loss

    n = xa.shape[0]
    torch.manual_seed(0)
    head_ee = Head(HeadSpec(kind="linear", in_dim=xb.shape[1], out_dim=xa.shape[1]))
    loss_ee = get_loss("clip")
    from embedeverything.train.setup import make_optimizer

    params = [{"params": [*head_ee.parameters()]}, {"params": [*loss_ee.parameters()], "weight_decay": 0.0}]
    opt_ee = make_optimizer(make_config("paper"), params)
    head = nn.Linear(xb.shape[1], xa.shape[1])
    log_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
    opt = torch.optim.Adam([*head.parameters(), log_scale], lr=1e-4)

    def ee_step() -> None:
        idx = torch.randperm(n)[:4096]
        a, b = xa.index_select(0, idx), xb.index_select(0, idx)
        loss = loss_ee.identity_linear(a, head_ee.standardize(b), head_ee.net)
        opt_ee.zero_grad()
        loss.backward()
        opt_ee.step()
        loss_ee.post_step()

    def naive_step() -> None:
        idx = torch.randperm(n)[:4096]
        a, b = xa[idx], xb[idx]
        za, zb = F.normalize(a, dim=-1), F.normalize(head(b), dim=-1)
        logits = log_scale.exp() * za @ zb.t()
        target = torch.arange(4096)
        loss = (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target)) / 2
        opt.zero_grad()
        loss.backward()
        opt.step()

    ee_step(), naive_step()
    t_ee, t_naive = [], []
    for _ in range(rounds):
        t0 = time.perf_counter()
        naive_step()
        t_naive.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        ee_step()
        t_ee.append(time.perf_counter() - t0)
    med_ee, med_naive = float(np.median(t_ee)), float(np.median(t_naive))
    return {
        "interleaved_ee_step_ms": med_ee * 1e3,
        "interleaved_naive_step_ms": med_naive * 1e3,
        "interleaved_speedup": med_naive / med_ee,
    }


def matmul_gflops(dtype: torch.dtype, n: int = 4096, k: int = 512) -> float:
    x, y = torch.randn(n, k, dtype=dtype), torch.randn(n, k, dtype=dtype)
    x @ y.t()
    t0 = time.perf_counter()
    reps = 5
    for _ in range(reps):
        x @ y.t()
    return 2 * n * n * k * reps / (time.perf_counter() - t0) / 1e9


def step_flops(b: int, da: int, db: int) -> float:
    """Matmul FLOPs of one step: logits forward + 2 backward matmuls, head forward + 2 backward."""
    return 3 * 2 * b * b * da + 3 * 2 * b * db * da


def part1(tmp: Path, n_train: int, n_val: int, epochs: int, noise: float, compiled: bool) -> dict:
    da, db = 512, 128
    a, b = planted(n_train + n_val, da, db, noise, seed=1)
    splits = ["train"] * n_train + ["val"] * n_val
    write_store(tmp / "p1.zarr", a, b, splits)
    flops = step_flops(4096, da, db) / 4096  # per pair
    out: dict = {
        "train_pairs": n_train,
        "val_pairs": n_val,
        "epochs": epochs,
        "steps": epochs * (n_train // 4096),
    }
    out["matmul_fp32_gflops"] = matmul_gflops(torch.float32)
    out["matmul_bf16_gflops"] = matmul_gflops(torch.bfloat16)
    runs = [("ee", False)] + ([("ee_compiled", True)] if compiled else [])
    for name, comp in runs:
        cfg = make_config("paper", epochs=epochs, checkpoint_every_s=1e9, compile=comp)
        t0 = time.perf_counter()
        res = train(str(tmp / "p1.zarr"), None, None, tmp / f"p1-{name}", cfg)
        # pairs/s over the epochs (the first one of a compiled run includes compiling: left out)
        hist = res.history[1:] if comp and len(res.history) > 1 else res.history
        pps = float(np.mean([h["pairs_per_s"] for h in hist]))
        out[f"{name}_pairs_per_s"] = pps
        out[f"{name}_val_r1"] = res.history[-1]["val_r1"]
        out[f"{name}_wall_s_incl_validation"] = time.perf_counter() - t0
        # effective: the FLOPs of the unfolded computation, as the naive loop does them
        out[f"{name}_effective_gflops"] = pps * flops / 1e9
        print(json.dumps({k: v for k, v in out.items() if k.startswith(name)}), flush=True)
    split = load_split(tmp / "p1-ee" / "split.json")
    xa, xb = torch.from_numpy(a[split.train]), torch.from_numpy(b[split.train])
    va, vb = torch.from_numpy(a[split.val]), torch.from_numpy(b[split.val])
    naive_pps, naive_r1, naive_s = naive_loop(xa, xb, va, vb, epochs, seed=0)
    out.update(
        naive_pairs_per_s=naive_pps,
        naive_val_r1=naive_r1,
        naive_train_s=naive_s,
        naive_gflops=naive_pps * flops / 1e9,
    )
    out.update(interleaved_steps(xa, xb))
    out["load_average_1min"] = __import__("os").getloadavg()[0]
    for name, _ in runs:
        out[f"{name}_speedup"] = out[f"{name}_pairs_per_s"] / naive_pps
        out[f"{name}_r1_minus_naive"] = out[f"{name}_val_r1"] - naive_r1
    return out


def part2(tmp: Path, sizes: list[int], paper_epochs_cap: int) -> list[dict]:
    rows = []
    for n in sizes:
        a, b = planted(n, 64, 32, noise=1.0, seed=n)
        write_store(tmp / f"p2-{n}.zarr", a, b)
        for preset in ("default", "paper"):
            over = {"checkpoint_every_s": 1e9}
            if preset == "paper":
                over["fractions"] = (0.57, 0.10, 0.33)  # the same split as the defaults, for a fair test
                over["epochs"] = paper_epochs_cap
            cfg = make_config(preset, **over)
            t0 = time.perf_counter()
            out = tmp / f"p2-{n}-{preset}"
            res = train(str(tmp / f"p2-{n}.zarr"), None, None, out, cfg)
            secs = time.perf_counter() - t0
            from embedeverything.adapter import load_adapter

            ad = load_adapter(res.adapter_path)
            test = load_split(out / "split.json").test
            with torch.no_grad():
                r = recall_at_1(torch.from_numpy(ad.a(a[test])), torch.from_numpy(ad.b(b[test])))
            rows.append(
                {
                    "pairs": n,
                    "preset": preset,
                    "test_pairs": int(test.size),
                    "test_r1": sum(r) / 2,
                    "val_r1": res.metrics["val_r1"],
                    "epochs_run": res.epochs_run,
                    "batch": ad.config.training.settings["batch_size"],
                    "seconds": secs,
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    return rows


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true")
    p.add_argument("--epochs", type=int, default=16)
    p.add_argument("--train-pairs", type=int, default=32768)
    p.add_argument("--compile", action="store_true", help="also run ee with --compile")
    p.add_argument("--val-pairs", type=int, default=10240)
    p.add_argument("--noise", type=float, default=0.1)
    p.add_argument("--skip-part2", action="store_true")
    p.add_argument("--skip-part1", action="store_true")
    args = p.parse_args()
    torch.set_num_threads(len(__import__("os").sched_getaffinity(0)))
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        if not args.skip_part1:
            ep = 1 if args.quick else args.epochs
            ntr = 8192 if args.quick else args.train_pairs
            r = part1(tmp, ntr, args.val_pairs, ep, args.noise, compiled=args.compile)
            print("part 1 (paper settings, same data/init/epochs):")
            print(json.dumps(r, indent=1), flush=True)
        if not args.skip_part2:
            sizes = [300, 3000] if args.quick else [300, 3000, 30000]
            print("part 2 (planted relation; defaults vs paper preset; test-part R@1):")
            part2(tmp, sizes, paper_epochs_cap=20 if args.quick else 100)


if __name__ == "__main__":
    main()
