"""The trainer: two stored arrays in, one adapter file out. Modality-agnostic: it sees float arrays.

A small loop in the manner of minGPT's: no UI inside, a callback for progress, and the loss driven
through its declared contract (:class:`.losses.Loss`) alone. Each epoch trains on batches of the train
part (order fixed by seed and epoch), then measures loss and R@1 on the validation part, keeps the best
heads, stops early when R@1 stalls, appends a line to ``metrics.jsonl`` and writes a checkpoint now and
then, and at the end of the epoch under way on Ctrl-C (:mod:`.interrupt`). A rerun with the same settings
reloads heads, loss, optimiser, best state and RNG from the checkpoint and ends with the same adapter, bit
for bit, as an uninterrupted run. Building the run is :mod:`.setup`'s, saving and
restoring it :mod:`.checkpoint`'s.

By default two steps follow (``TrainConfig.anchors``, ``refit``): with the best heads, an anchor part is
chosen on validation (:mod:`.anchors`); then the same loop runs again from scratch on train + validation
rows for the best epoch count, without validation (its own checkpoint, resumable the same way), and the
anchors are taken from those rows. The adapter holds the refitted heads, fused with the anchor part.

Output folder: ``adapter.safetensors``, ``split.json``, ``metrics.jsonl``, ``checkpoint.safetensors``;
``anchors.json`` (the validation grid), ``metrics-refit.jsonl``, ``checkpoint-refit.safetensors``.
"""

from __future__ import annotations

import json
import math
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import __version__
from ..adapter import AdapterConfig, LossSpec, SideConfig, TrainingInfo, save_adapter
from ..errors import UserError
from ..files import write_text_atomic
from ..heads import Head
from ..retrieval import recall_at_1
from .anchors import AnchorChoice, attach, choose_anchors
from .checkpoint import (
    CHECKPOINT_FILE,
    METRICS_FILE,
    REFIT_CHECKPOINT_FILE,
    REFIT_METRICS_FILE,
    TrainState,
    append_metrics,
    load_module_tensors,
    save_checkpoint,
)
from .config import TrainConfig
from .data import InMemoryPairs
from .interrupt import TrainingInterrupted, deferred_signals
from .losses import Loss, loss_plugin
from .setup import Run, choose_heads, make_optimizer, prepare, prepare_refit, resolve_array
from .split import rows_hash

ADAPTER_FILE = "adapter.safetensors"
ANCHORS_FILE = "anchors.json"
#: what ``force`` removes before a run starts over (``split.json`` is written again by every run)
RUN_FILES = (
    ADAPTER_FILE,
    ANCHORS_FILE,
    CHECKPOINT_FILE,
    METRICS_FILE,
    REFIT_CHECKPOINT_FILE,
    REFIT_METRICS_FILE,
)

# names other modules import from here
__all__ = [
    "ADAPTER_FILE",
    "CHECKPOINT_FILE",
    "METRICS_FILE",
    "EpochReport",
    "TrainResult",
    "TrainingInterrupted",
    "choose_heads",
    "make_optimizer",
    "recall_at_1",
    "resolve_array",
    "train",
]

Progress = Callable[["EpochReport"], None]


@dataclass
class EpochReport:
    """What the progress callback gets after each epoch (and once at start with ``epoch`` = first - 1)."""

    epoch: int
    epochs: int
    loss: float | None = None
    val_loss: float | None = None
    val_r1: float | None = None
    best_r1: float | None = None
    pairs_per_s: float | None = None
    stopped_early: bool = False
    phase: str = "select"  # or "refit": train + val, no validation, ``epochs`` fixed


@dataclass
class TrainResult:
    adapter_path: Path
    out_dir: Path
    metrics: dict[str, float]
    epochs_run: int
    best_epoch: int
    stopped_early: bool
    resumed_from: int | None
    streamed: bool
    history: list[dict[str, Any]] = field(default_factory=list)
    refit_epochs: int | None = None
    anchors: dict[str, Any] | None = None  # the adapter's training.anchors


