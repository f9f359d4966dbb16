"""LRP, CLRP, SGLRP and Deep Taylor at the input (lrp_sglrp_clrp.md §4-6), on the engine in ``cnnlens.lrp``.

Every method returns the pixel map summed over the input channels as ``.raw`` (sign kept) and
``ops.signed_display(raw)`` as ``.heatmap`` (0.5 = zero relevance); ``extras["relevance"]`` holds the (N, C, H, W)
relevance. ``composite=`` picks any registered composite (``cnnlens.lrp.COMPOSITES``); ``low``/``high`` override the
zB bounds of composites that have them (default: the model's preprocessing, else torchvision's ImageNet bounds).
Two-pass methods (SGLRP reference, CLRP) batch the target and dual rows into one call.
"""
from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import Tensor

from ..errors import MethodError, UnsupportedOperationError
from ..lrp import composite_options, lrp_attribute
from ..lrp.rules import LinearRule, Stabilizer
from ..ops import signed_display
from .registry import MapResult, MethodOutput, Request, check_choice, register


# ------------------------------------------------------------------------------------------------- helpers

def _composite_kwargs(name: Any, low, high) -> dict:
    if not isinstance(name, str):
        return {}
    opts = composite_options(name)
    kw = {}
    for key, value in (("low", low), ("high", high)):
        if value is not None:
            if key not in opts:
                raise MethodError(f"composite {name!r} has no zB bounds; drop the {key}= option")
            kw[key] = value
    return kw


def _one_hot(targets: Tensor, like: Tensor) -> Tensor:
    return torch.zeros_like(like).scatter_(1, targets[:, None], 1.0)


def _rest_sum(p: Tensor, onehot: Tensor) -> Tensor:
    """Σ_{n≠t} p_n per row, computed without 1 − p_t (which rounds to 0 as p_t → 1, spec §4.4)."""
    return (p * (1 - onehot)).sum(1, keepdim=True)


def _output(req: Request, rel: Tensor, targets: Tensor, logits: Tensor, relu: bool = False,
            **extras: Any) -> MethodOutput:
    pixel = (rel.clamp(min=0) if relu else rel).sum(1)
    extras["relevance"] = rel
    return MethodOutput(maps={None: MapResult(raw=pixel, heatmap=signed_display(pixel), signed=True, extras=extras)},
                        targets=targets, logits=logits)


def _sums(a: Tensor) -> Tensor:
    return a.reshape(a.shape[0], -1).sum(1).view(-1, *([1] * (a.dim() - 1)))


def _scaled_subtraction(a_t: Tensor, a_o: Tensor) -> tuple[Tensor, Tensor]:
    """A = A_t − s·A_o with s = ΣA_t/ΣA_o per image; ΣA_o = 0 → s = 0 (spec §4.5, §4.7)."""
    st, so = _sums(a_t), _sums(a_o)
    s = torch.where(so != 0, st / torch.where(so != 0, so, torch.ones_like(so)), torch.zeros_like(so))
    return a_t - s * a_o, s.flatten()


def _two_rows(req: Request, composite, init_fn, **kw):
    """One call with the batch doubled: rows [0, N) get the target relevance, rows [N, 2N) the dual one."""
    n = req.x.shape[0]
    state: dict = {}

    def initial(logits2: Tensor) -> Tensor:
        logits = logits2[:n]
        targets = req.resolve_targets(logits)
        r_t, r_o = init_fn(logits, targets)
        state["targets"], state["logits"] = targets, logits
        return torch.cat([r_t, r_o])
    res = lrp_attribute(req.model, torch.cat([req.x, req.x]), initial, composite, **kw)
    return res.input[:n], res.input[n:], state["targets"], state["logits"]


# ---------------------------------------------------------------------------------------------------- LRP

@register("lrp", "LRP (Bach et al. 2015) at the input from z_t·e_t; dtd rules by default, any composite by name",
          layers="none", signed=True, family="lrp")
def lrp(req: Request, *, composite: str | None = None, init: str = "logit", mode: str = "paper",
        low: Any = None, high: Any = None) -> MethodOutput:
    """LRP map (spec §4.1, §6).

    composite: any name in ``cnnlens.lrp.COMPOSITES`` (default ``dtd``; ``sglrp-reference`` in reference mode).
    init: "logit" (R = z_t·e_t, default) or "one" (R = e_t). mode: "paper" or "reference" (R = ReLU(z_t)·e_t with
    ``sglrp-reference`` rules, as the SGLRP repository's LRP). low/high: zB bounds override.
    """
    check_choice("mode", mode, ("paper", "reference"))
    check_choice("init", init, ("logit", "one"))
    composite = composite or ("sglrp-reference" if mode == "reference" else "dtd")
    state: dict = {}

    def initial(logits: Tensor) -> Tensor:
        targets = req.resolve_targets(logits)
        onehot = _one_hot(targets, logits)
        state["targets"] = targets
        if init == "one":
            return onehot
        z = logits.gather(1, targets[:, None])
        return onehot * (z.clamp(min=0) if mode == "reference" else z)
    res = lrp_attribute(req.model, req.x, initial, composite, **_composite_kwargs(composite, low, high))
    return _output(req, res.input, state["targets"], res.logits, composite=composite)


