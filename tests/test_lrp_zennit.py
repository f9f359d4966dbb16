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
