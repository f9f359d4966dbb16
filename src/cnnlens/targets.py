"""Resolve the user's ``target=`` into one class index per sample."""
from __future__ import annotations

from typing import Any, Callable, Sequence

import torch

from .errors import TargetError, suggest

TargetSpec = Any  # None | int | str | Sequence[int | str] | Tensor | Callable[[Tensor], Tensor]


def class_index(name: str, class_names: Sequence[str] | None) -> int:
    """Map a class name (case-insensitive; also any comma-separated synonym) to its index."""
    if not class_names:
        raise TargetError(f"target {name!r} is a class name but the model has no class names; pass an index")
    key = name.strip().lower()
    for i, cn in enumerate(class_names):
        if cn.lower() == key or key in [s.strip().lower() for s in cn.split(",")]:
            return i
    raise TargetError(f"unknown class name {name!r}.{suggest(name, class_names)}")


def resolve_targets(target: TargetSpec, logits: torch.Tensor,
                    class_names: Sequence[str] | None = None) -> torch.Tensor:
    """Return a LongTensor (N,) on the logits' device: default each sample's top-1 class."""
    n, c = logits.shape[0], logits.shape[-1]
    if target is None:
        return logits.detach().argmax(dim=-1)
    if callable(target) and not isinstance(target, torch.Tensor):
        return resolve_targets(target(logits.detach()), logits, class_names)
    if isinstance(target, str):
        target = class_index(target, class_names)
    if isinstance(target, bool):
        raise TargetError("target must be a class index or name, not a bool")
    if isinstance(target, int):
        values = [target] * n
    elif isinstance(target, torch.Tensor):
        if target.dtype.is_floating_point or target.dtype == torch.bool:
            raise TargetError(f"target tensor must hold integer class indices, got {target.dtype}")
        values = target.reshape(-1).tolist()
    elif isinstance(target, Sequence):
        values = [class_index(t, class_names) if isinstance(t, str) else t for t in target]
    else:
        raise TargetError(f"target must be an int, a class name, a per-sample list or tensor, got {type(target).__name__}")
    if len(values) == 1 and n > 1:
        values = values * n
    if len(values) != n:
        raise TargetError(f"got {len(values)} targets for a batch of {n} samples")
    for v in values:
        if not isinstance(v, int) or isinstance(v, bool):
            raise TargetError(f"target {v!r} is not an integer class index")
        if not 0 <= v < c:
            raise TargetError(f"target class {v} is out of range: the model has {c} classes (0..{c - 1})")
    return torch.tensor(values, dtype=torch.long, device=logits.device)
