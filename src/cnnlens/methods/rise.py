"""RISE — Randomized Input Sampling for Explanation (Petsiuk, Das, Saenko, BMVC 2018, arXiv 1806.07421); sise.md §R.

S_c(λ) = 1/(N·p) Σ_i f_c(I ⊙ M_i) · M_i(λ) (Eq. 6 of the paper, Monte-Carlo estimate of E[f_c(I ⊙ M) | M(λ) = 1]).
Masks: an s×s Bernoulli(p) grid, upsampled bilinearly and cropped to H×W at a random shift in [0, c)², c = ⌈H/s⌉.
Grids and shifts for all masks are drawn up front from a seeded generator on the input's device (they are tiny); the
H×W masks are built per batch by two small matrix products, never all at once, so the output depends on the seed
only (not on ``batch_size``).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch

from .._batching import AdaptiveChunks, check_max_batch, input_key
from ..errors import MethodError
from ..ops import minmax
from ._perturb import (MASK_SPACES, SCORES, apply_masks, autocast_context, check_choice, check_number,
                       check_positive_int, input_normalisation, score_of)
from .registry import MapResult, MethodOutput, Request, register

UPSAMPLES = ("rise", "torchray")


def _mirror(idx: torch.Tensor, n: int) -> torch.Tensor:
    """Mirror (reflect without edge repeat) an index into 0..n−1: −1 → 1, n → n−2."""
    idx = torch.where(idx < 0, -idx, idx)
    return torch.where(idx > n - 1, 2 * (n - 1) - idx, idx)


def _linear_matrix(src: torch.Tensor, n_in: int) -> torch.Tensor:
    """(len(src), n_in) matrix of 1-D linear interpolation at source coordinates ``src`` with mirrored borders."""
    i0 = torch.floor(src)
    frac = src - i0
    i0 = i0.long()
    mat = torch.zeros(src.shape[0], n_in, dtype=torch.float64)
    rows = torch.arange(src.shape[0])
    mat.index_put_((rows, _mirror(i0, n_in)), 1 - frac, accumulate=True)
    mat.index_put_((rows, _mirror(i0 + 1, n_in)), frac, accumulate=True)
    return mat


def upsample_matrix(cells: int, cell: int, length: int, mode: str = "rise") -> torch.Tensor:
    """Rows of the upsampled grid along one axis as a (length + cell, cells) matrix of interpolation weights; a mask
    shifted by δ uses rows δ..δ+length−1.

    "rise" (official code): skimage ``resize(order=1, mode='reflect')`` of the s cells to (s+1)·c samples
    (half-pixel centres, mirrored borders). "torchray": mirror-pad by one cell, bilinear (align_corners=False, edge
    clamp) to c·(s+2), keep from offset c."""
    if cells < 2:
        raise MethodError("RISE needs cells ≥ 2 (mirrored borders)")
    if mode == "rise":
        n_out = (cells + 1) * cell
        src = (torch.arange(n_out, dtype=torch.float64) + 0.5) * cells / n_out - 0.5
        mat = _linear_matrix(src, cells)
    else:
        n_pad = cells + 2
        src = ((torch.arange(cell * n_pad, dtype=torch.float64) + 0.5) / cell - 0.5).clamp(min=0.0)
        src = torch.minimum(src, torch.tensor(float(n_pad - 1), dtype=torch.float64))
        padded = _linear_matrix(src, n_pad)               # on the padded grid (no mirroring needed inside)
        fold = torch.zeros(n_pad, cells, dtype=torch.float64)
        fold[torch.arange(n_pad), _mirror(torch.arange(n_pad) - 1, cells)] = 1.0
        mat = (padded @ fold)[cell:]
    return mat[:length + cell]


def random_grids(n: int, cells: int, p: float, seed: int, device: torch.device,
                 max_shift: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """All N binary grids (N,s,s) and shifts (N,), (N,) from one seeded generator on ``device``."""
    gen = torch.Generator(device=device)
    gen.manual_seed(int(seed))
    grids = (torch.rand(n, cells, cells, generator=gen, device=device) < p).float()
    dy = torch.randint(0, max_shift[0], (n,), generator=gen, device=device)
    dx = torch.randint(0, max_shift[1], (n,), generator=gen, device=device)
    return grids, dy, dx


def build_masks(grids: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor,
                size: tuple[int, int]) -> torch.Tensor:
    """Masks M_b = Ry[δy_b : δy_b+H] · G_b · Rx[δx_b : δx_b+W]ᵀ for a batch of grids. Returns (B,H,W)."""
    h, w = size
    ry = rows[dy[:, None] + torch.arange(h, device=dy.device)]          # (B,H,s)
    rx = cols[dx[:, None] + torch.arange(w, device=dx.device)]          # (B,W,s)
    return torch.bmm(torch.bmm(ry, grids), rx.transpose(1, 2))


@register("rise", "RISE: random up-sampled binary masks, saliency = score-weighted mask average (Petsiuk et al. "
                  "2018)", layers="none", family="perturbation")
def rise(req: Request, *, n_masks: int = 8000, cells: int = 7, p: float = 0.5, seed: int = 0, batch_size: int = 64,
         mask_upsample: str = "rise", mask_space: str = "normalized", score: str = "probability",
         masks: torch.Tensor | None = None, precision: str = "fp32", mean: Sequence[float] | None = None,
         std: Sequence[float] | None = None, max_batch: int | None = None) -> MethodOutput:
    """RISE saliency for each sample's target class.

    n_masks: N. cells: s, grid cells per side (cell size c = ⌈H/s⌉). p: keep probability of a cell. seed: generator
    seed (same seed and device → identical output; independent of batch_size). mask_upsample: "rise" (official,
    effective cell (s+1)c/s) | "torchray" (cell exactly c). mask_space: "normalized" (official: mask the normalised
    tensor) | "raw" (mask the de-normalised image: black; the SISE reference's RISE). score: "probability" (softmax)
    | "sigmoid" | "logit". masks: fixed (M,H,W) masks in [0,1] instead of random ones (n_masks/cells/seed unused).
    batch_size: masked images per forward. precision: "fp32" | "fp16" | "bf16" autocast for the masked forwards.
    max_batch: cap on the images per forward (memory); on an out-of-memory error the chunk is halved and retried
    (same result). Extras: ``chunk`` (masks per forward in the end, each for all N samples), ``chunk_halvings``.
    """
    check_choice("mask_upsample", mask_upsample, UPSAMPLES)
    check_choice("mask_space", mask_space, MASK_SPACES)
    check_choice("score", score, SCORES)
    batch_size = check_positive_int("batch_size", batch_size)
    max_batch = check_max_batch(max_batch)
    p = check_number("p", p)
    if not 0.0 < p <= 1.0:
        raise MethodError(f"option p must be in (0, 1], got {p!r}")
    if isinstance(seed, str) and seed.strip().lstrip("-").isdigit():
        seed = int(seed)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise MethodError(f"option seed must be an integer, got {seed!r}")
    model, x = req.model, req.x
    size = req.size
    n = x.shape[0]
    norm = input_normalisation(model, x, mean, std)
    amp = autocast_context(x.device, precision)

    with torch.inference_mode():
        logits = model(x)
    targets = req.resolve_targets(logits)

    if masks is not None:
        if not isinstance(masks, torch.Tensor) or masks.dim() not in (3, 4) or tuple(masks.shape[-2:]) != size \
                or (masks.dim() == 4 and masks.shape[1] != 1):
            raise MethodError(f"masks must be a tensor of shape (M,H,W) or (M,1,H,W) with H,W = {size}")
        fixed = masks.detach().reshape(masks.shape[0], *size).to(device=x.device, dtype=torch.float32)
        total = fixed.shape[0]
    else:
        total = check_positive_int("n_masks", n_masks)
        cells = check_positive_int("cells", cells)
        cell = (math.ceil(size[0] / cells), math.ceil(size[1] / cells))
        rows = upsample_matrix(cells, cell[0], size[0], mask_upsample).float().to(x.device)
        cols = upsample_matrix(cells, cell[1], size[1], mask_upsample).float().to(x.device)
        grids, dy, dx = random_grids(total, cells, p, seed, x.device, cell)

    per_batch = max(1, min(batch_size, max_batch or batch_size) // n)
    acc_dtype = torch.float32 if x.device.type == "mps" else torch.float64
    sal = torch.zeros(n, size[0] * size[1], dtype=acc_dtype, device=x.device)

    def step(start: int, stop: int) -> torch.Tensor:
        if masks is not None:
            m = fixed[start:stop]
        else:
            m = build_masks(grids[start:stop], dy[start:stop], dx[start:stop], rows, cols, size)
        b = m.shape[0]
        inputs = apply_masks(x.repeat_interleave(b, dim=0), m.repeat(n, 1, 1), mask_space, norm)
        with amp:
            out = model(inputs)
        s = score_of(out, score).gather(1, targets.repeat_interleave(b)[:, None]).reshape(n, b)
        return s.to(acc_dtype) @ m.reshape(b, -1).to(acc_dtype)

    def commit(start: int, stop: int, part: torch.Tensor) -> None:
        sal.add_(part)

    run = AdaptiveChunks(total, per_batch, desc="RISE", progress=req.progress, unit="mask", owner=model,
                         key=input_key("rise", x), inputs_per_item=n)
    with torch.inference_mode():
        run.run(step, commit)
    raw = (sal / (total * p)).reshape(n, *size).float()
    extras = {"n_masks": total, "chunk": run.chunk, "chunk_halvings": run.halvings,
              "options": {"cells": cells, "p": p, "seed": seed, "mask_upsample": mask_upsample,
                          "mask_space": mask_space, "score": score, "precision": precision,
                          "fixed_masks": masks is not None, "normalisation_known": norm is not None}}
    return MethodOutput(maps={None: MapResult(raw=raw, heatmap=minmax(raw), extras=extras)}, targets=targets,
                        logits=logits.clone())
