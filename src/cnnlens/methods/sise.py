"""SISE — Semantic Input Sampling for Explanation (Sattarzadeh et al., AAAI 2021, arXiv 2010.00672); sise.md.

Four phases, all batched on the input's device:

1. **Layers**: one layer per convolutional block (``models.layers.block_layers``: the block's last layer, or its
   deepest post-activation layer where the block ends in a linear bottleneck), or the names given.
2. **Feature-map selection** (Eq. 6-7): α_k = mean_λ ∂Ψ/∂A_k(λ) from one forward and one ``autograd.grad`` to all
   layers; keep k ⇔ α_k > µ·max_j α_j (strict). Ada-SISE (arXiv 2102.07799) replaces µ by an Otsu threshold on
   α/max α over the positive α. Kept maps that are constant give an all-zero mask of weight 0 and are skipped.
3. **Attribution masks and scoring** (Eq. 10): m_k = minmax(bilinear(A_k)) with ε = 1e-6; s_k = Ψ(I ⊙ m_k);
   V = minmax(Σ_k s_k · m_k / (Σ_λ m_k(λ) + ε)) per layer. Masks are built per batch of ``batch_size`` from the
   low-resolution maps (never all at once) and scored in one forward per batch; batches may mix layers and samples.
4. **Fusion** (blog; Fig. 3), shallow → deep, each step gated by the deeper map: F₁ = V₁, F_l = (F_{l−1} + V_l) ⊙ B(V_l),
   explanation = minmax(F_L). B = 1[V > t_Otsu] (paper, default) or σ(T·(V − t)) (reference code, ``otsu_soft``).
"""
from __future__ import annotations

import warnings
from typing import Sequence

import torch
import torch.nn.functional as F

from .._batching import AdaptiveChunks, check_max_batch, input_key
from ..capture import LayerCapture
from ..errors import LayerError, MethodError
from ..models.layers import as_channels_first, block_layers, trace_layers
from ..ops import minmax
from ._perturb import (MASK_SPACES, SCORES, apply_masks, autocast_context, check_choice, check_number,
                       check_positive_int, input_normalisation, score_of)
from .registry import MapResult, MethodOutput, Request, register

EPS_MASK = 1e-6      # per-map min-max ε (reference writes 10e-7)
EPS_AREA = 1e-6      # area-normalisation ε
NBINS = 256          # Otsu histogram on the fixed range [0, 1]
FUSIONS = ("otsu_hard", "otsu_soft", "simple")
SELECTIONS = ("threshold", "adaptive")
INTERPS = ("bilinear", "nearest")
MODES = ("paper", "reference")


# ----------------------------------------------------------------------------------------------------------- phase 2
def channel_significance(grads: torch.Tensor) -> torch.Tensor:
    """Eq. 6: α_k = Σ_λ ∂Ψ/∂A_k(λ), here the spatial mean (same sign and ratios, as the reference). (N,C,h,w)→(N,C)."""
    return grads.float().mean(dim=(2, 3))


def select_threshold(alpha: torch.Tensor, mu: float) -> torch.Tensor:
    """Eq. 7: keep k ⇔ α_k > µ·β with β = max_j α_j (strict). (N,C) → bool (N,C).

    µ = 0 keeps the positive-gradient maps. If β ≤ 0: nothing passes for 0 ≤ µ ≤ 1, but for µ > 1 maps with
    µβ < α ≤ β (negative gradients) do pass, and µ < 0 admits negative maps whatever β."""
    beta = alpha.max(dim=1, keepdim=True).values
    return alpha > mu * beta


def select_adaptive(alpha: torch.Tensor, nbins: int = NBINS) -> torch.Tensor:
    """Ada-SISE selection: Otsu threshold t on r = α/max α over the positive α; keep α > 0 and r > t."""
    positive = alpha > 0
    beta = alpha.max(dim=1, keepdim=True).values
    r = torch.where(positive, alpha / torch.where(beta > 0, beta, torch.ones_like(beta)), torch.zeros_like(alpha))
    t_bin = otsu_bin(r, weights=positive.to(r.dtype), nbins=nbins)
    return positive & (r > (t_bin.to(r.dtype) / nbins)[:, None])


def flat_maps(acts: torch.Tensor) -> torch.Tensor:
    """Maps that are constant at their own resolution: they min-max to an all-zero mask (weight exactly 0).
    (N,C,h,w) → bool (N,C)."""
    flat = acts.reshape(acts.shape[0], acts.shape[1], -1)
    return flat.amax(dim=2) == flat.amin(dim=2)


