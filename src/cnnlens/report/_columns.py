"""The evaluation page's per-record data in columns (issue 21, item 9): a run over ImageNet val × 9 methods has
450,000 records, so the page stores them as numbers in columns, not as one JSON object per record.

* every per-record field is one column over the records (in the page's order: sample, target, method, layer);
  columns whose values come in runs (sample, target, layer, the indices of notes, flags, images and maps) are
  run-length encoded as ``{"rle": [value, count, value, count, ...]}``;
* strings (sample ids, target names, notes, flags) are stored once, the columns hold their indices;
* metric values are float32 columns, base64-encoded (``{"f32": "..."}``, NaN = no value): 5.3 characters per value
  and no number parsing in the browser (float32 keeps 7 significant digits; the page shows at most 4); the method
  column likewise as bytes (``{"u8": "..."}``);
* deletion / insertion curves are averaged per method and layer (``curve_means``); a record's own curves are kept
  only where its map was saved (the records the detail view can show with their maps).

:func:`records_from_columns` turns the columns back into the per-record dicts of ``evaluation_page_data`` (what
the page's script reads, written in Python for the tests).
"""
from __future__ import annotations

import base64
import json
import math
import sys
from array import array
from typing import Any, Iterable


def _b64(arr: array) -> str:
    if sys.byteorder != "little":            # the browser's typed arrays are little-endian
        arr = array(arr.typecode, arr)
        arr.byteswap()
    return base64.b64encode(arr.tobytes()).decode("ascii")


def f32_column(values: Iterable[float | None]) -> dict[str, str]:
    """Numbers (None → NaN) as base64 of little-endian float32."""
    return {"f32": _b64(array("f", [math.nan if v is None else v for v in values]))}


def u8_column(values: Iterable[int]) -> dict[str, str]:
    return {"u8": _b64(array("B", values))}


def decode_column(column: Any) -> list:
    """A column back as a list: run-length, float32 (NaN → None) or byte columns, or a plain list."""
    if isinstance(column, dict) and "f32" in column:
        arr = array("f")
        arr.frombytes(base64.b64decode(column["f32"]))
        if sys.byteorder != "little":
            arr.byteswap()
        return [None if math.isnan(v) else v for v in arr]
    if isinstance(column, dict) and "u8" in column:
        return list(base64.b64decode(column["u8"]))
    return unrle(column)


def _key(v: Any) -> Any:
    """A hashable key equal for values that are equal as JSON (1 and 1.0 and True kept apart)."""
    if v is None or isinstance(v, (str, int, float)):
        return (type(v).__name__, v)
    if not v and isinstance(v, (dict, list, tuple)):
        return ("empty", type(v).__name__)
    return ("json", json.dumps(v, sort_keys=True))


def rle(values: Iterable[Any]) -> dict[str, list]:
    """[a, a, a, b] → {"rle": [a, 3, b, 1]} (values compared as JSON)."""
    out: list = []
    prev, key, count = None, None, 0
    for v in values:
        k = _key(v)
        if count and k == key:
            count += 1
            continue
        if count:
            out += [prev, count]
        prev, key, count = v, k, 1
    if count:
        out += [prev, count]
    return {"rle": out}


def unrle(column: Any) -> list:
    if isinstance(column, dict) and "rle" in column:
        runs = column["rle"]
        out: list = []
        for i in range(0, len(runs), 2):
            out += [runs[i]] * runs[i + 1]
        return out
    return list(column)


class _Interned:
    """Strings (or JSON values) stored once; ``index(v)`` is the position in ``items``."""

    def __init__(self, first: Any = None, with_first: bool = False):
        self.items: list = []
        self.pos: dict[Any, int] = {}
        if with_first:
            self.index(first)

    def index(self, v: Any) -> int:
        k = _key(v)
        i = self.pos.get(k)
        if i is None:
            i = self.pos[k] = len(self.items)
            self.items.append(v)
        return i


