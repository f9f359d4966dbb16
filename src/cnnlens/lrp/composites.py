"""Composites: which rule each layer gets (lrp_sglrp_clrp.md §3; relevance_cam.md §2; sr_map.md §1.4).

A :class:`Composite` maps conv / linear layers to rules, with an optional special rule for the first layer (as zennit's
``SpecialFirstLayerMapComposite``: the first conv, or the first conv-or-linear for the ``-flat`` presets, in execution
order), overrides per module name or type, and the settings of the parameter-free nodes: activations → ``Pass``,
Add / AvgPool / mean → ``Norm``, BatchNorm folded (``bn="fold"``) or passed through (``bn="pass"``), max pool
winner-take-all (``maxpool="wta"`` gradient routing, ``"split"`` ties split equally, ``"unpool_overwrite"``).

``COMPOSITES`` maps each registered name to a one-line description; ``get_composite(name, model=None, **options)``
builds one (options: see each factory; zB bounds default to the model's preprocessing, ``model.cnnlens_meta.mean/std``,
else torchvision's ImageNet normalisation).
"""
from __future__ import annotations

import inspect
from typing import Any, Callable, Mapping

import torch
from torch import nn

from ..errors import MethodError, suggest
from .rules import (AlphaBeta, Epsilon, Flat, Gamma, LinearRule, Norm, Pass, Rule, Stabilizer, ZBox, ZPlus)

#: torchvision ImageNet normalisation
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

MAXPOOL_MODES = ("wta", "split", "unpool_overwrite")
#: relevance of a product s ⊙ g with a gate g (docs/lrp_rules.md): signal-take-all (default), proportional, half
GATE_MODES = ("signal", "proportional", "half")


class Composite:
    """Rule assignment for one LRP pass.

    conv / linear: rules of Conv* / Linear layers. first: rule of the first layer of a type in ``first_types``
    ("conv", "linear"), in execution order. overrides: {module name or module type: Rule} (name wins over type, both
    win over ``first``). norm: rule of residual Adds; avgpool: rule of average pools / means (default ``norm``).
    bn: "fold" (merge into the preceding conv/linear; BatchNorms that follow no conv/linear pass through) or "pass".
    bn_rule: rule of unfolded BatchNorms (Pass). maxpool: "wta" | "split" | "unpool_overwrite" (with ``maxpool_eps``).
    gate: relevance of a gated product s ⊙ g (squeeze-excitation, split-attention, SiLU written as x·σ(x)):
    "signal" R_s = R (signal-take-all, Arras et al. 2017), "proportional" R_s = s/(s+g)·R, R_g = g/(s+g)·R, or "half".
    """

    def __init__(self, conv: LinearRule, linear: LinearRule, *, first: LinearRule | None = None,
                 first_types: tuple[str, ...] = ("conv",), overrides: Mapping[Any, Rule] | None = None,
                 norm: Norm | None = None, avgpool: Norm | None = None, activation: Pass | None = None,
                 bn: str = "fold", bn_rule: Pass | None = None, maxpool: str = "wta", maxpool_eps: float = 1e-9,
                 gate: str = "signal", name: str = "custom"):
        if bn not in ("fold", "pass"):
            raise MethodError(f"bn must be 'fold' or 'pass', got {bn!r}")
        if maxpool not in MAXPOOL_MODES:
            raise MethodError(f"maxpool must be one of {MAXPOOL_MODES}, got {maxpool!r}")
        if gate not in GATE_MODES:
            raise MethodError(f"gate must be one of {GATE_MODES}, got {gate!r}")
        self.conv, self.linear, self.first, self.first_types = conv, linear, first, tuple(first_types)
        self.overrides = dict(overrides or {})
        self.norm = norm if norm is not None else Norm()
        self.avgpool = avgpool if avgpool is not None else self.norm
        self.activation = activation if activation is not None else Pass()
        self.bn, self.bn_rule = bn, bn_rule if bn_rule is not None else Pass()
        self.maxpool, self.maxpool_eps = maxpool, maxpool_eps
        self.gate = gate
        self.name = name

    def override(self, module_name: str | None, module_class: type | None) -> Rule | None:
        if not self.overrides:
            return None
        if module_name is not None and module_name in self.overrides:
            return self.overrides[module_name]
        if module_class is not None:
            for key, rule in self.overrides.items():
                if isinstance(key, type) and issubclass(module_class, key):
                    return rule
        return None

    def linear_rule(self, module_name: str, module_class: type, is_conv: bool, is_first: bool) -> LinearRule:
        rule = self.override(module_name, module_class)
        if rule is not None:
            return rule
        if is_first and self.first is not None:
            return self.first
        return self.conv if is_conv else self.linear

    def __repr__(self) -> str:
        return (f"Composite({self.name!r}, conv={self.conv!r}, linear={self.linear!r}, first={self.first!r}, "
                f"bn={self.bn!r}, maxpool={self.maxpool!r})")


