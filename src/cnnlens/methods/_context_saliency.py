"""Context-aware saliency (CA; Goferman, Zelnik-Manor & Tal, CVPR 2010 / TPAMI 2012) in torch — ``sr_map.md`` §2, §4.

Pure tensor code (torch only), batched, on the input's device. The pipeline (Goferman's Eq. numbers, CVPR 2010):

1. resize so the longer side is ``working_size`` (bilinear); sRGB → CIE L*a*b* (:func:`rgb_to_lab`); each plane min–max
   normalised to [0, 1] per image (Tsai–Chang; ``+ eps`` in the range, so a constant plane becomes 0, never NaN);
2. for every scale r in ``scales``: every pixel's patch (the query) is compared with candidate patches sampled on a grid
   (stride = half the patch size ≈ 50 % overlap) from copies of the scale-r image at ``search_scales`` (r, r/2, r/4);
   d(p_i, q_j) = d_color / (1 + c · d_position) (Eq. 1), d_color the Euclidean distance of the vectorised patches,
   d_position the distance of the patch centres divided by the larger image side of their copy;
3. S_i^r = 1 − exp(−(1/K) Σ_{k≤K} d(p_i^r, q_k)) over the K most similar candidates (Eq. 2);
4. multi-scale average and the immediate-context (foci of attention) weighting Ŝ_i = S̄_i (1 − d_foci(i)) (Eq. 4-5).

Variants (``variant=``), ``sr_map.md`` §2:

* ``"paper"`` (default): 7×7 patches at every scale; queries at every pixel (replicate padding at the border); the
  query's own patch is excluded from its candidates (``exclude_self``); each S^r min–max normalised to [0, 1] and resized
  (bilinear) to the working size; per scale, attended pixels = S^r > ``foci`` (0.8), d_foci^r = Euclidean distance to the
  nearest attended pixel ÷ its maximum; Ŝ = mean_r S^r (1 − d_foci^r). The returned attention mask is the union over
  scales.
* ``"tsai_chang"`` (SMILER ``models/matlab/CAS``): patches 7/5/3/3 per scale, mean distance × 49/patch area, candidate
  copies at 1, ½, ¼ (bicubic) skipped from the first with r·f < ``min_scale``, 1-based positions, self-matches kept,
  pixels within half a patch of the border get saliency 0, no per-scale normalisation, foci once after averaging with the
  relative threshold 0.8·max(S̄).
* ``"eigen"``: as ``"paper"`` for patches, but the foci step is done once on the average of the normalised scale maps
  with the absolute threshold 0.8 (a public Eigen/C++ reimplementation) [unv].

Memory and speed (the cost model, ``sr_map.md`` §7): the query × candidate distance matrix is never materialised: the
queries are processed in blocks of grid rows (or runs of one row) of at most ``chunk_elements`` distances (default
2^23 ≈ 32 MB in float32; on CPU at most 2^21, which measured faster), see :func:`_mean_knn_distance`: d_color² =
‖p‖² + ‖q‖² − 2⟨p, q⟩ from one matmul of augmented vectors, the position factor (1 + c·d_position)² read from small
precomputed tables (copies at factors 1/m: the default 1, ½, ¼) or computed from separable Δy², Δx² tables, the
ranking key d² (monotone in d) and an exact two-stage top-K (K smallest group minima, then the K smallest of those
groups' members — the same values as one ``torch.topk`` over all candidates, at ~1/3 of its cost on CPU). The image
planes are centred on their mean first (distances are shift-invariant; this reduces float32 cancellation). ``refine``
(default: float64 only) recomputes the K kept distances from the patch differences, removing the cancellation of the
expanded form for near-identical patches (≈ sqrt(eps·‖p‖²) per distance); it costs K·D gathered values per query.
Full fidelity at 250 px costs ≈ 1.2·10¹¹ multiply-adds: the distance matmuls alone take ~2.6–3 s on one CPU core
at 80–90 GFLOP/s, the whole map ~1.6–1.7× that (the top-K selection is most of the rest); well under a second on
a GPU.
``query_stride > 1`` evaluates the queries on a coarser grid (centres of s×s blocks) and resizes the scale map
bilinearly — an approximation (s² fewer queries), off by default.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import torch
import torch.nn.functional as F

VARIANTS = ("paper", "tsai_chang", "eigen")

# sRGB (IEC 61966-2-1) linear RGB → XYZ, D65 white; and the Bradford-adapted matrix to a D50 white (as ICC / MATLAB
# ``makecform('srgb2lab')``).
_RGB_TO_XYZ = {
    "D65": ((0.412453, 0.357580, 0.180423),
            (0.212671, 0.715160, 0.072169),
            (0.019334, 0.119193, 0.950227)),
    "D50": ((0.4360747, 0.3850649, 0.1430804),
            (0.2225045, 0.7168786, 0.0606169),
            (0.0139322, 0.0971045, 0.7141733)),
}
_WHITE = {"D65": (0.95047, 1.0, 1.08883), "D50": (0.96422, 1.0, 0.82521)}


def rgb_to_lab(rgb: torch.Tensor, white: str = "D65") -> torch.Tensor:
    """sRGB in [0, 1], (N,3,H,W) → CIE L*a*b* (L in [0, 100]). ``white="D65"`` matches ``skimage.color.rgb2lab``;
    ``"D50"`` the ICC/MATLAB ``makecform('srgb2lab')`` convention (Bradford-adapted)."""
    if white not in _WHITE:
        raise ValueError(f"white must be one of {sorted(_WHITE)}, got {white!r}")
    lin = torch.where(rgb > 0.04045, ((rgb + 0.055) / 1.055).clamp_min(0).pow(2.4), rgb / 12.92)
    m = torch.tensor(_RGB_TO_XYZ[white], dtype=rgb.dtype, device=rgb.device)
    xyz = torch.einsum("kc,nchw->nkhw", m, lin)
    xyz = xyz / torch.tensor(_WHITE[white], dtype=rgb.dtype, device=rgb.device).view(1, 3, 1, 1)
    # CIE f(t) with skimage's rounded constants (0.008856, 7.787) so that D65 output equals skimage.color.rgb2lab
    f = torch.where(xyz > 0.008856, xyz.clamp_min(0.008856).pow(1.0 / 3.0), 7.787 * xyz + 16.0 / 116.0)
    fx, fy, fz = f[:, 0], f[:, 1], f[:, 2]
    return torch.stack((116.0 * fy - 16.0, 500.0 * (fx - fy), 200.0 * (fy - fz)), dim=1)


def normalize_planes(img: torch.Tensor) -> torch.Tensor:
    """Each (image, plane) min–max to [0, 1] with machine eps in the range (Tsai–Chang): constant plane → 0."""
    flat = img.flatten(2)
    lo = flat.amin(dim=2, keepdim=True)
    hi = flat.amax(dim=2, keepdim=True)
    eps = torch.finfo(img.dtype).eps
    return ((flat - lo) / (hi - lo + eps)).view_as(img)


def normalize_maps(maps: torch.Tensor) -> torch.Tensor:
    """Per-sample min–max of (N,H,W) maps to [0, 1]; a constant map becomes zeros (never NaN)."""
    flat = maps.flatten(1)
    lo = flat.amin(dim=1, keepdim=True)
    span = flat.amax(dim=1, keepdim=True) - lo
    out = torch.where(span > 0, (flat - lo) / torch.where(span > 0, span, torch.ones_like(span)),
                      torch.zeros_like(flat))
    return out.view_as(maps)


def distance_to_mask(mask: torch.Tensor) -> torch.Tensor:
    """Exact Euclidean distance transform: (N,H,W) bool → distance of every pixel to the nearest True pixel (+inf in a
    sample without any). Separable two-pass form (MATLAB ``bwdist``): the vertical distance g to the nearest True pixel
    of the same column from a running max/min of row indices (O(HW)), then d² = min over columns l of g(·,l)² + Δ².
    Every intermediate is an integer (or inf), exact in float32 up to 2·max(H,W)² < 2²⁴; the square root is taken in
    float64 on CPU (float32 elsewhere)."""
    n, h, w = mask.shape
    dev = mask.device
    dtype = torch.float64 if dev.type == "cpu" else torch.float32
    work = torch.float32 if h * h + w * w < (1 << 24) else torch.float64       # exact integer arithmetic
    ri = torch.arange(h, device=dev, dtype=work)[None, :, None]
    ci = torch.arange(w, device=dev, dtype=work)
    dc2 = (ci[:, None] - ci[None, :]).square()                                 # (j, l): Δ²
    inf = float("inf")
    above = torch.where(mask, ri, -inf).cummax(dim=1).values                     # nearest True row ≤ i
    below = torch.where(mask, ri, inf).flip(1).cummin(dim=1).values.flip(1)     # nearest True row ≥ i
    g2 = torch.minimum(ri - above, below - ri).square_()                         # (N,H,W), inf without any
    out = torch.empty(n, h, w, dtype=dtype, device=dev)
    step = max(1, (1 << 20) // max(1, w * w))                                  # rows per block: bounded (rows,W,W)
    for b in range(n):
        for i in range(0, h, step):
            blk = (g2[b, i:i + step, None, :] + dc2[None, :, :]).amin(dim=2)     # min over columns l
            out[b, i:i + step] = blk.to(dtype).sqrt_()
    return out


def _out_size(size: int, factor: float) -> int:
    """MATLAB ``imresize`` output size for a scale factor: ceil(factor · size)."""
    return max(1, int(math.ceil(factor * size - 1e-9)))


def _resize(img: torch.Tensor, size: tuple[int, int], mode: str) -> torch.Tensor:
    if tuple(img.shape[-2:]) == tuple(size):
        return img
    shrink = size[0] < img.shape[-2] or size[1] < img.shape[-1]
    return F.interpolate(img, size=size, mode=mode, align_corners=False, antialias=shrink)


@dataclass(frozen=True)
class CAConfig:
    """Resolved CA parameters (``sr_map.md`` §4.4); see :func:`context_saliency`."""
    variant: str = "paper"
    patch: tuple[int, ...] = (7, 7, 7, 7)
    K: int = 64
    c: float = 3.0
    scales: tuple[float, ...] = (1.0, 0.8, 0.5, 0.3)
    search_scales: tuple[float, ...] = (1.0, 0.5, 0.25)
    foci: float = 0.8
    min_scale: float = 0.2
    exclude_self: bool = True
    candidate_stride: tuple[int, ...] = (3, 3, 3, 3)
    query_stride: int = 1
    chunk_elements: int = 1 << 23
    refine: bool | None = None
    select_group: int | None = None

    @property
    def area_factor(self) -> tuple[float, ...]:
        """Tsai–Chang: mean distance × 49/(patch area); 1 elsewhere."""
        if self.variant == "tsai_chang":
            return tuple(49.0 / (p * p) for p in self.patch)
        return tuple(1.0 for _ in self.patch)


def make_config(variant: str = "paper", *, patch: int | Sequence[int] | None = None, K: int = 64, c: float = 3.0,
                scales: Sequence[float] = (1.0, 0.8, 0.5, 0.3), search_scales: Sequence[float] = (1.0, 0.5, 0.25),
                foci: float = 0.8, min_scale: float = 0.2, exclude_self: bool | None = None,
                candidate_stride: int | Sequence[int] | None = None, query_stride: int = 1,
                chunk_elements: int = 1 << 23, refine: bool | None = None,
                select_group: int | None = None) -> CAConfig:
    """Validate the options and fill the variant's defaults (``patch``: 7 at every scale, 7/5/3/3 for tsai_chang;
    ``candidate_stride``: half the patch size; ``exclude_self``: True except tsai_chang; ``refine``: recompute the K
    kept distances from the patch differences — None = only in float64, where it makes the result exact to ~1e-15;
    in float32 the expanded-form error is ≲1e-4 on Ŝ and refining would double the elementwise work, K·D per query;
    ``select_group``: group size of the exact two-stage top-K — None = auto (≈ √(Q/K)), 1 = one plain top-K; the
    selected values do not depend on it)."""
    if variant not in VARIANTS:
        raise ValueError(f"ca_variant must be one of {VARIANTS}, got {variant!r}")
    scales = tuple(float(s) for s in scales)
    if not scales or any(not 0 < s <= 1 for s in scales):
        raise ValueError(f"scales must be a non-empty sequence in (0, 1], got {scales}")
    search_scales = tuple(float(s) for s in search_scales)
    if not search_scales or any(not 0 < s <= 1 for s in search_scales):
        raise ValueError(f"search_scales must be a non-empty sequence in (0, 1], got {search_scales}")
    if patch is None:
        patch = (7, 5, 3, 3)[:len(scales)] if variant == "tsai_chang" and len(scales) <= 4 else 7
    patches = (int(patch),) * len(scales) if isinstance(patch, (int, float)) else tuple(int(p) for p in patch)
    if len(patches) != len(scales) or any(p < 1 or p % 2 == 0 for p in patches):
        raise ValueError(f"patch must be an odd size, or one odd size per scale ({len(scales)}), got {patch}")
    if candidate_stride is None:
        strides = tuple(max(1, p // 2) for p in patches)
    elif isinstance(candidate_stride, (int, float)):
        strides = (int(candidate_stride),) * len(scales)
    else:
        strides = tuple(int(s) for s in candidate_stride)
    if len(strides) != len(scales) or any(s < 1 for s in strides):
        raise ValueError(f"candidate_stride must be a positive int or one per scale, got {candidate_stride}")
    if int(K) < 1:
        raise ValueError(f"K must be >= 1, got {K}")
    if select_group is not None and int(select_group) < 1:
        raise ValueError(f"select_group must be None or >= 1, got {select_group}")
    if int(query_stride) < 1:
        raise ValueError(f"query_stride must be >= 1, got {query_stride}")
    if variant == "tsai_chang" and int(query_stride) != 1:
        raise ValueError("query_stride > 1 is not available for ca_variant='tsai_chang'")
    if exclude_self is None:
        exclude_self = variant != "tsai_chang"
    return CAConfig(variant, patches, int(K), float(c), scales, search_scales, float(foci), float(min_scale),
                    bool(exclude_self), strides, int(query_stride), int(chunk_elements),
                    None if refine is None else bool(refine), None if select_group is None else int(select_group))


@dataclass
class CAResult:
    """``saliency``: Ŝ (N,h,w) in [0, 1] at the working size; ``attended``: (N,h,w) bool, the foci of attention used by
    the immediate-context step (union over scales for ``"paper"``); ``scale_maps``: the per-scale maps at the working
    size as they entered the average (normalised for paper/eigen); ``working``: the normalised planes (N,C,h,w)."""
    saliency: torch.Tensor
    attended: torch.Tensor
    scale_maps: list[torch.Tensor] = field(default_factory=list)
    working: torch.Tensor | None = None


def prepare_image(img: torch.Tensor, working_size: int | None = 250, color_space: str | None = None,
                  white: str = "D65") -> torch.Tensor:
    """Step 1: resize (longer side → ``working_size``, bilinear; None keeps the size), sRGB → Lab for 3-channel input
    (``color_space="lab"``; ``"none"`` skips it, the default for 1-channel input), per-plane min–max to [0, 1]."""
    if img.dim() != 4:
        raise ValueError(f"expected an (N,C,H,W) image, got shape {tuple(img.shape)}")
    h, w = img.shape[-2:]
    if working_size is not None:
        scale = float(working_size) / max(h, w)
        img = _resize(img, (max(1, round(h * scale)), max(1, round(w * scale))), "bilinear")
    if color_space is None:
        color_space = "lab" if img.shape[1] == 3 else "none"
    if color_space == "lab":
        if img.shape[1] != 3:
            raise ValueError("color_space='lab' needs a 3-channel sRGB image")
        img = rgb_to_lab(img, white)
    elif color_space != "none":
        raise ValueError(f"color_space must be 'lab' or 'none', got {color_space!r}")
    return normalize_planes(img)


def _candidates(img_r: torch.Tensor, r: float, half: int, stride: int, cfg: CAConfig, length: int):
    """Candidate patches of one scale: (N,Q,D) features, (Q,2) positions, the copy-1 grid shape (for self-exclusion)
    and the layout of every copy used, ``(first column, grid rows, grid columns, factor f)``."""
    feats, poss, grid1, copies = [], [], None, []
    size = 2 * half + 1
    off = 1.0 if cfg.variant == "tsai_chang" else 0.5
    mode = "bicubic" if cfg.variant == "tsai_chang" else "bilinear"
    h, w = img_r.shape[-2:]
    for f in cfg.search_scales:
        if cfg.variant == "tsai_chang" and r * f < cfg.min_scale:
            break
        copy = img_r if f == 1.0 else _resize(img_r, (_out_size(h, f), _out_size(w, f)), mode)
        hc, wc = copy.shape[-2:]
        if hc < size or wc < size:
            continue
        cols = F.unfold(copy, size, stride=stride)                           # (N, D, nh*nw)
        nh, nw = (hc - size) // stride + 1, (wc - size) // stride + 1
        rows_c = half + stride * torch.arange(nh, device=img_r.device, dtype=img_r.dtype)
        cols_c = half + stride * torch.arange(nw, device=img_r.device, dtype=img_r.dtype)
        pos = torch.stack(torch.meshgrid(rows_c, cols_c, indexing="ij"), dim=-1).reshape(-1, 2)
        first = sum(p.shape[0] for p in poss)
        if f == 1.0 and grid1 is None:
            grid1 = (first, nh, nw)
        copies.append((first, nh, nw, f))
        feats.append(cols.transpose(1, 2).contiguous())
        poss.append((pos + off) / (length * f))
    if not feats:
        return None, None, None, []
    return torch.cat(feats, dim=1), torch.cat(poss, dim=0), grid1, copies


def _queries(img_r: torch.Tensor, half: int, cfg: CAConfig):
    """Query patches (N,P,D), centres (P,2) in pixels of the scale image, the query grid shape and the pixel of its
    first row/column (the grid is start + query_stride·index on both axes)."""
    size = 2 * half + 1
    h, w = img_r.shape[-2:]
    s = cfg.query_stride
    if cfg.variant == "tsai_chang":     # valid positions only; the border is set to 0 afterwards
        src, start = img_r, half
        nh, nw = h - 2 * half, w - 2 * half
    else:
        o = (s - 1) // 2                 # centres of s×s blocks
        src = F.pad(img_r, (half, half, half, half), mode="replicate")[..., o:, o:]
        start = o
        nh, nw = (h - o - 1) // s + 1, (w - o - 1) // s + 1
    feats = F.unfold(src, size, stride=s)                                   # (N, D, nh*nw)
    rows_c = start + s * torch.arange(nh, device=img_r.device, dtype=img_r.dtype)
    cols_c = start + s * torch.arange(nw, device=img_r.device, dtype=img_r.dtype)
    pos = torch.stack(torch.meshgrid(rows_c, cols_c, indexing="ij"), dim=-1).reshape(-1, 2)
    return feats.transpose(1, 2).contiguous(), pos, (nh, nw), start


# Distances per block on CPU (8 MB in float32): the block and its weights stay in the last-level cache while the
# matmul still gets long enough panels (measured at 250 px, 1 thread: 2^21 beat 2^18 by ~20 % and 2^23 by ~10 %).
_CPU_TILE_ELEMENTS = 1 << 21
# A copy takes its position factors from a table only if a block needs at most this many strided views of it (query
# residue classes): each view is one op, and many small ops cost more than they save (e.g. the ¼ copy at stride 3).
_MAX_TABLE_VIEWS = 8


def _group_size(q_count: int, k: int, group: int | None) -> int:
    """Group size of the two-stage exact top-K (1 = a plain ``torch.topk`` over every candidate). Auto (None):
    g ≈ √(Q/K), which balances the two selections (over Q/g group minima, then over the K·g gathered values)."""
    g = int(round(math.sqrt(q_count / k))) if group is None else int(group)
    return g if g >= 2 and g * k < q_count else 1


def block_rows(n: int, padded_candidates: int, k: int, dim: int, chunk_elements: int, refine: bool,
               device: torch.device) -> int:
    """Queries per block: (N, rows, Q) distances within ``chunk_elements`` (on CPU also within the cache-sized tile);
    when refining, the (N, rows, K, D) gathered patches as well."""
    if device.type == "cpu":    # per thread: each works on its share of every op
        budget = min(chunk_elements, _CPU_TILE_ELEMENTS * max(1, torch.get_num_threads()))
    else:
        budget = chunk_elements
    rows = max(1, budget // max(1, n * padded_candidates))
    if refine:
        rows = max(1, min(rows, budget // max(1, n * k * dim)))
    return rows


def _query_blocks(nh: int, nw: int, rows: int):
    """Blocks of the (nh, nw) query grid, row-major and contiguous in the flattened query index: (i0, i1, j0, j1),
    either whole grid rows (when ``rows`` ≥ nw) or runs of one grid row, each at most ``rows`` queries."""
    if rows >= nw:
        m = rows // nw
        return [(i, min(nh, i + m), 0, nw) for i in range(0, nh, m)]
    length = -(-nw // -(-nw // rows))      # equal runs: ceil(nw / ceil(nw / rows))
    return [(i, i + 1, j, min(nw, j + length)) for i in range(nh) for j in range(0, nw, length)]


@dataclass(frozen=True)
class Lattice:
    """Pixel layout of one scale (:func:`scale_saliency`): queries at pixels (start + step·i, start + step·j) with
    positions (pixel + off)/length; the candidates of copy ``(first, rows, cols, f)`` at pixels (half + stride·a,
    half + stride·b) of that copy, positions (pixel + off)/(length·f), columns first … first + rows·cols − 1."""
    start: int
    step: int
    length: int
    off: float
    half: int
    stride: int
    copies: tuple[tuple[int, int, int, float], ...]


def _weight_tables(lattice: Lattice, grid: tuple[int, int], c: float, dtype: torch.dtype, device: torch.device):
    """(1 + c·d_position)² of the copies whose factor is 1/m for an integer m, as small tables.

    With pixel offsets u = p_query − m·p_cand (rows) and v (columns), (1 + c·d_position)² = W(u, v) =
    (1 + (c/length)·√((u + δ)² + (v + δ)²))², δ = off·(1 − m). Candidates are taken in reversed grid order
    (a' = rows − 1 − a, b' likewise) so that u and v grow with both the query and the candidate index; the table is
    split by v mod R (R = m·stride, the step of v between neighbouring candidates) into R planes in which a run of
    candidates is contiguous. One block of queries then divides by strided views of the planes (one per copy and query
    residue class) instead of computing Q weights per query. Returns (reversed copies, tables); other copies keep the
    computed weights."""
    nh, nw = grid
    sq = lattice.step
    tables = []
    for first, na, nb, f in lattice.copies:
        m = round(1.0 / f)
        if m < 1 or abs(1.0 / f - m) > 1e-9:
            continue
        r = m * lattice.stride
        if r // math.gcd(sq, r) > _MAX_TABLE_VIEWS:
            continue
        rows_u = sq * (nh - 1) + r * (na - 1) + 1
        cols_t = (sq * (nw - 1)) // r + nb
        delta = lattice.off * (1 - m)
        u0 = lattice.start - m * (lattice.half + lattice.stride * (na - 1))
        v0 = lattice.start - m * (lattice.half + lattice.stride * (nb - 1))
        yv = (torch.arange(rows_u, device=device, dtype=dtype) + (u0 + delta)) * (c / lattice.length)
        xv = (torch.arange(r * cols_t, device=device, dtype=dtype) + (v0 + delta)) * (c / lattice.length)
        w2 = (yv[:, None].square() + xv[None, :].square()).sqrt_().add_(1.0).square_()      # (U, R·T)
        planes = w2.view(rows_u, cols_t, r).permute(2, 0, 1).contiguous()                     # (R, U, T)
        tables.append((first, na, nb, r, planes))
    return tables


def _divide_by_tables(key: torch.Tensor, tables, i0: int, i1: int, j0: int, j1: int, step: int) -> None:
    """key (N, m, Q_pad) of the queries (i0…i1−1) × (j0…j1−1), row-major: divide the table copies' columns by
    (1 + c·d_position)² (:func:`_weight_tables`), one strided view per copy and residue class of the query column."""
    n, m, qp = key.shape
    ni, nj = i1 - i0, j1 - j0
    for first, na, nb, r, planes in tables:
        _, rows_u, cols_t = planes.shape
        period = r // math.gcd(step, r)              # query columns j and j + period share a plane
        tstep = step * period // r
        for cls in range(period):
            j = j0 + (cls - j0) % period             # first query column of this class in the block
            if j >= j1:
                continue
            nk = (j1 - 1 - j) // period + 1
            rho = (step * j) % r
            t0 = (step * j - rho) // r
            kview = key.as_strided((n, ni, nk, na, nb), (m * qp, nj * qp, period * qp, nb, 1),
                                   key.storage_offset() + (j - j0) * qp + first)
            wview = planes.as_strided((1, ni, nk, na, nb), (0, step * cols_t, tstep, r * cols_t, 1),
                                      planes.storage_offset() + rho * rows_u * cols_t + step * i0 * cols_t + t0)
            kview.div_(wview)


def _mean_knn_distance(q: torch.Tensor, qpos: torch.Tensor, grid: tuple[int, int], cand: torch.Tensor,
                       cpos: torch.Tensor, c: float, k: int, self_index: torch.Tensor | None, chunk_elements: int,
                       refine: bool, group: int | None = None, lattice: Lattice | None = None) -> torch.Tensor:
    """(1/K) Σ of the K smallest d = d_color/(1 + c·d_position) per query (Eq. 1-2): (N,P).

    ``q`` (N,P,D) are the queries of an (nh, nw) grid in row-major order with centres ``qpos`` (P,2); ``cand`` (N,Q,D)
    the candidates at ``cpos`` (Q,2). The P×Q matrix is never materialised: queries go in blocks of grid rows (or runs
    of one row), for which

    * d_color² = ‖p‖² + ‖q‖² − 2⟨p,q⟩ comes from one matmul of the augmented vectors [p, ‖p‖², 1]·[−2q, 1, ‖q‖²];
    * the ranking key is d² = d_color²/(1 + c·d_position)² (monotone in d). With a ``lattice`` (the integer pixel
      layout of the scale), copies at factors 1/m take (1 + c·d_position)² from small precomputed tables
      (:func:`_weight_tables`); otherwise (c·d_position)² = c²Δy² + c²Δx² is a broadcast sum of two small tables
      (grid rows × Q, grid columns × Q), because the query positions are separable;
    * the self-match (``self_index``) is set to +inf by a scatter (queries without one write into a padding column);
    * exact top-K in two stages (:func:`_group_size`): the candidates are split into G groups of g, the K groups
      with the smallest minima are kept, and the K smallest keys are taken among their K·g members. Every key ≤ the
      K-th smallest lies in a group whose minimum is ≤ it, so the kept values are exactly those of a full top-K.

    With ``refine`` the K kept distances are recomputed from the patch differences (no expanded-form cancellation)."""
    n, p, _ = q.shape
    nq = cand.shape[1]
    nh, nw = grid
    dev, dt = q.device, q.dtype
    tables = _weight_tables(lattice, grid, c, dt, dev) if lattice is not None else []
    if tables:   # the table copies in reversed grid order (an involution on the candidate index)
        order = torch.arange(nq, device=dev)
        for first, na, nb, _, _ in tables:
            order[first:first + na * nb] = order[first:first + na * nb].flip(0)
        cand, cpos = cand[:, order], cpos[order]
        if self_index is not None:
            self_index = torch.where(self_index >= 0, order[self_index.clamp_min(0)], self_index)
    covered = sorted((first, first + na * nb) for first, na, nb, _, _ in tables)
    computed, at = [], 0                            # column ranges whose weights are computed per block
    for a0, a1 in covered + [(nq, nq)]:
        if a0 > at:
            computed.append((at, a0))
        at = a1
    g = _group_size(nq, k, group)
    qp = -(-(nq + 1) // g) * g                 # ≥ 1 padding column (+inf): the self-match sink, whole groups
    ng = qp // g
    # [p, ‖p‖², 1] · [−2q, 1, ‖q‖²] = d_color² (the −2 is an exact power-of-two scaling)
    qa = torch.cat((q, q.square().sum(-1, keepdim=True), q.new_ones(n, p, 1)), dim=-1)
    ca = torch.cat((-2.0 * cand, cand.new_ones(n, nq, 1), cand.square().sum(-1, keepdim=True)), dim=-1)
    ca_t = ca.transpose(1, 2).contiguous()                                  # (N, D+2, Q)
    if computed:
        qg = qpos.view(nh, nw, 2)
        ty = (qg[:, 0, 0, None] * c - cpos[None, :, 0] * c).square()       # (nh, Q): (c·Δy)²
        tx = (qg[0, :, 1, None] * c - cpos[None, :, 1] * c).square()       # (nw, Q): (c·Δx)²
    sink = torch.where(self_index >= 0, self_index, torch.full_like(self_index, nq)) if self_index is not None else None
    rows = block_rows(n, qp, k, q.shape[-1], chunk_elements, refine, dev)
    out = torch.empty(n, p, dtype=dt, device=dev)
    bufs: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    for i0, i1, j0, j1 in _query_blocks(nh, nw, rows):
        a, b = i0 * nw + j0, (i1 - 1) * nw + j1
        m = b - a
        if m not in bufs:                       # at most two block sizes
            bufs[m] = (torch.full((n, m, qp), float("inf"), dtype=dt, device=dev),
                       torch.empty(m, nq if computed else 0, dtype=dt, device=dev))
        key, w = bufs[m]
        kv = key[..., :nq]                      # the padding columns stay +inf
        torch.bmm(qa[:, a:b], ca_t, out=kv)                                 # d_color² (row stride Q_pad)
        _divide_by_tables(key, tables, i0, i1, j0, j1, lattice.step if tables else 1)
        for c0, c1 in computed:                 # d² = d_color²/(1 + c·d_position)²
            wc = w[:, c0:c1]
            torch.add(ty[i0:i1, None, c0:c1], tx[None, j0:j1, c0:c1], out=wc.view(i1 - i0, j1 - j0, c1 - c0))
            wc.sqrt_().add_(1.0)                                            # 1 + c·d_position
            kv[..., c0:c1].div_(wc).div_(wc)
        if sink is not None:
            key.scatter_(2, sink[a:b].view(1, m, 1).expand(n, m, 1), float("inf"))
        flat = key.view(n * m, qp)
        if g > 1:
            grouped = flat.view(n * m, g, ng)                               # group j = columns {j, j+G, j+2G, …}
            gi = torch.topk(grouped.amin(1), k, dim=-1, largest=False, sorted=False).indices       # (N·m, K)
            members = grouped.gather(2, gi[:, None, :].expand(-1, g, -1)).view(n * m, g * k)
            top = torch.topk(members, k, dim=-1, largest=False, sorted=False)
        else:
            top = torch.topk(flat, k, dim=-1, largest=False, sorted=False)
        if refine:
            t = top.indices
            best = ((t // k) * ng + gi.gather(1, t % k) if g > 1 else t).view(n, m, k)
            # the K kept distances recomputed from the patch differences (no ‖p‖²+‖q‖²−2⟨p,q⟩ cancellation) and
            # their position factors from the centres
            kept = cand.reshape(n * nq, -1).index_select(0, (best + batch_offsets(n, nq, dev)).view(-1))
            dcol = kept.view(n, m, k, -1).sub_(q[:, a:b, None, :]).norm(dim=-1)                   # (N,m,K)
            cb = cpos[best]                                                                         # (N,m,K,2)
            wk = torch.hypot(qpos[a:b, None, 0] * c - cb[..., 0] * c, qpos[a:b, None, 1] * c - cb[..., 1] * c)
            out[:, a:b] = (dcol / wk.add_(1.0)).mean(-1)
        else:
            out[:, a:b] = top.values.view(n, m, k).clamp_min_(0).sqrt_().mean(-1)
    return out


def batch_offsets(n: int, nq: int, device: torch.device) -> torch.Tensor:
    """(N,1,1): the flat row b·Q of image b's first candidate."""
    return (torch.arange(n, device=device) * nq)[:, None, None]


