"""``imagefolder``: torchvision's ImageFolder layout, one sub-folder per class (images found recursively). The folder
name is a WordNet id, a class name of the model, or an output index (or a dataset class of the class map)."""
from __future__ import annotations

from pathlib import Path

from ...errors import InputError
from .base import ImageDataset, RawImage, RawObject, build, numbered_images, sample_id
from .classes import ClassResolver


def open_imagefolder(root: str | Path, model, resolver: ClassResolver, *, limit: int | None = None
                     ) -> ImageDataset:
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"dataset folder not found: {root}")
    classes = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    per_class = [(d, numbered_images(d, recursive=True)) for d in classes]
    per_class = [(d, imgs) for d, imgs in per_class if imgs]
    if not per_class:
        raise InputError(f"empty dataset: no class sub-folder with images in {root}")

    def raws():
        for d, imgs in per_class:
            for p in imgs:
                yield RawImage(sample_id(p, root), p, [RawObject(d.name, None, f"{root}: folder {d.name!r}")],
                               where=str(d))

    return build("imagefolder", f"imagefolder:{root.resolve()}", raws(), model, resolver, limit=limit,
                 extra={"n_folders": len(per_class)})
