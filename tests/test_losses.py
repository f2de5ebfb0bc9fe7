"""Each loss against a slow loop written from its paper's formula; finite gradients; the registry's door."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import embedeverything as ee
from embedeverything.errors import UserError
from embedeverything.heads import Head, HeadSpec
from embedeverything.plugins import register_plugin, unregister_plugin
from embedeverything.train.losses import HeadPair, Loss, build_loss, get_loss, loss_names
from embedeverything.train.losses.clip_folded_grad import ClipIdentityLinear, clip_identity_linear_reference
from embedeverything.train.losses.clip_infonce_grad import ClipInfoNCE, Workspace, clip_infonce_reference


def _pairs(b: int, d: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    za = torch.randn(b, d, generator=g, dtype=torch.float64)
    zb = za + 0.8 * torch.randn(b, d, generator=g, dtype=torch.float64)
    return za.float(), zb.float()


def _cos(za: torch.Tensor, zb: torch.Tensor) -> list[list[float]]:
    a, b = F.normalize(za.double(), dim=1), F.normalize(zb.double(), dim=1)
    return (a @ b.t()).tolist()


def slow_clip(za, zb, s, labels=None):
    """Radford et al. 2021, the symmetric InfoNCE, one term at a time (same-label items skipped if given)."""
    c = _cos(za, zb)
    n = len(c)

    def neg(i, j):
        return j == i or labels is None or labels[i] < 0 or labels[i] != labels[j]

    rows = [
        -s * c[i][i] + math.log(sum(math.exp(s * c[i][j]) for j in range(n) if neg(i, j))) for i in range(n)
    ]
    cols = [
        -s * c[j][j] + math.log(sum(math.exp(s * c[i][j]) for i in range(n) if neg(j, i))) for j in range(n)
    ]
    return 0.5 * (sum(rows) / n + sum(cols) / n)


def slow_siglip(za, zb, t, bias):
    """Zhai et al. 2023, eq. 1: -1/|B| sum_i sum_j log 1 / (1 + exp(z_ij (-t x_i.y_j - b)))."""
    c = _cos(za, zb)
    n = len(c)
    total = 0.0
    for i in range(n):
        for j in range(n):
            z = 1.0 if i == j else -1.0
            total += math.log(1.0 / (1.0 + math.exp(z * (-t * c[i][j] - bias))))
    return -total / n


def slow_vse(za, zb, margin):
    """Faghri et al. 2018 (VSE++), max of hinges over negatives, both directions (mean over the batch)."""
    c = _cos(za, zb)
    n = len(c)
    img = [max(max(0.0, margin - c[i][i] + c[i][j]) for j in range(n) if j != i) for i in range(n)]
    cap = [max(max(0.0, margin - c[j][j] + c[i][j]) for i in range(n) if i != j) for j in range(n)]
    return sum(img) / n + sum(cap) / n


@pytest.mark.parametrize("b", [2, 7, 33])
@pytest.mark.parametrize("temperature", [0.07, 0.5, 0.01])
def test_clip_matches_formula(b, temperature):
    za, zb = _pairs(b, 12, seed=b)
    s = min(1 / temperature, 100.0)
    want = slow_clip(za, zb, s)
    for fast in (False, True):
        loss = get_loss("clip", temperature=temperature, fast=fast, precision="fp32")
        assert float(loss(za, zb)) == pytest.approx(want, rel=1e-4, abs=1e-4)
    bf16 = get_loss("clip", temperature=temperature, precision="bf16")
    assert float(bf16(za, zb)) == pytest.approx(want, rel=3e-2, abs=3e-2)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_fast_clip_gradient_equals_autograd(precision):
    za, zb = _pairs(64, 24, seed=3)
    grads = []
    for fast in (False, True):
        a, b = za.clone().requires_grad_(), zb.clone().requires_grad_()
        loss = get_loss("clip", fast=fast, precision=precision)
        out = loss(a, b)
        out.backward()
        grads.append((a.grad, b.grad, loss.scale.log_scale.grad))
    for g_ref, g_fast in zip(grads[0], grads[1], strict=True):
        cos = F.cosine_similarity(g_ref.flatten(), g_fast.flatten(), dim=0, eps=1e-12)
        assert cos > (1 - 1e-6 if precision == "fp32" else 0.999)


def test_fast_clip_rows_that_underflow_are_exact():
    # at scale 100 with all cosines near -1 for some rows, exp(l - s) underflows: recomputed exactly
    g = torch.Generator().manual_seed(0)
    za = torch.randn(16, 8, generator=g)
    zb = -za.clone()
    zb[:4] = za[:4]
    ref = get_loss("clip", temperature=0.01, fast=False)
    fast = get_loss("clip", temperature=0.01, precision="fp32")
    a1, a2 = za.clone().requires_grad_(), za.clone().requires_grad_()
    l1, l2 = ref(a1, zb), fast(a2, zb)
    l1.backward()
    l2.backward()
    assert torch.isfinite(l2) and float(l2) == pytest.approx(float(l1), rel=1e-4)
    assert torch.allclose(a1.grad, a2.grad, atol=1e-4)


@pytest.mark.parametrize("b", [3, 9])
def test_label_aware_clip_matches_formula(b):
    za, zb = _pairs(b, 6, seed=b + 1)
    labels = torch.tensor([k % 3 for k in range(b - 1)] + [-1])
    loss = get_loss("clip-label", temperature=0.1, precision="fp32")
    assert float(loss(za, zb, labels)) == pytest.approx(slow_clip(za, zb, 10.0, labels.tolist()), rel=1e-4)
    # without labels it is the CLIP loss
    assert float(loss(za, zb)) == pytest.approx(slow_clip(za, zb, 10.0), rel=1e-4)


@pytest.mark.parametrize("b", [2, 8])
@pytest.mark.parametrize("bias", [-10.0, 0.5])
def test_siglip_matches_formula(b, bias):
    za, zb = _pairs(b, 5, seed=b)
    loss = get_loss("siglip", temperature=0.1, bias=bias)
    assert float(loss(za, zb)) == pytest.approx(slow_siglip(za, zb, 10.0, bias), rel=1e-5)


@pytest.mark.parametrize("b", [2, 10])
@pytest.mark.parametrize("margin", [0.0, 0.2, 1.5])
def test_vse_hinge_matches_formula(b, margin):
    za, zb = _pairs(b, 5, seed=b)
    loss = get_loss("vse-hinge", margin=margin)
    assert float(loss(za, zb)) == pytest.approx(slow_vse(za, zb, margin), rel=1e-5, abs=1e-6)


@pytest.mark.parametrize("name", ["clip", "clip-label", "siglip", "vse-hinge"])
def test_every_builtin_gives_finite_gradients(name):
    za, zb = _pairs(32, 16, seed=5)
    za = (za * 30).requires_grad_()  # large raw outputs: normalisation must keep things finite
    zb = zb.requires_grad_()
    loss = get_loss(name)
    out = loss(za, zb, torch.arange(32) % 4)
    out.backward()
    assert torch.isfinite(out)
    for t in [za.grad, zb.grad, *[p.grad for p in loss.parameters() if p.requires_grad]]:
        assert t is not None and torch.isfinite(t).all()


class HalfCosineLoss(torch.nn.Module):
    """A third party's loss: pull pairs together, nothing else."""

    def __init__(self, weight: float = 1.0):
        super().__init__()
        self.weight = weight

    def forward(self, za, zb, labels=None):
        return self.weight * (1 - F.cosine_similarity(za, zb, dim=1)).mean()


