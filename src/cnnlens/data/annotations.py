"""Pascal VOC / ImageNet (ILSVRC) XML box annotations and class-name label files.

Boxes in the XML are 1-based inclusive corners; cnnlens stores 0-based half-open boxes ``(x1, y1, x2, y2)``
(columns x1 ≤ x < x2), metrics.md §6. Every problem with a file raises :class:`AnnotationError` naming the file.
"""
from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from ..errors import InputError

_WNID = re.compile(r"^n\d{8}$")


class AnnotationError(InputError):
    """A missing or malformed annotation or label file, or a box that does not fit its image."""


@dataclass(frozen=True)
class Box:
    """A ground-truth box: class name (as in the file), 0-based half-open corners, VOC ``difficult`` flag."""
    name: str
    x1: float
    y1: float
    x2: float
    y2: float
    difficult: bool = False

    @property
    def corners(self) -> tuple[float, float, float, float]:
        return (self.x1, self.y1, self.x2, self.y2)


@dataclass
class Annotation:
    filename: str | None
    width: int
    height: int
    boxes: list[Box] = field(default_factory=list)


def _text(node: ET.Element, tag: str, path: Path, required: bool = True) -> str | None:
    child = node.find(tag)
    if child is None or child.text is None or not child.text.strip():
        if required:
            raise AnnotationError(f"{path}: missing <{tag}>")
        return None
    return child.text.strip()


def _number(node: ET.Element, tag: str, path: Path) -> float:
    raw = _text(node, tag, path)
    try:
        return float(raw)  # type: ignore[arg-type]
    except ValueError:
        raise AnnotationError(f"{path}: <{tag}> is not a number: {raw!r}") from None


def parse_voc_xml(path: str | Path, image_size: tuple[int, int] | None = None, clip: bool = False) -> Annotation:
    """Read a Pascal VOC or ImageNet XML file. ``image_size`` (width, height) replaces a missing <size>; a box
    outside the image raises unless ``clip=True`` (then it is clipped; a box left empty raises)."""
    path = Path(path)
    if not path.is_file():
        raise AnnotationError(f"annotation file not found: {path}")
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as exc:
        raise AnnotationError(f"{path}: malformed XML ({exc})") from None
    if root.tag != "annotation":
        raise AnnotationError(f"{path}: expected an <annotation> root element, got <{root.tag}>")
    size = root.find("size")
    if size is not None and size.find("width") is not None:
        width, height = int(_number(size, "width", path)), int(_number(size, "height", path))
    elif image_size is not None:
        width, height = image_size
    else:
        raise AnnotationError(f"{path}: missing <size> (width/height)")
    if width <= 0 or height <= 0:
        raise AnnotationError(f"{path}: image size {width}×{height} is not positive")
    if image_size is not None and tuple(image_size) != (width, height):
        raise AnnotationError(f"{path}: <size> says {width}×{height} but the image is {image_size[0]}×{image_size[1]}")
    boxes = []
    for obj in root.findall("object"):
        name = _text(obj, "name", path)
        bnd = obj.find("bndbox")
        if bnd is None:
            raise AnnotationError(f"{path}: object {name!r} has no <bndbox>")
        xmin, ymin, xmax, ymax = (_number(bnd, t, path) for t in ("xmin", "ymin", "xmax", "ymax"))
        x1, y1, x2, y2 = xmin - 1.0, ymin - 1.0, xmax, ymax          # 1-based inclusive → 0-based half-open
        outside = x1 < 0 or y1 < 0 or x2 > width or y2 > height
        if outside and clip:
            x1, y1, x2, y2 = max(x1, 0.0), max(y1, 0.0), min(x2, float(width)), min(y2, float(height))
        elif outside:
            raise AnnotationError(f"{path}: box of {name!r} ({xmin:g},{ymin:g},{xmax:g},{ymax:g}) lies outside the "
                                  f"{width}×{height} image (pass clip_boxes=True / --clip-boxes to clip it)")
        if x2 <= x1 or y2 <= y1:
            raise AnnotationError(f"{path}: box of {name!r} ({xmin:g},{ymin:g},{xmax:g},{ymax:g}) is empty")
        difficult = (_text(obj, "difficult", path, required=False) or "0") == "1"
        boxes.append(Box(str(name), x1, y1, x2, y2, difficult))
    return Annotation(_text(root, "filename", path, required=False), width, height, boxes)


@dataclass
class LabelMap:
    """Class names (index = model output) with optional WordNet ids and extra synonyms (``aliases``, e.g. ImageNet's
    lemmas). ``index(name)`` accepts, in this order of precedence: the exact name, a wnid, the name in any case, one
    of its comma-separated synonyms, an alias (so ``Cardigan`` the dog and ``cardigan`` the sweater stay apart)."""
    names: list[str]
    wnids: list[str | None]
    aliases: list[tuple[str, ...]] | None = None

    def __post_init__(self):
        self._exact: dict[str, int] = {}
        self._lookup: dict[str, int] = {}
        levels: list[list[tuple[str, int]]] = [[], [], [], []]
        for i, (name, wnid) in enumerate(zip(self.names, self.wnids)):
            self._exact.setdefault(name.strip(), i)
            if wnid:
                levels[0].append((wnid, i))
            levels[1].append((name, i))
            levels[2].extend((s.strip(), i) for s in name.split(","))
            if self.aliases is not None and i < len(self.aliases):
                levels[3].extend((s.strip(), i) for a in self.aliases[i] for s in a.split(","))
        for level in levels:
            for key, i in level:
                if key:
                    self._lookup.setdefault(key.lower(), i)

    def __len__(self) -> int:
        return len(self.names)

    def index(self, name: str) -> int | None:
        key = name.strip()
        hit = self._exact.get(key)
        return hit if hit is not None else self._lookup.get(key.lower())


def read_label_file(path: str | Path) -> LabelMap:
    """One class per line, in model-output order: ``name`` or ``wnid name, synonyms`` (ImageNet's
    LOC_synset_mapping.txt). Blank lines and lines starting with # are ignored."""
    path = Path(path)
    if not path.is_file():
        raise AnnotationError(f"label file not found: {path}")
    names, wnids = [], []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        first, _, rest = line.partition(" ")
        if _WNID.match(first):
            wnids.append(first)
            names.append(rest.strip() or first)
        else:
            wnids.append(None)
            names.append(line)
    if not names:
        raise AnnotationError(f"label file {path} lists no class")
    return LabelMap(names, wnids)


def label_map_from_names(names: Sequence[str]) -> LabelMap:
    return LabelMap(list(names), [None] * len(names))
