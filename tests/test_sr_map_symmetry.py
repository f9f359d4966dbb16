"""sr_map.md §6.2: a mirror-symmetric image gives a mirror-symmetric CA map. Exact where the sampling itself is
symmetric: every candidate patch (candidate_stride=1) on an image whose size and scale copies halve evenly. (The
stride-3 candidate grid starts at the left edge, so its flip is another grid, and odd sizes round the scale copies
asymmetrically: both break the symmetry by design, by ~3-5 % of the map's range.)"""
from __future__ import annotations

import pytest
import torch

from cnnlens.methods._context_saliency import context_saliency, make_config


@pytest.mark.parametrize("variant", ["paper", "eigen"])
def test_mirror_symmetric_image_gives_mirror_symmetric_map(variant):
    g = torch.Generator().manual_seed(0)
    img = torch.rand(2, 3, 24, 32, generator=g, dtype=torch.float64)
    img = (img + img.flip(-1)) / 2
    res = context_saliency(img, make_config(variant, K=8, candidate_stride=1), working_size=None)
    s = res.saliency
    assert float(s.std()) > 1e-3                       # a non-trivial map
    torch.testing.assert_close(s, s.flip(-1), rtol=0, atol=1e-12)
    torch.testing.assert_close(res.attended.to(torch.float64), res.attended.flip(-1).to(torch.float64))
    # and a flipped image gives the flipped map (no left/right preference in the implementation)
    img2 = torch.rand(1, 3, 24, 32, generator=g, dtype=torch.float64)
    a = context_saliency(img2, make_config(variant, K=8, candidate_stride=1), working_size=None).saliency
    b = context_saliency(img2.flip(-1), make_config(variant, K=8, candidate_stride=1), working_size=None).saliency
    torch.testing.assert_close(b, a.flip(-1), rtol=0, atol=1e-12)
