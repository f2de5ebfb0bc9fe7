"""Contrastive losses: a registry of their own, filled through the ``register_losses`` hook.

The built-in losses come in through the same door as a third party's: :data:`BUILTIN` is an ordinary
plugin object registered in-process the first time a loss is looked up. A loss is a ``torch.nn.Module``
built by ``factory(**options)``; its ``forward(za, zb, labels=None)`` takes the two heads' outputs
(``[B, D]`` each, row i of ``za`` paired with row i of ``zb``, not yet normalised) and the pairs' integer
labels (``[B]``, or None) and returns a scalar. Its parameters (a learnable temperature, a bias) are
trained with the heads. An optional ``post_step()`` runs after every optimiser step (clamping), and an
optional ``summary()`` returns floats recorded in the adapter (e.g. ``logit_scale``).

Temperature convention (as open_clip): ``logit_scale = 1 / temperature``, stored as its log.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UserError
from ..hookspecs import hookimpl

BUILTIN_PLUGIN = "embedeverything.losses"


def bf16_matmul_supported() -> bool:
    """Whether this CPU runs bf16 matmuls natively (avx512_bf16 / AMX), so bf16 pays off."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except Exception:
        return False


def _resolve_precision(precision: str) -> torch.dtype:
    if precision not in ("auto", "bf16", "fp32"):
        raise UserError(f"loss option precision={precision!r}: expected auto, bf16 or fp32")
    if precision == "bf16" or (precision == "auto" and bf16_matmul_supported()):
        return torch.bfloat16
    return torch.float32


class _LearnableScale(nn.Module):
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


#: below this scale, exp(s * cos) neither overflows a row sum of bf16/fp32 nor underflows it: no shift
_NO_SHIFT_MAX_SCALE = 75.0


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
    """The elementwise passes, fused by torch.compile when asked (tens of seconds once per process)."""
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


class _ClipInfoNCE(torch.autograd.Function):
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
        ws: _Workspace,
        compiled: bool,
    ) -> torch.Tensor:
        b = za.shape[0]
        sv = float(s)
        lean = dtype == torch.bfloat16 and sv <= _NO_SHIFT_MAX_SCALE and not compiled
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


class _Workspace:
    """Buffers reused from step to step by one loss (one forward is followed by its backward)."""

    def __init__(self) -> None:
        self.buffers: dict[str, torch.Tensor] = {}

    def get(self, name: str, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        buf = self.buffers.get(name)
        if buf is None or buf.shape != shape or buf.dtype != dtype:
            buf = self.buffers[name] = torch.empty(shape, dtype=dtype)
        return buf


class _ClipIdentityLinear(torch.autograd.Function):
    """The CLIP loss of an identity side against a linear head, with the head folded into the logits.

    ``za``: the identity side, normalised ``[B, Da]``; ``x``: the head's standardised input ``[B, Din]``;
    ``weight`` ``[Da, Din]``, ``bias`` ``[Da]``. With ``u = x W^T + b`` and ``n = |u|``,
    ``cos_ij = za_i . u_j / n_j = ([za W, za b]_i . [x, 1]_j) / n_j``: the ``[B, B]`` matmuls run over
    ``Din + 1`` (VGGish's 128) instead of ``Da`` (CLIP's 512), forward and backward. The gradient wrt
    ``u_j`` is ``(k s / n_j) ((G^T za)_j - w_j zb_j)`` with ``w_j = sum_i G_ij cos_ij``; summed against
    ``x_j`` it needs only ``G @ [x, 1] / n`` and ``G^T @ [za W, za b]``, both ``[B, Din + 1]``.
    Same arithmetic as the lean path of :class:`_ClipInfoNCE` otherwise (bf16, no shift, exact positives).
    """

    @staticmethod
    def forward(
        ctx: Any,
        za: torch.Tensor,
        x: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor,
        s: torch.Tensor,
        ws: _Workspace,
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
        e.diagonal().zero_()  # the positives enter exactly (see _ClipInfoNCE's lean path)
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


class ClipLoss(nn.Module):
    """Symmetric InfoNCE (CLIP, Radford et al. 2021): each item's pair against the batch, both ways.

    ``za``, ``zb``: ``[B, D]``; loss = (CE(s A B^T, I) + CE(s B A^T, I)) / 2 on normalised A, B.
    ``fast`` uses the hand-written gradient (:class:`_ClipInfoNCE`); ``precision`` its matmul dtype;
    ``compile`` fuses its elementwise passes with torch.compile.
    """

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
        self.scale = _LearnableScale(float(temperature), bool(learnable), float(max_scale))
        self.fast = bool(fast)
        self.dtype = _resolve_precision(precision)
        self._ws = _Workspace()
        self.compiled = bool(compile)

    def forward(self, za: torch.Tensor, zb: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        za, zb = F.normalize(za.float(), dim=-1), F.normalize(zb.float(), dim=-1)
        s = self.scale.scale()
        if self.fast:
            return _ClipInfoNCE.apply(za, zb, s, self.dtype, self._ws, self.compiled)
        logits = s * za @ zb.t()  # [B, B]
        target = torch.arange(za.shape[0], device=za.device)
        return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target))

    def folds_linear_head(self) -> bool:
        """Whether :meth:`identity_linear` applies now (bf16 on this CPU, scale in the no-shift range)."""
        return (
            self.fast
            and not self.compiled
            and self.dtype == torch.bfloat16
            and float(self.scale.log_scale.detach().exp()) <= _NO_SHIFT_MAX_SCALE
        )

    def identity_linear(self, z_identity: torch.Tensor, x: torch.Tensor, linear: nn.Linear) -> torch.Tensor:
        """The loss of an identity side against ``linear(x)``, the head folded into the logits.

        Equal to ``forward(z_identity, linear(x))`` (the loss is symmetric in its two sides) at a
        quarter of the matmul work when ``x`` has a quarter of the identity side's dim (VGGish vs CLIP).
        """
        za = F.normalize(z_identity.float(), dim=-1)
        return _ClipIdentityLinear.apply(
            za, x.float(), linear.weight, linear.bias, self.scale.scale(), self._ws
        )

    def post_step(self) -> None:
        self.scale.post_step()

    def summary(self) -> dict[str, float]:
        return self.scale.summary()


class LabelAwareClipLoss(ClipLoss):
    """CLIP loss that does not treat two items of the same label as negatives (false negatives).

    For row i the softmax runs over its own pair and the items whose label differs from i's; rows
    without labels (``labels`` None) give exactly :class:`ClipLoss`. ``labels``: ``[B]`` int, -1 unknown
    (an unknown label is never the same as another).
    """

    def forward(self, za: torch.Tensor, zb: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if labels is None:
            return super().forward(za, zb)
        za, zb = F.normalize(za.float(), dim=-1), F.normalize(zb.float(), dim=-1)
        s = self.scale.scale()
        logits = s * za @ zb.t()  # [B, B]
        same = (labels[:, None] == labels[None, :]) & (labels[:, None] >= 0)
        same.fill_diagonal_(False)
        logits = logits.masked_fill(same, float("-inf"))
        target = torch.arange(za.shape[0], device=za.device)
        return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target))


