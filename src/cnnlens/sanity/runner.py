"""Run the sanity checks of Adebayo et al. (NeurIPS 2018) for several methods on a batch of images.

For each method the trained model's map is compared with the map of the same image, target class and layer after
* ``cascade``: randomising the blocks cumulatively from the logits down (§3.1, cascading randomisation);
* ``independent``: randomising one block at a time (§3.1, independent randomisation);
* ``data``: the same architecture trained on permuted labels (§3.2, data randomisation; a twin model).

Verdict (per method and test): the mean over the images of max(ρ, ρ_abs), the Spearman rank correlations of the map
and of its absolute value with the trained model's map, after randomising *every* block (cascade) or with the
random-label twin (data). The method **passes** when that mean is below ``threshold`` (default 0.5: the randomised map
shares less than half the rank structure of the original), **fails** otherwise. An image whose original map is
constant has no rank structure and is left out of the mean (counted in ``n_excluded``); a constant map after
randomisation counts as ρ = 0 (all structure lost). When every image is left out the verdict is ``undetermined``.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from ..errors import InputError, MethodError
from .randomize import Block, cascade, fallback_layers, independent, randomisation_blocks
from .similarity import METRICS, comparison_maps, similarities

MODES = ("cascade", "independent", "data")
DEFAULT_THRESHOLD = 0.5


@dataclass(frozen=True)
class MethodEntry:
    """One row of the check: a registry method with its options; ``label`` names it in tables (``lrp@dtd``)."""
    label: str
    method: str
    options: dict = field(default_factory=dict)


def parse_method(entry: str, options: Mapping[str, Any] | None = None) -> MethodEntry:
    """``"grad-cam"`` or ``"lrp@epsilon-plus"`` (an LRP-based method with a composite) → :class:`MethodEntry`."""
    from ..methods import get_method
    name, _, composite = str(entry).partition("@")
    spec = get_method(name.strip())
    opts = dict(options or {})
    if composite:
        if "composite" not in spec.option_names():
            raise MethodError(f"method {spec.name!r} takes no composite (in {entry!r})")
        opts["composite"] = composite.strip()
    spec.check_options(opts)
    return MethodEntry(str(entry).strip(), spec.name, opts)


@dataclass
class SanityReport:
    """Everything a sanity run measured. ``scores[label][mode]``: (steps, N) tensors per metric in ``METRICS``;
    ``steps[mode]``: the step names (block names; ``data`` has one step ``"random labels"``); ``maps[label]``:
    ``"original"`` (N,H,W) display heatmaps and, per mode, (steps, N, H, W) heatmaps (when kept)."""
    methods: list[MethodEntry]
    targets: torch.Tensor
    layers: dict[str, Any]
    blocks: list[Block]
    steps: dict[str, list[str]]
    scores: dict[str, dict[str, dict[str, torch.Tensor]]]
    maps: dict[str, dict[str, torch.Tensor]]
    signed: dict[str, bool]
    seconds: dict[str, float]
    seed: int
    threshold: float
    fallback_layers: list[str] = field(default_factory=list)
    original_constant: dict[str, torch.Tensor] = field(default_factory=dict)   # label → (N,) bool

    def verdicts(self) -> dict[str, dict[str, dict]]:
        """label → test ("cascade"/"data") → {verdict, statistic, threshold, n_images, n_excluded, per_image}."""
        out: dict[str, dict[str, dict]] = {}
        for entry in self.methods:
            per = {}
            for mode in ("cascade", "data"):
                if mode not in self.scores[entry.label]:
                    continue
                s = self.scores[entry.label][mode]
                per[mode] = verdict(s["spearman"][-1], s["spearman_abs"][-1], self.original_constant[entry.label],
                                    self.threshold)
                if mode == "cascade":     # how much survives randomising the logits block alone (Sixt et al. 2020)
                    first = verdict(s["spearman"][0], s["spearman_abs"][0], self.original_constant[entry.label],
                                    self.threshold)
                    per[mode]["statistic_first_block"] = first["statistic"]
                    per[mode]["first_block"] = self.steps["cascade"][0]
            out[entry.label] = per
        return out

    def step_means(self, label: str, mode: str) -> dict[str, list[float]]:
        """Per metric, the mean over the images at every step, by the verdict's rule: images whose original map is
        constant are left out, a similarity that is undefined because the randomised map is constant counts as 0."""
        keep = ~self.original_constant[label]
        out = {}
        for metric, t in self.scores[label][mode].items():
            vals = torch.nan_to_num(t.double(), nan=0.0)[:, keep]
            out[metric] = [float(r.mean()) if r.numel() else float("nan") for r in vals]
        return out

    def to_json(self) -> dict:
        """A JSON-serialisable summary (sanity.json)."""
        def clean(v: float) -> float | None:
            return None if math.isnan(v) else float(v)
        verdicts = self.verdicts()
        return {
            "seed": self.seed, "threshold": self.threshold,
            "verdict_rule": "mean over images of max(spearman, spearman_abs) after randomising every block (cascade) "
                            "or with the random-label twin (data); passes when below the threshold. Images whose "
                            "original map is constant are left out; an undefined similarity (constant randomised "
                            "map) counts as 0 in the means",
            "targets": self.targets.tolist(),
            "blocks": [{"name": b.name, "modules": list(b.modules)} for b in self.blocks],
            "fallback_initialised_layers": self.fallback_layers,
            "steps": self.steps,
            "methods": [{"label": m.label, "method": m.method, "options": m.options, "layer": self.layers[m.label],
                         "signed": self.signed[m.label], "seconds": round(self.seconds[m.label], 3),
                         "verdict": verdicts[m.label],
                         "scores": {mode: {metric: [[clean(v) for v in row] for row in t.tolist()]
                                           for metric, t in per.items()}
                                    for mode, per in self.scores[m.label].items()},
                         "mean_scores": {mode: {metric: [clean(v) for v in rows]
                                                for metric, rows in self.step_means(m.label, mode).items()}
                                         for mode in self.scores[m.label]},
                         "constant_original_maps": int(self.original_constant[m.label].sum())}
                        for m in self.methods],
        }


def verdict(spearman: torch.Tensor, spearman_abs: torch.Tensor, original_constant: torch.Tensor,
            threshold: float = DEFAULT_THRESHOLD) -> dict:
    """The verdict of one method and test from the per-image correlations after full randomisation (see module doc)."""
    stat = torch.maximum(torch.nan_to_num(spearman.double(), nan=0.0), torch.nan_to_num(spearman_abs.double(), nan=0.0))
    keep = ~original_constant.to(stat.device)
    n_keep = int(keep.sum())
    if n_keep == 0:
        return {"verdict": "undetermined", "statistic": None, "threshold": threshold, "n_images": 0,
                "n_excluded": int(original_constant.numel()),
                "reason": "every original map is constant (no rank structure to compare)",
                "per_image": [None] * int(stat.numel())}
    mean = float(stat[keep].mean())
    return {"verdict": "passes" if mean < threshold else "fails", "statistic": mean, "threshold": threshold,
            "n_images": n_keep, "n_excluded": int(original_constant.numel()) - n_keep,
            "per_image": [float(v) if k else None for v, k in zip(stat.tolist(), keep.tolist())]}


def _explain(model: nn.Module, x: torch.Tensor, entry: MethodEntry, target, layer, class_names):
    from ..api import explain
    return explain(model, x, entry.method, target=target, layer=layer, class_names=class_names, **entry.options)


def _resolve_layer(model: nn.Module, x: torch.Tensor, entry: MethodEntry, layer: str | None):
    """The layer every step uses for ``entry``: the given one, else the method's default on the trained model."""
    from ..methods import get_method
    from ..models.layers import default_layer, trace_layers
    spec = get_method(entry.method)
    if spec.layers == "none":
        return None
    if spec.layers == "single":
        if layer is not None:
            return layer
        return default_layer(model, trace_layers(model, x[:1]))
    return layer     # "set": None → the method's own default set (the same module names in every copy)


