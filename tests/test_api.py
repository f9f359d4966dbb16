"""explain(): call shape, targets, layers, capture edge cases, and the user's model coming back untouched."""
from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

import cnnlens
from cnnlens.capture import LayerCapture
from conftest import assert_untouched, snapshot


def test_explanation_fields_and_default_target(resnet18):
    x = torch.randn(3, 3, 64, 64)
    e = cnnlens.explain(resnet18, x, "grad-cam")
    assert e.layer == "layer4" and e.method == "grad-cam"
    assert e.heatmap.shape == (3, 64, 64) and e.raw.shape == (3, 2, 2)
    assert float(e.heatmap.min()) >= 0 and float(e.heatmap.max()) <= 1
    with torch.no_grad():
        assert torch.equal(e.target, resnet18(x).argmax(1))
    assert e.probabilities.shape == (3,)


def test_targets_int_list_tensor_name(resnet18):
    x = torch.randn(2, 3, 64, 64)
    assert cnnlens.explain(resnet18, x, "grad-cam", target=5).target.tolist() == [5, 5]
    assert cnnlens.explain(resnet18, x, "grad-cam", target=[1, 2]).target.tolist() == [1, 2]
    assert cnnlens.explain(resnet18, x, "grad-cam", target=torch.tensor([3, 4])).target.tolist() == [3, 4]
    names = [f"class{i}" for i in range(1000)]
    e = cnnlens.explain(resnet18, x, "grad-cam", target="class7", class_names=names)
    assert e.target.tolist() == [7, 7] and e.target_names == ["class7", "class7"]


@pytest.mark.parametrize("target, msg", [(1000, "out of range"), (-1, "out of range"), ([1, 2, 3], "3 targets"),
                                         ("tabbby", "unknown class name"), (1.5, "must be")])
def test_bad_targets(resnet18, target, msg):
    x = torch.randn(2, 3, 32, 32)
    names = [f"c{i}" for i in range(999)] + ["tabby"]
    before = snapshot(resnet18)
    with pytest.raises(cnnlens.TargetError, match=msg):
        cnnlens.explain(resnet18, x, "grad-cam", target=target, class_names=names)
    assert_untouched(resnet18, before)


def test_unknown_class_name_suggests_nearest(lite0):
    x = torch.zeros(1, 3, 32, 32)
    with pytest.raises(cnnlens.TargetError, match="Did you mean: 'tabby'"):
        cnnlens.explain(lite0, x, "grad-cam", target="tabbby")


@pytest.mark.parametrize("x, msg", [
    (torch.randn(3, 32, 32), "4 dimensions"),
    (torch.randn(1, 1, 32, 32), "channels"),
    (torch.zeros(1, 3, 32, 32, dtype=torch.uint8), "floating-point"),
    (torch.full((1, 3, 32, 32), float("nan")), "NaN or Inf"),
    (torch.full((1, 3, 32, 32), float("inf")), "NaN or Inf"),
    ([[1.0]], "torch.Tensor"),
])
def test_bad_inputs(resnet18, x, msg):
    before = snapshot(resnet18)
    with pytest.raises(cnnlens.InputError, match=msg):
        cnnlens.explain(resnet18, x, "grad-cam")
    assert_untouched(resnet18, before)


def test_unknown_method_and_layer_suggest(resnet18):
    x = torch.randn(1, 3, 32, 32)
    with pytest.raises(cnnlens.MethodError, match="Did you mean: 'grad-cam'"):
        cnnlens.explain(resnet18, x, "gradcam")
    with pytest.raises(cnnlens.LayerError, match="Did you mean: 'layer4'"):
        cnnlens.explain(resnet18, x, "grad-cam", layer="layr4")
    with pytest.raises(cnnlens.MethodError, match="no option 'rellu'.*'relu'"):
        cnnlens.explain(resnet18, x, "grad-cam", rellu=False)


def test_layer_list_gives_dict_and_equals_single_calls(resnet18):
    x = torch.randn(2, 3, 64, 64)
    d = cnnlens.explain(resnet18, x, "grad-cam", layer=["layer2", "layer4"])
    assert set(d) == {"layer2", "layer4"}
    for name, e in d.items():
        single = cnnlens.explain(resnet18, x, "grad-cam", layer=name)
        torch.testing.assert_close(e.raw, single.raw, rtol=1e-5, atol=1e-7)
    blocks = cnnlens.explain(resnet18, x, "grad-cam", layer="blocks")
    assert list(blocks) == ["relu", "layer1", "layer2", "layer3", "layer4"]


