"""Adapters: the trained heads as ONE self-contained ``.safetensors`` file, and loading them back.

The file holds the tensors of both heads (``a.*``, ``b.*``; an identity side has none) and two metadata
entries: ``embedeverything`` (the JSON of :class:`AdapterConfig`) and ``embedeverything.sha256`` (a hash
over that JSON and every tensor's name, dtype, shape and bytes; safetensors has no checksum of its own).
No pickle anywhere. See docs/adapter-format.md.

Version policy (written down, as peft does for its configs): ``format_version`` grows whenever a field is
added or its meaning changes. This code reads every version up to :data:`FORMAT_VERSION` (older ones are
migrated on load) and refuses a newer one with a message saying to upgrade embedeverything, rather than
guessing at fields it does not know. Unknown fields within a known version are refused too.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, ValidationError
from torch import nn

from .encoder import EncoderIdentity
from .errors import EEWarning, UserError, field_errors
from .files import about_size, atomic_path
from .heads import Head, HeadSpec

#: 2: ``head.anchors`` (an anchor part fused with a trained head); ``training.refit_epochs`` and
#: ``training.anchors``; ``rows`` / ``row_ids_sha256`` are those of the rows the final heads were fitted on.
#: 3: ``training.store`` of a local store is relative to the adapter's folder (before: to the folder training
#: ran in), and ``training.store_absolute`` keeps the absolute path as well
FORMAT_VERSION = 3
META_CONFIG = "embedeverything"
META_HASH = "embedeverything.sha256"
#: fields that differ between two otherwise identical runs (a resumed one and an uninterrupted one)
TIMING_FIELDS = ("trained_at", "train_seconds")


class SideConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    identity: EncoderIdentity
    array: str  # the store array it was trained on
    head: HeadSpec


class LossSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    plugin: str = ""
    options: dict[str, Any] = {}
    # learned values at the end (logit_scale, temperature, bias...)
    learned: dict[str, float] = {}


class TrainingInfo(BaseModel):
    model_config = ConfigDict(extra="forbid")

    store: str  # a URL, or (format 3) a local path relative to the adapter's folder
    store_absolute: str | None = None  # a local store's absolute path when trained
    rows: int  # pairs the final heads were fitted on: the train part, or train + val after a refit
    row_ids_sha256: str  # over the ids of those rows, in row order
    split: dict[str, Any]  # seed, source, fractions, counts
    settings: dict[str, Any]  # the TrainConfig, as given
    epochs_run: int  # of the selection run (train part, early stopping on validation)
    best_epoch: int
    stopped_early: bool
    ee_version: str
    refit_epochs: int | None = None  # epochs of the refit on train + val; None: no refit
    anchors: dict[str, Any] | None = None  # the anchor part chosen on validation (settings, scores)
    trained_at: str | None = None
    train_seconds: float | None = None


class AdapterConfig(BaseModel):
    """Everything needed to use, check and reproduce an adapter; one JSON entry of the file."""

    model_config = ConfigDict(extra="forbid")

    format_version: int = FORMAT_VERSION
    shared_dim: int
    a: SideConfig
    b: SideConfig
    loss: LossSpec
    metrics: dict[str, float] = {}
    training: TrainingInfo

    def without_timing(self) -> dict[str, Any]:
        d = self.model_dump(mode="json")
        for f in TIMING_FIELDS:
            d["training"].pop(f, None)
        return d


def _digest(config_json: str, tensors: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    h.update(b"ee-adapter\0")
    h.update(config_json.encode())
    for name in sorted(tensors):
        t = tensors[name].contiguous()
        h.update(f"\0{name}\0{t.dtype}\0{tuple(t.shape)}\0".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return "sha256:" + h.hexdigest()


def head_tensors(side: str, head: Head) -> dict[str, torch.Tensor]:
    return {f"{side}.{k}": v.detach().clone().contiguous() for k, v in head.state_dict().items()}


def save_adapter(path: str | os.PathLike[str], config: AdapterConfig, head_a: Head, head_b: Head) -> Path:
    """Write the adapter atomically (temporary file, then rename): a reader never sees half a file."""
    from safetensors.torch import save_file

    tensors = {**head_tensors("a", head_a), **head_tensors("b", head_b)}
    config_json = config.model_dump_json()
    meta = {META_CONFIG: config_json, META_HASH: _digest(config_json, tensors)}
    path = Path(path)
    with atomic_path(path, need=about_size(tensors)) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
    return path


def read_adapter_file(path: str | os.PathLike[str]) -> tuple[AdapterConfig, dict[str, torch.Tensor]]:
    """Config and tensors of an adapter file, every check applied (hash, version, fields, finiteness)."""
    from safetensors import safe_open

    p = Path(path)
    if not p.is_file():
        raise UserError(f"no adapter file at {p} (train one with `ee train`)")
    try:
        with safe_open(str(p), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:
        raise UserError(f"{p} is not a readable safetensors file: {type(e).__name__}: {e}") from None
    config_json = meta.get(META_CONFIG)
    if config_json is None:
        raise UserError(f"{p}: metadata has no {META_CONFIG!r} entry; not an embedeverything adapter")
    try:
        raw = json.loads(config_json)
    except ValueError as e:
        raise UserError(f"{p}: metadata {META_CONFIG!r} is not JSON ({e})") from None
    version = raw.get("format_version") if isinstance(raw, dict) else None
    if not isinstance(version, int) or version < 1:
        raise UserError(f"{p}: format_version is {version!r}; expected a positive integer")
    if version > FORMAT_VERSION:
        raise UserError(
            f"{p}: format_version {version} is newer than this embedeverything reads ({FORMAT_VERSION}); "
            "upgrade embedeverything to load it"
        )
    expected = meta.get(META_HASH)
    actual = _digest(config_json, tensors)
    if expected != actual:
        raise UserError(
            f"{p}: {META_HASH} does not match the file's tensors and config (tampered or corrupt); "
            f"stored {expected}, computed {actual}"
        )
    try:
        config = AdapterConfig.model_validate(raw)
    except ValidationError as e:
        raise UserError(f"{p}: bad adapter config: {field_errors(e)}") from None
    # an older version is migrated: the fields it lacks took their defaults (no anchors, no refit); its
    # store path was relative to where training ran, which resolve_store_location still tries
    config.format_version = FORMAT_VERSION
    for name, t in tensors.items():
        if t.is_floating_point() and not torch.isfinite(t).all():
            raise UserError(f"{p}: tensor {name!r} holds NaN or infinite values; the adapter is unusable")
    return config, tensors


class AdapterSide(nn.Module):
    """One side's map into the shared space; checks the input's dim against the config."""

    def __init__(self, side: str, config: SideConfig, head: Head):
        super().__init__()
        self.side, self.config, self.head = side, config, head

    @property
    def in_dim(self) -> int:
        return self.config.head.in_dim

    def forward(self, x: Any) -> Any:
        as_numpy = isinstance(x, np.ndarray)
        t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)) if as_numpy else x
        if t.ndim not in (1, 2) or t.shape[-1] != self.in_dim:
            raise UserError(
                f"adapter side {self.side} ({self.config.identity.name}) takes [n, {self.in_dim}] inputs "
                f"({self.side}.identity.dim = {self.config.identity.dim}); got shape {tuple(t.shape)}"
            )
        with torch.no_grad():
            out = self.head(t.float())
        return out.numpy() if as_numpy else out


class Adapter(nn.Module):
    """A loaded adapter: ``.a(x)`` and ``.b(x)`` map each encoder's embeddings into the shared space.

    The outputs are not normalised: compare them by cosine, as training did. (With an anchor part they
    are unit vectors by construction.)
    """

    def __init__(self, config: AdapterConfig, head_a: Head, head_b: Head, path: str = ""):
        super().__init__()
        self.config, self.path = config, path
        self.a = AdapterSide("a", config.a, head_a)
        self.b = AdapterSide("b", config.b, head_b)
        self.eval()

    @property
    def logit_scale(self) -> float | None:
        return self.config.loss.learned.get("logit_scale")

    def __repr__(self) -> str:
        c = self.config
        return (
            f"<Adapter {c.a.identity.name}[{c.a.head.kind}] + {c.b.identity.name}[{c.b.head.kind}] "
            f"-> {c.shared_dim}-d, loss {c.loss.name}>"
        )


def _build_head(side: str, spec: HeadSpec, tensors: dict[str, torch.Tensor], path: str) -> Head:
    head = Head(spec)
    prefix = f"{side}."
    state = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
    missing, unexpected = head.state_dict().keys() - state.keys(), state.keys() - head.state_dict().keys()
    if missing or unexpected:
        raise UserError(
            f"{path}: tensors of side {side} do not fit {side}.head ({spec.kind}): "
            f"missing {sorted(missing)}, unexpected {sorted(unexpected)}"
        )
    for k, v in head.state_dict().items():
        if tuple(state[k].shape) != tuple(v.shape):
            raise UserError(
                f"{path}: tensor {prefix}{k} has shape {tuple(state[k].shape)}, {side}.head says {tuple(v.shape)}"
            )
    std = state.get("std")
    if std is not None and not bool((std > 0).all()):
        # a file edited and its hash recomputed passes the integrity check; this would divide by zero
        raise UserError(f"{path}: tensor {side}.std holds values <= 0; the head would divide by them")
    head.load_state_dict(state, strict=True)
    return head


def _check_dims(path: str, config: AdapterConfig) -> None:
    """Each side takes its encoder's dim and returns ``shared_dim``; the anchor parts agree."""
    for side in ("a", "b"):
        sc: SideConfig = getattr(config, side)
        if sc.head.in_dim != sc.identity.dim:
            raise UserError(
                f"{path}: {side}.head.in_dim ({sc.head.in_dim}) != {side}.identity.dim ({sc.identity.dim})"
            )
        if sc.head.output_dim != config.shared_dim:
            extra = f" + {side}.head.anchors.count ({sc.head.anchors.count})" if sc.head.anchors else ""
            raise UserError(
                f"{path}: {side}.head.out_dim ({sc.head.out_dim}){extra} != shared_dim ({config.shared_dim})"
            )
    if config.a.head.anchors != config.b.head.anchors:
        raise UserError(
            f"{path}: a.head.anchors ({config.a.head.anchors}) != b.head.anchors ({config.b.head.anchors}); "
            "both sides' anchor parts must use the same anchor pairs and settings"
        )


def load_adapter(path: str | os.PathLike[str]) -> Adapter:
    """Load and check an adapter; refuses a tampered file, a newer format or bad weights by name."""
    config, tensors = read_adapter_file(path)
    _check_dims(str(path), config)
    if config.a.identity.weights == "random-init" or config.b.identity.weights == "random-init":
        warnings.warn(
            f"adapter {path} was trained on embeddings of RANDOM encoder weights", EEWarning, stacklevel=2
        )
    ha = _build_head("a", config.a.head, tensors, str(path))
    hb = _build_head("b", config.b.head, tensors, str(path))
    return Adapter(config, ha, hb, str(path))
