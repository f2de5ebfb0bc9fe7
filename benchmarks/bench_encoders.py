"""Throughput of the bundled encoders through the framework vs the raw model, fp32 and bf16, in one run.

    python benchmarks/bench_encoders.py [--images 128] [--clips 48] [--run-images 192] [--run-clips 128]
                                        [--rounds 3] [--batch 32] [--threads 2] [--repeat 3] [--only clip]

At the same batch size and on the same inputs, for each precision:

- clip (ViT-B-32, 224 px RGB images):
  raw      ``model.encode_image`` on tensors already run through open_clip's transform (the limit);
  encoder  ``Encoder.embed`` on decoded uint8 arrays (transform + model + output checks);
  ee embed the store runner on png files (decoding in a decoder process, overlapped with the model);
- vggish (5 s windows of 44.1 kHz stereo):
  raw      the VGG on log-mel examples already computed;
  encoder  ``Encoder.embed`` on decoded audio (down-mix, soxr to 16 kHz, log-mel, model, PCA, pooling);
  ee embed the store runner on wav files.

The speed of this shared machine drifts by 10-20% over seconds to minutes, so nothing is compared with
a figure taken at another time: raw and encoder run batch by batch in turns (their ratios are medians
over those side-by-side runs), and each `ee embed` run is timed against the raw model chunk by chunk
(after each chunk, in the progress callback, the raw model computes as many pre-made inputs; the
callback's time is taken out of the run's). "steady" leaves out the first chunk (model built, decoder
process started), which a long run amortises; "total" is the whole call.
Also: the cosine agreement of bf16 with fp32 on the same inputs, and the hardware's own bf16 / fp32
ratio on one of ViT-B-32's matmuls (the ceiling for any model's speed-up). Weights are seeded random
(random_init): speed does not depend on them; cosine figures for random weights are a stand-in for the
pretrained ones.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from PIL import Image

from embedeverything import Audio, get_encoder
from embedeverything.embed import embed_side
from embedeverything.manifest import MediaRef, Pair, write_manifest

PRECISIONS = ("fp32", "bf16")


def paired_times(
    batches: list[tuple[int, dict[str, Callable[[], object]]]], repeat: int
) -> tuple[dict[str, float], dict[str, list[float]]]:
    """Per batch, run every way in turn and time it; ``repeat`` passes over the batches.

    Returns (items/s of each way from its best time on each batch; every time of each way, in run
    order). Alternating batch by batch makes load from other processes on a shared machine fall on all
    ways alike, so ratios of times taken side by side stay meaningful where absolute rates do not.
    """
    names = list(batches[0][1])
    best: dict[tuple[int, str], float] = {}
    times: dict[str, list[float]] = {n: [] for n in names}
    for _ in range(repeat):
        for b, (_, fns) in enumerate(batches):
            for name, fn in fns.items():
                t0 = time.perf_counter()
                fn()
                took = time.perf_counter() - t0
                times[name].append(took)
                best[(b, name)] = min(best.get((b, name), float("inf")), took)
    n = sum(size for size, _ in batches)
    return {name: n / sum(best[(b, name)] for b in range(len(batches))) for name in names}, times


def median_ratio(times: dict[str, list[float]], a: str, b: str) -> float:
    """Median over side-by-side runs of time(a) / time(b): b's throughput relative to a's."""
    return float(np.median(np.array(times[a]) / np.array(times[b])))


def run_embed(
    store: Path,
    manifest: Path,
    encoder: str,
    opts: dict,
    batch: int,
    chunk: int,
    threads: int,
    between: Callable[[int], float] | None = None,
) -> dict:
    """One `ee embed` (the store runner) into a fresh store.

    Returns total rows/s, and "steady" rows/s after the first chunk (model built, decoder processes up),
    which is what a long run sees. ``between(n)``, when given, runs after each chunk of ``n`` rows (in the
    progress callback, while the decoder processes are idle: the chunk after next was decoded long
    before) and returns the seconds it took; they are taken out of the run's time and returned as
    ``between_s`` per steady chunk."""
    marks: list[tuple[float, float, int]] = []  # (chunk done, callback done, rows)

    def progress(n: int) -> None:
        done = time.perf_counter()
        if between is not None:
            between(n)
        marks.append((done, time.perf_counter(), n))

    t0 = time.perf_counter()
    report = embed_side(
        str(store),
        str(manifest),
        "a",
        encoder,
        opts,
        batch_size=batch,
        chunk_rows=chunk,
        threads=threads,
        decode_workers=1,
        on_progress=progress,
    )
    total = time.perf_counter() - t0 - sum(after - done for done, after, _ in marks)
    assert report.failed == 0, report
    # chunk k's time runs from the end of the callback after chunk k-1 to the end of chunk k
    steady = [
        (done - prev_after, n) for (_, prev_after, _), (done, _, n) in zip(marks, marks[1:], strict=False)
    ]
    return {
        "total": sum(n for *_, n in marks) / total,
        "steady": sum(n for _, n in steady) / sum(t for t, _ in steady),
        "chunk_s": [t for t, _ in steady],
        "between_s": [after - done for done, after, _ in marks[1:]],
    }


def cosine(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    c = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    return float(c.mean()), float(c.min())


def embed_vs_raw(
    name: str,
    enc: object,
    run_items: list,
    manifest: Path,
    folder: Path,
    batch: int,
    threads: int,
    rounds: int,
    prep: Callable,
    raw: Callable,
    opts: dict,
) -> dict:
    """`ee embed` against the raw model, chunk by chunk: after each chunk of the run, the raw model
    computes as many pre-made inputs (same size, same batch) and is timed. The machine's speed drifts
    by 10-20% over minutes on a shared host; compared a few seconds apart the two see the same machine,
    which whole runs timed one after the other do not. Steady chunks only (after the first); the ratio
    is over all steady chunks of a run, then the median over ``rounds`` runs."""
    x = prep(enc, run_items)
    raw(enc, x, 0, batch)  # warm

    def raw_chunk(n: int) -> float:
        t0 = time.perf_counter()
        for s in range(0, n, batch):
            raw(enc, x, s % len(run_items), min(batch, n - s))
        return time.perf_counter() - t0

    runs = []
    for r in range(rounds):
        store = folder / f"{name}-{opts['precision']}-{r}.zarr"
        runs.append(run_embed(store, manifest, name, opts, batch, 2 * batch, threads, between=raw_chunk))
    ratios = [sum(run["between_s"]) / sum(run["chunk_s"]) for run in runs]
    return {
        "ee_embed_items": len(run_items),
        "ee_embed_steady_per_s": [round(run["steady"], 1) for run in runs],
        "ee_embed_total_per_s": [round(run["total"], 1) for run in runs],
        "raw_between_chunks_per_s": [
            round(run["steady"] * sum(run["chunk_s"]) / sum(run["between_s"]), 1) for run in runs
        ],
        "ee_embed_steady_vs_raw_each": [round(v, 3) for v in ratios],
        "ee_embed_steady_vs_raw": round(float(np.median(ratios)), 3),
    }


def bench(
    name: str,
    items: list,
    run_items: list,
    manifest: Path,
    folder: Path,
    batch: int,
    threads: int,
    repeat: int,
    rounds: int,
    prep: Callable,
    raw: Callable,
    stage: Callable,
    opts: dict,
) -> dict:
    """Both precisions of one encoder: raw model, Encoder.embed and its own input stage side by side on
    ``items``; then `ee embed` on ``run_items`` (the manifest's) against raw passes over the same."""
    encs = {p: get_encoder(name, **opts, precision=p) for p in PRECISIONS}
    embs = {p: e.embed(items, batch_size=batch) for p, e in encs.items()}  # load, warm up, keep for cosine
    inputs = {p: prep(e, items) for p, e in encs.items()}  # the raw model's input, made beforehand
    batches = []
    for s in range(0, len(items), batch):
        part = items[s : s + batch]
        fns: dict[str, Callable[[], object]] = {}
        for p, e in encs.items():
            fns[f"raw_{p}"] = partial(raw, e, inputs[p], s, len(part))
            fns[f"encoder_{p}"] = partial(e.embed, part, batch_size=batch)
        fns["input_stage"] = partial(stage, encs["fp32"], part)
        batches.append((len(part), fns))
    rates, times = paired_times(batches, repeat)
    del inputs
    out: dict = {"n": len(items), "batch": batch}
    for p in PRECISIONS:
        out[p] = {
            "raw_model_per_s": round(rates[f"raw_{p}"], 1),
            "encoder_embed_per_s": round(rates[f"encoder_{p}"], 1),
            "encoder_vs_raw": round(median_ratio(times, f"raw_{p}", f"encoder_{p}"), 3),
            **embed_vs_raw(
                name,
                encs[p],
                run_items,
                manifest,
                folder,
                batch,
                threads,
                rounds,
                prep,
                raw,
                {**opts, "precision": p},
            ),
        }
    out["input_stage_only_per_s"] = round(rates["input_stage"], 1)
    out["raw_bf16_vs_fp32_speedup"] = round(median_ratio(times, "raw_fp32", "raw_bf16"), 2)
    out["bf16_vs_fp32_cosine_mean_min"] = [round(v, 5) for v in cosine(embs["fp32"], embs["bf16"])]
    return out


def bench_clip(
    images: list[np.ndarray], paired: int, folder: Path, batch: int, threads: int, repeat: int, rounds: int
) -> dict:
    """``images`` go through `ee embed`; the first ``paired`` also through the side-by-side timings."""
    pairs = []
    for i, im in enumerate(images):
        Image.fromarray(im).save(folder / f"{i}.png")
        pairs.append(
            Pair(id=str(i), a=MediaRef(kind="image", path=f"{i}.png"), b=MediaRef(kind="text", text="x"))
        )
    manifest = write_manifest(folder / "images.jsonl", pairs, "image", "text")

    def prep(enc, items):  # open_clip's transform, beforehand: [n, 3, 224, 224]
        return enc.pixels(items).to(enc._dtype)

    def raw(enc, x, s, size):
        with torch.inference_mode():
            enc.torch_modules()[0](x[s : s + size])  # model.visual(x) = model.encode_image(x)

    opts = {"random_init": True, "seed": 0, "device": "cpu"}
    out = bench(
        "clip",
        images[:paired],
        images,
        manifest,
        folder,
        batch,
        threads,
        repeat,
        rounds,
        prep,
        raw,
        lambda e, p: e.pixels(p),
        opts,
    )
    out["image_px"] = list(images[0].shape[:2])
    return out


def bench_vggish(
    clips: list[Audio], paired: int, folder: Path, batch: int, threads: int, repeat: int, rounds: int
) -> dict:
    """``clips`` go through `ee embed`; the first ``paired`` also through the side-by-side timings."""
    pairs = []
    for i, c in enumerate(clips):
        sf.write(folder / f"{i}.wav", c.samples.T, c.sample_rate)
        pairs.append(
            Pair(id=str(i), a=MediaRef(kind="audio", path=f"{i}.wav"), b=MediaRef(kind="text", text="x"))
        )
    manifest = write_manifest(folder / "audio.jsonl", pairs, "audio", "text")
    per_clip = 5  # 0.96 s examples in a 5 s window

    def prep(enc, items):  # log-mel examples, beforehand: [n * 5, 1, 96, 64]
        return torch.from_numpy(np.concatenate([enc.examples(c) for c in items]))[:, None].to(enc._dtype)

    def raw(enc, x, s, size):
        with torch.inference_mode():
            enc.torch_modules()[0](x[s * per_clip : (s + size) * per_clip])

    def stage(enc, part):
        for c in part:
            enc.examples(c)

    opts = {"random_init": True, "seed": 0, "device": "cpu"}
    out = bench(
        "vggish",
        clips[:paired],
        clips,
        manifest,
        folder,
        batch,
        threads,
        repeat,
        rounds,
        prep,
        raw,
        stage,
        opts,
    )
    raw_opts = {**opts, "postprocess": False}
    a = get_encoder("vggish", **raw_opts, precision="fp32").embed(clips[:paired], batch_size=batch)
    b = get_encoder("vggish", **raw_opts, precision="bf16").embed(clips[:paired], batch_size=batch)
    out["bf16_vs_fp32_cosine_mean_min_raw128"] = [round(v, 5) for v in cosine(a, b)]
    out["clip"] = f"{clips[0].duration:.0f} s, {clips[0].sample_rate} Hz, {clips[0].channels} channels"
    return out


def gemm_bf16_vs_fp32(threads: int) -> dict:
    """The hardware's own bf16 / fp32 ratio on one of ViT-B-32's matmuls (1600x768 @ 768x3072): the
    ceiling for a whole model's speed-up. AMX machines reach several x; AVX-512 BF16 alone about 2x."""
    out = {}
    for name, dt in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        a, b = torch.randn(1600, 768, dtype=dt), torch.randn(768, 3072, dtype=dt)
        a @ b
        best = float("inf")
        for _ in range(5):
            t0 = time.perf_counter()
            for _ in range(10):
                a @ b
            best = min(best, time.perf_counter() - t0)
        out[f"{name}_gflop_s"] = round(2 * 1600 * 768 * 3072 * 10 / best / 1e9, 1)
    out["bf16_vs_fp32"] = round(out["bf16_gflop_s"] / out["fp32_gflop_s"], 2)
    flags = Path("/proc/cpuinfo").read_text().split() if Path("/proc/cpuinfo").exists() else []
    out["cpu_has_amx"] = any(f.startswith("amx") for f in flags)
    out["cpu_has_avx512_bf16"] = "avx512_bf16" in flags
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=128, help="images in the side-by-side timings")
    ap.add_argument("--clips", type=int, default=48, help="clips in the side-by-side timings")
    ap.add_argument(
        "--run-images", type=int, default=192, help="images per `ee embed` run (chunks of 2 batches)"
    )
    ap.add_argument(
        "--run-clips", type=int, default=128, help="clips per `ee embed` run (chunks of 2 batches)"
    )
    ap.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="`ee embed` runs per precision (each timed against the raw model chunk by chunk)",
    )
    ap.add_argument("--batch", type=int, default=32, help="images per model call (clip)")
    ap.add_argument("--audio-batch", type=int, default=16, help="5 s clips per model call (vggish)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3, help="best of this many timed runs")
    ap.add_argument("--only", choices=["clip", "vggish"], default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    result: dict = {
        "torch": torch.__version__,
        "threads": args.threads,
        "device": "cpu",
        "load_average_at_start": os.getloadavg(),
        "gemm": gemm_bf16_vs_fp32(args.threads),
    }
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        if args.only in (None, "clip"):
            # smooth-ish images (a gradient plus noise) that compress like photos, 224 px as the issue asks
            base = np.linspace(0, 255, 224, dtype=np.float32)[None, :, None]
            images = [
                np.clip(base + rng.normal(0, 20, (224, 224, 3)), 0, 255).astype(np.uint8)
                for _ in range(max(args.images, args.run_images))
            ]
            result["clip"] = bench_clip(
                images, args.images, folder, args.batch, args.threads, args.repeat, args.rounds
            )
            print(json.dumps({"clip": result["clip"]}, indent=2), flush=True)
        if args.only in (None, "vggish"):
            t = np.arange(5 * 44100) / 44100
            clips = []
            for _ in range(max(args.clips, args.run_clips)):
                f = rng.uniform(200, 4000)
                wave = 0.2 * np.sin(2 * np.pi * f * t) + 0.05 * rng.standard_normal((2, t.size))
                clips.append(Audio(wave.astype(np.float32), 44100))
            result["vggish"] = bench_vggish(
                clips, args.clips, folder, args.audio_batch, args.threads, args.repeat, args.rounds
            )
            print(json.dumps({"vggish": result["vggish"]}, indent=2), flush=True)
    result["load_average_at_end"] = os.getloadavg()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
