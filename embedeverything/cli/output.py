"""The one JSON convention of every command that has a result: ``--json`` prints it on stdout and nothing
else goes there; ``--json-out FILE`` writes it to a file (``-``: stdout) through ``files.write_output``,
which follows symlinks and writes devices and FIFOs in place."""

from __future__ import annotations

import json
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import typer

JsonFlag = Annotated[
    bool, typer.Option("--json", help="Print the result as JSON on stdout (nothing else goes there).")
]
JsonOut = Annotated[
    Path | None,
    typer.Option("--json-out", metavar="FILE", help="Write the result as JSON to FILE (- for stdout)."),
]


class Output:
    """Where a command's human lines and its JSON go, given ``--json`` and ``--json-out``."""

    def __init__(self, as_json: bool = False, json_out: Path | None = None):
        self.json_out = json_out
        self.json_to_stdout = as_json or (json_out is not None and str(json_out) == "-")
        #: tables and result lines go to stdout only when the JSON does not
        self.human = not self.json_to_stdout

    def print(self, *args: Any, **kwargs: Any) -> None:
        """A result line for people: on stdout, left out when stdout carries JSON."""
        if self.human:
            print(*args, **kwargs)

    def note(self, text: str) -> None:
        """A line worth seeing either way (a file written): stdout, or stderr when stdout carries JSON."""
        print(text, file=sys.stdout if self.human else sys.stderr)

    def json(self, obj: Any) -> None:
        from ..files import write_output

        text = json.dumps(obj, indent=2) + "\n"
        if self.json_to_stdout:
            write_output("-", text)
        if self.json_out is not None and str(self.json_out) != "-":
            write_output(self.json_out, text)

    @property
    def wanted(self) -> bool:
        return self.json_to_stdout or self.json_out is not None


#: the width of a console writing to a pipe or a file: no line there is ever wrapped or cut
UNBOUNDED = 100_000


def console(file: Any = None) -> Any:
    """A rich console for results: a terminal's own width; a pipe or a file takes lines of any length, so
    that a program reading them (grep, a log) gets each row whole on one line."""
    from rich.console import Console

    c = Console(file=file)
    if not c.is_terminal:
        c = Console(file=file, width=UNBOUNDED)
    return c


def print_table(
    con: Any,
    columns: Sequence[str],
    rows: Sequence[Sequence[str]],
    apart: Sequence[str] = (),
    title: str = "",
) -> None:
    """Rows as one table. On a terminal too narrow for it, the ``apart`` columns (free text, paths) leave
    the table and follow it as ``column: value`` lines under each row's first cell, wrapped at spaces with
    long words (paths) kept whole on lines of their own: a path cut into pieces cannot be copied."""
    from rich.measure import Measurement
    from rich.table import Table

    def table(cols: Sequence[str]) -> Table:
        t = Table(title=title or None)
        at = [columns.index(c) for c in cols]
        for c in cols:
            t.add_column(c, overflow="fold")
        for r in rows:
            t.add_row(*(r[i] for i in at))
        return t

    whole = table(columns)
    natural = Measurement.get(con, con.options.update_width(UNBOUNDED), whole).maximum
    if not apart or natural <= con.width:
        con.print(whole)
        return
    con.print(table([c for c in columns if c not in apart]))
    for r in rows:
        con.print(r[0], markup=False, highlight=False)
        for c in apart:
            text = textwrap.fill(
                r[columns.index(c)],
                width=con.width,
                initial_indent=f"  {c}: ",
                subsequent_indent="    ",
                break_long_words=False,
                break_on_hyphens=False,
            )
            con.print(text, soft_wrap=True, markup=False, highlight=False)


def old_json_usage(argv: list[str]) -> str | None:
    """The hint for ``--json PATH`` (before ``--json`` became a switch): PATH would be taken as an extra
    argument, or as a query."""
    for i, tok in enumerate(argv):
        if tok.startswith("--json="):
            return f"--json takes no value; did you mean --json-out {tok.split('=', 1)[1]}?"
        if tok != "--json" or i + 1 >= len(argv):
            continue
        nxt = argv[i + 1]
        if nxt == "-" or (
            not nxt.startswith("-") and (nxt.lower().endswith(".json") or nxt.startswith("/dev/"))
        ):
            return (
                f"--json prints JSON on stdout and takes no value, so {nxt!r} is not its file; "
                f"did you mean --json-out {nxt}?"
            )
    return None
