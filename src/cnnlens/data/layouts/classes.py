"""Dataset labels → class keys: the model's classes, and class maps (a dataset class standing for a set of model
classes).

A class-map file has one line per dataset class, ``dataset_class: model_class, model_class, …`` (``#`` comments and
blank lines ignored). A model class is a class name of the model, a WordNet id (ImageNet models) or an output index.
A dataset class with an empty list has no counterpart: its objects are dropped, images left with no object skipped.
The built-in maps ``voc-imagenet`` and ``coco-imagenet`` ship in ``classmaps/``.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from ..annotations import AnnotationError, LabelMap, label_map_from_names, read_label_file
from ...errors import InputError

BUILTIN_CLASS_MAPS = {"voc-imagenet": "voc-imagenet.txt", "coco-imagenet": "coco-imagenet.txt"}
_INT = re.compile(r"^\d+$")


def num_outputs(model) -> int:
    """The number of model outputs, from one forward pass on zeros (the model comes back untouched)."""
    from ..._state import model_device, model_dtype, preserved
    from ..preprocessing import model_preprocessing
    size, _, _ = model_preprocessing(model)
    with preserved(model), torch.inference_mode():
        out = model(torch.zeros(1, 3, *size, device=model_device(model), dtype=model_dtype(model)))
    from ..._logits import logits_of
    return int(logits_of(out).shape[-1])


def _imagenet_synonyms(names: Sequence[str]) -> tuple[list[str | None], list[tuple[str, ...]]] | None:
    """WordNet ids and lemmas of ImageNet-1k, when ``names`` are torchvision's 1000 ImageNet class names (timm ships
    the lists; nothing is downloaded)."""
    if len(names) != 1000:
        return None
    try:
        from ...models.zoo import imagenet_class_names
        if list(names) != imagenet_class_names():
            return None
        from timm.data import ImageNetInfo
    except ImportError:
        return None
    info = ImageNetInfo()
    wnids = [info.index_to_label_name(i) for i in range(1000)]
    lemmas = [(info.index_to_description(i),) for i in range(1000)]
    return wnids, lemmas


class ModelClasses:
    """The model's classes: ``index(label)`` resolves a class name, a WordNet id or an output index."""

    def __init__(self, labels: LabelMap | None, num_classes: int, source: str):
        self.labels, self.num_classes, self.source = labels, num_classes, source

    @classmethod
    def of(cls, model, label_file: str | Path | None = None, *, class_names: Sequence[str] | None = None,
           wnid_file: str | Path | None = None, num_classes: int | None = None) -> "ModelClasses":
        """From ``label_file`` (model-output order), else ``class_names``, else ``model.cnnlens_meta.class_names``;
        ImageNet-1k names gain their wnids and lemmas; ``wnid_file`` (ImageNet's LOC_synset_mapping.txt, in class
        index order) adds wnids and synonyms to names that lack them."""
        if num_classes is None:
            num_classes = num_outputs(model)
        if label_file is not None:
            labels, source = read_label_file(label_file), f"label file {label_file}"
            if len(labels) != num_classes:
                raise AnnotationError(f"the label file lists {len(labels)} classes but the model has {num_classes} "
                                      f"outputs")
        else:
            names = class_names or getattr(getattr(model, "cnnlens_meta", None), "class_names", None)
            labels, source = None, "model"
            if names:
                names = list(names)
                syn = _imagenet_synonyms(names)
                labels = LabelMap(names, syn[0], syn[1]) if syn else label_map_from_names(names)
        if wnid_file is not None:
            mapping = read_label_file(wnid_file)
            if len(mapping) != num_classes:
                raise AnnotationError(f"{wnid_file} lists {len(mapping)} classes but the model has {num_classes} "
                                      f"outputs")
            if labels is None:
                labels, source = mapping, str(wnid_file)
            else:
                aliases = [tuple(a) + (m,) for a, m in zip(labels.aliases or [()] * len(labels), mapping.names)]
                wnids = [w or m for w, m in zip(labels.wnids, mapping.wnids)]
                labels = LabelMap(list(labels.names), wnids, aliases)
        return cls(labels, num_classes, source)

    @property
    def names(self) -> list[str]:
        return list(self.labels.names) if self.labels is not None else [str(i) for i in range(self.num_classes)]

    def index(self, label: str) -> int | None:
        label = str(label).strip()
        if self.labels is not None:
            hit = self.labels.index(label)
            if hit is not None:
                return hit
        if _INT.match(label) and int(label) < self.num_classes:
            return int(label)
        return None


