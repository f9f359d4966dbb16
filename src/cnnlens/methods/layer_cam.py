"""Layer-CAM (Jiang et al., IEEE TIP 2021), cams.md §1.4: element-wise positive-gradient weights, and the multi-layer
fusion of the paper's Eq. (9)."""
from __future__ import annotations

import torch

from ..ops import minmax, resize
from ._cam_base import gradient_cam
from .registry import MapResult, MethodOutput, Request, register


def layer_cam_map(a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Eq. (5)-(6): M = Σ_k ReLU(g_k) ⊙ A_k (ReLU on the map applied by the caller)."""
    return (torch.relu(g) * a).sum(dim=1)


def fuse_layer_cams(raws: list[torch.Tensor], size: tuple[int, int], gamma: float = 2.0,
                    scale: str = "shallow") -> tuple[torch.Tensor, torch.Tensor]:
    """Fuse per-layer maps (each (N,h,w), ordered shallow → deep) into one display map (N,H,W) in [0,1].

    Each map is divided by its per-sample max; Eq. (9) M̂ = tanh(γ·M/max M) is applied to the shallow layers
    (``scale="shallow"``, the paper: every layer but the deepest, i.e. the one with the fewest pixels) or to every layer
    (``scale="all"``, torchcam); maps are bilinearly upsampled to the largest one, fused by element-wise max, min-max
    normalised and upsampled to the input size. Returns (fused map at the largest layer resolution, display map)."""
    if scale not in ("shallow", "all"):
        raise ValueError(f"fuse_scale must be 'shallow' or 'all', got {scale!r}")
    deepest = min(range(len(raws)), key=lambda i: (raws[i].shape[-2] * raws[i].shape[-1], -i))
    largest = max(raws, key=lambda r: r.shape[-2] * r.shape[-1]).shape[-2:]
    scaled = []
    for i, r in enumerate(raws):
        r = r.detach()
        peak = r.reshape(r.shape[0], -1).amax(dim=1).reshape(-1, 1, 1)
        m = torch.where(peak > 0, r / torch.where(peak > 0, peak, torch.ones_like(peak)), torch.zeros_like(r))
        if scale == "all" or i != deepest:
            m = torch.tanh(gamma * m)
        scaled.append(resize(m, tuple(largest)))
    fused = torch.stack(scaled).amax(dim=0)
    return fused, resize(minmax(fused), size).clamp_(0.0, 1.0)


@register("layer-cam", "Layer-CAM: element-wise positive-gradient weights, usable at shallow layers (Jiang et al. "
          "2021)", multi_layer=True)
def layer_cam(req: Request, *, relu: bool = True, normalize: str = "before_resize", score: str = "logit",
              fuse: bool = False, gamma: float = 2.0, fuse_scale: str = "shallow") -> MethodOutput:
    """Layer-CAM at every requested layer (one forward, one backward stopped at the shallowest layer).

    relu, normalize, score: as Grad-CAM.
    fuse: with several layers, also return the fused map of Eq. (9) under the key ``"fused"`` (raw = the fused map
    at the largest layer resolution before min-max; extras["layers"] = the fused layers).
    gamma: γ of Eq. (9) (paper: 2). fuse_scale: "shallow" (paper: tanh on all but the deepest layer) or "all"
    (torchcam: tanh on every layer).
    """
    out = gradient_cam(req, layer_cam_map, relu=relu, normalize=normalize, score=score)
    layers = list(req.layers or [])
    if fuse and len(layers) > 1:
        raws = [out.maps[name].raw for name in layers]
        fused, heat = fuse_layer_cams(raws, req.size, gamma=gamma, scale=fuse_scale)
        out.maps["fused"] = MapResult(raw=fused, heatmap=heat,
                                      extras={"layers": layers, "gamma": gamma, "fuse_scale": fuse_scale})
    return out
