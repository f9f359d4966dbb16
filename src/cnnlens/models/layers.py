"""Layer discovery: the modules a map can be taken at, their output shapes, and sensible default layers."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .._state import model_device, model_dtype, preserved

_POOLS = (nn.MaxPool1d, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.AdaptiveAvgPool1d)


@dataclass(frozen=True)
class LayerInfo:
    """One module call seen in a forward pass (in completion order)."""
    name: str
    type: str
    shape: tuple[int, ...]          # output shape without the batch dimension
    input_shape: tuple[int, ...] | None
    calls: int                      # how often the module runs per forward (>1: needs call_index)
    start: int                      # order in which the module was entered
    end: int                        # order in which it returned

    @property
    def spatial(self) -> bool:
        return len(self.shape) == 3 and self.shape[1] * self.shape[2] > 1


def _input_size(model: nn.Module) -> tuple[int, int, int]:
    meta = getattr(model, "cnnlens_meta", None)
    if meta is not None:
        return tuple(meta.input_size)  # type: ignore[return-value]
    channels = 3
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            channels = m.in_channels
            break
    return (channels, 224, 224)


def trace_layers(model: nn.Module, example: torch.Tensor | None = None) -> list[LayerInfo]:
    """Run one forward (no grad) and record every named module's output shape, in completion order."""
    if example is None:
        example = torch.zeros((1, *_input_size(model)), device=model_device(model), dtype=model_dtype(model))
    records: dict[str, dict] = {}
    counter = [0]
    pooled_outputs: set[int] = set()
    keep: list[torch.Tensor] = []
    handles = []

    def pre(name):
        def hook(module, inputs):
            counter[0] += 1
            rec = records.setdefault(name, {"calls": 0, "start": counter[0]})
            rec["calls"] += 1
            if rec["calls"] == 1:
                rec["start"] = counter[0]
                x = inputs[0] if inputs and isinstance(inputs[0], torch.Tensor) else None
                rec["input_shape"] = tuple(x.shape[1:]) if x is not None else None
        return hook

    def post(name):
        def hook(module, inputs, output):
            counter[0] += 1
            rec = records[name]
            if rec["calls"] == 1 and isinstance(output, torch.Tensor):
                rec["end"] = counter[0]
                rec["shape"] = tuple(output.shape[1:])
                rec["type"] = type(module).__name__
                rec["ptr"] = id(output)
                keep.append(output)
                if isinstance(module, _POOLS) or "pool" in type(module).__name__.lower():
                    pooled_outputs.add(id(output))
        return hook

    with preserved(model):
        try:
            for name, m in model.named_modules():
                if name:
                    handles.append(m.register_forward_pre_hook(pre(name)))
                    handles.append(m.register_forward_hook(post(name)))
            with torch.no_grad():
                model(example)
        finally:
            for h in handles:
                h.remove()
    out = []
    for name, rec in records.items():
        if "shape" not in rec:
            continue
        info = LayerInfo(name, rec["type"], rec["shape"], rec.get("input_shape"), rec["calls"], rec["start"],
                         rec["end"])
        object.__setattr__(info, "_pooled", rec["ptr"] in pooled_outputs)
        out.append(info)
    out.sort(key=lambda r: r.end)
    return out


def explainable_layers(model: nn.Module, example: torch.Tensor | None = None) -> list[tuple[str, tuple[int, ...]]]:
    """List ``(module name, output shape without batch)`` for every module, in execution order."""
    return [(r.name, r.shape) for r in trace_layers(model, example)]


def default_layer(model: nn.Module, records: list[LayerInfo] | None = None) -> str:
    """The CAM default: the last spatial (h·w > 1) output that is not a pooling output (cams.md §3).

    Gives ``layer4`` for ResNets, ``features.29`` for VGG16, ``features.42`` for VGG16-BN, ``features.11`` for AlexNet,
    ``features`` for DenseNet/MobileNetV2 and ``bn2`` for timm EfficientNets.
    """
    records = trace_layers(model) if records is None else records
    for r in reversed(records):
        if r.spatial and r.calls == 1 and not getattr(r, "_pooled", False):
            return r.name
    raise ValueError("the model has no spatial layer to explain")


def block_layers(model: nn.Module, records: list[LayerInfo] | None = None) -> list[str]:
    """The last layer of every convolutional block: the output taken just before each down-sampling stage starts,
    plus the final spatial layer (sise.md §layer selection). Found from where the spatial resolution drops."""
    records = trace_layers(model) if records is None else records
    by_name = {r.name: r for r in records}

    def res(shape):
        return shape[1] * shape[2] if shape is not None and len(shape) == 3 else 0

    def drops(r):
        return r.input_shape is not None and len(r.input_shape) == 3 and res(r.shape) < res(r.input_shape)

    tops = set()
    for r in records:
        if not drops(r):
            continue
        top = r
        parts = r.name.split(".")
        for i in range(len(parts) - 1, 0, -1):
            parent = by_name.get(".".join(parts[:i]))
            if parent is None or res(parent.input_shape) != res(r.input_shape) or res(parent.shape) != res(r.shape):
                break
            top = parent
        tops.add(top.name)
    ends: list[str] = []
    for name in sorted(tops, key=lambda n: by_name[n].start):
        start = by_name[name].start
        before = [r for r in records if r.end < start and r.spatial and r.calls == 1]
        if before:
            cand = max(before, key=lambda r: r.end)
            if cand.name not in ends:
                ends.append(cand.name)
    final = default_layer(model, records)
    if final not in ends:
        ends.append(final)
    return ends
