"""The SR map figure (sr_map.md §3): input | LRP map | SR map | attention areas, side by side, written atomically."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from .figures import _as_np, _plt, save_figure


def _image_hwc(image: Any, index: int) -> np.ndarray:
    """Accept (H,W,3) / (N,H,W,3) arrays in [0,1] (``unnormalize`` output) or (3,H,W) / (N,3,H,W) tensors."""
    img = _as_np(image)
    if img.ndim == 4:
        img = img[index]
    if img.ndim == 3 and img.shape[0] in (1, 3) and img.shape[-1] not in (1, 3):
        img = np.moveaxis(img, 0, -1)
    if img.ndim == 3 and img.shape[-1] == 1:
        img = img[..., 0]
    return np.clip(img, 0.0, 1.0)


def sr_map_figure(image: Any, explanation: Any, path: str | os.PathLike, *, index: int = 0,
                  title: str | None = None, alpha: float = 0.5, dpi: int = 120) -> Path:
    """Write the SR-map figure of sample ``index`` of an ``sr-map`` :class:`cnnlens.Explanation` as a PNG.

    Panels: the input; the LRP map (Σ_c R at the input, signed, blue < 0 < red, symmetric scale); the SR map over the
    input (jet, [0,1]); the attention areas (the attended pixels of the foci step, outlined, the rest dimmed).
    ``image``: the displayed input, (H,W,3) in [0,1] (e.g. ``unnormalize(x, model)[0]``) or a (3,H,W) tensor.
    The PNG is written to a temporary file in the same folder, then moved into place (``os.replace``).
    """
    extras = getattr(explanation, "extras", None) or {}
    if "lrp_map" not in extras or "attention_areas" not in extras:
        raise ValueError("sr_map_figure needs an explanation of method 'sr-map' (extras 'lrp_map', 'attention_areas')")
    plt = _plt()
    img = _image_hwc(image, index)
    lrp = _as_np(extras["lrp_map"][index]).sum(axis=0)
    peak = float(np.abs(lrp).max())
    sr = _as_np(explanation.heatmap[index])
    att = _as_np(extras["attention_areas"][index]).astype(bool)
    if att.shape != sr.shape:   # the mask is at raw's size; show it at the display size
        import torch
        import torch.nn.functional as F
        att = F.interpolate(torch.from_numpy(att.astype(np.float32))[None, None], size=sr.shape,
                            mode="nearest")[0, 0].numpy() > 0.5

    fig, axes = plt.subplots(1, 4, figsize=(12.4, 3.5))
    axes[0].imshow(img)
    axes[0].set_title("input", fontsize=9)
    im = axes[1].imshow(lrp, cmap="seismic", vmin=-peak if peak > 0 else -1, vmax=peak if peak > 0 else 1)
    fig.colorbar(im, ax=axes[1], fraction=0.046, pad=0.02)
    axes[1].set_title("LRP map (Σ_c R)", fontsize=9)
    axes[2].imshow(img)
    im = axes[2].imshow(sr, cmap="jet", alpha=alpha, vmin=0.0, vmax=1.0)
    fig.colorbar(im, ax=axes[2], fraction=0.046, pad=0.02)
    axes[2].set_title("SR map", fontsize=9)
    dim = img * np.where(att[..., None] if img.ndim == 3 else att, 1.0, 0.3)
    axes[3].imshow(dim, cmap=None if img.ndim == 3 else "gray", vmin=0, vmax=1)
    if att.any() and not att.all():
        axes[3].contour(att.astype(float), levels=[0.5], colors="yellow", linewidths=1.0)
    axes[3].set_title(f"attention areas ({100.0 * att.mean():.0f}% of pixels)", fontsize=9)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title, fontsize=10)
    return save_figure(fig, path, dpi=dpi)
