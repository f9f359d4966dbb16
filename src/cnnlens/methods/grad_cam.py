"""Grad-CAM (Selvaraju et al., ICCV 2017), cams.md §1.1."""
from __future__ import annotations

import torch

from ._cam_base import gradient_cam
from .registry import MethodOutput, Request, register


def grad_cam_map(a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Eq. (1)-(2): w_k = (1/hw) Σ_ij ∂S^c/∂A_kij ;  M = Σ_k w_k A_k (ReLU applied by the caller)."""
    w = g.mean(dim=(2, 3), keepdim=True)
    return (w * a).sum(dim=1)


@register("grad-cam", "Grad-CAM: channel weights = spatial mean of the gradient (Selvaraju et al. 2017)",
          multi_layer=True)
def grad_cam(req: Request, *, relu: bool = True, normalize: str = "before_resize",
             score: str = "logit") -> MethodOutput:
    """Grad-CAM at every requested layer from one forward and one backward that stops at the shallowest layer.

    relu: apply ReLU to the map (the paper); False exposes negative evidence.
    normalize: "before_resize" (min-max at feature resolution, then bilinear upsampling) or "after_resize".
    score: "logit" (default, pre-softmax y^c), "probability" or "log_probability".
    """
    return gradient_cam(req, grad_cam_map, relu=relu, normalize=normalize, score=score)
