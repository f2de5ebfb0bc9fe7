"""Heads T_a / T_b: small trainable maps from an encoder's space into the shared one.

A head is described by a :class:`HeadSpec` (saved in the adapter's config) and rebuilt from it plus its
tensors. A trained head standardises its input with the training part's mean and std (stored as the
buffers ``mean`` / ``std``: VGGish's PCA output is 0..255); an identity head touches nothing, so that
a text tower sharing that space (CLIP's) still lands in the same place.

A trained head may carry an **anchor part** (:class:`AnchorSpec`): the ASIF-style relative representation
of its input (Norelli et al. 2023) against ``m`` anchor items of its own side, fused with the learned map:
``out(x) = [sqrt(1 - w) * normalize(net(x)), sqrt(w) * rel(x)]``. Both sides of an adapter hold the same
anchor pairs in the same order, so their relative vectors share one m-dim space and ``out_a . out_b =
(1 - w) cos(net_a, net_b) + w rel_a . rel_b``. :func:`relative_representation` is the one implementation,
used by the heads and by the ``asif`` baseline of ``ee eval`` alike.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, model_validator
from torch import nn

HeadKind = Literal["identity", "linear", "mlp"]

#: ASIF's settings (Norelli et al. 2023): top-k kept per row, the power the kept values are raised to,
#: and at most this many anchors (a seeded subsample of the pool beyond it)
ASIF_KS = (16, 64, 256, 800)
ASIF_POWERS = (1.0, 4.0, 8.0)
ASIF_MAX_ANCHORS = 4000


def anchor_pick(n: int, seed: int = 0, most: int = ASIF_MAX_ANCHORS) -> np.ndarray:
    """Positions (sorted) of the anchors among ``n`` pool rows: all of them, or a seeded subsample."""
    if n <= most:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, most, replace=False))


def anchor_topk(x: torch.Tensor, anchors: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Cosine of centred ``x [n, d]`` to ``anchors [m, d]`` (centred, unit rows): the top ``k`` per row,
    sorted (so the top k' < k are the first k' columns), as (values, indices) ``[n, k]``."""
    sims = F.normalize(x.float(), dim=-1) @ anchors.T  # [n, m]
    top = torch.topk(sims, k, dim=-1)
    return top.values, top.indices


def sparse_relative(values: torch.Tensor, indices: torch.Tensor, k: int, p: float, m: int) -> torch.Tensor:
    """``[n, m]`` unit rows: the first ``k`` of each row's top values clamped at 0, to the power ``p``,
    at their anchors' columns, zeros elsewhere."""
    vals = values[:, :k].clamp(min=0) ** p
    out = torch.zeros(values.shape[0], m, dtype=vals.dtype).scatter_(1, indices[:, :k], vals)
    return F.normalize(out, dim=-1)


def relative_representation(x: torch.Tensor, anchors: torch.Tensor, k: int, p: float) -> torch.Tensor:
    """ASIF's relative representation of centred ``x [n, d]`` against ``anchors [m, d]``: ``[n, m]``."""
    return sparse_relative(*anchor_topk(x, anchors, k), k, p, anchors.shape[0])


