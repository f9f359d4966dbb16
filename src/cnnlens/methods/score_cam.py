"""Score-CAM (Wang et al., CVPR-W 2020), cams.md §1.5: channel weights = the target score of the input masked by each
channel's upsampled, min-max normalised activation map.

Batched: the (sample, channel) pairs are scored in chunks of ``batch_size`` masked forwards; the masks of a chunk are
built from the low-resolution maps when the chunk runs, so memory does not grow with the number of channels. Channels
whose map is constant are never forwarded (their mask carries no spatial information).

Fast path (``fast_forward=True``, cams.md §5 cost model: the masked forwards dominate): the chunks run through an
inference-only rewrite of the model (``_fast_forward.py``: BN folded, conv+ReLU/+residual fused, prepacked oneDNN
weights), and where the input feeds only a first conv and the layer's map is small, that conv of every mask is a linear
combination of h·w + 1 convs per image (``_LinearStem``). Only float rounding differs from the plain model's forwards.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .._batching import AdaptiveChunks, check_max_batch, is_out_of_memory
from ..capture import LayerCapture
from ..models.layers import as_channels_first
from ..errors import LayerError, MethodError
from ..ops import display_map, minmax
from ._fast_forward import InferencePlan, inference_plan
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
              batch_size: int | None = None, relu: bool = True, normalize: str | None = None,
              mean: tuple[float, ...] | None = None, std: tuple[float, ...] | None = None,
              memory_format: str = "auto", fast_forward: bool = True, max_batch: int | None = None) -> MethodOutput:
    """Score-CAM at every requested layer (one capturing forward, then the masked forwards of each layer).

    variant: "paper" (default, the official code d312f14): masks = min-max(Up(A_k)), bilinear align_corners=False;
      constant channels skipped; score = softmax probability of the target; M = Σ_k s_k A_k, ReLU and min-max at input
      resolution. "gc" (pytorch-grad-cam 1.5.7): masks upsampled with align_corners=True and min-max ε 1e-8;
      score = target logit; weights = softmax of the scores across channels; ReLU then min-max at feature resolution.
      (Constant channels are not forwarded in either variant; under "gc" they are scored with the baseline input, which
      is exactly what their all-zero mask gives.) pytorch-grad-cam quirk, reproduced under "gc": a map that is
      constant but not zero (e.g. ReLU6 saturated at 6) may not be exactly constant after its align_corners=True
      upsampling (float rounding, span ~1e-7); its mask (up − min)/(span + 1e-8) is then rounding noise stretched to
      up to ~[0, 1], not zero, and such a channel is forwarded with that mask as pytorch-grad-cam does
      (``_gc_noise_masks``). The weights then equal ``ScoreCAM.get_cam_weights`` and ``raw`` its weighted sum; the
      display map follows cams.md §1 (min-max at feature resolution, then upsampling), while pytorch-grad-cam's
      output is min-max(resize(min-max(raw))) (its multi-layer aggregation rescales after the resize, ε 1e-7): pass
      normalize="after_resize" to get that map (equal up to the 1e-7 guards; the default differs from it by up to
      ~1e-2 on a 7×7 map at 224 px, where the upsampled peak falls between the feature cells).
    baseline: "none" (official code) or "subtract": s_k − Ψ_c(X_b), the CIC of the paper, X_b = the input masked
      everywhere (a no-op under "gc", whose softmax ignores a common shift).
    mask_space: "normalized" (mask the normalised tensor: masked pixels → mean colour, official code) or "raw"
      (un-normalise with mean/std, mask the [0,1] image so masked pixels are black, normalise again; SISE's convention).
    batch_size: masked inputs per forward (memory ∝ batch_size, not to the number of channels). None (default): about
      2^20 input pixels per chunk, a multiple of 8 between 8 and 64 (64 at 112 px, 16 at 224 px: larger chunks of
      large inputs fall out of the CPU caches; measured on resnet18 / EfficientNet-Lite0, 1 thread).
    relu: ReLU on the map. normalize: None (the variant's order), "before_resize" or "after_resize".
    mean, std: the model's input normalisation for mask_space="raw" (default: model.cnnlens_meta, else ImageNet).
    memory_format: layout of the masked inputs: "auto" (channels_last, ≈1.4× faster convolutions on CPU; falls back
      to contiguous if the model's forward rejects it, e.g. a ``.view`` on a feature map), "channels_last" or
      "contiguous". Only float rounding differs.
    fast_forward: run the masked forwards through an inference-only rewrite of the model (``_fast_forward.py``: traced
      with torch.fx, eval BatchNorm folded into the preceding conv, conv+ReLU and conv+residual-add+ReLU fused into one
      oneDNN call with prepacked weights on CPU/float32) and, where the input feeds only a first conv and the layer's
      map is small (2·(h·w+2) ≤ the conv's C_in·k_h·k_w), compute that first conv of all masked inputs by linearity from
      h·w+1 convs per image (``_LinearStem``). Only float rounding differs (the maps agree to ~1e-6). Never changes the
      model; silently uses the plain model when the rewrite does not apply (a module in training mode or with hooks,
      an untraceable forward, not float32/float64, no Conv2d) or when the rewrite's logits on ``x`` differ from the
      model's. False: always the plain model.
    max_batch: cap on the masked inputs per forward (memory); on an out-of-memory error the chunk is halved and
      retried (same result; extras ``chunk``, ``chunk_halvings``).
    The returned ``raw`` is the low-resolution map Σ_k w_k A_k (ReLU'd when relu=True); extras["channel_scores"] holds
    the (N,K) weights per layer (0 for skipped channels under "paper").
    """
    if variant not in ("paper", "gc"):
        raise MethodError(f"variant must be 'paper' or 'gc', got {variant!r}")
    if baseline not in ("none", "subtract"):
        raise MethodError(f"baseline must be 'none' or 'subtract', got {baseline!r}")
    if mask_space not in ("normalized", "raw"):
        raise MethodError(f"mask_space must be 'normalized' or 'raw', got {mask_space!r}")
    if batch_size is not None and (not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1):
        raise MethodError(f"batch_size must be None or a positive integer, got {batch_size!r}")
    if batch_size is None:
        batch_size = default_chunk(req.x.shape[-2] * req.x.shape[-1])
    max_batch = check_max_batch(max_batch)
    if max_batch is not None:
        batch_size = min(batch_size, max_batch)
    if memory_format not in ("auto", "channels_last", "contiguous"):
        raise MethodError(f"memory_format must be 'auto', 'channels_last' or 'contiguous', got {memory_format!r}")
    if not isinstance(fast_forward, bool):
        raise MethodError(f"fast_forward must be True or False, got {fast_forward!r}")
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
            affine = (image / std_t, -mean_t / std_t)                  # masked = P·m + Q, for the linear stem

            def masked(idx, m):
                return (image[idx] * m - mean_t) / std_t
        else:
            affine = (x, None)

            def masked(idx, m):
                return x[idx] * m

        base_scores = None
        if baseline == "subtract" or variant == "gc":
            all_idx = torch.arange(x.shape[0], device=x.device)
            base_scores = _scores(model(masked(all_idx, torch.zeros_like(x[:, :1]))), targets, variant)

        plan = _checked_plan(model, x, logits) if fast_forward else None
        forward = _MaskedForward(model, memory_format, plan)
        maps = {}
        for name in layers:
            a, = as_channels_first(model, name, acts[name])
            if a.dim() != 4:
                raise LayerError(f"layer {name!r} outputs shape {tuple(a.shape)}; a CAM needs a (N,C,h,w) feature map")
            maps[name] = _layer_map(forward, a, targets, masked, affine, base_scores, variant, baseline, batch_size,
                                    relu, normalize, size, req.progress, name, owner=req.model)
    return MethodOutput(maps=maps, targets=targets, logits=logits.detach())


def _checked_plan(model, x: torch.Tensor, logits) -> InferencePlan | None:
    """The model's inference plan if its logits on ``x`` match the model's (re-planned once if not: parameters may have
    changed behind the version counters, e.g. through ``.data``); else None."""
    if not isinstance(logits, torch.Tensor):
        return None
    for rebuild in (False, True):
        plan = inference_plan(model, x.dtype, rebuild=rebuild)
        if plan is None:
            return None
        if plan.matches(x, logits):
            return plan
    return None


class _MaskedForward:
    """Runs the model on a chunk of masked inputs: through the inference plan when there is one (and the plain model
    from then on if it raises), else the model itself in the chosen memory format ("auto": channels_last, and
    contiguous for the rest of the call if the model raises on a channels_last input)."""

    def __init__(self, model, memory_format: str, plan: InferencePlan | None = None) -> None:
        self.model = model
        self.mode = memory_format
        self.plan = plan

    def __call__(self, inputs: torch.Tensor) -> torch.Tensor:
        if self.plan is not None:
            try:
                if self.mode != "contiguous" and inputs.dim() == 4:
                    return self.plan(inputs.contiguous(memory_format=torch.channels_last))
                return self.plan(inputs)
            except RuntimeError as err:
                if is_out_of_memory(err):                       # the chunk is halved by the caller
                    raise
                self.plan = None
        if self.mode == "contiguous" or inputs.dim() != 4:
            return self.model(inputs)
        cl = inputs.contiguous(memory_format=torch.channels_last)
        if self.mode == "channels_last":
            return self.model(cl)
        try:
            return self.model(cl)
        except RuntimeError as err:
            if is_out_of_memory(err):
                raise
            self.mode = "contiguous"
            return self.model(inputs.contiguous())

    def linear_stem(self, a: torch.Tensor, pairs: torch.Tensor, affine, size, align: bool) -> "_LinearStem | None":
        """A :class:`_LinearStem` for this layer when the plan has a stem and the linear form is cheaper."""
        plan = self.plan
        if plan is None or plan.stem is None or plan.tail is None or pairs.shape[0] == 0:
            return None
        stem = plan.stem
        j = a.shape[2] * a.shape[3] + 2                        # basis rows: h·w unit maps, P itself, the constant
        if 2 * j > stem.weight[0].numel():
            return None
        n_samples = int(torch.unique_consecutive(pairs[:, 0]).numel())
        if pairs.shape[0] < 2 * j * n_samples:                 # too few masks per image to amortise the basis convs
            return None
        p = affine[0]
        out_hw = [(s + 2 * pad - d * (k - 1) - 1) // st + 1 for s, pad, d, k, st in
                  zip(p.shape[2:], stem.padding, stem.dilation, stem.weight.shape[2:], stem.stride)]
        if j * stem.weight.shape[0] * out_hw[0] * out_hw[1] * p.element_size() > 2 ** 29:   # basis > 512 MiB
            return None
        return _LinearStem(self, affine, a.shape[2:], size, align)


class _LinearStem:
    """The stem conv of every masked input by linearity (exact algebra; only float rounding differs).

    A mask is m = α·Up(A_k) + β: bilinear upsampling is linear, Up(A_k) = Σ_j A_kj·U_j with U_j the upsampled unit
    maps, and the min-max normalisation is a per-mask affine map (α = 1/(hi − lo [+ ε]), β = −lo·α; 0 for a constant
    mask under "paper"). The masked input is P_n·m + Q (P = x, Q = 0 for mask_space="normalized"; P = image/std,
    Q = −mean/std for "raw"). Hence the stem's pre-activation output is
        conv(P_n·m + Q) + b = Σ_j α·A_kj·conv(P_n·U_j) + β·conv(P_n) + (conv(Q) + b),
    i.e. h·w + 1 stem convs per image (the basis) and one (masks × (h·w + 2)) @ (h·w + 2, C'·H'·W') matmul per chunk
    instead of one stem conv per mask; the plan's ``tail`` runs the rest of the network on it.
    """

    def __init__(self, forward: _MaskedForward, affine, hw, size, align: bool) -> None:
        self.forward = forward
        self.p, q = affine
        stem = forward.plan.stem
        self.stem = stem
        n_units = hw[0] * hw[1]
        eye = torch.eye(n_units, dtype=self.p.dtype, device=self.p.device).reshape(n_units, 1, *hw)
        self.units = F.interpolate(eye, size=size, mode="bilinear", align_corners=align)        # (h·w, 1, H, W)
        const = stem.bias if stem.bias is not None else torch.zeros(stem.weight.shape[0], dtype=self.p.dtype,
                                                                    device=self.p.device)
        self.const = const.reshape(1, -1, 1, 1)
        if q is not None:
            q_img = q.expand(1, *self.p.shape[1:])
            self.const = self.const + self._conv(q_img)
        self._n = None
        self._basis = None
        self._z = None

    def _conv(self, inputs: torch.Tensor) -> torch.Tensor:
        s = self.stem
        return F.conv2d(inputs.contiguous(memory_format=torch.channels_last), s.weight, None, s.stride, s.padding,
                        s.dilation, s.groups)

    def basis(self, n: int) -> torch.Tensor:
        """(h·w + 2, H'·W'·C') rows: conv(P_n·U_j) for every j, conv(P_n), conv(Q) + b; in channels_last order."""
        if self._n != n:
            self._basis = None                                  # free the previous image's basis first
            p = self.p[n]
            convs = self._conv(torch.cat([p * self.units, p[None]]))
            const = self.const.expand(1, *convs.shape[1:])
            self._basis = torch.cat([convs, const]).permute(0, 2, 3, 1).reshape(convs.shape[0] + 1, -1)
            self._n = n
            self._shape = convs.shape[1:]
        return self._basis

    def __call__(self, b_idx: torch.Tensor, b_host: list[int], acts: torch.Tensor, alpha: torch.Tensor,
                 beta: torch.Tensor) -> torch.Tensor:
        coef = torch.cat([acts * alpha[:, None], beta[:, None], torch.ones_like(beta)[:, None]], dim=1)
        count = coef.shape[0]
        segments = []                                          # (start, end, image) runs; b is sorted
        start = 0
        while start < count:
            end = start
            while end < count and b_host[end] == b_host[start]:
                end += 1
            segments.append((start, end, b_host[start]))
            start = end
        plan = self.forward.plan
        width = self.basis(segments[0][2]).shape[1]
        c, h, w = self._shape
        # with a stem max pool, the linear combination is pooled block by block, while it is still in cache
        block = count if plan.pool is None else max(1, min(count, 2 ** 22 // (width * coef.element_size())))
        if self._z is None or self._z.shape[0] < block or self._z.shape[1] != width:
            self._z = None                                     # one buffer for all chunks: a fresh allocation this
            self._z = coef.new_empty(block, width)             # large would be page-faulted in on every chunk
        pooled = []
        for b0 in range(0, count, block):
            b1 = min(b0 + block, count)
            z = self._z[:b1 - b0]
            for s0, s1, n in segments:
                if s1 > b0 and s0 < b1:
                    lo, hi = max(s0, b0), min(s1, b1)
                    torch.matmul(coef[lo:hi], self.basis(n), out=z[lo - b0:hi - b0])
            z = z.view(b1 - b0, h, w, c).permute(0, 3, 1, 2)    # channels_last (N, C', H', W'), no copy
            if plan.pool is None:
                return plan.tail(z)
            pooled.append(plan.pool(z))
        p = pooled[0] if len(pooled) == 1 else torch.cat(pooled)
        return plan.pooled_tail(torch.relu_(p))


def _gc_noise_masks(a: torch.Tensor, constant: torch.Tensor, size) -> tuple[torch.Tensor, torch.Tensor]:
    """pytorch-grad-cam quirk (variant "gc"): the (sample, channel) pairs of the maps that are constant but not zero at
    feature resolution and NOT exactly constant after its upsampling (bilinear, align_corners=True), and their masks.
    Float rounding of the interpolation weights (e.g. 6·λ + 6·(1−λ) ≠ 6) leaves a span of ~1e-7..1e-6, and the mask
    (up − min)/(max − min + 1e-8) is that rounding noise stretched to up to ~[0, 1], not the all-zero (baseline) mask of
    a truly constant map. Typical for ReLU6 channels saturated at 6. All-zero maps upsample to exact zeros and are not
    checked. The rounding depends on how the kernel vectorises over channels (on CPU a channel in a full 8-lane block
    rounds differently from one upsampled alone), so each sample with such a map is upsampled whole, (1, K, h, w), as
    pytorch-grad-cam does (a transient K·H·W tensor per such sample), and only the noise masks are kept."""
    cand = constant.nonzero()
    if cand.shape[0] == 0:
        return cand, a.new_empty(0, 1, *size)
    pairs, masks = [], []
    for i in torch.unique(cand[:, 0]).tolist():
        k_idx = cand[cand[:, 0] == i, 1]
        up = F.interpolate(a[i:i + 1], size=size, mode="bilinear", align_corners=True)[0, k_idx]
        lo = up.amin(dim=(1, 2), keepdim=True)
        hi = up.amax(dim=(1, 2), keepdim=True)
        noisy = (hi > lo).reshape(-1)
        pairs.append(cand[cand[:, 0] == i][noisy])
        masks.append(((up - lo) / (hi - lo + 1e-8))[noisy][:, None])
    return torch.cat(pairs), torch.cat(masks)


def default_chunk(pixels: int) -> int:
    """Masked inputs per forward for inputs of ``pixels`` pixels: ≈ 2^20 pixels per chunk, a multiple of 8 in [8, 64]."""
    return int(min(64, max(8, (2 ** 20 // max(pixels, 1)) // 8 * 8)))


def _layer_map(model, a, targets, masked, affine, base_scores, variant, baseline, batch_size, relu, normalize, size,
               progress, name, owner=None) -> MapResult:
    n, k = a.shape[:2]
    flat = a.reshape(n, k, -1)
    hi_a, lo_a = flat.amax(dim=2), flat.amin(dim=2)
    varying = hi_a > lo_a                                               # (N,K); constant maps are never forwarded
    align = variant == "gc"
    pairs = varying.nonzero()                                           # the host sync of the layer
    explicit = pairs[:0]
    if variant == "gc":
        explicit, noise_masks = _gc_noise_masks(a, ~varying & (hi_a != 0), size)
        varying = varying.clone()
        varying[explicit[:, 0], explicit[:, 1]] = True
    scores = torch.zeros(n, k, dtype=_score_dtype(a.dtype), device=a.device)
    linear = model.linear_stem(a, pairs, affine, size, align) if isinstance(model, _MaskedForward) else None
    b_host = pairs[:, 0].tolist() if linear is not None else None
    n_linear = pairs.shape[0]
    pairs = torch.cat([pairs, explicit])                                # explicit masks: never the linear stem

    def step(start: int, end: int) -> None:
        """Score the pairs start..end (repeatable: a retry overwrites the same entries of ``scores``)."""
        nonlocal linear
        b_idx, k_idx = pairs[start:end].unbind(1)
        if start >= n_linear:                                           # the "gc" noise masks, as they are
            s = _scores(model(masked(b_idx, noise_masks[start - n_linear:end - n_linear])), targets[b_idx], variant)
            scores[b_idx, k_idx] = s
            return
        up = F.interpolate(a[b_idx, k_idx][:, None], size=size, mode="bilinear", align_corners=align)
        lo = up.amin(dim=(2, 3), keepdim=True)
        hi = up.amax(dim=(2, 3), keepdim=True)
        logits = None
        if linear is not None:
            span = (hi - lo).reshape(-1)
            if variant == "gc":
                alpha = 1 / (span + 1e-8)
            else:
                alpha = torch.where(span > 0, 1 / torch.where(span > 0, span, torch.ones_like(span)),
                                    torch.zeros_like(span))
            try:
                logits = linear(b_idx, b_host[start:end], a[b_idx, k_idx].reshape(len(b_idx), -1),
                                alpha, -lo.reshape(-1) * alpha)
            except RuntimeError as err:                          # e.g. the tail rejects the channels_last layout
                if is_out_of_memory(err):
                    raise
                linear = None
        if logits is None:
            if variant == "gc":
                mask = (up - lo) / (hi - lo + 1e-8)
            else:
                span = hi - lo
                mask = torch.where(span > 0, (up - lo) / torch.where(span > 0, span, torch.ones_like(span)),
                                   torch.zeros_like(up))
            logits = model(masked(b_idx, mask))
        s = _scores(logits, targets[b_idx], variant)
        if variant == "paper":
            s = s * (hi > lo).reshape(-1)                              # skip masks constant after upsampling
            if baseline == "subtract":
                s = s - base_scores[b_idx] * (hi > lo).reshape(-1)
        scores[b_idx, k_idx] = s

    # the linear-stem pairs, then the explicit masks; a chunk halved in the first part stays halved in the second
    key = ("score-cam", name, variant, tuple(a.shape[1:]), str(a.dtype), str(a.device), size)
    first = AdaptiveChunks(n_linear, batch_size, desc=f"score-cam {name}", progress=progress, unit="mask",
                           owner=owner, key=key)
    first.run(step)
    second = AdaptiveChunks(pairs.shape[0] - n_linear, first.chunk, desc=f"score-cam {name}", progress=False,
                            owner=owner, key=key)
    second.run(lambda start, end: step(n_linear + start, n_linear + end))
    chunk_used, halvings = second.chunk, first.halvings + second.halvings
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
                     extras={"constant_map": constant, "channel_scores": weights, "skipped_channels": ~varying,
                             "chunk": chunk_used, "chunk_halvings": halvings})
