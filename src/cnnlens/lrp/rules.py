"""LRP rules with zennit 0.5.1's names and semantics (lrp_sglrp_clrp.md §2).

A rule turns the relevance ``R`` at a layer's output into the relevance at its input. Rules for parametrised layers
(Conv*/Linear) are :class:`LinearRule` subclasses: ``relevance(layer, x, out, R, nonneg)`` with ``layer`` a
:class:`cnnlens.lrp.graph.LinearLayer` (forward ``layer.fwd(x, w, b)`` and input-vjp ``layer.vjp(S, x, w)`` with modified
parameters, cached per model). Every rule is the generic modified-gradient form

    Z = Σ_k f(in_k(x); W_k, b_k);   S = R / stabilise(Z);   R_in = Σ_k in_k(x) ⊙ vjp_k(S)

with one evaluation per term (terms that are exactly zero for non-negative inputs are skipped). A new rule is one small
class. Stabilisers: :class:`Stabilizer` (``"signed_eps"`` = zennit's default, ``"exact_zero"``, ``"add"``, or a callable
``Z -> stabilised Z`` as in zennit).
"""
from __future__ import annotations

from typing import Callable, Union

import torch
from torch import Tensor

StabilizerLike = Union[float, str, "Stabilizer", Callable[[Tensor], Tensor]]


class Stabilizer:
    """Safe division R / Z (lrp_sglrp_clrp.md §2 "Stabilisers").

    kind="signed_eps": Z + ε·sign(Z) with sign(0) = +1 (zennit's float stabiliser, default ε = 1e-6).
    kind="exact_zero": only exact zeros are guarded: with ε = 0 the quotient is 0 there (Relevance-CAM ``safe_divide``),
        with ε > 0 ε is added there (iNNvestigate ``SafeDivide``, ε = 1e-7).
    kind="add": unsigned Z + ε (SR reference, CLRP official, ε = 1e-9).
    kind="callable": ``fn(Z)`` returns the stabilised denominator (zennit's callable stabiliser).
    """

    def __init__(self, kind: str = "signed_eps", eps: float = 1e-6, fn: Callable[[Tensor], Tensor] | None = None):
        if kind not in ("signed_eps", "exact_zero", "add", "callable"):
            raise ValueError(f"unknown stabilizer kind {kind!r}")
        self.kind, self.eps, self.fn = kind, float(eps), fn

    @classmethod
    def ensure(cls, value: StabilizerLike) -> "Stabilizer":
        if isinstance(value, Stabilizer):
            return value
        if isinstance(value, str):
            return cls(value, {"signed_eps": 1e-6, "exact_zero": 0.0, "add": 1e-9}.get(value, 0.0))
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return cls("signed_eps", float(value))
        if callable(value):
            return cls("callable", 0.0, value)
        raise TypeError(f"a stabilizer is a float, a kind name, a Stabilizer or a callable, got {value!r}")

    def divide(self, r: Tensor, z: Tensor, inplace: bool = False) -> Tensor:
        """Return R / stabilise(Z). ``inplace=True`` may reuse Z's storage for the result (only for a Z the caller
        owns, e.g. a freshly re-evaluated layer; the values are bitwise the same)."""
        if self.kind == "signed_eps":
            # ε·sign(Z) with sign(0) = +1 as copysign (3× faster than a where on a bool mask); only Z = −0.0 differs
            # from zennit's sign(0) = +1, and −0.0 arises only when every term x_i·w_ij is zero, so every
            # contribution R_i = x_i w_ij R_j / Z_j is zero either way
            eps = torch.copysign(z.new_full((), self.eps), z)
            if inplace and z.shape == r.shape:
                return torch.div(r, z.add_(eps), out=z)
            return r / eps.add_(z)
        if self.kind == "add":
            if inplace and z.shape == r.shape:
                return torch.div(r, z.add_(self.eps), out=z)
            return r / (z + self.eps)
        if self.kind == "callable":
            return r / self.fn(z)
        zero = z == 0
        if self.eps:
            return r / torch.where(zero, self.eps, z)
        return torch.where(zero, 0.0, r / torch.where(zero, 1.0, z))

    def __repr__(self) -> str:
        return f"Stabilizer({self.kind!r}, {self.eps:g})"


