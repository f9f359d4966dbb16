"""Evaluate explanation methods with the metrics of metrics.md on a dataset (with or without boxes).

``evaluate(model, dataset, methods, metrics, out=DIR)`` streams one JSON line per (image, target class, method, layer)
to the results as soon as a block (a batch of images × one method) is done, and writes the summary tables
(``summary.md``, ``summary.csv``, ``summary.json``: mean ± standard error) and plots at the end. A re-run with the same
``out`` resumes: finished blocks are never recomputed, a block cut short by a kill is recomputed whole, and because
every block's composition is fixed by the dataset order the final table equals that of an uninterrupted run.

Under ``torchrun`` (a process group initialised, see :mod:`.distributed`) rank r computes the blocks b with
b mod world = r and appends each finished block, in one write, to its shard ``results.rank{r}.jsonl``; a resume reads
every shard present (and ``results.jsonl``), whatever the world size was. When every rank is done, rank 0 merges the
shards into ``results.jsonl`` (sorted by block) and writes the tables and plots. With one process the shard is
``results.jsonl`` itself.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from .._logits import logits_of
from .._state import model_device, model_dtype, preserved
from ..api import explain
from ..data.sample import Sample
from ..errors import CnnlensError, InputError, TargetError
from ..methods import all_methods, get_method
from ..metrics import (METRICS, MetricSpec, average_drop, average_drop_rcam, average_increase_rcam, auc,
                       bbox_score, boxes_mask, class_scores, confidence_pair, constant_maps, energy_pointing_game,
                       increase_in_confidence, iou, perturbation_curves, pointing_game, resolve_metrics, saliency)
from . import distributed
from .distributed import PeerFailed
from .loader import Block, iter_blocks, to_device
from .tables import (NA_NO_BOXES, atomic_write_text, markdown_table, summarize_records, write_plots,
                     write_tables)

RESULTS = "results.jsonl"
SHARD = "results.rank{}.jsonl"
RUN = "run.json"
SKIPPED = "skipped"      # the key of a record standing for an image skipped while decoding (no method, no metrics)
DISPLAY = 224            # long side of the saved images and maps (px)


class ResumeError(CnnlensError, ValueError):
    """The output folder holds a run with different settings."""


class Interrupted(Exception):
    """The run stopped on a signal after finishing its current block; re-running the same command resumes."""

    def __init__(self, signum: int | None, out: Path | None):
        self.signum, self.out = signum, out
        super().__init__(f"interrupted{'' if signum is None else f' by signal {signum}'}")


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
    skipped: Any = 0
    unreadable: dict[str, str] = field(default_factory=dict)   # sample id → why it was skipped (one line)

    def table(self) -> str:
        return markdown_table(self.summary, [METRICS[m] for m in self.metrics])


# ------------------------------------------------------------------------------------------ model-facing helpers
def _forward_logits(model: nn.Module, x: torch.Tensor, batch: int) -> torch.Tensor:
    out = []
    with torch.inference_mode():
        for i in range(0, x.shape[0], batch):
            out.append(logits_of(model(x[i:i + batch])).float())
    return torch.cat(out)


def _finite_or_none(v: float) -> float | None:
    return v if math.isfinite(v) else None


@dataclass
class _Units:
    """The (image, class) pairs of a block: host lists (no device reads per pair) and device tensors."""
    sample: list[int]              # index into the block's samples
    target: list[int]              # model class explained
    label: list[int | None]        # dataset class key (None: the predicted class has no label in the image)
    x: torch.Tensor                # (U,C,H,W) on the device
    t: torch.Tensor                # (U,) long on the device
    base_y: torch.Tensor           # (U,) class score on the original image


def _label_of(sample: Sample, cls: int) -> int | None:
    """The key of ``sample`` (a target or a boxed class) whose model classes contain ``cls``."""
    for k in sorted({b[0] for b in sample.boxes} | set(sample.targets)):
        if cls in sample.model_classes(k):
            return k
    return None


def _units(samples: list[Sample], x: torch.Tensor, logits: torch.Tensor, cfg: EvalConfig) -> _Units:
    """Targets of the block: every label key (a class-mapped key → the model's best class among its candidates), or
    the top-1 class. Every device result is read back in one transfer."""
    num_classes = logits.shape[1]
    device = logits.device
    unit_sample: list[int] = []
    keys: list[int] = []
    pending: list[tuple[int, tuple[int, ...]]] = []       # (unit, candidate classes) resolved on the device
    readable = [i for i, s in enumerate(samples) if s.unreadable is None]     # unreadable files: no unit, counted
    if not readable:
        empty = torch.zeros(0, dtype=torch.long, device=device)
        return _Units([], [], [], x[:0], empty, torch.zeros(0, device=device))
    if cfg.target == "label":
        for i in readable:
            s = samples[i]
            for key in s.targets:
                cands = s.model_classes(int(key))
                for c in cands:
                    if not 0 <= int(c) < num_classes:
                        raise TargetError(f"image {s.id}: class {c} is not one of the model's {num_classes} classes")
                if key in s.candidates:
                    pending.append((len(unit_sample), tuple(int(c) for c in cands)))
                unit_sample.append(i)
                keys.append(int(key))
        if not unit_sample:
            raise InputError("no (image, class) pair to evaluate: the images have no ground-truth label; use "
                             "--target predicted")
        if pending:
            rows = torch.tensor([unit_sample[u] for u, _ in pending], device=device)
            allowed = torch.zeros(len(pending), num_classes, dtype=torch.bool)
            for j, (_, cands) in enumerate(pending):
                allowed[j, list(cands)] = True
            best = logits.index_select(0, rows).masked_fill(~allowed.to(device), -math.inf).argmax(1)
            chosen = best.tolist()                                    # one transfer for the block
            targets = list(keys)
            for (u, _), c in zip(pending, chosen):
                targets[u] = int(c)
        else:
            targets = list(keys)
        labels: list[int | None] = list(keys)
    else:
        pred = logits.argmax(1).tolist()                               # one transfer for the block
        unit_sample = readable
        targets = [int(pred[i]) for i in readable]
        labels = [_label_of(samples[i], t) for i, t in zip(readable, targets)]
    sel = torch.tensor(unit_sample, device=device)
    t = torch.tensor(targets, device=device)
    base_y = class_scores(logits.index_select(0, sel), t, cfg.score)
    return _Units(unit_sample, targets, labels, x.index_select(0, sel), t, base_y)


def _metric_values(model, units: _Units, heatmaps, signed, samples, metrics, cfg, mean, std
                   ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], torch.Tensor, dict[str, list[bool]]]:
    """Per-unit metric values (device tensors, NaN where undefined), curves (U,K), constant-map flags and, for the
    box metrics, which units are n/a because their image has no boxes. Everything stays on the device."""
    ux, ut = units.x, units.t
    n, _, h, w = ux.shape
    device = ux.device
    values: dict[str, torch.Tensor] = {}
    curves: dict[str, torch.Tensor] = {}
    na: dict[str, list[bool]] = {}
    s_in = saliency(heatmaps, (h, w), signed=signed, signed_mode=cfg.signed_mode, zero=0.5 if signed else 0.0)
    names = {m.name for m in metrics}
    kw = dict(mask_space=cfg.mask_space, mean=mean, std=std, score=cfg.score, base_scores=units.base_y,
              batch_size=cfg.perturbation_batch)
    if names & {"average-drop", "increase"}:
        y, o = confidence_pair(model, ux, s_in, ut, variant="standard", **kw)
        values["average-drop"] = average_drop(y, o)
        values["increase"] = increase_in_confidence(y, o)
    if names & {"average-drop-rcam", "average-increase-rcam"}:
        y, o = confidence_pair(model, ux, s_in, ut, variant="rcam", keep_fraction=cfg.keep_fraction, **kw)
        values["average-drop-rcam"] = average_drop_rcam(y, o)
        values["average-increase-rcam"] = average_increase_rcam(y, o)
    step = cfg.step or max(1, (h * w) // 224)
    for mode, sub in (("deletion", cfg.deletion_substrate), ("insertion", cfg.insertion_substrate)):
        if mode in names:
            c = perturbation_curves(model, ux, s_in, ut, mode=mode, step=step, substrate=sub, mean=mean,
                                    std=std, score=cfg.score, batch_size=cfg.perturbation_batch)
            values[mode] = auc(c)
            curves[mode] = c
    loc = [m for m in ("pointing-game", "energy-pointing-game", "bbox", "iou") if m in names]
    if loc:
        boxless = [not samples[units.sample[u]].has_boxes for u in range(n)]
        out = {m: torch.full((n,), math.nan, dtype=torch.float64, device=device) for m in loc}
        by_size: dict[tuple[int, int], list[int]] = {}
        for u in range(n):
            if not boxless[u]:
                by_size.setdefault(tuple(samples[units.sample[u]].size), []).append(u)
        for size, idx in by_size.items():
            sel = torch.tensor(idx, device=device)
            s = saliency(heatmaps.index_select(0, sel), size, signed=signed, signed_mode=cfg.signed_mode,
                         zero=0.5 if signed else 0.0)
            gt_boxes = [samples[units.sample[u]].class_boxes(units.label[u]) if units.label[u] is not None
                        else torch.zeros(0, 4, dtype=torch.float64) for u in idx]
            g = torch.stack([boxes_mask(b, size) for b in gt_boxes]).to(device, non_blocking=True)
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
                out[m].index_copy_(0, sel, v.to(torch.float64))
        values.update(out)
        if any(boxless):
            na = {m: boxless for m in loc}
    return values, curves, constant_maps(heatmaps), na


def _explain_maps(model, x, run: MethodRun, targets, seed: int) -> list[tuple[str, Any]]:
    """[(layer label, Explanation)] for one method on the units' batch."""
    spec = get_method(run.name)
    devices = [x.device] if x.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        if spec.layers == "single" and run.layers:
            res = explain(model, x, run.name, target=targets, layer=list(run.layers), **run.options)
            return [(str(k), v) for k, v in res.items()]
        e = explain(model, x, run.name, target=targets, **run.options)
    layer = e.layer
    label = "input" if layer is None else (layer if isinstance(layer, str) else "+".join(map(str, layer)))
    return [(label, e)]


RANDOMISATION = "model-randomisation"


def _randomisation_values(model, units: _Units, run: MethodRun, e, seed: int) -> torch.Tensor:
    """(U,) max(ρ, ρ_abs) of the block's maps vs the maps of the fully randomised copy (cnnlens.sanity): same targets,
    layer, options and RNG seed (RISE's masks) as the trained model's map; the copy is made once per run (cached)."""
    from ..sanity import model_randomisation_score
    x = units.x
    layer = None if get_method(run.name).layers == "none" else e.layer
    with torch.random.fork_rng(devices=[x.device] if x.device.type == "cuda" else []):
        torch.manual_seed(seed)
        v = model_randomisation_score(model, x, units.t, run.name, layer=layer, options=run.options,
                                      original_raw=e.raw)
    return v.to(x.device)


# ------------------------------------------------------------------------------------------ persistence
def _read_shard(path: Path, required_metrics: set[str]) -> tuple[dict[str, list[dict]], list[str], bool]:
    """{block id: records} of the finished blocks of one shard, their order, and whether the file holds anything
    else (a block cut short, a torn line)."""
    if not path.is_file():
        return {}, [], False
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
    done = {}
    for bid in order:
        recs = blocks[bid]
        if len(recs) == sizes[bid] and all(SKIPPED in r or required_metrics <= set(r["metrics"]) for r in recs):
            done[bid] = recs
        else:
            dirty = True
    return done, [b for b in order if b in done], dirty


def _shards(out: Path) -> list[Path]:
    """``results.jsonl`` and every rank shard, in a fixed order."""
    ranks = sorted(out.glob("results.rank*.jsonl"),
                   key=lambda p: (int(re.sub(r"\D", "", p.name) or 0), p.name))
    return [out / RESULTS] + ranks


def _read_all(out: Path, required_metrics: set[str]) -> dict[str, list[dict]]:
    """The finished blocks of every shard present (a block finished twice is the same computation: keep the first)."""
    done: dict[str, list[dict]] = {}
    for p in _shards(out):
        blocks, order, _ = _read_shard(p, required_metrics)
        for bid in order:
            done.setdefault(bid, blocks[bid])
    return done


def _repair(path: Path, required_metrics: set[str]) -> None:
    """Rewrite this process's own shard without blocks cut short and torn lines, so appends start on a clean line."""
    blocks, order, dirty = _read_shard(path, required_metrics)
    if dirty:
        atomic_write_text(path, "".join(json.dumps(r) + "\n" for b in order for r in blocks[b]))


def _append_block(path: Path, records: list[dict]) -> None:
    """One ``write`` of the whole block (O_APPEND): a kill leaves either nothing or a detectable torn tail."""
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


def _block_order(bid: str) -> tuple[int, str]:
    head, _, rest = bid.partition(":")
    return (int(head) if head.isdigit() else -1, rest)


# ------------------------------------------------------------------------------------------ maps for the report
_PLAIN_ID = re.compile(r"[a-z0-9_-][a-z0-9._-]{0,99}")


def safe_id(sample_id: str) -> str:
    """A file name for a sample id (a path relative to the dataset root, e.g. ``a/x.jpg``), one per id, also on
    case-insensitive file systems: the id itself when it is only lower-case letters, digits, ``.``, ``_`` and ``-``
    (at most 100, no leading dot); otherwise the id with other characters replaced by ``_`` (cut at 100), then ``-``
    and 10 hex digits of the id's SHA-1. So ``a/x.jpg`` and ``b/x.jpg``, or ``Photo.jpg`` and ``photo.jpg``, get two
    files."""
    sid = str(sample_id)
    if _PLAIN_ID.fullmatch(sid):
        return sid
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", sid)[:100].lstrip(".") or "image"
    return f"{safe}-{hashlib.sha1(sid.encode('utf-8')).hexdigest()[:10]}"


def _display_size(size: tuple[int, int]) -> tuple[int, int]:
    h0, w0 = int(size[0]), int(size[1])
    scale = min(1.0, DISPLAY / max(h0, w0))
    return max(1, round(h0 * scale)), max(1, round(w0 * scale))


def _resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    x = x[None].float()
    if tuple(x.shape[-2:]) != tuple(size):
        x = torch.nn.functional.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
    return x[0]


def _save_png_gray(path: Path, a: torch.Tensor) -> None:
    from PIL import Image
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}.png")
    Image.fromarray((a.clamp(0, 1) * 255).round().to(torch.uint8).numpy(), mode="L").save(tmp)
    os.replace(tmp, path)


