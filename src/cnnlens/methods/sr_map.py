"""SR map — Salient Relevance map (Li, Tian, Mueller & Chen, Image and Vision Computing 2019; arXiv 1712.08268).

``sr_map.md``: step 1 (§1) an LRP map at the input (composite ``sr-reference`` by default: LRP-0 with bias in every conv,
z⁺ without bias in the linear layers, +1e-9 stabiliser; initial relevance = the target's logit, one-hot); the map → image
conversion (§1.5, §4.2); step 2 (§2) Goferman's context-aware saliency on that image
(:mod:`cnnlens.methods._context_saliency`). The result keeps the LRP map and the attention areas (the attended > 0.8
pixels of the foci step) in ``MapResult.extras``.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch

from ..errors import MethodError
from ..ops import minmax, resize
from . import _context_saliency as ca
from .registry import MapResult, MethodOutput, Request, register

ENCODINGS = ("rgb_uint8", "rgb_jpeg", "gray")
MODES = ("paper", "reference")


def encode_relevance(relevance: torch.Tensor, encoding: str = "rgb_uint8", jpeg_quality: int = 75) -> torch.Tensor:
    """§1.5 / §4.2: the CA input image from an input relevance (N,3,H,W).

    ``"rgb_uint8"``: per-channel |R|, one global min–max per sample over all three channels to 0–255, uint8 truncation,
    returned as sRGB in [0,1] (values k/255). ``"rgb_jpeg"``: plus a JPEG round trip (Pillow, ``jpeg_quality``, the
    reference's PIL default 75; depends on the libjpeg build). ``"gray"``: Σ_c |R| min–max normalised to [0,1], one
    channel, fed to CA without Lab (a cleaner deviation). A constant map gives an all-zero image."""
    if relevance.dim() != 4:
        raise MethodError(f"relevance must be (N,C,H,W), got shape {tuple(relevance.shape)}")
    a = relevance.detach().abs()
    if encoding == "gray":
        return minmax(a.sum(dim=1, keepdim=True))
    if encoding not in ("rgb_uint8", "rgb_jpeg"):
        raise MethodError(f"encoding must be one of {ENCODINGS}, got {encoding!r}")
    if a.shape[1] != 3:
        raise MethodError(f"encoding {encoding!r} needs a 3-channel relevance, got {a.shape[1]} channels "
                          f"(use encoding='gray')")
    u8 = torch.floor(255.0 * minmax(a)).clamp_(0, 255)    # truncation, as numpy's uint8 cast of non-negative values
    if encoding == "rgb_jpeg":
        u8 = _jpeg_round_trip(u8.to(torch.uint8), jpeg_quality).to(a.dtype)
    return u8 / 255.0


def _jpeg_round_trip(u8: torch.Tensor, quality: int) -> torch.Tensor:
    """Encode/decode each (3,H,W) uint8 image as an RGB JPEG with Pillow (imported lazily: reference mode only)."""
    import io

    import numpy as np
    from PIL import Image

    out = []
    for img in u8.cpu():
        buf = io.BytesIO()
        Image.fromarray(img.permute(1, 2, 0).numpy(), mode="RGB").save(buf, format="JPEG", quality=int(quality))
        buf.seek(0)
        out.append(torch.from_numpy(np.asarray(Image.open(buf).convert("RGB")).copy()).permute(2, 0, 1))
    return torch.stack(out).to(u8.device)


def _output_size(output_size: Any, input_size: tuple[int, int]) -> tuple[int, int] | None:
    if output_size is None:
        return None
    if output_size == "input":
        return input_size
    if isinstance(output_size, int):
        return (output_size, output_size)
    size = tuple(int(v) for v in output_size)
    if len(size) != 2:
        raise MethodError(f"output_size must be 'input', None, an int or (height, width), got {output_size!r}")
    return size


def sr_map_from_relevance(relevance: torch.Tensor, *, encoding: str = "rgb_uint8", ca_variant: str = "paper",
                          working_size: int | None = 250, output_size: Any = "input", white: str | None = None,
                          jpeg_quality: int = 75, **ca_options: Any) -> dict[str, torch.Tensor]:
    """Steps 1.5 + 2: input relevance (N,3,H,W) → SR map. ``ca_options``: see ``_context_saliency.make_config``
    (patch, K, c, scales, search_scales, foci, min_scale, exclude_self, candidate_stride, query_stride, chunk_elements).

    Returns ``{"sr_map": (N,h,w) Ŝ at output_size (None: the working size), "attention_areas": (N,h,w) bool at the
    same size, "sr_map_working": Ŝ at the working size, "encoded": the CA input image (N,C,H,W) in [0,1]}``."""
    try:
        cfg = ca.make_config(ca_variant, **ca_options)
    except (TypeError, ValueError) as exc:
        raise MethodError(f"sr-map: {exc}") from None
    if white is None:   # MATLAB makecform('srgb2lab') (Tsai–Chang) adapts to D50; skimage rgb2lab uses D65
        white = "D50" if ca_variant == "tsai_chang" else "D65"
    image = encode_relevance(relevance, encoding, jpeg_quality)
    try:
        res = ca.context_saliency(image, cfg, working_size=working_size, white=white)
    except ValueError as exc:
        raise MethodError(f"sr-map: {exc}") from None
    size = _output_size(output_size, tuple(relevance.shape[-2:]))
    sal, att = res.saliency, res.attended
    if size is not None and tuple(sal.shape[-2:]) != size:
        sal = resize(sal, size).clamp_(0.0, 1.0)
        att = resize(att.to(res.saliency.dtype), size) >= 0.5
    return {"sr_map": sal, "attention_areas": att, "sr_map_working": res.saliency, "encoded": image}


def _initial_relevance(kind: str, holder: dict, req: Request):
    if kind not in ("logit", "one"):
        raise MethodError(f"initial must be 'logit' (the target's logit, one-hot: the reference) or 'one', got {kind!r}")

    def init(logits: torch.Tensor) -> torch.Tensor:
        targets = req.resolve_targets(logits)
        holder["targets"] = targets
        onehot = torch.zeros_like(logits)
        onehot.scatter_(1, targets[:, None].to(logits.device), 1.0)
        return onehot * logits.detach() if kind == "logit" else onehot
    return init


@register("sr-map", "SR map: context-aware saliency (Goferman) of the |LRP| input map (Li et al. 2019)",
          layers="none", family="lrp")
def sr_map(req: Request, *, composite: Any = "sr-reference", mode: str = "paper", initial: str = "logit",
           encoding: str | None = None, ca_variant: str = "paper", working_size: int | None = 250,
           patch: int | Sequence[int] | None = None, K: int = 64, c: float = 3.0,
           scales: Sequence[float] = (1.0, 0.8, 0.5, 0.3), search_scales: Sequence[float] = (1.0, 0.5, 0.25),
           foci: float = 0.8, min_scale: float = 0.2, exclude_self: bool | None = None,
           candidate_stride: int | Sequence[int] | None = None, query_stride: int = 1, white: str | None = None,
           output_size: Any = "input", jpeg_quality: int = 75, chunk_elements: int = 1 << 23,
           composite_options: dict | None = None) -> MethodOutput:
    """SR map of each sample's target (``sr_map.md`` §1-4).

    composite: LRP composite for step 1 (``"sr-reference"``, or any name in ``cnnlens.lrp.COMPOSITES`` / a Composite).
    mode: ``"paper"`` (max-pool gradient routing, uint8 encoding) or ``"reference"`` (the notebook: max-pool
    unpool-overwrite for overlapping pools, JPEG round trip). initial: ``"logit"`` (z_t·e_t, the reference) or ``"one"``.
    encoding: ``"rgb_uint8"`` (default in paper mode) | ``"rgb_jpeg"`` (default in reference mode) | ``"gray"``.
    ca_variant: ``"paper"`` | ``"tsai_chang"`` | ``"eigen"``; working_size (250), patch (7; 7/5/3/3 for tsai_chang),
    K (64), c (3), scales (1, .8, .5, .3), search_scales (1, .5, .25), foci (0.8), min_scale (0.2, tsai_chang),
    exclude_self (True except tsai_chang), candidate_stride (half the patch), query_stride (1: every pixel; s > 1
    approximates with s² fewer queries), white (None: "D50" for tsai_chang as MATLAB makecform, else "D65" as skimage).
    output_size: ``"input"`` (default: bilinear back to the input size), None (working size) or (h, w).
    ``raw`` = Ŝ at output_size; ``heatmap`` = its min–max at the input size. extras: ``lrp_map`` (N,3,H,W signed input
    relevance), ``attention_areas`` (bool, raw's size), ``sr_map_working``, ``encoded`` (the CA input), ``settings``.

    Cost: the CA step dominates (≈1.2·10¹¹ multiply-adds per image at 250 px, ``sr_map.md`` §7): tens of seconds on a
    small CPU, well under a second on a GPU. For interactive CPU use, ``working_size=128, query_stride=3`` is ≈80×
    cheaper (benchmarks/bench_sr_map.py: Pearson r ≈ 0.995 with the full map on a synthetic LRP map) — an
    approximation, not the paper's setting.
    """
    if mode not in MODES:
        raise MethodError(f"mode must be one of {MODES}, got {mode!r}")
    if encoding is None:
        encoding = "rgb_jpeg" if mode == "reference" else "rgb_uint8"
    from ..lrp import composite_options as _accepted, lrp_attribute   # the LRP engine (lrp_contract.md)

    options = dict(composite_options or {})
    if mode == "reference":
        if not isinstance(composite, str) or "maxpool" not in _accepted(composite):
            raise MethodError(f"mode='reference' sets the composite's maxpool='unpool_overwrite'; composite "
                              f"{composite!r} has no maxpool option (use mode='paper' or composite='sr-reference')")
        options.setdefault("maxpool", "unpool_overwrite")
    holder: dict = {}
    res = lrp_attribute(req.model, req.x, _initial_relevance(initial, holder, req), composite=composite,
                        **options)
    relevance = res.input
    targets = holder.get("targets")
    if targets is None:
        targets = req.resolve_targets(res.logits)
    out = sr_map_from_relevance(relevance, encoding=encoding, ca_variant=ca_variant, working_size=working_size,
                                output_size=output_size, white=white, jpeg_quality=jpeg_quality, patch=patch, K=K,
                                c=c, scales=scales, search_scales=search_scales, foci=foci, min_scale=min_scale,
                                exclude_self=exclude_self, candidate_stride=candidate_stride,
                                query_stride=query_stride, chunk_elements=chunk_elements)
    raw = out["sr_map"]
    heatmap = minmax(resize(raw, req.size)).clamp_(0.0, 1.0)
    settings = dict(composite=composite if isinstance(composite, str) else type(composite).__name__, mode=mode,
                    initial=initial, encoding=encoding, ca_variant=ca_variant, working_size=working_size, K=K, c=c,
                    scales=tuple(scales), search_scales=tuple(search_scales), foci=foci, query_stride=query_stride,
                    white=white if white is not None else ("D50" if ca_variant == "tsai_chang" else "D65"))
    extras = {"lrp_map": relevance.detach(), "attention_areas": out["attention_areas"],
              "sr_map_working": out["sr_map_working"], "encoded": out["encoded"], "settings": settings}
    return MethodOutput(maps={None: MapResult(raw=raw, heatmap=heatmap, signed=False, extras=extras)},
                        targets=targets, logits=res.logits)
