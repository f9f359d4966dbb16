"""The :class:`Sample` every evaluation reads, the model's preprocessing and image decoding. The dataset layouts
(VOC/ILSVRC XML folders among them) are in :mod:`cnnlens.evaluation.datasets`."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, Sequence

import torch

from ..errors import InputError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")  # compared in lower case


@dataclass
class Sample:
    """One image: ``image`` (C,H,W) normalised at the model's input size; ``size`` (H0, W0) of the original, the
    resolution of ``boxes`` [(class key, x1, y1, x2, y2)] (0-based half-open); ``targets``: the class keys to explain
    (every ground-truth class present, difficult-only classes skipped).

    A class key is the model's class index, unless ``candidates`` maps it (a class map: a dataset class standing for a
    set of model classes): then the target is the model's highest-scoring class of ``candidates[key]`` and the boxes
    are those of the key. ``has_boxes`` is False for a dataset without boxes (metrics that need boxes report n/a);
    ``path`` is the source file, when there is one. A class-mapped dataset's ``class_names`` name its keys."""
    id: str
    image: torch.Tensor
    size: tuple[int, int]
    boxes: list[tuple[int, float, float, float, float]] = field(default_factory=list)
    targets: list[int] = field(default_factory=list)
    candidates: dict[int, tuple[int, ...]] = field(default_factory=dict)
    has_boxes: bool = True
    path: str | None = None

    def class_boxes(self, c: int) -> torch.Tensor:
        return torch.tensor([b[1:] for b in self.boxes if b[0] == c], dtype=torch.float64).reshape(-1, 4)

    def model_classes(self, key: int) -> tuple[int, ...]:
        """The model classes a target key stands for (itself, without a class map)."""
        return tuple(self.candidates.get(key, (key,)))


class BoxDataset(Protocol):
    name: str
    class_names: list[str]

    def __len__(self) -> int: ...
    def __getitem__(self, i: int) -> Sample: ...
    def describe(self) -> dict: ...


def model_preprocessing(model) -> tuple[tuple[int, int], tuple[float, ...], tuple[float, ...]]:
    """(input H×W, mean, std) from ``model.cnnlens_meta`` (ImageNet defaults at 224² otherwise)."""
    meta = getattr(model, "cnnlens_meta", None)
    size = tuple(getattr(meta, "input_size", (3, 224, 224)))[-2:]
    mean = tuple(float(v) for v in getattr(meta, "mean", (0.485, 0.456, 0.406)))
    std = tuple(float(v) for v in getattr(meta, "std", (0.229, 0.224, 0.225)))
    return (int(size[0]), int(size[1])), mean, std


def to_model_input(rgb: torch.Tensor, size: tuple[int, int], mean: Sequence[float], std: Sequence[float]
                   ) -> torch.Tensor:
    """(3,H0,W0) float in [0,1] → (3,H,W) resized (bilinear, antialiased) to the model input and normalised. The
    image is squashed, not cropped, so every box stays inside it."""
    x = rgb[None].float()
    if tuple(x.shape[-2:]) != tuple(size):
        x = torch.nn.functional.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
    mu = torch.as_tensor(mean, dtype=x.dtype).view(1, -1, 1, 1)
    sd = torch.as_tensor(std, dtype=x.dtype).view(1, -1, 1, 1)
    return ((x.clamp(0, 1) - mu) / sd)[0]


def read_rgb(path: Path) -> torch.Tensor:
    """(3,H,W) float32 in [0,1], turned upright by its EXIF orientation tag (as a photo viewer shows it)."""
    from PIL import Image, ImageOps, UnidentifiedImageError
    import numpy as np
    try:
        with Image.open(path) as im:
            arr = np.asarray(ImageOps.exif_transpose(im).convert("RGB"), dtype=np.uint8).copy()
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise InputError(f"cannot read image {path}: {exc}") from None
    return torch.from_numpy(arr).permute(2, 0, 1).float() / 255.0


def image_size(path: Path) -> tuple[int, int]:
    """(H, W) of an image file after its EXIF orientation, from the header only (no decoding)."""
    from PIL import Image, UnidentifiedImageError
    try:
        with Image.open(path) as im:
            w, h = im.size
            orientation = im.getexif().get(0x0112, 1)
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise InputError(f"cannot read image {path}: {exc}") from None
    return (w, h) if orientation in (5, 6, 7, 8) else (h, w)


def __getattr__(name: str):
    # VocFolder lives with the other dataset layouts in cnnlens.evaluation.datasets (imported lazily: no cycle).
    if name == "VocFolder":
        from ..evaluation.datasets.voc import VocFolder
        return VocFolder
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
