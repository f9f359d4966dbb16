"""Model zoo, preprocessing and layer discovery."""
from .layers import LayerInfo, block_layers, default_layer, explainable_layers, trace_layers

__all__ = ["LayerInfo", "block_layers", "default_layer", "explainable_layers", "trace_layers"]
