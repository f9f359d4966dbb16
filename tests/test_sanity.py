"""Sanity checks (Adebayo et al. 2018): similarity measures against scipy / scikit-image, randomisation order and seeds,
verdicts on a method that ignores the model (fails) and on Grad-CAM (passes), the user's model untouched, the CLI."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

from cnnlens.methods.registry import MapResult, MethodOutput, _REGISTRY, register
from cnnlens.sanity import (cascade, hog_features, hog_similarity, independent, model_randomisation_score,
                            randomisation_blocks, rank_correlation, run_sanity, ssim, verdict)
from cnnlens.sanity.metric import clear_cache

from conftest import assert_untouched, snapshot

LITE0_COARSE = ["conv_stem+bn1+blocks.0+blocks.1+blocks.2+blocks.3", "blocks.4+blocks.5+blocks.6",
                "conv_head+bn2+classifier"]


# ---------------------------------------------------------------------------------------------- similarity oracles
def _fixture_maps(n=3, h=48, w=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    a = torch.rand(n, h, w, generator=g, dtype=torch.float64)
    a = F.avg_pool2d(a[:, None], 5, 1, 2)[:, 0]                 # smooth structure, not white noise
    b = (a + 0.2 * torch.rand(n, h, w, generator=g, dtype=torch.float64)).clamp(0, 1)
    a[0, :8] = 0.0                                                 # ties (a flat region) in both maps
    b[0, :16] = 0.5
    b[1] = 1.0 - b[1]                                              # an anti-correlated pair
    return a, b


def test_rank_correlation_matches_scipy_with_ties():
    stats = pytest.importorskip("scipy.stats")
    a, b = _fixture_maps()
    a[2] = torch.round(a[2] * 5) / 5                               # heavy ties
    ours = rank_correlation(a, b).numpy()
    ref = np.array([stats.spearmanr(a[i].ravel().numpy(), b[i].ravel().numpy())[0] for i in range(3)])
    np.testing.assert_allclose(ours, ref, atol=1e-12)
    assert math.isnan(float(rank_correlation(torch.zeros(1, 8, 8), torch.rand(1, 8, 8))[0]))


def test_ssim_matches_skimage():
    metrics = pytest.importorskip("skimage.metrics")
    a, b = _fixture_maps()
    ours = ssim(a, b, data_range=1.0).numpy()
    ref = np.array([metrics.structural_similarity(a[i].numpy(), b[i].numpy(), data_range=1.0) for i in range(3)])
    np.testing.assert_allclose(ours, ref, atol=1e-12)
    np.testing.assert_allclose(ssim(a, a).numpy(), 1.0, atol=1e-12)


def test_hog_matches_skimage_on_a_photo_and_maps():
    feature = pytest.importorskip("skimage.feature")
    from skimage import data, transform
    photo = transform.resize(data.camera() / 255.0, (96, 120))     # 96×120: a partial cell column is dropped
    a, b = _fixture_maps(2, 96, 120)
    maps = torch.stack([torch.from_numpy(photo), a[0], b[1]])
    ours = hog_features(maps).numpy()
    ref = np.stack([feature.hog(m.numpy()) for m in maps])
    assert ours.shape == ref.shape
    # skimage accumulates the cell histograms in float32; ours is float64
    np.testing.assert_allclose(ours, ref, atol=2e-6)
    sim = hog_similarity(maps[:1].expand(3, -1, -1), maps).numpy()
    ref_sim = [np.corrcoef(ref[0], r)[0, 1] for r in ref]
    np.testing.assert_allclose(sim, ref_sim, atol=1e-5)


# ---------------------------------------------------------------------------------------------- randomisation
def test_default_blocks_run_from_the_logits_down(lite0):
    import torchvision
    names = [b.name for b in randomisation_blocks(lite0)]
    assert names == ["head"] + [f"blocks.{i}" for i in range(6, -1, -1)] + ["stem"]
    assert randomisation_blocks(lite0)[0].modules == ("conv_head", "bn2", "classifier")
    r18 = [b.name for b in randomisation_blocks(torchvision.models.resnet18())]
    assert r18[0] == "fc" and r18[1] == "layer4.1" and r18[-1] == "stem"
    vgg_bn = torch.nn.Sequential()
    vgg_bn.features = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
                                          torch.nn.Conv2d(4, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU())
    vgg_bn.pool = torch.nn.AdaptiveAvgPool2d(1)
    vgg_bn.classifier = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2))
    assert [b.modules for b in randomisation_blocks(vgg_bn)] == [     # VGG-BN layout: conv + its BN form one block
        ("classifier.1",), ("features.3", "features.4"), ("features.0", "features.1")]
    custom = randomisation_blocks(lite0, LITE0_COARSE)
    assert [b.modules[0] for b in custom] == ["conv_head", "blocks.4", "conv_stem"]
    from cnnlens.errors import LayerError
    with pytest.raises(LayerError, match="no such module"):
        randomisation_blocks(lite0, ["conv_stem", "nope"])


def _states(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _in_block(key, block):
    return any(key == m or key.startswith(m + ".") for m in block.modules)


def test_cascade_and_independent_order_and_seeds():
    from _models import randomize_batchnorm

    from cnnlens.data.synthetic import resnet_like
    torch.manual_seed(0)
    resnet18 = randomize_batchnorm(resnet_like())   # a small torchvision ResNet; BN away from its constructor state
    blocks = randomisation_blocks(resnet18)
    orig = _states(resnet18)
    casc = [(_states(m)) for _, _, m in cascade(resnet18, blocks, seed=3)]
    again = [(_states(m)) for _, _, m in cascade(resnet18, blocks, seed=3)]
    other = _states(list(cascade(resnet18, blocks[:1], seed=4))[-1][2])
    indep = [(_states(m)) for _, _, m in independent(resnet18, blocks, seed=3)]
    for k, state in enumerate(casc):
        assert all(torch.equal(state[key], again[k][key]) for key in state)          # reproducible
        for key, value in state.items():
            j = next((i for i, b in enumerate(blocks) if _in_block(key, b)), None)
            if j is None or j > k or key.endswith("num_batches_tracked"):
                assert torch.equal(value, orig[key]), (k, key)                       # not yet randomised
            elif value.is_floating_point() and value.numel() > 1:
                assert not torch.equal(value, orig[key]), (k, key)                   # randomised
            # the block's random draw is the same in the cascade and alone (seed of (seed, block index))
            if j is not None and j <= k:
                assert torch.equal(value, indep[j][key]), (k, key)
        for key, value in indep[k].items():                                          # one block alone
            if not _in_block(key, blocks[k]):
                assert torch.equal(value, orig[key]), (k, key)
    assert not torch.equal(other["fc.weight"], casc[0]["fc.weight"])                 # another seed, another draw
    # BatchNorm gets its constructor's state: running stats 0/1, affine 1/0
    last = casc[-1]
    assert torch.equal(last["bn1.running_mean"], torch.zeros(16)) and torch.equal(last["bn1.running_var"],
                                                                                   torch.ones(16))
    assert torch.equal(last["bn1.weight"], torch.ones(16)) and torch.equal(last["bn1.bias"], torch.zeros(16))
    assert all(torch.equal(v, orig[k]) for k, v in _states(resnet18).items())        # the model itself untouched


# ---------------------------------------------------------------------------------------------- verdicts
_EDGE = "test-edge-map"


@pytest.fixture
def edge_method():
    """A method that ignores the model: the Sobel gradient magnitude of the input image."""
    @register(_EDGE, "test only: Sobel edges of the input, independent of the model", layers="none")
    def edge_map(req):
        with torch.no_grad():
            logits = req.model(req.x)
        gray = req.x.mean(1, keepdim=True)
        kx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], dtype=gray.dtype)
        gx = F.conv2d(gray, kx.view(1, 1, 3, 3), padding=1)
        gy = F.conv2d(gray, kx.t().contiguous().view(1, 1, 3, 3), padding=1)
        edges = torch.hypot(gx, gy)[:, 0]
        heat = edges / edges.amax(dim=(1, 2), keepdim=True)
        return MethodOutput({None: MapResult(raw=edges, heatmap=heat)}, req.resolve_targets(logits), logits)
    try:
        yield _EDGE
    finally:
        _REGISTRY.pop(_EDGE, None)


def _photos(model, size=None):
    import cnnlens
    x = torch.cat([cnnlens.load_image(n, model) for n in ("chelsea", "coffee")])
    return x if size is None else F.interpolate(x, size=size, mode="bilinear", antialias=True)


R18_COARSE = ["conv1+bn1+layer1+layer2", "layer3+layer4", "fc"]


def test_edge_map_fails_and_grad_cam_passes(resnet18, edge_method):
    """A fixed-seed torchvision ResNet-18 (random init: no ImageNet weights offline), two photos at 96 px."""
    x = _photos(resnet18, (96, 96))
    before = snapshot(resnet18)
    report = run_sanity(resnet18, x, ["grad-cam", edge_method], layer="layer4", modes=("cascade", "independent"),
                        blocks=R18_COARSE, seed=0)
    assert_untouched(resnet18, before)
    v = report.verdicts()
    assert v[edge_method]["cascade"]["verdict"] == "fails"
    assert v[edge_method]["cascade"]["statistic"] == pytest.approx(1.0)
    assert v["grad-cam"]["cascade"]["verdict"] == "passes", v["grad-cam"]
    assert report.layers["grad-cam"] == "layer4" and report.layers[edge_method] is None
    assert report.steps["cascade"] == ["fc", "layer3+layer4", "conv1+bn1+layer1+layer2"]
    for mode in ("cascade", "independent"):
        s = report.scores["grad-cam"][mode]
        assert set(s) == {"spearman", "spearman_abs", "ssim", "hog"}
        assert all(t.shape == (3, 2) for t in s.values())
        assert report.maps["grad-cam"][mode].shape == (3, 2, 96, 96)
        np.testing.assert_allclose(report.scores[edge_method][mode]["ssim"].numpy(), 1.0)
    # the targets were resolved once on the trained model and kept
    with torch.no_grad():
        assert report.targets.tolist() == resnet18(x).argmax(1).tolist()
    # the metric form gives the cascade's last step
    clear_cache()
    score = model_randomisation_score(resnet18, x, report.targets, "grad-cam", layer="layer4", blocks=R18_COARSE)
    s = report.scores["grad-cam"]["cascade"]
    expect = torch.maximum(torch.nan_to_num(s["spearman"][-1]), torch.nan_to_num(s["spearman_abs"][-1]))
    np.testing.assert_allclose(score.numpy(), expect.numpy(), atol=1e-6)
    clear_cache()
    assert_untouched(resnet18, before)
    json.dumps(report.to_json())


@pytest.mark.slow
def test_grad_cam_passes_and_edge_map_fails_on_efficientnet_lite0(lite0, edge_method):
    """Real ImageNet weights, the default 9-block cascade (head, blocks.6 … blocks.0, stem), chelsea and coffee."""
    x = _photos(lite0)
    before = snapshot(lite0)
    report = run_sanity(lite0, x, ["grad-cam", edge_method], modes=("cascade",), seed=0)
    assert_untouched(lite0, before)
    v = report.verdicts()
    assert report.layers["grad-cam"] == "bn2"
    assert v["grad-cam"]["cascade"]["verdict"] == "passes", v["grad-cam"]
    assert v[edge_method]["cascade"]["verdict"] == "fails"


def test_verdict_rule_and_constant_maps():
    rho = torch.tensor([0.9, float("nan"), 0.1])
    rho_abs = torch.tensor([0.2, float("nan"), 0.3])
    v = verdict(rho, rho_abs, torch.tensor([False, False, True]), threshold=0.5)
    assert v["verdict"] == "passes" and v["statistic"] == pytest.approx(0.45) and v["n_excluded"] == 1
    assert v["per_image"] == [pytest.approx(0.9), 0.0, None]           # a constant randomised map counts as ρ = 0
    assert verdict(rho, rho_abs, torch.tensor([False, False, True]), threshold=0.4)["verdict"] == "fails"
    assert verdict(rho, rho_abs, torch.tensor([True, True, True]))["verdict"] == "undetermined"
    assert verdict(torch.tensor([0.1]), torch.tensor([0.2]), torch.tensor([False]))["verdict"] == "passes"


def test_data_randomisation_and_bad_input():
    import torchvision

    from cnnlens.data.synthetic import resnet_like
    from cnnlens.errors import InputError
    torch.manual_seed(0)
    resnet18 = resnet_like().eval()
    torch.manual_seed(1)
    twin = resnet_like().eval()
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    report = run_sanity(resnet18, x, ["grad-cam"], modes=("data",), random_label_model=twin)
    assert report.steps == {"data": ["random labels"]}
    _check_verdict_against_scipy(report, resnet18, twin, x, "grad-cam")
    with pytest.raises(InputError, match="random_label_model"):
        run_sanity(resnet18, x, ["grad-cam"], modes=("data",))
    with pytest.raises(InputError, match="architecture"):
        run_sanity(resnet18, x, ["grad-cam"], modes=("data",), random_label_model=torchvision.models.resnet18())
    with pytest.raises(InputError, match="unknown sanity mode"):
        run_sanity(resnet18, x, ["grad-cam"], modes=("shuffle",))


def _check_verdict_against_scipy(report, model, twin, x, method):
    """The data test's verdict is what its statistic says, and the statistic is mean max(ρ, ρ_abs) of the two maps,
    recomputed here with scipy's Spearman from the trained and the twin's own maps."""
    import cnnlens
    from scipy.stats import spearmanr

    from cnnlens.sanity.similarity import comparison_maps
    size = tuple(x.shape[-2:])
    layer = report.layers[method]
    a = cnnlens.explain(model, x, method, layer=layer)
    b = cnnlens.explain(twin, x, method, target=a.target, layer=layer)
    ma, mb = comparison_maps(a.raw, size).flatten(1).double(), comparison_maps(b.raw, size).flatten(1).double()
    per = []
    for i in range(x.shape[0]):
        if float(mb[i].max()) == float(mb[i].min()):
            per.append(0.0)                                   # a constant randomised map counts as ρ = 0
            continue
        rho = spearmanr(ma[i].numpy(), mb[i].numpy()).statistic
        rho_abs = spearmanr(ma[i].abs().numpy(), mb[i].abs().numpy()).statistic
        per.append(max(rho, rho_abs))
    want = float(np.mean(per))
    v = report.verdicts()[method]["data"]
    assert v["statistic"] == pytest.approx(want, abs=1e-5)
    assert v["verdict"] == ("passes" if want < report.threshold else "fails")
    return v


def test_data_randomisation_verdicts_are_known(edge_method):
    """Cases whose verdict is known: a twin identical to the model (every map survives: fails, statistic 1), a twin
    whose classifier is zeroed (Grad-CAM's gradients vanish, its map is constant: passes, statistic 0) — the edge map,
    which ignores the model, fails both —, and a twin of another random init, checked against scipy."""
    import copy

    from cnnlens.data.synthetic import resnet_like
    torch.manual_seed(0)
    model = resnet_like().eval()
    x = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    same = copy.deepcopy(model)
    v = run_sanity(model, x, ["grad-cam", edge_method], modes=("data",), random_label_model=same).verdicts()
    for m in ("grad-cam", edge_method):
        assert v[m]["data"]["verdict"] == "fails" and v[m]["data"]["statistic"] == pytest.approx(1.0), (m, v[m])
    dead = copy.deepcopy(model)
    head = [m for m in dead.modules() if isinstance(m, torch.nn.Linear)][-1]
    with torch.no_grad():
        head.weight.zero_()
        head.bias.zero_()
    with pytest.warns(RuntimeWarning, match="gradient of the target score is zero"):
        report = run_sanity(model, x, ["grad-cam", edge_method], modes=("data",), random_label_model=dead)
    v = report.verdicts()
    assert v["grad-cam"]["data"]["verdict"] == "passes" and v["grad-cam"]["data"]["statistic"] == 0.0
    assert v[edge_method]["data"]["verdict"] == "fails" and v[edge_method]["data"]["statistic"] == pytest.approx(1.0)
    _check_verdict_against_scipy(report, model, dead, x, "grad-cam")
    torch.manual_seed(7)
    other = resnet_like().eval()
    report = run_sanity(model, x, ["grad-cam"], modes=("data",), random_label_model=other)
    _check_verdict_against_scipy(report, model, other, x, "grad-cam")


def test_synthetic_random_label_twin_has_its_own_cache_key(tmp_path):
    from cnnlens.data.synthetic import TrainConfig, synthetic_model
    plain = TrainConfig(arch="vgg")
    assert "permuted" not in plain.key
    assert TrainConfig(arch="vgg", label_permutation_seed=0).key != plain.key
    twin = synthetic_model("vgg", cache=tmp_path, label_permutation_seed=0, n_train=50, epochs=1, size=32)
    files = sorted(p.name for p in (tmp_path / "synthetic").iterdir())
    assert any("permuted0" in f for f in files)
    report = json.loads(next((tmp_path / "synthetic").glob("*.json")).read_text())
    assert report["config"]["label_permutation_seed"] == 0 and "train_accuracy" in report
    assert twin.cnnlens_meta.name == "synthetic-vgg-random-labels"


# ---------------------------------------------------------------------------------------------- CLI
def _cli(*args):
    from cnnlens.cli import main
    return CliRunner().invoke(main, list(args))


def test_cli_sanity_happy_path(tmp_path):
    out = tmp_path / "out"
    blocks = ["conv1+bn1+layer1+layer2+layer3", "layer4+fc"]
    res = _cli("sanity", "chelsea", "--model", "resnet18", "--weights", "random", "--methods",
               "grad-cam,lrp@epsilon-plus", "--blocks", ",".join(blocks), "--quiet", "--out", str(out))
    assert res.exit_code == 0, res.output
    assert "grad-cam" in res.output and "cascade" in res.output
    data = json.loads((out / "sanity.json").read_text())
    assert [m["label"] for m in data["methods"]] == ["grad-cam", "lrp@epsilon-plus"]
    assert data["methods"][1]["options"] == {"composite": "epsilon-plus"}
    assert data["steps"]["cascade"] == list(reversed(blocks))
    assert (out / "maps_cascade_chelsea.png").is_file() and (out / "similarity_cascade.png").is_file()
    md = (out / "summary.md").read_text()
    assert "| `grad-cam` | layer4 |" in md
    # the command is recorded whatever the entry point (here click's runner: sys.argv is pytest's), and the random
    # init of a zoo model (--weights random) is stated in both files, not only on stderr
    command = ("cnnlens sanity chelsea --model resnet18 --weights random --methods grad-cam,lrp@epsilon-plus "
               f"--blocks {','.join(blocks)} --out {out} --quiet")
    assert data["command"] == command and f"```\n{command}\n```" in md
    assert data["weights"] == "random init — verdicts describe an untrained model"
    assert "**Weights: random init — verdicts describe an untrained model.**" in md


@pytest.mark.parametrize("args, message", [
    (["missing.png", "--methods", "grad-cam"], "missing.png"),
    (["chelsea", "--methods", "grad-cam,nope"], "unknown method"),
    (["chelsea", "--methods", "grad-cam", "--mode", "data"], "--random-label-weights"),
    (["chelsea", "--methods", "grad-cam", "--blocks", "conv1,nope"], "no such module"),
    (["chelsea", "--methods", "grad-cam@dtd"], "takes no composite"),
    (["chelsea", "--methods", "grad-cam", "--option", "n_masks=3"], "none of the listed methods"),
])
def test_cli_sanity_bad_input(tmp_path, args, message):
    out = tmp_path / "out"
    res = _cli("sanity", *args, "--model", "resnet18", "--weights", "random", "--quiet", "--out", str(out))
    assert res.exit_code == 2, res.output
    assert message in res.output and "Traceback" not in res.output
    assert not out.exists()


def test_cli_sanity_random_label_weights(tmp_path):
    """A user's twin: a state dict of the same architecture (here another random init), and one that does not fit."""
    import torchvision
    torch.manual_seed(5)
    twin = tmp_path / "twin.pth"
    torch.save(torchvision.models.resnet18().state_dict(), twin)
    out = tmp_path / "out"
    res = _cli("sanity", "chelsea", "--model", "resnet18", "--weights", "random", "--mode", "data",
               "--random-label-weights", str(twin),
               "--methods", "grad-cam", "--quiet", "--out", str(out))
    assert res.exit_code == 0, res.output
    data = json.loads((out / "sanity.json").read_text())
    assert data["steps"] == {"data": ["random labels"]} and "data" in data["methods"][0]["verdict"]
    assert "random-label twin" in (out / "summary.md").read_text()
    bad = tmp_path / "bad.pth"
    torch.save({"fc.weight": torch.zeros(3, 3)}, bad)
    res = _cli("sanity", "chelsea", "--model", "resnet18", "--weights", "random", "--mode", "data",
               "--random-label-weights", str(bad),
               "--methods", "grad-cam", "--quiet", "--out", str(tmp_path / "out2"))
    assert res.exit_code == 2 and "do not fit" in res.output
    assert not (tmp_path / "out2").exists()


# ---------------------------------------------------------------------------------------------- evaluate metric
def test_evaluate_model_randomisation_metric(tmp_path):
    """``cnnlens evaluate --metrics model-randomisation``: the value is the direct function call's (Grad-CAM and RISE,
    whose masks follow the block's seed), the table says ↓, resume keeps it, the cache is dropped, "all" leaves it
    out and the US spelling is accepted."""
    import cnnlens
    from torch import nn
    from cnnlens.data.synthetic import SHAPES, SyntheticMeta, SyntheticScenes
    from cnnlens.evaluation import EvalConfig, evaluate
    from cnnlens.metrics import resolve_metrics
    from cnnlens.sanity import metric as sanity_metric

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(6, 8, 3, padding=1),
                          nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))
    model.cnnlens_meta = SyntheticMeta("tiny-vgg", tuple(SHAPES[:4]), input_size=(3, 32, 32))
    model.eval()
    before = snapshot(model)
    data = SyntheticScenes(4, size=32)
    cfg = EvalConfig(batch_size=4, step=64, target="predicted")
    opts = {"rise": {"n_masks": 16}}
    res = evaluate(model, data, ["grad-cam", "rise"], "model-randomization,bbox", out=tmp_path, config=cfg,
                   method_options=opts, progress=False, plots=False)
    assert_untouched(model, before)
    assert sanity_metric._CACHE == {}
    assert res.metrics == ["model-randomisation", "bbox"]
    x = torch.stack([data[i].image for i in range(4)])
    t = model(x).argmax(1)
    got = {(r["method"], r["sample"]): r["metrics"]["model-randomisation"] for r in res.records}
    for method in ("grad-cam", "rise"):
        with torch.random.fork_rng():
            torch.manual_seed(cfg.seed)                               # block 0's seed, as the runner
            e = cnnlens.explain(model, x, method, target=t, **opts.get(method, {}))
            layer = None if method == "rise" else e.layer
            want = model_randomisation_score(model, x, t, method, layer=layer, options=opts.get(method),
                                             original_raw=e.raw)
        clear_cache()
        for i in range(4):
            v = got[(method, data[i].id)]
            if math.isnan(float(want[i])):
                assert v is None
            else:
                assert v == pytest.approx(float(want[i]), abs=1e-6), (method, i)
    assert any(v is not None and v > 0.2 for v in got.values())
    md = (tmp_path / "summary.md").read_text()
    assert "model-randomisation ↓" in md
    row = next(r for r in res.summary if r["method"] == "grad-cam")
    assert f"{row['model-randomisation']['mean']:.4f} ±" in md.split("grad-cam", 1)[1]
    # resume: a cut-short results file is completed with the same values
    lines = (tmp_path / "results.jsonl").read_text().splitlines(keepends=True)
    (tmp_path / "results.jsonl").write_text("".join(lines[:4]))
    again = evaluate(model, data, ["grad-cam", "rise"], "model-randomisation,bbox", out=tmp_path, config=cfg,
                     method_options=opts, progress=False, plots=False)
    strip = lambda recs: [{k: v for k, v in r.items() if k != "seconds"} for r in recs]   # noqa: E731
    assert strip(again.records) == strip(res.records)
    assert "model-randomisation" not in [s.name for s in resolve_metrics("all")]
    assert resolve_metrics("model-randomization")[0].header == "model-randomisation ↓"
    assert [s.name for s in resolve_metrics("all,model-randomisation")][-1] == "model-randomisation"


