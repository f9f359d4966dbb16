"""CPU vs CUDA: every method family gives the same map on the GPU as on the CPU (float32, TF32 off), the result stays on
the GPU, and the faithfulness metrics agree. Marked ``gpu``; skipped where CUDA is unavailable.

The device under test is the ``device`` fixture: ``"cuda"`` (skipped without CUDA), or whatever the environment
variable ``CNNLENS_TEST_DEVICE`` names. ``CNNLENS_TEST_DEVICE=cpu python -m pytest tests/test_gpu.py -m gpu`` runs the
whole file with the CPU as a fake second device, which checks the tests' own logic on a machine without a GPU.
"""
from __future__ import annotations

import json
import os

import pytest
import torch
import torchvision

import cnnlens
from cnnlens import metrics as M

SECOND_DEVICE = os.environ.get("CNNLENS_TEST_DEVICE", "cuda")
_NO_DEVICE = torch.device(SECOND_DEVICE).type == "cuda" and not torch.cuda.is_available()

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(_NO_DEVICE, reason="CUDA is not available")]

SIZE = 64          # small inputs: resnet18 at 64 px (layer3 4×4, layer4 2×2)
TARGET = [3, 7]    # fixed targets: a near-tie of random logits must not pick another class on the other device


@pytest.fixture(scope="module", params=[SECOND_DEVICE])
def device(request):
    """The device compared with the CPU, with TF32 off for the comparison (float32 tolerances, not TF32's)."""
    conv, mm = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield torch.device(request.param)
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = conv, mm


def _model_and_input(n: int = 2):
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10).eval()
    x = torch.rand(n, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))
    return model, x


def _both(device: torch.device, method: str, n: int = 2, **kw):
    """(CPU explanation, explanation on ``device``) of the same model, ``n`` inputs and targets."""
    model, x = _model_and_input(n)
    ref = cnnlens.explain(model, x, method, target=TARGET[:n], **kw)
    model_d = model.to(device)
    out = cnnlens.explain(model_d, x.to(device), method, target=TARGET[:n], **kw)
    return ref, out


def _assert_on(e, device: torch.device) -> None:
    """The result stays on the device it was computed on."""
    for name in ("heatmap", "raw", "target"):
        t = getattr(e, name)
        assert t.device.type == device.type, f"{name} on {t.device}, expected {device.type}"


def _assert_close(ref: torch.Tensor, out: torch.Tensor, rel: float) -> None:
    """max |out − ref| ≤ rel · max |ref| (float32 arithmetic in another order: ~1e-6 relative per layer)."""
    ref, out = ref.detach().double().cpu(), out.detach().double().cpu()
    assert out.shape == ref.shape
    assert torch.isfinite(out).all()
    scale = float(ref.abs().max().clamp(min=1e-12))
    err = float((out - ref).abs().max())
    assert err <= rel * scale, f"max |Δ| {err:.3e} > {rel:g} × max |ref| {scale:.3e}"


def _assert_similar(ref: torch.Tensor, out: torch.Tensor, r_min: float, mean_abs: float) -> None:
    """For maps with discrete steps (thresholds, top-K, uint8 encoding), where rounding may flip a few decisions:
    Pearson r ≥ r_min and mean |Δ| of the [0,1] heatmaps ≤ mean_abs."""
    a, b = ref.detach().double().cpu().flatten(), out.detach().double().cpu().flatten()
    r = float(torch.corrcoef(torch.stack([a, b]))[0, 1])
    assert r >= r_min, f"Pearson r {r:.6f} < {r_min}"
    assert float((a - b).abs().mean()) <= mean_abs


@pytest.mark.parametrize("method,layer", [("grad-cam", "layer4"), ("grad-cam++", "layer4"), ("xgrad-cam", "layer4"),
                                          ("layer-cam", "layer3"), ("relevance-cam", "layer3")])
def test_cam_family_matches_cpu(device, method, layer):
    ref, out = _both(device, method, layer=layer)
    _assert_on(out, device)
    _assert_close(ref.raw, out.raw, 1e-4)
    _assert_close(ref.heatmap, out.heatmap, 1e-4)
    assert torch.equal(ref.target, out.target.cpu())


