"""`ee pair` (the whole method in one command) and `ee demo`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from .app import app, encoder_names, examples
from .embed import embed_callbacks, parse_options, stage_display
from .evaluate import DatasetOption, LicenseOption
from .train import AnchorsOption, RefitOption, exit_interrupted, resume_note

Opt = Annotated[list[str] | None, typer.Option(help="Option key=value (repeat).")]


def _progress() -> tuple[Any, Any]:
    """One rich progress display for every stage; returns (display, factory of stage callbacks)."""
    display = stage_display()

    def factory(stage: str, name: str | None) -> Any:
        if stage in ("a", "b"):
            return embed_callbacks(display, f"embed {stage} ({name})")
        state: dict[str, Any] = {}

        def on_epoch(rep: Any) -> None:
            note = resume_note(rep)
            if note is not None:
                print(note, file=sys.stderr)
            if "id" not in state:
                display.start()
                state["id"] = display.add_task("train", total=rep.epochs, info="")
            phase = getattr(rep, "phase", "select")
            if state.get("phase", phase) != phase:  # the refit: a bar of its own
                state["id"] = display.add_task("refit", total=rep.epochs, info="")
            state["phase"] = phase
            info = "" if rep.loss is None else f"loss {rep.loss:.3f}"
            if getattr(rep, "val_r1", None) is not None:
                info += f"  val R@1 {rep.val_r1:.3f}"
            if rep.stopped_early:
                display.update(state["id"], total=rep.epoch)
            display.update(state["id"], completed=rep.epoch, info=info)

        return on_epoch

    return display, factory


#: Below this many validation or test rows, one row moves R@1 by more than 0.03: the figures carry little.
SMALL_PART = 30


def small_data_warnings(metrics: dict[str, Any]) -> list[str]:
    """What a small validation or test part means for the figures drawn from it."""
    counts = metrics.get("counts") or {}
    out = []
    for part, name, use in (
        ("val", "validation", "the best epoch"),
        ("test", "test", "every reported figure"),
    ):
        n = counts.get(part)
        if n is not None and n < SMALL_PART:
            step = f"; one row moves R@1 by {1 / n:.2f}" if n else ""
            out.append(
                f"only {n} {name} row{'' if n == 1 else 's'}: {use} rests on {'it' if n == 1 else 'them'}{step}, so the figures carry little "
                f"(about {SMALL_PART} or more make them worth reading)"
            )
    return out


def _fmt(
    m: dict[str, Any], ks: tuple[str, ...] = ("r1", "r10"), names: tuple[str, ...] = ("R@1", "R@10")
) -> str:
    x = m["metrics"]
    return ", ".join(
        f"{name} a→b {x.get('a2b_' + k, float('nan')):.3f} b→a {x.get('b2a_' + k, float('nan')):.3f}"
        for k, name in zip(ks, names, strict=True)
    )


def _meaning(result: Any, metrics: dict[str, Any], ours: dict[str, Any], best: dict[str, Any] | None) -> str:
    """One sentence on what the figures above mean for this run."""
    n, k = metrics.get("test_rows_used", 0), metrics.get("classes", 0)
    chance = metrics.get("chance_r1", float("nan"))
    if result.random_weights:
        classes = (
            f"; class-level figures above chance ({1 / k:.2f}) are what random features still carry"
            if k
            else ""
        )
        return (
            f"meaning: {' and '.join(result.random_weights)} ran with RANDOM weights, so pair-level R@1 near "
            f"chance ({chance:.3f}) is expected{classes}; pretrained weights give figures worth reading "
            "(README: offline)"
        )
    if n < SMALL_PART:
        return f"meaning: on {n} test rows one row moves R@1 by {1 / max(n, 1):.2f}: a smoke test, not a measurement"
    if best is None:
        return f"meaning: R@1 against chance ({chance:.3f}) on {n} held-out test rows, with no baseline beside it"
    beats = ours["metrics"].get("r1", 0.0) > best["metrics"].get("r1", 0.0)
    return (
        f"meaning: on {n} held-out test rows the adapter {'beats' if beats else 'does not beat'} "
        f"the best baseline ({best['name']}) at R@1 (chance {chance:.3f})"
    )


def _summary_lines(result: Any) -> list[str]:
    """The last lines: rows used, failures, R@1/R@10 both ways beside the best baseline (or why there is
    none), class-level figures where labels exist, what they mean for this run, the adapter."""
    from ..ingest import failures_path_for
    from ..pair_api import headline

    fails = ", ".join(f"{n} on side {s}" for s, n in result.embed_failures.items())
    lines = [f"rows used: {result.rows_used}; failed: {result.ingest_failures} at ingest, {fails}"]
    if result.ingest_failures:
        lines.append(f"ingest failures, with reasons: {failures_path_for(result.manifest)}")
    if any(result.embed_failures.values()):
        lines.append(f"embedding failures, with reasons: ee store failures {result.store}")
    metrics = result.metrics or {}
    ours, best = headline(metrics)
    if ours is not None:
        lines.append(f"test ({metrics.get('test_rows_used', '?')} rows): adapter {_fmt(ours)}")
        if best is not None:
            lines.append(f"best baseline ({best['name']}): {_fmt(best)}")
        else:
            why = [n for n in metrics.get("notes", []) if n.startswith("baselines skipped")]
            lines.append(why[0] if why else "baselines: none fitted")
        k = metrics.get("classes", 0)
        if k and "a2b_class_r1" in ours["metrics"]:
            cls = ("class_r1", "map")
            line = f"class level ({k} classes, chance about {1 / k:.2f}): adapter {_fmt(ours, cls, ('R@1', 'mAP'))}"
            if best is not None and "a2b_class_r1" in best["metrics"]:
                line += f"; {best['name']} {_fmt(best, cls, ('R@1', 'mAP'))}"
            lines.append(line)
        lines.append(_meaning(result, metrics, ours, best))
    if result.card is not None:
        lines.append(f"model card: {result.card}")
    lines.append(f"adapter: {result.adapter}")
    return lines


@app.command(
    "pair",
    epilog=examples(
        "ee pair --a clip --b vggish --data videos/",
        "ee pair --a clip --b vggish --data vggsound.csv --clips clips/",
        "ee pair --a clip --b clip-text --data pairs.csv --a-col image --b-col caption",
    ),
)
def pair_cmd(
    a: Annotated[
        str, typer.Option("--a", help="Encoder of side a (see `ee encoders`).", autocompletion=encoder_names)
    ],
    b: Annotated[str, typer.Option("--b", help="Encoder of side b.", autocompletion=encoder_names)],
    data: Annotated[Path, typer.Option(help="Videos folder, paired-files folder, table, or VGG-Sound CSV.")],
    out: Annotated[
        Path | None,
        typer.Option(
            help="Output folder (default: DATA.A-B beside the data, without a file's extension: "
            "pairs.csv -> pairs.clip-vggish)."
        ),
    ] = None,
    kind: Annotated[
        str | None, typer.Option(help="videos | vggsound | pairs | table (default: detected).")
    ] = None,
    clips: Annotated[Path | None, typer.Option(help="VGG-Sound: the folder of downloaded clips.")] = None,
    a_opt: Opt = None,
    b_opt: Opt = None,
    frames: Annotated[
        int | None, typer.Option(help="Videos: K frames per video (default 1, the middle).")
    ] = None,
    every: Annotated[float | None, typer.Option(help="Videos: one frame every S seconds instead.")] = None,
    window: Annotated[float | None, typer.Option(help="Videos: seconds of audio around a frame (5).")] = None,
    pattern: Annotated[str | None, typer.Option(help="VGG-Sound clip file name pattern.")] = None,
    a_col: Annotated[str | None, typer.Option(help="Table: the column of side a (paths or text).")] = None,
    b_col: Annotated[str | None, typer.Option(help="Table: the column of side b.")] = None,
    label_col: Annotated[
        str | None, typer.Option(help="Table: the label column (default: 'label' if present).")
    ] = None,
    split_col: Annotated[
        str | None, typer.Option(help="Table: the split column, train/val/test (default: 'split').")
    ] = None,
    id_col: Annotated[
        str | None, typer.Option(help="Table: the id column (default: 'id' if present).")
    ] = None,
    labels_from_folders: Annotated[
        bool | None,
        typer.Option(
            help="Label each pair with the name of the folder its file is in "
            "(default: yes when every video sits in a class folder one level down)."
        ),
    ] = None,
    preset: Annotated[
        str, typer.Option(help="Training preset: default, or paper (the paper's settings).")
    ] = "default",
    epochs: Annotated[
        int | None, typer.Option(help="Training epochs (upper bound with early stopping).")
    ] = None,
    loss: Annotated[
        str | None, typer.Option(help="Contrastive loss (clip, siglip, vse-hinge, clip-label...).")
    ] = None,
    lr: Annotated[float | None, typer.Option(help="Learning rate.")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Training batch size.")] = None,
    head_a: Annotated[str | None, typer.Option(help="Head of side a: auto, identity, linear, mlp.")] = None,
    head_b: Annotated[str | None, typer.Option(help="Head of side b: auto, identity, linear, mlp.")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of the split and the heads.")] = None,
    refit: RefitOption = None,
    anchors: AnchorsOption = None,
    train_opt: Opt = None,
    workers: Annotated[int | None, typer.Option(help="Embed on a local Dask cluster of N workers.")] = None,
    scheduler: Annotated[str | None, typer.Option(help="Embed on an existing Dask cluster.")] = None,
    threads: Annotated[int | None, typer.Option(help="Torch threads for embedding.")] = None,
    figures: Annotated[bool, typer.Option(help="Draw the UMAP figures.")] = True,
    force: Annotated[bool, typer.Option(help="Redo every stage, even those already done.")] = False,
    license: LicenseOption = None,
    dataset: DatasetOption = None,
) -> int:
    """Ingest -> embed a -> embed b -> train -> eval -> export; each stage skipped when already done."""
    options = {
        "kind": kind,
        "clips": clips,
        "a_opt": parse_options(a_opt),
        "b_opt": parse_options(b_opt),
        "train_opt": parse_options(train_opt),
        "frames": frames,
        "every": every,
        "window": window,
        "pattern": pattern,
        "a_col": a_col,
        "b_col": b_col,
        "label_col": label_col,
        "split_col": split_col,
        "id_col": id_col,
        "labels_from_folders": labels_from_folders,
        "preset": preset,
        "epochs": epochs,
        "loss": loss,
        "lr": lr,
        "batch_size": batch_size,
        "head_a": head_a,
        "head_b": head_b,
        "seed": seed,
        "refit": refit,
        "anchors": anchors,
        "workers": workers,
        "scheduler": scheduler,
        "threads": threads,
        "figures": figures,
        "force": force,
        "license": license,
        "dataset": dataset,
    }
    return _run(a, b, data, out, options)


def _run(a: str, b: str, data: Path, out: Path | None, options: dict[str, Any]) -> int:
    """`ee pair` through the Python API, with a progress display, the stage lines on stderr and the
    result's lines on stdout."""
    from ..pair_api import pair

    display, factory = _progress()
    try:
        result = pair(a, b, data, out, log=lambda s: print(s, file=sys.stderr), progress=factory, **options)
    except KeyboardInterrupt as e:
        if display.live.is_started:
            display.stop()
        exit_interrupted(e)
    finally:
        if display.live.is_started:  # stopping a display never started prints a blank line
            display.stop()
    for warning in small_data_warnings(result.metrics or {}):
        print(f"warning: {warning}", file=sys.stderr)
    for line in _summary_lines(result):
        print(line)
    return result.exit_code


