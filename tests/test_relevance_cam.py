"""Relevance-CAM (relevance_cam.md): closed form at a ResNet's layer4 (§7.1), conservation (§7.2), linearity (§7.3),
the one-pass layer sweep, batching, model state; full-size architectures and the real-photo collage (slow)."""
from __future__ import annotations

import copy
import warnings

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

import cnnlens
from cnnlens.errors import LayerError, MethodError, TargetError
from cnnlens.lrp import lrp_attribute
from cnnlens.methods.relevance_cam import channel_weights, initial_relevance

from conftest import assert_untouched, snapshot

C = 1000


def _randomise_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random BN statistics and affine parameters, so BatchNorm is not an identity (§7.4 recipe)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.rand(m.num_features, generator=g) * 0.4 - 0.2)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) * 1.5 + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.rand(m.num_features, generator=g) * 0.4 - 0.2)
    return model


def _resnet(name: str = "resnet18", dtype=torch.float32) -> nn.Module:
    torch.manual_seed(0)
    return _randomise_bn(getattr(torchvision.models, name)()).eval().to(dtype)


@pytest.fixture(scope="module")
def r18():
    return _resnet()


@pytest.fixture(scope="module")
def r18_64():
    return _resnet(dtype=torch.float64)


def closed_form_layer4(model: nn.Module, x: torch.Tensor, init: str = "reference", weights: str = "mean"):
    """§7.1: ā_k = GAP(A_k); z⁺_c = Σ_k ā_k w⁺_ck; α_k = (1/hw)·ā_k·Σ_c ρ_c w⁺_ck / z⁺_c (terms with z⁺_c = 0 are 0);
    M = Σ_k α_k A_k."""
    with torch.no_grad():
        body = nn.Sequential(*list(model.children())[:-2])
        a = body(x)
        logits = model(x)
    t = logits.argmax(1)
    rho = initial_relevance(logits, t, init)
    abar = a.mean(dim=(2, 3))                                   # (N,K)
    wp = model.fc.weight.clamp(min=0)                           # (C,K)
    zp = abar @ wp.T                                            # (N,C)
    ratio = torch.where(zp != 0, rho / torch.where(zp != 0, zp, torch.ones_like(zp)), torch.zeros_like(zp))
    alpha = abar * (ratio @ wp)                                 # Σ_c ρ_c w⁺_ck / z⁺_c · ā_k
    if weights == "mean":
        alpha = alpha / (a.shape[-1] * a.shape[-2])
    return torch.einsum("nk,nkhw->nhw", alpha, a), alpha


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 1e-6)])
def test_closed_form_resnet18_layer4(dtype, tol, r18, r18_64):
    model = r18_64 if dtype == torch.float64 else r18
    torch.manual_seed(1)
    x = torch.randn(2, 3, 64, 64, dtype=dtype)
    e = cnnlens.explain(model, x, "relevance-cam", layer="layer4")
    # float32 on the CPU: the LRP engine runs in channels_last; evaluate the closed form on the model run in that
    # layout too, so both sides round alike (the two layouts of the model differ by ~2e-6 relative)
    xc = x.contiguous(memory_format=torch.channels_last) if dtype == torch.float32 else x
    exp, alpha = closed_form_layer4(model, xc)
    rel = ((e.raw - exp).abs().max() / exp.abs().max()).item()
    print(f"\nrelevance-cam closed form resnet18 layer4 {dtype}: max rel err {rel:.2e}")
    assert rel <= tol, rel
    assert torch.allclose(e.extras["channel_weights"], alpha, rtol=tol * 10, atol=tol * alpha.abs().max().item())
    # the paper mode: init z_t·(e_t − (1−e_t)/(C−1)), sum weights, bias-free convs (ResNet convs have none)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        ep = cnnlens.explain(model, x, "relevance-cam", layer="layer4", mode="paper")
    exp_p, _ = closed_form_layer4(model, xc, init="paper", weights="sum")
    assert ((ep.raw - exp_p).abs().max() / exp_p.abs().max()).item() <= tol


