"""Oracles for the LRP rules of modern CNN layers (lrp_modern_layers.md §1-7, docs/lrp_rules.md): gates are
signal-take-all and found from the graph, the LN-rule equals LRP-ε on the explicit linear map with σ held constant,
routing ops and nearest upsampling move relevance exactly, every unsupported operation raises a named error, and the
``dtd`` composite conserves on bias-free float64 networks built from these parts. Small hand-built modules, float64."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from cnnlens.errors import UnsupportedOperationError
from cnnlens.lrp import conservation, lrp_attribute

torch.set_default_dtype(torch.float32)
DT = torch.float64


def _x(shape=(2, 3, 8, 8), seed=0, positive=False):
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=DT)
    return x.abs() if positive else x


def _r0(n, c, seed=1):
    return torch.randn(n, c, generator=torch.Generator().manual_seed(seed), dtype=DT)


def _sum(t):
    return t.reshape(t.shape[0], -1).sum(1)


def _target(z):
    return z * F.one_hot(z.argmax(1), z.shape[1]).to(z.dtype)


# ------------------------------------------------------------------------------------------------------- gates

class _Gate(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x, g):  # pragma: no cover - only the traced graph is used
        return self.fn(x, g)


class _SE(nn.Module):
    """Squeeze-excitation (Hu et al. 2018): x ⊙ σ(W₂ δ(W₁ pool(x)))."""

    def __init__(self, c=4, squash=True):
        super().__init__()
        self.fc1, self.fc2 = nn.Conv2d(c, 2, 1), nn.Conv2d(2, c, 1)
        self.gate = nn.Sigmoid() if squash else nn.Identity()

    def forward(self, x):
        g = self.gate(self.fc2(torch.relu(self.fc1(x.mean((2, 3), keepdim=True)))))
        return x * g


class _SENet(nn.Module):
    def __init__(self, squash=True):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.act = nn.ReLU()
        self.se = _SE(4, squash)
        self.head = nn.Linear(4, 3)

    def forward(self, x):
        return self.head(self.se(self.act(self.conv(x))).mean((2, 3)))


@pytest.mark.parametrize("squash", [True, False], ids=["sigmoid-gate", "pooled-gate"])
def test_gate_signal_take_all(squash):
    """z = s ⊙ g: R_s = R_z and the gate branch gets nothing (Arras et al. 2017), whether the gate is found through
    its sigmoid or (without one) as the branch computed from a global pool."""
    torch.manual_seed(0)
    net = _SENet(squash).double().eval()
    x = _x()
    res = lrp_attribute(net, x, _r0(2, 3), "epsilon-plus", ["act", "se", "se.fc2", "se.gate"])
    torch.testing.assert_close(res.relevance["act"], res.relevance["se"], rtol=0, atol=0)
    assert torch.count_nonzero(res.relevance["se.fc2"]) == 0
    assert torch.count_nonzero(res.relevance["se"]) > 0


@pytest.mark.parametrize("mode", ["proportional", "half"])
def test_gate_split_options_conserve(mode):
    """The documented alternatives: R_s + R_g = R_z per product ("proportional" s/(s+g), g/(s+g); "half")."""
    torch.manual_seed(0)
    net = _SENet().double().eval()
    rows = conservation(net, _x(), _r0(2, 3), "dtd", gate=mode)  # exact-zero guard: no ε absorbs relevance
    gate = next(r for r in rows if r["kind"] == "gate")
    torch.testing.assert_close(gate["in"], gate["out"], rtol=1e-9, atol=1e-12)
    res = lrp_attribute(net, _x(), _r0(2, 3), "epsilon-plus", ["se.gate"], gate=mode)
    assert torch.count_nonzero(res.relevance["se.gate"]) > 0


class _Swish(nn.Module):
    def __init__(self, written_out):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(3, 4, 3), nn.Conv2d(4, 4, 3)
        self.act = nn.SiLU()
        self.written_out = written_out
        self.head = nn.Linear(4, 3)

    def forward(self, x):
        x = self.conv1(x)
        x = x * torch.sigmoid(x) if self.written_out else self.act(x)
        return self.head(self.conv2(x).mean((2, 3)))


def test_silu_written_as_product_equals_identity_rule():
    """x·σ(x) traced as a product gives the same relevance as nn.SiLU under the identity rule (§1-2)."""
    torch.manual_seed(0)
    a = _Swish(False).double().eval()
    b = _Swish(True).double().eval()
    b.load_state_dict(a.state_dict())
    x = _x()
    for comp in ("epsilon-plus", "dtd"):
        ra = lrp_attribute(a, x, _r0(2, 3), comp).input
        rb = lrp_attribute(b, x, _r0(2, 3), comp).input
        torch.testing.assert_close(ra, rb, rtol=1e-12, atol=1e-15)


class _TwoSignals(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b, self.head = nn.Conv2d(3, 4, 3), nn.Conv2d(3, 4, 3), nn.Linear(4, 2)

    def forward(self, x):
        return self.head((self.a(x) * self.b(x)).mean((2, 3)))


def test_product_of_two_signals_raises_naming_the_node():
    with pytest.raises(UnsupportedOperationError, match=r"mul.*two signals"):
        lrp_attribute(_TwoSignals().double(), _x(), _r0(2, 2))


class _LayerScale(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.gamma, self.head = nn.Conv2d(3, 4, 3), nn.Parameter(torch.rand(4) + 0.5), nn.Linear(4, 2)

    def forward(self, x):
        y = self.conv(x)
        return self.head((y * self.gamma.view(1, -1, 1, 1) / 2.0).mean((2, 3)))


def test_layer_scale_is_a_diagonal_linear_layer():
    """y = λ ⊙ x (a parameter) and y = x / c: R_x = R_y (§3)."""
    net = _LayerScale().double().eval()
    rows = conservation(net, _x(), _r0(2, 2), "epsilon-plus")
    scales = [r for r in rows if r["kind"] == "scale"]
    assert len(scales) == 2
    for r in scales:
        torch.testing.assert_close(r["in"], r["out"], rtol=0, atol=0)


# ------------------------------------------------------------------------------------------------ normalisation

class _LN2d(nn.LayerNorm):
    """ConvNeXt's channels-last LayerNorm over channels (permute, F.layer_norm, permute back)."""

    def forward(self, x):
        return F.layer_norm(x.permute(0, 2, 3, 1), self.normalized_shape, self.weight, self.bias,
                            self.eps).permute(0, 3, 1, 2)