@dataclass
class ClassMap:
    """A parsed class-map file: dataset classes in file order, each with its model-class names and line number."""
    name: str
    classes: list[str]
    members: list[list[str]]
    lines: list[int]


def builtin_class_map_path(name: str) -> Path:
    return Path(__file__).with_name("classmaps") / BUILTIN_CLASS_MAPS[name]


def read_class_map(spec: str | Path) -> ClassMap:
    """A built-in map name (``voc-imagenet``, ``coco-imagenet``) or a class-map file (see the module docstring)."""
    spec = str(spec)
    if spec in BUILTIN_CLASS_MAPS:
        path, name = builtin_class_map_path(spec), spec
    elif Path(spec).is_file():
        path, name = Path(spec), spec
    else:
        raise InputError(f"unknown class map {spec!r}: neither a file nor one of the built-in maps "
                         f"{', '.join(sorted(BUILTIN_CLASS_MAPS))}")
    classes, members, lines, seen = [], [], [], set()
    for n, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if ":" not in line:
            raise AnnotationError(f"{path}:{n}: expected 'dataset_class: model_class, model_class, ...', got "
                                  f"{line!r}")
        cls, _, rest = line.partition(":")
        cls = cls.strip()
        if not cls:
            raise AnnotationError(f"{path}:{n}: empty dataset class name")
        if cls.lower() in seen:
            raise AnnotationError(f"{path}:{n}: dataset class {cls!r} is listed twice")
        seen.add(cls.lower())
        classes.append(cls)
        members.append([m.strip() for m in rest.split(",") if m.strip()])
        lines.append(n)
    if not classes:
        raise AnnotationError(f"class map {path} lists no class")
    return ClassMap(name, classes, members, lines)


class ClassResolver:
    """Dataset label → class key. Without a class map the key is the model class index and an unknown label raises;
    with one, the key is the dataset class index (map order), ``candidates[key]`` its model classes, and labels
    without a counterpart return None (counted by name in ``unmapped``)."""

    def __init__(self, model_classes: ModelClasses, class_map: ClassMap | None = None):
        self.model_classes = model_classes
        self.class_map = class_map
        self.unmapped: dict[str, int] = {}
        self.candidates: dict[int, tuple[int, ...]] = {}
        if class_map is None:
            self.class_names = model_classes.names
            self.class_map_name = None
            return
        self.class_names = list(class_map.classes)
        self.class_map_name = class_map.name
        self._lookup = {c.lower(): k for k, c in enumerate(class_map.classes)}
        for k, (members, line) in enumerate(zip(class_map.members, class_map.lines)):
            resolved = []
            for m in members:
                idx = model_classes.index(m)
                if idx is None:
                    raise AnnotationError(f"class map {class_map.name}, line {line}: {m!r} is not one of the model's "
                                          f"{model_classes.num_classes} classes ({model_classes.source})")
                if idx not in resolved:
                    resolved.append(idx)
            if resolved:
                self.candidates[k] = tuple(resolved)

    def key(self, label: str, where: str) -> int | None:
        label = str(label).strip()
        if self.class_map is None:
            idx = self.model_classes.index(label)
            if idx is None:
                raise AnnotationError(
                    f"{where}: class {label!r} is not one of the model's {self.model_classes.num_classes} classes "
                    f"(names, WordNet ids or indices of the {self.model_classes.source}); pass a class map "
                    f"(--class-map) to map dataset classes to model classes")
            return idx
        k = self._lookup.get(label.lower())
        if k is None and _INT.match(label) and int(label) < len(self.class_names):
            k = int(label)
        if k is None or k not in self.candidates:
            name = self.class_names[k] if k is not None else label
            self.unmapped[name] = self.unmapped.get(name, 0) + 1
            return None
        return k