def _save_image(out: Path, sample: Sample, image: torch.Tensor, mean, std) -> str:
    """``images/<safe-id>.jpg``: the model input as RGB at display resolution (original aspect, long side ≤ 224)."""
    from PIL import Image
    rel = f"images/{safe_id(sample.id)}.jpg"
    path = out / rel
    if not path.is_file():
        mu = torch.as_tensor(mean, dtype=torch.float32).view(-1, 1, 1)
        sd = torch.as_tensor(std, dtype=torch.float32).view(-1, 1, 1)
        rgb = _resize((image.float().cpu() * sd + mu).clamp(0, 1), _display_size(sample.size))
        arr = (rgb.permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}.jpg")
        Image.fromarray(arr, mode="RGB").save(tmp, quality=92, subsampling=0)
        os.replace(tmp, path)
    return rel


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


def _block_id(bi: int, run: MethodRun) -> str:
    lay = ",".join(run.layers) if run.layers else "default"
    return f"{bi}:{run.name}@{lay}"


def _names(model, dataset) -> tuple[list[str], list[str]]:
    """(names of the model classes the targets index, names of the dataset's label keys)."""
    model_names = list(getattr(getattr(model, "cnnlens_meta", None), "class_names", None) or [])
    ds_names = list(getattr(dataset, "class_names", None) or [])
    label_names = list(getattr(dataset, "label_names", None) or ds_names)
    mapped = bool(getattr(dataset, "class_map", None)) or bool(getattr(dataset, "label_names", None))
    target_names = model_names if (mapped and model_names) else (ds_names or model_names)
    return target_names, label_names