class Rule:
    """Base of every rule."""

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({args})"


class LinearRule(Rule):
    """A rule for a parametrised linear layer (Conv1d/2d/3d, timm Conv2dSame, Linear)."""

    def relevance(self, layer, x: Tensor, out: Tensor, r: Tensor, nonneg: bool) -> Tensor:  # pragma: no cover
        raise NotImplementedError


def _bias(layer, mode) -> Tensor | None:
    b = layer.bias
    if b is None or mode in (False, None, "none"):
        return None
    if mode in (True, "full"):
        return b
    if mode == "positive":
        return layer.param("bias", "pos")
    if mode == "negative":
        return layer.param("bias", "neg")
    if mode == "double":
        return layer.param("bias", "double")
    raise ValueError(f"unknown bias mode {mode!r}")


class Epsilon(LinearRule):
    """LRP-ε (zennit ``Epsilon``): R_i = Σ_j x_i w_ij / (z_j + ε·sign(z_j)) · R_j, z_j = Σ_i x_i w_ij + b_j.

    bias: True (default, zennit: the bias is in z_j, so it absorbs relevance) or False (zennit ``zero_params='bias'``).
    epsilon: float (signed ε, sign(0) = +1; ε = 0 is LRP-0) or any :class:`Stabilizer` (e.g. ``Stabilizer("add", 1e-9)``
    = the SR reference's LRP-0 with bias). With the bias kept, z_j is the recorded forward output (no re-evaluation).
    """

    def __init__(self, epsilon: StabilizerLike = 1e-6, bias: bool = True):
        self.epsilon = epsilon
        self.bias = bias
        self._stab = Stabilizer.ensure(epsilon)

    def relevance(self, layer, x, out, r, nonneg):
        w = layer.weight
        if self.bias or layer.bias is None:
            s = self._stab.divide(r, out)  # the recorded output: never overwritten
        else:
            s = self._stab.divide(r, layer.fwd(x, w, None), inplace=True)
        return layer.vjp(s, x, w).mul_(x)


class ZPlus(LinearRule):
    """z⁺ = α1β0 (zennit ``ZPlus``; DTD z⁺ for x ≥ 0):
    R_i = x_i⁺ Σ_j w_ij⁺ R_j/Z_j + x_i⁻ Σ_j w_ij⁻ R_j/Z_j,  Z_j = Σ_i (x_i⁺ w_ij⁺ + x_i⁻ w_ij⁻) + B_j.

    bias (B_j, on the positive term only; the negative term is bias-free as in zennit):
    ``"positive"`` b_j⁺ (zennit stock ``ZPlus()``, default), ``"none"`` 0 (DTD; zennit ``zero_params='bias'``),
    ``"full"`` b_j (iNNvestigate 1.0.8.3 / SGLRP reference), ``"double"`` 2·b_j (Relevance-CAM reference conv).
    stabilizer: zennit's signed ε = 1e-6 by default.
    linear_neurons: what a neuron with relevance but no positive contribution (Z_j = 0) gets. z⁺ is derived for
    ReLU neurons (Montavon et al. 2017, "Explaining nonlinear classification decisions with deep Taylor
    decomposition", §4), where R_j ≠ 0 implies z_j > 0 and Z_j > 0. A *linear* neuron (a linear-bottleneck projection,
    a conv followed by SiLU/Hardswish/GELU, whose negative outputs keep relevance under the identity activation rule)
    can have R_j ≠ 0 with only negative contributions; ``"drop"`` (zennit, default) loses that relevance,
    ``"negative"`` explains it by its negative contributions (the DTD root search along the negative inputs, z_j < 0:
    R_i = x_i⁺ w_ij⁻ R_j / Z⁻_j + x_i⁻ w_ij⁺ R_j / Z⁻_j), which conserves. Only layers the plan marks as linear
    neurons (output not followed by a ReLU-type activation) pay for it; on ReLU networks both modes are identical.
    """

    def __init__(self, stabilizer: StabilizerLike = 1e-6, bias: str = "positive", linear_neurons: str = "drop"):
        if linear_neurons not in ("drop", "negative"):
            raise ValueError(f"linear_neurons must be 'drop' or 'negative', got {linear_neurons!r}")
        self.stabilizer = stabilizer
        self.bias = bias
        self.linear_neurons = linear_neurons
        self._stab = Stabilizer.ensure(stabilizer)

    def relevance(self, layer, x, out, r, nonneg):
        wp = layer.param("weight", "pos")
        b = _bias(layer, self.bias)
        fallback = self.linear_neurons == "negative" and getattr(layer, "linear_neuron", True)
        if nonneg:
            z = layer.fwd(x, wp, b)
            extra = self._negative(layer, x, z, r, nonneg) if fallback else None
            s = self._stab.divide(r, z, inplace=True)
            rel = layer.vjp(s, x, wp).mul_(x)
            return rel if extra is None else rel.add_(extra)
        wn = layer.param("weight", "neg")
        xp, xn = x.clamp(min=0), x.clamp(max=0)
        z = layer.fwd(xp, wp, b).add_(layer.fwd(xn, wn, None))
        extra = self._negative(layer, x, z, r, nonneg) if fallback else None
        s = self._stab.divide(r, z, inplace=True)
        rel = layer.vjp(s, x, wp).mul_(xp).add_(layer.vjp(s, x, wn).mul_(xn))
        return rel if extra is None else rel.add_(extra)

    def _negative(self, layer, x, z, r, nonneg):
        """Relevance of the neurons with Z_j = 0, explained by their negative contributions (``linear_neurons``)."""
        rn = torch.where(z == 0, r, 0.0)
        wn = layer.param("weight", "neg")
        if nonneg:
            s = self._stab.divide(rn, layer.fwd(x, wn, None), inplace=True)
            return layer.vjp(s, x, wn).mul_(x)
        wp = layer.param("weight", "pos")
        xp, xn = x.clamp(min=0), x.clamp(max=0)
        s = self._stab.divide(rn, layer.fwd(xp, wn, None).add_(layer.fwd(xn, wp, None)), inplace=True)
        return layer.vjp(s, x, wn).mul_(xp).add_(layer.vjp(s, x, wp).mul_(xn))


