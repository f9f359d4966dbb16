"""Inline display in notebooks: ``Explanation`` and multi-layer results render themselves as HTML (``_repr_html_``)
or PNG (``_repr_png_``), and reports as an ``<iframe srcdoc>`` (:class:`cnnlens.report.Report`).

Everything here is imported by the ``_repr_*_`` methods on first display; PIL and matplotlib are imported inside the
functions that draw, so ``import cnnlens`` stays light.
"""
from .explanation import (DEFAULT_ALPHA, MAX_IMAGES, MAX_SIDE, colourbar_rgb, display_images, explanation_figure,
                          explanation_html, explanation_png, overlay_rgb)

__all__ = ["DEFAULT_ALPHA", "MAX_IMAGES", "MAX_SIDE", "colourbar_rgb", "display_images", "explanation_figure",
           "explanation_html", "explanation_png", "overlay_rgb"]
