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
