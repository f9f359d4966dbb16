"""Dataset figures from per-sample values: mean ± standard error (NaN excluded), or the mean over classes of the
per-class mean (pointing game, metrics.md §5.3)."""
from __future__ import annotations

import math
from typing import Sequence

import torch

from .base import MetricSpec


def mean_se(values: Sequence[float] | torch.Tensor) -> tuple[float, float, int]:
    """(mean, standard error = sample std / √n, n) over the finite values; (nan, nan, 0) when there are none."""
    v = torch.as_tensor(values, dtype=torch.float64).reshape(-1)
    v = v[torch.isfinite(v)]
    n = int(v.numel())
    if n == 0:
        return math.nan, math.nan, 0
    m = float(v.mean())
    se = float(v.std(unbiased=True) / math.sqrt(n)) if n > 1 else math.nan
    return m, se, n


def summarize(spec: MetricSpec, values: Sequence[float] | torch.Tensor,
              groups: Sequence[object] | None = None) -> dict[str, float]:
    """{"mean", "se", "n"} for one metric. ``class_mean`` metrics need ``groups`` (the class of each value): the
    figure is the mean over classes of each class's mean, the standard error is over classes."""
    v = torch.as_tensor(values, dtype=torch.float64).reshape(-1)
    if spec.aggregate == "class_mean":
        if groups is None or len(groups) != v.numel():
            raise ValueError("class_mean aggregation needs one group per value")
        per_class: dict[object, list[float]] = {}
        for g, x in zip(groups, v.tolist()):
            if math.isfinite(x):
                per_class.setdefault(g, []).append(x)
        m, se, _ = mean_se([sum(xs) / len(xs) for xs in per_class.values()])
        n = sum(len(xs) for xs in per_class.values())
    else:
        m, se, n = mean_se(v)
    if n == 0 and not math.isnan(spec.empty_value):
        m = spec.empty_value
    return {"mean": m, "se": se, "n": n}
