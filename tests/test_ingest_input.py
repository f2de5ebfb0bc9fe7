"""`ee ingest` on input as users have it: spreadsheet CSVs with a byte order mark, files in Latin-1, file
names that are not UTF-8, folders and symlinks where files were expected; and how failures are reported."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import ee_main
from media import write_image

from embedeverything.manifest import read_manifest

BOM = b"\xef\xbb\xbf"


def failures(path: Path) -> dict[str, str]:
    if not path.exists():
        return {}
    return {r["path"]: r["reason"] for r in map(json.loads, path.read_text().splitlines())}


def test_a_table_saved_with_a_byte_order_mark_reads_as_without(tmp_path: Path) -> None:
    """Spreadsheet programs' "CSV UTF-8" starts with a BOM: the id column must still be the id column."""
    write_image(tmp_path / "a.png", (255, 0, 0))
    write_image(tmp_path / "b.png", (0, 255, 0))
    rows = "id,image,text\nx1,a.png,a red square\nx2,b.png,a green square\nx1,b.png,again\n"
    (tmp_path / "t.csv").write_bytes(BOM + rows.encode())
    (tmp_path / "t.tsv").write_bytes(BOM + rows.replace(",", "\t").encode())
    jsonl = "".join(
        json.dumps(dict(zip(("id", "image", "text"), r.split(","), strict=True))) + "\n"
        for r in rows.splitlines()[1:]
    )
    (tmp_path / "t.jsonl").write_bytes(BOM + jsonl.encode())
    for name in ("t.csv", "t.tsv", "t.jsonl"):
        out = tmp_path / f"{name}.manifest.jsonl"
        assert ee_main("ingest", "table", str(tmp_path / name), "--id", "id", "-o", str(out)) == 1, name
        m = read_manifest(out)
        assert [(p.id, p.a.path, p.b.text) for p in m.pairs] == [
            ("x1", "a.png", "a red square"),
            ("x2", "b.png", "a green square"),
        ], name
        (reason,) = failures(tmp_path / f"{name}.manifest.failures.jsonl").values()
        assert reason.startswith("duplicate id 'x1'"), name
    # a manifest saved with a BOM (edited in a spreadsheet or an editor) still reads
    text = (tmp_path / "t.csv.manifest.jsonl").read_bytes()
    (tmp_path / "bom.jsonl").write_bytes(BOM + text)
    assert [p.id for p in read_manifest(tmp_path / "bom.jsonl").pairs] == ["x1", "x2"]


