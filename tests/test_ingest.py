"""`ee ingest` on real generated media: videos, VGG-Sound, paired files, tables; bad input; isolation."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import ee_main
from media import (
    dominant_colour,
    tone_segment,
    write_image,
    write_text_as,
    write_tone,
    write_truncated,
    write_video,
    write_zero_bytes,
)

from embedeverything.decode import decode
from embedeverything.decoder_pool import CRASH_ON_ENV, HANG_ON_ENV
from embedeverything.ingest import FramePlan, audio_window, frame_times
from embedeverything.manifest import read_manifest


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Good videos made once: six 1-s segments, a 2-s clip, a 0.3-s clip."""
    d = tmp_path_factory.mktemp("clips")
    write_video(d / "six.mp4", 6.0)
    write_video(d / "two.mp4", 2.0, channels=2, sample_rate=22050)
    write_video(d / "blip.mp4", 0.3)
    return d


def copy(clips: Path, dest: Path, *names: str) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    for n in names:
        src, _, target = n.partition(":")
        (dest / (target or src)).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(clips / src, dest / (target or src))
    return dest


def failures(path: Path) -> dict[str, str]:
    if not path.exists():
        return {}
    return {r["path"]: r["reason"] for r in map(json.loads, path.read_text().splitlines())}


def test_frame_times_and_windows() -> None:
    assert frame_times(0, 6, FramePlan()) == [3.0]
    assert frame_times(0, 6, FramePlan(frames=3)) == [1.0, 3.0, 5.0]
    assert frame_times(0, 6, FramePlan(every=2.5)) == [1.25, 3.75]
    assert frame_times(0, 0.2, FramePlan(every=1.0)) == [0.1]  # at least one frame
    assert audio_window(3.0, 5.0, 0.0, 10.0) == (0.5, 5.5)  # centred
    assert audio_window(1.0, 5.0, 0.0, 10.0) == (0.0, 5.0)  # shifted right, inside the clip
    assert audio_window(9.5, 5.0, 0.0, 10.0) == (5.0, 10.0)  # shifted left
    assert audio_window(1.0, 5.0, 0.0, 2.0) == (0.0, 2.0)  # shorter than the window: all of it


