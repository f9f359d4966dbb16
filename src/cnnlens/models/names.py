"""The model names cnnlens knows, without importing torch: the CLI checks ``--model`` against them before loading
anything (the zoo imports its name lists from here). torchvision and timm accept more architecture names than these
lists hold, so only names that no loader can accept are rejected early (:func:`certainly_unknown_model`)."""
from __future__ import annotations

import re

TORCHVISION_MODELS = ("alexnet", "vgg11", "vgg11_bn", "vgg13", "vgg13_bn", "vgg16", "vgg16_bn", "vgg19", "vgg19_bn",
                      "resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "densenet121", "densenet161",
                      "densenet169", "densenet201", "mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large",
                      "efficientnet_b0", "googlenet", "squeezenet1_0", "squeezenet1_1", "convnext_tiny",
                      "regnet_y_400mf", "shufflenet_v2_x1_0", "wide_resnet50_2", "resnext50_32x4d")
BUNDLED_MODELS = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")
#: the architectures of ``synthetic-<arch>`` (cnnlens.data.synthetic.ARCHS; a test keeps the two equal)
SYNTHETIC_ARCHS = ("resnet", "senet", "vgg")
#: torchvision's and timm's architecture names are lower-case identifiers, timm's optionally with a ``.tag``
_ARCH_NAME = re.compile(r"^[a-z0-9_]+(\.[a-z0-9_]+)?$")
#: Hugging Face hub ids timm loads: ``timm/NAME.TAG`` and timm's own ``hf-hub:ORG/NAME`` (optionally ``@revision``)
_HUB_NAME = re.compile(r"^(hf-hub:[A-Za-z0-9][\w.-]*/[\w.-]+|timm/[a-z0-9_]+(\.[a-z0-9_]+)?)(@[\w.-]+)?$")


def known_model_names() -> list[str]:
    """The names of the bundled, torchvision and synthetic models (timm's names are accepted too)."""
    return sorted(set(BUNDLED_MODELS) | set(TORCHVISION_MODELS) | {f"synthetic-{a}" for a in SYNTHETIC_ARCHS})


def certainly_unknown_model(name: str) -> str | None:
    """A one-line error when no loader can accept ``name`` (a ``synthetic-`` name that is not one, or a name that is
    not a lower-case identifier, the form of every torchvision and timm architecture); None when it may be valid."""
    from ..errors import suggest
    if name.startswith("synthetic-"):
        if name[len("synthetic-"):] in SYNTHETIC_ARCHS:
            return None
        return (f"unknown synthetic model {name!r}; choose from "
                f"{', '.join('synthetic-' + a for a in SYNTHETIC_ARCHS)}")
    if name in BUNDLED_MODELS or name in TORCHVISION_MODELS or _ARCH_NAME.match(name) or _HUB_NAME.match(name):
        return None
    return (f"unknown model {name!r}.{suggest(name.lower().replace('-', '_'), known_model_names())} "
            f"Known: {', '.join(known_model_names())}, timm's model names and Hugging Face hub ids "
            f"(timm/NAME.TAG, hf-hub:ORG/NAME)")