def test_relevance_cam_sweep_matches_cpu(device):
    ref, out = _both(device, "relevance-cam", layer=["layer1", "layer2", "layer3", "layer4"])
    for name in ref:
        _assert_on(out[name], device)
        _assert_close(ref[name].raw, out[name].raw, 1e-4)


@pytest.mark.parametrize("method", ["lrp", "sglrp", "clrp", "deep-taylor"])
def test_lrp_family_matches_cpu(device, method):
    ref, out = _both(device, method)
    _assert_on(out, device)
    _assert_close(ref.raw, out.raw, 1e-3)   # relevance ratios z_ij / z_j amplify rounding near small z_j


def test_score_cam_matches_cpu(device):
    ref, out = _both(device, "score-cam", n=1, layer="layer4", variant="gc")
    _assert_on(out, device)
    _assert_close(ref.raw, out.raw, 1e-4)


def test_rise_matches_cpu_with_fixed_masks(device):
    # the seeded generator lives on the input's device (CPU and CUDA streams differ): the same explicit masks
    masks = (torch.rand(40, SIZE, SIZE, generator=torch.Generator().manual_seed(2)) < 0.5).float()
    model, x = _model_and_input()
    ref = cnnlens.explain(model, x, "rise", target=TARGET, masks=masks, batch_size=16)
    out = cnnlens.explain(model.to(device), x.to(device), "rise", target=TARGET, masks=masks.to(device), batch_size=16)
    _assert_on(out, device)
    _assert_close(ref.raw, out.raw, 1e-4)


def test_rise_seeded_runs_on_device(device):
    model, x = _model_and_input()
    out = cnnlens.explain(model.to(device), x.to(device), "rise", target=TARGET, n_masks=64, batch_size=32, seed=0)
    _assert_on(out, device)
    assert torch.isfinite(out.raw).all() and out.heatmap.shape == (2, SIZE, SIZE)


def test_sise_matches_cpu(device):
    ref, out = _both(device, "sise", n=1, layer=["layer3", "layer4"])
    _assert_on(out, device)
    _assert_similar(ref.heatmap, out.heatmap, r_min=0.999, mean_abs=1e-3)


def test_sr_map_matches_cpu(device):
    ref, out = _both(device, "sr-map", working_size=None)
    _assert_on(out, device)
    _assert_similar(ref.heatmap, out.heatmap, r_min=0.99, mean_abs=1e-2)


def test_metrics_match_cpu(device):
    model, x = _model_and_input()
    target = torch.tensor(TARGET)
    maps = cnnlens.explain(model, x, "grad-cam", target=TARGET, layer="layer4").heatmap
    norm = dict(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    kw = dict(step=SIZE * 4, batch_size=16, **norm)
    ref = M.deletion_insertion(model, x, maps, target, **kw)
    ref_y, ref_o = M.confidence_pair(model, x, maps, target, **norm)
    model_d, x_d, maps_d, target_d = model.to(device), x.to(device), maps.to(device), target.to(device)
    out = M.deletion_insertion(model_d, x_d, maps_d, target_d, **kw)
    y, o = M.confidence_pair(model_d, x_d, maps_d, target_d, **norm)
    for key in ("deletion", "insertion", "deletion_curve", "insertion_curve"):
        assert out[key].device.type == device.type
        _assert_close(ref[key], out[key], 1e-4)
    assert y.device.type == device.type
    _assert_close(M.average_drop(ref_y, ref_o), M.average_drop(y, o), 1e-4)


def test_cli_explain_on_device(device, tmp_path):
    from click.testing import CliRunner

    from cnnlens.cli import main
    outs = {}
    for dev in ("cpu", device.type):
        out = tmp_path / dev
        res = CliRunner().invoke(main, ["explain", "chelsea", "--model", "efficientnet_lite0", "--method", "grad-cam",
                                        "--device", dev, "--out", str(out)], catch_exceptions=False)
        assert res.exit_code == 0, res.output
        outs[dev] = json.loads((out / "explanations.json").read_text())
    cpu, dev = outs["cpu"][0], outs[device.type][0]
    assert dev["target"] == cpu["target"] and dev["layer"] == cpu["layer"]
    assert abs(dev["score"] - cpu["score"]) <= 1e-4


# -------------------------------------------------------------- evaluation, sanity (issue 21, item 15)
def _tiny_vgg():
    from torch import nn

    from cnnlens.data.synthetic import SHAPES, SyntheticMeta
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(8, 16, 3, padding=1),
                          nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 4))
    model.cnnlens_meta = SyntheticMeta("tiny-vgg", tuple(SHAPES[:4]), input_size=(3, 32, 32))
    return model.eval()


