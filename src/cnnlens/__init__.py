"""cnnlens: explain the decisions of convolutional neural networks in PyTorch.

>>> import cnnlens
>>> model = cnnlens.load_model("efficientnet_lite0")
>>> x = cnnlens.load_image("chelsea", model)
>>> e = cnnlens.explain(model, x, "grad-cam")
>>> e.heatmap.shape, e.target_names

``import cnnlens`` is cheap: torch, timm and PIL are imported when a name that needs them is first used (PEP 562), so
the command line can check its arguments before paying for them.
"""
from __future__ import annotations

import importlib
import importlib.util
from typing import TYPE_CHECKING, Any

from .errors import (CnnlensError, InputError, LayerError, MethodError, ModelError, TargetError,
                     UnsupportedOperationError, WeightsError)

__version__ = "0.1.0"

#: public name → the module that defines it (imported on first use)
_LAZY = {
    "METHODS": "api", "Explanation": "api", "Explanations": "api", "explain": "api", "method_options": "api",
    "validate_input": "api",
    "block_layers": "models.layers", "default_layer": "models.layers", "explainable_layers": "models.layers",
    "stage_layers": "models.layers",
    "load_model": "models.zoo", "ModelInfo": "models.zoo", "MODEL_NAMES": "models.zoo",
    "load_image": "data.images",
    "model_lock": "_state",
}

if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from .api import METHODS, Explanation, Explanations, explain, method_options, validate_input
    from .data.images import load_image
    from .models.layers import block_layers, default_layer, explainable_layers, stage_layers
    from ._state import model_lock
    from .models.zoo import MODEL_NAMES, ModelInfo, load_model


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is not None:
        value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
        globals()[name] = value                      # later look-ups skip this function
        return value
    if not name.startswith("_") and importlib.util.find_spec(f"{__name__}.{name}") is not None:
        return importlib.import_module(f"{__name__}.{name}")     # subpackages: cnnlens.lrp, cnnlens.metrics, ...
    raise AttributeError(f"module 'cnnlens' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = ["METHODS", "CnnlensError", "Explanation", "Explanations", "InputError", "LayerError", "MethodError",
           "ModelError", "TargetError", "UnsupportedOperationError", "WeightsError", "block_layers", "default_layer",
           "explain", "explainable_layers", "load_image", "load_model", "method_options", "model_lock", "stage_layers",
           "validate_input"]
