"""SR map (sr_map.md): the vectorised context-aware saliency against a brute-force loop oracle (§6.1), its properties
(§6.2), the map → image encoding (§6.5), and the LRP step through the engine (§6.4, needs ``cnnlens.lrp``)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cnnlens.errors import MethodError
from cnnlens.methods import _context_saliency as ca
from cnnlens.methods.sr_map import encode_relevance, sr_map_from_relevance

skcolor = pytest.importorskip("skimage.color")


# --------------------------------------------------------------------------------------------------------------------
# Brute-force oracle: explicit loops over every query pixel and every candidate patch (float64, numpy)
# --------------------------------------------------------------------------------------------------------------------

def _resize_t(a: np.ndarray, size, mode: str) -> np.ndarray:
    """Resampling is not what is under test: the oracle resamples with torch exactly as the implementation documents
    (align_corners=False; antialias when shrinking)."""
    t = torch.from_numpy(a)[None]
    if tuple(t.shape[-2:]) == tuple(size):
        return a
    shrink = size[0] < t.shape[-2] or size[1] < t.shape[-1]
    return F.interpolate(t, size=tuple(size), mode=mode, align_corners=False, antialias=shrink)[0].numpy()


def _oracle_planes(rgb: np.ndarray, white: str = "D65") -> np.ndarray:
    """(3,H,W) sRGB → Lab planes (skimage) → per-plane min–max (+eps)."""
    lab = skcolor.rgb2lab(np.moveaxis(rgb, 0, -1), illuminant=white)
    lab = np.moveaxis(lab, -1, 0)
    out = np.empty_like(lab)
    for p in range(lab.shape[0]):
        lo, hi = lab[p].min(), lab[p].max()
        out[p] = (lab[p] - lo) / (hi - lo + np.finfo(np.float64).eps)
    return out


def _oracle_edt(mask: np.ndarray) -> np.ndarray:
    h, w = mask.shape
    pts = np.argwhere(mask)
    d = np.zeros((h, w))
    if len(pts) == 0:
        return d   # no focus: no weighting (documented)
    for i in range(h):
        for j in range(w):
            d[i, j] = np.sqrt(((pts - (i, j)) ** 2).sum(1)).min()
    return d


def _oracle_foci(s: np.ndarray, thr: float):
    att = s > thr
    d = _oracle_edt(att)
    if d.max() > 0:
        d = d / d.max()
    return s * (1 - d), att


def _oracle_scale(planes_r: np.ndarray, r: float, patch: int, stride: int, cfg: ca.CAConfig, factor: float):
    tc = cfg.variant == "tsai_chang"
    half = patch // 2
    _, h, w = planes_r.shape
    length = max(h, w)
    off = 1.0 if tc else 0.5
    cands = []   # (vector, (y, x) normalised position, centre in the factor-1 copy or None)
    for f in cfg.search_scales:
        if tc and r * f < cfg.min_scale:
            break
        size = (math.ceil(h * f - 1e-9), math.ceil(w * f - 1e-9))
        copy = planes_r if f == 1.0 else _resize_t(planes_r, size, "bicubic" if tc else "bilinear")
        hc, wc = copy.shape[1:]
        for a in range(half, hc - half, stride):
            for b in range(half, wc - half, stride):
                vec = copy[:, a - half:a + half + 1, b - half:b + half + 1].ravel()
                cands.append((vec, ((a + off) / (length * f), (b + off) / (length * f)),
                              (a, b) if f == 1.0 else None))
    has_self = cfg.exclude_self and any(cc[2] is not None for cc in cands)
    k = min(cfg.K, len(cands) - (1 if has_self else 0))
    s = np.zeros((h, w))
    if tc:
        src, rows, cols, shift = planes_r, range(half, h - half), range(half, w - half), half
    else:
        src = np.pad(planes_r, ((0, 0), (half, half), (half, half)), mode="edge")
        rows, cols, shift = range(h), range(w), 0
    for i in rows:
        for j in cols:
            p = src[:, i - shift:i - shift + patch, j - shift:j - shift + patch].ravel()
            py, px = (i + off) / length, (j + off) / length
            ds = []
            for vec, (qy, qx), centre in cands:
                if cfg.exclude_self and centre == (i, j):
                    continue
                dcol = math.sqrt(((p - vec) ** 2).sum())
                dpos = math.hypot(py - qy, px - qx)
                ds.append(dcol / (1.0 + cfg.c * dpos))
            ds.sort()
            s[i, j] = 1.0 - math.exp(-factor * sum(ds[:k]) / k)
    return s


def oracle_context_saliency(rgb: np.ndarray, cfg: ca.CAConfig):
    """Ŝ and the attended mask of one (3,H,W) sRGB image at its own size (working_size=None)."""
    planes = _oracle_planes(rgb)
    _, h, w = planes.shape
    maps = []
    for idx, r in enumerate(cfg.scales):
        size = (math.ceil(h * r - 1e-9), math.ceil(w * r - 1e-9))
        planes_r = planes if r == 1.0 else _resize_t(planes, size, "bilinear")
        s = _oracle_scale(planes_r, r, cfg.patch[idx], cfg.candidate_stride[idx], cfg, cfg.area_factor[idx])
        if cfg.variant != "tsai_chang" and s.max() > s.min():
            s = (s - s.min()) / (s.max() - s.min())
        elif cfg.variant != "tsai_chang":
            s = np.zeros_like(s)
        maps.append(_resize_t(s[None], (h, w), "bilinear")[0])
    if cfg.variant == "paper":
        pairs = [_oracle_foci(s, cfg.foci) for s in maps]
        return np.mean([p[0] for p in pairs], 0), np.any([p[1] for p in pairs], 0)
    mean = np.mean(maps, 0)
    thr = cfg.foci * mean.max() if cfg.variant == "tsai_chang" else cfg.foci
    return _oracle_foci(mean, thr)


def _test_image(seed: int = 0, h: int = 24, w: int = 32) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    img = 0.15 * torch.rand(1, 3, h, w, generator=g, dtype=torch.float64) + 0.2
    img[..., 6:13, 18:27] = torch.tensor([0.9, 0.4, 0.2], dtype=torch.float64).view(1, 3, 1, 1)
    img[..., 15:19, 3:7] = 0.7
    return img


# --------------------------------------------------------------------------------------------------------------------
# Oracle agreement
# --------------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("variant,K", [("paper", 64), ("paper", 8), ("tsai_chang", 8), ("eigen", 16)])
def test_matches_loop_oracle_float64(variant, K):
    img = _test_image(1)
    cfg = ca.make_config(variant, K=K, chunk_elements=997)   # small chunks: the chunk loop is exercised
    res = ca.context_saliency(img, cfg, working_size=None)
    want, att = oracle_context_saliency(img[0].numpy(), cfg)
    assert res.saliency.dtype == torch.float64
    err = np.abs(res.saliency[0].numpy() - want).max()
    assert err <= 1e-9, err
    assert np.array_equal(res.attended[0].numpy(), att)
    assert want.max() > 0.3    # a non-trivial map


@pytest.mark.parametrize("refine", [None, True])
def test_matches_loop_oracle_float32(refine):
    img = _test_image(2)
    cfg = ca.make_config("paper", K=16, refine=refine)     # None: float32 ranks and averages the expanded form
    res = ca.context_saliency(img.float(), cfg, working_size=None)
    want, _ = oracle_context_saliency(img[0].numpy(), cfg)
    assert res.saliency.dtype == torch.float32
    assert np.abs(res.saliency[0].double().numpy() - want).max() <= 1e-4


def test_query_stride_one_is_exact_and_coarser_grid_is_close():
    img = _test_image(3)
    exact = ca.context_saliency(img, ca.make_config("paper", K=16), working_size=None).saliency
    coarse = ca.context_saliency(img, ca.make_config("paper", K=16, query_stride=3), working_size=None).saliency
    assert coarse.shape == exact.shape
    corr = torch.corrcoef(torch.stack([exact.flatten(), coarse.flatten()]))[0, 1]
    assert corr > 0.8, corr


# --------------------------------------------------------------------------------------------------------------------
# Building blocks
# --------------------------------------------------------------------------------------------------------------------

def _brute_knn_mean(q, qpos, cand, cpos, c, k, self_index):
    """(N,P) mean of the K smallest d_color/(1 + c·d_position) from the full matrix (tiny sizes only)."""
    d = torch.cdist(q, cand) / (1.0 + c * torch.cdist(qpos, cpos))
    if self_index is not None:
        rows = (self_index >= 0).nonzero().squeeze(1)
        d[:, rows, self_index[rows]] = float("inf")
    return d.sort(dim=-1).values[..., :k].mean(-1)


@pytest.mark.parametrize("group", [1, 2, 3, 5, 11, None])
@pytest.mark.parametrize("refine", [False, True])
@pytest.mark.parametrize("rows", [3, 20])   # runs of one grid row / several whole grid rows per block
def test_knn_blocks_and_two_stage_selection_are_exact(group, refine, rows):
    """The blocked, two-stage top-K equals a full sort, with many exact ties (quantised patches), a batch of two,
    self-matches excluded for some queries, and blocks that split grid rows or span several."""
    g = torch.Generator().manual_seed(0)
    nh, nw, nq, dim, k = 5, 7, 61, 4, 6
    q = (torch.randint(0, 3, (2, nh * nw, dim), generator=g) / 2.0).double()
    cand = (torch.randint(0, 3, (2, nq, dim), generator=g) / 2.0).double()
    yy, xx = torch.meshgrid(torch.arange(nh, dtype=torch.float64), torch.arange(nw, dtype=torch.float64),
                            indexing="ij")
    qpos = torch.stack([yy, xx], -1).reshape(-1, 2) / 8.0
    cpos = torch.randint(0, 8, (nq, 2), generator=g).double() / 8.0
    self_index = torch.where(torch.arange(nh * nw) % 3 == 0, torch.arange(nh * nw) % nq, -1)
    want = _brute_knn_mean(q, qpos, cand, cpos, 3.0, k, self_index)
    qp = -(-(nq + 1) // ca._group_size(nq, k, group)) * ca._group_size(nq, k, group)
    got = ca._mean_knn_distance(q, qpos, (nh, nw), cand, cpos, 3.0, k, self_index, rows * 2 * qp, refine, group)
    assert ca._group_size(nq, k, group) == {None: 3, 11: 1}.get(group, group)   # 11·K ≥ Q: one plain top-K
    assert torch.allclose(got, want, atol=1e-12, rtol=0)


@pytest.mark.parametrize("variant,opts", [("paper", {}), ("paper", {"query_stride": 2}),
                                          ("paper", {"query_stride": 3, "candidate_stride": 2}),
                                          ("eigen", {"search_scales": (1.0, 0.5, 1 / 3, 0.3)}),
                                          ("tsai_chang", {}), ("tsai_chang", {"scales": (0.5,), "min_scale": 0.05})])
def test_position_weight_tables_equal_the_computed_weights(variant, opts):
    """The table path (copies at factors 1/m, candidates reversed) gives the generic path's distances, for query and
    candidate strides, a factor without a table (0.3), tsai_chang's positions and self-matches."""
    cfg = ca.make_config(variant, K=8, **opts)
    work = ca.prepare_image(_test_image(9, 30, 41), None)
    for index, r in enumerate(cfg.scales):
        img_r = work if r == 1.0 else ca._resize(work, (ca._out_size(30, r), ca._out_size(41, r)), "bilinear")
        half, stride = cfg.patch[index] // 2, cfg.candidate_stride[index]
        length = max(img_r.shape[-2:])
        cand, cpos, grid1, copies = ca._candidates(img_r, r, half, stride, cfg, length)
        q, qpix, grid, start = ca._queries(img_r, half, cfg)
        off = 1.0 if variant == "tsai_chang" else 0.5
        lattice = ca.Lattice(start, cfg.query_stride, length, off, half, stride, tuple(copies))
        tables = ca._weight_tables(lattice, grid, cfg.c, q.dtype, q.device)
        views = [round(1 / f) * stride // math.gcd(cfg.query_stride, round(1 / f) * stride) for *_, f in copies
                 if f in (1.0, 0.5, 0.25, 1 / 3)]
        assert len(tables) == sum(v <= ca._MAX_TABLE_VIEWS for v in views)
        self_index = ca._self_index(qpix, grid1, half, stride) if cfg.exclude_self else None
        k = min(cfg.K, cand.shape[1] - 1)
        for refine, tol in ((True, 1e-12), (False, 1e-7)):   # unrefined: √ of the expanded form's rounding near 0
            args = (q, (qpix + off) / length, grid, cand, cpos, cfg.c, k, self_index, 5000, refine, None)
            want = ca._mean_knn_distance(*args)
            got = ca._mean_knn_distance(*args, lattice)
            assert torch.allclose(got, want, atol=tol, rtol=0)


