"""Name → model for ``cnnlens evaluate`` (kept out of the CLI so Python users share it)."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..errors import InputError, ModelError


def open_model(name: str, weights: str | None = None, *, device: str = "cpu", progress: bool = False
               ) -> tuple[nn.Module, str]:
    """``synthetic-vgg`` / ``synthetic-resnet`` / ``synthetic-senet`` (trained on first use and cached) or a model-zoo
    name with its pretrained weights, or ``weights`` (cnnlens.load_model: a file, a URL, a torchvision weights name,
    "random")."""
    if name.startswith("synthetic-"):
        from ..data.synthetic import ARCHS, synthetic_model
        arch = name[len("synthetic-"):]
        if arch not in ARCHS:
            raise ModelError(f"unknown synthetic model {name!r}; choose from "
                             f"{', '.join('synthetic-' + a for a in sorted(ARCHS))}")
        if weights is not None:
            raise ModelError("synthetic models take no --weights (they are trained and cached by cnnlens)")
        model = synthetic_model(arch, progress=progress)
    else:
        try:
            from ..models.zoo import load_model
        except ImportError:
            raise ModelError(f"model {name!r}: the model zoo is not available in this build; use synthetic-vgg "
                             f"or synthetic-resnet") from None
        model = load_model(name, weights=weights, progress=progress)
    try:
        model = model.to(torch.device(device))
    except (RuntimeError, AssertionError) as exc:
        raise InputError(f"cannot use device {device!r}: {exc}") from None
    return model.eval(), name


def _num_outputs(model: nn.Module) -> int:
    from .._state import model_device, model_dtype, preserved
    from ..data.preprocessing import model_preprocessing
    size, _, _ = model_preprocessing(model)
    with preserved(model), torch.inference_mode():
        out = model(torch.zeros(1, 3, *size, device=model_device(model), dtype=model_dtype(model)))
    from .._logits import logits_of
    return int(logits_of(out).shape[-1])
