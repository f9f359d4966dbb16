"""Issue 18 coverage: the LRP family on the CNN families people use (random init, no weights).

On each architecture: ``layer="stages"`` gives ≥ 3 post-activation layers (as ``explainable_layers`` classifies them);
LRP, SGLRP, Relevance-CAM at ``layer="stages"``, SISE and SR map run and give finite maps that are not constant; and
composite ``dtd`` conserves on the bias-free model in float64 (Σ input relevance = target logit within 1e-3 relative,
lrp_modern_layers.md §7). The default tier runs four small members of the families (64 px, tiny widths); the slow tier
runs the issue's full list of 19 torchvision and 15 timm models at 128 px. ``benchmarks/architecture_table.py`` runs the
same checks (``tests/_architectures.py``) and writes the README's architecture × method table.
"""
from __future__ import annotations

import pytest
import torch

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


#: known engine gaps (reported to the LRP engine's owners): strict, so a fix shows up as XPASS and the entry goes
ENGINE_GAPS: dict[tuple[str, str], str] = {}   # (model, check) → why the engine cannot yet: a strict xfail (none now)


def _full_params():
    from cnnlens.errors import UnsupportedOperationError
    for name in A.FULL:
        for check in ("stages",) + A.CHECKS:
            gap = ENGINE_GAPS.get((name, check))
            marks = [pytest.mark.xfail(reason=gap, raises=UnsupportedOperationError, strict=True)] if gap else []
            yield pytest.param(name, check, marks=marks, id=f"{name}-{check}")


@pytest.mark.slow
@pytest.mark.parametrize("name,check", list(_full_params()))
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

