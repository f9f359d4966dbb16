"""``voc``: a folder of images with one Pascal VOC / ImageNet (ILSVRC) XML per image (same stem), side by side or
VOC style (``JPEGImages/`` + ``Annotations/``). XML boxes are 1-based inclusive; they become 0-based half-open."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from ..annotations import AnnotationError, parse_voc_xml
from ...errors import InputError
from .base import ImageDataset, RawImage, RawObject, build, numbered_images, sample_id
from .classes import ClassResolver, ModelClasses, read_class_map


def voc_pairs(root: Path) -> tuple[Path, list[tuple[Path, Path | None]]]:
    """(image folder, [(image, its XML or None)]) in sorted order."""
    img_dir = root / "JPEGImages" if (root / "JPEGImages").is_dir() else root
    ann_dirs = [root / "Annotations", img_dir]
    pairs = []
    for img in numbered_images(img_dir):
        xml = next((d / (img.stem + ".xml") for d in ann_dirs if (d / (img.stem + ".xml")).is_file()), None)
        pairs.append((img, xml))
    return img_dir, pairs


def open_voc(root: str | Path, model, resolver: ClassResolver, *, limit: int | None = None,
             clip_boxes: bool = False) -> ImageDataset:
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"dataset folder not found: {root}")
    img_dir, pairs = voc_pairs(root)
    if not pairs:
        raise InputError(f"empty dataset: no image (.jpg/.png) in {img_dir}")
    missing = [img.name for img, xml in pairs if xml is None]
    if missing:
        raise AnnotationError(f"{len(missing)} image(s) in {img_dir} have no annotation file "
                              f"(<stem>.xml beside them or in Annotations/): {', '.join(missing[:5])}"
                              + (" …" if len(missing) > 5 else ""))

    def raws():
        for img, xml in pairs:
            ann = parse_voc_xml(xml, clip=clip_boxes)
            if not ann.boxes:
                raise AnnotationError(f"{xml}: no <object> box")
            objects = [RawObject(b.name, b.corners, str(xml), b.difficult) for b in ann.boxes]
            yield RawImage(sample_id(img, img_dir), img, objects, size=(ann.height, ann.width), where=str(xml),
                           check_size=True)

    return build("voc", f"folder:{root.resolve()}", raws(), model, resolver, limit=limit, clip_boxes=clip_boxes)


class VocFolder(ImageDataset):
    """A VOC/ILSVRC XML folder (see the module docstring). Class names come from ``label_file`` (one per line in
    model-output order, or ImageNet's ``wnid name`` lines), ``class_names`` or the model; every annotated class must
    be one of them, unless ``class_map`` (a file or built-in name) maps dataset classes to model classes."""

    def __init__(self, root: str | Path, model, *, label_file: str | Path | None = None,
                 class_names: Sequence[str] | None = None, clip_boxes: bool = False, limit: int | None = None,
                 num_classes: int | None = None, class_map: str | None = None):
        if label_file is None and not (class_names or getattr(getattr(model, "cnnlens_meta", None), "class_names",
                                                                 None)):
            raise AnnotationError("no class names: pass a label file (--label-file) listing the model's classes")
        if label_file is not None and num_classes is None:
            from ..annotations import read_label_file
            num_classes = len(read_label_file(label_file))
        if num_classes is None:
            num_classes = len(class_names or model.cnnlens_meta.class_names)
        classes = ModelClasses.of(model, label_file, class_names=class_names, num_classes=num_classes)
        resolver = ClassResolver(classes, read_class_map(class_map) if class_map is not None else None)
        ds = open_voc(root, model, resolver, limit=limit, clip_boxes=clip_boxes)
        self.__dict__.update(ds.__dict__)
        self.root = Path(root)
