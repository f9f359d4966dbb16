"""Model zoo, preprocessing and layer discovery.

The layer helpers load on first use (PEP 562), so ``cnnlens.models.names`` (the model names the CLI checks before
loading torch) imports without torch."""
from __future__ import annotations

import importlib

__all__ = ["ExplainableLayer", "LayerInfo", "activation_states", "block_layers", "default_layer", "explainable_layers",
           "stage_layers", "trace_layers"]


def __getattr__(name: str):
    if name in __all__:
        return getattr(importlib.import_module(".layers", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