# ------------------------------------------------------------------------------------------------------ bounds

def default_bounds(model: nn.Module | None = None) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel zB bounds l_c = −μ_c/σ_c, h_c = (1−μ_c)/σ_c of the model's preprocessing (§3 "zB bounds")."""
    meta = getattr(model, "cnnlens_meta", None)
    mean = getattr(meta, "mean", None) if meta is not None else None
    std = getattr(meta, "std", None) if meta is not None else None
    if mean is None or std is None:
        mean, std = IMAGENET_MEAN, IMAGENET_STD
    mean = [float(m) for m in mean]
    std = [float(s) for s in std]
    return tuple(-m / s for m, s in zip(mean, std)), tuple((1 - m) / s for m, s in zip(mean, std))


def _scalar_bounds(model):
    low, high = default_bounds(model)
    return min(low), max(high)


# -------------------------------------------------------------------------------------------------- factories

def _epsilon_plus(*, epsilon=1e-6, stabilizer=1e-6, bn="fold", overrides=None, gate="signal"):
    return Composite(ZPlus(stabilizer), Epsilon(epsilon), norm=Norm(stabilizer), bn=bn, overrides=overrides, gate=gate,
                     name="epsilon-plus")


def _epsilon_plus_flat(*, epsilon=1e-6, stabilizer=1e-6, bn="fold", overrides=None, gate="signal"):
    return Composite(ZPlus(stabilizer), Epsilon(epsilon), first=Flat(stabilizer), first_types=("conv", "linear"),
                     norm=Norm(stabilizer), bn=bn, overrides=overrides, gate=gate, name="epsilon-plus-flat")


def _epsilon_gamma_box(*, low=None, high=None, epsilon=1e-6, gamma=0.25, stabilizer=1e-6, bn="fold",
                       overrides=None, gate="signal"):
    return Composite(Gamma(gamma, stabilizer), Epsilon(epsilon), first=ZBox(low, high, stabilizer),
                     norm=Norm(stabilizer), bn=bn, overrides=overrides, gate=gate, name="epsilon-gamma-box")


def _epsilon_alpha2_beta1(*, epsilon=1e-6, stabilizer=1e-6, bn="fold", overrides=None, gate="signal"):
    return Composite(AlphaBeta(2.0, 1.0, stabilizer), Epsilon(epsilon), norm=Norm(stabilizer), bn=bn,
                     overrides=overrides, gate=gate, name="epsilon-alpha2-beta1")


def _epsilon_alpha2_beta1_flat(*, epsilon=1e-6, stabilizer=1e-6, bn="fold", overrides=None, gate="signal"):
    return Composite(AlphaBeta(2.0, 1.0, stabilizer), Epsilon(epsilon), first=Flat(stabilizer),
                     first_types=("conv", "linear"), norm=Norm(stabilizer), bn=bn, overrides=overrides, gate=gate,
                     name="epsilon-alpha2-beta1-flat")


def _dtd(*, low=None, high=None, stabilizer="exact_zero", bn="fold", maxpool="wta", overrides=None, gate="signal"):
    s = Stabilizer.ensure(stabilizer)
    # linear neurons (linear-bottleneck projections, convs before SiLU/GELU) get the DTD rule for negative outputs
    # where z⁺ has nothing to redistribute over (ZPlus ``linear_neurons``), so dtd conserves on every family
    zp = ZPlus(s, bias="none", linear_neurons="negative")
    return Composite(zp, zp, first=ZBox(low, high, s), norm=Norm(s), bn=bn,
                     maxpool=maxpool, overrides=overrides, gate=gate, name="dtd")


def _sglrp_reference(*, low=None, high=None, stabilizer=Stabilizer("exact_zero", 1e-7), bn="fold", overrides=None,
                     gate="signal"):
    s = Stabilizer.ensure(stabilizer)
    return Composite(ZPlus(s, bias="full"), ZPlus(s, bias="full"), first=ZBox(low, high, s), norm=Norm(s), bn=bn,
                     overrides=overrides, gate=gate, name="sglrp-reference")


def _clrp_reference(*, low=None, high=None, stabilizer=Stabilizer("add", 1e-9), bn="fold", maxpool="split",
                    overrides=None, gate="signal"):
    s = Stabilizer.ensure(stabilizer)
    return Composite(ZPlus(s, bias="none"), ZPlus(s, bias="none"), first=ZBox(low, high, s), norm=Norm(s), bn=bn,
                     maxpool=maxpool, overrides=overrides, gate=gate, name="clrp-reference")


