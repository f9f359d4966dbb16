"""SISE (sise.md): every stage against hand-computed values, the reference fixtures (shared/fixtures/sise), properties
(batch invariance, flat/empty maps skipped, determinism, gates), layer selection, and the model left untouched."""
from __future__ import annotations

import copy
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import cnnlens
from conftest import assert_untouched, snapshot
from cnnlens.errors import LayerError, MethodError
from cnnlens.methods._perturb import apply_masks
from cnnlens.methods.sise import (area_weights, attribution_masks, channel_significance, flat_maps, fuse, gate,
                                  otsu_bin, otsu_threshold, select_adaptive, select_threshold)
from cnnlens.models.layers import block_layers, trace_layers


def _fixture_dir() -> Path:
    env = os.environ.get("CNNLENS_SHARED_DIR")
    root = Path(env) if env else Path(__file__).parents[1].parent / "shared"
    return root / "fixtures" / "sise"


FIXTURES = _fixture_dir()
needs_fixtures = pytest.mark.skipif(not (FIXTURES / "case_64_top.npz").exists(),
                                    reason=f"SISE reference fixtures not found at {FIXTURES} (shared/ beside the repo; "
                                           f"or set CNNLENS_SHARED_DIR)")
CASES = ["case_64_top", "case_224_other", "case_64_mu_empty"]
TAPS = ["relu1_2", "relu2_1", "relu3_1"]


class ToyVGG(nn.Module):
    """toy_net.json: conv8-conv8-pool, conv16-pool, conv32-pool, GAP, fc5 (logits; Ψ = softmax in the score)."""

    def __init__(self):
        super().__init__()
        self.conv1_1, self.relu1_1 = nn.Conv2d(3, 8, 3, padding=1), nn.ReLU()
        self.conv1_2, self.relu1_2, self.pool1 = nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)
        self.conv2_1, self.relu2_1, self.pool2 = nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)
        self.conv3_1, self.relu3_1, self.pool3 = nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)
        self.fc = nn.Linear(32, 5)

    def forward(self, x):
        x = self.pool1(self.relu1_2(self.conv1_2(self.relu1_1(self.conv1_1(x)))))
        x = self.pool2(self.relu2_1(self.conv2_1(x)))
        x = self.pool3(self.relu3_1(self.conv3_1(x)))
        return self.fc(x.mean(dim=(2, 3)))


def load_case(case: str):
    d = np.load(FIXTURES / f"{case}.npz", allow_pickle=False)
    model = ToyVGG()
    model.load_state_dict({k: torch.from_numpy(d[k]) for k in model.state_dict()}, strict=True)
    return d, model.eval(), torch.from_numpy(d["image"])


_CACHE: dict = {}


def cached_run(case: str, **options):
    """One explain per (case, options) for the whole module (the machine is shared; runs are deterministic)."""
    key = (case, tuple(sorted(options.items())))
    if key not in _CACHE:
        d, model, x = load_case(case)
        _CACHE[key] = run_case(d, model, x, **options)
    return _CACHE[key]


