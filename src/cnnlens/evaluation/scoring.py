"""Scoring one unit of work (a block of images × one method run): the block's (image, class) pairs and targets, the
method's maps, every metric of metrics.md on them, and the records the store writes. Everything stays on the device
until one transfer per unit."""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._logits import logits_of
from ..api import explain
from ..data.sample import Sample
from ..errors import InputError, TargetError
from ..methods import get_method
from ..metrics import (average_drop, average_drop_rcam, average_increase_rcam, auc, bbox_score, boxes_mask,
                       class_scores, confidence_pair, constant_maps, energy_pointing_game, increase_in_confidence,
                       iou, perturbation_curves, pointing_game, saliency)
from .config import EvalConfig, MethodRun
from .loader import Block
from .maps import display_size, resize, safe_id, save_image, save_png_gray
from .store import SKIPPED, unit_id
from .tables import NA_NO_BOXES


def forward_logits(model: nn.Module, x: torch.Tensor, batch: int) -> torch.Tensor:
    out = []
    with torch.inference_mode():
        for i in range(0, x.shape[0], batch):
            out.append(logits_of(model(x[i:i + batch])).float())
    return torch.cat(out)


def _finite_or_none(v: float) -> float | None:
    return v if math.isfinite(v) else None


@dataclass
class Pairs:
    """The (image, class) pairs of a block (what its records are about): host lists (no device reads per pair) and
    device tensors."""
    sample: list[int]              # index into the block's samples
    target: list[int]              # model class explained
    label: list[int | None]        # dataset class key (None: the predicted class has no label in the image)
    x: torch.Tensor                # (P,C,H,W) on the device
    t: torch.Tensor                # (P,) long on the device
    base_y: torch.Tensor           # (P,) class score on the original image


def _label_of(sample: Sample, cls: int) -> int | None:
    """The key of ``sample`` (a target or a boxed class) whose model classes contain ``cls``."""
    for k in sorted({b[0] for b in sample.boxes} | set(sample.targets)):
        if cls in sample.model_classes(k):
            return k
    return None


def block_pairs(samples: list[Sample], x: torch.Tensor, logits: torch.Tensor, cfg: EvalConfig) -> Pairs:
    """The (image, class) pairs of the block: every label key (a class-mapped key → the model's best class among its
    candidates), or the top-1 class. Every device result is read back in one transfer."""
    num_classes = logits.shape[1]
    device = logits.device
    pair_sample: list[int] = []
    keys: list[int] = []
    pending: list[tuple[int, tuple[int, ...]]] = []       # (pair, candidate classes) resolved on the device
    readable = [i for i, s in enumerate(samples) if s.unreadable is None]     # unreadable files: no pair, counted
    if not readable:
        empty = torch.zeros(0, dtype=torch.long, device=device)
        return Pairs([], [], [], x[:0], empty, torch.zeros(0, device=device))
    if cfg.target == "label":
        for i in readable:
            s = samples[i]
            for key in s.targets:
                cands = s.model_classes(int(key))
                for c in cands:
                    if not 0 <= int(c) < num_classes:
                        raise TargetError(f"image {s.id}: class {c} is not one of the model's {num_classes} classes")
                if key in s.candidates:
                    pending.append((len(pair_sample), tuple(int(c) for c in cands)))
                pair_sample.append(i)
                keys.append(int(key))
        if not pair_sample:
            raise InputError("no (image, class) pair to evaluate: the images have no ground-truth label; use "
                             "--target predicted")
        if pending:
            rows = torch.tensor([pair_sample[u] for u, _ in pending], device=device)
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
        pair_sample = readable
        targets = [int(pred[i]) for i in readable]
        labels = [_label_of(samples[i], t) for i, t in zip(readable, targets)]
    sel = torch.tensor(pair_sample, device=device)
    t = torch.tensor(targets, device=device)
    base_y = class_scores(logits.index_select(0, sel), t, cfg.score)
    return Pairs(pair_sample, targets, labels, x.index_select(0, sel), t, base_y)


