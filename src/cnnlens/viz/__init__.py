"""Figures (matplotlib is imported only when a figure is drawn)."""
from .figures import grid_figure, layer_label, overlay, overlay_figure, save_figure, write_text_atomic

__all__ = ["grid_figure", "layer_label", "overlay", "overlay_figure", "save_figure", "write_text_atomic"]