class _NormNet(nn.Module):
    def __init__(self, norm):
        super().__init__()
        self.norm = norm
        self.head = nn.Linear(4 * 3 * 3, 2)

    def forward(self, x):
        return self.head(self.norm(x).flatten(1))


def _ln_oracle(x, r_out, gamma, groups_of, eps, stab=1e-6):
    """LRP-ε on the explicit linear map y_j = Σ_i x_i (δ_ij − 1/C) γ_j / σ + β_j (σ detached), group by group:
    R_i = Σ_j x_i A_ji R_j / (y_j + ε·sign(y_j)) with y_j the full output."""
    r_in = torch.zeros_like(x)
    for idx in groups_of(x):  # idx: flat indices of one normalised group
        xs = x.flatten()[idx]
        c = xs.numel()
        sigma = (xs.var(unbiased=False) + eps).sqrt()
        g = gamma.flatten()[idx] if gamma.numel() == x.numel() else gamma
        a = (torch.eye(c, dtype=DT) - 1.0 / c) * (g / sigma)[:, None]  # a[j, i]
        y = a @ xs + groups_of.beta.flatten()[idx]
        z = y + stab * torch.where(y >= 0, 1.0, -1.0)
        r_in.view(-1)[idx] = xs * (a.T @ (r_out.flatten()[idx] / z))
    return r_in


