"""Helpers shared by the CLI commands (option parsing, model loading, one-line warnings)."""
from __future__ import annotations

import json
import warnings
from typing import Any

import click

from ..errors import CnnlensError, InputError


def parse_option_values(items: tuple[str, ...]) -> dict[str, Any]:
    """``("k=v", ...)`` → dict, values parsed as JSON when possible (numbers, true/false, null, lists), else strings."""
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise InputError(f"--option expects KEY=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        key = key.strip().replace("-", "_")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def parse_target(value: str | None):
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        return value


def check_device(device: str) -> str:
    """Validate --device; torch is imported only to ask whether CUDA / MPS is there (not for "cpu")."""
    if not (device == "cpu" or device == "mps" or device == "cuda"
            or (device.startswith("cuda:") and device[5:].isdigit())):
        raise InputError(f"--device must be cpu, cuda, cuda:N or mps, got {device!r}")
    if device.startswith("cuda"):
        import torch
        if not torch.cuda.is_available():
            raise InputError(f"--device {device}: CUDA is not available on this machine")
        index = int(device[5:]) if ":" in device else 0
        if index >= torch.cuda.device_count():
            raise InputError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif device == "mps":
        import torch
        if not torch.backends.mps.is_available():
            raise InputError("--device mps: MPS is not available on this machine")
    return device


def method_names_from_sources() -> set[str]:
    """The method names registered by ``cnnlens/methods/*.py`` (``@register("name", ...)``), read from the sources
    without importing them (no torch)."""
    import ast
    from pathlib import Path
    names: set[str] = set()
    for path in (Path(__file__).resolve().parents[1] / "methods").glob("*.py"):
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (OSError, SyntaxError, ValueError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", None)) == "register" \
                    and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
                names.add(node.args[0].value)
    return names


def check_method_names(methods) -> None:
    """Unknown method names → one-line MethodError before torch is loaded (the registry re-checks later)."""
    from ..errors import MethodError, suggest
    known = method_names_from_sources()
    for name in methods:
        if known and name not in known:
            raise MethodError(f"unknown method {name!r}.{suggest(name, known)} Available: {', '.join(sorted(known))}")


def metric_names_from_sources() -> set[str]:
    """The metric names registered anywhere in the package (a ``MetricSpec`` call with the name first), read from the sources with a
    regular expression (no torch, a few ms)."""
    import re
    from pathlib import Path
    pattern = re.compile(r"""MetricSpec\(\s*["']([\w-]+)["']""")
    names: set[str] = set()
    for path in Path(__file__).resolve().parents[1].rglob("*.py"):
        try:
            names.update(pattern.findall(path.read_text(encoding="utf-8")))
        except (OSError, UnicodeDecodeError):
            continue
    return names


def check_metric_names(metrics: str) -> None:
    """Unknown --metrics names → one-line InputError before torch is loaded (the runner re-checks later)."""
    from ..errors import suggest
    wanted = [m.strip() for m in metrics.split(",") if m.strip()]
    if metrics.strip() == "all":
        return
    known = metric_names_from_sources()
    for name in wanted:
        if known and name not in known:
            hint = suggest(name.lower().replace("_", "-"), known)
            raise InputError(f"unknown metric {name!r}.{hint} Available: {', '.join(sorted(known))}")


WEIGHTS_HELP = ("Weights: a state-dict file (weights_only=True), an http(s) URL (cached; #sha256=HEX checks it), a "
                "torchvision weights name (IMAGENET1K_V1) or 'random' (sanity checks). Default: the model's "
                "pretrained weights (downloaded once, then cached).")


def check_model_name(name: str, weights: str | None = None) -> None:
    """A --model name that no loader can accept, or a --weights path that names no file → one-line error before
    torch is loaded; names torchvision or timm might know are left to the zoo."""
    from ..errors import ModelError
    from ..models.names import certainly_unknown_model
    from ..models.weights_spec import check_weights
    message = certainly_unknown_model(name)
    if message is not None:
        raise ModelError(message)
    check_weights(weights)


def read_images(sources) -> list:
    """Decode every image argument (path or sample name) to a uint8 RGB array before torch is loaded: a missing,
    corrupt, truncated or oversized file (decompression bomb) stops the command with one line, nothing written."""
    from ..image_files import check_image_source, load_rgb
    for src in sources:                            # every path first: a missing file costs no decoding
        check_image_source(src)
    arrays = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")            # PIL's DecompressionBombWarning: refused with an error below
        for src in sources:
            arrays.append(load_rgb(src))
    return arrays


def load_model_quietly(name: str, weights: str | None, device: str, defer: bool = False, progress: bool = True):
    """Load a model (a download shows its progress bar on stderr); its warnings (e.g. random init) become one line
    each on stderr.

    defer=True: return (model, print_warnings) so a command prints them only once its work has succeeded (an error
    then stays a single line)."""
    from ..models.zoo import load_model
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = load_model(name, weights=weights, device=device, progress=progress)
    messages = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]

    def print_warnings() -> None:
        for msg in messages:
            click.echo(f"cnnlens: warning: {msg}", err=True)
    if defer:
        return model, print_warnings
    print_warnings()
    return model


def progress(iterable, total: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm
    return tqdm(iterable, total=total, desc=desc, disable=not enabled, unit="img", leave=False)


__all__ = ["CnnlensError", "WEIGHTS_HELP", "check_device", "check_method_names", "check_metric_names",
           "check_model_name", "load_model_quietly", "parse_option_values", "parse_target", "progress", "read_images"]
