"""`ee pair` (the whole method in one command) and `ee demo`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from .app import app
from .embed import embed_callbacks, parse_options, stage_display
from .train import AnchorsOption, RefitOption

Opt = Annotated[list[str] | None, typer.Option(help="Option key=value (repeat).")]


def _progress() -> tuple[Any, Any]:
    """One rich progress display for every stage; returns (display, factory of stage callbacks)."""
    display = stage_display()

    def factory(stage: str, name: str | None) -> Any:
        if stage in ("a", "b"):
            return embed_callbacks(display, f"embed {stage} ({name})")
        state: dict[str, Any] = {}

        def on_epoch(rep: Any) -> None:
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


def _summary_lines(summary: Any) -> list[str]:
    """The last lines: rows used, failures, R@1/R@10 both ways beside the best baseline, the adapter."""
    fails = ", ".join(f"{n} on side {s}" for s, n in summary.embed_failures.items())
    lines = [f"rows used: {summary.rows_used}; failed: {summary.ingest_failures} at ingest, {fails}"]
    methods = (summary.metrics or {}).get("methods") or []
    ours = next((m for m in methods if m.get("kind") == "adapter"), None)
    baselines = [m for m in methods if m.get("kind") == "baseline"]
    if ours is not None:

        def fmt(m: dict[str, Any]) -> str:
            x = m["metrics"]
            return (
                f"R@1 a→b {x.get('a2b_r1', float('nan')):.3f} b→a {x.get('b2a_r1', float('nan')):.3f}, "
                f"R@10 a→b {x.get('a2b_r10', float('nan')):.3f} b→a {x.get('b2a_r10', float('nan')):.3f}"
            )

        n = (summary.metrics or {}).get("test_rows_used", "?")
        lines.append(f"test ({n} rows): adapter {fmt(ours)}")
        if baselines:
            best = max(baselines, key=lambda m: m["metrics"].get("r1", -1.0))
            lines.append(f"best baseline ({best['name']}): {fmt(best)}")
    if summary.card is not None:
        lines.append(f"model card: {summary.card}")
    lines.append(f"adapter: {summary.adapter}")
    return lines


@app.command("pair")
def pair_cmd(
    a: Annotated[str, typer.Option("--a", help="Encoder of side a (see `ee encoders`).")],
    b: Annotated[str, typer.Option("--b", help="Encoder of side b.")],
    data: Annotated[Path, typer.Option(help="Videos folder, paired-files folder, table, or VGG-Sound CSV.")],
    out: Annotated[
        Path | None, typer.Option(help="Output folder (default: <data>.<a>-<b> beside the data).")
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
    labels_from_folders: Annotated[
        bool, typer.Option(help="Label each pair with the name of the folder its file is in.")
    ] = False,
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
) -> int:
    """Ingest -> embed a -> embed b -> train -> eval -> export; each stage skipped when already done."""
    from ..pair import PairRun

    train_options: dict[str, Any] = parse_options(train_opt)
    for k, v in {
        "epochs": epochs,
        "loss": loss,
        "lr": lr,
        "batch_size": batch_size,
        "head_a": head_a,
        "head_b": head_b,
        "seed": seed,
        "refit": refit,
        "anchors": anchors,
    }.items():
        if v is not None:
            train_options[k] = v
    run = PairRun(
        a=a,
        b=b,
        data=data,
        out=out or data.parent / f"{data.name}.{a}-{b}",
        kind=kind,
        clips=clips,
        a_options=parse_options(a_opt),
        b_options=parse_options(b_opt),
        ingest_options={"frames": frames, "every": every, "window": window, "pattern": pattern},
        train_options=train_options,
        preset=preset,
        workers=workers,
        scheduler=scheduler,
        threads=threads,
        labels_from_folders=labels_from_folders,
        figures=figures,
        force=force,
    )
    return _run(run)


def _run(run: Any) -> int:
    from ..pair import run_pair

    display, factory = _progress()
    try:
        summary = run_pair(run, log=lambda s: print(s, file=sys.stderr), progress=factory)
    finally:
        if display.live.is_started:  # stopping a display never started prints a blank line
            display.stop()
    for line in _summary_lines(summary):
        print(line)
    return summary.exit_code


@app.command("demo")
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
    from ..pair import PairRun

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
    run = PairRun(
        a="clip",
        b="vggish",
        data=videos,
        out=out / "result",
        kind="videos",
        a_options=opts["clip"],
        b_options=opts["vggish"],
        ingest_options={"every": 2.0},
        labels_from_folders=True,
        force=force,
    )
    return _run(run)
