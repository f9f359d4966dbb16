"""Relevance-CAM (Lee et al., CVPR 2021), relevance_cam.md: channel weights α_k = the spatial mean of the LRP relevance
at the target layer (reference code mongeoroo/Relevance-CAM 49b03bd), map M = Σ_k α_k A_k.

Any number of layers comes from ONE forward and ONE relevance pass of the LRP engine, stopped at the shallowest
requested layer (relevance_cam.md §3 "Layer sweep"): ``explain(model, x, "relevance-cam", layer=[...])`` or
``layer="blocks"``.
"""
from __future__ import annotations

import warnings
from typing import Any

import torch

from ..errors import LayerError, MethodError
from ..models.layers import as_channels_first
from ..ops import display_map
from .registry import MapResult, MethodOutput, Request, check_choice, register

_MODES = {
    # mode: (init, weights, conv_bias)   — relevance_cam.md §2 decision 5
    "reference": ("reference", "mean", "reference"),
    "paper": ("paper", "sum", "none"),
}


def initial_relevance(logits: torch.Tensor, targets: torch.Tensor, init: str = "reference") -> torch.Tensor:
    """The contrastive initial relevance ρ at the logits (relevance_cam.md §1.2).

    "reference": ρ_t = 1, ρ_n = −1/C for n ≠ t (modules/resnet.py L281-288, modules/vgg.py L111-118).
    "paper" [secondary]: ρ_t = z_t, ρ_n = −z_t/(C−1).
    """
    n, c = logits.shape
    onehot = torch.zeros_like(logits).scatter_(1, targets[:, None], 1.0)
    if init == "reference":
        return onehot - (1.0 - onehot) / c
    if init == "paper":
        zt = logits.gather(1, targets[:, None])
        return zt * onehot - zt * (1.0 - onehot) / (c - 1)
    raise MethodError(f"init must be 'reference' or 'paper', got {init!r}")


def channel_weights(relevance: torch.Tensor, weights: str = "mean") -> torch.Tensor:
    """α_k from the relevance R (N,K,h,w) at the layer: spatial mean ("mean", reference) or sum ("sum", paper)."""
    if weights == "mean":
        return relevance.mean(dim=(2, 3))
    if weights == "sum":
        return relevance.sum(dim=(2, 3))
    raise MethodError(f"weights must be 'mean' or 'sum', got {weights!r}")


@register("relevance-cam", "Relevance-CAM: channel weights = LRP relevance at the layer, any depth, all layers from one "
          "pass (Lee et al. 2021)", multi_layer=True)
def relevance_cam(req: Request, *, mode: str = "reference", init: str | None = None, weights: str | None = None,
                  relu: bool = False, normalize: str = "before_resize", composite: Any = "relevance-cam-reference",
                  conv_bias: str | None = None, bn: str = "pass") -> MethodOutput:
    """Relevance-CAM at every requested layer from one forward and one LRP pass stopped at the shallowest layer.

    mode: "reference" (default; the verified reference code: init="reference", weights="mean",
      conv_bias="reference") or "paper" (init="paper", weights="sum", conv_bias="none"). Explicit init/weights/
      conv_bias override the mode's value.
    init: initial relevance at the logits, "reference" (ρ_t = 1, ρ_n = −1/C) or "paper" (ρ_t = z_t,
      ρ_n = −z_t/(C−1); warns when z_t ≤ 0, where it flips the map's sign).
    weights: "mean" (α_k = spatial mean of R_k, reference) or "sum" (paper; same map up to scale).
    relu: ReLU on M = Σ_k α_k A_k (default False: neither the reference nor the paper has one).
    normalize: "before_resize" (reference: min-max at feature resolution, then bilinear upsampling) or
      "after_resize". The raw low-resolution map (sign kept) is always returned as ``raw``.
    composite: the LRP rules, a composite name or object (default "relevance-cam-reference", relevance_cam.md §2);
      conv_bias and bn are passed to the named default composite only.
    conv_bias: "reference" (2·b in conv denominators, the reference's quirk) or "none".
    bn: "pass" (BatchNorm pass-through, reference) or "fold".
    extras: "channel_weights" (N,K) α_k, "relevance_sum" (N,) Σ R at the layer, "init" the ρ used.
    """
    from ..lrp import lrp_attribute  # the engine is imported only when the method runs

    check_choice("mode", mode, tuple(_MODES))
    m_init, m_weights, m_bias = _MODES[mode]
    init = m_init if init is None else init
    weights = m_weights if weights is None else weights
    conv_bias = m_bias if conv_bias is None else conv_bias
    check_choice("init", init, ("reference", "paper"))
    check_choice("weights", weights, ("mean", "sum"))
    check_choice("normalize", normalize, ("before_resize", "after_resize"))
    layers = list(req.layers or [])
    if not layers:
        raise LayerError("relevance-cam needs at least one layer")
    comp_options = {}
    if composite == "relevance-cam-reference":
        comp_options = {"conv_bias": conv_bias, "bn": bn}
    elif conv_bias != m_bias or bn != "pass":
        raise MethodError("conv_bias and bn apply to the default composite 'relevance-cam-reference' only")

    state: dict[str, torch.Tensor] = {}

    def rho(logits: torch.Tensor) -> torch.Tensor:
        targets = req.resolve_targets(logits)
        state["targets"] = targets
        if init == "paper":
            zt = logits.gather(1, targets[:, None])
            if bool((zt <= 0).any()):
                warnings.warn("init='paper' with a target logit z_t <= 0 flips the map's sign for those samples "
                              "(relevance_cam.md §1.2)", RuntimeWarning, stacklevel=4)
        return initial_relevance(logits, targets, init)

    res = lrp_attribute(req.model, req.x, rho, composite, layers, input_relevance=False, **comp_options)
    maps = {}
    for name in layers:
        a, r = as_channels_first(req.model, name, res.activations[name], res.relevance[name])
        if a.dim() != 4:
            raise LayerError(f"layer {name!r} outputs shape {tuple(a.shape)}; a CAM needs a (N,C,h,w) feature map")
        alpha = channel_weights(r, weights)
        cam = torch.einsum("nk,nkhw->nhw", alpha, a)
        if relu:
            cam = torch.relu(cam)
        flat = cam.reshape(cam.shape[0], -1)
        maps[name] = MapResult(raw=cam, heatmap=display_map(cam, req.size, normalize),
                               extras={"channel_weights": alpha, "relevance_sum": r.sum(dim=(1, 2, 3)),
                                       "init": res.initial,
                                       "constant_map": flat.amax(dim=1) == flat.amin(dim=1)})
    return MethodOutput(maps=maps, targets=state["targets"], logits=res.logits)
