"""Models whose forward returns an object (a ModelOutput-like dataclass with .logits, a dict with "logits", a tuple
whose first element is the logits) give every method, metric and the evaluation exactly what the same model
returning its logits gives; the user's model comes back untouched and keeps its layer names."""
from __future__ import annotations

import copy
from dataclasses import dataclass

import pytest
import torch
from torch import nn

import cnnlens
from cnnlens import metrics as M
from conftest import assert_untouched, snapshot


@dataclass
class Output:
    """A Hugging Face ``ImageClassifierOutput`` in miniature (``.logits`` plus other fields)."""
    logits: torch.Tensor
    pooled: torch.Tensor | None = None


class Plain(nn.Module):
    """conv-BN-ReLU ×2, a max pool, a residual-free head: every method (LRP via torch.fx included) handles it."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                      nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                                      nn.Conv2d(8, 12, 3, padding=1), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(12, 5)

    def pooled(self, x):
        return torch.flatten(self.pool(self.features(x)), 1)

    def forward(self, x):
        return self.fc(self.pooled(x))


class AsDataclass(Plain):
    def forward(self, x):
        p = self.pooled(x)
        return Output(logits=self.fc(p), pooled=p)


class AsDict(Plain):
    def forward(self, x):
        p = self.pooled(x)
        return {"pooled": p, "logits": self.fc(p)}


class AsTuple(Plain):
    def forward(self, x):
        p = self.pooled(x)
        return self.fc(p), p


KINDS = {"dataclass": AsDataclass, "dict": AsDict, "tuple": AsTuple}

_MODELS: dict = {}


def _pair(kind: str):
    if kind not in _MODELS:
        torch.manual_seed(0)
        plain = Plain().eval()
        with torch.no_grad():                     # non-trivial BatchNorm statistics
            plain.features[1].running_mean.uniform_(-0.2, 0.2)
            plain.features[1].running_var.uniform_(0.5, 1.5)
        other = KINDS[kind]().eval()
        other.load_state_dict(plain.state_dict())
        _MODELS[kind] = (plain, other)
    return _MODELS[kind]


def _x(n=2):
    return torch.randn(n, 3, 16, 16, generator=torch.Generator().manual_seed(1))


OPTIONS = {"rise": {"n_masks": 64, "cells": 4, "seed": 0}, "sr-map": {"working_size": 16, "patch": 3, "K": 4}}


#: every method on the dataclass output; the other outputs with the methods that trace or re-run the model differently
#: (gradients, LRP through torch.fx, Score-CAM's traced fast forward, SISE's masked forwards)
CASES = [("dataclass", m) for m in sorted(cnnlens.METHODS)] + \
    [(k, m) for k in ("dict", "tuple") for m in ("grad-cam", "lrp", "sglrp", "score-cam", "sise")]


@pytest.mark.parametrize("kind, method", CASES)
def test_every_method_sees_the_logits(kind, method):
    plain, other = _pair(kind)
    x = _x()
    opts = OPTIONS.get(method, {})
    want = cnnlens.explain(plain, x, method, target=[1, 3], **opts)
    before = snapshot(other)
    got = cnnlens.explain(other, x, method, target=[1, 3], **opts)
    assert_untouched(other, before)
    assert type(other.forward(x)).__name__ == {"dataclass": "Output", "dict": "dict", "tuple": "tuple"}[kind]
    assert got.layer == want.layer                # the same module names (default layer included)
    assert torch.allclose(got.heatmap, want.heatmap, atol=1e-5), method
    assert torch.allclose(got.raw, want.raw, atol=1e-5, rtol=1e-4), method
    if want.logits is not None:
        assert torch.allclose(got.logits, want.logits, atol=1e-6)


@pytest.mark.parametrize("kind", list(KINDS))
def test_layers_by_name_blocks_and_lrp_layers(kind):
    plain, other = _pair(kind)
    x = _x(1)
    a = cnnlens.explain(other, x, "relevance-cam", layer=["features.3", "features.6"])
    b = cnnlens.explain(plain, x, "relevance-cam", layer=["features.3", "features.6"])
    assert list(a) == list(b) == ["features.3", "features.6"]
    for k in a:
        assert torch.allclose(a[k].heatmap, b[k].heatmap, atol=1e-5)
    assert cnnlens.block_layers(other) == cnnlens.block_layers(plain)
    assert list(cnnlens.explain(other, x, "grad-cam", layer="stages")) == \
        list(cnnlens.explain(plain, x, "grad-cam", layer="stages"))


@pytest.mark.parametrize("kind", list(KINDS))
def test_metrics_take_the_model_output(kind):
    plain, other = _pair(kind)
    x, t = _x(), torch.tensor([1, 3])
    maps = torch.rand(2, 4, 4, generator=torch.Generator().manual_seed(2))
    assert torch.allclose(M.batched_scores(other, x, t), M.batched_scores(plain, x, t))
    ms = dict(mean=(0.5,) * 3, std=(0.25,) * 3)
    for a, b in zip(M.confidence_pair(other, x, maps, t, **ms), M.confidence_pair(plain, x, maps, t, **ms)):
        assert torch.allclose(a, b)
    da = M.deletion_insertion(other, x, maps, t, step=32, **ms)
    db = M.deletion_insertion(plain, x, maps, t, step=32, **ms)
    assert torch.allclose(da["deletion_curve"], db["deletion_curve"])
    assert torch.allclose(da["insertion"], db["insertion"])


def test_evaluate_and_model_randomisation_with_a_dict_model():
    from cnnlens.data.synthetic import SHAPES, SyntheticMeta, SyntheticScenes
    from cnnlens.evaluation import EvalConfig, evaluate
    plain, other = _pair("dict")
    plain, other = copy.deepcopy(plain), copy.deepcopy(other)
    for m in (plain, other):
        m.fc = nn.Linear(12, 4)
        m.cnnlens_meta = SyntheticMeta("tiny", tuple(SHAPES[:4]), input_size=(3, 32, 32))
    other.fc.load_state_dict(plain.fc.state_dict())
    data = SyntheticScenes(3, size=32)
    cfg = EvalConfig(batch_size=3, step=64)
    metrics = "average-drop,deletion,pointing-game,model-randomisation"
    before = snapshot(other)
    a = evaluate(other, data, "grad-cam", metrics, config=cfg, progress=False, plots=False)
    assert_untouched(other, before)
    b = evaluate(plain, data, "grad-cam", metrics, config=cfg, progress=False, plots=False)
    for ra, rb in zip(a.summary, b.summary):
        for name in metrics.split(","):
            assert ra[name]["mean"] == pytest.approx(rb[name]["mean"], abs=1e-5), name


def test_an_output_without_logits_is_one_clear_error():
    class NoLogits(Plain):
        def forward(self, x):
            return {"features": self.pooled(x)}
    with pytest.raises(cnnlens.ModelError, match="not logits.*'logits'"):
        cnnlens.explain(NoLogits().eval(), _x(1), "grad-cam")


@pytest.mark.slow          # importing transformers takes seconds
def test_hugging_face_resnet_explained_like_its_logits():
    """A tiny random-config transformers ResNet (returns ImageClassifierOutput) against a wrapper returning
    ``.logits``: the same Grad-CAM / Relevance-CAM maps at the same layer (names unchanged on the HF model)."""
    transformers = pytest.importorskip("transformers")
    config = transformers.ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], num_labels=4,
                                       layer_type="basic")
    torch.manual_seed(0)
    hf = transformers.ResNetForImageClassification(config).eval()

    class Logits(nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, x):
            return self.m(x).logits

    ref = Logits(hf).eval()
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    layer = "resnet.encoder.stages.1"
    before = snapshot(hf)
    for method in ("grad-cam", "score-cam", "rise"):
        opts = {"n_masks": 32, "seed": 0} if method == "rise" else {}
        kw = {} if method == "rise" else {"layer": layer}
        ref_kw = {} if method == "rise" else {"layer": "m." + layer}
        got = cnnlens.explain(hf, x, method, target=[0, 2], **kw, **opts)
        want = cnnlens.explain(ref, x, method, target=[0, 2], **ref_kw, **opts)
        assert torch.allclose(got.heatmap, want.heatmap, atol=1e-5), method
    assert_untouched(hf, before)
