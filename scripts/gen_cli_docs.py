"""Write docs/cli.md from the typer app itself, so the CLI reference cannot drift from the code.

python scripts/gen_cli_docs.py          # rewrite docs/cli.md
python scripts/gen_cli_docs.py --check  # exit 1 if docs/cli.md is stale (the tests run this)
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer.main

from embedeverything.cli import INTERNAL_ERROR_EXIT, app
from embedeverything.errors import DISK_FULL_EXIT

OUT = Path(__file__).resolve().parents[1] / "docs" / "cli.md"


def _param_row(p) -> str:  # typer vendors click: duck-typed
    if p.param_type_name == "argument":
        name = p.name.upper() if p.name else ""
        kind = "argument"
    else:
        name = ", ".join(f"`{o}`" for o in [*p.opts, *p.secondary_opts])
        kind = "option"
    help_text = (getattr(p, "help", None) or "").replace("|", "\\|").replace("\n", " ")
    default = ""
    if not p.required and p.default not in (None, False, (), []) and not callable(p.default):
        default = f" (default: `{p.default}`)"
    req = " **required**" if p.required else ""
    return f"| {name if kind == 'option' else '`' + name + '`'} | {help_text}{default}{req} |"


def _command(cmd, path: str, out: list[str], level: int) -> None:
    if cmd.hidden:
        return
    out.append(f"{'#' * level} `{path}`\n")
    doc = (cmd.help or "").strip()
    if doc:
        out.append(doc.split("\n\n")[0].strip() + "\n")
    if hasattr(cmd, "commands"):
        for name in sorted(cmd.commands):
            _command(cmd.commands[name], f"{path} {name}", out, level + 1)
        return
    params = [p for p in cmd.params if p.name != "help"]
    if params:
        out.append("| parameter | meaning |\n|---|---|")
        out.extend(_param_row(p) for p in params)
        out.append("")
    _examples(cmd, out)


def _examples(cmd, out: list[str]) -> None:
    lines = [line for line in (cmd.epilog or "").splitlines() if line.startswith("ee ")]
    if lines:
        out.append("```bash\n" + "\n".join(lines) + "\n```\n")


def render() -> str:
    root = typer.main.get_command(app)
    out = [
        "# CLI reference\n",
        "Generated from the code by `python scripts/gen_cli_docs.py`; `ee COMMAND --help` says the same.\n",
        "Exit status everywhere: 0 all done; 1 finished but some rows failed; 2 a user's mistake (one line, "
        f"nothing done); {INTERNAL_ERROR_EXIT} an internal error, a bug in embedeverything (report it on the "
        "project's issue tracker with the traceback that `EE_DEBUG=1` prints); "
        f"{DISK_FULL_EXIT} a write found no space (full disk, quota or file-size limit: one line naming what, "
        "where and the space wanted; nothing half written, and the same command goes on once space is freed); "
        "130 interrupted, finished work kept.\n",
        "Shell completion: `ee --install-completion` adds tab completion of commands, flags and encoder names "
        "(`--a`, `--b`, `--encoder`) to the shell you run it from (bash, zsh, fish or PowerShell, found by "
        "shellingham); `ee --show-completion` prints the script instead, to put where you like. Open a new "
        "shell after installing.\n",
        "Tables (`ee encoders`, `ee store info`, `ee eval`): into a pipe or a file every row is one line, however "
        "long; on a terminal too narrow for a table its long text (weight sources, paths) follows the table, "
        "each path whole on a line of its own.\n",
        "## `ee`\n",
        "| parameter | meaning |\n|---|---|",
        *(_param_row(p) for p in root.params if p.name != "help"),
        "",
    ]
    _examples(root, out)
    for name in sorted(root.commands):
        _command(root.commands[name], f"ee {name}", out, 2)
    return "\n".join(out).rstrip() + "\n"


def main() -> None:
    text = render()
    if "--check" in sys.argv:
        if not OUT.exists() or OUT.read_text() != text:
            print("docs/cli.md is stale: run python scripts/gen_cli_docs.py", file=sys.stderr)
            sys.exit(1)
        return
    OUT.write_text(text)


if __name__ == "__main__":
    main()
