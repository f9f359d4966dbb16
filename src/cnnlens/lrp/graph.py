"""The canonised, traced form of a model that the LRP engine runs (lrp_sglrp_clrp.md §1; lrp_modern_layers.md).

``get_plan(model, bn=...)`` traces the model once with ``torch.fx`` (functional adds/cats/products that module hooks
miss become explicit nodes; timm's ``Conv2dSame``/``BatchNormAct2d``/``DropPath`` and every ``torch.nn`` layer are
leaves; if tracing fails it is retried with timm's own FX leaf registry, read lazily from ``sys.modules``: timm is never
imported), classifies every node by what it computes (linear layer, BatchNorm, activation, gate product, scale,
LayerNorm/GroupNorm, max/avg pool, Add, Concat, split, shape routing; docs/lrp_rules.md has the table), folds BatchNorm into the preceding
conv/linear when ``bn="fold"`` (zennit's ``SequentialMergeBatchNorm``), and infers which tensors are non-negative
(post-ReLU) so z⁺-type rules skip their all-zero negative terms. A graph analysis marks which values depend on the input
(parameters-only subgraphs, e.g. a standardised conv weight, are constants; shape queries carry no relevance), which
product operand is a gate (reached from a squashing function through routing ops, or from a global pool), and which
conv/linear outputs are linear neurons (not gated by a ReLU-type activation). Nothing of the user's model is modified:
the plan holds detached references to its parameters (folded weights are new tensors) and its forward is a functional
re-implementation with out-of-place operations. Plans are cached per model, BN mode and parameter versions. A model
whose forward branches in Python on the input's size (timm's ``ConvMlp``) is traced with concrete shapes for the input
being explained (``get_plan(..., input_shape=)``); only such plans are cached per input sample shape as well.

Any node without a rule raises :class:`cnnlens.errors.UnsupportedOperationError` naming it and its module, when the plan
is built (never an autograd error, never a silently zero map).
"""
from __future__ import annotations

import math
import operator
import sys
import weakref
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import Tensor, nn

from .._state import preserved
from ..errors import LayerError, ModelError, UnsupportedOperationError

# ----------------------------------------------------------------------------------------------------------- layers


class LinearLayer:
    """A conv (1/2/3-d, incl. timm ``Conv2dSame`` / ``padding="same"``) or linear layer with (possibly BN-folded)
    detached parameters. ``fwd(x, w, b)`` evaluates it with any parameters; ``vjp(S, x, w)`` is the vector-Jacobian
    product w.r.t. the input (``aten.convolution_backward`` with only the input gradient; no autograd graph)."""

    def __init__(self, module: nn.Module, name: str):
        self.name = name
        self.module_type = type(module).__name__
        self.module_class = type(module)
        self.weight: Tensor = module.weight.detach()
        self.bias: Tensor | None = None if module.bias is None else module.bias.detach()
        self.is_conv = isinstance(module, (nn.modules.conv._ConvNd, FunctionalConv))
        self._cache: dict = {}
        self.same_pad = False
        if self.is_conv:
            self.dims = self.weight.dim() - 2
            self.stride = list(module.stride)
            self.dilation = list(module.dilation)
            self.groups = module.groups
            self.fn = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[self.dims]
            if getattr(module, "padding_mode", "zeros") != "zeros":
                raise UnsupportedOperationError(
                    f"layer {name!r} ({self.module_type}) uses padding_mode={module.padding_mode!r}; the LRP engine "
                    f"supports zero padding only")
            if self.module_type.startswith("Conv2dSame") or module.padding == "same":
                self.same_pad = True  # TF 'same': pad computed from the input size (timm pad_same)
                self.padding = [0] * self.dims
            else:
                self.padding = list(module.padding)

    # -- parameters -------------------------------------------------------------------------------------------------
    def fold_batchnorm(self, bn: nn.Module) -> None:
        """Fold an eval-mode BatchNorm that directly follows this layer (:func:`fold_batchnorm`)."""
        self.weight, self.bias = fold_batchnorm(self.weight, self.bias, bn)
        self._cache.clear()

    def param(self, which: str, mod) -> Tensor:
        """Modified weight/bias, cached: "pos", "neg", "double", "square", "ones", ("gamma_pos"|"gamma_neg", γ)."""
        key = (which, mod)
        t = self._cache.get(key)
        if t is None:
            p = self.weight if which == "weight" else self.bias
            if mod == "pos":
                t = p.clamp(min=0)
            elif mod == "neg":
                t = p.clamp(max=0)
            elif mod == "double":
                t = 2 * p
            elif mod == "square":
                t = p * p
            elif mod == "ones":
                t = torch.ones_like(p)
            elif isinstance(mod, tuple) and mod[0] == "gamma_pos":
                t = p + mod[1] * p.clamp(min=0)
            elif isinstance(mod, tuple) and mod[0] == "gamma_neg":
                t = p + mod[1] * p.clamp(max=0)
            else:
                raise ValueError(f"unknown parameter modifier {mod!r}")
            self._cache[key] = t
        return t

    # -- evaluation ---------------------------------------------------------------------------------------------------
    def _same_padding(self, x: Tensor) -> list[int]:
        pads: list[int] = []
        for i in reversed(range(self.dims)):  # F.pad order: last dim first
            size, k = x.shape[2 + i], self.weight.shape[2 + i]
            s, d = self.stride[i], self.dilation[i]
            total = max((math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size, 0)
            pads += [total // 2, total - total // 2]
        return pads

    def fwd(self, x: Tensor, w: Tensor, b: Tensor | None) -> Tensor:
        if not self.is_conv:
            return F.linear(x, w, b)
        if self.same_pad:
            x = F.pad(x, self._same_padding(x))
        return self.fn(x, w, b, self.stride, self.padding, self.dilation, self.groups)

    def vjp(self, g: Tensor, x: Tensor, w: Tensor) -> Tensor:
        if not self.is_conv:
            return g @ w
        pads = self._same_padding(x) if self.same_pad else None
        xp = F.pad(x, pads) if pads and any(pads) else x
        gi = torch.ops.aten.convolution_backward(g, xp, w, None, self.stride, self.padding, self.dilation, False,
                                                 [0] * self.dims, self.groups, [True, False, False])[0]
        if xp is not x:
            idx = [slice(None), slice(None)]
            for i in range(self.dims):
                lo = pads[2 * (self.dims - 1 - i)]
                idx.append(slice(lo, lo + x.shape[2 + i]))
            gi = gi[tuple(idx)]
        return gi


class FunctionalConv:
    """The parameters of a functional ``F.conv{1,2,3}d`` call whose weight does not depend on the input, e.g. the
    standardised weight of timm ``StdConv2d`` / ``ScaledStdConv2d`` (Qiao et al. 2019; Brock et al. 2021): the weight
    computed once in the forward is the conv's weight for the rule (lrp_modern_layers.md §3)."""

    transposed = False
    padding_mode = "zeros"

    def __init__(self, weight: Tensor, bias: Tensor | None, stride=1, padding=0, dilation=1, groups=1):
        dims = weight.dim() - 2
        tup = (lambda v: tuple(v) if isinstance(v, (tuple, list)) else (v,) * dims)
        self.weight, self.bias = weight, bias
        self.stride, self.dilation, self.groups = tup(stride), tup(dilation), groups
        self.padding = padding if isinstance(padding, str) else tup(padding)


class FunctionalLinear:
    """The parameters of a functional ``F.linear`` call whose weight does not depend on the input."""

    def __init__(self, weight: Tensor, bias: Tensor | None):
        self.weight, self.bias = weight, bias


def fold_batchnorm(weight: Tensor, bias: Tensor | None, bn: nn.Module) -> tuple[Tensor, Tensor]:
    """New (weight, bias) of a conv/linear layer with the eval-mode BatchNorm that follows it folded in:
    y = s·(z − μ) + β with s = γ/√(σ² + ε), so W' = s·W and b' = s·(b − μ) + β (zennit ``MergeBatchNorm``)."""
    scale = bn.running_var.detach().add(bn.eps).sqrt()
    scale = (bn.weight.detach() if bn.weight is not None else torch.ones_like(scale)) / scale
    shift = bn.bias.detach() if bn.bias is not None else torch.zeros_like(scale)
    b = bias if bias is not None else torch.zeros_like(scale)
    return (weight * scale.view(-1, *([1] * (weight.dim() - 1))),
            (b - bn.running_mean.detach()) * scale + shift)


def parameter_versions(model: nn.Module) -> tuple:
    """A key that changes when any parameter or buffer of ``model`` is replaced or modified in place (version
    counters; edits through ``.data`` are not seen)."""
    return tuple((id(t), t.data_ptr(), t._version, t.dtype, t.device)
                 for t in list(model.parameters()) + list(model.buffers()))


# ------------------------------------------------------------------------------------------------ classification

_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_BN = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
_MAXPOOL = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d)
_AVGPOOL = (nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d,
            nn.AdaptiveAvgPool3d)
_PASS_MODULES = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout,
                 nn.Identity)
