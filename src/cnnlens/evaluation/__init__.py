"""Evaluation of explanation methods on datasets: the runner (blocks, resumable results, torchrun ranks), the dataset
adapters, the model and dataset openers, and the tables and plots.

>>> from cnnlens.evaluation import evaluate, open_model, open_dataset
>>> model, name = open_model("synthetic-vgg")
>>> res = evaluate(model, open_dataset("synthetic", model, n_images=8), "grad-cam", "deletion,bbox", out="eval/")
>>> print(res.table())
"""
from __future__ import annotations

from ..data.layouts import open_dataset
from .models import open_model
from .runner import (RESULTS, EvalConfig, Interrupted, MethodRun, PeerFailed, Results, ResumeError, evaluate,
                     safe_id)
from .tables import layer_table, markdown_table, summarize_records, write_plots, write_tables

__all__ = ["RESULTS", "EvalConfig", "Interrupted", "MethodRun", "PeerFailed", "Results", "ResumeError", "evaluate",
           "layer_table", "markdown_table", "open_dataset", "open_model", "safe_id", "summarize_records",
           "write_plots", "write_tables"]
