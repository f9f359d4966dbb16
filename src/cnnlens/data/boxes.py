"""Datasets of images with ground-truth boxes: the :class:`Sample` every evaluation reads, and a folder of images with
Pascal VOC / ImageNet XML annotations."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, Sequence

import torch

from ..errors import InputError
from .annotations import AnnotationError, LabelMap, label_map_from_names, parse_voc_xml, read_label_file

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".JPEG", ".JPG", ".PNG")


@dataclass
class Sample:
    """One image: ``image`` (C,H,W) normalised at the model's input size; ``size`` (H0, W0) of the original, the
    resolution of ``boxes`` [(class key, x1, y1, x2, y2)] (0-based half-open); ``targets``: the class keys to explain
    (every ground-truth class present, difficult-only classes skipped).

    A class key is the model's class index, unless ``candidates`` maps it (a class map: a dataset class standing for a
    set of model classes): then the target is the model's highest-scoring class of ``candidates[key]`` and the boxes
    are those of the key. ``has_boxes`` is False for a dataset without boxes (metrics that need boxes report n/a);
    ``path`` is the source file, when there is one; ``labels`` names the keys for a class-mapped dataset."""
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
    """(3,H,W) float32 in [0,1]."""
    from PIL import Image, UnidentifiedImageError
    import numpy as np
    try:
        with Image.open(path) as im:
            arr = np.asarray(im.convert("RGB"), dtype=np.uint8).copy()
    except (UnidentifiedImageError, OSError) as exc:
        raise InputError(f"cannot read image {path}: {exc}") from None
    return torch.from_numpy(arr).permute(2, 0, 1).float() / 255.0


class VocFolder:
    """A folder of images with one XML file per image (same stem): either side by side, or VOC style
    (``JPEGImages/`` + ``Annotations/``). Class names come from ``label_file`` (one per line in model-output order,
    or ImageNet's ``wnid name`` lines) or from the model; every annotated class must be one of them."""

    def __init__(self, root: str | Path, model, *, label_file: str | Path | None = None,
                 class_names: Sequence[str] | None = None, clip_boxes: bool = False, limit: int | None = None,
                 num_classes: int | None = None):
        self.root = Path(root)
        if not self.root.is_dir():
            raise InputError(f"dataset folder not found: {self.root}")
        self.name = f"folder:{self.root.resolve()}"
        self.clip_boxes = clip_boxes
        self.input_size, self.mean, self.std = model_preprocessing(model)
        if label_file is not None:
            self.labels: LabelMap = read_label_file(label_file)
        else:
            names = class_names or getattr(getattr(model, "cnnlens_meta", None), "class_names", None)
            if not names:
                raise AnnotationError("no class names: pass a label file (--label-file) listing the model's classes")
            self.labels = label_map_from_names(list(names))
        if num_classes is not None and num_classes != len(self.labels):
            raise AnnotationError(f"the label file lists {len(self.labels)} classes but the model has {num_classes} "
                                  f"outputs")
        self.class_names = list(self.labels.names)
        img_dir = self.root / "JPEGImages" if (self.root / "JPEGImages").is_dir() else self.root
        ann_dirs = [self.root / "Annotations", img_dir]
        images = sorted(p for p in img_dir.iterdir() if p.suffix in IMAGE_SUFFIXES)
        if not images:
            raise InputError(f"empty dataset: no image (.jpg/.png) in {img_dir}")
        if limit is not None:
            images = images[:limit]
        pairs, missing = [], []
        for img in images:
            xml = next((d / (img.stem + ".xml") for d in ann_dirs if (d / (img.stem + ".xml")).is_file()), None)
            if xml is None:
                missing.append(img.name)
            pairs.append((img, xml))
        if missing:
            raise AnnotationError(f"{len(missing)} image(s) in {img_dir} have no annotation file "
                                  f"(<stem>.xml beside them or in Annotations/): {', '.join(missing[:5])}"
                                  + (" …" if len(missing) > 5 else ""))
        self.items = pairs
        # Parse every annotation up front so that bad files fail before any work starts.
        self._boxes = [self._read_boxes(xml) for _, xml in pairs]

    def _read_boxes(self, xml: Path):
        ann = parse_voc_xml(xml, clip=self.clip_boxes)
        boxes = []
        for b in ann.boxes:
            c = self.labels.index(b.name)
            if c is None:
                raise AnnotationError(f"{xml}: class {b.name!r} is not one of the model's {len(self.labels)} classes "
                                      f"(label file / model class names)")
            boxes.append((c, b.x1, b.y1, b.x2, b.y2, b.difficult))
        if not boxes:
            raise AnnotationError(f"{xml}: no <object> box")
        return ann, boxes

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> Sample:
        img, xml = self.items[i]
        ann, boxes = self._boxes[i]
        rgb = read_rgb(img)
        h0, w0 = int(rgb.shape[1]), int(rgb.shape[2])
        if (w0, h0) != (ann.width, ann.height):
            raise AnnotationError(f"{xml}: <size> says {ann.width}×{ann.height} but {img.name} is {w0}×{h0}")
        targets = sorted({c for c, *_ in boxes if not all(b[5] for b in boxes if b[0] == c)})
        return Sample(img.stem, to_model_input(rgb, self.input_size, self.mean, self.std), (h0, w0),
                      [b[:5] for b in boxes], targets)

    def describe(self) -> dict:
        return {"name": self.name, "n": len(self), "input_size": list(self.input_size), "clip_boxes": self.clip_boxes}
