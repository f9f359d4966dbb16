"""How an ``Explanation`` (or a layer → Explanation mapping) looks in a notebook.

The HTML view embeds one PNG per map: the colourised map blended over the input (``overlay_rgb``; the colour maps of
the report and the figures: ``jet`` for unsigned maps, ``seismic`` for signed ones with white = 0), a colour bar per
convention, and, as text, the method, layer, target class (with its probability) and the map's convention. Several
layers (or any mapping label → Explanation) show as a grid: one row per image, one column per entry. Only inline
styles and data URIs: nothing to fetch, so it shows offline in JupyterLab, classic Notebook, VS Code and nbviewer.
"""
from __future__ import annotations

import base64
import html
import io
from collections.abc import Mapping
from typing import Any

import numpy as np

# An ``Explanation`` (cnnlens.api) is read by duck typing here: display imports nothing of api, so the api's lazy
# ``_repr_html_`` → display import makes no package cycle (tests/test_layering.py).
Explanation = Any

#: Overlay opacity of the colourised map over the input.
DEFAULT_ALPHA = 0.5
#: Longest side of a displayed map (larger maps are shrunk, smaller ones shown at their own size).
MAX_SIDE = 256
#: Images shown per result (the rest are counted in a note).
MAX_IMAGES = 16

UNSIGNED_NOTE = "unsigned map: min–max to [0, 1]"
SIGNED_NOTE = "signed map: diverging, white = 0, ends = ±max |map|"

_FONT = "font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;font-size:13px;line-height:1.35"


# ---------------------------------------------------------------------------------------------------- pixels

def _lut(signed: bool) -> np.ndarray:
    from ..viz.colormaps import CMAP_SIGNED, CMAP_UNSIGNED, lut
    return lut(CMAP_SIGNED if signed else CMAP_UNSIGNED)


def _fit_size(h: int, w: int, max_side: int) -> tuple[int, int]:
    if max(h, w) <= max_side:
        return h, w
    s = max_side / max(h, w)
    return max(1, round(h * s)), max(1, round(w * s))