@pytest.mark.slow
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 5e-6)])
def test_closed_form_resnet50_layer4(dtype, tol):
    """float64: exact to round-off. float32: the engine folds BN and runs channels_last on the CPU, the closed form
    runs the unfolded model, so the two round differently through 50 layers (measured 1.8e-6; 5.3e-7 when both were
    contiguous)."""
    model = _resnet("resnet50").to(dtype)
    torch.manual_seed(2)
    x = torch.randn(2, 3, 224, 224, dtype=dtype)
    e = cnnlens.explain(model, x, "relevance-cam", layer="layer4")
    xc = x.contiguous(memory_format=torch.channels_last) if dtype == torch.float32 else x  # the engine's layout
    exp, _ = closed_form_layer4(model, xc)
    rel = ((e.raw - exp).abs().max() / exp.abs().max()).item()
    print(f"\nrelevance-cam closed form resnet50 layer4 {dtype}: max rel err {rel:.2e}")
    assert rel <= tol, rel


def test_display_map_order(r18):
    """§1.6: per-sample min-max at feature resolution, then bilinear (align_corners=False); option after_resize."""
    torch.manual_seed(3)
    x = torch.randn(2, 3, 64, 64)
    e = cnnlens.explain(r18, x, "relevance-cam", layer="layer3")
    raw = e.raw
    flat = raw.reshape(2, -1)
    mm = ((flat - flat.min(1, keepdim=True).values) / (flat.max(1, keepdim=True).values -
                                                         flat.min(1, keepdim=True).values)).reshape(raw.shape)
    exp = F.interpolate(mm[:, None], size=(64, 64), mode="bilinear", align_corners=False)[:, 0]
    assert (e.heatmap - exp).abs().max().item() <= 1e-6
    e2 = cnnlens.explain(r18, x, "relevance-cam", layer="layer3", normalize="after_resize")
    up = F.interpolate(raw[:, None], size=(64, 64), mode="bilinear", align_corners=False)[:, 0].reshape(2, -1)
    exp2 = ((up - up.min(1, keepdim=True).values) / (up.max(1, keepdim=True).values - up.min(1, keepdim=True).values))
    assert (e2.heatmap.reshape(2, -1) - exp2).abs().max().item() <= 1e-6
    # relu option; raw keeps the sign by default (no ReLU in the reference)
    assert (e.raw < 0).any()
    e3 = cnnlens.explain(r18, x, "relevance-cam", layer="layer3", relu=True)
    assert torch.equal(e3.raw, torch.relu(e.raw))


LAYERS = ["layer1", "layer2", "layer3", "layer4"]


def test_conservation_at_block_boundaries(r18_64):
    """§7.2: bias-free ResNet, BN pass-through, proportional adds: Σ R at every block output = Σ_c ρ_c over classes
    with z⁺_c > 0 (1/C reference init, 0 paper init, 1 one-hot)."""
    torch.manual_seed(4)
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    e = cnnlens.explain(r18_64, x, "relevance-cam", layer=LAYERS)
    for name in LAYERS:
        assert torch.allclose(e[name].extras["relevance_sum"], torch.full((2,), 1 / C, dtype=torch.float64),
                              rtol=1e-10, atol=0), name
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        ep = cnnlens.explain(r18_64, x, "relevance-cam", layer=LAYERS, init="paper")
    for name in LAYERS:
        assert ep[name].extras["relevance_sum"].abs().max().item() <= 1e-12
    t = e["layer4"].target
    res = lrp_attribute(r18_64, x, F.one_hot(t, C).double(), "relevance-cam-reference", LAYERS,
                        input_relevance=False)
    for name in LAYERS:
        assert torch.allclose(res.relevance[name].sum(dim=(1, 2, 3)), torch.ones(2, dtype=torch.float64),
                              rtol=1e-10), name
        # relevance is of mixed sign: nothing asserts R >= 0 (§7.2)


def _map_from(model, x, rho, layers):
    res = lrp_attribute(model, x, rho, "relevance-cam-reference", layers, input_relevance=False)
    return {n: torch.einsum("nk,nkhw->nhw", channel_weights(res.relevance[n]), res.activations[n]) for n in layers}