def run_case(d, model, x, **options):
    options.setdefault("mu", float(d["mu"]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return cnnlens.explain(model, x, "sise", target=int(d["target_class"]), layer=TAPS, **options)


# ------------------------------------------------------------------------------------------------ stages by hand
def test_channel_significance_and_threshold_selection_by_hand():
    g = torch.zeros(1, 4, 2, 2)
    g[0, 0] = torch.tensor([[1.0, 3.0], [0.0, 0.0]])      # mean 1
    g[0, 1] = 2.0                                          # mean 2 (β)
    g[0, 2] = -1.0                                         # mean −1
    g[0, 3] = torch.tensor([[4.0, 0.0], [0.0, 0.0]])      # mean 1 (exactly µβ for µ = 0.5)
    alpha = channel_significance(g)
    assert alpha.tolist() == [[1.0, 2.0, -1.0, 1.0]]
    assert select_threshold(alpha, 0.0).tolist() == [[True, True, False, True]]
    assert select_threshold(alpha, 0.5).tolist() == [[False, True, False, False]]     # strict inequality
    # β ≤ 0 with 0 < µ ≤ 1: nothing passes; µ = 0: nothing positive passes either
    neg = torch.tensor([[-1.0, -3.0, -2.0]])
    assert not select_threshold(neg, 0.5).any() and not select_threshold(neg, 0.0).any()
    # the sum instead of the mean selects the same maps
    assert torch.equal(select_threshold(g.sum(dim=(2, 3)), 0.3), select_threshold(alpha, 0.3))


def test_adaptive_selection_by_hand():
    # r = α/max α over positive α: {0.05, 0.1, 0.9, 1.0} → Otsu splits the low pair from the high pair
    alpha = torch.tensor([[0.5, 1.0, 9.0, 10.0, -3.0, 0.0]])
    assert select_adaptive(alpha).tolist() == [[False, False, True, True, False, False]]


def test_flat_maps():
    a = torch.rand(2, 3, 4, 4)
    a[0, 1] = 0.0
    a[1, 2] = 0.7
    assert flat_maps(a).tolist() == [[False, True, False], [False, False, True]]


def test_attribution_masks_by_hand():
    a = torch.tensor([[[0.0, 2.0]]])                        # (1,1,2) → upsample to (2,4)
    m = attribution_masks(a, (2, 4))
    # align_corners=False source x = (i+0.5)/2 − 0.5 = −0.25, 0.25, 0.75, 1.25 → clamped 0, .25, .75, 1
    row = torch.tensor([0.0, 0.5, 1.5, 2.0]) / (2.0 + 1e-6)
    assert torch.allclose(m, row.expand(1, 2, 4), atol=1e-7)
    # same size: identity resize, min-max with ε
    a = torch.tensor([[[1.0, 3.0], [5.0, 9.0]]])
    assert torch.allclose(attribution_masks(a, (2, 2)), (a - 1) / (8 + 1e-6), atol=1e-7)
    # nearest
    m = attribution_masks(torch.tensor([[[0.0, 1.0]]]), (1, 4), interp="nearest")
    assert torch.allclose(m, torch.tensor([[[0.0, 0.0, 1.0, 1.0]]]) / (1 + 1e-6))


def test_area_weights_by_hand():
    masks = torch.zeros(2, 2, 2)
    masks[0, 0, 0] = 1.0
    masks[1] = 0.5
    w = area_weights(torch.tensor([3.0, 4.0]), masks)
    assert torch.allclose(w, torch.tensor([3.0 / (1 + 1e-6), 4.0 / (2 + 1e-6)]))


def test_otsu_by_hand():
    # two equal clusters at bins 64 and 192: every split 65..192 has the same variance → the first, 65
    v = torch.tensor([[0.25] * 8 + [0.75] * 8])
    assert otsu_bin(v).tolist() == [65]
    # 0 and 1 only: bins 0 and 255 (256 clamps to 255), the first split wins
    assert otsu_bin(torch.tensor([[0.0, 1.0, 1.0]])).tolist() == [1]
    # half-to-even binning: 0.501953125·256 = 128.5 → 128
    v = torch.tensor([[0.0] * 3 + [0.501953125] * 3])
    assert otsu_bin(v).tolist() == [1]
    v = torch.tensor([[0.1] * 3 + [0.501953125] * 3])    # bins 26 (round(25.6)) and 128
    assert otsu_bin(v).tolist() == [27]
    # constant map: no valid split, no NaN
    t, tb = otsu_threshold(torch.zeros(1, 4, 4))
    assert torch.isfinite(t).all() and tb.tolist() == [1]


def test_otsu_tau_rule_by_hand():
    # 95 pixels at bin 10, 5 pixels at bin 200: t* = 11; k = round(16.5) = 16 (half to even);
    # 5 % of the pixels lie in bins ≥ 16 < 10 % → t = 1.5·11/256
    v = torch.cat([torch.full((95,), 10 / 256), torch.full((5,), 200 / 256)])[None]
    t, tb = otsu_threshold(v, tau=1.5)
    assert tb.tolist() == [11] and t.tolist() == [16.5 / 256]
    t1, _ = otsu_threshold(v, tau=1.0)
    assert t1.tolist() == [11 / 256]
    # 20 % above → plain t*
    v = torch.cat([torch.full((80,), 10 / 256), torch.full((20,), 200 / 256)])[None]
    t, tb = otsu_threshold(v, tau=1.5)
    assert t.tolist() == [tb.item() / 256]


def test_gates_and_fusion_by_hand():
    v1 = torch.tensor([[[0.2, 0.9], [0.0, 1.0]]])
    v2 = torch.tensor([[[1.0, 0.0], [0.6, 0.3]]])
    t = torch.tensor([0.5], dtype=torch.float64)
    assert gate(v2, t, "otsu_hard").tolist() == [[[1.0, 0.0], [1.0, 0.0]]]
    near = torch.tensor([[[0.52, 0.45], [0.5, 0.6]]])
    soft = gate(near, t, "otsu_soft", 100.0)
    assert ((soft > 0) & (soft < 1)).all() and torch.allclose(soft, torch.sigmoid(100 * (near - 0.5)))
    maps = torch.stack([v1, v2], dim=1)
    present = torch.tensor([[True, True]])
    fused, thr = fuse(maps, present, "otsu_hard")
    t2 = otsu_bin(v2).item() / 256
    expected = (v1 + v2) * (v2 > t2).float()
    assert torch.equal(fused, expected) and thr[0, 1].item() == t2
    # a skipped layer: the first present map starts the cascade
    fused, _ = fuse(maps, torch.tensor([[False, True]]), "otsu_hard")
    assert torch.equal(fused, v2)
    fused, _ = fuse(maps, torch.tensor([[True, False]]), "otsu_hard")
    assert torch.equal(fused, v1)
    fused, _ = fuse(maps, torch.tensor([[True, True]]), "simple")
    assert torch.allclose(fused, (v1 + v2) * v2)


def test_raw_space_masking_by_hand():
    mean, std = torch.tensor([0.5, 0.4, 0.3]), torch.tensor([0.2, 0.25, 0.5])
    img = torch.rand(1, 3, 4, 4)
    x = (img - mean[:, None, None]) / std[:, None, None]
    m = torch.rand(1, 4, 4)
    norm = (mean.reshape(1, 3, 1, 1), std.reshape(1, 3, 1, 1))
    raw = apply_masks(x, m, "raw", norm)
    assert torch.allclose(raw, (img * m - mean[:, None, None]) / std[:, None, None], atol=1e-6)
    assert torch.allclose(apply_masks(x, m, "normalized", norm), x * m)
    assert torch.allclose(apply_masks(x, m, "raw", None), x * m)


class TwoMapNet(nn.Module):
    """A_k = ReLU(x_k) (1×1 conv picking input channels 0 and 1); logit 0 = Σ_k mean over region R of A_k; logit 1 = 0.
    For non-negative x, masking the input masks A, so every SISE quantity is a closed form."""

    def __init__(self, region):
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 1, bias=False)
        with torch.no_grad():
            self.conv.weight.zero_()
            self.conv.weight[0, 0] = 1.0
            self.conv.weight[1, 1] = 1.0
        self.relu = nn.ReLU()
        self.region = region

    def forward(self, x):
        a = self.relu(self.conv(x))
        r0, r1, c0, c1 = self.region
        s = a[:, :, r0:r1, c0:c1].mean(dim=(2, 3)).sum(1)
        return torch.stack([s, torch.zeros_like(s)], dim=1)


def _two_map_input(h=8, w=8):
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32),
                            indexing="ij")
    x = torch.zeros(1, 3, h, w)
    x[0, 0] = torch.exp(-((yy - 1.5) ** 2 + (xx - 1.5) ** 2) / 3)     # blob inside the region
    x[0, 1] = torch.exp(-((yy - 6.0) ** 2 + (xx - 6.0) ** 2) / 3)     # blob outside it
    x[0, 2] = 0.5
    return x


