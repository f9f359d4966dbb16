"""Layer discovery: the modules a map can be taken at, their output shapes, strides, stages, blocks, whether their
output has passed an activation, and sensible default layers.

Which layers ``layer="blocks"`` / ``layer="stages"`` and the CAM default pick (the rule, also used by SISE):

1. **Blocks** are found from where the spatial resolution drops: a block ends with the last layer before a
   down-sampling starts, and the model's last spatial layer ends the last block (sise.md §layer selection).
2. A block's **output** is kept when it has passed an activation (VGG, ResNet) or is a *pre-activation* (DenseNet:
   only per-channel operations, BatchNorm, residual sums, concatenation, pooling, separate it from the next
   activation). When it is **linear** (a linear
   bottleneck: EfficientNet, MobileNetV2/V3 end their blocks with a projection conv + BatchNorm and a residual sum,
   the next operation mixes channels), the block is represented by its deepest post-activation layer of the same
   resolution (the depthwise activation of the block's last unit, e.g. EfficientNet's ``blocks.4.2.bn2``).
3. **Stages**: one layer per spatial resolution: the deepest block layer at that resolution, or, where that block's
   output is linear, the deepest post-activation layer at that resolution (the activated expansion of the next unit
   before it down-samples, e.g. EfficientNet's ``blocks.2.0.bn1``; VGG, ResNet, DenseNet: their block layers).
4. Where several block layers share a resolution and some have passed an activation, those win (blocks and stages):
   Res2Net down-samples inside its split convolutions after a BatchNorm whose ReLU module runs several times, HRNet's
   fuse layers sum before their ReLU, timm's ConvNeXt stem is conv + LayerNorm. DenseNet keeps its pre-activations.
5. **Channels-last** outputs (N,h,w,C), found from ``permute(0, 2, 3, 1)`` in the fx graph (torchvision's ConvNeXt
   MLP: LayerNorm → Linear → GELU → Linear), are reported with shape (C,h,w) and read channels-first by the CAMs and
   SISE (:func:`as_channels_first`). ConvNeXt's residual stream never passes an activation, so its post-activation
   layers are the MLP's GELU outputs (the stage layer: the GELU of the stage's last block).

Whether an output has passed an activation is read from the model's ``torch.fx`` graph (the LRP engine's tracer), not
from architecture names: ReLU/ReLU6/SiLU/GELU/Hardswish/... modules and functions and fused BatchNorm+activation
modules (timm's ``BatchNormAct2d``) are activations; max/avg pooling, padding, dropout and reshapes keep the state;
a sum or concatenation has passed an activation only when all its inputs have, a product when any factor has
(gating, squeeze-excitation); convolutions, linear layers and normalisations are linear. Models fx cannot trace fall
back to the module types and to which outputs are the same tensor (``"unknown"`` where neither tells).
"""
from __future__ import annotations

import dataclasses
import math
import operator
import weakref
from dataclasses import dataclass
from typing import Any

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
                rec["ptr"] = id(output)  # outputs are kept alive until the trace ends: ids are unique
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
        object.__setattr__(info, "_ptr", rec["ptr"])
        out.append(info)
    out.sort(key=lambda r: r.end)
    last = channels_last_layers(model) if any(len(r.shape) == 3 for r in out) else frozenset()
    for i, r in enumerate(out):  # channels-last outputs (N,h,w,C) are reported as (C,h,w), like every other map
        if r.name in last and len(r.shape) == 3:
            shape = (r.shape[2], r.shape[0], r.shape[1])
            ins = r.input_shape
            if ins is not None and len(ins) == 3 and ins[:2] == r.shape[:2]:
                ins = (ins[2], ins[0], ins[1])
            info = dataclasses.replace(r, shape=shape, input_shape=ins)
            object.__setattr__(info, "_pooled", getattr(r, "_pooled", False))
            object.__setattr__(info, "_ptr", getattr(r, "_ptr", None))
            object.__setattr__(info, "channels_last", True)
            out[i] = info
    in_shape = tuple(example.shape[1:])
    for info in out:
        object.__setattr__(info, "_input_size", in_shape)
    return out




