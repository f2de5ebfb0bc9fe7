"""The symmetric InfoNCE (the CLIP loss) with its gradient written by hand, beside its reference.

Radford et al. 2021, "Learning Transferable Visual Models From Natural Language Supervision", fig. 3:
``loss = (CE(s A B^T, I) + CE(s B A^T, I)) / 2`` on normalised ``A``, ``B`` ``[B, D]``, scale ``s``.
:func:`clip_infonce_reference` is that formula through autograd; :class:`ClipInfoNCE` computes the same
value and gradient with fewer passes over the ``[B, B]`` matrix, and tests/test_losses.py checks the one
against the other.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

#: below this scale, exp(s * cos) neither overflows a row sum of bf16/fp32 nor underflows it: no shift
NO_SHIFT_MAX_SCALE = 75.0


def _exp_shifted(logits: torch.Tensor, shift: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """``out = exp(logits - shift)`` in fp32 (the subtraction in fp32: bf16 would round it)."""
    out.copy_(logits)
    return out.sub_(shift).exp_()


def _softmax_sum(
    e: torch.Tensor, inv_r: torch.Tensor, inv_c: torch.Tensor, out: torch.Tensor
) -> torch.Tensor:
    """``out = e * inv_r[:, None] + e * inv_c[None, :]``: softmax by rows plus by columns."""
    inv_r, inv_c = inv_r.to(e.dtype), inv_c.to(e.dtype)  # same dtype as e: no promoted temporary
    torch.mul(e, inv_r[:, None], out=out)
    return out.addcmul_(e, inv_c[None, :])


_compiled: dict[str, Any] = {}


def _kernels(compiled: bool) -> tuple[Any, Any]:
    """The elementwise passes, fused by torch.compile when asked (compiled once per process, slowly)."""
    if not compiled:
        return _exp_shifted, _softmax_sum
    if not _compiled:

        def exp_shifted(logits: torch.Tensor, shift: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
            out.copy_(torch.exp(logits.float() - shift))
            return out

        def softmax_sum(
            e: torch.Tensor, inv_r: torch.Tensor, inv_c: torch.Tensor, out: torch.Tensor
        ) -> torch.Tensor:
            out.copy_(e * (inv_r[:, None] + inv_c[None, :]))
            return out

        _compiled["exp"] = torch.compile(exp_shifted, dynamic=False)
        _compiled["softmax"] = torch.compile(softmax_sum, dynamic=False)
    return _compiled["exp"], _compiled["softmax"]


class Workspace:
    """Buffers reused from step to step by one loss (one forward is followed by its backward)."""

    def __init__(self) -> None:
        self.buffers: dict[str, torch.Tensor] = {}

    def get(self, name: str, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        buf = self.buffers.get(name)
        if buf is None or buf.shape != shape or buf.dtype != dtype:
            buf = self.buffers[name] = torch.empty(shape, dtype=dtype)
        return buf


class ClipInfoNCE(torch.autograd.Function):
    """Symmetric InfoNCE over ``s * za @ zb.T`` with the gradient written by hand.

    ``za``, ``zb``: normalised ``[B, D]`` fp32; ``s``: scalar scale. The logits are cosines times ``s``,
    so they are bounded: one global shift (none at all while ``s <= 75``) replaces the row and column
    maxima, and one ``exp`` pass serves both cross-entropies. The gradient of the mean of both wrt the
    logits is ``(softmax_rows + softmax_cols - 2 I) / (2B)``. The matmuls run in ``dtype`` (bf16 where
    the CPU has it) with fp32 accumulation. Two ways through the ``[B, B]`` matrix:

    - ``lean`` (bf16, ``s <= 75``, eager): exponentials in place in bf16, sums accumulated in fp32:
      half the memory traffic, which is what a step costs once the matmuls are bf16;
    - ``shifted`` (fp32, or a larger scale, or compiled): exponentials and sums in fp32 after a global
      shift ``c = s``; a row or column whose sum underflows is recomputed exactly.

    In both the positives (the diagonal) are computed exactly in fp32 and replace their rounded entries,
    in the sums and in the gradient. A side that needs no gradient (an identity head) costs no matmul.
    """

    @staticmethod
    def forward(
        ctx: Any,
        za: torch.Tensor,
        zb: torch.Tensor,
        s: torch.Tensor,
        dtype: torch.dtype,
        ws: Workspace,
        compiled: bool,
    ) -> torch.Tensor:
        b = za.shape[0]
        sv = float(s)
        lean = dtype == torch.bfloat16 and sv <= NO_SHIFT_MAX_SCALE and not compiled
        shift = 0.0 if lean else sv
        za_s, zb_l = (za * sv).to(dtype), zb.to(dtype)  # the scale folded into the left operand
        # fp32 [B]: the positives' logits, exact, and their exponentials after the shift
        diag = (za * zb).sum(1) * sv
        e_diag = torch.exp(diag - shift)
        bad_r = bad_c = torch.zeros(0, dtype=torch.long)
        if lean:
            # E = exp(s * cos) [B, B] bf16, in place in a reused buffer (fresh pages cost a fault each)
            e = torch.mm(za_s, zb_l.t(), out=ws.get("l", (b, b), dtype)).exp_()
            # the positives leave E and enter exactly: log(e_ii + off_i) - l_ii = log1p(off_i / e_ii),
            # precise even when the loss is tiny and the bf16 sums would round away all of it
            e.diagonal().zero_()
            off_r, off_c = e.sum(1).float(), e.sum(0).float()  # [B] negatives only
            log_rows = diag + torch.log1p(off_r / e_diag)
            log_cols = diag + torch.log1p(off_c / e_diag)
        else:
            exp_shifted, _ = _kernels(compiled)
            logits = torch.mm(za_s, zb_l.t(), out=ws.get("l", (b, b), dtype))
            # a 0-d tensor: a float would make torch.compile specialise on every value of s
            e = exp_shifted(logits, torch.tensor(sv), ws.get("e", (b, b), torch.float32))
            e.diagonal().copy_(e_diag)
            rows, cols = e.sum(1), e.sum(0)
            tiny = 1e-30
            log_rows = rows.clamp_min(tiny).log().add_(sv)
            log_cols = cols.clamp_min(tiny).log().add_(sv)
            bad_r = torch.nonzero(rows < tiny).flatten()
            bad_c = torch.nonzero(cols < tiny).flatten()
            if bad_r.numel():
                log_rows[bad_r] = torch.logsumexp(sv * (za[bad_r] @ zb.t()), dim=1)
            if bad_c.numel():
                log_cols[bad_c] = torch.logsumexp(sv * (zb[bad_c] @ za.t()), dim=1)
            off_r = off_c = torch.zeros(0)
        loss = 0.5 * ((log_rows - diag).mean() + (log_cols - diag).mean())
        ctx.save_for_backward(za, zb, za_s, zb_l, s, diag, log_rows, log_cols, bad_r, bad_c, off_r, off_c)
        ctx.dtype, ctx.b, ctx.ws, ctx.e, ctx.compiled, ctx.shift = dtype, b, ws, e, compiled, shift
        return loss

    @staticmethod
    def backward(ctx: Any, gout: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        za, zb, za_s, zb_l, s, diag, log_rows, log_cols, bad_r, bad_c, off_r, off_c = ctx.saved_tensors
        b, dtype, sv, e, ws, shift = ctx.b, ctx.dtype, float(s), ctx.e, ctx.ws, ctx.shift
        need_a, need_b, need_s = ctx.needs_input_grad[:3]
        _, softmax_sum = _kernels(ctx.compiled)
        # softmax by rows + by columns from the shared E: G = E * (1/r_i + 1/c_j), written in `dtype`
        inv_r = torch.exp(shift - log_rows)  # [B] = 1 / sum_j exp(l_ij - shift)
        inv_c = torch.exp(shift - log_cols)
        g = softmax_sum(e, inv_r, inv_c, ws.get("g", (b, b), dtype))
        if bad_r.numel():  # rows whose E underflowed: their softmax recomputed exactly
            g[bad_r] = (torch.softmax(sv * (za[bad_r] @ zb.t()), dim=1) + e[bad_r] * inv_c[None, :]).to(dtype)
        if bad_c.numel():
            g[:, bad_c] = (torch.softmax(sv * (za @ zb[bad_c].t()), dim=0) + e[:, bad_c] * inv_r[:, None]).to(
                dtype
            )
        # the diagonal exactly, in fp32: p_ii by rows + by columns - 2 = -(share of the negatives), both ways
        if off_r.numel():
            g.diagonal().copy_(-(off_r * inv_r + off_c * inv_c))
        else:
            g.diagonal().copy_(torch.exp(diag - shift) * (inv_r + inv_c) - 2.0)
        ctx.e = None
        k = float(gout) / (2.0 * b)  # d loss / d logits = k * g
        ga = gb = gs = None
        if need_a or (need_s and not need_b):
            ga = torch.mm(g, zb_l).float()  # [B, D] = g @ zb
            # d loss / d s = sum_ij (k g_ij) cos_ij = k * sum_i za_i . (g @ zb)_i
            gs = (za * ga).sum() * k
            ga.mul_(k * sv)
        if need_b:
            gb = torch.mm(g.t(), za_s).float()  # [B, D] = s * g.T @ za
            if gs is None:
                gs = (zb * gb).sum() * (k / sv)
            gb.mul_(k)
        if gs is not None:
            gs = gs.reshape(s.shape).to(s.dtype)
        return (ga if need_a else None), gb, (gs if need_s else None), None, None, None


def clip_infonce_reference(za: torch.Tensor, zb: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """The formula through autograd: ``za``, ``zb`` normalised ``[B, D]``, ``s`` scalar scale."""
    logits = s * za @ zb.t()  # [B, B]
    target = torch.arange(za.shape[0], device=za.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target))
