"""LRP / SGLRP / CLRP / Deep Taylor methods (lrp_sglrp_clrp.md §4-6, §9.4)."""
from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

import cnnlens
from cnnlens.lrp import lrp_attribute
from cnnlens.methods import get_method

from _models import randomize_batchnorm

_CACHE: dict = {}


def _vgg():
    if "vgg" not in _CACHE:
        torch.manual_seed(0)
        _CACHE["vgg"] = torchvision.models.vgg11().eval().double()
    return _CACHE["vgg"]


def _resnet():
    if "resnet" not in _CACHE:
        torch.manual_seed(0)
        _CACHE["resnet"] = randomize_batchnorm(torchvision.models.resnet18()).eval().double()
    return _CACHE["resnet"]


def _x(n=2, size=32, seed=0):
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _one_hot(t, c=1000):
    return torch.nn.functional.one_hot(t, c).double()


def _norm(a):
    return a / a.reshape(a.shape[0], -1).sum(1).view(-1, 1, 1, 1)


class _TwoClass(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 6, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(6, 8, 3), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 2)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.features(x)), 1))


def test_registration():
    for name in ("lrp", "sglrp", "clrp", "deep-taylor"):
        spec = get_method(name)
        assert spec.family == "lrp" and spec.layers == "none" and spec.signed
    assert "composite" in cnnlens.method_options("lrp")


