"""Heads T_a / T_b: small trainable maps from an encoder's space into the shared one.

A head is described by a :class:`HeadSpec` (saved in the adapter's config) and rebuilt from it plus its
tensors. A trained head standardises its input with the training part's mean and std (stored as the
buffers ``mean`` / ``std``: VGGish's PCA output is 0..255); an identity head touches nothing, so that
a text tower sharing that space (CLIP's) still lands in the same place.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, model_validator
from torch import nn

HeadKind = Literal["identity", "linear", "mlp"]


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

    @model_validator(mode="after")
    def _check(self) -> HeadSpec:
        if self.in_dim < 1 or self.out_dim < 1:
            raise ValueError("in_dim and out_dim must be >= 1")
        if self.kind == "identity" and self.in_dim != self.out_dim:
            raise ValueError(
                f"an identity head keeps its dim: in_dim {self.in_dim} != out_dim {self.out_dim}"
            )
        if self.depth < 1:
            raise ValueError("depth (hidden layers of an mlp) must be >= 1")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError("dropout must be in [0, 1)")
        return self


class Head(nn.Module):
    """``x [n, in_dim] -> [n, out_dim]``; for a trained head, ``net((x - mean) / std)``."""

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

    def set_normalization(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        if self.trained and self.spec.normalize_input:
            self.mean.copy_(mean)
            # a constant feature would divide by zero; leave it unscaled
            self.std.copy_(torch.where(std > 1e-6, std, torch.ones_like(std)))

    def standardize(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.trained:
            return x
        return self.net(self.standardize(x))