@dataclass
class Selection:
    """What the selection run hands on: its metrics on validation and the anchor part it chose."""

    metrics: dict[str, float]
    anchors: AnchorChoice | None


def train(
    store_location: str,
    a_key: str | None,
    b_key: str | None,
    out_dir: str | os.PathLike[str],
    config: TrainConfig | None = None,
    force: bool = False,
    progress: Progress | None = None,
) -> TrainResult:
    """Train heads on the pairs of a store that are done on both sides; write the adapter to ``out_dir``.

    A run of the same settings found in ``out_dir`` goes on from its checkpoint (a finished one writes
    the same adapter again); one of other settings is refused, unless ``force`` says to start over. On
    Ctrl-C or SIGTERM the epoch under way ends, its checkpoint is written and
    :class:`~.interrupt.TrainingInterrupted` (a KeyboardInterrupt) says what was kept."""
    cfg = config or TrainConfig()
    from ..runtime import pin_threads

    threads_before = torch.get_num_threads()
    pin_threads(cfg.threads)
    try:
        t_start = time.monotonic()
        if force:
            for name in RUN_FILES:
                (Path(out_dir) / name).unlink(missing_ok=True)
        run, state, resumed_from = prepare(store_location, a_key, b_key, Path(out_dir), cfg)
        fit(run, state, progress)
        selection = select(run, state)
        final = run
        if cfg.refit and state.best_epoch > 0:
            final, refit_state, _ = prepare_refit(run, state.best_epoch)
            fit(final, refit_state, progress)
        return _finish(run, state, final, selection, resumed_from, t_start)
    finally:
        torch.set_num_threads(threads_before)


def fit(run: Run, state: TrainState, progress: Progress | None = None) -> None:
    """Epochs until the phase's number, or until R@1 stalls; checkpoints on the way, at the end, and
    at the end of the epoch under way when a signal comes (then TrainingInterrupted)."""
    cfg = run.cfg
    patience = cfg.patience if run.val is not None else None
    best = state.best_r1 if state.best_r1 >= 0 else None
    _report(progress, EpochReport(epoch=state.epoch, epochs=run.epochs, best_r1=best, phase=run.phase))
    kept = state.epoch if run.checkpoint_path.exists() else None
    last_ckpt = time.monotonic()
    with deferred_signals() as latch:
        try:
            while not state.finished and state.epoch < run.epochs and not latch.signum:
                state.epoch += 1
                record = _epoch(run, state.epoch)
                state.add(record, run.modules, run.epochs, patience)
                append_metrics(run.metrics_path, record)
                if state.finished or time.monotonic() - last_ckpt >= cfg.checkpoint_every_s:
                    _checkpoint(run, state)
                    kept, last_ckpt = state.epoch, time.monotonic()
                _report(progress, _epoch_report(record, state, run))
            # not finished and not stopped: epochs was no more than the checkpoint's
            finish = not state.finished and not latch.signum
            state.finished = state.finished or finish
            if finish or (kept != state.epoch and state.epoch > 0):  # a signal: the epoch just ended
                _checkpoint(run, state)
                kept = state.epoch
        except KeyboardInterrupt as e:  # a second signal: at once, with the last checkpoint
            if isinstance(e, TrainingInterrupted):
                raise
            signum = latch.signum or signal.SIGINT
            raise TrainingInterrupted(run.out, run.phase, state.epoch, run.epochs, kept, signum) from None
    if latch.signum:  # also when it came after the last epoch: the phase's checkpoint is written
        raise TrainingInterrupted(run.out, run.phase, state.epoch, run.epochs, kept, latch.signum)


