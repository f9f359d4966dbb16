# TEMP shim: today's open_dataset, until the dataset adapters (branch iss11data) replace this file at merge.
"""Name → dataset for ``cnnlens evaluate``: ``synthetic``, ``collage`` or a folder with VOC/ILSVRC XML boxes."""
from __future__ import annotations

from pathlib import Path

from torch import nn

from ...errors import InputError
from ..models import _num_outputs

FORMATS = ("folder", "imagefolder", "csv", "imagenet-loc", "coco", "voc")


def open_dataset(data: str, model: nn.Module, *, format: str | None = None, n_images: int | None = None,
                 label_file: str | None = None, class_map: str | None = None, clip_boxes: bool = False, seed: int = 0):
    """``"synthetic"`` (needs a synthetic model), ``"collage"`` (skimage photos), or a folder with XML boxes."""
    if format is not None and format not in FORMATS:
        raise InputError(f"--format must be one of {', '.join(FORMATS)}, got {format!r}")
    if format not in (None, "voc"):
        raise InputError(f"--format {format} is not available in this build (only voc)")
    if class_map is not None:
        raise InputError("--class-map is not available in this build")
    if n_images is not None and n_images < 1:
        raise InputError(f"empty dataset: --n-images must be at least 1, got {n_images}")
    if data == "synthetic":
        from ...data.synthetic import SHAPES, SyntheticScenes
        meta = getattr(model, "cnnlens_meta", None)
        names = list(getattr(meta, "class_names", []) or [])
        if not names or names != list(SHAPES[:len(names)]):
            raise InputError("the synthetic dataset needs a synthetic model (--model synthetic-vgg or "
                             "synthetic-resnet)")
        size = int(tuple(meta.input_size)[-1])
        return SyntheticScenes(200 if n_images is None else n_images, size=size, num_classes=len(names), seed=seed)
    if data == "collage":
        from ...data.collage import Collages
        return Collages(model, n_images, seed=seed)
    if not Path(data).exists():
        raise InputError(f"--data must be 'synthetic', 'collage' or an existing folder, got {data!r}")
    from ...data.boxes import VocFolder
    return VocFolder(data, model, label_file=label_file, clip_boxes=clip_boxes, limit=n_images,
                     num_classes=_num_outputs(model))
