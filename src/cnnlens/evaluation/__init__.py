"""Evaluation of explanation methods on datasets: the configuration and run identity (config), the loop over units
of work (runner, scoring, loader, torchrun ranks in distributed), the results store (store), the dataset adapters, the
model and dataset openers, and the tables and plots.

>>> from cnnlens.evaluation import evaluate, open_model, open_dataset
>>> model, name = open_model("synthetic-vgg")
>>> res = evaluate(model, open_dataset("synthetic", model, n_images=8), "grad-cam", "deletion,bbox", out="eval/")
>>> print(res.table())
"""
from __future__ import annotations

from .config import DEFAULT_METHODS, DEFAULT_METRICS, EvalConfig, MethodRun, ResumeError
from .runner import RESULTS, IncompleteResults, Interrupted, PeerFailed, Results, evaluate, safe_id
from .datasets import open_dataset
from .models import open_model
from .store import ResultsStore
from .tables import layer_table, markdown_table, summarize_records, write_plots, write_tables

__all__ = ["DEFAULT_METHODS", "DEFAULT_METRICS", "RESULTS", "EvalConfig", "IncompleteResults", "Interrupted",
           "MethodRun", "PeerFailed", "Results", "ResultsStore", "ResumeError", "evaluate", "layer_table", "markdown_table", "open_dataset", "open_model", "safe_id", "summarize_records",
           "write_plots", "write_tables"]