def run_sanity(model: nn.Module, x: torch.Tensor, methods: Sequence[str | MethodEntry], *, target=None,
               layer: str | None = None, modes: Sequence[str] = ("cascade",), seed: int = 0,
               blocks: Sequence[str] | None = None, random_label_model: nn.Module | None = None,
               threshold: float = DEFAULT_THRESHOLD, keep_maps: bool = True, class_names: Sequence[str] | None = None,
               progress: bool = False) -> SanityReport:
    """Run the randomisation tests ``modes`` for every method on the images ``x`` (N,C,H,W).

    The target of every image is resolved once on the trained model (``target``: None = top-1, an int, a class
    name or per-sample list) and kept for every randomised model; CAMs use the same layer throughout (``layer`` or
    the default layer of the trained model). ``model`` is never changed: the randomisation runs on one copy.
    ``random_label_model``: the twin trained on permuted labels (required for mode ``"data"``).
    """
    from ..api import validate_input
    from .._state import preserved
    modes = list(dict.fromkeys(modes))
    for mode in modes:
        if mode not in MODES:
            raise InputError(f"unknown sanity mode {mode!r}; choose from {', '.join(MODES)}")
    if not modes:
        raise InputError("no sanity mode given")
    if "data" in modes and random_label_model is None:
        raise InputError("mode 'data' needs the model trained on permuted labels (random_label_model / "
                         "--random-label-weights)")
    if not 0 < threshold <= 1:
        raise InputError(f"threshold must be in (0, 1], got {threshold}")
    entries = [m if isinstance(m, MethodEntry) else parse_method(m) for m in methods]
    if not entries:
        raise InputError("no method given")
    labels = [e.label for e in entries]
    if len(set(labels)) != len(labels):
        raise InputError("a method is listed twice")
    x = validate_input(x, model)
    size = (int(x.shape[-2]), int(x.shape[-1]))
    block_list = randomisation_blocks(model, blocks)

    originals, layers, signed, seconds, const = {}, {}, {}, {}, {}
    with preserved(model):
        targets = None
        for e in entries:
            t0 = time.perf_counter()
            lay = _resolve_layer(model, x, e, layer)
            ex = _explain(model, x, e, target if targets is None else targets, lay, class_names)
            if targets is None:
                targets = ex.target.detach().clone()
            layers[e.label] = ex.layer if lay is None else lay
            signed[e.label] = bool(ex.signed)
            cmp = comparison_maps(ex.raw, size)
            originals[e.label] = (cmp, ex.heatmap.detach().float().cpu())
            flat = cmp.reshape(cmp.shape[0], -1)
            const[e.label] = (flat.amax(1) == flat.amin(1)).cpu()
            seconds[e.label] = time.perf_counter() - t0
    assert targets is not None

    scores = {e.label: {} for e in entries}
    maps = {e.label: {"original": originals[e.label][1]} for e in entries}
    steps: dict[str, list[str]] = {}

    def measure(mode: str, step_models, names: list[str]) -> None:
        steps[mode] = names
        per = {e.label: {k: [] for k in METRICS} for e in entries}
        kept = {e.label: [] for e in entries}
        for _k, _block, net in step_models:
            for e in entries:
                t0 = time.perf_counter()
                lay = layers[e.label] if _layer_is_fixed(e) else None
                ex = _explain(net, x, e, targets, lay, class_names)
                sim = similarities(originals[e.label][0], comparison_maps(ex.raw, size))
                for k in METRICS:
                    per[e.label][k].append(sim[k].cpu())
                if keep_maps:
                    kept[e.label].append(ex.heatmap.detach().float().cpu())
                seconds[e.label] += time.perf_counter() - t0
        for e in entries:
            scores[e.label][mode] = {k: torch.stack(v) for k, v in per[e.label].items()}
            if keep_maps:
                maps[e.label][mode] = torch.stack(kept[e.label])

    bar = _bar(progress, len(block_list) * (modes.count("cascade") + modes.count("independent"))
               + ("data" in modes))
    for mode in modes:
        if mode == "cascade":
            measure(mode, _ticking(cascade(model, block_list, seed), bar), [b.name for b in block_list])
        elif mode == "independent":
            measure(mode, _ticking(independent(model, block_list, seed), bar), [b.name for b in block_list])
        else:
            twin = _check_twin(model, random_label_model)
            measure(mode, _ticking(iter([(0, None, twin)]), bar), ["random labels"])
    if bar is not None:
        bar.close()
    return SanityReport(entries, targets.cpu(), layers, block_list, steps, scores, maps, signed, seconds, seed,
                        threshold, fallback_layers(model, block_list), const)


def _layer_is_fixed(entry: MethodEntry) -> bool:
    from ..methods import get_method
    return get_method(entry.method).layers != "none"


def _check_twin(model: nn.Module, twin: nn.Module) -> nn.Module:
    own, other = model.state_dict(), twin.state_dict()
    if list(own) != list(other) or any(own[k].shape != other[k].shape for k in own):
        raise InputError("the random-label model does not have the trained model's architecture")
    return twin


def _bar(enabled: bool, total: int):
    if not enabled:
        return None
    from tqdm.auto import tqdm
    return tqdm(total=total, desc="sanity", unit="step", leave=False)


def _ticking(it, bar):
    for item in it:
        yield item
        if bar is not None:
            bar.update(1)
