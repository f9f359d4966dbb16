"""RISE (sise.md §R): mask construction against skimage/torch references, the fixed-mask exact sum, E[M] = p,
closed-form models, seeded determinism, batch-size invariance, and the model left untouched."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import cnnlens
from conftest import assert_untouched, snapshot
from cnnlens.errors import MethodError
from cnnlens.methods.rise import build_masks, random_grids, upsample_matrix


class TinyNet(nn.Module):
    def __init__(self, classes=4):
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.relu = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(6, classes)

    def forward(self, x):
        return self.fc(self.pool(self.relu(self.conv(x))).mean(dim=(2, 3)))


class ConstantNet(nn.Module):
    """Logit 0 is 1 whatever the input (the conv only fixes the channel count)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 1, 1)

    def forward(self, x):
        z = 0 * self.conv(x).sum(dim=(1, 2, 3))
        return torch.stack([z + 1, z], dim=1)


class PixelNet(nn.Module):
    """Logit 0 = input value at pixel λ0 of channel 0 (with an all-ones input: the mask value M(λ0))."""

    def __init__(self, y, x):
        super().__init__()
        self.conv = nn.Conv2d(3, 1, 1)
        self.y, self.x = y, x

    def forward(self, inp):
        v = inp[:, 0, self.y, self.x] + 0 * self.conv(inp).sum(dim=(1, 2, 3))
        return torch.stack([v, torch.zeros_like(v)], dim=1)


@pytest.mark.parametrize("cells,size", [(7, 32), (5, 17), (3, 9)])
def test_rise_upsampling_matches_skimage(cells, size):
    from skimage.transform import resize
    cell = math.ceil(size / cells)
    mat = upsample_matrix(cells, cell, size, "rise")
    gen = np.random.default_rng(0)
    for _ in range(3):
        grid = (gen.random((cells, cells)) < 0.5).astype(np.float64)
        up = resize(grid, ((cells + 1) * cell, (cells + 1) * cell), order=1, mode="reflect", anti_aliasing=False)
        for dy, dx in [(0, 0), (cell - 1, 1), (1, cell - 1)]:
            ours = (mat[dy:dy + size] @ torch.from_numpy(grid) @ mat[dx:dx + size].T).numpy()
            assert np.abs(ours - up[dy:dy + size, dx:dx + size]).max() < 1e-12


def test_torchray_upsampling_matches_interpolate():
    cells, size = 7, 32
    cell = math.ceil(size / cells)
    grid = (torch.rand(2, cells, cells, dtype=torch.float64) < 0.5).double()
    pad = F.pad(grid[:, None], (1, 1, 1, 1), mode="reflect")
    up = F.interpolate(pad, size=(cell * (cells + 2),) * 2, mode="bilinear", align_corners=False)[:, 0]
    up = up[:, cell:cell + size + cell, cell:cell + size + cell]
    mat = upsample_matrix(cells, cell, size, "torchray")
    assert torch.allclose(mat @ grid @ mat.T, up, atol=1e-12)


def test_build_masks_crops_at_the_shift():
    cells, size = 4, 12
    cell = 3
    mat = upsample_matrix(cells, cell, size).float()
    grids = (torch.rand(3, cells, cells) < 0.5).float()
    dy, dx = torch.tensor([0, 2, 1]), torch.tensor([1, 0, 2])
    masks = build_masks(grids, dy, dx, mat, mat, (size, size))
    for b in range(3):
        full = mat @ grids[b] @ mat.T
        assert torch.allclose(masks[b], full[dy[b]:dy[b] + size, dx[b]:dx[b] + size], atol=1e-6)
    assert masks.min() >= 0 and masks.max() <= 1 + 1e-6


def test_mask_mean_is_p():
    size, cells = (24, 24), 6
    cell = (4, 4)
    grids, dy, dx = random_grids(4000, cells, 0.3, 0, torch.device("cpu"), cell)
    mat = upsample_matrix(cells, 4, 24).float()
    m = build_masks(grids, dy, dx, mat, mat, size)
    assert abs(float(m.mean()) - 0.3) < 0.01
    assert float((m.mean(0) - 0.3).abs().max()) < 0.05