def test_select_group_does_not_change_the_map():
    img = _test_image(8)
    base = ca.context_saliency(img.float(), ca.make_config("paper", K=8, select_group=1), working_size=None)
    for group in (None, 2, 4):
        res = ca.context_saliency(img.float(), ca.make_config("paper", K=8, select_group=group), working_size=None)
        assert torch.allclose(res.saliency, base.saliency, atol=1e-6, rtol=0)
        assert torch.equal(res.attended, base.attended)


def test_rgb_to_lab_matches_skimage_d65():
    g = torch.Generator().manual_seed(0)
    rgb = torch.rand(2, 3, 5, 7, generator=g, dtype=torch.float64)
    rgb[0, :, 0, 0] = 0.0
    rgb[0, :, 0, 1] = 1.0
    got = ca.rgb_to_lab(rgb, "D65")
    for n in range(2):
        want = skcolor.rgb2lab(rgb[n].permute(1, 2, 0).numpy())
        assert np.abs(got[n].permute(1, 2, 0).numpy() - want).max() < 1e-9


@pytest.mark.parametrize("white", ["D65", "D50"])
def test_rgb_to_lab_white_and_black(white):
    rgb = torch.tensor([1.0, 0.0], dtype=torch.float64).view(2, 1, 1, 1).expand(2, 3, 1, 1)
    lab = ca.rgb_to_lab(rgb, white)[:, :, 0, 0]
    # D65 with skimage's matrix leaves a*, b* of white at ~5e-3 (skimage does the same)
    assert torch.allclose(lab[0], torch.tensor([100.0, 0.0, 0.0], dtype=torch.float64), atol=1e-2)
    assert torch.allclose(lab[1], torch.zeros(3, dtype=torch.float64), atol=1e-9)


