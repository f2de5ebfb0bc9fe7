"""`ee eval`, `ee zeroshot`, `ee query`, `ee export`, `ee figures`: judging and using a trained adapter."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated

import typer

from .app import app, examples
from .output import JsonFlag, JsonOut, Output, console

#: the model card's Hugging Face metadata that no run can know (ee eval, ee pair)
LicenseOption = Annotated[
    str | None,
    typer.Option(help="License id for the model card's Hugging Face metadata (apache-2.0, mit, other...)."),
]
DatasetOption = Annotated[
    list[str] | None,
    typer.Option(help="Hugging Face dataset id of the data, for the model card's metadata (repeat)."),
]


def require_adapter_file(path: Path) -> None:
    """A missing adapter is said at once, before torch is imported (seconds) to read it."""
    from ..errors import UserError

    if not path.is_file():
        raise UserError(f"no adapter file at {path} (train one with `ee train`)")


@contextlib.contextmanager
def _steps_display() -> Iterator[Callable[[int, int, str], None]]:
    """A bar on stderr for a few long steps (the figures): which one runs, how many are done, the time."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("figures"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.description}"),
        console=Console(stderr=True),
    ) as bar:
        task = bar.add_task("loading", total=None)

        def on_step(done: int, total: int, what: str) -> None:
            bar.update(task, completed=done, total=total, description=what)

        yield on_step


def _read_queries(source: Path | None) -> list[str]:
    """``--queries FILE``: one query per line (``-``: stdin), blank lines skipped, a BOM ignored."""
    from ..errors import UserError

    if source is None:
        return []
    if str(source) == "-":
        text = sys.stdin.buffer.read().decode("utf-8-sig")
    elif not source.is_file():
        raise UserError(f"--queries: no such file: {source}")
    else:
        text = source.read_text(encoding="utf-8-sig")
    return [line.strip() for line in text.splitlines() if line.strip()]


@app.command(
    "eval",
    epilog=examples(
        "ee eval run/adapter.safetensors",
        "ee eval run/adapter.safetensors --no-baselines --json-out report.json",
    ),
)
def eval_cmd(
    adapter: Annotated[Path, typer.Argument(help="The adapter (.safetensors) to evaluate.")],
    store: Annotated[
        str | None, typer.Option(help="Store (default: the one the adapter was trained on).")
    ] = None,
    split: Annotated[
        Path | None, typer.Option(help="split.json (default: the one next to the adapter).")
    ] = None,
    as_json: JsonFlag = False,
    json_out: JsonOut = None,
    baselines: Annotated[
        bool, typer.Option("--baselines/--no-baselines", help="Fit and score the baselines.")
    ] = True,
    card: Annotated[
        bool, typer.Option("--card/--no-card", help="Write README.md (model card) next to the adapter.")
    ] = True,
    max_test_rows: Annotated[int, typer.Option(help="Subsample the test part to this many rows.")] = 5000,
    zeroshot: Annotated[
        bool,
        typer.Option(
            "--zeroshot/--no-zeroshot",
            help="Also label the test rows with their class names through the text encoder (loads it).",
        ),
    ] = False,
    license: LicenseOption = None,
    dataset: DatasetOption = None,
) -> int:
    """Retrieval on the test rows (R@1/5/10, median rank, mAP), baselines and diagnostics in one table."""
    from ..errors import UserError

    if max_test_rows < 2:
        raise UserError(f"--max-test-rows must be >= 2, not {max_test_rows}")
    require_adapter_file(adapter)
    from ..evaluate.card_meta import metadata_ids

    meta = {"license": (metadata_ids("license", license, most=1) or (None,))[0]}
    meta["datasets"] = metadata_ids("dataset", dataset)
    from ..evaluate import evaluate, open_eval_data, write_model_card

    data = open_eval_data(adapter, store)
    report = evaluate(data, None, split, baselines=baselines, max_test_rows=max_test_rows)
    out = Output(as_json, json_out)
    if zeroshot:
        from ..evaluate import zeroshot_store

        zs = zeroshot_store(data, part="test")
        report.zeroshot = {k: v for k, v in zs.summary().items() if k != "labels"} | {
            "n_labels": len(zs.labels)
        }
    # with JSON on stdout, the tables are left out and the notes and files go to stderr
    con = console(sys.stdout if out.human else sys.stderr)
    if out.human:
        con.print(report.table())
        con.print(report.diagnostics_table())
    if report.zeroshot and "top1" in report.zeroshot:
        z = report.zeroshot
        con.print(
            f"zero-shot ({z['text_tower']}): top-1 {z['top1']:.3f}, top-5 {z['top5']:.3f} on {z['scored']} "
            f"test items of side {z['side']}, {z['n_labels']} labels (chance {z['chance_top1']:.3f})"
        )
    for note in report.notes:
        con.print(f"note: {note}")
    out.json(report.to_dict())
    if out.json_out is not None and str(out.json_out) != "-":
        con.print(f"report: {out.json_out}")
    if card:
        from ..pair_data import run_folder

        figures = sorted((run_folder(adapter) / "figures").glob("*.png"))
        con.print(f"model card: {write_model_card(data, report, figures, report.zeroshot, **meta)}")
    return 0


