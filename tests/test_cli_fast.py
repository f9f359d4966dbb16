"""The command line answers --help and argument errors without importing torch (issue 14, item 4); the package import
is lazy (PEP 562) but every public name still works."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

SRC = str(Path(__file__).resolve().parents[1] / "src")
CLI = "import sys; from cnnlens.cli import main; sys.argv[0] = 'cnnlens'; main()"
NO_TORCH = ("import atexit, sys; atexit.register(lambda: sys.modules.get('torch') is None or "
            "(sys.stderr.write('TORCH WAS IMPORTED\\n'), sys.stderr.flush(), __import__('os')._exit(99)))")


def _eval(*extra: str, model="efficientnet_lite0", data=".", metrics="average-drop") -> list[str]:
    """The issue's command (``cnnlens evaluate ... --target predicted --metrics average-drop``) with changes."""
    return ["evaluate", "--model", model, "--data", data, "--target", "predicted", "--metrics", metrics, "--out", "o",
            *extra]


def _run(code: str, *args: str, cwd: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=60, env=env,
                          cwd=cwd)


def _cli_without_torch(*args: str, cwd: str | None = None) -> subprocess.CompletedProcess:
    """Run the CLI in a fresh interpreter; exit code 99 if torch got imported (checked at exit)."""
    return _run(f"{NO_TORCH}; {CLI}", *args, cwd=cwd)


def test_import_cnnlens_and_cli_without_torch():
    r = _run("import sys, cnnlens, cnnlens.cli; assert 'torch' not in sys.modules, 'torch imported'; "
             "print(cnnlens.__version__)")
    assert r.returncode == 0, r.stderr


def test_lazy_public_names_still_work():
    r = _run("import cnnlens, torch; from cnnlens import explain, load_image, METHODS, Explanation; "
             "assert callable(cnnlens.explain) and 'grad-cam' in cnnlens.METHODS; "
             "assert cnnlens.lrp.lrp_attribute and cnnlens.metrics.auc; "
             "assert set(cnnlens.__all__) <= set(dir(cnnlens)); "
             "[getattr(cnnlens, n) for n in cnnlens.__all__]; "
             "import pytest\n"
             "try:\n    cnnlens.no_such_name\nexcept AttributeError:\n    pass\nelse:\n    raise SystemExit(3)")
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("args", [["--help"], ["explain", "--help"], ["sweep", "--help"], ["demo", "--help"],
                                  ["layers", "--help"], ["evaluate", "--help"], ["sanity", "--help"],
                                  ["report", "--help"]])
def test_help_without_torch(args):
    r = _cli_without_torch(*args)
    assert r.returncode == 0, r.stderr
    assert "Usage: cnnlens" in r.stdout


def test_every_command_loads_on_demand():
    """Each command's own help works through the on-demand import (whatever its module imports at the top)."""
    from cnnlens.cli import _scan_commands
    for name in sorted(_scan_commands()[0]):
        r = _run(CLI, name, "--help")
        assert r.returncode == 0 and f"Usage: cnnlens {name}" in r.stdout, (name, r.stderr)


def test_top_level_help_lists_every_command_module():
    """Commands are found from the sources of the command modules (a new module is picked up automatically)."""
    r = _cli_without_torch("--help")
    commands = r.stdout.split("Commands:")[1]
    names = {line.split()[0] for line in commands.strip().splitlines() if line.strip()}
    assert {"explain", "layers", "methods", "sweep", "demo", "evaluate"} <= names
    cli_dir = Path(SRC) / "cnnlens" / "cli"
    from cnnlens.cli import _scan_commands
    where, _, opaque = _scan_commands()
    modules = {p.stem for p in cli_dir.glob("*.py") if not p.stem.startswith("_")}
    assert modules == set(where.values()) | set(opaque)


def test_metric_names_from_sources_match_the_registry():
    import cnnlens.evaluation  # noqa: F401  (every module that may register a metric)
    from cnnlens.cli._common import metric_names_from_sources
    from cnnlens.metrics import METRICS
    assert metric_names_from_sources() == set(METRICS)


