"""What a real browser must see on `ee serve`'s page, shared by the browser test and
scripts/search_page.py (which runs the same checks on any running server, e.g. over `ee demo`'s output).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from browser import Browser

#: the page sets data-state="done" once every thumbnail and audio window has loaded or failed for good
SETTLED = "['done', 'error', 'ready'].includes(document.body.dataset.state)"
AUDIO_TOLERANCE_S = 0.1

RENDERED = """(() => ({
  state: document.body.dataset.state,
  status: document.getElementById('status').textContent,
  lists: [...document.querySelectorAll('.side-list')].map(s => ({
    side: s.dataset.side, hits: s.querySelectorAll('li.hit').length})),
  images: [...document.querySelectorAll('#results img')].map(i => ({
    src: i.getAttribute('src'), complete: i.complete, width: i.naturalWidth})),
  audio: [...document.querySelectorAll('#results audio')].map(a => ({
    src: a.getAttribute('src'), duration: a.duration, window: Number(a.dataset.window)})),
  failed: document.querySelectorAll('#results .missing').length,
}))()"""


def rendered(browser: Browser, timeout: float = 90.0) -> dict[str, Any]:
    """The result page once its media settled."""
    browser.wait_for(SETTLED, timeout=timeout)
    return browser.evaluate(RENDERED)


def problems(page: dict[str, Any]) -> list[str]:
    """Everything wrong with a rendered result page (empty: every hit shows its media)."""
    out = []
    if page["state"] != "done":
        out.append(f"page state {page['state']!r}: {page['status']}")
    if not page["lists"] or any(lst["hits"] == 0 for lst in page["lists"]):
        out.append(f"a result list is empty: {page['lists']}")
    if not page["images"]:
        out.append("no result images")
    if not page["audio"]:
        out.append("no audio windows")
    out += [
        f"image {i['src']} did not load (naturalWidth {i['width']})"
        for i in page["images"]
        if i["width"] <= 0
    ]
    for a in page["audio"]:
        if not abs(a["duration"] - a["window"]) <= AUDIO_TOLERANCE_S:
            out.append(f"audio {a['src']} lasts {a['duration']} s, its window {a['window']} s")
    if page["failed"]:
        out.append(f"{page['failed']} media marked missing or not shown")
    return out


def search_words(browser: Browser, base: str, words: str) -> dict[str, Any]:
    from urllib.parse import quote

    browser.open(f"{base}?q={quote(words)}")
    return rendered(browser)


def search_file(browser: Browser, base: str, path: Path, pick: str | None = None) -> dict[str, Any]:
    """Choose ``path`` in the page's file input, as a user does (and pick frame/audio for a video)."""
    browser.open(base)
    browser.wait_for(SETTLED, timeout=60)
    browser.set_files("#file", [path])
    if pick is not None:
        browser.wait_for("!document.getElementById('pick').hidden", timeout=10)
        browser.evaluate(f"document.getElementById('pick-{pick}').click()")
    browser.wait_for(f"document.getElementById('status').textContent.includes({path.name!r})", timeout=30)
    browser.wait_for("!document.getElementById('status').textContent.startsWith('searching')", timeout=60)
    return rendered(browser)