@app.command(
    "zeroshot",
    epilog=examples(
        'ee zeroshot bark.wav --adapter run/adapter.safetensors --labels "dog,bell"',
        "ee zeroshot --adapter run/adapter.safetensors --store videos/store.zarr",
    ),
)
def zeroshot_cmd(
    files: Annotated[list[Path] | None, typer.Argument(help="Audio, image or video files to label.")] = None,
    adapter: Annotated[Path, typer.Option("--adapter", help="The adapter (.safetensors).")] = Path(
        "adapter.safetensors"
    ),
    labels: Annotated[str | None, typer.Option(help='Comma-separated labels, e.g. "dog,bell,car".')] = None,
    manifest: Annotated[
        Path | None, typer.Option(help="Label a manifest's side; top-1/top-5 against its labels.")
    ] = None,
    store: Annotated[
        str | None, typer.Option(help="Label stored embeddings (the split's test rows) instead.")
    ] = None,
    side: Annotated[str | None, typer.Option(help="Which adapter side to label (a or b).")] = None,
    part: Annotated[
        str | None, typer.Option(help="With --manifest/--store: train, val, test or all.")
    ] = None,
    template: Annotated[
        list[str] | None,
        typer.Option("--template", help='Prompt template with {} (repeat); default: "a photo of a {}." ...'),
    ] = None,
    top: Annotated[int, typer.Option("--top", help="Labels shown per file.")] = 3,
    as_json: JsonFlag = False,
    json_out: JsonOut = None,
) -> int:
    """Label audio or images with words through a text encoder that shares the adapter's space."""
    from ..errors import UserError

    require_adapter_file(adapter)
    from ..evaluate import zeroshot as zs

    templates = tuple(template) if template else zs.TEMPLATES
    for t in templates:
        if "{}" not in t:
            raise UserError(f"template {t!r} has no {{}} for the label")
    if part not in (None, "train", "val", "test", "all"):
        raise UserError(f"--part must be train, val, test or all, not {part!r}")
    chosen = part if part != "all" else None
    if manifest is not None:
        result = zs.zeroshot_manifest(adapter, manifest, labels, templates, side, chosen)
    elif store is not None and not files:
        result = zs.zeroshot_store(
            adapter, store, labels, templates, side, chosen if part is not None else "test"
        )
    else:
        if not files:
            raise UserError("give FILEs to label, or --manifest / --store")
        if labels is None:
            raise UserError('give the labels to choose from: --labels "dog,bell,car"')
        result = zs.zeroshot_files(adapter, [str(f) for f in files], labels, templates, side)
    out = Output(as_json, json_out)
    out.print(f"text tower: {result.tower}; labelling side {result.side}")
    summary = result.summary()
    if result.scored:
        out.print(
            f"top-1 {summary['top1']:.3f}  top-5 {summary['top5']:.3f}  on {summary['scored']} items "
            f"(chance {summary['chance_top1']:.3f} / {summary['chance_top5']:.3f}, {len(result.labels)} labels)"
        )
    else:
        for name, preds in zip(result.names, result.top, strict=True):
            rest = "  ".join(f"{lab} {s:.3f}" for lab, s in preds[1:top])
            out.print(f"{name}  {preds[0][0]}  {preds[0][1]:.3f}  {rest}".rstrip())
    if out.wanted:
        summary["predictions"] = [
            {"item": n, "truth": t, "top": [[lab, s] for lab, s in p]}
            for n, t, p in zip(
                result.names, result.truth or [None] * len(result.names), result.top, strict=True
            )
        ]
        out.json(summary)
    return 0


