"""Shared machinery of the perturbation methods (SISE, RISE; sise.md §2): the score Ψ, masking in raw or normalised
input space, batched no-grad forwards with optional autocast, and an optional progress bar."""
from __future__ import annotations

import contextlib
from typing import Iterable, Iterator, Sequence

import torch
from torch import nn

from ..errors import MethodError

SCORES = ("probability", "sigmoid", "logit")
MASK_SPACES = ("raw", "normalized")
PRECISIONS = ("fp32", "fp16", "bf16")


def check_choice(name: str, value, choices: Sequence) -> None:
    if value not in choices:
        raise MethodError(f"option {name}={value!r} is not one of {', '.join(repr(c) for c in choices)}")


def check_positive_int(name: str, value) -> int:
    """A positive int (a digit string, as ``--option k=v`` may pass, is accepted)."""
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise MethodError(f"option {name} must be a positive integer, got {value!r}")
    return value


def check_number(name: str, value) -> float:
    """A finite real number (a numeric string is accepted)."""
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            pass
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        raise MethodError(f"option {name} must be a number, got {value!r}")
    return float(value)


def score_of(logits: torch.Tensor, score: str) -> torch.Tensor:
    """Ψ for every class: softmax probability (single-label head), sigmoid (multi-label head) or the logit."""
    logits = logits.float()
    if score == "probability":
        return logits.softmax(-1)
    if score == "sigmoid":
        return logits.sigmoid()
    if score == "logit":
        return logits
    raise MethodError(f"score must be one of {SCORES}, got {score!r}")


def input_normalisation(model: nn.Module, x: torch.Tensor, mean, std) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(mean, std) as (1,C,1,1) tensors: from the options, else ``model.cnnlens_meta``; None when unknown (the
    model then consumes the raw image and both mask spaces coincide)."""
    if mean is None and std is None:
        meta = getattr(model, "cnnlens_meta", None)
        mean, std = getattr(meta, "mean", None), getattr(meta, "std", None)
    if mean is None and std is None:
        return None
    if mean is None or std is None:
        raise MethodError("give both mean= and std= (the input normalisation) or neither")
    c = x.shape[1]
    m = torch.as_tensor(mean, dtype=x.dtype, device=x.device).reshape(-1)
    s = torch.as_tensor(std, dtype=x.dtype, device=x.device).reshape(-1)
    if m.numel() not in (1, c) or s.numel() not in (1, c):
        raise MethodError(f"mean/std must have 1 or {c} values, got {m.numel()} and {s.numel()}")
    if not bool((s > 0).all()):
        raise MethodError("std must be positive")
    return m.expand(c).reshape(1, c, 1, 1), s.expand(c).reshape(1, c, 1, 1)


def apply_masks(x: torch.Tensor, masks: torch.Tensor, space: str,
                norm: tuple[torch.Tensor, torch.Tensor] | None) -> torch.Tensor:
    """x: (B,C,H,W) normalised inputs (one per mask), masks: (B,H,W) → masked inputs (B,C,H,W).

    ``space="normalized"``: x ⊙ m (masked pixels take the mean colour). ``space="raw"``: ((x·σ+μ) ⊙ m − μ)/σ (masked
    pixels are black in the [0,1] image, the SISE reference). Without a known normalisation both are x ⊙ m."""
    m = masks.unsqueeze(1).to(x.dtype)
    if space == "normalized" or norm is None:
        return x * m
    mean, std = norm
    # ((x·σ+μ)·m − μ)/σ = x·m + (m − 1)·μ/σ
    return x * m + (m - 1) * (mean / std)


def autocast_context(device: torch.device, precision: str):
    """Autocast for the masked forwards only (fp32 default; fp16/bf16 perturb scores and can flip gates)."""
    check_choice("precision", precision, PRECISIONS)
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.float16 if precision == "fp16" else torch.bfloat16
    return torch.autocast(device_type=device.type, dtype=dtype)


def progress_bar(iterable: Iterable, total: int, enabled: bool, desc: str) -> Iterator:
    """tqdm when ``enabled`` (imported only then), else the iterable itself."""
    if not enabled:
        return iter(iterable)
    from tqdm.auto import tqdm
    return iter(tqdm(iterable, total=total, desc=desc, unit="batch"))


def chunks(total: int, size: int) -> list[tuple[int, int]]:
    return [(s, min(s + size, total)) for s in range(0, total, size)]
