"""Symmetric InfoNCE, the CLIP loss (Radford et al. 2021): each item's pair against the batch, both ways.

``za [B, Da]``, ``zb [B, Db]`` (``Da == Db``): ``loss = (CE(s A B^T, I) + CE(s B A^T, I)) / 2`` on the
normalised ``A``, ``B``, with a learnable scale ``s = 1 / temperature``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import UserError
from .base import HeadPair, Loss
from .clip_folded_grad import ClipIdentityLinear
from .clip_infonce_grad import NO_SHIFT_MAX_SCALE, ClipInfoNCE, Workspace, clip_infonce_reference
from .scale import LearnableScale


def bf16_matmul_supported() -> bool:
    """Whether this CPU runs bf16 matmuls natively (avx512_bf16 / AMX), so bf16 pays off."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except Exception:
        return False


def resolve_precision(precision: str) -> torch.dtype:
    """The matmul dtype of the hand-written gradient: bf16 where asked, or where ``auto`` and it pays off."""
    if precision not in ("auto", "bf16", "fp32"):
        raise UserError(f"loss option precision={precision!r}: expected auto, bf16 or fp32")
    if precision == "bf16" or (precision == "auto" and bf16_matmul_supported()):
        return torch.bfloat16
    return torch.float32


class ClipLoss(Loss):
    """Symmetric InfoNCE with a learnable temperature.

    ``fast`` uses the hand-written gradient (:class:`.clip_infonce_grad.ClipInfoNCE`), else autograd on
    the formula; ``precision`` is its matmul dtype; ``compile`` fuses its elementwise passes with
    torch.compile. The trainer's ``precision`` and ``compile`` settings reach it unless given as options.
    """

    train_settings = frozenset({"precision", "compile"})

    def __init__(
        self,
        temperature: float = 0.07,
        learnable: bool = True,
        max_scale: float = 100.0,
        fast: bool = True,
        precision: str = "auto",
        compile: bool = False,
    ):
        super().__init__()
        self.scale = LearnableScale(float(temperature), bool(learnable), float(max_scale))
        self.fast = bool(fast)
        self.dtype = resolve_precision(precision)
        self._ws = Workspace()
        self.compiled = bool(compile)

    def forward(self, za: torch.Tensor, zb: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        za, zb = F.normalize(za.float(), dim=-1), F.normalize(zb.float(), dim=-1)
        s = self.scale.scale()
        if self.fast:
            return ClipInfoNCE.apply(za, zb, s, self.dtype, self._ws, self.compiled)
        return clip_infonce_reference(za, zb, s)

    def step(
        self, heads: HeadPair, xa: torch.Tensor, xb: torch.Tensor, labels: torch.Tensor | None
    ) -> torch.Tensor:
        """The plain step, or the linear head folded into the logits where :meth:`folded_side` allows."""
        side = self.folded_side(heads)
        if side is not None and self.folds_linear_head():
            z_id, x, head = (xa, xb, heads.b) if side == "b" else (xb, xa, heads.a)
            linear = head.net
            assert isinstance(linear, nn.Linear)  # a "linear" head's net, by HeadSpec
            return self.identity_linear(z_id, head.standardize(x), linear)
        return super().step(heads, xa, xb, labels)

    def folded_side(self, heads: HeadPair) -> str | None:
        """The side whose linear head folds into the logits, or None.

        It folds when the other side is identity and its input is narrower than the shared space (the
        paper's VGGish 128 -> CLIP 512), the heads run uncompiled (the fold bypasses their forward), and
        :meth:`forward` is this class's (the fold computes this loss, not a subclass's variant of it).
        """
        if type(self).forward is not ClipLoss.forward or heads.compiled:
            return None
        for side, mine, other in (("b", heads.b.spec, heads.a.spec), ("a", heads.a.spec, heads.b.spec)):
            if other.kind == "identity" and mine.kind == "linear" and mine.in_dim + 1 < mine.out_dim:
                return side
        return None

    def folds_linear_head(self) -> bool:
        """Whether :meth:`identity_linear` applies now (bf16 on this CPU, scale in the no-shift range)."""
        return (
            self.fast
            and not self.compiled
            and self.dtype == torch.bfloat16
            and float(self.scale.log_scale.detach().exp()) <= NO_SHIFT_MAX_SCALE
        )

    def identity_linear(self, z_identity: torch.Tensor, x: torch.Tensor, linear: nn.Linear) -> torch.Tensor:
        """The loss of an identity side ``[B, Da]`` against ``linear(x)``, ``x [B, Din]``, folded.

        Equal to ``forward(z_identity, linear(x))`` (the loss is symmetric in its two sides) at a
        quarter of the matmul work when ``x`` has a quarter of the identity side's dim (VGGish vs CLIP).
        """
        za = F.normalize(z_identity.float(), dim=-1)
        return ClipIdentityLinear.apply(
            za, x.float(), linear.weight, linear.bias, self.scale.scale(), self._ws
        )

    def post_step(self) -> None:
        self.scale.post_step()

    def summary(self) -> dict[str, float]:
        return self.scale.summary()