class AlphaBeta(LinearRule):
    """LRP-αβ (zennit ``AlphaBeta``), α − β = 1:
    R_i = α·(x⁺w⁺ + x⁻w⁻ share of R over Z⁺) − β·(x⁺w⁻ + x⁻w⁺ share of R over Z⁻), with
    Z⁺_j = Σ_i(x_i⁺w_ij⁺ + x_i⁻w_ij⁻) + b_j⁺ and Z⁻_j = Σ_i(x_i⁺w_ij⁻ + x_i⁻w_ij⁺) + b_j⁻.

    bias: True (zennit default: b⁺ in Z⁺, b⁻ in Z⁻) or False. stabilizer: signed ε = 1e-6.
    """

    def __init__(self, alpha: float = 2.0, beta: float = 1.0, stabilizer: StabilizerLike = 1e-6, bias: bool = True):
        if alpha < 0 or beta < 0 or alpha - beta != 1:
            raise ValueError("AlphaBeta needs alpha, beta >= 0 and alpha - beta == 1")
        self.alpha, self.beta, self.stabilizer, self.bias = alpha, beta, stabilizer, bias
        self._stab = Stabilizer.ensure(stabilizer)

    def relevance(self, layer, x, out, r, nonneg):
        wp, wn = layer.param("weight", "pos"), layer.param("weight", "neg")
        bp = _bias(layer, "positive" if self.bias else None)
        bn = _bias(layer, "negative" if self.bias else None)
        if nonneg:
            sp = self._stab.divide(r, layer.fwd(x, wp, bp))
            sn = self._stab.divide(r, layer.fwd(x, wn, bn))
            return x * (self.alpha * layer.vjp(sp, x, wp) - self.beta * layer.vjp(sn, x, wn))
        xp, xn = x.clamp(min=0), x.clamp(max=0)
        sp = self._stab.divide(r, layer.fwd(xp, wp, bp) + layer.fwd(xn, wn, None))
        sn = self._stab.divide(r, layer.fwd(xp, wn, bn) + layer.fwd(xn, wp, None))
        pos = xp * layer.vjp(sp, x, wp) + xn * layer.vjp(sp, x, wn)
        neg = xp * layer.vjp(sn, x, wn) + xn * layer.vjp(sn, x, wp)
        return self.alpha * pos - self.beta * neg


