"""Issue 18 coverage: the LRP family on the CNN families people use (random init, no weights).

On each architecture: ``layer="stages"`` gives ≥ 3 post-activation layers (as ``explainable_layers`` classifies them);
LRP, SGLRP, Relevance-CAM at ``layer="stages"``, SISE and SR map run and give finite maps that are not constant; and
composite ``dtd`` conserves on the bias-free model in float64 (Σ input relevance = target logit within 1e-3 relative,
lrp_modern_layers.md §7). The default tier runs four small members of the families (64 px, tiny widths); the slow tier
runs the issue's full list of 19 torchvision and 15 timm models at 128 px. ``benchmarks/architecture_table.py`` runs the
same checks (``tests/_architectures.py``) and writes the README's architecture × method table.
"""
from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

import _architectures as A
from conftest import assert_untouched, snapshot

pytest.importorskip("timm")

_MODELS: dict = {}
_CONSERVATION_RTOL = 1e-3


def _model(name: str):
    if name not in _MODELS:
        _MODELS.clear()          # one model alive at a time (the full list holds 34)
        _MODELS[name] = A.build(name)
    return _MODELS[name]


def _input(size: int) -> torch.Tensor:
    return torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))


def _check(name: str, check: str, size: int, cheap: bool) -> None:
    model = _model(name)
    x = _input(size)
    if check == "stages":
        A.check_stages(name, model, x)
    elif check == "conservation":
        err = A.conservation_error(name, size)
        assert err <= _CONSERVATION_RTOL, f"{name}: Σ R_input differs from the target logit by {err:.2e} (relative)"
    else:
        before = snapshot(model)
        A.run_method(check, model, x, cheap=cheap)
        assert_untouched(model, before)


@pytest.mark.parametrize("check", ("stages",) + A.CHECKS)
@pytest.mark.parametrize("name", A.TINY)
def test_small_members_of_the_families(name, check):
    from cnnlens.data.synthetic import single_thread
    with single_thread():        # tiny tensors: threads only add contention (10× slower on a loaded 2-core box)
        _check(name, check, 64, cheap=True)


@pytest.mark.slow
@pytest.mark.parametrize("check", ("stages",) + A.CHECKS)
@pytest.mark.parametrize("name", A.FULL)
def test_issue_architectures(name, check):
    _check(name, check, A.input_size(name), cheap=True)


def test_channels_last_stage_layers_are_read_channels_first():
    """torchvision's ConvNeXt: the post-activation layer of a block is the GELU of its MLP, which runs on
    channels-last (N,h,w,4C) tensors; it is reported as (4C,h,w) and the CAMs read it as such (a Grad-CAM at that layer
    equals the Grad-CAM computed by hand from the permuted activation and gradient)."""
    import cnnlens
    from cnnlens.models.layers import channels_last_layers
    model = _model("torchvision:convnext_mini")
    x = _input(64)
    stages = cnnlens.stage_layers(model)
    assert stages == ["features.1.0.block.4", "features.3.0.block.4", "features.5.0.block.4"]
    report = {la.name: la for la in cnnlens.explainable_layers(model, x[:1])}
    assert all(report[s].channels_last and report[s].activation == "activation" for s in stages)
    assert report["features.1.0.block.4"].shape == (64, 16, 16)          # 4·16 channels at stride 4
    assert "features.1.0.block.0" not in channels_last_layers(model)    # the depthwise conv: channels-first
    layer = stages[0]
    e = cnnlens.explain(model, x, "grad-cam", target=3, layer=layer)
    module = dict(model.named_modules())[layer]
    store = {}
    handle = module.register_forward_hook(lambda m, i, o: store.__setitem__("a", o))
    try:
        logits = model(x)
        g, = torch.autograd.grad(logits[:, 3].sum(), store["a"])
    finally:
        handle.remove()
    a, g = store["a"].detach().permute(0, 3, 1, 2), g.permute(0, 3, 1, 2)
    cam = torch.relu((g.mean(dim=(2, 3))[:, :, None, None] * a).sum(1))
    torch.testing.assert_close(e.raw, cam, rtol=1e-5, atol=1e-6)


def test_sglrp_warns_when_the_softmax_saturates():
    """Random-init Inception-v3 with torchvision's init has logits ~1e10: y_t = 1 in float32, the softmax gradient
    y_t(e_t − y) is exactly zero and so is SGLRP's map — said with a warning, not returned silently."""
    import cnnlens
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)).eval()
    with torch.no_grad():
        model[4].bias.copy_(torch.tensor([400.0, 0.0, -400.0]))    # exp(−400) underflows in float32, not in float64
    x = torch.rand(2, 3, 8, 8)
    with pytest.warns(RuntimeWarning, match="softmax is saturated"):
        e = cnnlens.explain(model, x, "sglrp")
    assert bool((e.raw == 0).all())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cnnlens.explain(model.double(), x.double(), "sglrp")      # float64 resolves y_t(1 − y_t) here