def test_single_layer_pipeline_closed_form():
    region = (0, 4, 0, 4)
    model = TwoMapNet(region)
    x = _two_map_input()
    e = cnnlens.explain(model, x, "sise", target=0, layer="relu", score="logit")
    # α_k = mean of ∂Ψ/∂A_k = 1/(h·w) > 0 for both maps → both kept; masks m_k = minmax(x_k) (same resolution)
    assert e.extras["selected"]["relu"].tolist() == [[True, True]]
    m = torch.stack([(x[0, k] - x[0, k].min()) / (x[0, k].max() - x[0, k].min() + 1e-6) for k in (0, 1)])
    s = torch.stack([(x[0, :2] * m[k])[:, 0:4, 0:4].mean(dim=(1, 2)).sum() for k in (0, 1)])
    assert torch.allclose(e.extras["scores"]["relu"], s, atol=1e-6)
    r = (s[:, None, None] * m / (m.sum(dim=(1, 2))[:, None, None] + 1e-6)).sum(0)
    v = (r - r.min()) / (r.max() - r.min())
    assert torch.allclose(e.extras["layer_maps_raw"]["relu"][0], r, atol=1e-6)
    # single-layer SISE = min-max of V (the gate of a single layer is never applied)
    assert torch.allclose(e.heatmap[0], v, atol=1e-6)
    # the map concentrates on the scored region
    inside = e.heatmap[0, 0:4, 0:4].mean()
    assert inside > 3 * e.heatmap[0, 4:, 4:].mean()
    assert e.extras["n_forwards"] == 2 and torch.isfinite(e.raw).all()


