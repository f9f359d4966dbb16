"""Any CNN without per-architecture code (lrp_sglrp_clrp.md §1): residual Adds, concatenations, depthwise convs,
ReLU6, timm Conv2dSame / BatchNormAct2d; unsupported operations raise; the user's model comes back untouched."""
from __future__ import annotations

import copy

import pytest
import torch
import torchvision
from torch import nn

from cnnlens.errors import UnsupportedOperationError
from cnnlens.lrp import Composite, Epsilon, Norm, Stabilizer, ZBox, lrp_attribute

from _models import randomize_batchnorm


def _sum(t):
    return t.reshape(t.shape[0], -1).sum(1)


def _bias_free(model):
    """Zero every bias and BN shift (random BN scales kept): then an output is positive only through positive
    contributions, so bias-free z+ never meets Z = 0 where relevance arrives, and conservation is exact."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.running_mean.zero_()
                m.bias.zero_()
            elif isinstance(m, (nn.Conv2d, nn.Linear)) and m.bias is not None:
                m.bias.zero_()
    return model


def _lrp0_box():
    """Bias-free LRP-0 with a zB first conv: conserves layer by layer on a bias-free model, also through linear
    bottlenecks (MobileNet/EfficientNet), where z+ loses the relevance of outputs with no positive contribution."""
    s = Stabilizer("exact_zero", 0.0)
    return Composite(Epsilon(s, bias=False), Epsilon(s, bias=False), first=ZBox(-2.2, 2.7, s), norm=Norm(s))


def _conserves(model, size, layers, composite=None, dtype=torch.float64, rtol=1e-8, n=2, memory_format="auto"):
    """Bias-free rules on a bias-free model: Σ R at every requested block boundary and at the input equals Σ R_init;
    the logits equal the model's."""
    composite = composite or _lrp0_box()
    model = _bias_free(model.eval().to(dtype))
    x = torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(0), dtype=dtype)
    with torch.no_grad():
        ref = model(x)
    r0 = torch.randn(ref.shape, generator=torch.Generator().manual_seed(1), dtype=dtype)
    res = lrp_attribute(model, x, r0, composite, layers, memory_format=memory_format)
    torch.testing.assert_close(res.logits, ref, rtol=1e-6 if dtype == torch.float32 else 1e-10, atol=1e-6)
    expected = r0.sum(1)
    for name in layers:
        torch.testing.assert_close(_sum(res.relevance[name]), expected, rtol=rtol, atol=rtol, msg=name)
    torch.testing.assert_close(_sum(res.input), expected, rtol=rtol, atol=rtol)
    assert torch.isfinite(res.input).all()
    return res


class _TimmLike(nn.Module):
    """A small net with timm's same-padding conv, fused BatchNormAct2d, a depthwise conv, a residual Add of
    mixed-sign tensors, a concatenation and functional ops."""

    def __init__(self):
        super().__init__()
        from timm.layers import BatchNormAct2d, Conv2dSame
        self.stem = Conv2dSame(3, 8, 3, stride=2, bias=False)
        self.bn1 = BatchNormAct2d(8, act_layer=nn.ReLU6)
        self.dw = Conv2dSame(8, 8, 3, stride=2, groups=8, bias=False)
        self.bn2 = BatchNormAct2d(8, act_layer=nn.ReLU6)
        self.pw = nn.Conv2d(8, 8, 1, bias=False)
        self.bn3 = BatchNormAct2d(8, apply_act=False)
        self.branch = nn.Conv2d(8, 4, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.drop = nn.Dropout(0.2)
        self.fc = nn.Linear(12, 5)

    def forward(self, x):
        x = self.bn2(self.dw(self.bn1(self.stem(x))))
        x = x + self.bn3(self.pw(x))  # mixed-sign residual (no activation after bn3)
        x = torch.cat([x, torch.relu(self.branch(x))], dim=1)
        return self.fc(self.drop(torch.flatten(self.pool(x), 1)))


def test_timm_like_blocks_conserve():
    pytest.importorskip("timm")
    torch.manual_seed(0)
    net = randomize_batchnorm(_TimmLike())
    _conserves(net, 17, ["bn1", "dw", "pool"])  # odd size: asymmetric same padding


def test_resnet18_float32_conserves():
    torch.manual_seed(0)
    # contiguous: the logits are compared with the model's own (contiguous) forward at 1e-6; the channels_last layout
    # the engine picks by default for float32 on the CPU rounds differently (~2e-6, as the model itself does in that
    # layout) and is compared with this path in test_memory_formats_agree
    _conserves(torchvision.models.resnet18(), 32, ["layer4", "layer1"], "dtd", dtype=torch.float32, rtol=2e-4,
               memory_format="contiguous")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_memory_formats_agree(dtype):
    """The channels_last pass (default for float32 conv nets on the CPU) equals the contiguous one up to rounding, at
    the input and at intermediate layers, and returns contiguous tensors; a forward that rejects channels_last falls
    back for good."""
    torch.manual_seed(0)
    model = torchvision.models.resnet18().eval().to(dtype)
    x = torch.randn(2, 3, 48, 48, generator=torch.Generator().manual_seed(0), dtype=dtype)
    r0 = torch.nn.functional.one_hot(torch.tensor([3, 7]), 1000).to(dtype)
    layers = ["layer1", "layer3.0.conv1"]
    ref = lrp_attribute(model, x, r0, "epsilon-plus", layers, memory_format="contiguous")
    got = lrp_attribute(model, x, r0, "epsilon-plus", layers, memory_format="channels_last")
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    for a, b in [(got.input, ref.input)] + [(got.relevance[k], ref.relevance[k]) for k in layers] + [
            (got.activations[k], ref.activations[k]) for k in layers]:
        assert a.is_contiguous()
        torch.testing.assert_close(a, b, rtol=0, atol=tol * b.abs().max().item())

    class _Views(nn.Module):  # .view on a channels_last feature map raises: the engine must fall back
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)
            self.fc = nn.Linear(4 * 6 * 6, 5)

        def forward(self, x):
            y = torch.relu(self.conv(x))
            return self.fc(y.view(y.shape[0], -1))
    net = _Views().eval().to(dtype)
    xs = torch.randn(2, 3, 8, 8, dtype=dtype)
    r0 = torch.ones(2, 5, dtype=dtype)
    a = lrp_attribute(net, xs, r0, "epsilon-plus")
    b = lrp_attribute(net, xs, r0, "epsilon-plus", memory_format="contiguous")
    torch.testing.assert_close(a.input, b.input, rtol=0, atol=0)
    if dtype == torch.float32:
        from cnnlens.lrp import get_plan
        assert get_plan(net, "fold").channels_last_ok is False