@pytest.mark.parametrize("shape", [(3, 13, 17), (3, 1, 9), (3, 9, 1), (3, 41, 3)])
def test_distance_transform_matches_brute_force(shape):
    g = torch.Generator().manual_seed(0)
    mask = torch.rand(*shape, generator=g) > 0.93
    mask[0, 0, 0] = mask[1, -1, -1] = True      # also covers columns/rows with no attended pixel
    mask[2] = False
    d = ca.distance_to_mask(mask)
    assert d.dtype == torch.float64
    for n in range(2):
        assert np.abs(d[n].numpy() - _oracle_edt(mask[n].numpy())).max() < 1e-12
    assert torch.isinf(d[2]).all()


# --------------------------------------------------------------------------------------------------------------------
# Properties (§6.2) and edge cases
# --------------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("variant", ca.VARIANTS)
def test_constant_input_gives_zeros_not_nan(variant):
    img = torch.full((2, 3, 24, 32), 0.4)
    res = ca.context_saliency(img, ca.make_config(variant), working_size=None)
    assert torch.isfinite(res.saliency).all() and not res.saliency.any()
    out = sr_map_from_relevance(torch.zeros(1, 3, 24, 32), working_size=None, ca_variant=variant)
    assert torch.isfinite(out["sr_map"]).all() and not out["sr_map"].any()
    assert not out["attention_areas"].any()


