"""Deletion and insertion curves and their AUC (Petsiuk et al., RISE, BMVC 2018; metrics.md §4).

Pixels are ordered by decreasing S at the input resolution (stable: ties in raster order, §4.1); ``step`` pixels change
per step, so a curve has ⌈HW/step⌉ + 1 points. Every perturbed image of every sample is built on the fly from the pixel
ranks and scored in batched forwards of ``batch_size`` images (§12: the dominant cost of an evaluation run).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .._batching import AdaptiveChunks, check_max_batch, input_key
from .._state import preserved

from .saliency import saliency
from .scoring import class_scores

DELETION_SUBSTRATES = ("zero_normalized", "black", "blur")
INSERTION_SUBSTRATES = ("blur", "zero_normalized")


def gaussian_kernel(size: int = 11, sigma: float = 5.0) -> torch.Tensor:
    """(size,size) float64 kernel: a centred delta Gaussian-filtered with σ (reflect boundary, truncate 4σ, as the
    reference's ``gkern`` built with ``scipy.ndimage.gaussian_filter``); it sums to 1 (§4.3)."""
    radius = int(4.0 * sigma + 0.5)
    taps = torch.arange(-radius, radius + 1, dtype=torch.float64)
    w = torch.exp(-0.5 * (taps / sigma) ** 2)
    w = w / w.sum()
    # 1-D filter of a delta at the centre under 'reflect' boundaries (d c b a | a b c d | d c b a)
    pos = torch.arange(size)[:, None] + taps.long()[None, :]       # (size, taps) positions read by each output
    period = 2 * size
    m = pos % period
    m = torch.where(m >= size, period - 1 - m, m)
    line = ((m == size // 2).double() * w[None, :]).sum(1)
    return line[:, None] * line[None, :]


def blur(x: torch.Tensor, size: int = 11, sigma: float = 5.0) -> torch.Tensor:
    """Per-channel Gaussian blur with zero padding (size//2), in whatever space ``x`` is (normalised: §4.3)."""
    k = gaussian_kernel(size, sigma).to(device=x.device, dtype=x.dtype)
    c = x.shape[1]
    return F.conv2d(x, k.expand(c, 1, size, size), padding=size // 2, groups=c)


def n_steps(hw: int, step: int) -> int:
    return math.ceil(hw / step)


def auc(curves: torch.Tensor) -> torch.Tensor:
    """Trapezoid AUC on [0,1] of (N, n_steps+1) curves: (Σ_k s_k − s_0/2 − s_n/2) / n_steps (§4.5)."""
    n = curves.shape[-1] - 1
    if n < 1:
        raise ValueError("a curve needs at least two points")
    return (curves.sum(-1) - 0.5 * curves[..., 0] - 0.5 * curves[..., -1]) / n


def pixel_ranks(s: torch.Tensor) -> torch.Tensor:
    """(N,HW) long: rank of every pixel in decreasing S, ties broken in raster order (stable sort)."""
    flat = s.flatten(1)
    order = torch.sort(flat, dim=1, descending=True, stable=True).indices
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(flat.shape[1], device=flat.device).expand_as(order))
    return ranks


def _substrate(x: torch.Tensor, kind: str, mean, std) -> torch.Tensor:
    if kind == "zero_normalized":
        return torch.zeros_like(x)
    if kind == "blur":
        return blur(x)
    if kind == "black":
        if mean is None or std is None:
            raise ValueError("substrate 'black' needs the model's normalisation mean and std")
        mu = torch.as_tensor(mean, dtype=x.dtype, device=x.device).reshape(1, -1, 1, 1)
        sd = torch.as_tensor(std, dtype=x.dtype, device=x.device).reshape(1, -1, 1, 1)
        return ((0.0 - mu) / sd).expand_as(x).contiguous()
    raise ValueError(f"unknown substrate {kind!r}")


def perturbation_curves(model: nn.Module, x: torch.Tensor, maps: torch.Tensor, target: torch.Tensor, *,
                        mode: str = "deletion", step: int = 224, substrate: str | None = None,
                        mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                        score: str = "softmax", batch_size: int = 64, max_batch: int | None = None) -> torch.Tensor:
    """(N, n_steps+1) scores Ψ_c along the deletion or insertion path (§4).

    Deletion starts from the image and replaces pixels by ``substrate`` (default ``"zero_normalized"``: zeros of the
    normalised tensor = the mean colour; ``"black"``; ``"blur"``). Insertion starts from ``substrate`` (default
    ``"blur"``: 11×11, σ = 5 in normalised space; or ``"zero_normalized"``) and copies pixels from the image.
    ``batch_size`` images per forward, at most ``max_batch``; on an out-of-memory error the chunk is halved and
    retried (same scores).
    """
    if mode not in ("deletion", "insertion"):
        raise ValueError(f"mode must be 'deletion' or 'insertion', got {mode!r}")
    allowed = DELETION_SUBSTRATES if mode == "deletion" else INSERTION_SUBSTRATES
    substrate = substrate or allowed[0]
    if substrate not in allowed:
        raise ValueError(f"{mode} substrate must be one of {allowed}, got {substrate!r}")
    if not isinstance(step, int) or step < 1:
        raise ValueError(f"step must be a positive integer, got {step!r}")
    max_batch = check_max_batch(max_batch)
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    batch_size = min(batch_size, max_batch or batch_size)
    n, c, h, w = x.shape
    hw = h * w
    steps = n_steps(hw, step)
    s = saliency(maps, (h, w)).to(x.device)
    order = torch.sort(s.flatten(1), dim=1, descending=True, stable=True).indices   # (N, HW) pixels by rank
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(hw, device=x.device).expand_as(order))
    target = target.to(x.device).reshape(-1)
    with preserved(model), torch.inference_mode():
        other = _substrate(x, substrate, mean, std)
        start, finish = (x, other) if mode == "deletion" else (other, x)
        thresholds = [min(k * step, hw) for k in range(steps + 1)]                     # pixels changed at step k
        total = n * (steps + 1)
        out = torch.empty(total, device=x.device, dtype=torch.float32)
        buf = torch.empty((min(batch_size, total), c, h, w), device=x.device, dtype=x.dtype)

        def chunk(i: int, j: int) -> None:
            """Scores of the perturbed images i..j−1 into out[i:j] (repeatable: a retry overwrites them)."""
            inp = buf[:j - i]
            # One segment per image in this chunk. Its first perturbed image is built from the pixel ranks; each
            # next one is a copy of the previous with the next `step` pixels (in rank order) changed, so building a
            # chunk costs about one contiguous copy per image (metrics.md §12: the forwards must dominate).
            # Built with one intra-op thread: these small copies gain nothing from threads, and on a busy CPU the
            # thread hand-offs cost far more than the copies (the forward below uses the caller's setting).
            threads = torch.get_num_threads() if x.device.type == "cpu" else 1
            if threads > 1:
                torch.set_num_threads(1)
            try:
                for a in range(i, j):
                    if a != i and a % (steps + 1) != 0:
                        continue
                    img = a // (steps + 1)
                    b = min(j, (img + 1) * (steps + 1))
                    k0 = a - img * (steps + 1)
                    first = inp[a - i]
                    changed = (ranks[img] < thresholds[k0]).view(1, h, w)
                    torch.where(changed, finish[img], start[img], out=first)
                    fin_flat = finish[img].reshape(c, hw)
                    for off in range(1, b - a):
                        k = k0 + off
                        cur = inp[a - i + off]
                        cur.copy_(inp[a - i + off - 1])
                        idx = order[img, thresholds[k - 1]:thresholds[k]]
                        cur.view(c, hw)[:, idx] = fin_flat[:, idx]
            finally:
                if threads > 1:
                    torch.set_num_threads(threads)
            tgt = target.repeat_interleave(steps + 1)[i:j] if n > 1 else target.expand(j - i)
            out[i:j] = class_scores(model(inp), tgt, score)

        AdaptiveChunks(total, batch_size, desc=f"{mode} curve", unit="image", owner=model,
                       key=input_key("curve", x)).run(chunk)
    return out.view(n, steps + 1)


def deletion_insertion(model: nn.Module, x: torch.Tensor, maps: torch.Tensor, target: torch.Tensor, *,
                       step: int = 224, deletion_substrate: str = "zero_normalized",
                       insertion_substrate: str = "blur", mean=None, std=None, score: str = "softmax",
                       batch_size: int = 64, max_batch: int | None = None) -> dict[str, torch.Tensor]:
    """Both curves and AUCs: {"deletion": (N,), "insertion": (N,), "deletion_curve": (N,K+1), "insertion_curve": ...}."""
    kw = dict(step=step, mean=mean, std=std, score=score, batch_size=batch_size, max_batch=max_batch)
    d = perturbation_curves(model, x, maps, target, mode="deletion", substrate=deletion_substrate, **kw)
    i = perturbation_curves(model, x, maps, target, mode="insertion", substrate=insertion_substrate, **kw)
    return {"deletion": auc(d), "insertion": auc(i), "deletion_curve": d, "insertion_curve": i}
