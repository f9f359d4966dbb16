"""The common interface of the dataset layouts.

Every adapter reads its annotations once, in :func:`build`, into a list of :class:`Entry` (an image path, its boxes in
pixels of the upright original image, its image-level labels). All checks run there, before an evaluation writes
anything. :class:`ImageDataset` then decodes one entry per ``__getitem__`` into a :class:`~cnnlens.data.Sample`.
It holds only paths, numbers and tuples, so it pickles into DataLoader worker processes.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import torch

from ...errors import InputError
from ..annotations import AnnotationError
from ..images import image_size, read_rgb
from ..preprocessing import model_preprocessing, to_model_input
from ..sample import Sample
from .classes import ClassResolver

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")  # compared in lower case

BoxRow = tuple[int, float, float, float, float, bool]          # (class key, x1, y1, x2, y2, difficult)


def sample_id(path: str | Path, root: str | Path) -> str:
    """The id of the image file ``path`` in a dataset rooted at ``root``: its path relative to the root, in POSIX form
    with its suffix (``photo.jpg`` and ``photo.png``, ``a/x.jpg`` and ``b/x.jpg`` are different samples)."""
    return Path(os.path.relpath(path, root)).as_posix()


def is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".") and path.is_file()


@dataclass(frozen=True)
class Entry:
    """One image of a dataset: ``boxes`` in pixels of the upright original (0-based half-open), ``labels`` the class
    keys given without a box, ``size`` (H0, W0) when the annotation states it (checked again when decoded)."""
    id: str
    path: str
    boxes: tuple[BoxRow, ...] = ()
    labels: tuple[int, ...] = ()
    has_boxes: bool = True
    size: tuple[int, int] | None = None
    source: str = ""

    def targets(self) -> list[int]:
        """Class keys to explain: every class with a non-difficult box, and every label given without a box."""
        keys = {b[0] for b in self.boxes if not b[5]} | set(self.labels)
        return sorted(keys)


@dataclass
class RawObject:
    """An object as an adapter reads it: a dataset label, a box or None (an image-level label), and ``where`` (file
    and row) for error messages."""
    label: str
    box: tuple[float, float, float, float] | None
    where: str
    difficult: bool = False


@dataclass
class RawImage:
    id: str
    path: Path                                # the image file (a layout without files: where the image is)
    objects: list[RawObject] = field(default_factory=list)
    size: tuple[int, int] | None = None       # (H0, W0) stated by the annotation
    where: str = ""                           # file and row that list the image
    check_size: bool = False                  # compare ``size`` with the decoded image in __getitem__


class ImageDataset:
    """A dataset of image files with boxes and/or labels (see :class:`Entry`). ``class_names`` names the class keys:
    the model's classes, or the dataset classes of a class map (then ``candidates[key]`` lists the model classes a
    key stands for). ``describe()["skipped"]`` counts what was left out (see :func:`build`)."""

    def __init__(self, format: str, name: str, entries: Sequence[Entry], model, *, class_names: Sequence[str],
                 candidates: dict[int, tuple[int, ...]], clip_boxes: bool = False, skipped: dict | None = None,
                 class_map: str | None = None, extra: dict | None = None):
        self.format = format
        self.name = name
        self.entries = list(entries)
        self.class_names = list(class_names)
        self.candidates = dict(candidates)
        self.clip_boxes = clip_boxes
        self.skipped = dict(skipped or {})
        self.class_map = class_map
        self.extra = dict(extra or {})
        self.input_size, self.mean, self.std = model_preprocessing(model)
        self.has_boxes = bool(self.entries) and all(e.has_boxes for e in self.entries)
        self.has_labels = any(e.targets() for e in self.entries)

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, i: int) -> Sample:
        if not -len(self.entries) <= i < len(self.entries):
            raise IndexError(i)
        e = self.entries[i]
        try:
            rgb = self.read(i, e)
        except InputError as exc:           # corrupt beyond its header: skipped by the evaluation and counted
            return Sample(e.id, torch.zeros(3, *self.input_size), (int(self.input_size[0]), int(self.input_size[1])),
                          has_boxes=e.has_boxes, path=e.path, unreadable=_reason(exc, e))
        h0, w0 = int(rgb.shape[1]), int(rgb.shape[2])
        if e.size is not None and (h0, w0) != tuple(e.size):
            raise AnnotationError(f"{e.source}: the annotation says {e.size[1]}×{e.size[0]} but {e.path} is "
                                  f"{w0}×{h0}")
        targets = e.targets()
        keys = set(targets) | {b[0] for b in e.boxes}
        candidates = {k: self.candidates[k] for k in sorted(keys) if k in self.candidates}
        return Sample(e.id, to_model_input(rgb, self.input_size, self.mean, self.std), (h0, w0),
                      [b[:5] for b in e.boxes], targets, candidates, e.has_boxes, e.path)

    def read(self, i: int, entry: Entry) -> torch.Tensor:
        """The (3,H,W) float image of entry ``i`` (the one reader, :func:`cnnlens.data.images.read_rgb`); a layout
        whose images are not files overrides it."""
        return read_rgb(Path(entry.path))

    def describe(self) -> dict:
        out = {"name": self.name, "format": self.format, "n": len(self), "input_size": list(self.input_size),
               "clip_boxes": self.clip_boxes, "has_boxes": self.has_boxes, "has_labels": self.has_labels,
               "class_map": self.class_map, "skipped": dict(self.skipped)}
        out.update(self.extra)
        return out


def _reason(exc: Exception, entry: Entry | RawImage) -> str:
    """``<id>: <why>``, the one-line reading error with the file named by its sample id (its path in the dataset)."""
    path, text = str(entry.path), str(exc).strip()
    text = text[len(path):].strip() if text.startswith(path) else text.replace(f" {path}", "")
    text = text[3:] if text.startswith("is ") else text           # "huge.png: not an image file PIL can read"
    return f"{entry.id}: {text}"


def check_box(box: tuple[float, float, float, float], width: int, height: int, *, clip: bool, where: str,
              label: str, tolerance: float = 0.0) -> tuple[float, float, float, float]:
    """A 0-based half-open box inside a width×height image; raises on NaN, an empty/inverted box, or one outside the
    image (unless ``clip``). Overhangs up to ``tolerance`` pixels (float rounding in COCO files) are clipped."""
    x1, y1, x2, y2 = box
    shown = ",".join(f"{v:g}" for v in box)
    if not all(math.isfinite(v) for v in box):
        raise AnnotationError(f"{where}: box of {label!r} ({shown}) is not finite")
    if x2 <= x1 or y2 <= y1:
        raise AnnotationError(f"{where}: box of {label!r} ({shown}) is empty or inverted (need x0 < x1 and y0 < y1)")
    if x1 < 0 or y1 < 0 or x2 > width or y2 > height:
        inside = (x1 >= -tolerance and y1 >= -tolerance and x2 <= width + tolerance and y2 <= height + tolerance)
        if not (clip or inside):
            raise AnnotationError(f"{where}: box of {label!r} ({shown}) lies outside the {width}×{height} image "
                                  f"(pass clip_boxes=True / --clip-boxes to clip it)")
        x1, y1, x2, y2 = max(x1, 0.0), max(y1, 0.0), min(x2, float(width)), min(y2, float(height))
        if x2 <= x1 or y2 <= y1:
            raise AnnotationError(f"{where}: box of {label!r} ({shown}) lies entirely outside the {width}×{height} "
                                  f"image")
    return (float(x1), float(y1), float(x2), float(y2))


def build(format: str, name: str, images: Iterable[RawImage], model, resolver: ClassResolver, *,
          limit: int | None = None, clip_boxes: bool = False, labelled: bool = True, box_tolerance: float = 0.0,
          skipped: dict | None = None, extra: dict | None = None,
          header: Callable[[RawImage], tuple[int, int]] | None = None,
          make: Callable[..., ImageDataset] = ImageDataset) -> ImageDataset:
    """Check and resolve ``images`` (in dataset order) into an :class:`ImageDataset` of at most ``limit`` images.

    Each image must exist; each label must name a model class (or, with a class map, objects of dataset classes
    without a model counterpart are dropped); each box must lie in the image (its size read from the file header when
    the annotation does not state it). Skipped images are counted in ``skipped``: ``no_model_class`` (every object's
    class lacks a model counterpart), ``no_annotation`` (an image of a ``labelled`` layout with no object) and
    ``unreadable`` (a file whose header is not an image PIL reads, or declares a picture over ``MAX_IMAGE_PIXELS``;
    ``describe()["unreadable"]`` says why, per image id). A file corrupt beyond its header decodes, in
    ``__getitem__``, into a stand-in :class:`Sample` with ``unreadable`` set, which the evaluation skips and counts."""
    skipped = dict(skipped or {})
    skipped.setdefault("no_model_class", 0)
    skipped.setdefault("no_annotation", 0)
    unreadable: dict[str, str] = {}
    entries: list[Entry] = []
    seen: dict[str, str] = {}
    for raw in images:
        if limit is not None and len(entries) >= limit:
            break
        if raw.id in seen:
            raise AnnotationError(f"{raw.where or name}: image {raw.id!r} is listed twice (also at {seen[raw.id]})")
        seen[raw.id] = raw.where or name
        if header is None and not raw.path.is_file():
            raise InputError(f"{raw.where or name}: image {raw.path} not found")
        try:                                   # (H, W) upright; a bomb, an empty or a non-image file raise here
            upright = header(raw) if header is not None else image_size(raw.path)
        except InputError as exc:
            skipped["unreadable"] = skipped.get("unreadable", 0) + 1
            unreadable[raw.id] = _reason(exc, raw)
            continue
        if raw.check_size and raw.size is not None and tuple(raw.size) != upright:
            raise AnnotationError(f"{raw.where}: the annotation says {raw.size[1]}×{raw.size[0]} but {raw.path} is "
                                  f"{upright[1]}×{upright[0]}")
        if labelled and not raw.objects:
            skipped["no_annotation"] += 1
            continue
        kept: list[tuple[int, RawObject]] = []
        for obj in raw.objects:
            key = resolver.key(obj.label, obj.where)
            if key is not None:
                kept.append((key, obj))
        if labelled and not kept:
            skipped["no_model_class"] += 1
            continue
        size = raw.size if raw.size is not None else upright
        boxes, labels = [], []
        for key, obj in kept:
            if obj.box is None:
                labels.append(key)
                continue
            x1, y1, x2, y2 = check_box(obj.box, size[1], size[0], clip=clip_boxes, where=obj.where, label=obj.label,
                                       tolerance=box_tolerance)
            boxes.append((key, x1, y1, x2, y2, obj.difficult))
        has_boxes = bool(kept) and all(obj.box is not None for _, obj in kept)
        entries.append(Entry(raw.id, str(raw.path), tuple(boxes), tuple(sorted(set(labels))), has_boxes,
                             raw.size if raw.check_size else None, raw.where))
    if not entries:
        why = ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in skipped.items() if v)
        raise InputError(f"empty dataset: no usable image in {name}" + (f" (skipped: {why})" if why else ""))
    extra = dict(extra or {})
    if resolver.unmapped:
        extra["unmapped_classes"] = dict(sorted(resolver.unmapped.items()))
    if unreadable:
        extra["unreadable"] = unreadable
    return make(format, name, entries, model, class_names=resolver.class_names,
                        candidates=resolver.candidates, clip_boxes=clip_boxes, skipped=skipped,
                        class_map=resolver.class_map_name, extra=extra)


def numbered_images(folder: Path, recursive: bool = False) -> list[Path]:
    """Image files of ``folder`` in sorted order (hidden files skipped)."""
    found = folder.rglob("*") if recursive else folder.iterdir()
    return sorted((p for p in found if is_image(p)), key=lambda p: p.relative_to(folder).as_posix())