_NOT_ELEMENTWISE_ACT = (nn.Softmax, nn.Softmin, nn.LogSoftmax, nn.Softmax2d, nn.MultiheadAttention, nn.GLU)
_SOFTMAX_MODULES = (nn.Softmax, nn.Softmin, nn.Softmax2d)
#: timm layers kept as leaves (each has a rule); timm's own FX leaf registry is consulted only when tracing fails
_LEAF_NAMES = ("Conv2dSame", "BatchNormAct2d", "DropPath", "Conv2dSameExport")
_NORM_MODULES = (nn.LayerNorm, nn.GroupNorm)
_UPSAMPLE = (nn.Upsample, nn.UpsamplingNearest2d, nn.UpsamplingBilinear2d)

_NONNEG_ACT_MODULES = (nn.ReLU, nn.ReLU6, nn.Sigmoid, nn.Hardsigmoid)
#: squashing functions (bounded outputs): a product operand computed through one of them is a gate (§1)
_SQUASH_MODULES = (nn.Sigmoid, nn.Hardsigmoid, nn.Tanh, nn.ReLU6, nn.Hardtanh, *_SOFTMAX_MODULES)
_ACT_FUNCS: dict[Any, Callable] = {
    F.relu: F.relu, torch.relu: torch.relu, torch.relu_: torch.relu, F.relu_: torch.relu, F.relu6: F.relu6,
    F.leaky_relu: F.leaky_relu, F.silu: F.silu, F.gelu: F.gelu, F.elu: F.elu, F.hardswish: F.hardswish,
    F.hardsigmoid: F.hardsigmoid, torch.sigmoid: torch.sigmoid, F.sigmoid: torch.sigmoid, torch.tanh: torch.tanh,
    F.tanh: torch.tanh, F.mish: F.mish, F.hardtanh: F.hardtanh, F.softplus: F.softplus, F.selu: F.selu,
    F.celu: F.celu, torch.erf: torch.erf, torch.special.erf: torch.erf, torch.special.expit: torch.sigmoid,
    torch.clamp: torch.clamp, torch.clip: torch.clamp, torch.clamp_min: torch.clamp_min, F.softmax: F.softmax,
    torch.softmax: torch.softmax, F.softmin: F.softmin, F.logsigmoid: F.logsigmoid,
}
_SOFTMAX_FUNCS = {F.softmax, torch.softmax, F.softmin}
_SQUASH_FUNCS = {F.relu6, F.hardsigmoid, torch.sigmoid, F.sigmoid, torch.tanh, F.tanh, F.hardtanh, torch.erf,
                 torch.special.erf, torch.special.expit, *_SOFTMAX_FUNCS}
_NONNEG_ACT_FUNCS = {F.relu, torch.relu, torch.relu_, F.relu_, F.relu6, F.hardsigmoid, torch.sigmoid, F.sigmoid,
                     torch.special.expit, *_SOFTMAX_FUNCS}
_ACT_METHODS = {"relu": torch.relu, "sigmoid": torch.sigmoid, "tanh": torch.tanh, "erf": torch.erf,
                "clamp": torch.clamp, "clip": torch.clamp, "clamp_min": torch.clamp_min, "softmax": torch.softmax,
                "hardtanh": F.hardtanh}
_SQUASH_METHODS = {"sigmoid", "tanh", "erf", "softmax"}
_ROUTE_FUNCS = {torch.flatten, torch.reshape, torch.squeeze, torch.unsqueeze, torch.permute, torch.transpose,
                torch.stack, torch.movedim, torch.swapaxes, torch.swapdims, torch.narrow, torch.roll, torch.flip,
                torch.channel_shuffle, F.channel_shuffle, torch.select, torch.unflatten, torch.broadcast_to,
                torch.repeat_interleave, torch.tile, torch.hstack, torch.vstack, torch.amax, torch.amin}
_ROUTE_METHODS = {"view", "reshape", "flatten", "squeeze", "unsqueeze", "permute", "transpose", "contiguous",
                  "view_as", "reshape_as", "expand", "expand_as", "repeat", "movedim", "swapaxes", "swapdims",
                  "narrow", "roll", "flip", "select", "unflatten", "broadcast_to", "repeat_interleave", "tile", "T",
                  "mT", "amax", "amin"}
#: reshapes that move every value unchanged: relevance is reshaped, no vjp needed
_RESHAPES = {torch.flatten, torch.reshape, torch.squeeze, torch.unsqueeze, "view", "reshape", "flatten", "squeeze",
             "unsqueeze", "contiguous", "view_as", "reshape_as"}
_PASS_METHODS = {"clone", "float", "double", "half", "bfloat16", "to", "type_as", "detach", "type"}
_PASS_FUNCS = {F.dropout, F.dropout1d, F.dropout2d, F.dropout3d, F.alpha_dropout, F.feature_alpha_dropout,
               torch.clone}
