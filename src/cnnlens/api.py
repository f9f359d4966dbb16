"""The one call shape: ``explain(model, x, method, target=None, layer=None, **options) -> Explanation``."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from ._logits import logits_model
from ._state import model_device, model_dtype, preserved
from .capture import resolve_module
from .errors import InputError, LayerError, MethodError
from .methods import all_methods, get_method
from .methods.registry import Request
from .models.layers import block_layers, default_layer, stage_layers, trace_layers
from .targets import TargetSpec


@dataclass
class Explanation:
    """The result of one method on a batch.

    heatmap: (N,H,W) in [0,1] at input resolution (signed methods: 0.5 = zero relevance).
    raw: the unnormalised map at its native resolution, sign kept.
    target: (N,) the explained classes. logits: (N,C) of the explained forward pass (when the method has one).
    inputs: the explained batch (N,C,H,W) as the model saw it, and input_norm its (mean, std) preprocessing when the
    model carries it (``load_model`` models), for display: in a notebook an Explanation shows itself as the overlays
    with a colour bar, method, layer, target and convention (``_repr_html_``; ``overlay(i)`` gives the pixels).
    """
    heatmap: torch.Tensor
    raw: torch.Tensor
    target: torch.Tensor
    method: str
    layer: str | list[str] | None
    logits: torch.Tensor | None = None
    class_names: Sequence[str] | None = None
    signed: bool = False
    extras: dict[str, Any] = field(default_factory=dict)
    inputs: torch.Tensor | None = field(default=None, repr=False, compare=False)
    input_norm: tuple[tuple[float, ...], tuple[float, ...]] | None = field(default=None, repr=False, compare=False)

    @property
    def target_names(self) -> list[str]:
        names = self.class_names
        return [names[t] if names else str(t) for t in self.target.tolist()]

    @property
    def probabilities(self) -> torch.Tensor | None:
        """Softmax probability of each sample's target class (None when the method had no forward pass)."""
        if self.logits is None:
            return None
        return self.logits.detach().float().softmax(-1).gather(1, self.target[:, None].to(self.logits.device))[:, 0]

    def __len__(self) -> int:
        return int(self.heatmap.shape[0])

    def overlay(self, index: int = 0, *, alpha: float = 0.5) -> Any:
        """(H,W,3) uint8: map ``index`` in its colour map (jet; signed: seismic, white = 0) over its input."""
        from .display import display_images, overlay_rgb
        images = display_images(self, index + 1)
        return overlay_rgb(self.heatmap[index], None if images is None else images[index], signed=self.signed,
                           alpha=alpha, max_side=max(self.heatmap.shape[-2:]))

    def figure(self, *, alpha: float = 0.5) -> Any:
        """A matplotlib Figure of the overlays, with titles and colour bar (``fig.savefig(path)`` to keep it)."""
        from .display import explanation_figure
        return explanation_figure(self, alpha=alpha)

    def _repr_html_(self) -> str:
        from .display import explanation_html
        return explanation_html(self)

    def _repr_png_(self) -> bytes:
        from .display import explanation_png
        return explanation_png(self)


class Explanations(dict):
    """What ``explain`` returns for several layers: a dict layer name → :class:`Explanation` (every dict operation
    works) that shows itself in a notebook as a grid, one row per image and one column per layer. Any mapping label →
    Explanation can be shown the same way: ``cnnlens.Explanations({"grad-cam": e1, "rise": e2})``."""

    def figure(self, *, alpha: float = 0.5) -> Any:
        """A matplotlib Figure of the grid (``fig.savefig(path)`` to keep it)."""
        from .display import explanation_figure
        return explanation_figure(self, alpha=alpha)

    def _repr_html_(self) -> str | None:
        if not self:
            return None
        from .display import explanation_html
        return explanation_html(self)

    def _repr_png_(self) -> bytes | None:
        if not self:
            return None
        from .display import explanation_png
        return explanation_png(self)


def _first_conv_channels(model: nn.Module) -> int | None:
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            return m.in_channels
    return None


def validate_input(x: Any, model: nn.Module) -> torch.Tensor:
    """Check rank, channels, dtype and finiteness; return x on the model's device and dtype."""
    if not isinstance(x, torch.Tensor):
        raise InputError(f"input must be a torch.Tensor of shape (N,C,H,W), got {type(x).__name__} "
                         f"(use cnnlens.load_image to load a picture)")
    if x.dim() != 4:
        hint = " (add a batch dimension: x.unsqueeze(0))" if x.dim() == 3 else ""
        raise InputError(f"input must have 4 dimensions (N,C,H,W), got shape {tuple(x.shape)}{hint}")
    if not x.is_floating_point():
        raise InputError(f"input must be a floating-point tensor, got dtype {x.dtype} (preprocess it, e.g. with "
                         f"cnnlens.load_image)")
    if x.shape[0] == 0:
        raise InputError("input batch is empty")
    channels = _first_conv_channels(model)
    if channels is not None and x.shape[1] != channels:
        raise InputError(f"input has {x.shape[1]} channels but the model's first convolution expects {channels}")
    if not bool(torch.isfinite(x).all()):
        raise InputError("input contains NaN or Inf values")
    return x.detach().to(device=model_device(model), dtype=model_dtype(model))


