"""``folder``: a flat folder of images without labels (explain the model's prediction: ``--target predicted``;
metrics that need boxes report n/a)."""
from __future__ import annotations

from pathlib import Path

from ...errors import InputError
from .base import ImageDataset, RawImage, build, numbered_images, sample_id
from .classes import ClassResolver, ModelClasses


def open_folder(root: str | Path, model, *, limit: int | None = None, label_file=None,
                num_classes: int | None = None) -> ImageDataset:
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"dataset folder not found: {root}")
    images = numbered_images(root)
    if not images:
        raise InputError(f"empty dataset: no image (.jpg/.png/...) in {root}")
    raws = (RawImage(sample_id(p, root), p, [], where=str(root)) for p in images)
    resolver = ClassResolver(ModelClasses.of(model, label_file, num_classes=num_classes))
    return build("folder", f"folder:{root.resolve()}", raws, model, resolver, limit=limit, labelled=False)
