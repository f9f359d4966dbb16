"""Exceptions raised by cnnlens.

Every error cnnlens raises on bad input derives from :class:`CnnlensError`, so callers (and the CLI) can catch one type
and show one clear message.
"""
from __future__ import annotations

import difflib
from typing import Iterable


class CnnlensError(Exception):
    """Base class of every error cnnlens raises for bad input or an unsupported model."""


class InputError(CnnlensError, ValueError):
    """An input tensor or image is malformed (rank, channels, dtype, NaN/Inf, unreadable file)."""


class ModelError(CnnlensError, ValueError):
    """Unknown model name, or a model cnnlens cannot explain."""


class WeightsError(CnnlensError, ValueError):
    """A weights file is missing, unsafe, or does not fit the architecture."""


class LayerError(CnnlensError, ValueError):
    """Unknown layer name, or a layer that cannot be captured (e.g. a module called several times)."""


class MethodError(CnnlensError, ValueError):
    """Unknown method or bad method option."""


class TargetError(CnnlensError, ValueError):
    """Target class out of range, of the wrong length, or an unknown class name."""


class UnsupportedOperationError(CnnlensError, NotImplementedError):
    """The model contains an operation a method has no rule for (never silently wrong)."""


def suggest(name: str, candidates: Iterable[str], n: int = 3) -> str:
    """Return ' Did you mean: a, b?' for the nearest candidates, or '' when none is close."""
    close = difflib.get_close_matches(str(name), [str(c) for c in candidates], n=n, cutoff=0.5)
    return f" Did you mean: {', '.join(repr(c) for c in close)}?" if close else ""
