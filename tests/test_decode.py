"""Decoding and the decoder pool, on real generated media; crashes and hangs are real processes."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from media import (
    dominant_colour,
    tone_segment,
    write_image,
    write_png_bomb,
    write_text_as,
    write_tone,
    write_truncated,
    write_video,
    write_zero_bytes,
)

from embedeverything.decode import decode, probe
from embedeverything.decoder_pool import CRASH_ON_ENV, HANG_ON_ENV, DecoderPool
from embedeverything.errors import BadItem
from embedeverything.items import Audio
from embedeverything.manifest import MediaRef


@pytest.fixture(scope="module")
def media_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("media")
    write_video(d / "clip.mp4", 4.0)
    write_video(d / "stereo.mp4", 2.0, channels=2, sample_rate=44100)
    write_video(d / "silent.mp4", 2.0, audio=False)
    write_video(d / "fast.mp4", 4.0, faststart=True)
    write_video(d / "pcm.mkv", 3.0, channels=2, audio_codec="pcm_s16le", fps=25)
    write_truncated(d / "cut.mp4", d / "clip.mp4")
    write_truncated(d / "fastcut.mp4", d / "fast.mp4", keep=0.4)
    write_zero_bytes(d / "zero.mp4")
    write_text_as(d / "text.mp4")
    write_tone(d / "tone.wav", 1.5, 440.0)
    write_tone(d / "tone.flac", 0.5, 880.0, sample_rate=22050)
    write_image(d / "red.png", (255, 0, 0))
    (d / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 20)
    write_png_bomb(d / "bomb.png")
    return d


def test_frames_and_windows_match_time(media_dir: Path) -> None:
    # segment k (1 s) has colour k and tone k: a frame and a window inside one segment agree
    for k in range(4):
        im = decode(MediaRef(kind="video_frame", path="clip.mp4", t=k + 0.5), media_dir)
        assert im.dtype == np.uint8 and im.shape == (48, 64, 3)
        assert dominant_colour(im) == k
        au = decode(MediaRef(kind="video_audio", path="clip.mp4", start=k + 0.2, end=k + 0.8), media_dir)
        assert isinstance(au, Audio) and au.sample_rate == 16000 and au.channels == 1
        assert abs(au.duration - 0.6) < 0.01
        assert tone_segment(au.samples, au.sample_rate) == k


def test_frame_on_screen_at_t(media_dir: Path) -> None:
    """The last frame whose time is <= t: at 10 fps, t = k - 0.05 still shows segment k - 1's colour."""
    for k in (1, 2, 3):
        before = decode(MediaRef(kind="video_frame", path="clip.mp4", t=k - 0.05), media_dir)
        after = decode(MediaRef(kind="video_frame", path="clip.mp4", t=k + 0.05), media_dir)
        assert (dominant_colour(before), dominant_colour(after)) == (k - 1, k)
    last = decode(MediaRef(kind="video_frame", path="clip.mp4", t=99.0), media_dir)  # past the end
    assert dominant_colour(last) == 3


def test_audio_in_other_formats_is_converted(media_dir: Path) -> None:
    """PCM int16 (packed) in Matroska goes through the resampler to float32 [channels, n]."""
    for k in range(3):
        au = decode(MediaRef(kind="video_audio", path="pcm.mkv", start=k + 0.1, end=k + 0.9), media_dir)
        assert au.channels == 2 and au.sample_rate == 16000 and abs(au.duration - 0.8) < 1e-3
        assert np.allclose(au.samples[0], au.samples[1], atol=1e-4)
        assert tone_segment(au.samples, au.sample_rate) == k
    info = probe(media_dir / "pcm.mkv", "video")
    assert info["audio_end"] == pytest.approx(3.0, abs=0.07) and info["channels"] == 2


def test_audio_keeps_rate_and_channels(media_dir: Path) -> None:
    au = decode(MediaRef(kind="video_audio", path="stereo.mp4"), media_dir)
    assert au.sample_rate == 44100 and au.channels == 2 and abs(au.duration - 2.0) < 0.05
    wav = decode(MediaRef(kind="audio", path="tone.wav", start=0.5, end=1.0), media_dir)
    assert wav.sample_rate == 16000 and wav.samples.shape == (1, 8000)
    flac = decode(MediaRef(kind="audio", path="tone.flac"), media_dir)
    assert flac.sample_rate == 22050 and abs(flac.duration - 0.5) < 1e-3


