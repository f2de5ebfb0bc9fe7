"""Check a running `ee serve` page in headless Chromium, as the browser test does, and optionally save
a screenshot (docs/img/search.png is made this way, over `ee demo`'s output):

    ee demo --out demo && ee index demo/result/train/adapter.safetensors
    ee serve demo/result/train/adapter.safetensors --port 8765 &
    python scripts/search_page.py http://127.0.0.1:8765/ --words "red circle" --file tone.wav \
        --screenshot docs/img/search.png
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from browser import Browser  # noqa: E402
from search_page import problems, search_file, search_words  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("url")
    ap.add_argument("--words", action="append", default=[], help="a text query (repeatable)")
    ap.add_argument("--file", action="append", default=[], type=Path, help="a file query (repeatable)")
    ap.add_argument("--pick", choices=("frame", "audio"), help="what of a video file to search by")
    ap.add_argument("--screenshot", type=Path, help="PNG of the first query's page")
    ap.add_argument("--size", default="1280x900", help="window size of the screenshot")
    args = ap.parse_args()
    width, height = (int(x) for x in args.size.split("x"))
    failed = 0
    with Browser(width=width, height=height) as b:
        runs = [("words", w) for w in args.words] + [("file", f) for f in args.file]
        for n, (kind, what) in enumerate(runs):
            if kind == "words":
                page = search_words(b, args.url, what)
            else:
                page = search_file(b, args.url, what, args.pick)
            bad = problems(page)
            failed += bool(bad)
            hits = ", ".join(f"side {lst['side']}: {lst['hits']} hits" for lst in page["lists"])
            print(
                f"{kind} {str(what)!r}: {hits}; {len(page['images'])} images, {len(page['audio'])} audio windows"
            )
            for p in bad:
                print(f"  problem: {p}")
            if n == 0 and args.screenshot:
                b.screenshot(args.screenshot, width, height)
                print(f"screenshot: {args.screenshot}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
