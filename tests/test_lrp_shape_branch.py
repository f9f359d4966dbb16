"""A module whose forward branches in Python on the input's spatial size (timm's ``ConvMlp`` in ``vgg*``: adaptive
average pooling when the feature map is smaller than fc1's kernel) cannot be traced by plain torch.fx; the LRP plan is
then traced with concrete shapes for the input being explained (issue 18). Each size takes its own branch and plan;
``dtd`` conserves on both; plans of ordinary models are unchanged (one per model, whatever the input size)."""
from __future__ import annotations

import pytest
import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

import cnnlens
from cnnlens.lrp import get_plan, lrp_attribute

DT = torch.float64


class _ConvMlpLike(nn.Module):
    """Like timm's ConvMlp: fc1 is a k×k conv; a smaller feature map is first pooled up to k×k."""

    def __init__(self, cin=8, hidden=16, classes=5, k=4):
        super().__init__()
        self.k = k
        self.fc1 = nn.Conv2d(cin, hidden, k)
        self.act = nn.ReLU()
        self.fc2 = nn.Conv2d(hidden, classes, 1)

    def forward(self, x):
        if x.shape[-2] < self.k or x.shape[-1] < self.k:
            x = F.adaptive_avg_pool2d(x, self.k)
        return self.fc2(self.act(self.fc1(x)))


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, 1, 1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2))
        self.pre_logits = _ConvMlpLike()

    def forward(self, x):
        return self.pre_logits(self.features(x)).mean((2, 3))


def _model():
    torch.manual_seed(0)
    model = _Net()
    with torch.no_grad():  # bias-free, BN shift zero: the setting in which dtd must conserve
        for m in model.modules():
            if isinstance(getattr(m, "bias", None), torch.Tensor):
                m.bias.zero_()
            if isinstance(m, nn.BatchNorm2d):
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
    return model.double().eval()


def _target(z):
    return z * F.one_hot(z.argmax(1), z.shape[1]).to(z.dtype)


def _pools(plan):
    return sum(n.op == "call_function" and n.target is F.adaptive_avg_pool2d for n in plan.graph.nodes)


def test_plain_fx_cannot_trace_the_branch():
    with pytest.raises(Exception):
        fx.symbolic_trace(_Net())


@pytest.mark.parametrize("size,pooled", [(6, 1), (12, 0)])  # 3×3 features: pooled up to 4×4; 6×6: conv directly
def test_each_input_size_takes_its_branch_finite_and_dtd_conserves(size, pooled):
    model = _model()
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(size), dtype=DT)
    res = lrp_attribute(model, x, _target, "dtd")
    plan = get_plan(model, "fold", x.shape)
    assert plan.traced_shape == tuple(x.shape) and _pools(plan) == pooled
    torch.testing.assert_close(res.logits, model(x))  # the plan computes the model's own forward on this branch
    assert torch.isfinite(res.input).all() and res.input.std() > 0
    logit = res.logits.max(1).values
    rel = ((res.input.reshape(2, -1).sum(1) - logit).abs() / logit.abs()).max().item()
    assert rel < 1e-3, rel
    for composite in ("epsilon-plus", "epsilon-alpha2-beta1"):
        r = lrp_attribute(model, x, _target, composite).input
        assert torch.isfinite(r).all() and r.std() > 0


def test_shape_traced_plans_are_cached_per_sample_shape():
    model = _model()
    small, large = (2, 3, 6, 6), (2, 3, 12, 12)
    p_small = get_plan(model, "fold", small)
    p_large = get_plan(model, "fold", large)
    assert p_small is not p_large and _pools(p_small) == 1 and _pools(p_large) == 0
    assert get_plan(model, "fold", (5, 3, 6, 6)) is p_small      # another batch size: same plan (graph is symbolic)
    assert get_plan(model, "fold", large) is p_large
    lrp_attribute(model, torch.randn(small, dtype=DT), _target)  # alternating sizes never trips the branch guard
    lrp_attribute(model, torch.randn(large, dtype=DT), _target)


def test_traceable_models_keep_one_plan_for_every_size():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    plan = get_plan(model, "fold", (1, 3, 8, 8))
    assert plan.traced_shape is None
    assert get_plan(model, "fold", (1, 3, 16, 16)) is plan and get_plan(model, "fold") is plan


def test_timm_vgg11_bn_explained_at_64px():
    """timm's vgg11_bn (pre_logits = ConvMlp, a timm FX leaf without a rule) is traced through at 64 px, where its
    2×2 feature map takes ConvMlp's adaptive-pool branch."""
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    model = timm.create_model("vgg11_bn", pretrained=False).eval()
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    expl = cnnlens.explain(model, x, "lrp")
    assert expl.raw.shape == (2, 64, 64)
    assert torch.isfinite(expl.raw).all()
    assert (expl.raw.reshape(2, -1).std(1) > 0).all()
    with torch.no_grad():
        torch.testing.assert_close(expl.logits, model(x), rtol=1e-4, atol=1e-4)