def test_model_names_are_rejected_early_only_when_certainly_unknown():
    """The torch-free name list is the zoo's, and a name torchvision or timm may know is left to the zoo."""
    import timm
    import torchvision

    from cnnlens.data.synthetic import ARCHS
    from cnnlens.models import names, zoo
    assert zoo.TORCHVISION_MODELS is names.TORCHVISION_MODELS and zoo.BUNDLED_MODELS is names.BUNDLED_MODELS
    assert set(names.SYNTHETIC_ARCHS) == set(ARCHS)
    for name in list(torchvision.models.list_models()) + list(timm.list_models())[::7] + list(names.known_model_names()):
        assert names.certainly_unknown_model(name) is None, name
    for name in ("efficientnet-lite0", "ResNet50", "resnet 50", "synthetic-vg", "vgg16/"):
        assert names.certainly_unknown_model(name), name
    for name in ("timm/resnet18.a1_in1k", "hf-hub:timm/resnet18.a1_in1k", "hf-hub:someone/My-Model.v2",
                 "timm/convnext_tiny.fb_in22k_ft_in1k@main"):
        assert names.certainly_unknown_model(name) is None, name
    for name in ("timm/", "hf-hub:", "hf-hub:timm", "timm/ResNet18", "timm/a/b"):
        assert names.certainly_unknown_model(name), name


def test_method_names_from_sources_match_the_registry():
    import cnnlens
    from cnnlens.cli._common import method_names_from_sources
    assert method_names_from_sources() == set(cnnlens.METHODS)


def test_scan_finds_commands_in_a_new_module(tmp_path, monkeypatch):
    """A new command module (as another sub-command would add) is discovered without being imported."""
    import cnnlens.cli as cli
    (tmp_path / "extra.py").write_text(
        "import click\nimport torch\nfrom cnnlens.cli import main\n\n\n"
        "@main.command()\ndef report_cmd():\n    \"\"\"Write a report.\"\"\"\n\n\n"
        "@main.command(name='sanity-check')\ndef sanity():\n    \"\"\"Run checks.\"\"\"\n")
    monkeypatch.setattr(cli, "__path__", [str(tmp_path)])
    where, docs, opaque = cli._scan_commands()
    assert where == {"report": "extra", "sanity-check": "extra"} and docs["report"] == "Write a report."
    assert opaque == []


@pytest.mark.parametrize("args, message", [
    (["explain", "missing.jpg", "--model", "efficientnet_lite0", "--out", "o"], "image file not found: missing.jpg"),
    (["explain", "chelsea", "missing.png", "--model", "efficientnet_lite0", "--out", "o"],
     "image file not found: missing.png"),
    (["explain", "chelsea", "--model", "efficientnet_lite0", "--out", "o", "--device", "gpu"], "--device must be"),
    (["explain", "chelsea", "--model", "efficientnet_lite0", "--out", "o", "--option", "novalue"],
     "--option expects KEY=VALUE"),
    (["explain", ".", "--model", "efficientnet_lite0", "--out", "o"], "is a directory"),
    (["sweep", "missing.jpg", "--model", "efficientnet_lite0", "--out", "o"], "image file not found"),
    (["explain", "chelsea", "--model", "efficientnet_lite0", "--method", "grad-cm", "--out", "o"],
     "unknown method 'grad-cm'. Did you mean"),
    (["sweep", "chelsea", "--model", "efficientnet_lite0", "--methods", "grad-cam,nope", "--out", "o"],
     "unknown method 'nope'"),
    (["explain", "--model", "efficientnet_lite0", "--out", "o"], "Missing argument"),
    # evaluate: every check that needs no model (the example command, with one thing wrong each time)
    (_eval(data="no_such_folder"), "--data must be 'synthetic', 'collage' or an existing"),
    (_eval("--format", "jpg"), "--format must be one of folder, imagefolder"),
    (_eval("--class-map", "voc-imagnet"), "unknown class map 'voc-imagnet'"),
    (_eval("--workers", "-1"), "--workers must be 0 or more"),
    (_eval("--workers", "two"), "'two' is not a valid integer"),
    (_eval("--n-images", "0"), "--n-images must be at least 1"),
    (_eval("--label-file", "labels.txt"), "label file not found: labels.txt"),
    (_eval("--methods", "grad-cm"), "unknown method 'grad-cm'. Did you mean"),
    (_eval(metrics="average_drop"), "unknown metric 'average_drop'. Did you mean: 'average-drop'"),
    (_eval(model="efficientnet-lite0"), "unknown model 'efficientnet-lite0'. Did you mean: "
     "'efficientnet_lite0'"),
    (["evaluate", "--model", "synthetic-vg", "--data", "synthetic", "--out", "o"], "unknown synthetic model"),
    (_eval(model="ResNet50"), "unknown model 'ResNet50'"),
    (_eval("--option", "grad-cam"), "--option expects KEY=VALUE or METHOD:KEY=VALUE, got 'grad-cam'"),
    # sanity
    (["sanity", "missing.jpg", "--model", "efficientnet_lite0", "--out", "o"], "image file not found: missing.jpg"),
    (["sanity", "chelsea", "--model", "efficientnet-lite0", "--out", "o"], "unknown model 'efficientnet-lite0'"),
    (["explain", "chelsea", "--model", "efficientnet-lite0", "--out", "o"], "unknown model 'efficientnet-lite0'"),
    (["sweep", "chelsea", "--model", "ResNet50", "--out", "o"], "unknown model 'ResNet50'"),
    (["layers", "--model", "efficientnet-lite0"], "unknown model 'efficientnet-lite0'"),
    (["sanity", "chelsea", "--model", "efficientnet_lite0", "--methods", "grad-cam,lrpp@epsilon", "--out", "o"],
     "unknown method 'lrpp'"),
    # --weights: a path that names no file, a bad URL fragment; fetch-weights' names (issue 19)
    (["explain", "chelsea", "--model", "resnet50", "--weights", "r50.pth", "--out", "o"],
     "weights file not found: r50.pth"),
    (_eval("--weights", "missing/w.pth"), "weights file not found: missing/w.pth"),
    (["sanity", "chelsea", "--model", "resnet18", "--weights", "w.pth", "--out", "o"], "weights file not found"),
    (["layers", "--model", "resnet18", "--weights", "https://example.org/w.pth#md5=1"], "#sha256=HEX"),
    (["fetch-weights", "resnet50", "timm/ResNet"], "unknown model 'timm/ResNet'"),
    (["fetch-weights", "synthetic-vgg"], "nothing to fetch"),
])
def test_argument_errors_before_torch(tmp_path, args, message):
    r = _cli_without_torch(*args, cwd=str(tmp_path))
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert message in r.stderr
    assert "Traceback" not in r.stderr
    assert list(tmp_path.iterdir()) == []                       # nothing written


