"""``cnnlens.evaluation.evaluate`` and ``cnnlens evaluate``: tables, resumption (also after SIGKILL), bad input."""
from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from cnnlens.data.synthetic import SHAPES, SyntheticMeta, SyntheticScenes, TrainConfig, vgg_like
from cnnlens.errors import CnnlensError
from cnnlens.evaluation import EvalConfig, ResumeError, evaluate

SRC = str(Path(__file__).resolve().parents[1] / "src")
FAST = EvalConfig(batch_size=3, step=64)


def _model(size=32, seed=0):
    torch.manual_seed(seed)
    m = vgg_like(4, widths=(4, 8))
    m.cnnlens_meta = SyntheticMeta("tiny-vgg", tuple(SHAPES[:4]), input_size=(3, size, size))
    return m.eval()


def _strip(records):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in records]


def test_evaluate_writes_tables_and_plots(tmp_path):
    model = _model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    data = SyntheticScenes(5, size=32)
    res = evaluate(model, data, "grad-cam", "all", layers="features.1,features.4", out=tmp_path, config=FAST,
                   progress=False)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not model.training
    assert {(r["method"], r["layer"]) for r in res.summary} == {("grad-cam", "features.1"), ("grad-cam", "features.4")}
    for row in res.summary:
        assert row["n"] == 5
        for name in ("average-drop", "deletion", "insertion", "energy-pointing-game", "bbox", "iou"):
            assert math.isfinite(row[name]["mean"]), name
        assert 0 <= row["deletion"]["mean"] <= 1 and 0 <= row["bbox"]["mean"] <= 100
    for f in ("results.jsonl", "summary.md", "summary.csv", "summary.json", "bar_deletion.png",
              "curves_insertion.png", "run.json"):
        assert (tmp_path / f).is_file(), f
    md = (tmp_path / "summary.md").read_text()
    assert "deletion ↓" in md and "insertion ↑" in md and "## By layer" in md and "rule frac_max" in md
    lines = (tmp_path / "results.jsonl").read_text().splitlines()
    assert len(lines) == 10 and len(json.loads(lines[0])["curves"]["deletion"]) == 17   # ⌈1024/64⌉ + 1
    assert not list(tmp_path.glob(".*tmp*"))                                           # atomic writes cleaned up


def test_per_image_values_match_the_metric_functions(tmp_path):
    import cnnlens
    from cnnlens import metrics as M
    model = _model()
    data = SyntheticScenes(3, size=32)
    res = evaluate(model, data, "grad-cam", "average-drop,bbox,deletion", out=None, config=FAST, progress=False)
    x = torch.stack([data[i].image for i in range(3)])
    t = torch.tensor([data[i].targets[0] for i in range(3)])
    e = cnnlens.explain(model, x, "grad-cam", target=t)
    y, o = M.confidence_pair(model, x, e.heatmap, t, mean=(0.5,) * 3, std=(0.25,) * 3)
    g = torch.stack([M.boxes_mask(data[i].class_boxes(int(t[i])), (32, 32)) for i in range(3)])
    bbox = 100 * M.bbox_score(M.saliency(e.heatmap, (32, 32)), g)
    dele = M.auc(M.perturbation_curves(model, x, e.heatmap, t, step=64))
    by_sample = {r["sample"]: r["metrics"] for r in res.records}
    for i in range(3):
        got = by_sample[data[i].id]
        assert got["average-drop"] == pytest.approx(M.average_drop(y, o)[i].item(), abs=1e-4)
        assert got["bbox"] == pytest.approx(bbox[i].item(), abs=1e-4)
        assert got["deletion"] == pytest.approx(dele[i].item(), abs=1e-5)