def evaluate(model: nn.Module, dataset, methods: Sequence[str | MethodRun] | str | None = None,
             metrics: Sequence[str] | str | None = None, *, layers: Sequence[str] | str | None = None,
             out: str | Path | None = None, config: EvalConfig | None = None,
             method_options: dict[str, dict] | None = None, progress: bool = True, plots: bool = True,
             model_name: str | None = None, workers: int = 0, save_maps: int = 0, stop=None) -> Results:
    """Run ``methods`` on every image of ``dataset`` and score them with ``metrics`` (metrics.md names).

    dataset: a sequence of :class:`cnnlens.data.Sample` with ``describe()`` (``open_dataset``'s datasets,
    ``SyntheticScenes``, ``Collages``). layers: for single-layer methods (CAMs), the layers to run at
    ("layer2,layer4", "blocks"); methods that choose their own layers (SISE) or none (LRP, RISE) ignore it.
    out: the results folder (resumable). workers: DataLoader processes decoding the images (0: this process).
    save_maps: for the first N images of the dataset order, write ``out/images/<id>.jpg`` and one 8-bit PNG per
    (image, target, method, layer) under ``out/maps/`` (paths in the records' ``image`` / ``map``).
    stop: an object with ``is_set()`` (e.g. a ``threading.Event`` set by a signal handler): when set, the run
    stops after its current block and raises :class:`Interrupted` (a re-run resumes).

    In a torch.distributed process group (``torchrun``) the blocks are split over the ranks; every rank returns the
    merged results, rank 0 writes the tables.
    """
    cfg = config or EvalConfig()
    cfg.check()
    specs: list[MetricSpec] = resolve_metrics(metrics)
    runs = _as_runs(methods, layers, method_options)
    if len(dataset) == 0:
        raise InputError("empty dataset: no image to evaluate")
    if workers < 0:
        raise InputError(f"workers must be 0 or more, got {workers}")
    if save_maps < 0:
        raise InputError(f"save_maps must be 0 or more, got {save_maps}")
    from ..capture import resolve_module
    for run in runs:                                   # bad layer names fail before anything is written
        for lay in run.layers or []:
            if lay != "blocks":
                resolve_module(model, lay)
    describe = dataset.describe()
    no_labels = getattr(dataset, "has_labels", True) is False or (isinstance(describe, dict)
                                                                  and describe.get("has_labels") is False)
    if cfg.target == "label" and no_labels:
        raise InputError("the dataset has no labels: use --target predicted")
    from ..data.preprocessing import model_preprocessing
    _, mean, std = model_preprocessing(model)
    device, dtype = model_device(model), model_dtype(model)
    dist = distributed.current()
    metric_names = [s.name for s in specs]
    required = set(metric_names)
    identity = {"model": model_name or type(model).__name__, "dataset": describe, "config": asdict(cfg),
                "format": 1}
    own: Path | None = None
    done: set[str] = set()
    if out is not None:
        out = Path(out)
        _check_run_file(out, identity)                   # every rank reads; the same files give the same answer
        dist.barrier()
        if dist.is_main:
            out.mkdir(parents=True, exist_ok=True)
            atomic_write_text(out / RUN, json.dumps({"identity": identity}, indent=2))
        dist.barrier()
        out.mkdir(parents=True, exist_ok=True)
        done = set(_read_all(out, required))
        dist.barrier()                                   # every rank has read before any rewrites its shard
        own = out / (RESULTS if dist.world == 1 else SHARD.format(dist.rank))
        _repair(own, required)
    b = cfg.batch_size
    n_blocks = math.ceil(len(dataset) / b)
    todo = [(bi, r) for bi in range(dist.rank, n_blocks, dist.world) for r in runs if _block_id(bi, r) not in done]
    steps = dist.max(len(todo))
    my_blocks = list(dict.fromkeys(bi for bi, _ in todo))
    bar = None
    if progress and dist.is_main:
        from tqdm import tqdm
        total = sum(1 for bi in range(n_blocks) for r in runs) if dist.world == 1 else len(todo)
        bar = tqdm(total=total, initial=total - len(todo), unit="block",
                   desc="evaluating" if dist.world == 1 else f"evaluating (rank 0 of {dist.world})",
                   dynamic_ncols=True)
    target_names, label_names = _names(model, dataset)
    records: list[dict] = []
    blocks_iter = iter_blocks(dataset, b, my_blocks, workers=workers, device=device) if my_blocks else iter(())
    try:
        with preserved(model):
            current = None
            for step in range(steps):
                status, error = distributed.OK, None
                if step < len(todo):
                    bi, run = todo[step]
                    try:
                        if current is None or current[0].index != bi:
                            block = next(blocks_iter)
                            x = to_device(block, device, dtype)
                            logits = _forward_logits(model, x, cfg.perturbation_batch)
                            current = (block, _units(block.samples, x, logits, cfg))
                        block, units = current
                        recs = _run_block(model, run, block, units, specs, cfg, mean, std, target_names,
                                          label_names, out if save_maps else None, save_maps)
                        if own is not None:
                            _append_block(own, recs)
                        records.extend(recs)
                    except Exception as exc:               # noqa: BLE001 — reported to every rank, then re-raised
                        status, error = distributed.ERROR, exc
                    if bar is not None:
                        bar.update(1)
                if stop is not None and stop.is_set() and status == distributed.OK:
                    status = distributed.STOP
                status = dist.max(status)
                if status == distributed.ERROR:
                    if error is not None:
                        error.cnnlens_local = True               # this rank prints it (the CLI)
                        raise error
                    raise PeerFailed("another process of the run failed (its message is above); re-run to resume")
                if status == distributed.STOP:
                    raise Interrupted(getattr(stop, "signum", None), out)
    finally:
        if RANDOMISATION in required:
            from ..sanity import clear_cache
            clear_cache()                                # the randomised copy of the model
        close = getattr(blocks_iter, "close", None)
        if close is not None:
            close()
        if bar is not None:
            bar.close()
    dist.barrier()
    if out is not None:
        merged = _read_all(out, required)
        ordered = sorted(merged, key=_block_order)
        records = [r for bid in ordered for r in merged[bid]]
        dist.barrier()                                   # every rank has read the shards before rank 0 merges them
        if dist.is_main:
            atomic_write_text(out / RESULTS, "".join(json.dumps(r) + "\n" for r in records))
            for p in _shards(out)[1:]:
                p.unlink(missing_ok=True)
    else:
        records = [r for part in dist.gather(records) for r in part]
    listed = dict(describe.get("unreadable") or {}) if isinstance(describe, dict) else {}
    unreadable = {**listed, **_unreadable(records)}
    records = _latest(records)
    layer_depth = {name: i for i, (name, _) in enumerate(model.named_modules()) if name}
    summary = summarize_records(records, specs, layer_depth)
    skipped = describe.get("skipped", 0) if isinstance(describe, dict) else 0
    skipped = _with_unreadable(skipped, unreadable, listed)
    results = Results(records, summary, out, cfg, metric_names, skipped, unreadable)
    if out is not None and dist.is_main:
        write_tables(out, summary, specs, cfg.conventions(), identity, layer_depth=layer_depth, skipped=skipped,
                     unreadable=unreadable)
        if plots:
            write_plots(out, records, summary, specs, layer_depth)
    dist.barrier()
    return results


