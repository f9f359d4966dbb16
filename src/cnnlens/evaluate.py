"""Evaluate explanation methods with the metrics of metrics.md on a dataset with boxes.

``evaluate(model, dataset, methods, metrics, out=DIR)`` streams one JSON line per (image, target class, method, layer)
to ``DIR/results.jsonl`` as soon as a block (a batch of images × one method) is done, and writes the summary tables
(``summary.md``, ``summary.csv``, ``summary.json``: mean ± standard error) and plots at the end. A re-run with the same
``out`` resumes: finished blocks are never recomputed, a block cut short by a kill is recomputed whole, and because every
block's composition is fixed by the dataset order the final table equals that of an uninterrupted run.
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from ._state import model_device, model_dtype, preserved
from .api import explain
from .data.boxes import Sample
from .errors import CnnlensError, InputError, TargetError
from .methods import all_methods, get_method
from .metrics import (METRICS, MetricSpec, auc, average_drop, average_drop_rcam, average_increase_rcam,
                      bbox_score, boxes_mask, class_scores, confidence_pair, constant_maps, energy_pointing_game,
                      increase_in_confidence, iou, perturbation_curves, pointing_game, resolve_metrics, saliency,
                      summarize)

RESULTS = "results.jsonl"
RUN = "run.json"


class ResumeError(CnnlensError, ValueError):
    """The output folder holds a run with different settings."""


@dataclass
class EvalConfig:
    """Every convention a number depends on (metrics.md §0); recorded in ``run.json`` and printed with the tables.

    target: "label" (every ground-truth class of the image) or "predicted" (top-1 on the original image).
    step: deletion/insertion pixels per step (None: H·W/224, i.e. 224 at 224², metrics.md §4.2).
    """
    target: str = "label"
    batch_size: int = 8
    score: str = "softmax"
    mask_space: str = "raw"
    signed_mode: str = "minmax"
    keep_fraction: float = 0.5
    step: int | None = None
    deletion_substrate: str = "zero_normalized"
    insertion_substrate: str = "blur"
    perturbation_batch: int = 64
    tolerance: float = 15.0
    inclusive: bool = False
    iou_rule: str = "frac_max"
    iou_threshold: float = 0.2
    iou_kind: str = "pixel"
    seed: int = 0

    def check(self) -> None:
        choices = {"target": ("label", "predicted"), "score": ("softmax", "sigmoid", "logit"),
                   "mask_space": ("raw", "normalized"), "signed_mode": ("minmax", "relu"),
                   "deletion_substrate": ("zero_normalized", "black", "blur"),
                   "insertion_substrate": ("blur", "zero_normalized"),
                   "iou_rule": ("frac_max", "mean_std", "otsu", "value"), "iou_kind": ("pixel", "box")}
        for key, allowed in choices.items():
            if getattr(self, key) not in allowed:
                raise InputError(f"{key} must be one of {allowed}, got {getattr(self, key)!r}")
        if self.batch_size < 1 or self.perturbation_batch < 1:
            raise InputError("batch sizes must be positive")
        if self.step is not None and self.step < 1:
            raise InputError(f"step must be a positive integer, got {self.step}")

    def conventions(self) -> str:
        return (f"target={self.target}; score={self.score}; AD/IC mask={self.mask_space} (soft map; rcam: top "
                f"{self.keep_fraction:.0%}, ÷#drops); signed maps={self.signed_mode}; deletion/insertion step="
                f"{self.step or 'HW/224'}, substrates {self.deletion_substrate}/{self.insertion_substrate}; pointing "
                f"tolerance {'≤' if self.inclusive else '<'} {self.tolerance:g} px (original size), mean over classes; "
                f"IoU {self.iou_kind} with rule {self.iou_rule}"
                f"{'' if self.iou_rule in ('mean_std', 'otsu') else f' t={self.iou_threshold:g}'}")


@dataclass
class MethodRun:
    """One method and the layers it runs at (None: its default)."""
    name: str
    layers: list[str] | None = None
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class Results:
    records: list[dict]
    summary: list[dict]
    out: Path | None
    config: EvalConfig
    metrics: list[str]

    def table(self) -> str:
        return markdown_table(self.summary, [METRICS[m] for m in self.metrics])


# ------------------------------------------------------------------------------------------ model-facing helpers
def _forward_logits(model: nn.Module, x: torch.Tensor, batch: int) -> torch.Tensor:
    out = []
    with torch.inference_mode():
        for i in range(0, x.shape[0], batch):
            out.append(model(x[i:i + batch]).float())
    return torch.cat(out)


def _finite_or_none(v: float) -> float | None:
    return v if math.isfinite(v) else None


def _metric_values(model, units_x, targets, heatmaps, signed, base_y, samples, unit_sample, metrics, cfg, mean, std):
    """{metric: list of per-unit floats}, {curve: list of lists}, per-unit constant flags."""
    n, _, h, w = units_x.shape
    values: dict[str, list[float]] = {}
    curves: dict[str, list[list[float]]] = {}
    s_in = saliency(heatmaps, (h, w), signed=signed, signed_mode=cfg.signed_mode, zero=0.5 if signed else 0.0)
    names = {m.name for m in metrics}
    kw = dict(mask_space=cfg.mask_space, mean=mean, std=std, score=cfg.score, base_scores=base_y,
              batch_size=cfg.perturbation_batch)
    if names & {"average-drop", "increase"}:
        y, o = confidence_pair(model, units_x, s_in, targets, variant="standard", **kw)
        values["average-drop"] = average_drop(y, o).tolist()
        values["increase"] = increase_in_confidence(y, o).tolist()
    if names & {"average-drop-rcam", "average-increase-rcam"}:
        y, o = confidence_pair(model, units_x, s_in, targets, variant="rcam", keep_fraction=cfg.keep_fraction, **kw)
        values["average-drop-rcam"] = average_drop_rcam(y, o).tolist()
        values["average-increase-rcam"] = average_increase_rcam(y, o).tolist()
    step = cfg.step or max(1, (h * w) // 224)
    for mode, sub in (("deletion", cfg.deletion_substrate), ("insertion", cfg.insertion_substrate)):
        if mode in names:
            c = perturbation_curves(model, units_x, s_in, targets, mode=mode, step=step, substrate=sub, mean=mean,
                                    std=std, score=cfg.score, batch_size=cfg.perturbation_batch)
            values[mode] = auc(c).tolist()
            curves[mode] = c.tolist()
    loc = [m for m in ("pointing-game", "energy-pointing-game", "bbox", "iou") if m in names]
    if loc:
        out = {m: [math.nan] * n for m in loc}
        by_size: dict[tuple[int, int], list[int]] = {}
        for u in range(n):
            by_size.setdefault(tuple(samples[unit_sample[u]].size), []).append(u)
        for size, idx in by_size.items():
            sel = torch.tensor(idx, device=heatmaps.device)
            s = saliency(heatmaps.index_select(0, sel), size, signed=signed, signed_mode=cfg.signed_mode,
                         zero=0.5 if signed else 0.0).cpu()
            gt_boxes = [samples[unit_sample[u]].class_boxes(int(targets[u])) for u in idx]
            g = torch.stack([boxes_mask(b, size) for b in gt_boxes])
            res = {}
            if "pointing-game" in loc:
                res["pointing-game"] = 100.0 * pointing_game(s, g, cfg.tolerance, cfg.inclusive)
            if "energy-pointing-game" in loc:
                res["energy-pointing-game"] = 100.0 * energy_pointing_game(s, g)
            if "bbox" in loc:
                res["bbox"] = 100.0 * bbox_score(s, g)
            if "iou" in loc:
                res["iou"] = 100.0 * iou(s, g, cfg.iou_rule, cfg.iou_threshold, cfg.iou_kind, boxes=gt_boxes)
            for m, v in res.items():
                for j, u in enumerate(idx):
                    out[m][u] = float(v[j])
        values.update(out)
    return values, curves, constant_maps(heatmaps).tolist()


def _explain_maps(model, x, run: MethodRun, targets, seed: int) -> list[tuple[str, Any]]:
    """[(layer label, Explanation)] for one method on the units' batch."""
    spec = get_method(run.name)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if spec.layers == "single" and run.layers:
            res = explain(model, x, run.name, target=targets, layer=list(run.layers), **run.options)
            return [(str(k), v) for k, v in res.items()]
        e = explain(model, x, run.name, target=targets, **run.options)
    layer = e.layer
    label = "input" if layer is None else (layer if isinstance(layer, str) else "+".join(map(str, layer)))
    return [(label, e)]


