"""The colour maps of every map cnnlens draws (figures, the HTML report, notebook display): one place, so an
overlay in a notebook and in the report show the same colours."""
from __future__ import annotations

from functools import lru_cache

import numpy as np

CMAP_UNSIGNED = "jet"        # min–max maps in [0, 1]
CMAP_SIGNED = "seismic"      # signed maps: white = 0, ends = ±max |map|


@lru_cache(maxsize=8)
def lut(name: str) -> np.ndarray:
    """(256, 3) uint8 look-up table of matplotlib's colour map ``name`` (matplotlib imported here, lazily; built once
    per name: do not write into it)."""
    import matplotlib
    cmap = matplotlib.colormaps[name]
    return (np.asarray(cmap(np.linspace(0.0, 1.0, 256)))[:, :3] * 255.0 + 0.5).astype(np.uint8)
