"""Where an ANN index starts to pay in ``ee index``: exact (flat) search against IVF_FLAT and IVF_PQ.

    python benchmarks/bench_search_threshold.py [--dim 256] [--rows 10000 50000] [--spread 0.35] [--pq]

Rows are unit vectors drawn from a Gaussian mixture (``--clusters`` centres of N(0, I), each row its
centre plus N(0, s^2 I), s = ``--spread``: 0.35 keeps clusters apart, 1.0 makes them overlap); 50
held-out queries come from the same mixture. For each row count it prints the median latency of one
query (query vector to hits, on an open table) and recall@10 against exact numpy search, with the
settings ee uses (nprobes 20) and LanceDB's defaults. docs/search.md records a run and the threshold
chosen from it.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time

import numpy as np

os.environ.setdefault("LANCE_LOG", "error")


def mixture(n: int, dim: int, clusters: int, spread: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(0).standard_normal((clusters, dim))
    x = centres[rng.integers(0, clusters, n)] + spread * rng.standard_normal((n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32), centres


def measure(table, queries: np.ndarray, truth: np.ndarray, **settings) -> tuple[float, float]:
    times, recall = [], []
    for q, t in zip(queries, truth, strict=True):
        t0 = time.perf_counter()
        b = table.search(q).distance_type("dot").limit(10)
        if settings.get("nprobes"):
            b = b.nprobes(settings["nprobes"])
        if settings.get("refine"):
            b = b.refine_factor(settings["refine"])
        rows = b.select(["row", "_distance"]).to_arrow()["row"].to_numpy()
        times.append(time.perf_counter() - t0)
        recall.append(len(set(rows.tolist()) & set(t.tolist())) / 10)
    return float(np.median(times) * 1000), float(np.mean(recall))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--clusters", type=int, default=64)
    ap.add_argument("--spread", type=float, default=0.35)
    ap.add_argument("--rows", type=int, nargs="+", default=[10_000, 50_000, 100_000])
    ap.add_argument("--pq", action="store_true", help="Also IVF_PQ (slow to build).")
    args = ap.parse_args()
    import lancedb
    import pyarrow as pa
    from lancedb.index import IvfFlat, IvfPq

    folder = tempfile.mkdtemp()
    try:
        for n in args.rows:
            x, _ = mixture(n, args.dim, args.clusters, args.spread, 1)
            queries, _ = mixture(50, args.dim, args.clusters, args.spread, 2)
            truth = np.argsort(-(queries @ x.T), axis=1)[:, :10]
            db = lancedb.connect(folder)
            vectors = pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), args.dim)
            table = db.create_table(f"t{n}", pa.table({"row": np.arange(n), "vector": vectors}))
            ms, rec = measure(table, queries, truth)
            print(f"rows {n:>8}  dim {args.dim}  exact         p50 {ms:7.1f} ms  recall@10 {rec:.3f}")
            kinds = [("IVF_FLAT", IvfFlat(distance_type="dot"))]
            if args.pq:
                kinds.append(("IVF_PQ", IvfPq(distance_type="dot", num_sub_vectors=args.dim // 8)))
            for name, config in kinds:
                t0 = time.perf_counter()
                table.create_index("vector", config=config, replace=True)
                build = time.perf_counter() - t0
                runs = [("defaults", {}), ("nprobes 20", {"nprobes": 20})]
                if name == "IVF_PQ":
                    runs.append(("nprobes 20, refine 10", {"nprobes": 20, "refine": 10}))
                for label, settings in runs:
                    ms, rec = measure(table, queries, truth, **settings)
                    print(
                        f"rows {n:>8}  dim {args.dim}  {name:<8} {label:<22} build {build:5.1f} s  "
                        f"p50 {ms:7.1f} ms  recall@10 {rec:.3f}"
                    )
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
