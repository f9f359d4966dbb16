"""XGrad-CAM (Fu et al., BMVC 2020), cams.md §1.3."""
from __future__ import annotations

import torch

from ._cam_base import gradient_cam
from .registry import MethodOutput, Request, register


def xgrad_cam_map(a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Eq. (9): w_k = Σ_ij (A_kij / (Σ_ab A_kab + 1e-7))·g_kij ;  M = Σ_k w_k A_k (ReLU by the caller).
    Dead channels (Σ A = 0, A = 0) get weight 0, not NaN."""
    sum_a = a.sum(dim=(2, 3), keepdim=True)
    w = (a / (sum_a + 1e-7) * g).sum(dim=(2, 3), keepdim=True)
    w = torch.nan_to_num(w, nan=0.0, posinf=0.0, neginf=0.0)
    return (w * a).sum(dim=1)


@register("xgrad-cam", "XGrad-CAM: activation-weighted gradient channel weights (Fu et al. 2020)", multi_layer=True)
def xgrad_cam(req: Request, *, relu: bool = True, normalize: str = "before_resize",
              score: str = "logit") -> MethodOutput:
    """XGrad-CAM at every requested layer (one forward, one backward stopped at the shallowest layer).

    relu: ReLU on the map; normalize: "before_resize" | "after_resize"; score: "logit" | "probability" |
    "log_probability".
    """
    return gradient_cam(req, xgrad_cam_map, relu=relu, normalize=normalize, score=score)
