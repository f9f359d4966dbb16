"""Metric registry: every metric declares its name, whether higher or lower is better, and how per-sample values
are aggregated (metrics.md, "Names"). Tables label columns with ↑ (higher is better) or ↓ (lower is better)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

from ..errors import CnnlensError, suggest


class MetricError(CnnlensError, ValueError):
    """Unknown metric or bad metric option."""


@dataclass(frozen=True)
class MetricSpec:
    """name: the registry / CLI / table name. higher_is_better: the direction. description: one line with the
    convention tags. needs_model: the metric runs forward passes. needs_boxes: it compares with ground-truth boxes.
    aggregate: "mean" (mean ± standard error over samples; NaN values are excluded) or "class_mean" (mean over
    classes of the per-class mean, the pointing-game convention, metrics.md §5.3). empty_value: reported when no
    sample has a finite value (e.g. AD_rcam with no drops → 0, §2). unit: "%" or "" (fraction / AUC).
    in_all: part of "all" (False for opt-in metrics that re-run the explanation, e.g. model-randomisation)."""
    name: str
    higher_is_better: bool
    description: str
    needs_model: bool
    needs_boxes: bool
    aggregate: str = "mean"
    empty_value: float = math.nan
    unit: str = ""
    in_all: bool = True

    @property
    def arrow(self) -> str:
        return "↑" if self.higher_is_better else "↓"

    @property
    def header(self) -> str:
        unit = f" ({self.unit})" if self.unit else ""
        return f"{self.name} {self.arrow}{unit}"


METRICS: dict[str, MetricSpec] = {}


def _add(spec: MetricSpec) -> None:
    METRICS[spec.name] = spec


_add(MetricSpec("average-drop", False, "Average Drop, standard (Chattopadhay et al. 2018; metrics.md §1): "
                "100·max(0,Y−O)/Y averaged ÷N, full soft map", True, False, unit="%"))
_add(MetricSpec("increase", True, "Increase in Confidence, standard (§1): 100·1[O>Y], ties are not increases",
                True, False, unit="%"))
_add(MetricSpec("average-drop-rcam", False, "Average Drop, Relevance-CAM variant (§2): top-50 % soft mask, "
                "Σ relative drops ÷ #drops", True, False, empty_value=0.0, unit="%"))
_add(MetricSpec("average-increase-rcam", True, "Average Increase, Relevance-CAM variant (§2): 100·(1 − mean 1[Y>O]), "
                "ties count as increases", True, False, unit="%"))
_add(MetricSpec("deletion", False, "Deletion AUC (Petsiuk et al. 2018; §4): softmax probability as the most salient "
                "pixels are replaced by the substrate", True, False))
_add(MetricSpec("insertion", True, "Insertion AUC (§4): softmax probability as the most salient pixels are copied "
                "into the blurred image", True, False))
_add(MetricSpec("pointing-game", True, "Pointing game (Zhang et al. 2016; §5): argmax within 15 px of the class's "
                "boxes; mean over classes", False, True, aggregate="class_mean", unit="%"))
_add(MetricSpec("energy-pointing-game", True, "Energy-based pointing game (Wang et al. 2020; §6): share of the "
                "min-max map inside the class's boxes", False, True, unit="%"))
_add(MetricSpec("bbox", True, "Bbox (Schulz et al. 2020; §7): share of the top-|G| pixels inside the boxes G",
                False, True, unit="%"))
_add(MetricSpec("iou", True, "IoU of the binarised map with the union of the class's boxes (§8; rule printed)",
                False, True, unit="%"))
_add(MetricSpec("model-randomisation", False, "Model-randomisation sanity check (Adebayo et al. 2018, cascade end): "
                "max(Spearman ρ, ρ of |map|) between the map and the map of a copy with every block re-initialised; "
                "near 1 = the map ignores the model", True, False, in_all=False))

ALIASES = {"model-randomization": "model-randomisation"}


def get_metric(name: str) -> MetricSpec:
    name = ALIASES.get(name, name) if isinstance(name, str) else name
    if not isinstance(name, str) or name not in METRICS:
        raise MetricError(f"unknown metric {name!r}.{suggest(str(name), METRICS)} Available: {', '.join(METRICS)}")
    return METRICS[name]


def all_metrics() -> dict[str, MetricSpec]:
    return dict(METRICS)


def resolve_metrics(names: Sequence[str] | str | None) -> list[MetricSpec]:
    """Parse a list (or comma-separated string) of metric names; ``None`` or "all" gives every metric except the
    opt-in ones (``in_all=False``: model-randomisation, which re-runs every explanation on a randomised copy);
    "all,model-randomisation" adds it."""
    if names is None or names == "all":
        return [s for s in METRICS.values() if s.in_all]
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    if not names:
        raise MetricError("no metric given")
    specs = [s for n in names for s in ([m for m in METRICS.values() if m.in_all] if n == "all" else [get_metric(n)])]
    return list({s.name: s for s in specs}.values())