# ------------------------------------------------------------------------------------------ activation states

ACTIVATION = "activation"          # the output has passed a non-linearity
PRE_ACTIVATION = "pre-activation"  # linear, but only per-channel ops (BatchNorm, sums, pooling) lead to one
LINEAR = "linear"                  # linear, and the next operation mixes channels (a linear bottleneck) or none follows
UNKNOWN = "unknown"                # fx could not trace the model and the module type does not tell

_LINEAR_MODULES = (nn.modules.conv._ConvNd, nn.Linear, nn.Bilinear, nn.modules.batchnorm._BatchNorm, nn.GroupNorm,
                   nn.LayerNorm, nn.modules.instancenorm._InstanceNorm, nn.LocalResponseNorm)
_PER_CHANNEL_MODULES = (nn.modules.batchnorm._BatchNorm, nn.modules.instancenorm._InstanceNorm)
_SUM_FUNCS = {operator.add, operator.iadd, operator.sub, operator.isub, torch.add, torch.sub, torch.cat, torch.concat,
              torch.stack}
_MUL_FUNCS = {operator.mul, operator.imul, operator.truediv, operator.itruediv, torch.mul, torch.div}
_LINEAR_FUNCS = {torch.nn.functional.conv1d, torch.nn.functional.conv2d, torch.nn.functional.conv3d,
                 torch.nn.functional.linear, torch.nn.functional.layer_norm, torch.nn.functional.group_norm,
                 torch.nn.functional.batch_norm, torch.nn.functional.instance_norm, torch.matmul, operator.matmul,
                 torch.einsum}
_PER_CHANNEL_FUNCS = {torch.nn.functional.batch_norm, torch.nn.functional.instance_norm}
_SUM_METHODS = {"add", "add_", "sub", "sub_", "__add__", "__iadd__"}
_MUL_METHODS = {"mul", "mul_", "div", "div_"}
_ACT_EXTRA_METHODS = {"hardswish", "silu", "gelu", "sigmoid", "sigmoid_", "tanh", "tanh_", "relu", "relu_", "clamp",
                      "clamp_", "clamp_min", "clamp_min_", "softplus"}
_CONST_METHODS = {"size", "dim", "numel"}
#: modules that hand their input on unchanged in eval mode: never chosen in place of the layer that computed it
_PASS_THROUGH = {"Identity", "Dropout", "Dropout1d", "Dropout2d", "Dropout3d", "AlphaDropout", "FeatureAlphaDropout",
                 "DropPath", "DropBlock2d"}

_STATE_CACHE: "weakref.WeakKeyDictionary[nn.Module, tuple[tuple, tuple[dict[str, str], frozenset[str]] | None]]" = \
    weakref.WeakKeyDictionary()
_TO_CHANNELS_LAST = (0, 2, 3, 1)
_TO_CHANNELS_FIRST = (0, 3, 1, 2)


def _node_kind(node, modules: dict[str, nn.Module]) -> str:
    """act | linear (per_channel: a linear per-channel op) | sum | mul | const | keep (state of the inputs)."""
    from ..lrp.graph import _ACT_FUNCS, _is_activation_module, _is_batchnorm_act
    op, tgt = node.op, node.target
    if op in ("placeholder",):
        return "linear"
    if op in ("get_attr", "output"):
        return "const" if op == "get_attr" else "output"
    if op == "call_module":
        m = modules.get(tgt)
        if m is None:
            return "keep"
        if _is_batchnorm_act(m):
            act = getattr(m, "act", None)
            return "linear_pc" if act is None or isinstance(act, nn.Identity) else "act"
        if _is_activation_module(m):
            return "act"
        if isinstance(m, _PER_CHANNEL_MODULES):
            return "linear_pc"
        if isinstance(m, _LINEAR_MODULES):
            return "linear"
        return "keep"
    if op == "call_function":
        if tgt in _ACT_FUNCS:
            return "act"
        if tgt in _PER_CHANNEL_FUNCS:
            return "linear_pc"
        if tgt in _LINEAR_FUNCS:
            return "linear"
        if tgt in _SUM_FUNCS:
            return "sum"
        if tgt in _MUL_FUNCS:
            return "mul"
        if tgt is getattr:
            return "const"
        return "keep"
    if op == "call_method":
        if tgt in _ACT_EXTRA_METHODS:
            return "act"
        if tgt in _SUM_METHODS:
            return "sum"
        if tgt in _MUL_METHODS:
            return "mul"
        if tgt in _CONST_METHODS:
            return "const"
        return "keep"
    return "keep"  # pragma: no cover