class AnchorSpec(BaseModel):
    """A head's anchor part: ``count`` anchors, top ``k`` kept, raised to ``power``, fused at ``weight``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    count: int
    k: int
    power: float
    weight: float

    @model_validator(mode="after")
    def _check(self) -> AnchorSpec:
        if self.count < 1 or not 1 <= self.k <= self.count:
            raise ValueError(f"anchors need count >= 1 and 1 <= k <= count (count {self.count}, k {self.k})")
        if not self.power > 0:
            raise ValueError("anchors.power must be > 0")
        if not 0.0 < self.weight < 1.0:
            raise ValueError("anchors.weight must be in (0, 1) (no anchor part: anchors null)")
        return self


class HeadSpec(BaseModel):
    """What one head is: kind, dims and (for mlp) width, depth (hidden layers) and dropout."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: HeadKind
    in_dim: int
    out_dim: int
    width: int | None = None
    depth: int = 1
    dropout: float = 0.0
    normalize_input: bool = True
    anchors: AnchorSpec | None = None  # format_version 2

    @property
    def output_dim(self) -> int:
        """The dim of what the head returns: ``out_dim`` (the learned map's), plus the anchor count."""
        return self.out_dim + (self.anchors.count if self.anchors is not None else 0)

    @model_validator(mode="after")
    def _check(self) -> HeadSpec:
        if self.in_dim < 1 or self.out_dim < 1:
            raise ValueError("in_dim and out_dim must be >= 1")
        if self.kind == "identity" and self.in_dim != self.out_dim:
            raise ValueError(
                f"an identity head keeps its dim: in_dim {self.in_dim} != out_dim {self.out_dim}"
            )
        if self.kind == "identity" and self.anchors is not None:
            raise ValueError("an identity head has no anchor part (its output is its input)")
        if self.depth < 1:
            raise ValueError("depth (hidden layers of an mlp) must be >= 1")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError("dropout must be in [0, 1)")
        return self


class Head(nn.Module):
    """``x [n, in_dim] -> [n, output_dim]``; for a trained head, ``net((x - mean) / std)``, fused with the
    relative representation of ``x - anchor_mean`` against the buffer ``anchors`` when it has an anchor part."""

    def __init__(self, spec: HeadSpec):
        super().__init__()
        self.spec = spec
        self.trained = spec.kind != "identity"
        if not self.trained:
            self.net: nn.Module = nn.Identity()
            return
        self.register_buffer("mean", torch.zeros(spec.in_dim))
        self.register_buffer("std", torch.ones(spec.in_dim))
        if spec.kind == "linear":
            self.net = nn.Linear(spec.in_dim, spec.out_dim)
        else:
            width = spec.width or max(spec.in_dim, spec.out_dim)
            layers: list[nn.Module] = []
            d = spec.in_dim
            for _ in range(spec.depth):
                layers += [nn.Linear(d, width), nn.GELU()]
                if spec.dropout:
                    layers.append(nn.Dropout(spec.dropout))
                d = width
            layers.append(nn.Linear(d, spec.out_dim))
            self.net = nn.Sequential(*layers)
        if spec.anchors is not None:
            self.register_buffer("anchor_mean", torch.zeros(spec.in_dim))
            self.register_buffer("anchors", torch.zeros(spec.anchors.count, spec.in_dim))

    def set_normalization(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        if self.trained and self.spec.normalize_input:
            self.mean.copy_(mean)
            # a constant feature would divide by zero; leave it unscaled
            self.std.copy_(torch.where(std > 1e-6, std, torch.ones_like(std)))

    def standardize(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def relative(self, x: torch.Tensor) -> torch.Tensor:
        """The anchor part's relative representation of ``x [n, in_dim]``: ``[n, count]`` unit rows."""
        a = self.spec.anchors
        assert a is not None
        return relative_representation(x - self.anchor_mean, self.anchors, a.k, a.power)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.trained:
            return x
        h = self.net(self.standardize(x))
        a = self.spec.anchors
        if a is None:
            return h
        flat = x.reshape(-1, x.shape[-1])
        rel = self.relative(flat).reshape(*x.shape[:-1], a.count)
        return torch.cat([math.sqrt(1.0 - a.weight) * F.normalize(h, dim=-1), math.sqrt(a.weight) * rel], -1)


def with_anchors(head: Head, spec: AnchorSpec, mean: torch.Tensor, anchors: torch.Tensor) -> Head:
    """A copy of trained ``head`` with an anchor part: centring ``mean [in_dim]``, ``anchors [count, in_dim]``
    (the pool's rows centred with ``mean`` and L2-normalised)."""
    if not head.trained:
        raise ValueError("an identity head has no anchor part")
    out = Head(HeadSpec.model_validate({**head.spec.model_dump(), "anchors": spec.model_dump()}))
    state = {**head.state_dict(), "anchor_mean": mean.float(), "anchors": anchors.float()}
    out.load_state_dict(state, strict=True)
    return out.eval()