def test_flat_and_empty_maps_are_skipped_never_nan():
    model = TwoMapNet((0, 4, 0, 4))
    x = _two_map_input()
    x[0, 1] = 0.0                                   # channel 1 becomes a dead (flat) map with α > 0
    e = cnnlens.explain(model, x, "sise", target=0, layer="relu", score="logit")
    assert e.extras["selected"]["relu"].tolist() == [[True, True]]
    assert e.extras["scored"]["relu"].tolist() == [1] and e.extras["n_forwards"] == 1
    m0 = x[0, 0] / (x[0, 0].max() + 1e-6)
    assert torch.allclose(e.heatmap[0], (m0 - m0.min()) / (m0.max() - m0.min()), atol=1e-6)
    # µ = 2 with β > 0: nothing kept anywhere → zero map, a warning, no NaN
    with pytest.warns(RuntimeWarning, match="no layer kept"):
        e = cnnlens.explain(model, x, "sise", target=0, layer="relu", score="logit", mu=2.0)
    assert e.extras["n_forwards"] == 0 and torch.equal(e.heatmap, torch.zeros_like(e.heatmap))
    # all-zero input: every map is flat
    with pytest.warns(RuntimeWarning):
        e = cnnlens.explain(model, torch.zeros_like(x), "sise", target=0, layer="relu", score="logit")
    assert torch.isfinite(e.heatmap).all() and float(e.heatmap.abs().max()) == 0.0


# --------------------------------------------------------------------------------------------------- fixtures
@needs_fixtures
@pytest.mark.parametrize("case", CASES)
def test_fixture_stages(case):
    d, model, x = load_case(case)
    with torch.no_grad():
        assert np.abs(model(x).softmax(-1)[0].numpy() - d["probs"]).max() <= 1e-6
    e = cached_run(case, mode="reference")
    assert e.extras["layers"] == TAPS
    for l, tap in enumerate(TAPS):
        alpha = e.extras["alpha"][tap][0].numpy()
        ref_alpha = d[f"layer{l}_alpha"]
        assert np.abs(alpha - ref_alpha).max() <= 1e-4 * np.abs(ref_alpha).max()
        kept = e.extras["selected"][tap][0].nonzero()[:, 0].tolist()
        assert kept == d[f"layer{l}_kept"].tolist()
        if not kept:
            assert not bool(e.extras["fused_layers"][tap][0])
            continue
        flat = d[f"layer{l}_flat"]
        scored = e.extras["scored_maps"][tap][:, 1].tolist()
        assert scored == [k for k, f in zip(kept, flat) if not f]            # flat maps skipped, nothing else
        assert np.abs(e.extras["scores"][tap].numpy() - d[f"layer{l}_scores"][~flat]).max() <= 1e-6
        raw, ref_raw = e.extras["layer_maps_raw"][tap][0].numpy(), d[f"layer{l}_map_raw"]
        assert np.abs(raw - ref_raw).max() <= 1e-5 * np.abs(ref_raw).max()
        assert np.abs(e.extras["layer_maps"][tap][0].numpy() - d[f"layer{l}_map"]).max() <= 1e-5
        t, t_bin = otsu_threshold(e.extras["layer_maps"][tap], tau=1.5)
        assert t_bin.item() == int(d[f"layer{l}_otsu_bin"]) and t.item() == float(d[f"layer{l}_otsu_thr"])
        assert (t.item() != t_bin.item() / 256) == bool(d[f"layer{l}_otsu_tau_applied"])
        if l > 0:
            assert e.extras["thresholds"][tap][0].item() == float(d[f"layer{l}_otsu_thr"])
    assert np.abs(e.raw[0].numpy() - d["fused"]).max() <= 1e-4
    assert np.abs(e.heatmap[0].numpy() - d["explanation"]).max() <= 1e-4


