"""``csv``: a manifest with the header ``path,label`` and optionally ``x0,y0,x1,y1`` (pixels of the upright original
image, 0-based, half-open). One row per box, several rows per image; ``label`` is a class name or index; paths are
relative to the CSV's folder. A row with empty box cells labels its image without a box; an image is ``has_boxes``
when all its rows have boxes."""
from __future__ import annotations

import csv
import os
from pathlib import Path

from ..annotations import AnnotationError
from ...errors import InputError
from .base import ImageDataset, RawImage, RawObject, build, sample_id
from .classes import ClassResolver

BOX_COLUMNS = ("x0", "y0", "x1", "y1")


def find_manifest(data: str | Path) -> Path:
    path = Path(data)
    if path.is_file():
        return path
    if path.is_dir():
        found = sorted(p for p in path.glob("*.csv") if not p.name.startswith("."))
        if len(found) == 1:
            return found[0]
        if found:
            raise InputError(f"{path} holds {len(found)} CSV files ({', '.join(p.name for p in found[:4])}): pass the "
                             f"manifest itself as --data")
        raise InputError(f"no CSV manifest (*.csv) in {path}")
    raise InputError(f"CSV manifest not found: {path}")


def read_manifest(path: Path) -> list[RawImage]:
    """Images in order of first appearance, each with its rows as objects; every row checked."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            if header is None:
                raise AnnotationError(f"{path}: empty file (expected the header path,label[,x0,y0,x1,y1])")
            cols = [h.strip().lower() for h in header]
            if "path" not in cols or "label" not in cols:
                raise AnnotationError(f"{path}: the header must name the columns path and label (and optionally "
                                      f"x0,y0,x1,y1), got {','.join(header)!r}")
            present = [c for c in BOX_COLUMNS if c in cols]
            if present and len(present) != 4:
                raise AnnotationError(f"{path}: box columns must be all of x0,y0,x1,y1, got {','.join(present)}")
            at = {c: cols.index(c) for c in ("path", "label", *present)}
            images: dict[str, RawImage] = {}
            for row in reader:
                n = reader.line_num
                if not any(cell.strip() for cell in row):
                    continue
                where = f"{path} row {n}"
                if len(row) < len(cols):
                    raise AnnotationError(f"{where}: {len(row)} fields, the header has {len(cols)}")
                rel, label = row[at["path"]].strip(), row[at["label"]].strip()
                if not rel or not label:
                    raise AnnotationError(f"{where}: empty path or label")
                box = None
                cells = [row[at[c]].strip() for c in present]
                if any(cells):
                    try:
                        box = tuple(float(c) for c in cells)
                    except ValueError:
                        bad = next(c for c in cells if not _is_number(c))
                        raise AnnotationError(f"{where}: box value {bad!r} is not a number") from None
                    if box[2] <= box[0] or box[3] <= box[1]:
                        raise AnnotationError(f"{where}: box ({','.join(cells)}) is empty or inverted (need "
                                              f"x0 < x1 and y0 < y1)")
                rel = Path(os.path.normpath(rel)).as_posix()          # ./a.jpg and a.jpg: one image
                img = images.get(rel)
                if img is None:
                    file = path.parent / rel
                    if not file.is_file():
                        raise InputError(f"{where}: image {rel!r} not found (paths are relative to {path.parent})")
                    img = images[rel] = RawImage(sample_id(file, path.parent), file, where=where)
                img.objects.append(RawObject(label, box, where))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise AnnotationError(f"cannot read CSV manifest {path}: {exc}") from None
    if not images:
        raise InputError(f"empty dataset: {path} lists no image")
    return list(images.values())


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def open_manifest(data: str | Path, model, resolver: ClassResolver, *, limit: int | None = None,
                  clip_boxes: bool = False) -> ImageDataset:
    path = find_manifest(data)
    return build("csv", f"csv:{path.resolve()}", read_manifest(path), model, resolver, limit=limit,
                 clip_boxes=clip_boxes)
