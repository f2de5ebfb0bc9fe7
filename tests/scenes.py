"""Rendered scenes with captions that describe them: shapes, colours, sizes, positions and counts."""

from __future__ import annotations

import csv
import itertools
import random
from pathlib import Path

from PIL import Image, ImageDraw

SHAPES = ("circle", "square", "triangle", "diamond")
COLOURS = {
    "red": (220, 30, 30),
    "green": (30, 170, 50),
    "blue": (30, 60, 220),
    "yellow": (240, 210, 30),
    "purple": (140, 40, 180),
    "orange": (250, 140, 20),
}
SIZES = {"small": 14, "large": 34}
POSITIONS = {
    "left": (0.25, 0.5),
    "right": (0.75, 0.5),
    "top": (0.5, 0.25),
    "bottom": (0.5, 0.75),
    "centre": (0.5, 0.5),
}
COUNTS = {1: "one", 2: "two", 3: "three"}
W = H = 160


def _draw(
    d: ImageDraw.ImageDraw, shape: str, cx: float, cy: float, r: float, fill: tuple[int, int, int]
) -> None:
    box = (cx - r, cy - r, cx + r, cy + r)
    if shape == "circle":
        d.ellipse(box, fill=fill)
    elif shape == "square":
        d.rectangle(box, fill=fill)
    elif shape == "triangle":
        d.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=fill)
    else:
        d.polygon([(cx, cy - r), (cx + r, cy), (cx, cy + r), (cx - r, cy)], fill=fill)


def render(shape: str, colour: str, size: str, position: str, count: int, rng: random.Random) -> Image.Image:
    bg = tuple(rng.randint(200, 255) for _ in range(3))
    im = Image.new("RGB", (W, H), bg)
    d = ImageDraw.Draw(im)
    r = SIZES[size] * rng.uniform(0.85, 1.15)
    px, py = POSITIONS[position]
    offsets = [(0, 0), (-1.2, 0.9), (1.2, 0.9)][:count] if count > 1 else [(0, 0)]
    if count == 2:
        offsets = [(-0.7, 0), (0.7, 0)]
    for ox, oy in offsets:
        cx = px * W + ox * r * 1.1 + rng.uniform(-4, 4)
        cy = py * H + oy * r * 1.1 + rng.uniform(-4, 4)
        _draw(d, shape, cx, cy, r * (0.75 if count > 1 else 1.0), COLOURS[colour])
    return im


def caption(shape: str, colour: str, size: str, position: str, count: int) -> str:
    noun = shape + ("s" if count > 1 else "")
    where = (
        "in the centre"
        if position == "centre"
        else f"at the {position}"
        if position in ("top", "bottom")
        else f"on the {position}"
    )
    return f"{COUNTS[count]} {size} {colour} {noun} {where}"


def make_scenes(folder: Path, n: int, seed: int = 0) -> Path:
    """n image files and a CSV (image path, caption); captions rarely repeat (720 combinations)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    combos = list(itertools.product(SHAPES, COLOURS, SIZES, POSITIONS, COUNTS))
    rng.shuffle(combos)
    rows = []
    for i in range(n):
        combo = combos[i % len(combos)]
        name = f"scene{i:04d}.png"
        render(*combo, rng).save(folder / name)
        rows.append({"id": f"s{i:04d}", "image": name, "caption": caption(*combo)})
    path = folder / "captions.csv"
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["id", "image", "caption"])
        w.writeheader()
        w.writerows(rows)
    return path