def select(run: Run, state: TrainState) -> Selection:
    """The selection run's best heads loaded; their validation metrics; the anchor part, when chosen.

    ``val_r1`` stays the selection score on validation: the best epoch's, or the fused one's when the
    grid chose an anchor part (``val_r1_heads`` then keeps the heads' alone)."""
    load_module_tensors(run.modules, state.best)
    history = state.history
    best = next((h for h in history if h["epoch"] == state.best_epoch), history[-1] if history else {})
    metrics = {k: float(best[k]) for k in ("val_loss", "val_r1", "val_r1_a2b", "val_r1_b2a") if k in best}
    metrics["best_epoch"] = float(state.best_epoch)
    trained = run.heads.a.trained and run.heads.b.trained
    if run.cfg.anchors != "auto" or not trained or run.val is None:
        return Selection(metrics, None)
    t0 = time.perf_counter()
    choice = choose_anchors(run)
    seconds = round(time.perf_counter() - t0, 3)  # here, not in the adapter: it differs between runs
    write_text_atomic(run.out / ANCHORS_FILE, json.dumps({"seconds": seconds, "grid": choice.grid}, indent=1))
    metrics["anchor_weight"] = choice.weight
    if choice.weight > 0:
        metrics["val_r1_heads"] = metrics.get("val_r1", float("nan"))
        metrics.update(val_r1=choice.val_r1, val_r1_a2b=choice.val_r1_a2b, val_r1_b2a=choice.val_r1_b2a)
    return Selection(metrics, choice)