def _permute_dims(node) -> tuple[int, ...] | None:
    """The dims of a ``permute`` node (method or function, dims as varargs or one sequence), else None."""
    is_permute = ((node.op == "call_method" and node.target == "permute")
                  or (node.op == "call_function" and node.target is torch.permute))
    if not is_permute:
        return None
    dims = node.args[1:] if node.op == "call_method" else node.args[1:2]
    if len(dims) == 1 and isinstance(dims[0], (tuple, list)):
        dims = dims[0]
    if "dims" in node.kwargs:
        dims = node.kwargs["dims"]
    try:
        return tuple(int(d) for d in dims)
    except (TypeError, ValueError):
        return ()


def _fx_states(model: nn.Module) -> dict[str, str] | None:
    """Module name → activation state of its output, from the fx graph; None when the model cannot be traced."""
    hit = _fx_analysis(model)
    return None if hit is None else hit[0]


def channels_last_layers(model: nn.Module) -> frozenset[str]:
    """Names of the modules whose (N,·,·,·) output is channels-last (N,h,w,C): the value passed a
    ``permute(0, 2, 3, 1)`` and no ``permute(0, 3, 1, 2)`` since (torchvision's ConvNeXt blocks, timm's ConvNeXt with
    ``conv_mlp=False``: LayerNorm → Linear → GELU → Linear on channels-last tensors). Read from the fx graph; empty
    when the model cannot be traced. The CAMs read these layers' maps as (N,C,h,w) (:func:`as_channels_first`)."""
    hit = _fx_analysis(model)
    return frozenset() if hit is None else hit[1]


