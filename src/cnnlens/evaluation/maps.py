"""The files the report shows: the model input of the first images (``images/<safe id>.jpg``) and their maps as 8-bit
grayscale PNGs (``maps/…png``), at display resolution (long side ≤ 224 px)."""
from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

import torch

from ..data.boxes import Sample

DISPLAY = 224            # long side of the saved images and maps (px)


def safe_id(sample_id: str) -> str:
    """A file-name-safe, collision-free form of a sample id."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", str(sample_id))[:100].lstrip(".") or "image"
    if safe != sample_id:
        safe += "-" + hashlib.sha1(str(sample_id).encode("utf-8")).hexdigest()[:8]
    return safe


def display_size(size: tuple[int, int]) -> tuple[int, int]:
    h0, w0 = int(size[0]), int(size[1])
    scale = min(1.0, DISPLAY / max(h0, w0))
    return max(1, round(h0 * scale)), max(1, round(w0 * scale))


def resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    x = x[None].float()
    if tuple(x.shape[-2:]) != tuple(size):
        x = torch.nn.functional.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
    return x[0]


def save_png_gray(path: Path, a: torch.Tensor) -> None:
    from PIL import Image
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}.png")
    Image.fromarray((a.clamp(0, 1) * 255).round().to(torch.uint8).numpy(), mode="L").save(tmp)
    os.replace(tmp, path)


def save_image(out: Path, sample: Sample, image: torch.Tensor, mean, std) -> str:
    """``images/<safe-id>.jpg``: the model input as RGB at display resolution (original aspect, long side ≤ 224)."""
    from PIL import Image
    rel = f"images/{safe_id(sample.id)}.jpg"
    path = out / rel
    if not path.is_file():
        mu = torch.as_tensor(mean, dtype=torch.float32).view(-1, 1, 1)
        sd = torch.as_tensor(std, dtype=torch.float32).view(-1, 1, 1)
        rgb = resize((image.float().cpu() * sd + mu).clamp(0, 1), display_size(sample.size))
        arr = (rgb.permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}.jpg")
        Image.fromarray(arr, mode="RGB").save(tmp, quality=92, subsampling=0)
        os.replace(tmp, path)
    return rel
