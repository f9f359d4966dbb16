"""Tracing models whose forward branches on shapes or config values (Hugging Face ``transformers`` CNNs).

``torch.fx`` cannot trace ``if pixel_values.shape[1] != self.num_channels: raise ...`` (transformers' ResNet, ConvNeXt,
RegNet, ... embeddings): the condition is a proxy. :class:`ConcreteShapeTracer` traces as :class:`graph._Tracer` does,
and alongside every node it propagates a value on the ``meta`` device (shapes and dtypes, no data, no compute) from an
example input; a condition, ``len`` or unpacking on a proxy then uses that concrete value. The graph itself stays
symbolic (``x.shape[0]``, ``x.view(n, -1)`` are still nodes), so the plan works for every batch size; only a branch
taken in Python is fixed, at the example input's shape, and a :func:`branch_guard` node after it re-checks the
condition whenever the plan runs (one clear error if another input would take the other branch). Conditions on tensor
*data* (``if x.sum() > 0``) still fail to trace: meta tensors hold no data.

:func:`tracer_for` picks it for a ``transformers`` ``PreTrainedModel`` (recognised by its classes' module path, so
transformers is never imported here), with the example input (1, ``config.num_channels``, S, S), S =
``config.image_size`` or 224; every other model gets the plain tracer.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.fx as fx
from torch import Tensor, nn

from ..errors import UnsupportedOperationError
from .graph import _Tracer

_MISSING = object()


def is_transformers_model(model: nn.Module) -> bool:
    """Whether ``model`` is a Hugging Face ``transformers`` model (duck-typed: a class from the ``transformers``
    package in its MRO, and a ``config``)."""
    return hasattr(model, "config") and any(
        (c.__module__ or "").split(".")[0] == "transformers" for c in type(model).__mro__)


def _example_input(model: nn.Module) -> Tensor:
    config = model.config
    channels = getattr(config, "num_channels", 3)
    size = getattr(config, "image_size", 224)
    if isinstance(size, (tuple, list)) and len(size) == 2:
        size = tuple(int(s) for s in size)
    elif isinstance(size, int):
        size = (size, size)
    else:
        size = (224, 224)
    param = next(model.parameters(), None)
    dtype = param.dtype if param is not None else torch.float32
    return torch.empty(1, int(channels), *size, dtype=dtype, device="meta")


def tracer_for(model: nn.Module) -> fx.Tracer:
    """The tracer for ``model`` (or a :class:`cnnlens._logits.LogitsView` of it): a :class:`ConcreteShapeTracer` for a
    ``transformers`` model, else the plain :class:`graph._Tracer`."""
    shown = getattr(model, "wrapped", model)
    if is_transformers_model(shown):
        return ConcreteShapeTracer(_example_input(shown))
    return _Tracer()


def branch_guard(condition: Any, taken: bool, traced_shape: tuple) -> None:
    """Graph node after a Python branch decided while tracing: raises when ``condition`` now takes the other branch
    (e.g. a shape-dependent branch on an input of another size than the traced example)."""
    if bool(condition) != taken:
        raise UnsupportedOperationError(
            f"the model's forward takes another Python branch on this input than on the example input "
            f"{traced_shape} it was traced with for LRP (a condition on the input's shape); pass inputs of that shape")


def _to_meta(value: Any) -> Any:
    if isinstance(value, Tensor):
        return value.detach().to("meta")
    return value


class ConcreteShapeTracer(_Tracer):
    """:class:`graph._Tracer` that also evaluates every node on ``meta`` tensors, so that Python control flow on
    shapes, sizes and config values can be decided while tracing (see the module docstring)."""

    def __init__(self, example: Tensor):
        super().__init__()
        self.example = _to_meta(example)
        self.values: dict[fx.Node, Any] = {}
        self.evaluating = False

    def trace(self, root, concrete_args=None):
        try:
            return super().trace(root, concrete_args)
        finally:
            self.values = {}  # meta values only steer the trace; the graph keeps none of them

    # -- concrete (meta) values ---------------------------------------------------------------------------------------
    def _value(self, arg: Any) -> Any:
        def load(a):
            if isinstance(a, fx.Proxy):
                a = a.node
            if isinstance(a, fx.Node):
                v = self.values.get(a, _MISSING)
                if v is _MISSING:
                    raise LookupError(a)
                return v
            return _to_meta(a)
        return fx.node.map_aggregate(arg, load)

    def _evaluate(self, kind: str, target: Any, args: tuple, kwargs: dict) -> Any:
        if kind == "placeholder":
            return self.example
        if kind == "get_attr":
            owner, _, attr = target.rpartition(".")
            return _to_meta(getattr(self.root.get_submodule(owner) if owner else self.root, attr))
        args, kwargs = self._value(args), self._value(kwargs)
        if kind == "call_function":
            return target(*args, **kwargs)
        if kind == "call_method":
            return getattr(args[0], target)(*args[1:], **kwargs)
        if kind == "call_module":
            module = self.root.get_submodule(target)
            state = {k: _to_meta(v) for k, v in [*module.named_parameters(), *module.named_buffers()]}
            return torch.func.functional_call(module, state, tuple(args), kwargs)
        raise LookupError(kind)

    def create_proxy(self, kind, target, args, kwargs, name=None, type_expr=None, proxy_factory_fn=None):
        proxy = super().create_proxy(kind, target, args, kwargs, name, type_expr, proxy_factory_fn)
        if kind != "output":
            self.evaluating = True  # while fx's patches (module call, parameter access) are on: record nothing
            try:
                self.values[proxy.node] = self._evaluate(kind, target, args, kwargs)
            except Exception:  # noqa: BLE001 - no meta value: control flow on this node fails as in plain fx
                pass
            finally:
                self.evaluating = False
        return proxy

    def getattr(self, attr, attr_val, parameter_proxy_cache):
        if self.evaluating:
            return attr_val
        return super().getattr(attr, attr_val, parameter_proxy_cache)

    def call_module(self, m, forward, args, kwargs):
        if self.evaluating:
            return forward(*args, **kwargs)
        return super().call_module(m, forward, args, kwargs)

    # -- control flow -------------------------------------------------------------------------------------------------
    def _concrete(self, obj: fx.Proxy) -> Any:
        value = self.values.get(obj.node, _MISSING)
        if isinstance(value, Tensor):  # data-dependent (meta tensors hold no data)
            return _MISSING
        return value

    def to_bool(self, obj: fx.Proxy) -> bool:
        value = self._concrete(obj)
        if value is _MISSING:
            return super().to_bool(obj)
        taken = bool(value)
        # the branch is fixed in the graph: a guard node re-checks the condition on every input the plan runs on
        self.create_proxy("call_function", branch_guard, (obj, taken, tuple(self.example.shape)), {})
        return taken

    def iter(self, obj: fx.Proxy):
        value = self._concrete(obj)
        if value is _MISSING or not isinstance(value, (tuple, list)):
            return super().iter(obj)
        return iter([obj[i] for i in range(len(value))])