def _run_block(model, run: MethodRun, block: Block, units: _Units, specs, cfg, mean, std, target_names,
               label_names, maps_out: Path | None, save_maps: int) -> list[dict]:
    samples = block.samples
    skips = [{"sample": s.id, SKIPPED: "unreadable", "reason": s.unreadable} for s in samples if s.unreadable]
    if not units.sample:                                     # every image of the block is unreadable
        return _label_block(skips, block.index, run)
    first = block.index * cfg.batch_size
    t0 = time.perf_counter()
    outs = _explain_maps(model, units.x, run, units.t, cfg.seed + block.index)
    if units.x.device.type == "cuda":
        torch.cuda.synchronize(units.x.device)               # one sync per block, for the timing
    n = units.x.shape[0]
    t_explain = (time.perf_counter() - t0) / (n * len(outs))
    saved = [u for u in range(n) if first + units.sample[u] < save_maps] if maps_out is not None else []
    block_recs = []
    for layer, e in outs:
        heat = e.heatmap.detach().to(units.x.device)
        values, curves, const, na = _metric_values(model, units, heat, bool(e.signed), samples, specs, cfg,
                                                   mean, std)
        if any(spec.name == RANDOMISATION for spec in specs):
            values[RANDOMISATION] = _randomisation_values(model, units, run, e, cfg.seed + block.index)
        # one device → host transfer for the whole block: metric values, curves, flags (and the maps to save)
        parts = [v.detach().to(torch.float64).reshape(n, -1) for v in values.values()]
        parts += [c.detach().to(torch.float64).reshape(n, -1) for c in curves.values()]
        parts.append(const.to(torch.float64).reshape(n, 1))
        flat = torch.cat(parts, 1).reshape(-1)
        if saved:
            sel = torch.tensor(saved, device=heat.device)
            flat = torch.cat([flat, heat.index_select(0, sel).to(torch.float64).reshape(-1)])
        host = flat.cpu()
        table = host[: n * sum(p.shape[1] for p in parts)].reshape(n, -1).tolist()
        widths = [p.shape[1] for p in parts]
        maps_host = host[n * sum(widths):].reshape(len(saved), *heat.shape[1:]) if saved else None
        names = list(values) + list(curves)
        for u in range(n):
            row, col, mvals, cvals = table[u], 0, {}, {}
            for k, name in enumerate(names):
                cells = row[col:col + widths[k]]
                col += widths[k]
                if k < len(values):
                    mvals[name] = _finite_or_none(cells[0])
                else:
                    cvals[name] = cells
            t, key = units.target[u], units.label[u]
            s = samples[units.sample[u]]
            rec = {"sample": s.id, "target": t,
                   "target_name": target_names[t] if t < len(target_names) else str(t),
                   "label": key,
                   "label_name": (label_names[key] if key is not None and 0 <= key < len(label_names)
                                  else (None if key is None else str(key))),
                   "method": run.name, "layer": layer, "metrics": mvals, "curves": cvals,
                   "flags": {"constant_map": bool(row[-1])}, "seconds": t_explain}
            unit_na = {m: NA_NO_BOXES for m, flags in na.items() if flags[u]}
            if unit_na:
                rec["na"] = unit_na
            if u in saved:
                rec["image"] = _save_image(maps_out, s, s.image, mean, std)
                rel = (f"maps/{safe_id(s.id)}__{t}__{safe_id(run.name)}__{safe_id(layer)}.png")
                (maps_out / "maps").mkdir(parents=True, exist_ok=True)
                _save_png_gray(maps_out / rel, _resize(maps_host[saved.index(u)][None],
                                                       _display_size(s.size))[0])
                rec["map"] = rel
            block_recs.append(rec)
    return _label_block(block_recs + skips, block.index, run)


