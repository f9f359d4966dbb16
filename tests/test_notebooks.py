"""The tutorial notebooks (docs/notebooks/*.ipynb) run top to bottom in a fresh kernel (nbclient) and show their
figures; they are committed with their outputs cleared."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "docs" / "notebooks").glob("*.ipynb"))
#: Per-cell limit (seconds): generous for a busy 2-core machine; the whole set takes well under a minute idle.
CELL_TIMEOUT = 240


def test_there_are_tutorials():
    assert len(NOTEBOOKS) >= 3
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for path in NOTEBOOKS:
        assert f"docs/notebooks/{path.name}" in readme, f"README does not link {path.name}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_committed_without_outputs(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"{path.name}: clear the outputs"
    assert nb.metadata["kernelspec"]["name"] == "python3"


def _outputs(nb, kinds=("display_data", "execute_result")) -> list:
    return [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type in kinds]


@pytest.mark.timeout(900)
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_and_shows_figures(path, tmp_path, monkeypatch):
    # the kernel imports this checkout's cnnlens, on at most two threads, with no GPU
    src = str(ROOT / "src")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([src, os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    monkeypatch.delenv("MPLBACKEND", raising=False)  # a kernel's own inline backend, as in Jupyter (CI exports Agg)
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=CELL_TIMEOUT, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()                               # raises CellExecutionError on the first failing cell
    errors = _outputs(nb, ("error",))
    assert not errors
    images = [o for o in _outputs(nb) if "image/png" in o.get("data", {})]
    assert images, f"{path.name} shows no figure"
    html = [o["data"]["text/html"] for o in _outputs(nb) if "text/html" in o.get("data", {})]
    overlays = sum(h.count('data-cnnlens="overlay') for h in html)
    assert overlays >= 4, f"{path.name}: {overlays} inline explanation maps"
    assert any("<iframe" in h for h in html) or path.name.startswith("02"), "the report is shown inline"
    assert "display_data" in {o.output_type for o in images}  # a figure shown by matplotlib / display()