def test_batch_equals_one_by_one():
    img = torch.cat([_test_image(4), _test_image(5), torch.full_like(_test_image(0), 0.3)])
    cfg = ca.make_config("paper", K=16, refine=False)
    batched = ca.context_saliency(img, cfg, working_size=40)
    for n in range(img.shape[0]):
        single = ca.context_saliency(img[n:n + 1], cfg, working_size=40)
        assert torch.allclose(batched.saliency[n:n + 1], single.saliency, atol=1e-10, rtol=0)
        assert torch.equal(batched.attended[n:n + 1], single.attended)


def test_uniform_background_blob_peaks_inside_and_decays():
    img = torch.full((1, 1, 40, 40), 0.2, dtype=torch.float64)
    img[..., 17:23, 17:23] = 1.0
    s = ca.context_saliency(img, ca.make_config("paper"), working_size=None).saliency[0]
    peak = divmod(int(s.argmax()), 40)
    assert 15 <= peak[0] < 25 and 15 <= peak[1] < 25
    # mean saliency on rings of increasing distance from the blob's centre decreases
    yy, xx = torch.meshgrid(torch.arange(40.0), torch.arange(40.0), indexing="ij")
    dist = torch.sqrt((yy - 19.5) ** 2 + (xx - 19.5) ** 2)
    rings = [s[(dist >= a) & (dist < a + 4)].mean() for a in (6, 10, 14, 18)]
    assert all(x > y for x, y in zip(rings, rings[1:])), rings


