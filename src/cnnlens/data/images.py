"""Load pictures from paths, PIL images, numpy arrays or bundled sample names, as RGB and as model input."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import InputError, suggest

#: Photos shipped with scikit-image (``skimage.data``), usable offline by name.
SAMPLE_IMAGES = ("chelsea", "coffee", "astronaut", "rocket", "motorcycle_left", "camera")


def sample_image(name: str) -> np.ndarray:
    """A bundled sample photo as uint8 RGB (H,W,3)."""
    if name not in SAMPLE_IMAGES:
        raise InputError(f"unknown sample image {name!r}.{suggest(name, SAMPLE_IMAGES)} "
                         f"Samples: {', '.join(SAMPLE_IMAGES)}")
    import skimage.data
    if name == "motorcycle_left":
        arr = skimage.data.stereo_motorcycle()[0]
    else:
        arr = getattr(skimage.data, name)()
    return to_rgb_array(arr)


def to_rgb_array(arr: np.ndarray) -> np.ndarray:
    """Any image array → uint8 RGB (H,W,3): grayscale, RGBA (alpha over white), 16-bit and float [0,1] handled."""
    a = np.asarray(arr)
    if a.dtype == bool:
        a = a.astype(np.uint8) * 255
    if a.ndim == 2:
        a = a[:, :, None]
    if a.ndim != 3 or a.shape[2] not in (1, 2, 3, 4) or a.shape[0] == 0 or a.shape[1] == 0:
        raise InputError(f"an image array must be (H,W), (H,W,3) or (H,W,4), got shape {a.shape}")
    if np.issubdtype(a.dtype, np.floating):
        if not np.isfinite(a).all():
            raise InputError("image array contains NaN or Inf")
        peak = 1.0 if a.max() <= 1.0 else 255.0
        a = np.clip(a / peak * 255.0 + 0.5, 0, 255).astype(np.uint8)
    elif a.dtype == np.uint16 or (np.issubdtype(a.dtype, np.integer) and a.max() > 255):
        a = (a.astype(np.float64) / (65535.0 if a.max() > 255 else 255.0) * 255.0 + 0.5).clip(0, 255).astype(np.uint8)
    elif a.dtype != np.uint8:
        a = a.clip(0, 255).astype(np.uint8)
    if a.shape[2] in (2, 4):  # alpha over white
        alpha = a[:, :, -1:].astype(np.float32) / 255.0
        color = a[:, :, :-1].astype(np.float32)
        a = (color * alpha + 255.0 * (1 - alpha) + 0.5).astype(np.uint8)
    if a.shape[2] == 1:
        a = np.repeat(a, 3, axis=2)
    return np.ascontiguousarray(a)


def _pil_to_rgb(img) -> np.ndarray:
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I"):
        return to_rgb_array(np.asarray(img).astype(np.uint16 if mode.startswith("I;16") else np.int64))
    if mode == "P":
        img = img.convert("RGBA")
    elif mode in ("LA", "PA"):
        img = img.convert("RGBA")
    elif mode not in ("RGB", "RGBA", "L"):
        img = img.convert("RGB")
    return to_rgb_array(np.asarray(img))


def load_rgb(source: Any) -> np.ndarray:
    """A path, PIL image, numpy array or sample name → uint8 RGB (H,W,3)."""
    from PIL import Image, UnidentifiedImageError
    if isinstance(source, np.ndarray):
        return to_rgb_array(source)
    if isinstance(source, Image.Image):
        return _pil_to_rgb(source)
    if isinstance(source, (str, os.PathLike)):
        s = os.fspath(source)
        if isinstance(source, str) and s in SAMPLE_IMAGES and not os.path.exists(s):
            return sample_image(s)
        path = Path(s)
        if not path.exists():
            hint = suggest(s, SAMPLE_IMAGES) if os.sep not in s and "." not in s else ""
            raise InputError(f"image file not found: {s}{hint}")
        if path.is_dir():
            raise InputError(f"{s} is a directory, not an image file")
        try:
            with Image.open(path) as img:
                img.load()
                return _pil_to_rgb(img)
        except UnidentifiedImageError:
            raise InputError(f"{s} is not an image file PIL can read") from None
        except PermissionError:
            raise InputError(f"cannot read {s}: permission denied") from None
        except (OSError, SyntaxError, ValueError) as exc:
            raise InputError(f"cannot read image {s}: {str(exc).splitlines()[0]} (truncated or corrupt file?)") from None
    raise InputError(f"cannot load an image from {type(source).__name__}; pass a path, a PIL image, a numpy array "
                     f"or a sample name ({', '.join(SAMPLE_IMAGES)})")


def load_image(source: Any, model: nn.Module | None = None, *, size: int | tuple[int, int] | None = None,
               crop: bool = True, device: str | torch.device | None = None) -> torch.Tensor:
    """Load ``source`` and preprocess it as ``model`` expects → float tensor (1,3,H,W).

    source: a path, a PIL image, a numpy array, or a bundled sample name ("chelsea", "coffee", "astronaut", "rocket",
    "motorcycle_left", "camera"). Grayscale, RGBA, palette and 16-bit images are converted to RGB.
    """
    from ..models.preprocessing import preprocess
    x = preprocess(load_rgb(source), model, size=size, crop=crop)
    if device is None and model is not None:
        from .._state import model_device
        device = model_device(model)
    return x.to(device) if device is not None else x
