"""The headless-Chromium harness (tests/browser.py) on a tiny static page: the checks the search page's
browser test relies on (images decoded, audio durations, screenshots) must be able to pass and to fail."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import pytest
from browser import Browser, BrowserError, static_server
from PIL import Image

PAGE = """<!doctype html><meta charset="utf-8"><title>harness</title>
<body style="margin:0;background:#fff">
<h1 style="font:bold 48px sans-serif;color:#000;margin:0;height:60px">Search</h1>
<img id="good" src="red.png"><img id="missing" src="missing.png"><img id="corrupt" src="corrupt.png">
<audio id="clip" src="tone.wav" preload="metadata" controls></audio>
</body>"""


def write_wav(path: Path, seconds: float, rate: int = 16000) -> None:
    t = np.arange(int(seconds * rate)) / rate
    samples = (0.3 * np.sin(2 * np.pi * 440 * t) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(samples.tobytes())


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("site")
    (root / "index.html").write_text(PAGE)
    Image.new("RGB", (40, 30), (255, 0, 0)).save(root / "red.png")
    (root / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    write_wav(root / "tone.wav", 1.5)
    with static_server(root) as url:
        yield url


def test_images_report_their_width_and_broken_ones_zero(browser: Browser, site: str):
    browser.open(site + "index.html")
    widths = browser.evaluate("Object.fromEntries([...document.images].map(i => [i.id, i.naturalWidth]))")
    assert widths == {"good": 40, "missing": 0, "corrupt": 0}


def test_audio_duration_matches_the_file(browser: Browser, site: str):
    browser.open(site + "index.html")
    browser.wait_for("document.getElementById('clip').readyState >= 1", timeout=10)
    duration = browser.evaluate("document.getElementById('clip').duration")
    assert abs(duration - 1.5) < 0.1


def test_screenshot_has_the_size_asked_and_shows_text_and_image(browser: Browser, site: str, tmp_path: Path):
    browser.open(site + "index.html")
    path = browser.screenshot(tmp_path / "shot.png", width=320, height=200)
    img = np.asarray(Image.open(path).convert("RGB"))
    assert img.shape == (200, 320, 3)
    heading = img[:60]
    assert (heading.max(axis=2) < 80).sum() > 200, "no dark text pixels: are any fonts installed?"
    red = (img[..., 0] > 200) & (img[..., 1] < 60) & (img[..., 2] < 60)
    assert red.sum() >= 40 * 30 * 0.9


def test_page_errors_surface_as_browser_errors(browser: Browser, site: str):
    browser.open(site + "index.html")
    browser.evaluate("console.error('boom', 7)")
    assert ("error", "boom 7") in browser.console
    with pytest.raises(BrowserError, match="ReferenceError"):
        browser.evaluate("undefinedFunction()")
    with pytest.raises(BrowserError, match="timed out"):
        browser.wait_for("document.title === 'never'", timeout=0.3)
    with pytest.raises(BrowserError, match="cannot load"):
        browser.open("http://127.0.0.1:1/")
    browser.open(site + "index.html")
    assert browser.evaluate("document.title") == "harness"


def test_a_browser_that_cannot_start_says_why(tmp_path: Path):
    with pytest.raises(BrowserError, match="chromium exited"):
        Browser("/bin/false", timeout=5).start()
    with pytest.raises(BrowserError, match="cannot start"):
        Browser(str(tmp_path / "no-such-chromium")).start()