def test_affine_plane_change_does_not_change_the_map():
    img = _test_image(6)[:, :1]
    cfg = ca.make_config("paper", K=16)
    a = ca.context_saliency(img, cfg, working_size=None).saliency
    b = ca.context_saliency(3.0 * img - 0.7, cfg, working_size=None).saliency
    assert torch.allclose(a, b, atol=1e-9)


def test_tsai_chang_k1_with_self_match_is_zero_at_grid_positions():
    img = _test_image(7)
    cfg = ca.make_config("tsai_chang", K=1, scales=(1.0,))
    work = ca.prepare_image(img, None)
    s = ca.scale_saliency(work, 1.0, 0, cfg)[0]
    grid = s[3:-3:3, 3:-3:3]
    assert grid.abs().max() < 1e-7
    assert s[4:-3:3, 4:-3:3].max() > 0.01            # off the grid the nearest candidate is another patch


def test_bad_options_raise_method_error():
    r = torch.rand(1, 3, 16, 16)
    with pytest.raises(MethodError, match="ca_variant"):
        sr_map_from_relevance(r, ca_variant="nope")
    with pytest.raises(MethodError, match="odd"):
        sr_map_from_relevance(r, patch=6)
    with pytest.raises(MethodError, match="encoding"):
        encode_relevance(r, "png")


# --------------------------------------------------------------------------------------------------------------------
# Map → image (§1.5, §6.5) and the SR map on synthetic relevance
# --------------------------------------------------------------------------------------------------------------------

def test_uint8_encoding_is_the_truncated_global_minmax_of_abs_relevance():
    g = torch.Generator().manual_seed(0)
    r = torch.randn(2, 3, 9, 11, generator=g, dtype=torch.float64)
    got = encode_relevance(r, "rgb_uint8")
    for n in range(2):
        a = np.abs(r[n].numpy())
        want = (255.0 * (a - a.min()) / (a.max() - a.min())).astype(np.uint8)
        assert np.array_equal((got[n].numpy() * 255.0).round().astype(np.uint8), want)
    gray = encode_relevance(r, "gray")
    assert gray.shape == (2, 1, 9, 11) and float(gray.amax()) == 1.0


def test_jpeg_encoding_differs_only_by_the_codec():
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 32), torch.linspace(-1, 1, 32), indexing="ij")
    blob = torch.exp(-4 * (yy ** 2 + xx ** 2))
    r = torch.stack([blob, 0.9 * blob, 1.1 * blob])[None]        # smooth, channel-correlated: compresses well
    plain = encode_relevance(r, "rgb_uint8")
    jpeg = encode_relevance(r, "rgb_jpeg")
    assert jpeg.shape == plain.shape and not torch.equal(jpeg, plain)
    assert (jpeg - plain).abs().mean() < 0.02 and (jpeg - plain).abs().max() < 0.1


def _blob_in_noise(seed: int, size: int = 64):
    """A compact 12×12 blob of strong relevance among weak relevance scattered over the whole map (|N(0, 0.2)|),
    with the three channel relevances correlated as in real LRP maps."""
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(size, size, generator=g).abs() * 0.2
    box = (slice(20, 32), slice(30, 42))
    a[box] = 0.8 + 0.2 * torch.rand(12, 12, generator=g)
    r = a[None, None] * (1 + 0.05 * torch.randn(1, 3, size, size, generator=g))
    return r, box


@pytest.mark.parametrize("seed", [0, 1])
def test_blob_energy_fraction_sr_exceeds_lrp(seed):
    r, box = _blob_in_noise(seed)
    out = sr_map_from_relevance(r, working_size=None)          # ca_variant="paper", encoding="rgb_uint8"
    sr = out["sr_map"][0]
    lrp = r.abs().sum(1)[0]
    frac_sr = float(sr[box].sum() / sr.sum())
    frac_lrp = float(lrp[box].sum() / lrp.sum())
    assert frac_sr > frac_lrp, (frac_sr, frac_lrp)
    att = out["attention_areas"][0]
    assert att[box].float().mean() > 0.5                     # the blob is attended
    peak = divmod(int(sr.argmax()), sr.shape[1])
    assert 20 <= peak[0] < 32 and 30 <= peak[1] < 42


