"""Grad-CAM++ (Chattopadhay et al., WACV 2018), cams.md §1.2, closed form of Eq. (19) with Y^c = exp(S^c)."""
from __future__ import annotations

import torch

from ._cam_base import gradient_cam
from .registry import MethodOutput, Request, register


def grad_cam_pp_map(a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """α_kij = g² / (2g² + (Σ_ab A_kab)·g³ + 1e-6), α = 0 where g = 0 (NaN guard, as pytorch-grad-cam);
    w_k = Σ_ij α_kij·ReLU(g_kij);  M = Σ_k w_k A_k (ReLU applied by the caller)."""
    g2 = g * g
    sum_a = a.sum(dim=(2, 3), keepdim=True)
    alpha = g2 / (2 * g2 + sum_a * g2 * g + 1e-6)
    alpha = torch.where(g != 0, alpha, torch.zeros_like(alpha))
    w = (alpha * torch.relu(g)).sum(dim=(2, 3), keepdim=True)
    return (w * a).sum(dim=1)


@register("grad-cam++", "Grad-CAM++: channel weights from positive gradients with pixel-wise α (Chattopadhay et al. "
          "2018)", multi_layer=True)
def grad_cam_pp(req: Request, *, relu: bool = True, normalize: str = "before_resize",
                score: str = "logit") -> MethodOutput:
    """Grad-CAM++ at every requested layer (one forward, one backward stopped at the shallowest layer).

    relu: ReLU on the map (paper); normalize: "before_resize" | "after_resize"; score: "logit" | "probability" |
    "log_probability" (the exp(S^c) factor of the closed form is a positive constant and is dropped).
    """
    return gradient_cam(req, grad_cam_pp_map, relu=relu, normalize=normalize, score=score)
