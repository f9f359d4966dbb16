"""Two-photo collages with known boxes (a two-object test of class discrimination on real photos).

``side_by_side``: two photos side by side at a fixed size (figures). :class:`Collages`: collages of scikit-image's bundled
photos with known boxes, for a real ImageNet model.

Each photo's class is the model's own top-1 prediction on the photo alone (the photos have no ImageNet label); a collage
places two different photos side by side (or one above the other) on a grey canvas of the model's input size, each
scaled to 75–100 % of its half and placed at random inside it. Collage ``i`` is a pure function of (seed, i)."""
from __future__ import annotations

import itertools
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .._state import model_device, model_dtype, preserved
from ..errors import InputError
from .preprocessing import model_preprocessing, to_model_input
from .sample import Sample
from .images import SAMPLE_IMAGES, load_rgb, sample_image


def side_by_side(left, right, height: int = 224) -> tuple[np.ndarray, list[tuple[int, int, int, int]]]:
    """Put two photos (paths, arrays or sample names) side by side, each resized to ``height``×``height``.

    Returns the uint8 RGB collage (height, 2·height, 3) and the boxes (x0, y0, x1, y1) of the left and right photo.
    """
    from PIL import Image
    halves = []
    for src in (left, right):
        img = Image.fromarray(load_rgb(src))
        w, h = img.size
        s = min(w, h)
        img = img.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s)).resize((height, height),
                                                                                                  Image.BILINEAR)
        halves.append(np.asarray(img))
    collage = np.concatenate(halves, axis=1)
    return collage, [(0, 0, height, height), (height, 0, 2 * height, height)]


PHOTOS = SAMPLE_IMAGES


def photo_rgb(name: str) -> torch.Tensor:
    """(3,H,W) float in [0,1] of a bundled scikit-image photo (``cnnlens.data.images.sample_image``)."""
    return torch.from_numpy(sample_image(name).copy()).permute(2, 0, 1).float() / 255.0


class Collages:
    """``n`` collages (default: every ordered pair of the six photos once, 30) for ``model``."""

    def __init__(self, model, n: int | None = None, *, photos: Sequence[str] = PHOTOS, seed: int = 0,
                 background: float = 0.5):
        if len(photos) < 2:
            raise InputError("a collage needs at least two photos")
        self.photos = list(photos)
        self.pairs = list(itertools.permutations(range(len(self.photos)), 2))
        self.n = len(self.pairs) if n is None else int(n)
        if self.n < 1:
            raise InputError(f"empty dataset: n must be at least 1, got {self.n}")
        self.seed, self.background = seed, background
        self.input_size, self.mean, self.std = model_preprocessing(model)
        self.rgb = [photo_rgb(p) for p in self.photos]
        self.class_names = list(getattr(getattr(model, "cnnlens_meta", None), "class_names", None) or [])
        self.photo_classes = self._classify(model)
        self.name = "collage"

    def _classify(self, model) -> list[int]:
        x = torch.stack([to_model_input(r, self.input_size, self.mean, self.std) for r in self.rgb])
        with preserved(model), torch.inference_mode():
            logits = model(x.to(device=model_device(model), dtype=model_dtype(model)))
        from .._logits import logits_of
        return logits_of(logits).argmax(1).cpu().tolist()

    def __len__(self) -> int:
        return self.n

    def compose(self, i: int) -> tuple[torch.Tensor, list[tuple[int, float, float, float, float]]]:
        """(canvas (3,H,W) in [0,1], boxes [(class, x1, y1, x2, y2)]) of collage ``i``."""
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + i)
        a, b = self.pairs[i % len(self.pairs)]
        h, w = self.input_size
        canvas = torch.full((3, h, w), float(self.background))
        horizontal = bool(torch.rand((), generator=g) < 0.5)
        boxes = []
        for slot, k in enumerate((a, b)):
            cell_h, cell_w = (h, w // 2) if horizontal else (h // 2, w)
            oy, ox = (0, slot * (w // 2)) if horizontal else (slot * (h // 2), 0)
            img = self.rgb[k]
            scale = min(cell_h / img.shape[1], cell_w / img.shape[2]) * float(0.75 + 0.25 * torch.rand((), generator=g))
            ph, pw = max(1, int(round(img.shape[1] * scale))), max(1, int(round(img.shape[2] * scale)))
            small = F.interpolate(img[None], size=(ph, pw), mode="bilinear", align_corners=False, antialias=True)[0]
            y0 = oy + int(torch.randint(cell_h - ph + 1, (1,), generator=g))
            x0 = ox + int(torch.randint(cell_w - pw + 1, (1,), generator=g))
            canvas[:, y0:y0 + ph, x0:x0 + pw] = small.clamp(0, 1)
            boxes.append((self.photo_classes[k], float(x0), float(y0), float(x0 + pw), float(y0 + ph)))
        return canvas, boxes

    def __getitem__(self, i: int) -> Sample:
        if not 0 <= i < self.n:
            raise IndexError(i)
        canvas, boxes = self.compose(i)
        a, b = self.pairs[i % len(self.pairs)]
        targets = sorted({c for c, *_ in boxes})
        return Sample(f"{i:04d}-{self.photos[a]}+{self.photos[b]}", to_model_input(canvas, self.input_size, self.mean,
                      self.std), tuple(self.input_size), boxes, targets)

    def describe(self) -> dict:
        names = [self.class_names[c] if c < len(self.class_names) else str(c) for c in self.photo_classes]
        return {"name": self.name, "n": self.n, "seed": self.seed, "input_size": list(self.input_size),
                "photo_classes": dict(zip(self.photos, names))}