def test_lrp_default_is_dtd_logit_and_composite_option():
    model, x = _resnet(), _x()
    e = cnnlens.explain(model, x, "lrp")
    t = e.target
    z_t = e.logits.gather(1, t[:, None])
    ref = lrp_attribute(model, x, _one_hot(t) * z_t, "dtd").input
    torch.testing.assert_close(e.raw, ref.sum(1), rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(e.extras["relevance"], ref)
    assert e.heatmap.shape == (2, 32, 32) and e.signed
    assert float(e.heatmap.min()) >= 0 and float(e.heatmap.max()) <= 1
    eps = cnnlens.explain(model, x, "lrp", composite="epsilon-plus")
    ref_eps = lrp_attribute(model, x, _one_hot(t) * z_t, "epsilon-plus").input.sum(1)
    torch.testing.assert_close(eps.raw, ref_eps)
    dt = cnnlens.explain(model, x, "deep-taylor")
    torch.testing.assert_close(dt.raw, e.raw)
    # Σ map = z_t for bias-free rules (conservation)
    torch.testing.assert_close(e.raw.sum((1, 2)), z_t[:, 0], rtol=1e-9, atol=1e-12)


def test_sglrp_paper_sums_to_zero_and_matches_initial_relevance():
    model, x = _resnet(), _x()
    e = cnnlens.explain(model, x, "sglrp", target=[3, 7])
    y = e.logits.softmax(1)
    t = torch.tensor([3, 7])
    y_t = y.gather(1, t[:, None])
    r0 = y_t * (_one_hot(t) - y)
    ref = lrp_attribute(model, x, r0, "dtd").input.sum(1)
    torch.testing.assert_close(e.raw, ref, rtol=1e-9, atol=1e-15)
    scale = float(e.raw.abs().amax())
    assert scale > 0
    assert float(e.raw.sum((1, 2)).abs().max()) < 1e-9 * scale * e.raw[0].numel()


def test_sglrp_paper_saturated_softmax_float32():
    """1 − y_t is computed as Σ_{n≠t} y_n: with y_t = 1 in float32 the map must not vanish (spec §4.4)."""
    torch.manual_seed(0)
    net = _TwoClass().eval()
    with torch.no_grad():
        net.fc.weight.mul_(40.0)
        net.fc.bias.copy_(torch.tensor([40.0, -40.0]))
    x = torch.rand(2, 3, 16, 16)
    e = cnnlens.explain(net, x, "sglrp", target=0)
    assert float(e.logits.softmax(1)[:, 0].min()) == 1.0  # saturated in float32
    assert bool((e.raw.abs().amax((1, 2)) > 0).all())


def test_sglrp_two_class_closed_form():
    """2 classes: R_init = y_t·y_o·(e_t − e_o), so SGLRP = y_t y_o (LRP(e_t) − LRP(e_o)) (spec §9.4)."""
    torch.manual_seed(1)
    net = _TwoClass().eval().double()
    x = _x(2, 16)
    e = cnnlens.explain(net, x, "sglrp", target=0)
    y = e.logits.softmax(1)
    lt = lrp_attribute(net, x, _one_hot(torch.zeros(2, dtype=torch.long), 2), "dtd").input.sum(1)
    lo = lrp_attribute(net, x, _one_hot(torch.ones(2, dtype=torch.long), 2), "dtd").input.sum(1)
    expected = (y[:, 0] * y[:, 1]).view(-1, 1, 1) * (lt - lo)
    torch.testing.assert_close(e.raw, expected, rtol=1e-9, atol=1e-15)


def test_sglrp_reference_closed_form_and_zero_sum():
    """A = ΣA_t·(N[LRP(e_t)] − N[LRP(w)]), w_n = exp(z_n)·1[z_n>0]·1[n≠t] (spec §4.5), with sglrp-reference rules."""
    model, x = _vgg(), _x()
    e = cnnlens.explain(model, x, "sglrp", mode="reference")
    z, t = e.logits, e.target
    assert bool((z.gather(1, t[:, None]) > 0).all())
    onehot = _one_hot(t)
    a_t_unit = lrp_attribute(model, x, onehot, "sglrp-reference").input
    w = torch.exp(z - z.max(1, keepdim=True).values) * (z > 0) * (1 - onehot)
    a_w = lrp_attribute(model, x, w, "sglrp-reference").input
    p = z.clamp(min=0).softmax(1)
    p_t = p.gather(1, t[:, None])
    c = (p_t * (p * (1 - onehot)).sum(1, keepdim=True) + 1e-8).view(-1, 1, 1, 1)
    a_t = c * a_t_unit
    sum_t = a_t.reshape(2, -1).sum(1).view(-1, 1, 1, 1)
    expected = sum_t * (_norm(a_t_unit) - _norm(a_w))
    # random-weight maps of different classes are alike: the difference cancels ~8 digits, hence atol 1e-7·max
    torch.testing.assert_close(e.extras["relevance"], expected, rtol=1e-6, atol=1e-7 * float(expected.abs().max()))
    # Σ map = ΣA_t − s·ΣA_o = 0 by construction, up to the round-off of the cancelling subtraction
    assert bool((e.raw.sum((1, 2)).abs() < 1e-8 * e.raw.abs().sum((1, 2))).all())


def test_sglrp_reference_nonpositive_target_gives_zero_map_with_warning():
    model, x = _vgg(), _x()
    z = model(x)
    t = z.argmin(1)
    assert bool((z.gather(1, t[:, None]) <= 0).all())
    with pytest.warns(RuntimeWarning, match="<= 0"):
        e = cnnlens.explain(model, x, "sglrp", mode="reference", target=t.tolist())
    assert torch.isfinite(e.raw).all() and float(e.raw.abs().max()) == 0.0


def test_clrp_official_formula():
    model, x = _vgg(), _x()
    e = cnnlens.explain(model, x, "clrp")
    z, t = e.logits, e.target
    onehot = _one_hot(t)
    r = lrp_attribute(model, x, onehot * z, "clrp-reference").input
    r_d = lrp_attribute(model, x, (1 - onehot) * z.abs(), "clrp-reference").input
    diff = (_norm(r) - _norm(r_d)).clamp(min=0)
    expected = diff / diff.reshape(2, -1).amax(1).view(-1, 1, 1, 1)
    # z+ maps of different classes nearly coincide (CLRP's motivation): R/ΣR − R_d/ΣR_d cancels ~8 digits, and the
    # method's batched rows round differently from these separate calls → atol 1e-6 on a map whose max is 1
    torch.testing.assert_close(e.extras["relevance"], expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(e.raw, expected.sum(1), rtol=1e-5, atol=3e-6)
    assert float(e.heatmap.min()) >= 0.5 - 1e-12  # non-negative map → upper half of the signed display


def test_clrp_type2_and_sglrp_repo_variant():
    model, x = _vgg(), _x()
    e2 = cnnlens.explain(model, x, "clrp", dual="type2")
    rel = e2.extras["relevance"]
    assert float(rel.min()) >= 0 and torch.allclose(rel.reshape(2, -1).amax(1), torch.ones(2, dtype=torch.float64))
    # type 2 dual by hand: virtual neuron with weights −w_t on the logit layer's input, bias-free z+
    t = e2.target
    fc = model.classifier[6]
    res = lrp_attribute(model, x, _one_hot(t) * e2.logits, "clrp-reference", ["classifier.5"])
    assert res.relevance["classifier.5"].shape == (2, 4096)
    er = cnnlens.explain(model, x, "clrp", variant="sglrp_repo")
    assert bool((er.raw.sum((1, 2)).abs() < 1e-8 * er.raw.abs().sum((1, 2))).all())
    assert fc.weight.shape[0] == 1000



def _with_virtual_classes(model, targets):
    """Copy of ``model`` whose last Linear (C outputs) has one extra output row per sample b: the CLRP type-2 virtual
    class of sample b (spec §4.2) at index C + b, with weights −w_t and bias −b_t (t = targets[b]), so its logit is
    −z_t (the negated target). Seeding sample b on row C + b only is the per-sample construction in one batched pass
    (the other virtual rows carry zero relevance). The bias never enters the relevance: the dual pass seeds the virtual
    class with |z_t| (the official code's ``initialise_rel(torch.abs(R))`` with R[t] = z_t, not the virtual logit) and
    ``clrp-reference``'s z⁺ is bias-free (the official Linear hook uses the weights only: Z = x·max(0, −W)ᵀ + 1e-9).
    Only the modules on the path to the logit layer are (shallow-)copied; every other module and parameter is shared."""
    import copy
    name, fc = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)][-1]
    virtual = nn.Linear(fc.in_features, fc.out_features + len(targets)).to(fc.weight)
    with torch.no_grad():
        virtual.weight.copy_(torch.cat([fc.weight, -fc.weight[targets]]))
        virtual.bias.copy_(torch.cat([fc.bias, -fc.bias[targets]]))
    twin = copy.copy(model)
    twin._modules = dict(model._modules)
    node, *path, attr = [twin, *name.split(".")]
    for part in path:
        child = copy.copy(node._modules[part])
        child._modules = dict(child._modules)
        node._modules[part] = node = child
    node._modules[attr] = virtual
    return twin


