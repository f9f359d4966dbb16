"""The :class:`Sample` every evaluation reads (one image, its boxes and the classes to explain), and the
:class:`BoxDataset` protocol of a dataset of samples. The dataset layouts are in :mod:`cnnlens.data.layouts`."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import torch


@dataclass
class Sample:
    """One image: ``image`` (C,H,W) normalised at the model's input size; ``size`` (H0, W0) of the original, the
    resolution of ``boxes`` [(class key, x1, y1, x2, y2)] (0-based half-open); ``targets``: the class keys to explain
    (every ground-truth class present, difficult-only classes skipped).

    A class key is the model's class index, unless ``candidates`` maps it (a class map: a dataset class standing for a
    set of model classes): then the target is the model's highest-scoring class of ``candidates[key]`` and the boxes
    are those of the key. ``has_boxes`` is False for a dataset without boxes (metrics that need boxes report n/a);
    ``path`` is the source file, when there is one. A class-mapped dataset's ``class_names`` name its keys.
    ``unreadable``: why the file could not be decoded (one line), for a sample that stands in for it (its image is
    zeros): the evaluation skips it and counts it in the summary."""
    id: str
    image: torch.Tensor
    size: tuple[int, int]
    boxes: list[tuple[int, float, float, float, float]] = field(default_factory=list)
    targets: list[int] = field(default_factory=list)
    candidates: dict[int, tuple[int, ...]] = field(default_factory=dict)
    has_boxes: bool = True
    path: str | None = None
    unreadable: str | None = None

    def class_boxes(self, c: int) -> torch.Tensor:
        return torch.tensor([b[1:] for b in self.boxes if b[0] == c], dtype=torch.float64).reshape(-1, 4)

    def model_classes(self, key: int) -> tuple[int, ...]:
        """The model classes a target key stands for (itself, without a class map)."""
        return tuple(self.candidates.get(key, (key,)))


class BoxDataset(Protocol):
    name: str
    class_names: list[str]

    def __len__(self) -> int: ...
    def __getitem__(self, i: int) -> Sample: ...
    def describe(self) -> dict: ...
