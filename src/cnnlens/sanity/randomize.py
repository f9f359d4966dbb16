"""Model-parameter randomisation (Adebayo et al., NeurIPS 2018, §3.1) on a copy of the model.

The parameterised layers are grouped into *blocks* and ordered from the logits down. Cascading randomisation
re-initialises block 1 (the logits), then blocks 1–2, ... (cumulative); independent randomisation re-initialises one
block at a time and leaves the rest trained. A block is re-initialised with its layers' own initialisers
(``reset_parameters()``; BatchNorm: ``reset_parameters()`` resets the running statistics and the affine weight/bias as
its constructor does) under a seed that depends only on (seed, block index), so cascade step k and independent step k
draw the same random weights for block k, on any device (the draw happens on the CPU).

Default blocks (``randomisation_blocks``): the root's own parameterised layers that follow each other without a
container in between form one block (``stem``: EfficientNet's ``conv_stem``+``bn1``, ResNet's ``conv1``+``bn1``;
``head``: ``conv_head``+``bn2``+``classifier``); every child of a plain top-level container (``nn.Sequential``,
``nn.ModuleList``, ``nn.ModuleDict``: EfficientNet ``blocks.N``, ResNet ``layerN.M``, VGG ``features.N``) is one
block, a normalisation layer joining the layer before it (VGG-BN's conv+BN); any other top-level module is one block.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Iterator, Sequence

import torch
from torch import nn

from ..errors import InputError, LayerError

_CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)
_NORMS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm, nn.LocalResponseNorm)


@dataclass(frozen=True)
class Block:
    """One randomisation unit: a display name and the module names it re-initialises (in model order)."""
    name: str
    modules: tuple[str, ...]


def _has_params(m: nn.Module) -> bool:
    return any(True for _ in m.parameters()) or any(True for _ in m.buffers())


def _own_params(m: nn.Module) -> bool:
    return any(True for _ in m.parameters(recurse=False)) or any(True for _ in m.buffers(recurse=False))


def _is_leafish(m: nn.Module) -> bool:
    """A module that is a layer, not a container of layers (it owns its parameters)."""
    return _own_params(m) and not any(_has_params(c) for c in m.children())


def _group_children(parent: nn.Module, prefix: str) -> list[list[str]]:
    """Groups of the parameterised children of ``parent`` (full names): each child is one group, except that a
    normalisation layer joins the layer right before it."""
    groups: list[list[str]] = []
    previous_leaf = False
    for name, child in parent.named_children():
        if not _has_params(child):
            continue
        if isinstance(child, _NORMS) and groups and previous_leaf:
            groups[-1].append(f"{prefix}{name}")
        else:
            groups.append([f"{prefix}{name}"])
        previous_leaf = _is_leafish(child)
    return groups


def randomisation_blocks(model: nn.Module, blocks: Sequence[str] | None = None) -> list[Block]:
    """The blocks of ``model`` ordered from the logits down (the cascade's order).

    blocks: optional module names, one per block, in forward order (e.g. ``["conv1+bn1", "layer1", ..., "fc"]``;
    ``a+b`` joins modules into one block); each block re-initialises its modules and everything inside them.
    Default: see the module docstring."""
    if blocks is not None:
        names = [str(b).strip() for b in blocks]
        if not names:
            raise LayerError("empty block list")
        mods = dict(model.named_modules())
        out = []
        for b in names:
            parts = tuple(p.strip() for p in b.split("+"))
            for part in parts:
                if part not in mods:
                    from ..errors import suggest
                    raise LayerError(f"unknown block {part!r}: no such module.{suggest(part, mods)}")
                if not _has_params(mods[part]):
                    raise LayerError(f"block {part!r} has no parameters or buffers to randomise")
            out.append(Block(b, parts))
        flat = [p for blk in out for p in blk.modules]
        if len(set(flat)) != len(flat):
            raise LayerError("a module is listed in two blocks")
        return out[::-1]
    groups: list[list[str]] = []
    run_open = False
    for name, child in model.named_children():
        if not _has_params(child):
            continue
        leafish = _is_leafish(child)
        if isinstance(child, _CONTAINERS) and not leafish:
            groups.extend(_group_children(child, f"{name}."))
        elif leafish and run_open:
            groups[-1].append(name)
        else:
            groups.append([name])
        run_open = leafish
    if not groups:
        raise InputError("the model has no parameters to randomise")
    named = []
    for i, g in enumerate(groups):
        if len(g) == 1:
            label = g[0]
        elif i == 0:
            label = "stem"
        elif i == len(groups) - 1:
            label = "head"
        else:
            label = "+".join(g)
        named.append(Block(label, tuple(g)))
    return named[::-1]


def _reset_module(m: nn.Module) -> list[str]:
    """Re-initialise every layer inside ``m`` with its own initialiser; return the names of layers that have none
    (their parameters get PyTorch's default: Kaiming-uniform(a=√5) for ≥2-D tensors, weight 1 / bias 0 for 1-D)."""
    fallback = []
    for name, sub in m.named_modules():
        if not _own_params(sub):
            continue
        if isinstance(sub, nn.modules.batchnorm._NormBase):
            sub.reset_parameters()     # running stats zero/one + affine ones/zeros, as the constructor leaves them
        elif hasattr(sub, "reset_parameters"):
            sub.reset_parameters()
        else:
            fallback.append(name)
            for pname, p in sub.named_parameters(recurse=False):
                with torch.no_grad():
                    if p.dim() >= 2:
                        nn.init.kaiming_uniform_(p, a=5 ** 0.5)
                    elif "bias" in pname:
                        p.zero_()
                    else:
                        p.fill_(1.0)
    return fallback


def _block_seed(seed: int, index: int) -> int:
    return (int(seed) * 1_000_003 + 7919 * (index + 1)) % (2 ** 62)


def random_block_state(model: nn.Module, block: Block, index: int, seed: int) -> dict[str, torch.Tensor]:
    """The re-initialised parameters and buffers of ``block`` (full state-dict names → tensors on the CPU),
    drawn on the CPU under the seed of (seed, index); ``model`` itself is not changed."""
    state: dict[str, torch.Tensor] = {}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_block_seed(seed, index))
        for mod_name in block.modules:
            fresh = copy.deepcopy(model.get_submodule(mod_name)).to("cpu")
            _reset_module(fresh)
            for k, v in fresh.state_dict().items():
                state[f"{mod_name}.{k}"] = v
    return state


def _assign(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    own = model.state_dict(keep_vars=True)
    with torch.no_grad():
        for k, v in state.items():
            own[k].copy_(v.to(device=own[k].device, dtype=own[k].dtype))


def block_state(model: nn.Module, block: Block) -> dict[str, torch.Tensor]:
    """The current parameters and buffers of ``block`` (views into ``model``)."""
    out = {}
    for mod_name in block.modules:
        for k, v in model.get_submodule(mod_name).state_dict(keep_vars=True).items():
            out[f"{mod_name}.{k}"] = v.detach()
    return out


def fallback_layers(model: nn.Module, blocks: Sequence[Block]) -> list[str]:
    """Layers inside ``blocks`` without ``reset_parameters`` (they fall back to PyTorch's default initialisers)."""
    out = []
    for b in blocks:
        for mod_name in b.modules:
            for name, sub in model.get_submodule(mod_name).named_modules():
                if _own_params(sub) and not hasattr(sub, "reset_parameters"):
                    out.append(f"{mod_name}.{name}" if name else mod_name)
    return out


def model_copy(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` (same device, dtype and flags); the randomisation changes only this copy. Made under
    the model's lock (:func:`cnnlens.model_lock`), so another thread's cnnlens call cannot have its hooks on the model
    (they would be copied) or change its flags meanwhile."""
    from .._state import model_lock
    try:
        with model_lock(model):
            clone = copy.deepcopy(model)
    except Exception as exc:  # noqa: BLE001 - any failure to copy is the same user-facing problem
        raise InputError(f"cannot copy the model for randomisation ({type(exc).__name__}: {exc})") from None
    return clone


def cascade(model: nn.Module, blocks: Sequence[Block], seed: int = 0) -> Iterator[tuple[int, Block, nn.Module]]:
    """Cascading randomisation: yields (k, block k, the copy with blocks 0..k randomised). One copy of ``model`` is
    made and randomised in place step by step; ``model`` is never changed."""
    clone = model_copy(model)
    for k, block in enumerate(blocks):
        _assign(clone, random_block_state(clone, block, k, seed))
        yield k, block, clone


def independent(model: nn.Module, blocks: Sequence[Block], seed: int = 0
                ) -> Iterator[tuple[int, Block, nn.Module]]:
    """Independent randomisation: yields (k, block k, the copy with only block k randomised). The block is restored
    from ``model`` before the next step (one copy in memory)."""
    clone = model_copy(model)
    for k, block in enumerate(blocks):
        _assign(clone, random_block_state(clone, block, k, seed))
        yield k, block, clone
        from .._state import model_lock
        with model_lock(model):
            _assign(clone, block_state(model, block))
