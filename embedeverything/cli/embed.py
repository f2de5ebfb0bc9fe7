"""`ee embed`: one encoder over one side of a manifest, into the store."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from ..errors import UserError
from . import app


def parse_options(pairs: list[str] | None) -> dict[str, Any]:
    """``["k=v", ...]`` -> dict; values stay strings and the encoder's pydantic options coerce them."""
    out: dict[str, Any] = {}
    for p in pairs or []:
        key, sep, value = p.partition("=")
        if not sep or not key.strip():
            raise UserError(f"bad option {p!r}: expected key=value")
        out[key.strip().replace("-", "_")] = value
    return out


def default_store(manifest: Path) -> str:
    return str(manifest.parent / "store.zarr")


@app.command("embed")
def embed_cmd(
    manifest: Annotated[Path, typer.Argument(help="The manifest (from `ee ingest`).")],
    encoder: Annotated[str, typer.Option("--encoder", "-e", help="Encoder name (see `ee encoders`).")],
    side: Annotated[str, typer.Option("--side", help="Which side of the pairs: a or b.")] = "a",
    opt: Annotated[
        list[str] | None, typer.Option("--opt", "-o", help="Encoder option key=value (repeat).")
    ] = None,
    store: Annotated[
        str | None, typer.Option(help="Store path or URL (default: store.zarr beside the manifest).")
    ] = None,
    batch_size: Annotated[
        int | None, typer.Option(help="Items per model call (divides --chunk-rows).")
    ] = None,
    chunk_rows: Annotated[
        int | None, typer.Option(help="Rows per store chunk, for a new array (default 256).")
    ] = None,
    threads: Annotated[int | None, typer.Option(help="Torch threads (default: all CPUs available).")] = None,
    decode_workers: Annotated[int | None, typer.Option(help="Decoder processes.")] = None,
    decode_timeout: Annotated[float, typer.Option(help="Seconds before a file's decoder is killed.")] = 60.0,
    strict: Annotated[bool, typer.Option(help="Stop at the first failed row (exit 1).")] = False,
    workers: Annotated[
        int | None, typer.Option(help="Run on a local Dask cluster of N worker processes (needs [dask]).")
    ] = None,
    scheduler: Annotated[
        str | None, typer.Option(help="Run on an existing Dask cluster, e.g. tcp://host:8786 (needs [dask]).")
    ] = None,
) -> int:
    """Embed one side of a manifest into the store; resumable, and a no-op when already done."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from ..embed import embed_side

    if side not in ("a", "b"):
        raise UserError(f"--side must be a or b, not {side!r}")
    options = parse_options(opt)
    location = store or default_store(manifest)
    progress = Progress(
        TextColumn(f"embed {side} with {encoder}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]} rows/s"),
        TimeElapsedColumn(),
        transient=False,
    )
    task = None

    def on_start(todo: int, total: int) -> None:
        nonlocal task
        if todo:
            progress.start()
            task = progress.add_task("embed", total=todo, rate="-")

    def on_progress(n: int) -> None:
        assert task is not None
        progress.advance(task, n)
        t = progress.tasks[0]
        if t.elapsed:
            progress.update(task, rate=f"{t.completed / t.elapsed:.1f}")

    try:
        report = embed_side(
            location,
            str(manifest),
            side,
            encoder,
            options,
            batch_size=batch_size,
            chunk_rows=chunk_rows,
            strict=strict,
            threads=threads,
            decode_workers=decode_workers,
            decode_timeout=decode_timeout,
            workers=workers,
            scheduler=scheduler,
            on_start=on_start,
            on_progress=on_progress,
        )
    finally:
        if task is not None:
            progress.stop()
    for w in report.warnings:
        print(f"warning: {w}", file=sys.stderr)
    if report.chunks_run == 0:
        print(f"{report.key}: up to date ({report.done} done, {report.failed} failed) in {location}")
    else:
        print(
            f"{report.key}: {report.new_done} embedded, {report.new_failed} failed this run; "
            f"{report.done} done, {report.failed} failed of {report.rows} rows in {location}"
        )
    if report.stopped_early:
        print("stopped at the first failure (--strict); `ee store failures` lists it", file=sys.stderr)
    elif report.failed:
        print(f"{report.failed} rows failed: `ee store failures {location}` lists them", file=sys.stderr)
    return report.exit_code