def test_resume_recomputes_only_unfinished_blocks(tmp_path):
    model = _model()
    data = SyntheticScenes(7, size=32)
    full = evaluate(model, data, "grad-cam", "average-drop,increase,deletion,pointing-game", out=tmp_path / "full",
                    config=FAST, progress=False, plots=False)
    out = tmp_path / "cut"
    evaluate(model, data, "grad-cam", "average-drop,increase,deletion,pointing-game", out=out, config=FAST,
             progress=False, plots=False)
    lines = (out / "results.jsonl").read_text().splitlines(keepends=True)
    assert len(lines) == 7                                      # blocks of 3, 3, 1 images
    # keep block 0, half of block 1 and a torn line: block 1 and block 2 must be recomputed, block 0 kept as is
    (out / "results.jsonl").write_text("".join(lines[:4]) + lines[4][: len(lines[4]) // 2])
    first = lines[0]
    res = evaluate(model, data, "grad-cam", "average-drop,increase,deletion,pointing-game", out=out, config=FAST,
                   progress=False, plots=False)
    after = (out / "results.jsonl").read_text().splitlines(keepends=True)
    assert after[0] == first and len(after) == 7
    assert _strip(res.records) == _strip(full.records)
    assert res.summary[0]["deletion"] == full.summary[0]["deletion"]
    # a further re-run computes nothing new
    again = evaluate(model, data, "grad-cam", "average-drop,increase,deletion,pointing-game", out=out,
                     config=FAST, progress=False, plots=False)
    assert (out / "results.jsonl").read_text().splitlines(keepends=True) == after
    assert _strip(again.records) == _strip(full.records)


def test_resume_refuses_other_settings(tmp_path):
    model = _model()
    data = SyntheticScenes(2, size=32)
    evaluate(model, data, "grad-cam", "bbox", out=tmp_path, config=FAST, progress=False, plots=False)
    with pytest.raises(ResumeError, match=r"different settings \(step 64 → 32\); use another --out folder, or "
                                          r"--overwrite to replace them"):
        evaluate(model, data, "grad-cam", "bbox", out=tmp_path, config=EvalConfig(batch_size=3, step=32),
                 progress=False, plots=False)


def test_evaluate_bad_input(tmp_path):
    model = _model()
    data = SyntheticScenes(2, size=32)
    with pytest.raises(CnnlensError, match="unknown metric 'boxx'"):
        evaluate(model, data, "grad-cam", "boxx", progress=False)
    with pytest.raises(CnnlensError, match="unknown method"):
        evaluate(model, data, "grad-camm", "bbox", progress=False)
    with pytest.raises(CnnlensError, match="empty dataset"):
        evaluate(model, [], "grad-cam", "bbox", progress=False)
    with pytest.raises(CnnlensError, match="mask_space"):
        evaluate(model, data, "grad-cam", "bbox", config=EvalConfig(mask_space="nope"), progress=False)
    model3 = _model()
    model3.classifier[0] = torch.nn.Linear(8, 2)                   # the model lacks classes 2 and 3
    data3 = [s for s in (SyntheticScenes(12, size=32)[i] for i in range(12)) if s.targets[0] >= 2][:2]

    class _List(list):
        def describe(self):
            return {"name": "list"}
    with pytest.raises(CnnlensError, match="not one of the model's 2 classes"):
        evaluate(model3, _List(data3), "grad-cam", "bbox", progress=False)


# ------------------------------------------------------------------------------------------------ CLI
def _cli_env(cache: Path) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = SRC + os.pathsep + env.get("PYTHONPATH", "")
    env["CNNLENS_CACHE"] = str(cache)
    return env


def _seed_cache(cache: Path) -> None:
    """Put untrained weights where ``--model synthetic-vgg`` looks, so the CLI does not train."""
    path = cache / "synthetic" / f"{TrainConfig(arch='vgg').key}.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    torch.save(vgg_like(4).state_dict(), path)


def _cli(args, cache, **kw):
    return subprocess.Popen([sys.executable, "-c", "from cnnlens.cli import main; main()", "evaluate", *args],
                            env=_cli_env(cache), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


ARGS = ["--model", "synthetic-vgg", "--data", "synthetic", "--n-images", "8", "--batch-size", "2", "--methods",
        "grad-cam", "--metrics", "average-drop,increase,deletion,insertion,pointing-game,bbox", "--step", "128",
        "--tolerance", "4", "--no-plots", "--quiet"]


def _rows(out: Path):
    rows = json.loads((out / "summary.json").read_text())["rows"]
    for r in rows:
        r.pop("seconds")
    return rows


def _run_in_process(args, cache, monkeypatch):
    from click.testing import CliRunner

    from cnnlens.cli import main
    monkeypatch.setenv("CNNLENS_CACHE", str(cache))
    return CliRunner().invoke(main, ["evaluate", *args])


def test_cli_sigkill_and_resume_gives_the_same_table(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    _seed_cache(cache)
    ref = _run_in_process(ARGS + ["--out", str(tmp_path / "ref")], cache, monkeypatch)
    assert ref.exit_code == 0, ref.output
    out = tmp_path / "killed"
    proc = _cli(ARGS + ["--out", str(out)], cache)
    results = out / "results.jsonl"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if results.is_file() and results.stat().st_size > 0:
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    n_before = len(results.read_text().splitlines())
    assert 0 < n_before < 8                                       # killed mid-run
    again = _cli(ARGS + ["--out", str(out)], cache)
    stdout, err = again.communicate(timeout=300)
    assert again.returncode == 0, err
    assert "| grad-cam |" in stdout and "deletion ↓" in stdout
    assert _rows(out) == _rows(tmp_path / "ref")
    recs = [json.loads(x) for x in results.read_text().splitlines()]
    assert len(recs) == 8 and len({r["sample"] for r in recs}) == 8


@pytest.mark.parametrize("extra, message", [
    (["--data", "nothing"], "must be 'synthetic', 'collage' or an existing"),
    (["--data", "EMPTY", "--label-file", "LABELS"], "empty dataset"),
    (["--data", "synthetic", "--metrics", "pointing"], "unknown metric"),
    (["--data", "synthetic", "--n-images", "0"], "empty dataset"),
    (["--data", "synthetic", "--option", "grad-cam:nope=1"], "has no option 'nope'"),
    (["--data", "synthetic", "--layer", "features.99"], "features.99"),
    (["--data", "synthetic", "--workers", "-1"], "--workers must be 0 or more"),
    (["--data", "synthetic", "--save-maps", "-2"], "--save-maps must be 0 or more"),
    (["--data", "synthetic", "--batch-size", "0"], "--batch-size must be at least 1"),
    (["--data", "synthetic", "--format", "parquet"], "--format must be one of"),
])
def test_cli_errors_are_one_line(tmp_path, monkeypatch, extra, message):
    cache = tmp_path / "cache"
    _seed_cache(cache)
    (tmp_path / "empty").mkdir()
    (tmp_path / "labels.txt").write_text("\n".join(SHAPES[:4]))
    extra = [str(tmp_path / "empty") if a == "EMPTY" else str(tmp_path / "labels.txt") if a == "LABELS" else
             str(tmp_path / a) if a == "nothing" else a for a in extra]
    res = _run_in_process(["--model", "synthetic-vgg", "--methods", "grad-cam", "--out", str(tmp_path / "o"),
                           "--quiet", "--n-images", "2", *extra], cache, monkeypatch)
    assert res.exit_code == 2, res.output
    assert message in res.stderr and "Traceback" not in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()                                   # nothing written


def test_cli_skip_missing_methods(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    _seed_cache(cache)
    res = _run_in_process(["--model", "synthetic-vgg", "--data", "synthetic", "--n-images", "2", "--methods",
                           "grad-cam,no-such-method", "--metrics", "bbox", "--skip-missing", "--no-plots", "--quiet",
                           "--out", str(tmp_path / "o")], cache, monkeypatch)
    assert res.exit_code == 0, res.output
    assert "skipping methods not available here: no-such-method" in res.stderr
    assert "| grad-cam |" in res.stdout


@pytest.mark.slow
def test_collage_grad_cam_points_at_the_explained_photo():
    """Real EfficientNet-Lite0 weights: Grad-CAM of a photo's class puts more energy in that photo's box than in the
    other photo's box (class discrimination on two-object images)."""
    import warnings

    import cnnlens
    from cnnlens import metrics as M
    from cnnlens.data.collage import Collages
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = cnnlens.load_model("efficientnet_lite0")
    data = Collages(model, n=8)
    own, other = [], []
    for i in range(len(data)):
        s = data[i]
        for (c, *box), (c2, *box2) in (s.boxes, s.boxes[::-1]):
            e = cnnlens.explain(model, s.image[None], "grad-cam", target=c)
            sal = M.saliency(e.heatmap, s.size)
            own.append(M.energy_pointing_game(sal, M.boxes_mask([box], s.size)[None]).item())
            other.append(M.energy_pointing_game(sal, M.boxes_mask([box2], s.size)[None]).item())
    wins = sum(a > b for a, b in zip(own, other))
    assert wins >= 0.75 * len(own), (own, other)
    assert sum(own) / len(own) > 0.45


# ------------------------------------------------------------------------------------------------ sample contract
class _Wrapped:
    """SyntheticScenes seen through a transform of each Sample (a dataset adapter in miniature)."""

    def __init__(self, base, fn, describe=None, **attrs):
        self.base, self.fn, self._describe = base, fn, describe or {}
        self.class_names = base.class_names
        for k, v in attrs.items():
            setattr(self, k, v)

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        return self.fn(self.base[i])

    def describe(self):
        return {**self.base.describe(), **self._describe}


def _no_boxes(s):
    s.boxes, s.targets, s.has_boxes = [], [], False
    return s


def test_dataset_without_boxes_reports_box_metrics_as_na(tmp_path):
    model = _model()
    data = _Wrapped(SyntheticScenes(4, size=32), _no_boxes, {"name": "folder", "skipped": 3}, has_labels=False)
    with pytest.raises(CnnlensError, match="no labels: use --target predicted"):
        evaluate(model, data, "grad-cam", "deletion,bbox", out=tmp_path / "x", config=FAST, progress=False)
    assert not (tmp_path / "x").exists()
    res = evaluate(model, data, "grad-cam", "average-drop,deletion,pointing-game,bbox,iou", out=tmp_path,
                   config=EvalConfig(batch_size=3, step=64, target="predicted"), progress=False)
    row = res.summary[0]
    assert row["bbox"]["na"] == "no boxes" and row["pointing-game"]["na"] == "no boxes"
    assert math.isfinite(row["deletion"]["mean"]) and "na" not in row["deletion"]
    md = (tmp_path / "summary.md").read_text()
    assert md.count("n/a (no boxes)") >= 3 and "Skipped images: 3." in md
    assert "n/a (no boxes)" in (tmp_path / "summary.csv").read_text()
    js = json.loads((tmp_path / "summary.json").read_text())
    assert js["rows"][0]["iou"] == {"mean": None, "se": None, "n": 0, "na": "no boxes"} and js["skipped"] == 3
    rec = json.loads((tmp_path / "results.jsonl").read_text().splitlines()[0])
    assert rec["metrics"]["bbox"] is None and rec["na"]["bbox"] == "no boxes" and rec["label"] is None
    assert (tmp_path / "bar_deletion.png").is_file() and not (tmp_path / "bar_bbox.png").exists()
    assert res.skipped == 3


def test_class_map_target_is_the_best_candidate_and_boxes_are_the_keys(tmp_path):
    """A dataset class (key 7) standing for model classes {0, 2}: the target is the model's higher-scoring of the
    two on the original image, the boxes are key 7's, the record keeps both."""
    import cnnlens
    from cnnlens import metrics as M
    model = _model()
    base = SyntheticScenes(5, size=32)

    def mapped(s):
        main = s.boxes[0]
        s.boxes = [(7, *main[1:])] + [b for b in s.boxes[1:]]
        s.targets, s.candidates = [7], {7: (0, 2)}
        return s
    data = _Wrapped(base, mapped, label_names=["k%d" % i for i in range(8)])
    res = evaluate(model, data, "grad-cam", "bbox", config=FAST, progress=False)
    x = torch.stack([base[i].image for i in range(5)])
    with torch.no_grad():
        logits = model(x)
    want = torch.tensor([0, 2])[logits[:, [0, 2]].argmax(1)]
    e = cnnlens.explain(model, x, "grad-cam", target=want)
    by = {r["sample"]: r for r in res.records}
    for i in range(5):
        s = base[i]
        r = by[s.id]
        assert r["target"] == int(want[i]) and r["target_name"] == SHAPES[int(want[i])]
        assert r["label"] == 7 and r["label_name"] == "k7"
        g = M.boxes_mask([s.boxes[0][1:]], s.size)[None]
        bbox = 100 * M.bbox_score(M.saliency(e.heatmap[i:i + 1], s.size), g)
        assert r["metrics"]["bbox"] == pytest.approx(bbox.item(), abs=1e-4)


def test_saved_maps_are_the_display_heatmaps(tmp_path):
    import cnnlens
    import numpy as np
    from PIL import Image
    model = _model(size=32)
    data = SyntheticScenes(4, size=32)
    res = evaluate(model, data, "grad-cam", "bbox", layers="features.1,features.4", out=tmp_path, config=FAST,
                   progress=False, plots=False, save_maps=3)
    with_maps = [r for r in res.records if "map" in r]
    assert len(with_maps) == 6 and {r["sample"] for r in with_maps} == {data[i].id for i in range(3)}
    s = data[1]
    r = next(r for r in with_maps if r["sample"] == s.id and r["layer"] == "features.4")
    e = cnnlens.explain(model, s.image[None], "grad-cam", target=r["target"], layer="features.4")
    png = np.asarray(Image.open(tmp_path / r["map"]))
    assert png.dtype == np.uint8 and png.shape == (32, 32)
    assert np.abs(png.astype(int) - (e.heatmap[0].numpy() * 255).round().astype(int)).max() <= 1
    img = Image.open(tmp_path / r["image"])
    assert img.mode == "RGB" and img.size == (32, 32)
    rgb = np.asarray(img).astype(float) / 255
    want = (s.image.permute(1, 2, 0).numpy() * 0.25 + 0.5).clip(0, 1)
    assert np.abs(rgb - want).mean() < 0.03                                  # JPEG of the denormalised input
    lines = [json.loads(x) for x in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert sum("map" in x for x in lines) == 6


def test_tables_order_layers_by_depth_then_naturally():
    from cnnlens.evaluation import layer_table, markdown_table, summarize_records
    from cnnlens.layer_order import layer_sort_key, natural_key
    from cnnlens.metrics import get_metric
    spec = get_metric("deletion")
    layers = ["head", "features.14", "input", "features.9", "features.2+features.14"]
    records = [{"method": "grad-cam", "layer": lay, "seconds": 0.1, "flags": {"constant_map": False},
                "metrics": {"deletion": 0.5}, "target": 0} for lay in layers]
    depth = {"features.2": 3, "features.9": 10, "features.14": 15, "head": 20}
    rows = summarize_records(records, [spec], depth)
    assert [r["layer"] for r in rows] == ["input", "features.9", "features.2+features.14", "features.14", "head"]
    assert markdown_table(rows, [spec]).index("`features.9`") < markdown_table(rows, [spec]).index("`features.14`")
    pivot = layer_table(rows, [spec], depth).splitlines()[0]
    assert pivot.index("features.9 ") < pivot.index("features.14 ") < pivot.index("head ")
    # unknown depth: natural order (numbers as numbers), "input" first; unknown layers after the known ones
    assert [r["layer"] for r in summarize_records(records, [spec])] == \
        ["input", "features.2+features.14", "features.9", "features.14", "head"]
    assert sorted(["b", "features.10", "features.9"], key=lambda s: layer_sort_key(s, {"b": 0})) == \
        ["b", "features.9", "features.10"]
    assert sorted(["x.10", "x.9", "input"], key=natural_key) == ["input", "x.9", "x.10"]


def test_skipped_line_only_when_something_was_skipped():
    from cnnlens.evaluation.tables import skipped_line
    assert skipped_line(0) is None and skipped_line(None) is None and skipped_line({}) is None
    assert skipped_line({"unreadable": 0, "too small": 0}) is None
    assert skipped_line({"unreadable": 2, "too small": 0}) == "Skipped images: 2 (unreadable: 2)."
    assert skipped_line(3) == "Skipped images: 3."