def _metric_values(model, pairs: Pairs, heatmaps, signed, samples, metrics, cfg, mean, std
                   ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], torch.Tensor, dict[str, list[bool]]]:
    """Per-pair metric values (device tensors, NaN where undefined), curves (P,K), constant-map flags and, for the
    box metrics, which pairs are n/a because their image has no boxes. Everything stays on the device."""
    ux, ut = pairs.x, pairs.t
    n, _, h, w = ux.shape
    device = ux.device
    values: dict[str, torch.Tensor] = {}
    curves: dict[str, torch.Tensor] = {}
    na: dict[str, list[bool]] = {}
    s_in = saliency(heatmaps, (h, w), signed=signed, signed_mode=cfg.signed_mode, zero=0.5 if signed else 0.0)
    names = {m.name for m in metrics}
    kw = dict(mask_space=cfg.mask_space, mean=mean, std=std, score=cfg.score, base_scores=pairs.base_y,
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
        boxless = [not samples[pairs.sample[u]].has_boxes for u in range(n)]
        out = {m: torch.full((n,), math.nan, dtype=torch.float64, device=device) for m in loc}
        by_size: dict[tuple[int, int], list[int]] = {}
        for u in range(n):
            if not boxless[u]:
                by_size.setdefault(tuple(samples[pairs.sample[u]].size), []).append(u)
        for size, idx in by_size.items():
            sel = torch.tensor(idx, device=device)
            s = saliency(heatmaps.index_select(0, sel), size, signed=signed, signed_mode=cfg.signed_mode,
                         zero=0.5 if signed else 0.0)
            gt_boxes = [samples[pairs.sample[u]].class_boxes(pairs.label[u]) if pairs.label[u] is not None
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
    """[(layer label, Explanation)] for one method on the pairs' batch."""
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


def _randomisation_values(model, pairs: Pairs, run: MethodRun, e, seed: int) -> torch.Tensor:
    """(P,) max(ρ, ρ_abs) of the block's maps vs the maps of the fully randomised copy (cnnlens.sanity): same targets,
    layer, options and RNG seed (RISE's masks) as the trained model's map; the copy is made once per run (cached)."""
    from ..sanity import model_randomisation_score
    x = pairs.x
    layer = None if get_method(run.name).layers == "none" else e.layer
    with torch.random.fork_rng(devices=[x.device] if x.device.type == "cuda" else []):
        torch.manual_seed(seed)
        v = model_randomisation_score(model, x, pairs.t, run.name, layer=layer, options=run.options,
                                      original_raw=e.raw)
    return v.to(x.device)


def score_unit(model: nn.Module, run: MethodRun, block: Block, pairs: Pairs, *, specs, cfg: EvalConfig, mean, std,
               target_names: list[str], label_names: list[str], maps_out: Path | None, save_maps: int) -> list[dict]:
    """The records of one unit: ``run``'s maps of the block's pairs, scored with ``specs``; the first ``save_maps``
    images of the dataset order get their input and maps saved under ``maps_out`` (the report's files)."""
    samples = block.samples
    skips = [{"sample": s.id, SKIPPED: "unreadable", "reason": s.unreadable}
             for s in samples if s.unreadable]
    if not pairs.sample:                                     # every image of the block is unreadable
        return _label_unit(skips, block.index, run)
    first = block.index * cfg.batch_size
    t0 = time.perf_counter()
    outs = _explain_maps(model, pairs.x, run, pairs.t, cfg.seed + block.index)
    if pairs.x.device.type == "cuda":
        torch.cuda.synchronize(pairs.x.device)               # one sync per unit, for the timing
    n = pairs.x.shape[0]
    t_explain = (time.perf_counter() - t0) / (n * len(outs))
    saved = [u for u in range(n) if first + pairs.sample[u] < save_maps] if maps_out is not None else []
    recs = []
    for layer, e in outs:
        heat = e.heatmap.detach().to(pairs.x.device)
        values, curves, const, na = _metric_values(model, pairs, heat, bool(e.signed), samples, specs, cfg,
                                                   mean, std)
        if any(spec.name == RANDOMISATION for spec in specs):
            values[RANDOMISATION] = _randomisation_values(model, pairs, run, e, cfg.seed + block.index)
        # one device → host transfer for the whole unit: metric values, curves, flags (and the maps to save)
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
            t, key = pairs.target[u], pairs.label[u]
            s = samples[pairs.sample[u]]
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
                rec["image"] = save_image(maps_out, s, s.image, mean, std)
                rel = (f"maps/{safe_id(s.id)}__{t}__{safe_id(run.name)}__{safe_id(layer)}.png")
                (maps_out / "maps").mkdir(parents=True, exist_ok=True)
                save_png_gray(maps_out / rel, resize(maps_host[saved.index(u)][None],
                                                       display_size(s.size))[0])
                rec["map"] = rel
            recs.append(rec)
    return _label_unit(recs + skips, block.index, run)


def _label_unit(recs: list[dict], index: int, run: MethodRun) -> list[dict]:
    uid = unit_id(index, run.key)
    for rec in recs:
        rec["unit"], rec["unit_size"] = uid, len(recs)
    return recs
