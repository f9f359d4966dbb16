"""zennit 0.5.1 oracle: every composite with a zennit namesake (and ``dtd`` built per lrp_sglrp_clrp.md §9.1) gives the
same input relevance as zennit with its VGG/ResNet canonizers, float64, random weights (BN statistics randomised)."""
from __future__ import annotations

import copy

import pytest
import torch
import torchvision

from cnnlens.lrp import lrp_attribute

from _lrp_oracle import randomize_batchnorm, rel_err, zennit_composite, zennit_relevance

ZENNIT_NAMESAKES = ["epsilon-plus", "epsilon-plus-flat", "epsilon-gamma-box", "epsilon-alpha2-beta1",
                    "epsilon-alpha2-beta1-flat", "dtd"]
_MODELS: dict = {}


def _model(name):
    """(model, independent copy for zennit) — built once per module; zennit's canonizers restore its copy."""
    if name not in _MODELS:
        _MODELS.clear()
        torch.manual_seed(0)
        model = randomize_batchnorm(getattr(torchvision.models, name)()).eval().double()
        _MODELS[name] = (model, copy.deepcopy(model))
    return _MODELS[name]


def _check(model_name, composite, size, tol=1e-6):
    model, twin = _model(model_name)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, size, size, generator=g, dtype=torch.float64)
    r0 = torch.randn(2, 1000, generator=g, dtype=torch.float64)
    ours = lrp_attribute(model, x, r0, composite).input
    ref = zennit_relevance(twin, x.clone().requires_grad_(), r0, zennit_composite(composite, model))
    err = rel_err(ours, ref)
    print(f"{model_name} {composite}: rel err {err:.3g}")
    assert err < tol, f"{model_name} {composite}: relative error {err:.3g}"


@pytest.mark.parametrize("composite", ZENNIT_NAMESAKES)
@pytest.mark.parametrize("model_name", ["vgg11", "resnet18"])
def test_matches_zennit_small(model_name, composite):
    _check(model_name, composite, 32)


@pytest.mark.slow
@pytest.mark.parametrize("composite", ZENNIT_NAMESAKES)
@pytest.mark.parametrize("model_name", ["vgg16", "vgg16_bn", "resnet50"])
def test_matches_zennit_full(model_name, composite):
    _check(model_name, composite, 224 if model_name != "resnet50" else 224)


def _zennit_layer_relevance(model, x, r0, composite, layers):
    """Relevance at module outputs in zennit: forward hook + retain_grad (the stored .grad is the relevance)."""
    from zennit.attribution import Gradient
    store, handles = {}, []
    mods = dict(model.named_modules())

    def hook_for(name):
        def hook(module, inputs, output):
            output.retain_grad()
            store[name] = output
        return hook
    try:
        with Gradient(model=model, composite=composite) as attributor:
            for name in layers:
                handles.append(mods[name].register_forward_hook(hook_for(name)))
            _, rel = attributor(x, attr_output=r0)
    finally:
        for h in handles:
            h.remove()
    return rel, {n: store[n].grad for n in layers}


def test_relevance_cam_reference_matches_zennit_bn_pass():
    """relevance_cam.md §7.5: conv_bias="none" ≡ zennit ZPlus(zero_params='bias') with exact-zero guard, BN → Pass,
    Sum/AvgPool → Norm, only the BasicBlock Sum canonizer (no BN merge); relevance read at layer outputs."""
    from zennit.composites import LayerMapComposite, layer_map_base
    from zennit.rules import ZPlus
    from zennit.torchvision import ResNetBasicBlockCanonizer
    from zennit.types import Convolution

    from _lrp_oracle import exact_zero
    model, twin = _model("resnet18")
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, 3, 32, 32, generator=g, dtype=torch.float64)
    r0 = torch.randn(2, 1000, generator=g, dtype=torch.float64)
    layers = ["layer4", "layer3", "layer2", "layer1"]
    ours = lrp_attribute(model, x, r0, "relevance-cam-reference", layers, conv_bias="none", input_relevance=False)
    comp = LayerMapComposite(layer_map=layer_map_base(exact_zero) + [
        (Convolution, ZPlus(stabilizer=exact_zero, zero_params="bias")),
        (torch.nn.Linear, ZPlus(stabilizer=exact_zero, zero_params="bias"))], canonizers=[ResNetBasicBlockCanonizer()])
    _, ref = _zennit_layer_relevance(twin, x.clone().requires_grad_(), r0, comp, layers)
    for name in layers:
        err = rel_err(ours.relevance[name], ref[name])
        print(f"relevance-cam-reference {name}: rel err {err:.3g} (max |R| {float(ref[name].abs().max()):.3g})")
        assert float(ref[name].abs().max()) > 0
        assert err < 1e-10, (name, err)