def test_sr_map_output_sizes():
    r, _ = _blob_in_noise(0, 48)
    out = sr_map_from_relevance(r, working_size=40, output_size="input", K=16)
    assert out["sr_map"].shape == (1, 48, 48) and out["attention_areas"].shape == (1, 48, 48)
    assert out["sr_map_working"].shape == (1, 40, 40)
    out = sr_map_from_relevance(r, working_size=40, output_size=None, K=16)
    assert out["sr_map"].shape == (1, 40, 40)


# --------------------------------------------------------------------------------------------------------------------
# Step 1 through the LRP engine (§1, §6.4), the registered method, the CLI and the figure
# --------------------------------------------------------------------------------------------------------------------

lrp = pytest.importorskip("cnnlens.lrp", reason="the LRP engine (branch lrp) is not merged")
if not hasattr(lrp, "lrp_attribute"):   # pragma: no cover
    pytest.skip("cnnlens.lrp has no lrp_attribute yet (branch lrp not merged)", allow_module_level=True)

import cnnlens  # noqa: E402
from conftest import assert_untouched, snapshot  # noqa: E402

SMALL = dict(working_size=48, K=16)


class _TinyNet(torch.nn.Module):
    """conv-relu-maxpool ×2 → linear-relu-linear; ``overlap`` uses AlexNet's overlapping 3×3/2 pooling."""

    def __init__(self, overlap: bool = False, size: int = 48):
        super().__init__()
        pool = (lambda: torch.nn.MaxPool2d(3, 2)) if overlap else (lambda: torch.nn.MaxPool2d(2, 2))
        self.features = torch.nn.Sequential(torch.nn.Conv2d(3, 6, 3, padding=1), torch.nn.ReLU(), pool(),
                                            torch.nn.Conv2d(6, 8, 3, padding=1), torch.nn.ReLU(), pool())
        with torch.no_grad():
            flat = self.features(torch.zeros(1, 3, size, size)).numel()
        self.classifier = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(flat, 12),
                                              torch.nn.ReLU(), torch.nn.Linear(12, 5))

    def forward(self, x):
        return self.classifier(self.features(x))


def _logit_onehot(z):
    return z * F.one_hot(z.argmax(1), z.shape[1]).to(z.dtype)


def test_method_uses_the_sr_reference_lrp_map_and_the_argmax_logit():
    torch.manual_seed(0)
    net = _TinyNet()
    net.train()                       # explain evaluates in eval mode and restores the flag
    x = torch.randn(2, 3, 48, 48, generator=torch.Generator().manual_seed(0))
    before = snapshot(net)
    e = cnnlens.explain(net, x, "sr-map", **SMALL)
    assert_untouched(net, before)
    net.eval()
    ref = lrp.lrp_attribute(net, x, _logit_onehot, "sr-reference")
    assert torch.equal(e.target, ref.logits.argmax(1))
    assert torch.allclose(e.extras["lrp_map"], ref.input, rtol=1e-5, atol=1e-7 * float(ref.input.abs().max()))
    want = sr_map_from_relevance(ref.input, **SMALL)
    assert torch.allclose(e.raw, want["sr_map"], atol=1e-5)
    assert e.raw.shape == (2, 48, 48) and e.heatmap.shape == (2, 48, 48)
    assert float(e.heatmap.amin()) == 0.0 and float(e.heatmap.amax()) == 1.0
    att = e.extras["attention_areas"]
    assert att.dtype == torch.bool and att.shape == (2, 48, 48) and att.any()
    assert e.extras["settings"]["composite"] == "sr-reference"


def test_explicit_target_and_other_composite():
    torch.manual_seed(0)
    net = _TinyNet().eval()
    x = torch.randn(1, 3, 48, 48, generator=torch.Generator().manual_seed(1))
    e = cnnlens.explain(net, x, "sr-map", target=3, composite="epsilon-plus", **SMALL)
    ref = lrp.lrp_attribute(net, x, lambda z: z * F.one_hot(torch.tensor([3]), z.shape[1]).to(z.dtype),
                            "epsilon-plus")
    assert int(e.target[0]) == 3
    assert torch.allclose(e.extras["lrp_map"], ref.input, rtol=1e-5, atol=1e-7 * float(ref.input.abs().max()))


