"""`ee serve` in a real browser (headless Chromium): the page loads with a query in its URL and by a file
chosen in it, and every hit shows its media: each thumbnail decoded (naturalWidth > 0), each audio window
as long as its window (within 0.1 s). The data are `ee demo`'s kind: real mp4 files of coloured shapes
with sounds, paired by `ee pair` (frames with the audio around them), here through the test encoders;
one class folder carries a name that is HTML, which must show as text and run nothing."""

from __future__ import annotations

import pytest
from conftest import ee_main
from media import write_tone
from search_page import SETTLED, problems, search_file, search_words
from serving import Server

from embedeverything.demo import make_demo_videos

pytest.importorskip("lancedb")

HOSTILE = "<img src=x onerror=window.pwned=1>"


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("served")
    videos = root / "videos"
    make_demo_videos(videos, clips_per_class=3, duration=3.0, classes=3)
    first = sorted(p for p in videos.iterdir() if p.is_dir())[0]
    first.rename(videos / HOSTILE)
    space = ["--a-opt", "space=web", "--a-opt", "dim=16"]
    status = ee_main(
        "pair", "--a", "test-image", "--b", "test-audio", "--data", str(videos), "--out", str(root / "run"),
        "--every", "1.0", "--window", "2.0", "--no-figures", "--threads", "1", *space,
    )  # fmt: skip
    assert status == 0
    adapter = root / "run" / "train" / "adapter.safetensors"
    assert ee_main("index", str(adapter)) == 0
    srv = Server([str(adapter)], root / "server")
    try:
        yield f"http://{srv.hostport}/", root
    finally:
        srv.stop()


def test_a_text_query_in_the_url_shows_every_hit_with_its_media(served, browser):
    url, _ = served
    page = search_words(browser, url, "red circle")
    assert problems(page) == []
    assert [lst["side"] for lst in page["lists"]] == ["a", "b"]
    assert len(page["images"]) == len(page["audio"]) == sum(lst["hits"] for lst in page["lists"])


def test_an_audio_file_chosen_in_the_page_finds_hits(served, browser, tmp_path):
    url, _ = served
    page = search_file(browser, url, write_tone(tmp_path / "query tone.wav", seconds=2.0, freq=660.0))
    assert problems(page) == []
    assert "query tone.wav" in page["status"]


def test_a_video_is_searched_by_the_part_the_user_picks(served, browser):
    url, root = served
    video = sorted((root / "videos").rglob("*.mp4"))[-1]
    for pick, through in (("frame", "side a"), ("audio", "side b")):
        page = search_file(browser, url, video, pick=pick)
        assert problems(page) == []
        assert through in page["status"], page["status"]


def test_manifest_strings_show_as_text_and_run_nothing(served, browser):
    url, root = served
    video = sorted((root / "videos" / HOSTILE).glob("*.mp4"))[0]
    search_file(browser, url, video, pick="frame")  # its own frames come first
    labels = browser.evaluate("[...document.querySelectorAll('.label')].map(l => l.textContent)")
    assert HOSTILE in labels
    assert browser.evaluate("window.pwned === undefined")
    assert browser.evaluate("document.querySelectorAll('#results img[src=\"x\"]').length") == 0


def test_a_file_over_the_upload_limit_is_refused_before_it_is_sent(served, browser, tmp_path):
    url, _ = served
    big = tmp_path / "long recording.wav"
    with open(big, "wb") as f:  # sparse: its size is what the page reads
        f.truncate(51 << 20)
    browser.open(url)
    browser.wait_for(SETTLED, timeout=60)
    browser.set_files("#file", [big])
    status = browser.wait_for(
        "document.getElementById('status').classList.contains('error') && "
        "document.getElementById('status').textContent",
        timeout=10,
    )
    assert status == "long recording.wav is larger than the server's limit of 50 MB"
