"""Every command in README.md and docs/ runs as written (issue 21, item 7): each ``cnnlens`` command of a shell code
block parses against the CLI and passes the checks that need no model (method, metric and model names); the cheap ones
run (``slow``: in a temporary folder, ``evaluate`` on at most 2 images) and must exit 0."""
from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import click
import pytest

ROOT = Path(__file__).resolve().parents[1]
SHELL = ("bash", "sh", "shell", "console", "")


def doc_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def code_blocks(path: Path):
    """(first line number, language, text) of every fenced code block."""
    lines = path.read_text(encoding="utf-8").splitlines()
    inside = None
    for i, line in enumerate(lines, 1):
        if line.lstrip().startswith("```"):
            if inside is None:
                inside = (i, line.strip()[3:].strip(), [])
            else:
                yield inside[0], inside[1], "\n".join(inside[2])
                inside = None
        elif inside is not None:
            inside[2].append(line)


def cnnlens_commands(text: str) -> list[list[str]]:
    """The ``cnnlens ...`` / ``python -m cnnlens ...`` / ``torchrun ... -m cnnlens ...`` commands of a shell block, as
    argument lists after ``cnnlens`` (continuations joined, comments dropped, ``&&`` / ``;`` / ``|`` split)."""
    out = []
    for line in text.replace("\\\n", " ").splitlines():
        words = shlex.split(line, comments=True)
        segment: list[str] = []
        for w in [*words, ";"]:
            if w not in ("&&", ";", "|", "||"):
                segment.append(w)
                continue
            if segment and segment[0] == "cnnlens":
                out.append(segment[1:])
            elif "cnnlens" in segment and segment[max(0, segment.index("cnnlens") - 1)] == "-m":
                out.append(segment[segment.index("cnnlens") + 1:])
            segment = []
    return out


def documented_commands() -> list[tuple[str, int, list[str]]]:
    found = []
    for path in doc_files():
        for line, lang, text in code_blocks(path):
            if lang in SHELL:
                for args in cnnlens_commands(text):
                    found.append((f"{path.relative_to(ROOT)}:{line}", len(found), args))
    return found


COMMANDS = documented_commands()


def _id(case) -> str:
    where, _, args = case
    return f"{where}:{' '.join(args[:1])}"


def test_the_docs_have_commands():
    assert len(COMMANDS) >= 15
    assert {a[0] for _, _, a in COMMANDS} >= {"explain", "sweep", "evaluate", "sanity", "report", "layers"}


def parse(args: list[str]) -> tuple[str, dict]:
    """Parse ``cnnlens ARGS`` with click (types, choices, required options; nothing runs) → (command, parameters)."""
    from cnnlens.cli import main
    if not args or args[0].startswith("-"):
        with main.make_context("cnnlens", list(args)):
            return "", {}
    cmd = main.get_command(click.Context(main), args[0])
    assert cmd is not None, f"no command {args[0]!r}"
    with cmd.make_context(args[0], list(args[1:])) as ctx:
        return args[0], dict(ctx.params)


def check_names(command: str, params: dict) -> None:
    """The checks every command makes before loading torch: model, method and metric names."""
    from cnnlens.cli._common import check_metric_names, check_method_names, check_model_name, split_list
    if params.get("model_name"):
        check_model_name(params["model_name"])
    methods = split_list(params.get("methods"))
    if methods and methods != ["all"]:
        check_method_names(methods)
    if command == "evaluate":
        check_metric_names(params["metrics"])


@pytest.mark.parametrize("case", COMMANDS, ids=_id)
def test_documented_command_parses(case):
    where, _, args = case
    try:
        command, params = parse(args)
        check_names(command, params)
    except (click.ClickException, Exception) as exc:          # noqa: BLE001 - the message says where
        message = exc.format_message() if isinstance(exc, click.ClickException) else str(exc)
        pytest.fail(f"{where}: `cnnlens {' '.join(args)}` fails: {message}")


