"""The JSON convention of every command (``--json`` prints, ``--json-out FILE`` writes, ``-`` is stdout),
the special targets of ``files.write_output``, and answers that come before anything heavy loads."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading

import pytest
from conftest import ee_main, run_ee

from embedeverything.errors import UserError
from embedeverything.files import write_output


def test_write_output_follows_a_symlink_and_refuses_a_folder(tmp_path):
    real = tmp_path / "real.json"
    real.write_text("old")
    link = tmp_path / "link.json"
    link.symlink_to(real)
    write_output(link, "new")
    assert link.is_symlink() and real.read_text() == "new"
    with pytest.raises(UserError, match="is a folder"):
        write_output(tmp_path, "x")


def test_write_output_writes_a_fifo_in_place(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_text()))
    reader.start()
    write_output(fifo, '{"a": 1}')
    reader.join(10)
    assert got == ['{"a": 1}'] and fifo.is_fifo()


def test_json_flag_and_json_out(tmp_path, capsys):
    assert ee_main("encoders", "--json") == 0
    printed = json.loads(capsys.readouterr().out)  # nothing but the JSON on stdout
    assert {e["name"] for e in printed["encoders"]} >= {"test-text", "test-image"}
    assert ee_main("encoders", "--json-out", "-") == 0
    assert json.loads(capsys.readouterr().out) == printed
    assert ee_main("encoders", "--json-out", str(tmp_path / "e.json")) == 0
    assert "Installed encoders" in capsys.readouterr().out  # the table stays on stdout
    assert json.loads((tmp_path / "e.json").read_text()) == printed
    assert ee_main("encoders", "--json-out", str(tmp_path)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is a folder" in err


def test_json_out_dev_stdout_writes_in_place(tmp_path):
    """``--json-out /dev/stdout`` with stdout sent to a file writes into that file; no rename replaces it."""
    target = tmp_path / "captured.txt"
    with open(target, "w") as f:
        inode = os.fstat(f.fileno()).st_ino
        p = subprocess.run(
            [
                sys.executable,
                "-m",
                "embedeverything",
                "weights",
                "list",
                "test-text",
                "--json-out",
                "/dev/stdout",
            ],
            stdout=f,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
        )
    assert p.returncode == 0, p.stderr
    assert json.loads(target.read_text()) == [] and target.stat().st_ino == inode


@pytest.mark.parametrize(
    "argv, path",
    [
        (["eval", "run/adapter.safetensors", "--json", "out.json"], "out.json"),
        (["query", "a.safetensors", "dog", "--json", "-"], "-"),
        (["encoders", "--json=e.json"], "e.json"),
    ],
)
def test_old_json_path_usage_names_json_out(argv, path, capsys):
    assert ee_main(*argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"did you mean --json-out {path}?" in err, err


def test_missing_adapter_is_said_without_importing_torch(tmp_path):
    code = (
        "import sys, time\n"
        "t = time.perf_counter()\n"
        "from embedeverything.cli import main\n"
        "try:\n"
        "    main(['eval', 'nosuch.safetensors'])\n"
        "except SystemExit as e:\n"
        "    print(e.code, 'torch' in sys.modules, round(time.perf_counter() - t, 3))\n"
    )
    p = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    status, torch_loaded, seconds = p.stdout.split()
    assert (status, torch_loaded) == ("2", "False"), p.stdout + p.stderr
    assert "no adapter file at nosuch.safetensors" in p.stderr and p.stderr.count("\n") == 1
    print(f"ee eval nosuch.safetensors answered in {seconds} s")
    for argv in (["query", "nosuch.safetensors", "dog"], ["figures", "nosuch.safetensors"]):
        r = run_ee(*argv, cwd=str(tmp_path))
        assert r.code == 2 and "no adapter file" in r.err, r.err


def test_version(capsys):
    from embedeverything import __version__

    assert ee_main("--version") == 0
    assert capsys.readouterr().out.strip() == f"embedeverything {__version__}"


def test_pydantic_wording_does_not_leak(tmp_path, capsys):
    assert ee_main("weights", "list", "test-text", "--opt", "sed=1") == 2
    err = capsys.readouterr().err
    assert "unknown option sed (did you mean seed?)" in err and "Extra inputs" not in err, err
    from embedeverything.errors import UserError
    from embedeverything.train import make_config

    with pytest.raises(UserError) as e:
        make_config(epochs=0)
    assert "epochs: must be > 0" in str(e.value) and "Value error" not in str(e.value)
