"""CAM baselines (cams.md): Grad-CAM, Grad-CAM++, XGrad-CAM, Layer-CAM, Score-CAM.

Oracles: pytorch-grad-cam 1.5.7 (§4.1, same normalisation applied to our raw maps), the closed forms at a
GAP→Linear head (§4.3), a naive float64 per-channel Score-CAM loop (§4.4), and the properties of §4.5.
"""
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
from cnnlens.ops import minmax

pgc = pytest.importorskip("pytorch_grad_cam")
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget  # noqa: E402

GRADIENT_CAMS = ["grad-cam", "grad-cam++", "xgrad-cam", "layer-cam"]
ORACLES = {"grad-cam": "GradCAM", "grad-cam++": "GradCAMPlusPlus", "xgrad-cam": "XGradCAM", "layer-cam": "LayerCAM",
           "score-cam": "ScoreCAM"}


def _model(name: str, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return getattr(torchvision.models, name)(weights=None).eval()


@pytest.fixture(scope="module")
def resnet18():
    return _model("resnet18")


@pytest.fixture(scope="module")
def vgg11():
    return _model("vgg11")


_ORACLE_COPIES: dict[int, nn.Module] = {}


def _oracle_copy(model: nn.Module) -> nn.Module:
    """One trainable copy per model for pytorch-grad-cam (it writes parameter gradients); the original stays frozen."""
    if id(model) not in _ORACLE_COPIES:
        m2 = copy.deepcopy(model).eval()
        for p in m2.parameters():
            p.requires_grad_(True)
        _ORACLE_COPIES[id(model)] = m2
    return _ORACLE_COPIES[id(model)]


def _small_cnn(seed: int = 12) -> nn.Module:
    """A small VGG-like net (BN, in-place ReLU, max-pool) for the many-forward Score-CAM checks."""
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(inplace=True), nn.MaxPool2d(2),
                        nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(16, 24, 3, padding=1),
                        nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(24, 10))
    with torch.no_grad():
        net[1].running_mean.uniform_(-0.2, 0.2)
        net[1].running_var.uniform_(0.5, 2.0)
        net[1].weight.uniform_(0.5, 1.5)
        net[1].bias.uniform_(-0.2, 0.2)
    return net.eval()


def _gc_scale(cam: torch.Tensor) -> torch.Tensor:
    """pytorch-grad-cam's scale_cam_image: per sample (x − min) / (max(x − min) + 1e-7)."""
    flat = cam.reshape(cam.shape[0], -1)
    flat = flat - flat.min(dim=1, keepdim=True).values
    flat = flat / (1e-7 + flat.max(dim=1, keepdim=True).values)
    return flat.reshape(cam.shape)


