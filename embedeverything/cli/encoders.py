"""`ee encoders`: what is installed, described without loading any weights."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from .app import app


@app.command("encoders")
def encoders_cmd(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """List installed encoders (modality, dim, weight source) and any broken plugins."""
    from rich.console import Console
    from rich.table import Table

    from ..plugins import Broken, registry

    reg = registry()
    rows = []
    for name in sorted(reg.encoders):
        entry = reg.encoders[name]
        try:
            enc = entry.cls()
            rows.append(
                {
                    "name": name,
                    "modality": enc.modality,
                    "dim": int(enc.dim),
                    "weights": enc.weights_source(),
                    "plugin": f"{entry.plugin} {entry.version}",
                    "shared_space": enc.shared_space,
                }
            )
        except Exception as e:  # describing must not take the listing down either
            reg.broken.append(
                Broken(entry.plugin, f"encoder {name!r} cannot be described: {type(e).__name__}: {e}")
            )
    broken = [{"plugin": b.plugin, "reason": b.reason} for b in reg.broken]
    if as_json:
        print(json.dumps({"encoders": rows, "broken": broken}, indent=2))
        return
    console = Console()
    table = Table(title="Installed encoders")
    for col in ("name", "modality", "dim", "weights", "plugin"):
        table.add_column(col, overflow="fold")
    for r in rows:
        table.add_row(r["name"], r["modality"], str(r["dim"]), r["weights"], r["plugin"])
    console.print(table)
    if not rows:
        console.print("No encoders installed. Install a plugin (see docs/plugins.md).")
    for b in broken:
        console.print(f"[red]broken plugin[/red] {b['plugin']}: {b['reason']}", markup=True, highlight=False)