def test_frames_and_windows_pair_the_right_moments(
    clips: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every frame's colour and its window's tone name the same segment: timestamps are right."""
    d = copy(clips, tmp_path / "v", "six.mp4", "two.mp4:sub/two.mp4")
    assert ee_main("ingest", "videos", str(d), "--every", "1", "--window", "0.6") == 0
    m = read_manifest(d / "manifest.jsonl")
    assert (m.header.a, m.header.b) == ("image", "audio")
    six = [p for p in m.pairs if p.group == "six.mp4"]
    assert [p.a.t for p in six] == [0.5, 1.5, 2.5, 3.5, 4.5, 5.5]
    assert [p.id for p in six][:2] == ["six.mp4@0.500", "six.mp4@1.500"]
    for k, p in enumerate(six):
        assert (p.b.start, p.b.end) == pytest.approx((k + 0.2, k + 0.8))
        frame = decode(p.a, m.root)
        audio = decode(p.b, m.root)
        assert dominant_colour(frame) == k
        assert tone_segment(audio.samples, audio.sample_rate) == k
        assert abs(audio.duration - 0.6) < 0.01
    two = [p for p in m.pairs if p.group == "sub/two.mp4"]
    assert [p.a.t for p in two] == [0.5, 1.5] and two[0].a.path == "sub/two.mp4"
    assert "8 pairs from 2 sources" in capsys.readouterr().out


def test_default_window_is_shifted_inside_and_short_clips_give_all(clips: Path, tmp_path: Path) -> None:
    d = copy(clips, tmp_path / "v", "six.mp4", "two.mp4", "blip.mp4")
    out = tmp_path / "elsewhere" / "m.jsonl"
    assert ee_main("ingest", "videos", str(d), "--frames", "3", "--out", str(out)) == 0
    m = read_manifest(out)
    by = {p.id: p for p in m.pairs}
    assert by["six.mp4@1.000"].a.path == "../v/six.mp4"  # paths relative to the manifest, ids to the folder
    windows = [(by[f"six.mp4@{t:.3f}"].b.start, by[f"six.mp4@{t:.3f}"].b.end) for t in (1, 3, 5)]
    assert windows == [(0.0, 5.0), (0.5, 5.5), (1.0, 6.0)]
    first = decode(by["six.mp4@1.000"].b, m.root)  # [0, 5]: starts in segment 0, ends in segment 4
    sr = first.sample_rate
    assert abs(first.duration - 5.0) < 0.01
    assert tone_segment(first.samples[:, : sr // 2], sr) == 0
    assert tone_segment(first.samples[:, -sr // 2 :], sr) == 4
    two = [p for p in m.pairs if p.group == "two.mp4"]
    assert all((p.b.start, p.b.end) == (0.0, 2.0) for p in two)
    audio = decode(two[0].b, m.root)
    assert audio.channels == 2 and audio.sample_rate == 22050
    blip = [p for p in m.pairs if p.group == "blip.mp4"]  # too short for VGGish: not an ingest failure
    assert len(blip) == 3 and blip[0].b.end == pytest.approx(0.3, abs=0.07)


def test_bad_videos_are_recorded_and_the_run_goes_on(
    clips: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    d = copy(clips, tmp_path / "v", "six.mp4", "two.mp4")
    write_zero_bytes(d / "zero.mp4")
    write_truncated(d / "cut.mp4", clips / "six.mp4")
    write_video(d / "fast.mp4", 4.0, faststart=True)
    write_truncated(d / "fastcut.mp4", d / "fast.mp4", keep=0.4)
    (d / "fast.mp4").unlink()
    write_text_as(d / "notes.mp4")
    write_video(d / "silent.mp4", 2.0, audio=False)
    assert ee_main("ingest", "videos", str(d)) == 1
    m = read_manifest(d / "manifest.jsonl")
    assert sorted(p.group for p in m.pairs) == ["six.mp4", "two.mp4"]
    got = failures(d / "manifest.failures.jsonl")
    assert set(got) == {"zero.mp4", "cut.mp4", "fastcut.mp4", "notes.mp4", "silent.mp4"}
    assert got["zero.mp4"].startswith("empty file")
    assert got["cut.mp4"].startswith("not a readable media file")
    assert got["fastcut.mp4"].startswith("truncated")
    assert got["notes.mp4"].startswith("not a readable media file")
    assert got["silent.mp4"] == "no audio track"
    err = capsys.readouterr().err
    assert "5 of 7 inputs failed" in err and "no audio track" in err
    # fixed the folder: a rerun succeeds and removes the stale failures list
    for n in got:
        (d / n).unlink()
    assert ee_main("ingest", "videos", str(d)) == 0
    assert not (d / "manifest.failures.jsonl").exists()


def test_strict_stops_at_the_first_failure(clips: Path, tmp_path: Path) -> None:
    d = copy(clips, tmp_path / "v", "six.mp4")
    write_zero_bytes(d / "a_zero.mp4")
    write_text_as(d / "b_text.mp4")
    assert ee_main("ingest", "videos", str(d), "--strict", "--workers", "1") == 1
    assert not (d / "manifest.jsonl").exists()
    assert list(failures(d / "manifest.failures.jsonl")) == ["a_zero.mp4"]


def test_a_crashed_or_hung_decoder_costs_only_its_file(
    clips: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    d = copy(
        clips, tmp_path / "v", "six.mp4", "two.mp4", "six.mp4:boom.mp4", "two.mp4:stuck.mp4", "six.mp4:z.mp4"
    )
    monkeypatch.setenv(CRASH_ON_ENV, "boom")  # the worker SIGSEGVs on this file
    monkeypatch.setenv(HANG_ON_ENV, "stuck")  # and sleeps forever on this one
    assert ee_main("ingest", "videos", str(d), "--timeout", "2", "--workers", "2") == 1
    got = failures(d / "manifest.failures.jsonl")
    assert got == {"boom.mp4": "decoder crashed (killed by SIGSEGV)", "stuck.mp4": got["stuck.mp4"]}
    assert got["stuck.mp4"].startswith("timed out")
    m = read_manifest(d / "manifest.jsonl")
    assert sorted(p.group for p in m.pairs) == ["six.mp4", "two.mp4", "z.mp4"]


def test_user_mistakes_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert ee_main("ingest", "videos", str(tmp_path / "nope")) == 2
    assert "not found" in capsys.readouterr().err
    assert ee_main("ingest", "videos", str(tmp_path)) == 2
    assert "no video files" in capsys.readouterr().err
    assert ee_main("ingest", "videos", str(tmp_path), "--frames", "2", "--every", "1") == 2
    assert "either --frames" in capsys.readouterr().err


def test_vggsound_csv_carries_labels_and_splits(clips: Path, tmp_path: Path) -> None:
    d = copy(clips, tmp_path / "clips", "six.mp4:abc_000010.mp4", "two.mp4:train/x-y_000030.mp4")
    csv = tmp_path / "vggsound.csv"
    csv.write_text(
        'abc,10,"dog barking, loud",train\nx-y,30,church bell,test\nmissing,5,car,train\nabc,10,dog,train\n'
    )
    assert ee_main("ingest", "vggsound", str(csv), str(d)) == 1
    m = read_manifest(d / "manifest.jsonl")
    by = {p.group: p for p in m.pairs}
    assert by["abc_000010.mp4"].label == "dog barking, loud" and by["abc_000010.mp4"].split == "train"
    assert by["train/x-y_000030.mp4"].label == "church bell" and by["train/x-y_000030.mp4"].split == "test"
    assert by["abc_000010.mp4"].a.t == 3.0
    got = failures(d / "manifest.failures.jsonl")
    assert got["missing_000005.mp4"].startswith("clip not found (CSV line 3")
    assert got["abc_000010.mp4"].startswith("duplicate id 'abc_000010.mp4@3.000'")
    # another naming scheme
    d2 = copy(clips, tmp_path / "clips2", "six.mp4:abc.mp4")
    csv.write_text("ytid,start,label,split\nabc,10,dog,train\n")  # with a header line
    assert ee_main("ingest", "vggsound", str(csv), str(d2), "--pattern", "{id}.mp4") == 0
    assert read_manifest(d2 / "manifest.jsonl").pairs[0].label == "dog"


def test_paired_files(tmp_path: Path) -> None:
    d = tmp_path / "p"
    write_image(d / "dog.png", (200, 10, 10))
    write_tone(d / "dog.wav", 1.0, 440.0)
    write_image(d / "sub" / "bell.jpg", (10, 200, 10))
    write_tone(d / "sub" / "bell.flac", 1.0, 880.0)
    write_image(d / "lonely.png")
    (d / "broken.png").write_bytes(b"not an image at all")
    write_tone(d / "broken.wav")
    write_text_as(d / "car.txt", "a car")
    write_tone(d / "car.wav")
    write_image(d / "twin.png")
    write_image(d / "twin.jpg")
    write_zero_bytes(d / "hush.wav")
    write_image(d / "hush.png")
    assert ee_main("ingest", "pairs", str(d)) == 1
    m = read_manifest(d / "manifest.jsonl")
    assert (m.header.a, m.header.b) == ("image", "audio")
    assert {p.id: (p.a.path, p.b.path) for p in m.pairs} == {
        "dog": ("dog.png", "dog.wav"),
        "sub/bell": ("sub/bell.jpg", "sub/bell.flac"),
    }
    assert decode(m.pairs[1].a, m.root).shape == (24, 32, 3)
    got = failures(d / "manifest.failures.jsonl")
    assert got["lonely"].startswith("no partner") and got["twin"].startswith("ambiguous")
    assert "audio+text files, but this folder's pairs are image+audio" in got["car"]
    assert got["broken.png"].startswith("unreadable image") and got["hush.wav"].startswith("empty file")


def test_table_csv_and_jsonl(tmp_path: Path) -> None:
    d = tmp_path / "t"
    write_image(d / "img" / "a.png", (255, 0, 0))
    write_image(d / "img" / "b.png", (0, 255, 0))
    (d / "img" / "bad.png").write_text("text, not png")
    (d / "data.csv").write_text(
        "image,caption,label,split\n"
        "img/a.png,a red square,red,train\n"
        'img/b.png,"a green square, bright",green,test\n'
        "img/missing.png,nothing,none,train\n"
        "img/bad.png,broken,none,val\n"
        "img/a.png,a red square,red,train\n"
        "img/b.png,,green,train\n"
        "img/b.png,odd split,green,holdout\n"
    )
    assert ee_main("ingest", "table", str(d / "data.csv")) == 1
    m = read_manifest(d / "data.manifest.jsonl")
    assert (m.header.a, m.header.b) == ("image", "text")
    assert [(p.id, p.label, p.split, p.b.text) for p in m.pairs] == [
        ("img/a.png|a red square", "red", "train", "a red square"),
        ("img/b.png|a green square, bright", "green", "test", "a green square, bright"),
    ]
    got = failures(d / "data.manifest.failures.jsonl")
    assert got["data.csv:4"].startswith("file not found") and "img/missing.png" in got["data.csv:4"]
    assert got["data.csv:5"].startswith("unreadable image") and "img/bad.png" in got["data.csv:5"]
    assert got["data.csv:6"].startswith("duplicate id")
    assert got["data.csv:7"] == "empty value in column 'caption'"
    assert got["data.csv:8"].startswith("unknown split 'holdout'")
    # JSONL, chosen columns, an id column; audio + inline text
    write_tone(d / "s.wav")
    rows = [
        {"key": "k1", "sound": "s.wav", "words": "a tone"},
        {"key": "k1", "sound": "s.wav", "words": "x"},
        {"key": "", "sound": "s.wav", "words": "no id"},
    ]
    (d / "d.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    out = d / "m.jsonl"
    assert (
        ee_main(
            "ingest",
            "table",
            str(d / "d.jsonl"),
            "--a",
            "sound",
            "--b",
            "words",
            "--id",
            "key",
            "-o",
            str(out),
        )
        == 1
    )
    m = read_manifest(out)
    assert [(p.id, p.a.kind, p.a.path, p.b.text) for p in m.pairs] == [("k1", "audio", "s.wav", "a tone")]
    got = failures(d / "m.failures.jsonl")
    assert got["d.jsonl:2"].startswith("duplicate id 'k1'") and got["d.jsonl:3"] == "empty id in column 'key'"
    assert ee_main("ingest", "table", str(d / "d.jsonl"), "--a", "nope") == 2


def test_ingested_videos_feed_ee_embed(clips: Path, tmp_path: Path) -> None:
    """ee ingest -> ee embed with test encoders on both sides; the 0.3-s clip fails at embed, not ingest."""
    from embedeverything.store import Store

    d = copy(clips, tmp_path / "v", "six.mp4", "two.mp4", "blip.mp4")
    assert ee_main("ingest", "videos", str(d), "--every", "2") == 0
    manifest = d / "manifest.jsonl"
    n = len(read_manifest(manifest).pairs)
    assert n == 3 + 1 + 1
    assert ee_main("embed", str(manifest), "-e", "test-image", "--side", "a") == 0
    assert ee_main("embed", str(manifest), "-e", "test-audio", "--side", "b") == 1  # blip: 0.3 s < 0.5 s
    store = Store.open(d / "store.zarr")
    assert store.n_rows == n
    (a,) = store.find(side="a", encoder="test-image")
    (b,) = store.find(side="b", encoder="test-audio")
    assert (a.state() == 1).all()
    ids = store.rows()["id"]
    failed = [str(ids[i]) for i in np.flatnonzero(b.state() == 2)]
    assert failed == ["blip.mp4@0.150"]


def test_ctrl_c_leaves_no_manifest_and_no_traceback(clips: Path, tmp_path: Path) -> None:
    """SIGINT to the whole process group (as a terminal sends it) while a decoder is busy."""
    import os
    import signal
    import subprocess
    import sys
    import time

    d = copy(clips, tmp_path / "v", "six.mp4", "two.mp4:stuck.mp4")
    env = {**os.environ, HANG_ON_ENV: "stuck"}
    p = subprocess.Popen(
        [sys.executable, "-m", "embedeverything", "ingest", "videos", str(d), "--workers", "1"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    time.sleep(3.0)  # started, and hung on stuck.mp4
    os.killpg(p.pid, signal.SIGINT)
    out, err = p.communicate(timeout=30)
    assert p.returncode == 130, err
    assert "Traceback" not in err and "decoder crashed" not in err
    assert not (d / "manifest.jsonl").exists()


def test_pairs_and_table_manifests_feed_ee_embed(tmp_path: Path) -> None:
    d = tmp_path / "p"
    for i in range(3):
        write_image(d / f"s{i}.png", (80 * i, 10, 10))
        write_tone(d / f"s{i}.wav", 1.0, 300.0 * (i + 1))
    assert ee_main("ingest", "pairs", str(d)) == 0
    assert ee_main("embed", str(d / "manifest.jsonl"), "-e", "test-image", "--side", "a") == 0
    assert ee_main("embed", str(d / "manifest.jsonl"), "-e", "test-audio", "--side", "b") == 0
    (d / "t.csv").write_text("sound,caption\ns0.wav,a low tone\ns1.wav,a higher tone\n")
    assert ee_main("ingest", "table", str(d / "t.csv")) == 0
    m = d / "t.manifest.jsonl"
    assert ee_main("embed", str(m), "-e", "test-audio", "--side", "a", "--store", str(tmp_path / "s2")) == 0
    assert ee_main("embed", str(m), "-e", "test-text", "--side", "b", "--store", str(tmp_path / "s2")) == 0


def test_symlinked_files_keep_their_names(clips: Path, tmp_path: Path) -> None:
    """As in git-annex / DVC / Hugging Face caches: the link's name is the id, not the blob's."""
    blobs = copy(clips, tmp_path / "blobs", "six.mp4:9f86d081884c7d65")
    d = tmp_path / "v"
    d.mkdir()
    (d / "dog.mp4").symlink_to(blobs / "9f86d081884c7d65")
    assert ee_main("ingest", "videos", str(d)) == 0
    (p,) = read_manifest(d / "manifest.jsonl").pairs
    assert (p.id, p.a.path, p.group) == ("dog.mp4@3.000", "dog.mp4", "dog.mp4")


def test_reingesting_a_grown_folder_keeps_the_known_ids(clips: Path, tmp_path: Path) -> None:
    d = copy(clips, tmp_path / "v", "six.mp4")
    assert ee_main("ingest", "videos", str(d), "--every", "3") == 0
    before = [p.model_dump() for p in read_manifest(d / "manifest.jsonl").pairs]
    copy(clips, d, "two.mp4:a/two.mp4")
    assert ee_main("ingest", "videos", str(d), "--every", "3") == 0
    after = {p.id: p.model_dump() for p in read_manifest(d / "manifest.jsonl").pairs}
    assert all(after[p["id"]] == p for p in before)
    assert set(after) == {"six.mp4@1.500", "six.mp4@4.500", "a/two.mp4@1.500"}
