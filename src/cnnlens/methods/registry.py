"""The method registry: every method registers its name, a one-line description and how it uses layers.

A method is a function ``fn(req: Request, **options) -> MethodOutput``. It runs inside ``preserved(model)`` (eval mode,
flags restored), receives a validated input and the resolved layer names, and resolves its targets from its own forward
pass with ``req.resolve_targets(logits)`` (no extra forward).
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch
from torch import nn

from ..errors import MethodError, suggest
from ..targets import TargetSpec, resolve_targets


@dataclass
class MapResult:
    """One map per sample. ``raw``: the unnormalised map at its native resolution (sign kept);
    ``heatmap``: (N,H,W) in [0,1] at input resolution (for signed maps 0.5 = zero, see ``ops.signed_display``)."""
    raw: torch.Tensor
    heatmap: torch.Tensor
    signed: bool = False
    extras: dict[str, Any] = field(default_factory=dict)


@dataclass
class MethodOutput:
    maps: dict[str | None, MapResult]
    targets: torch.Tensor
    logits: torch.Tensor | None = None


@dataclass
class Request:
    model: nn.Module
    x: torch.Tensor
    target: TargetSpec = None
    layers: list[str] | None = None
    class_names: Sequence[str] | None = None
    progress: bool = False
    layer_records: Any = None   # models.layers.trace_layers(...) output when already computed

    def resolve_targets(self, logits: torch.Tensor) -> torch.Tensor:
        return resolve_targets(self.target, logits, self.class_names)

    @property
    def size(self) -> tuple[int, int]:
        return (int(self.x.shape[-2]), int(self.x.shape[-1]))


#: ``layers`` values: "single" — a map per layer, default layer = the CAM default (cams.md §3);
#: "set" — the method combines several layers into one map (SISE), default chosen by the method;
#: "none" — the method takes no layer (LRP at the input, RISE, SR map).
LAYER_MODES = ("single", "set", "none")


@dataclass(frozen=True)
class MethodSpec:
    name: str
    fn: Callable[..., MethodOutput]
    description: str
    layers: str = "single"
    multi_layer: bool = False     # "single" methods that compute several layers in one pass
    signed: bool = False
    family: str = "cam"

    def option_names(self) -> list[str]:
        params = inspect.signature(self.fn).parameters
        return [p for p in params if p != "req" and params[p].kind == inspect.Parameter.KEYWORD_ONLY]

    def check_options(self, options: dict[str, Any]) -> None:
        known = self.option_names()
        for key in options:
            if key not in known:
                raise MethodError(f"method {self.name!r} has no option {key!r}.{suggest(key, known)} "
                                  f"Options: {', '.join(known) or 'none'}")


_REGISTRY: dict[str, MethodSpec] = {}


def register(name: str, description: str, *, layers: str = "single", multi_layer: bool = False,
             signed: bool = False, family: str = "cam") -> Callable:
    """Decorator adding a method to the registry under ``name`` (the string users pass to explain/CLI)."""
    if layers not in LAYER_MODES:
        raise ValueError(f"layers must be one of {LAYER_MODES}")

    def deco(fn: Callable[..., MethodOutput]) -> Callable[..., MethodOutput]:
        _REGISTRY[name] = MethodSpec(name, fn, description, layers, multi_layer, signed, family)
        return fn
    return deco


def get_method(name: str) -> MethodSpec:
    """The spec of ``name``; ``"NAME@COMPOSITE"`` (an LRP-based method with its composite, as on the command line)
    gives NAME's spec once NAME is known to take a composite."""
    from . import _load_all
    _load_all()
    base, at, composite = name.partition("@") if isinstance(name, str) else (name, "", "")
    if not isinstance(base, str) or base not in _REGISTRY:
        raise MethodError(f"unknown method {base!r}.{suggest(str(base), _REGISTRY)} "
                          f"Available: {', '.join(sorted(_REGISTRY))}")
    spec = _REGISTRY[base]
    if at and "composite" not in spec.option_names():
        raise MethodError(f"method {base!r} takes no composite (in {name!r})")
    if at and not composite:
        raise MethodError(f"{name!r}: name a composite after '@' (see `cnnlens methods`)")
    return spec


def all_methods() -> dict[str, MethodSpec]:
    from . import _load_all
    _load_all()
    return dict(sorted(_REGISTRY.items()))


def check_choice(option: str, value: Any, choices: Sequence[Any]) -> None:
    """Raise :class:`MethodError` unless ``value`` is one of ``choices`` (the message lists them)."""
    if value not in choices:
        names = [repr(c) for c in choices]
        listed = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]
        raise MethodError(f"{option} must be {listed}, got {value!r}")