def _class_names(model: nn.Module, class_names: Sequence[str] | None) -> Sequence[str] | None:
    if class_names is not None:
        return class_names
    meta = getattr(model, "cnnlens_meta", None)
    return getattr(meta, "class_names", None)


def explain(model: nn.Module, x: torch.Tensor, method: str = "grad-cam", target: TargetSpec = None,
            layer: str | Sequence[str] | None = None, *, class_names: Sequence[str] | None = None,
            progress: bool = False, **options: Any) -> Explanation | Explanations:
    """Explain ``model``'s decision on the batch ``x`` with ``method``.

    target: None (each sample's top-1), an int, a class name, or a per-sample list/tensor.
    layer: a module name (``"layer3"``, ``"features.29"``), a list of names (returns :class:`Explanations`, a dict
    layer → Explanation),
    ``"blocks"`` (one layer per block: its output, or its deepest post-activation layer where the output is a linear
    bottleneck; ``cnnlens.block_layers``) or ``"stages"`` (one such layer per spatial resolution, the deepest;
    ``cnnlens.stage_layers``). Methods without a layer (LRP, RISE, SR map) take none.
    options: method-specific keyword options (see ``cnnlens.method_options(method)``).
    ``method="NAME@COMPOSITE"`` is ``method="NAME", composite="COMPOSITE"`` (LRP-based methods).
    """
    spec = get_method(method)
    if isinstance(method, str) and "@" in method:
        composite = method.partition("@")[2].strip()
        if options.get("composite", composite) != composite:
            raise MethodError(f"method {method!r} with composite={options['composite']!r}: give one composite")
        options["composite"] = composite
    spec.check_options(options)
    if not isinstance(model, nn.Module):
        raise InputError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    x = validate_input(x, model)
    names = _class_names(model, class_names)
    # a model returning an object (Hugging Face output, dict, tuple): its logits view, same module names
    model = logits_model(model, x)
    as_dict = isinstance(layer, (list, tuple)) or layer in ("blocks", "stages")
    with preserved(model):
        records = None
        if spec.layers == "none":
            if layer is not None:
                raise LayerError(f"method {spec.name!r} takes no layer (it explains at the input)")
            layers = None
        elif layer is None:
            if spec.layers == "single":
                records = trace_layers(model, x[:1])
                layers = [default_layer(model, records)]
            else:
                layers = None
        elif layer in ("blocks", "stages"):
            records = trace_layers(model, x[:1])
            layers = (block_layers if layer == "blocks" else stage_layers)(model, records)
        else:
            layers = [layer] if isinstance(layer, str) else list(layer)
            if not layers:
                raise LayerError("empty layer list")
            for name in layers:
                resolve_module(model, name)
        req = Request(model, x, target, layers, names, progress, records)
        if spec.layers == "single" and not spec.multi_layer and layers and len(layers) > 1:
            outputs = {}
            for name in layers:
                req1 = Request(model, x, target, [name], names, progress, records)
                outputs[name] = spec.fn(req1, **options)
            results = {name: _to_explanation(spec, out, name, names)[name] for name, out in outputs.items()}
        else:
            out = spec.fn(req, **options)
            results = _to_explanation(spec, out, None if spec.layers == "none" else layers, names)
    norm = _input_norm(model)
    for e in results.values():
        e.inputs, e.input_norm = x, norm
    if spec.layers == "single" and as_dict:
        return Explanations(results)
    return next(iter(results.values()))


def _input_norm(model: nn.Module) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    """(mean, std) of the model's preprocessing when it carries it (``model.cnnlens_meta``), else None."""
    meta = getattr(model, "cnnlens_meta", None)
    mean, std = getattr(meta, "mean", None), getattr(meta, "std", None)
    if mean is None or std is None:
        return None
    return tuple(float(v) for v in mean), tuple(float(v) for v in std)


def _to_explanation(spec, out, layers, names) -> dict:
    results = {}
    for key, m in out.maps.items():
        if spec.layers == "set":
            lay = m.extras.get("layers", layers)
        else:
            lay = key
        results[key] = Explanation(heatmap=m.heatmap, raw=m.raw, target=out.targets, method=spec.name, layer=lay,
                                   logits=None if out.logits is None else out.logits.detach(), class_names=names,
                                   signed=m.signed, extras=m.extras)
    return results


class _Methods(Mapping):
    """``cnnlens.METHODS``: method name → one-line description (read from the registry when used)."""

    def _data(self) -> dict[str, str]:
        return {n: s.description for n, s in all_methods().items()}

    def __getitem__(self, key: str) -> str:
        return self._data()[key]

    def __iter__(self):
        return iter(self._data())

    def __len__(self) -> int:
        return len(self._data())

    def __repr__(self) -> str:
        return repr(self._data())


METHODS: Mapping[str, str] = _Methods()


def method_options(method: str) -> list[str]:
    """The keyword options ``explain`` accepts for ``method``."""
    return get_method(method).option_names()
