"""The canonised, traced form of a model that the LRP engine runs (lrp_sglrp_clrp.md §1).

``get_plan(model, bn=...)`` traces the model once with ``torch.fx`` (functional adds/cats that module hooks miss become
explicit nodes; timm's ``Conv2dSame``/``BatchNormAct2d``/``DropPath`` and every ``torch.nn`` layer are leaves), classifies
every node (linear layer, BatchNorm, activation, max/avg pool, Add, Concat, shape routing), folds BatchNorm into the
preceding conv/linear when ``bn="fold"`` (zennit's ``SequentialMergeBatchNorm``), and infers which tensors are
non-negative (post-ReLU) so z⁺-type rules skip their all-zero negative terms. Nothing of the user's model is modified: the
plan holds detached references to its parameters (folded weights are new tensors) and its forward is a functional
re-implementation with out-of-place activations. Plans are cached per model, BN mode and parameter versions.

Any leaf module or function without a rule raises :class:`cnnlens.errors.UnsupportedOperationError` naming it.
"""
from __future__ import annotations

import math
import operator
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
        self.is_conv = isinstance(module, nn.modules.conv._ConvNd)
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
_LEAF_NAMES = ("Conv2dSame", "BatchNormAct2d", "DropPath", "Conv2dSameExport")

_NONNEG_ACT_MODULES = (nn.ReLU, nn.ReLU6, nn.Sigmoid, nn.Hardsigmoid)
_ACT_FUNCS: dict[Any, Callable] = {
    F.relu: F.relu, torch.relu: torch.relu, torch.relu_: torch.relu, F.relu_: torch.relu, F.relu6: F.relu6,
    F.leaky_relu: F.leaky_relu, F.silu: F.silu, F.gelu: F.gelu, F.elu: F.elu, F.hardswish: F.hardswish,
    F.hardsigmoid: F.hardsigmoid, torch.sigmoid: torch.sigmoid, F.sigmoid: torch.sigmoid, torch.tanh: torch.tanh,
    F.tanh: torch.tanh, F.mish: F.mish, F.hardtanh: F.hardtanh, F.softplus: F.softplus, F.selu: F.selu,
    F.celu: F.celu,
}
_NONNEG_ACT_FUNCS = {F.relu, torch.relu, torch.relu_, F.relu_, F.relu6, F.hardsigmoid, torch.sigmoid, F.sigmoid}
_ACT_METHODS = {"relu": torch.relu, "relu_": torch.relu, "sigmoid": torch.sigmoid, "sigmoid_": torch.sigmoid,
                "tanh": torch.tanh, "tanh_": torch.tanh}
_ROUTE_FUNCS = {torch.flatten, torch.reshape, torch.squeeze, torch.unsqueeze, torch.permute, torch.transpose,
                operator.getitem}
_ROUTE_METHODS = {"view", "reshape", "flatten", "squeeze", "unsqueeze", "permute", "transpose", "contiguous",
                  "view_as", "reshape_as"}
_PASS_METHODS = {"clone", "float", "double", "to", "type_as", "detach"}
_PASS_FUNCS = {F.dropout, F.dropout1d, F.dropout2d, F.dropout3d, F.alpha_dropout, torch.clone}
_MAXPOOL_FUNCS = {F.max_pool1d: F.max_pool1d, F.max_pool2d: F.max_pool2d, F.max_pool3d: F.max_pool3d,
                  F.adaptive_max_pool1d: F.adaptive_max_pool1d, F.adaptive_max_pool2d: F.adaptive_max_pool2d,
                  F.adaptive_max_pool3d: F.adaptive_max_pool3d}
_AVGPOOL_FUNCS = {F.avg_pool1d, F.avg_pool2d, F.avg_pool3d, F.adaptive_avg_pool1d, F.adaptive_avg_pool2d,
                  F.adaptive_avg_pool3d, torch.mean}
_ADD_FUNCS = {operator.add, operator.iadd, torch.add}
_CAT_FUNCS = {torch.cat, torch.concat}


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


class _Tracer(fx.Tracer):
    """fx tracer that keeps every torch.nn layer and timm's fused/same-padding layers as leaves, and records each
    module's output node(s) (containers too) so relevance can be read at any module name."""

    def __init__(self):
        super().__init__()
        self.module_outputs: dict[str, list[fx.Node]] = {}

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        if type(m).__name__ in _LEAF_NAMES:
            return True
        return super().is_leaf_module(m, qualname)

    def call_module(self, m, forward, args, kwargs):
        out = super().call_module(m, forward, args, kwargs)
        qual = self.path_of_module(m)
        if isinstance(out, fx.Proxy) and qual:
            self.module_outputs.setdefault(qual, []).append(out.node)
        return out


# --------------------------------------------------------------------------------------------------------- plan


@dataclass
class Step:
    """One graph node. kind: input | linear | bn | act | route | pass | maxpool | avgpool | add | cat | const |
    meta | output | identity (a folded BatchNorm)."""
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
        return f"module {node.target!r}"
    name = getattr(node.target, "__name__", str(node.target))
    where = node.meta.get("nn_module_stack")
    inside = f" inside {list(where)[-1]!r}" if where else ""
    return f"{node.op.replace('call_', '')} {name!r} (node {node.name}){inside}"