def _label_block(block_recs: list[dict], index: int, run: MethodRun) -> list[dict]:
    bid = _block_id(index, run)
    for rec in block_recs:
        rec["block"], rec["block_size"] = bid, len(block_recs)
    return block_recs


def _unreadable(records: list[dict]) -> dict[str, str]:
    """Sample id → reason of the images skipped while decoding (their records, one per block and method)."""
    return {r["sample"]: str(r.get("reason") or "unreadable") for r in records if SKIPPED in r}


def _with_unreadable(skipped: Any, found: dict[str, str], listed: dict[str, str]) -> Any:
    """The dataset's skipped counts plus the images found unreadable while decoding (``found``, not yet among the
    ``listed`` ones the dataset skipped when it was opened)."""
    new = [k for k in found if k not in listed]
    if not new:
        return skipped
    out = dict(skipped) if isinstance(skipped, dict) else ({"other": int(skipped)} if skipped else {})
    out["unreadable"] = int(out.get("unreadable", 0)) + len(new)
    return out


def _latest(records: list[dict]) -> list[dict]:
    """One record per (sample, target, method, layer): the last written; sorted for a run-independent order. The
    records of images skipped while decoding are left out (see :func:`_unreadable`)."""
    by_key = {}
    for r in records:
        if SKIPPED in r:
            continue
        by_key[(r["sample"], r["target"], r["method"], r["layer"])] = r
    return [by_key[k] for k in sorted(by_key, key=lambda k: (k[2], k[3], k[0], k[1]))]