@pytest.mark.slow
@pytest.mark.parametrize("name,layers", [
    ("densenet121", ["features.denseblock1", "features.denseblock3", "features.norm5"]),
    ("mobilenet_v2", ["features.1", "features.6", "features.13", "features"]),
    ("resnet50", ["layer1", "layer2", "layer3", "layer4"]),
    ("vgg16_bn", ["features.43", "features.33"]),
    ("alexnet", ["features.11"]),
])
def test_torchvision_models_conserve(name, layers):
    torch.manual_seed(0)
    model = randomize_batchnorm(getattr(torchvision.models, name)())
    _conserves(model, 64 if name != "alexnet" else 96, layers)


@pytest.mark.slow
def test_tf_efficientnet_lite0_conserves():
    timm = pytest.importorskip("timm")
    try:
        import cnnlens
        model = cnnlens.load_model("efficientnet_lite0")
    except Exception:  # noqa: BLE001 - zoo not merged yet / no weights: random timm init
        torch.manual_seed(0)
        model = randomize_batchnorm(timm.create_model("tf_efficientnet_lite0", pretrained=False))
    _conserves(model, 64, ["bn1", "blocks.0", "blocks.2", "blocks.4", "bn2"])


# ---------------------------------------------------------------------------------------------- untouched model

def _snapshot(model):
    return ({k: v.clone() for k, v in model.state_dict().items()},
            {n: m.training for n, m in model.named_modules()},
            {n: p.requires_grad for n, p in model.named_parameters()},
            {n: (len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks)) for n, m in
             model.named_modules()})


def _assert_same(model, snap):
    state, training, grads, hooks = snap
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]) and v.dtype == state[k].dtype, k
    assert {n: m.training for n, m in model.named_modules()} == training
    assert {n: p.requires_grad for n, p in model.named_parameters()} == grads
    assert {n: (len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks)) for n, m in
            model.named_modules()} == hooks


class _Gated(nn.Module):
    """A product of two signals (neither operand is a gate): no LRP rule → must raise, naming the op. (Gates such as
    squeeze-excitation have a rule since issue 18: tests/test_lrp_modern_rules.py.)"""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        x = torch.relu(self.bn(self.conv(x)))
        x = x * x
        return self.fc(x.mean((2, 3)))


def test_model_untouched_after_success_and_failure():
    torch.manual_seed(0)
    model = randomize_batchnorm(torchvision.models.resnet18())
    model.train()                      # unusual flags must survive
    model.layer1[0].conv1.weight.requires_grad_(False)
    snap = _snapshot(model)
    x = torch.randn(2, 3, 32, 32)
    res = lrp_attribute(model, x, torch.randn(2, 1000), "epsilon-plus", ["layer2"])
    _assert_same(model, snap)
    assert res.input.shape == x.shape
    gated = _Gated().train()
    snap = _snapshot(gated)
    with pytest.raises(UnsupportedOperationError, match="mul"):
        lrp_attribute(gated, torch.randn(2, 3, 8, 8), torch.randn(2, 2))
    _assert_same(gated, snap)


@pytest.mark.parametrize("module,match", [(nn.LPPool2d(2, 1), "LPPool2d"), (nn.Softmax(1), "Softmax"),
                                          (nn.ConvTranspose2d(4, 4, 1), "transposed")])
def test_unsupported_modules_raise_with_name(module, match):
    net = nn.Sequential(nn.Conv2d(3, 4, 3), module, nn.Flatten(), nn.Linear(144, 3))
    with pytest.raises(UnsupportedOperationError, match=match):
        lrp_attribute(net, torch.randn(1, 3, 8, 8), torch.randn(1, 3))


def test_explain_leaves_model_untouched_and_deepcopy_unneeded():
    import cnnlens
    torch.manual_seed(0)
    model = torchvision.models.vgg11().eval()
    twin = copy.deepcopy(model)
    snap = _snapshot(model)
    e = cnnlens.explain(model, torch.randn(1, 3, 32, 32), "lrp", composite="epsilon-plus")
    _assert_same(model, snap)
    for (k, a), (_, b) in zip(model.state_dict().items(), twin.state_dict().items()):
        assert torch.equal(a, b), k
    assert e.raw.shape == (1, 32, 32)