@pytest.mark.parametrize("model_name", ["vgg11", "resnet18"])
def test_clrp_type2_matches_virtual_class_oracle(model_name):
    """CLRP ``dual="type2"`` (spec §4.2) against an independent construction: a model copy whose logit layer has an
    extra virtual class −w_t per sample (``_with_virtual_classes``), plain ``lrp_attribute`` with ``clrp-reference``
    from |z_t| on each sample's virtual class; target pass LRP(z_t e_t) on the original model; map
    max(0, R/ΣR − R_d/ΣR_d) per input channel, divided by its max. Distinct explicit per-sample targets (3, 5), so a
    virtual row taken from the wrong sample's target would show.

    Tolerance: z⁺ maps of different top neurons nearly coincide in random nets (CLRP's motivation), so the difference
    R/ΣR − R_d/ΣR_d is a small fraction c of the normalised maps (c ≈ 1e-8–5e-8 on the random VGG11, ≈ 1e-2 on
    ResNet18) and amplifies their float64 round-off (≤ 7e-16 of max|R/ΣR| measured, method vs oracle) by 1/c. The
    allowed error on the max-1 map is 1e-14/c per sample. The oracle tells type 2 from type 1 (O(1) apart)."""
    model, x = (_vgg() if model_name == "vgg11" else _resnet()), _x()
    n, c = x.shape[0], 1000
    target = [3, 5]
    e = cnnlens.explain(model, x, "clrp", target=target, dual="type2")
    t, z = e.target, e.logits
    assert t.tolist() == target
    r = lrp_attribute(model, x, _one_hot(t) * z, "clrp-reference").input
    r0 = torch.zeros(n, c + n, dtype=torch.float64)
    r0[torch.arange(n), c + torch.arange(n)] = z.gather(1, t[:, None])[:, 0].abs()
    res = lrp_attribute(_with_virtual_classes(model, t), x, r0, "clrp-reference")
    torch.testing.assert_close(res.logits[:, :c], z, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(res.logits[:, c:], -z[:, t], rtol=1e-12, atol=1e-12)  # [b, C + k] = −z_{t_k}(x_b)
    n_t, n_d = _norm(r), _norm(res.input)
    diff = n_t - n_d
    cond = (diff.reshape(n, -1).abs().amax(1) / n_t.reshape(n, -1).abs().amax(1)).view(-1, 1, 1, 1)
    diff = diff.clamp(min=0)
    expected = diff / diff.reshape(n, -1).amax(1).view(-1, 1, 1, 1)
    err = (e.extras["relevance"] - expected).abs().reshape(n, -1).amax(1)
    err_raw = (e.raw - expected.sum(1)).abs().reshape(n, -1).amax(1)
    allowed = 1e-14 / cond.flatten()
    print(f"clrp type2 {model_name}: c={cond.flatten().tolist()}, max abs err {err.tolist()} "
          f"(raw {err_raw.tolist()}), allowed {allowed.tolist()}")
    assert bool((err < allowed).all()) and bool((err_raw < 3 * allowed).all())
    type1 = cnnlens.explain(model, x, "clrp", target=target)
    assert float((type1.extras["relevance"] - e.extras["relevance"]).abs().max()) > 0.1


def test_bad_options_raise():
    from cnnlens.errors import MethodError
    model, x = _vgg(), _x(1)
    with pytest.raises(MethodError):
        cnnlens.explain(model, x, "sglrp", mode="papr")
    with pytest.raises(MethodError):
        cnnlens.explain(model, x, "lrp", composite="epsilon-plus", low=-1.0)
    with pytest.raises(MethodError):
        cnnlens.explain(model, x, "lrp", composite="nope")