def _self_index(qpos: torch.Tensor, grid1, half: int, stride: int) -> torch.Tensor | None:
    """For every query: the index of the candidate at the same centre in the copy at factor 1, or −1."""
    if grid1 is None:
        return None
    first, nh, nw = grid1
    rr = qpos[:, 0].round().long() - half
    cc = qpos[:, 1].round().long() - half
    ok = (rr >= 0) & (cc >= 0) & (rr % stride == 0) & (cc % stride == 0)
    ri, ci = torch.div(rr, stride, rounding_mode="floor"), torch.div(cc, stride, rounding_mode="floor")
    ok &= (ri < nh) & (ci < nw)
    return torch.where(ok, first + ri * nw + ci, torch.full_like(ri, -1))


def scale_saliency(img_r: torch.Tensor, r: float, index: int, cfg: CAConfig) -> torch.Tensor:
    """S^r (Eq. 2) of one scale image (N,C,h,w) → (N,h,w), before any normalisation."""
    half = cfg.patch[index] // 2
    stride = cfg.candidate_stride[index]
    h, w = img_r.shape[-2:]
    length = max(h, w)
    img_r = img_r - img_r.mean(dim=(2, 3), keepdim=True)    # shift-invariant distances, less cancellation
    cand, cpos, grid1, copies = _candidates(img_r, r, half, stride, cfg, length)
    if cand is None:
        raise ValueError(f"scale {r}: the {h}x{w} image is smaller than the {2 * half + 1}px patch; use a larger "
                         f"working_size or fewer/larger scales")
    n = img_r.shape[0]
    if cfg.variant == "tsai_chang" and (h <= 2 * half or w <= 2 * half):
        return img_r.new_zeros(n, h, w)
    q, qpix, (nh, nw), start = _queries(img_r, half, cfg)
    off = 1.0 if cfg.variant == "tsai_chang" else 0.5
    lattice = Lattice(start, cfg.query_stride, length, off, half, stride, tuple(copies))
    qpos = (qpix + off) / length
    self_index = _self_index(qpix, grid1, half, stride) if cfg.exclude_self else None
    k = min(cfg.K, cand.shape[1] - (1 if self_index is not None and bool((self_index >= 0).any()) else 0))
    if k < 1:
        raise ValueError(f"scale {r}: no candidate patches left for K nearest neighbours")
    refine = cfg.refine if cfg.refine is not None else q.dtype == torch.float64
    mean_d = _mean_knn_distance(q, qpos, (nh, nw), cand, cpos, cfg.c, k, self_index, cfg.chunk_elements, refine,
                                cfg.select_group, lattice)
    s = 1.0 - torch.exp(-mean_d * cfg.area_factor[index])
    s = s.view(n, nh, nw)
    if cfg.variant == "tsai_chang":
        return F.pad(s, (half, half, half, half))
    if (nh, nw) != (h, w):
        s = _resize(s[:, None], (h, w), "bilinear")[:, 0]
    return s


