"""Capture module outputs during a forward pass (cams.md §2.3-2.5).

* The forward hook stores the module's output and hands ``out.clone()`` to the rest of the network, so a later in-place
  op (torchvision's ``ReLU(inplace=True)``) cannot overwrite what was stored; after the forward the stored tensors'
  ``_version`` counters are checked.
* A module called several times in one forward (torchvision's Bottleneck reuses its ``relu``) is rejected with a clear
  error, unless ``call_index`` picks one call.
* If a captured output does not require grad (frozen parameters, plain input), it is made a leaf
  (``detach().requires_grad_()``) so that ``torch.autograd.grad(score, activations)`` stops exactly there. Outputs that
  already require grad are left in the graph, so a backward to several layers is one backward to the shallowest.
* Hooks live only inside the ``with`` block; they are removed on exit, also on error. The block holds the model's
  lock (``_state.model_lock``), so another thread's cnnlens call cannot run the model meanwhile and fire these hooks.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import torch
from torch import nn

from ._state import model_lock
from .errors import LayerError, suggest


def named_modules_dict(model: nn.Module) -> dict[str, nn.Module]:
    return {name: m for name, m in model.named_modules() if name}


def resolve_module(model: nn.Module, name: str) -> nn.Module:
    """Return the submodule called ``name`` or raise a LayerError suggesting the nearest names."""
    modules = named_modules_dict(model)
    if not isinstance(name, str):
        raise LayerError(f"a layer is given by its module name (a string), got {type(name).__name__}")
    if name not in modules:
        raise LayerError(f"model has no layer {name!r}.{suggest(name, modules)} "
                         f"(`cnnlens layers` / cnnlens.explainable_layers(model) lists them)")
    return modules[name]


class LayerCapture:
    """Context manager that records the outputs of the named modules at every forward inside the block.

    >>> with LayerCapture(model, ["layer3", "layer4"]) as cap:
    ...     logits = model(x)
    ...     acts = cap.activations          # {"layer3": tensor, "layer4": tensor}
    """

    def __init__(self, model: nn.Module, layers: Sequence[str], *, call_index: int | Mapping[str, int] | None = None,
                 make_leaf: bool = True, clone: bool = True, detach: bool = False) -> None:
        self.model = model
        self.layers = list(dict.fromkeys(layers))
        self.modules = {name: resolve_module(model, name) for name in self.layers}
        self.call_index = call_index
        self.make_leaf = make_leaf
        self.clone = clone
        self.detach = detach
        self.activations: dict[str, torch.Tensor] = {}
        self._versions: dict[str, int] = {}
        self._calls: dict[str, int] = {}
        self._handles: list = []
        self._lock = None

    def _wanted_call(self, name: str) -> int | None:
        if self.call_index is None:
            return None
        if isinstance(self.call_index, Mapping):
            return self.call_index.get(name)
        return int(self.call_index)

    def _make_hook(self, name: str):
        def hook(module, inputs, output):
            count = self._calls.get(name, 0)
            self._calls[name] = count + 1
            wanted = self._wanted_call(name)
            if wanted is None and count >= 1:
                raise LayerError(
                    f"layer {name!r} ({type(module).__name__}) is called more than once in one forward pass, so its "
                    f"output is ambiguous; pick the enclosing block (e.g. {name.rsplit('.', 1)[0]!r}) or pass "
                    f"call_index=")
            if wanted is not None and count != wanted:
                return None
            if not isinstance(output, torch.Tensor):
                raise LayerError(f"layer {name!r} returns {type(output).__name__}, not a tensor; pick another layer")
            out = output
            if self.detach:
                out = out.detach()
            elif self.make_leaf and torch.is_grad_enabled() and not out.requires_grad:
                out = out.detach().requires_grad_()
            self.activations[name] = out
            self._versions[name] = out._version
            if out is output and not self.clone:
                return None
            return out.clone() if self.clone else out
        return hook

    def reset(self) -> None:
        self.activations.clear()
        self._versions.clear()
        self._calls.clear()

    def __enter__(self) -> "LayerCapture":
        lock = model_lock(self.model)
        lock.acquire()
        self._lock = lock
        try:
            for name, module in self.modules.items():
                self._handles.append(module.register_forward_hook(self._make_hook(name)))
        except BaseException:
            self.remove()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.remove()

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()
        lock, self._lock = self._lock, None
        if lock is not None:
            lock.release()

    def check(self) -> dict[str, torch.Tensor]:
        """Verify every layer fired once and nothing was modified in place; return the activations."""
        missing = [n for n in self.layers if n not in self.activations]
        if missing:
            raise LayerError(f"layer(s) {missing} did not run in the forward pass (are they used by forward()?)")
        for name, t in self.activations.items():
            if t._version != self._versions[name]:  # pragma: no cover - guarded by the clone
                raise LayerError(f"the output of {name!r} was modified in place after capture")
        return dict(self.activations)