@pytest.mark.slow
def test_missing_file_answers_fast_relative_to_torch():
    """The issue's figure: an error about a missing file in ≤ 0.3× the time of ``import torch, timm`` (same run;
    benchmarks/bench_cli.py prints the full table)."""
    import time
    t0 = time.perf_counter()
    r = _run("import torch, timm")
    t_torch = time.perf_counter() - t0
    assert r.returncode == 0
    best = float("inf")
    for _ in range(2):
        t0 = time.perf_counter()
        r = _cli_without_torch("explain", "missing.jpg", "--model", "efficientnet_lite0", "--out", "o")
        best = min(best, time.perf_counter() - t0)
        assert r.returncode == 2
    assert best <= 0.3 * t_torch, (best, t_torch)


# ---------------------------------------------------------------- one option syntax, one set of flags (issue 21, 10)
@pytest.mark.parametrize("text, value", [
    ("false", False), ("False", False), ("TRUE", True), ("none", None), ("None", None), ("null", None),
    ("3", 3), ("-2", -2), ("0.5", 0.5), ("1e-3", 1e-3), ("[1, 2]", [1, 2]), ("1,2.5", [1, 2.5]),
    ("(0.1, 0.2)", [0.1, 0.2]), ("[]", []), ("epsilon-plus", "epsilon-plus"), ("'3'", "3"), ("[a, true]", ["a", True]),
])
def test_one_value_parser(text, value):
    from cnnlens.cli._common import parse_value
    got = parse_value(text)
    assert got == value and type(got) is type(value)


def test_option_syntax_is_shared_and_dashes_are_underscores():
    from cnnlens.cli._common import parse_options
    shared, per = parse_options(("fast-forward=false", "score-cam:batch_size=16", "lrp@epsilon:eps=1e-6",
                                 "rise:n-masks=400"))
    assert shared == {"fast_forward": False}
    assert per == {"score-cam": {"batch_size": 16}, "lrp@epsilon": {"eps": 1e-6}, "rise": {"n_masks": 400}}


