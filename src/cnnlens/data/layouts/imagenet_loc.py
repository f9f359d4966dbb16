"""``imagenet-loc``: ImageNet val as distributed for localisation (Kaggle's ImageNet Object Localization Challenge):
images ``ILSVRC2012_val_*.JPEG`` (in the folder, ``val/`` or ``ILSVRC/Data/CLS-LOC/val/``), ``LOC_val_solution.csv``
(``ImageId,PredictionString``; the string repeats ``wnid x0 y0 x1 y1``, taken as 0-based half-open pixels like the
csv layout) and ``LOC_synset_mapping.txt`` (``wnid names`` lines in ImageNet class index order)."""
from __future__ import annotations

import csv
from pathlib import Path

from ..annotations import AnnotationError
from ...errors import InputError
from .base import ImageDataset, RawImage, RawObject, build, sample_id

SOLUTION = "LOC_val_solution.csv"
SYNSETS = "LOC_synset_mapping.txt"
IMAGE_DIRS = (".", "val", "ILSVRC/Data/CLS-LOC/val", "images")


def find_image_dir(root: Path, first_id: str) -> Path:
    for sub in IMAGE_DIRS:
        d = root / sub
        if (d / f"{first_id}.JPEG").is_file():
            return d
    raise InputError(f"{root / SOLUTION} lists {first_id} but no {first_id}.JPEG is in {root} or its "
                     f"{', '.join(s + '/' for s in IMAGE_DIRS[1:])}")


def read_solution(root: Path) -> list[RawImage]:
    path = root / SOLUTION
    rows: list[tuple[str, str, str]] = []
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            header = [h.strip() for h in next(reader, [])]
            if header[:2] != ["ImageId", "PredictionString"]:
                raise AnnotationError(f"{path}: expected the header ImageId,PredictionString, got "
                                      f"{','.join(header)!r}")
            for row in reader:
                if not any(c.strip() for c in row):
                    continue
                if len(row) < 2:
                    raise AnnotationError(f"{path} row {reader.line_num}: expected ImageId,PredictionString")
                rows.append((row[0].strip(), row[1], f"{path} row {reader.line_num}"))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise AnnotationError(f"cannot read {path}: {exc}") from None
    if not rows:
        raise InputError(f"empty dataset: {path} lists no image")
    rows.sort(key=lambda r: r[0])
    img_dir = find_image_dir(root, rows[0][0])
    images, seen = [], set()
    for image_id, pred, where in rows:
        if image_id in seen:
            raise AnnotationError(f"{where}: image {image_id} is listed twice")
        seen.add(image_id)
        parts = pred.split()
        if len(parts) % 5:
            raise AnnotationError(f"{where}: PredictionString must repeat 'wnid x0 y0 x1 y1', got {len(parts)} "
                                  f"fields")
        objects = []
        for j in range(0, len(parts), 5):
            wnid, *nums = parts[j:j + 5]
            try:
                box = tuple(float(v) for v in nums)
            except ValueError:
                raise AnnotationError(f"{where}: box of {wnid!r} ({' '.join(nums)}) is not numeric") from None
            if box[2] <= box[0] or box[3] <= box[1]:
                raise AnnotationError(f"{where}: box of {wnid!r} ({' '.join(nums)}) is empty or inverted (need "
                                      f"x0 < x1 and y0 < y1)")
            objects.append(RawObject(wnid, box, where))
        path = img_dir / f"{image_id}.JPEG"
        images.append(RawImage(sample_id(path, root), path, objects, where=where))
    return images


def open_imagenet_loc(root: str | Path, model, resolver, *, limit: int | None = None, clip_boxes: bool = False
                      ) -> ImageDataset:
    root = Path(root)
    return build("imagenet-loc", f"imagenet-loc:{root.resolve()}", read_solution(root), model, resolver,
                 limit=limit, clip_boxes=clip_boxes)
