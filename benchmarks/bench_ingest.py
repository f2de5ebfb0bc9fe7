"""Pairs per second of ingestion (probing) and decoding, on generated 10-s videos.

    python benchmarks/bench_ingest.py                      # 20 videos, 320x240 @ 25 fps, 44.1 kHz stereo
    python benchmarks/bench_ingest.py --every 1 --workers 2

Stages timed separately: ``ingest`` (``ee ingest videos``' work: probing every video in decoder
processes, planning pairs, writing the manifest) and ``decode`` (what ``ee embed`` then does per row:
the frame and the audio window of every pair, decoded in the same decoder pool). The videos are
written once into --dir and reused.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--videos", type=int, default=20)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--size", default="320x240")
    ap.add_argument("--fps", type=int, default=25)
    ap.add_argument("--sample-rate", type=int, default=44100)
    ap.add_argument("--channels", type=int, default=2)
    ap.add_argument("--frames", type=int, default=None, help="K frames per video (default 1)")
    ap.add_argument("--every", type=float, default=None, help="or one frame every S seconds")
    ap.add_argument("--window", type=float, default=5.0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--dir", default="/tmp/ee-bench-ingest")
    args = ap.parse_args()

    from media import write_video

    from embedeverything.decoder_pool import DecoderPool
    from embedeverything.ingest import FramePlan, IngestOptions, ingest_videos
    from embedeverything.manifest import read_manifest

    w, h = (int(x) for x in args.size.split("x"))
    folder = Path(args.dir) / f"{args.videos}x{args.seconds:g}s-{args.size}-{args.fps}fps"
    folder.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    made = 0
    for i in range(args.videos):
        p = folder / f"clip{i:04d}.mp4"
        if not p.exists():
            write_video(
                p,
                args.seconds,
                fps=args.fps,
                size=(w, h),
                sample_rate=args.sample_rate,
                channels=args.channels,
            )
            made += 1
    if made:
        print(f"wrote {made} videos in {time.perf_counter() - t0:.1f}s to {folder}")

    plan = FramePlan(frames=args.frames, every=args.every, window=args.window)
    t0 = time.perf_counter()
    result = ingest_videos(folder, plan=plan, opts=IngestOptions(workers=args.workers))
    t_ingest = time.perf_counter() - t0
    assert not result.failures, result.failures[:3]
    m = read_manifest(result.manifest)
    n = len(m.pairs)
    refs = [p.a for p in m.pairs] + [p.b for p in m.pairs]
    with DecoderPool(args.workers, 60, m.root) as pool:
        pool.decode_all(refs[:1])  # start the workers outside the timing, as a long `ee embed` run would
        t0 = time.perf_counter()
        probed = pool.probe_all([(p, "video") for p in sorted(folder.glob("*.mp4"))])
        t_probe = time.perf_counter() - t0
        assert not any(isinstance(g, Exception) for g in probed)
        t0 = time.perf_counter()
        got = pool.decode_all(refs)
        t_decode = time.perf_counter() - t0
    bad = [g for g in got if isinstance(g, Exception)]
    assert not bad, bad[:3]
    print(
        f"{args.videos} videos of {args.seconds:g}s ({args.size}, {args.fps} fps, "
        f"{args.sample_rate} Hz x{args.channels}), {n} pairs, window {args.window:g}s, {args.workers} workers"
    )
    print(
        f"  ingest (probe + manifest): {t_ingest:6.2f}s  {args.videos / t_ingest:7.1f} videos/s  {n / t_ingest:7.1f} pairs/s"
    )
    print(f"  of which probing alone, workers already started: {args.videos / t_probe:7.1f} videos/s")
    print(f"  decode (frame + window):   {t_decode:6.2f}s  {n / t_decode:7.1f} pairs/s")
    total = t_ingest + t_decode
    print(f"  ingest + decode:           {total:6.2f}s  {n / total:7.1f} pairs/s")


if __name__ == "__main__":
    main()
