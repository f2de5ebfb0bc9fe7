"""Hinge loss on the hardest negative of each item, both ways (VSE++, Faghri et al. 2018, the MH loss).

``za [B, D]``, ``zb [B, D]``, ``s_ij`` the cosine of ``a_i`` and ``b_j``:
``loss = mean_i [max_{j!=i} (m + s_ij - s_ii)]_+ + mean_j [max_{i!=j} (m + s_ij - s_jj)]_+``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ...errors import UserError
from .base import Loss


class VseHingeLoss(Loss):
    """VSE++ hinge with margin ``m``; no learnable parameters."""

    def __init__(self, margin: float = 0.2):
        super().__init__()
        if not margin >= 0:
            raise UserError(f"loss option margin={margin!r}: expected a number >= 0")
        self.margin = float(margin)

    def forward(self, za: torch.Tensor, zb: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        za, zb = F.normalize(za.float(), dim=-1), F.normalize(zb.float(), dim=-1)
        sim = za @ zb.t()  # [B, B]
        pos = sim.diagonal()  # [B]
        off = torch.eye(sim.shape[0], dtype=torch.bool, device=sim.device)
        cost_b = (self.margin + sim - pos[:, None]).masked_fill(off, 0.0).clamp_min(0)  # a_i vs other b
        cost_a = (self.margin + sim - pos[None, :]).masked_fill(off, 0.0).clamp_min(0)  # b_j vs other a
        return cost_b.max(dim=1).values.mean() + cost_a.max(dim=0).values.mean()
