"""cnnlens: explain the decisions of convolutional neural networks in PyTorch.

>>> import cnnlens
>>> model = cnnlens.load_model("efficientnet_lite0")
>>> x = cnnlens.load_image("chelsea", model)
>>> e = cnnlens.explain(model, x, "grad-cam")
>>> e.heatmap.shape, e.target_names
"""
from __future__ import annotations

from .api import METHODS, Explanation, explain, method_options, validate_input
from .errors import (CnnlensError, InputError, LayerError, MethodError, ModelError, TargetError,
                     UnsupportedOperationError, WeightsError)
from .models.layers import block_layers, default_layer, explainable_layers, stage_layers

__version__ = "0.1.0"


def __getattr__(name):  # heavy imports (timm, PIL, skimage) only when used
    if name in ("load_model", "ModelInfo", "MODEL_NAMES"):
        from .models import zoo
        return getattr(zoo, name)
    if name == "load_image":
        from .data.images import load_image
        return load_image
    raise AttributeError(f"module 'cnnlens' has no attribute {name!r}")


__all__ = ["METHODS", "CnnlensError", "Explanation", "InputError", "LayerError", "MethodError", "ModelError",
           "TargetError", "UnsupportedOperationError", "WeightsError", "block_layers", "default_layer", "explain",
           "explainable_layers", "load_image", "load_model", "method_options", "stage_layers", "validate_input"]