class ThirdParty:
    @staticmethod
    @ee.hookimpl
    def register_losses(register):
        register("half-cosine", HalfCosineLoss)


def test_third_party_loss_by_hook():
    assert "half-cosine" not in loss_names()
    register_plugin(ThirdParty(), name="ee-thirdparty-loss")
    try:
        assert {"clip", "clip-label", "siglip", "vse-hinge", "half-cosine"} <= set(loss_names())
        loss = get_loss("half-cosine", weight=2.0)
        za, zb = _pairs(4, 3)
        assert float(loss(za, zb)) > 0
    finally:
        unregister_plugin("ee-thirdparty-loss")
    assert "half-cosine" not in loss_names()


def test_unknown_loss_and_bad_option_are_user_errors():
    with pytest.raises(UserError, match="unknown loss 'nope'.*clip"):
        get_loss("nope")
    with pytest.raises(UserError, match="bad option for loss 'clip'"):
        get_loss("clip", tempreature=0.1)
    with pytest.raises(UserError, match="temperature"):
        get_loss("clip", temperature=-1)


@pytest.mark.parametrize("temperature", [0.07, 0.02])
def test_linear_head_folded_into_logits_equals_the_plain_loss(temperature):
    # identity side vs a linear head from a narrower input (VGGish 128 -> CLIP 512, here 16 -> 64)
    g = torch.Generator().manual_seed(1)
    za, x = torch.randn(256, 64, generator=g), torch.randn(256, 16, generator=g)
    za[:, :16] += 3 * x
    lin = torch.nn.Linear(16, 64)
    grads = []
    for folded in (False, True):
        lin.zero_grad()
        ref = get_loss("clip", temperature=temperature, fast=False)
        loss = get_loss("clip", temperature=temperature, precision="bf16")
        assert loss.folds_linear_head()
        out = loss.identity_linear(za, x, lin) if folded else ref(za, lin(x))
        out.backward()
        scale_grad = (loss if folded else ref).scale.log_scale.grad
        grads.append((float(out), lin.weight.grad.clone(), lin.bias.grad.clone(), scale_grad))
    (l0, w0, b0, s0), (l1, w1, b1, s1) = grads
    assert l1 == pytest.approx(l0, rel=1e-3)
    assert F.cosine_similarity(w0.flatten(), w1.flatten(), dim=0) > 0.9999
    assert F.cosine_similarity(b0, b1, dim=0) > 0.999
    assert float(s1) == pytest.approx(float(s0), rel=1e-3)