class RecordColumns:
    """Collects the page's records (dicts as ``evaluation_page_data`` builds them) into columns."""

    def __init__(self, metric_order: list[str], methods: list[str], layers: list[str]):
        self.metric_order, self.methods, self.layers = list(metric_order), list(methods), list(layers)
        self.samples = _Interned()
        self.target_names = _Interned()
        self.notes = _Interned({}, with_first=True)          # index 0: no notes
        self.flags = _Interned([], with_first=True)          # index 0: no flags
        self.cols: dict[str, list] = {k: [] for k in ("sample", "target", "target_name", "method", "layer", "notes",
                                                          "flags", "image", "map")}
        self.values: list[list] = [[] for _ in self.metric_order]
        self.curves: dict[str, dict[str, list[float]]] = {}
        self.sums: dict[str, dict[str, list]] = {}            # "method\tlayer" → kind → [sum per point, n]

    def add(self, rec: dict[str, Any]) -> None:
        i = len(self.cols["sample"])
        c = self.cols
        c["sample"].append(self.samples.index(rec["sample"]))
        c["target"].append(rec.get("target"))
        c["target_name"].append(self.target_names.index(rec.get("target_name")))
        c["method"].append(self.methods.index(rec["method"]))
        c["layer"].append(self.layers.index(rec["layer"]))
        c["notes"].append(self.notes.index(rec.get("notes") or {}))
        c["flags"].append(self.flags.index(list(rec.get("flags") or [])))
        c["image"].append(-1 if rec.get("image") is None else rec["image"])
        c["map"].append(-1 if rec.get("map") is None else rec["map"])
        for j, v in enumerate(rec.get("values") or [None] * len(self.metric_order)):
            self.values[j].append(v)
        curves = rec.get("curves") or {}
        if curves and rec.get("map") is not None:
            self.curves[str(i)] = curves
        key = f"{rec['method']}\t{rec['layer']}"
        for kind, curve in curves.items():
            acc = self.sums.setdefault(key, {}).get(kind)
            if acc is None:
                self.sums[key][kind] = [[float(v) for v in curve], 1]
            elif len(acc[0]) == len(curve):
                acc[0] = [a + float(v) for a, v in zip(acc[0], curve)]
                acc[1] += 1

    def __len__(self) -> int:
        return len(self.cols["sample"])

    def curve_means(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for key, kinds in self.sums.items():
            out[key] = {kind: [round(s / n, 4) for s in acc] for kind, (acc, n) in kinds.items()}
            out[key]["n"] = max(n for _, n in kinds.values())
        return out

    def to_json(self) -> dict[str, Any]:
        c = self.cols
        return {
            "n": len(self), "samples": self.samples.items, "target_names": self.target_names.items,
            "note_sets": self.notes.items, "flag_sets": self.flags.items,
            "sample": rle(c["sample"]), "target": rle(c["target"]), "target_name": rle(c["target_name"]),
            "method": u8_column(c["method"]) if 1 < len(self.methods) < 256 else rle(c["method"]),
            "layer": rle(c["layer"]), "notes": rle(c["notes"]), "flags": rle(c["flags"]),
            "image": rle(c["image"]), "map": rle(c["map"]),
            "values": [f32_column(col) for col in self.values], "curves": self.curves,
            "curve_means": self.curve_means(),
        }


def records_from_columns(table: dict[str, Any], methods: list[str], layers: list[str]) -> list[dict[str, Any]]:
    """The per-record dicts back from :meth:`RecordColumns.to_json` (curves only where the page keeps them)."""
    n = table["n"]
    cols = {k: decode_column(table[k]) for k in ("sample", "target", "target_name", "method", "layer", "notes",
                                                 "flags", "image", "map")}
    values = [decode_column(col) for col in table["values"]]
    out = []
    for i in range(n):
        out.append({
            "sample": table["samples"][cols["sample"][i]], "target": cols["target"][i],
            "target_name": table["target_names"][cols["target_name"][i]],
            "method": methods[cols["method"][i]], "layer": layers[cols["layer"][i]],
            "values": [col[i] for col in values],
            "notes": table["note_sets"][cols["notes"][i]], "flags": table["flag_sets"][cols["flags"][i]],
            "image": None if cols["image"][i] < 0 else cols["image"][i],
            "map": None if cols["map"][i] < 0 else cols["map"][i],
            "curves": table["curves"].get(str(i), {}),
        })
    return out