def test_linearity(r18_64):
    """§7.3: map(ρ) = Σ_c ρ_c map(e_c); in particular map(reference ρ) = map(e_t) − (1/C)·map(1 − e_t)."""
    torch.manual_seed(5)
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    e = cnnlens.explain(r18_64, x, "relevance-cam", layer=LAYERS)
    onehot = F.one_hot(e["layer4"].target, C).double()
    m_t = _map_from(r18_64, x, onehot, LAYERS)
    m_rest = _map_from(r18_64, x, 1 - onehot, LAYERS)
    r1, r2 = torch.randn(2, C, dtype=torch.float64), torch.randn(2, C, dtype=torch.float64)
    m1, m2, m12 = (_map_from(r18_64, x, r, LAYERS) for r in (r1, r2, 0.3 * r1 - 2 * r2))
    for n in LAYERS:
        exp = m_t[n] - m_rest[n] / C
        assert ((e[n].raw - exp).abs().max() / exp.abs().max()).item() <= 1e-10, n
        lin = 0.3 * m1[n] - 2 * m2[n]
        assert ((m12[n] - lin).abs().max() / lin.abs().max()).item() <= 1e-10, n


def test_sweep_equals_per_layer_calls(r18):
    torch.manual_seed(6)
    x = torch.randn(2, 3, 64, 64)
    sweep = cnnlens.explain(r18, x, "relevance-cam", layer=LAYERS)
    assert list(sweep) == LAYERS
    for name in LAYERS:
        one = cnnlens.explain(r18, x, "relevance-cam", layer=name)
        scale = one.raw.abs().max()
        assert ((sweep[name].raw - one.raw).abs().max() / scale).item() <= 1e-6, name
        assert (sweep[name].heatmap - one.heatmap).abs().max().item() <= 1e-5, name
        assert torch.equal(sweep[name].target, one.target)
    blocks = cnnlens.explain(r18, x, "relevance-cam", layer="blocks")
    assert set(blocks) == set(cnnlens.block_layers(r18))


def test_sweep_is_one_forward_and_one_pass(r18, monkeypatch):
    """The sweep calls the engine once, with input_relevance=False (the pass stops at the shallowest layer)."""
    import cnnlens.lrp as lrp
    calls = []
    real = lrp.lrp_attribute

    def spy(*args, **kwargs):
        calls.append((args[4] if len(args) > 4 else kwargs.get("layers"), kwargs.get("input_relevance")))
        return real(*args, **kwargs)
    monkeypatch.setattr(lrp, "lrp_attribute", spy)
    cnnlens.explain(r18, torch.randn(1, 3, 32, 32), "relevance-cam", layer=LAYERS)
    assert calls == [(LAYERS, False)]


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 2e-4)])
def test_batch_equals_one_by_one(dtype, tol, r18, r18_64):
    """fp64 tight; fp32 to the conv's batched-vs-single rounding amplified by the z⁺ divisions (the channels_last
    oneDNN kernels the engine uses on the CPU pick different blockings for batch 1 and 3: 1.0e-4 measured at layer2,
    where the map is a near-cancelling sum)."""
    model = r18_64 if dtype == torch.float64 else r18
    torch.manual_seed(7)
    x = torch.randn(3, 3, 64, 64, dtype=dtype)
    e = cnnlens.explain(model, x, "relevance-cam", target=[3, 1, 4], layer=["layer2", "layer4"])
    for i, t in enumerate([3, 1, 4]):
        e1 = cnnlens.explain(model, x[i:i + 1], "relevance-cam", target=t, layer=["layer2", "layer4"])
        for n in ("layer2", "layer4"):
            scale = e1[n].raw.abs().max()
            assert ((e[n].raw[i] - e1[n].raw[0]).abs().max() / scale).item() <= tol, n
            assert (e[n].heatmap[i] - e1[n].heatmap[0]).abs().max().item() <= tol, n


def test_options_and_errors(r18):
    x = torch.randn(1, 3, 32, 32)
    e = cnnlens.explain(r18, x, "relevance-cam", layer="layer4", weights="sum")
    m = cnnlens.explain(r18, x, "relevance-cam", layer="layer4")
    assert torch.allclose(e.raw, m.raw * 1, rtol=1e-5) or torch.allclose(e.heatmap, m.heatmap, atol=1e-5)
    assert torch.allclose(e.heatmap, m.heatmap, atol=1e-5)   # same map up to scale hw
    for bad in ({"mode": "nope"}, {"init": "x"}, {"weights": "max"}, {"normalize": "x"},
                {"composite": "epsilon-plus", "conv_bias": "none"}):
        with pytest.raises(MethodError):
            cnnlens.explain(r18, x, "relevance-cam", layer="layer4", **bad)
    e2 = cnnlens.explain(r18, x, "relevance-cam", layer="layer4", composite="epsilon-plus")
    assert torch.isfinite(e2.raw).all()
    with pytest.raises(LayerError):
        cnnlens.explain(r18, x, "relevance-cam", layer="fc")
    with pytest.raises(LayerError):
        cnnlens.explain(r18, x, "relevance-cam", layer="layer9")