def test_probe_reads_extents_and_rejects_bad_files(media_dir: Path) -> None:
    info = probe(media_dir / "clip.mp4", "video")
    assert info["video_end"] == pytest.approx(4.0) and info["audio_end"] == pytest.approx(4.0)
    assert (info["width"], info["height"], info["sample_rate"], info["channels"]) == (64, 48, 16000, 1)
    assert probe(media_dir / "silent.mp4", "video")["audio_end"] is None
    assert probe(media_dir / "fast.mp4", "video")["video_end"] == pytest.approx(4.0)
    assert probe(media_dir / "tone.flac", "audio")["audio_end"] == pytest.approx(0.5)
    assert probe(media_dir / "red.png", "image") == {"width": 32, "height": 24}
    expect = {
        "cut.mp4": "not a readable media file",
        "fastcut.mp4": "truncated",  # the index survives, the data does not: caught from the packets
        "zero.mp4": "empty file",
        "text.mp4": "not a readable media file",
        "missing.mp4": "file not found",
    }
    for name, reason in expect.items():
        with pytest.raises(BadItem, match=reason):
            probe(media_dir / name, "video")
    with pytest.raises(BadItem, match="unreadable image"):
        probe(media_dir / "bad.png", "image")
    with pytest.raises(BadItem, match="image too large"):
        probe(media_dir / "bomb.png", "image")


def test_pool_decodes_in_order_and_records_bad_files(media_dir: Path) -> None:
    refs = [
        MediaRef(kind="video_frame", path="clip.mp4", t=2.5),
        MediaRef(kind="video_audio", path="silent.mp4", start=0.0, end=1.0),
        MediaRef(kind="text", text="inline"),
        MediaRef(kind="image", path="bad.png"),
        MediaRef(kind="image", path="red.png"),
        MediaRef(kind="video_frame", path="text.mp4", t=1.0),
    ]
    with DecoderPool(2, 30, media_dir) as pool:
        got = pool.decode_all(refs)
        probed = pool.probe_all([("clip.mp4", "video"), ("zero.mp4", "video")])
    assert dominant_colour(got[0]) == 2
    assert isinstance(got[1], BadItem) and got[1].reason == "no audio track"
    assert got[2] == "inline"
    assert isinstance(got[3], BadItem) and "unreadable image" in got[3].reason
    assert got[4].shape == (24, 32, 3)
    assert isinstance(got[5], BadItem) and "not a readable media file" in got[5].reason
    assert probed[0]["video_end"] == pytest.approx(4.0)
    assert isinstance(probed[1], BadItem) and "empty file" in probed[1].reason


def test_pool_survives_a_segfault(media_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CRASH_ON_ENV, "stereo")
    refs = [MediaRef(kind="video_frame", path=n, t=0.5) for n in ("clip.mp4", "stereo.mp4", "fast.mp4")]
    with DecoderPool(1, 30, media_dir) as pool:
        before = pool.pids()
        got = pool.decode_all(refs)
        again = pool.decode_all(refs[:1])  # the replacement worker serves later calls
        assert pool.pids() != before and len(pool.pids()) == 1
        assert pool.crashes == 1
    assert isinstance(got[1], BadItem) and got[1].reason == "decoder crashed (killed by SIGSEGV)"
    assert dominant_colour(got[0]) == 0 and dominant_colour(got[2]) == 0
    assert dominant_colour(again[0]) == 0