class Gamma(LinearRule):
    """Generalised LRP-γ (zennit 0.5.1 ``Gamma``, sign-aware). With W^{γ±} = W + γ·W^±:
    outputs z > 0 are explained by x⁺ through W^{γ+} (bias b + γb⁺) and x⁻ through W^{γ−} (no bias), normalised by
    their sum; outputs z < 0 by x⁺ through W^{γ−} (bias b + γb⁻) and x⁻ through W^{γ+} (no bias); z = 0 gets nothing.
    gamma: default 0.25. stabilizer: signed ε = 1e-6. bias: False drops every bias (zennit ``zero_params='bias'``).
    """

    def __init__(self, gamma: float = 0.25, stabilizer: StabilizerLike = 1e-6, bias: bool = True):
        self.gamma, self.stabilizer, self.bias = float(gamma), stabilizer, bias
        self._stab = Stabilizer.ensure(stabilizer)

    def relevance(self, layer, x, out, r, nonneg):
        g = self.gamma
        wgp, wgn = layer.param("weight", ("gamma_pos", g)), layer.param("weight", ("gamma_neg", g))
        has_b = self.bias and layer.bias is not None
        bgp = layer.param("bias", ("gamma_pos", g)) if has_b else None
        bgn = layer.param("bias", ("gamma_neg", g)) if has_b else None
        z = out  # zennit masks with the unmodified output (full bias) whatever ``zero_params`` says
        rp = torch.where(z > 0, r, 0.0)
        rn = torch.where(z < 0, r, 0.0)
        if nonneg:
            sp = self._stab.divide(rp, layer.fwd(x, wgp, bgp))
            sn = self._stab.divide(rn, layer.fwd(x, wgn, bgn))
            return x * (layer.vjp(sp, x, wgp) + layer.vjp(sn, x, wgn))
        xp, xn = x.clamp(min=0), x.clamp(max=0)
        sp = self._stab.divide(rp, layer.fwd(xp, wgp, bgp) + layer.fwd(xn, wgn, None))
        sn = self._stab.divide(rn, layer.fwd(xp, wgn, bgn) + layer.fwd(xn, wgp, None))
        return (xp * layer.vjp(sp, x, wgp) + xn * layer.vjp(sp, x, wgn)
                + xp * layer.vjp(sn, x, wgn) + xn * layer.vjp(sn, x, wgp))


class ZBox(LinearRule):
    """z^B (zennit ``ZBox``; DTD for bounded inputs l ≤ x ≤ h):
    R_i = Σ_j (x_i w_ij − l_i w_ij⁺ − h_i w_ij⁻) / Σ_i (x_i w_ij − l_i w_ij⁺ − h_i w_ij⁻) · R_j.
    The bias cancels (b − b⁺ − b⁻ = 0), as in zennit. low/high: scalars, per-channel sequences/tensors (broadcast like
    zennit), or None = the per-sample global min/max of the input (Relevance-CAM reference). stabilizer: signed ε.
    """

    def __init__(self, low=None, high=None, stabilizer: StabilizerLike = 1e-6):
        self.low, self.high, self.stabilizer = low, high, stabilizer
        self._stab = Stabilizer.ensure(stabilizer)

    @staticmethod
    def _bound(v, x: Tensor, reduce) -> Tensor:
        if v is None:
            return reduce(x, dim=tuple(range(1, x.dim())), keepdim=True).expand_as(x)
        t = torch.as_tensor(v, dtype=x.dtype, device=x.device)
        if t.dim() == 1 and x.dim() > 2 and t.numel() == x.shape[1] and t.numel() > 1:
            t = t.view(1, -1, *([1] * (x.dim() - 2)))
        while t.dim() < x.dim():
            t = t.unsqueeze(-1) if t.dim() > 0 else t.unsqueeze(0)
        return t.expand_as(x)

    def relevance(self, layer, x, out, r, nonneg):
        low = self._bound(self.low, x, torch.amin)
        high = self._bound(self.high, x, torch.amax)
        w, wp, wn = layer.weight, layer.param("weight", "pos"), layer.param("weight", "neg")
        b = layer.bias  # b − b⁺ − b⁻ = 0; kept in the arithmetic to round exactly as zennit does
        z = layer.fwd(x, w, b) - (layer.fwd(low, wp, None if b is None else layer.param("bias", "pos"))
                                  + layer.fwd(high, wn, None if b is None else layer.param("bias", "neg")))
        s = self._stab.divide(r, z)
        return x * layer.vjp(s, x, w) - low * layer.vjp(s, x, wp) - high * layer.vjp(s, x, wn)


