"""A faster no-grad inference of a CNN, for the hundreds of masked forwards of Score-CAM (cams.md §5 cost model).

``inference_plan(model, dtype)`` returns an :class:`InferencePlan` or None (then the caller runs the plain model). The
plan is the model traced with ``torch.fx`` and rewritten for inference only:

* an eval-mode ``BatchNorm2d`` that is the only consumer of a ``Conv2d``'s output is folded into the conv
  (W' = s·W, b' = s·(b − μ) + β, s = γ/√(σ² + ε)), as new tensors;
* a conv whose only consumer is a ReLU, or a ``+ other`` (then optionally a ReLU: a residual block's tail), runs as
  one oneDNN call with the sum/ReLU as post-ops and weights prepacked once (CPU, float32), else as ``F.conv2d`` + ops;
* every other module is the user's own module object, called as it is; fx's generated code frees each intermediate
  value after its last use.

Only float rounding differs from the model. Nothing of the user's model is modified: the plan holds the user's
submodules and new folded tensors. Plans are cached per model and parameter/buffer versions (a model whose parameters
change is re-planned); the caller additionally compares the plan's logits with the model's on the real input
(:meth:`InferencePlan.matches`) and falls back on any mismatch.

``InferencePlan.stem`` exposes the first conv when the network input feeds only that conv: its (folded) weight and bias
and ``tail``, the rest of the network as a function of the stem conv's pre-activation output (and, for a stem
conv → ReLU → max pool, the pool and ``pooled_tail``, the rest after ReLU(pool)). Score-CAM uses it to
compute the first conv of all masked inputs by linearity (see score_cam.py, ``_LinearStem``).

No plan (→ plain model) when: any module is in training mode or has forward (pre-)hooks, a global module hook is set,
the model cannot be traced (e.g. timm's EfficientNet: data-dependent control flow), it does not take exactly one input,
it has no plain ``Conv2d``, a floating parameter or buffer is not of the input's dtype (float32/float64 only), or fewer
than half of its convolutions fold a BatchNorm or fuse a ReLU / residual add (``_worth_it``: the rewrite would only
add overhead).
"""
from __future__ import annotations

import operator
import warnings
import weakref

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from ..lrp.graph import fold_batchnorm, parameter_versions

_RELU_FUNCS = (F.relu, torch.relu, torch.relu_)
_RELU_METHODS = ("relu", "relu_")
_ADD_FUNCS = (operator.add, operator.iadd, torch.add)
_ADD_METHODS = ("add", "add_", "__add__", "__iadd__")


def _onednn_available() -> bool:
    try:
        return bool(torch.backends.mkldnn.is_available()) and hasattr(torch.ops.mkldnn, "_convolution_pointwise") \
            and hasattr(torch._C._nn, "mkldnn_reorder_conv2d_weight")
    except (AttributeError, RuntimeError):  # pragma: no cover - builds without oneDNN
        return False


