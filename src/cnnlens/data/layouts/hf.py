"""``hf``: a Hugging Face ``datasets`` dataset saved with ``Dataset.save_to_disk`` (or a ``DatasetDict``: one split,
``--split``), read with ``datasets.load_from_disk`` (the optional extra ``cnnlens[hf]``; imported only here).

Columns, found from the features (or named):

- the image: the one ``Image`` feature (``--image-column`` when there are several). Its encoded bytes (or the file
  it names) are decoded by cnnlens's one reader, as every layout: upright by the EXIF orientation, bombs and corrupt
  images skipped and counted.
- the label (optional): the one top-level ``ClassLabel`` feature (``--label-column`` when there are several, or to
  name a column of class names or model output indices). Its class names are the dataset's classes: they must name
  the model's classes (names, WordNet ids, indices), or a class map (``--class-map``) maps them. A model without
  class names whose output count equals the ``ClassLabel``'s takes its names (a model trained on the dataset).
- boxes (optional): a COCO-style ``objects`` column, per image ``{"bbox": [[x, y, width, height], ...],
  "category": [class, ...]}`` (pixels of the upright image, as the ``datasets`` object-detection datasets store
  them; ``category`` a ``ClassLabel``, a name or an index; the key may also be ``label``, ``labels`` or
  ``category_id``). Zero-size boxes are dropped and counted. An image's label whose class has a box in the image adds
  nothing; one without a box is explained as an image-level label (box metrics n/a for that image).

Sample ids are ``<row>`` (``<split>/<row>`` for a ``DatasetDict``), zero-padded to the dataset's length.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ...errors import InputError
from ..annotations import AnnotationError
from .base import Entry, ImageDataset, RawImage, RawObject, build
from .classes import ClassResolver

CATEGORY_KEYS = ("category", "label", "labels", "category_id")


def is_saved_dataset(path: str | Path) -> bool:
    """A folder written by ``Dataset.save_to_disk`` or ``DatasetDict.save_to_disk``."""
    p = Path(path)
    return p.is_dir() and ((p / "dataset_dict.json").is_file()
                           or ((p / "state.json").is_file() and (p / "dataset_info.json").is_file()))


def _datasets():
    try:
        import datasets
    except ImportError:
        raise InputError("the hf layout needs the Hugging Face datasets package: pip install 'cnnlens[hf]'") from None
    return datasets


def load_split(data: str | Path, split: str | None):
    """(the ``datasets.Dataset`` at ``data``, its split name or None)."""
    datasets = _datasets()
    path = Path(data)
    if not is_saved_dataset(path):
        raise InputError(f"{path} is not a dataset saved by datasets' save_to_disk (no dataset_dict.json, or "
                         f"state.json and dataset_info.json)")
    try:
        loaded = datasets.load_from_disk(str(path))
    except Exception as exc:  # noqa: BLE001 - datasets raises many types on damaged folders
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise InputError(f"cannot load the Hugging Face dataset {path}: {first}") from None
    if isinstance(loaded, datasets.DatasetDict):
        splits = list(loaded)
        if split is None:
            if len(splits) != 1:
                raise InputError(f"{path} holds the splits {', '.join(splits)}: choose one with --split")
            split = splits[0]
        if split not in loaded:
            raise InputError(f"{path} has no split {split!r}; its splits: {', '.join(splits)}")
        return loaded[split], split
    if split is not None:
        raise InputError(f"{path} is a single Dataset, not a DatasetDict: it has no splits (drop --split {split})")
    return loaded, None


def _of_type(feature, kind) -> Any:
    """``feature`` itself, or the feature inside a List/Sequence of it, when it is a ``kind``; else None."""
    while feature is not None and not isinstance(feature, kind):
        feature = getattr(feature, "feature", None)
        if isinstance(feature, dict):
            return None
    return feature


def _columns(ds, image_column: str | None, label_column: str | None, where: str):
    datasets = _datasets()
    features = ds.features
    names = list(features)
    images = [c for c in names if isinstance(features[c], datasets.Image)]
    if image_column is not None:
        if image_column not in features:
            raise InputError(f"{where} has no column {image_column!r} (--image-column); columns: {', '.join(names)}")
        if not isinstance(features[image_column], datasets.Image):
            raise InputError(f"{where}: column {image_column!r} is {type(features[image_column]).__name__}, not an "
                             f"Image feature (--image-column)")
    elif len(images) == 1:
        image_column = images[0]
    elif not images:
        raise InputError(f"{where} has no image column (a datasets.Image feature); columns: {', '.join(names)}")
    else:
        raise InputError(f"{where} has several image columns ({', '.join(images)}): name one with --image-column")
    labels = [c for c in names if isinstance(features[c], datasets.ClassLabel)]
    if label_column is not None:
        if label_column not in features:
            raise InputError(f"{where} has no column {label_column!r} (--label-column); columns: {', '.join(names)}")
        kind = features[label_column]
        plain = isinstance(kind, datasets.Value) and (kind.dtype.startswith("int") or kind.dtype == "string")
        if not (isinstance(kind, datasets.ClassLabel) or plain):
            raise InputError(f"{where}: column {label_column!r} holds {kind}; a label column is a ClassLabel, class "
                             f"names or class indices (--label-column)")
    elif len(labels) == 1:
        label_column = labels[0]
    elif len(labels) > 1:
        raise InputError(f"{where} has several ClassLabel columns ({', '.join(labels)}): name one with "
                         f"--label-column")
    objects = "objects" if "objects" in features and "objects" not in (image_column, label_column) else None
    return image_column, label_column, objects


def _label_names(feature) -> list[str] | None:
    datasets = _datasets()
    cl = _of_type(feature, datasets.ClassLabel)
    return list(cl.names) if cl is not None else None


def _objects_layout(feature, where: str) -> tuple[str, list[str] | None]:
    """(the category key of the objects column, its ClassLabel names or None)."""
    inner = feature
    while not isinstance(inner, dict) and getattr(inner, "feature", None) is not None:
        inner = inner.feature                            # Sequence({...}) / List({...}) of dicts
    if not isinstance(inner, dict) or "bbox" not in inner:
        raise AnnotationError(f"{where}: the objects column must hold 'bbox' and 'category' lists (COCO style: "
                              f"[x, y, width, height] in pixels)")
    key = next((k for k in CATEGORY_KEYS if k in inner), None)
    if key is None:
        raise AnnotationError(f"{where}: the objects column has no category ({', '.join(CATEGORY_KEYS)})")
    return key, _label_names(inner[key])


def _object_rows(value) -> list[dict]:
    """Objects of one row, as dicts: datasets gives a dict of lists (Sequence of a dict) or a list of dicts."""
    if value is None:
        return []
    if isinstance(value, dict):
        keys = list(value)
        n = len(value[keys[0]]) if keys else 0
        return [{k: value[k][i] for k in keys} for i in range(n)]
    return list(value)


class HFImageDataset(ImageDataset):
    """An :class:`ImageDataset` whose images are rows of a Hugging Face dataset (``entry.path`` names the row)."""

    def attach(self, table, image_column: str, rows: list[int]) -> "HFImageDataset":
        self.table, self.image_column, self.rows = table, image_column, list(rows)
        return self

    def read(self, i: int, entry: Entry) -> torch.Tensor:
        from ..images import read_rgb
        data, path = _image_bytes(self.table[self.rows[i]][self.image_column])
        return read_rgb(entry.path if data is not None else path, data=data)


def _image_bytes(value) -> tuple[bytes | None, str | None]:
    """(encoded bytes, file path) of an undecoded ``datasets.Image`` cell."""
    if not isinstance(value, dict):
        raise InputError("an image cell holds no image")
    data, path = value.get("bytes"), value.get("path")
    if data is None and not path:
        raise InputError("an image cell holds no image (neither bytes nor a path)")
    return data, path


def open_hf(data: str | Path, model, resolver_for, *, split: str | None = None, image_column: str | None = None,
            label_column: str | None = None, limit: int | None = None, clip_boxes: bool = False) -> ImageDataset:
    """The Hugging Face dataset at ``data`` (see the module docstring). ``resolver_for(class_names)`` makes the
    :class:`ClassResolver` given the dataset's ClassLabel names (None when the dataset has none)."""
    datasets = _datasets()
    root = Path(data)
    ds, split = load_split(root, split)
    where = f"{root}" + (f" (split {split})" if split else "")
    image_column, label_column, objects = _columns(ds, image_column, label_column, where)
    label_names = _label_names(ds.features[label_column]) if label_column else None
    obj_key, obj_names = _objects_layout(ds.features[objects], where) if objects else (None, None)
    resolver: ClassResolver = resolver_for(label_names or obj_names)
    table = ds.cast_column(image_column, datasets.Image(decode=False))
    width = len(str(max(len(ds) - 1, 0)))
    prefix = f"{split}/" if split else ""
    empty = 0

    def ident(row: int) -> str:
        return f"{prefix}{row:0{width}d}"

    images: dict[str, Any] = {}                  # id → undecoded image cell, from raws() to header()

    def rows_of(columns: list[str], batch: int = 256):
        """Every row as {column: value}, read in batches (one arrow slice per batch, not per row)."""
        for chunk in table.select_columns(columns).iter(batch_size=batch):
            for k in range(len(chunk[columns[0]])):
                yield {c: chunk[c][k] for c in columns}

    def raws():
        nonlocal empty
        meta_cols = [c for c in (label_column, objects) if c]
        for row, cells in enumerate(rows_of([image_column] + meta_cols)):
            raw = RawImage(ident(row), root / f"{prefix}{row}", where=f"{where} row {row}")
            images[raw.id] = cells[image_column]
            if meta_cols:
                if label_column and cells[label_column] is not None:
                    v = cells[label_column]
                    name = label_names[v] if label_names is not None and isinstance(v, int) and v >= 0 else str(v)
                    if not (label_names is not None and isinstance(v, int) and v < 0):     # -1: no label
                        raw.objects.append(RawObject(name, None, f"{raw.where}, column {label_column!r}"))
                for k, obj in enumerate(_object_rows(cells[objects]) if objects else []):
                    ow = f"{raw.where}, object {k}"
                    try:
                        x, y, w, h = (float(v) for v in obj["bbox"])
                    except (KeyError, TypeError, ValueError):
                        raise AnnotationError(f"{ow}: bbox must be four numbers [x, y, width, height], got "
                                              f"{obj.get('bbox')!r}") from None
                    if w <= 0 or h <= 0:
                        empty += 1
                        continue
                    c = obj.get(obj_key)
                    name = obj_names[c] if obj_names is not None and isinstance(c, int) else str(c)
                    raw.objects.append(RawObject(name, (x, y, x + w, y + h), ow, bool(obj.get("iscrowd", 0))))
                boxed = {o.label for o in raw.objects if o.box is not None}
                raw.objects = [o for o in raw.objects if o.box is not None or o.label not in boxed]
            yield raw

    def header(raw: RawImage) -> tuple[int, int]:
        from ...image_files import image_file_size
        data, path = _image_bytes(images.pop(raw.id))
        return image_file_size(raw.path if data is not None else path, data=data)

    labelled = bool(label_column or objects)
    out = build("hf", f"hf:{root.resolve()}" + (f"[{split}]" if split else ""), raws(), model, resolver,
                limit=limit, clip_boxes=clip_boxes, labelled=labelled, box_tolerance=0.5,
                skipped={"empty_box": 0}, header=header, make=HFImageDataset,
                extra={"split": split, "image_column": image_column, "label_column": label_column,
                       "objects_column": objects})
    out.skipped["empty_box"] = empty
    return out.attach(table, image_column, [int(e.id[len(prefix):]) for e in out.entries])
