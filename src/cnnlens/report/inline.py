"""Reports inside notebooks: :class:`Report` holds one self-contained page and shows it inline as an ``<iframe>``
whose ``srcdoc`` is the page (HTML-escaped), so it runs offline in JupyterLab, classic Notebook and VS Code, with
no file server and no network.
"""
from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..errors import InputError

#: Height of the inline frame in pixels (the frame can be resized by dragging its corner).
DEFAULT_HEIGHT = 760


class Report:
    """One report page (``html``: the whole document). In a notebook it renders inline (``_repr_html_``);
    ``save(path)`` writes it as a file that opens from ``file://``."""

    def __init__(self, html_text: str, *, path: Path | None = None, height: int = DEFAULT_HEIGHT) -> None:
        self.html = html_text
        self.path = path
        self.height = int(height)

    def iframe(self, height: int | None = None) -> str:
        """The page as ``<iframe srcdoc=...>``: the document HTML-escaped into the attribute, scripts allowed in a
        sandbox without same-origin access (the page needs neither storage nor the network)."""
        h = self.height if height is None else int(height)
        return (f'<iframe class="cnnlens-report" srcdoc="{html.escape(self.html, quote=True)}" '
                f'sandbox="allow-scripts allow-popups allow-downloads" title="cnnlens report" '
                f'style="width:100%;height:{h}px;border:1px solid #ccc;resize:vertical" loading="eager"></iframe>')

    def _repr_html_(self) -> str:
        return self.iframe()

    def save(self, path: str | Path) -> Path:
        """Write the page to ``path`` (atomically); return the path."""
        from ..viz import write_text_atomic
        return write_text_atomic(path, self.html)

    def __repr__(self) -> str:
        where = f" from {self.path}" if self.path is not None else ""
        return f"<cnnlens report{where}: {len(self.html) / 1e6:.1f} MB page>"


def _is_explanation(obj: Any) -> bool:
    return hasattr(obj, "heatmap") and hasattr(obj, "method") and hasattr(obj, "target")


def view(source: Any, *, title: str | None = None, model: str | None = None,
         height: int = DEFAULT_HEIGHT) -> Report:
    """The report of ``source`` as a :class:`Report` (shown inline when it is a cell's value).

    source: a results folder (what ``cnnlens explain/sweep/demo/evaluate`` wrote; the page is built from its files,
    nothing is written), a ``report.html`` file, an :class:`~cnnlens.report.ExplanationReport`, or explanations:
    an ``Explanation``, a dict layer → Explanation (``Explanations``) or a list of them, whose inputs become the
    report's images (one per sample; every method, layer and target of the list side by side).
    """
    from .explanations import ExplanationReport
    if isinstance(source, ExplanationReport):
        return source.view(height=height)
    if isinstance(source, (str, Path)):
        path = Path(source)
        if path.is_file():
            return Report(path.read_text(encoding="utf-8"), path=path, height=height)
        from . import report_kind
        from .evaluation import evaluation_page_data
        from .explanations import explanation_page_data
        from .html import render_page
        kind = report_kind(path)
        if kind is None:
            raise InputError(f"{path} holds no cnnlens results (expected a results folder or a report.html)")
        if kind == "evaluation":
            data = evaluation_page_data(path)
            page_title = "cnnlens evaluation"
        else:
            data = explanation_page_data(path)
            page_title = data["title"]
        page_title = title or page_title + (f" · {data['model']}" if data.get("model") else "")
        return Report(render_page(data, page_title), path=path / "report.html", height=height)
    items = _explanations(source)
    rep = ExplanationReport(None, model=model, title=title)
    from ..display import display_images
    n = min(len(e) for e in items)
    images = display_images(items[0])
    if images is None:
        raise InputError("these explanations carry no input images (they were not made by cnnlens.explain); "
                         "build an ExplanationReport and add the images yourself")
    for i in range(n):
        rep.add(f"image{i}", images[i], items, index=i, source=f"#{i}")
    return rep.view(height=height)


def _explanations(source: Any) -> list:
    if _is_explanation(source):
        return [source]
    if isinstance(source, Mapping):
        return [e for e in source.values() if _is_explanation(e)] or _bad(source)
    if isinstance(source, Sequence) and not isinstance(source, (str, bytes)):
        out: list = []
        for item in source:
            out.extend(_explanations(item))
        return out or _bad(source)
    return _bad(source)


def _bad(source: Any) -> list:
    raise InputError(f"cannot make a report of {type(source).__name__}: pass a results folder, a report.html, an "
                     f"ExplanationReport, or Explanation objects")