# ------------------------------------------------------------------------------------------ persistence
def _read_results(path: Path, required_metrics: set[str]) -> tuple[list[dict], set[str]]:
    """Valid records and the finished block ids; lines of blocks cut short (or unreadable) are dropped and the file
    is rewritten without them (atomically)."""
    if not path.is_file():
        return [], set()
    blocks: dict[str, list[dict]] = {}
    sizes: dict[str, int] = {}
    order: list[str] = []
    dirty = False
    with open(path, "r", encoding="utf-8") as f:
        for line in f:
            try:
                rec = json.loads(line)
                bid, size = rec["block"], int(rec["block_size"])
            except (ValueError, KeyError, TypeError):
                dirty = True
                continue
            if bid not in blocks:
                order.append(bid)
            blocks.setdefault(bid, []).append(rec)
            sizes[bid] = size
    kept, done = [], set()
    for bid in order:
        recs = blocks[bid]
        if len(recs) == sizes[bid] and all(required_metrics <= set(r["metrics"]) for r in recs):
            kept.extend(recs)
            done.add(bid)
        else:
            dirty = True
    if dirty:
        _atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in kept))
    return kept, done


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _append_block(path: Path, records: list[dict]) -> None:
    data = "".join(json.dumps(r) + "\n" for r in records).encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
    finally:
        os.close(fd)


