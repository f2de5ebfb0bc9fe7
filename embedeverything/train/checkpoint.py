"""Checkpoints: what a resumed run needs to end with the same adapter, bit for bit, as an uninterrupted one.

One safetensors file, written to a temp file and renamed (kill -9 leaves the previous one whole): the
tensors of the heads and the loss (``a.*``, ``b.*``, ``loss.*``), of the best ones so far (``best.*``),
the optimiser's state (``opt.<param>.<name>``) and torch's RNG (``rng.torch``); in its metadata, as JSON,
the fingerprint of the settings it was made with and the loop's :class:`TrainState`. The optimiser goes
in without pickle: its tensors beside the others, its param groups in the JSON.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..errors import UserError
from ..files import about_size, atomic_path, write_text_atomic
from ..store import EmbeddingArray
from .config import TrainConfig

CHECKPOINT_FILE = "checkpoint.safetensors"
METRICS_FILE = "metrics.jsonl"
#: the refit phase's own checkpoint and metrics (the selection run's stay as they were)
REFIT_CHECKPOINT_FILE = "checkpoint-refit.safetensors"
REFIT_METRICS_FILE = "metrics-refit.jsonl"

#: settings a resume may change: they change how a run goes, not what it computes
_UNFINGERPRINTED = ("checkpoint_every_s", "memory_budget", "stream")

Checkpoint = tuple[dict[str, Any], dict[str, torch.Tensor]]


@dataclass
class TrainState:
    """Where a run stands after ``epoch`` epochs; ``best`` holds the best modules' tensors (``a.*`` ...)."""

    epoch: int = 0
    best_epoch: int = 0
    bad_epochs: int = 0
    best_r1: float = -1.0
    best_val_loss: float = math.inf
    history: list[dict[str, Any]] = field(default_factory=list)
    stopped_early: bool = False
    finished: bool = False
    best: dict[str, torch.Tensor] = field(default_factory=dict)

    def add(
        self,
        record: dict[str, Any],
        modules: Mapping[str, torch.nn.Module],
        epochs: int,
        patience: int | None,
    ) -> None:
        """Take an epoch's record: keep the modules if best (R@1, then validation loss), stop if stalled.
        Without validation (a refit) the last epoch is the one kept, and nothing stops it early."""
        if "val_r1" in record:
            r1, val_loss = record["val_r1"], record["val_loss"]
            if r1 > self.best_r1 or (r1 == self.best_r1 and val_loss < self.best_val_loss):
                self.best_r1, self.best_val_loss, self.best_epoch, self.bad_epochs = (
                    r1,
                    val_loss,
                    self.epoch,
                    0,
                )
                self.best = module_tensors(modules)
            else:
                self.bad_epochs += 1
        else:
            self.best_epoch = self.epoch
        self.history.append(record)
        if patience is not None and self.bad_epochs >= patience:
            self.stopped_early = True
        if self.stopped_early or self.epoch >= epochs:
            self.finished = True


def fingerprint(
    cfg: TrainConfig, arr_a: EmbeddingArray, arr_b: EmbeddingArray, split_hash: str
) -> dict[str, Any]:
    """What a checkpoint must agree on to be resumed (the settings that change results)."""
    settings = cfg.model_dump(mode="json")
    for k in _UNFINGERPRINTED:
        settings.pop(k)
    return {"settings": settings, "a": arr_a.key, "b": arr_b.key, "split": split_hash}


def module_tensors(modules: Mapping[str, torch.nn.Module]) -> dict[str, torch.Tensor]:
    """Copies of the modules' state, keyed ``<name>.<state key>``."""
    return {
        f"{name}.{k}": v.detach().clone().contiguous()
        for name, module in modules.items()
        for k, v in module.state_dict().items()
    }


def load_module_tensors(modules: Mapping[str, torch.nn.Module], tensors: Mapping[str, torch.Tensor]) -> None:
    for name, module in modules.items():
        p = name + "."
        module.load_state_dict({k[len(p) :]: v for k, v in tensors.items() if k.startswith(p)}, strict=True)


def open_checkpoint(path: Path, fp: dict[str, Any]) -> tuple[Checkpoint | None, list[str]]:
    """The checkpoint at ``path`` if it was made with the fingerprint ``fp`` (None: there is none), and
    else what differs, in words (``lr 0.001 -> 0.0003``); UserError when the file cannot be read."""
    if not path.exists():
        return None, []
    ckpt = _read(path)
    changed = fingerprint_changes(ckpt[0]["fingerprint"], fp)
    return (None if changed else ckpt), changed


