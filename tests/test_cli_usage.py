"""Using ``ee`` at a shell: completion, the examples in each command's help, tables at any width, flags
refused where they do nothing, library warnings kept off the terminal."""

from __future__ import annotations

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