def test_sr_reference_matches_zennit():
    """sr_map.md §6.4: FC z+ ≡ ZPlus(zero_params='bias'), conv LRP-0 with bias ≡ Epsilon, both with an unsigned +1e-9
    callable stabiliser; max-pool plain gradient."""
    from zennit.composites import LayerMapComposite, layer_map_base
    from zennit.rules import Epsilon, ZPlus
    from zennit.types import Convolution

    def add_1e9(z):
        return z + 1e-9
    model, twin = _model("vgg11")
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 3, 32, 32, generator=g, dtype=torch.float64)
    r0 = torch.randn(2, 1000, generator=g, dtype=torch.float64)
    ours = lrp_attribute(model, x, r0, "sr-reference").input
    comp = LayerMapComposite(layer_map=layer_map_base(add_1e9) + [
        (Convolution, Epsilon(epsilon=add_1e9)),
        (torch.nn.Linear, ZPlus(stabilizer=add_1e9, zero_params="bias"))])
    ref = zennit_relevance(twin, x.clone().requires_grad_(), r0, comp)
    err = rel_err(ours, ref)
    print(f"sr-reference vgg11: rel err {err:.3g} (max |R| {float(ref.abs().max()):.3g})")
    assert float(ref.abs().max()) > 0
    assert err < 1e-10


# ----------------------------------------------------------------- reference composites (lrp_sglrp_clrp.md §3, §9.1)

_REF_MODELS: dict = {}


def _reference_model(name):
    """(model, twin for zennit) for the reference-composite oracles, float64: random BN statistics and mixed-sign conv
    biases (``randomize_batchnorm``), mixed-sign Linear biases too (torchvision's VGG classifier starts with zero
    biases, under which bias "full" and "none" would agree on the classifier), and one dead logit row (weight and bias
    zero, class 7): its z⁺ denominator is exactly 0 while its initial relevance is not (R/0 without the guard; zero
    denominators also arise in the average pools' Norm wherever a pooled channel is all ReLU zeros)."""
    if name not in _REF_MODELS:
        _REF_MODELS.clear()
        torch.manual_seed(0)
        model = randomize_batchnorm(getattr(torchvision.models, name)()).eval().double()
        g = torch.Generator().manual_seed(5)
        with torch.no_grad():
            for m in model.modules():
                if isinstance(m, torch.nn.Linear):
                    m.bias.copy_(torch.randn(m.bias.shape, generator=g, dtype=torch.float64) * 0.05)
            last = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]
            last.weight[7] = 0.0
            last.bias[7] = 0.0
        _REF_MODELS[name] = (model, copy.deepcopy(model))
    return _REF_MODELS[name]


def _reference_inputs(seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 3, 32, 32, generator=g, dtype=torch.float64)
    r0 = torch.randn(2, 1000, generator=g, dtype=torch.float64)
    return x, r0


@pytest.mark.parametrize("model_name", ["vgg11", "resnet18"])
def test_sglrp_reference_matches_zennit(model_name):
    """``sglrp-reference`` (§3: iNNvestigate 1.0.8.3 BoundedDeepTaylor) against zennit built per §9.1: first conv
    ZBox(−0.485/0.229, 0.594/0.225) with scalar bounds; every other conv and every Linear, the logit layer included,
    z⁺ with the FULL bias (custom ``ZPlusFullBias`` hook: weight⁺ with b_j, negative-input copy with W⁻ and no bias);
    the 1e-7-at-exact-zeros guard (iNNvestigate ``SafeDivide``) as a callable stabiliser everywhere, Norm included;
    BN merged by zennit's canonizers (the composite folds it). Max pool: the composite's mode is ``"wta"`` (gradient
    routing through the recorded argmax), which is zennit's plain max-pool gradient, so no tie assumption is needed.
    The test is sensitive to the bias mode: b⁺ (zennit's stock ZPlus) on the Linear layers only, or on the non-first
    convs only, moves the map by far more than the tolerance."""
    from cnnlens.lrp import get_composite
    from cnnlens.lrp.rules import Stabilizer, ZPlus

    from _lrp_oracle import SCALAR_HIGH, SCALAR_LOW, reference_composite
    model, twin = _reference_model(model_name)
    x, r0 = _reference_inputs(4)
    comp = get_composite("sglrp-reference", model)
    assert comp.maxpool == "wta" and (comp.first.low, comp.first.high) == (float(SCALAR_LOW), float(SCALAR_HIGH))
    ours = lrp_attribute(model, x, r0, "sglrp-reference").input
    ref = zennit_relevance(twin, x.clone().requires_grad_(), r0, reference_composite("sglrp-reference", model))
    assert bool(torch.isfinite(ref).all()) and float(ref.abs().max()) > 0
    err = rel_err(ours, ref)
    print(f"sglrp-reference {model_name}: rel err {err:.3g} (max |R| {float(ref.abs().max()):.3g})")
    assert err < 1e-10

    s = Stabilizer("exact_zero", 1e-7)
    convs = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)][1:]  # all but the zB layer
    for label, overrides in (("linear b+", {torch.nn.Linear: ZPlus(s, bias="positive")}),
                             ("conv b+", {n: ZPlus(s, bias="positive") for n in convs})):
        other = lrp_attribute(model, x, r0, "sglrp-reference", overrides=overrides).input
        sep = rel_err(other, ref)
        print(f"sglrp-reference {model_name} with {label}: rel diff {sep:.3g}")
        assert sep > 1e-3, (label, sep)


