"""Everything a training run is built from: arrays, split, heads, loss, optimiser, data, resumed state.

:func:`prepare` does it in a fixed order, since a resumed run must rebuild the same things from the
same seeds: torch's RNG is seeded just before the heads and the loss are built; the loop's draws
(dropout) come after, from the RNG state a checkpoint restores. :func:`prepare_refit` builds the refit
phase the same way (same seed, so the same initial heads) on train + validation rows, with a checkpoint
of its own.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..encoder import EncoderIdentity
from ..errors import EEWarning, UserError
from ..heads import Head, HeadKind, HeadSpec
from ..store import EmbeddingArray, Store, paired_rows
from .checkpoint import (
    CHECKPOINT_FILE,
    METRICS_FILE,
    REFIT_CHECKPOINT_FILE,
    REFIT_METRICS_FILE,
    Checkpoint,
    TrainState,
    fingerprint,
    module_tensors,
    open_checkpoint,
    restore,
    write_metrics,
)
from .config import TrainConfig, auto_batch_size, auto_dim
from .data import InMemoryPairs, PairSource, StreamingPairs, default_memory_budget, label_codes
from .losses import HeadPair, Loss, build_loss
from .split import Split, make_split, refit_rows, rows_hash, save_split


@dataclass
class Run:
    """One phase of a training run, built: what the loop drives and what the adapter records.

    Phase ``select`` trains on the train part with validation and early stopping; phase ``refit`` trains
    the same way from scratch on train + validation rows for a fixed number of epochs, without validation.
    """

    cfg: TrainConfig
    out: Path
    store_location: str
    arr_a: EmbeddingArray
    arr_b: EmbeddingArray
    ids: np.ndarray
    split: Split
    codes: np.ndarray | None  # label codes per store row (None: no labels)
    shared_dim: int
    heads: HeadPair
    loss: Loss
    opt: torch.optim.Optimizer
    source: PairSource
    val: InMemoryPairs | None  # None: no validation (the refit)
    batch_size: int
    streamed: bool
    fingerprint: dict[str, Any]
    rows: np.ndarray  # the store rows trained on, sorted
    means: tuple[torch.Tensor, torch.Tensor]  # mean of those rows, per side
    epochs: int  # the most epochs of this phase
    phase: str = "select"

    @property
    def modules(self) -> dict[str, torch.nn.Module]:
        """The trained modules by checkpoint prefix (their order is the checkpoint's)."""
        return {"a": self.heads.a, "b": self.heads.b, "loss": self.loss}

    @property
    def checkpoint_path(self) -> Path:
        return self.out / (CHECKPOINT_FILE if self.phase == "select" else REFIT_CHECKPOINT_FILE)

    @property
    def metrics_path(self) -> Path:
        return self.out / (METRICS_FILE if self.phase == "select" else REFIT_METRICS_FILE)


def resolve_array(store: Store, side: str, key: str | None) -> EmbeddingArray:
    """KEY is an array key, or an encoder name used by exactly one array of that side; None: the only one."""
    mine = store.find(side=side)
    listing = ", ".join(a.key for a in mine) or "none"
    if key is None:
        if len(mine) != 1:
            raise UserError(
                f"store {store.location} has {len(mine)} arrays on side {side} ({listing}); "
                f"choose one with --{side} KEY"
            )
        arr = mine[0]
    elif key in store.keys():
        arr = store.embedding(key)
        if arr.side != side:
            raise UserError(f"array {key} holds side {arr.side}, not side {side}")
    else:
        named = [a for a in mine if a.encoder == key]
        if len(named) != 1:
            how = "no array" if not named else f"{len(named)} arrays"
            raise UserError(
                f"--{side} {key!r}: {how} of side {side} use that encoder; arrays of side {side}: {listing}"
            )
        arr = named[0]
    if arr.identity is None:
        raise UserError(f"array {arr.key} records no encoder identity; re-run `ee embed` for it")
    return arr


def choose_heads(
    ida: EncoderIdentity, idb: EncoderIdentity, cfg: TrainConfig
) -> tuple[HeadSpec, HeadSpec, int]:
    """Head specs for both sides, and the shared dim.

    ``auto``: a side whose encoder declares a shared space (CLIP's image and text towers) stays identity
    and the other side gets a head into its dim. When both declare one (clip + clip-text), side a stays
    identity and side b is trained into it: two identities would train nothing, and keeping a fixed
    keeps the text tower's space. When neither does, both get heads into ``cfg.dim`` (resolved by
    :func:`prepare` when it is ``"auto"``).
    """
    ka, kb = cfg.head_a, cfg.head_b
    if ka == "auto" and kb == "auto":
        if ida.shared_space is not None:
            ka, kb = "identity", cfg.head_kind
        elif idb.shared_space is not None:
            ka, kb = cfg.head_kind, "identity"
        else:
            ka, kb = cfg.head_kind, cfg.head_kind
    elif ka == "auto":
        ka = cfg.head_kind
    elif kb == "auto":
        kb = cfg.head_kind
    if ka == "identity" and kb == "identity":
        raise UserError("--head-a and --head-b are both identity: nothing to train")
    if ka == "identity":
        dim = ida.dim
    elif kb == "identity":
        dim = idb.dim
    elif cfg.dim == "auto":
        raise ValueError("choose_heads needs the shared dim resolved (prepare resolves it)")
    else:
        dim = cfg.dim
    spec_a, spec_b = (_head_spec(kind, ident, dim, cfg) for kind, ident in ((ka, ida), (kb, idb)))
    return spec_a, spec_b, dim


def _head_spec(kind: HeadKind, ident: EncoderIdentity, dim: int, cfg: TrainConfig) -> HeadSpec:
    mlp = kind == "mlp"
    return HeadSpec(
        kind=kind,
        in_dim=ident.dim,
        out_dim=dim,
        width=cfg.mlp_width if mlp else None,
        depth=cfg.mlp_depth if mlp else 1,
        dropout=cfg.dropout if mlp else 0.0,
    )


def make_optimizer(cfg: TrainConfig, groups: list[dict[str, Any]]) -> torch.optim.Optimizer:
    """Adam or AdamW, fused where torch has it: one kernel per step instead of a dozen small parallel
    ones, each of which waits for a scheduler slice when the CPU is shared."""
    cls = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
    wd = cfg.weight_decay if cfg.optimizer == "adamw" else 0.0
    try:
        return cls(groups, lr=cfg.lr, weight_decay=wd, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return cls(groups, lr=cfg.lr, weight_decay=wd)


def prepare(
    store_location: str, a_key: str | None, b_key: str | None, out: Path, cfg: TrainConfig
) -> tuple[Run, TrainState, int | None]:
    """The run, its state (restored from ``out``'s checkpoint when there is one), and the epoch resumed
    from; UserError when that checkpoint was made with other settings or on other rows."""
    store = Store.open(store_location, read_only=True)
    arr_a, arr_b = resolve_array(store, "a", a_key), resolve_array(store, "b", b_key)
    meta = store.rows()
    ids = meta["id"]
    n = min(arr_a.n_rows, arr_b.n_rows, len(ids))
    split = make_split(paired_rows(arr_a, arr_b, n), meta, seed=cfg.seed, fractions=cfg.fractions)
    # one shared dim for the selection run and its refit, from the selection run's training pairs
    cfg = cfg.model_copy(update={"dim": auto_dim(cfg.dim, split.train.size)})
    fp = fingerprint(cfg, arr_a, arr_b, rows_hash(ids, np.concatenate([split.train, split.val, split.test])))
    out.mkdir(parents=True, exist_ok=True)
    ckpt, changed = open_checkpoint(out / CHECKPOINT_FILE, fp)
    if changed:
        raise UserError(
            f"{out} holds a run with other settings ({', '.join(changed)}); "
            "rerun with the same settings to resume, or --force to start over"
        )
    save_split(split, ids, out)
    codes = label_codes(meta["label"][:n]) if n else None
    val_rows = split.val
    if val_rows.size > cfg.val_max_rows:
        pick = np.random.default_rng(cfg.seed).choice(val_rows.size, cfg.val_max_rows, replace=False)
        val_rows = np.sort(val_rows[pick])
    val = InMemoryPairs.from_store(arr_a, arr_b, val_rows, None if codes is None else codes[val_rows])
    parts = _build(cfg, arr_a, arr_b, split.train, codes, None)
    run = Run(
        cfg=cfg,
        out=out,
        store_location=store_location,
        arr_a=arr_a,
        arr_b=arr_b,
        ids=ids,
        split=split,
        codes=codes,
        val=val,
        fingerprint=fp,
        rows=split.train,
        epochs=cfg.epochs,
        **parts,
    )
    state, resumed_from = _start_state(run, ckpt)
    return run, state, resumed_from


def prepare_refit(run: Run, epochs: int) -> tuple[Run, TrainState, int | None]:
    """The refit phase of ``run``: new heads, loss and optimiser from the same seed, trained on train +
    validation rows for ``epochs`` epochs with the selection run's batch size; resumed from its own
    checkpoint when there is one of this selection run (another one's is of no use: started over)."""
    rows = refit_rows(run.split.train, run.split.val)
    fp = {**run.fingerprint, "phase": "refit", "epochs": epochs}
    ckpt, _ = open_checkpoint(run.out / REFIT_CHECKPOINT_FILE, fp)
    parts = _build(run.cfg, run.arr_a, run.arr_b, rows, run.codes, run.batch_size)
    refit = replace(run, val=None, fingerprint=fp, rows=rows, epochs=epochs, phase="refit", **parts)
    state, resumed_from = _start_state(refit, ckpt)
    return refit, state, resumed_from


def _build(
    cfg: TrainConfig,
    arr_a: EmbeddingArray,
    arr_b: EmbeddingArray,
    rows: np.ndarray,
    codes: np.ndarray | None,
    batch_size: int | None,
) -> dict[str, Any]:
    """Heads, loss, optimiser (torch seeded just before) and the training data of ``rows``."""
    ida, idb = arr_a.identity, arr_b.identity
    assert ida is not None and idb is not None  # resolve_array refuses arrays without one
    spec_a, spec_b, shared_dim = choose_heads(ida, idb, cfg)
    torch.manual_seed(cfg.seed)
    head_a, head_b = Head(spec_a), Head(spec_b)
    loss = build_loss(cfg.loss, cfg.loss_options, {"precision": cfg.precision, "compile": cfg.compile})
    source, streamed = _source(arr_a, arr_b, rows, None if codes is None else codes[rows], cfg)
    ma, sa, mb, sb = source.stats()
    head_a.set_normalization(ma, sa)
    head_b.set_normalization(mb, sb)
    params = [p for h in (head_a, head_b) for p in h.parameters()]
    loss_params = [p for p in loss.parameters() if p.requires_grad]
    return {
        "shared_dim": shared_dim,
        "heads": HeadPair.build(head_a, head_b, cfg.compile),
        "loss": loss,
        "opt": make_optimizer(cfg, [{"params": params}, {"params": loss_params, "weight_decay": 0.0}]),
        "source": source,
        "batch_size": batch_size or cfg.batch_size or auto_batch_size(source.n),
        "streamed": streamed,
        "means": (ma, mb),
    }


def _source(
    arr_a: EmbeddingArray,
    arr_b: EmbeddingArray,
    rows: np.ndarray,
    labels: np.ndarray | None,
    cfg: TrainConfig,
) -> tuple[PairSource, bool]:
    """Training pairs of ``rows``, streamed when they exceed the memory budget."""
    budget = cfg.memory_budget or default_memory_budget()
    train_bytes = rows.size * (arr_a.dim + arr_b.dim) * 4
    streamed = cfg.stream if cfg.stream is not None else train_bytes > budget
    if streamed:
        return StreamingPairs(arr_a, arr_b, rows, labels, budget), True
    return InMemoryPairs.from_store(arr_a, arr_b, rows, labels), False


def _start_state(run: Run, ckpt: Checkpoint | None) -> tuple[TrainState, int | None]:
    """A fresh state (the initial modules as the best so far), or the checkpoint's."""
    if ckpt is None:
        if run.metrics_path.exists() and run.metrics_path.stat().st_size:
            what = "the refit" if run.phase == "refit" else "training"
            warnings.warn(
                f"{run.out} has no checkpoint of the epochs in {run.metrics_path.name} (a run stopped before "
                f"its first one, or of other settings): starting {what} over",
                EEWarning,
                stacklevel=2,
            )
        run.metrics_path.unlink(missing_ok=True)
        run.checkpoint_path.unlink(missing_ok=True)
        return TrainState(best=module_tensors(run.modules)), None
    state = restore(ckpt, run.modules, run.opt)
    write_metrics(run.metrics_path, state.history)
    return state, state.epoch