def test_method_options_resolve_shared_per_method_and_composite():
    from cnnlens.cli._common import method_options, parse_options
    shared, per = parse_options(("fast_forward=false", "score-cam:batch_size=4", "lrp:low=-0.5"))
    opts = method_options(["score-cam", "grad-cam", "lrp", "lrp@epsilon"], shared, per, composite="epsilon-plus")
    assert opts["score-cam"] == {"fast_forward": False, "batch_size": 4}
    assert opts["grad-cam"] == {}
    assert opts["lrp"] == {"composite": "epsilon-plus", "low": -0.5}
    assert opts["lrp@epsilon"] == {"composite": "epsilon", "low": -0.5}     # NAME@COMPOSITE keeps its own
    from cnnlens.errors import MethodError
    with pytest.raises(MethodError, match="not among the listed methods"):
        method_options(["grad-cam"], {}, {"rise": {"n_masks": 3}})
    with pytest.raises(MethodError, match="none of the listed methods"):
        method_options(["grad-cam"], {"n_masks": 3}, {})


def _params(command: str) -> dict[str, set[str]]:
    import click

    from cnnlens.cli import main
    cmd = main.get_command(click.Context(main), command)
    return {p.name: set(p.opts) for p in cmd.params if isinstance(p, click.Option)}


@pytest.mark.parametrize("command", ["explain", "sweep", "evaluate", "sanity"])
def test_same_flags_for_the_same_things(command):
    """--method/--methods, --layer/--layers (repeatable, comma-separated), --composite and --option everywhere."""
    params = _params(command)
    assert params["methods"] == {"--method", "--methods"}
    assert params["layers"] == {"--layer", "--layers"}
    assert "--composite" in params["composite"] and "--option" in params["options"]
    import click

    from cnnlens.cli import main
    cmd = main.get_command(click.Context(main), command)
    by_name = {p.name: p for p in cmd.params}
    assert by_name["methods"].multiple and by_name["layers"].multiple and by_name["options"].multiple


def test_evaluate_option_values_reach_the_method_parsed(monkeypatch, tmp_path):
    """The issue's case: ``score-cam:fast_forward=false`` reached Score-CAM as the string 'false' in evaluate only."""
    import cnnlens.evaluation as evaluation
    from click.testing import CliRunner

    from cnnlens.cli import main
    seen = {}

    class Stop(Exception):
        pass

    def fake_evaluate(model, dataset, methods, metrics, **kw):
        seen.update(methods=methods, options=kw["method_options"], layers=kw["layers"])
        raise Stop

    monkeypatch.setattr(evaluation, "evaluate", fake_evaluate)
    monkeypatch.setattr(evaluation, "open_model", lambda *a, **k: (None, "synthetic-resnet"))
    monkeypatch.setattr(evaluation, "open_dataset", lambda *a, **k: None)
    r = CliRunner().invoke(main, ["evaluate", "--model", "synthetic-resnet", "--data", "synthetic", "--method",
                                  "score-cam", "--methods", "grad-cam,lrp@epsilon", "--layer", "layer2", "--layers",
                                  "layer3", "--option", "score-cam:fast_forward=false", "--option", "low=-1e-3",
                                  "--metrics", "average-drop", "--out", str(tmp_path / "o")])
    assert isinstance(r.exception, Stop), r.output
    assert seen["methods"] == "score-cam,grad-cam,lrp@epsilon" and seen["layers"] == "layer2,layer3"
    assert seen["options"]["score-cam"] == {"fast_forward": False}
    assert seen["options"]["lrp@epsilon"] == {"composite": "epsilon", "low": -1e-3} and seen["options"]["grad-cam"] == {}


@pytest.mark.parametrize("args, message", [
    (["sweep", "chelsea", "--model", "efficientnet_lite0", "--option", "novalue", "--out", "o"],
     "--option expects KEY=VALUE"),
    (["sanity", "chelsea", "--model", "efficientnet_lite0", "--option", ":k=1", "--out", "o"],
     "--option expects KEY=VALUE"),
    (["sanity", "chelsea", "--model", "efficientnet_lite0", "--layer", "a", "--layer", "b", "--out", "o"],
     "sanity compares one layer per method"),
    (["explain", "chelsea", "--model", "efficientnet_lite0", "--methods", "grad-cam,grad-cm", "--out", "o"],
     "unknown method 'grad-cm'"),
    (["sweep", "chelsea", "--model", "efficientnet_lite0", "--method", "lrpp@epsilon", "--out", "o"],
     "unknown method 'lrpp'"),
])
def test_shared_option_errors_before_torch(tmp_path, args, message):
    r = _cli_without_torch(*args, cwd=str(tmp_path))
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert message in r.stderr and "Traceback" not in r.stderr
    assert list(tmp_path.iterdir()) == []