def test_fixed_masks_equal_the_naive_weighted_sum():
    torch.manual_seed(0)
    model = TinyNet().eval()
    x = torch.rand(2, 3, 16, 16)
    masks = torch.rand(10, 16, 16)
    p = 0.4
    e = cnnlens.explain(model, x, "rise", target=[1, 2], masks=masks, p=p, batch_size=6)
    expected = torch.zeros(2, 16, 16, dtype=torch.float64)
    with torch.no_grad():
        for n, t in enumerate((1, 2)):
            for m in masks:
                s = model(x[n:n + 1] * m).softmax(-1)[0, t]
                expected[n] += s.double() * m.double()
    expected /= 10 * p
    assert torch.allclose(e.raw.double(), expected, rtol=1e-6, atol=0)
    assert e.extras["n_masks"] == 10 and e.extras["options"]["fixed_masks"]
    # raw-space masking with a known normalisation: black pixels in the [0,1] image
    mean, std = [0.4, 0.5, 0.6], [0.2, 0.3, 0.25]
    e = cnnlens.explain(model, x, "rise", target=[1, 2], masks=masks, mask_space="raw", mean=mean, std=std)
    mu, sd = torch.tensor(mean)[:, None, None], torch.tensor(std)[:, None, None]
    expected.zero_()
    with torch.no_grad():
        for n, t in enumerate((1, 2)):
            for m in masks:
                s = model((((x[n] * sd + mu) * m - mu) / sd)[None]).softmax(-1)[0, t]
                expected[n] += s.double() * m.double()
    expected /= 10 * 0.5
    assert torch.allclose(e.raw.double(), expected, rtol=1e-5, atol=0)


def test_constant_model_gives_one():
    x = torch.rand(1, 3, 21, 21)
    e = cnnlens.explain(ConstantNet(), x, "rise", target=0, score="logit", n_masks=2000, cells=5, batch_size=500)
    # E[M] = p and f ≡ 1 → S ≈ 1 within O(1/√N) (per-pixel σ ≈ 0.5/(p·√N) ≈ 0.022)
    assert abs(float(e.raw.mean()) - 1.0) < 0.05
    assert float((e.raw - 1).abs().max()) < 0.15


@pytest.mark.parametrize("mode", ["rise", "torchray"])
def test_pixel_model_peaks_at_the_pixel(mode):
    y0, x0 = 5, 14
    x = torch.ones(1, 3, 20, 20)
    e = cnnlens.explain(PixelNet(y0, x0), x, "rise", target=0, score="logit", n_masks=1500, cells=5,
                        mask_upsample=mode, batch_size=500)
    peak = int(e.raw[0].argmax())
    assert abs(peak // 20 - y0) <= 1 and abs(peak % 20 - x0) <= 1
    assert float(e.heatmap[0, y0, x0]) > 0.95


def test_seeded_determinism_and_batch_size_invariance():
    torch.manual_seed(1)
    model = TinyNet().eval()
    x = torch.rand(2, 3, 16, 16)
    a = cnnlens.explain(model, x, "rise", n_masks=120, seed=3, batch_size=64)
    b = cnnlens.explain(model, x, "rise", n_masks=120, seed=3, batch_size=64)
    assert torch.equal(a.raw, b.raw)
    for bs in (1, 7, 500):
        c = cnnlens.explain(model, x, "rise", n_masks=120, seed=3, batch_size=bs)
        assert torch.allclose(c.raw, a.raw, atol=1e-6, rtol=0)
    d = cnnlens.explain(model, x, "rise", n_masks=120, seed=4)
    assert not torch.allclose(d.raw, a.raw)
    # a batch of two equals each sample alone (same masks for every sample)
    one = cnnlens.explain(model, x[1:], "rise", target=int(a.target[1]), n_masks=120, seed=3)
    assert torch.allclose(one.raw[0], a.raw[1], atol=1e-6, rtol=0)


def test_options_and_model_untouched():
    model = TinyNet()
    model.train()
    model.conv.requires_grad_(False)
    before = snapshot(model)
    x = torch.rand(1, 3, 16, 16)
    e = cnnlens.explain(model, x, "rise", n_masks=50, score="sigmoid", mask_space="raw", precision="bf16")
    assert torch.isfinite(e.heatmap).all() and e.heatmap.shape == (1, 16, 16) and e.layer is None
    for bad in ({"p": 0.0}, {"n_masks": 0}, {"cells": 1}, {"mask_upsample": "nearest"}, {"score": "prob"},
                {"masks": torch.rand(3, 8, 8)}, {"batch_size": -1}):
        with pytest.raises(MethodError):
            cnnlens.explain(model, x, "rise", **bad)
    with pytest.raises(cnnlens.LayerError):
        cnnlens.explain(model, x, "rise", layer="conv")
    assert model.training and model.fc.training and not model.conv.weight.requires_grad
    assert_untouched(model, before)


def test_progress_bar_only_when_asked(capsys):
    model = TinyNet().eval()
    x = torch.rand(1, 3, 16, 16)
    a = cnnlens.explain(model, x, "rise", n_masks=8, batch_size=4)
    assert "RISE" not in capsys.readouterr().err
    b = cnnlens.explain(model, x, "rise", n_masks=8, batch_size=4, progress=True)
    assert "RISE" in capsys.readouterr().err and torch.equal(a.raw, b.raw)
