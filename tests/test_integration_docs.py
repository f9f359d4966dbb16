"""The runnable examples of docs/integrations/*.md run as written (real EfficientNet-Lite0 weights: ``slow``)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs" / "integrations"


def _python_blocks(name: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", (DOCS / name).read_text(encoding="utf-8"), re.S)


@pytest.mark.slow
def test_quantus_page_example_runs(capsys):
    pytest.importorskip("quantus")
    code = _python_blocks("quantus.md")[-1]
    exec(compile(code, "quantus.md", "exec"), {"__name__": "__main__"})
    out = capsys.readouterr().out
    assert "pointing game, Relevance-CAM:" in out
    for method in ("grad-cam", "relevance-cam", "sglrp"):
        assert re.search(rf"^{method}\s+\{{'relevance mass': 0\.\d+, 'relevance rank': 0\.\d+\}}$", out, re.M)


@pytest.mark.slow
def test_notebooks_page_examples_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    scope = {"__name__": "__main__"}
    for code in _python_blocks("notebooks.md"):
        exec(compile(code, "notebooks.md", "exec"), scope)
    assert 'data-cnnlens="overlay 1 4"' in scope["layers"]._repr_html_()          # 2 images × 5 stages
    assert (tmp_path / "explanations.html").read_text(encoding="utf-8") == scope["report"].html