def gc_normalise(raw: torch.Tensor, size) -> torch.Tensor:
    """Our raw low-res map through pytorch-grad-cam's single-layer post-processing: ReLU, scale, cv2 bilinear resize
    (= torch align_corners=False), ReLU, mean over the one layer, scale again."""
    cam = _gc_scale(torch.relu(raw.float()))
    cam = F.interpolate(cam[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
    return _gc_scale(torch.relu(cam))


def run_oracle(method: str, model: nn.Module, x: torch.Tensor, layer: str, targets=None):
    """pytorch-grad-cam on a separate copy of the model (it needs requires_grad params and runs loss.backward)."""
    m2 = _oracle_copy(model)
    cls = getattr(pgc, ORACLES[method])
    module = dict(m2.named_modules())[layer]
    tg = None if targets is None else [ClassifierOutputTarget(int(t)) for t in targets]
    with cls(model=m2, target_layers=[module]) as cam:
        if method == "score-cam":
            cam.batch_size = 64
        out = cam(input_tensor=x.clone(), targets=tg)
    return torch.from_numpy(out)


_SMALL = _small_cnn()


# --------------------------------------------------------------------------- pytorch-grad-cam oracle (§4.1)
@pytest.mark.parametrize("method", GRADIENT_CAMS)
@pytest.mark.parametrize("arch,layer", [("resnet18", "layer4"), ("resnet18", "layer3"), ("vgg11", "features.19"),
                                        ("vgg11", "features.14")])
def test_gradient_cams_equal_pytorch_grad_cam(method, arch, layer, resnet18, vgg11):
    model = {"resnet18": resnet18, "vgg11": vgg11}[arch]
    torch.manual_seed(1)
    size = 64 if arch == "resnet18" else 32
    x = torch.randn(2, 3, size, size)
    e = cnnlens.explain(model, x, method, layer=layer)
    ours = gc_normalise(e.raw, (size, size))
    ref = run_oracle(method, model, x, layer)
    assert ours.shape == ref.shape
    err = (ours - ref).abs().max().item()
    print(f"\n{method} {arch} {layer}: max |ours - pytorch-grad-cam| = {err:.2e}")
    assert err <= 1e-5, err
    # the display map itself (exact min-max) differs from the oracle only by its 1e-7 guards
    assert torch.isfinite(e.heatmap).all() and e.heatmap.min() >= 0 and e.heatmap.max() <= 1


@pytest.mark.parametrize("method", GRADIENT_CAMS)
def test_gradient_cam_weights_equal_pytorch_grad_cam(method, resnet18):
    """Channel weights (or the element-wise map for Layer-CAM) from identical activations/gradients (§4.1a)."""
    from cnnlens.methods import grad_cam, grad_cam_pp, layer_cam, xgrad_cam
    fn = {"grad-cam": grad_cam.grad_cam_map, "grad-cam++": grad_cam_pp.grad_cam_pp_map,
          "xgrad-cam": xgrad_cam.xgrad_cam_map, "layer-cam": layer_cam.layer_cam_map}[method]
    torch.manual_seed(2)
    a = torch.rand(2, 8, 5, 5, dtype=torch.float64) * (torch.rand(2, 8, 1, 1, dtype=torch.float64) > 0.2)
    g = torch.randn(2, 8, 5, 5, dtype=torch.float64) * 0.3
    g[0, 3] = 0.0
    cam = getattr(pgc, ORACLES[method])
    obj = cam.__new__(cam)
    obj.activations_and_grads = type("NoHooks", (), {"release": lambda self: None})()
    ref = obj.get_cam_image(None, None, None, a.numpy(), g.numpy(), False)
    ours = fn(a, g)
    assert torch.allclose(ours, torch.from_numpy(ref), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("arch,layer,size,n", [("resnet18", "layer2", 32, 1), ("vgg11", "features.4", 32, 1),
                                                ("small", "5", 16, 2)])
def test_score_cam_gc_equals_pytorch_grad_cam(arch, layer, size, n, resnet18, vgg11):
    model = {"resnet18": resnet18, "vgg11": vgg11, "small": _SMALL}[arch]
    torch.manual_seed(3)
    x = torch.randn(n, 3, size, size)
    e = cnnlens.explain(model, x, "score-cam", layer=layer, variant="gc", batch_size=48)
    ours = gc_normalise(e.raw, (size, size))
    ref = run_oracle("score-cam", model, x, layer)
    err = (ours - ref).abs().max().item()
    print(f"\nscore-cam gc {arch} {layer}: max |ours - pytorch-grad-cam| = {err:.2e}")
    assert err <= 1e-5, err


# --------------------------------------------------------------------------- closed forms (§4.3)
def test_closed_forms_at_layer4(resnet18):
    """layer4 → GAP → fc: ∂y_c/∂A_kij = w_ck/(hw) everywhere."""
    torch.manual_seed(4)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        feats = nn.Sequential(*list(resnet18.children())[:-2])(x)
        logits = resnet18(x)
    t = logits.argmax(1)
    w = resnet18.fc.weight[t].detach()[:, :, None, None]        # (N,K,1,1)
    hw = feats.shape[-1] * feats.shape[-2]
    abar = feats.mean(dim=(2, 3), keepdim=True)
    g = w / hw
    expected = {
        "grad-cam": torch.relu((w * feats).sum(1)) / hw,
        "xgrad-cam": torch.relu((w * feats).sum(1)) / hw,
        "layer-cam": torch.relu((torch.relu(w) * feats).sum(1)) / hw,
        # w_k = ReLU(w_ck)/(2 + ā_k·w_ck) up to pytorch-grad-cam's 1e-6 guard, kept exactly here
        "grad-cam++": torch.relu((torch.relu(g) * hw * g * g / (2 * g * g + hw * abar * g ** 3 + 1e-6) * feats).sum(1)),
    }
    for method, exp in expected.items():
        raw = cnnlens.explain(resnet18, x, method, layer="layer4").raw
        scale = exp.abs().max()
        rel = ((raw - exp).abs().max() / scale).item()
        print(f"\nclosed form {method} resnet18 layer4: max rel err {rel:.2e}")
        assert rel <= 2e-6, method
    # Grad-CAM++ closed form without the guard, when g is large enough for it not to matter
    ratio = torch.relu(w) / (2 + abar * w)
    assert torch.isfinite(ratio).all()


# --------------------------------------------------------------------------- Score-CAM paper variant (§4.4)
def naive_score_cam(model, x, layer, target, mask_space="normalized", baseline="none", mean=None, std=None):
    """The official code, one image, one channel at a time, float64."""
    model = copy.deepcopy(model).double().eval()
    x = x.double()
    store = {}
    h = dict(model.named_modules())[layer].register_forward_hook(lambda m, i, o: store.__setitem__("a", o.clone()))
    with torch.no_grad():
        model(x)
        h.remove()
        a = store["a"]
        H, W = x.shape[-2:]
        total = torch.zeros(1, 1, H, W, dtype=torch.float64)
        if mask_space == "raw":
            mean_t = torch.tensor(mean, dtype=torch.float64).reshape(-1, 1, 1)
            std_t = torch.tensor(std, dtype=torch.float64).reshape(-1, 1, 1)
            img = x * std_t + mean_t

            def masked(m):
                return (img * m - mean_t) / std_t
        else:
            def masked(m):
                return x * m
        base = F.softmax(model(masked(torch.zeros_like(x))), dim=1)[0, target]
        for k in range(a.shape[1]):
            sal = F.interpolate(a[:, k:k + 1], size=(H, W), mode="bilinear", align_corners=False)
            if sal.max() == sal.min():
                continue
            norm = (sal - sal.min()) / (sal.max() - sal.min())
            s = F.softmax(model(masked(norm)), dim=1)[0, target]
            if baseline == "subtract":
                s = s - base
            total += s * sal
        total = F.relu(total)
        if total.max() == total.min():
            return torch.zeros(H, W, dtype=torch.float64)
        return ((total - total.min()) / (total.max() - total.min()))[0, 0]


@pytest.mark.parametrize("layer", ["2", "5", "7"])
@pytest.mark.parametrize("mask_space,baseline", [("normalized", "none"), ("raw", "subtract")])
def test_score_cam_paper_equals_naive_float64_loop(layer, mask_space, baseline):
    model = _SMALL
    torch.manual_seed(5)
    x = torch.randn(3, 3, 16, 16, dtype=torch.float64)
    model64 = copy.deepcopy(model).double()
    e = cnnlens.explain(model64, x, "score-cam", layer=layer, batch_size=5, mask_space=mask_space,
                        baseline=baseline)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    for i in range(3):
        ref = naive_score_cam(model, x[i:i + 1], layer, int(e.target[i]), mask_space, baseline, mean, std)
        err = (e.heatmap[i] - ref).abs().max().item()
        print(f"\nscore-cam paper layer {layer} {mask_space}/{baseline} sample {i}: fp64 err {err:.2e}")
        assert err <= 1e-10
    # the float32 run against the float64 oracle
    e32 = cnnlens.explain(model, x.float(), "score-cam", layer=layer, mask_space=mask_space, baseline=baseline)
    ref0 = naive_score_cam(model, x[:1], layer, int(e32.target[0]), mask_space, baseline, mean, std)
    assert (e32.heatmap[0].double() - ref0).abs().max().item() <= 1e-5


def test_score_cam_single_channel_is_minmax_of_activation():
    """§4.4: a one-channel layer gives display map = min-max(Up(A)) when its score s > 0."""
    torch.manual_seed(6)
    net = nn.Sequential(nn.Conv2d(3, 1, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                        nn.Linear(1, 3)).eval()
    x = torch.randn(2, 3, 8, 8)
    e = cnnlens.explain(net, x, "score-cam", layer="1")
    with torch.no_grad():
        a = torch.relu(net[0](x))
    up = F.interpolate(a, size=(8, 8), mode="bilinear", align_corners=False)[:, 0]
    assert torch.allclose(e.heatmap, minmax(up), atol=1e-6)


# --------------------------------------------------------------------------- properties (§4.5)
ALL = GRADIENT_CAMS + ["score-cam"]


@pytest.mark.parametrize("method", ALL)
def test_batch_equals_one_by_one(method, resnet18):
    torch.manual_seed(7)
    model, x, layer, opts = resnet18, torch.randn(3, 3, 32, 32), "layer3", {}
    if method == "score-cam":
        model, x, layer, opts = _SMALL, torch.randn(3, 3, 16, 16), "5", {"batch_size": 10}
    e = cnnlens.explain(model, x, method, target=[1, 2, 3], layer=layer, **opts)
    for i in range(3):
        e1 = cnnlens.explain(model, x[i:i + 1], method, target=i + 1, layer=layer, **opts)
        assert torch.allclose(e.raw[i], e1.raw[0], rtol=1e-5, atol=1e-7 * e1.raw.abs().max().item())
        assert (e.heatmap[i] - e1.heatmap[0]).abs().max().item() <= 1e-5


def _snapshot(model):
    return ({k: v.clone() for k, v in model.state_dict().items()},
            {n: m.training for n, m in model.named_modules()},
            {n: p.requires_grad for n, p in model.named_parameters()},
            sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) for m in model.modules()))


def _assert_untouched(model, snap):
    state, training, rg, hooks = snap
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k
    assert {n: m.training for n, m in model.named_modules()} == training
    assert {n: p.requires_grad for n, p in model.named_parameters()} == rg
    assert sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
               for m in model.modules()) == hooks
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize("method", ALL)
def test_model_untouched_and_no_param_grad(method):
    model = _model("resnet18", seed=8)
    model.train()
    model.layer1.requires_grad_(False)
    snap = _snapshot(model)
    x = torch.randn(2, 3, 32, 32)
    opts = {"variant": "gc"} if method == "score-cam" else {}
    cnnlens.explain(model, x, method, layer="layer4", **opts)
    _assert_untouched(model, snap)
    # failure in the middle of the forward (reused module) and after it (bad target)
    with pytest.raises(LayerError):
        cnnlens.explain(model, x, method, layer="layer1.0.relu", **opts)
    _assert_untouched(model, snap)
    with pytest.raises(TargetError):
        cnnlens.explain(model, x, method, target=5000, layer="layer4", **opts)
    _assert_untouched(model, snap)


def _tiny(dead: bool = False, zero_head: bool = False) -> nn.Module:
    torch.manual_seed(9)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 6, 3, padding=1), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 5)).eval()
    with torch.no_grad():
        if dead:      # every channel of layer "3" dead: all-zero activations
            net[2].bias.fill_(-100.0)
        else:         # two dead channels
            net[2].bias[:2] = -100.0
        if zero_head:
            net[6].weight.zero_()
    return net


