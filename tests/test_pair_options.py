"""`ee pair` options beyond the encoders: a table's columns, labels from class folders, and the same run
from Python (``embedeverything.pair``)."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import ee_main
from media import write_tone

from embedeverything.manifest import read_manifest

FAST = ("--epochs", "2", "--no-figures", "--threads", "1")


def _sound_table(d: Path, n: int = 12) -> Path:
    """A table whose first columns are not the pair: a default pick would take ``notes`` and ``sound``."""
    words = ["low hum", "high beep", "mid tone"]
    lines = ["notes,sound,words,cls,key"]
    for i in range(n):
        write_tone(d / "snd" / f"{i}.wav", 0.6, 200.0 + 150 * (i % 3), 8000)
        lines.append(f"note {i},snd/{i}.wav,{words[i % 3]} {i},c{i % 3},k{i:02d}")
    (d / "t.csv").write_text("\n".join(lines) + "\n")
    return d / "t.csv"


def test_pair_table_columns_are_chosen_with_col_flags(tmp_path, capsys):
    table = _sound_table(tmp_path)
    out = tmp_path / "out"
    args = ["pair", "--a", "test-text", "--b", "test-audio", "--data", str(table), "--out", str(out), *FAST]
    cols = ["--a-col", "words", "--b-col", "sound", "--label-col", "cls", "--id-col", "key"]
    assert ee_main(*args, *cols) == 0, capsys.readouterr().err
    m = read_manifest(out / "manifest.jsonl")
    assert (m.header.a, m.header.b) == ("text", "audio")
    first = m.pairs[0]
    assert (first.id, first.a.text, first.b.path, first.label) == ("k00", "low hum 0", "../snd/0.wav", "c0")
    assert {p.label for p in m.pairs} == {"c0", "c1", "c2"}
    # one export layout: `ee export` on this run's adapter writes where `ee pair` did, OUT/export
    exported = out / "export" / "embeddings.parquet"
    assert exported.is_file()
    exported.unlink()
    adapter = out / "train" / "adapter.safetensors"
    assert ee_main("export", str(out / "store.zarr"), "--adapter", str(adapter)) == 0
    assert exported.is_file() and not (out / "train" / "export").exists()
    capsys.readouterr()
    assert ee_main(*args, "--a-col", "nope") == 2
    err = capsys.readouterr().err
    assert "--a-col 'nope' is not a column" in err and "notes, sound, words, cls, key" in err


def test_table_hints_name_the_flags_of_the_command_that_printed_them(tmp_path, capsys):
    (tmp_path / "one.csv").write_text("id,sound\nx,a.wav\n")
    table = str(tmp_path / "one.csv")
    pair = ["pair", "--a", "test-text", "--b", "test-audio", "--data", table, "--out", str(tmp_path / "o")]
    assert ee_main(*pair) == 2
    assert "give --a-col COL --b-col COL" in capsys.readouterr().err
    assert ee_main("ingest", "table", table) == 2
    assert "give --a COL --b COL" in capsys.readouterr().err
    assert ee_main("ingest", "table", table, "--label", "nope") == 2
    assert "--label 'nope' is not a column" in capsys.readouterr().err
    folder = tmp_path / "files"
    write_tone(folder / "x.wav")
    assert ee_main(*pair[:6], str(folder), "--out", str(tmp_path / "o2"), "--b-col", "sound") == 2
    assert "--b-col: for table data only" in capsys.readouterr().err


@pytest.fixture(scope="module")
def class_videos(tmp_path_factory) -> Path:
    from embedeverything.demo import make_demo_videos

    d = tmp_path_factory.mktemp("cls") / "videos"
    make_demo_videos(d, clips_per_class=4, duration=3.0, classes=3)  # videos/<class>/<clip>.mp4
    return d


def _labels(out: Path) -> set[str | None]:
    return {p.label for p in read_manifest(out / "manifest.jsonl").pairs}


def test_class_folders_label_by_default_and_a_change_of_labels_reruns_what_shows_them(
    class_videos, tmp_path, capsys
):
    out = tmp_path / "out"
    base = ["pair", "--a", "test-image", "--b", "test-audio", "--data", str(class_videos), "--out", str(out)]
    base += ["--every", "1.0", "--window", "2.0", *FAST]
    assert ee_main(*base) == 0
    err = capsys.readouterr().err
    assert "labels: every video is in a class folder" in err and "--no-labels-from-folders" in err, err
    assert _labels(out) == {p.name for p in class_videos.iterdir() if p.is_dir()} and len(_labels(out)) == 3
    assert (out / "metrics.json").read_text().count("class_r1") > 0
    # labels off: ingest and everything that shows labels again; the CLIP loss never reads them
    assert ee_main(*base, "--no-labels-from-folders") == 0
    err = capsys.readouterr().err
    assert "labels:" not in err and "ingest: up to date" not in err, err
    assert "train: up to date" in err and "eval: up to date" not in err, err
    assert _labels(out) == {None} and "class_r1" not in (out / "metrics.json").read_text()
    assert ee_main(*base, "--no-labels-from-folders") == 0
    assert "eval: up to date" in capsys.readouterr().err
    # a loss that reads labels trains again when only the labels changed
    assert ee_main(*base, "--no-labels-from-folders", "--loss", "clip-label") == 0
    capsys.readouterr()
    assert ee_main(*base, "--loss", "clip-label") == 0
    err = capsys.readouterr().err
    assert "train: up to date" not in err and "train: 2 epochs" in err, err


def test_outputs_of_an_adapter_go_to_its_run_folder(tmp_path):
    """`ee export` / `ee figures` write beside an `ee train` adapter, and into OUT of an `ee pair` run (as
    `ee pair` itself does); a folder that happens to be called train is no pair run without pair.json."""
    from embedeverything.pair import STATE_FILE, run_folder

    alone = tmp_path / "train" / "adapter.safetensors"
    assert run_folder(alone) == tmp_path / "train"
    (tmp_path / STATE_FILE).write_text("{}")
    assert run_folder(alone) == tmp_path
    assert run_folder(tmp_path / "run" / "adapter.safetensors") == tmp_path / "run"


def test_default_out_is_named_after_the_data_without_its_extension(tmp_path, capsys):
    """`ee pair --data pairs.csv` without --out: `pairs.A-B` beside it (a folder keeps its whole name, dots
    and all); a run begun under the older name, `pairs.csv.A-B`, goes on there."""
    from embedeverything.pair import STATE_FILE, default_out

    lines = ["words,sound"]
    for i in range(3):  # too few to train: the run stops after ingest, its output folder made
        write_tone(tmp_path / "snd" / f"{i}.wav", 0.5, 300.0, 8000)
        lines.append(f"word {i},snd/{i}.wav")
    table = tmp_path / "pairs.csv"
    table.write_text("\n".join(lines) + "\n")
    pair = ["pair", "--a", "test-text", "--b", "test-audio", "--data", str(table), "--a-col", "words"]
    assert ee_main(*pair, "--b-col", "sound") == 2
    assert "only 3 pairs" in capsys.readouterr().err
    assert (tmp_path / "pairs.test-text-test-audio" / "manifest.jsonl").is_file()
    assert not (tmp_path / "pairs.csv.test-text-test-audio").exists()

    folder = tmp_path / "my.photos"
    folder.mkdir()
    assert default_out(folder, "x", "y") == tmp_path / "my.photos.x-y"
    old = tmp_path / "t.jsonl.x-y"
    old.mkdir()
    (old / STATE_FILE).write_text("{}")
    assert default_out(tmp_path / "t.jsonl", "x", "y") == old
