"""Leave the user's model exactly as it was: eval mode during a call, flags and hooks restored afterwards."""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from torch import nn


def _hook_counts(model: nn.Module) -> dict[int, tuple[int, ...]]:
    counts = {}
    for m in model.modules():
        counts[id(m)] = (
            len(m._forward_hooks), len(m._forward_pre_hooks),
            len(m._backward_hooks), len(getattr(m, "_backward_pre_hooks", {})),
        )
    return counts


@contextlib.contextmanager
def preserved(model: nn.Module, eval_mode: bool = True) -> Iterator[nn.Module]:
    """Run a block with ``model`` in eval mode; restore every ``training`` and ``requires_grad`` flag on exit.

    Also asserts (on success) that no hook was left behind. Nothing here changes parameter values.
    """
    training = {m: m.training for m in model.modules()}
    requires_grad = {p: p.requires_grad for p in model.parameters()}
    hooks_before = _hook_counts(model)
    if eval_mode:
        model.eval()
    try:
        yield model
    finally:
        for m, flag in training.items():
            m.training = flag
        for p, flag in requires_grad.items():
            if p.requires_grad != flag:
                p.requires_grad_(flag)
    if _hook_counts(model) != hooks_before:  # pragma: no cover - a bug in cnnlens, never the user's fault
        raise RuntimeError("cnnlens left a hook on the model; please report this bug")


def model_device(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    for b in model.buffers():
        return b.device
    return torch.device("cpu")


def model_dtype(model: nn.Module) -> torch.dtype:
    for p in model.parameters():
        if p.is_floating_point():
            return p.dtype
    return torch.float32
