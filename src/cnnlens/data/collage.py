"""Two-photo collages with known boxes: a two-object test of class discrimination on real photos."""
from __future__ import annotations

import numpy as np

from .images import load_rgb


def side_by_side(left, right, height: int = 224) -> tuple[np.ndarray, list[tuple[int, int, int, int]]]:
    """Put two photos (paths, arrays or sample names) side by side, each resized to ``height``×``height``.

    Returns the uint8 RGB collage (height, 2·height, 3) and the boxes (x0, y0, x1, y1) of the left and right photo.
    """
    from PIL import Image
    halves = []
    for src in (left, right):
        img = Image.fromarray(load_rgb(src))
        w, h = img.size
        s = min(w, h)
        img = img.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s)).resize((height, height),
                                                                                                  Image.BILINEAR)
        halves.append(np.asarray(img))
    collage = np.concatenate(halves, axis=1)
    return collage, [(0, 0, height, height), (height, 0, 2 * height, height)]