def foci_weighting(s: torch.Tensor, threshold: float, relative: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 4-5: attended = S > threshold (× max S when ``relative``); returns (S·(1 − d_foci/max d_foci), attended).
    No attended pixel (a zero map) → no weighting; d_foci ≡ 0 (a zero map stays zero)."""
    thr = threshold * s.flatten(1).amax(dim=1).view(-1, 1, 1) if relative else threshold
    attended = s > thr
    d = distance_to_mask(attended).to(s.dtype)
    finite = torch.isfinite(d)
    d = torch.where(finite, d, torch.zeros_like(d))
    dmax = d.flatten(1).amax(dim=1).view(-1, 1, 1)
    d = torch.where(dmax > 0, d / torch.where(dmax > 0, dmax, torch.ones_like(dmax)), torch.zeros_like(d))
    return s * (1.0 - d), attended


def context_saliency(img: torch.Tensor, cfg: CAConfig | None = None, *, working_size: int | None = 250,
                     color_space: str | None = None, white: str = "D65", prepared: bool = False) -> CAResult:
    """Context-aware saliency Ŝ of a batch of images (N,C,H,W) (sRGB in [0,1] for C=3; any single plane for C=1).

    Returns the map at the working size (longer side ``working_size``; None keeps the input size). ``prepared=True``
    skips step 1 (the input is already the normalised planes)."""
    cfg = cfg or CAConfig()
    work = img if prepared else prepare_image(img, working_size, color_space, white)
    n, _, h, w = work.shape
    maps, masks = [], []
    for i, r in enumerate(cfg.scales):          # loop over the (few) scales only
        img_r = work if r == 1.0 else _resize(work, (_out_size(h, r), _out_size(w, r)), "bilinear")
        s = scale_saliency(img_r, r, i, cfg)
        if cfg.variant != "tsai_chang":
            s = normalize_maps(s)
        if tuple(s.shape[-2:]) != (h, w):
            s = _resize(s[:, None], (h, w), "bilinear")[:, 0]
        maps.append(s)
    if cfg.variant == "paper":
        weighted = []
        for s in maps:
            sw, att = foci_weighting(s, cfg.foci, relative=False)
            weighted.append(sw)
            masks.append(att)
        sal = torch.stack(weighted).mean(0)
        attended = torch.stack(masks).any(0)
    else:
        mean = torch.stack(maps).mean(0)
        sal, attended = foci_weighting(mean, cfg.foci, relative=cfg.variant == "tsai_chang")
    return CAResult(saliency=sal, attended=attended, scale_maps=maps, working=work)


def distance_shapes(height: int, width: int, cfg: CAConfig | None = None, working_size: int | None = 250,
                    planes: int = 3) -> list[dict]:
    """Per scale of :func:`context_saliency` on an ``height``×``width`` input with ``planes`` image planes: the query
    grid ``(nh, nw)``, the number of queries ``P``, of candidates ``Q`` and the patch dimension ``D`` = patch²·planes
    — the shapes of the distance matmuls (``sr_map.md`` §7)."""
    cfg = cfg or CAConfig()
    if working_size is not None:
        s = float(working_size) / max(height, width)
        height, width = max(1, round(height * s)), max(1, round(width * s))
    out = []
    for i, r in enumerate(cfg.scales):
        h, w = _out_size(height, r), _out_size(width, r)
        size, stride = cfg.patch[i], cfg.candidate_stride[i]
        q = 0
        for f in cfg.search_scales:
            if cfg.variant == "tsai_chang" and r * f < cfg.min_scale:
                break
            hc, wc = (h, w) if f == 1.0 else (_out_size(h, f), _out_size(w, f))
            if hc >= size and wc >= size:
                q += ((hc - size) // stride + 1) * ((wc - size) // stride + 1)
        if cfg.variant == "tsai_chang":
            nh, nw = max(0, h - size + 1), max(0, w - size + 1)
        else:
            s = cfg.query_stride
            o = (s - 1) // 2
            nh, nw = (h - o - 1) // s + 1, (w - o - 1) // s + 1
        out.append({"scale": r, "grid": (nh, nw), "P": nh * nw, "Q": q, "D": size * size * planes})
    return out


def work_estimate(height: int, width: int, cfg: CAConfig | None = None, working_size: int | None = 250,
                  planes: int = 3) -> dict:
    """Cost model (``sr_map.md`` §7) of :func:`context_saliency` on an ``height``×``width`` input: the number of
    query×candidate pairs and of multiply-adds of the patch distances, summed over the scales."""
    shapes = distance_shapes(height, width, cfg, working_size, planes)
    return {"pairs": sum(d["P"] * d["Q"] for d in shapes), "macs": sum(d["P"] * d["Q"] * d["D"] for d in shapes)}