_MAXPOOL_FUNCS = {F.max_pool1d: F.max_pool1d, F.max_pool2d: F.max_pool2d, F.max_pool3d: F.max_pool3d,
                  F.adaptive_max_pool1d: F.adaptive_max_pool1d, F.adaptive_max_pool2d: F.adaptive_max_pool2d,
                  F.adaptive_max_pool3d: F.adaptive_max_pool3d}
_AVGPOOL_FUNCS = {F.avg_pool1d, F.avg_pool2d, F.avg_pool3d, F.adaptive_avg_pool1d, F.adaptive_avg_pool2d,
                  F.adaptive_avg_pool3d, torch.mean, torch.sum}
_ADD_FUNCS = {operator.add, operator.iadd, torch.add}
_SUB_FUNCS = {operator.sub, operator.isub, torch.sub, torch.subtract}
_MUL_FUNCS = {operator.mul, operator.imul, torch.mul, torch.multiply}
_DIV_FUNCS = {operator.truediv, operator.itruediv, torch.div, torch.true_divide, torch.divide}
_NEG_FUNCS = {operator.neg, torch.neg, torch.negative}
_CAT_FUNCS = {torch.cat, torch.concat, torch.concatenate}
_SPLIT_FUNCS = {torch.chunk, torch.split, torch.unbind, torch.tensor_split}
_SPLIT_METHODS = {"chunk", "split", "unbind", "tensor_split"}
_CONV_FUNCS = {F.conv1d: 1, F.conv2d: 2, F.conv3d: 3}
_INTERP_FUNCS = {F.interpolate, F.upsample, F.upsample_nearest, F.upsample_bilinear}
#: shape queries: their results are Python numbers, never relevance carriers
_SHAPE_METHODS = {"size", "dim", "numel", "nelement", "get_device", "stride", "ndimension", "is_contiguous"}
_SHAPE_ATTRS = {"shape", "dtype", "device", "ndim", "is_cuda", "layout", "requires_grad", "is_sparse", "is_quantized"}
#: tensors whose values do not depend on the input's values
_CONST_LIKE = {torch.zeros_like, torch.ones_like, torch.full_like, torch.empty_like, "new_zeros", "new_ones",
               "new_full", "new_empty", "new_tensor", "zeros_like", "ones_like"}
#: methods whose in-place form is mapped to the out-of-place one (the recorded inputs must not be overwritten)
_INPLACE_METHODS = {"add_", "sub_", "mul_", "div_", "relu_", "sigmoid_", "tanh_", "clamp_", "clamp_min_", "clip_",
                    "hardtanh_", "neg_"}
_METHOD_ALIASES = {"__add__": "add", "__iadd__": "add", "__radd__": "add", "__sub__": "sub", "__isub__": "sub",
                   "__mul__": "mul", "__imul__": "mul", "__rmul__": "mul", "__truediv__": "div",
                   "__itruediv__": "div", "true_divide": "div", "multiply": "mul", "subtract": "sub",
                   "__neg__": "neg", "negative": "neg", "concat": "cat"}


def _is_batchnorm_act(m: nn.Module) -> bool:
    return isinstance(m, nn.modules.batchnorm._BatchNorm) and type(m).__name__.startswith("BatchNormAct")


def _is_activation_module(m: nn.Module) -> bool:
    return (type(m).__module__.startswith("torch.nn.modules.activation") and not isinstance(m, _NOT_ELEMENTWISE_ACT))


def _act_forward(m: nn.Module) -> Callable[[Tensor], Tensor]:
    """Out-of-place forward of an activation module (an in-place ReLU would overwrite recorded inputs)."""
    if isinstance(m, nn.Identity) or m is None:
        return lambda x: x
    if not _is_activation_module(m):
        raise UnsupportedOperationError(f"activation {type(m).__name__} has no LRP rule")
    if type(m) is nn.ReLU:
        return torch.relu
    if type(m) is nn.ReLU6:
        return F.relu6
    if getattr(m, "inplace", False):
        return lambda x: m(x.clone())
    return m


def _act_nonneg(m: nn.Module | None) -> bool:
    if isinstance(m, _NONNEG_ACT_MODULES):
        return True
    return isinstance(m, nn.Hardtanh) and m.min_val >= 0


def _timm_fx_registry() -> tuple[tuple, tuple]:
    """timm's FX leaf modules and no-trace functions, read only when timm is already imported (the core never imports
    timm)."""
    fx_mod = sys.modules.get("timm.layers._fx")
    if fx_mod is None:
        return (), ()
    return tuple(getattr(fx_mod, "_leaf_modules", ())), tuple(getattr(fx_mod, "_autowrap_functions", ()))


class _Tracer(fx.Tracer):
    """fx tracer that keeps every torch.nn layer and timm's fused/same-padding layers as leaves, and records each
    module's output node(s) (containers too) so relevance can be read at any module name. ``extra_leaves``: module
    types also kept as leaves (timm's registry, on a second attempt). ``failed_in``: the innermost module being traced
    when tracing failed."""

    def __init__(self, extra_leaves: tuple = (), autowrap_functions: tuple = ()):
        super().__init__(autowrap_functions=tuple(f for f in autowrap_functions if callable(f)))
        self.module_outputs: dict[str, list[fx.Node]] = {}
        self.extra_leaves = tuple(extra_leaves)
        self.failed_in: tuple[str, str] | None = None

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        if type(m).__name__ in _LEAF_NAMES or (self.extra_leaves and isinstance(m, self.extra_leaves)):
            return True
        return super().is_leaf_module(m, qualname)

    def call_module(self, m, forward, args, kwargs):
        try:
            out = super().call_module(m, forward, args, kwargs)
        except Exception:
            if self.failed_in is None:
                self.failed_in = (self.path_of_module(m), type(m).__name__)
            raise
        qual = self.path_of_module(m)
        if isinstance(out, fx.Proxy) and qual:
            self.module_outputs.setdefault(qual, []).append(out.node)
        return out