def test_paper_init_warns_when_target_logit_not_positive(r18):
    torch.manual_seed(8)
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        worst = int(r18(x).argmin())
    with pytest.warns(RuntimeWarning, match="flips the map's sign"):
        cnnlens.explain(r18, x, "relevance-cam", layer="layer4", init="paper", target=worst)


def test_model_untouched_on_success_and_failure():
    model = _resnet()
    model.train()
    model.layer2.requires_grad_(False)
    before = snapshot(model)
    x = torch.randn(2, 3, 32, 32)
    cnnlens.explain(model, x, "relevance-cam", layer=LAYERS)
    assert_untouched(model, before)
    with pytest.raises(TargetError):
        cnnlens.explain(model, x, "relevance-cam", target=C + 5, layer="layer4")
    assert_untouched(model, before)
    with pytest.raises(LayerError):
        cnnlens.explain(model, x, "relevance-cam", layer="layer1.0.relu")
    assert_untouched(model, before)


def test_flat_and_dead_cases():
    """A constant input and a dead layer give finite maps (constant → zeros), never NaN."""
    torch.manual_seed(9)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 6, 3, padding=1), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 5)).eval()
    for x in (torch.zeros(2, 3, 8, 8), torch.randn(2, 3, 8, 8)):
        e = cnnlens.explain(net, x, "relevance-cam", layer=["1", "3"])
        for v in e.values():
            assert torch.isfinite(v.raw).all() and torch.isfinite(v.heatmap).all()
    with torch.no_grad():
        net[2].bias.fill_(-100.0)
    e = cnnlens.explain(net, torch.randn(2, 3, 8, 8), "relevance-cam", layer=["1", "3"])
    assert (e["3"].heatmap == 0).all() and torch.isfinite(e["1"].heatmap).all()


# ----------------------------------------------------------------------------------------------- slow: real models
def _check_runs(model, x, layers):
    out = cnnlens.explain(model, x, "relevance-cam", layer=layers)
    assert list(out) == list(layers)
    for n, e in out.items():
        assert torch.isfinite(e.raw).all() and torch.isfinite(e.heatmap).all(), n
        assert e.heatmap.shape == (x.shape[0], *x.shape[-2:])
        assert not bool(e.extras["constant_map"].any()), n
        assert torch.isfinite(e.extras["relevance_sum"]).all()
    # the sweep equals the deepest layer alone
    deep = layers[-1]
    one = cnnlens.explain(model, x, "relevance-cam", layer=deep)
    assert ((out[deep].raw - one.raw).abs().max() / one.raw.abs().max()).item() <= 1e-5
    return out


@pytest.mark.slow
def test_vgg16_bn_reference_layers():
    torch.manual_seed(10)
    model = _randomise_bn(torchvision.models.vgg16_bn()).eval()
    out = _check_runs(model, torch.randn(2, 3, 224, 224), ["features.23", "features.33", "features.43"])
    assert out["features.43"].raw.shape == (2, 7, 7) and out["features.23"].raw.shape == (2, 28, 28)


@pytest.mark.slow
def test_resnet50_all_layers_conserve():
    model = _resnet("resnet50")
    out = _check_runs(model, torch.randn(2, 3, 224, 224), LAYERS)
    for n in LAYERS:
        assert torch.allclose(out[n].extras["relevance_sum"], torch.full((2,), 1 / C), rtol=2e-4), n


@pytest.mark.slow
def test_densenet121():
    torch.manual_seed(11)
    model = _randomise_bn(torchvision.models.densenet121()).eval()
    _check_runs(model, torch.randn(1, 3, 224, 224), ["features.denseblock2", "features.denseblock3", "features"])


@pytest.mark.slow
def test_tf_efficientnet_lite0():
    timm = pytest.importorskip("timm")
    torch.manual_seed(12)
    model = _randomise_bn(timm.create_model("tf_efficientnet_lite0", pretrained=False)).eval()
    _check_runs(model, torch.randn(1, 3, 224, 224), ["blocks.2", "blocks.4", "bn2"])


