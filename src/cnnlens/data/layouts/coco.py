"""``coco``: images plus a COCO ``instances_*.json`` (boxes ``[x, y, w, h]`` in pixels, category names as labels).
``--data`` is the json itself or a folder holding it (or ``annotations/instances_*.json``); images are looked up in
the folder named after the json's split (``instances_val2017.json`` → ``val2017/``), ``images/`` or beside the json.
Crowd boxes count as difficult (kept as boxes, not explained alone); zero-size boxes are dropped and counted."""
from __future__ import annotations

import json
from pathlib import Path

from ..annotations import AnnotationError
from ...errors import InputError
from .base import ImageDataset, RawImage, RawObject, build, sample_id


def find_instances(data: str | Path) -> Path:
    path = Path(data)
    if path.is_file():
        return path
    found = sorted(path.glob("instances_*.json")) + sorted(path.glob("annotations/instances_*.json"))
    if len(found) == 1:
        return found[0]
    if found:
        raise InputError(f"{path} holds {len(found)} COCO files ({', '.join(p.name for p in found[:4])}): pass the "
                         f"one to use as --data")
    raise InputError(f"no COCO instances_*.json in {path} or {path / 'annotations'}")


def _image_dirs(json_path: Path) -> list[Path]:
    split = json_path.stem[len("instances_"):] if json_path.stem.startswith("instances_") else json_path.stem
    here = json_path.parent
    up = here.parent if here.name == "annotations" else here
    dirs = [up / split, up / "images" / split, up / "images", here / split, up, here]
    return list(dict.fromkeys(dirs))


def read_instances(json_path: Path) -> tuple[list[RawImage], int]:
    try:
        doc = json.loads(json_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise AnnotationError(f"cannot read COCO file {json_path}: {exc}") from None
    if not isinstance(doc, dict):
        raise AnnotationError(f"{json_path}: not a COCO instances file (expected an object)")
    for key in ("images", "annotations", "categories"):
        if not isinstance(doc.get(key), list):
            raise AnnotationError(f"{json_path}: no {key!r} list (a COCO instances json needs images, annotations "
                                  f"and categories)")
    try:
        categories = {int(c["id"]): str(c["name"]) for c in doc["categories"]}
        images = {int(im["id"]): im for im in doc["images"]}
    except (KeyError, TypeError, ValueError) as exc:
        raise AnnotationError(f"{json_path}: malformed categories/images entry ({exc!r})") from None
    if not images:
        raise InputError(f"empty dataset: {json_path} lists no image")
    first = images[min(images)]["file_name"]
    img_dir = next((d for d in _image_dirs(json_path) if (d / first).is_file()), None)
    if img_dir is None:
        raise InputError(f"{json_path} lists image {first!r} but it is in none of "
                         f"{', '.join(str(d) for d in _image_dirs(json_path))}")
    raws = {}
    for iid in sorted(images):
        im = images[iid]
        try:
            size = (int(im["height"]), int(im["width"]))
            path = img_dir / str(im["file_name"])
            raws[iid] = RawImage(sample_id(path, img_dir), path, size=size, where=f"{json_path} image id {iid}")
        except (KeyError, TypeError, ValueError) as exc:
            raise AnnotationError(f"{json_path} image id {iid}: malformed entry ({exc!r})") from None
    empty = 0
    for ann in doc["annotations"]:
        aid = ann.get("id", "?") if isinstance(ann, dict) else "?"
        where = f"{json_path} annotation id {aid}"
        try:
            raw = raws[int(ann["image_id"])]
            label = categories[int(ann["category_id"])]
            x, y, w, h = (float(v) for v in ann["bbox"])
        except KeyError as exc:
            raise AnnotationError(f"{where}: unknown or missing {exc}") from None
        except (TypeError, ValueError):
            raise AnnotationError(f"{where}: bbox must be four numbers [x, y, w, h], got "
                                  f"{ann.get('bbox')!r}") from None
        if w <= 0 or h <= 0:
            empty += 1
            continue
        raw.objects.append(RawObject(label, (x, y, x + w, y + h), where, bool(ann.get("iscrowd", 0))))
    return list(raws.values()), empty


def open_coco(data: str | Path, model, resolver, *, limit: int | None = None, clip_boxes: bool = False
              ) -> ImageDataset:
    json_path = find_instances(data)
    raws, empty = read_instances(json_path)
    return build("coco", f"coco:{json_path.resolve()}", raws, model, resolver, limit=limit, clip_boxes=clip_boxes,
                 box_tolerance=0.5, skipped={"empty_box": empty})
