"""`ee train`: heads on two stored arrays -> one adapter file, resumable."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

from .app import app, examples

if TYPE_CHECKING:
    from ..train.trainer import EpochReport

# the training settings that `ee pair` passes on as well: one definition for both commands
RefitOption = Annotated[
    bool | None,
    typer.Option("--refit/--no-refit", help="Retrain on train+val for the best epoch count (default on)."),
]
AnchorsOption = Annotated[str | None, typer.Option(help="auto (an anchor part chosen on validation) or off.")]


def _parse_loss_options(pairs: list[str] | None) -> dict[str, Any]:
    import json

    from ..errors import UserError

    out: dict[str, Any] = {}
    for p in pairs or []:
        key, sep, value = p.partition("=")
        if not sep or not key.strip():
            raise UserError(f"bad --loss-opt {p!r}: expected key=value")
        try:
            out[key.strip().replace("-", "_")] = json.loads(value)
        except ValueError:
            out[key.strip().replace("-", "_")] = value
    return out


def resume_note(rep: EpochReport, out: Path | None = None) -> str | None:
    """The line that says a phase goes on from a checkpoint (its first report, past epoch 0)."""
    if rep.loss is not None or rep.epoch == 0:
        return None
    where = "" if out is None else f" in {out}"
    return f"{rep.phase if rep.phase == 'refit' else 'train'}: resuming after epoch {rep.epoch} of {rep.epochs} from the checkpoint{where}"


def exit_interrupted(e: KeyboardInterrupt) -> NoReturn:
    """A training run stopped by a signal: say what was kept and how to go on, exit 128 + the signal."""
    from ..train.interrupt import TrainingInterrupted

    if not isinstance(e, TrainingInterrupted):
        raise e
    print(str(e), file=sys.stderr)
    raise typer.Exit(e.exit_code)


class _EpochBar:
    """A rich progress bar fed by the trainer's epoch reports; started by the first one."""

    def __init__(self, out: Path) -> None:
        self.out = out
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.bar = Progress(
            TextColumn("train"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}  val R@1 {task.fields[r1]} (best {task.fields[best]})"),
            TimeElapsedColumn(),
            transient=False,
        )
        self.task: Any = None
        self.phase = ""

    def on_epoch(self, rep: EpochReport) -> None:
        note = resume_note(rep, self.out)
        if note is not None:
            print(note, file=sys.stderr)
        if self.task is None or rep.phase != self.phase:  # each phase (select, refit) a bar of its own
            if self.task is None:
                self.bar.start()
            self.phase = rep.phase
            self.task = self.bar.add_task(
                "train", total=rep.epochs, completed=rep.epoch, loss="-", r1="-", best="-"
            )
            return

        def fmt(x: float | None) -> str:
            return "-" if x is None else f"{x:.3f}"

        self.bar.update(
            self.task,
            completed=rep.epoch,
            loss=f"{rep.loss:.4f}",
            r1=fmt(rep.val_r1),
            best=fmt(rep.best_r1),
        )

    def __enter__(self) -> _EpochBar:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.task is not None:
            self.bar.stop()


