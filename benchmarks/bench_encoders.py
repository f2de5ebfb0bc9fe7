"""Throughput of the bundled encoders through the framework vs the raw model, fp32 and bf16, in one run.

    python benchmarks/bench_encoders.py [--images 256] [--clips 64] [--batch 32] [--threads 2]

For each precision it measures, at the same batch size and on the same inputs:

- clip, ViT-B-32, 224 px RGB images:
  raw      ``model.encode_image`` on tensors already run through open_clip's transform (the limit);
  encoder  ``Encoder.embed`` on decoded uint8 arrays (transform + model + output checks);
  ee embed the store runner on png files (decoding in a decoder process, overlapped with the model):
           "steady" counts from the end of the first chunk (model loaded, decoder up), "total" from the
           call (so it includes building the model and starting the decoder process);
- vggish, 5 s windows of 44.1 kHz stereo:
  raw      the VGG on log-mel examples already computed;
  encoder  ``Encoder.embed`` on decoded audio (down-mix, soxr to 16 kHz, log-mel, model, PCA, pooling);
  ee embed the store runner on wav files.

and the cosine agreement of bf16 with fp32 on the same inputs. Weights are seeded random (random_init):
the speed does not depend on them; the cosine figures are for random weights, a pessimistic stand-in.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from PIL import Image

from embedeverything import Audio, get_encoder
from embedeverything.embed import embed_side
from embedeverything.manifest import MediaRef, Pair, write_manifest


def best_rates(n: int, fns: dict[str, Callable[[], object]], repeat: int) -> dict[str, float]:
    """Items per second of each ``fn`` (best of ``repeat``), run in turns so that load from other
    processes on the machine falls on all of them alike."""
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(repeat):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - t0)
    return {name: n / t for name, t in best.items()}


def run_embed(
    store: Path, manifest: Path, encoder: str, opts: dict, batch: int, chunk: int, threads: int
) -> dict:
    """One `ee embed` (the store runner) into a fresh store: total rows/s, and rows/s after the first
    chunk (model loaded, decoder processes up), which is what a long run sees."""
    marks: list[tuple[float, int]] = []
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
        on_progress=lambda n: marks.append((time.perf_counter(), n)),
    )
    total = time.perf_counter() - t0
    assert report.failed == 0, report
    rows = sum(n for _, n in marks)
    steady_rows = rows - marks[0][1]
    return {"total": rows / total, "steady": steady_rows / (marks[-1][0] - marks[0][0])}


def cosine(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    c = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    return float(c.mean()), float(c.min())


def bench_clip(images: list[np.ndarray], folder: Path, batch: int, threads: int, repeat: int) -> dict:
    pairs = []
    for i, im in enumerate(images):
        Image.fromarray(im).save(folder / f"{i}.png")
        pairs.append(
            Pair(id=str(i), a=MediaRef(kind="image", path=f"{i}.png"), b=MediaRef(kind="text", text="x"))
        )
    manifest = write_manifest(folder / "images.jsonl", pairs, "image", "text")
    out: dict = {"n": len(images), "batch": batch, "image_px": images[0].shape[:2]}
    embs = {}
    for precision in ("fp32", "bf16"):
        opts = {"random_init": True, "seed": 0, "precision": precision, "device": "cpu"}
        enc = get_encoder("clip", **opts)
        embs[precision] = enc.embed(images, batch_size=batch)  # load + warm up
        x = enc.pixels(images).to(enc._dtype)  # pre-transformed: [n, 3, 224, 224]
        visual = enc.torch_modules()[0]

        def raw(visual=visual, x=x) -> None:
            with torch.inference_mode():
                for s in range(0, len(x), batch):
                    visual(x[s : s + batch])  # = model.encode_image

        def transform(enc=enc) -> None:
            for s in range(0, len(images), batch):
                enc.pixels(images[s : s + batch])

        rates = best_rates(
            len(images),
            {
                "raw": raw,
                "encoder": lambda enc=enc: enc.embed(images, batch_size=batch),
                "transform": transform,
            },
            repeat,
        )
        run = run_embed(folder / f"clip-{precision}.zarr", manifest, "clip", opts, batch, 2 * batch, threads)
        out[precision] = {
            "raw_encode_image_per_s": round(rates["raw"], 1),
            "encoder_embed_per_s": round(rates["encoder"], 1),
            "ee_embed_steady_per_s": round(run["steady"], 1),
            "ee_embed_total_per_s": round(run["total"], 1),
            "transform_only_per_s": round(rates["transform"], 1),
            "encoder_vs_raw": round(rates["encoder"] / rates["raw"], 3),
            "ee_embed_steady_vs_raw": round(run["steady"] / rates["raw"], 3),
        }
    out["bf16_vs_fp32_raw_speedup"] = round(
        out["bf16"]["raw_encode_image_per_s"] / out["fp32"]["raw_encode_image_per_s"], 2
    )
    out["bf16_vs_fp32_cosine_mean_min"] = [round(v, 5) for v in cosine(embs["fp32"], embs["bf16"])]
    return out


def bench_vggish(clips: list[Audio], folder: Path, batch: int, threads: int, repeat: int) -> dict:
    pairs = []
    for i, c in enumerate(clips):
        sf.write(folder / f"{i}.wav", c.samples.T, c.sample_rate)
        pairs.append(
            Pair(id=str(i), a=MediaRef(kind="audio", path=f"{i}.wav"), b=MediaRef(kind="text", text="x"))
        )
    manifest = write_manifest(folder / "audio.jsonl", pairs, "audio", "text")
    out: dict = {"n": len(clips), "batch_clips": batch, "clip": f"{clips[0].duration:.0f} s, 44.1 kHz stereo"}
    embs: dict = {}
    for precision in ("fp32", "bf16"):
        raw_opts = {
            "random_init": True,
            "seed": 0,
            "precision": precision,
            "device": "cpu",
            "postprocess": False,
        }
        embs[(precision, False)] = get_encoder("vggish", **raw_opts).embed(clips, batch_size=batch)
        opts = {"random_init": True, "seed": 0, "precision": precision, "device": "cpu"}
        enc = get_encoder("vggish", **opts)
        embs[(precision, True)] = enc.embed(clips, batch_size=batch)  # load + warm up
        examples = [enc.examples(c) for c in clips]
        per_clip = examples[0].shape[0]
        x = torch.from_numpy(np.concatenate(examples))[:, None].to(enc._dtype)  # [n * 5, 1, 96, 64]
        model = enc.torch_modules()[0]

        def raw(model=model, x=x, step=batch * per_clip) -> None:
            with torch.inference_mode():
                for s in range(0, len(x), step):
                    model(x[s : s + step])

        def features(enc=enc) -> None:
            for c in clips:
                enc.examples(c)

        rates = best_rates(
            len(clips),
            {"raw": raw, "encoder": lambda enc=enc: enc.embed(clips, batch_size=batch), "features": features},
            repeat,
        )
        run = run_embed(
            folder / f"vggish-{precision}.zarr", manifest, "vggish", opts, batch, 2 * batch, threads
        )
        out[precision] = {
            "raw_model_clips_per_s": round(rates["raw"], 1),
            "raw_model_examples_per_s": round(rates["raw"] * per_clip, 1),
            "encoder_embed_clips_per_s": round(rates["encoder"], 1),
            "ee_embed_steady_clips_per_s": round(run["steady"], 1),
            "ee_embed_total_clips_per_s": round(run["total"], 1),
            "features_only_clips_per_s": round(rates["features"], 1),
            "encoder_vs_raw": round(rates["encoder"] / rates["raw"], 3),
            "ee_embed_steady_vs_raw": round(run["steady"] / rates["raw"], 3),
        }
    out["bf16_vs_fp32_raw_speedup"] = round(
        out["bf16"]["raw_model_clips_per_s"] / out["fp32"]["raw_model_clips_per_s"], 2
    )
    out["bf16_vs_fp32_cosine_mean_min_raw128"] = [
        round(v, 5) for v in cosine(embs[("fp32", False)], embs[("bf16", False)])
    ]
    out["bf16_vs_fp32_cosine_mean_min_pca_quantised"] = [
        round(v, 5) for v in cosine(embs[("fp32", True)], embs[("bf16", True)])
    ]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=256)
    ap.add_argument("--clips", type=int, default=64)
    ap.add_argument("--batch", type=int, default=32, help="images per model call (clip)")
    ap.add_argument("--audio-batch", type=int, default=16, help="5 s clips per model call (vggish)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=2, help="best of this many timed runs")
    ap.add_argument("--only", choices=["clip", "vggish"], default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    result: dict = {
        "torch": torch.__version__,
        "threads": args.threads,
        "device": "cpu",
        "load_average_at_start": os.getloadavg(),
    }
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        if args.only in (None, "clip"):
            # smooth-ish images (a gradient plus noise) that compress like photos, 224 px as the issue asks
            base = np.linspace(0, 255, 224, dtype=np.float32)[None, :, None]
            images = [
                np.clip(base + rng.normal(0, 20, (224, 224, 3)), 0, 255).astype(np.uint8)
                for _ in range(args.images)
            ]
            result["clip"] = bench_clip(images, folder, args.batch, args.threads, args.repeat)
            print(json.dumps({"clip": result["clip"]}, indent=2), flush=True)
        if args.only in (None, "vggish"):
            t = np.arange(5 * 44100) / 44100
            clips = []
            for _ in range(args.clips):
                f = rng.uniform(200, 4000)
                wave = 0.2 * np.sin(2 * np.pi * f * t) + 0.05 * rng.standard_normal((2, t.size))
                clips.append(Audio(wave.astype(np.float32), 44100))
            result["vggish"] = bench_vggish(clips, folder, args.audio_batch, args.threads, args.repeat)
            print(json.dumps({"vggish": result["vggish"]}, indent=2), flush=True)
    result["load_average_at_end"] = os.getloadavg()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
