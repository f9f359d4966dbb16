"""Figures: heatmap overlays, methods × images and layers × methods grids, written atomically as PNG."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np


def _plt():
    import matplotlib
    if matplotlib.get_backend().lower() not in ("agg", "module://matplotlib_inline.backend_inline"):
        try:
            matplotlib.use("Agg", force=True)
        except Exception:  # pragma: no cover
            pass
    import matplotlib.pyplot as plt
    return plt


def _atomic_target(path: Path, suffix: str) -> tuple[int, str]:
    """A new temporary file next to ``path`` (exclusive create), opened for writing: (fd, name). Created with mode
    0o666 minus the process umask, as ``open()`` would create ``path`` itself (0644 under the usual umask 022), so
    the renamed result is as readable as any other output file — not 0600 as ``tempfile.mkstemp`` makes it."""
    import secrets
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}{suffix}"
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666), str(tmp)
        except FileExistsError:  # pragma: no cover - 48 random bits
            continue


def _write_atomic(path: str | os.PathLike, suffix: str, write) -> Path:
    """Create ``path`` atomically: ``write(binary file)`` fills a temporary file in the same folder, then
    ``os.replace``; on any failure the temporary file is removed and ``path`` is left as it was."""
    path = Path(path)
    fd, tmp = _atomic_target(path, suffix)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def save_figure(fig, path: str | os.PathLike, dpi: int = 120) -> Path:
    """Write ``fig`` as PNG atomically (temporary file in the same folder + ``os.replace``), mode as ``open()``."""
    try:
        return _write_atomic(path, ".png.part",
                             lambda fh: fig.savefig(fh, format="png", dpi=dpi, bbox_inches="tight"))
    finally:
        _plt().close(fig)


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write a UTF-8 text file atomically (temporary file + ``os.replace``), with the mode ``open()`` would give it
    (0o666 minus the umask: 0644 under umask 022)."""
    return _write_atomic(path, ".part", lambda fh: fh.write(text.encode("utf-8")))


def _as_np(a) -> np.ndarray:
    try:
        import torch
        if isinstance(a, torch.Tensor):
            return a.detach().float().cpu().numpy()
    except ImportError:  # pragma: no cover
        pass
    return np.asarray(a, dtype=np.float32)


def overlay(ax, image: np.ndarray, heatmap, *, signed: bool = False, alpha: float = 0.5, cmap: str | None = None,
            colorbar: bool = False, title: str | None = None):
    """Draw ``heatmap`` (H,W in [0,1]; signed maps: 0.5 = zero) over ``image`` (H,W,3 in [0,1]) on ``ax``."""
    hm = _as_np(heatmap)
    cmap = cmap or ("seismic" if signed else "jet")
    if image is not None:
        ax.imshow(image)
    im = ax.imshow(hm, cmap=cmap, alpha=alpha if image is not None else 1.0, vmin=0.0, vmax=1.0)
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=9)
    if colorbar:
        ax.figure.colorbar(im, ax=ax, fraction=0.046, pad=0.02)
    return im


def overlay_figure(image: np.ndarray, heatmap, path: str | os.PathLike, *, signed: bool = False,
                   title: str | None = None, colorbar: bool = True, alpha: float = 0.5) -> Path:
    """One image with its heatmap overlaid (left: the photo, right: the overlay), saved as PNG."""
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(7.0, 3.6))
    axes[0].imshow(image)
    axes[0].set_xticks([])
    axes[0].set_yticks([])
    axes[0].set_title("input", fontsize=9)
    overlay(axes[1], image, heatmap, signed=signed, alpha=alpha, colorbar=colorbar, title=title)
    return save_figure(fig, path)


def layer_label(name: str, stride: int | None = None) -> str:
    """A layers × methods row label: the layer's name and, when known, its stride (input size / map size)."""
    return name if stride is None else f"{name}\nstride {stride}"


def grid_figure(images: Sequence[np.ndarray], rows: Sequence[str], cols: Sequence[str], cells, path,
                *, signed=None, title: str | None = None, show_input: bool = True, alpha: float = 0.5) -> Path:
    """A grid with one row per entry of ``rows`` and one column per ``cols``; ``cells[r][c]`` is a heatmap (H,W) or
    None; ``images[r]`` is the photo under row r (methods × images: rows = images; layers × methods: rows = layers)."""
    plt = _plt()
    nr, nc = len(rows), len(cols) + (1 if show_input else 0)
    h, w = np.asarray(images[0]).shape[:2]
    aspect = w / max(h, 1)
    fig, axes = plt.subplots(nr, nc, figsize=(2.2 * nc * aspect, 2.2 * nr + 0.4), squeeze=False)
    for r in range(nr):
        img = images[r] if len(images) > 1 else images[0]
        if show_input:
            axes[r][0].imshow(img)
            axes[r][0].set_xticks([])
            axes[r][0].set_yticks([])
            axes[r][0].set_ylabel(rows[r], fontsize=9)
        for c in range(len(cols)):
            ax = axes[r][c + (1 if show_input else 0)]
            cell = cells[r][c]
            sg = bool(signed[r][c]) if signed is not None else False
            if cell is None:
                ax.axis("off")
                continue
            overlay(ax, img, cell, signed=sg, alpha=alpha, title=cols[c] if r == 0 else None)
            if not show_input and c == 0:
                ax.set_ylabel(rows[r], fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    return save_figure(fig, path)