def _positive_energy_on(e, side: int) -> float:
    """Share of the map's positive evidence (ReLU of the bilinearly upsampled raw map) inside one half."""
    raw = e.raw[0]
    h, w = e.heatmap.shape[-2:]
    up = F.interpolate(raw[None, None], size=(h, w), mode="bilinear", align_corners=False)[0, 0].clamp(min=0)
    left = (up[:, : w // 2].sum() / up.sum()).item()
    return left if side == 0 else 1 - left


@pytest.mark.slow
def test_class_sensitivity_on_a_two_photo_collage():
    """chelsea (tiger cat) | coffee (espresso) side by side, 224×448, real EfficientNet-Lite0 weights: for each
    photo's class the Relevance-CAM map puts most of its positive evidence on that photo, at the last block (bn2) and
    at an intermediate block (blocks.2, stride 8). Grad-CAM's shares at the same layers are printed for the record."""
    from cnnlens.data.collage import side_by_side
    model = cnnlens.load_model("efficientnet_lite0")
    classes = []
    for photo in ("chelsea", "coffee"):
        with torch.no_grad():
            classes.append(int(model(cnnlens.load_image(photo, model)).argmax()))
    collage, _ = side_by_side("chelsea", "coffee")
    x = cnnlens.load_image(collage, model, crop=False, size=(224, 448))
    layers = ["blocks.2", "bn2"]
    shares = {}
    for method in ("relevance-cam", "grad-cam"):
        for side, cls in enumerate(classes):
            out = cnnlens.explain(model, x, method, target=cls, layer=layers)
            for n in layers:
                shares[method, side, n] = _positive_energy_on(out[n], side)
    print("\npositive-evidence share on the photo of the target class:")
    for k, v in sorted(shares.items()):
        print(f"  {k[0]:14s} photo {'chelsea' if k[1] == 0 else 'coffee':8s} {k[2]:9s} {v:.3f}")
    for side in (0, 1):
        assert shares["relevance-cam", side, "bn2"] >= 0.9
        assert shares["relevance-cam", side, "blocks.2"] >= 0.55


def test_equals_zennit_at_every_block(r18_64):
    """§7.5: zennit 0.5.1 oracle with conv_bias="none": Conv2d/Linear → ZPlus(zero_params='bias'), ReLU and BN →
    Pass, AdaptiveAvgPool and the residual Sum → Norm, exact-zero stabiliser; only the BasicBlock canonizer (the Sum);
    relevance read at the layer outputs as retained gradients. float64, ≤ 1e-10 relative."""
    pytest.importorskip("zennit")
    from zennit.attribution import Gradient
    from zennit.composites import LayerMapComposite, layer_map_base
    from zennit.rules import ZPlus
    from zennit.torchvision import ResNetBasicBlockCanonizer
    from zennit.types import Convolution

    def exact_zero(z):
        return torch.where(z == 0, torch.ones_like(z), z)

    composite = LayerMapComposite(layer_map=layer_map_base(exact_zero) + [
        (Convolution, ZPlus(stabilizer=exact_zero, zero_params="bias")),
        (nn.Linear, ZPlus(stabilizer=exact_zero, zero_params="bias"))], canonizers=[ResNetBasicBlockCanonizer()])
    torch.manual_seed(13)
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    ours = cnnlens.explain(r18_64, x, "relevance-cam", layer=LAYERS, conv_bias="none")
    model = copy.deepcopy(r18_64)
    stored = {}

    def keep(name):
        def hook(module, inputs, output):
            output.retain_grad()
            stored[name] = output
        return hook
    handles = [getattr(model, n).register_forward_hook(keep(n)) for n in LAYERS]
    with torch.no_grad():
        logits = r18_64(x)
    rho = initial_relevance(logits, logits.argmax(1), "reference")
    try:
        with Gradient(model=model, composite=composite) as attributor:
            attributor(x.clone().requires_grad_(), attr_output=rho)
    finally:
        for h in handles:
            h.remove()
    for n in LAYERS:
        r = stored[n].grad
        exp = torch.einsum("nk,nkhw->nhw", r.mean(dim=(2, 3)), stored[n].detach())
        rel = ((ours[n].raw - exp).abs().max() / exp.abs().max()).item()
        print(f"\nrelevance-cam vs zennit resnet18 {n} fp64: max rel err {rel:.2e}")
        assert rel <= 1e-10, (n, rel)
