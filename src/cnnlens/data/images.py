"""Load pictures from paths, PIL images, numpy arrays or bundled sample names, as RGB and as model input.

Files larger than ``MAX_IMAGE_PIXELS`` (decompression bombs) or corrupt ones raise one :class:`InputError`."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

# The torch-free part (paths, PIL, numpy → RGB arrays) lives in cnnlens.image_files; re-exported here.
from ..errors import InputError
from ..image_files import (MAX_IMAGE_PIXELS, SAMPLE_IMAGES, image_file_size, load_rgb, read_image_file,  # noqa: F401
                           sample_image, to_rgb_array)

#: Longest side ÷ shortest side that resize-and-crop accepts.
MAX_ASPECT_RATIO = 64

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from torch import nn


def load_image(source: Any, model: nn.Module | None = None, *, size: int | tuple[int, int] | None = None,
               crop: bool = True, device: str | torch.device | None = None) -> torch.Tensor:
    """Load ``source`` and preprocess it as ``model`` expects → float tensor (1,3,H,W).

    source: a path, a PIL image, a numpy array, or a bundled sample name ("chelsea", "coffee", "astronaut", "rocket",
    "motorcycle_left", "camera"). Grayscale, RGBA, palette and 16-bit images are converted to RGB.
    """
    from ..models.preprocessing import preprocess
    rgb = load_rgb(source)
    h, w = rgb.shape[:2]
    if crop and max(h, w) > MAX_ASPECT_RATIO * min(h, w):
        # resize-and-crop scales the short side to the input size: the long side would explode
        raise InputError(f"the picture is {w}×{h}, too elongated to resize and centre-crop (aspect ratio over "
                         f"{MAX_ASPECT_RATIO}:1); load it with crop=False (CLI: --no-crop) to resize it whole")
    x = preprocess(rgb, model, size=size, crop=crop)
    if device is None and model is not None:
        from .._state import model_device
        device = model_device(model)
    return x.to(device) if device is not None else x


def read_rgb(path: str | Path, *, data: bytes | None = None) -> torch.Tensor:
    """(3,H,W) float32 in [0,1] of an image file (or of its encoded bytes ``data``, named ``path``), decoded by the one
    reader of every command (:func:`cnnlens.image_files.read_image_file`: upright by its EXIF orientation, bombs and
    corrupt files refused in one :class:`InputError` line)."""
    import torch
    arr = read_image_file(path, data=data)
    if not arr.flags.writeable:
        arr = arr.copy()
    return torch.from_numpy(arr).permute(2, 0, 1).float() / 255.0


def image_size(path: str | Path) -> tuple[int, int]:
    """(H, W) of an image file after its EXIF orientation, from the header only
    (:func:`cnnlens.image_files.image_file_size`)."""
    return image_file_size(path)
