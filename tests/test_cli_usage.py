"""Using ``ee`` at a shell: completion, the examples in each command's help, tables at any width, flags
refused where they do nothing, library warnings kept off the terminal."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

COMPLETE = (
    "import sys\n"
    "from embedeverything.cli import main\n"
    "try:\n"
    "    main([])\n"
    "except SystemExit:\n"
    "    pass\n"
    "print('TORCH', 'torch' in sys.modules, file=sys.stderr)\n"
)


def _complete(shell: str, words: str) -> tuple[list[str], bool]:
    """What the shell's completion script would get back for ``words``, and whether torch was imported."""
    if shell == "bash":
        env = {"COMP_WORDS": words, "COMP_CWORD": str(len(words.split()) - 1)}
    else:
        env = {"_TYPER_COMPLETE_ARGS": words, "_TYPER_COMPLETE_FISH_ACTION": "get-args"}
    p = subprocess.run(
        [sys.executable, "-c", COMPLETE],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **env, "_EE_COMPLETE": f"complete_{shell}"},
    )
    return p.stdout.split(), "TORCH True" in p.stderr


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_completion_of_commands_flags_and_encoder_names(shell):
    words, torch_loaded = _complete(shell, "ee pa")
    assert any("pair" in w for w in words), words
    words, _ = _complete(shell, "ee pair --ep")
    assert any("--epochs" in w for w in words), words
    words, _ = _complete(shell, "ee pair --a test-t")
    assert any("test-text" in w for w in words), words
    assert not torch_loaded