def _trace(model: nn.Module, input_shape: tuple | None = None) -> tuple[fx.Graph, dict, tuple | None]:
    """Trace ``model``; on failure retry with timm's FX leaf registry (modules timm itself does not trace through),
    then, given ``input_shape``, with :class:`tracing.ConcreteShapeTracer` on an example of that shape (Python branches
    on the input's size, e.g. timm's ``ConvMlp``, are decided for it; a guard node re-checks them at run time). If all
    fail, raise naming the innermost module that could not be traced. Returns (graph, module outputs, the example shape
    the graph was traced for, or None when it holds for every input size)."""
    from .tracing import ConcreteShapeTracer, tracer_for  # a transformers model's shape checks: meta values
    tracer = tracer_for(model)
    try:
        return tracer.trace(model), tracer.module_outputs, None
    except Exception as err:  # noqa: BLE001 - fx raises many types for untraceable code
        first_err, where = err, tracer.failed_in

    def shape_traced():
        if input_shape is None or len(input_shape) < 2:
            return None
        param = next(model.parameters(), None)
        dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
        shape = tuple(int(s) for s in input_shape)
        shape_tracer = ConcreteShapeTracer(torch.empty(shape, dtype=dtype, device="meta"))
        try:
            return shape_tracer.trace(model), shape_tracer.module_outputs, shape
        except Exception:  # noqa: BLE001
            return None

    leaves, funcs = _timm_fx_registry()
    if leaves or funcs:
        tracer = _Tracer(leaves, funcs)
        try:
            graph = tracer.trace(model)
        except Exception:  # noqa: BLE001
            graph = None
        if graph is not None:
            # a module that is a leaf only by timm's registry (e.g. ConvMlp) has no LRP rule: trace through it
            # with concrete shapes when that works, else keep it as a leaf (a rule or a named error decides)
            plain = _Tracer()
            registry_only = any(
                n.op == "call_module" and isinstance(m := model.get_submodule(n.target), leaves)
                and not plain.is_leaf_module(m, n.target) for n in graph.nodes)
            return (registry_only and shape_traced()) or (graph, tracer.module_outputs, None)
    traced = shape_traced()
    if traced is not None:
        return traced
    inside = f" in module {where[0]!r} ({where[1]})" if where and where[0] else ""
    shown = getattr(model, "wrapped", model)            # a LogitsView: name the user's model
    raise UnsupportedOperationError(
        f"cannot trace {type(shown).__name__} with torch.fx for LRP{inside}: {type(first_err).__name__}: "
        f"{first_err}") from first_err


# --------------------------------------------------------------------------------------------------------- plan


@dataclass
class Step:
    """One graph node. kind: input | linear | bn | act | route | pass | maxpool | avgpool | add | cat | const |
    meta | output | identity (a folded BatchNorm) | scale (a product/quotient with an input-independent factor) |
    gate (signal ⊙ gate) | norm (LayerNorm / GroupNorm, LN-rule) | split (chunk/split/unbind: a tuple) |
    getitem (one element of a split)."""
    node: fx.Node
    kind: str
    fwd: Callable | None = None
    inputs: list[fx.Node] = field(default_factory=list)
    module_name: str | None = None
    layer: LinearLayer | None = None
    nonneg: bool = False
    info: dict = field(default_factory=dict)


def _describe(node: fx.Node) -> str:
    if node.op == "call_module":
        kind = node.meta.get("cnnlens_type")
        return f"module {node.target!r}" + (f" ({kind})" if kind else "")
    name = getattr(node.target, "__name__", str(node.target))
    where = node.meta.get("nn_module_stack")
    inside = f" inside {list(where)[-1]!r}" if where else ""
    if not inside:
        inside = f" inside {node.meta['cnnlens_module']!r}" if node.meta.get("cnnlens_module") else ""
    return f"{node.op.replace('call_', '')} {name!r} (node {node.name}){inside}"


def _is_global_pool(node: fx.Node, m: nn.Module | None = None) -> bool:
    """A pool whose output has one position per channel: adaptive pools to 1, or a mean/sum over dims 2, 3 (or -1,
    -2) — the summary a squeeze-excitation gate is computed from."""
    if m is not None:
        size = getattr(m, "output_size", None)
        if size is None:
            return False
        return all(s == 1 for s in (size if isinstance(size, (tuple, list)) else (size,)))
    target = node.target if node.op == "call_function" else node.target
    if getattr(target, "__name__", "").startswith("adaptive"):
        size = _arg(node, 1, "output_size", None)
        return size is not None and all(s == 1 for s in (size if isinstance(size, (tuple, list)) else (size,)))
    if target in (torch.mean, torch.sum, "mean", "sum"):
        dims = _arg(node, 1, "dim", None)
        dims = set(dims) if isinstance(dims, (tuple, list)) else {dims}
        return {2, 3} <= dims or {-1, -2} <= dims
    return False


