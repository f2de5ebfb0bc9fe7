"""CLI start-up: `ee --help` and `ee encoders` against bare Python and `import torch`, in one run.

    python benchmarks/bench_startup.py [--runs 7]

Also checks, with ``python -X importtime``, that neither command imports torch or a model library.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

HEAVY = ("torch", "open_clip", "torchvggish", "timm", "transformers", "sentence_transformers")


def wall(cmd: list[str], runs: int) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def imported(args: list[str]) -> set[str]:
    p = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "embedeverything", *args], capture_output=True, text=True
    )
    mods = set()
    for line in p.stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            mods.add(line.rsplit("|", 1)[1].strip().split(".")[0])
    return mods


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=7)
    runs = ap.parse_args().runs
    py = [sys.executable]
    rows = {
        "python -c pass": wall([*py, "-c", "pass"], runs),
        "ee --help": wall([*py, "-m", "embedeverything", "--help"], runs),
        "ee encoders": wall([*py, "-m", "embedeverything", "encoders"], runs),
        "python -c 'import torch'": wall([*py, "-c", "import torch"], runs),
    }
    base = rows["python -c pass"]
    torch_t = rows["python -c 'import torch'"]
    print(f"{'command':28s} {'median s':>9s} {'x bare python':>14s} {'/ import torch':>15s}")
    for k, v in rows.items():
        print(f"{k:28s} {v:9.3f} {v / base:14.1f} {v / torch_t:15.2f}")
    for args in (["--help"], ["encoders"]):
        heavy = sorted(imported(args) & set(HEAVY))
        print(f"ee {' '.join(args)} imports heavy modules: {heavy or 'none'}")


if __name__ == "__main__":
    main()
