"""Localisation metrics against ground-truth boxes (no forward passes; metrics.md §5–§8).

Boxes are 0-based, half-open pixel rectangles ``(x1, y1, x2, y2)`` covering columns x1 ≤ x < x2 and rows
y1 ≤ y < y2 (pixel centres decide for fractional boxes); convert Pascal VOC's 1-based inclusive corners with
:func:`voc_to_box`. G is the union of the target class's boxes. Every function takes S (N,H,W) in [0,1] at the
resolution of the boxes (the original image size) and G (N,H,W) bool, and returns per-sample values; a sample with
an empty G gets NaN (not evaluated).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from .perturbation import pixel_ranks

IOU_RULES = ("frac_max", "mean_std", "otsu", "value")
IOU_KINDS = ("pixel", "box")


def voc_to_box(x1: float, y1: float, x2: float, y2: float) -> tuple[float, float, float, float]:
    """Pascal VOC / ImageNet XML corners (1-based, inclusive) → 0-based half-open [x1−1, x2) × [y1−1, y2) (§6)."""
    return (x1 - 1.0, y1 - 1.0, float(x2), float(y2))


def boxes_mask(boxes: Sequence[Sequence[float]] | torch.Tensor, size: tuple[int, int],
               device: torch.device | str | None = None) -> torch.Tensor:
    """(H,W) bool union of half-open boxes (x1,y1,x2,y2): pixel (r,c) is inside iff its centre (c+½, r+½) is."""
    h, w = size
    b = torch.as_tensor(boxes, dtype=torch.float64, device=device).reshape(-1, 4)
    cols = torch.arange(w, dtype=torch.float64, device=b.device) + 0.5
    rows = torch.arange(h, dtype=torch.float64, device=b.device) + 0.5
    inx = (cols[None] > b[:, 0:1]) & (cols[None] < b[:, 2:3])          # (M,W)
    iny = (rows[None] > b[:, 1:2]) & (rows[None] < b[:, 3:4])          # (M,H)
    return (iny[:, :, None] & inx[:, None, :]).any(0)


def _nan_where_empty(values: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    empty = ~g.flatten(1).any(1)
    return torch.where(empty, torch.full_like(values, float("nan")), values)


def pointing_points(s: torch.Tensor) -> torch.Tensor:
    """(N,2) long (row, col) of the first maximum in raster order (§5.1); a constant map points at (0,0)."""
    idx = s.flatten(1).argmax(dim=1)
    return torch.stack([idx // s.shape[-1], idx % s.shape[-1]], dim=1)


def pointing_game(s: torch.Tensor, g: torch.Tensor, tolerance: float = 15.0, inclusive: bool = False,
                  points: torch.Tensor | None = None) -> torch.Tensor:
    """(N,) 1.0 for a hit, 0.0 for a miss (§5.2): some pixel of G lies at Euclidean distance < ``tolerance``
    (≤ with ``inclusive=True``) from the point. ``points`` (N,2) overrides the argmax (e.g. the centre baseline)."""
    n, h, w = g.shape
    p = pointing_points(s) if points is None else points.to(g.device)
    rows = torch.arange(h, device=g.device, dtype=torch.float64)
    cols = torch.arange(w, device=g.device, dtype=torch.float64)
    d2 = (rows[None, :, None] - p[:, 0, None, None]) ** 2 + (cols[None, None, :] - p[:, 1, None, None]) ** 2
    near = d2 <= tolerance ** 2 if inclusive else d2 < tolerance ** 2
    hits = (near & g).flatten(1).any(1).float()
    return _nan_where_empty(hits, g)


def centre_points(n: int, size: tuple[int, int]) -> torch.Tensor:
    """The centre baseline's point (w/2, h/2) for n images of ``size`` (§5.3), as (row, col)."""
    h, w = size
    return torch.tensor([[h // 2, w // 2]]).expand(n, 2)


def energy_pointing_game(s: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """EBPG (§6): Σ_{λ∈G} S(λ) / Σ_λ S(λ); 0 when Σ S = 0."""
    s = s.float().flatten(1)
    total = s.sum(1)
    inside = (s * g.flatten(1)).sum(1)
    val = torch.where(total > 0, inside / torch.where(total > 0, total, torch.ones_like(total)),
                      torch.zeros_like(total))
    return _nan_where_empty(val, g)


def bbox_score(s: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Bbox (§7): with n = |G|, the share of the n highest pixels of S (stable ties, raster order) that lie in G."""
    gf = g.flatten(1)
    n = gf.sum(1)
    top = pixel_ranks(s.float()) < n[:, None]
    val = (top & gf).sum(1).float() / n.clamp_min(1).float()
    return _nan_where_empty(val, g)


def otsu_thresholds(s: torch.Tensor, bins: int = 256) -> torch.Tensor:
    """(N,) Otsu threshold of each map on [0,1] (``bins`` bins; foreground is S > threshold, threshold = the centre of
    the last background bin)."""
    n = s.shape[0]
    b = (s.flatten(1).float() * bins).long().clamp_(0, bins - 1)
    hist = torch.bincount((b + bins * torch.arange(n, device=s.device)[:, None]).flatten(),
                          minlength=n * bins).view(n, bins).double()
    p = hist / hist.sum(1, keepdim=True)
    centres = (torch.arange(bins, device=s.device, dtype=torch.float64) + 0.5) / bins
    omega = p.cumsum(1)
    mu = (p * centres).cumsum(1)
    mu_t = mu[:, -1:]
    denom = omega * (1 - omega)
    between = torch.where(denom > 0, (mu_t * omega - mu) ** 2 / torch.where(denom > 0, denom, torch.ones_like(denom)),
                          torch.zeros_like(denom))
    return centres[between.argmax(1)].to(s.dtype)


def binarize(s: torch.Tensor, rule: str = "frac_max", threshold: float = 0.2) -> torch.Tensor:
    """(N,H,W) bool (§8.1): ``frac_max`` S ≥ t·max S; ``mean_std`` S > mean + std (population std); ``otsu``;
    ``value`` S ≥ t."""
    flat = s.float().flatten(1)
    if rule == "frac_max":
        out = flat >= threshold * flat.max(1, keepdim=True).values
        out &= flat.max(1, keepdim=True).values > 0
    elif rule == "mean_std":
        out = flat > flat.mean(1, keepdim=True) + flat.std(1, unbiased=False, keepdim=True)
    elif rule == "otsu":
        out = flat > otsu_thresholds(s)[:, None]
    elif rule == "value":
        out = flat >= threshold
    else:
        raise ValueError(f"rule must be one of {IOU_RULES}, got {rule!r}")
    return out.view(s.shape)


def largest_component_boxes(b: torch.Tensor) -> torch.Tensor:
    """(N,4) float64 half-open box (x1,y1,x2,y2) of the largest 8-connected component of each binary map; NaN when
    the map is empty. Components by max-label propagation (3×3 max pooling) until nothing changes."""
    n, h, w = b.shape
    fg = b[:, None].to(torch.float64)
    labels = (torch.arange(1, h * w + 1, device=b.device, dtype=torch.float64).view(1, 1, h, w) * fg)
    while True:
        nxt = F.max_pool2d(labels, 3, stride=1, padding=1) * fg
        if torch.equal(nxt, labels):
            break
        labels = nxt
    lab = labels.view(n, -1).long()
    counts = torch.zeros(n, h * w + 1, dtype=torch.long, device=b.device)
    counts.scatter_add_(1, lab, torch.ones_like(lab))
    counts[:, 0] = 0
    best = counts.argmax(1)                                                         # largest label (ties: smallest)
    comp = (lab == best[:, None]) & (best[:, None] > 0)
    comp = comp.view(n, h, w)
    rows_any, cols_any = comp.any(2), comp.any(1)
    ar_h = torch.arange(h, device=b.device)
    ar_w = torch.arange(w, device=b.device)
    big = max(h, w) + 1
    y1 = torch.where(rows_any, ar_h, big).min(1).values
    y2 = torch.where(rows_any, ar_h, -1).max(1).values + 1
    x1 = torch.where(cols_any, ar_w, big).min(1).values
    x2 = torch.where(cols_any, ar_w, -1).max(1).values + 1
    out = torch.stack([x1, y1, x2, y2], 1).double()
    return torch.where((best > 0)[:, None], out, torch.full_like(out, float("nan")))


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU of half-open boxes a (N,4) and b (M,4) → (N,M)."""
    a, b = a.double(), b.double()
    ix = (torch.minimum(a[:, None, 2], b[None, :, 2]) - torch.maximum(a[:, None, 0], b[None, :, 0])).clamp_min(0)
    iy = (torch.minimum(a[:, None, 3], b[None, :, 3]) - torch.maximum(a[:, None, 1], b[None, :, 1])).clamp_min(0)
    inter = ix * iy
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return torch.where(union > 0, inter / torch.where(union > 0, union, torch.ones_like(union)),
                       torch.zeros_like(union))


def iou(s: torch.Tensor, g: torch.Tensor, rule: str = "frac_max", threshold: float = 0.2, kind: str = "pixel",
        boxes: Sequence[torch.Tensor] | None = None) -> torch.Tensor:
    """IoU (§8.2) of the binarised map with the ground truth. ``kind="pixel"``: |B ∩ G| / |B ∪ G|.
    ``kind="box"``: the box of B's largest 8-connected component vs each ground-truth box of the sample (``boxes``:
    a list of (M_i,4) tensors), max IoU. An empty B gives 0."""
    bmap = binarize(s, rule, threshold)
    if kind == "pixel":
        bf, gf = bmap.flatten(1), g.flatten(1)
        inter = (bf & gf).sum(1).float()
        union = (bf | gf).sum(1).float()
        val = inter / union.clamp_min(1)
    elif kind == "box":
        if boxes is None or len(boxes) != s.shape[0]:
            raise ValueError("kind='box' needs the ground-truth boxes of every sample")
        pred = largest_component_boxes(bmap)
        vals = []
        for i, gt in enumerate(boxes):
            gt = torch.as_tensor(gt, dtype=torch.float64, device=pred.device).reshape(-1, 4)
            if torch.isnan(pred[i]).any() or gt.shape[0] == 0:
                vals.append(torch.zeros((), dtype=torch.float64, device=pred.device))
            else:
                vals.append(box_iou(pred[i:i + 1], gt).max())
        val = torch.stack(vals).float()
    else:
        raise ValueError(f"kind must be one of {IOU_KINDS}, got {kind!r}")
    return _nan_where_empty(val, g)
