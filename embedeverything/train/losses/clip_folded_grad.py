"""The CLIP loss of an identity side against a linear head, the head folded into the logits.

Same loss as :mod:`.clip_infonce_grad` (Radford et al. 2021), with ``zb = normalize(x W^T + b)``:
:func:`clip_identity_linear_reference` computes it through autograd, :class:`ClipIdentityLinear` by
hand with the ``[B, B]`` matmuls over the head's input dim, and tests/test_losses.py checks the one
against the other.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .clip_infonce_grad import Workspace, clip_infonce_reference


class ClipIdentityLinear(torch.autograd.Function):
    """The CLIP loss of an identity side against a linear head, with the head folded into the logits.

    ``za``: the identity side, normalised ``[B, Da]``; ``x``: the head's standardised input ``[B, Din]``;
    ``weight`` ``[Da, Din]``, ``bias`` ``[Da]``. With ``u = x W^T + b`` and ``n = |u|``,
    ``cos_ij = za_i . u_j / n_j = ([za W, za b]_i . [x, 1]_j) / n_j``: the ``[B, B]`` matmuls run over
    ``Din + 1`` (VGGish's 128) instead of ``Da`` (CLIP's 512), forward and backward. The gradient wrt
    ``u_j`` is ``(k s / n_j) ((G^T za)_j - w_j zb_j)`` with ``w_j = sum_i G_ij cos_ij``; summed against
    ``x_j`` it needs only ``G @ [x, 1] / n`` and ``G^T @ [za W, za b]``, both ``[B, Din + 1]``.
    Same arithmetic as the lean path of :class:`ClipInfoNCE` otherwise (bf16, no shift, exact positives).
    """

    @staticmethod
    def forward(
        ctx: Any,
        za: torch.Tensor,
        x: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor,
        s: torch.Tensor,
        ws: Workspace,
    ) -> torch.Tensor:
        b, din = x.shape
        sv = float(s)
        u = F.linear(x, weight, bias)  # [B, Da]
        n = u.norm(dim=1).clamp_min(1e-12)  # [B]
        zb = u / n[:, None]
        # [B, K]: K = Din + 1 padded with zero columns to a multiple of 16 (oneDNN's bf16 blocking)
        pad = -(din + 1) % 16
        m_aug = torch.cat([za @ weight, (za @ bias)[:, None], torch.zeros(b, pad)], dim=1)
        x_aug = torch.cat([x, torch.ones(b, 1), torch.zeros(b, pad)], dim=1) / n[:, None]
        a_l, x_l = (m_aug * sv).to(torch.bfloat16), x_aug.to(torch.bfloat16)
        e = torch.mm(a_l, x_l.t(), out=ws.get("l", (b, b), torch.bfloat16)).exp_()  # exp(s cos) [B, B]
        diag = (za * zb).sum(1) * sv  # exact positives, fp32 [B]
        e_diag = torch.exp(diag)
        e.diagonal().zero_()  # the positives enter exactly (see ClipInfoNCE's lean path)
        off_r, off_c = e.sum(1).float(), e.sum(0).float()
        loss_r, loss_c = torch.log1p(off_r / e_diag), torch.log1p(off_c / e_diag)
        loss = 0.5 * (loss_r.mean() + loss_c.mean())
        log_rows, log_cols = diag + loss_r, diag + loss_c
        ctx.save_for_backward(za, x, zb, n, x_aug, a_l, x_l, s, log_rows, log_cols, off_r, off_c)
        ctx.ws, ctx.e, ctx.din = ws, e, din
        return loss

    @staticmethod
    def backward(ctx: Any, gout: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        za, x, zb, n, x_aug, a_l, x_l, s, log_rows, log_cols, off_r, off_c = ctx.saved_tensors
        b, sv, e, din = x.shape[0], float(s), ctx.e, ctx.din
        inv_r, inv_c = torch.exp(-log_rows), torch.exp(-log_cols)  # [B]
        # G = E * (inv_r_i + inv_c_j) - 2 I is never formed: G @ X = inv_r * (E @ X) + E @ (inv_c * X)
        # (one matmul over [X, inv_c X]), and likewise for G^T. E's diagonal is zero; G's enters exactly,
        # in fp32 (left in E, its rounding would not cancel against the -2 I).
        delta = -(off_r * inv_r + off_c * inv_c)  # [B] = G_ii
        ctx.e = None
        k = float(gout) / (2.0 * b)
        kk = x_l.shape[1]
        a_f = a_l.float()
        pp = torch.mm(e, torch.cat([x_l, (inv_c[:, None] * x_aug).to(torch.bfloat16)], 1)).float()
        p = inv_r[:, None] * pp[:, :kk] + pp[:, kk:] + delta[:, None] * x_aug  # [B, K] = G @ [x, 1, 0] / n
        qq = torch.mm(e.t(), torch.cat([(inv_r[:, None] * a_f).to(torch.bfloat16), a_l], 1)).float()
        q = (
            qq[:, :kk] + inv_c[:, None] * qq[:, kk:] + delta[:, None] * a_f
        )  # [B, K] = G^T @ s [za W, za b, 0]
        w = (q * x_aug).sum(1) / sv  # [B] = sum_i G_ij cos_ij
        t1 = (k * sv) * (za.t() @ p[:, : din + 1])  # [Da, Din + 1]
        v = (k * sv) * w / n  # [B]
        zv = zb * v[:, None]  # [B, Da]
        g_weight = t1[:, :din] - zv.t() @ x
        g_bias = t1[:, din] - zv.sum(0)
        g_s = (w.sum() * k).reshape(s.shape).to(s.dtype)
        return None, None, g_weight, g_bias, g_s, None


def clip_identity_linear_reference(
    za: torch.Tensor, x: torch.Tensor, linear: nn.Linear, s: torch.Tensor
) -> torch.Tensor:
    """The formula through autograd: ``za`` normalised ``[B, Da]``, ``x`` ``[B, Din]``, ``s`` scalar."""
    return clip_infonce_reference(za, F.normalize(linear(x.float()), dim=-1), s)
