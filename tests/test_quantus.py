"""cnnlens as a Quantus explain_func, checked with Quantus itself (quantus 0.6): on the same maps Quantus's
RelevanceMassAccuracy equals cnnlens's energy-based pointing game and its PointingGame equals cnnlens's pointing game
with zero tolerance; ``quantus.evaluate`` runs with the explain func and gives the same numbers."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

import cnnlens
from cnnlens.errors import LayerError, MethodError
from cnnlens.integrations.quantus import explain
from cnnlens.metrics import boxes_mask, energy_pointing_game, pointing_game, pointing_points, saliency

from _report_fixture import tiny_setup
from conftest import assert_untouched, snapshot

quantus = pytest.importorskip("quantus")

N, SIZE, LAYER = 6, 32, "relu2"


@pytest.fixture(scope="module")
def setup():
    model, x, _, _ = tiny_setup(n=N, size=SIZE, seed=3)
    y = np.array([0, 1, 2, 3, 4, 0])
    return model, x, y


def _masks(s: torch.Tensor) -> tuple[np.ndarray, torch.Tensor]:
    """Boxes that make hits and misses: even samples get an 8×8 box around the map's maximum, odd ones a box in the
    opposite corner. (N,1,H,W) float for Quantus and (N,H,W) bool for cnnlens."""
    pts = pointing_points(s)
    boxes = []
    for i, (r, c) in enumerate(pts.tolist()):
        if i % 2 == 0:
            boxes.append((c - 4, r - 4, c + 4, r + 4))
        else:
            x0 = 0 if c >= SIZE // 2 else SIZE - 10
            y0 = 0 if r >= SIZE // 2 else SIZE - 10
            boxes.append((x0, y0, x0 + 10, y0 + 10))
    g = torch.stack([boxes_mask([b], (SIZE, SIZE)) for b in boxes])
    return g[:, None].numpy().astype(np.float32), g


@pytest.mark.parametrize("method,layer", [("grad-cam", LAYER), ("lrp", None)])
def test_quantus_localisation_equals_cnnlens_metrics(setup, method, layer):
    model, x, y = setup
    before = snapshot(model)
    kw = {"method": method} if layer is None else {"method": method, "layer": layer}
    a = explain(model, x.numpy(), y, device="cpu", **kw)
    assert a.shape == (N, 1, SIZE, SIZE) and a.dtype == np.float32
    # the map handed to Quantus is the map cnnlens's metrics read
    e = cnnlens.explain(model, x, method, target=torch.as_tensor(y), layer=layer)
    s = saliency(e.heatmap, (SIZE, SIZE), signed=e.signed, zero=0.5 if e.signed else 0.0)
    assert np.array_equal(a[:, 0], s.numpy())
    flat = s.flatten(1)
    assert bool(((flat == flat.max(1, keepdim=True).values).sum(1) == 1).all()), "one maximal pixel per map"
    s_batch, g = _masks(s)

    common = dict(model=model, x_batch=x.numpy(), y_batch=y, a_batch=None, s_batch=s_batch, explain_func=explain,
                  explain_func_kwargs=kw, device="cpu")
    rma = quantus.RelevanceMassAccuracy(disable_warnings=True, display_progressbar=False)(**common)
    pg = quantus.PointingGame(disable_warnings=True, display_progressbar=False)(**common)
    ours_ebpg = energy_pointing_game(s, g).numpy()
    ours_pg = pointing_game(s, g, tolerance=0.0, inclusive=True).numpy()
    np.testing.assert_allclose(np.asarray(rma, dtype=np.float64), ours_ebpg, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(pg, dtype=np.float64), ours_pg)
    assert set(ours_pg.tolist()) == {0.0, 1.0}                             # hits and misses both checked
    assert len(set(ours_ebpg.tolist())) >= 4 and ours_ebpg.max() < 1.0          # varied, not trivial
    assert_untouched(model, before)


def test_pointing_game_ties_follow_each_librarys_documented_rule():
    """With two maximal pixels Quantus counts a hit when either is in the mask; cnnlens points at the first."""
    s = torch.zeros(1, 8, 8)
    s[0, 0, 0] = s[0, 7, 7] = 1.0
    g = torch.zeros(1, 8, 8, dtype=torch.bool)
    g[0, 6:, 6:] = True
    pg = quantus.PointingGame(disable_warnings=True, display_progressbar=False)
    q = pg.evaluate_batch(a_batch=s[:, None].numpy(), s_batch=g[:, None].numpy())
    assert list(np.asarray(q, dtype=float)) == [1.0]
    assert pointing_game(s, g, tolerance=0.0, inclusive=True).tolist() == [0.0]


def test_quantus_evaluate_runs_cnnlens_methods(setup):
    model, x, y = setup
    s_ref = {}
    for m in ("grad-cam", "grad-cam++"):
        e = cnnlens.explain(model, x, m, target=torch.as_tensor(y), layer=LAYER)
        s_ref[m] = saliency(e.heatmap, (SIZE, SIZE))
    s_batch, g = _masks(s_ref["grad-cam"])
    results = quantus.evaluate(
        metrics={"rma": quantus.RelevanceMassAccuracy(disable_warnings=True, display_progressbar=False),
                 "pg": quantus.PointingGame(disable_warnings=True, display_progressbar=False)},
        xai_methods={"grad-cam": explain, "grad-cam++": explain},     # the key is passed as method=
        model=model, x_batch=x.numpy(), y_batch=y, s_batch=s_batch,
        explain_func_kwargs={"layer": LAYER}, call_kwargs={"on cpu": {"device": "cpu"}})  # Quantus adds device=
    for m in ("grad-cam", "grad-cam++"):
        np.testing.assert_allclose(np.asarray(results[m]["rma"], dtype=float),
                                   energy_pointing_game(s_ref[m], g).numpy(), rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(np.asarray(results[m]["pg"], dtype=float),
                                      pointing_game(s_ref[m], g, tolerance=0.0, inclusive=True).numpy())
    assert not np.allclose(results["grad-cam"]["rma"], results["grad-cam++"]["rma"])  # each method its own maps


def test_layouts_targets_and_outputs(setup):
    model, x, y = setup
    ref = explain(model, x, torch.as_tensor(y), method="grad-cam", layer=LAYER)
    last = explain(model, x.permute(0, 2, 3, 1).numpy(), list(y), method="grad-cam", layer=LAYER)
    assert last.shape == (N, SIZE, SIZE, 1)
    np.testing.assert_allclose(last[..., 0], ref[:, 0], atol=1e-6)
    same = explain(model, x.permute(0, 2, 3, 1).numpy().astype(np.float64), y.astype(np.int32), method="grad-cam",
                   layer=LAYER, channel_first=False, softmax=False, xai_lib="cnnlens")
    np.testing.assert_allclose(same[..., 0], ref[:, 0], atol=1e-6)
    e = cnnlens.explain(model, x, "lrp", target=torch.as_tensor(y))
    raw = explain(model, x, y, method="lrp", output="raw")
    assert np.array_equal(raw[:, 0], e.raw.numpy()) and raw.min() < 0 < raw.max()   # sign kept
    shared = explain(model, x, y, method="lrp", output="raw", layer=LAYER)   # evaluate's shared kwargs: layer ignored
    assert np.array_equal(shared, raw)
    heat = explain(model, x, y, method="lrp", output="heatmap")
    assert np.array_equal(heat[:, 0], e.heatmap.numpy())
    top1 = explain(model, x, None, method="grad-cam", layer=LAYER)
    pred = model(x).argmax(1)
    np.testing.assert_allclose(top1, explain(model, x, pred.numpy(), method="grad-cam", layer=LAYER))
    rise = explain(model, x[:2], y[:2], method="rise", n_masks=20, seed=1)          # a method option passes through
    assert rise.shape == (2, 1, SIZE, SIZE)


def test_errors_are_cnnlens_errors(setup):
    model, x, y = setup
    with pytest.raises(LayerError):
        explain(model, x, y, method="grad-cam", layer=["relu1", "relu2"])
    with pytest.raises(MethodError, match="no_such_option"):
        explain(model, x, y, method="grad-cam", no_such_option=1)


def test_the_module_does_not_import_quantus():
    code = ("import sys, cnnlens.integrations.quantus as q; assert callable(q.explain); "
            "assert 'quantus' not in sys.modules and 'torch' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)
