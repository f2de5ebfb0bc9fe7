"""`ee store info`, `ee store failures`, and removing arrays: `ee store rm`, `ee store prune`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from .app import examples, store_app
from .output import JsonFlag, JsonOut, Output, console, print_table


@store_app.command(
    "info", epilog=examples("ee store info videos/store.zarr", "ee store info s3://bucket/store.zarr --json")
)
def info_cmd(
    store: Annotated[str, typer.Argument(help="Store path or URL.")],
    as_json: JsonFlag = False,
    json_out: JsonOut = None,
) -> None:
    """Arrays, encoder identities and done / failed counts."""
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
    out = Output(as_json, json_out)
    out.json({"store": store, "rows": s.n_rows, "arrays": arrays})
    if not out.human:
        return
    con = console()
    con.print(f"store {store}: {s.n_rows} rows")
    columns = ("array", "side", "encoder", "dim", "done", "failed", "pending", "model", "weights")
    cells = []
    for a in arrays:
        ident = a["identity"] or {}
        seed = f" (seed {ident['seed']})" if ident.get("seed") is not None else ""
        counts = [str(a[k]) for k in ("dim", "done", "failed", "pending")]
        cells.append(
            [
                a["key"],
                a["side"],
                a["encoder"],
                *counts,
                ident.get("model_id", "-"),
                ident.get("weights", "-") + seed,
            ]
        )
    print_table(con, columns, cells, apart=("model", "weights"))


@store_app.command(
    "failures",
    epilog=examples(
        "ee store failures videos/store.zarr", "ee store failures videos/store.zarr --array a.clip-3f9c0d2e1a"
    ),
)
def failures_cmd(
    store: Annotated[str, typer.Argument(help="Store path or URL.")],
    array: Annotated[str | None, typer.Option(help="Only this array (see `ee store info`).")] = None,
) -> None:
    """Every row that failed at embedding, with its reason: array, id, reason (tab-separated).

    Inputs that failed at ingest never became rows: they are listed beside their manifest, in
    MANIFEST.failures.jsonl (`ee pair`: OUT/manifest.failures.jsonl); those found beside the store are named
    on stderr.
    """
    from ..store import Store, local_path

    s = Store.open(store, read_only=True)
    for key, row_id, reason in s.failures(array):
        print(f"{key}\t{row_id}\t{reason}")
    folder = local_path(store)
    lists = sorted(Path(folder).resolve().parent.glob("*.failures.jsonl")) if folder is not None else []
    for path in lists:
        n = sum(1 for line in path.read_bytes().splitlines() if line.strip())
        print(f"ingest failures (inputs that never became rows): {n} in {path}", file=sys.stderr)
    if not lists:
        print("ingest failures, if any, are in MANIFEST.failures.jsonl beside the manifest", file=sys.stderr)


def _remove(location: str, keys: list[str], only_empty: bool = False) -> None:
    """Remove arrays, each under its writer lock: one being written is refused, naming the writer;
    ``only_empty`` looks again under the lock, in case a writer finished rows since the listing."""
    from ..store import Store

    s = Store.open(location)
    for key in keys:
        s.embedding(key)  # every key known before anything is removed
    for key in keys:
        with s.writer_lock(key):
            if only_empty and s.embedding(key).counts()["done"]:
                print(f"kept {key}: rows were done meanwhile")
                continue
            s.remove_embedding(key)
        print(f"removed {key}")


@store_app.command("rm", epilog=examples("ee store rm videos/store.zarr a.clip-3f9c0d2e1a"))
def rm_cmd(
    store: Annotated[str, typer.Argument(help="Store path or URL.")],
    keys: Annotated[list[str], typer.Argument(help="Arrays to remove (see `ee store info`).")],
) -> None:
    """Remove arrays you no longer want, with their rows' embeddings and failures."""
    _remove(store, keys)


@store_app.command(
    "prune", epilog=examples("ee store prune videos/store.zarr --dry-run", "ee store prune videos/store.zarr")
)
def prune_cmd(
    store: Annotated[str, typer.Argument(help="Store path or URL.")],
    dry_run: Annotated[bool, typer.Option(help="Only list what would be removed.")] = False,
) -> None:
    """Remove the arrays with no row done (a run that stopped before its first chunk, or whose every
    row failed): what training could never use."""
    from ..store import Store

    s = Store.open(store, read_only=dry_run)
    empty = [a.key for a in s.arrays() if a.counts()["done"] == 0]
    if not empty:
        print("nothing to prune: every array has rows done")
    elif dry_run:
        for key in empty:
            print(f"would remove {key}")
    else:
        _remove(store, empty, only_empty=True)