@app.command("demo", epilog=examples("ee demo", "ee demo --classes 3 --clips-per-class 4 --out small-demo"))
def demo_cmd(
    out: Annotated[Path, typer.Option(help="Folder for the demo videos and results.")] = Path("ee-demo"),
    clips_per_class: Annotated[int, typer.Option(help="Videos per class.")] = 8,
    classes: Annotated[int, typer.Option(help="Number of classes (at most 5).")] = 5,
    random_init: Annotated[
        bool | None, typer.Option(help="Force random weights (default: pretrained when available).")
    ] = None,
    force: Annotated[bool, typer.Option(help="Redo every stage.")] = False,
) -> int:
    """Make a small audio-visual set of real videos, then run `ee pair --a clip --b vggish` on it."""
    from ..demo import CLASSES, make_demo_videos, pretrained_available
    from ..errors import UserError

    if not 1 <= classes <= len(CLASSES):
        raise UserError(f"--classes must be between 1 and {len(CLASSES)}, not {classes}")
    videos = out / "videos"
    paths = make_demo_videos(videos, clips_per_class=clips_per_class, classes=classes)
    print(f"demo: {len(paths)} videos of {classes} classes in {videos}", file=sys.stderr)
    opts: dict[str, dict[str, Any]] = {"clip": {}, "vggish": {}}
    use_random = random_init
    if use_random is None:
        missing = [name for name in opts if not pretrained_available(name)]
        use_random = bool(missing)
        if missing:
            print(
                f"demo: no pretrained weights for {', '.join(missing)} here and no network: running with RANDOM "
                "weights so the pipeline runs end to end (recorded in the adapter; the figures mean little)",
                file=sys.stderr,
            )
    if use_random:
        opts = {"clip": {"random_init": True}, "vggish": {"random_init": True}}
    options = {
        "kind": "videos",
        "a_opt": opts["clip"],
        "b_opt": opts["vggish"],
        "every": 2.0,
        "labels_from_folders": True,
        "force": force,
    }
    return _run("clip", "vggish", videos, out / "result", options)