class SigLipLoss(nn.Module):
    """Sigmoid loss (SigLIP, Zhai et al. 2023): every pair of the batch is its own binary problem.

    loss = -1/B sum_ij log sigmoid(z_ij (t a_i.b_j + bias)), z_ij = 1 on the diagonal, -1 elsewhere;
    learnable ``t`` (init 1/temperature = 10) and ``bias`` (init -10), as in the paper.
    """

    def __init__(
        self, temperature: float = 0.1, bias: float = -10.0, learnable: bool = True, max_scale: float = 100.0
    ):
        super().__init__()
        self.scale = _LearnableScale(float(temperature), bool(learnable), float(max_scale))
        self.bias = nn.Parameter(torch.tensor(float(bias)), requires_grad=bool(learnable))

    def forward(self, za: torch.Tensor, zb: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        za, zb = F.normalize(za.float(), dim=-1), F.normalize(zb.float(), dim=-1)
        logits = self.scale.scale() * za @ zb.t() + self.bias  # [B, B]
        sign = 2.0 * torch.eye(za.shape[0], device=za.device) - 1.0
        return -F.logsigmoid(sign * logits).sum() / za.shape[0]

    def post_step(self) -> None:
        self.scale.post_step()

    def summary(self) -> dict[str, float]:
        return {**self.scale.summary(), "bias": float(self.bias.detach())}


class VseHingeLoss(nn.Module):
    """Hinge loss on the hardest negative of each item, both ways (VSE++, Faghri et al. 2018).

    loss = mean_i [max_{j!=i} (m + s_ij - s_ii)]_+ + mean_j [max_{i!=j} (m + s_ij - s_jj)]_+ on cosines.
    """

    def __init__(self, margin: float = 0.2):
        super().__init__()
        if not margin >= 0:
            raise UserError(f"loss option margin={margin!r}: expected a number >= 0")
        self.margin = float(margin)

    def forward(self, za: torch.Tensor, zb: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        za, zb = F.normalize(za.float(), dim=-1), F.normalize(zb.float(), dim=-1)
        sim = za @ zb.t()  # [B, B]
        pos = sim.diagonal()
        off = torch.eye(sim.shape[0], dtype=torch.bool, device=sim.device)
        cost_b = (self.margin + sim - pos[:, None]).masked_fill(off, 0.0).clamp_min(0)  # a_i vs other b
        cost_a = (self.margin + sim - pos[None, :]).masked_fill(off, 0.0).clamp_min(0)  # b_j vs other a
        return cost_b.max(dim=1).values.mean() + cost_a.max(dim=0).values.mean()


class _BuiltinLosses:
    """The built-in losses, registered as an ordinary plugin (same hook as a third party)."""

    @staticmethod
    @hookimpl
    def register_losses(register: Callable[..., Any]) -> None:
        register("clip", ClipLoss)
        register("clip-label", LabelAwareClipLoss)
        register("siglip", SigLipLoss)
        register("vse-hinge", VseHingeLoss)


BUILTIN = _BuiltinLosses()


def ensure_builtin_losses() -> None:
    from .. import plugins

    if not plugins.plugin_manager().has_plugin(BUILTIN_PLUGIN):
        from .. import __version__

        plugins.register_plugin(BUILTIN, name=BUILTIN_PLUGIN, version=__version__)


def loss_names() -> list[str]:
    from ..plugins import registry

    ensure_builtin_losses()
    return sorted(registry().losses)


def loss_plugin(name: str) -> str:
    from ..plugins import registry

    ensure_builtin_losses()
    entry = registry().losses.get(name)
    return entry[1] if entry else ""


def get_loss(name: str, **options: Any) -> nn.Module:
    """A loss by its registered name, built with ``options``; UserError names what is wrong."""
    from ..plugins import registry

    ensure_builtin_losses()
    entry = registry().losses.get(name)
    if entry is None:
        raise UserError(f"unknown loss {name!r}; registered losses: {', '.join(loss_names())}")
    factory, plugin = entry
    try:
        loss = factory(**options)
    except TypeError as e:
        raise UserError(f"bad option for loss {name!r} (plugin {plugin}): {e}") from None
    if not isinstance(loss, nn.Module):
        from ..errors import PluginError

        raise PluginError(
            plugin, f"loss {name!r} factory returned {type(loss).__name__}, not a torch.nn.Module"
        )
    return loss