class Plan:
    """The traced, canonised model. ``forward(x)`` returns {node: value}; ``steps`` in topological order."""

    def __init__(self, model: nn.Module, bn: str = "fold", input_shape: tuple | None = None):
        if bn not in ("fold", "pass"):
            raise ValueError(f"bn must be 'fold' or 'pass', got {bn!r}")
        self.bn = bn
        with preserved(model):
            # traced_shape: None, or the input shape a shape-branching model was traced for (see _trace)
            self.graph, self.module_outputs, self.traced_shape = _trace(model, input_shape)
        # submodules only (not the root): the plan is a value in a WeakKeyDictionary keyed by the model
        self.modules = {name: m for name, m in model.named_modules() if name}
        self._root = weakref.ref(model)
        for qual, nodes in self.module_outputs.items():  # the enclosing module of every node, for error messages
            for n in nodes:
                n.meta.setdefault("cnnlens_module", qual)
        for n in self.graph.nodes:
            if n.op == "call_module" and n.target in self.modules:
                n.meta["cnnlens_type"] = type(self.modules[n.target]).__name__
        self.steps: list[Step] = []
        self.index: dict[fx.Node, int] = {}
        self.dep: dict[fx.Node, bool] = {}      # the value depends on the input's values
        self.shape: dict[fx.Node, bool] = {}    # a shape query (a Python number)
        self.squash: dict[fx.Node, bool] = {}   # computed through a squashing function (routing ops only between)
        self.pooled: dict[fx.Node, bool] = {}   # computed from a global pool
        self._consts: dict[fx.Node, Any] = {}
        for node in self.graph.nodes:
            self._analyse(node)
            step = self._classify(node)
            self.index[node] = len(self.steps)
            self.steps.append(step)
            self._mark(step)
        self.step_of = {s.node: s for s in self.steps}
        self._consts.clear()
        self._fold_and_infer()
        outs = [s for s in self.steps if s.kind == "output"]
        self.output = outs[0]
        self._check_relevance_path()
        self.input_nodes = [s.node for s in self.steps if s.kind == "input"]
        if len(self.input_nodes) != 1:
            raise ModelError(f"LRP needs a model with one input tensor, got {len(self.input_nodes)} inputs")
        firsts = [s for s in self.steps if s.kind == "linear"]
        self.first_linear = firsts[0].node if firsts else None
        self.first_conv = next((s.node for s in firsts if s.layer.is_conv), None)
        # channels_last pays off for 2-d convolutions (oneDNN skips its layout reorders); None = not tried yet,
        # False = this model's forward rejected a channels_last input (e.g. a ``.view`` on a feature map)
        self.has_conv2d = any(s.layer.is_conv and s.layer.dims == 2 for s in firsts)
        self.channels_last_ok: bool | None = None

    # -- graph analysis ---------------------------------------------------------------------------------------------
    def _analyse(self, node: fx.Node) -> None:
        ins = node.all_input_nodes
        if node.op == "placeholder":
            self.dep[node] = True
            self.shape[node] = False
            return
        dep_ins = [n for n in ins if self.dep[n]]
        self.dep[node] = bool(dep_ins) and node.op != "get_attr"
        target = node.target
        self.shape[node] = bool(dep_ins) and (
            (node.op == "call_method" and target in _SHAPE_METHODS)
            or (node.op == "call_function" and target is getattr and len(node.args) > 1
                and node.args[1] in _SHAPE_ATTRS)
            or all(self.shape[n] for n in dep_ins))
        if self.shape[node] or (node.op in ("call_function", "call_method") and target in _CONST_LIKE):
            self.dep[node] = False

    def _mark(self, step: Step) -> None:
        """Gate evidence (§1): ``squash`` = reached from a squashing function through routing ops only; ``pooled`` =
        computed from a global pool (through any unary op)."""
        node, kind = step.node, step.kind
        dep_ins = [n for n in step.inputs if self.dep.get(n)]
        if kind == "act" and step.info.get("squash"):
            self.squash[node] = True
        elif kind in ("route", "pass", "identity", "getitem", "split", "scale", "cat") or (
                kind == "add" and len(dep_ins) == 1):
            self.squash[node] = bool(dep_ins) and all(self.squash.get(n, False) for n in dep_ins)
        elif kind == "gate":
            self.squash[node] = self.squash.get(step.info["signal"], False)
        if step.info.get("global_pool"):
            self.pooled[node] = True
        elif kind == "gate":
            self.pooled[node] = self.pooled.get(step.info["signal"], False)
        elif len(dep_ins) == 1 and kind not in ("add", "cat"):
            self.pooled[node] = self.pooled.get(dep_ins[0], False)

    def _const_value(self, node):
        """Value of an input-independent node (e.g. a standardised conv weight), evaluated once at plan time."""
        if not isinstance(node, fx.Node):
            return node
        if node in self._consts:
            return self._consts[node]
        if self.dep[node]:
            raise UnsupportedOperationError(f"{_describe(node)} depends on the input")  # pragma: no cover
        args = fx.node.map_arg(node.args, self._const_value)
        kwargs = fx.node.map_arg(node.kwargs, self._const_value)
        with torch.no_grad():
            if node.op == "get_attr":
                val = _get_attr({"": self._root(), **self.modules}, node.target)
            elif node.op == "call_function":
                val = node.target(*args, **kwargs)
            elif node.op == "call_method":
                val = getattr(args[0], node.target)(*args[1:], **kwargs)
            elif node.op == "call_module":
                val = self.modules[node.target](*args, **kwargs)
            else:  # pragma: no cover
                raise UnsupportedOperationError(f"cannot evaluate {_describe(node)} once")
        val = val.detach() if isinstance(val, Tensor) else val
        self._consts[node] = val
        return val

    # -- classification ----------------------------------------------------------------------------------------------
    def _classify(self, node: fx.Node) -> Step:
        op, tgt = node.op, node.target
        ins = list(node.all_input_nodes)
        if op == "placeholder":
            return Step(node, "input")
        if op == "output":
            return Step(node, "output", inputs=ins)
        if op == "get_attr":
            return Step(node, "const")
        if not self.dep[node]:  # shape queries and input-independent values: evaluated, never carry relevance
            return Step(node, "meta", self._fwd_of(node), ins)
        if op == "call_module":
            return self._classify_module(node, self.modules[tgt], ins)
        if op == "call_function":
            return self._classify_function(node, tgt, ins)
        if op == "call_method":
            return self._classify_method(node, tgt, ins)
        raise UnsupportedOperationError(f"LRP has no rule for {_describe(node)}")  # pragma: no cover

    def _fwd_of(self, node: fx.Node) -> Callable | None:
        if node.op == "call_function":
            return node.target
        if node.op == "call_method":
            return _method(node.target)
        if node.op == "call_module":
            return self.modules[node.target]
        return None

    def _classify_module(self, node, m, ins) -> Step:
        name = node.target
        if isinstance(m, nn.modules.conv._ConvNd):
            if m.transposed:
                raise UnsupportedOperationError(f"LRP has no rule for transposed convolution {name!r}")
            return Step(node, "linear", inputs=ins, module_name=name, layer=LinearLayer(m, name))
        if isinstance(m, nn.Linear):
            return Step(node, "linear", inputs=ins, module_name=name, layer=LinearLayer(m, name))
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            if m.running_mean is None or m.running_var is None:
                raise UnsupportedOperationError(
                    f"BatchNorm {name!r} has track_running_stats=False (batch statistics): no LRP rule")
            act = getattr(m, "act", None) if _is_batchnorm_act(m) else None
            drop = getattr(m, "drop", None) if _is_batchnorm_act(m) else None
            if drop is not None and not isinstance(drop, (nn.Identity, *_PASS_MODULES)):
                raise UnsupportedOperationError(f"{name!r}: {type(drop).__name__} inside BatchNormAct has no rule")
            act_fn = _act_forward(act)

            def bn_fwd(x, m=m, act_fn=act_fn):
                y = F.batch_norm(x, m.running_mean, m.running_var, m.weight, m.bias, False, 0.0, m.eps)
                return act_fn(y)
            return Step(node, "bn", bn_fwd, ins, name, info={"module": m, "act": act, "act_fn": act_fn})
        if isinstance(m, _SOFTMAX_MODULES):
            return Step(node, "act", m, ins, name, nonneg=True, info={"squash": True, "softmax": True})
        if _is_activation_module(m):
            return Step(node, "act", _act_forward(m), ins, name, nonneg=_act_nonneg(m),
                        info={"squash": isinstance(m, _SQUASH_MODULES)})
        if isinstance(m, _PASS_MODULES) or type(m).__name__ in ("DropPath", "StochasticDepth"):
            return Step(node, "pass", lambda x: x, ins, name)
        if isinstance(m, nn.Flatten):
            return Step(node, "route", lambda x, m=m: torch.flatten(x, m.start_dim, m.end_dim), ins, name,
                        info={"reshape": True})
        if isinstance(m, (nn.Unflatten, nn.ChannelShuffle)):
            return Step(node, "route", m, ins, name, info={"reshape": isinstance(m, nn.Unflatten)})
        if isinstance(m, nn.ZeroPad2d) or (isinstance(m, nn.modules.padding._ConstantPadNd) and m.value == 0):
            return Step(node, "route", m, ins, name)
        if isinstance(m, _MAXPOOL):
            return Step(node, "maxpool", m, ins, name, info={"fn": _maxpool_fn(m), "global_pool": _is_global_pool(
                node, m)})
        if isinstance(m, _AVGPOOL):
            return Step(node, "avgpool", m, ins, name, info={"global_pool": _is_global_pool(node, m)})
        if isinstance(m, _UPSAMPLE):
            mode = "bilinear" if isinstance(m, nn.UpsamplingBilinear2d) else m.mode
            return Step(node, "route" if mode.startswith("nearest") else "avgpool", m, ins, name)
        if isinstance(m, _NORM_MODULES):
            return Step(node, "norm", m, ins, name, info=_norm_info(m))
        leaves, _ = _timm_fx_registry()
        why = (" (torch.fx cannot trace through it: timm registers it as an FX leaf, e.g. for a shape-dependent "
               "branch)") if leaves and isinstance(m, leaves) else ""
        raise UnsupportedOperationError(
            f"LRP has no rule for module {name!r} ({type(m).__name__}){why}; give it a rule or replace it")

    def _classify_function(self, node, f, ins) -> Step:
        if f in _ADD_FUNCS or f in _SUB_FUNCS:
            if len(node.args) != 2 or node.kwargs.get("alpha", 1) != 1:
                raise UnsupportedOperationError(
                    f"LRP has no rule for {_describe(node)} (only a sum or difference of two terms is supported)")
            return Step(node, "add", f, ins, info={"signs": (1, -1) if f in _SUB_FUNCS else (1, 1)})
        if f in _MUL_FUNCS or f in _DIV_FUNCS or f in _NEG_FUNCS:
            return self._classify_product(node, f, ins)
        if f in _CAT_FUNCS:
            return Step(node, "cat", torch.cat, ins)
        if f in _ACT_FUNCS:
            nonneg = f in _NONNEG_ACT_FUNCS or (f is F.hardtanh and _arg(node, 1, "min_val", -1.0) >= 0)
            squash = f in _SQUASH_FUNCS
            if f in (torch.clamp, torch.clip):
                lo, hi = _arg(node, 1, "min", None), _arg(node, 2, "max", None)
                squash = lo is not None and hi is not None
                nonneg = isinstance(lo, (int, float)) and lo >= 0
            return Step(node, "act", _drop_inplace(_ACT_FUNCS[f]), ins, nonneg=nonneg,
                        info={"squash": squash, "softmax": f in _SOFTMAX_FUNCS})
        if f in _PASS_FUNCS or getattr(f, "__name__", "") == "stochastic_depth":  # identity in eval mode (§4)
            if getattr(f, "__name__", "") == "stochastic_depth" and _arg(node, 3, "training", False):
                raise UnsupportedOperationError(f"{_describe(node)} was traced in training mode")
            return Step(node, "pass", lambda x, *a, **k: x, ins)
        if f is getattr and len(node.args) > 1 and node.args[1] in ("T", "mT", "H", "mH", "data"):
            return Step(node, "route", f, ins)
        if f is operator.getitem:
            src = self.step_of_node(node.args[0])
            if src is not None and src.kind == "split":
                return Step(node, "getitem", f, ins, info={"index": node.args[1]})
            if src is not None and src.kind == "maxpool":  # pragma: no cover - return_indices in the user's graph
                raise UnsupportedOperationError(f"LRP has no rule for {_describe(node)} (max-pool indices)")
            return Step(node, "route", f, ins)
        if f in _ROUTE_FUNCS:
            return Step(node, "route", f, ins, info={"reshape": f in _RESHAPES})
        if f in _SPLIT_FUNCS:
            return Step(node, "split", f, ins)
        if f in (torch.max, torch.min) and len(ins) == 1:  # reductions (CBAM's channel max): winner-take-all vjp
            has_dim = len(node.args) > 1 or "dim" in node.kwargs
            return Step(node, "split" if has_dim else "route", f, ins)
        if f is F.pad:
            mode = _arg(node, 2, "mode", "constant")
            value = _arg(node, 3, "value", 0.0)
            if mode != "constant" or (value or 0.0) != 0.0:
                raise UnsupportedOperationError(f"LRP has no rule for {_describe(node)} with mode={mode!r}")
            return Step(node, "route", f, ins)
        if f in _INTERP_FUNCS:
            mode = _arg(node, 3, "mode", "nearest") if f is F.interpolate else (
                "bilinear" if f is F.upsample_bilinear else _arg(node, 3, "mode", "nearest"))
            return Step(node, "route" if str(mode).startswith("nearest") else "avgpool", f, ins)
        if f in _MAXPOOL_FUNCS:
            return Step(node, "maxpool", f, ins, info={"fn": f, "global_pool": _is_global_pool(node)})
        if f in _AVGPOOL_FUNCS:
            return Step(node, "avgpool", f, ins, info={"global_pool": _is_global_pool(node)})
        if f in (F.layer_norm, F.group_norm):
            return Step(node, "norm", f, ins, info={"functional": f})
        if f in _CONV_FUNCS or f is F.linear:
            return self._classify_functional_layer(node, f, ins)
        raise UnsupportedOperationError(f"LRP has no rule for {_describe(node)}")

    def _classify_method(self, node, name, ins) -> Step:
        base = _METHOD_ALIASES.get(name, name)
        if base in _INPLACE_METHODS:
            base = base[:-1]
        out_of_place = _method(base)
        if base in ("add", "sub"):
            if len(node.args) != 2 or node.kwargs.get("alpha", 1) != 1:
                raise UnsupportedOperationError(
                    f"LRP has no rule for {_describe(node)} (only a sum or difference of two terms is supported)")
            return Step(node, "add", out_of_place, ins, info={"signs": (1, -1) if base == "sub" else (1, 1)})
        if base in ("mul", "div", "neg"):
            return self._classify_product(node, {"mul": operator.mul, "div": operator.truediv,
                                                 "neg": operator.neg}[base], ins, out_of_place)
        if base in _ROUTE_METHODS:
            return Step(node, "route", out_of_place, ins, info={"reshape": base in _RESHAPES})
        if base in _SPLIT_METHODS:
            return Step(node, "split", out_of_place, ins)
        if base in ("max", "min") and len(ins) == 1:
            has_dim = len(node.args) > 1 or "dim" in node.kwargs
            return Step(node, "split" if has_dim else "route", out_of_place, ins)
        if base in _PASS_METHODS:
            return Step(node, "pass", out_of_place, ins)
        if base in _ACT_METHODS:
            fn = _ACT_METHODS[base]
            squash = base in _SQUASH_METHODS
            nonneg = base in ("relu", "sigmoid", "softmax")
            if base in ("clamp", "clip"):
                lo, hi = _arg(node, 1, "min", None), _arg(node, 2, "max", None)
                squash = lo is not None and hi is not None
                nonneg = isinstance(lo, (int, float)) and lo >= 0
            if base == "clamp_min":
                nonneg = isinstance(_arg(node, 1, "min", None), (int, float)) and _arg(node, 1, "min", -1) >= 0
            return Step(node, "act", lambda x, *a, fn=fn, **k: fn(x, *a, **k), ins, nonneg=nonneg,
                        info={"squash": squash, "softmax": base == "softmax"})
        if base in ("mean", "sum"):
            return Step(node, "avgpool", out_of_place, ins, info={"global_pool": _is_global_pool(node)})
        raise UnsupportedOperationError(f"LRP has no rule for {_describe(node)}")

    def step_of_node(self, n) -> Step | None:
        if not isinstance(n, fx.Node) or n not in self.index:
            return None
        return self.steps[self.index[n]]

    def _classify_product(self, node, f, ins, fwd=None) -> Step:
        """x·c, x/c, −x with c input-independent: "scale" (a diagonal linear map, R_x = R_y; layer scale, §3);
        s ⊙ g with g a gate: "gate" (§1); anything else (a product of two signals, division by a signal) raises."""
        fwd = fwd or f
        dep_args = [a for a in node.args if isinstance(a, fx.Node) and self.dep[a]]
        if len(dep_args) == 1 and not (f is operator.truediv and node.args[0] is not dep_args[0]):
            consts = [a for a in node.args if a is not dep_args[0]]
            nonneg = all(isinstance(c, (int, float)) and c >= 0 for c in consts)
            return Step(node, "scale", fwd, ins, info={"src": dep_args[0], "nonneg_factor": nonneg})
        if f is operator.mul and len(dep_args) == 2:
            a, b = dep_args
            for test in (self.squash, self.pooled):
                if test.get(a, False) != test.get(b, False):
                    gate, signal = (a, b) if test.get(a, False) else (b, a)
                    return Step(node, "gate", fwd, ins, info={"signal": signal, "gate": gate})
            raise UnsupportedOperationError(
                f"LRP has no rule for {_describe(node)}: a product of two signals (neither operand is computed "
                f"through a sigmoid / hard-sigmoid / softmax / tanh or from a global pool, so none is a gate)")
        raise UnsupportedOperationError(f"LRP has no rule for {_describe(node)} (division by an input-dependent "
                                        f"tensor)" if f is operator.truediv else f"LRP has no rule for "
                                        f"{_describe(node)}")

    def _classify_functional_layer(self, node, f, ins) -> Step:
        """F.conv*d / F.linear whose weight does not depend on the input (timm StdConv2d / ScaledStdConv2d: the
        standardised weight, computed once, is the layer's weight)."""
        w_node, b_node = _arg(node, 1, "weight", None), _arg(node, 2, "bias", None)
        if any(isinstance(a, fx.Node) and self.dep[a] for a in (w_node, b_node)):
            raise UnsupportedOperationError(f"LRP has no rule for {_describe(node)} (its weight depends on the input)")
        w, b = self._const_value(w_node), self._const_value(b_node)
        owner = node.meta.get("cnnlens_module") or _owner(node) or node.name
        if f is F.linear:
            shim: Any = FunctionalLinear(w, b)
        else:
            shim = FunctionalConv(w, b, *[_arg(node, i, k, d) for i, k, d in (
                (3, "stride", 1), (4, "padding", 0), (5, "dilation", 1), (6, "groups", 1))])
        layer = LinearLayer(shim, owner)
        owner_module = self.modules.get(owner)
        if owner_module is not None:
            layer.module_class = type(owner_module)
            layer.module_type = type(owner_module).__name__
        return Step(node, "linear", inputs=[node.args[0]], module_name=owner, layer=layer)

    # -- canonisation ------------------------------------------------------------------------------------------------
    def _users(self, node: fx.Node) -> list[fx.Node]:
        return list(node.users)

    def _fold_and_infer(self) -> None:
        for step in self.steps:
            if step.kind == "bn" and self.bn == "fold":
                src = step.inputs[0] if len(step.inputs) == 1 else None
                prev = self.step_of.get(src) if src is not None else None
                if prev is not None and prev.kind == "linear" and len(self._users(src)) == 1 \
                        and len(step.node.args) == 1:
                    prev.layer.fold_batchnorm(step.info["module"])
                    act, act_fn = step.info["act"], step.info["act_fn"]
                    step.kind = "identity" if act is None or isinstance(act, nn.Identity) else "act"
                    step.fwd = (lambda x: x) if step.kind == "identity" else act_fn
                    step.info["folded_into"] = prev.module_name
                    step.nonneg = _act_nonneg(act)
            elif step.kind == "bn":
                step.nonneg = _act_nonneg(step.info["act"])
            if step.kind in ("route", "pass", "maxpool", "avgpool", "add", "cat", "identity", "split", "getitem"):
                dep_ins = [n for n in step.inputs if self.dep[n]]
                step.nonneg = bool(dep_ins) and all(self.step_of[n].nonneg for n in dep_ins) and not (
                    step.kind == "add" and -1 in step.info.get("signs", ()))
            elif step.kind == "scale":
                step.nonneg = step.info["nonneg_factor"] and self.step_of[step.info["src"]].nonneg \
                    and step.node.target not in _NEG_FUNCS and step.node.target not in ("neg", "neg_", "__neg__")
            elif step.kind == "gate":
                step.nonneg = all(self.step_of[n].nonneg for n in (step.info["signal"], step.info["gate"]))
        for step in self.steps:  # linear neurons: outputs not (only) gated by a ReLU-type activation (ZPlus)
            if step.kind == "linear":
                step.layer.linear_neuron = not self._relu_gated(step.node)

    def _relu_gated(self, node: fx.Node) -> bool:
        """Every use of ``node`` (through folded BatchNorms) is an activation that is zero for negative inputs."""
        users = list(node.users)
        if not users:
            return False
        for u in users:
            step = self.step_of[u]
            if step.kind == "identity":
                if not self._relu_gated(u):
                    return False
            elif step.kind != "act" or not _zero_for_negative(step):
                return False
        return True

    def _check_relevance_path(self) -> None:
        """Softmax has a rule only as a gate (§1): raise if one lies where the signal's relevance flows (on a path
        from the output that does not enter a gate operand)."""
        live = set(self.output.node.all_input_nodes)
        for step in reversed(self.steps):
            if step.node not in live:
                continue
            if step.info.get("softmax"):
                raise UnsupportedOperationError(
                    f"LRP has no rule for {_describe(step.node)} on the relevance path (softmax has a rule only as a "
                    f"gate, e.g. split-attention weights)")
            ins = [step.info["signal"]] if step.kind == "gate" else step.inputs
            live.update(n for n in ins if self.dep.get(n))

    # -- layers -------------------------------------------------------------------------------------------------------
    def layer_node(self, name: str) -> fx.Node:
        nodes = self.module_outputs.get(name)
        if nodes is None:
            if name in self.modules:
                raise LayerError(f"layer {name!r} is not called in the model's forward pass")
            from ..errors import suggest
            raise LayerError(f"model has no layer {name!r}.{suggest(name, [n for n in self.modules if n])}")
        if len(nodes) > 1:
            raise LayerError(f"layer {name!r} is called {len(nodes)} times in one forward pass, so its output is "
                             f"ambiguous; pick the enclosing block (e.g. {name.rsplit('.', 1)[0]!r})")
        return nodes[0]

    # -- forward ------------------------------------------------------------------------------------------------------
    def forward(self, x: Tensor) -> dict[fx.Node, Any]:
        """Evaluate the canonised model; return every node's value (inputs for the relevance pass)."""
        vals: dict[fx.Node, Any] = {}
        load = vals.__getitem__
        for step in self.steps:
            node, kind = step.node, step.kind
            if kind == "input":
                vals[node] = x
            elif kind == "output":
                vals[node] = fx.node.map_arg(node.args[0], load)
            elif kind == "const":
                vals[node] = _get_attr({"": self._root(), **self.modules}, node.target)
            elif kind == "linear":
                inp = vals[step.inputs[0]]
                vals[node] = step.layer.fwd(inp, step.layer.weight, step.layer.bias)
            elif kind == "maxpool":
                inp = vals[step.inputs[0]]
                vals[node], vals[("indices", node)] = _run_maxpool(step, inp, node)
            else:
                args = fx.node.map_arg(node.args, load)
                kwargs = fx.node.map_arg(node.kwargs, load)
                if kind in ("act", "pass", "identity") and "inplace" in kwargs:
                    kwargs = {k: v for k, v in kwargs.items() if k != "inplace"}
                if kind == "act" and node.op == "call_function" and len(args) > 1 and node.target in (F.relu,
                                                                                                    F.relu6):
                    args = args[:1]
                vals[node] = step.fwd(*args, **kwargs)
        return vals