def test_reused_module_is_rejected_with_hint():
    model = torchvision.models.resnet50().eval()
    x = torch.randn(1, 3, 32, 32)
    before = snapshot(model)
    with pytest.raises(cnnlens.LayerError, match="more than once.*'layer4.0'"):
        cnnlens.explain(model, x, "grad-cam", layer="layer4.0.relu")
    assert_untouched(model, before)


def test_inplace_relu_layer_capture_is_not_corrupted(vgg11):
    """features.1 is ReLU(inplace=True) followed by maxpool; features.0 (conv) is followed by an in-place ReLU."""
    x = torch.randn(1, 3, 32, 32)
    with torch.enable_grad(), LayerCapture(vgg11, ["features.0"]) as cap:
        vgg11(x)
        acts = cap.check()
    ref = vgg11.features[0](x)
    torch.testing.assert_close(acts["features.0"], ref)
    assert float(acts["features.0"].detach().min()) < 0  # pre-ReLU values survived the in-place ReLU


def test_frozen_model_no_param_grads_and_backward_stops(resnet18):
    for p in resnet18.parameters():
        p.requires_grad_(False)
    x = torch.randn(2, 3, 64, 64, requires_grad=True)
    fired = []
    x.register_hook(lambda g: fired.append(1))
    before = snapshot(resnet18)
    e = cnnlens.explain(resnet18, x, "grad-cam", layer="layer3")
    assert e.raw.abs().sum() > 0
    assert not fired, "the backward went below the layer"
    assert_untouched(resnet18, before)


def test_model_untouched_after_success_and_failure_train_mode(resnet18):
    resnet18.train()
    resnet18.layer1[0].bn1.eval()
    resnet18.fc.weight.requires_grad_(False)
    x = torch.randn(2, 3, 64, 64)
    before = snapshot(resnet18)
    cnnlens.explain(resnet18, x, "grad-cam", layer=["layer1", "layer4"])
    assert_untouched(resnet18, before)
    with pytest.raises(cnnlens.TargetError):
        cnnlens.explain(resnet18, x, "grad-cam", target=5000)
    assert_untouched(resnet18, before)


def test_train_mode_model_is_explained_in_eval_mode(resnet18):
    x = torch.randn(2, 3, 64, 64)
    ref = cnnlens.explain(resnet18, x, "grad-cam").raw
    resnet18.train()
    torch.testing.assert_close(cnnlens.explain(resnet18, x, "grad-cam").raw, ref)
    assert resnet18.training


def test_user_module_functional_ops_and_float64():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3, padding=1)
            self.head = nn.Linear(8, 4)

        def forward(self, x):
            a = torch.relu(self.conv(x))
            return self.head(a.mean((2, 3)))

    torch.manual_seed(0)
    net = Net().double()
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64)
    e = cnnlens.explain(net, x, "grad-cam", target=1)
    assert e.layer == "conv"  # the functional ReLU is invisible to module hooks: the map is taken before it
    # closed form (cams.md §4.3): conv → ReLU → GAP → linear gives g_kij = w_ck·1[A_kij > 0]/hw
    a = net.conv(x).detach()
    g = net.head.weight[1].detach()[None, :, None, None] * (a > 0) / (16 * 16)
    ref = torch.relu((g.mean((2, 3), keepdim=True) * a).sum(1))
    torch.testing.assert_close(e.raw, ref, rtol=1e-10, atol=1e-12)


def test_constant_input_gives_no_nan(resnet18):
    e = cnnlens.explain(resnet18, torch.zeros(1, 3, 32, 32), "grad-cam")
    assert torch.isfinite(e.heatmap).all()


def test_methods_registry_lists_descriptions():
    assert "grad-cam" in cnnlens.METHODS
    assert all(isinstance(d, str) and d for d in cnnlens.METHODS.values())
    assert "relu" in cnnlens.method_options("grad-cam")


def test_explainable_layers(resnet18):
    layers = dict(cnnlens.explainable_layers(resnet18))
    assert layers["layer4"] == (512, 7, 7) and layers["fc"] == (1000,)
