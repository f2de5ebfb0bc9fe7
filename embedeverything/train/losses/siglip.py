"""Sigmoid loss (SigLIP, Zhai et al. 2023, eq. 1): every pair of the batch is its own binary problem.

``za [B, D]``, ``zb [B, D]``: ``loss = -1/B sum_ij log sigmoid(z_ij (t a_i.b_j + bias))`` on the normalised
rows, ``z_ij = 1`` on the diagonal and -1 elsewhere; learnable ``t`` (init 1/temperature = 10) and
``bias`` (init -10), as in the paper.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .base import Loss
from .scale import LearnableScale


class SigLipLoss(Loss):
    """Sigmoid loss with a learnable temperature and bias."""

    def __init__(
        self, temperature: float = 0.1, bias: float = -10.0, learnable: bool = True, max_scale: float = 100.0
    ):
        super().__init__()
        self.scale = LearnableScale(float(temperature), bool(learnable), float(max_scale))
        self.bias = nn.Parameter(torch.tensor(float(bias)), requires_grad=bool(learnable))

    def forward(self, za: torch.Tensor, zb: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        za, zb = F.normalize(za.float(), dim=-1), F.normalize(zb.float(), dim=-1)
        logits = self.scale.scale() * za @ zb.t() + self.bias  # [B, B]
        sign = 2.0 * torch.eye(za.shape[0], device=za.device) - 1.0  # [B, B]
        return -F.logsigmoid(sign * logits).sum() / za.shape[0]

    def post_step(self) -> None:
        self.scale.post_step()

    def summary(self) -> dict[str, float]:
        return {**self.scale.summary(), "bias": float(self.bias.detach())}
