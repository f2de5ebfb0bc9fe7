"""Rows/s of `ee embed` with 1 and 2 Dask workers (and in one process), on generated images, in one run.

    python benchmarks/bench_cluster.py [--rows 256] [--encoder clip -o random_init=true]

Every run embeds the same manifest into a fresh store; the figures include cluster start-up.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from embedeverything.manifest import MediaRef, Pair, write_manifest


def make_images(folder: Path, n: int) -> Path:
    rng = np.random.default_rng(0)
    pairs = []
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (224, 224, 3), dtype=np.uint8)).save(folder / f"{i}.png")
        pairs.append(
            Pair(id=str(i), a=MediaRef(kind="image", path=f"{i}.png"), b=MediaRef(kind="text", text=str(i)))
        )
    return write_manifest(folder / "m.jsonl", pairs, "image", "text")


def run(manifest: Path, store: Path, encoder: str, opts: list[str], extra: list[str]) -> tuple[float, float]:
    """(whole-run seconds, steady rows/s): the rate from the first finished chunk to the last, which
    leaves out start-up (interpreter, cluster, one model load per worker)."""
    from embedeverything.store import Store

    cmd = [
        sys.executable,
        "-m",
        "embedeverything",
        "embed",
        str(manifest),
        "-e",
        encoder,
        "--store",
        str(store),
        "--chunk-rows",
        "16",
        *sum((["-o", o] for o in opts), []),
        *extra,
    ]
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    first: tuple[float, int] | None = None
    last: tuple[float, int] = (t0, 0)
    while p.poll() is None:
        time.sleep(0.1)
        try:
            done = Store.open(store, read_only=True).arrays()[0].counts()["done"]
        except Exception:
            continue
        now = time.perf_counter()
        if done and first is None:
            first = (now, done)
        if done != last[1]:
            last = (now, done)
    total = time.perf_counter() - t0
    assert p.returncode == 0, cmd
    steady = (last[1] - first[1]) / (last[0] - first[0]) if first and last[0] > first[0] else float("nan")
    return total, steady


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=256)
    ap.add_argument("--encoder", default="test-image")
    ap.add_argument("-o", "--opt", action="append", default=None)
    a = ap.parse_args()
    opts = a.opt if a.opt is not None else (["backend=torch"] if a.encoder == "test-image" else [])
    with tempfile.TemporaryDirectory() as d:
        m = make_images(Path(d), a.rows)
        results = {
            "1 process, 2 threads": run(m, Path(d) / "p.zarr", a.encoder, opts, ["--threads", "2"]),
            "1 process, 1 thread": run(m, Path(d) / "t.zarr", a.encoder, opts, ["--threads", "1"]),
            "dask, 1 worker": run(m, Path(d) / "w1.zarr", a.encoder, opts, ["--workers", "1"]),
            "dask, 2 workers": run(m, Path(d) / "w2.zarr", a.encoder, opts, ["--workers", "2"]),
        }
    print(f"encoder {a.encoder} {' '.join(opts)}, {a.rows} rows of 224x224 PNG")
    print(f"{'':22s} {'whole run':>10s} {'rows/s':>8s} {'steady rows/s':>14s}")
    for k, (t, steady) in results.items():
        print(f"{k:22s} {t:8.2f} s {a.rows / t:8.1f} {steady:14.1f}")
    w1, w2 = results["dask, 1 worker"], results["dask, 2 workers"]
    print(f"scaling 2 workers / 1 worker: whole run {w1[0] / w2[0]:.2f}x, steady {w2[1] / w1[1]:.2f}x")


if __name__ == "__main__":
    main()