@pytest.mark.parametrize("method", ALL)
@pytest.mark.parametrize("case", ["dead_channels", "all_dead", "zero_gradient", "constant_input"])
def test_nan_safety(method, case):
    net = _tiny(dead=case == "all_dead", zero_head=case == "zero_gradient")
    x = torch.zeros(2, 3, 8, 8) if case == "constant_input" else torch.randn(2, 3, 8, 8)
    opts_list = [{"variant": "paper"}, {"variant": "gc"}, {"baseline": "subtract", "mask_space": "raw"}] \
        if method == "score-cam" else [{}, {"relu": False}, {"normalize": "after_resize"}]
    for opts in opts_list:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            e = cnnlens.explain(net, x, method, layer="3", **opts)
        assert torch.isfinite(e.raw).all() and torch.isfinite(e.heatmap).all(), opts
        assert e.heatmap.min() >= 0 and e.heatmap.max() <= 1
        if case in ("all_dead", "zero_gradient") and not (method == "score-cam" and case == "zero_gradient"):
            assert (e.heatmap == 0).all(), opts
    if case == "zero_gradient" and method != "score-cam":
        with pytest.warns(RuntimeWarning, match="gradient of the target score is zero"):
            cnnlens.explain(net, x, method, layer="3")


def test_grad_cam_pp_dead_gradient_channel_is_zero_not_nan():
    from cnnlens.methods.grad_cam_pp import grad_cam_pp_map
    a = torch.rand(1, 3, 4, 4)
    g = torch.randn(1, 3, 4, 4)
    g[0, 1] = 0
    a[0, 2] = 0
    assert torch.isfinite(grad_cam_pp_map(a, g)).all()


