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


def test_pair_from_python_is_ee_pair_and_returns_what_it_made(tmp_path):
    """``embedeverything.pair`` runs what ``ee pair`` runs and hands back the adapter, the paths and the
    test figures that metrics.json holds; a second call finds every stage done; mistakes raise."""
    import dataclasses
    import json

    import yaml

    import embedeverything as ee
    from embedeverything.pairing import STAGES

    table = _sound_table(tmp_path)
    out = tmp_path / "out"
    cols = {"a_col": "words", "b_col": "sound", "label_col": "cls"}
    fast = {"epochs": 2, "figures": False, "threads": 1}
    lines: list[str] = []
    r = ee.pair("test-text", "test-audio", table, out, **cols, **fast, license="mit", log=lines.append)
    assert isinstance(r, ee.PairResult) and r.exit_code == 0
    assert (r.stages_run, r.stages_skipped) == (STAGES, ())
    assert any(line.startswith("train: 2 epochs") for line in lines), lines
    ad = ee.load_adapter(r.adapter)
    assert (ad.config.a.identity.name, ad.config.b.identity.name) == ("test-text", "test-audio")
    assert r.adapter == out / "train" / "adapter.safetensors" and r.export.is_file() and r.figures == ()
    report = json.loads(r.metrics_file.read_text())
    assert r.metrics == report and r.test_rows == report["test_rows_used"] and r.rows_used == 12
    methods = {m["name"]: m["metrics"] for m in report["methods"]}
    baselines = [m for m in report["methods"] if m["kind"] == "baseline"]
    best = max(baselines, key=lambda m: m["metrics"]["r1"])["name"] if baselines else None
    assert (r.best_baseline.name if r.best_baseline else None) == best
    for scores in filter(None, (r.adapter_scores, r.best_baseline)):
        for k in ("a2b_r1", "b2a_r1", "a2b_r10", "b2a_r10"):
            assert getattr(scores, k) == methods[scores.name][k]
    card = r.card.read_text()
    assert r.card == out / "train" / "README.md" and yaml.safe_load(card.split("---")[1])["license"] == "mit"
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.adapter = tmp_path  # type: ignore[misc]

    again = ee.pair("test-text", "test-audio", table, out, **cols, **fast, license="mit", log=lines.append)
    assert (again.stages_run, again.stages_skipped) == ((), STAGES)
    assert (again.adapter, again.adapter_scores, again.card) == (r.adapter, r.adapter_scores, r.card)
    assert again.card.read_text() == card and again.export == r.export
    # another license: nothing is measured again, only the card is written again
    lines.clear()
    other = ee.pair("test-text", "test-audio", table, out, **cols, **fast, license="other", log=lines.append)
    assert other.stages_skipped == STAGES and "model card written again" in lines[-1], lines
    assert yaml.safe_load(other.card.read_text().split("---")[1])["license"] == "other"
    assert other.card.read_text().split("---", 2)[2] == card.split("---", 2)[2]

    with pytest.raises(TypeError, match="'epoch'.*did you mean 'epochs'"):
        ee.pair("test-text", "test-audio", table, tmp_path / "bad", epoch=2)
    with pytest.raises(ee.UserError, match="unknown encoder|no-such"):
        ee.pair("no-such", "test-audio", table, tmp_path / "bad")
    with pytest.raises(ee.UserError, match="lr"):
        ee.pair("test-text", "test-audio", table, tmp_path / "bad", **cols, lr=-1)
    with pytest.raises(ee.UserError, match="a_opt takes a dict"):
        ee.pair("test-text", "test-audio", table, tmp_path / "bad", a_opt=["dim=4"])
    assert not (tmp_path / "bad").exists()  # refused before any work


def test_pair_is_the_function_even_once_the_stages_are_imported():
    import embedeverything
    import embedeverything.pairing  # noqa: F401

    assert callable(embedeverything.pair) and embedeverything.pair.__module__ == "embedeverything.pair_api"


def test_outputs_of_an_adapter_go_to_its_run_folder(tmp_path):
    """`ee export` / `ee figures` write beside an `ee train` adapter, and into OUT of an `ee pair` run (as
    `ee pair` itself does); a folder that happens to be called train is no pair run without pair.json."""
    from embedeverything.pair_data import STATE_FILE, run_folder

    alone = tmp_path / "train" / "adapter.safetensors"
    assert run_folder(alone) == tmp_path / "train"
    (tmp_path / STATE_FILE).write_text("{}")
    assert run_folder(alone) == tmp_path
    assert run_folder(tmp_path / "run" / "adapter.safetensors") == tmp_path / "run"


def test_default_out_is_named_after_the_data_without_its_extension(tmp_path, capsys):
    """`ee pair --data pairs.csv` without --out: `pairs.A-B` beside it (a folder keeps its whole name, dots
    and all); a run begun under the older name, `pairs.csv.A-B`, goes on there."""
    from embedeverything.pair_data import STATE_FILE, default_out

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