@app.command(
    "query",
    epilog=examples(
        "ee query run/adapter.safetensors dog.jpg --k 10",
        'ee query run/adapter.safetensors "a dog barking"',
        "ee query run/adapter.safetensors --queries queries.txt --json",
        'ee query run/adapter.safetensors "a bell" --index run/index',
    ),
)
def query_cmd(
    adapter: Annotated[Path, typer.Argument(help="The adapter (.safetensors).")],
    items: Annotated[
        list[str] | None,
        typer.Argument(
            help="Files (image, audio, video, .txt), or words when a text encoder shares the space; "
            "several at once."
        ),
    ] = None,
    queries: Annotated[
        Path | None,
        typer.Option("--queries", metavar="FILE", help="More queries, one per line (- for stdin)."),
    ] = None,
    against: Annotated[
        str | None, typer.Option("--against", help="Store to search (default: the adapter's).")
    ] = None,
    k: Annotated[int, typer.Option("--k", help="How many neighbours.")] = 5,
    side: Annotated[
        str | None, typer.Option(help="The adapter side the input goes through (a or b).")
    ] = None,
    index: Annotated[
        Path | None,
        typer.Option("--index", help="Search index of `ee index` (default: index/ beside the adapter)."),
    ] = None,
    as_json: JsonFlag = False,
    json_out: JsonOut = None,
) -> int:
    """The nearest stored items of the other modality for each input (the encoders load once).

    An index of `ee index` answers when it is current; a stale one is named and the store scanned.
    JSON is a list with one result per query."""
    from dataclasses import asdict

    from ..errors import UserError

    require_adapter_file(adapter)
    wanted = [*(items or []), *_read_queries(queries)]
    if not wanted:
        raise UserError("give a query (a file or words), or --queries FILE")
    if k < 1:
        raise UserError(f"--k must be >= 1, not {k}")
    from ..evaluate import query_many

    results = query_many(adapter, wanted, against, k=k, side=side, index=index)
    out = Output(as_json, json_out)
    for searched in dict.fromkeys(r.searched for r in results):
        print(f"searched: {searched}", file=sys.stderr)
    for n, res in enumerate(results):
        out.print(
            ("\n" if n else "") + f"query {res.query!r} through {res.how}; nearest of side {res.gallery}:"
        )
        for h in res.hits:
            extra = "  ".join(
                x for x in (h.label and f"label={h.label}", h.split and f"split={h.split}") if x
            )
            out.print(f"{h.rank:3d}  {h.score:.4f}  {h.id}  {extra}".rstrip())
    out.json([asdict(r) for r in results])
    return 0


@app.command(
    "export",
    epilog=examples(
        "ee export videos/store.zarr --adapter run/adapter.safetensors",
        "ee export videos/store.zarr --adapter run/adapter.safetensors --format npy",
    ),
)
def export_cmd(
    store: Annotated[str, typer.Argument(help="The embedding store.")],
    adapter: Annotated[Path, typer.Option("--adapter", help="The adapter (.safetensors) to project with.")],
    format: Annotated[str, typer.Option("--format", help="parquet or npy.")] = "parquet",
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="File (.parquet) or folder (default: OUT/export for an adapter of `ee pair --out OUT`, "
            "else export/ beside the adapter).",
        ),
    ] = None,
    normalize: Annotated[
        bool, typer.Option("--normalize/--no-normalize", help="L2-normalise (dot = cosine).")
    ] = True,
) -> int:
    """The store's embeddings projected into the shared space, with their ids (Parquet or .npy)."""
    require_adapter_file(adapter)
    from ..evaluate import export_embeddings
    from ..pair_data import run_folder

    path = export_embeddings(
        store, adapter, out or run_folder(adapter) / "export", format=format, normalize=normalize
    )
    print(f"exported: {path}")
    return 0


@app.command(
    "figures",
    epilog=examples(
        "ee figures run/adapter.safetensors",
        "ee figures run/adapter.safetensors --out figs/ --max-points 500",
    ),
)
def figures_cmd(
    adapter: Annotated[Path, typer.Argument(help="The adapter (.safetensors).")],
    store: Annotated[
        str | None, typer.Option(help="Store (default: the one the adapter was trained on).")
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="Folder for the PNGs (default: OUT/figures for an adapter of `ee pair --out OUT`, "
            "else figures/ beside the adapter).",
        ),
    ] = None,
    split: Annotated[
        Path | None, typer.Option(help="split.json (default: the one next to the adapter).")
    ] = None,
    seed: Annotated[int, typer.Option(help="UMAP and subsampling seed.")] = 0,
    max_points: Annotated[int, typer.Option(help="Most points per modality.")] = 2000,
    side: Annotated[str | None, typer.Option(help="Modality of figure (a): side a or b.")] = None,
) -> int:
    """UMAP figures like the paper's: by class before/after the head, both modalities, linked pairs."""
    from ..errors import UserError
    from ..evaluate import make_figures
    from ..pair_data import run_folder

    if max_points < 8:
        raise UserError(f"--max-points must be >= 8, not {max_points}")
    require_adapter_file(adapter)
    with _steps_display() as on_step:
        paths = make_figures(
            adapter,
            out or run_folder(adapter) / "figures",
            store,
            split,
            seed=seed,
            max_points=max_points,
            side=side,
            on_step=on_step,
        )
    for p in paths:
        print(p)
    return 0
