"""What an evaluation computes: its conventions (:class:`EvalConfig`), its methods (:class:`MethodRun`), the default
comparison, and the run identity — every setting that changes a number, recorded in ``run.json`` so that a results
folder never mixes two configurations."""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

from ..errors import CnnlensError, InputError

#: The default comparison: the Relevance-CAM paper's CAM table (Lee et al. CVPR 2021, Table 1: Grad-CAM, Grad-CAM++,
#: Score-CAM, Relevance-CAM) …
DEFAULT_METHODS = ("relevance-cam", "grad-cam", "grad-cam++", "score-cam")
#: … scored with the seeds' cheap metrics: Average Drop / Increase in Confidence (Grad-CAM++ §6.1, used by Score-CAM
#: and SISE), their Relevance-CAM variants (top-50 % mask) and the energy-based pointing game (Score-CAM §5.2, SISE).
#: Deletion/insertion (≈ 450 forwards per map at 224²) and the box-threshold metrics are opt-in.
DEFAULT_METRICS = ("average-drop", "increase", "average-drop-rcam", "average-increase-rcam", "energy-pointing-game")

#: Version of the results format (records keyed by ``unit``; ``run.json`` holds the full identity).
FORMAT = 2


class ResumeError(CnnlensError, ValueError):
    """The output folder holds results of another configuration (or another run is writing to it)."""


@dataclass
class EvalConfig:
    """Every convention a number depends on (metrics.md §0); recorded in ``run.json`` and printed with the tables.

    target: "label" (every ground-truth class of the image) or "predicted" (top-1 on the original image).
    batch_size: images per block (a block is always images b·B … (b+1)·B − 1 of the dataset order).
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

    @property
    def key(self) -> str:
        """``method@layers`` — with the block index, the name of a unit of work (see :mod:`.store`)."""
        return f"{self.name}@{','.join(self.layers) if self.layers else 'default'}"


def method_runs(methods: Sequence[str | MethodRun] | str | None, layers: Sequence[str] | str | None,
                options: dict[str, dict] | None) -> list[MethodRun]:
    """The runs of ``methods`` (None: :data:`DEFAULT_METHODS`; "all": every registered method)."""
    from ..methods import all_methods, get_method
    if methods is None:
        names = list(DEFAULT_METHODS)
    elif methods == "all":
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
    keys = [r.key for r in runs]
    twice = sorted({k for k in keys if keys.count(k) > 1})
    if twice:                 # two runs with one key would write the same units
        raise InputError(f"method run listed twice: {', '.join(twice)}")
    return runs


# ------------------------------------------------------------------------------------------ run identity
def _jsonable(v: Any) -> Any:
    """A canonical JSON form of an option value (a tensor by its shape, dtype and content hash)."""
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in sorted(v.items(), key=lambda kv: str(kv[0]))}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    try:
        import torch
        if isinstance(v, torch.Tensor):
            t = v.detach().cpu().contiguous()
            return {"tensor": list(t.shape), "dtype": str(t.dtype),
                    "sha256": hashlib.sha256(t.view(-1).view(torch.uint8).numpy().tobytes()).hexdigest()[:16]}
    except ImportError:  # pragma: no cover
        pass
    return repr(v)


def parameters_digest(model) -> str:
    """sha256 of the model's state (parameters and buffers, in order): two models with it equal compute the same."""
    import torch
    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        t = t.detach().cpu().contiguous()
        h.update(name.encode("utf-8"))
        h.update(str(t.dtype).encode("utf-8"))
        h.update(repr(tuple(t.shape)).encode("utf-8"))
        h.update(t.view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return "sha256:" + h.hexdigest()[:24]


def weights_source(model) -> str | None:
    """Where the weights came from (``ModelInfo.weights``: "file:sha256:…", "url:…", "torchvision:…", "random"),
    None when the model does not say."""
    try:
        from ..models.zoo import model_info
        w = getattr(model_info(model), "weights", None)
    except ImportError:  # pragma: no cover
        w = getattr(getattr(model, "cnnlens_meta", None), "weights", None)
    return None if w is None else str(w)


def run_identity(*, model, model_name: str, dataset_description: Any, config: EvalConfig, runs: list[MethodRun],
                 metrics: list[str], preprocessing: tuple) -> dict:
    """Every setting that changes a number: model name, weights (source and a digest of the parameters), dtype,
    preprocessing, dataset, conventions (target rule, metric conventions, seeds, block size), methods with their
    options and layers, metrics, and the results format."""
    from .._state import model_dtype
    size, mean, std = preprocessing
    return {
        "format": FORMAT,
        "model": model_name,
        "weights": weights_source(model),
        "parameters": parameters_digest(model),
        "dtype": str(model_dtype(model)).replace("torch.", ""),
        "preprocessing": {"input_size": list(size), "mean": list(mean), "std": list(std), "resize": "squash"},
        "dataset": _jsonable(dataset_description),
        "config": asdict(config),
        "methods": {r.key: {"method": r.name, "layers": r.layers, "options": _jsonable(r.options)} for r in runs},
        "metrics": list(metrics),
    }


_LABELS = {"format": "results format", "model": "model", "weights": "weights", "parameters": "model weights "
           "(parameter digest)", "dtype": "model dtype", "preprocessing": "preprocessing", "dataset": "dataset",
           "config": "", "methods": "methods", "metrics": "metrics"}


def _short(v: Any) -> str:
    text = json.dumps(v, sort_keys=True, ensure_ascii=False) if not isinstance(v, str) else v
    return text if len(text) <= 40 else text[:37] + "…"


def identity_differences(old: dict, new: dict) -> list[str]:
    """Human names of the settings that differ, e.g. ``"option rise n_masks 20 → 400"``, ``"target label →
    predicted"``, ``"methods grad-cam@default, rise@default → grad-cam@default"``."""
    diffs: list[str] = []
    for key in list(new) + [k for k in old if k not in new]:
        a, b = old.get(key), new.get(key)
        if a == b:
            continue
        if key == "config" and isinstance(a, dict) and isinstance(b, dict):
            diffs += [f"{k} {_short(a.get(k))} → {_short(b.get(k))}" for k in list(b) + [k for k in a if k not in b]
                      if a.get(k) != b.get(k)]
        elif key == "methods" and isinstance(a, dict) and isinstance(b, dict) and set(a) == set(b):
            for run in b:
                oa, ob = (a[run] or {}).get("options") or {}, (b[run] or {}).get("options") or {}
                for k in sorted(set(oa) | set(ob)):
                    if oa.get(k) != ob.get(k):
                        diffs.append(f"option {run.split('@')[0]} {k} {_short(oa.get(k, '(default)'))} → "
                                     f"{_short(ob.get(k, '(default)'))}")
        elif key == "methods" and isinstance(a, dict) and isinstance(b, dict):
            diffs.append(f"methods {', '.join(a)} → {', '.join(b)}")
        elif key == "metrics" and isinstance(a, list) and isinstance(b, list):
            diffs.append(f"metrics {','.join(a)} → {','.join(b)}")
        else:
            diffs.append(f"{_LABELS.get(key, key)} {_short(a)} → {_short(b)}")
    return diffs