@register("deep-taylor", "Deep Taylor decomposition (Montavon et al. 2017): zB input layer, bias-free z+ elsewhere",
          layers="none", signed=True, family="lrp")
def deep_taylor(req: Request, *, init: str = "logit", low: Any = None, high: Any = None) -> MethodOutput:
    """Deep Taylor decomposition = LRP with the ``dtd`` composite (zB first conv, bias-free z⁺, exact-zero guard)."""
    return lrp(req, composite="dtd", init=init, low=low, high=high)


# -------------------------------------------------------------------------------------------------- SGLRP

@register("sglrp", "SGLRP (Iwana et al. 2019): LRP of the softmax gradient y_t(e_t - y), class-discriminative",
          layers="none", signed=True, family="lrp")
def sglrp(req: Request, *, mode: str = "paper", composite: str | None = None, relu: bool = False,
          low: Any = None, high: Any = None) -> MethodOutput:
    """SGLRP (spec §4.4-4.5, §6).

    mode="paper" (default): one signed pass of R = ∂y_t/∂z = y_t(e_t − y), i.e. +y_t·Σ_{n≠t} y_n at t and −y_t·y_n
    elsewhere (sums to 0), with ``dtd`` rules; where the softmax saturates so that this vector underflows to 0 for a
    sample, the same vector rescaled by 1/(y_t·max_{n≠t} y_n) (computed in log space) is used.
    mode="reference" (iNNvestigate 1.0.8.3): p = softmax(ReLU(z)), classes with z_n ≤ 0 masked; target pass
    (p_t(1−p_t) + 1e-8)·e_t, dual pass p_t·p_n (n ≠ t), A = A_t − s·A_o with s = ΣA_t/ΣA_o; ``sglrp-reference`` rules. relu: ReLU before the channel sum (default False, as the reference).
    """
    check_choice("mode", mode, ("paper", "reference"))
    composite = composite or ("sglrp-reference" if mode == "reference" else "dtd")
    kw = _composite_kwargs(composite, low, high)
    if mode == "paper":
        state: dict = {}

        def initial(logits: Tensor) -> Tensor:
            targets = req.resolve_targets(logits)
            state["targets"] = targets
            onehot = _one_hot(targets, logits)
            y = logits.softmax(1)
            y_t = y.gather(1, targets[:, None])
            r = torch.where(onehot > 0, y_t * _rest_sum(y, onehot), -y_t * y)
            # a saturated softmax (logit gaps beyond exp's range, e.g. random-init Inception-v3 with logits ~1e10)
            # makes y_t(e_t − y) exactly 0 and the map constant: use the same vector divided by y_t·max_{n≠t} y_n,
            # computed in log space (R_n = −exp(z_n − m), R_t = Σ_{n≠t} exp(z_n − m), m = max_{n≠t} z_n)
            others = logits.masked_fill(onehot > 0, float("-inf"))
            q = (others - others.amax(1, keepdim=True)).exp()
            rescaled = torch.where(onehot > 0, q.sum(1, keepdim=True), -q)
            return torch.where((r != 0).any(1, keepdim=True), r, rescaled)
        res = lrp_attribute(req.model, req.x, initial, composite, **kw)
        return _output(req, res.input, state["targets"], res.logits, relu=relu, composite=composite, mode=mode)

    def init_ref(logits: Tensor, targets: Tensor):
        onehot = _one_hot(targets, logits)
        positive = (logits > 0).to(logits.dtype)
        p = logits.clamp(min=0).softmax(1)
        p_t = p.gather(1, targets[:, None])
        r_t = onehot * positive * (p_t * _rest_sum(p, onehot) + 1e-8)
        r_o = (1 - onehot) * positive * p_t * p
        return r_t, r_o
    a_t, a_o, targets, logits = _two_rows(req, composite, init_ref, **kw)
    zero = _sums(a_t.abs()).flatten() == 0
    if bool(zero.any()):
        warnings.warn("SGLRP reference mode: the target logit is <= 0 for some samples; their maps are zero",
                      RuntimeWarning, stacklevel=3)
    rel, scale = _scaled_subtraction(a_t, a_o)
    return _output(req, rel, targets, logits, relu=relu, composite=composite, mode=mode, scale=scale)


