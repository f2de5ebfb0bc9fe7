"""`ee store info` and `ee store failures`."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from .app import store_app


@store_app.command("info")
def info_cmd(
    store: Annotated[str, typer.Argument(help="Store path or URL.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Arrays, encoder identities and done / failed counts."""
    from rich.console import Console
    from rich.table import Table

    from ..store import Store

    s = Store.open(store, read_only=True)
    arrays = []
    for arr in s.arrays():
        ident = arr.identity
        arrays.append(
            {
                "key": arr.key,
                "side": arr.side,
                "encoder": arr.encoder,
                "dim": arr.dim,
                "chunk_rows": arr.chunk_rows,
                **arr.counts(),
                "identity": None if ident is None else ident.model_dump(mode="json"),
            }
        )
    if as_json:
        print(json.dumps({"store": store, "rows": s.n_rows, "arrays": arrays}, indent=2))
        return
    console = Console()
    console.print(f"store {store}: {s.n_rows} rows")
    table = Table()
    for col in ("array", "side", "encoder", "dim", "done", "failed", "pending", "model", "weights"):
        table.add_column(col, overflow="fold")
    for a in arrays:
        ident = a["identity"] or {}
        table.add_row(
            a["key"],
            a["side"],
            a["encoder"],
            str(a["dim"]),
            str(a["done"]),
            str(a["failed"]),
            str(a["pending"]),
            ident.get("model_id", "-"),
            ident.get("weights", "-") + (f" (seed {ident['seed']})" if ident.get("seed") is not None else ""),
        )
    console.print(table)


@store_app.command("failures")
def failures_cmd(
    store: Annotated[str, typer.Argument(help="Store path or URL.")],
    array: Annotated[str | None, typer.Option(help="Only this array (see `ee store info`).")] = None,
) -> None:
    """Every failed row with its reason: array, id, reason (tab-separated)."""
    from ..store import Store

    s = Store.open(store, read_only=True)
    for key, row_id, reason in s.failures(array):
        print(f"{key}\t{row_id}\t{reason}")
