"""`ee ingest`: videos, VGG-Sound, paired files or a table -> a pairs manifest for `ee embed`."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from .app import app, examples

if TYPE_CHECKING:
    from ..ingest import IngestOptions, IngestResult

ingest_app = typer.Typer(
    help="Make a pairs manifest from videos, VGG-Sound clips, paired files or a table.", no_args_is_help=True
)
app.add_typer(ingest_app, name="ingest")

Out = Annotated[
    Path | None, typer.Option("--out", "-o", help="Manifest to write (default: see each command).")
]
Workers = Annotated[int | None, typer.Option(help="Decoder processes that probe the files.")]
Timeout = Annotated[float, typer.Option(help="Seconds before a file's decoder is killed ('timed out').")]
Strict = Annotated[bool, typer.Option(help="Stop at the first bad input (exit 1); no manifest is written.")]
Frames = Annotated[
    int | None, typer.Option(help="K frames per video, evenly spaced (default 1: the middle).")
]
Every = Annotated[float | None, typer.Option(help="Or one frame every S seconds.")]
Window = Annotated[float, typer.Option(help="Seconds of audio around each frame (shifted inside the clip).")]


def _options(workers: int | None, timeout: float, strict: bool) -> tuple[IngestOptions, Any]:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from ..ingest import IngestOptions

    progress = Progress(
        TextColumn("probe"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), transient=True
    )
    state: dict[str, int] = {}

    def on_start(n: int) -> None:
        if n and sys.stderr.isatty():
            progress.start()
            state["task"] = progress.add_task("probe", total=n)

    def on_progress(n: int) -> None:
        if "task" in state:
            progress.advance(state["task"], n)

    return IngestOptions(workers, timeout, strict, on_start, on_progress), progress


def _report(result: IngestResult) -> int:
    """Summary counts on stdout, failures on stderr; exit 1 when anything failed."""
    from ..errors import shown

    groups = len({p.group_key for p in result.pairs})
    if result.written:
        where = shown(str(result.manifest))
        print(f"{len(result.pairs)} pairs from {groups} sources -> {where} ({result.a} | {result.b})")
    for line in result.failure_lines():
        print(line, file=sys.stderr)
    if result.stopped_early:
        print("stopped at the first failure (--strict); no manifest written", file=sys.stderr)
    return result.exit_code


def _run(
    fn: Callable[..., IngestResult], workers: int | None, timeout: float, strict: bool, **kwargs: Any
) -> int:
    opts, progress = _options(workers, timeout, strict)
    try:
        result = fn(opts=opts, **kwargs)
    finally:
        progress.stop()
    return _report(result)


@ingest_app.command(
    "videos",
    epilog=examples(
        "ee ingest videos videos/", "ee ingest videos videos/ --every 2 --window 3 -o videos.jsonl"
    ),
)
def videos_cmd(
    folder: Annotated[Path, typer.Argument(help="Folder of videos (searched recursively).")],
    out: Out = None,
    frames: Frames = None,
    every: Every = None,
    window: Window = 5.0,
    workers: Workers = None,
    timeout: Timeout = 60.0,
    strict: Strict = False,
) -> int:
    """Frames and the audio around them, from every video in a folder (default manifest: FOLDER/manifest.jsonl)."""
    from ..ingest import FramePlan, ingest_videos

    plan = FramePlan(frames=frames, every=every, window=window)
    return _run(ingest_videos, workers, timeout, strict, folder=folder, out=out, plan=plan)


@ingest_app.command(
    "vggsound",
    epilog=examples(
        "ee ingest vggsound vggsound.csv clips/",
        'ee ingest vggsound vggsound.csv clips/ --pattern "{id}.mp4" --frames 3',
    ),
)
def vggsound_cmd(
    csv: Annotated[Path, typer.Argument(help="VGG-Sound CSV: youtube_id,start_seconds,label,split.")],
    folder: Annotated[Path, typer.Argument(help="Folder of the downloaded clips.")],
    pattern: Annotated[
        str, typer.Option(help="Clip file name; fields id, start, end, label, split.")
    ] = "{id}_{start:06d}.mp4",
    out: Out = None,
    frames: Frames = None,
    every: Every = None,
    window: Window = 5.0,
    workers: Workers = None,
    timeout: Timeout = 60.0,
    strict: Strict = False,
) -> int:
    """VGG-Sound clips with their labels and splits (default manifest: FOLDER/manifest.jsonl)."""
    from ..ingest import FramePlan, ingest_vggsound

    plan = FramePlan(frames=frames, every=every, window=window)
    return _run(
        ingest_vggsound,
        workers,
        timeout,
        strict,
        csv_path=csv,
        folder=folder,
        out=out,
        pattern=pattern,
        plan=plan,
    )


@ingest_app.command(
    "pairs", epilog=examples("ee ingest pairs photos/", "ee ingest pairs photos/ -o photos.jsonl --strict")
)
def pairs_cmd(
    folder: Annotated[Path, typer.Argument(help="Folder of files paired by stem (dog.jpg + dog.wav).")],
    out: Out = None,
    workers: Workers = None,
    timeout: Timeout = 60.0,
    strict: Strict = False,
) -> int:
    """Image+audio, image+text or audio+text files sharing a stem (default manifest: FOLDER/manifest.jsonl)."""
    from ..ingest import ingest_pairs

    return _run(ingest_pairs, workers, timeout, strict, folder=folder, out=out)


@ingest_app.command(
    "table",
    epilog=examples(
        "ee ingest table pairs.csv --a image --b caption",
        "ee ingest table pairs.jsonl --a audio --b text --label class",
    ),
)
def table_cmd(
    table: Annotated[Path, typer.Argument(help="A .csv or .jsonl file, one row per pair.")],
    a: Annotated[str | None, typer.Option("--a", help="Column of side a (paths or text).")] = None,
    b: Annotated[str | None, typer.Option("--b", help="Column of side b (paths or text).")] = None,
    label: Annotated[str | None, typer.Option(help="Label column (default: 'label' if present).")] = None,
    split: Annotated[
        str | None, typer.Option(help="Split column: train/val/test (default: 'split').")
    ] = None,
    id: Annotated[str | None, typer.Option("--id", help="Id column (default: 'id' if present).")] = None,
    out: Out = None,
    workers: Workers = None,
    timeout: Timeout = 60.0,
    strict: Strict = False,
) -> int:
    """Rows of a table; paths relative to the table (default manifest: TABLE.manifest.jsonl beside it)."""
    from ..ingest import ingest_table

    return _run(
        ingest_table,
        workers,
        timeout,
        strict,
        table=table,
        out=out,
        a=a,
        b=b,
        label=label,
        split=split,
        id=id,
    )