@pytest.mark.parametrize("kind", ["layernorm2d", "layernorm", "groupnorm"])
def test_ln_rule_equals_epsilon_on_explicit_linear_map(kind):
    """LN-rule (Ali et al. 2022, §3.2): σ held constant, centring a linear map, LRP-ε on it (≤ 1e-10, float64)."""
    torch.manual_seed(0)
    x = _x((2, 4, 3, 3), seed=3)
    if kind == "layernorm2d":
        norm = _LN2d(4)
    elif kind == "layernorm":
        norm = nn.LayerNorm([4, 3, 3])
    else:
        norm = nn.GroupNorm(2, 4)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
        norm.bias.uniform_(-0.5, 0.5)
    net = _NormNet(norm).double().eval()
    res = lrp_attribute(net, x, _r0(2, 2), "epsilon-plus", ["norm"])
    n, c, h, w = x.shape
    base = torch.arange(x.numel()).view(x.shape)
    if kind == "layernorm2d":
        groups = [base[b, :, i, j] for b in range(n) for i in range(h) for j in range(w)]
        gamma = norm.weight.detach().view(1, c, 1, 1).expand_as(x)
        beta = norm.bias.detach().view(1, c, 1, 1).expand_as(x)
    elif kind == "layernorm":
        groups = [base[b].flatten() for b in range(n)]
        gamma = norm.weight.detach().expand_as(x)
        beta = norm.bias.detach().expand_as(x)
    else:
        groups = [base[b, 2 * g:2 * g + 2].flatten() for b in range(n) for g in range(2)]
        gamma = norm.weight.detach().view(1, c, 1, 1).expand_as(x)
        beta = norm.bias.detach().view(1, c, 1, 1).expand_as(x)

    class Groups:
        def __call__(self, _):
            return groups
    groups_of = Groups()
    groups_of.beta = beta.contiguous()
    ref = _ln_oracle(x, res.relevance["norm"], gamma.contiguous(), groups_of, norm.eps)
    torch.testing.assert_close(res.input, ref, rtol=1e-10, atol=1e-12)


def test_ln_rule_conserves_without_beta():
    torch.manual_seed(0)
    norm = _LN2d(4)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
    net = _NormNet(norm).double().eval()
    rows = conservation(net, _x((2, 4, 3, 3)), _r0(2, 2), "dtd")
    ln = next(r for r in rows if r["kind"] == "norm")
    torch.testing.assert_close(ln["in"], ln["out"], rtol=1e-10, atol=1e-14)


class _StdConvNet(nn.Module):
    """A weight-standardised conv written functionally (as timm's StdConv2d / ScaledStdConv2d)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.head = nn.Linear(4, 2)

    def standardised(self):
        w = self.conv.weight
        return F.batch_norm(w.reshape(1, 4, -1), None, None, training=True, momentum=0.0, eps=1e-6).reshape_as(w)

    def forward(self, x):
        return self.head(torch.relu(F.conv2d(x, self.standardised(), self.conv.bias)).mean((2, 3)))


def test_standardised_conv_uses_its_forward_weight():
    """The standardised weight computed in the forward is the conv's weight for the rule (§3)."""
    torch.manual_seed(0)
    net = _StdConvNet().double().eval()
    plain = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    plain = plain.double().eval()
    with torch.no_grad():
        plain[0].weight.copy_(net.standardised())
        plain[0].bias.copy_(net.conv.bias)
        plain[4].load_state_dict(net.head.state_dict())
    for comp in ("epsilon-plus", "epsilon-gamma-box"):
        torch.testing.assert_close(lrp_attribute(net, _x(), _r0(2, 2), comp).input,
                                   lrp_attribute(plain, _x(), _r0(2, 2), comp).input, rtol=1e-12, atol=1e-15)


# -------------------------------------------------------------------------------------------------------- routing

class _Route(nn.Module):
    def __init__(self, fn, c_out):
        super().__init__()
        self.fn = fn
        self.out = nn.Identity()
        self.head = nn.LazyLinear(2)
        self.c_out = c_out

    def forward(self, x):
        return self.head(self.out(self.fn(x)).flatten(1))