def _check_run_file(out: Path, identity: dict) -> None:
    run = out / RUN
    if run.is_file():
        try:
            old = json.loads(run.read_text(encoding="utf-8"))
        except ValueError:
            old = None
        if old is not None and old.get("identity") != identity:
            diff = [k for k in identity if (old.get("identity") or {}).get(k) != identity[k]]
            raise ResumeError(f"{out} holds a run with different settings ({', '.join(diff) or 'format'}); "
                              f"use another --out folder or delete it")
    out.mkdir(parents=True, exist_ok=True)
    _atomic_write_text(run, json.dumps({"identity": identity}, indent=2))


# ------------------------------------------------------------------------------------------ main entry point
def _as_runs(methods: Sequence[str | MethodRun] | str | None, layers: Sequence[str] | str | None,
             options: dict[str, dict] | None) -> list[MethodRun]:
    if methods is None or methods == "all":
        names = list(all_methods())
    elif isinstance(methods, str):
        names = [m.strip() for m in methods.split(",") if m.strip()]
    else:
        names = list(methods)
    if not names:
        raise InputError("no method given")
    if isinstance(layers, str):
        layers = [layers] if layers == "blocks" else [s.strip() for s in layers.split(",") if s.strip()]
    runs = []
    for m in names:
        if isinstance(m, MethodRun):
            runs.append(m)
            continue
        spec = get_method(m)
        opts = dict((options or {}).get(m, {}))
        spec.check_options(opts)
        runs.append(MethodRun(m, list(layers) if layers and spec.layers == "single" else None, opts))
    return runs


def evaluate(model: nn.Module, dataset, methods: Sequence[str | MethodRun] | str | None = None,
             metrics: Sequence[str] | str | None = None, *, layers: Sequence[str] | str | None = None,
             out: str | Path | None = None, config: EvalConfig | None = None,
             method_options: dict[str, dict] | None = None, progress: bool = True, plots: bool = True,
             model_name: str | None = None) -> Results:
    """Run ``methods`` on every image of ``dataset`` and score them with ``metrics`` (metrics.md names).

    dataset: a sequence of :class:`cnnlens.data.Sample` with ``describe()`` (``VocFolder``, ``SyntheticScenes``,
    ``Collages``). layers: for single-layer methods (CAMs), the layers to run at ("layer2,layer4", "blocks"); methods
    that choose their own layers (SISE) or none (LRP, RISE) ignore it. out: the results folder (resumable).
    """
    cfg = config or EvalConfig()
    cfg.check()
    specs: list[MetricSpec] = resolve_metrics(metrics)
    runs = _as_runs(methods, layers, method_options)
    if len(dataset) == 0:
        raise InputError("empty dataset: no image to evaluate")
    from .data.boxes import model_preprocessing
    _, mean, std = model_preprocessing(model)
    device, dtype = model_device(model), model_dtype(model)
    metric_names = [s.name for s in specs]
    identity = {"model": model_name or type(model).__name__, "dataset": dataset.describe(),
                "config": asdict(cfg), "format": 1}
    path = None
    records: list[dict] = []
    done: set[str] = set()
    if out is not None:
        out = Path(out)
        _check_run_file(out, identity)
        path = out / RESULTS
        records, done = _read_results(path, set(metric_names))
    b = cfg.batch_size
    n_batches = math.ceil(len(dataset) / b)
    todo = [(i, r) for i in range(n_batches) for r in runs if _block_id(i, r) not in done]
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=n_batches * len(runs), initial=n_batches * len(runs) - len(todo), unit="block",
                   desc="evaluating", dynamic_ncols=True)
    num_classes = None
    with preserved(model):
        current = None
        for bi, run in todo:
            if current is None or current[0] != bi:
                samples = [dataset[j] for j in range(bi * b, min((bi + 1) * b, len(dataset)))]
                x = torch.stack([s.image for s in samples]).to(device=device, dtype=dtype)
                logits = _forward_logits(model, x, cfg.perturbation_batch)
                num_classes = logits.shape[1]
                unit_sample, unit_target = _units(samples, logits, cfg.target, num_classes)
                sel = torch.tensor(unit_sample, device=device)
                ux = x.index_select(0, sel)
                ut = torch.tensor(unit_target, device=device)
                base_y = class_scores(logits.index_select(0, sel), ut, cfg.score)
                current = (bi, samples, ux, ut, base_y, unit_sample)
            _, samples, ux, ut, base_y, unit_sample = current
            block = _run_block(model, run, bi, samples, ux, ut, base_y, unit_sample, specs, cfg, mean, std,
                               class_names=_class_names(model, dataset))
            if path is not None:
                _append_block(path, block)
            records.extend(block)
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()
    records = _latest(records)
    summary = summarize_records(records, specs)
    results = Results(records, summary, out, cfg, metric_names)
    if out is not None:
        write_tables(out, summary, specs, cfg, identity)
        if plots:
            write_plots(out, records, summary, specs)
    return results


