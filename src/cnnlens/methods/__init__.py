"""Explanation methods, one module per method; each registers itself with ``registry.register``."""
from __future__ import annotations

import importlib
import pkgutil

from .registry import MapResult, MethodOutput, MethodSpec, Request, all_methods, get_method, register

_loaded = False


def _load_all() -> None:
    """Import every module of this package once, so each method registers itself."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    for info in pkgutil.iter_modules(__path__):
        if not info.name.startswith("_") and info.name != "registry":
            importlib.import_module(f"{__name__}.{info.name}")


__all__ = ["MapResult", "MethodOutput", "MethodSpec", "Request", "all_methods", "get_method", "register"]
