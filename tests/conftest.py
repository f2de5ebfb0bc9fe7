"""Shared test helpers: run the real `ee` CLI (in-process or as a subprocess) and build small manifests."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from browser import Browser, find_chromium, why_no_chromium

from embedeverything.manifest import MediaRef, Pair, write_manifest

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Result:
    code: int
    out: str
    err: str


def run_ee(
    *args: str, env: dict[str, str] | None = None, timeout: float = 300, cwd: str | None = None
) -> Result:
    """The installed `ee` as a real subprocess: exit status, stdout, stderr."""
    full_env = {**os.environ, **(env or {})}
    p = subprocess.run(
        [sys.executable, "-m", "embedeverything", *args],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=timeout,
        cwd=cwd,
    )
    return Result(p.returncode, p.stdout, p.stderr)


def ee_main(*args: str, capsys: pytest.CaptureFixture[str] | None = None) -> int:
    """The CLI in this process (fast); returns the exit status."""
    from embedeverything.cli import main

    try:
        main(list(args))
    except SystemExit as e:
        return int(e.code or 0)
    return 0


def text_manifest(path: Path, n: int, prefix: str = "t", start: int = 0) -> Path:
    """Image-less pairs: inline text on both sides (test-text on a and b)."""
    pairs = [
        Pair(
            id=f"{prefix}{i:04d}",
            a=MediaRef(kind="text", text=f"a red cube number {i} word{i % 7}"),
            b=MediaRef(kind="text", text=f"sound {i} tone{i % 5}"),
            group=f"g{i // 3}",
        )
        for i in range(start, start + n)
    ]
    return write_manifest(path, pairs, "text", "text")


def image_manifest(folder: Path, n: int, bad: dict[int, str] | None = None) -> Path:
    """PNG images on side a (some made bad on purpose), inline text on side b."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    bad = bad or {}
    pairs = []
    for i in range(n):
        name = f"img{i:04d}.png"
        kind = bad.get(i)
        if kind == "missing":
            pass
        elif kind == "empty":
            (folder / name).write_bytes(b"")
        elif kind == "text":
            (folder / name).write_text("this is not a png\n")
        elif kind == "truncated":
            Image.new("RGB", (40, 30), (i % 256, 80, 160)).save(folder / name)
            data = (folder / name).read_bytes()
            (folder / name).write_bytes(data[: len(data) // 3])
        else:
            rng = np.random.default_rng(i)
            arr = rng.integers(0, 255, size=(30, 40, 3), dtype=np.uint8)
            Image.fromarray(arr).save(folder / name)
        pairs.append(
            Pair(
                id=f"p{i:04d}",
                a=MediaRef(kind="image", path=name),
                b=MediaRef(kind="text", text=f"caption {i}"),
            )
        )
    return write_manifest(folder / "manifest.jsonl", pairs, "image", "text")


_PRISTINE_ENV = dict(os.environ)


@pytest.fixture(autouse=True)
def _restore_environ():
    """Plugins may set process-wide variables (minilm sets HF_HUB_OFFLINE=1, even from a module-scoped
    fixture): every test starts from the environment the session started with."""
    os.environ.clear()
    os.environ.update(_PRISTINE_ENV)
    yield


@pytest.fixture(scope="session")
def chromium() -> str:
    """Headless Chromium's path for the real-browser tests. The test setup installs it (scripts/setup.sh
    --tests), so under CI=true its absence is a failure; on a developer's machine it is a skip."""
    found = find_chromium()
    if not found:
        if os.environ.get("CI") == "true":
            pytest.fail(f"no chromium with CI=true: {why_no_chromium()}")
        pytest.skip(f"no chromium: {why_no_chromium()}")
    return found


@pytest.fixture(scope="module")
def browser(chromium: str) -> Iterator[Browser]:
    """One headless Chromium per test module: starting it costs far more than a page load."""
    with Browser(chromium) as b:
        yield b
