"""Score-CAM (Wang et al., CVPR-W 2020), cams.md §1.5: channel weights = the target score of the input masked by each
channel's upsampled, min-max normalised activation map.

Batched: the (sample, channel) pairs are scored in chunks of ``batch_size`` masked forwards; the masks of a chunk are
built from the low-resolution maps when the chunk runs, so memory does not grow with the number of channels. Channels
whose map is constant are never forwarded (their mask carries no spatial information).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..capture import LayerCapture
from ..errors import LayerError, MethodError
from ..ops import display_map, minmax
from .registry import MapResult, MethodOutput, Request, register

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


def _score_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.promote_types(dtype, torch.float32)


def _normalisation(req: Request, mean, std) -> tuple[torch.Tensor, torch.Tensor]:
    meta = getattr(req.model, "cnnlens_meta", None)
    mean = mean if mean is not None else getattr(meta, "mean", None) or _IMAGENET_MEAN
    std = std if std is not None else getattr(meta, "std", None) or _IMAGENET_STD
    c = req.x.shape[1]
    mean_t = torch.as_tensor(mean, dtype=req.x.dtype, device=req.x.device).reshape(-1, 1, 1)
    std_t = torch.as_tensor(std, dtype=req.x.dtype, device=req.x.device).reshape(-1, 1, 1)
    if mean_t.shape[0] not in (1, c) or std_t.shape[0] not in (1, c):
        raise MethodError(f"mean/std must have 1 or {c} entries for mask_space='raw'")
    return mean_t, std_t


def _scores(logits: torch.Tensor, targets: torch.Tensor, variant: str) -> torch.Tensor:
    z = logits.to(_score_dtype(logits.dtype))
    if variant == "paper":
        z = z.softmax(-1)
    return z.gather(1, targets[:, None])[:, 0]


@register("score-cam", "Score-CAM: channel weights = target score of the input masked by each channel (Wang et al. "
          "2020)", multi_layer=True)
def score_cam(req: Request, *, variant: str = "paper", baseline: str = "none", mask_space: str = "normalized",
              batch_size: int = 64, relu: bool = True, normalize: str | None = None,
              mean: tuple[float, ...] | None = None, std: tuple[float, ...] | None = None,
              memory_format: str = "auto") -> MethodOutput:
    """Score-CAM at every requested layer (one capturing forward, then the masked forwards of each layer).

    variant: "paper" (default, the official code d312f14): masks = min-max(Up(A_k)), bilinear align_corners=False;
      constant channels skipped; score = softmax probability of the target; M = Σ_k s_k A_k, ReLU and min-max at input
      resolution. "gc" (pytorch-grad-cam 1.5.7): masks upsampled with align_corners=True and min-max ε 1e-8;
      score = target logit; weights = softmax of the scores across channels; ReLU then min-max at feature resolution.
      (Constant channels are not forwarded in either variant; under "gc" they are scored with the baseline input, which
      is exactly what their all-zero mask gives.)
    baseline: "none" (official code) or "subtract": s_k − Ψ_c(X_b), the CIC of the paper, X_b = the input masked
      everywhere (a no-op under "gc", whose softmax ignores a common shift).
    mask_space: "normalized" (mask the normalised tensor: masked pixels → mean colour, official code) or "raw"
      (un-normalise with mean/std, mask the [0,1] image so masked pixels are black, normalise again; SISE's convention).
    batch_size: masked inputs per forward (memory ∝ batch_size, not to the number of channels).
    relu: ReLU on the map. normalize: None (the variant's order), "before_resize" or "after_resize".
    mean, std: the model's input normalisation for mask_space="raw" (default: model.cnnlens_meta, else ImageNet).
    memory_format: layout of the masked inputs: "auto" (channels_last, ≈1.4× faster convolutions on CPU; falls back
      to contiguous if the model's forward rejects it, e.g. a ``.view`` on a feature map), "channels_last" or
      "contiguous". Only float rounding differs.
    The returned ``raw`` is the low-resolution map Σ_k w_k A_k (ReLU'd when relu=True); extras["channel_scores"] holds
    the (N,K) weights per layer (0 for skipped channels under "paper").
    """
    if variant not in ("paper", "gc"):
        raise MethodError(f"variant must be 'paper' or 'gc', got {variant!r}")
    if baseline not in ("none", "subtract"):
        raise MethodError(f"baseline must be 'none' or 'subtract', got {baseline!r}")
    if mask_space not in ("normalized", "raw"):
        raise MethodError(f"mask_space must be 'normalized' or 'raw', got {mask_space!r}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise MethodError(f"batch_size must be a positive integer, got {batch_size!r}")
    if memory_format not in ("auto", "channels_last", "contiguous"):
        raise MethodError(f"memory_format must be 'auto', 'channels_last' or 'contiguous', got {memory_format!r}")
    if normalize is None:
        normalize = "after_resize" if variant == "paper" else "before_resize"
    if normalize not in ("before_resize", "after_resize"):
        raise MethodError(f"normalize must be None, 'before_resize' or 'after_resize', got {normalize!r}")

    model, x, size = req.model, req.x, req.size
    layers = list(req.layers or [])
    with torch.no_grad():
        with LayerCapture(model, layers, detach=True) as cap:
            logits = model(x)
            acts = cap.check()
        targets = req.resolve_targets(logits)
        if mask_space == "raw":
            mean_t, std_t = _normalisation(req, mean, std)
            image = x * std_t + mean_t

            def masked(idx, m):
                return (image[idx] * m - mean_t) / std_t
        else:
            def masked(idx, m):
                return x[idx] * m

        base_scores = None
        if baseline == "subtract" or variant == "gc":
            all_idx = torch.arange(x.shape[0], device=x.device)
            base_scores = _scores(model(masked(all_idx, torch.zeros_like(x[:, :1]))), targets, variant)

        forward = _MaskedForward(model, memory_format)
        maps = {}
        for name in layers:
            a = acts[name]
            if a.dim() != 4:
                raise LayerError(f"layer {name!r} outputs shape {tuple(a.shape)}; a CAM needs a (N,C,h,w) feature map")
            maps[name] = _layer_map(forward, a, targets, masked, base_scores, variant, baseline, batch_size, relu,
                                    normalize, size, req.progress, name)
    return MethodOutput(maps=maps, targets=targets, logits=logits.detach())


class _MaskedForward:
    """Runs the model on a chunk of masked inputs in the chosen memory format ("auto": channels_last, and contiguous
    for the rest of the call if the model raises on a channels_last input)."""

    def __init__(self, model, memory_format: str) -> None:
        self.model = model
        self.mode = memory_format

    def __call__(self, inputs: torch.Tensor) -> torch.Tensor:
        if self.mode == "contiguous" or inputs.dim() != 4:
            return self.model(inputs)
        cl = inputs.contiguous(memory_format=torch.channels_last)
        if self.mode == "channels_last":
            return self.model(cl)
        try:
            return self.model(cl)
        except RuntimeError:
            self.mode = "contiguous"
            return self.model(inputs.contiguous())


def _layer_map(model, a, targets, masked, base_scores, variant, baseline, batch_size, relu, normalize, size, progress,
               name) -> MapResult:
    n, k = a.shape[:2]
    flat = a.reshape(n, k, -1)
    varying = flat.amax(dim=2) > flat.amin(dim=2)                       # (N,K); constant maps are never forwarded
    pairs = varying.nonzero()                                           # the one host sync of the layer
    scores = torch.zeros(n, k, dtype=_score_dtype(a.dtype), device=a.device)
    align = variant == "gc"
    chunks = range(0, pairs.shape[0], batch_size)
    if progress:
        from tqdm.auto import tqdm
        chunks = tqdm(chunks, desc=f"score-cam {name}", unit="chunk")
    for start in chunks:
        b_idx, k_idx = pairs[start:start + batch_size].unbind(1)
        up = F.interpolate(a[b_idx, k_idx][:, None], size=size, mode="bilinear", align_corners=align)
        lo = up.amin(dim=(2, 3), keepdim=True)
        hi = up.amax(dim=(2, 3), keepdim=True)
        if variant == "gc":
            mask = (up - lo) / (hi - lo + 1e-8)
        else:
            span = hi - lo
            mask = torch.where(span > 0, (up - lo) / torch.where(span > 0, span, torch.ones_like(span)),
                               torch.zeros_like(up))
        s = _scores(model(masked(b_idx, mask)), targets[b_idx], variant)
        if variant == "paper":
            s = s * (hi > lo).reshape(-1)                              # skip masks constant after upsampling
            if baseline == "subtract":
                s = s - base_scores[b_idx] * (hi > lo).reshape(-1)
        scores[b_idx, k_idx] = s
    if variant == "gc":
        scores = torch.where(varying, scores, base_scores[:, None].expand(n, k))
        weights = scores.softmax(dim=1)
    else:
        weights = scores
    cam = torch.einsum("nk,nkhw->nhw", weights.to(a.dtype), a)
    raw = torch.relu(cam) if relu else cam
    if variant == "paper" and normalize == "after_resize":
        up = F.interpolate(cam[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
        heatmap = minmax(torch.relu(up) if relu else up)
    else:
        heatmap = display_map(raw, size, normalize)
    hflat = heatmap.reshape(n, -1)
    constant = hflat.amax(dim=1) == hflat.amin(dim=1)
    return MapResult(raw=raw, heatmap=heatmap,
                     extras={"constant_map": constant, "channel_scores": weights, "skipped_channels": ~varying})