def _zero_for_negative(step: Step) -> bool:
    """Whether an activation step maps negative inputs to 0 (ReLU, ReLU6, clamp(min=0), ...), read from what it
    computes: evaluated once on a probe."""
    cached = step.info.get("zero_for_negative")
    if cached is not None:
        return cached
    node = step.node
    ok = False
    if not any(isinstance(a, fx.Node) for a in list(node.args[1:]) + list(node.kwargs.values())):
        probe = torch.tensor([-3.0, -1.0, -1e-3])
        try:
            with torch.no_grad():
                args = (probe, *node.args[1:]) if node.op != "call_module" else (probe,)
                kwargs = {k: v for k, v in node.kwargs.items() if k != "inplace"} if node.op != "call_module" else {}
                if step.kind == "act" and node.op == "call_function" and node.target in (F.relu, F.relu6):
                    args = args[:1]
                fwd = step.info.get("act_fn", step.fwd) if node.op == "call_module" else step.fwd
                out = fwd(*args, **kwargs)
            ok = isinstance(out, Tensor) and bool((out == 0).all())
        except Exception:  # noqa: BLE001 - an activation that rejects the probe is simply not known to be ReLU-like
            ok = False
    step.info["zero_for_negative"] = ok
    return ok


def _owner(node: fx.Node) -> str | None:
    stack = node.meta.get("nn_module_stack")
    return list(stack)[-1] if stack else None


