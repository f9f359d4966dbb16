"""The CLI: outputs, one-line errors with exit code 2, no traceback, no partial output."""
from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch
import torchvision
from click.testing import CliRunner
from PIL import Image

from cnnlens.cli import main


def run(*args):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def _assert_one_line_error(res, pattern):
    assert res.exit_code == 2, res.output
    err = res.stderr if hasattr(res, "stderr") else res.output
    lines = [l for l in err.strip().splitlines() if l.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err and pattern in lines[0], err


@pytest.fixture
def r18_weights(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "r18.pth"
    torch.save(torchvision.models.resnet18().state_dict(), path)
    return path


def test_explain_writes_png_and_json(tmp_path):
    out = tmp_path / "out"
    res = run("explain", "chelsea", "coffee", "--model", "efficientnet_lite0", "--method", "grad-cam",
              "--out", str(out))
    assert res.exit_code == 0, res.output
    data = json.loads((out / "explanations.json").read_text())
    assert [d["target"] for d in data][1] == 967 and data[1]["target_name"] == "espresso"
    assert data[0]["layer"] == "bn2" and 0 < data[1]["score"] <= 1
    for d in data:
        assert (out / d["figure"]).stat().st_size > 1000
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temp files left


def test_explain_with_target_name_and_layers(tmp_path):
    out = tmp_path / "o"
    res = run("explain", "chelsea", "--model", "efficientnet_lite0", "--target", "espresso", "--layer", "blocks.4",
              "--layer", "bn2", "--option", "relu=false", "--out", str(out))
    assert res.exit_code == 0, res.output
    d = json.loads((out / "explanations.json").read_text())[0]
    assert d["target"] == 967 and d["layer"] == ["blocks.4", "bn2"] and d["options"] == {"relu": False}


def test_explain_several_methods_shared_options_and_composites(tmp_path):
    """--method/--methods repeated and comma-separated, a shared option for the methods that have it, METHOD:KEY for
    one, NAME@COMPOSITE and --composite for the rest (issue 21, item 10); comma and repeated --layer alike."""
    out = tmp_path / "o"
    res = run("explain", "chelsea", "--model", "efficientnet_lite0", "--methods", "grad-cam,grad-cam++",
              "--method", "layer-cam", "--layer", "blocks.4,bn2", "--option", "relu=false",
              "--option", "layer-cam:gamma=2", "--out", str(out))
    assert res.exit_code == 0, res.output
    recs = json.loads((out / "explanations.json").read_text())
    assert [r["method"] for r in recs] == ["grad-cam", "grad-cam++", "layer-cam"]
    assert all(r["layer"] == ["blocks.4", "bn2"] for r in recs)
    assert [r["options"] for r in recs] == [{"relu": False}, {"relu": False}, {"relu": False, "gamma": 2}]
    assert sorted(p.name for p in out.glob("*.png")) == ["chelsea_grad-cam++.png", "chelsea_grad-cam.png",
                                                          "chelsea_layer-cam.png"]
    out = tmp_path / "lrp"
    res = run("explain", "chelsea", "--model", "efficientnet_lite0", "--methods", "lrp@epsilon-plus,sglrp",
              "--composite", "dtd", "--out", str(out))
    assert res.exit_code == 0, res.output
    recs = json.loads((out / "explanations.json").read_text())
    assert [(r["method"], r["options"]) for r in recs] == [("lrp@epsilon-plus", {"composite": "epsilon-plus"}),
                                                           ("sglrp", {"composite": "dtd"})]
    import cnnlens
    model = cnnlens.load_model("efficientnet_lite0")
    x = cnnlens.load_image("chelsea", model)
    a = cnnlens.explain(model, x, "lrp@epsilon-plus")
    b = cnnlens.explain(model, x, "lrp", composite="epsilon-plus")
    assert torch.equal(a.raw, b.raw)


@pytest.mark.parametrize("args, pattern", [
    (["explain", "missing.png", "--model", "resnet18"], "not found"),
    (["explain", "chelsea", "--model", "resnet5O"], "unknown model"),
    (["explain", "chelsea", "--model", "resnet18", "--method", "gradcam"], "unknown method"),
    (["explain", "chelsea", "--model", "resnet18", "--weights", "random", "--layer", "layer9"], "no layer"),
    (["explain", "chelsea", "--model", "resnet18", "--weights", "random", "--target", "1000"], "out of range"),
    (["explain", "chelsea", "--model", "efficientnet_lite0", "--target", "espreso"], "unknown class name"),
    (["explain", "chelsea", "--model", "resnet18", "--option", "nokey"], "KEY=VALUE"),
    (["explain", "chelsea", "--model", "resnet18", "--device", "cuda:7"], "device"),
    (["layers", "--model", "nonet"], "unknown model"),
])
def test_cli_errors_are_one_line_exit_2_no_output(tmp_path, args, pattern):
    out = tmp_path / "out"
    res = run(*args, "--out", str(out)) if args[0] == "explain" else run(*args)
    _assert_one_line_error(res, pattern)
    assert not out.exists()


def test_cli_bad_files_leave_no_partial_output(tmp_path, r18_weights):
    out = tmp_path / "out"
    (tmp_path / "notes.txt").write_text("not an image")
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(tmp_path / "ok.png")
    jpg = tmp_path / "full.jpg"
    Image.fromarray(np.zeros((64, 64, 3), np.uint8) + 80).save(jpg)
    (tmp_path / "cut.jpg").write_bytes(jpg.read_bytes()[:300])
    for bad in ("notes.txt", "cut.jpg"):
        res = run("explain", str(tmp_path / "ok.png"), str(tmp_path / bad), "--model", "resnet18", "--weights",
                  str(r18_weights), "--out", str(out))
        _assert_one_line_error(res, bad)
        assert not out.exists()
    evil = tmp_path / "evil.pth"
    with open(evil, "wb") as fh:
        pickle.dump({"w": _Evil()}, fh)
    res = run("explain", "chelsea", "--model", "resnet18", "--weights", str(evil), "--out", str(out))
    _assert_one_line_error(res, "refused")
    assert not (tmp_path / "EVIL").exists() and not out.exists()
    res = run("explain", "chelsea", "--model", "vgg11", "--weights", str(r18_weights), "--out", str(out))
    _assert_one_line_error(res, "do not fit")


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch EVIL",))


def test_layers_and_methods_commands():
    res = run("layers", "--model", "efficientnet_lite0")
    assert res.exit_code == 0 and "*BS   bn2" in res.output   # default, block and stage layer
    res = run("methods")
    assert res.exit_code == 0 and "grad-cam" in res.output


def test_console_script_help_and_error_subprocess(tmp_path):
    exe = [sys.executable, "-m", "cnnlens.cli"] if False else [sys.executable, "-c",
                                                                "from cnnlens.cli import main; main()"]
    res = subprocess.run(exe + ["--help"], capture_output=True, text=True)
    assert res.returncode == 0 and "Examples" in res.stdout
    res = subprocess.run(exe + ["explain", "nope.png", "--model", "resnet18", "--out", str(tmp_path / "o")],
                         capture_output=True, text=True)
    assert res.returncode == 2 and res.stderr.strip().count("\n") == 0 and "Traceback" not in res.stderr


@pytest.mark.slow
def test_demo_runs(tmp_path):
    res = run("demo", "--out", str(tmp_path / "demo"))
    assert res.exit_code == 0, res.output
    assert "espresso" in res.output
    assert (tmp_path / "demo" / "methods_x_images.png").exists()


def test_sweep_writes_grid(tmp_path):
    res = run("sweep", "coffee", "--model", "efficientnet_lite0", "--methods", "grad-cam", "--layers",
              "blocks.2,bn2", "--out", str(tmp_path))
    assert res.exit_code == 0, res.output
    data = json.loads((tmp_path / "sweep_coffee.json").read_text())
    assert data["layers"] == ["blocks.2", "bn2"] and data["target"] == 967
    assert (tmp_path / "sweep_coffee.png").exists()