# ----------------------------------------------------------------------------------------------------------- phase 3
def attribution_masks(maps: torch.Tensor, size: tuple[int, int], interp: str = "bilinear",
                      eps: float = EPS_MASK) -> torch.Tensor:
    """Ω: upsample (K,h,w) maps to ``size`` (bilinear, align_corners=False) and min-max each:
    m = (A − min A)/(max A − min A + ε). Returns (K,H,W)."""
    m = maps.unsqueeze(1)
    if tuple(m.shape[-2:]) != tuple(size):
        if interp == "bilinear":
            m = F.interpolate(m, size=size, mode="bilinear", align_corners=False)
        else:
            m = F.interpolate(m, size=size, mode="nearest")
    m = m.squeeze(1)
    flat = m.reshape(m.shape[0], -1)
    lo = flat.amin(dim=1)[:, None, None]
    hi = flat.amax(dim=1)[:, None, None]
    return (m - lo) / (hi - lo + eps)


def area_weights(scores: torch.Tensor, masks: torch.Tensor, eps: float = EPS_AREA) -> torch.Tensor:
    """Eq. 10's C_m: each mask's weight s_k / (Σ_λ m_k(λ) + ε). (K,...) scores, (K,H,W) masks → (K,...)."""
    area = masks.sum(dim=(1, 2)) + eps
    return scores / area.reshape(-1, *([1] * (scores.dim() - 1)))


# ----------------------------------------------------------------------------------------------------------- phase 4
def otsu_histogram(values: torch.Tensor, weights: torch.Tensor | None = None, nbins: int = NBINS) -> torch.Tensor:
    """(N,P) values in [0,1] → (N,nbins) float64 histogram: bin q = round(nbins·v) (half to even), q = nbins → nbins−1."""
    n = values.shape[0]
    q = torch.round(values.reshape(n, -1).double() * nbins).long().clamp_(0, nbins - 1)
    w = torch.ones_like(q, dtype=torch.float64) if weights is None else weights.reshape(n, -1).double()
    hist = torch.zeros(n, nbins, dtype=torch.float64, device=values.device)
    return hist.scatter_add_(1, q, w)


def otsu_bin_from_histogram(hist: torch.Tensor) -> torch.Tensor:
    """Otsu's between-class variance σ²(j) = w₀w₁(µ₀ − µ₁)² over bin indices, class 0 = bins < j, j = 1..nbins−1;
    returns the first maximising j per row (N,). Splits with an empty class are never chosen (all-empty → 1)."""
    nbins = hist.shape[1]
    idx = torch.arange(nbins, dtype=hist.dtype, device=hist.device)
    c0 = hist.cumsum(1)[:, :-1]                                # weight of bins < j, j = 1..nbins−1
    s0 = (hist * idx).cumsum(1)[:, :-1]
    total, stotal = hist.sum(1, keepdim=True), (hist * idx).sum(1, keepdim=True)
    c1, s1 = total - c0, stotal - s0
    ok = (c0 > 0) & (c1 > 0)
    mu0 = s0 / torch.where(ok, c0, torch.ones_like(c0))
    mu1 = s1 / torch.where(ok, c1, torch.ones_like(c1))
    var = torch.where(ok, (c0 / total) * (c1 / total) * (mu0 - mu1) ** 2, torch.full_like(c0, -1.0))
    return var.argmax(dim=1) + 1


def otsu_bin(values: torch.Tensor, weights: torch.Tensor | None = None, nbins: int = NBINS) -> torch.Tensor:
    """t* of a fixed-range [0,1] 256-bin Otsu per row of (N,...) values."""
    return otsu_bin_from_histogram(otsu_histogram(values, weights, nbins))


def otsu_threshold(v: torch.Tensor, tau: float = 1.0, nbins: int = NBINS) -> tuple[torch.Tensor, torch.Tensor]:
    """Gate threshold of (N,H,W) maps in [0,1]: t = t*/nbins, or τ·t*/nbins when fewer than 10 % of the pixels lie in
    bins ≥ round(τ·t*) (the reference's heuristic; τ = 1 disables it). Returns (t (N,) float64, t* (N,) long)."""
    hist = otsu_histogram(v, nbins=nbins)
    t_bin = otsu_bin_from_histogram(hist)
    if tau == 1.0:
        return t_bin.double() / nbins, t_bin
    k = torch.round(tau * t_bin.double()).long()
    bins = torch.arange(nbins, device=v.device)
    frac_high = (hist * (bins[None, :] >= k[:, None])).sum(1) / hist.sum(1)
    t = torch.where(frac_high < 0.1, tau * t_bin.double(), t_bin.double()) / nbins
    return t, t_bin


