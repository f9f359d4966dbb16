"""The evaluation report, built only from the files of an evaluation results folder.

Reads ``summary.json`` (identity, conventions, metric declarations, aggregated rows), the records counted by the
results store (:mod:`cnnlens.evaluation.store`: ``results.jsonl`` and torchrun's ``results.rank{r}.jsonl`` shards,
whole units only, a unit once), the plots ``bar_<metric>.png`` and ``curves_<kind>.png``, and, where a record names
them, its input image (``"image"``) and 8-bit grayscale map (``"map"``). A folder whose run was interrupted
(``run.json`` and results, no ``summary.json``) gives a page of the finished units, labelled partial.
"""
from __future__ import annotations

import functools
import json
import math
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..layer_order import natural_key as _natural_key
from ._columns import RecordColumns
from ._images import data_uri_file, data_uri_image_file, data_uri_map_file
from .html import write_page

#: Points kept per deletion/insertion curve in the page (the detail view's small plots).
CURVE_POINTS = 48


def _finite(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        return None
    return float(v)


@functools.lru_cache(maxsize=64)
def _picks(length: int, n: int) -> tuple[int, ...]:
    """The indices a curve of ``length`` points keeps (all when at most ``n``; else ``n`` evenly spaced, ends kept)."""
    if length <= n:
        return tuple(range(length))
    return tuple(round(i * (length - 1) / (n - 1)) for i in range(n))


def _downsample(curve: Any, n: int = CURVE_POINTS) -> list[float] | None:
    """At most ``n`` points of a curve, rounded to 4 decimals; None unless every point is a finite number (checked
    at C speed: a run over ImageNet val has about a million curves)."""
    if not isinstance(curve, list) or not curve:
        return None
    try:
        if not all(map(math.isfinite, curve)):
            return None
    except TypeError:                          # None, a string or another non-number
        return None
    return [round(float(curve[i]), 4) for i in _picks(len(curve), n)]


def layer_label(layer: Any) -> str:
    """How the page names a record's layer: None (input-level methods) → "input", a layer set → "a,b,c"."""
    if layer is None:
        return "input"
    if isinstance(layer, (list, tuple)):
        return ",".join(str(v) for v in layer)
    return str(layer)


def _na_notes(rec: dict[str, Any]) -> dict[str, str]:
    """Why a record's metric has no value, as the page shows it: ``rec["na"]`` ({metric: reason}, written by
    ``cnnlens evaluate``) → "n/a (reason)"; a string in place of a metric value is taken as the note itself."""
    notes = {k: v for k, v in (rec.get("metrics") or {}).items() if isinstance(v, str)}
    na = rec.get("na")
    if isinstance(na, dict):
        for k, why in na.items():
            if why:
                text = str(why)
                notes[str(k)] = text if text.startswith("n/a") else f"n/a ({text})"
    return notes


def read_records(folder: str | Path) -> list[dict[str, Any]]:
    """The records the results store counts (every finished unit of every results file, once)."""
    from ..evaluation.store import ResultsStore
    return ResultsStore(folder).records()


def _partial_summary(folder: Path) -> dict[str, Any]:
    """What summary.json would hold, from ``run.json`` and the finished units of an interrupted run, with
    ``"partial": {"units_done", "units_total"}``."""
    from ..evaluation.store import ResultsStore
    store = ResultsStore(folder)
    identity = store.identity()
    if not isinstance(identity, dict) or not isinstance(identity.get("metrics"), list):
        raise InputError(f"{folder / 'run.json'} is not a cnnlens evaluation run (no summary.json either)")
    from ..evaluation.config import EvalConfig
    from ..evaluation.tables import summarize_records
    from ..metrics import resolve_metrics
    specs = resolve_metrics(identity["metrics"])
    records = store.records([s.name for s in specs])
    cfg = identity.get("config") or {}
    try:
        conventions = EvalConfig(**cfg).conventions()
    except TypeError:
        conventions = None
    ds = identity.get("dataset") if isinstance(identity.get("dataset"), dict) else {}
    total = None
    if isinstance(ds.get("n"), int) and isinstance(cfg.get("batch_size"), int):
        total = math.ceil(ds["n"] / cfg["batch_size"]) * len(identity.get("methods") or {})
    done = len({r.get("unit") for r in records})
    meta = {s.name: {"higher_is_better": s.higher_is_better, "description": s.description, "unit": s.unit,
                     "needs_boxes": s.needs_boxes} for s in specs}
    rows = summarize_records(records, specs)
    from ..evaluation.tables import nan_to_none
    return nan_to_none({"identity": identity, "conventions": conventions, "metrics": meta, "rows": rows,
                        "skipped": ds.get("skipped") or 0, "partial": {"units_done": done, "units_total": total}})


def _signed_methods(methods: list[str]) -> dict[str, bool]:
    try:
        from ..methods import all_methods
        specs = all_methods()
    except Exception:  # pragma: no cover - the report still builds without the registry
        specs = {}
    return {m: bool(getattr(specs.get(m), "signed", False)) for m in methods}


def _plots(folder: Path, metric_order: list[str], metrics: dict[str, Any]) -> list[dict[str, str]]:
    plots = []
    for kind in ("deletion", "insertion"):
        p = folder / f"curves_{kind}.png"
        if p.exists():
            plots.append({"name": p.name, "title": f"{kind} curves (mean over images)", "src": data_uri_file(p)})
    bars = {p.stem[len("bar_"):]: p for p in folder.glob("bar_*.png")}
    for name in metric_order + sorted(set(bars) - set(metric_order)):
        if name in bars:
            arrow = ""
            if name in metrics:
                arrow = " ↑" if metrics[name].get("higher_is_better") else " ↓"
            plots.append({"name": bars[name].name, "title": f"{name}{arrow}", "src": data_uri_file(bars[name])})
    return plots


def evaluation_page_data(folder: str | Path, compact: bool = False) -> dict[str, Any]:
    """The page's data: summary, plots and per-record metrics (+ images and colourised maps as data URIs).

    compact=False: ``records``, one dict per record; compact=True (what the page embeds): ``table``, the records
    in columns, with curves averaged per method and layer and kept per record only where the map was saved
    (``_columns.RecordColumns``; ≈ 100 bytes per record)."""
    folder = Path(folder)
    try:
        summary = json.loads((folder / "summary.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        if not (folder / "run.json").is_file():
            raise InputError(f"{folder} has no summary.json (not an evaluation results folder)") from None
        summary = _partial_summary(folder)                   # an interrupted run: its finished units
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read {folder / 'summary.json'}: {exc}") from None
    if not isinstance(summary, dict) or not isinstance(summary.get("metrics"), dict):
        raise InputError(f"{folder / 'summary.json'} is not a cnnlens evaluation summary")
    metrics: dict[str, Any] = summary["metrics"]
    metric_order = list(metrics)
    raw = read_records(folder)
    rows = [dict(r, layer=layer_label(r.get("layer"))) for r in summary.get("rows", []) if isinstance(r, dict)]
    methods = list(dict.fromkeys([r.get("method") for r in rows] + [r["method"] for r in raw]))
    layers = sorted(dict.fromkeys([r["layer"] for r in rows] + [layer_label(r.get("layer")) for r in raw]),
                    key=_natural_key)
    signed = _signed_methods(methods)
    raw.sort(key=lambda r: (str(r["sample"]), str(r.get("target")), methods.index(r["method"]),
                            layers.index(layer_label(r.get("layer")))))
    image_uris: dict[str, str] = {}
    image_index: dict[str, int] = {}
    map_uris: list[str] = []
    records = []
    table = RecordColumns(metric_order, methods, layers) if compact else None
    for rec in raw:
        m = rec.get("metrics") or {}
        img = rec.get("image")
        img_i = None
        if isinstance(img, str) and (folder / img).is_file():
            if img not in image_index:
                image_index[img] = len(image_uris)
                image_uris[img] = data_uri_image_file(folder / img)
            img_i = image_index[img]
        map_i = None
        mp = rec.get("map")
        if isinstance(mp, str) and (folder / mp).is_file():
            map_i = len(map_uris)
            map_uris.append(data_uri_map_file(folder / mp))
        curves = rec.get("curves") or {}
        (table.add if table is not None else records.append)({
            "sample": str(rec["sample"]), "target": rec.get("target"),
            "target_name": rec.get("target_name") if rec.get("target_name") is not None else str(rec.get("target")),
            "method": rec["method"], "layer": layer_label(rec.get("layer")),
            "values": [_finite(m.get(k)) for k in metric_order],
            "notes": _na_notes(rec),
            "flags": [k for k, v in (rec.get("flags") or {}).items() if v],
            "image": img_i, "map": map_i,
            "curves": {k: c for k in ("deletion", "insertion") if (c := _downsample(curves.get(k))) is not None},
        })
    identity = summary.get("identity") or {}
    model = identity.get("model") if isinstance(identity, dict) else None
    return {"kind": "evaluation", "title": "cnnlens evaluation", "model": model, "identity": identity,
            "partial": summary.get("partial"),
            "conventions": summary.get("conventions"), "skipped": summary.get("skipped"),
            "unreadable": summary.get("unreadable") or {}, "metrics": metrics,
            "metric_order": metric_order, "rows": rows, "methods": methods, "layers": layers, "signed": signed,
            "plots": _plots(folder, metric_order, metrics),
            **({"table": table.to_json()} if table is not None else {"records": records}),
            "images": list(image_uris.values()), "maps": map_uris}


def write_evaluation_report(folder: str | Path) -> Path:
    """(Re)build ``folder/report.html`` from an evaluation results folder; return its path."""
    data = evaluation_page_data(folder, compact=True)
    title = "cnnlens evaluation" + (f" · {data['model']}" if data.get("model") else "") + \
        (" (partial)" if data.get("partial") else "")
    return write_page(Path(folder), data, title)
