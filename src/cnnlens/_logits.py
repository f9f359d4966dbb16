"""Models whose forward returns an object instead of the logits tensor: Hugging Face ``ImageClassifierOutput`` (or any
object with ``.logits``), a mapping with ``"logits"``, or a tuple/list whose first element is the logits.

Every method and metric calls ``model(x)`` and expects the (N, C) logits, so the entry points (``cnnlens.explain``,
the metrics that run the model, ``evaluation.evaluate``) replace such a model by :func:`logits_model`: a view of the
same model whose forward returns the logits. The view shares the model's submodules, parameters and buffers (no copy;
module names are unchanged, so ``layer="layer4"`` means the same module), its ``training`` flag is the model's, and
attributes it lacks (``cnnlens_meta``, ``config``, ...) are read from the model. The user's model is not changed.
A model that returns a tensor is used as it is.
"""
from __future__ import annotations

import weakref
from typing import Any

import torch
from torch import nn

from .errors import ModelError


def logits_of(out: Any) -> Any:
    """The logits in a model's output: the tensor itself, ``out.logits``, ``out["logits"]`` or ``out[0]``."""
    if isinstance(out, (torch.Tensor, torch.fx.Proxy)):
        return out
    logits = getattr(out, "logits", None)
    if logits is None and isinstance(out, dict):
        logits = out.get("logits")
    if logits is None and isinstance(out, (tuple, list)) and out:
        logits = out[0]
    if isinstance(logits, (torch.Tensor, torch.fx.Proxy)):
        return logits
    raise ModelError(f"the model returned a {type(out).__name__}, not logits: cnnlens needs a tensor (N, classes), an "
                     f"object with .logits (Hugging Face), a dict with 'logits', or a tuple whose first element is the "
                     f"logits")


def _fx_tracing() -> bool:
    fx = torch.fx._symbolic_trace
    check = getattr(fx, "is_fx_symbolic_tracing", None) or getattr(fx, "is_fx_tracing_symbolic_tracing", None)
    return bool(check() if check is not None else fx.is_fx_tracing())


class LogitsView(nn.Module):
    """``model`` with a forward that returns its logits (see the module docstring)."""

    def __init__(self, model: nn.Module):
        object.__setattr__(self, "_initialising", True)
        object.__setattr__(self, "_model_ref", weakref.ref(model))
        super().__init__()
        object.__setattr__(self, "_initialising", False)
        # the same dicts, not copies: named_modules / parameters / state_dict keys are the model's own
        self._modules = model._modules
        self._parameters = model._parameters
        self._buffers = model._buffers

    @property
    def wrapped(self) -> nn.Module:
        model = self._model_ref()
        if model is None:  # pragma: no cover - views are only handed out while the model is alive
            raise RuntimeError("the wrapped model no longer exists")
        return model

    @property
    def training(self) -> bool:  # type: ignore[override]
        return self.wrapped.training

    @training.setter
    def training(self, value: bool) -> None:
        if not self.__dict__.get("_initialising", False):
            self.wrapped.training = value

    def forward(self, x):
        """One input, as every cnnlens method calls a model (torch.fx cannot trace ``*args``)."""
        model = self.wrapped
        if _fx_tracing():
            # traced from this view: the model's forward is traced inline, its submodules are the view's own
            return logits_of(type(model).forward(model, x))
        return logits_of(model(x))

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.wrapped, name)

    def __deepcopy__(self, memo):
        """A copy of the model, viewed (cnnlens.sanity randomises copies)."""
        import copy
        return LogitsView(copy.deepcopy(self.wrapped, memo))

    def extra_repr(self) -> str:
        return f"logits of {type(self.wrapped).__name__}"


_KIND: "weakref.WeakKeyDictionary[nn.Module, nn.Module | None]" = weakref.WeakKeyDictionary()


def logits_model(model: nn.Module, x: torch.Tensor | None = None) -> nn.Module:
    """``model`` when its forward returns a tensor, else its :class:`LogitsView` (one per model, cached).

    The output type is learned from one forward on ``x[:1]`` (no grad, eval mode, flags restored) the first time a
    model is seen; a view passed in is returned as it is."""
    if isinstance(model, LogitsView) or not isinstance(model, nn.Module):
        return model
    if model in _KIND:
        view = _KIND[model]
        return model if view is None else view
    if x is None:
        return model
    from ._state import preserved
    with preserved(model), torch.no_grad():
        out = model(x[:1])
    if isinstance(out, torch.Tensor):
        _KIND[model] = None
        return model
    logits_of(out)                                  # a clear error for an output without logits
    view = LogitsView(model)
    _KIND[model] = view
    return view
