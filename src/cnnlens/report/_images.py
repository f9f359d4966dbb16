"""Image helpers of the HTML report: 8-bit map files, colour maps, and compressed data URIs."""
from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any

import numpy as np

#: Colour maps, as in the PNG figures (viz.figures.overlay): diverging for signed maps (0.5 = zero relevance).
from ..viz.colormaps import CMAP_SIGNED, CMAP_UNSIGNED, lut

_lut = lut                 # the look-up tables (cached in viz.colormaps)
#: Longest side of a map or image in the report (display resolution).
MAX_SIDE = 448


def to_hwc_uint8(image: Any) -> np.ndarray:
    """(3,H,W) or (H,W,3) float in [0,1] (tensor or array), or uint8 → (H,W,3) uint8."""
    a = image.detach().float().cpu().numpy() if hasattr(image, "detach") else np.asarray(image)
    if a.ndim == 4 and a.shape[0] == 1:
        a = a[0]
    if a.ndim == 3 and a.shape[0] in (1, 3) and a.shape[-1] not in (1, 3):
        a = np.moveaxis(a, 0, -1)
    if a.ndim == 2:
        a = a[..., None]
    if a.shape[-1] == 1:
        a = np.repeat(a, 3, axis=-1)
    if a.dtype != np.uint8:
        a = (np.clip(np.nan_to_num(a.astype(np.float64)), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    return np.ascontiguousarray(a)


def map_to_uint8(heatmap: Any) -> np.ndarray:
    """(H,W) map in [0,1] (tensor or array) → (H,W) uint8, NaN → 0."""
    a = heatmap.detach().float().cpu().numpy() if hasattr(heatmap, "detach") else np.asarray(heatmap, np.float64)
    a = np.squeeze(a)
    if a.ndim != 2:
        raise ValueError(f"a heatmap must be (H,W), got shape {a.shape}")
    return (np.clip(np.nan_to_num(a.astype(np.float64)), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def _fit(img, max_side: int):
    from PIL import Image
    w, h = img.size
    if max(w, h) <= max_side:
        return img
    s = max_side / max(w, h)
    return img.resize((max(1, round(w * s)), max(1, round(h * s))), Image.BILINEAR)


def save_image_file(rgb: np.ndarray, path: Path, max_side: int = MAX_SIDE) -> None:
    """An input image at display resolution, as JPEG."""
    from PIL import Image
    path.parent.mkdir(parents=True, exist_ok=True)
    _fit(Image.fromarray(rgb), max_side).save(path, format="JPEG", quality=90)


def save_map_file(gray: np.ndarray, path: Path, max_side: int = MAX_SIDE) -> None:
    """A heatmap as an 8-bit grayscale PNG (value/255 = map value in [0,1])."""
    from PIL import Image
    path.parent.mkdir(parents=True, exist_ok=True)
    _fit(Image.fromarray(gray, mode="L"), max_side).save(path, format="PNG", optimize=True)


def load_map_file(path: Path) -> np.ndarray:
    """An 8-bit grayscale map file → (H,W) uint8."""
    from PIL import Image
    with Image.open(path) as im:
        return np.asarray(im.convert("L"))


def colourise(gray: np.ndarray, signed: bool) -> np.ndarray:
    """(H,W) uint8 map → (H,W,3) uint8 in the report's colour map."""
    return _lut(CMAP_SIGNED if signed else CMAP_UNSIGNED)[gray]


def colour_stops(signed: bool, n: int = 11) -> list[str]:
    """CSS colours along the colour map (for the colour bar's linear-gradient)."""
    lut = _lut(CMAP_SIGNED if signed else CMAP_UNSIGNED)
    return ["#%02x%02x%02x" % tuple(int(c) for c in lut[round(i * 255 / (n - 1))]) for i in range(n)]


def _webp_ok() -> bool:
    from PIL import features
    return bool(features.check("webp"))


def data_uri_map(gray: np.ndarray, max_side: int = MAX_SIDE) -> str:
    """A map as a lossless 8-bit grayscale data URI (WebP lossless when Pillow has it, else PNG). The page colours it
    with an SVG colour-map filter (:func:`svg_colour_filters`), so every shown colour is exactly the stored value's."""
    from PIL import Image
    img = _fit(Image.fromarray(gray, mode="L"), max_side)
    buf = io.BytesIO()
    if _webp_ok():
        img.save(buf, format="WEBP", lossless=True, quality=50, method=2)
        mime = "image/webp"
    else:
        img.save(buf, format="PNG", optimize=True)
        mime = "image/png"
    return f"data:{mime};base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def data_uri_map_file(path: Path, max_side: int = MAX_SIDE) -> str:
    """A stored map file as a data URI: an 8-bit grayscale PNG at display size goes in byte for byte (fast, exact),
    anything else is decoded and re-encoded by :func:`data_uri_map`."""
    from PIL import Image
    with Image.open(path) as im:
        if im.format == "PNG" and im.mode == "L" and max(im.size) <= max_side:
            return data_uri_file(path)
    return data_uri_map(load_map_file(path), max_side)


def svg_colour_filters() -> str:
    """Inline SVG filters ``#cmap-unsigned`` and ``#cmap-signed``: a 256-entry table per channel maps a gray level k
    to the colour map's entry k (in sRGB, as the colour map is defined)."""
    parts = ['<svg width="0" height="0" style="position:absolute" aria-hidden="true"><defs>']
    for kind, signed in (("unsigned", False), ("signed", True)):
        lut = _lut(CMAP_SIGNED if signed else CMAP_UNSIGNED)
        parts.append(f'<filter id="cmap-{kind}" color-interpolation-filters="sRGB"><feComponentTransfer>')
        for c, name in enumerate("RGB"):
            values = " ".join(f"{v / 255:.4f}".rstrip("0").rstrip(".") or "0" for v in lut[:, c].tolist())
            parts.append(f'<feFunc{name} type="table" tableValues="{values}"/>')
        parts.append("</feComponentTransfer></filter>")
    parts.append("</defs></svg>")
    return "".join(parts)


def data_uri_rgb(rgb: np.ndarray, max_side: int = MAX_SIDE, quality: int = 88) -> str:
    """An RGB image as a JPEG data URI."""
    from PIL import Image
    img = _fit(Image.fromarray(rgb), max_side)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def data_uri_file(path: Path) -> str:
    """A file (PNG/JPEG/WebP) as a data URI, bytes unchanged."""
    mime = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".webp": "image/webp",
            ".svg": "image/svg+xml"}.get(path.suffix.lower(), "application/octet-stream")
    return f"data:{mime};base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def data_uri_image_file(path: Path, max_side: int = MAX_SIDE) -> str:
    """An input image file → JPEG data URI at display resolution."""
    from PIL import Image
    with Image.open(path) as im:
        return data_uri_rgb(np.asarray(im.convert("RGB")), max_side)