@needs_fixtures
@pytest.mark.parametrize("case", ["case_64_top", "case_64_mu_empty"])
def test_fixture_masks_and_activations(case):
    d, model, x = load_case(case)
    from cnnlens.capture import LayerCapture
    with torch.no_grad(), LayerCapture(model, TAPS) as cap:
        model(x)
    size = (int(d["H"]), int(d["W"]))
    for l, tap in enumerate(TAPS):
        act = cap.activations[tap][0]
        assert np.abs(act.numpy() - d[f"layer{l}_act"]).max() <= 1e-5
        kept = torch.from_numpy(d[f"layer{l}_kept"])
        if len(kept):
            masks = attribution_masks(act[kept], size)
            assert np.abs(masks.numpy() - d[f"layer{l}_masks"]).max() <= 1e-5
        # ...and from the reference's own activations
        ref = torch.from_numpy(d[f"layer{l}_act"])
        if len(kept):
            assert np.abs(attribution_masks(ref[kept], size).numpy() - d[f"layer{l}_masks"]).max() <= 1e-5


@needs_fixtures
@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("fusion,tau,key,tol", [("otsu_hard", 1.0, "fused_hard_plain", 1e-5),
                                                ("otsu_hard", 1.5, "fused_hard", 1e-5),
                                                ("simple", 1.0, "fused_simple", 1e-5),
                                                ("otsu_soft", 1.5, "fused", 1e-4)])
def test_fixture_fusion_variants(case, fusion, tau, key, tol):
    d = np.load(FIXTURES / f"{case}.npz", allow_pickle=False)
    if case == "case_224_other":     # the layer maps are shared: fuse them directly (saves three 224² runs)
        ref = cached_run(case, mode="reference")
        maps = torch.stack([ref.extras["layer_maps"][t] for t in TAPS], dim=1)
        present = torch.stack([ref.extras["fused_layers"][t] for t in TAPS], dim=1)
        fused, thr = fuse(maps, present, fusion, tau)
        assert np.abs(fused[0].numpy() - d[key]).max() <= tol
        return
    e = cached_run(case, fusion=fusion, tau=tau)
    assert np.abs(e.raw[0].numpy() - d[key]).max() <= tol
    if fusion == "otsu_hard":
        for tap in TAPS[1:]:
            v = e.extras["layer_maps"][tap]
            if bool(e.extras["fused_layers"][tap][0]):
                g = gate(v, e.extras["thresholds"][tap], fusion)
                assert set(g.unique().tolist()) <= {0.0, 1.0}


@needs_fixtures
def test_fixture_paper_default_is_hard_plain_gate():
    d = np.load(FIXTURES / "case_64_top.npz", allow_pickle=False)
    e = cached_run("case_64_top")                    # mode="paper": hard gate at t*/256
    assert e.extras["options"]["fusion"] == "otsu_hard" and e.extras["options"]["tau"] == 1.0
    assert np.abs(e.raw[0].numpy() - d["fused_hard_plain"]).max() <= 1e-5


@needs_fixtures
def test_batch_size_does_not_change_results():
    d, model, x = load_case("case_64_top")
    ref = cached_run("case_64_top", mode="reference")        # default batch_size 64 ≥ K: one batch per run
    for bs in (1, 7):
        e = run_case(d, model, x, mode="reference", batch_size=bs)
        assert torch.allclose(e.raw, ref.raw, atol=1e-6, rtol=0)
        for tap in TAPS:
            assert torch.allclose(e.extras["layer_maps"][tap], ref.extras["layer_maps"][tap], atol=1e-6, rtol=0)


