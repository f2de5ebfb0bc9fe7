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
