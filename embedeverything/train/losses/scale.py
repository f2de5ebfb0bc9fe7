"""The learnable logit scale shared by the losses that have a temperature.

Convention as open_clip's: ``logit_scale = 1 / temperature``, stored as its log, clamped to
``[1, max_scale]`` after every optimiser step.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ...errors import UserError


class LearnableScale(nn.Module):
    """``log_scale`` parameter shared by the losses that have a temperature."""

    def __init__(self, temperature: float, learnable: bool, max_scale: float):
        super().__init__()
        if not (temperature > 0 and math.isfinite(temperature)):
            raise UserError(f"loss option temperature={temperature!r}: expected a positive number")
        if not max_scale > 0:
            raise UserError(f"loss option max_scale={max_scale!r}: expected a positive number")
        self.max_log_scale = math.log(max_scale)
        self.log_scale = nn.Parameter(
            torch.tensor(min(math.log(1.0 / temperature), self.max_log_scale)), requires_grad=learnable
        )

    def scale(self) -> torch.Tensor:
        return self.log_scale.exp()

    @torch.no_grad()
    def post_step(self) -> None:
        # open_clip clamps the parameter itself after the step (not the forward value), so the
        # gradient never vanishes at the bound.
        self.log_scale.clamp_(0.0, self.max_log_scale)

    def summary(self) -> dict[str, float]:
        s = float(self.log_scale.detach().exp())
        return {"logit_scale": s, "temperature": 1.0 / s}