@needs_fixtures
def test_batched_samples_equal_single_samples():
    d1, model, x1 = load_case("case_64_top")
    d2, _, x2 = load_case("case_64_mu_empty")
    x = torch.cat([x1, x2])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        both = cnnlens.explain(model, x, "sise", target=[3, 4], layer=TAPS, mu=0.5, mode="reference", batch_size=7)
        for i, t in enumerate((3, 4)):
            one = cnnlens.explain(model, x[i:i + 1], "sise", target=t, layer=TAPS, mu=0.5, mode="reference")
            # float noise of the batched gradient pass (~1e-6), amplified by the soft gate's slope T/4 = 25
            assert torch.allclose(both.raw[i], one.raw[0], atol=1e-4, rtol=0)
            for tap in TAPS:
                assert torch.allclose(both.extras["layer_maps"][tap][i], one.extras["layer_maps"][tap][0], atol=1e-5)
            assert torch.equal(both.extras["selected"]["relu3_1"][i], one.extras["selected"]["relu3_1"][0])


@needs_fixtures
def test_determinism_and_score_options():
    d, model, x = load_case("case_64_top")
    a = cached_run("case_64_top")
    b = run_case(d, model, x)
    assert torch.equal(a.raw, b.raw) and torch.equal(a.heatmap, b.heatmap)
    logit = run_case(d, model, x, score="logit")
    assert not torch.allclose(logit.heatmap, a.heatmap, atol=1e-3)       # the score type matters
    assert logit.extras["options"]["score"] == "logit"
    sig = run_case(d, model, x, score="sigmoid")
    assert torch.isfinite(sig.heatmap).all()
    ada = run_case(d, model, x, selection="adaptive")
    assert 0 < ada.extras["n_forwards"] < a.extras["n_forwards"]
    for tap in TAPS:      # Ada-SISE keeps a subset of the positive-gradient maps
        assert not (ada.extras["selected"][tap] & ~a.extras["selected"][tap]).any()
    bf = run_case(d, model, x, precision="bf16")
    assert torch.isfinite(bf.heatmap).all()
    assert (bf.heatmap - a.heatmap).abs().mean() < 0.1


@needs_fixtures
def test_layer_order_and_masks_space_without_normalisation():
    d, model, x = load_case("case_64_top")
    a = cached_run("case_64_top")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        b = cnnlens.explain(model, x, "sise", target=3, layer=TAPS[::-1])
        c = cnnlens.explain(model, x, "sise", target=3, layer=TAPS, mask_space="normalized")
    assert b.layer == TAPS and torch.equal(a.raw, b.raw)        # fused shallow → deep whatever the given order
    assert torch.equal(a.raw, c.raw)                             # no normalisation known: both spaces coincide


# ---------------------------------------------------------------------------------------------- layers & API
def test_block_layers_small_models():
    import torchvision
    x = torch.zeros(1, 3, 64, 64)
    net = torchvision.models.resnet18(num_classes=10)
    assert block_layers(net, trace_layers(net, x)) == ["relu", "layer1", "layer2", "layer3", "layer4"]
    toy = ToyVGG()
    assert block_layers(toy, trace_layers(toy, x)) == TAPS      # toy_net.json's "sise_taps"


@pytest.mark.slow
def test_block_layers_match_spec_table():
    import torchvision
    table = {"vgg16": ["features.3", "features.8", "features.15", "features.22", "features.29"],
             "vgg16_bn": ["features.5", "features.12", "features.22", "features.32", "features.42"],
             "resnet50": ["relu", "layer1", "layer2", "layer3", "layer4"],
             "alexnet": ["features.1", "features.4", "features.11"],
             "vgg11": ["features.1", "features.4", "features.9", "features.14", "features.19"]}
    x = torch.zeros(1, 3, 224, 224)
    for name, expected in table.items():
        model = getattr(torchvision.models, name)()
        assert block_layers(model, trace_layers(model, x)) == expected, name


def test_default_layers_and_model_untouched():
    import torchvision
    model = torchvision.models.resnet18(num_classes=7)
    model.train()
    model.layer1.requires_grad_(False)
    before = snapshot(model)
    x = torch.rand(1, 3, 64, 64)
    e = cnnlens.explain(model, x, "sise", mu=0.9, batch_size=64)
    assert e.layer == ["relu", "layer1", "layer2", "layer3", "layer4"] and e.heatmap.shape == (1, 64, 64)
    assert torch.isfinite(e.heatmap).all() and float(e.heatmap.max()) == 1.0
    assert set(e.extras["layer_maps"]) == set(e.layer)
    assert_untouched(model, before)
    # failures leave it untouched too
    with pytest.raises(LayerError):
        cnnlens.explain(model, x, "sise", layer=["layer1", "layer9"])
    with pytest.raises(LayerError):
        cnnlens.explain(model, x, "sise", layer=["fc"])                   # not a (N,C,h,w) map
    with pytest.raises(MethodError):
        cnnlens.explain(model, x, "sise", fusion="otsu")
    with pytest.raises(MethodError):
        cnnlens.explain(model, x, "sise", batch_size=0)
    with pytest.raises(MethodError):
        cnnlens.explain(model, x, "sise", mean=[0.5, 0.5, 0.5])
    assert_untouched(model, before)


