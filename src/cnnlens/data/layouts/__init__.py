"""Datasets for ``cnnlens evaluate``: one adapter per layout over a common interface (:mod:`.base`).

``open_dataset(data, model, format=None)`` opens ``"synthetic"``, ``"collage"`` or a path in one of the layouts
``folder``, ``imagefolder``, ``csv``, ``imagenet-loc``, ``coco``, ``voc``, ``hf`` (a Hugging Face ``datasets`` folder
written by ``save_to_disk``). Without ``format`` the layout is detected from the path (:func:`detect_format`): a
``.csv`` file → csv, a ``.json`` file → coco; a folder written by ``save_to_disk`` → hf; a folder holding
``LOC_val_solution.csv`` → imagenet-loc; ``instances_*.json`` (or ``annotations/instances_*.json``) → coco;
``Annotations/`` or an ``.xml`` beside its images → voc; exactly one ``*.csv`` → csv; images at the top → folder;
only sub-folders with images → imagefolder.
"""
from __future__ import annotations

from pathlib import Path

from ...errors import InputError
from .base import Entry, ImageDataset, is_image
from .classes import BUILTIN_CLASS_MAPS, ClassMap, ClassResolver, ModelClasses, num_outputs, read_class_map
from .voc import VocFolder

FORMATS = ("folder", "imagefolder", "csv", "imagenet-loc", "coco", "voc", "hf")

__all__ = ["BUILTIN_CLASS_MAPS", "ClassMap", "ClassResolver", "Entry", "FORMATS", "ImageDataset", "ModelClasses",
           "VocFolder", "detect_format", "open_dataset", "read_class_map"]


def detect_format(path: str | Path) -> str:
    """The layout of ``path`` by the rule in the module docstring; raises InputError when none fits."""
    p = Path(path)
    if p.is_file():
        if p.suffix.lower() == ".csv":
            return "imagenet-loc" if p.name == "LOC_val_solution.csv" else "csv"
        if p.suffix.lower() == ".json":
            return "coco"
        raise InputError(f"cannot tell the layout of {p}: pass a folder, a .csv manifest or a COCO .json (or name "
                         f"the layout with --format)")
    from .hf import is_saved_dataset
    if is_saved_dataset(p):
        return "hf"
    if (p / "LOC_val_solution.csv").is_file():
        return "imagenet-loc"
    if any(p.glob("instances_*.json")) or any(p.glob("annotations/instances_*.json")):
        return "coco"
    img_dir = p / "JPEGImages" if (p / "JPEGImages").is_dir() else p
    if (p / "Annotations").is_dir() or any(img_dir.glob("*.xml")):
        return "voc"
    csvs = [c for c in p.glob("*.csv") if not c.name.startswith(".")]
    if len(csvs) == 1:
        return "csv"
    entries = [e for e in p.iterdir() if not e.name.startswith(".")]
    if any(is_image(e) for e in entries):
        return "folder"
    if any(e.is_dir() and any(is_image(f) for f in e.rglob("*")) for e in entries):
        return "imagefolder"
    raise InputError(f"empty dataset: no image and no known annotation file in {p} (layouts: "
                     f"{', '.join(FORMATS)}; name one with --format)")


def open_dataset(data: str, model, *, format: str | None = None, n_images: int | None = None,
                 label_file: str | None = None, class_map: str | None = None, clip_boxes: bool = False,
                 seed: int = 0, split: str | None = None, image_column: str | None = None,
                 label_column: str | None = None):
    """``"synthetic"`` (needs a synthetic model), ``"collage"`` (skimage photos), or a dataset path in ``format``
    (detected when None). ``label_file`` lists the model's classes (model-output order); ``class_map`` is a class-map
    file or a built-in name (``voc-imagenet``, ``coco-imagenet``). ``split``, ``image_column`` and ``label_column``
    apply to the ``hf`` layout (:mod:`.hf`). Every annotation is read and checked here."""
    if n_images is not None and n_images < 1:
        raise InputError(f"empty dataset: --n-images must be at least 1, got {n_images}")
    if format is not None and format not in FORMATS:
        raise InputError(f"unknown --format {format!r}; choose from {', '.join(FORMATS)}")
    hf_only = {"--split": split, "--image-column": image_column, "--label-column": label_column}
    if data == "synthetic" and format is None:
        from ..synthetic import SHAPES, SyntheticScenes
        meta = getattr(model, "cnnlens_meta", None)
        names = list(getattr(meta, "class_names", []) or [])
        if not names or names != list(SHAPES[:len(names)]):
            raise InputError("the synthetic dataset needs a synthetic model (--model synthetic-vgg or "
                             "synthetic-resnet)")
        size = int(tuple(meta.input_size)[-1])
        return SyntheticScenes(200 if n_images is None else n_images, size=size, num_classes=len(names), seed=seed)
    if data == "collage" and format is None:
        from ..collage import Collages
        return Collages(model, n_images, seed=seed)
    if not Path(data).exists():
        raise InputError(f"--data must be 'synthetic', 'collage' or an existing folder or file, got {data!r}")
    fmt = format or detect_format(data)
    given = [k for k, v in hf_only.items() if v is not None]
    if given and fmt != "hf":
        raise InputError(f"{', '.join(given)} applies to the hf layout (Hugging Face datasets) only; {data} is {fmt}")
    cmap = read_class_map(class_map) if class_map is not None else None
    if fmt == "folder":
        if cmap is not None:
            raise InputError("--class-map needs labels, but the folder layout has none (use --target predicted)")
        from .folder import open_folder
        return open_folder(data, model, limit=n_images, label_file=label_file)
    n_out = num_outputs(model)
    if fmt == "hf":
        from .hf import open_hf
        own = getattr(getattr(model, "cnnlens_meta", None), "class_names", None)

        def resolver_for(names):
            # a model without class names and the dataset's class count: its outputs are the dataset's classes
            borrowed = list(names) if names and not own and label_file is None and len(names) == n_out else None
            return ClassResolver(ModelClasses.of(model, label_file, class_names=borrowed, num_classes=n_out), cmap)

        return open_hf(data, model, resolver_for, split=split, image_column=image_column, label_column=label_column,
                       limit=n_images, clip_boxes=clip_boxes)
    if fmt == "imagenet-loc":
        from .imagenet_loc import SYNSETS, open_imagenet_loc
        root = Path(data).parent if Path(data).is_file() else Path(data)
        synsets = root / SYNSETS
        classes = ModelClasses.of(model, label_file, num_classes=n_out,
                                  wnid_file=synsets if synsets.is_file() else None)
        return open_imagenet_loc(root, model, ClassResolver(classes, cmap), limit=n_images, clip_boxes=clip_boxes)
    resolver = ClassResolver(ModelClasses.of(model, label_file, num_classes=n_out), cmap)
    if fmt == "imagefolder":
        from .imagefolder import open_imagefolder
        return open_imagefolder(data, model, resolver, limit=n_images)
    if fmt == "csv":
        from .manifest import open_manifest
        return open_manifest(data, model, resolver, limit=n_images, clip_boxes=clip_boxes)
    if fmt == "coco":
        from .coco import open_coco
        return open_coco(data, model, resolver, limit=n_images, clip_boxes=clip_boxes)
    from .voc import open_voc
    if label_file is None and not getattr(getattr(model, "cnnlens_meta", None), "class_names", None):
        from ..annotations import AnnotationError
        raise AnnotationError("no class names: pass a label file (--label-file) listing the model's classes")
    return open_voc(data, model, resolver, limit=n_images, clip_boxes=clip_boxes)