class TakesPrecision(Loss):
    """A plugin's loss that asks for the trainer's precision setting."""

    train_settings = frozenset({"precision"})

    def __init__(self, precision: str = "unset"):
        super().__init__()
        self.precision = precision

    def forward(self, za, zb, labels=None):
        return (za - zb).pow(2).mean()


class Clamped(torch.nn.Module):
    """A plain module with the two optional methods of the plugin contract."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor(5.0))

    def forward(self, za, zb, labels=None):
        return self.w * (za - zb).pow(2).mean()

    def post_step(self):
        with torch.no_grad():
            self.w.clamp_(max=1.0)

    def summary(self):
        return {"w": float(self.w)}


class ContractPlugin:
    @staticmethod
    @ee.hookimpl
    def register_losses(register):
        register("takes-precision", TakesPrecision)
        register("clamped", Clamped)


def test_declared_settings_and_plain_modules():
    register_plugin(ContractPlugin(), name="ee-contract-loss")
    try:
        settings = {"precision": "bf16", "compile": True}
        assert build_loss("takes-precision", {}, settings).precision == "bf16"  # declared: given
        assert (
            build_loss("takes-precision", {"precision": "fp32"}, settings).precision == "fp32"
        )  # option wins
        assert get_loss("takes-precision").precision == "unset"  # no trainer, no settings
        loss = build_loss("clamped", {}, settings)  # declares nothing: nothing passed, no TypeError
        assert isinstance(loss, Loss) and loss.summary() == {"w": 5.0}
        assert list(loss.state_dict()) == ["w"]  # checkpoint keys as the module names them
        loss.post_step()
        assert loss.summary() == {"w": 1.0}
    finally:
        unregister_plugin("ee-contract-loss")


def test_which_clip_loss_folds_which_head():
    ident, lin = (
        HeadSpec(kind="identity", in_dim=64, out_dim=64),
        HeadSpec(kind="linear", in_dim=16, out_dim=64),
    )
    heads = HeadPair.build(Head(ident), Head(lin), compile=False)
    assert get_loss("clip").folded_side(heads) == "b"
    assert get_loss("clip").folded_side(HeadPair.build(Head(lin), Head(ident), compile=False)) == "a"
    assert get_loss("clip-label").folded_side(heads) is None  # the fold is blind to labels
    wide = HeadSpec(kind="linear", in_dim=64, out_dim=64)
    assert get_loss("clip").folded_side(HeadPair.build(Head(ident), Head(wide), compile=False)) is None


def test_hand_written_gradients_against_their_references():
    za, zb = _pairs(48, 16, seed=7)
    za, zb = F.normalize(za, dim=-1), F.normalize(zb, dim=-1)
    s = torch.tensor(14.0)
    want = clip_infonce_reference(za, zb, s)
    got = ClipInfoNCE.apply(za, zb, s, torch.float32, Workspace(), False)
    assert float(got) == pytest.approx(float(want), rel=1e-5)
    x = torch.randn(48, 8, generator=torch.Generator().manual_seed(2))
    lin = torch.nn.Linear(8, 16)
    want = clip_identity_linear_reference(za, x, lin, s)
    got = ClipIdentityLinear.apply(za, x, lin.weight, lin.bias, s, Workspace())
    assert float(got) == pytest.approx(float(want), rel=1e-2)  # bf16 logits