# --------------------------------------------------------------------------- Layer-CAM fusion, Score-CAM memory
def test_layer_cam_fusion(resnet18):
    torch.manual_seed(10)
    x = torch.randn(2, 3, 64, 64)
    out = cnnlens.explain(resnet18, x, "layer-cam", layer=["layer2", "layer3", "layer4"], fuse=True)
    raws = [out[n].raw for n in ["layer2", "layer3", "layer4"]]

    def scaled(r, tanh):
        m = r / r.reshape(r.shape[0], -1).amax(1).reshape(-1, 1, 1)
        m = torch.tanh(2 * m) if tanh else m
        return F.interpolate(m[:, None], size=(8, 8), mode="bilinear", align_corners=False)[:, 0]
    fused = torch.stack([scaled(raws[0], True), scaled(raws[1], True), scaled(raws[2], False)]).amax(0)
    assert torch.allclose(out["fused"].raw, fused, atol=1e-6)
    assert out["fused"].heatmap.shape == (2, 64, 64)
    assert out["fused"].extras["layers"] == ["layer2", "layer3", "layer4"]
    single = cnnlens.explain(resnet18, x, "layer-cam", layer="layer3")
    assert torch.allclose(out["layer3"].heatmap, single.heatmap, atol=1e-6)


def test_score_cam_chunking_and_progress(capsys):
    torch.manual_seed(11)
    x = torch.randn(2, 3, 16, 16)
    for variant in ("paper", "gc"):
        a = cnnlens.explain(_SMALL, x, "score-cam", layer="5", batch_size=256, variant=variant)
        b = cnnlens.explain(_SMALL, x, "score-cam", layer="5", batch_size=3, progress=True, variant=variant)
        assert torch.allclose(a.heatmap, b.heatmap, atol=1e-6)
    assert "score-cam 5" in capsys.readouterr().err
    with pytest.raises(MethodError):
        cnnlens.explain(_SMALL, x, "score-cam", layer="5", variant="nope")


