"""`ee encoders`: what is installed, described without loading any weights."""

from __future__ import annotations

from .app import app, examples
from .output import JsonFlag, JsonOut, Output, console, print_table


@app.command("encoders", epilog=examples("ee encoders", "ee encoders --json"))
def encoders_cmd(
    as_json: JsonFlag = False,
    json_out: JsonOut = None,
) -> None:
    """List installed encoders (modality, dim, weight source) and any broken plugins."""
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
    out = Output(as_json, json_out)
    out.json({"encoders": rows, "broken": broken})
    if not out.human:
        return
    con = console()
    columns = ("name", "modality", "dim", "weights", "plugin")
    cells = [[r["name"], r["modality"], str(r["dim"]), r["weights"], r["plugin"]] for r in rows]
    print_table(con, columns, cells, apart=("weights",), title="Installed encoders")
    if not rows:
        con.print("No encoders installed. Install a plugin (see docs/plugins.md).")
    for b in broken:
        con.print(f"[red]broken plugin[/red] {b['plugin']}: {b['reason']}", markup=True, highlight=False)
