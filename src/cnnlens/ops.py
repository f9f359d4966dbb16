"""Small tensor operations shared by every method: guarded min-max normalisation and resizing (specs/README §2.3)."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def minmax(maps: torch.Tensor, eps: float = 0.0) -> torch.Tensor:
    """Per-sample min-max over all but the first dimension; a constant map becomes zeros, never NaN."""
    flat = maps.reshape(maps.shape[0], -1)
    lo = flat.min(dim=1, keepdim=True).values
    hi = flat.max(dim=1, keepdim=True).values
    span = hi - lo
    safe = torch.where(span > 0, span + eps, torch.ones_like(span))
    out = torch.where(span > 0, (flat - lo) / safe, torch.zeros_like(flat))
    return out.reshape(maps.shape)


def resize(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize (``align_corners=False``) of (N,h,w) or (N,C,h,w) maps to ``size``."""
    squeeze = maps.dim() == 3
    m = maps.unsqueeze(1) if squeeze else maps
    if tuple(m.shape[-2:]) != tuple(size):
        m = F.interpolate(m, size=size, mode="bilinear", align_corners=False)
    return m.squeeze(1) if squeeze else m


def display_map(raw: torch.Tensor, size: tuple[int, int], order: str = "before_resize") -> torch.Tensor:
    """Display map in [0,1] at input resolution: min-max at feature resolution then bilinear upsampling (default),
    or upsample first (``order="after_resize"``). ``raw`` is (N,h,w)."""
    raw = raw.detach()
    if order == "before_resize":
        return resize(minmax(raw), size).clamp_(0.0, 1.0)
    if order == "after_resize":
        return minmax(resize(raw, size))
    raise ValueError(f"normalize must be 'before_resize' or 'after_resize', got {order!r}")


def signed_display(raw: torch.Tensor) -> torch.Tensor:
    """Map a signed map to [0,1] symmetrically: 0.5 is zero relevance, 0/1 are -/+ max|map| (per sample)."""
    flat = raw.detach().reshape(raw.shape[0], -1)
    peak = flat.abs().max(dim=1, keepdim=True).values
    safe = torch.where(peak > 0, peak, torch.ones_like(peak))
    return (0.5 + 0.5 * flat / safe).reshape(raw.shape)