def test_a_file_that_is_not_utf8_is_one_line_naming_the_line_and_the_fix(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_image(tmp_path / "a.png")
    (tmp_path / "t.csv").write_bytes("image,text\na.png,ok\na.png,café crème\n".encode("latin-1"))
    (tmp_path / "t.jsonl").write_bytes('{"image": "a.png", "text": "café"}\n'.encode("latin-1"))
    (tmp_path / "vgg.csv").write_bytes("abc,10,café,train\n".encode("latin-1"))
    for args, where in (
        (("ingest", "table", str(tmp_path / "t.csv")), f"{tmp_path / 't.csv'}:3:"),
        (("ingest", "table", str(tmp_path / "t.jsonl")), f"{tmp_path / 't.jsonl'}:1:"),
        (("ingest", "vggsound", str(tmp_path / "vgg.csv"), str(tmp_path)), f"{tmp_path / 'vgg.csv'}:1:"),
        (
            ("embed", str(tmp_path / "t.jsonl"), "-e", "test-text", "--side", "b"),
            f"{tmp_path / 't.jsonl'}:1:",
        ),
    ):
        assert ee_main(*args) == 2, args
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith(f"error: {where} not UTF-8 (byte 0xe9)"), err
        assert "iconv -f latin1 -t utf-8" in err
    assert not list(tmp_path.glob("*manifest*"))


def test_text_files_with_a_byte_order_mark_give_their_text(tmp_path: Path) -> None:
    from embedeverything.decode import decode
    from embedeverything.manifest import MediaRef

    (tmp_path / "q.txt").write_bytes(BOM + b"a red square\n")
    assert decode(MediaRef(kind="text", path="q.txt"), tmp_path) == "a red square"


def test_file_names_that_are_not_utf8_are_ingested_and_embedded(tmp_path: Path) -> None:
    """A Latin-1 name (bytes 0xe9) on a UTF-8 system: stored losslessly, so the same file opens at embed."""
    from media import write_video

    from embedeverything.store import Store

    d = tmp_path / "v"
    write_video(d / "plain.mp4", 2.0)
    shutil.copy(d / "plain.mp4", os.fsdecode(bytes(d) + b"/caf\xe9.mp4"))
    write_video(d / "long.mp4", 4.0)
    assert ee_main("ingest", "videos", str(d)) == 0
    assert not [p.name for p in d.iterdir() if ".tmp" in p.name]
    m = read_manifest(d / "manifest.jsonl")
    odd = next(p for p in m.pairs if p.group == "caf\\xe9.mp4")  # the id shows the byte, as \xNN
    assert odd.id == "caf\\xe9.mp4@1.000" and os.fsencode(odd.a.path) == b"caf\xe9.mp4"
    for side, enc in (("a", "test-image"), ("b", "test-audio")):
        assert ee_main("embed", str(d / "manifest.jsonl"), "-e", enc, "--side", side) == 0
    store = Store.open(d / "store.zarr")
    ids = [str(i) for i in store.rows()["id"]]
    for side in "ab":
        (arr,) = store.find(side=side)
        assert (arr.state() == 1).all()
        vec = dict(zip(ids, arr.read(), strict=True))
        assert np.array_equal(vec["caf\\xe9.mp4@1.000"], vec["plain.mp4@1.000"])  # the same bytes: read
        assert not np.array_equal(vec["caf\\xe9.mp4@1.000"], vec["long.mp4@2.000"])


def test_folders_symlink_loops_and_broken_links_are_failures_with_their_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from media import write_video

    d = tmp_path / "v"
    write_video(d / "ok.mp4", 2.0)
    (d / "folder.mp4").mkdir()
    (d / "loop.mp4").symlink_to("loop.mp4")
    (d / "gone.mp4").symlink_to("nowhere.mp4")
    assert ee_main("ingest", "videos", str(d)) == 1
    assert [p.group for p in read_manifest(d / "manifest.jsonl").pairs] == ["ok.mp4"]
    got = failures(d / "manifest.failures.jsonl")
    assert got["folder.mp4"].startswith("a folder, not a file")
    assert got["loop.mp4"].startswith("symlink loop")
    assert got["gone.mp4"].startswith("broken symlink") and got["gone.mp4"].endswith("-> nowhere.mp4")
    assert "3 of 4 inputs failed" in capsys.readouterr().err


def test_table_failures_are_counted_by_reason_not_by_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_image(tmp_path / "a.png")
    for n in range(3):
        (tmp_path / f"bad{n}.png").write_text("not an image")
    rows = "".join(f"bad{n}.png,broken {n}\n" for n in range(3)) + "x.png,missing\ny.png,missing too\n"
    (tmp_path / "t.csv").write_text("image,text\na.png,fine\n" + rows)
    assert ee_main("ingest", "table", str(tmp_path / "t.csv")) == 1
    err = capsys.readouterr().err
    counts = [line.split(None, 1) for line in err.splitlines()[1:] if line.strip()[0].isdigit()]
    assert counts == [["3", "unreadable image"], ["2", "file not found"]], err
    got = failures(tmp_path / "t.manifest.failures.jsonl")
    assert "bad0.png" in got["t.csv:3"] and "x.png" in got["t.csv:6"]  # each still names its file


def test_ee_pair_says_why_inputs_failed_and_where_each_list_is(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from media import write_text_as, write_video, write_zero_bytes

    from embedeverything.demo import make_demo_videos

    d = tmp_path / "videos"
    make_demo_videos(d, clips_per_class=4, duration=2.0, classes=3)
    write_zero_bytes(d / "zero.mp4")
    write_text_as(d / "notes.mp4")
    write_text_as(d / "more-notes.mp4")
    write_video(d / "blip.mp4", 0.3)  # ingests; too short for test-audio (0.5 s): fails at embedding
    out = tmp_path / "out"
    args = ["--a", "test-image", "--b", "test-audio", "--data", str(d), "--out", str(out), "--no-figures"]
    assert ee_main("pair", *args, "--threads", "1") == 1
    captured = capsys.readouterr()
    assert "16 inputs, 3 failed" in captured.err
    counts = [line.split(None, 1) for line in captured.err.splitlines() if line.strip()[:1].isdigit()]
    assert counts == [["2", "not a readable media file"], ["1", "empty file"]], captured.err
    assert f"all failures: {out / 'manifest.failures.jsonl'}" in captured.err
    assert f"ingest failures, with reasons: {out / 'manifest.failures.jsonl'}" in captured.out
    assert f"embedding failures, with reasons: ee store failures {out / 'store.zarr'}" in captured.out
    assert ee_main("store", "failures", str(out / "store.zarr")) == 0
    captured = capsys.readouterr()
    assert [line.split("\t")[1] for line in captured.out.splitlines()] == ["blip.mp4@0.150"]
    assert f"3 in {out.resolve() / 'manifest.failures.jsonl'}" in captured.err


def test_paired_files_with_names_that_are_not_utf8(tmp_path: Path) -> None:
    from media import write_tone

    write_image(tmp_path / "x.png")
    write_tone(tmp_path / "x.wav")
    for ext in ("png", "wav"):
        os.rename(tmp_path / f"x.{ext}", os.fsdecode(bytes(tmp_path) + b"/n\xe9." + ext.encode()))
    assert ee_main("ingest", "pairs", str(tmp_path)) == 0
    (p,) = read_manifest(tmp_path / "manifest.jsonl").pairs
    assert (p.id, p.group) == ("n\\xe9", "n\\xe9")
    assert (os.fsencode(p.a.path), os.fsencode(p.b.path)) == (b"n\xe9.png", b"n\xe9.wav")
    assert b'"path":"n\\udce9.png"' in (tmp_path / "manifest.jsonl").read_bytes()  # valid UTF-8 JSON
