"""Shared machinery of the gradient CAMs (cams.md §1-2): one forward with layer capture, one backward that stops at
the shallowest requested layer (``torch.autograd.grad`` w.r.t. the captured activations: no parameter gradients, works
with frozen models), then a per-method map ``cam_fn(A, g) -> (N,h,w)``. A new gradient CAM is a ``cam_fn``."""
from __future__ import annotations

import warnings
from typing import Callable

import torch

from ..capture import LayerCapture
from ..models.layers import as_channels_first
from ..ops import display_map
from .registry import MapResult, MethodOutput, Request

CamFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def class_score(logits: torch.Tensor, targets: torch.Tensor, score: str = "logit") -> torch.Tensor:
    """Σ_b S_b^{c_b}: the per-sample target scores summed (valid in eval mode, samples do not interact)."""
    if score == "logit":
        s = logits
    elif score == "probability":
        s = logits.float().softmax(-1)
    elif score == "log_probability":
        s = logits.float().log_softmax(-1)
    else:
        raise ValueError(f"score must be 'logit', 'probability' or 'log_probability', got {score!r}")
    return s.gather(1, targets[:, None]).sum()


def forward_with_gradients(req: Request, score: str = "logit"):
    """One forward capturing ``req.layers``; one backward from the target scores to those layers only.
    Returns (logits, targets, {layer: A}, {layer: dS/dA})."""
    layers = req.layers or []
    with torch.enable_grad(), LayerCapture(req.model, layers) as cap:
        logits = req.model(req.x)
        acts = cap.check()
    targets = req.resolve_targets(logits)
    with torch.enable_grad():
        s = class_score(logits, targets, score)
        grads = torch.autograd.grad(s, [acts[n] for n in layers], allow_unused=True)
    grads = {n: (torch.zeros_like(acts[n]) if g is None else g) for n, g in zip(layers, grads)}
    acts = {n: a.detach() for n, a in acts.items()}
    for n in layers:  # channels-last layers (ConvNeXt's MLP) as (N,C,h,w)
        acts[n], grads[n] = as_channels_first(req.model, n, acts[n], grads[n])
    return logits.detach(), targets, acts, grads


def gradient_cam(req: Request, cam_fn: CamFn, *, relu: bool = True, normalize: str = "before_resize",
                 score: str = "logit") -> MethodOutput:
    logits, targets, acts, grads = forward_with_gradients(req, score)
    maps = {}
    for name in req.layers or []:
        a, g = acts[name], grads[name]
        if a.dim() != 4:
            from ..errors import LayerError
            raise LayerError(f"layer {name!r} outputs shape {tuple(a.shape)}; a CAM needs a (N,C,h,w) feature map")
        cam = cam_fn(a, g)
        if relu:
            cam = torch.relu(cam)
        zero_grad = ~(g.reshape(g.shape[0], -1) != 0).any(dim=1)
        if bool(zero_grad.any()):
            warnings.warn(f"{name}: the gradient of the target score is zero for some samples; their maps are zero",
                          RuntimeWarning, stacklevel=3)
        flat = cam.reshape(cam.shape[0], -1)
        all_zero = (flat.max(dim=1).values == flat.min(dim=1).values)
        maps[name] = MapResult(raw=cam, heatmap=display_map(cam, req.size, normalize),
                               extras={"constant_map": all_zero})
    return MethodOutput(maps=maps, targets=targets, logits=logits)