def test_mask_space_with_normalisation_changes_scores():
    model = TwoMapNet((0, 4, 0, 4))
    x = _two_map_input()
    mean, std = [0.2, 0.2, 0.2], [0.5, 0.5, 0.5]
    xn = (x - 0.2) / 0.5
    raw = cnnlens.explain(model, xn, "sise", target=0, layer="relu", score="logit", mean=mean, std=std)
    nrm = cnnlens.explain(model, xn, "sise", target=0, layer="relu", score="logit", mean=mean, std=std,
                          mask_space="normalized")
    assert not torch.allclose(raw.extras["scores"]["relu"], nrm.extras["scores"]["relu"])
    assert raw.extras["options"]["normalisation_known"]


@pytest.mark.slow
@pytest.mark.parametrize("name,expected", [("resnet50", ["relu", "layer1", "layer2", "layer3", "layer4"]),
                                           ("vgg16", ["features.3", "features.8", "features.15", "features.22",
                                                      "features.29"])])
def test_full_size_models_end_to_end(name, expected):
    import torchvision
    torch.manual_seed(0)
    model = getattr(torchvision.models, name)()
    before = snapshot(model)
    x = torch.rand(1, 3, 224, 224)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        e = cnnlens.explain(model, x, "sise", mu=0.95, batch_size=16)
        b = cnnlens.explain(model, x, "sise", layer=expected[-2:], mu=0.95, batch_size=3)
    assert e.layer == expected and e.heatmap.shape == (1, 224, 224)
    assert torch.isfinite(e.heatmap).all() and e.extras["n_forwards"] > 0
    for tap in expected[-2:]:     # batch size and layer subset do not change a layer's map
        assert torch.allclose(e.extras["layer_maps"][tap], b.extras["layer_maps"][tap], atol=1e-5)
    assert_untouched(model, before)


@needs_fixtures
def test_several_classes_of_one_image_share_masked_forwards():
    d, model, x = load_case("case_64_top")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        both = cnnlens.explain(model, x.repeat(2, 1, 1, 1), "sise", target=[3, 1], layer=TAPS, batch_size=5)
        singles = [cnnlens.explain(model, x, "sise", target=t, layer=TAPS) for t in (3, 1)]
    union = sum(int((s0 | s1).sum()) for s0, s1 in
                zip(*[[e.extras["selected"][t][0] & ~flat_maps(a) for t, a in acts.items()]
                      for e, acts in [(e, _acts(model, x)) for e in singles]]))
    assert both.extras["n_forwards"] == union < sum(e.extras["n_forwards"] for e in singles)
    for i, e in enumerate(singles):
        assert torch.equal(both.extras["selected"]["relu3_1"][i], e.extras["selected"]["relu3_1"][0])
        for tap in TAPS:
            assert torch.allclose(both.extras["layer_maps"][tap][i], e.extras["layer_maps"][tap][0], atol=1e-5)
        assert torch.allclose(both.raw[i], e.raw[0], atol=1e-5)


def _acts(model, x):
    from cnnlens.capture import LayerCapture
    with torch.no_grad(), LayerCapture(model, TAPS) as cap:
        model(x)
    return {t: cap.activations[t] for t in TAPS}


def test_progress_bar_only_when_asked(capsys):
    model = TwoMapNet((0, 4, 0, 4))
    x = _two_map_input()
    a = cnnlens.explain(model, x, "sise", target=0, layer="relu", score="logit", batch_size=1)
    assert "SISE" not in capsys.readouterr().err
    b = cnnlens.explain(model, x, "sise", target=0, layer="relu", score="logit", batch_size=1, progress=True)
    assert "SISE" in capsys.readouterr().err and torch.equal(a.raw, b.raw)
