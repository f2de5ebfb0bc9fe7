"""`ee embed`: one encoder over one side of a manifest, into the store."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ..errors import UserError
from .app import app, encoder_names, examples

if TYPE_CHECKING:
    from ..chunks import EmbedReport


def parse_options(pairs: list[str] | None) -> dict[str, Any]:
    """``["k=v", ...]`` -> dict; values stay strings and the encoder's pydantic options coerce them."""
    out: dict[str, Any] = {}
    for p in pairs or []:
        key, sep, value = p.partition("=")
        if not sep or not key.strip():
            raise UserError(f"bad option {p!r}: expected key=value")
        out[key.strip().replace("-", "_")] = value
    return out


def stage_display() -> Any:
    """The rich progress display of long stages, on stderr (stdout carries only the result):
    description, bar, n/total, a free info field, time so far and time left."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=False,
    )


def embed_callbacks(display: Any, label: str) -> dict[str, Any]:
    """``on_start`` / ``on_progress`` for :func:`embed_side` that drive one bar with rows/s."""
    task: dict[str, Any] = {}

    def on_start(todo: int, total: int) -> None:
        if todo:
            display.start()
            task["id"] = display.add_task(label, total=todo, info="")

    def on_progress(n: int) -> None:
        display.advance(task["id"], n)
        t = next(t for t in display.tasks if t.id == task["id"])
        if t.elapsed:
            display.update(task["id"], info=f"{t.completed / t.elapsed:.1f} rows/s")

    return {"on_start": on_start, "on_progress": on_progress}


def default_store(manifest: Path) -> str:
    return str(manifest.parent / "store.zarr")


@app.command(
    "embed",
    epilog=examples(
        "ee embed videos/manifest.jsonl --encoder clip --side a",
        "ee embed videos/manifest.jsonl -e vggish --side b --workers 4",
    ),
)
def embed_cmd(
    manifest: Annotated[Path, typer.Argument(help="The manifest (from `ee ingest`).")],
    encoder: Annotated[
        str,
        typer.Option(
            "--encoder", "-e", help="Encoder name (see `ee encoders`).", autocompletion=encoder_names
        ),
    ],
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
        int | None,
        typer.Option(
            help="Rows per store chunk, for a new array (default: a few seconds of the encoder's work, "
            "timed on a first batch). The unit a Ctrl-C keeps; an array keeps its chunks for good."
        ),
    ] = None,
    threads: Annotated[int | None, typer.Option(help="Torch threads (default: all CPUs available).")] = None,
    decode_workers: Annotated[int | None, typer.Option(help="Decoder processes.")] = None,
    decode_timeout: Annotated[float, typer.Option(help="Seconds before a file's decoder is killed.")] = 60.0,
    strict: Annotated[bool, typer.Option(help="Stop at the first failed row (exit 1).")] = False,
    retry_failed: Annotated[
        bool, typer.Option(help="Try the rows that failed before again (failures are kept otherwise).")
    ] = False,
    workers: Annotated[
        int | None, typer.Option(help="Run on a local Dask cluster of N worker processes (needs [dask]).")
    ] = None,
    scheduler: Annotated[
        str | None, typer.Option(help="Run on an existing Dask cluster, e.g. tcp://host:8786 (needs [dask]).")
    ] = None,
) -> int:
    """Embed one side of a manifest into the store; resumable, and a no-op when already done."""
    from ..embed import EmbedInterrupted, embed_side

    if side not in ("a", "b"):
        raise UserError(f"--side must be a or b, not {side!r}")
    options = parse_options(opt)
    location = store or default_store(manifest)
    progress = stage_display()
    callbacks = embed_callbacks(progress, f"embed {side} with {encoder}")

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
            retry_failed=retry_failed,
            threads=threads,
            decode_workers=decode_workers,
            decode_timeout=decode_timeout,
            workers=workers,
            scheduler=scheduler,
            **callbacks,
        )
    except EmbedInterrupted as e:
        if progress.live.is_started:
            progress.stop()
        print_interrupted(e.report, location)
        raise typer.Exit(130) from None
    finally:
        if progress.live.is_started:  # stopping a display never started prints a blank line
            progress.stop()
    print_report(report, location)
    return report.exit_code


def print_report(report: EmbedReport, location: str) -> None:
    """What one ``ee embed`` did: warnings and the way to the failures on stderr, counts on stdout."""
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
        print(
            f"{report.failed} rows failed: `ee store failures {location}` lists them; "
            "--retry-failed tries them again",
            file=sys.stderr,
        )


def print_interrupted(report: EmbedReport, location: str) -> None:
    """After Ctrl-C: what the store keeps and how to go on, on stderr."""
    left = report.rows - report.done - report.failed
    print(
        f"interrupted: {report.done} of {report.rows} rows of {report.key} are done and kept in {location} "
        f"({report.new_done} embedded this run); run the same command again to embed the {left} left",
        file=sys.stderr,
    )
