"""Evaluation of explanation methods on datasets: the configuration and run identity (config), the loop over units
of work (runner, scoring, loader, torchrun ranks in distributed), the results store (store), the dataset adapters, the
model and dataset openers, and the tables and plots.

>>> from cnnlens.evaluation import evaluate, open_model, open_dataset
>>> model, name = open_model("synthetic-vgg")
>>> res = evaluate(model, open_dataset("synthetic", model, n_images=8), "grad-cam", "deletion,bbox", out="eval/")
>>> print(res.table())
"""
from __future__ import annotations

import importlib

# Names → submodule, imported on first use: the store and the configuration (config, store) import no torch, so the
# report reads a results folder without loading torch.
_EXPORTS = {
    "DEFAULT_METHODS": "config", "DEFAULT_METRICS": "config", "EvalConfig": "config", "MethodRun": "config",
    "ResumeError": "config",
    "RESULTS": "store", "ResultsStore": "store",
    "IncompleteResults": "runner", "Interrupted": "runner", "PeerFailed": "runner", "Results": "runner",
    "evaluate": "runner", "safe_id": "maps",
    "open_dataset": ".data.layouts", "open_model": "models",
    "layer_table": "tables", "markdown_table": "tables", "summarize_records": "tables", "write_plots": "tables",
    "write_tables": "tables",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