class FusedConv(nn.Module):
    """conv2d(x, W, b) [+ other] [→ ReLU] with detached (possibly BN-folded) parameters."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, conv: nn.Conv2d, padding: list[int],
                 relu: bool, residual: bool):
        super().__init__()
        self.weight = weight.contiguous(memory_format=torch.channels_last)
        self.bias = bias
        self.stride = list(conv.stride)
        self.padding = padding
        self.dilation = list(conv.dilation)
        self.groups = conv.groups
        self.relu = relu
        self.residual = residual
        self._onednn = _onednn_available()
        self._packed: torch.Tensor | None = None

    def _packed_weight(self, x: torch.Tensor) -> torch.Tensor:
        """The weight reordered once into oneDNN's blocked layout (valid for any input shape; measured: the batch size
        it is packed for does not matter)."""
        if self._packed is None:
            self._packed = torch._C._nn.mkldnn_reorder_conv2d_weight(self.weight.to_mkldnn(), self.padding,
                                                                     self.stride, self.dilation, self.groups,
                                                                     list(x.shape))
        return self._packed

    def forward(self, x: torch.Tensor, other: torch.Tensor | None = None) -> torch.Tensor:
        if self._onednn and x.device.type == "cpu" and x.dtype == torch.float32 and x.dim() == 4 and \
                (other is None or (other.dtype == torch.float32 and other.shape == x.shape[:1] + other.shape[1:])):
            try:
                w = self._packed_weight(x)
                if other is None:
                    return torch.ops.mkldnn._convolution_pointwise(
                        x, w, self.bias, self.padding, self.stride, self.dilation, self.groups,
                        "relu" if self.relu else "none", [], "")
                return torch.ops.mkldnn._convolution_pointwise.binary(
                    x, other, w, self.bias, self.padding, self.stride, self.dilation, self.groups, "add", None,
                    "relu" if self.relu else None, [], "")
            except (RuntimeError, NotImplementedError):
                self._onednn = False      # this op or shape is not supported by the fused kernel: plain ops from now
                self._packed = None
        y = F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)
        if other is not None:
            y = y + other
        return torch.relu(y) if self.relu else y


class InferencePlan:
    """The rewritten model: ``plan(x)`` = the model's output up to float rounding (no autograd, eval only)."""

    def __init__(self, gm: fx.GraphModule, stem: FusedConv | None, tail: fx.GraphModule | None,
                 pool: nn.Module | None = None, pooled_tail: fx.GraphModule | None = None):
        # the GraphModules' plain ``forward``: their ``__call__`` wrapper prints a traceback to stderr on an error,
        # which the caller handles by falling back to the plain model
        self.forward = gm.forward
        self.stem = stem
        self.tail = tail.forward if tail is not None else None
        self.pool = pool
        self.pooled_tail = pooled_tail.forward if pooled_tail is not None else None

    def __call__(self, x: torch.Tensor):
        return self.forward(x)

    def matches(self, x: torch.Tensor, reference: torch.Tensor, rtol: float = 1e-3) -> bool:
        """The plan's output on ``x`` equals ``reference`` (the model's own output) within ``rtol`` of its scale."""
        try:
            out = self(x)
        except RuntimeError:
            return False
        if not isinstance(out, torch.Tensor) or out.shape != reference.shape or out.dtype != reference.dtype:
            return False
        if not bool(torch.isfinite(reference).all()):
            return bool(torch.equal(out, reference))
        scale = float(reference.abs().max()) if reference.numel() else 0.0
        return bool(((out - reference).abs() <= rtol * scale).all())


# ------------------------------------------------------------------------------------------------ graph rewriting


def _is_plain(m: nn.Module, cls: type) -> bool:
    return isinstance(m, cls) and type(m).forward is cls.forward


def _only_user(node: fx.Node) -> fx.Node | None:
    users = list(node.users)
    return users[0] if len(users) == 1 else None


def _is_relu(node: fx.Node | None, src: fx.Node, modules: dict) -> bool:
    if node is None or not node.args or node.args[0] is not src:
        return False
    extra = list(node.args[1:]) + list(node.kwargs.values())
    if any(not isinstance(a, bool) for a in extra) or (node.kwargs and set(node.kwargs) != {"inplace"}):
        return False
    if node.op == "call_module":
        return _is_plain(modules[node.target], nn.ReLU)
    if node.op == "call_function":
        return node.target in _RELU_FUNCS
    return node.op == "call_method" and node.target in _RELU_METHODS and not extra


def _add_other(node: fx.Node | None, src: fx.Node) -> fx.Node | None:
    """If ``node`` is ``src + other`` (a plain two-tensor sum), return ``other``."""
    if node is None or node.kwargs or len(node.args) != 2:
        return None
    if not ((node.op == "call_function" and node.target in _ADD_FUNCS)
            or (node.op == "call_method" and node.target in _ADD_METHODS)):
        return None
    a, b = node.args
    if not (isinstance(a, fx.Node) and isinstance(b, fx.Node)) or a is b:
        return None
    return b if a is src else a if b is src else None


def _free(node: fx.Node | None, taken: set) -> fx.Node | None:
    return None if node is None or node in taken else node


