"""The model-randomisation sanity check as a per-image score (for ``cnnlens evaluate --metrics model-randomisation``).

``model_randomisation_score`` = max(ρ, ρ_abs) per image between the map of the trained model and the map of the same
image, target and layer on a copy of the model with *every* block re-initialised (the end of Adebayo et al.'s cascade;
the weights equal those of :func:`cnnlens.sanity.cascade`'s last step for the same seed). Lower is better (↓): a
method whose map survives randomisation scores near 1. NaN for an image whose trained-model map is constant.
The randomised copy is cached for the last (model, parameter versions, seed, blocks) seen, so a run over many batches
copies and re-initialises the model once. The copy is made under the model's lock (:func:`cnnlens.model_lock`: no
other thread's cnnlens call has hooks on it meanwhile) and the cache is read and filled under its own lock.
"""
from __future__ import annotations

import threading
import weakref
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from .randomize import _assign, model_copy, randomisation_blocks, random_block_state
from .similarity import comparison_maps, rank_correlation

_CACHE: dict[str, Any] = {}
_CACHE_LOCK = threading.Lock()          # taken after the model's lock (never the other way round)


def randomised_copy(model: nn.Module, seed: int = 0, blocks: Sequence[str] | None = None) -> nn.Module:
    """A copy of ``model`` with every randomisation block re-initialised (cached for the last model seen)."""
    from .._state import model_lock
    from ..lrp.graph import parameter_versions
    with model_lock(model), _CACHE_LOCK:
        key = (parameter_versions(model), int(seed), None if blocks is None else tuple(blocks))
        ref = _CACHE.get("model")
        if ref is not None and ref() is model and _CACHE.get("key") == key:
            return _CACHE["copy"]
        _CACHE.clear()
        clone = model_copy(model)
        for k, block in enumerate(randomisation_blocks(model, blocks)):
            _assign(clone, random_block_state(clone, block, k, seed))
        _CACHE.update(model=weakref.ref(model), key=key, copy=clone)
        return clone


def clear_cache() -> None:
    """Drop the cached randomised copy."""
    with _CACHE_LOCK:
        _CACHE.clear()


def model_randomisation_score(model: nn.Module, x: torch.Tensor, target, method: str, *, layer=None,
                              options: Mapping[str, Any] | None = None, seed: int = 0,
                              blocks: Sequence[str] | None = None,
                              original_raw: torch.Tensor | None = None) -> torch.Tensor:
    """(N,) float64: max(Spearman ρ of the maps, ρ of |maps|) per image, trained vs fully randomised model.

    target: the explained classes (pass the per-image targets the trained model's map used); layer: the layer of
    the trained model's map (CAMs), the same on the copy; original_raw: the trained model's raw map (N,h,w) when
    already computed (saves one explanation). ``model`` is not changed.
    """
    from ..api import explain
    from ..errors import InputError
    if original_raw is not None and target is None:
        raise InputError("model_randomisation_score: pass the targets of original_raw (the randomised model's own "
                         "top-1 would be another class)")
    opts = dict(options or {})
    size = (int(x.shape[-2]), int(x.shape[-1]))
    if original_raw is None:
        original = explain(model, x, method, target=target, layer=layer, **opts)
        original_raw = original.raw
        target = original.target
    rand = explain(randomised_copy(model, seed, blocks), x, method, target=target, layer=layer, **opts)
    a = comparison_maps(original_raw, size)
    b = comparison_maps(rand.raw, size)
    rho = torch.nan_to_num(rank_correlation(a, b), nan=0.0)
    rho_abs = torch.nan_to_num(rank_correlation(a.abs(), b.abs()), nan=0.0)
    flat = a.reshape(a.shape[0], -1)
    constant = flat.amax(1) == flat.amin(1)
    score = torch.maximum(rho, rho_abs)
    return torch.where(constant, torch.full_like(score, float("nan")), score)