def test_pool_kills_a_hung_decoder(media_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(HANG_ON_ENV, "fast.mp4")
    refs = [MediaRef(kind="image", path="red.png"), MediaRef(kind="video_frame", path="fast.mp4", t=1.0)]
    refs += [MediaRef(kind="video_frame", path="clip.mp4", t=1.5)]
    with DecoderPool(2, 1.5, media_dir) as pool:
        t0 = time.monotonic()
        got = pool.decode_all(refs)
        assert time.monotonic() - t0 < 10
        assert pool.timeouts == 1
    assert isinstance(got[1], BadItem) and got[1].reason.startswith("timed out")
    assert got[0].shape == (24, 32, 3) and dominant_colour(got[2]) == 1


def test_pool_worker_killed_from_outside(media_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker busy on a file (hung here, so that the kill surely lands mid-file) is SIGKILLed by pid."""
    monkeypatch.setenv(HANG_ON_ENV, "fast.mp4")
    refs = [MediaRef(kind="video_frame", path="fast.mp4", t=1.0), MediaRef(kind="image", path="red.png")]
    with DecoderPool(1, 60, media_dir) as pool:
        out: list[object] = []
        th = threading.Thread(target=lambda: out.append(pool.decode_all(refs)))
        th.start()
        deadline = time.monotonic() + 20
        while not pool.pids() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)
        os.kill(pool.pids()[0], signal.SIGKILL)
        th.join(30)
        assert not th.is_alive()
    got = out[0]
    assert isinstance(got, list)
    assert isinstance(got[0], BadItem) and got[0].reason == "decoder crashed (killed by SIGKILL)"
    assert got[1].shape == (24, 32, 3)


def test_pool_replaces_a_worker_that_died_while_idle(media_dir: Path) -> None:
    with DecoderPool(1, 30, media_dir) as pool:
        pool.decode_all([MediaRef(kind="image", path="red.png")])
        pid = pool.pids()[0]
        os.kill(pid, signal.SIGKILL)
        time.sleep(0.3)
        got = pool.decode_all([MediaRef(kind="image", path="red.png")])
        assert got[0].shape == (24, 32, 3)  # not blamed on the file
        assert pool.pids()[0] != pid and pool.crashes == 0


def test_worker_start_up_is_not_charged_to_the_file(media_dir: Path) -> None:
    """A fresh worker's imports (seconds on a loaded machine) do not count against a short time limit."""
    with DecoderPool(2, 1.0, media_dir) as pool:
        got = pool.decode_all([MediaRef(kind="image", path="red.png")] * 3)
        assert pool.timeouts == 0
    assert all(g.shape == (24, 32, 3) for g in got)


def test_no_file_handles_leak(media_dir: Path) -> None:
    """Every container is closed, on success and on failure (PyAV leaks handles otherwise)."""
    refs = [
        MediaRef(kind="video_frame", path="clip.mp4", t=1.5),
        MediaRef(kind="video_audio", path="clip.mp4", start=1.0, end=2.0),
        MediaRef(kind="video_audio", path="silent.mp4"),
        MediaRef(kind="video_frame", path="text.mp4", t=1.0),
        MediaRef(kind="image", path="bad.png"),
        MediaRef(kind="audio", path="tone.flac"),
    ]

    def run() -> None:
        for ref in refs:
            try:
                decode(ref, media_dir)
            except BadItem:
                pass
        for name, kind in (("clip.mp4", "video"), ("fastcut.mp4", "video"), ("cut.mp4", "video")):
            try:
                probe(media_dir / name, kind)
            except BadItem:
                pass

    run()
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(10):
        run()
    assert len(os.listdir("/proc/self/fd")) == before


def _group_members(pgid: int) -> list[int]:
    """Pids of the live processes in process group ``pgid`` (read from /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            found.append(int(stat.parent.name))
    return found


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads the process table from /proc")
def test_decoders_end_quietly_when_ee_is_killed(media_dir: Path, tmp_path: Path) -> None:
    """kill -9 of `ee ingest` while its decoders work (one hung on a file): no decoder outlives it, and none
    prints a traceback (BrokenPipeError) onto the terminal they share with it."""
    import shutil
    import subprocess
    import sys

    d = tmp_path / "v"
    d.mkdir()
    for i in range(6):
        shutil.copy(media_dir / "clip.mp4", d / f"c{i}.mp4")
    shutil.copy(media_dir / "clip.mp4", d / "stuck.mp4")
    p = subprocess.Popen(
        [sys.executable, "-m", "embedeverything", "ingest", "videos", str(d), "--workers", "2"],
        env={**os.environ, HANG_ON_ENV: "stuck"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while len(_group_members(p.pid)) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(_group_members(p.pid)) >= 3, "the decoder processes never started"
        time.sleep(0.5)  # the decoders are importing or working
        os.kill(p.pid, signal.SIGKILL)
        # stderr reaches its end only when every process holding it (the decoders too) has exited
        _, err = p.communicate(timeout=20)
        assert "Traceback" not in err and "Error" not in err, err
        deadline = time.monotonic() + 5
        while _group_members(p.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _group_members(p.pid)
    finally:
        for pid in _group_members(p.pid):
            os.kill(pid, signal.SIGKILL)
