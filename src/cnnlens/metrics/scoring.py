"""Class scores Ψ_c (metrics.md §0.3) and masking of inputs by a saliency map (§0.4)."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from .._logits import logits_of
from .._state import preserved

SCORES = ("softmax", "sigmoid", "logit")
MASK_SPACES = ("raw", "normalized")


def class_scores(logits: torch.Tensor, target: torch.Tensor, score: str = "softmax") -> torch.Tensor:
    """Ψ_c per sample: softmax probability (default), sigmoid (multi-label heads) or the logit. Returns (N,) float32.
    ``logits`` may be a model's output object (``.logits``, a dict with "logits", a tuple: cnnlens._logits)."""
    logits = logits_of(logits).float()
    if score == "softmax":
        s = logits.softmax(-1)
    elif score == "sigmoid":
        s = logits.sigmoid()
    elif score == "logit":
        s = logits
    else:
        raise ValueError(f"score must be one of {SCORES}, got {score!r}")
    return s.gather(1, target.reshape(-1, 1).to(s.device))[:, 0]


def batched_scores(model: nn.Module, x: torch.Tensor, target: torch.Tensor, score: str = "softmax",
                   batch_size: int | None = None) -> torch.Tensor:
    """Ψ_c(model(x)) in chunks of ``batch_size`` (all at once when None); ``target`` has one class per row of x.
    The model runs in eval mode; its flags are restored afterwards (metrics.md §0.5). On an out-of-memory error the
    chunk is halved and retried (same scores)."""
    from .._batching import AdaptiveChunks, input_key
    total = x.shape[0]
    out = torch.empty(total, dtype=torch.float32, device=x.device)

    def chunk(i: int, j: int) -> None:
        out[i:j] = class_scores(model(x[i:j]), target[i:j], score)

    with preserved(model), torch.inference_mode():
        AdaptiveChunks(total, min(batch_size or total, total) or 1, desc="scores", unit="image", owner=model,
                       key=input_key("scores", x)).run(chunk)
    return out


def _stats(values: Sequence[float] | torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(values, dtype=x.dtype, device=x.device).reshape(1, -1, 1, 1)


def mask_input(x: torch.Tensor, s: torch.Tensor, *, mask_space: str = "raw",
               mean: Sequence[float] | None = None, std: Sequence[float] | None = None) -> torch.Tensor:
    """I ⊙ S for a normalised batch ``x`` (N,C,H,W) and maps ``s`` (N,H,W) at the input resolution (§0.4).

    ``"raw"`` (default): un-normalise to [0,1] with ``mean``/``std``, multiply, re-normalise (removed pixels are black).
    ``"normalized"``: multiply the normalised tensor (removed pixels take the dataset mean colour).
    """
    m = s.to(x.dtype)[:, None]
    if mask_space == "normalized":
        return x * m
    if mask_space != "raw":
        raise ValueError(f"mask_space must be one of {MASK_SPACES}, got {mask_space!r}")
    if mean is None or std is None:
        raise ValueError("mask_space='raw' needs the model's normalisation mean and std")
    mu, sd = _stats(mean, x), _stats(std, x)
    return ((x * sd + mu) * m - mu) / sd
