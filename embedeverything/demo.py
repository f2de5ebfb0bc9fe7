"""`ee demo`: a small audio-visual set of real video files, made here, and `ee pair` on it.

Each class is a visual pattern (shape, colour, motion) with a sound of its own (pitch, timbre, rhythm);
every clip varies them (position, speed, size, background, pitch, tempo, loudness), so that a head must
learn the class, not one clip. The files are ordinary H.264 + AAC mp4s written with PyAV.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from .files import atomic_path

SAMPLE_RATE = 16000
FPS = 12
SIZE = (160, 120)  # width, height


@dataclass(frozen=True)
class DemoClass:
    label: str
    shape: str  # circle | square | triangle | stripes
    colour: tuple[int, int, int]
    motion: str  # horizontal | vertical | spin | scroll
    pitch: float  # Hz
    timbre: str  # sine | square | saw | noise
    rhythm: float  # beats per second; 0 = steady


CLASSES: tuple[DemoClass, ...] = (
    DemoClass("red circle, low hum", "circle", (220, 40, 40), "horizontal", 140.0, "sine", 0.0),
    DemoClass("blue square, high beeps", "square", (40, 80, 230), "vertical", 1200.0, "sine", 4.0),
    DemoClass("green triangle, buzzing", "triangle", (40, 190, 60), "spin", 330.0, "square", 0.0),
    DemoClass("yellow stripes, drum", "stripes", (230, 210, 40), "scroll", 90.0, "noise", 2.0),
    DemoClass("purple circle, saw melody", "circle", (150, 50, 200), "vertical", 520.0, "saw", 1.0),
)


def _frame(cls: DemoClass, t: float, duration: float, rng_params: dict[str, float]) -> np.ndarray:
    w, h = SIZE
    bg = np.array(rng_params["bg"], dtype=np.float32)
    img = np.empty((h, w, 3), dtype=np.float32)
    img[:] = bg
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    phase = t / duration
    r = rng_params["size"]
    cx, cy = rng_params["x0"], rng_params["y0"]
    if cls.motion == "horizontal":
        cx = r + (w - 2 * r) * (0.5 + 0.5 * math.sin(2 * math.pi * phase * rng_params["speed"]))
    elif cls.motion == "vertical":
        cy = r + (h - 2 * r) * (0.5 + 0.5 * math.sin(2 * math.pi * phase * rng_params["speed"]))
    angle = 2 * math.pi * phase * rng_params["speed"] if cls.motion == "spin" else 0.0
    colour = np.array(cls.colour, dtype=np.float32)
    if cls.shape == "circle":
        mask = (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r
    elif cls.shape == "square":
        mask = (np.abs(xx - cx) <= r) & (np.abs(yy - cy) <= r)
    elif cls.shape == "triangle":
        mask = np.ones((h, w), dtype=bool)
        for k in range(3):  # inside all three edges of a rotating equilateral triangle
            a1 = angle + 2 * math.pi * k / 3
            a2 = angle + 2 * math.pi * (k + 1) / 3
            x1, y1 = cx + r * math.cos(a1), cy + r * math.sin(a1)
            x2, y2 = cx + r * math.cos(a2), cy + r * math.sin(a2)
            mask &= (x2 - x1) * (yy - y1) - (y2 - y1) * (xx - x1) >= 0
    else:  # stripes scrolling sideways
        period = max(6.0, r)
        mask = ((xx + 40 * phase * rng_params["speed"] * period) % period) < period / 2
    img[mask] = colour
    noise = np.random.default_rng(int(t * 1000) + int(rng_params["seed"])).normal(0, 6, img.shape)
    return np.clip(img + noise, 0, 255).astype(np.uint8)


def _sound(cls: DemoClass, duration: float, rng: np.random.Generator) -> np.ndarray:
    n = int(duration * SAMPLE_RATE)
    t = np.arange(n) / SAMPLE_RATE
    f = cls.pitch * rng.uniform(0.94, 1.06)
    if cls.timbre == "sine":
        wave = np.sin(2 * np.pi * f * t)
    elif cls.timbre == "square":
        wave = np.sign(np.sin(2 * np.pi * f * t)) * 0.6
    elif cls.timbre == "saw":
        notes = f * np.array([1.0, 1.25, 1.5, 1.25])
        idx = (t * max(cls.rhythm, 1.0)).astype(int) % len(notes)
        wave = 2 * ((t * notes[idx]) % 1.0) - 1
    else:
        wave = rng.normal(0, 0.5, n)
        kernel = np.exp(-np.arange(64) / 8.0)
        wave = np.convolve(wave, kernel / kernel.sum(), mode="same") * 4
    if cls.rhythm > 0 and cls.timbre != "saw":
        tempo = cls.rhythm * rng.uniform(0.9, 1.1)
        envelope = np.exp(-((t * tempo) % 1.0) * 8.0)
        wave = wave * envelope
    wave = wave * rng.uniform(0.4, 0.8) + rng.normal(0, 0.01, n)
    return np.clip(wave, -1, 1).astype(np.float32)


def write_clip(path: Path, cls: DemoClass, duration: float, seed: int) -> None:
    """One mp4 (H.264 video, AAC mono audio) of ``cls``, varied by ``seed``."""
    import av

    rng = np.random.default_rng(seed)
    w, h = SIZE
    size = float(rng.uniform(12, 22))
    params = {
        "bg": [float(v) for v in rng.integers(0, 70, 3)],
        "size": size,
        "x0": float(rng.uniform(size, w - size)),
        "y0": float(rng.uniform(size, h - size)),
        "speed": float(rng.uniform(0.6, 1.6)),
        "seed": float(seed),
    }
    audio = _sound(cls, duration, rng)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as out:
        vs = out.add_stream("libx264", rate=FPS)
        vs.width, vs.height, vs.pix_fmt = w, h, "yuv420p"
        as_ = out.add_stream("aac", rate=SAMPLE_RATE)
        as_.layout = "mono"
        for i in range(int(duration * FPS)):
            frame = av.VideoFrame.from_ndarray(_frame(cls, i / FPS, duration, params), format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, FPS)
            for pkt in vs.encode(frame):
                out.mux(pkt)
        for pkt in vs.encode():
            out.mux(pkt)
        step = 1024
        for i in range(0, audio.size, step):
            frame = av.AudioFrame.from_ndarray(audio[None, i : i + step].copy(), format="fltp", layout="mono")
            frame.sample_rate = SAMPLE_RATE
            frame.pts, frame.time_base = i, Fraction(1, SAMPLE_RATE)
            for pkt in as_.encode(frame):
                out.mux(pkt)
        for pkt in as_.encode():
            out.mux(pkt)


def make_demo_videos(
    folder: str | Path,
    clips_per_class: int = 8,
    duration: float = 6.0,
    classes: int = len(CLASSES),
    seed: int = 0,
) -> list[Path]:
    """Write the demo set: ``folder/<label>/<k>.mp4``; the folder name is each clip's class."""
    folder = Path(folder)
    paths = []
    for ci, cls in enumerate(CLASSES[:classes]):
        slug = cls.label.split(",")[0].replace(" ", "-")
        for k in range(clips_per_class):
            p = folder / slug / f"{slug}-{k:02d}.mp4"
            if not p.exists():
                with atomic_path(p) as tmp:
                    write_clip(tmp, cls, duration, seed * 100_000 + ci * 1000 + k)
            paths.append(p)
    return paths


def pretrained_available(name: str, timeout: float = 2.0) -> bool:
    """Whether ``name``'s pretrained weights are at hand: cached, given locally, or downloadable now.

    Decided in seconds: the caches are looked at first, then one TCP probe per download host with a short
    time-out, so an offline machine never waits on a network time-out.
    """
    import os

    from .plugins import get_encoder
    from .weights import reachable

    env = {"clip": ("EE_CLIP_CHECKPOINT",), "vggish": ("EE_VGGISH_WEIGHTS",)}.get(name, ())
    if any(os.environ.get(v) for v in env):
        return True
    enc = get_encoder(name)
    files = list(getattr(enc, "weight_files", lambda: [])())
    if not files:
        return False
    if all(f.path.is_file() for f in files):
        return True
    hosts = {f.url.split("/")[2] for f in files if f.url.startswith("http")}
    return bool(hosts) and all(reachable(f"https://{h}", timeout=timeout) for h in hosts)
