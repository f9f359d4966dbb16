"""Hugging Face ``transformers`` CNNs with the LRP family (issue 19 item 5): their forward checks the input's channel
count in Python, which ``cnnlens.lrp.tracing`` decides on meta values while tracing. Tiny random-config models."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import cnnlens
from cnnlens._logits import logits_model
from cnnlens.errors import UnsupportedOperationError
from cnnlens.lrp import get_plan, lrp_attribute

from conftest import assert_untouched, snapshot

transformers = pytest.importorskip("transformers")

LRP_FAMILY = ("lrp", "clrp", "sglrp", "deep-taylor", "relevance-cam", "sr-map")


def _resnet(dtype=torch.float32, zero_shifts=False):
    config = transformers.ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], num_labels=10,
                                       layer_type="basic")
    torch.manual_seed(0)
    model = transformers.ResNetForImageClassification(config).eval().to(dtype)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):  # random statistics: BN folding is exercised
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.zero_() if zero_shifts else m.bias.uniform_(-0.2, 0.2)
                if zero_shifts:  # BN shift β − s·μ = 0: the folded layers are bias-free
                    m.running_mean.zero_()
            if zero_shifts and getattr(m, "bias", None) is not None and not isinstance(m, nn.BatchNorm2d):
                m.bias.zero_()
    return model


def _x(n=2, size=32, dtype=torch.float32, seed=3):
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed), dtype=dtype)


class _Plain(nn.Module):
    """The HF ResNet's own submodules, chained without its forward's Python checks: plain ``torch.fx`` traces it."""

    def __init__(self, hf):
        super().__init__()
        self.embedder, self.pool = hf.resnet.embedder.embedder, hf.resnet.embedder.pooler
        self.stages, self.pooler, self.classifier = hf.resnet.encoder.stages, hf.resnet.pooler, hf.classifier

    def forward(self, x):
        x = self.pool(self.embedder(x))
        for stage in self.stages:
            x = stage(x)
        return self.classifier(self.pooler(x))


@pytest.mark.parametrize("method", LRP_FAMILY)
def test_lrp_family_on_transformers_resnet(method):
    hf = _resnet()
    x = _x()
    before = snapshot(hf)
    kw = {"layer": "resnet.encoder.stages.1"} if method == "relevance-cam" else {}
    if method == "sr-map":
        kw = {"working_size": 32, "K": 8}  # small context-aware-saliency stage (tests/test_sr_map.py)
    e = cnnlens.explain(hf, x, method, target=[1, 7], **kw)
    assert e.raw.shape[0] == 2 and torch.isfinite(e.raw).all()
    assert (e.raw.flatten(1).std(1) > 0).all(), "constant map"
    torch.testing.assert_close(e.logits, hf(x).logits)
    assert_untouched(hf, before)


def test_resnet_conservation_dtd_float64():
    """Bias-free dtd (biases and BN shifts zero): Σ input relevance = the target logit, any batch size."""
    hf = _resnet(torch.float64, zero_shifts=True)
    view = logits_model(hf, _x(1, dtype=torch.float64))
    for n, size in ((2, 32), (3, 48)):  # one plan for every batch size and image size
        x = _x(n, size, torch.float64)
        target = torch.arange(n) % 10
        res = lrp_attribute(view, x, lambda z: torch.nn.functional.one_hot(target, 10).to(z) * z, "dtd",
                            ["resnet.encoder.stages.0"])
        logit = hf(x).logits.gather(1, target[:, None])[:, 0]
        torch.testing.assert_close(res.input.flatten(1).sum(1), logit, rtol=1e-3, atol=0)
        torch.testing.assert_close(res.relevance["resnet.encoder.stages.0"].flatten(1).sum(1), logit, rtol=1e-3,
                                   atol=0)


@pytest.mark.parametrize("composite", ["epsilon-plus", "dtd"])
def test_resnet_lrp_equals_the_plainly_traced_equivalent(composite):
    """The shape-checked HF forward and the same modules chained in a plain module give the same relevance."""
    hf = _resnet(torch.float64)
    x = _x(dtype=torch.float64)
    r0 = torch.randn(2, 10, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    got = lrp_attribute(logits_model(hf, x), x, r0, composite, ["resnet.encoder.stages.0"])
    want = lrp_attribute(_Plain(hf), x, r0, composite, ["stages.0"])
    torch.testing.assert_close(got.input, want.input, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(got.relevance["resnet.encoder.stages.0"], want.relevance["stages.0"], rtol=1e-10,
                               atol=1e-12)


def test_meta_evaluation_records_no_nodes():
    """Evaluating a node on meta values runs modules and reads parameters while fx's patches are on: none of that may
    enter the graph (the HF ResNet's graph is the plain one plus the 4 nodes of its guarded channel check)."""
    from cnnlens.lrp.graph import _Tracer
    from cnnlens.lrp.tracing import ConcreteShapeTracer, tracer_for

    hf = _resnet()
    view = logits_model(hf, _x(1))
    tracer = tracer_for(view)
    assert isinstance(tracer, ConcreteShapeTracer)
    got = tracer.trace(view)
    plain = _Plain(hf)
    want = _Tracer().trace(plain)
    name_in_hf = {id(m): name for name, m in hf.named_modules()}
    plain_modules = dict(plain.named_modules())
    assert [n.target for n in got.nodes if n.op == "call_module"] == [
        name_in_hf[id(plain_modules[n.target])] for n in want.nodes if n.op == "call_module"]
    assert len(got.nodes) == len(want.nodes) + 4  # shape, [1], != and its guard
    assert not tracer.values  # the meta values are dropped after the trace
    config = transformers.ConvNextConfig(num_stages=2, hidden_sizes=[8, 16], depths=[1, 1], num_labels=10)
    convnext = transformers.ConvNextForImageClassification(config).eval()
    graph = tracer_for(convnext).trace(logits_model(convnext, _x(1)))
    attrs = [n.target for n in graph.nodes if n.op == "get_attr"]
    assert len(attrs) == len(set(attrs)) and len(graph.nodes) < 60
    assert isinstance(tracer_for(_Plain(hf)), _Tracer) and not isinstance(tracer_for(_Plain(hf)), ConcreteShapeTracer)


def test_wrong_channel_count_is_one_clear_error():
    """A plan traced for the config's 3 channels is not run on a 4-channel input."""
    hf = _resnet()
    with pytest.raises(cnnlens.InputError, match="4 channels"):
        cnnlens.explain(hf, torch.randn(1, 4, 32, 32), "lrp")


def test_convnext_traces_and_every_lrp_method_explains_it():
    """ConvNeXt's forward traces too, and with the LN-rule for its LayerNorms (channels-first ConvNextLayerNorm and
    nn.LayerNorm) and layer scale as a diagonal linear map, every LRP-family method gives a finite, non-constant map;
    dtd conserves (biases zeroed, float64)."""
    config = transformers.ConvNextConfig(num_stages=2, hidden_sizes=[8, 16], depths=[1, 1], num_labels=10)
    torch.manual_seed(0)
    hf = transformers.ConvNextForImageClassification(config).eval()
    for method in ("lrp", "sglrp", "clrp", "deep-taylor"):
        e = cnnlens.explain(hf, _x(), method)
        assert torch.isfinite(e.raw).all() and float(e.raw.std()) > 0, method
    hf64 = hf.double()
    with torch.no_grad():
        for name, p in hf64.named_parameters():
            if name.endswith("bias"):
                p.zero_()
    x = _x(2, dtype=torch.float64)
    target = torch.arange(2) % 10
    res = lrp_attribute(logits_model(hf64, x[:1]), x, lambda z: torch.nn.functional.one_hot(target, 10).to(z) * z,
                        "dtd")
    logit = hf64(x).logits.gather(1, target[:, None])[:, 0]
    torch.testing.assert_close(res.input.flatten(1).sum(1), logit, rtol=1e-3, atol=0)


def test_branch_decided_while_tracing_is_guarded():
    """A branch on the input's size is traced at the example size (224); the guard node fails clearly on an input that
    takes the other branch instead of explaining a model the input never ran through."""

    class SizeBranch(transformers.ResNetForImageClassification):
        def forward(self, pixel_values=None, **kwargs):
            if pixel_values.shape[-1] > 40:
                pixel_values = torch.nn.functional.avg_pool2d(pixel_values, 2)
            return super().forward(pixel_values, **kwargs)

    torch.manual_seed(0)
    hf = SizeBranch(_resnet().config).eval()
    x = _x(2, 48)
    e = cnnlens.explain(hf, x, "lrp")
    torch.testing.assert_close(e.logits, hf(x).logits)
    with pytest.raises(UnsupportedOperationError, match="another Python branch.*224"):
        cnnlens.explain(hf, _x(2, 32), "lrp")
    view = logits_model(hf, x)
    with pytest.raises(UnsupportedOperationError, match="another Python branch"):  # the HF channel check's branch
        lrp_attribute(view, torch.randn(1, 4, 48, 48), torch.ones(1, 10))


def test_data_dependent_control_flow_still_fails_clearly():
    """Meta values hold no data: a condition on tensor values is not guessed."""

    class DataBranch(transformers.ResNetForImageClassification):
        def forward(self, pixel_values=None, **kwargs):
            out = super().forward(pixel_values, **kwargs)
            if out.logits.sum() > 0:
                return out
            return out

    torch.manual_seed(0)
    hf = DataBranch(_resnet().config).eval()
    with pytest.raises(UnsupportedOperationError, match="cannot trace DataBranch"):
        cnnlens.explain(hf, _x(), "lrp")