def _relevance_cam_reference(*, conv_bias="reference", bn="pass", stabilizer="exact_zero", overrides=None,
                             gate="signal"):
    if conv_bias not in ("reference", "none"):
        raise MethodError(f"conv_bias must be 'reference' (2·b) or 'none', got {conv_bias!r}")
    s = Stabilizer.ensure(stabilizer)
    return Composite(ZPlus(s, bias="double" if conv_bias == "reference" else "none"), ZPlus(s, bias="none"),
                     first=ZBox(None, None, s), norm=Norm(s), avgpool=Norm(s, positive=True), bn=bn,
                     bn_rule=Pass(zero_where_input_zero=True), overrides=overrides, gate=gate,
                     name="relevance-cam-reference")


def _sr_reference(*, stabilizer=Stabilizer("add", 1e-9), maxpool="wta", bn="fold", overrides=None,
                  gate="signal"):
    s = Stabilizer.ensure(stabilizer)
    return Composite(Epsilon(s), ZPlus(s, bias="none"), norm=Norm(s), bn=bn, maxpool=maxpool, overrides=overrides,
                     gate=gate, name="sr-reference")


_FACTORIES: dict[str, tuple[Callable[..., Composite], str, str | None]] = {
    # name: (factory, description, bounds: None | "channel" | "scalar")
    "epsilon-plus": (_epsilon_plus, "zennit EpsilonPlus: z+ (bias b+) on convs, epsilon on linear layers", None),
    "epsilon-plus-flat": (_epsilon_plus_flat, "zennit EpsilonPlusFlat: EpsilonPlus with the flat rule on the first "
                          "layer", None),
    "epsilon-gamma-box": (_epsilon_gamma_box, "zennit EpsilonGammaBox: zB first conv, gamma=0.25 convs, epsilon "
                          "linear", "channel"),
    "epsilon-alpha2-beta1": (_epsilon_alpha2_beta1, "zennit EpsilonAlpha2Beta1: alpha2-beta1 convs, epsilon linear",
                             None),
    "epsilon-alpha2-beta1-flat": (_epsilon_alpha2_beta1_flat, "zennit EpsilonAlpha2Beta1Flat: with the flat rule "
                                  "on the first layer", None),
    "dtd": (_dtd, "Deep Taylor: zB first conv, bias-free z+ everywhere else, exact-zero guard (SGLRP/CLRP paper "
            "modes)", "channel"),
    "sglrp-reference": (_sglrp_reference, "SGLRP reference (iNNvestigate 1.0.8.3 BoundedDeepTaylor): scalar zB, "
                        "z+ with full bias incl. the logit layer", "scalar"),
    "clrp-reference": (_clrp_reference, "CLRP official code: scalar zB(-2.1179, 2.64), bias-free z+, +1e-9, "
                       "max-pool ties split", "scalar"),
    "relevance-cam-reference": (_relevance_cam_reference, "Relevance-CAM reference: z+ (conv bias 2b / none), BN "
                                "pass-through, exact-zero guard, positive-part avg pool", None),
    "sr-reference": (_sr_reference, "SR map reference: LRP-0 with bias (+1e-9) on convs, bias-free z+ on linear "
                     "layers", None),
}

#: composite name -> one-line description
COMPOSITES: dict[str, str] = {name: desc for name, (_, desc, _) in _FACTORIES.items()}


def composite_options(name: str) -> list[str]:
    """Keyword options the named composite accepts."""
    if name not in _FACTORIES:
        raise MethodError(f"unknown composite {name!r}.{suggest(name, _FACTORIES)} Available: {', '.join(_FACTORIES)}")
    return list(inspect.signature(_FACTORIES[name][0]).parameters)


def get_composite(name: str | Composite, model: nn.Module | None = None, **options: Any) -> Composite:
    """Build the named composite (``COMPOSITES``). ``low``/``high`` default to the model's preprocessing bounds
    (per channel; scalar min/max for the reference presets that use scalars)."""
    if isinstance(name, Composite):
        if options:
            raise MethodError(f"composite options {sorted(options)} only apply to a composite given by name")
        return name
    known = composite_options(name)
    for key in options:
        if key not in known:
            raise MethodError(f"composite {name!r} has no option {key!r}.{suggest(key, known)} "
                              f"Options: {', '.join(known)}")
    factory, _, bounds = _FACTORIES[name]
    if bounds is not None and (options.get("low") is None or options.get("high") is None):
        low, high = default_bounds(model) if bounds == "channel" else _scalar_bounds(model)
        options.setdefault("low", None)
        options.setdefault("high", None)
        options["low"] = low if options["low"] is None else options["low"]
        options["high"] = high if options["high"] is None else options["high"]
    try:
        return factory(**options)
    except (TypeError, ValueError) as err:
        raise MethodError(f"bad option for composite {name!r}: {err}") from err


__all__ = ["COMPOSITES", "Composite", "IMAGENET_MEAN", "IMAGENET_STD", "composite_options", "default_bounds",
           "get_composite"]
