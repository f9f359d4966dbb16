"""The map S every metric reads (metrics.md §0.1): resized bilinearly (``align_corners=False``) to the metric's
resolution, then per-sample min–max to [0,1]; constant maps become zeros (flagged by :func:`constant_maps`)."""
from __future__ import annotations

import torch

from ..ops import minmax, resize

SIGNED_MODES = ("minmax", "relu")


def saliency(maps: torch.Tensor, size: tuple[int, int] | None = None, *, signed: bool = False,
             signed_mode: str = "minmax", zero: float = 0.0) -> torch.Tensor:
    """Return S (N,H,W) in [0,1], float32, detached.

    maps: (N,h,w) explanation maps. size: the metric resolution (None keeps h×w).
    signed / signed_mode: for signed maps, ``"minmax"`` (default; the Relevance-CAM AD snippet) or ``"relu"`` (clip at
    ``zero``, divide by the maximum). ``zero`` is the value meaning "no relevance" in ``maps`` (0.5 for cnnlens's
    signed heatmaps, 0 for raw maps).
    """
    if maps.dim() != 3:
        raise ValueError(f"maps must be (N,H,W), got shape {tuple(maps.shape)}")
    if signed_mode not in SIGNED_MODES:
        raise ValueError(f"signed_mode must be one of {SIGNED_MODES}, got {signed_mode!r}")
    s = maps.detach().float()
    if size is not None:
        s = resize(s, tuple(size))
    if signed and signed_mode == "relu":
        s = torch.relu(s - zero)
        peak = s.flatten(1).max(dim=1).values.clamp_min(torch.finfo(s.dtype).tiny)
        return (s / peak[:, None, None]).clamp_(0.0, 1.0)
    return minmax(s)


def constant_maps(maps: torch.Tensor) -> torch.Tensor:
    """(N,) bool: maps whose values are all equal (min–max gives zeros; metrics flag them)."""
    flat = maps.detach().flatten(1)
    return flat.max(dim=1).values == flat.min(dim=1).values
