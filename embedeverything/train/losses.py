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


class _ClipInfoNCE(torch.autograd.Function):
    """Symmetric InfoNCE over ``s * za @ zb.T`` with the gradient written by hand.

    ``za``, ``zb``: normalised ``[B, D]`` fp32; ``s``: scalar scale. The logits are bounded by ``s``
    (cosines), so one global shift ``c = s`` replaces the row and column maxima: one ``exp`` pass serves
    both cross-entropies. The gradient of the mean of both wrt the logits is
    ``(softmax_rows + softmax_cols - 2 I) / (2B)``; the matmuls run in ``dtype`` (bf16 where the CPU has
    it) with fp32 accumulation, everything elementwise in fp32. A row or column whose sum underflows
    (all its cosines far below 1 at a large scale) is recomputed exactly.
    """

    @staticmethod
    def forward(
        ctx: Any, za: torch.Tensor, zb: torch.Tensor, s: torch.Tensor, dtype: torch.dtype, ws: _Workspace
    ) -> torch.Tensor:
        b = za.shape[0]
        sv = float(s)
        za_l, zb_l = za.to(dtype), zb.to(dtype)
        # E = exp(s * cos - s): [B, B] fp32, in reused buffers (fresh 64 MB pages cost a fault each)
        e = ws.get("e", (b, b), torch.float32)
        if dtype == torch.float32:
            torch.mm(za_l, zb_l.t(), out=e)
        else:
            e.copy_(torch.mm(za_l, zb_l.t(), out=ws.get("e_l", (b, b), dtype)))
        e.mul_(sv).sub_(sv).exp_()
        diag = (za * zb).sum(1) * sv  # exact positive logits, fp32 [B]
        # the positives dominate their sums: put them in exactly (bf16 rounds logits by up to s / 256)
        e.diagonal().copy_(torch.exp(diag - sv))
        rows = e.sum(1)  # [B]
        cols = e.sum(0)  # [B]
        tiny = 1e-30
        log_rows = rows.clamp_min(tiny).log().add_(sv)
        log_cols = cols.clamp_min(tiny).log().add_(sv)
        bad_r = torch.nonzero(rows < tiny).flatten()
        bad_c = torch.nonzero(cols < tiny).flatten()
        if bad_r.numel():
            log_rows[bad_r] = torch.logsumexp(sv * (za[bad_r] @ zb.t()), dim=1)
        if bad_c.numel():
            log_cols[bad_c] = torch.logsumexp(sv * (zb[bad_c] @ za.t()), dim=1)
        loss = 0.5 * ((log_rows - diag).mean() + (log_cols - diag).mean())
        ctx.save_for_backward(za, zb, za_l, zb_l, s, log_rows, log_cols, bad_r, bad_c)
        ctx.dtype, ctx.b, ctx.ws, ctx.e = dtype, b, ws, e
        return loss

    @staticmethod
    def backward(ctx: Any, gout: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        za, zb, za_l, zb_l, s, log_rows, log_cols, bad_r, bad_c = ctx.saved_tensors
        b, dtype, sv, e, ws = ctx.b, ctx.dtype, float(s), ctx.e, ctx.ws
        # softmax by rows + by columns, from the shared E: G = E * (1/r_i + 1/c_j)
        inv_r = torch.exp(sv - log_rows)  # [B] = 1 / sum_j exp(l_ij - s)
        inv_c = torch.exp(sv - log_cols)
        g = torch.mul(e, inv_r[:, None], out=ws.get("g", (b, b), torch.float32))
        g.addcmul_(e, inv_c[None, :])
        if bad_r.numel():  # rows whose E underflowed: their softmax recomputed exactly
            g[bad_r] = torch.softmax(sv * (za[bad_r] @ zb.t()), dim=1) + e[bad_r] * inv_c[None, :]
        if bad_c.numel():
            g[:, bad_c] = torch.softmax(sv * (za @ zb[bad_c].t()), dim=0) + e[:, bad_c] * inv_r[:, None]
        g.diagonal().sub_(2.0)
        k = float(gout) / (2.0 * b)  # d loss / d logits = k * g
        g_l = g if dtype == torch.float32 else ws.get("g_l", (b, b), dtype).copy_(g)
        ga = torch.mm(g_l, zb_l).float()  # [B, D] = g @ zb
        gb = torch.mm(g_l.t(), za_l).float()  # [B, D] = g.T @ za
        # d loss / d s = sum_ij (k g_ij) cos_ij = k * sum_i za_i . (g @ zb)_i
        gs = (za * ga).sum() * k
        ctx.e = None
        return ga.mul_(k * sv), gb.mul_(k * sv), gs.reshape(s.shape).to(s.dtype), None, None


class _Workspace:
    """Buffers reused from step to step by one loss (one forward is followed by its backward)."""

    def __init__(self) -> None:
        self.buffers: dict[str, torch.Tensor] = {}

    def get(self, name: str, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        buf = self.buffers.get(name)
        if buf is None or buf.shape != shape or buf.dtype != dtype:
            buf = self.buffers[name] = torch.empty(shape, dtype=dtype)
        return buf


class ClipLoss(nn.Module):
    """Symmetric InfoNCE (CLIP, Radford et al. 2021): each item's pair against the batch, both ways.

    ``za``, ``zb``: ``[B, D]``; loss = (CE(s A B^T, I) + CE(s B A^T, I)) / 2 on normalised A, B.
    ``fast`` uses the hand-written gradient (:class:`_ClipInfoNCE`); ``precision`` its matmul dtype.
    """

    def __init__(
        self,
        temperature: float = 0.07,
        learnable: bool = True,
        max_scale: float = 100.0,
        fast: bool = True,
        precision: str = "auto",
    ):
        super().__init__()
        self.scale = _LearnableScale(float(temperature), bool(learnable), float(max_scale))
        self.fast = bool(fast)
        self.dtype = _resolve_precision(precision)
        self._ws = _Workspace()

    def forward(self, za: torch.Tensor, zb: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        za, zb = F.normalize(za.float(), dim=-1), F.normalize(zb.float(), dim=-1)
        s = self.scale.scale()
        if self.fast:
            return _ClipInfoNCE.apply(za, zb, s, self.dtype, self._ws)
        logits = s * za @ zb.t()  # [B, B]
        target = torch.arange(za.shape[0], device=za.device)
        return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target))

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
