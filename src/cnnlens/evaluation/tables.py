"""Summary tables (markdown, CSV, JSON) and plots of an evaluation, from its per-(image, class, method, layer)
records. A metric that needs boxes on a dataset without boxes is reported as "n/a (no boxes)" (null in JSON, with
the reason), never as a number or an error."""
from __future__ import annotations

import csv
import io
import json
import math
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from ..layer_order import layer_sort_key
from ..metrics import MetricSpec, auc, summarize
from .store import atomic_write_text

NA_NO_BOXES = "no boxes"


def summarize_records(records: list[dict], specs: Sequence[MetricSpec],
                      layer_depth: Mapping[str, int] | None = None) -> list[dict]:
    """One row per (method, layer): {"method", "layer", "n", "seconds", metric: {"mean", "se", "n"[, "na"]}}, by
    method, then layer in network order (``layer_depth``: {module name: depth}; unknown layers in natural order).

    A metric none of whose records could be computed for a stated reason (``record["na"][metric]``, e.g. "no boxes")
    gets ``{"mean": nan, "se": nan, "n": 0, "na": reason}``."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in records:
        groups.setdefault((r["method"], r["layer"]), []).append(r)
    rows = []
    for (method, layer), recs in sorted(groups.items(), key=lambda kv: (kv[0][0],
                                                                       layer_sort_key(kv[0][1], layer_depth))):
        row: dict[str, Any] = {"method": method, "layer": layer, "n": len(recs),
                               "seconds": sum(r["seconds"] for r in recs) / len(recs),
                               "constant_maps": sum(r["flags"]["constant_map"] for r in recs)}
        for spec in specs:
            reasons = {(r.get("na") or {}).get(spec.name) for r in recs}
            if None not in reasons:                              # every record is n/a for a stated reason
                row[spec.name] = {"mean": math.nan, "se": math.nan, "n": 0, "na": sorted(reasons)[0]}
                continue
            kept = [r for r in recs if not (r.get("na") or {}).get(spec.name)]
            vals_f = [math.nan if r["metrics"].get(spec.name) is None else float(r["metrics"][spec.name])
                      for r in kept]
            row[spec.name] = summarize(spec, vals_f, [r["target"] for r in kept])
        rows.append(row)
    return rows


def format_cell(cell: dict) -> str:
    if cell.get("na"):
        return f"n/a ({cell['na']})"
    m, se = cell["mean"], cell["se"]
    if m is None or not math.isfinite(m):
        return "–"
    digits = 2 if abs(m) >= 1 or m == 0 else 4
    return f"{m:.{digits}f} ± {se:.{digits}f}" if se is not None and math.isfinite(se) else f"{m:.{digits}f}"


def markdown_table(rows: list[dict], specs: Sequence[MetricSpec]) -> str:
    head = ["method", "layer", "n"] + [s.header for s in specs] + ["s/map"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["method"], f"`{r['layer']}`", str(r["n"])] + [format_cell(r[s.name]) for s in specs] + \
                [f"{r['seconds']:.4f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def layer_table(rows: list[dict], specs: Sequence[MetricSpec],
                layer_depth: Mapping[str, int] | None = None) -> str | None:
    """The Relevance-CAM layout: one row per method, columns = (layer, metric) in network order. None with a single
    layer."""
    layers = sorted({r["layer"] for r in rows}, key=lambda lay: layer_sort_key(lay, layer_depth))
    methods = sorted({r["method"] for r in rows})
    if len(layers) < 2:
        return None
    by = {(r["method"], r["layer"]): r for r in rows}
    head = ["method"] + [f"{lay} {s.name} {s.arrow}" for lay in layers for s in specs]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for m in methods:
        cells = [m] + [(format_cell(by[(m, lay)][s.name]) if (m, lay) in by else "–") for lay in layers
                       for s in specs]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


#: Unreadable images named in the skipped line (the rest are in summary.json's ``unreadable``).
NAMED_UNREADABLE = 3


def _clip(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1].rstrip() + "…"


def skipped_line(skipped: Any, unreadable: Mapping[str, str] | None = None) -> str | None:
    """One sentence for the dataset's skipped images (``describe()["skipped"]``: a count or {reason: count}); None
    when no image was skipped (also for a dict whose counts are all zero). ``unreadable`` (sample id → why, as
    ``"<id>: <reason>"``) names the first unreadable files: ``Skipped images: 1 (unreadable: 1) — huge.png: ...``."""
    if not skipped:
        return None
    if isinstance(skipped, dict):
        counts = {k: int(v) for k, v in skipped.items() if int(v)}
        if not counts:
            return None
        parts = ", ".join(f"{k}: {v}" for k, v in sorted(counts.items()))
        line = f"Skipped images: {sum(counts.values())} ({parts})"
    else:
        line = f"Skipped images: {skipped}"
    if unreadable:
        why = [str(v) for _, v in sorted(unreadable.items())]
        more = len(why) - NAMED_UNREADABLE
        line += " — " + "; ".join(_clip(w.rstrip("."), 100) for w in why[:NAMED_UNREADABLE])
        line += f"; {more} more" if more > 0 else ""
    return line + "."


def write_tables(out: Path, rows: list[dict], specs: Sequence[MetricSpec], conventions: str, identity: dict,
                 extra: dict | None = None, layer_depth: Mapping[str, int] | None = None, *, skipped: Any = None,
                 unreadable: Mapping[str, str] | None = None) -> None:
    """``summary.md``, ``summary.csv``, ``summary.json`` (atomically). ``skipped`` (default: the dataset's) and
    ``unreadable`` (sample id → why) describe the images left out."""
    ds = identity["dataset"]
    if skipped is None:
        skipped = ds.get("skipped") if isinstance(ds, dict) else None
    if unreadable is None:
        unreadable = (ds.get("unreadable") if isinstance(ds, dict) else None) or {}
    md = [f"# cnnlens evaluation: {identity['model']} on {ds.get('name')} ({ds.get('n')} images)", "",
          f"Conventions: {conventions}.", ""]
    line = skipped_line(skipped, unreadable)
    if line:
        md += [line, ""]
    units = (extra or {}).get("units")
    if units:
        md += [f"Complete: {units['done']} of {units['total']} units (a block of images × one method run) finished."
               if units["done"] == units["total"] else
               f"**Partial**: {units['done']} of {units['total']} units finished; run the same command again to "
               f"finish.", ""]
    md += ["Values: mean ± standard error over (image, class) pairs (pointing game: over classes); ↑ higher is "
           "better, ↓ lower is better; % except deletion/insertion AUC. s/map: explanation seconds per map. "
           "n/a (no boxes): the metric needs ground-truth boxes and the dataset has none.", "",
           markdown_table(rows, specs), ""]
    pivot = layer_table(rows, specs, layer_depth)
    if pivot:
        md += ["## By layer", "", pivot, ""]
    atomic_write_text(out / "summary.md", "\n".join(md))
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["method", "layer", "n", "seconds_per_map"] +
               [f"{s.name}{suffix}" for s in specs for suffix in ("_mean", "_se", "_n")])
    for r in rows:
        cells = []
        for s in specs:
            c = r[s.name]
            cells += [f"n/a ({c['na']})", "", 0] if c.get("na") else [c["mean"], c["se"], c["n"]]
        w.writerow([r["method"], r["layer"], r["n"], f"{r['seconds']:.6g}"] + cells)
    atomic_write_text(out / "summary.csv", buf.getvalue())
    meta = {s.name: {"higher_is_better": s.higher_is_better, "description": s.description, "unit": s.unit,
                     "needs_boxes": s.needs_boxes} for s in specs}
    payload = {"identity": identity, "conventions": conventions, "metrics": meta,
               "rows": [dict(r) for r in rows], "skipped": skipped or 0}
    if unreadable:
        payload["unreadable"] = dict(sorted(unreadable.items()))
    payload.update(extra or {})
    atomic_write_text(out / "summary.json", json.dumps(nan_to_none(payload), indent=2, allow_nan=False))


def nan_to_none(o):
    if isinstance(o, float):
        return o if math.isfinite(o) else None
    if isinstance(o, dict):
        return {k: nan_to_none(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [nan_to_none(v) for v in o]
    return o


# ------------------------------------------------------------------------------------------ plots
def _save_figure(fig, path: Path) -> None:
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}.png")
    fig.savefig(tmp, dpi=120, bbox_inches="tight")
    os.replace(tmp, path)


def write_plots(out: Path, records: list[dict], rows: list[dict], specs: Sequence[MetricSpec],
                layer_depth: Mapping[str, int] | None = None) -> list[Path]:
    """A bar chart per metric (mean ± SE per method/layer; none for a metric that is n/a everywhere) and the mean
    deletion / insertion curves."""
    from ..viz.figures import _plt
    plt = _plt()                 # Agg, unless a notebook's inline backend is active (which it must keep)
    written = []
    labels = [r["method"] if len({x["layer"] for x in rows}) == 1 else f"{r['method']}\n{r['layer']}" for r in rows]
    for spec in specs:
        if all(r[spec.name].get("na") for r in rows):
            continue
        means = [r[spec.name]["mean"] for r in rows]
        ses = [r[spec.name]["se"] if math.isfinite(r[spec.name]["se"]) else 0.0 for r in rows]
        fig, ax = plt.subplots(figsize=(max(4.0, 0.9 * len(rows) + 1.5), 3.2))
        ax.bar(range(len(rows)), [m if math.isfinite(m) else 0.0 for m in means], yerr=ses, capsize=3,
               color="#4c72b0")
        ax.set_xticks(range(len(rows)), labels, rotation=30 if len(rows) > 4 else 0, ha="right" if len(rows) > 4
                      else "center", fontsize=8)
        ax.set_ylabel(f"{spec.name} {spec.arrow}" + (f" ({spec.unit})" if spec.unit else ""))
        ax.set_title(f"{spec.name} ({'higher' if spec.higher_is_better else 'lower'} is better)", fontsize=9)
        p = out / f"bar_{spec.name}.png"
        _save_figure(fig, p)
        plt.close(fig)
        written.append(p)
    for mode in ("deletion", "insertion"):
        curves: dict[tuple[str, str], list[list[float]]] = {}
        for r in records:
            if mode in r.get("curves", {}):
                curves.setdefault((r["method"], r["layer"]), []).append(r["curves"][mode])
        if not curves:
            continue
        fig, ax = plt.subplots(figsize=(4.8, 3.4))
        for (method, layer), cs in sorted(curves.items(),
                                          key=lambda kv: (kv[0][0], layer_sort_key(kv[0][1], layer_depth))):
            lengths = {len(c) for c in cs}
            if len(lengths) != 1:
                continue
            mean_curve = torch.tensor(cs, dtype=torch.float64).mean(0)
            xs = torch.linspace(0, 1, mean_curve.numel())
            ax.plot(xs, mean_curve, label=f"{method} {layer} (AUC {float(auc(mean_curve[None])):.3f})")
        ax.set_xlabel(f"fraction of pixels {'deleted' if mode == 'deletion' else 'inserted'}")
        ax.set_ylabel("class score")
        ax.set_title(f"{mode} ({'lower' if mode == 'deletion' else 'higher'} AUC is better)", fontsize=9)
        ax.legend(fontsize=6)
        p = out / f"curves_{mode}.png"
        _save_figure(fig, p)
        plt.close(fig)
        written.append(p)
    return written