class _ViewNet(nn.Module):
    """Flattens its feature map with .view, which a channels_last tensor rejects."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(13)
        self.features = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.fc = nn.Linear(6 * 4 * 4, 5)

    def forward(self, x):
        f = self.features(x)
        return self.fc(f.view(f.shape[0], -1))


def test_score_cam_memory_formats():
    torch.manual_seed(14)
    x = torch.randn(2, 3, 16, 16)
    ref = cnnlens.explain(_SMALL, x, "score-cam", layer="5", memory_format="contiguous")
    for fmt in ("auto", "channels_last"):
        e = cnnlens.explain(_SMALL, x, "score-cam", layer="5", memory_format=fmt)
        assert (e.heatmap - ref.heatmap).abs().max().item() <= 1e-5
    net = _ViewNet().eval()
    x = torch.randn(2, 3, 8, 8)
    a = cnnlens.explain(net, x, "score-cam", layer="features.1")          # falls back to contiguous
    b = cnnlens.explain(net, x, "score-cam", layer="features.1", memory_format="contiguous")
    assert torch.equal(a.heatmap, b.heatmap)


# --------------------------------------------------------------------------- Score-CAM fast forward (cams.md §5)
from cnnlens.methods import _fast_forward, score_cam as _score_cam_mod  # noqa: E402


def _count_linear_stem(monkeypatch):
    calls = {"n": 0}
    orig = _score_cam_mod._LinearStem.__call__

    def counting(self, *args, **kwargs):
        calls["n"] += 1
        return orig(self, *args, **kwargs)
    monkeypatch.setattr(_score_cam_mod._LinearStem, "__call__", counting)
    return calls


def _fast_vs_plain(model, x, layer, **opts):
    fast = cnnlens.explain(model, x, "score-cam", layer=layer, **opts)
    plain = cnnlens.explain(model, x, "score-cam", layer=layer, fast_forward=False, **opts)
    w_f, w_p = fast.extras["channel_scores"], plain.extras["channel_scores"]
    rel = ((w_f - w_p).abs().max() / w_p.abs().max()).item()
    return (fast.heatmap - plain.heatmap).abs().max().item(), rel


@pytest.mark.parametrize("variant,mask_space,size", [("gc", "normalized", 112), ("paper", "normalized", 64),
                                                     ("paper", "raw", 64), ("gc", "raw", 64)])
def test_score_cam_fast_forward_equals_plain_resnet18(variant, mask_space, size, resnet18, monkeypatch):
    """BN folded, conv+ReLU(+residual) fused, and the stem conv by linearity (layer4 at 112 px is 4x4: 18 basis rows
    < 147 = 3·7·7; at 64 px 2x2): equal to the plain model's forwards up to fp32 rounding, batched over two images
    (chunks of 100 span both)."""
    calls = _count_linear_stem(monkeypatch)
    snap = _snapshot(resnet18)
    torch.manual_seed(21)
    x = torch.randn(2, 3, size, size)
    err, rel = _fast_vs_plain(resnet18, x, "layer4", variant=variant, mask_space=mask_space, batch_size=100)
    print(f"\nscore-cam fast vs plain resnet18 layer4 {size}px {variant}/{mask_space}: map {err:.1e}, "
          f"weights rel {rel:.1e}")
    assert calls["n"] > 0
    assert err <= 1e-5 and rel <= 1e-5
    _assert_untouched(resnet18, snap)


def test_score_cam_fast_forward_equals_plain_vgg11(vgg11, monkeypatch):
    """No BatchNorm; conv+ReLU fused; at 32 px features.18 is 2x2 so the stem (3·3·3 = 27) runs by linearity with
    its max pool applied block by block; at features.8 (4x4) the linear stem does not pay and is not used."""
    calls = _count_linear_stem(monkeypatch)
    torch.manual_seed(22)
    x = torch.randn(2, 3, 32, 32)
    for layer, linear in (("features.18", True), ("features.8", False)):
        calls["n"] = 0
        for variant in ("gc", "paper"):
            err, rel = _fast_vs_plain(vgg11, x, layer, variant=variant, batch_size=40)
            assert err <= 1e-5 and rel <= 1e-5, (layer, variant, err, rel)
        assert (calls["n"] > 0) == linear


class _StemNoPool(nn.Module):
    """A stem conv → BN → ReLU without a max pool (the linear stem's tail starts at the ReLU), a residual add and a
    functional ReLU."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(23)
        self.conv0 = nn.Conv2d(3, 8, 5, stride=2, padding=2, bias=False)
        self.bn0 = nn.BatchNorm2d(8)
        self.conv1 = nn.Conv2d(8, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 16, 3, stride=2, padding=1)
        self.head = nn.Linear(16, 6)
        with torch.no_grad():
            self.bn0.running_mean.uniform_(-0.3, 0.3)
            self.bn0.running_var.uniform_(0.5, 2.0)

    def forward(self, x):
        h = torch.relu(self.bn0(self.conv0(x)))
        h = F.relu(self.conv1(h) + h)
        h = F.relu(self.conv2(h))
        return self.head(h.mean((2, 3)))


def test_score_cam_fast_forward_stem_without_pool(monkeypatch):
    calls = _count_linear_stem(monkeypatch)
    net = _StemNoPool().eval()
    plan = _fast_forward.inference_plan(net, torch.float32)
    assert plan is not None and plan.stem is not None and plan.pool is None
    torch.manual_seed(24)
    x = torch.randn(3, 3, 8, 8)                                          # conv2 is 2x2: 6 basis rows per image
    for variant, mask_space in (("gc", "normalized"), ("paper", "raw")):
        err, rel = _fast_vs_plain(net, x, "conv2", variant=variant, mask_space=mask_space, batch_size=7)
        assert err <= 1e-5 and rel <= 1e-5
    assert calls["n"] > 0


def test_score_cam_fast_forward_falls_back(monkeypatch):
    """No plan for a model in training mode, with hooks, or not float32/64; the .view net cannot take the rewrite's
    channels_last feature maps, so its logits check fails and the plain model runs: identical to fast_forward=False."""
    net = _small_cnn(seed=25)
    assert _fast_forward.inference_plan(net, torch.float32) is not None
    net.train()
    assert _fast_forward.inference_plan(net, torch.float32) is None
    net.eval()
    assert _fast_forward.inference_plan(net, torch.float16) is None
    h = net[2].register_forward_hook(lambda m, i, o: o * 2)
    assert _fast_forward.inference_plan(net, torch.float32) is None
    torch.manual_seed(26)
    x = torch.randn(2, 3, 16, 16)
    a = cnnlens.explain(net, x, "score-cam", layer="5")
    b = cnnlens.explain(net, x, "score-cam", layer="5", fast_forward=False)
    assert torch.equal(a.heatmap, b.heatmap)                            # the user's hook runs in both
    h.remove()

    view = _ViewNet().eval()
    x = torch.randn(2, 3, 8, 8)
    checks = []
    orig = _score_cam_mod._checked_plan
    monkeypatch.setattr(_score_cam_mod, "_checked_plan", lambda *a: checks.append(orig(*a)) or checks[-1])
    for fmt in ("auto", "contiguous"):
        a = cnnlens.explain(view, x, "score-cam", layer="features.1", memory_format=fmt)
        b = cnnlens.explain(view, x, "score-cam", layer="features.1", memory_format=fmt, fast_forward=False)
        assert torch.equal(a.heatmap, b.heatmap)
    assert checks == [None, None]

    class Untraceable(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = _small_cnn(seed=27)

        def forward(self, x):
            if x.sum() > 0:                                            # data-dependent control flow: fx cannot trace
                return self.net(x)
            return -self.net(x)
    u = Untraceable().eval()
    assert _fast_forward.inference_plan(u, torch.float32) is None
    a = cnnlens.explain(u, x, "score-cam", layer="net.5")
    b = cnnlens.explain(u, x, "score-cam", layer="net.5", fast_forward=False)
    assert torch.equal(a.heatmap, b.heatmap)
    with pytest.raises(MethodError):
        cnnlens.explain(net, x, "score-cam", layer="5", fast_forward="yes")


def test_score_cam_fast_forward_training_model_and_changed_parameters():
    """A model in training mode is explained in eval mode (explain's contract) and comes back untouched; parameters
    changed between calls (in place, or behind the version counter through .data) never meet stale folded weights."""
    net = _small_cnn(seed=28).train()
    snap = _snapshot(net)
    torch.manual_seed(29)
    x = torch.randn(2, 3, 16, 16)
    err, rel = _fast_vs_plain(net, x, "5", variant="gc")
    assert err <= 1e-5 and rel <= 1e-5
    _assert_untouched(net, snap)
    net.eval()
    cnnlens.explain(net, x, "score-cam", layer="5")                     # caches the plan
    with torch.no_grad():
        net[1].running_var.mul_(3.0)                                    # version counter moves
    err, rel = _fast_vs_plain(net, x, "5")
    assert err <= 1e-5 and rel <= 1e-5
    net[4].weight.data.mul_(-2.0)                                       # .data: the version counter does not move
    net[1].weight.data.add_(0.5)
    err, rel = _fast_vs_plain(net, x, "5")
    assert err <= 1e-5 and rel <= 1e-5


# --------------------------------------------------------------------------- Score-CAM "gc" with constant channels
class _Relu6Net(nn.Module):
    """EfficientNet-like ReLU6 net whose Score-CAM layer (``act2``, 256×5×7 at 37×53 px) has all-zero channels, channels
    saturated at 6 and constant non-zero channels below 6 (as ~2/3 of EfficientNet-Lite0's ``bn2``)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(31)
        self.conv1 = nn.Conv2d(3, 8, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.act1 = nn.ReLU6()
        self.pool = nn.MaxPool2d(2, ceil_mode=True)
        self.conv2 = nn.Conv2d(8, 256, 3, stride=2, padding=1)
        self.act2 = nn.ReLU6()
        self.conv3 = nn.Conv2d(256, 32, 1)
        self.act3 = nn.ReLU()
        self.fc = nn.Linear(32, 10)
        with torch.no_grad():
            self.bn1.running_mean.uniform_(-0.2, 0.2)
            self.bn1.running_var.uniform_(0.5, 2.0)
            self.conv2.weight[:45] = 0                       # constant: 0..29 all zero, 30..39 = 6, 40..44 = 3.1
            self.conv2.bias[:30] = -1.0
            self.conv2.bias[30:40] = 7.0
            self.conv2.bias[40:45] = 3.1
            self.conv2.weight[45:50] *= 0.01                 # pre-activation > 6 everywhere: saturated at 6
            self.conv2.bias[45:50] = 20.0
            self.conv3.weight.mul_(3.0)

    def forward(self, x):
        h = self.pool(self.act1(self.bn1(self.conv1(x))))
        h = self.act3(self.conv3(self.act2(self.conv2(h))))
        return self.fc(h.mean((2, 3)))


@pytest.mark.parametrize("fast_forward", [True, False])
def test_score_cam_gc_constant_channels_equal_pytorch_grad_cam(fast_forward, monkeypatch):
    """Constant maps under "gc": all-zero ones score the baseline (their mask is exactly 0), but a constant non-zero map
    (ReLU6 saturated at 6, or 3.1) upsampled with align_corners=True is constant only up to float rounding, and
    pytorch-grad-cam's (up − min)/(span + 1e-8) turns that rounding into a noise mask: cnnlens reproduces it. Weights
    equal ``ScoreCAM.get_cam_weights``, raw and the after_resize display map its output (fast path: BN folded, the
    stem conv by linearity for the varying channels, the noise masks explicitly)."""
    calls = _count_linear_stem(monkeypatch)
    net = _Relu6Net().eval()
    torch.manual_seed(32)
    x = torch.randn(2, 3, 37, 53)
    with torch.no_grad():
        act = {}
        h = net.act2.register_forward_hook(lambda m, i, o: act.setdefault("a", o))
        net(x)
        h.remove()
    a = act["a"]
    flat = a.reshape(2, 256, -1)
    constant = flat.amax(2) == flat.amin(2)
    assert constant[:, :50].all() and (flat[:, :30] == 0).all() and (flat[:, 30:40] == 6).all()
    assert (flat[:, 45:50] == 6).all()
    noisy, _ = _score_cam_mod._gc_noise_masks(a, constant & (flat.amax(2) != 0), (37, 53))
    assert noisy.shape[0] > 0 and (noisy[:, 1] >= 30).all()          # the quirk is present; zero maps never noisy

    e = cnnlens.explain(net, x, "score-cam", layer="act2", variant="gc", batch_size=40, fast_forward=fast_forward)
    m2 = _oracle_copy(net)
    with pgc.ScoreCAM(model=m2, target_layers=[m2.act2]) as cam:
        cam.batch_size = 64
        weights = {}
        orig = cam.get_cam_weights

        def spy(*args, **kwargs):
            weights["w"] = orig(*args, **kwargs)
            return weights["w"]
        cam.get_cam_weights = spy
        ref = torch.from_numpy(cam(input_tensor=x.clone(), targets=None))
    w_ref = torch.from_numpy(weights["w"])
    w = e.extras["channel_scores"]
    w_err = ((w - w_ref).abs() / w_ref).max().item()
    err = (gc_normalise(e.raw, (37, 53)) - ref).abs().max().item()
    e2 = cnnlens.explain(net, x, "score-cam", layer="act2", variant="gc", normalize="after_resize",
                         fast_forward=fast_forward)
    err2 = (e2.heatmap - ref).abs().max().item()
    print(f"\nscore-cam gc constant channels (fast_forward={fast_forward}): weights rel {w_err:.1e}, "
          f"map {err:.1e}, after_resize heatmap {err2:.1e}")
    assert w_err <= 1e-5 and err <= 1e-5 and err2 <= 1e-5
    assert (calls["n"] > 0) == fast_forward
    assert e.extras["skipped_channels"][:, :30].all()


def test_fast_forward_only_where_it_folds_or_fuses():
    """The rewrite is used only where at least half of the convs fold a BN or fuse a ReLU / residual add: a conv
    followed by a BatchNorm subclass with its own forward (timm's BatchNormAct2d) gains nothing, so no plan."""

    class BNAct(nn.BatchNorm2d):
        def forward(self, x):
            return F.relu6(super().forward(x))

    def net(bn):
        torch.manual_seed(33)
        return nn.Sequential(nn.Conv2d(3, 8, 3), bn(8), nn.Conv2d(8, 8, 3), bn(8), nn.Conv2d(8, 8, 3), nn.ReLU(),
                             nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4)).eval()
    assert _fast_forward.inference_plan(net(nn.BatchNorm2d), torch.float32) is not None      # 3 of 3
    assert _fast_forward.inference_plan(net(BNAct), torch.float32) is None                   # 1 of 3
    assert _fast_forward.inference_plan(_small_cnn(seed=34), torch.float32) is not None
    x = torch.randn(2, 3, 12, 12)
    m = net(BNAct)
    a = cnnlens.explain(m, x, "score-cam", layer="3", variant="gc")
    b = cnnlens.explain(m, x, "score-cam", layer="3", variant="gc", fast_forward=False)
    assert torch.equal(a.heatmap, b.heatmap)


def test_score_cam_default_chunk_scales_with_the_input_size():
    from cnnlens.errors import MethodError
    from cnnlens.methods.score_cam import default_chunk
    assert [default_chunk(s * s) for s in (32, 112, 224)] == [64, 64, 16]
    assert default_chunk(224 * 448) == 8 and default_chunk(1024 * 1024) == 8
    x = torch.randn(1, 3, 16, 16)
    a = cnnlens.explain(_SMALL, x, "score-cam", layer="5")
    b = cnnlens.explain(_SMALL, x, "score-cam", layer="5", batch_size=3)
    torch.testing.assert_close(a.raw, b.raw, rtol=1e-5, atol=1e-7)
    for bad in (0, -1, 2.5, True, "8"):
        with pytest.raises(MethodError):
            cnnlens.explain(_SMALL, x, "score-cam", layer="5", batch_size=bad)
