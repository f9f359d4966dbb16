"""Layer discovery: the CAM default layer and the blocks' last layers match the specs' tables (README §3)."""
from __future__ import annotations

import pytest
import torchvision

from cnnlens.models.layers import block_layers, default_layer, trace_layers

EXPECTED = {
    "vgg11": ("features.19", ["features.1", "features.4", "features.9", "features.14", "features.19"]),
    "resnet18": ("layer4", ["relu", "layer1", "layer2", "layer3", "layer4"]),
    "alexnet": ("features.11", ["features.1", "features.4", "features.11"]),
    "mobilenet_v2": ("features", ["features.1", "features.3", "features.6", "features.13", "features"]),
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
    assert block_layers(lite0, recs) == ["bn1", "blocks.0", "blocks.1", "blocks.2", "blocks.4", "bn2"]