def _epoch(run: Run, epoch: int) -> dict[str, Any]:
    """Train one epoch, validate; the epoch's line of ``metrics.jsonl``."""
    loss_fn, opt, heads = run.loss, run.opt, run.heads
    heads.a.train()
    heads.b.train()
    t0 = time.perf_counter()
    total, steps, seen = 0.0, 0, 0
    for xa, xb, labels in run.source.batches(epoch, run.batch_size, run.cfg.seed):
        loss = loss_fn.step(heads, xa, xb, labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        loss_fn.post_step()
        total += float(loss.detach())
        steps += 1
        seen += xa.shape[0]
    train_s = time.perf_counter() - t0
    record: dict[str, Any] = {"epoch": epoch, "loss": total / max(1, steps)}
    if run.val is not None:
        val_loss, r_ab, r_ba = _validate(run, loss_fn, run.val)
        record.update(val_loss=val_loss, val_r1=(r_ab + r_ba) / 2, val_r1_a2b=r_ab, val_r1_b2a=r_ba)
    record["pairs_per_s"] = seen / max(train_s, 1e-9)
    if not all(math.isfinite(v) for v in (record["loss"], record.get("val_loss", 0.0))):
        raise UserError(
            f"training diverged at epoch {epoch} (loss {record['loss']}); try a lower --lr (now {run.cfg.lr})"
        )
    return record


@torch.no_grad()
def _validate(run: Run, loss_fn: Loss, val: InMemoryPairs) -> tuple[float, float, float]:
    """Validation loss (mean over fixed batches) and R@1 both ways against all validation rows."""
    head_a, head_b = run.heads.a, run.heads.b
    head_a.eval()
    head_b.eval()
    za, zb = head_a(val.xa), head_b(val.xb)  # [n_val, shared_dim]
    bs = min(run.batch_size, val.n)
    losses = []
    for k in range(max(1, val.n // bs)):
        sl = slice(k * bs, (k + 1) * bs)
        lab = None if val.labels is None else val.labels[sl]
        losses.append(float(loss_fn(za[sl], zb[sl], lab)))
    r_ab, r_ba = recall_at_1(za, zb)
    return float(np.mean(losses)), r_ab, r_ba


def _checkpoint(run: Run, state: TrainState) -> None:
    save_checkpoint(run.checkpoint_path, run.fingerprint, state, run.modules, run.opt)


def _report(progress: Progress | None, report: EpochReport) -> None:
    if progress is not None:
        progress(report)


def _epoch_report(record: dict[str, Any], state: TrainState, run: Run) -> EpochReport:
    return EpochReport(
        epoch=state.epoch,
        epochs=run.epochs,
        loss=record["loss"],
        val_loss=record.get("val_loss"),
        val_r1=record.get("val_r1"),
        best_r1=state.best_r1 if run.val is not None else None,
        pairs_per_s=record["pairs_per_s"],
        stopped_early=state.stopped_early,
        phase=run.phase,
    )


def _finish(
    run: Run, state: TrainState, final: Run, sel: Selection, resumed_from: int | None, t_start: float
) -> TrainResult:
    """Write the adapter: ``final``'s heads (the selection run's best, or the refit's), with the anchor
    part when one was chosen; say what the run did."""
    choice = sel.anchors
    head_a, head_b, spec = final.heads.a, final.heads.b, None
    if choice is not None:
        head_a, head_b, spec = attach(final, choice)
    anchors = None if choice is None else choice.info(spec.count if spec else 0)
    refit_epochs = final.epochs if final is not run else None
    if refit_epochs is not None:
        sel.metrics["refit_epochs"] = float(refit_epochs)
    config = _adapter_config(run, state, final, (head_a, head_b), sel.metrics, anchors, t_start)
    adapter_path = save_adapter(run.out / ADAPTER_FILE, config, head_a, head_b)
    return TrainResult(
        adapter_path=adapter_path,
        out_dir=run.out,
        metrics=sel.metrics,
        epochs_run=len(state.history),
        best_epoch=state.best_epoch,
        stopped_early=state.stopped_early,
        resumed_from=resumed_from,
        streamed=run.streamed,
        history=state.history,
        refit_epochs=refit_epochs,
        anchors=anchors,
    )


def _adapter_config(
    run: Run,
    state: TrainState,
    final: Run,
    heads: tuple[Head, Head],
    metrics: dict[str, float],
    anchors: dict[str, Any] | None,
    t_start: float,
) -> AdapterConfig:
    cfg, split = run.cfg, run.split
    ida, idb = run.arr_a.identity, run.arr_b.identity
    assert ida is not None and idb is not None  # resolve_array refuses arrays without one
    return AdapterConfig(
        shared_dim=heads[0].spec.output_dim,
        a=SideConfig(identity=ida, array=run.arr_a.key, head=heads[0].spec),
        b=SideConfig(identity=idb, array=run.arr_b.key, head=heads[1].spec),
        loss=LossSpec(
            name=cfg.loss,
            plugin=loss_plugin(cfg.loss),
            options=cfg.loss_options,
            learned=final.loss.summary(),
        ),
        metrics=metrics,
        training=TrainingInfo(
            **_store_fields(str(run.store_location), run.out),
            rows=int(final.rows.size),
            row_ids_sha256=rows_hash(run.ids, final.rows),
            split={
                "seed": split.seed,
                "source": split.source,
                "fractions": list(split.fractions),
                "counts": split.counts(),
            },
            settings={**cfg.model_dump(mode="json"), "batch_size": run.batch_size},
            epochs_run=len(state.history),
            best_epoch=state.best_epoch,
            stopped_early=state.stopped_early,
            ee_version=__version__,
            refit_epochs=final.epochs if final is not run else None,
            anchors=anchors,
            trained_at=datetime.now(UTC).isoformat(timespec="seconds"),
            train_seconds=round(time.monotonic() - t_start, 3),
        ),
    )


def _store_fields(location: str, out: Path) -> dict[str, str]:
    """Where the store is, for commands run later from any folder: a local store relative to the adapter's
    folder (the two may move together) and absolute (the adapter may move alone); a URL as given."""
    from ..store import local_path

    folder = local_path(location)
    if folder is None:
        return {"store": location}
    absolute = folder.resolve()
    return {"store": os.path.relpath(absolute, out.resolve()), "store_absolute": str(absolute)}