# --------------------------------------------------------------------------------------------------- CLRP

class _NegatedTargetRule(LinearRule):
    """CLRP type 2 dual (spec §4.2): the logit layer is replaced by one virtual neuron with weights −w_t per sample,
    explained with bias-free z⁺ (its own relevance is 1; the scale is irrelevant after ÷ΣR)."""

    def __init__(self, targets: Tensor, stabilizer):
        self.targets, self._stab = targets, Stabilizer.ensure(stabilizer)

    def relevance(self, layer, x, out, r, nonneg):
        if layer.is_conv or x.dim() != 2:
            raise UnsupportedOperationError("CLRP dual='type2' needs a Linear logit layer on flat features")
        w = -layer.weight[self.targets.repeat(x.shape[0] // self.targets.shape[0])]
        xp, xn = x.clamp(min=0), x.clamp(max=0)
        contrib = xp * w.clamp(min=0) + xn * w.clamp(max=0)
        return self._stab.divide(contrib, contrib.sum(1, keepdim=True))


@register("clrp", "Contrastive LRP (Gu et al. 2018): target LRP minus the LRP of the dual (non-target) classes",
          layers="none", signed=True, family="lrp")
def clrp(req: Request, *, variant: str = "official", dual: str = "type1", composite: str | None = None,
         low: Any = None, high: Any = None) -> MethodOutput:
    """CLRP (spec §4.2-4.3, §6).

    variant="official" (default, JindongGu/Contrastive-LRP): R = LRP(z_t e_t); dual R_d from ``dual="type1"`` (|z_n|
    on every n ≠ t) or ``"type2"`` (a virtual class with the negated target weights); map max(0, R/ΣR − R_d/ΣR_d) per
    input channel divided by its max; ``clrp-reference`` rules. variant="sglrp_repo": target ReLU(z_t)·e_t, dual
    ReLU(z_t)/(C−1) on every n ≠ t with z_n > 0, scaled subtraction A_t − s·A_o (signed); ``sglrp-reference`` rules.
    """
    check_choice("variant", variant, ("official", "sglrp_repo"))
    check_choice("dual", dual, ("type1", "type2"))
    if variant == "sglrp_repo":
        composite = composite or "sglrp-reference"

        def init_repo(logits, targets):
            onehot = _one_hot(targets, logits)
            z_t = logits.gather(1, targets[:, None]).clamp(min=0)
            c = logits.shape[1]
            return onehot * z_t, (1 - onehot) * (logits > 0).to(logits.dtype) * z_t / (c - 1)
        a_t, a_o, targets, logits = _two_rows(req, composite, init_repo, **_composite_kwargs(composite, low, high))
        rel, scale = _scaled_subtraction(a_t, a_o)
        return _output(req, rel, targets, logits, composite=composite, variant=variant, scale=scale)

    composite = composite or "clrp-reference"
    kw = _composite_kwargs(composite, low, high)
    if dual == "type1":
        def init_official(logits, targets):
            onehot = _one_hot(targets, logits)
            return onehot * logits, (1 - onehot) * logits.abs()
        a_t, a_d, targets, logits = _two_rows(req, composite, init_official, **kw)
    else:
        from ..lrp import get_composite
        from ..lrp.graph import get_plan
        base = get_composite(composite, req.model, **kw)
        plan = get_plan(req.model, base.bn, tuple(req.x.shape))
        last = [s for s in plan.steps if s.kind == "linear"][-1]
        state: dict = {}

        def initial(logits):
            targets = req.resolve_targets(logits)
            state["targets"], state["logits"] = targets, logits
            return _one_hot(targets, logits) * logits
        res_t = lrp_attribute(req.model, req.x, initial, base)
        targets = state["targets"]
        import copy
        dual_comp = copy.copy(base)
        dual_comp.overrides = {**base.overrides, last.module_name: _NegatedTargetRule(targets, base.conv._stab)}
        res_d = lrp_attribute(req.model, req.x, _one_hot(targets, res_t.logits), dual_comp)
        a_t, a_d, logits = res_t.input, res_d.input, res_t.logits

    def normalised(a):
        s = _sums(a)
        return torch.where(s != 0, a / torch.where(s != 0, s, torch.ones_like(s)), torch.zeros_like(a))
    diff = (normalised(a_t) - normalised(a_d)).clamp(min=0)
    peak = diff.reshape(diff.shape[0], -1).amax(1).view(-1, 1, 1, 1)
    rel = torch.where(peak > 0, diff / torch.where(peak > 0, peak, torch.ones_like(peak)), torch.zeros_like(diff))
    return _output(req, rel, targets, logits, composite=composite, variant=variant, dual=dual)