def gate(v: torch.Tensor, t: torch.Tensor, fusion: str, temperature: float = 100.0) -> torch.Tensor:
    """B(V): hard 1[V > t] (paper), soft σ(T·(V − t)) (reference), or V itself ("simple")."""
    if fusion == "otsu_hard":
        return (v > t.to(v.dtype)[:, None, None]).to(v.dtype)
    if fusion == "otsu_soft":
        return torch.sigmoid(temperature * (v - t.to(v.dtype)[:, None, None]))
    return v


def fuse(layer_maps: torch.Tensor, present: torch.Tensor, fusion: str = "otsu_hard", tau: float = 1.0,
         temperature: float = 100.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Cascade fusion of (N,L,H,W) layer maps (shallow → deep): F = V₁, F ← (F + V_l) ⊙ B(V_l); layers with
    ``present[n,l]`` False are skipped for that sample. Returns (F (N,H,W), thresholds (N,L) float64)."""
    n, L = layer_maps.shape[:2]
    fused = torch.zeros_like(layer_maps[:, 0])
    started = torch.zeros(n, dtype=torch.bool, device=layer_maps.device)
    thresholds = torch.zeros(n, L, dtype=torch.float64, device=layer_maps.device)
    for l in range(L):
        v = layer_maps[:, l]
        t, _ = otsu_threshold(v, tau)
        thresholds[:, l] = t
        step = (fused + v) * gate(v, t, fusion, temperature)
        new = torch.where(started[:, None, None], step, v)
        fused = torch.where(present[:, l, None, None], new, fused)
        started = started | present[:, l]
    return fused, thresholds


# ------------------------------------------------------------------------------------------------------- the method
def _image_groups(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Group identical images: (group id per sample (N,), first sample of each group (G,))."""
    n = x.shape[0]
    if n == 1:
        zero = torch.zeros(1, dtype=torch.long, device=x.device)
        return zero, zero
    _, group = torch.unique(x.reshape(n, -1), dim=0, return_inverse=True)
    first = torch.full((int(group.max()) + 1,), n, dtype=torch.long, device=x.device)
    first.scatter_reduce_(0, group, torch.arange(n, device=x.device), reduce="amin")
    return group, first


def _ordered_layers(req: Request) -> list[str]:
    if req.layers:
        return list(dict.fromkeys(req.layers))
    records = req.layer_records if req.layer_records is not None else trace_layers(req.model, req.x[:1])
    return block_layers(req.model, records)


@register("sise", "SISE: gradient-selected feature maps as input masks, area-normalised scores, Otsu-gated "
                  "block-wise fusion (Sattarzadeh et al. 2021)", layers="set", family="perturbation")
def sise(req: Request, *, mu: float = 0.0, score: str = "probability", mask_space: str = "raw",
         fusion: str | None = None, tau: float | None = None, temperature: float = 100.0,
         selection: str = "threshold", interp: str = "bilinear", batch_size: int = 64, precision: str = "fp32",
         mean: Sequence[float] | None = None, std: Sequence[float] | None = None, mode: str = "paper",
         max_batch: int | None = None) -> MethodOutput:
    """SISE over ``req.layers`` (default: the last layer of each block, ``block_layers``), fused shallow → deep
    (layers are put in execution order).

    mu: µ of Eq. 7 (keep α_k > µ·max α). selection: "threshold" (Eq. 7) | "adaptive" (Ada-SISE Otsu on α/max α).
    score: Ψ differentiated and scored — "probability" (softmax) | "sigmoid" (multi-label heads) | "logit".
    mask_space: "raw" (mask the de-normalised image: masked pixels black, the reference) | "normalized" (mask the
    normalised tensor: mean colour). The normalisation comes from mean=/std= or ``model.cnnlens_meta``; without one
    the model is taken to consume the raw image and both coincide.
    fusion: "otsu_hard" (paper; default in mode="paper") | "otsu_soft" (reference; default in mode="reference") |
    "simple". tau: the reference's 1.5-rule for the Otsu threshold (default 1 = off for hard, 1.5 for soft).
    temperature: T of the soft gate. interp: "bilinear" | "nearest" mask upsampling.
    batch_size: masked images per forward. precision: "fp32" | "fp16" | "bf16" (autocast for the masked forwards;
    scores move and gates can flip — compare with an agreement rate).
    mode: "paper" | "reference" (= probability score, raw-image masking, soft-Otsu fusion with τ = 1.5).
    max_batch: cap on the masked images per forward (memory); on an out-of-memory error the chunk is halved and
    retried (same result; extras ``chunk``, ``chunk_halvings``).

    Extras: per-layer maps ``layer_maps`` (V) and ``layer_maps_raw`` (R, before min-max), ``alpha``, ``selected``,
    ``kept``/``scored`` counts per sample, the masked-image ``scores`` s_k of the ``scored_maps`` ((K,2): sample,
    channel; flat maps excluded; for repeated images the first copy's class), ``fused_layers``, ``thresholds`` t,
    ``n_forwards`` (identical images in the batch — several classes of one image — share their masked forwards),
    and the ``options`` used.
    """
    check_choice("mode", mode, MODES)
    if fusion is None:
        fusion = "otsu_soft" if mode == "reference" else "otsu_hard"
    if tau is None:
        tau = 1.5 if fusion == "otsu_soft" else 1.0
    check_choice("fusion", fusion, FUSIONS)
    check_choice("score", score, SCORES)
    check_choice("mask_space", mask_space, MASK_SPACES)
    check_choice("selection", selection, SELECTIONS)
    check_choice("interp", interp, INTERPS)
    batch_size = check_positive_int("batch_size", batch_size)
    max_batch = check_max_batch(max_batch)
    mu = check_number("mu", mu)
    tau = check_number("tau", tau)
    temperature = check_number("temperature", temperature)
    if tau < 1.0:
        raise MethodError(f"option tau must be ≥ 1 (1 = plain Otsu), got {tau!r}")
    model, x = req.model, req.x
    size = req.size
    norm = input_normalisation(model, x, mean, std)
    amp = autocast_context(x.device, precision)
    layers = _ordered_layers(req)

    # Phase 2: one hooked forward and one backward to every layer.
    with torch.enable_grad(), LayerCapture(model, layers) as cap:
        logits = model(x)
        acts = cap.check()
    layers = list(acts)                     # execution order = shallow → deep
    for name in layers:
        if acts[name].dim() != 4:
            raise LayerError(f"layer {name!r} outputs shape {tuple(acts[name].shape)}; SISE needs (N,C,h,w) maps")
    targets = req.resolve_targets(logits)
    with torch.enable_grad():
        psi = score_of(logits, score).gather(1, targets[:, None]).sum()
        grads = torch.autograd.grad(psi, [acts[n] for n in layers], allow_unused=True)
    logits, acts = logits.detach(), {n: acts[n].detach() for n in layers}
    grads = list(grads)
    for li, name in enumerate(layers):  # channels-last layers (ConvNeXt's MLP) as (N,C,h,w)
        if grads[li] is not None:
            acts[name], grads[li] = as_channels_first(model, name, acts[name], grads[li])
        else:
            acts[name], = as_channels_first(model, name, acts[name])
    del psi
    n_samples, L = x.shape[0], len(layers)

    # Identical images in the batch (several classes of one image, sise.md §2.3) share their masked forwards: the
    # union of their selected maps is scored once and each masked forward serves every class.
    group, rep = _image_groups(x)
    n_groups = int(rep.shape[0])
    alpha, selected, used, items = {}, {}, {}, []
    for li, name in enumerate(layers):
        g = grads[li] if grads[li] is not None else torch.zeros_like(acts[name])
        a = channel_significance(g)
        keep = select_adaptive(a) if selection == "adaptive" else select_threshold(a, mu)
        alpha[name], selected[name] = a, keep
        use = keep & ~flat_maps(acts[name])
        used[name] = use
        union = torch.zeros(n_groups, use.shape[1], device=x.device).index_add_(0, group, use.float()) > 0
        gk = union.nonzero()                # (K_l, 2) image group and channel of every scored map: one sync per layer
        member = use[:, gk[:, 1]].T & (group[None, :] == gk[:, :1])       # (K_l, N): which samples use the map
        items.append((li, rep[gk[:, 0]], gk[:, 1], member))
    del grads

    # Phase 3: masks per batch from the low-resolution maps; one forward per batch; Σ_k s_k·m_k/Σm_k per layer.
    spans, offset = [], 0
    for _, n_idx, _, _ in items:
        spans.append((offset, offset + int(n_idx.shape[0])))
        offset = spans[-1][1]
    total = offset
    acc_dtype = torch.float32 if x.device.type == "mps" else torch.float64
    acc = torch.zeros(L, n_samples, size[0] * size[1], dtype=acc_dtype, device=x.device)
    scores = torch.zeros(total, dtype=torch.float32, device=x.device)

    def step(start: int, stop: int):
        segments = []
        for (li, n_idx, k_idx, member), (lo, hi) in zip(items, spans):
            a, b = max(start, lo), min(stop, hi)
            if a < b:
                ni, ki = n_idx[a - lo:b - lo], k_idx[a - lo:b - lo]
                segments.append((li, ni, member[a - lo:b - lo],
                                 attribution_masks(acts[layers[li]][ni, ki], size, interp)))
        m = torch.cat([seg[3] for seg in segments]) if len(segments) > 1 else segments[0][3]
        ni = torch.cat([seg[1] for seg in segments]) if len(segments) > 1 else segments[0][1]
        with amp:
            out = model(apply_masks(x[ni], m, mask_space, norm))
        psi_all = score_of(out, score)                                      # (B, classes)
        weights = area_weights(psi_all[:, targets], m.float())             # (B, N): s_k/Σm_k for every sample's class
        parts, row = [], 0
        for li, _, member, mk in segments:
            b = mk.shape[0]
            w = (weights[row:row + b] * member).to(acc_dtype)               # zero where a sample did not select
            parts.append((li, w.T @ mk.reshape(b, -1).to(acc_dtype)))
            row += b
        return psi_all.gather(1, targets[ni][:, None])[:, 0], parts

    def commit(start: int, stop: int, result) -> None:
        scores[start:stop] = result[0]
        for li, part in result[1]:
            acc[li] += part

    run = AdaptiveChunks(total, min(batch_size, max_batch or batch_size), desc="SISE", progress=req.progress,
                         unit="mask", owner=model, key=input_key("sise", x))
    with torch.inference_mode():
        run.run(step, commit)

    raw_maps = acc.reshape(L, n_samples, *size).transpose(0, 1)
    flat = raw_maps.reshape(n_samples * L, -1)
    varies = (flat.amax(1) > flat.amin(1)).reshape(n_samples, L)
    layer_maps = minmax(raw_maps.reshape(n_samples * L, *size)).reshape(n_samples, L, *size).float()
    counts = torch.stack([used[name].sum(1) for name in layers], dim=1)
    present = (counts > 0) & varies
    fused, thresholds = fuse(layer_maps, present, fusion, tau, temperature)
    if not bool(present.any(dim=1).all()):
        warnings.warn("SISE: no layer kept a feature map for some samples (try mu=0 or other layers); their maps "
                      "are zero", RuntimeWarning, stacklevel=2)
    heatmap = minmax(fused)

    extras = {
        "layers": layers,
        "layer_maps": {name: layer_maps[:, li] for li, name in enumerate(layers)},
        "layer_maps_raw": {name: raw_maps[:, li].float() for li, name in enumerate(layers)},
        "alpha": alpha,
        "selected": selected,
        "kept": {name: selected[name].sum(1) for name in layers},
        "scored": {name: counts[:, li] for li, name in enumerate(layers)},
        "scores": {name: scores[lo:hi] for name, (lo, hi) in zip(layers, spans)},
        "scored_maps": {name: torch.stack([n_idx, k_idx], 1) for name, (_, n_idx, k_idx, _) in zip(layers, items)},
        "fused_layers": {name: present[:, li] for li, name in enumerate(layers)},
        "thresholds": {name: thresholds[:, li] for li, name in enumerate(layers)},
        "n_forwards": total,
        "chunk": run.chunk,
        "chunk_halvings": run.halvings,
        "options": {"mu": mu, "selection": selection, "score": score, "mask_space": mask_space, "fusion": fusion,
                    "tau": tau, "temperature": temperature, "interp": interp, "precision": precision,
                    "normalisation_known": norm is not None, "mode": mode},
    }
    return MethodOutput(maps={None: MapResult(raw=fused, heatmap=heatmap, extras=extras)}, targets=targets,
                        logits=logits.detach())