class Plan:
    """The traced, canonised model. ``forward(x)`` returns {node: value}; ``steps`` in topological order."""

    def __init__(self, model: nn.Module, bn: str = "fold"):
        if bn not in ("fold", "pass"):
            raise ValueError(f"bn must be 'fold' or 'pass', got {bn!r}")
        self.bn = bn
        from .tracing import tracer_for  # a transformers model's shape checks are decided on meta values
        tracer = tracer_for(model)
        with preserved(model):
            try:
                self.graph = tracer.trace(model)
            except Exception as err:  # noqa: BLE001 - fx raises many types for untraceable code
                from .._logits import LogitsView
                shown = model.wrapped if isinstance(model, LogitsView) else model
                raise UnsupportedOperationError(
                    f"cannot trace {type(shown).__name__} with torch.fx for LRP ({type(err).__name__}: {err})") from err
        self.module_outputs = tracer.module_outputs
        del tracer  # it references the root model; the cache must hold the model only weakly
        # submodules only (not the root): the plan is a value in a WeakKeyDictionary keyed by the model
        self.modules = {name: m for name, m in model.named_modules() if name}
        self._root = weakref.ref(model)
        self.steps: list[Step] = []
        self.index: dict[fx.Node, int] = {}
        for node in self.graph.nodes:
            step = self._classify(node)
            self.index[node] = len(self.steps)
            self.steps.append(step)
        self.step_of = {s.node: s for s in self.steps}
        self._fold_and_infer()
        outs = [s for s in self.steps if s.kind == "output"]
        self.output = outs[0]
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
        if op == "call_module":
            return self._classify_module(node, self.modules[tgt], ins)
        if op == "call_function":
            return self._classify_function(node, tgt, ins)
        if op == "call_method":
            return self._classify_method(node, tgt, ins)
        raise UnsupportedOperationError(f"LRP has no rule for {_describe(node)}")  # pragma: no cover

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
        if _is_activation_module(m):
            return Step(node, "act", _act_forward(m), ins, name, nonneg=_act_nonneg(m))
        if isinstance(m, _PASS_MODULES) or type(m).__name__ == "DropPath":
            return Step(node, "pass", lambda x: x, ins, name)
        if isinstance(m, nn.Flatten):
            return Step(node, "route", lambda x, m=m: torch.flatten(x, m.start_dim, m.end_dim), ins, name)
        if isinstance(m, nn.Unflatten):
            return Step(node, "route", m, ins, name)
        if isinstance(m, _MAXPOOL):
            return Step(node, "maxpool", m, ins, name, info={"fn": _maxpool_fn(m)})
        if isinstance(m, _AVGPOOL):
            return Step(node, "avgpool", m, ins, name)
        raise UnsupportedOperationError(
            f"LRP has no rule for module {name!r} ({type(m).__name__}); give it a rule or replace it")

    def _classify_function(self, node, f, ins) -> Step:
        if f in _ADD_FUNCS:
            tensors = [a for a in node.args if isinstance(a, fx.Node)]
            if len(tensors) != len(node.args) or len(tensors) < 2 or node.kwargs:
                raise UnsupportedOperationError(
                    f"LRP has no rule for {_describe(node)} (only the sum of tensors, e.g. a residual Add, is supported)")
            return Step(node, "add", torch.add if f is torch.add else operator.add, ins)
        if f in _CAT_FUNCS:
            return Step(node, "cat", torch.cat, ins)
        if f in _ACT_FUNCS:
            nonneg = f in _NONNEG_ACT_FUNCS or (f is F.hardtanh and _arg(node, 1, "min_val", -1.0) >= 0)
            return Step(node, "act", _drop_inplace(_ACT_FUNCS[f]), ins, nonneg=nonneg)
        if f in _PASS_FUNCS:
            return Step(node, "pass", lambda x, *a, **k: x, ins)
        if f in _ROUTE_FUNCS:
            return Step(node, "route", f, ins)
        if f is F.pad:
            mode = _arg(node, 2, "mode", "constant")
            value = _arg(node, 3, "value", 0.0)
            if mode != "constant" or (value or 0.0) != 0.0:
                raise UnsupportedOperationError(f"LRP has no rule for {_describe(node)} with mode={mode!r}")
            return Step(node, "route", f, ins)
        if f in _MAXPOOL_FUNCS:
            return Step(node, "maxpool", f, ins, info={"fn": f})
        if f in _AVGPOOL_FUNCS:
            return Step(node, "avgpool", f, ins)
        return Step(node, "meta", f, ins)

    def _classify_method(self, node, name, ins) -> Step:
        if name in _ROUTE_METHODS:
            return Step(node, "route", _method(name), ins)
        if name in _PASS_METHODS:
            return Step(node, "pass", _method(name), ins)
        if name in _ACT_METHODS:
            fn = _ACT_METHODS[name]
            return Step(node, "act", lambda x, *a, fn=fn, **k: fn(x), ins, nonneg=name.startswith(("relu", "sigmoid")))
        if name == "mean":
            return Step(node, "avgpool", _method(name), ins)
        if name in ("add", "add_", "__add__", "__iadd__"):
            return self._classify_function(node, operator.add, ins)
        return Step(node, "meta", _method(name), ins)

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
            if step.kind in ("route", "pass", "maxpool", "avgpool", "add", "cat", "identity"):
                step.nonneg = bool(step.inputs) and all(self.step_of[n].nonneg for n in step.inputs)

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
                out = step.fwd(*args, **kwargs)
                if kind == "meta" and isinstance(out, Tensor) and any(
                        isinstance(vals[n], Tensor) for n in step.inputs):
                    raise UnsupportedOperationError(f"LRP has no rule for {_describe(node)}")
                vals[node] = out
        return vals


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


def get_plan(model: nn.Module, bn: str = "fold") -> Plan:
    """The cached plan of ``model`` for this BN mode; rebuilt when any parameter/buffer changed (version counter)."""
    key = parameter_versions(model)
    per_model = _CACHE.setdefault(model, {})
    hit = per_model.get(bn)
    if hit is not None and hit[0] == key:
        return hit[1]
    plan = Plan(model, bn)
    per_model[bn] = (key, plan)
    return plan


def clear_cache() -> None:
    _CACHE.clear()