def _block_id(bi: int, run: MethodRun) -> str:
    lay = ",".join(run.layers) if run.layers else "default"
    return f"{bi}:{run.name}@{lay}"


def _class_names(model, dataset) -> list[str]:
    names = getattr(dataset, "class_names", None) or getattr(getattr(model, "cnnlens_meta", None), "class_names",
                                                             None)
    return list(names or [])


def _units(samples: list[Sample], logits: torch.Tensor, mode: str, num_classes: int):
    unit_sample, unit_target = [], []
    pred = logits.argmax(1).tolist()
    for i, s in enumerate(samples):
        targets = s.targets if mode == "label" else [pred[i]]
        for t in targets:
            if not 0 <= int(t) < num_classes:
                raise TargetError(f"image {s.id}: class {t} is not one of the model's {num_classes} classes")
            unit_sample.append(i)
            unit_target.append(int(t))
    if not unit_sample:
        raise InputError("no (image, class) pair to evaluate: the images have no ground-truth class")
    return unit_sample, unit_target


def _run_block(model, run, bi, samples, ux, ut, base_y, unit_sample, specs, cfg, mean, std, class_names):
    t0 = time.perf_counter()
    outs = _explain_maps(model, ux, run, ut, cfg.seed + bi)
    t_explain = (time.perf_counter() - t0) / (ux.shape[0] * len(outs))
    block = []
    for layer, e in outs:
        values, curves, const = _metric_values(model, ux, ut, e.heatmap.detach().to(ux.device), bool(e.signed),
                                               base_y, samples, unit_sample, specs, cfg, mean, std)
        for u in range(ux.shape[0]):
            t = int(ut[u])
            rec = {"sample": samples[unit_sample[u]].id, "target": t,
                   "target_name": class_names[t] if t < len(class_names) else str(t),
                   "method": run.name, "layer": layer,
                   "metrics": {m: _finite_or_none(float(values[m][u])) for m in values},
                   "curves": {k: v[u] for k, v in curves.items()},
                   "flags": {"constant_map": bool(const[u])}, "seconds": t_explain}
            block.append(rec)
    bid = _block_id(bi, run)
    for rec in block:
        rec["block"], rec["block_size"] = bid, len(block)
    return block


def _latest(records: list[dict]) -> list[dict]:
    """One record per (sample, target, method, layer): the last written; sorted for a run-independent order."""
    by_key = {}
    for r in records:
        by_key[(r["sample"], r["target"], r["method"], r["layer"])] = r
    return [by_key[k] for k in sorted(by_key, key=lambda k: (k[2], k[3], k[0], k[1]))]


