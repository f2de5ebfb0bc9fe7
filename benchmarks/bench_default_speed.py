"""Time of the default training stage (`ee train` with default settings) on synthetic pairs, this checkout
against another one (``--ref``: e.g. a checkout of the code before the refit and anchor defaults).

Both sides get trained heads (neither declares a shared space), so the default does all it can: the
selection run with early stopping, the anchor grid on validation and the refit on train + validation. The
pairs are a planted relation B = A W + noise (``bench_train.planted``); each checkout trains the same store
in a subprocess of its own (``python -m embedeverything train STORE --out ...`` with PYTHONPATH set to that
checkout), and the wall time and CPU time of that subprocess are reported, with what the run recorded (epochs, refit,
validation R@1). Runs alternate between the checkouts when ``--repeat`` > 1, so that a shared machine's
load falls on both alike.

Run: ``python benchmarks/bench_default_speed.py --ref /tmp/ee-ref [--pairs 100000] [--repeat 1]``, where
/tmp/ee-ref holds e.g. ``git archive 0113e8e | tar -x -C /tmp/ee-ref``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

import numpy as np  # noqa: E402
from bench_train import planted  # noqa: E402

from embedeverything.encoder import EncoderIdentity  # noqa: E402
from embedeverything.manifest import MediaRef, Pair  # noqa: E402
from embedeverything.store import DONE, Store  # noqa: E402


def make_store(path: Path, n: int, da: int, db: int, seed: int) -> None:
    """``n`` planted pairs, two sides without a shared space (both heads trained)."""
    a, b = planted(n, da, db, noise=0.5, seed=seed)
    store = Store.open(str(path), create=True)
    store.sync_rows(
        [
            Pair(id=f"p{i}", a=MediaRef(kind="text", text="-"), b=MediaRef(kind="text", text="-"))
            for i in range(n)
        ]
    )
    for side, x in (("a", a), ("b", b)):
        arr = store.ensure_embedding(
            f"{side}.speed-0", side=side, encoder=f"speed-{side}", options={}, dim=x.shape[1], chunk_rows=8192
        )
        for k in range(arr.n_chunks()):
            lo, hi = arr.chunk_bounds(k)
            arr.write_chunk(k, x[lo:hi], np.full(hi - lo, DONE, np.uint8), [""] * (hi - lo))
        arr.set_identity(
            EncoderIdentity(
                name=f"speed-{side}",
                modality="image" if side == "a" else "text",
                dim=x.shape[1],
                plugin="bench",
                plugin_version="0",
                model_id="bench",
                weights="random-init",
            )
        )


def _cpu_children() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run_train(checkout: Path, store: Path, out: Path, extra: list[str]) -> dict:
    """One ``ee train`` of ``checkout`` (run from its root: ``-m`` puts the working folder first on the
    path); its wall time and CPU time (all threads; less sensitive to a shared machine's load)."""
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    t0, c0 = time.perf_counter(), _cpu_children()
    subprocess.run(
        [sys.executable, "-m", "embedeverything", "train", str(store), "--out", str(out), *extra],
        check=True,
        env=env,
        cwd=checkout,
        stdout=subprocess.DEVNULL,
    )
    seconds, cpu = time.perf_counter() - t0, _cpu_children() - c0
    meta = json.loads(
        subprocess.run(
            [sys.executable, "-c", _READ, str(out / "adapter.safetensors")],
            check=True,
            env=env,
            cwd=checkout,
            capture_output=True,
            text=True,
        ).stdout
    )
    return {"seconds": round(seconds, 1), "cpu_seconds": round(cpu, 1), **meta}


_READ = """
import json, sys
from embedeverything.adapter import load_adapter
c = load_adapter(sys.argv[1]).config
t = c.training
print(json.dumps({"epochs_run": t.epochs_run, "best_epoch": t.best_epoch,
                  "refit_epochs": getattr(t, "refit_epochs", None), "shared_dim": c.shared_dim,
                  "val_r1": c.metrics.get("val_r1")}))
"""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ref", type=Path, help="the other checkout's root")
    p.add_argument("--pairs", type=int, default=100_000)
    p.add_argument("--da", type=int, default=512)
    p.add_argument("--db", type=int, default=128)
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--train-arg", action="append", default=[], help="extra `ee train` argument (repeat)")
    p.add_argument("--make-store", type=Path, help=argparse.SUPPRESS)  # one checkout's store, then exit
    a = p.parse_args()
    if a.make_store:
        make_store(a.make_store, a.pairs, a.da, a.db, seed=0)
        return
    if a.ref is None:
        p.error("--ref is required")
    with tempfile.TemporaryDirectory(prefix="ee-speed-") as tmp:
        checkouts = {"ref": a.ref.resolve(), "this": ROOT}
        for name, checkout in checkouts.items():  # each its own store: the store format may differ
            subprocess.run(
                [sys.executable, __file__, "--make-store", str(Path(tmp) / f"{name}.zarr"),
                 "--pairs", str(a.pairs), "--da", str(a.da), "--db", str(a.db)],
                check=True, env={**os.environ, "PYTHONPATH": str(checkout)}, cwd=checkout,
            )  # fmt: skip
        times: dict[str, list[tuple[float, float]]] = {"ref": [], "this": []}
        for r in range(a.repeat):
            for name, checkout in checkouts.items():
                store = Path(tmp) / f"{name}.zarr"
                res = run_train(checkout, store, Path(tmp) / f"{name}{r}", a.train_arg)
                times[name].append((res["seconds"], res["cpu_seconds"]))
                print(f"{name:4s} run {r}: {res}", flush=True)
        for i, what in enumerate(("wall", "CPU")):
            ref, this = min(t[i] for t in times["ref"]), min(t[i] for t in times["this"])
            print(
                f"default training, {a.pairs} pairs ({a.da}-d / {a.db}-d), {what} seconds: ref {ref:.1f}, "
                f"this {this:.1f}, ratio {this / ref:.2f}x (least of {a.repeat} each)"
            )


if __name__ == "__main__":
    main()
