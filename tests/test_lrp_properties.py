"""Properties of the LRP engine (lrp_sglrp_clrp.md §9.4): conservation, linearity, one pass for many layers,
per-sample targets, max-pool modes, caching."""
from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from cnnlens.errors import InputError, LayerError
from cnnlens.lrp import COMPOSITES, Composite, Epsilon, ZPlus, get_composite, get_plan, lrp_attribute

from _models import randomize_batchnorm

_CACHE: dict = {}


def _model(name):
    if name not in _CACHE:
        torch.manual_seed(0)
        _CACHE[name] = randomize_batchnorm(getattr(torchvision.models, name)()).eval().double()
    return _CACHE[name]


def _x(n=2, size=32, seed=0):
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _sum(t):
    return t.reshape(t.shape[0], -1).sum(1)


def test_registry_names():
    assert set(COMPOSITES) == {"epsilon-plus", "epsilon-plus-flat", "epsilon-gamma-box", "epsilon-alpha2-beta1",
                               "epsilon-alpha2-beta1-flat", "dtd", "sglrp-reference", "clrp-reference",
                               "relevance-cam-reference", "sr-reference"}
    assert all(isinstance(d, str) and d for d in COMPOSITES.values())


def test_conservation_at_resnet_block_boundaries():
    """Bias-free rules (dtd: z+ without bias, zB input, proportional Adds): Σ R at every block boundary = Σ R_init."""
    model = _model("resnet18")
    x = _x()
    r0 = torch.randn(2, 1000, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    layers = ["layer4", "layer3", "layer2", "layer1", "maxpool", "layer4.1", "layer3.0"]
    res = lrp_attribute(model, x, r0, "dtd", layers)
    expected = r0.sum(1)
    for name in layers:
        torch.testing.assert_close(_sum(res.relevance[name]), expected, rtol=1e-9, atol=1e-12, msg=name)
    torch.testing.assert_close(_sum(res.input), expected, rtol=1e-9, atol=1e-12)


def test_conservation_relevance_cam_reference_bias_free():
    """relevance_cam.md §7.2: BN pass-through, conv_bias='none', one-hot init → Σ R = 1 at layer4..layer1."""
    model = _model("resnet18")
    x = _x()
    res = lrp_attribute(model, x, lambda z: torch.nn.functional.one_hot(z.argmax(1), 1000).to(z),
                        "relevance-cam-reference", ["layer4", "layer3", "layer2", "layer1"], conv_bias="none",
                        input_relevance=False)
    assert res.input is None
    for name, r in res.relevance.items():
        torch.testing.assert_close(_sum(r), torch.ones(2, dtype=torch.float64), rtol=1e-9, atol=0, msg=name)


@pytest.mark.parametrize("composite", ["epsilon-plus", "dtd", "epsilon-gamma-box", "clrp-reference"])
def test_linearity(composite):
    """LRP(a·R1 + b·R2) = a·LRP(R1) + b·LRP(R2) (denominators depend on activations only)."""
    model = _model("resnet18")
    x = _x()
    g = torch.Generator().manual_seed(7)
    r1, r2 = torch.randn(2, 1000, generator=g, dtype=torch.float64), torch.randn(2, 1000, generator=g,
                                                                                dtype=torch.float64)
    a, b = 0.7, -1.9
    lhs = lrp_attribute(model, x, a * r1 + b * r2, composite, ["layer3"])
    l1 = lrp_attribute(model, x, r1, composite, ["layer3"])
    l2 = lrp_attribute(model, x, r2, composite, ["layer3"])
    torch.testing.assert_close(lhs.input, a * l1.input + b * l2.input, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(lhs.relevance["layer3"], a * l1.relevance["layer3"] + b * l2.relevance["layer3"],
                               rtol=1e-9, atol=1e-12)


def test_layers_do_not_change_input_relevance_and_stop_early():
    model = _model("vgg11")
    x = _x()
    r0 = torch.randn(2, 1000, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    plain = lrp_attribute(model, x, r0, "epsilon-plus")
    many = lrp_attribute(model, x, r0, "epsilon-plus", ["features.20", "features.10", "classifier.3"])
    assert torch.equal(plain.input, many.input)
    early = lrp_attribute(model, x, r0, "epsilon-plus", ["features.20", "features.10"], input_relevance=False)
    assert early.input is None
    for name in ("features.20", "features.10"):
        assert torch.equal(early.relevance[name], many.relevance[name])
    # activations are the module outputs of the forward
    assert torch.allclose(many.activations["features.10"], model.features[:11](x))
    torch.testing.assert_close(plain.logits, model(x))


def test_callable_initial_relevance_and_per_sample_targets():
    model = _model("vgg11")
    x = _x(3)
    targets = torch.tensor([3, 500, 999])

    def init(z):
        return z * torch.nn.functional.one_hot(targets, z.shape[1]).to(z)
    batch = lrp_attribute(model, x, init, "epsilon-plus").input
    for i in range(3):
        single = lrp_attribute(model, x[i:i + 1], lambda z, i=i: z * torch.nn.functional.one_hot(
            targets[i:i + 1], z.shape[1]).to(z), "epsilon-plus").input
        torch.testing.assert_close(batch[i:i + 1], single, rtol=1e-10, atol=1e-14)


def test_bad_initial_relevance_and_layers():
    model = _model("vgg11")
    x = _x()
    with pytest.raises(InputError):
        lrp_attribute(model, x, torch.zeros(2, 10, dtype=torch.float64))
    with pytest.raises(LayerError, match="did you mean|Did you mean"):
        lrp_attribute(model, x, torch.zeros(2, 1000, dtype=torch.float64), layers=["features.100"])
    resnet = _model("resnet18")
    with pytest.raises(LayerError, match="called 2 times"):
        lrp_attribute(resnet, x, torch.zeros(2, 1000, dtype=torch.float64), layers=["layer1.0.relu"])
    from cnnlens.errors import MethodError
    with pytest.raises(MethodError):
        get_composite("epsilon-pluss")
    with pytest.raises(MethodError):
        get_composite("dtd", gamma=1.0)


def test_maxpool_modes_on_overlapping_pools():
    """AlexNet 3×3/2 pools: wta (gradient routing, overlaps summed) and split conserve; unpool_overwrite loses
    relevance where windows share an argmax (sr_map.md §1.4)."""
    torch.manual_seed(0)
    model = torchvision.models.alexnet().eval().double()
    x = _x(2, 64)
    r0 = torch.nn.functional.one_hot(torch.tensor([1, 2]), 1000).double()
    names = ["features.2", "features.1"]  # pool1 output and its input (the ReLU)
    for mode in ("wta", "split"):
        res = lrp_attribute(model, x, r0, "dtd", names, maxpool=mode)
        torch.testing.assert_close(_sum(res.relevance["features.1"]), _sum(res.relevance["features.2"]),
                                   rtol=1e-10, atol=1e-14)
    res = lrp_attribute(model, x, r0, "sr-reference", names, maxpool="unpool_overwrite")
    assert bool((_sum(res.relevance["features.1"]).abs() <= _sum(res.relevance["features.2"]).abs() + 1e-12).all())


def test_maxpool_split_ties_equally():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.pool = nn.MaxPool2d(2)
            self.fc = nn.Linear(1, 1, bias=False)

        def forward(self, x):
            return self.fc(torch.flatten(self.pool(x), 1))
    net = Net().double()
    nn.init.ones_(net.fc.weight)
    x = torch.tensor([[[[1.0, 1.0], [0.5, 1.0]]]], dtype=torch.float64)
    r0 = torch.ones(1, 1, dtype=torch.float64)
    exact = ZPlus("exact_zero", bias="none")
    comp = Composite(exact, exact, maxpool="split")
    res = lrp_attribute(net, x, r0, comp)
    torch.testing.assert_close(res.input, torch.tensor([[[[1 / 3, 1 / 3], [0.0, 1 / 3]]]], dtype=torch.float64))
    wta = lrp_attribute(net, x, r0, Composite(ZPlus(bias="none"), ZPlus(bias="none")))
    assert float(wta.input.sum()) == pytest.approx(1.0) and int((wta.input != 0).sum()) == 1


def test_overrides_by_name_and_type():
    model = _model("vgg11")
    x = _x()
    r0 = torch.randn(2, 1000, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    base = lrp_attribute(model, x, r0, "epsilon-plus").input
    by_type = lrp_attribute(model, x, r0, "epsilon-plus", overrides={nn.Conv2d: Epsilon(1e-6)}).input
    by_name = lrp_attribute(model, x, r0, "epsilon-plus",
                            overrides={f"features.{i}": Epsilon(1e-6) for i in (0, 3, 6, 8, 11, 13, 16, 18)}).input
    assert not torch.allclose(base, by_type)
    torch.testing.assert_close(by_type, by_name, rtol=0, atol=0)


def test_plan_cache_reused_and_invalidated():
    torch.manual_seed(0)
    model = torchvision.models.resnet18().eval().double()
    p1 = get_plan(model, "fold")
    assert get_plan(model, "fold") is p1
    with torch.no_grad():
        model.fc.weight.mul_(2.0)
    p2 = get_plan(model, "fold")
    assert p2 is not p1
    x = _x(1)
    torch.testing.assert_close(lrp_attribute(model, x, torch.ones(1, 1000, dtype=torch.float64)).logits, model(x))


def test_plan_cache_does_not_keep_the_model_alive():
    import gc
    import weakref
    torch.manual_seed(0)
    model = torchvision.models.resnet18().eval()
    lrp_attribute(model, torch.randn(1, 3, 32, 32), torch.ones(1, 1000))
    ref = weakref.ref(model)
    del model
    gc.collect()
    assert ref() is None


def test_per_node_conservation_report():
    """Bias-free dtd on resnet18: every node hands on exactly the relevance it receives (spec §1.4)."""
    from cnnlens.lrp import conservation
    model = _model("resnet18")
    rows = conservation(model, _x(1), torch.randn(1, 1000, dtype=torch.float64,
                                                  generator=torch.Generator().manual_seed(9)), "dtd")
    kinds = {r["kind"] for r in rows}
    assert {"linear", "add", "maxpool", "avgpool", "act", "route"} <= kinds
    for r in rows:
        if r["kind"] != "input":
            torch.testing.assert_close(r["in"], r["out"], rtol=1e-9, atol=1e-12, msg=r["node"])
