"""Model zoo, preprocessing and layer discovery."""
from .layers import (ExplainableLayer, LayerInfo, activation_states, block_layers, default_layer, explainable_layers,
                     stage_layers, trace_layers)

__all__ = ["ExplainableLayer", "LayerInfo", "activation_states", "block_layers", "default_layer", "explainable_layers",
           "stage_layers", "trace_layers"]
