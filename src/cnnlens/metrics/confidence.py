"""Average Drop / Increase in Confidence: the standard definitions (Chattopadhay et al., WACV 2018; metrics.md §1)
and the Relevance-CAM variants (issue #5 of mongeoroo/Relevance-CAM; metrics.md §2).

Per-sample values are returned so that the dataset figure is their mean (NaN = excluded from the mean):

- ``average_drop``: 100·max(0, Y−O)/Y → AD = mean (÷N). NaN where Y = 0 (skipped, flagged).
- ``increase_in_confidence``: 100·1[O > Y] → IC = mean (ties are not increases).
- ``average_drop_rcam``: 100·(Y−O)/Y where Y > O, NaN elsewhere → AD_rcam = Σ drops ÷ #drops = nan-mean.
- ``average_increase_rcam``: 100·1[Y ≤ O] → AI_rcam = 100·(1 − mean 1[Y > O]) (ties count as increases).
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from .._batching import check_max_batch
from .saliency import saliency
from .scoring import batched_scores, mask_input


def average_drop(y: torch.Tensor, o: torch.Tensor) -> torch.Tensor:
    """Eq. of §1: 100·max(0, Y−O)/Y per sample; NaN where Y ≤ 0."""
    y, o = y.float(), o.float()
    safe = torch.where(y > 0, y, torch.ones_like(y))
    return torch.where(y > 0, 100.0 * torch.relu(y - o) / safe, torch.full_like(y, float("nan")))


def increase_in_confidence(y: torch.Tensor, o: torch.Tensor) -> torch.Tensor:
    """§1: 100·1[O > Y] per sample (strict)."""
    return 100.0 * (o.float() > y.float()).float()


def average_drop_rcam(y: torch.Tensor, o: torch.Tensor) -> torch.Tensor:
    """§2 (``denominator="drops"``): 100·(Y−O)/Y where Y > O, NaN elsewhere (excluded: the mean divides by #drops)."""
    y, o = y.float(), o.float()
    drop = (y > o) & (y > 0)
    safe = torch.where(y > 0, y, torch.ones_like(y))
    return torch.where(drop, 100.0 * (y - o) / safe, torch.full_like(y, float("nan")))


def average_increase_rcam(y: torch.Tensor, o: torch.Tensor) -> torch.Tensor:
    """§2 (``ties="increase"``): 100·1[Y ≤ O] per sample, so the mean is 100·(1 − mean 1[Y > O])."""
    return 100.0 * (y.float() <= o.float()).float()


def rcam_mask(s: torch.Tensor, keep_fraction: float = 0.5) -> torch.Tensor:
    """§2: keep S where S > τ (strict), τ = the k-th largest value with k = round(keep_fraction·HW) (25,088 at 224²);
    soft values kept, zeros elsewhere. ``s``: (N,H,W) in [0,1]."""
    if not 0 < keep_fraction <= 1:
        raise ValueError(f"keep_fraction must be in (0, 1], got {keep_fraction}")
    flat = s.flatten(1)
    k = max(1, int(round(keep_fraction * flat.shape[1])))
    tau = flat.topk(k, dim=1).values[:, -1:]
    return torch.where(flat > tau, flat, torch.zeros_like(flat)).reshape(s.shape)


def confidence_pair(model: nn.Module, x: torch.Tensor, maps: torch.Tensor, target: torch.Tensor, *,
                    variant: str = "standard", mask_space: str = "raw", mean: Sequence[float] | None = None,
                    std: Sequence[float] | None = None, score: str = "softmax", keep_fraction: float = 0.5,
                    base_scores: torch.Tensor | None = None, batch_size: int | None = None,
                    max_batch: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(Y, O): Ψ_c of the image and of the image masked by the explanation (one batched forward each).

    maps: (N,h,w) explanations (resized to the input and min–max normalised here, §0.1).
    variant: ``"standard"`` (full soft map, §1) or ``"rcam"`` (top-``keep_fraction`` soft map, §2).
    base_scores: Y when already known (the original's forward is shared across methods, §12).
    batch_size: images per forward (None: all), at most ``max_batch``; on an out-of-memory error the chunk is halved
    and retried (same values).
    """
    s = saliency(maps, tuple(x.shape[-2:]))
    if variant == "rcam":
        s = rcam_mask(s, keep_fraction)
    elif variant != "standard":
        raise ValueError(f"variant must be 'standard' or 'rcam', got {variant!r}")
    max_batch = check_max_batch(max_batch)
    if max_batch is not None:
        batch_size = min(batch_size or max_batch, max_batch)
    target = target.to(x.device)
    y = batched_scores(model, x, target, score, batch_size) if base_scores is None else base_scores.float()
    o = batched_scores(model, mask_input(x, s.to(x.device), mask_space=mask_space, mean=mean, std=std), target,
                       score, batch_size)
    return y, o