def test_lrp_step_matches_zennit_sr_rules():
    """§6.4: conv LRP-0 with bias ≡ zennit Epsilon with an unsigned +1e-9 callable stabiliser; linear z⁺ without bias ≡
    ZPlus(zero_params='bias') with the same stabiliser; max-pool plain gradient (non-overlapping)."""
    zc = pytest.importorskip("zennit.composites")
    zr = pytest.importorskip("zennit.rules")
    za = pytest.importorskip("zennit.attribution")
    torch.manual_seed(0)
    net = _TinyNet(size=16).double().eval()
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64)
    stab = lambda z: z + 1e-9  # noqa: E731
    comp = zc.LayerMapComposite([(torch.nn.Conv2d, zr.Epsilon(epsilon=stab)),
                                 (torch.nn.Linear, zr.ZPlus(stabilizer=stab, zero_params="bias"))])
    with za.Gradient(net, comp) as attributor:
        logits, want = attributor(x, _logit_onehot)
    e = cnnlens.explain(net, x, "sr-map", working_size=32, K=8)
    got = e.extras["lrp_map"]
    assert torch.allclose(got, want, rtol=1e-9, atol=1e-12 * float(want.abs().max()))


def test_reference_mode_overwrites_only_for_overlapping_pools():
    torch.manual_seed(0)
    x = torch.randn(1, 3, 16, 16)
    plain = _TinyNet(size=16).eval()
    a = cnnlens.explain(plain, x, "sr-map", working_size=32, K=8)
    b = cnnlens.explain(plain, x, "sr-map", mode="reference", working_size=32, K=8)
    assert torch.allclose(a.extras["lrp_map"], b.extras["lrp_map"])          # 2×2/2 pools: unaffected
    assert b.extras["settings"]["encoding"] == "rgb_jpeg"
    overlap = _TinyNet(overlap=True, size=16).eval()
    a = cnnlens.explain(overlap, x, "sr-map", working_size=32, K=8)
    b = cnnlens.explain(overlap, x, "sr-map", mode="reference", working_size=32, K=8)
    assert not torch.allclose(a.extras["lrp_map"], b.extras["lrp_map"])
    with pytest.raises(MethodError, match="maxpool"):
        cnnlens.explain(plain, x, "sr-map", mode="reference", composite="epsilon-plus")


def test_sr_map_figure_writes_png_atomically(tmp_path):
    from cnnlens.viz.sr_map import sr_map_figure
    torch.manual_seed(0)
    net = _TinyNet().eval()
    x = torch.randn(1, 3, 48, 48, generator=torch.Generator().manual_seed(2))
    e = cnnlens.explain(net, x, "sr-map", **SMALL)
    img = (x[0] - x[0].min()) / (x[0].max() - x[0].min())
    path = sr_map_figure(img, e, tmp_path / "fig" / "sr.png", title="sr-map")
    assert path.exists() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in path.parent.iterdir()) == ["sr.png"]     # no temporary file left
    with pytest.raises(ValueError, match="sr-map"):
        sr_map_figure(img, cnnlens.explain(net, x, "grad-cam", layer="features.3"), tmp_path / "bad.png")
    assert not (tmp_path / "bad.png").exists()


def test_cli_explain_sr_map(tmp_path):
    from click.testing import CliRunner
    from cnnlens.cli import main
    res = CliRunner().invoke(main, ["explain", "chelsea", "--model", "vgg11", "--weights", "random",
                                    "--method", "sr-map",
                                    "--option", "working_size=48", "--option", "K=16", "--out", str(tmp_path)],
                             catch_exceptions=False)
    assert res.exit_code == 0, res.output
    pngs = list(tmp_path.glob("*.png"))
    assert len(pngs) == 1 and (tmp_path / "explanations.json").exists()


@pytest.mark.slow
def test_full_size_vgg16_sr_map_default_settings():
    """The paper setting end to end: VGG16 (random init) at 224, sr-reference LRP, CA at 250 px, back to 224."""
    import torchvision
    torch.manual_seed(0)
    model = torchvision.models.vgg16().eval()
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    before = snapshot(model)
    e = cnnlens.explain(model, x, "sr-map")
    assert_untouched(model, before)
    assert e.raw.shape == (1, 224, 224) and e.extras["sr_map_working"].shape == (1, 250, 250)
    assert torch.isfinite(e.raw).all() and float(e.heatmap.amax()) == 1.0
    att = e.extras["attention_areas"]
    assert 0 < float(att.float().mean()) < 0.5
    # the attended areas carry more SR mass per pixel than the rest
    assert float(e.raw[att].mean()) > 2 * float(e.raw[~att].mean())