def _norm_info(m: nn.Module) -> dict:
    if isinstance(m, nn.GroupNorm):
        return {"groups": m.num_groups, "eps": m.eps, "module": m}
    return {"normalized_shape": tuple(m.normalized_shape), "eps": m.eps, "module": m}


def _arg(node: fx.Node, pos: int, key: str, default):
    if len(node.args) > pos:
        return node.args[pos]
    return node.kwargs.get(key, default)


def _drop_inplace(fn: Callable) -> Callable:
    def call(x, *args, **kwargs):
        kwargs.pop("inplace", None)
        if fn in (F.leaky_relu, F.elu, F.hardtanh, F.celu, F.selu):
            args = tuple(a for a in args if not isinstance(a, bool))
        return fn(x, *args, **kwargs)
    return call


def _method(name: str) -> Callable:
    def call(self, *args, **kwargs):
        return getattr(self, name)(*args, **kwargs)
    return call


def _get_attr(modules: dict, target: str):
    owner, _, attr = target.rpartition(".")
    return getattr(modules[owner], attr)


def _maxpool_fn(m: nn.Module) -> Callable:
    for cls, fn in ((nn.MaxPool1d, F.max_pool1d), (nn.MaxPool2d, F.max_pool2d), (nn.MaxPool3d, F.max_pool3d),
                    (nn.AdaptiveMaxPool1d, F.adaptive_max_pool1d), (nn.AdaptiveMaxPool2d, F.adaptive_max_pool2d),
                    (nn.AdaptiveMaxPool3d, F.adaptive_max_pool3d)):
        if isinstance(m, cls):
            return fn
    raise UnsupportedOperationError(f"no rule for {type(m).__name__}")  # pragma: no cover


