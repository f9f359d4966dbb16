"""The package layout is the architecture (issue 21, item 12): the import graph between cnnlens's top-level packages
and modules has no cycle, the input side (``cnnlens.data``: pictures, datasets, class maps) imports nothing downstream
of it, and nothing imports the CLI. Imports inside functions count too: a lazy import is still a dependency."""
from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PKG = SRC / "cnnlens"

#: What the input side may use: the error types, the torch-free image reader, model state helpers and the model zoo
#: (ImageNet class names, synthetic models).
DATA_MAY_IMPORT = {"errors", "image_files", "_state", "_logits", "models"}   # _logits: a model output → logits (model side)


def _node(module: str) -> str | None:
    """``cnnlens.x.y`` → ``x`` (a top-level package or module of cnnlens); None for ``cnnlens`` itself."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "cnnlens" else None


def _imports(path: Path) -> set[str]:
    """The cnnlens modules ``path`` imports (absolute and relative, at any depth of the file)."""
    rel = path.relative_to(SRC).with_suffix("")
    module = ".".join(rel.parts)
    package = module[: -len(".__init__")] if module.endswith(".__init__") else module.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
                found.update([target] if node.module else [f"{target}.{a.name}" for a in node.names])
            elif node.module:
                found.add(node.module)
    return {m for m in found if m == "cnnlens" or m.startswith("cnnlens.")}


def package_graph() -> dict[str, set[str]]:
    """Top-level node → the top-level nodes it imports (the ``cnnlens/__init__.py`` facade and ``__main__`` left
    out: they re-export and start the CLI)."""
    graph: dict[str, set[str]] = {}
    for path in sorted(PKG.rglob("*.py")):
        src = _node(".".join(path.relative_to(SRC).with_suffix("").parts))
        if src in (None, "__init__", "__main__"):
            continue
        deps = graph.setdefault(src, set())
        for m in _imports(path):
            dst = _node(m)
            if dst is not None and dst != src:
                deps.add(dst)
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a path [a, b, ..., a], or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for m in sorted(graph.get(n, ())):
            if state.get(m) == 1:
                return stack[stack.index(m):] + [m]
            if m not in state:
                found = visit(m)
                if found:
                    return found
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(graph):
        if n not in state:
            found = visit(n)
            if found:
                return found
    return None


def test_the_checker_finds_cycles_and_relative_imports(tmp_path):
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    # the loop this test was written for: data/boxes.py → evaluation/datasets/voc.py, lazily, two levels up
    assert {"evaluation", "data"} <= set(package_graph())
    f = PKG / "data" / "layouts" / "base.py"
    assert "cnnlens.data.sample" in _imports(f) and "cnnlens.errors" in _imports(f)


def test_no_import_cycle_between_cnnlens_packages():
    cycle = _cycle(package_graph())
    assert cycle is None, "import cycle: " + " → ".join(cycle)


def test_the_input_side_imports_nothing_downstream():
    graph = package_graph()
    assert graph["data"] <= DATA_MAY_IMPORT, sorted(graph["data"] - DATA_MAY_IMPORT)
    assert "data" in graph["evaluation"]                       # the evaluation reads its datasets from cnnlens.data
    assert not (PKG / "evaluation" / "datasets").exists()      # one home for datasets


def test_nothing_imports_the_cli():
    users = sorted(n for n, deps in package_graph().items() if "cli" in deps and n != "cli")
    assert users == []
