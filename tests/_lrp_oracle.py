"""zennit 0.5.1 oracles for the LRP engine tests (lrp_sglrp_clrp.md §9.1). Test-only: zennit is never imported by the
library."""
from __future__ import annotations

import torch
import torchvision

from _models import randomize_batchnorm  # noqa: F401,E402  (re-exported for the zennit tests)

zennit = __import__("pytest").importorskip("zennit")
from zennit.attribution import Gradient  # noqa: E402
from zennit.canonizers import SequentialMergeBatchNorm  # noqa: E402
from zennit.core import BasicHook, ParamMod, Stabilizer  # noqa: E402
from zennit.composites import (EpsilonAlpha2Beta1, EpsilonAlpha2Beta1Flat, EpsilonGammaBox, EpsilonPlus,  # noqa: E402
                               EpsilonPlusFlat, SpecialFirstLayerMapComposite, layer_map_base)
from zennit.rules import ClampMod, ZBox, ZPlus  # noqa: E402
from zennit.torchvision import ResNetCanonizer, VGGCanonizer  # noqa: E402
from zennit.types import Convolution  # noqa: E402

LOW = torch.tensor([-0.485 / 0.229, -0.456 / 0.224, -0.406 / 0.225], dtype=torch.float64).view(1, 3, 1, 1)
HIGH = torch.tensor([(1 - 0.485) / 0.229, (1 - 0.456) / 0.224, (1 - 0.406) / 0.225], dtype=torch.float64).view(1, 3, 1, 1)


def exact_zero(z: torch.Tensor) -> torch.Tensor:
    """Callable stabiliser equivalent to cnnlens's exact-zero guard: R / inf = 0 where Z == 0."""
    return torch.where(z == 0, torch.full_like(z, float("inf")), z)


def canonizers(model):
    if isinstance(model, torchvision.models.ResNet):
        return [ResNetCanonizer()]
    if isinstance(model, torchvision.models.VGG):
        return [VGGCanonizer()]
    return [SequentialMergeBatchNorm()]


def zennit_composite(name: str, model, low=LOW, high=HIGH):
    cans = canonizers(model)
    if name == "epsilon-plus":
        return EpsilonPlus(canonizers=cans)
    if name == "epsilon-plus-flat":
        return EpsilonPlusFlat(canonizers=cans)
    if name == "epsilon-gamma-box":
        return EpsilonGammaBox(low=low.to(torch.float64), high=high.to(torch.float64), canonizers=cans)
    if name == "epsilon-alpha2-beta1":
        return EpsilonAlpha2Beta1(canonizers=cans)
    if name == "epsilon-alpha2-beta1-flat":
        return EpsilonAlpha2Beta1Flat(canonizers=cans)
    if name == "dtd":  # §9.1: bias-free z+ everywhere, zB first conv, exact-zero guard
        layer_map = layer_map_base(exact_zero) + [
            (Convolution, ZPlus(stabilizer=exact_zero, zero_params="bias")),
            (torch.nn.Linear, ZPlus(stabilizer=exact_zero, zero_params="bias")),
        ]
        first_map = [(Convolution, ZBox(low=low.to(torch.float64), high=high.to(torch.float64),
                                        stabilizer=exact_zero))]
        return SpecialFirstLayerMapComposite(layer_map=layer_map, first_map=first_map, canonizers=cans)
    raise KeyError(name)


def zennit_relevance(model, x, r0, composite) -> torch.Tensor:
    with Gradient(model=model, composite=composite) as attributor:
        _, rel = attributor(x, attr_output=r0)
    return rel


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp(min=1e-300))


# ------------------------------------------------------------------------------------ reference composites (§9.1)

#: scalar zB bounds of the reference presets: the min of the per-channel lows and the max of the per-channel highs of
#: torchvision's ImageNet normalisation (−0.485/0.229 ≈ −2.1179, (1 − 0.406)/0.225 = 2.64; §3 "zB bounds")
SCALAR_LOW = torch.tensor(-0.485 / 0.229, dtype=torch.float64)
SCALAR_HIGH = torch.tensor((1 - 0.406) / 0.225, dtype=torch.float64)


def safe_divide_1e7(z: torch.Tensor) -> torch.Tensor:
    """Callable stabiliser = iNNvestigate 1.0.8.3 ``SafeDivide``: 1e-7 replaces exact zeros, nothing else changes."""
    return torch.where(z == 0, torch.full_like(z, 1e-7), z)


def add_1e9(z: torch.Tensor) -> torch.Tensor:
    """Callable stabiliser = CLRP official code: unsigned Z + 1e-9 everywhere."""
    return z + 1e-9


class ZPlusFullBias(BasicHook):
    """z⁺ (α1β0) with the FULL bias b_j in the positive copy (§2 ``bias="full"``, iNNvestigate 1.0.8.3):
    Z_j = Σ_i (x_i⁺ w_ij⁺ + x_i⁻ w_ij⁻) + b_j. zennit's stock ``ZPlus`` clamps every parameter, bias included (b⁺); here
    only the weight is clamped in the positive copy, and the negative-input copy (W⁻) has a zero bias."""

    def __init__(self, stabilizer):
        stab = Stabilizer.ensure(stabilizer)
        super().__init__(
            input_modifiers=[lambda t: t.clamp(min=0), lambda t: t.clamp(max=0)],
            param_modifiers=[ParamMod(lambda p, name: p.clamp(min=0) if name == "weight" else p),
                             ClampMod(max=0., zero_params=["bias"])],
            output_modifiers=[lambda t: t] * 2,
            gradient_mapper=lambda out_grad, outputs: [out_grad / stab(outputs[0] + outputs[1])] * 2,
            reducer=lambda inputs, grads: inputs[0] * grads[0] + inputs[1] * grads[1],
        )


def reference_composite(name: str, model):
    """zennit equivalents of cnnlens's ``sglrp-reference`` and ``clrp-reference`` (§3 table, §9.1): zB with scalar
    bounds on the first conv, z⁺ elsewhere (full bias / bias-free), the composite's stabiliser as a callable everywhere
    (Sum/AvgPool Norm included), max pool left to the plain gradient, BatchNorm merged by the model's canonizers."""
    if name == "sglrp-reference":
        stab = safe_divide_1e7
        body = ZPlusFullBias(stab)
    elif name == "clrp-reference":
        stab = add_1e9
        body = ZPlus(stabilizer=stab, zero_params="bias")
    else:
        raise KeyError(name)
    layer_map = layer_map_base(stab) + [(Convolution, body), (torch.nn.Linear, body)]  # hooks are copied per module
    first_map = [(Convolution, ZBox(low=SCALAR_LOW, high=SCALAR_HIGH, stabilizer=stab))]
    return SpecialFirstLayerMapComposite(layer_map=layer_map, first_map=first_map, canonizers=canonizers(model))
