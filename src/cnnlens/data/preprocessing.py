"""The model's preprocessing for evaluation: its input size, mean and std, and an RGB image → model input (squashed,
not cropped, so every box stays inside the picture)."""
from __future__ import annotations

from typing import Sequence

import torch


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
