"""Training settings: the defaults, and the paper's settings as a preset. Every field is a CLI flag.

Defaults are chosen to work from a few hundred pairs to millions: a batch that gives several steps per
epoch on a small set (``min(256, max(16, n_train // 8))``), a shared dim of 1024 up to 10,000 training
pairs and 256 above (:func:`auto_dim`), AdamW at lr 1e-3, up to 200 epochs with early
stopping on validation R@1; then an anchor part chosen on validation (``anchors="auto"``) and a refit
from scratch on train + validation for the epochs that early stopping chose (``refit=True``). The
paper's run (``preset="paper"``) is Adam, lr 1e-4, batch 4096, shared dim 256, 300 epochs, no early
stopping, the CLIP loss with a learnable temperature initialised at 0.07, no anchors and no refit.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from ..errors import UserError, field_errors

HeadChoice = Literal["auto", "identity", "linear", "mlp"]


class TrainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    preset: Literal["default", "paper"] = "default"
    # heads: "auto" keeps a side whose encoder shares a space with a text tower (CLIP's) as identity
    head_a: HeadChoice = "auto"
    head_b: HeadChoice = "auto"
    head_kind: Literal["linear", "mlp"] = "linear"  # what "auto" trains
    # the shared dim when no side stays identity; "auto": :func:`auto_dim` of the training pair count
    dim: int | Literal["auto"] = "auto"
    mlp_width: int | None = None
    mlp_depth: int = 1
    dropout: float = 0.0
    loss: str = "clip"
    loss_options: dict[str, Any] = {}
    optimizer: Literal["adam", "adamw"] = "adamw"
    lr: float = 1e-3
    weight_decay: float = 0.01
    batch_size: int | None = None  # None: min(256, max(16, n_train // 8))
    epochs: int = 200
    patience: int | None = 20  # epochs without a better validation R@1 before stopping; None: never
    seed: int = 0
    fractions: tuple[float, float, float] = (0.57, 0.10, 0.33)  # train, val, test
    val_max_rows: int = 20000  # R@1 is measured against this many validation rows at most
    precision: Literal["auto", "bf16", "fp32"] = "auto"  # matmuls of the loss (where it supports it)
    compile: bool = False  # torch.compile the heads and the loss's elementwise passes (slow to start)
    checkpoint_every_s: float = 30.0  # 0: after every epoch
    stream: bool | None = None  # None: stream when the train part exceeds memory_budget
    memory_budget: int | None = None  # bytes; None: half the memory available
    threads: int | None = None  # torch threads (results depend on it; a resume keeps it)
    # after early stopping: train again from scratch on train + val for the best epoch count
    refit: bool = True
    # "auto": an ASIF-style anchor part fused with both heads, settings (or none) chosen on validation
    anchors: Literal["auto", "off"] = "auto"

    @field_validator("lr", "dim", "epochs", "val_max_rows", "mlp_depth")
    @classmethod
    def _positive(cls, v: Any) -> Any:
        if v is not None and v != "auto" and not v > 0:
            raise ValueError("must be > 0")
        return v

    @field_validator("batch_size", "patience", "memory_budget", "threads")
    @classmethod
    def _positive_or_none(cls, v: Any) -> Any:
        if v is not None and not v > 0:
            raise ValueError("must be > 0 (or unset)")
        return v


PRESETS: dict[str, dict[str, Any]] = {
    "default": {},
    "paper": {
        "optimizer": "adam",
        "lr": 1e-4,
        "weight_decay": 0.0,
        "batch_size": 4096,
        "epochs": 300,
        "patience": None,
        "loss": "clip",
        "loss_options": {"temperature": 0.07, "max_scale": 100.0},
        "head_kind": "linear",
        "dim": 256,
        "fractions": (0.60, 0.07, 0.33),
        "refit": False,
        "anchors": "off",
    },
}


def make_config(preset: str = "default", **overrides: Any) -> TrainConfig:
    """A preset with the given fields overridden; errors name the field."""
    if preset not in PRESETS:
        raise UserError(f"unknown preset {preset!r}; presets: {', '.join(PRESETS)}")
    try:
        return TrainConfig(**{**PRESETS[preset], "preset": preset, **overrides})
    except ValidationError as e:
        raise UserError(f"bad training setting: {field_errors(e)}") from None


#: ``dim="auto"``: the wide shared dim up to this many training pairs, the narrow one above
AUTO_DIM_PAIRS = 10_000
AUTO_DIM_WIDE, AUTO_DIM_NARROW = 1024, 256


def auto_dim(dim: int | str, n_train: int) -> int:
    """The shared dim of a run with ``n_train`` training pairs: ``dim`` when given; for ``"auto"`` a wide
    space for few pairs and a narrow one for many. On a few thousand pairs the wider linear heads give a
    better R@1 (measured on real image+caption sets, docs/evaluation.md); on many pairs the narrow space
    keeps each epoch, the anchor grid and the adapter cheap."""
    if dim != "auto":
        return int(dim)
    return AUTO_DIM_WIDE if n_train <= AUTO_DIM_PAIRS else AUTO_DIM_NARROW


def auto_batch_size(n_train: int) -> int:
    return min(256, max(16, n_train // 8), n_train)