def _resize(a: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(H,W) or (H,W,C) float array → ``size`` (bilinear, antialiased when shrinking)."""
    if a.shape[:2] == tuple(size):
        return a
    import torch
    import torch.nn.functional as F
    t = torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))
    t = t[None, None] if t.dim() == 2 else t.permute(2, 0, 1)[None]
    t = F.interpolate(t, size=size, mode="bilinear", align_corners=False, antialias=True)
    t = t[0, 0] if a.ndim == 2 else t[0].permute(1, 2, 0)
    return t.numpy()


def overlay_rgb(heatmap: Any, image: np.ndarray | None = None, *, signed: bool = False,
                alpha: float = DEFAULT_ALPHA, max_side: int = MAX_SIDE) -> np.ndarray:
    """(h,w,3) uint8: ``heatmap`` (H,W in [0,1]) through the colour map, blended over ``image`` ((H,W,3) float in
    [0,1]) as ``(1 − alpha)·image + alpha·colour``; without an image the colourised map itself. A map with a side
    over ``max_side`` is shrunk to fit, keeping its aspect ratio."""
    hm = heatmap.detach().float().cpu().numpy() if hasattr(heatmap, "detach") else np.asarray(heatmap, np.float32)
    hm = np.squeeze(hm)
    if hm.ndim != 2:
        raise ValueError(f"a heatmap must be (H,W), got shape {hm.shape}")
    size = _fit_size(hm.shape[0], hm.shape[1], max_side)
    hm = _resize(hm, size)
    idx = (np.clip(np.nan_to_num(hm.astype(np.float64)), 0.0, 1.0) * 255.0 + 0.5).astype(np.intp)
    colour = _lut(signed)[idx].astype(np.float64)
    if image is None:
        return colour.astype(np.uint8)
    img = _resize(np.asarray(image, np.float32), size).astype(np.float64)
    out = (1.0 - alpha) * np.clip(img, 0.0, 1.0) * 255.0 + alpha * colour
    return (out + 0.5).astype(np.uint8)


def colourbar_rgb(signed: bool, width: int = 256, height: int = 12) -> np.ndarray:
    """(height, width, 3) uint8: the colour map from 0 (left) to 1 (right)."""
    row = _lut(signed)[np.round(np.linspace(0.0, 255.0, width)).astype(np.intp)]
    return np.repeat(row[None], height, axis=0)


def display_images(e: Explanation, count: int | None = None) -> np.ndarray | None:
    """(n,H,W,3) float RGB in [0,1] of the explained inputs, at the maps' resolution, or None when the explanation
    does not carry its input. Inputs are un-normalised with the model's preprocessing when it was known
    (``load_model`` models), else shown min–max per image."""
    x = getattr(e, "inputs", None)
    if x is None:
        return None
    n = x.shape[0] if count is None else min(count, x.shape[0])
    x = x[:n].detach().float().cpu()
    if x.shape[1] not in (1, 3):
        return None
    norm = getattr(e, "input_norm", None)
    if norm is not None and x.shape[1] == 3:
        import torch
        mean = torch.tensor(norm[0], dtype=torch.float32)[:, None, None]
        std = torch.tensor(norm[1], dtype=torch.float32)[:, None, None]
        x = x * std + mean
    else:
        from ..ops import minmax
        x = minmax(x)
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    imgs = x.clamp(0.0, 1.0).permute(0, 2, 3, 1).numpy()
    h, w = e.heatmap.shape[-2:]
    if imgs.shape[1:3] != (h, w):
        imgs = np.stack([_resize(im, (h, w)) for im in imgs])
    return imgs


def _png(rgb: np.ndarray) -> bytes:
    from PIL import Image
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb)).save(buf, format="PNG")
    return buf.getvalue()


def _data_uri(rgb: np.ndarray) -> str:
    return "data:image/png;base64," + base64.b64encode(_png(rgb)).decode("ascii")


# ---------------------------------------------------------------------------------------------------- labels

def layer_label(layer: Any, sep: str = ", ") -> str:
    """A result's layer as text: the module name, "input" for input-level methods, or the layer set (up to three
    names joined by ``sep``)."""
    if layer is None:
        return "input"
    if isinstance(layer, (list, tuple)):
        if len(layer) <= 3:
            return sep.join(str(v) for v in layer)
        return f"{len(layer)} layers ({layer[0]} … {layer[-1]})"
    return str(layer)


def convention(e: Explanation) -> str:
    return SIGNED_NOTE if e.signed else UNSIGNED_NOTE


def target_label(e: Explanation, i: int) -> str:
    """``name (p = 0.62)``: the explained class of sample ``i`` and its softmax probability when known."""
    name = e.target_names[i]
    probs = e.probabilities
    return name if probs is None else f"{name} (p = {float(probs[i]):.2f})"


def _entries(result: Any) -> list[tuple[str | None, Explanation]]:
    if isinstance(result, Mapping):
        items = [(str(k), v) for k, v in result.items()]
        if not items:
            raise ValueError("nothing to display: the result is empty")
        return items
    return [(None, result)]


# ---------------------------------------------------------------------------------------------------- HTML

def _esc(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _colourbar_html(signed: bool) -> str:
    left, mid, right = ("−max", "0", "+max") if signed else ("0 (min)", "0.5", "1 (max)")
    uri = _data_uri(colourbar_rgb(signed))
    note = SIGNED_NOTE if signed else UNSIGNED_NOTE
    return (f'<div class="cnnlens-colourbar" data-signed="{int(signed)}" style="margin:4px 0 2px 0;width:256px">'
            f'<img src="{uri}" width="256" height="12" alt="colour bar: {_esc(note)}" '
            f'style="display:block;width:256px;height:12px;image-rendering:pixelated">'
            f'<div style="display:flex;justify-content:space-between;font-size:11px;color:#555">'
            f'<span>{left}</span><span>{mid}</span><span>{right}</span></div>'
            f'<div style="font-size:11px;color:#555">{_esc(note)}</div></div>')


def _img_html(rgb: np.ndarray, alt: str, cell: str, width: int | None = None) -> str:
    h, w = rgb.shape[:2]
    shown_w = width or w
    shown_h = round(h * shown_w / w)
    return (f'<img src="{_data_uri(rgb)}" data-cnnlens="{cell}" alt="{_esc(alt)}" width="{shown_w}" '
            f'height="{shown_h}" style="display:block;width:{shown_w}px;height:{shown_h}px;max-width:none">')


def explanation_html(result: Any, *, alpha: float = DEFAULT_ALPHA, max_images: int | None = None) -> str:
    """The HTML view of an ``Explanation`` (one card per image) or of a mapping label → Explanation (a grid: one
    row per image, one column per entry, the input first when it is known)."""
    entries = _entries(result)
    n = min(len(e) for _, e in entries)
    shown = min(n, MAX_IMAGES if max_images is None else max_images)
    first = entries[0][1]
    images = display_images(first, shown)
    signs = sorted({bool(e.signed) for _, e in entries})
    methods = list(dict.fromkeys(e.method for _, e in entries))
    parts = [f'<div class="cnnlens-display" style="{_FONT};color:#222;max-width:100%;overflow-x:auto">']
    if len(entries) == 1:
        e = first
        parts.append(f'<div class="cnnlens-title" style="margin-bottom:4px"><b>{_esc(e.method)}</b> · layer '
                     f'<code>{_esc(layer_label(e.layer))}</code> · {_esc(convention(e))} · '
                     f'{n} image{"s" if n != 1 else ""}</div>')
        parts.append('<div style="display:flex;flex-wrap:wrap;gap:8px;align-items:flex-start">')
        for i in range(shown):
            rgb = overlay_rgb(e.heatmap[i], None if images is None else images[i], signed=e.signed, alpha=alpha)
            label = target_label(e, i)
            parts.append('<figure style="margin:0">'
                         + _img_html(rgb, f"{e.method} · {layer_label(e.layer)} · {label}", f"overlay {i} 0")
                         + f'<figcaption class="cnnlens-target" style="font-size:12px;max-width:{rgb.shape[1]}px">'
                         f'{"#" + str(i) + " " if n > 1 else ""}target: {_esc(label)}</figcaption></figure>')
        parts.append("</div>")
    else:
        what = "entries" if len(methods) > 1 else "layers"
        head = ", ".join(_esc(m) for m in methods)
        parts.append(f'<div class="cnnlens-title" style="margin-bottom:4px"><b>{head}</b> · {len(entries)} {what} '
                     f'· {n} image{"s" if n != 1 else ""}</div>')
        cell_w = 160 if len(entries) + (images is not None) > 3 else 200
        th = 'style="padding:2px 4px;text-align:left;font-weight:600;vertical-align:bottom"'
        parts.append('<table class="cnnlens-grid" style="border-collapse:collapse;margin:0"><thead><tr>'
                     f'<th {th}></th>' + ("" if images is None else f"<th {th}><code>input</code></th>"))
        for label, e in entries:
            sub = []
            if label != layer_label(e.layer):
                sub.append(f"layer {layer_label(e.layer)}")
            if len(methods) > 1 and label != e.method:
                sub.append(e.method)
            extra = f'<br><span style="font-weight:400;color:#555">{_esc(" · ".join(sub))}</span>' if sub else ""
            parts.append(f'<th class="cnnlens-column" {th}><code>{_esc(label)}</code>{extra}</th>')
        parts.append("</tr></thead><tbody>")
        for i in range(shown):
            same_target = len({int(e.target[i]) for _, e in entries}) == 1
            row_label = (f"#{i}" + (f"<br>target: {_esc(target_label(first, i))}" if same_target else ""))
            parts.append(f'<tr><td class="cnnlens-target" style="padding:2px 4px;vertical-align:middle;'
                         f'font-size:12px;max-width:140px">{row_label}</td>')
            if images is not None:
                img = (np.clip(images[i], 0, 1) * 255 + 0.5).astype(np.uint8)
                img = _resize(img.astype(np.float32), _fit_size(*img.shape[:2], MAX_SIDE)).astype(np.uint8)
                parts.append('<td style="padding:2px">' + _img_html(img, f"input #{i}", f"input {i}", cell_w)
                             + "</td>")
            for j, (label, e) in enumerate(entries):
                rgb = overlay_rgb(e.heatmap[i], None if images is None else images[i], signed=e.signed,
                                  alpha=alpha)
                tl = target_label(e, i)
                cap = "" if same_target else f'<div class="cnnlens-target" style="font-size:11px">{_esc(tl)}</div>'
                parts.append('<td style="padding:2px;vertical-align:top">'
                             + _img_html(rgb, f"{e.method} · {layer_label(e.layer)} · {tl}", f"overlay {i} {j}",
                                         cell_w) + cap + "</td>")
            parts.append("</tr>")
        parts.append("</tbody></table>")
    if shown < n:
        more = n - shown
        parts.append(f'<div style="font-size:12px;color:#555">… {more} more image{"s" if more != 1 else ""} '
                     f"not shown (<code>cnnlens.display.explanation.MAX_IMAGES</code> sets how many)</div>")
    for s in signs:
        parts.append(_colourbar_html(s))
    parts.append("</div>")
    return "".join(parts)


# ---------------------------------------------------------------------------------------------------- PNG

def explanation_figure(result: Any, *, alpha: float = DEFAULT_ALPHA, max_images: int = 8):
    """A matplotlib Figure (not registered with pyplot) of the same view: overlays, titles, colour bars; for
    ``_repr_png_`` and for saving (``fig.savefig("maps.png")``)."""
    import matplotlib
    from matplotlib.figure import Figure
    from ..viz.colormaps import CMAP_SIGNED, CMAP_UNSIGNED
    entries = _entries(result)
    n = min(len(e) for _, e in entries)
    shown = min(n, max_images)
    first = entries[0][1]
    images = display_images(first, shown)
    if len(entries) == 1:
        rows, cols = 1, shown
        cells = [[(i, 0) for i in range(shown)]]
    else:
        rows, cols = shown, len(entries)
        cells = [[(i, j) for j in range(cols)] for i in range(rows)]
    fig = Figure(figsize=(2.4 * cols + 0.9, 2.5 * rows + 0.5))
    axes = fig.subplots(rows, cols, squeeze=False)
    for r in range(rows):
        for c in range(cols):
            i, j = cells[r][c]
            label, e = entries[j]
            ax = axes[r][c]
            ax.imshow(overlay_rgb(e.heatmap[i], None if images is None else images[i], signed=e.signed,
                                  alpha=alpha))
            ax.set_xticks([])
            ax.set_yticks([])
            title = target_label(e, i)
            if label is not None and r == 0:
                title = f"{label}\n{title}"
            ax.set_title(title, fontsize=8)
    if len(entries) == 1:
        head = f"{first.method} · layer {layer_label(first.layer)} · {convention(first)}"
    else:
        methods = list(dict.fromkeys(e.method for _, e in entries))
        head = f"{', '.join(methods)} · {len(entries)} {'entries' if len(methods) > 1 else 'layers'}"
        head += " · " + "; ".join(sorted({convention(e) for _, e in entries}))
    fig.suptitle(head, fontsize=9)
    for k, s in enumerate(sorted({bool(e.signed) for _, e in entries})):
        sm = matplotlib.cm.ScalarMappable(norm=matplotlib.colors.Normalize(0.0, 1.0),
                                          cmap=CMAP_SIGNED if s else CMAP_UNSIGNED)
        bar = fig.colorbar(sm, ax=axes.ravel().tolist(), fraction=0.025, pad=0.02,
                           location="right" if k == 0 else "left")        # two conventions: one bar each side
        if s:
            bar.set_ticks([0.0, 0.5, 1.0], labels=["−max", "0", "+max"])
        bar.ax.tick_params(labelsize=7)
    return fig


def explanation_png(result: Any, *, alpha: float = DEFAULT_ALPHA, dpi: int = 80) -> bytes:
    """PNG bytes of :func:`explanation_figure` (the ``_repr_png_`` fallback)."""
    fig = explanation_figure(result, alpha=alpha)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    return buf.getvalue()