def _conv_padding(conv: nn.Conv2d) -> list[int] | None:
    if conv.padding_mode != "zeros" or conv.transposed:
        return None
    if conv.padding == "valid":
        return [0, 0]
    if conv.padding == "same":
        if any(s != 1 for s in conv.stride):
            return None
        total = [d * (k - 1) for d, k in zip(conv.dilation, conv.kernel_size)]
        return [t // 2 for t in total] if all(t % 2 == 0 for t in total) else None
    return list(conv.padding)


def _fold(conv: nn.Conv2d, bn: nn.BatchNorm2d | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    w = conv.weight.detach()
    b = None if conv.bias is None else conv.bias.detach()
    if bn is None:
        return w.clone(), None if b is None else b.clone()
    return fold_batchnorm(w, b, bn)


def _attr(model: nn.Module, target: str):
    obj = model
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


def _worth_it(graph: fx.Graph, modules: dict, gains: int) -> bool:
    """The rewrite pays only where it removes work: at least half of the model's convolutions (any ``Conv2d``
    subclass, e.g. timm's ``Conv2dSame``, and functional ``conv2d`` calls) must fold a BatchNorm or fuse a ReLU or a
    residual add. A plan that only prepacks weights (convs followed by a BatchNorm subclass with its own forward, e.g.
    timm's ``BatchNormAct2d``, or by activations other than ReLU) adds the traced graph's overhead for no measured gain,
    so the plain model runs instead (measured, 1 thread, 112 px: torchvision MobileNetV2, BN folded into all 52 convs,
    no ReLU6 fused: 1.9x faster than the plain channels_last model)."""
    convs = sum(1 for n in graph.nodes
                if (n.op == "call_module" and isinstance(modules.get(n.target), nn.Conv2d))
                or (n.op == "call_function" and n.target in (F.conv2d, torch.conv2d)))
    return 2 * gains >= convs


def _build(model: nn.Module) -> InferencePlan | None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            graph = fx.Tracer().trace(model)
        except Exception:  # noqa: BLE001 - fx raises many types for untraceable code; the plain model runs instead
            return None
    modules = dict(model.named_modules())
    placeholders = [n for n in graph.nodes if n.op == "placeholder"]
    if len(placeholders) != 1:
        return None

    # find the conv chains: conv [→ BN] [→ ReLU | → + other [→ ReLU]]
    chains: dict[fx.Node, tuple] = {}          # chain's last node -> (conv node, FusedConv, other node | None)
    absorbed: set[fx.Node] = set()
    gains = 0                                  # chains that fold a BN or fuse a ReLU / residual add
    for node in graph.nodes:
        if node.op != "call_module" or not _is_plain(modules[node.target], nn.Conv2d):
            continue
        conv = modules[node.target]
        padding = _conv_padding(conv)
        if padding is None or len(node.args) != 1 or node.kwargs or not isinstance(node.args[0], fx.Node):
            continue
        members, end, bn = [node], node, None
        nxt = _free(_only_user(end), absorbed)
        if nxt is not None and nxt.op == "call_module" and _is_plain(modules[nxt.target], nn.BatchNorm2d) \
                and nxt.args == (end,) and not nxt.kwargs:
            cand = modules[nxt.target]
            if not cand.training and cand.running_mean is not None and cand.running_var is not None:
                bn, end = cand, nxt
                members.append(nxt)
        nxt = _free(_only_user(end), absorbed)
        relu, other = False, None
        if _is_relu(nxt, end, modules):
            relu, end = True, nxt
            members.append(nxt)
        else:
            other = _add_other(nxt, end)
            if other is not None:
                end = nxt
                members.append(nxt)
                after = _free(_only_user(end), absorbed)
                if _is_relu(after, end, modules):
                    relu, end = True, after
                    members.append(after)
        w, b = _fold(conv, bn)
        chains[end] = (node, FusedConv(w, b, conv, padding, relu, other is not None), other)
        absorbed.update(members)          # chain ends too: a later conv must not extend through them
        gains += bn is not None or relu or other is not None
    if not chains or not _worth_it(graph, modules, gains):
        return None

    new = fx.Graph()
    env: dict[fx.Node, fx.Node] = {}
    fused: dict[str, FusedConv] = {}
    for node in graph.nodes:
        if node in chains:
            conv_node, mod, other = chains[node]
            name = f"cnnlens_fused_conv_{len(fused)}"
            fused[name] = mod
            args = (env[conv_node.args[0]],) + ((env[other],) if other is not None else ())
            env[node] = new.call_module(name, args)
        elif node not in absorbed:
            env[node] = new.node_copy(node, lambda n: env[n])
    gm = _graph_module(new, model, modules, fused)

    stem, tail = None, None
    (inp,) = [n for n in new.nodes if n.op == "placeholder"]
    first = _only_user(inp)
    if first is not None and first.op == "call_module" and first.target in fused and len(first.args) == 1 \
            and not fused[first.target].residual:
        stem = fused[first.target]
        tail, pool, pooled_tail = _tails(new, inp, first, stem, model, modules, fused)
        return InferencePlan(gm, stem, tail, pool, pooled_tail)
    return InferencePlan(gm, None, None)


def _tails(graph: fx.Graph, inp: fx.Node, first: fx.Node, stem: FusedConv, model, modules, fused):
    """The network after the stem conv: ``tail(z)`` as a function of the stem's pre-activation output z (conv + bias),
    and, when the stem's ReLU feeds (alone) a max pool, that pool and ``pooled_tail(p)``, the rest as a function of
    p = ReLU(pool(z)). The ReLU then runs after the pool in both: max and ReLU commute exactly (ReLU is monotone)."""
    pool_node = None
    if stem.relu:
        nxt = _only_user(first)
        pool = modules.get(nxt.target) if nxt is not None and nxt.op == "call_module" else None
        if pool is not None and _is_plain(pool, nn.MaxPool2d) and nxt.args == (first,) and not nxt.kwargs \
                and not pool.return_indices:
            pool_node = nxt

    def build(after_pool: bool) -> fx.GraphModule:
        g = fx.Graph()
        z = g.placeholder("p" if after_pool else "z")
        env: dict[fx.Node, fx.Node] = {inp: z}
        if after_pool:
            env[first] = z
            env[pool_node] = z
        elif pool_node is not None:
            env[first] = z
            env[pool_node] = g.call_function(torch.relu, (g.node_copy(pool_node, lambda n: env[n]),))
        else:
            env[first] = g.call_function(torch.relu, (z,)) if stem.relu else z
        for node in graph.nodes:
            if node not in env:
                env[node] = g.node_copy(node, lambda n: env[n])
        return _graph_module(g, model, modules, fused)

    tail = build(False)
    if pool_node is None:
        return tail, None, None
    return tail, modules[pool_node.target], build(True)


def _graph_module(graph: fx.Graph, model: nn.Module, modules: dict, fused: dict) -> fx.GraphModule:
    root = {}
    for n in graph.nodes:
        if n.op == "call_module":
            root[n.target] = fused.get(n.target) or modules[n.target]
        elif n.op == "get_attr":
            root[n.target] = _attr(model, n.target)
    graph.lint()
    return fx.GraphModule(root, graph)


# ------------------------------------------------------------------------------------------------------- entry

_CACHE: "weakref.WeakKeyDictionary[nn.Module, tuple]" = weakref.WeakKeyDictionary()


def _applicable(model: nn.Module, dtype: torch.dtype) -> bool:
    if dtype not in (torch.float32, torch.float64):
        return False
    from torch.nn.modules import module as _module
    if _module._global_forward_hooks or _module._global_forward_pre_hooks:
        return False
    for m in model.modules():
        if m.training or m._forward_hooks or m._forward_pre_hooks:
            return False
    return all(t.dtype == dtype for t in list(model.parameters()) + list(model.buffers()) if t.is_floating_point())


def inference_plan(model: nn.Module, dtype: torch.dtype, rebuild: bool = False) -> InferencePlan | None:
    """The cached :class:`InferencePlan` of ``model`` for inputs of ``dtype``, or None where it does not apply."""
    if not _applicable(model, dtype):
        return None
    key = parameter_versions(model)
    hit = _CACHE.get(model)
    if hit is not None and hit[0] == key and not rebuild:
        return hit[1]
    plan = _build(model)
    _CACHE[model] = (key, plan)
    return plan


def clear_cache() -> None:
    _CACHE.clear()
