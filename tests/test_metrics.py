"""Metrics against hand-computed values, closed-form curves of synthetic models, and pytorch-grad-cam (metrics.md §11)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

import cnnlens.metrics as M
from cnnlens.metrics.perturbation import gaussian_kernel


# ---------------------------------------------------------------- registry
def test_registry_directions_and_headers():
    lower = {n for n, s in M.METRICS.items() if not s.higher_is_better}
    assert lower == {"average-drop", "average-drop-rcam", "deletion", "model-randomisation"}
    assert M.METRICS["insertion"].header == "insertion ↑"
    assert M.METRICS["average-drop"].header == "average-drop ↓ (%)"
    with pytest.raises(M.MetricError, match="Did you mean"):
        M.get_metric("insertoin")
    assert [s.name for s in M.resolve_metrics("bbox,iou")] == ["bbox", "iou"]


# ---------------------------------------------------------------- §1 / §2 by hand
def test_average_drop_and_increase_by_hand():
    y, o = torch.tensor([0.8, 0.5]), torch.tensor([0.4, 0.6])
    assert M.average_drop(y, o).mean().item() == pytest.approx(25.0)
    assert M.increase_in_confidence(y, o).mean().item() == pytest.approx(50.0)
    ad_rcam = M.summarize(M.METRICS["average-drop-rcam"], M.average_drop_rcam(y, o))
    assert ad_rcam["mean"] == pytest.approx(50.0) and ad_rcam["n"] == 1
    assert M.average_increase_rcam(y, o).mean().item() == pytest.approx(50.0)


def test_ties_and_guards():
    y = torch.tensor([0.5, 0.0])
    o = torch.tensor([0.5, 0.3])
    assert M.increase_in_confidence(y[:1], o[:1]).item() == 0.0          # a tie is not an increase (§1)
    assert M.average_increase_rcam(y[:1], o[:1]).item() == 100.0         # ... but counts for AI_rcam (§2)
    assert math.isnan(M.average_drop(y, o)[1].item())                    # Y = 0 skipped
    no_drops = M.average_drop_rcam(torch.tensor([0.2]), torch.tensor([0.3]))
    assert M.summarize(M.METRICS["average-drop-rcam"], no_drops)["mean"] == 0.0   # no drops → 0 (§2)


def test_rcam_mask_keeps_strictly_above_the_kth_largest():
    s = torch.arange(16, dtype=torch.float32).view(1, 4, 4) / 15
    kept = M.rcam_mask(s, 0.5)
    # 8th largest value is 8/15; strictly greater: 9..15 (7 pixels) keep their soft values
    assert int((kept > 0).sum()) == 7
    assert torch.equal(kept[kept > 0], s[s > 8 / 15])
    s224 = torch.rand(1, 224, 224)
    assert int((M.rcam_mask(s224) > 0).sum()) == 25088 - 1              # τ is the 25,088-th largest itself


class _Linear2(nn.Module):
    """Two-class net: logits = (mean of channel 0 · 3, 0)."""
    def forward(self, x):
        a = x[:, 0].mean((1, 2)) * 3
        return torch.stack([a, torch.zeros_like(a)], 1)


def test_confidence_pair_raw_masking_by_hand():
    model = _Linear2()
    x01 = torch.full((1, 3, 4, 4), 0.6)
    mean, std = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
    x = (x01 - 0.5) / 0.25                                               # normalised: 0.4
    maps = torch.zeros(1, 4, 4)
    maps[0, :2] = 1.0                                                    # top half kept
    y, o = M.confidence_pair(model, x, maps, torch.tensor([0]), mean=mean, std=std)
    # masked raw image: 0.6 on the top half, 0 (black) on the bottom → normalised 0.4 / -2.0, mean -0.8
    assert y.item() == pytest.approx(torch.sigmoid(torch.tensor(1.2)).item(), abs=1e-6)
    assert o.item() == pytest.approx(torch.sigmoid(torch.tensor(-2.4)).item(), abs=1e-6)
    yn, on = M.confidence_pair(model, x, maps, torch.tensor([0]), mask_space="normalized")
    assert on.item() == pytest.approx(torch.sigmoid(torch.tensor(0.6)).item(), abs=1e-6)   # mean colour: 0.2·3


def test_normalized_masking_matches_pytorch_grad_cam():
    from pytorch_grad_cam.metrics.cam_mult_image import CamMultImageConfidenceChange
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(4, 5)).eval()
    x = torch.randn(3, 3, 16, 16)
    cams = torch.rand(3, 16, 16)
    cams = M.saliency(cams)
    target = torch.tensor([1, 3, 4])
    y, o = M.confidence_pair(model, x, cams, target, mask_space="normalized")
    ref = CamMultImageConfidenceChange()(x, cams.numpy(), [ClassifierOutputSoftmaxTarget(int(t)) for t in target],
                                        model)
    assert np.abs((o - y).numpy() - ref).max() <= 1e-6


# ---------------------------------------------------------------- §4 deletion / insertion
def test_auc_constant_and_trapezoid():
    assert M.auc(torch.full((2, 11), 0.3)).tolist() == pytest.approx([0.3, 0.3])
    assert M.auc(torch.tensor([[1.0, 0.5, 0.0]])).item() == pytest.approx(0.5)
    assert M.auc(torch.tensor([[0.0, 1.0, 1.0, 1.0, 1.0]])).item() == pytest.approx(0.875)


def test_gaussian_kernel_is_the_references_filtered_delta():
    from scipy.ndimage import gaussian_filter
    delta = np.zeros((11, 11))
    delta[5, 5] = 1
    assert np.abs(gaussian_kernel(11, 5).numpy() - gaussian_filter(delta, 5)).max() < 1e-15
    assert gaussian_kernel().sum().item() == pytest.approx(1.0, abs=1e-12)


class _RegionMean(nn.Module):
    """Score = mean normalised intensity over a region R (intact image = 1), used as a logit (metrics.md §11.2)."""
    def __init__(self, region):
        super().__init__()
        self.register_buffer("region", region.float())

    def forward(self, x):
        s = (x[:, 0] * self.region).sum((1, 2)) / self.region.sum()
        return torch.stack([s, torch.zeros_like(s)], 1)


def _region_setup():
    region = torch.zeros(16, 16)
    region[4:8, 2:10] = 1                                               # 32 px, a = 1/8
    return region, _RegionMean(region), torch.ones(1, 3, 16, 16)


def test_deletion_closed_form():
    region, model, x = _region_setup()
    t = torch.tensor([0])
    curve = M.perturbation_curves(model, x, region[None], t, mode="deletion", step=8, score="logit")
    assert curve.shape == (1, 33)
    assert curve[0, :5].tolist() == pytest.approx([1.0, 0.75, 0.5, 0.25, 0.0])
    assert M.auc(curve).item() == pytest.approx(1 / 16)                 # a/2
    rev = M.perturbation_curves(model, x, 1 - region[None], t, mode="deletion", step=8, score="logit")
    assert M.auc(rev).item() == pytest.approx(1 - 1 / 16)               # 1 − a/2


def test_insertion_mirrors_deletion():
    region, model, x = _region_setup()
    t = torch.tensor([0])
    ins = M.perturbation_curves(model, x, region[None], t, mode="insertion", step=8, substrate="zero_normalized",
                                score="logit")
    assert M.auc(ins).item() == pytest.approx(1 - 1 / 16)
    # blurred start: the curve starts at the blurred image's score and ends at the image's
    ins_blur = M.perturbation_curves(model, x, region[None], t, mode="insertion", step=8, score="logit")
    assert ins_blur[0, -1].item() == pytest.approx(1.0)
    assert ins_blur[0, 0].item() == pytest.approx(model(M.blur(x))[0, 0].item(), abs=1e-6)


def test_last_step_partial_and_batching_invariance():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(4, 3)).eval()
    x = torch.randn(3, 3, 10, 10)
    maps = torch.rand(3, 5, 5)
    t = torch.tensor([0, 1, 2])
    a = M.perturbation_curves(model, x, maps, t, step=7, batch_size=5)
    assert a.shape == (3, 16)                                           # ⌈100/7⌉ + 1
    b = torch.cat([M.perturbation_curves(model, x[i:i + 1], maps[i:i + 1], t[i:i + 1], step=7, batch_size=64)
                   for i in range(3)])
    assert torch.allclose(a, b, atol=1e-6)
    # the last point has every pixel deleted: the substrate's score
    sub = model(torch.zeros(1, 3, 10, 10)).softmax(-1)[0]
    assert a[:, -1].tolist() == pytest.approx(sub[t].tolist(), abs=1e-6)


def test_pixel_ranks_break_ties_in_raster_order():
    s = torch.tensor([[[0.5, 1.0], [0.5, 0.5]]])
    assert M.pixel_ranks(s).tolist() == [[1, 0, 2, 3]]


# ---------------------------------------------------------------- §5 pointing game
def _single_pixel_gt(r, c, size=(40, 40)):
    g = torch.zeros(1, *size, dtype=torch.bool)
    g[0, r, c] = True
    return g


def test_pointing_tolerance_strict_and_inclusive():
    s = torch.zeros(1, 40, 40)
    s[0, 0, 0] = 1.0
    assert M.pointing_game(s, _single_pixel_gt(10, 11)).item() == 1.0     # √221 ≈ 14.87 px
    assert M.pointing_game(s, _single_pixel_gt(9, 12)).item() == 0.0      # exactly 15 px: miss
    assert M.pointing_game(s, _single_pixel_gt(9, 12), inclusive=True).item() == 1.0
    assert M.pointing_game(s, _single_pixel_gt(15, 15)).item() == 0.0
    # constant map points at the top-left pixel
    assert M.pointing_points(torch.zeros(1, 5, 5)).tolist() == [[0, 0]]
    assert math.isnan(M.pointing_game(s, torch.zeros(1, 40, 40, dtype=torch.bool)).item())


def test_pointing_game_class_mean():
    spec = M.METRICS["pointing-game"]
    hits = [1, 1, 1, 0, 0]                                               # class a: 3/3, class b: 0/2
    out = M.summarize(spec, hits, groups=["a", "a", "a", "b", "b"])
    assert out["mean"] == pytest.approx(0.5) and out["n"] == 5
    assert M.mean_se(hits)[0] == pytest.approx(0.6)                      # per image would differ


def test_centre_points():
    assert M.centre_points(2, (10, 7)).tolist() == [[5, 3], [5, 3]]


# ---------------------------------------------------------------- §6-§8
def _box_map():
    g = M.boxes_mask([(2, 3, 6, 8)], (10, 12))[None]                      # 4 wide × 5 high = 20 px
    return g, g.float()


def test_boxes_mask_and_voc_conversion():
    g = M.boxes_mask([M.voc_to_box(1, 1, 2, 3)], (5, 5))
    assert g.sum().item() == 6 and g[:3, :2].all()
    assert M.boxes_mask([(0.4, 0, 1.6, 1)], (2, 3)).tolist() == [[True, True, False], [False, False, False]]


def test_ebpg_bbox_iou_perfect_map():
    g, s = _box_map()
    assert M.energy_pointing_game(s, g).item() == 1.0
    assert M.bbox_score(s, g).item() == 1.0
    for rule in M.localization.IOU_RULES:
        assert M.iou(s, g, rule=rule).item() == 1.0, rule
    assert M.iou(s, g, kind="box", boxes=[torch.tensor([[2, 3, 6, 8]])]).item() == 1.0


def test_ebpg_uniform_and_bbox_by_hand():
    g, _ = _box_map()
    assert M.energy_pointing_game(torch.ones(1, 10, 12), g).item() == pytest.approx(20 / 120)
    assert M.energy_pointing_game(torch.zeros(1, 10, 12), g).item() == 0.0
    s = torch.zeros(1, 10, 12)
    s[0, 0, :10] = 1.0                                                   # 10 top pixels outside
    s[0, 3, 2:6] = 0.9                                                   # 4 inside
    s[0, 4, 2:8] = 0.8                                                   # 4 inside, 2 outside (top-20 ends here)
    assert M.bbox_score(s, g).item() == pytest.approx(8 / 20)


def test_iou_rules_by_hand():
    g, _ = _box_map()
    s = torch.zeros(1, 10, 12)
    s[0, 3:8, 2:4] = 1.0                                                 # half of the box (10 px)
    s[0, 0, 0:5] = 0.1                                                   # below 0.2·max
    assert M.iou(s, g).item() == pytest.approx(10 / 20)
    assert M.iou(s, g, rule="value", threshold=0.05).item() == pytest.approx(10 / 25)
    assert M.iou(torch.zeros(1, 10, 12), g).item() == 0.0                # empty B
    # box IoU: largest component box (2,3)-(4,8) vs GT (2,3)-(6,8): 10/20
    assert M.iou(s, g, kind="box", boxes=[torch.tensor([[2., 3, 6, 8]])]).item() == pytest.approx(0.5)


def test_largest_component_is_8_connected():
    b = torch.zeros(1, 6, 6, dtype=torch.bool)
    b[0, 0, 0] = b[0, 1, 1] = b[0, 2, 2] = True                          # diagonal chain of 3
    b[0, 5, 4:6] = True                                                  # 2 px
    assert M.largest_component_boxes(b).tolist() == [[0.0, 0.0, 3.0, 3.0]]
    assert torch.isnan(M.largest_component_boxes(torch.zeros(1, 3, 3, dtype=torch.bool))).all()


def test_otsu_matches_skimage_on_bimodal_maps():
    from skimage.filters import threshold_otsu
    g = torch.Generator().manual_seed(0)
    s = torch.cat([torch.rand(1, 32, 32, generator=g) * 0.3, 0.6 + 0.4 * torch.rand(1, 32, 32, generator=g)], 2)
    s = M.saliency(s)
    ours = M.otsu_thresholds(s).item()
    ref = threshold_otsu(s[0].numpy(), nbins=256)
    assert abs(ours - ref) <= 1 / 256 + 1e-6
    assert torch.equal(M.binarize(s, "otsu"), s > ours)
    assert (M.binarize(s, "otsu") != (s > ref)).float().mean().item() < 0.01


def test_saliency_signed_modes():
    maps = torch.tensor([[[0.25, 0.5], [0.75, 1.0]]])                     # cnnlens signed heatmap: 0.5 = zero
    assert M.saliency(maps, signed=True).flatten().tolist() == pytest.approx([0, 1 / 3, 2 / 3, 1])
    assert M.saliency(maps, signed=True, signed_mode="relu", zero=0.5).tolist() == [[[0, 0], [0.5, 1.0]]]
    assert M.saliency(torch.ones(1, 2, 2)).sum().item() == 0.0


def test_metrics_run_in_eval_mode_and_leave_the_model_as_it_was():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout(0.5),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x, maps, t = torch.randn(2, 3, 8, 8), torch.rand(2, 8, 8), torch.tensor([0, 1])
    y1, o1 = M.confidence_pair(model, x, maps, t, mask_space="normalized")
    y2, o2 = M.confidence_pair(model, x, maps, t, mask_space="normalized")
    assert torch.equal(y1, y2) and torch.equal(o1, o2)            # eval mode: dropout off, BN stats frozen
    c1 = M.perturbation_curves(model, x, maps, t, step=16)
    assert torch.equal(c1, M.perturbation_curves(model, x, maps, t, step=16))
    assert model.training and all(torch.equal(before[k], v) for k, v in model.state_dict().items())