@app.command(
    "train",
    epilog=examples(
        "ee train videos/store.zarr --out run/",
        "ee train videos/store.zarr --out run/ --a clip --b vggish --epochs 50",
        "ee train videos/store.zarr --out run/ --preset paper",
    ),
)
def train_cmd(
    store: Annotated[str, typer.Argument(help="The embedding store (path or URL).")],
    out: Annotated[Path, typer.Option("--out", help="Output folder: adapter, split, metrics, checkpoint.")],
    a: Annotated[
        str | None, typer.Option("--a", help="Side a array key or encoder name (default: the only one).")
    ] = None,
    b: Annotated[
        str | None, typer.Option("--b", help="Side b array key or encoder name (default: the only one).")
    ] = None,
    preset: Annotated[
        str, typer.Option(help="default or paper (Adam 1e-4, batch 4096, 300 epochs).")
    ] = "default",
    resume: Annotated[
        bool,
        typer.Option(
            "--resume", help="Accepted for old scripts: a rerun with the same settings resumes anyway."
        ),
    ] = False,
    force: Annotated[
        bool,
        typer.Option("--force", help="Start over, discarding the run in --out (e.g. of other settings)."),
    ] = False,
    epochs: Annotated[int | None, typer.Option(help="Most epochs.")] = None,
    batch_size: Annotated[
        int | None, typer.Option(help="Pairs per step (default min(256, n_train/8)).")
    ] = None,
    lr: Annotated[float | None, typer.Option(help="Learning rate.")] = None,
    optimizer: Annotated[str | None, typer.Option(help="adam or adamw.")] = None,
    weight_decay: Annotated[float | None, typer.Option(help="AdamW weight decay.")] = None,
    patience: Annotated[
        int | None, typer.Option(help="Stop after this many epochs without a better val R@1 (0: never).")
    ] = None,
    loss: Annotated[
        str | None, typer.Option(help="Loss name (clip, clip-label, siglip, vse-hinge, plugins').")
    ] = None,
    loss_opt: Annotated[
        list[str] | None, typer.Option("--loss-opt", help="Loss option key=value (repeat).")
    ] = None,
    head_a: Annotated[str | None, typer.Option(help="auto, identity, linear or mlp.")] = None,
    head_b: Annotated[str | None, typer.Option(help="auto, identity, linear or mlp.")] = None,
    head: Annotated[str | None, typer.Option("--head", help="What auto trains: linear or mlp.")] = None,
    dim: Annotated[
        int | None,
        typer.Option(
            help="Shared dim when no side stays identity (default 1024 up to 10,000 train pairs, else 256)."
        ),
    ] = None,
    mlp_width: Annotated[int | None, typer.Option(help="MLP hidden width.")] = None,
    mlp_depth: Annotated[int | None, typer.Option(help="MLP hidden layers.")] = None,
    dropout: Annotated[float | None, typer.Option(help="MLP dropout.")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of split, init and batch order.")] = None,
    precision: Annotated[str | None, typer.Option(help="Loss matmuls: auto, bf16 or fp32.")] = None,
    compile: Annotated[
        bool | None, typer.Option("--compile/--no-compile", help="torch.compile the heads.")
    ] = None,
    stream: Annotated[
        bool | None,
        typer.Option("--stream/--no-stream", help="Stream chunks from the store (default: by size)."),
    ] = None,
    memory_budget_mb: Annotated[int | None, typer.Option(help="Memory for training data, MB.")] = None,
    checkpoint_every: Annotated[
        float | None, typer.Option(help="Seconds between checkpoints (0: every epoch).")
    ] = None,
    threads: Annotated[int | None, typer.Option(help="Torch threads (default: all CPUs available).")] = None,
    refit: RefitOption = None,
    anchors: AnchorsOption = None,
) -> int:
    """Train heads so that pairs land together; writes OUT/adapter.safetensors. Ctrl-C keeps the epoch."""
    from ..train import make_config, train

    given: dict[str, Any] = {
        "epochs": epochs,
        "batch_size": batch_size,
        "lr": lr,
        "optimizer": optimizer,
        "weight_decay": weight_decay,
        "loss": loss,
        "head_a": head_a,
        "head_b": head_b,
        "head_kind": head,
        "dim": dim,
        "mlp_width": mlp_width,
        "mlp_depth": mlp_depth,
        "dropout": dropout,
        "seed": seed,
        "precision": precision,
        "compile": compile,
        "stream": stream,
        "checkpoint_every_s": checkpoint_every,
        "threads": threads,
        "refit": refit,
        "anchors": anchors,
    }
    overrides = {k: v for k, v in given.items() if v is not None}
    if patience is not None:
        overrides["patience"] = patience or None
    if loss_opt:
        overrides["loss_options"] = _parse_loss_options(loss_opt)
    if memory_budget_mb is not None:
        overrides["memory_budget"] = memory_budget_mb << 20
    config = make_config(preset, **overrides)
    del resume  # what it asked for is what every run does
    try:
        with _EpochBar(out) as bar:
            result = train(store, a, b, out, config, force=force, progress=bar.on_epoch)
    except KeyboardInterrupt as e:
        exit_interrupted(e)
    m = result.metrics
    how = "stopped early" if result.stopped_early else "done"
    print(
        f"{how} after {result.epochs_run} epochs; best epoch {result.best_epoch}: "
        f"val R@1 {m.get('val_r1', float('nan')):.3f} (a->b {m.get('val_r1_a2b', float('nan')):.3f}, "
        f"b->a {m.get('val_r1_b2a', float('nan')):.3f})"
    )
    an = result.anchors
    if an is not None and an["weight"] > 0:
        print(
            f"anchor part: {an['count']} anchors, k {an['k']}, p {an['power']:g}, weight {an['weight']:g} "
            f"(val R@1 {an['val_r1']:.3f}; heads alone {an['val_r1_heads_alone']:.3f})"
        )
    elif an is not None:
        print("anchor part: none (no setting beat the heads alone on validation)")
    if result.refit_epochs is not None:
        print(f"refit on train + val for {result.refit_epochs} epochs")
    print(f"adapter: {result.adapter_path}", file=sys.stdout)
    return 0
