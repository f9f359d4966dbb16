"""The files the report shows: the model input of the first images (``images/<safe id>.jpg``) and their maps as 8-bit
grayscale PNGs (``maps/…png``), at display resolution (long side ≤ 224 px)."""
from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

import torch

from ..data.sample import Sample

DISPLAY = 224            # long side of the saved images and maps (px)


_PLAIN_ID = re.compile(r"[a-z0-9_-][a-z0-9._-]{0,99}")


def safe_id(sample_id: str) -> str:
    """A file name for a sample id (a path relative to the dataset root, e.g. ``a/x.jpg``), one per id, also on
    case-insensitive file systems: the id itself when it is only lower-case letters, digits, ``.``, ``_`` and ``-``
    (at most 100, no leading dot); otherwise the id with other characters replaced by ``_`` (cut at 100), then ``-``
    and 10 hex digits of the id's SHA-1. So ``a/x.jpg`` and ``b/x.jpg``, or ``Photo.jpg`` and ``photo.jpg``, get two
    files."""
    sid = str(sample_id)
    if _PLAIN_ID.fullmatch(sid):
        return sid
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", sid)[:100].lstrip(".") or "image"
    return f"{safe}-{hashlib.sha1(sid.encode('utf-8')).hexdigest()[:10]}"


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