def as_channels_first(model: nn.Module, name: str, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """``tensors`` (the output of layer ``name`` and e.g. its gradient or relevance) as (N,C,h,w) views: permuted
    when the layer's output is channels-last (:func:`channels_last_layers`), unchanged otherwise."""
    if name in channels_last_layers(model):
        return tuple(t.permute(*_TO_CHANNELS_FIRST) if t.dim() == 4 else t for t in tensors)
    return tensors


def _fx_analysis(model: nn.Module) -> tuple[dict[str, str], frozenset[str]] | None:
    """(module name → activation state, channels-last module names) from the fx graph; None when the model cannot
    be traced."""
    from .._state import preserved
    from ..lrp.graph import _Tracer
    key = tuple(id(m) for m in model.modules())
    hit = _STATE_CACHE.get(model)
    if hit is not None and hit[0] == key:
        return hit[1]
    tracer = _Tracer()
    try:
        with preserved(model):
            graph = tracer.trace(model)
    except Exception:  # noqa: BLE001 - fx raises many types for untraceable code; fall back to module types
        _STATE_CACHE[model] = (key, None)
        return None
    modules = dict(model.named_modules())
    nodes = list(graph.nodes)
    kinds = {n: _node_kind(n, modules) for n in nodes}
    activated: dict[Any, bool] = {}
    for n in nodes:  # forward: has the value passed an activation?
        if kinds[n] == "keep" and n.all_input_nodes and all(kinds[a] == "const" for a in n.all_input_nodes):
            kinds[n] = "const"  # e.g. x.size()[0]: shape arithmetic
        k = kinds[n]
        ins = [a for a in n.all_input_nodes if kinds[a] != "const"]
        if k == "act":
            activated[n] = True
        elif k in ("linear", "linear_pc", "output"):
            activated[n] = False
        elif k == "const":
            activated[n] = False
        elif k == "mul":
            activated[n] = any(activated[a] for a in ins)
        else:  # sum / keep: all inputs activated
            activated[n] = bool(ins) and all(activated[a] for a in ins)
    leads: dict[Any, bool] = {}
    for n in reversed(nodes):  # backward: do only per-channel ops separate the value from an activation?
        users = list(n.users)
        ok = bool(users)
        for u in users:
            k = kinds[u]
            if k == "const" or k == "act" or activated.get(u, False):
                continue
            if k in ("linear_pc", "sum", "keep") and leads.get(u, False):
                continue
            ok = False
            break
        leads[n] = ok
    last: dict[Any, bool] = {}
    for n in nodes:  # forward: is the value channels-last (passed permute(0,2,3,1), not permuted back)?
        dims = _permute_dims(n)
        if dims is not None:
            last[n] = dims == _TO_CHANNELS_LAST or (dims != _TO_CHANNELS_FIRST and last.get(n.args[0], False))
        else:
            ins = [a for a in n.all_input_nodes if kinds[a] != "const"]
            last[n] = bool(ins) and last.get(ins[0], False)
    states: dict[str, str] = {}
    channels_last = set()
    for name, outs in tracer.module_outputs.items():
        found = {ACTIVATION if activated[o] else PRE_ACTIVATION if leads[o] else LINEAR for o in outs}
        states[name] = found.pop() if len(found) == 1 else UNKNOWN
        if all(last[o] for o in outs):
            channels_last.add(name)
    del tracer, graph
    result = (states, frozenset(channels_last))
    _STATE_CACHE[model] = (key, result)
    return result


def activation_states(model: nn.Module, records: list[LayerInfo] | None = None) -> dict[str, str]:
    """Layer name → ``"activation"`` | ``"pre-activation"`` | ``"linear"`` | ``"unknown"`` for every traced layer
    (see the module docstring for the rule)."""
    from ..lrp.graph import _is_activation_module, _is_batchnorm_act
    records = trace_layers(model) if records is None else records
    fx_states = _fx_states(model) or {}
    modules = dict(model.named_modules())
    states: dict[str, str] = {}
    for r in records:  # modules fx does not see (inside fused leaves, or an untraceable model): by type
        m = modules.get(r.name)
        if r.name in fx_states:
            states[r.name] = fx_states[r.name]
        elif m is not None and (_is_activation_module(m) or (_is_batchnorm_act(m) and not isinstance(
                getattr(m, "act", None), (nn.Identity, type(None))))):
            states[r.name] = ACTIVATION
        elif m is not None and isinstance(m, _LINEAR_MODULES) and not fx_states:
            states[r.name] = LINEAR
    for r in records:  # inside a fused leaf (timm's BatchNormAct2d: BN → drop → act): before its activation
        if r.name in states or r.name not in modules:
            continue
        parent = r.name.rpartition(".")[0]
        while parent and parent not in fx_states:
            parent = parent.rpartition(".")[0]
        if parent:
            states[r.name] = PRE_ACTIVATION if fx_states[parent] == ACTIVATION else fx_states[parent]
    by_ptr: dict[int, LayerInfo] = {}
    for r in records:  # a container returning a child's output tensor has the child's state
        ptr = getattr(r, "_ptr", None)
        if r.name not in states and ptr is not None and ptr in by_ptr and by_ptr[ptr].name in states:
            states[r.name] = states[by_ptr[ptr].name]
        if ptr is not None:
            by_ptr[ptr] = r
    return {r.name: states.get(r.name, UNKNOWN) for r in records}


# --------------------------------------------------------------------------------------------------- reports

class ExplainableLayer(tuple):
    """One layer of :func:`explainable_layers`: unpacks as ``(name, shape)`` (the shape without the batch dimension),
    and carries ``type``, ``stride`` (input size / output size, None when not spatial), ``stage`` (1, 2, ... by spatial
    resolution, None when not spatial), ``block`` (the output module of the block it belongs to), ``activation``
    (``"activation"`` | ``"pre-activation"`` | ``"linear"`` | ``"unknown"``), ``calls`` (runs per forward) and
    ``channels_last`` (the module outputs (N,h,w,C); ``shape`` is given as (C,h,w) all the same)."""

    name: str
    shape: tuple[int, ...]
    type: str
    stride: int | None
    stage: int | None
    block: str | None
    activation: str
    calls: int
    channels_last: bool

    def __new__(cls, name: str, shape: tuple[int, ...], **info: Any) -> "ExplainableLayer":
        self = super().__new__(cls, (name, shape))
        self.__dict__.update(name=name, shape=shape, **info)
        return self

    @property
    def activated(self) -> bool:
        """True when the output has passed an activation."""
        return self.activation == ACTIVATION

    def __repr__(self) -> str:
        return (f"ExplainableLayer({self.name!r}, {self.shape}, type={self.type!r}, stride={self.stride}, "
                f"stage={self.stage}, block={self.block!r}, activation={self.activation!r})")


def _stride(shape: tuple[int, ...], input_size: tuple[int, ...] | None) -> int | None:
    """The total stride of a (C,h,w) output: the power of two s with h = ⌊H/s⌋ or ⌈H/s⌉, else round(H/h)."""
    if input_size is None or len(shape) != 3 or len(input_size) != 3 or shape[1] * shape[2] <= 1:
        return None
    size, out = (input_size[1], shape[1]) if shape[1] > 1 else (input_size[2], shape[2])
    for k in range(0, 12):
        s = 2 ** k
        if out in (size // s, math.ceil(size / s)):
            return s
    return max(1, round(size / out))


def _plain(r: LayerInfo) -> bool:
    return r.spatial and r.calls == 1 and not getattr(r, "_pooled", False)


def _last_spatial(records: list[LayerInfo]) -> LayerInfo:
    for r in reversed(records):
        if _plain(r):
            return r
    raise ValueError("the model has no spatial layer to explain")


def _block_ends(records: list[LayerInfo]) -> list[str]:
    """The output of every block: the layer just before each down-sampling stage starts, plus the last spatial
    layer (found from where the spatial resolution drops)."""
    by_name = {r.name: r for r in records}

    def res(shape):
        return shape[1] * shape[2] if shape is not None and len(shape) == 3 else 0

    def drops(r):  # to a smaller spatial map, both sides (a global pool, e.g. inside squeeze-excitation, ends no
        # block, nor does a channels-last linear layer that shrinks the last dimension)
        return (r.input_shape is not None and len(r.input_shape) == 3 and r.spatial
                and r.shape[1] < r.input_shape[1] and r.shape[2] < r.input_shape[2])

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
    final = _last_spatial(records).name
    if final in ends:
        ends.remove(final)
    ends.append(final)
    return ends


def _choose(end: LayerInfo, after: int, records: list[LayerInfo], states: dict[str, str]) -> str:
    """The block output ``end`` unless it is linear; then the deepest post-activation layer of the same resolution
    that completes after ``after`` and not after ``end``."""
    if states.get(end.name) != LINEAR:
        return end.name
    cands = [r for r in records if after < r.end <= end.end and _plain(r) and r.shape[1:] == end.shape[1:]
             and states.get(r.name) == ACTIVATION and r.type not in _PASS_THROUGH]
    return max(cands, key=lambda r: r.end).name if cands else end.name


def _block_choices(model: nn.Module, records: list[LayerInfo]) -> list[tuple[str, str]]:
    """(block output, chosen layer) for every block, shallow → deep."""
    states = activation_states(model, records)
    by_name = {r.name: r for r in records}
    out, after = [], -1
    for name in _block_ends(records):
        end = by_name[name]
        out.append((name, _choose(end, after, records, states)))
        after = end.end
    return out


def explainable_layers(model: nn.Module, example: torch.Tensor | None = None) -> list[ExplainableLayer]:
    """Every module's output in execution order: ``(name, shape)`` tuples that also carry ``type``, ``stride``,
    ``stage``, ``block``, ``activation`` and ``calls`` (:class:`ExplainableLayer`)."""
    return report_from_records(model, trace_layers(model, example))


def report_from_records(model: nn.Module, records: list[LayerInfo]) -> list[ExplainableLayer]:
    """:func:`explainable_layers` from an existing :func:`trace_layers` result."""
    states = activation_states(model, records)
    try:
        ends = _block_ends(records)
    except ValueError:
        ends = []
    by_name = {r.name: r for r in records}
    end_at = sorted((by_name[n].end, n) for n in ends)
    strides = {r.name: _stride(r.shape, getattr(r, "_input_size", None)) for r in records}
    stage_of = {s: i + 1 for i, s in enumerate(sorted({s for s in strides.values() if s is not None}))}
    out = []
    for r in records:
        block = next((n for e, n in end_at if e >= r.end), None) if r.spatial else None
        s = strides[r.name]
        out.append(ExplainableLayer(r.name, r.shape, type=r.type, stride=s, stage=stage_of.get(s), block=block,
                                    activation=states[r.name], calls=r.calls,
                                    channels_last=getattr(r, "channels_last", False)))
    return out


def default_layer(model: nn.Module, records: list[LayerInfo] | None = None) -> str:
    """The CAM default: the last spatial (h·w > 1) output that is not a pooling output (cams.md §3), or, when that
    output is linear (a linear bottleneck), the deepest post-activation layer of its block at the same resolution.

    Gives ``layer4`` for ResNets, ``features.29`` for VGG16, ``features.42`` for VGG16-BN, ``features.11`` for AlexNet,
    ``features`` for DenseNet/MobileNetV2/V3 and ``bn2`` for timm EfficientNets.
    """
    records = trace_layers(model) if records is None else records
    return block_layers(model, records)[-1]


def block_layers(model: nn.Module, records: list[LayerInfo] | None = None) -> list[str]:
    """One layer per convolutional block (sise.md §layer selection; ``layer="blocks"``, SISE's default layers): the
    block's output (the layer just before the next down-sampling, and the last spatial layer) when it has passed an
    activation or is a pre-activation, otherwise the deepest post-activation layer inside the block at the block's
    resolution (EfficientNet / MobileNet: the depthwise activation of the block's last unit)."""
    records = trace_layers(model) if records is None else records
    states = activation_states(model, records)
    by_name = {r.name: r for r in records}
    chosen = list(dict.fromkeys(chosen for _, chosen in _block_choices(model, records)))
    activated = {by_name[n].shape[1:] for n in chosen if states.get(n) == ACTIVATION}
    # a pre-activation or linear block output shares its resolution with a post-activation one (Res2Net's split
    # convolutions down-sample inside a block after a BatchNorm whose ReLU runs several times; HRNet's fuse layers;
    # the linear ConvNeXt stem): keep the post-activation ones only
    return [n for n in chosen if states.get(n) == ACTIVATION or by_name[n].shape[1:] not in activated]


def stage_layers(model: nn.Module, records: list[LayerInfo] | None = None) -> list[str]:
    """One layer per spatial resolution (``layer="stages"``): the deepest of the :func:`block_layers` at that
    resolution; where that block's output is linear (a linear bottleneck), the deepest post-activation layer at that
    resolution instead, which can be the activated expansion of the next unit before it down-samples
    (EfficientNet-Lite0: ``blocks.1.0.bn1`` at stride 2). VGG, ResNet, DenseNet: their block layers."""
    records = trace_layers(model) if records is None else records
    states = activation_states(model, records)
    by_name = {r.name: r for r in records}
    per_res: dict[tuple[int, ...], list[str]] = {}
    for end, chosen in _block_choices(model, records):
        res = by_name[end].shape[1:]
        if states.get(end) == LINEAR:
            acts = [r for r in records if r.shape[1:] == res and _plain(r) and r.type not in _PASS_THROUGH
                    and states.get(r.name) == ACTIVATION]
            if acts:
                chosen = max(acts, key=lambda r: r.end).name
        per_res.setdefault(res, []).append(chosen)
    out = []
    for res, names in per_res.items():  # the deepest post-activation choice, else the deepest (DenseNet)
        activated = [n for n in names if states.get(n) == ACTIVATION]
        out.append(max(activated or names, key=lambda n: by_name[n].end))
    return sorted(dict.fromkeys(out), key=lambda n: by_name[n].end)
