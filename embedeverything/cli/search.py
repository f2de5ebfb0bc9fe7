"""`ee index`: what a store holds, projected through an adapter into a local search index."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .app import app, examples
from .evaluate import require_adapter_file
from .output import JsonFlag, JsonOut, Output

#: where the index of ``ee index`` lives, for the commands that build or serve it
IndexDir = Annotated[
    Path | None, typer.Option("--index", help="Index folder (default: index/ beside the adapter).")
]


@app.command(
    "index",
    epilog=examples(
        "ee index run/adapter.safetensors",
        "ee index run/adapter.safetensors --store videos/store.zarr --side b",
        "ee index run/adapter.safetensors --manifest videos/manifest.jsonl",
    ),
)
def index_cmd(
    adapter: Annotated[Path, typer.Argument(help="The adapter (.safetensors) to project with.")],
    store: Annotated[
        str | None, typer.Option(help="Store to index (default: the one the adapter was trained on).")
    ] = None,
    side: Annotated[str, typer.Option(help="Which side to index: a, b or both.")] = "both",
    index: IndexDir = None,
    manifest: Annotated[
        Path | None,
        typer.Option(
            help="The manifest the rows' media come from (default: manifest.jsonl beside the store)."
        ),
    ] = None,
    ann_min_rows: Annotated[
        int | None,
        typer.Option(help="Rows from which a side gets an ANN index; below, exact search (docs/search.md)."),
    ] = None,
    as_json: JsonFlag = False,
    json_out: JsonOut = None,
) -> int:
    """Project the store's embedded rows into a LanceDB index that `ee query` searches; reruns add new rows.

    Needs the search extra: pip install 'embedeverything[search]'."""
    from dataclasses import asdict

    from ..errors import UserError

    sides = {"a": ("a",), "b": ("b",), "both": ("a", "b")}.get(side)
    if sides is None:
        raise UserError(f"--side must be a, b or both, not {side!r}")
    if ann_min_rows is not None and ann_min_rows < 1:
        raise UserError(f"--ann-min-rows must be >= 1, not {ann_min_rows}")
    from ..search.state import ANN_MIN_ROWS, INDEX_TYPE, lancedb

    lancedb()  # the missing extra is said before the adapter is read
    require_adapter_file(adapter)
    from ..search import build_index

    report = build_index(
        adapter, store, sides, index, manifest, ANN_MIN_ROWS if ann_min_rows is None else ann_min_rows
    )
    out = Output(as_json, json_out)
    out.print(f"index {report.index} of store {report.store}")
    for why in report.rebuilt:
        out.print(f"rebuilt: {why}")
    for s in report.sides:
        how = "exact search"
        if s.ann:
            how = f"ANN ({INDEX_TYPE}, nprobes {s.search.get('nprobes', '?')}"
            if "recall_at_10" in s.search:
                how += f", recall@10 {s.search['recall_at_10']:.3f} on {s.search['queries']} of its rows"
            how += ")"
        rebuilt = f"; rebuilt: {s.rebuilt}" if s.rebuilt else ""
        out.print(
            f"side {s.side} ({s.array}): {s.rows} rows, {s.added} added, {s.relabelled} relabelled; "
            f"{how}{rebuilt}"
        )
    out.json({**asdict(report), "index": str(report.index)})
    return 0