def test_show_completion_detects_the_shell():
    p = subprocess.run(
        ["bash", "-c", f"{sys.executable} -m embedeverything --show-completion; true"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode == 0, p.stderr
    assert "_EE_COMPLETE=complete_bash" in p.stdout and "complete -o default -F _ee_completion ee" in p.stdout


def _commands(cmd, path):
    """(path, command) for the root and every command under it."""
    yield path, cmd
    for name, sub in sorted(getattr(cmd, "commands", {}).items()):
        yield from _commands(sub, f"{path} {name}")


def test_every_command_has_examples_that_parse():
    """Each example in an epilog is a real command line: it reaches its own command and the parser takes
    its flags, arguments and values as they stand today."""
    import shlex

    import typer.main

    from embedeverything.cli import app

    root = typer.main.get_command(app)
    seen = 0
    for path, cmd in _commands(root, "ee"):
        lines = [line for line in (cmd.epilog or "").splitlines() if line.startswith("ee ")]
        if not hasattr(cmd, "commands"):
            assert lines, f"`{path} --help` shows no example"
        for line in lines:
            assert len(line) <= 78, f"{line!r} wraps in an 80-column terminal"
            words = shlex.split(line)[1:]
            target, names = root, ["ee"]
            while hasattr(target, "commands") and words and words[0] in target.commands:
                names.append(words[0])
                target = target.commands[words.pop(0)]
            assert path == "ee" or " ".join(names) == path, f"{line!r} is shown under {path}"
            if "--help" in words:
                continue
            try:  # an unknown flag, a missing required one or a bad value raises here
                target.make_context(" ".join(names), words)
            except Exception as e:
                raise AssertionError(f"{line!r} does not parse: {e}") from e
            seen += 1
    assert seen >= 40


def _on_terminal(*args: str, columns: int = 80, cwd: str | None = None) -> str:
    """``ee ARGS`` with stdout on a pseudo-terminal of ``columns`` columns; what it showed, colours removed."""
    import pty
    import re

    master, slave = pty.openpty()
    env = {**os.environ, "COLUMNS": str(columns)}
    env.pop("FORCE_COLOR", None)
    p = subprocess.Popen(
        [sys.executable, "-m", "embedeverything", *args],
        stdout=slave,
        stderr=subprocess.PIPE,
        env=env,
        cwd=cwd,
    )
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    assert p.wait(timeout=60) == 0, p.stderr.read() if p.stderr else ""
    text = b"".join(chunks).decode().replace("\r\n", "\n")
    return re.sub(r"\x1b\[[0-9;]*m", "", text)


def _encoder_rows() -> list[dict]:
    from conftest import run_ee

    r = run_ee("encoders", "--json")
    rows = json.loads(r.out)["encoders"]
    assert any(len(row["weights"]) > 60 for row in rows), "no long weight source to show"
    return rows


def test_tables_fit_an_80_column_terminal_without_cutting_words():
    rows = _encoder_rows()
    shown = _on_terminal("encoders", columns=80)
    for line in shown.splitlines():
        assert len(line) <= 80 or len(line.split()) == 1, f"a line wider than the terminal: {line!r}"
    flat = " ".join(shown.split())
    for row in rows:  # wrapped at spaces only: each source reads whole once the line breaks are undone
        assert " ".join(row["weights"].split()) in flat, row["name"]


def test_tables_are_never_wrapped_into_a_pipe():
    from conftest import run_ee

    rows = _encoder_rows()
    lines = run_ee("encoders", env={"COLUMNS": "80"}).out.splitlines()
    for row in rows:
        assert any(row["name"] in line and row["weights"] in line for line in lines), row["name"]


@pytest.mark.parametrize(
    "make, flags, said",
    [
        ("videos", ["--pattern", "{id}.mp4"], "--pattern: for vggsound data only, and {data} is videos data"),
        ("pairs", ["--clips", "clips", "--every", "2"], "--every: for videos or vggsound data only; --clips"),
        ("table", ["--frames", "3", "--window", "2"], "--frames, --window: for videos or vggsound data only"),
        (
            "videos",
            ["--kind", "pairs", "--a-col", "x"],
            "--a-col: for table data only, and {data} is pairs data",
        ),
    ],
)
def test_pair_refuses_flags_that_do_nothing_for_the_data(tmp_path, make, flags, said):
    from conftest import run_ee

    if make == "table":
        data = tmp_path / "t.csv"
        data.write_text("image,caption\na.png,a cat\n")
    else:
        data = tmp_path / make
        data.mkdir()
        (data / ("v.mp4" if make == "videos" else "x.wav")).write_bytes(b"")
    out = tmp_path / "out"
    r = run_ee(
        "pair", "--a", "test-image", "--b", "test-audio", "--data", str(data), "--out", str(out), *flags
    )
    assert r.code == 2 and r.err.count("\n") == 1, r.err
    assert said.format(data=data) in r.err, r.err
    assert ("(as detected; --kind says otherwise)" in r.err) == ("--kind" not in flags)
    assert not out.exists()  # refused before any work


def test_pair_does_not_refuse_flags_left_at_their_defaults(tmp_path):
    from embedeverything.pair_data import check_flags
    from embedeverything.pairing import PairRun

    run = PairRun(a="x", b="y", data=tmp_path, out=tmp_path / "o")
    run.ingest_options = {"frames": None, "every": None, "window": None, "pattern": None}  # as ee pair sends
    for kind in ("videos", "pairs", "table"):
        check_flags(run, kind)


def test_ingest_commands_take_only_their_own_flags(tmp_path, capsys):
    from conftest import ee_main

    assert ee_main("ingest", "videos", str(tmp_path), "--pattern", "{id}.mp4") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "No such option: --pattern" in err


PALETTE_WARNING = "Palette images with Transparency expressed in bytes should be converted to RGBA images"

NOISY = f"""
import subprocess, sys, warnings
import embedeverything as ee
from embedeverything.cli import main
from embedeverything.errors import EEWarning

class Noisy(ee.Encoder):
    name, modality, dim = "noisy-image", "image", 3

    def __init__(self, **kw):
        super().__init__(**kw)
        warnings.warn({PALETTE_WARNING!r}, UserWarning)
        warnings.warn("old_api is deprecated", DeprecationWarning)
        warnings.warn("ours: said once", EEWarning)

    def load(self):
        return ee.Weights(model_id="noisy", weights="none")

    def embed_batch(self, items):
        raise NotImplementedError

class Plugin:
    @ee.hookimpl
    def register_encoders(self, register):
        register(Noisy)

ee.register_plugin(Plugin(), name="noisy", version="1")
try:
    main(["encoders", "--json"])
except SystemExit:
    pass
# a Python process started from here (a decoder or a Dask worker) keeps them off the terminal as well
subprocess.run([sys.executable, "-c", "import warnings; warnings.warn('in a child process')"])
"""


@pytest.mark.parametrize("debug", [False, True])
def test_library_warnings_stay_off_the_terminal_unless_ee_debug(debug):
    env = {k: v for k, v in os.environ.items() if k not in ("EE_DEBUG", "PYTHONWARNINGS")}
    if debug:
        env["EE_DEBUG"] = "1"
    p = subprocess.run([sys.executable, "-c", NOISY], capture_output=True, text=True, env=env, timeout=60)
    assert p.returncode == 0, p.stderr
    if debug:
        for said in (PALETTE_WARNING, "old_api is deprecated", "in a child process"):
            assert said in p.stderr
    else:
        assert p.stderr == "warning: ours: said once\n"


def test_a_palette_png_with_transparency_is_ingested_and_embedded_without_warnings(tmp_path):
    from conftest import run_ee
    from PIL import Image

    folder = tmp_path / "pal"
    folder.mkdir()
    for i in range(3):
        im = Image.new("P", (8, 8), i)
        im.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0] + [0] * 759)
        im.save(folder / f"p{i}.png", transparency=b"\x00\x80\xff")  # transparency as bytes
        (folder / f"p{i}.txt").write_text(f"caption {i}")
    env = {"PYTHONWARNINGS": "", "EE_DEBUG": ""}
    r = run_ee("ingest", "pairs", str(folder), env=env)
    assert r.code == 0 and "warning" not in r.err.lower(), r.err
    r = run_ee("embed", str(folder / "manifest.jsonl"), "-e", "test-image", env=env)
    assert r.code == 0 and "warning" not in r.err.lower(), r.err
    assert "3 embedded" in r.out