# ------------------------------------------------------------------------------------------ tables
def summarize_records(records: list[dict], specs: Sequence[MetricSpec]) -> list[dict]:
    """One row per (method, layer): {"method", "layer", "n", "seconds", metric: {"mean", "se", "n"}}."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in records:
        groups.setdefault((r["method"], r["layer"]), []).append(r)
    rows = []
    for (method, layer), recs in sorted(groups.items()):
        row: dict[str, Any] = {"method": method, "layer": layer, "n": len(recs),
                               "seconds": sum(r["seconds"] for r in recs) / len(recs),
                               "constant_maps": sum(r["flags"]["constant_map"] for r in recs)}
        for spec in specs:
            vals = [r["metrics"].get(spec.name) for r in recs]
            vals_f = [math.nan if v is None else float(v) for v in vals]
            groups_ = [r["target"] for r in recs]
            row[spec.name] = summarize(spec, vals_f, groups_)
        rows.append(row)
    return rows


def _fmt(cell: dict) -> str:
    m, se = cell["mean"], cell["se"]
    if not math.isfinite(m):
        return "–"
    digits = 2 if abs(m) >= 1 or m == 0 else 4
    return f"{m:.{digits}f} ± {se:.{digits}f}" if math.isfinite(se) else f"{m:.{digits}f}"


def markdown_table(rows: list[dict], specs: Sequence[MetricSpec]) -> str:
    head = ["method", "layer", "n"] + [s.header for s in specs] + ["s/map"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["method"], f"`{r['layer']}`", str(r["n"])] + [_fmt(r[s.name]) for s in specs] + \
                [f"{r['seconds']:.4f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def layer_table(rows: list[dict], specs: Sequence[MetricSpec]) -> str | None:
    """The Relevance-CAM layout: one row per method, columns = (layer, metric). None with a single layer."""
    layers = sorted({r["layer"] for r in rows})
    methods = sorted({r["method"] for r in rows})
    if len(layers) < 2:
        return None
    by = {(r["method"], r["layer"]): r for r in rows}
    head = ["method"] + [f"{lay} {s.name} {s.arrow}" for lay in layers for s in specs]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for m in methods:
        cells = [m] + [(_fmt(by[(m, lay)][s.name]) if (m, lay) in by else "–") for lay in layers for s in specs]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_tables(out: Path, rows: list[dict], specs: Sequence[MetricSpec], cfg: EvalConfig, identity: dict) -> None:
    ds = identity["dataset"]
    md = [f"# cnnlens evaluation: {identity['model']} on {ds.get('name')} ({ds.get('n')} images)", "",
          f"Conventions: {cfg.conventions()}.", "",
          "Values: mean ± standard error over (image, class) pairs (pointing game: over classes); ↑ higher is "
          "better, ↓ lower is better; % except deletion/insertion AUC. s/map: explanation seconds per map.", "",
          markdown_table(rows, specs), ""]
    pivot = layer_table(rows, specs)
    if pivot:
        md += ["## By layer", "", pivot, ""]
    _atomic_write_text(out / "summary.md", "\n".join(md))
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["method", "layer", "n", "seconds_per_map"] +
               [f"{s.name}{suffix}" for s in specs for suffix in ("_mean", "_se", "_n")])
    for r in rows:
        w.writerow([r["method"], r["layer"], r["n"], f"{r['seconds']:.6g}"] +
                   [v for s in specs for v in (r[s.name]["mean"], r[s.name]["se"], r[s.name]["n"])])
    _atomic_write_text(out / "summary.csv", buf.getvalue())
    meta = {s.name: {"higher_is_better": s.higher_is_better, "description": s.description, "unit": s.unit}
            for s in specs}
    payload = {"identity": identity, "conventions": cfg.conventions(), "metrics": meta,
               "rows": [{k: v for k, v in r.items()} for r in rows]}
    _atomic_write_text(out / "summary.json", json.dumps(_nan_to_none(payload), indent=2, allow_nan=False))


def _nan_to_none(o):
    if isinstance(o, float):
        return o if math.isfinite(o) else None
    if isinstance(o, dict):
        return {k: _nan_to_none(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_nan_to_none(v) for v in o]
    return o


# ------------------------------------------------------------------------------------------ plots
def _save_figure(fig, path: Path) -> None:
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}.png")
    fig.savefig(tmp, dpi=120, bbox_inches="tight")
    os.replace(tmp, path)


def write_plots(out: Path, records: list[dict], rows: list[dict], specs: Sequence[MetricSpec]) -> list[Path]:
    """A bar chart per metric (mean ± SE per method/layer) and the mean deletion / insertion curves."""
    import matplotlib
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    written = []
    labels = [r["method"] if len({x["layer"] for x in rows}) == 1 else f"{r['method']}\n{r['layer']}" for r in rows]
    for spec in specs:
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
        for (method, layer), cs in sorted(curves.items()):
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
