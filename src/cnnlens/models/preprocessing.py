"""Preprocessing as a model expects it (resize, centre crop, normalise) and its inverse for display."""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from .zoo import model_info


def preprocess(rgb: np.ndarray, model: nn.Module | None = None, *, size: int | tuple[int, int] | None = None,
               crop: bool = True, mean=None, std=None) -> torch.Tensor:
    """uint8 RGB array (H,W,3) → normalised float tensor (1,3,H',W').

    crop=True: resize the shorter side to size/crop_pct and centre-crop ``size`` (timm/torchvision evaluation);
    crop=False: resize the whole image to ``size`` (the Relevance-CAM demo's preprocessing).
    """
    from PIL import Image
    info = model_info(model) if model is not None else None
    mean = mean if mean is not None else (info.mean if info else (0.485, 0.456, 0.406))
    std = std if std is not None else (info.std if info else (0.229, 0.224, 0.225))
    if size is None:
        size = tuple(info.input_size[1:]) if info else (224, 224)
    elif isinstance(size, int):
        size = (size, size)
    th, tw = size
    img = Image.fromarray(rgb)
    resample = Image.BICUBIC if (info and info.interpolation == "bicubic") else Image.BILINEAR
    if crop:
        # exactly torchvision's Resize(short) + CenterCrop, as torchvision's weights transforms and timm's eval
        # transform run them: short = floor(size / crop_pct), the long side int(short · long / short side), crop
        # offsets rounded
        pct = info.crop_pct if info else 0.875
        short = math.floor(max(th, tw) / pct + 1e-6)
        w, h = img.size
        new = (short, int(short * h / w)) if w <= h else (int(short * w / h), short)
        new = (max(tw, new[0]), max(th, new[1]))
        img = img.resize(new, resample)
        left, top = int(round((new[0] - tw) / 2.0)), int(round((new[1] - th) / 2.0))
        img = img.crop((left, top, left + tw, top + th))
    else:
        img = img.resize((tw, th), resample)
    arr = torch.from_numpy(np.asarray(img, dtype=np.float32).copy()).permute(2, 0, 1) / 255.0
    m = torch.tensor(mean, dtype=torch.float32)[:, None, None]
    s = torch.tensor(std, dtype=torch.float32)[:, None, None]
    return ((arr - m) / s).unsqueeze(0)


def unnormalize(x: torch.Tensor, model: nn.Module | None = None, mean=None, std=None) -> np.ndarray:
    """Normalised (N,3,H,W) tensor → float RGB images (N,H,W,3) in [0,1] for display."""
    info = model_info(model) if model is not None else None
    mean = mean if mean is not None else (info.mean if info else (0.485, 0.456, 0.406))
    std = std if std is not None else (info.std if info else (0.229, 0.224, 0.225))
    m = torch.tensor(mean, dtype=torch.float32)[:, None, None]
    s = torch.tensor(std, dtype=torch.float32)[:, None, None]
    img = x.detach().float().cpu() * s + m
    return img.clamp(0, 1).permute(0, 2, 3, 1).numpy()
