"""Self-contained HTML reports (one ``report.html`` per output folder; no network, opens from ``file://``).

In a notebook, ``view(source)`` — also spelled ``cnnlens.report(source)`` — returns a :class:`Report` that shows the
page inline (an ``<iframe srcdoc>``): of a results folder, a ``report.html``, an :class:`ExplanationReport` or
``Explanation`` objects.

``write_report(folder)`` builds the page from the files a command wrote: an evaluation results folder
(``summary.json`` + ``results*.jsonl``) or an explanation folder (``report_data/explanations.json``, written by
:class:`ExplanationReport`).
"""
from __future__ import annotations

import sys
import types
from pathlib import Path

from ..errors import InputError
from .evaluation import evaluation_page_data, read_records, write_evaluation_report
from .explanations import DATA_DIR, MANIFEST, ExplanationReport, explanation_page_data, write_explanation_report
from .html import REPORT_NAME, render_page
from .inline import Report, view

__all__ = ["ExplanationReport", "Report", "view", "write_report", "report_kind", "write_evaluation_report",
           "write_explanation_report", "evaluation_page_data", "explanation_page_data", "read_records", "render_page", "REPORT_NAME"]


def report_kind(folder: str | Path) -> str | None:
    """``"evaluation"``, ``"explanations"`` or None for a folder without results."""
    folder = Path(folder)
    if (folder / "summary.json").is_file() or (folder / "run.json").is_file():
        return "evaluation"                      # run.json alone: an interrupted evaluation (a partial page)
    if (folder / DATA_DIR / MANIFEST).is_file():
        return "explanations"
    return None


def write_report(folder: str | Path) -> Path:
    """Build ``folder/report.html`` from the results in ``folder``; return its path."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"no such results folder: {folder}")
    kind = report_kind(folder)
    if kind == "evaluation":
        return write_evaluation_report(folder)
    if kind == "explanations":
        return write_explanation_report(folder)
    raise InputError(f"{folder} holds no cnnlens results (expected summary.json from `cnnlens evaluate` or "
                     f"{DATA_DIR}/{MANIFEST} from `cnnlens explain`/`sweep`/`demo`)")


class _CallableModule(types.ModuleType):
    """``cnnlens.report(source, ...)`` is ``cnnlens.report.view(source, ...)`` (the module stays a module)."""

    def __call__(self, source, **kwargs):
        return view(source, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