def test_cli_sanity_independent_summary(tmp_path):
    """--mode independent: summary.md has the per-block table of mean max(ρ, ρ_abs), equal to sanity.json's scores."""
    out = tmp_path / "out"
    blocks = ["conv1+bn1+layer1+layer2+layer3", "layer4+fc"]
    res = _cli("sanity", "chelsea", "--model", "resnet18", "--weights", "random", "--methods", "grad-cam",
               "--mode", "independent",
               "--blocks", ",".join(blocks), "--quiet", "--out", str(out))
    assert res.exit_code == 0, res.output
    md = (out / "summary.md").read_text()
    assert "**independent randomisation**" in md and "| `layer4+fc` | `conv1+bn1+layer1+layer2+layer3` |" in md
    row = next(line for line in md.splitlines() if line.startswith("| `grad-cam` |"))
    data = json.loads((out / "sanity.json").read_text())
    s = data["methods"][0]["scores"]["independent"]
    for k, cell in enumerate(row.strip("| ").split(" | ")[1:]):
        want = max(0.0 if s["spearman"][k][0] is None else s["spearman"][k][0],
                   0.0 if s["spearman_abs"][k][0] is None else s["spearman_abs"][k][0])
        assert cell == f"{want:.2f}"
    assert "chelsea → " in md
