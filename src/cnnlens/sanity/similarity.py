"""Similarity of two batches of maps, as in Adebayo et al. (NeurIPS 2018, §3): Spearman rank correlation (of the map
and of its absolute value), SSIM, and the Pearson correlation of HOG descriptors. All batched over the first dimension
(N,H,W), on the maps' device; SSIM and HOG follow scikit-image's defaults (tested against it).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def average_ranks(values: torch.Tensor) -> torch.Tensor:
    """Ranks 1..P of each row of (N,P) ``values``, ties sharing their average rank (as ``scipy.stats.rankdata``)."""
    n, p = values.shape
    sorted_vals, order = values.sort(dim=1, stable=True)
    new_group = torch.ones_like(sorted_vals, dtype=torch.bool)
    new_group[:, 1:] = sorted_vals[:, 1:] != sorted_vals[:, :-1]
    group = new_group.long().cumsum(1) - 1 + torch.arange(n, device=values.device)[:, None] * p     # global group id
    pos = torch.arange(p, device=values.device, dtype=torch.float64).expand(n, p)
    first = torch.full((n * p,), float(p), device=values.device, dtype=torch.float64)
    last = torch.full((n * p,), -1.0, device=values.device, dtype=torch.float64)
    first = first.scatter_reduce(0, group.reshape(-1), pos.reshape(-1), reduce="amin")
    last = last.scatter_reduce(0, group.reshape(-1), pos.reshape(-1), reduce="amax")
    rank_sorted = (first[group] + last[group]) / 2 + 1
    return torch.empty_like(rank_sorted).scatter_(1, order, rank_sorted)


def pearson(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row-wise Pearson correlation of (N,P) tensors in float64; NaN where a row is constant."""
    a = a.double() - a.double().mean(1, keepdim=True)
    b = b.double() - b.double().mean(1, keepdim=True)
    den = (a.square().sum(1) * b.square().sum(1)).sqrt()
    return torch.where(den > 0, (a * b).sum(1) / den.clamp_min(1e-300), torch.full_like(den, float("nan")))


def rank_correlation(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Spearman rank correlation per sample of (N,...) maps (average ranks for ties); NaN where a map is constant."""
    a = a.reshape(a.shape[0], -1)
    b = b.reshape(b.shape[0], -1)
    return pearson(average_ranks(a.double()), average_ranks(b.double()))


def ssim(a: torch.Tensor, b: torch.Tensor, data_range: float = 1.0, win_size: int = 7) -> torch.Tensor:
    """Mean SSIM (Wang et al. 2004) per sample of (N,H,W) maps, as ``skimage.metrics.structural_similarity`` with its
    defaults: a uniform ``win_size``² window, K1=0.01, K2=0.03, sample covariance, mean over the windows that fit."""
    if min(a.shape[-2:]) < win_size:
        raise ValueError(f"maps must be at least {win_size}×{win_size} for SSIM, got {tuple(a.shape[-2:])}")
    x = a.double()[:, None]
    y = b.double()[:, None]
    pool = lambda t: F.avg_pool2d(t, win_size, stride=1)  # noqa: E731
    npix = win_size * win_size
    cov_norm = npix / (npix - 1)
    ux, uy = pool(x), pool(y)
    vx = cov_norm * (pool(x * x) - ux * ux)
    vy = cov_norm * (pool(y * y) - uy * uy)
    vxy = cov_norm * (pool(x * y) - ux * uy)
    c1 = (0.01 * data_range) ** 2
    c2 = (0.03 * data_range) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    return s.mean(dim=(1, 2, 3))


def hog_features(maps: torch.Tensor, orientations: int = 9, cell: int = 8, block: int = 3) -> torch.Tensor:
    """HOG descriptors (Dalal & Triggs 2005) of (N,H,W) maps, as ``skimage.feature.hog`` with its defaults:
    central-difference gradients (zero at the border), unsigned orientations in ``orientations`` hard bins, the mean
    magnitude per bin in ``cell``×``cell`` cells, L2-Hys normalisation over ``block``×``block`` cells; (N, D)."""
    img = maps.double()
    n, h, w = img.shape
    g_row = torch.zeros_like(img)
    g_col = torch.zeros_like(img)
    g_row[:, 1:-1, :] = img[:, 2:, :] - img[:, :-2, :]
    g_col[:, :, 1:-1] = img[:, :, 2:] - img[:, :, :-2]
    magnitude = torch.hypot(g_col, g_row)
    angle = torch.rad2deg(torch.atan2(g_row, g_col)) % 180
    cells_r, cells_c = h // cell, w // cell
    if cells_r < block or cells_c < block:
        raise ValueError(f"maps of {h}×{w} are too small for HOG with {cell}-pixel cells and {block}×{block} blocks")
    magnitude = magnitude[:, :cells_r * cell, :cells_c * cell]
    angle = angle[:, :cells_r * cell, :cells_c * cell]
    width = 180.0 / orientations
    hists = []
    for i in range(orientations):
        upper, lower = width * (i + 1), width * i
        inside = (angle < upper) & (angle >= lower)
        hists.append(F.avg_pool2d((magnitude * inside)[:, None], cell)[:, 0])
    hist = torch.stack(hists, dim=-1)                                       # (N, cells_r, cells_c, orientations)
    blocks = hist.unfold(1, block, 1).unfold(2, block, 1)                   # (N, br, bc, O, block, block)
    blocks = blocks.permute(0, 1, 2, 4, 5, 3).reshape(n, cells_r - block + 1, cells_c - block + 1, -1)
    eps = 1e-5
    out = blocks / (blocks.square().sum(-1, keepdim=True) + eps ** 2).sqrt()
    out = out.clamp(max=0.2)
    out = out / (out.square().sum(-1, keepdim=True) + eps ** 2).sqrt()
    return out.reshape(n, -1)


def hog_similarity(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pearson correlation of the HOG descriptors of (N,H,W) maps (Adebayo et al.'s "similarity of HOG features")."""
    return pearson(hog_features(a), hog_features(b))


def comparison_maps(raw: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """A method's raw map (sign kept) at the input resolution (bilinear, ``align_corners=False``), float64."""
    from ..ops import resize
    raw = raw.detach().double()
    if raw.dim() == 4:            # (N,C,H,W) attributions: sum over channels
        raw = raw.sum(1)
    return resize(raw, size)


def unit_abs(maps: torch.Tensor) -> torch.Tensor:
    """|map| divided by its per-sample maximum, in [0,1] (a zero map stays zero)."""
    m = maps.abs()
    peak = m.reshape(m.shape[0], -1).amax(1).view(-1, *([1] * (m.dim() - 1)))
    return torch.where(peak > 0, m / peak.clamp_min(1e-300), torch.zeros_like(m))


METRICS = ("spearman", "spearman_abs", "ssim", "hog")


def similarities(original: torch.Tensor, randomised: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every similarity of two batches of comparison maps (N,H,W): Spearman ρ of the maps and of |map|, and SSIM and
    HOG similarity of |map| scaled to [0,1] (Adebayo et al.'s absolute-value normalisation); each (N,) float64."""
    ua, ub = unit_abs(original), unit_abs(randomised)
    return {"spearman": rank_correlation(original, randomised),
            "spearman_abs": rank_correlation(original.abs(), randomised.abs()),
            "ssim": ssim(ua, ub),
            "hog": hog_similarity(ua, ub)}