@pytest.mark.parametrize("model_name", ["vgg11", "resnet18"])
def test_clrp_reference_matches_zennit(model_name):
    """``clrp-reference`` (§3: CLRP official code) against zennit built per §9.1: first conv ZBox with the scalar bounds
    (−0.485/0.229, 0.594/0.225), bias-free z⁺ (``ZPlus(zero_params='bias')``) on every other conv and Linear, the
    unsigned +1e-9 stabiliser as a callable everywhere (Norm included), BN merged by zennit's canonizers.

    Max pool: the composite splits relevance equally among tied maxima (``ties="split"``, CLRP official); zennit's
    plain gradient routes it to one argmax. The two agree where no window has tied positive maxima. The inputs are
    random float64, so positive ties do not occur; the only ties are windows of ReLU zeros, whose pooled output is 0
    and receives zero relevance (z⁺: R_i = x_i·c_i, Norm: R_k = x_k·s), so splitting it changes nothing. The test runs
    the composite as it is (``maxpool="split"``) and, as a check on that argument, with ``maxpool="wta"``: both must
    match zennit."""
    from cnnlens.lrp import get_composite

    from _lrp_oracle import SCALAR_HIGH, SCALAR_LOW, reference_composite
    model, twin = _reference_model(model_name)
    x, r0 = _reference_inputs(6)
    comp = get_composite("clrp-reference", model)
    assert comp.maxpool == "split" and (comp.first.low, comp.first.high) == (float(SCALAR_LOW), float(SCALAR_HIGH))
    ref = zennit_relevance(twin, x.clone().requires_grad_(), r0, reference_composite("clrp-reference", model))
    assert bool(torch.isfinite(ref).all()) and float(ref.abs().max()) > 0
    for maxpool in ("split", "wta"):
        ours = lrp_attribute(model, x, r0, "clrp-reference", maxpool=maxpool).input
        err = rel_err(ours, ref)
        print(f"clrp-reference {model_name} maxpool={maxpool}: rel err {err:.3g} "
              f"(max |R| {float(ref.abs().max()):.3g})")
        assert err < 1e-10, (maxpool, err)


@pytest.mark.parametrize("composite", ["sglrp-reference", "clrp-reference"])
def test_reference_composites_mixed_sign_inputs_match_zennit(composite):
    """The z⁺ negative-input term (x⁻ through W⁻, no bias; §2 ZPlus) is never reached in VGG/ResNet under these
    composites (every z⁺ layer follows a ReLU). A toy net with a conv and the logit Linear fed by un-rectified,
    mixed-sign inputs checks that term against zennit (``ZPlusFullBias`` / ``ZPlus(zero_params='bias')``), float64."""
    from _lrp_oracle import reference_composite
    torch.manual_seed(3)
    nn = torch.nn
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 6, 3), nn.ReLU(), nn.Flatten(), nn.Linear(6 * 6 * 6, 16), nn.Linear(16, 10)).double().eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                m.bias.copy_(torch.randn(m.bias.shape, dtype=torch.float64) * 0.1)
    twin = copy.deepcopy(model)
    g = torch.Generator().manual_seed(7)
    x = torch.randn(2, 3, 16, 16, generator=g, dtype=torch.float64)
    r0 = torch.randn(2, 10, generator=g, dtype=torch.float64)
    ours = lrp_attribute(model, x, r0, composite).input
    ref = zennit_relevance(twin, x.clone().requires_grad_(), r0, reference_composite(composite, model))
    assert bool(torch.isfinite(ref).all()) and float(ref.abs().max()) > 0
    err = rel_err(ours, ref)
    print(f"{composite} toy mixed-sign: rel err {err:.3g} (max |R| {float(ref.abs().max()):.3g})")
    assert err < 1e-10
