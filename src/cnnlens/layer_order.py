"""Order layer labels the way a reader expects: by depth in the network where known, else naturally (numbered
parts as numbers: ``features.9`` before ``features.14``). Torch-free, so the report, tables and CLI share it."""
from __future__ import annotations

import re
from typing import Mapping

__all__ = ["layer_sort_key", "natural_key"]


def natural_key(label: str) -> tuple:
    """Sort key that puts "input" first and orders numbered parts by number (features.9 before features.14)."""
    parts = re.split(r"(\d+)", str(label))
    return (label != "input", [(0, int(p), "") if p.isdigit() else (1, 0, p) for p in parts if p])


def layer_sort_key(label: str, depth: Mapping[str, int] | None = None) -> tuple:
    """Sort key: "input" first, then layers of known ``depth`` ({module name: position in the network, e.g. the
    index in ``model.named_modules()``}; a "+"- or ","-joined layer set counts at its deepest member) by depth, then
    the rest in :func:`natural_key` order."""
    label = str(label)
    if label == "input":
        return (0, 0, natural_key(label))
    if depth:
        names = [p for p in re.split(r"[+,]", label) if p]
        if names and all(n in depth for n in names):
            return (1, max(depth[n] for n in names), natural_key(label))
    return (2, 0, natural_key(label))