def fingerprint_changes(theirs: dict[str, Any], ours: dict[str, Any]) -> list[str]:
    """Each difference between two fingerprints as ``name old -> new``; settings by their flag's name."""
    changes = []
    for k, v in ours.items():
        old = theirs.get(k)
        if k == "settings":
            old = old or {}
            changes += [
                f"{_FLAG_NAMES.get(s, s.replace('_', '-'))} {_shown(old.get(s))} -> {_shown(v[s])}"
                for s in v
                if old.get(s) != v[s]
            ]
        elif old != v:
            what = {"a": "side a array", "b": "side b array", "split": "rows paired on both sides"}.get(k, k)
            changes.append(f"{what} {_shown(old)} -> {_shown(v)}" if k in ("a", "b") else f"{what} changed")
    return changes


#: settings whose flag is not their name with hyphens
_FLAG_NAMES = {"head_kind": "head", "loss_options": "loss-opt", "fractions": "split fractions"}


def _shown(v: Any) -> str:
    if v is None:
        return "unset"
    if isinstance(v, float):
        return f"{v:g}"
    return v if isinstance(v, str) else json.dumps(v)


def _read(path: Path) -> Checkpoint:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        return json.loads(meta["state"]), tensors
    except Exception as e:
        raise UserError(
            f"checkpoint {path} is unreadable ({type(e).__name__}: {e}); delete it to start over"
        ) from None


def restore(
    ckpt: Checkpoint, modules: Mapping[str, torch.nn.Module], opt: torch.optim.Optimizer
) -> TrainState:
    """Load a checkpoint into the modules, the optimiser and torch's RNG; the loop's state."""
    state, tensors = ckpt
    load_module_tensors(modules, tensors)
    _optimizer_from_flat(opt, tensors, state["opt_groups"])
    torch.set_rng_state(tensors["rng.torch"])
    return TrainState(
        epoch=state["epoch"],
        best_epoch=state["best_epoch"],
        bad_epochs=state["bad_epochs"],
        best_r1=state["best_r1"],
        best_val_loss=state["best_val_loss"],
        history=state["history"],
        stopped_early=state["stopped_early"],
        finished=state["finished"],
        best={k[len("best.") :]: v for k, v in tensors.items() if k.startswith("best.")},
    )


def save_checkpoint(
    path: Path,
    fp: dict[str, Any],
    st: TrainState,
    modules: Mapping[str, torch.nn.Module],
    opt: torch.optim.Optimizer,
) -> None:
    from safetensors.torch import save_file

    tensors = {
        **module_tensors(modules),
        **{f"best.{k}": v for k, v in st.best.items()},
        "rng.torch": torch.get_rng_state(),
    }
    opt_tensors, opt_groups = _optimizer_to_flat(opt)
    tensors.update(opt_tensors)
    state = {
        "fingerprint": fp,
        "epoch": st.epoch,
        "best_epoch": st.best_epoch,
        "bad_epochs": st.bad_epochs,
        "best_r1": st.best_r1,
        "best_val_loss": st.best_val_loss,
        "history": st.history,
        "stopped_early": st.stopped_early,
        "finished": st.finished,
        "opt_groups": opt_groups,
    }
    with atomic_path(path, need=about_size(tensors)) as tmp:
        save_file(tensors, str(tmp), metadata={"state": json.dumps(state)})


def write_metrics(path: Path, history: list[dict[str, Any]]) -> None:
    """The whole metrics file from ``history``: drops lines a killed run wrote after its checkpoint."""
    write_text_atomic(path, "".join(json.dumps(h) + "\n" for h in history))


def append_metrics(path: Path, record: dict[str, Any]) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


def _optimizer_to_flat(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], list[dict[str, Any]]]:
    sd = opt.state_dict()
    tensors = {}
    for idx, st in sd["state"].items():
        for k, v in st.items():
            t = v if isinstance(v, torch.Tensor) else torch.tensor(v)
            tensors[f"opt.{idx}.{k}"] = t.detach().clone().contiguous()
    groups = json.loads(
        json.dumps(sd["param_groups"], default=lambda o: list(o) if isinstance(o, tuple) else str(o))
    )
    return tensors, groups


def _optimizer_from_flat(
    opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], groups: list[dict]
) -> None:
    state: dict[int, dict[str, torch.Tensor]] = {}
    for name, t in tensors.items():
        if name.startswith("opt."):
            _, idx, k = name.split(".", 2)
            state.setdefault(int(idx), {})[k] = t
    for g in groups:
        if isinstance(g.get("betas"), list):
            g["betas"] = tuple(g["betas"])
    opt.load_state_dict({"state": state, "param_groups": groups})