def maxpool_params(step: Step) -> dict:
    """Keyword arguments of the max pool of ``step`` (module attributes or the traced call's arguments)."""
    node = step.node
    if node.op == "call_module":
        m = step.fwd
        if isinstance(m, (nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d)):
            return {"output_size": m.output_size}
        return {"kernel_size": m.kernel_size, "stride": m.stride, "padding": m.padding, "dilation": m.dilation,
                "ceil_mode": m.ceil_mode}
    fn = step.info["fn"]
    names = ["output_size"] if "adaptive" in fn.__name__ else ["kernel_size", "stride", "padding", "dilation",
                                                                "ceil_mode"]
    params = {}
    for i, k in enumerate(names):
        if len(node.args) > i + 1:
            params[k] = node.args[i + 1]
        elif k in node.kwargs:
            params[k] = node.kwargs[k]
    return params


def _run_maxpool(step: Step, x: Tensor, node: fx.Node):
    fn = step.info["fn"]
    return fn(x, **maxpool_params(step), return_indices=True)


# -------------------------------------------------------------------------------------------------------- cache

_CACHE: "weakref.WeakKeyDictionary[nn.Module, dict]" = weakref.WeakKeyDictionary()
_BY_SHAPE = object()  # cache marker: this model's plans were traced per input shape (keys (bn, (C, H, W)))


def get_plan(model: nn.Module, bn: str = "fold", input_shape: tuple | None = None) -> Plan:
    """The cached plan of ``model`` for this BN mode; rebuilt when any parameter/buffer changed (version counter).
    ``input_shape``: the shape of the input to explain; used only for a model that torch.fx traces only with concrete
    shapes (its plans are cached per input sample shape (C, H, W), so another size is traced again)."""
    key = parameter_versions(model)
    per_model = _CACHE.setdefault(model, {})
    hit = per_model.get(bn)
    sample = None if input_shape is None else tuple(int(s) for s in input_shape[1:])
    if hit is not None and hit[0] == key:
        if hit[1] is not _BY_SHAPE:
            return hit[1]
        shaped = per_model.get((bn, sample))
        if shaped is not None and shaped[0] == key:
            return shaped[1]
    plan = Plan(model, bn, input_shape)
    if plan.traced_shape is None:
        per_model[bn] = (key, plan)
    else:
        per_model[bn] = (key, _BY_SHAPE)
        per_model[(bn, tuple(plan.traced_shape[1:]))] = (key, plan)
    return plan


def clear_cache() -> None:
    _CACHE.clear()
