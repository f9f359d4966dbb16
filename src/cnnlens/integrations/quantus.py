"""cnnlens as a Quantus explanation function (Quantus: Hedström et al., JMLR 24(34), 2023).

``explain(model, inputs, targets, method=..., layer=..., **options)`` has the signature Quantus calls an
``explain_func`` with, so every cnnlens method feeds every Quantus metric and ``quantus.evaluate``::

    import quantus
    from cnnlens.integrations.quantus import explain

    metric = quantus.PointingGame(disable_warnings=True)
    scores = metric(model=model, x_batch=x, y_batch=y, s_batch=masks, explain_func=explain,
                    explain_func_kwargs={"method": "relevance-cam", "layer": "layer4"}, device="cpu")

It takes numpy arrays or tensors (channels first or last), returns a float32 numpy array (N, 1, H, W) (channels last:
(N, H, W, 1)) at the input's resolution, and accepts the keyword arguments Quantus adds to the call (``device``,
``channel_first``, ``softmax``, and those of Quantus's own ``explain``). ``quantus.evaluate`` passes each key of
``xai_methods`` as ``method``: name the entries after cnnlens methods (``{"grad-cam": explain, "sise": explain}``).

The map handed to Quantus (``output``):

* ``"saliency"`` (default): S, the map cnnlens's own metrics read (``cnnlens.metrics.saliency``: the heatmap per-sample
  min–max to [0, 1]; signed maps by ``signed_mode``). On these maps Quantus's ``RelevanceMassAccuracy`` (with its
  default normalisation by the maximum) equals cnnlens's energy-based pointing game, and Quantus's ``PointingGame``
  equals cnnlens's pointing game with zero tolerance (``tolerance=0, inclusive=True``) wherever the maximum is one
  pixel (on ties Quantus counts a hit when any maximal pixel is in the mask, cnnlens takes the first in raster order).
* ``"heatmap"``: ``Explanation.heatmap`` as it is (signed maps: 0.5 = zero relevance).
* ``"raw"``: the unnormalised map, sign kept, resized bilinearly to the input (for metrics that read signs).

Quantus is an optional dependency (``pip install "cnnlens[quantus]"``); this module imports it nowhere, it only
follows its calling convention.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import InputError, LayerError

#: Keyword arguments Quantus passes to (or accepts for) an explain_func that are not cnnlens options: accepted and
#: used where they mean something here (``device``, ``channel_first``), otherwise ignored.
QUANTUS_KEYWORDS = frozenset({
    "device", "channel_first", "softmax", "xai_lib", "xai_lib_kwargs", "reduce_axes", "return_shape", "keepdims",
    "abs", "normalise", "normalise_func", "normalise_func_kwargs", "model_predict_kwargs", "batch_size",
})
OUTPUTS = ("saliency", "heatmap", "raw")


def _unwrap(model: Any):
    from torch import nn
    if isinstance(model, nn.Module):
        return model
    inner = getattr(model, "get_model", None)        # a quantus ModelInterface (PyTorchModel)
    if callable(inner):
        model = inner()
    if not isinstance(model, nn.Module):
        raise InputError(f"model must be a torch.nn.Module (or a Quantus PyTorchModel), got {type(model).__name__}")
    return model


def _first_conv_channels(model) -> int | None:
    from torch import nn
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            return m.in_channels
    return None


def _channel_first(shape: tuple[int, ...], channels: int | None) -> bool:
    """Channels first unless only the last axis looks like channels (Quantus's ``infer_channel_first`` rule)."""
    first, last = shape[1], shape[-1]
    if channels is not None and (first == channels) != (last == channels):
        return first == channels
    return not (last < first and last < shape[2])


def _targets(targets: Any, n: int):
    import torch
    if targets is None:
        return None
    if isinstance(targets, (int, np.integer)):
        return int(targets)
    if isinstance(targets, str):
        return targets
    t = targets.detach().cpu() if isinstance(targets, torch.Tensor) else torch.as_tensor(np.asarray(targets))
    t = t.reshape(-1)
    if t.is_floating_point():
        if not bool((t == t.round()).all()):
            raise InputError("targets must be class indices (integers)")
        t = t.round()
    t = t.long()
    if t.numel() == 1:
        return int(t.item())
    if t.numel() != n:
        raise InputError(f"got {t.numel()} targets for {n} inputs")
    return t


def explain(model: Any, inputs: Any, targets: Any = None, *, method: str = "grad-cam", layer: str | None = None,
            output: str = "saliency", signed_mode: str = "minmax", channel_first: bool | None = None,
            device: Any = None, **kwargs: Any) -> np.ndarray:
    """Explain ``model`` on ``inputs`` for ``targets`` with a cnnlens ``method``, in Quantus's explain_func
    convention.

    inputs: (N,C,H,W) or (N,H,W,C), numpy or torch, preprocessed as the model expects. targets: (N,) class indices
    (numpy, torch, list), one int for all, or None (each input's top-1). method / layer / remaining keyword
    arguments: as for ``cnnlens.explain`` (one layer: one map per input; methods without a layer, such as LRP,
    SGLRP, RISE and SR map, ignore ``layer``, so one ``explain_func_kwargs`` serves them and the CAMs in
    ``quantus.evaluate``). output: ``"saliency"`` (default),
    ``"heatmap"`` or ``"raw"`` (see the module docstring). channel_first: the layout of ``inputs`` (None: inferred,
    the returned maps follow it). device: accepted for Quantus; cnnlens computes on the model's own device.
    Returns a float32 numpy array (N,1,H,W), or (N,H,W,1) for channels-last inputs.
    """
    import torch

    import cnnlens
    from ..metrics import saliency
    from ..ops import resize

    if output not in OUTPUTS:
        raise InputError(f"output must be one of {OUTPUTS}, got {output!r}")
    if isinstance(layer, (list, tuple)) or layer in ("blocks", "stages"):
        raise LayerError("a Quantus explain_func gives one map per input: pass one layer (a module name), not "
                         f"{layer!r}")
    from ..methods import get_method
    if get_method(method).layers == "none":
        layer = None                                   # shared explain_func_kwargs: the layer is for the CAMs
    options = {k: v for k, v in kwargs.items() if k not in QUANTUS_KEYWORDS}
    net = _unwrap(model)
    if isinstance(inputs, torch.Tensor):
        x = inputs.detach()
    else:
        arr = np.asarray(inputs)
        if arr.dtype == object or not np.issubdtype(arr.dtype, np.number):
            raise InputError(f"inputs must be a numeric array or tensor, got dtype {arr.dtype}")
        x = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))
    if x.dim() != 4:
        raise InputError(f"inputs must be a batch of images (N,C,H,W) or (N,H,W,C), got shape {tuple(x.shape)}")
    first = _channel_first(tuple(x.shape), _first_conv_channels(net)) if channel_first is None else bool(channel_first)
    if not first:
        x = x.permute(0, 3, 1, 2)
    x = x.float().contiguous()
    h, w = int(x.shape[-2]), int(x.shape[-1])
    e = cnnlens.explain(net, x, method, target=_targets(targets, int(x.shape[0])), layer=layer, **options)
    if output == "saliency":
        maps = saliency(e.heatmap, (h, w), signed=bool(e.signed), signed_mode=signed_mode,
                        zero=0.5 if e.signed else 0.0)
    elif output == "heatmap":
        maps = resize(e.heatmap.detach().float(), (h, w))
    else:
        maps = resize(e.raw.detach().float(), (h, w))
    a = maps.detach().cpu().numpy().astype(np.float32, copy=False)[:, None]
    return a if first else np.ascontiguousarray(np.moveaxis(a, 1, -1))
