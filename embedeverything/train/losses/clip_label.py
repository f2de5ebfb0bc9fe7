"""CLIP loss without false negatives: two items of the same label are not each other's negatives.

The symmetric InfoNCE of :mod:`.clip` where, for row i, the softmax runs over its own pair and the items
whose label differs from i's. ``za [B, D]``, ``zb [B, D]``, ``labels [B]`` int64 (-1 unknown: an unknown
label is never the same as another); without labels it is exactly :class:`.clip.ClipLoss`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .clip import ClipLoss


class LabelAwareClipLoss(ClipLoss):
    """CLIP loss that masks same-label negatives; options as :class:`.clip.ClipLoss`."""

    def forward(self, za: torch.Tensor, zb: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if labels is None:
            return super().forward(za, zb)
        za, zb = F.normalize(za.float(), dim=-1), F.normalize(zb.float(), dim=-1)
        s = self.scale.scale()
        logits = s * za @ zb.t()  # [B, B]
        same = (labels[:, None] == labels[None, :]) & (labels[:, None] >= 0)  # [B, B]
        same.fill_diagonal_(False)
        logits = logits.masked_fill(same, float("-inf"))
        target = torch.arange(za.shape[0], device=za.device)
        return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target))
