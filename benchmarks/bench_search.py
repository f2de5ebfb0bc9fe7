"""What ``ee index`` costs and what a search through it takes: exact against indexed, with recall@10.

    python benchmarks/bench_search.py [--rows 10000 100000 1000000] [--dim 512] [--queries 50]

Rows are unit vectors from the Gaussian mixture of ``bench_search_threshold.py``: ``--clusters`` (64)
centres drawn from N(0, I), each row its centre plus N(0, s^2 I) with s = ``--spread`` (0.35), then
normalised; the held-out queries are drawn from the same mixture with another seed. Rows are made and
written in chunks, so 1M x 512 never sits in memory whole.

Everything goes through ee's own search code: rows become table batches with ``build._batch``, the ANN
index is made with the settings ``build._index_side`` uses (IVF_FLAT, dot, ``state.PARTITION_ROWS``),
its probes come from ``lookup.calibrate`` as ``ee index`` does, and each query runs through
``lookup.nearest``. Build time is the table write plus the ANN index plus the recall check (the
projection through an adapter is left out: it is ``ee embed``'s and ``ee query``'s cost alike).
Latency is per query, from the query vector to its hits, opening the database and the table each time
as ``ee query`` does. "exact" is LanceDB's flat scan (what a side below ``state.ANN_MIN_ROWS`` rows
gets); "indexed" is the IVF_FLAT index at the calibrated probes. Recall@10 is against exact numpy
search over every row.

Last, the whole ``ee query`` command (a subprocess: start-up, encoder, adapter, search) on a tiny store
of the test encoder's words, with and without an index.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("LANCE_LOG", "error")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_search_threshold import mixture  # noqa: E402

from embedeverything.search import build, lookup, state  # noqa: E402

CHUNK = 50_000
K = 10


class _Column:
    """A store metadata column by row number, made on demand (no 1M-entry arrays)."""

    def __init__(self, prefix: str, numbered: bool) -> None:
        self.prefix, self.numbered = prefix, numbered

    def __getitem__(self, row: int) -> str:
        return f"{self.prefix}{row}" if self.numbered else self.prefix


META: dict[str, Any] = {"id": _Column("r", True), "label": _Column("", False), "split": _Column("", False)}


def chunks(n: int, dim: int, clusters: int, spread: float):
    """(first row, rows) of the mixture in chunks; each chunk its own seed, the centres shared."""
    for i, lo in enumerate(range(0, n, CHUNK)):
        x, _ = mixture(min(CHUNK, n - lo), dim, clusters, spread, 1000 + i)
        yield lo, x


def write_table(db: Any, name: str, args: argparse.Namespace, n: int, queries: np.ndarray):
    """The table of ``n`` rows, written as ``ee index`` writes it, and the exact top-10 of each query."""
    best = np.full((len(queries), 0), -np.inf, np.float32)
    best_rows = np.zeros((len(queries), 0), np.int64)
    table, seconds = None, 0.0
    for lo, x in chunks(n, args.dim, args.clusters, args.spread):
        rows = np.arange(lo, lo + len(x), dtype=np.int64)
        t0 = time.perf_counter()
        batch = build._batch("b", rows, x, META, ({}, Path(".")))
        if table is None:
            table = db.create_table(name, data=batch)
        else:
            table.add(batch)
        seconds += time.perf_counter() - t0
        best = np.concatenate([best, queries @ x.T], 1)
        best_rows = np.concatenate([best_rows, np.broadcast_to(rows, (len(queries), len(rows)))], 1)
        top = np.argsort(-best, axis=1, kind="stable")[:, :K]
        best, best_rows = np.take_along_axis(best, top, 1), np.take_along_axis(best_rows, top, 1)
    return table, seconds, best_rows


def latency(folder: str, name: str, queries: np.ndarray, truth: np.ndarray, nprobes: int):
    """p50 and p95 in ms of one query, opening the table each time, and recall@10."""
    import lancedb

    times, recall = [], []
    for q, t in zip(queries, truth, strict=True):
        t0 = time.perf_counter()
        table = lancedb.connect(folder).open_table(name)
        _, rows = lookup.nearest(table, q[None], K, nprobes)
        times.append(time.perf_counter() - t0)
        recall.append(len(set(rows[0].tolist()) & set(t.tolist())) / K)
    p50, p95 = np.percentile(times, [50, 95]) * 1000
    return float(p50), float(p95), float(np.mean(recall))


def bench_rows(folder: str, args: argparse.Namespace, n: int) -> None:
    from lancedb.index import IvfFlat

    ldb = state.lancedb()
    queries, _ = mixture(args.queries, args.dim, args.clusters, args.spread, 2)
    name = f"side_b_{n}"
    db = ldb.connect(folder)
    table, write_s, truth = write_table(db, name, args, n, queries)
    p50, p95, rec = latency(folder, name, queries, truth, state.NPROBES)
    ee_uses = "exact" if n < state.ANN_MIN_ROWS else "indexed"
    print(
        f"{n:>9}  {'exact':<8} build {write_s:7.1f} s {'':28}"
        f"p50 {p50:8.1f} ms  p95 {p95:8.1f} ms  recall@10 {rec:.3f}",
        flush=True,
    )
    t0 = time.perf_counter()
    config = IvfFlat(distance_type="dot", target_partition_size=state.PARTITION_ROWS)
    table.create_index("vector", config=config)
    ann_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    search = lookup.calibrate(table)
    cal_s = time.perf_counter() - t0
    p50, p95, rec = latency(folder, name, queries, truth, int(search["nprobes"]))
    print(
        f"{n:>9}  {'indexed':<8} build {write_s + ann_s + cal_s:7.1f} s "
        f"(ivf {ann_s:5.1f} s, check {cal_s:5.1f} s)  "
        f"p50 {p50:8.1f} ms  p95 {p95:8.1f} ms  recall@10 {rec:.3f}  "
        f"nprobes {search['nprobes']}  ee uses: {ee_uses}",
        flush=True,
    )
    db.drop_table(name)


def bench_command(folder: Path, repeats: int) -> None:
    """The whole ``ee query`` command on a tiny store, with and without an index."""
    from embedeverything.embed import embed_side
    from embedeverything.manifest import MediaRef, Pair, write_manifest
    from embedeverything.train import make_config, train

    pairs = [
        Pair(
            id=f"p{i:04d}",
            a=MediaRef(kind="text", text=f"a red cube number {i} word{i % 7}"),
            b=MediaRef(kind="text", text=f"sound {i}"),
            label=f"class{i % 4}",
            group=f"g{i // 3}",
        )
        for i in range(60)
    ]
    m = write_manifest(folder / "manifest.jsonl", pairs, "text", "text")
    store = str(folder / "s.zarr")
    embed_side(store, str(m), "a", "test-text", {"dim": 12}, chunk_rows=16)
    embed_side(store, str(m), "b", "test-text", {"dim": 20, "seed": 1}, chunk_rows=16)
    config = make_config(epochs=2, checkpoint_every_s=1e9, threads=1)
    adapter = str(train(store, None, None, folder / "run", config).adapter_path)
    ee = [sys.executable, "-m", "embedeverything"]
    index = folder / "ix"
    subprocess.run([*ee, "index", adapter, "--index", str(index)], check=True, capture_output=True)
    for label, where in (("without an index", folder / "none"), ("with an index", index)):
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            r = subprocess.run(
                [*ee, "query", adapter, "word3", "--k", "10", "--index", str(where)],
                check=True,
                capture_output=True,
                text=True,
            )
            times.append(time.perf_counter() - t0)
            if ("searched: index" in r.stderr) != (where == index):
                raise RuntimeError(f"ee query did not search as expected: {r.stderr.strip()}")
        print(f"ee query, 60 rows, {label:<17} median {np.median(times):6.2f} s over {repeats} runs")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--queries", type=int, default=50)
    ap.add_argument("--clusters", type=int, default=64)
    ap.add_argument("--spread", type=float, default=0.35)
    ap.add_argument("--repeats", type=int, default=5, help="Runs of each whole `ee query` command.")
    ap.add_argument("--no-command", action="store_true", help="Skip the whole `ee query` command timing.")
    args = ap.parse_args()
    print(
        f"dim {args.dim}, {args.clusters} clusters, spread {args.spread}, {args.queries} held-out queries, "
        f"{os.cpu_count()} cpus; ANN_MIN_ROWS {state.ANN_MIN_ROWS}"
    )
    print(f"{'rows':>9}  {'search':<8} {'build':<42} latency (open table + query to hits)")
    folder = tempfile.mkdtemp()
    try:
        for n in args.rows:
            bench_rows(folder, args, n)
        if args.no_command:
            print("ee query command: skipped (--no-command)")
        else:
            try:
                bench_command(Path(folder), args.repeats)
            except (ImportError, RuntimeError, subprocess.CalledProcessError) as e:
                print(
                    f"ee query command: skipped, the tiny store could not be made ({type(e).__name__}: {e})"
                )
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
