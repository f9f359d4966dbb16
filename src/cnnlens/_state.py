"""Leave the user's model exactly as it was: eval mode during a call, flags and hooks restored afterwards.

Thread safety: everything in cnnlens that hooks a model or changes its flags runs inside :func:`preserved`, which holds
the model's own re-entrant lock (:func:`model_lock`) for the whole block. Calls on one model from several threads
therefore run one after the other (each gets exactly the result it would get alone); calls on different models do
not wait for each other.
"""
from __future__ import annotations

import contextlib
import threading
import weakref
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


_LOCKS: "weakref.WeakKeyDictionary[nn.Module, threading.RLock]" = weakref.WeakKeyDictionary()
_LOCKS_GUARD = threading.Lock()


def model_lock(model: nn.Module) -> threading.RLock:
    """The re-entrant lock of ``model`` (one per model object, held weakly: it goes away with the model).

    Hold it to keep cnnlens from hooking or switching ``model`` from another thread meanwhile::

        with cnnlens._state.model_lock(model):
            ...
    """
    with _LOCKS_GUARD:
        lock = _LOCKS.get(model)
        if lock is None:
            lock = _LOCKS[model] = threading.RLock()
        return lock


@contextlib.contextmanager
def preserved(model: nn.Module, eval_mode: bool = True) -> Iterator[nn.Module]:
    """Run a block with ``model`` in eval mode; restore every ``training`` and ``requires_grad`` flag on exit.

    Holds the model's lock (:func:`model_lock`) for the whole block, so concurrent calls on one model cannot see each
    other's hooks or flags. Also asserts (on success) that no hook was left behind. Nothing here changes parameter
    values.
    """
    with model_lock(model):
        yield from _preserved(model, eval_mode)


def _preserved(model: nn.Module, eval_mode: bool) -> Iterator[nn.Module]:
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