def test_evaluate_runner_on_device(device, tmp_path):
    """The evaluate runner on the device, images decoded by 2 loader workers into pinned memory (on CUDA): the same
    records as on the CPU (AD/IC, deletion/insertion, the box metrics, model randomisation), the maps' metrics within
    float32 tolerance."""
    from cnnlens.data.synthetic import SyntheticScenes
    from cnnlens.evaluation import EvalConfig, evaluate
    from cnnlens.evaluation.loader import iter_blocks
    data = SyntheticScenes(6, size=32)
    blocks = list(iter_blocks(data, 3, [0, 1], workers=2, device=device))
    assert [b.index for b in blocks] == [0, 1]
    if device.type == "cuda":
        assert all(b.images.is_pinned() for b in blocks)
    cfg = EvalConfig(batch_size=3, step=64, target="predicted")
    metrics = "average-drop,increase,deletion,insertion,energy-pointing-game,bbox,model-randomisation"
    runs = {}
    for dev in ("cpu", device):
        model = _tiny_vgg().to(dev)
        res = evaluate(model, data, ["grad-cam", "rise"], metrics, out=tmp_path / str(dev), config=cfg,
                       method_options={"rise": {"n_masks": 32}}, progress=False, plots=False, workers=2)
        runs[str(dev)] = {(r["sample"], r["method"]): r for r in res.records}
    cpu, dev = runs["cpu"], runs[str(device)]
    assert cpu.keys() == dev.keys() and len(cpu) == 12
    for key, ref in cpu.items():
        assert dev[key]["target"] == ref["target"]
        for name, value in ref["metrics"].items():
            other = dev[key]["metrics"][name]
            if value is None:
                assert other is None, (key, name)
            else:
                assert other == pytest.approx(value, rel=1e-3, abs=1e-3), (key, name)


def test_sanity_cascade_on_device(device):
    """Cascading and independent randomisation on the device: the same blocks, the same targets and the same
    similarities as on the CPU (the re-initialisation draws on the CPU, so the random weights are identical)."""
    from cnnlens.sanity import run_sanity
    model, x = _model_and_input()
    blocks = ["conv1+bn1+layer1+layer2", "layer3+layer4", "fc"]
    kw = dict(target=TARGET, layer="layer3", modes=("cascade", "independent"), blocks=blocks, seed=0)
    ref = run_sanity(model, x, ["grad-cam", "lrp"], **kw)
    out = run_sanity(model.to(device), x.to(device), ["grad-cam", "lrp"], **kw)
    assert out.steps == ref.steps and out.targets.tolist() == ref.targets.tolist()
    for label in ("grad-cam", "lrp"):
        for mode in ("cascade", "independent"):
            for metric in ("spearman", "spearman_abs"):
                torch.testing.assert_close(out.scores[label][mode][metric].double().cpu(),
                                           ref.scores[label][mode][metric].double().cpu(), rtol=0, atol=2e-3,
                                           equal_nan=True)
        assert out.verdicts()[label]["cascade"]["verdict"] == ref.verdicts()[label]["cascade"]["verdict"]


def test_model_randomisation_metric_on_device(device):
    from cnnlens.sanity import clear_cache, model_randomisation_score
    model, x = _model_and_input()
    target = torch.tensor(TARGET)
    ref = model_randomisation_score(model, x, target, "grad-cam", layer="layer3")
    clear_cache()
    out = model_randomisation_score(model.to(device), x.to(device), target.to(device), "grad-cam", layer="layer3")
    clear_cache()
    assert out.device.type == device.type
    torch.testing.assert_close(out.double().cpu(), ref.double().cpu(), rtol=0, atol=2e-3, equal_nan=True)