def _shuffle(x, groups=2):
    n, c, h, w = x.size()
    return x.view(n, groups, c // groups, h, w).transpose(1, 2).contiguous().view(n, c, h, w)


def _unshuffle(x, groups=2):
    n, c, h, w = x.shape
    return x.view(n, c // groups, groups, h, w).transpose(1, 2).reshape(n, c, h, w)


def _swap_halves(x):
    a, b = x.chunk(2, dim=1)
    return torch.cat([b, a], 1)


def _unbind_stack(x):
    a, b, c, d = x.unbind(1)
    return torch.stack([d, c, b, a], 1)


ROUTES = {
    "channel-shuffle": (_shuffle, _unshuffle),
    "chunk-cat": (_swap_halves, _swap_halves),
    "unbind-stack": (lambda x: _unbind_stack(x), lambda r: _unbind_stack(r)),
    "permute": (lambda x: x.permute(0, 2, 3, 1), lambda r: r.permute(0, 3, 1, 2)),
    "split-getitem": (lambda x: torch.split(x, [1, 3], dim=1)[1],
                      lambda r: torch.cat([torch.zeros_like(r[:, :1]), r], 1)),
    "nearest-upsample": (nn.Upsample(scale_factor=2, mode="nearest"),
                         lambda r: F.avg_pool2d(r, 2) * 4),
    "pad": (lambda x: F.pad(x, (1, 1, 1, 1)), lambda r: r[..., 1:-1, 1:-1]),
}


@pytest.mark.parametrize("name", list(ROUTES))
def test_routing_moves_relevance_exactly(name):
    """Re-arrangements move each value's relevance with it; nearest ×2 upsampling sends each output's relevance to
    its source pixel (§5)."""
    fn, inverse = ROUTES[name]
    net = _Route(fn, 4)
    x = _x((2, 4, 4, 4), positive=True)
    net(x.float())  # materialise the lazy head
    net = net.double().eval()
    res = lrp_attribute(net, x, _r0(2, 2), "epsilon-plus", ["out"])
    torch.testing.assert_close(res.input, inverse(res.relevance["out"]), rtol=0, atol=1e-15)


def test_bilinear_upsample_is_a_conserving_linear_map():
    net = _Route(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False), 4)
    x = _x((2, 4, 4, 4), positive=True)
    net(x.float())
    net = net.double().eval()
    res = lrp_attribute(net, x, _r0(2, 2), "dtd", ["out"])
    torch.testing.assert_close(_sum(res.input), _sum(res.relevance["out"]), rtol=1e-10, atol=0)


class _Depth(nn.Module):
    def __init__(self, drop):
        super().__init__()
        self.conv, self.head = nn.Conv2d(3, 4, 3), nn.Linear(4, 2)
        self.drop = drop

    def forward(self, x):
        y = self.conv(x)
        return self.head((y + self.drop(torch.relu(y))).mean((2, 3)))


def test_stochastic_depth_and_dropout_are_identity():
    torch.manual_seed(0)
    ref = _Depth(nn.Identity()).double().eval()
    for drop in (torchvision.ops.StochasticDepth(0.5, "row"), nn.Dropout(0.3), nn.Dropout2d(0.1)):
        net = _Depth(drop).double().eval()
        net.load_state_dict(ref.state_dict())
        torch.testing.assert_close(lrp_attribute(net, _x(), _r0(2, 2)).input, lrp_attribute(ref, _x(), _r0(2, 2)).input,
                                   rtol=0, atol=0)


# -------------------------------------------------------------------------------------------------------- refusals

class _TopK(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.head = nn.Conv2d(3, 4, 3), nn.Linear(4 * 5, 2)

    def forward(self, x):
        return self.head(torch.topk(self.conv(x).flatten(2), 5, dim=2).values.flatten(1))


class _Untraceable(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x):
        y = self.conv(x)
        return y.relu() if y.sum() > 0 else -y  # data-dependent control flow


class _Outer(nn.Module):
    def __init__(self):
        super().__init__()
        self.block = _Untraceable()
        self.head = nn.Linear(4, 2)

    def forward(self, x):
        return self.head(self.block(x).mean((2, 3)))


def test_topk_pooling_raises_naming_the_operation():
    """A pooling with torch.topk is refused (never an all-zero map)."""
    with pytest.raises(UnsupportedOperationError, match="topk"):
        lrp_attribute(_TopK().double(), _x(), _r0(2, 2))


def test_untraceable_module_is_named():
    with pytest.raises(UnsupportedOperationError, match=r"'block' \(_Untraceable\)"):
        lrp_attribute(_Outer().double(), _x(), _r0(2, 2))


def test_softmax_on_the_signal_path_raises():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Softmax(1), nn.Flatten(), nn.LazyLinear(2))
    net(torch.randn(1, 3, 8, 8))
    with pytest.raises(UnsupportedOperationError, match="Softmax.*relevance path"):
        lrp_attribute(net.double(), _x(), _r0(2, 2))


# ---------------------------------------------------------------------------------------------------- conservation

def _zero_shifts(model):
    """Every bias and BatchNorm shift zeroed (BN scale randomised) — the setting in which ``dtd`` must conserve."""
    with torch.no_grad():
        g = torch.Generator().manual_seed(0)
        for m in model.modules():
            if isinstance(getattr(m, "bias", None), torch.Tensor):
                m.bias.zero_()
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.zero_()
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
    return model.double().eval()


class _Modern(nn.Module):
    """One of each part: inverted residual with a linear bottleneck and SE + SiLU, a ConvNeXt block (depthwise conv,
    channels-last LayerNorm, Linear, GELU, layer scale), channel split + shuffle, GroupNorm, Hardswish, upsampling."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.BatchNorm2d(8), nn.Hardswish())
        self.expand = nn.Sequential(nn.Conv2d(8, 16, 1), nn.BatchNorm2d(16), nn.SiLU())
        self.dw = nn.Sequential(nn.Conv2d(16, 16, 3, 1, 1, groups=16), nn.BatchNorm2d(16), nn.SiLU())
        self.se = _SE(16)
        self.project = nn.Sequential(nn.Conv2d(16, 8, 1), nn.BatchNorm2d(8))  # linear bottleneck
        self.cn_dw = nn.Conv2d(8, 8, 7, padding=3, groups=8)
        self.cn_norm = nn.LayerNorm(8)
        self.cn_fc1, self.cn_fc2 = nn.Linear(8, 16), nn.Linear(16, 8)
        self.cn_scale = nn.Parameter(torch.rand(8) + 0.5)
        self.branch = nn.Sequential(nn.Conv2d(4, 4, 1), nn.GroupNorm(2, 4), nn.ReLU6())
        self.head = nn.Linear(8, 5)

    def forward(self, x):
        x = self.stem(x)
        x = x + self.project(self.se(self.dw(self.expand(x))))
        y = self.cn_dw(x).permute(0, 2, 3, 1)
        y = self.cn_fc2(F.gelu(self.cn_fc1(self.cn_norm(y)))) * self.cn_scale
        x = x + y.permute(0, 3, 1, 2)
        a, b = x.chunk(2, dim=1)
        x = _shuffle(torch.cat([a, self.branch(b)], 1))
        x = F.interpolate(F.avg_pool2d(x, 2), scale_factor=2.0, mode="nearest")
        return self.head(x.mean((2, 3)))


@pytest.mark.parametrize("name", ["modern", "mobilenet_v2", "mnasnet0_5", "shufflenet_v2_x0_5"])
def test_dtd_conserves_on_bias_free_float64_models(name):
    """Composite dtd, every bias and BN shift zeroed, float64: Σ R_input = target logit (≤ 1e-3 relative; in fact to
    rounding). MobileNetV2 / MnasNet leaked 4.7e-4 / 8.5e-4 before the linear-neuron rule (z⁺ on linear-bottleneck
    projections with only negative contributions)."""
    torch.manual_seed(0)
    model = _Modern() if name == "modern" else getattr(torchvision.models, name)()
    model = _zero_shifts(model)
    x = _x((2, 3, 16, 16) if name == "modern" else (1, 3, 32, 32), seed=5)
    res = lrp_attribute(model, x, _target, "dtd")
    logit = res.logits.max(1).values
    rel = ((_sum(res.input) - logit).abs() / logit.abs()).max().item()
    assert rel < 1e-9, rel
    assert res.input.std() > 0


def test_sglrp_on_a_saturated_softmax_is_not_constant():
    """Random-init Inception-v3 has logits ~1e10: y_t(e_t − y) underflows to exactly 0 and SGLRP gave a constant map.
    The rescaled vector (log space) keeps the direction: the map equals that of the vector computed exactly."""
    import cnnlens
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 5))
    net = net.double().eval()
    with torch.no_grad():
        net[4].weight.mul_(1e6)
    x = _x()
    out = cnnlens.explain(net, x, "sglrp")
    assert (out.raw.flatten(1).std(1) > 0).all()
    logits = net(x)
    t = logits.argmax(1)
    onehot = F.one_hot(t, 5).to(DT)
    others = logits.masked_fill(onehot > 0, float("-inf"))
    q = (others - others.amax(1, keepdim=True)).exp()
    r0 = torch.where(onehot > 0, q.sum(1, keepdim=True), -q)
    ref = lrp_attribute(net, x, r0, "dtd").input.sum(1)
    torch.testing.assert_close(out.raw, ref, rtol=1e-9, atol=0)


class _CBAM(nn.Module):
    """CBAM (Woo et al. 2018): channel gate from avg- and max-pooled summaries, spatial gate from the channel mean and
    max (torch.max with a dim: a (values, indices) tuple)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.mlp = nn.Sequential(nn.Conv2d(4, 2, 1), nn.ReLU(), nn.Conv2d(2, 4, 1))
        self.spatial = nn.Conv2d(2, 1, 7, padding=3)
        self.out = nn.Identity()
        self.head = nn.Linear(4, 3)

    def forward(self, x):
        x = torch.relu(self.conv(x))
        ch = torch.sigmoid(self.mlp(x.mean((2, 3), keepdim=True)) + self.mlp(x.amax((2, 3), keepdim=True)))
        x = x * ch
        sp = torch.cat([x.mean(1, keepdim=True), torch.max(x, 1, keepdim=True)[0]], 1)
        x = self.out(x * torch.sigmoid(self.spatial(sp)))
        return self.head(x.mean((2, 3)))


def test_cbam_gates_are_signal_take_all():
    torch.manual_seed(0)
    net = _CBAM().double().eval()
    res = lrp_attribute(net, _x(), _r0(2, 3), "dtd", ["out"])
    torch.testing.assert_close(_sum(res.input), _sum(res.relevance["out"]), rtol=1e-10, atol=1e-14)
    rows = conservation(net, _x(), _r0(2, 3), "dtd")
    assert sum(r["kind"] == "gate" for r in rows) == 2
    assert all(r["kind"] != "split" for r in rows)  # the gate branches (channel max) receive no relevance


def test_attribute_access_keeps_relevance_or_is_a_shape():
    """``x.shape`` is a shape query (no relevance); ``x.T`` moves values (routing); neither is a silent constant."""
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc, self.out = nn.Linear(4, 4), nn.Identity()

        def forward(self, x):
            n = x.shape[0]
            return self.out(self.fc(x).T.T.reshape(n, -1))
    net = Net().double().eval()
    x = _x((3, 4), positive=True)
    rows = conservation(net, x, _r0(3, 4), "dtd")
    assert [r["kind"] for r in rows if r["kind"] == "route"].count("route") >= 2
    res = lrp_attribute(net, x, _r0(3, 4), "dtd")
    torch.testing.assert_close(_sum(res.input), _sum(_r0(3, 4)), rtol=1e-10, atol=1e-14)
