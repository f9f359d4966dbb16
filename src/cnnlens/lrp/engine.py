"""``lrp_attribute``: one forward that records every node's value, then one relevance pass backwards through the traced
graph (lrp_sglrp_clrp.md §1, §10; contract in the module docstring of ``cnnlens.lrp``).

Each node's rule maps the relevance at its output to its inputs with explicit tensor code (re-evaluating a conv with
modified weights where a rule needs it, and ``aten.convolution_backward`` for the input-vjp); no autograd graph of the
whole model is built and no hook is ever registered on the user's model. Relevance reaching a node from several users is
summed, so residual branches and DenseNet concatenations need no per-architecture code. The relevance at any requested
module output is read as the pass goes by.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence, Union

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import InputError, LayerError, UnsupportedOperationError
from .composites import Composite, get_composite
from .graph import Plan, Step, _describe, get_plan, maxpool_params

InitialRelevance = Union[Tensor, Callable[[Tensor], Tensor]]


@dataclass
class LRPResult:
    """Output of :func:`lrp_attribute`.

    logits: (N, C) detached logits of the single forward pass. input: (N, C_in, H, W) relevance at the input, or None
    when ``input_relevance=False``. relevance: layer name → relevance at that module's output. activations: layer name →
    that module's output (detached). initial: the (N, C) initial relevance used.
    """
    logits: Tensor
    input: Tensor | None
    relevance: dict[str, Tensor] = field(default_factory=dict)
    activations: dict[str, Tensor] = field(default_factory=dict)
    initial: Tensor | None = None


def lrp_attribute(model: nn.Module, x: Tensor, initial_relevance: InitialRelevance,
                  composite: str | Composite = "epsilon-plus", layers: Sequence[str] = (), *,
                  input_relevance: bool = True, memory_format: str = "auto", **composite_options: Any) -> LRPResult:
    """LRP relevance of ``model`` on ``x`` at the input and at every module in ``layers``, from one forward and one
    relevance pass.

    initial_relevance: a (N, classes) tensor, or a callable ``logits -> (N, classes)`` evaluated on this call's logits.
    composite: a name from ``COMPOSITES`` or a :class:`Composite`; ``composite_options`` are passed to
    :func:`get_composite` (e.g. ``low``/``high`` zB bounds, ``epsilon``, ``conv_bias``, ``bn``, ``maxpool``).
    input_relevance: False stops the pass at the shallowest requested layer (``res.input`` is then None).
    memory_format: layout the pass runs in: "auto" (channels_last for float32/bfloat16 2-d conv nets on the CPU, where
    oneDNN convolutions run ≈1.3–1.7× faster; contiguous otherwise, and for good when the model's forward rejects a
    channels_last input, e.g. a ``.view`` on a feature map), "channels_last" or "contiguous". Only float rounding
    differs; every returned tensor is contiguous.
    The user's model is never modified (a cached, traced and BN-folded plan holds detached parameter references).
    """
    if not isinstance(model, nn.Module):
        raise InputError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(x, Tensor) or not x.is_floating_point():
        raise InputError("x must be a floating-point tensor")
    if isinstance(layers, str):
        layers = [layers]
    layers = list(dict.fromkeys(layers))
    if not input_relevance and not layers:
        raise LayerError("input_relevance=False needs at least one layer")
    if memory_format not in ("auto", "channels_last", "contiguous"):
        raise InputError(f"memory_format must be 'auto', 'channels_last' or 'contiguous', got {memory_format!r}")
    comp = get_composite(composite, model, **composite_options)
    plan = get_plan(model, comp.bn, tuple(x.shape))
    layer_nodes = {name: plan.layer_node(name) for name in layers}
    with torch.no_grad():
        vals = engine_forward(plan, x.detach(), memory_format)
        logits = vals[plan.output.node]
        if not isinstance(logits, Tensor) or logits.dim() != 2:
            raise UnsupportedOperationError(
                f"LRP needs a model returning (N, classes) logits, got {type(logits).__name__}"
                f"{'' if not isinstance(logits, Tensor) else ' of shape ' + str(tuple(logits.shape))}")
        r0 = initial_relevance(logits.detach()) if callable(initial_relevance) else initial_relevance
        if not isinstance(r0, Tensor):
            raise InputError(f"initial relevance must be a tensor, got {type(r0).__name__}")
        if tuple(r0.shape) != tuple(logits.shape):
            raise InputError(f"initial relevance has shape {tuple(r0.shape)}, logits have {tuple(logits.shape)}")
        r0 = r0.detach().to(dtype=logits.dtype, device=logits.device)
        stop = min((plan.index[n] for n in layer_nodes.values()), default=0) if not input_relevance else 0
        rel = relevance_pass(plan, vals, r0, comp, stop, set(layer_nodes.values()), free=True)
    out = LRPResult(logits=logits.detach(), input=None, initial=r0)
    if input_relevance:
        inp = plan.input_nodes[0]
        out.input = _contiguous(rel.get(inp, torch.zeros_like(x)))
    for name, node in layer_nodes.items():
        act = vals[node]  # kept by the relevance pass
        out.activations[name] = _contiguous(act.detach())
        out.relevance[name] = _contiguous(rel.get(node, torch.zeros_like(act)))
    return out


def _contiguous(t):
    return t.contiguous() if isinstance(t, Tensor) else t


def _use_channels_last(plan: Plan, x: Tensor, memory_format: str) -> bool:
    if memory_format == "contiguous" or x.dim() != 4 or not plan.has_conv2d or plan.channels_last_ok is False:
        return False
    if memory_format == "channels_last":
        return True
    return x.device.type == "cpu" and x.dtype in (torch.float32, torch.bfloat16)


def engine_forward(plan: Plan, x: Tensor, memory_format: str = "auto") -> dict:
    """``plan.forward`` in the chosen memory format (see :func:`lrp_attribute`); the relevance pass then runs in the
    same layout, since every rule's output follows its inputs' strides."""
    if _use_channels_last(plan, x, memory_format):
        try:
            vals = plan.forward(x.contiguous(memory_format=torch.channels_last))
            plan.channels_last_ok = True
            return vals
        except RuntimeError:
            if plan.channels_last_ok:  # worked before: a genuine error, not the layout
                raise
            vals = plan.forward(x)  # raises the model's own error if the layout was not the cause
            plan.channels_last_ok = False
            return vals
    return plan.forward(x)


# --------------------------------------------------------------------------------------------- relevance pass

def relevance_pass(plan: Plan, vals: dict, r0: Tensor, comp: Composite, stop: int = 0,
                   keep: set | frozenset = frozenset(), on_step: Callable | None = None,
                   free: bool = False) -> dict[fx.Node, Tensor]:
    """Propagate ``r0`` from the output down to node index ``stop``; return {node: relevance at its output} for the
    input node and the nodes in ``keep`` (other relevances are freed as soon as they are consumed)."""
    rel: dict[fx.Node, Tensor] = {}
    out_step = plan.output
    out_arg = out_step.node.args[0]
    if not isinstance(out_arg, fx.Node):
        raise UnsupportedOperationError("LRP needs a model whose forward returns one tensor")
    rel[out_arg] = r0
    first_types = comp.first_types
    first_node = None
    if comp.first is not None:
        first_node = plan.first_conv if first_types == ("conv",) else plan.first_linear
    for i in range(len(plan.steps) - 1, stop, -1):
        step = plan.steps[i]
        r = rel.pop(step.node, None) if step.kind != "input" else None
        if r is None:
            continue
        if step.node in keep:
            rel[step.node] = r  # a requested layer: keep its relevance
        contributions = _propagate(plan, step, vals, r, comp, first_node)
        if on_step is not None:
            on_step(step, r, contributions)
        for node, r_in in contributions:
            prev = rel.get(node)
            rel[node] = r_in if prev is None else prev + r_in
        if free and step.node not in keep:  # every user of this value has been processed: free it (as autograd)
            vals.pop(step.node, None)
            vals.pop(("indices", step.node), None)
    return rel


def _propagate(plan: Plan, step: Step, vals: dict, r: Tensor, comp: Composite, first_node) -> list[tuple[fx.Node, Tensor]]:
    kind = step.kind
    node = step.node
    if kind in ("act", "pass", "identity"):
        if kind == "act":
            rule = comp.override(step.module_name, None) or comp.activation
            r = rule.relevance(vals[step.inputs[0]], r)
        return [(step.inputs[0], r)]
    if kind == "linear":
        layer = step.layer
        src = step.inputs[0]
        rule = comp.linear_rule(step.module_name, layer.module_class, layer.is_conv, node is first_node)
        nonneg = plan.step_of[src].nonneg
        return [(src, rule.relevance(layer, vals[src], vals[node], r, nonneg))]
    if kind == "bn":
        rule = comp.override(step.module_name, None) or comp.bn_rule
        return [(step.inputs[0], rule.relevance(vals[step.inputs[0]], r))]
    if kind == "add":  # z-rule of a sum (Norm): R_k = x_k R / Σ x; a subtrahend is the term −y; constants absorb
        xs = [vals[a] if isinstance(a, fx.Node) else a for a in node.args]
        signs = step.info.get("signs")
        if signs is not None and signs[1] == -1:
            xs[1] = -xs[1]
        parts = comp.norm.split_add(xs, vals[node], r)
        return [(a, _unbroadcast(p, vals[a].shape)) for a, p in zip(node.args, parts)
                if isinstance(a, fx.Node) and plan.dep[a]]
    if kind == "scale":  # x·c, x/c, −x: a diagonal linear map, R_x = R_y (z-rule; layer scale, §3)
        src = step.info["src"]
        return [(src, _unbroadcast(r, vals[src].shape))]
    if kind == "gate":
        return _gate(step, vals, r, comp)
    if kind == "norm":
        return [(node.args[0], _ln_rule(step, vals, r, comp))]
    if kind == "getitem":
        return [(node.args[0], _Parts({step.info["index"]: r}))]
    if kind == "split":
        return _split(step, vals, r)
    if kind == "cat":
        tensors = node.args[0]
        dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
        sizes = [vals[t].shape[dim] for t in tensors]
        return list(zip(tensors, torch.split(r, sizes, dim=dim)))
    if kind == "route":
        return _route(plan, step, vals, r)
    if kind == "maxpool":
        return [(step.inputs[0], _maxpool(step, vals, r, comp))]
    if kind == "avgpool":
        return [(step.inputs[0], _avgpool(step, vals, r, comp))]
    if kind in ("const", "meta", "input"):
        return []
    raise UnsupportedOperationError(f"LRP has no rule for node {node.name} ({kind})")  # pragma: no cover


class _Parts(dict):
    """Relevance of a tuple-valued node (chunk / split / unbind), per element index; sums merge per index."""

    def __add__(self, other: "_Parts") -> "_Parts":
        out = _Parts(self)
        for k, v in other.items():
            out[k] = v if k not in out else out[k] + v
        return out


def _split(step: Step, vals: dict, r: "_Parts") -> list:
    """chunk / split / unbind / tensor_split: each piece's relevance goes back to its place (the vjp; pieces that got
    no relevance contribute zeros)."""
    src = step.node.args[0]
    with torch.enable_grad():
        xt = vals[src].detach().requires_grad_()
        out = _call(step, vals, {src: xt})
        pieces = [(out[i], g) for i, g in r.items()]
        grad = torch.autograd.grad([p for p, _ in pieces], xt, [g for _, g in pieces])[0]
    return [(src, grad)]


def _gate(step: Step, vals: dict, r: Tensor, comp: Composite) -> list:
    """z = s ⊙ g with g a gate (lrp_modern_layers.md §1). ``comp.gate``: "signal" (default): R_s = R_z, R_g = 0,
    signal-take-all (Arras et al. 2017, WASSA; "LRP-all" in Arras et al. 2019, BlackboxNLP); "proportional":
    R_s = s/(s+g)·R_z, R_g = g/(s+g)·R_z ("LRP-prop", ibid.); "half": R_s = R_g = R_z/2 ("LRP-half", ibid.)."""
    s_node, g_node = step.info["signal"], step.info["gate"]
    s_val, g_val = vals[s_node], vals[g_node]
    if comp.gate == "signal":
        return [(s_node, _unbroadcast(r, s_val.shape))]
    if comp.gate == "half":
        half = r * 0.5
        return [(s_node, _unbroadcast(half, s_val.shape)), (g_node, _unbroadcast(half, g_val.shape))]
    t = comp.norm._stab.divide(r, s_val + g_val)
    return [(s_node, _unbroadcast(s_val * t, s_val.shape)), (g_node, _unbroadcast(g_val * t, g_val.shape))]


def _ln_rule(step: Step, vals: dict, r: Tensor, comp: Composite) -> Tensor:
    """LN-rule (Ali et al., ICML 2022, §3.2; lrp_modern_layers.md §3) for LayerNorm / GroupNorm: σ held constant,
    y_j = Σ_i x_i (δ_ij − 1/C) γ_j/σ + β_j is a linear map, explained with the ε/z-rule (the composite's ``norm``
    stabiliser, z_j = the recorded y_j): R_i = x_i/σ · (γ_i S_i − mean_j γ_j S_j), S = R / y, over each normalised
    group. Conserves up to β and the stabiliser."""
    node, info = step.node, step.info
    x, y = vals[node.args[0]], vals[node]
    if "module" in info:
        m = info["module"]
        gamma, eps = m.weight, m.eps
    else:
        def arg(pos, key, default):
            a = node.args[pos] if len(node.args) > pos else node.kwargs.get(key, default)
            return vals[a] if isinstance(a, fx.Node) else a
        gamma, eps = arg(2, "weight", None), arg(4, "eps", 1e-5)
        if info["functional"] is F.group_norm:
            info = {"groups": arg(1, "num_groups", None)}
        else:
            info = {"normalized_shape": arg(1, "normalized_shape", None)}
    s = comp.norm._stab.divide(r, y)
    if "groups" in info:
        n, c = x.shape[:2]
        xg = x.reshape(n, info["groups"], -1)
        sigma = (xg.var(-1, unbiased=False, keepdim=True) + eps).sqrt()
        t = s if gamma is None else s * gamma.view(1, c, *([1] * (x.dim() - 2)))
        tg = t.reshape(n, info["groups"], -1)
        return (xg / sigma * (tg - tg.mean(-1, keepdim=True))).reshape(x.shape)
    shape = info["normalized_shape"]
    dims = tuple(range(x.dim() - len(tuple(shape) if isinstance(shape, (tuple, list)) else (shape,)), x.dim()))
    sigma = (x.var(dims, unbiased=False, keepdim=True) + eps).sqrt()
    t = s if gamma is None else s * gamma
    return x / sigma * (t - t.mean(dims, keepdim=True))


def _unbroadcast(r: Tensor, shape) -> Tensor:
    if tuple(r.shape) == tuple(shape):
        return r
    while r.dim() > len(shape):
        r = r.sum(0)
    for d, s in enumerate(shape):
        if s == 1 and r.shape[d] != 1:
            r = r.sum(d, keepdim=True)
    return r


def _vjp(fn: Callable, inputs: list[Tensor], grad: Tensor) -> tuple:
    with torch.enable_grad():
        xs = [t.detach().requires_grad_() for t in inputs]
        out = fn(*xs)
        return torch.autograd.grad(out, xs, grad, allow_unused=True)


def _call(step: Step, vals: dict, override: dict[fx.Node, Tensor]) -> Tensor:
    node = step.node

    def load(n):
        return override.get(n, vals[n])
    args = fx.node.map_arg(node.args, load)
    kwargs = fx.node.map_arg(node.kwargs, load)
    return step.fwd(*args, **kwargs)


def _route(plan: Plan, step: Step, vals: dict, r: Tensor):
    """Routing ops (reshape, permute, slicing, stack, expand, pad, nearest upsampling, channel shuffle): relevance moves
    with the values (the vector-Jacobian product of R; broadcast copies are summed back), lrp_modern_layers.md §5."""
    node = step.node
    tensor_inputs = [n for n in step.inputs if plan.dep[n] and isinstance(vals[n], Tensor)]
    if not tensor_inputs:
        raise UnsupportedOperationError(f"relevance reached {_describe(node)}, whose inputs carry none")
    if len(tensor_inputs) == 1 and step.info.get("reshape"):
        src = tensor_inputs[0]
        x = vals[src]
        if r.numel() == x.numel():
            return [(src, r.reshape(x.shape))]

    def fn(*xs):
        return _call(step, vals, dict(zip(tensor_inputs, xs)))
    grads = _vjp(fn, [vals[n] for n in tensor_inputs], r)
    return [(n, g) for n, g in zip(tensor_inputs, grads) if g is not None]


def _maxpool(step: Step, vals: dict, r: Tensor, comp: Composite) -> Tensor:
    src = step.inputs[0]
    x = vals[src]
    idx = vals[("indices", step.node)]
    if comp.maxpool == "wta":  # gradient routing: overlapping windows sum
        params = maxpool_params(step)
        if x.dim() == 4 and "kernel_size" in params:  # the native kernel (threaded, any memory format)
            k = _pair(params["kernel_size"])
            return torch.ops.aten.max_pool2d_with_indices_backward(
                r, x, k, _pair(params.get("stride") or k), _pair(params.get("padding", 0)),
                _pair(params.get("dilation", 1)), bool(params.get("ceil_mode", False)), idx)
        flat = torch.zeros(x.shape[:2] + (x[0, 0].numel(),), dtype=r.dtype, device=r.device)
        flat.scatter_add_(2, idx.flatten(2), r.flatten(2))
        return flat.view_as(x)
    params = maxpool_params(step)
    if comp.maxpool == "unpool_overwrite":
        if x.dim() != 4 or "kernel_size" not in params:
            raise UnsupportedOperationError("maxpool='unpool_overwrite' supports 2-d MaxPool2d only")
        s = r / (vals[step.node] + comp.maxpool_eps)
        unpooled = torch.zeros(x.shape[:2] + (x[0, 0].numel(),), dtype=r.dtype, device=r.device)
        unpooled.scatter_(2, idx.flatten(2), s.flatten(2))  # overwrite where windows share an argmax
        return x * unpooled.view_as(x)
    # "split": equal split among tied maxima of each window
    if x.dim() != 4 or "kernel_size" not in params:
        raise UnsupportedOperationError("maxpool='split' supports 2-d MaxPool2d only")
    return _maxpool_split(x, vals[step.node], r, params)


def _pair(v):
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


def _maxpool_split(x: Tensor, out: Tensor, r: Tensor, p: dict) -> Tensor:
    k, d, pad = _pair(p["kernel_size"]), _pair(p.get("dilation", 1)), _pair(p.get("padding", 0))
    s = _pair(p.get("stride") or p["kernel_size"])
    n, c, h, w = x.shape
    oh, ow = out.shape[-2:]
    # pad with -inf (never a maximum), extra bottom/right padding for ceil_mode windows
    need_h = (oh - 1) * s[0] + d[0] * (k[0] - 1) + 1
    need_w = (ow - 1) * s[1] + d[1] * (k[1] - 1) + 1
    xp = F.pad(x, (pad[1], max(need_w - w - pad[1], pad[1]), pad[0], max(need_h - h - pad[0], pad[0])),
               value=float("-inf"))
    cols = F.unfold(xp.reshape(n * c, 1, *xp.shape[-2:]), k, dilation=d, stride=s)  # (NC, k*k, L)
    cols = cols[..., : oh * ow]
    ties = (cols == out.reshape(n * c, 1, oh * ow)).to(r.dtype)
    share = ties / ties.sum(1, keepdim=True).clamp(min=1)
    contrib = share * r.reshape(n * c, 1, oh * ow)
    folded = F.fold(contrib, xp.shape[-2:], k, dilation=d, stride=s)
    folded = folded.reshape(n, c, *xp.shape[-2:])
    return folded[..., pad[0]:pad[0] + h, pad[1]:pad[1] + w]


def _avgpool(step: Step, vals: dict, r: Tensor, comp: Composite) -> Tensor:
    rule = comp.override(step.module_name, None) or comp.avgpool
    src = step.inputs[0]
    x = vals[src]

    def pool(t):
        return _call(step, vals, {src: t})

    def pool_vjp(s):
        return _vjp(pool, [x], s)[0]
    return rule.pool(x, vals[step.node], r, pool_vjp, pool)


def conservation(model: nn.Module, x: Tensor, initial_relevance: InitialRelevance,
                 composite: str | Composite = "epsilon-plus", **composite_options: Any) -> list[dict]:
    """Per-node conservation check (spec §1.4): for every node of the relevance pass, Σ R at its output and Σ R it
    hands to its inputs, per sample. Rows: {"node", "module", "kind", "out": (N,), "in": (N,)} in backward order."""
    comp = get_composite(composite, model, **composite_options)
    plan = get_plan(model, comp.bn, tuple(x.shape))
    rows: list[dict] = []

    def per_sample(t, n):
        if isinstance(t, _Parts):  # a tuple-valued node: the relevance of all its pieces
            return sum(v.reshape(n, -1).sum(1) for v in t.values())
        return t.reshape(n, -1).sum(1)

    def record(step, r, contributions):
        n = x.shape[0]
        total = sum((per_sample(c, n) for _, c in contributions), torch.zeros(n, dtype=x.dtype, device=x.device))
        rows.append({"node": step.node.name, "module": step.module_name, "kind": step.kind,
                     "out": per_sample(r, n), "in": total})
    with torch.no_grad():
        vals = engine_forward(plan, x.detach())
        logits = vals[plan.output.node]
        r0 = initial_relevance(logits) if callable(initial_relevance) else initial_relevance
        relevance_pass(plan, vals, r0.to(logits), comp, 0, frozenset(), record)
    return rows