class Flat(LinearRule):
    """LRP-flat (zennit ``Flat``): x ≡ 1, w ≡ 1, no bias: R_i = Σ_j R_j / Σ_i' 1 (uniform over the receptive field)."""

    def __init__(self, stabilizer: StabilizerLike = 1e-6):
        self.stabilizer = stabilizer
        self._stab = Stabilizer.ensure(stabilizer)

    def relevance(self, layer, x, out, r, nonneg):
        ones_w = layer.param("weight", "ones")
        s = self._stab.divide(r, layer.fwd(torch.ones_like(x), ones_w, None))
        return layer.vjp(s, x, ones_w)


class WSquare(LinearRule):
    """LRP-w² (zennit ``WSquare``): x ≡ 1, w → w², b → b² (zennit squares every parameter unless ``bias=False``):
    R_i = Σ_j w_ij² / (Σ_i' w_i'j² + b_j²) · R_j."""

    def __init__(self, stabilizer: StabilizerLike = 1e-6, bias: bool = True):
        self.stabilizer, self.bias = stabilizer, bias
        self._stab = Stabilizer.ensure(stabilizer)

    def relevance(self, layer, x, out, r, nonneg):
        w2 = layer.param("weight", "square")
        b2 = layer.param("bias", "square") if (self.bias and layer.bias is not None) else None
        s = self._stab.divide(r, layer.fwd(torch.ones_like(x), w2, b2))
        return layer.vjp(s, x, w2)


class Pass(Rule):
    """Identity on relevance (zennit ``Pass``): activations, BatchNorm pass-through, Dropout, Identity.

    zero_where_input_zero: R_in = R where x ≠ 0 and 0 where x = 0 (Relevance-CAM reference BatchNorm:
    R·(x s)/(x s + 1e-9) with the scale cancelling).
    """

    def __init__(self, zero_where_input_zero: bool = False):
        self.zero_where_input_zero = zero_where_input_zero

    def relevance(self, x: Tensor, r: Tensor) -> Tensor:
        if self.zero_where_input_zero:
            return torch.where(x == 0, 0.0, r)
        return r


class Norm(Rule):
    """Proportional redistribution (zennit ``Norm``) for residual Add/Sum and AvgPool/AdaptiveAvgPool/mean:
    R_i = x_i · vjp(R / stabilise(f(x))), i.e. for an Add R_k = x_k R / Σ_k x_k; for an average pool
    R_i = x_i R_j / (n · avg_j x).
    positive: use the positive part x⁺ (Relevance-CAM reference AdaptiveAvgPool: x⁺R/(n·avg x⁺)); same for x ≥ 0.
    stabilizer: signed ε = 1e-6 (zennit).
    """

    def __init__(self, stabilizer: StabilizerLike = 1e-6, positive: bool = False):
        self.stabilizer, self.positive = stabilizer, positive
        self._stab = Stabilizer.ensure(stabilizer)

    def split_add(self, xs: list[Tensor], out: Tensor, r: Tensor) -> list[Tensor]:
        if self.positive:
            xs = [t.clamp(min=0) if isinstance(t, Tensor) else max(t, 0) for t in xs]
            out = sum(xs)
        s = self._stab.divide(r, out)
        return [t * s for t in xs]

    def pool(self, x: Tensor, out: Tensor, r: Tensor, pool_vjp: Callable[[Tensor], Tensor], pool_fn) -> Tensor:
        if self.positive:
            x = x.clamp(min=0)
            out = pool_fn(x)
        s = self._stab.divide(r, out)
        return x * pool_vjp(s)


__all__ = ["AlphaBeta", "Epsilon", "Flat", "Gamma", "LinearRule", "Norm", "Pass", "Rule", "Stabilizer", "WSquare",
           "ZBox", "ZPlus"]