def test_a_wrong_documented_command_is_caught():
    """The checker itself: the README's old evaluate example (issue 21, item 7) and a bad flag fail it."""
    from cnnlens.errors import CnnlensError
    old = ["evaluate", "--model", "synthetic-resnet", "--data", "synthetic", "--methods", "grad-cam", "--metrics",
           "average_drop_rcam,average_increase_rcam", "--layer", "layer2", "--out", "eval/"]
    with pytest.raises(CnnlensError, match="unknown metric 'average_drop_rcam'"):
        check_names(*parse(old))
    with pytest.raises(click.UsageError):
        parse(["explain", "chelsea", "--model", "efficientnet_lite0", "--out", "o", "--no-such-flag"])
    with pytest.raises(click.UsageError):
        parse(["sweep", "chelsea", "--out", "o"])                # --model missing


# ------------------------------------------------------------------------------------------------ running them
SAMPLES = {"chelsea", "coffee", "astronaut", "rocket", "camera", "motorcycle_left"}
CHEAP_MODELS = {"efficientnet_lite0", "synthetic-resnet", "synthetic-vgg", "vgg16"}
COSTLY_METHODS = {"all", "score-cam", "sise", "rise", "sr-map"}


def runnable(args: list[str]) -> tuple[bool, str]:
    """Whether a documented command is cheap enough to run here, and why not."""
    command, params = parse(args)
    if command in ("", "methods"):
        return True, ""
    if command == "demo":
        return False, "the demo explains several photos with every method (tested by test_cli)"
    if params.get("weights") or params.get("random_label_weights"):
        return False, "needs a weights file"
    if params.get("model_name") and params["model_name"] not in CHEAP_MODELS:
        return False, f"model {params['model_name']} (no weights here)"
    if command == "layers":
        return True, ""
    if any(img not in SAMPLES for img in (params.get("images") or ([params["image"]] if "image" in params else []))):
        return False, "needs an image file"
    if command == "evaluate":
        from cnnlens.cli._common import split_list
        if params["data"] != "synthetic":
            return False, f"needs the dataset {params['data']}"
        if params["model_name"] == "efficientnet_lite0" and COSTLY_METHODS & set(split_list(params["methods"])):
            return False, "perturbation methods on 224² photos"
    if command == "report":
        return True, ""
    return True, ""


def _cheap(args: list[str]) -> list[str]:
    """``evaluate`` on at most 2 images (the only change made to a documented command)."""
    if args[0] != "evaluate":
        return args
    args = list(args)
    if "--n-images" in args:
        i = args.index("--n-images")
        args[i + 1] = str(min(2, int(args[i + 1])))
    else:
        args += ["--n-images", "2"]
    return args + ["--quiet"]


BLOCKS: dict[str, list[list[str]]] = {}
for _where, _, _args in COMMANDS:
    BLOCKS.setdefault(_where, []).append(_args)


@pytest.mark.slow
@pytest.mark.parametrize("where", sorted(BLOCKS))
def test_documented_commands_run(where, tmp_path):
    """The commands of one code block, in order, in one temporary folder (``cnnlens report eval/`` reads what the
    block's ``evaluate`` wrote); commands that need files, weights or hours are only parsed (above)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "OMP_NUM_THREADS": "2"}
    ran = 0
    for args in BLOCKS[where]:
        ok, why = runnable(args)
        if not ok:
            continue
        if args[0] == "report" and not (tmp_path / args[1]).exists():
            continue
        r = subprocess.run([sys.executable, "-m", "cnnlens", *_cheap(args)], cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=900)
        assert r.returncode == 0, f"{where}: `cnnlens {' '.join(args)}` exited {r.returncode}:\n{r.stderr[-3000:]}"
        ran += 1
    if not ran:
        pytest.skip("every command of this block needs files, weights or hours (parsed only)")


def test_scripts_named_in_the_docs_exist():
    """``python benchmarks/x.py`` / ``bash benchmarks/x.sh`` / ``tests/...`` paths the docs name are in the tree."""
    import re
    missing = []
    for path in doc_files():
        text = path.read_text(encoding="utf-8")
        for m in re.finditer(r"(?<![\w/.])((?:benchmarks|tests)/[\w./-]+\.(?:py|sh))", text):
            if not (ROOT / m.group(1)).is_file():
                missing.append(f"{path.relative_to(ROOT)}: {m.group(1)}")
    assert not missing, missing
