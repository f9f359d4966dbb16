"""Helpers shared by the CLI commands (option parsing, model loading, one-line warnings)."""
from __future__ import annotations

import warnings
from typing import Any

import click

from ..errors import CnnlensError, InputError


def parse_value(text: str) -> Any:
    """The one value parser of every ``--option``: ``true``/``false`` (any case) → bool, ``none``/``null`` → None,
    integers, floats (``1e-3``, ``inf``), lists (``[1, 2]`` or ``1,2``; items parsed the same way), ``'quoted'`` →
    the string inside, anything else → the string itself."""
    import ast
    s = text.strip()
    low = s.lower()
    if low in ("true", "yes", "on"):
        return True
    if low in ("false", "no", "off"):
        return False
    if low in ("none", "null"):
        return None
    for kind in (int, float):
        try:
            return kind(s)
        except ValueError:
            pass
    if s[:1] in "[(" and s[-1:] in "])":
        inner = s[1:-1].strip()
        return [parse_value(v) for v in _split_top(inner)] if inner else []
    if len(s) >= 2 and s[0] == s[-1] and s[0] in "'\"":
        try:
            return ast.literal_eval(s)
        except (ValueError, SyntaxError):
            return s[1:-1]
    if "," in s:
        return [parse_value(v) for v in _split_top(s)]
    return s


def _split_top(s: str) -> list[str]:
    """Split on commas outside brackets and quotes."""
    parts, depth, quote, cur = [], 0, "", []
    for ch in s:
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "[(":
            depth += 1
        elif ch in "])":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
            continue
        cur.append(ch)
    parts.append("".join(cur))
    return [p for p in (q.strip() for q in parts) if p]


def parse_options(items: tuple[str, ...] | list[str]) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """``--option`` values of every command: ``KEY=VALUE`` (every listed method that has KEY) and
    ``METHOD:KEY=VALUE`` (that method only) → (shared options, {method: options}). Keys: dashes = underscores;
    values: :func:`parse_value`. ``METHOD`` may be ``NAME@COMPOSITE`` (that entry only)."""
    shared: dict[str, Any] = {}
    per: dict[str, dict[str, Any]] = {}
    for item in items:
        head, sep, value = item.partition("=")
        method, colon, key = head.rpartition(":")
        key = key.strip().replace("-", "_")
        if not sep or not key or (colon and not method.strip()):
            raise InputError(f"--option expects KEY=VALUE or METHOD:KEY=VALUE, got {item!r}")
        target = per.setdefault(method.strip(), {}) if colon else shared
        target[key] = parse_value(value)
    return shared, per


def parse_option_values(items: tuple[str, ...]) -> dict[str, Any]:
    """``("k=v", ...)`` → dict (no ``METHOD:`` prefixes), values parsed by :func:`parse_value`."""
    shared, per = parse_options(items)
    if per:
        raise InputError(f"--option {next(iter(per))}:...: give the option without a method here")
    return shared


def split_list(values) -> list[str]:
    """Repeated and comma-separated values alike (``--layer a --layer b`` = ``--layer a,b``), blanks dropped."""
    if values is None:
        return []
    if isinstance(values, str):
        values = [values]
    return [v.strip() for value in values for v in str(value).split(",") if v.strip()]


def checked_methods(methods, flag: str) -> list[str]:
    """The --method(s) values (repeated or comma-separated), de-duplicated in order and checked by name before torch
    is loaded; an empty list is an error naming ``flag``."""
    names = list(dict.fromkeys(split_list(methods)))
    if not names:
        raise InputError(f"{flag} is empty")
    check_method_names(names)
    return names


def base_name(entry: str) -> str:
    """``"lrp@epsilon-plus"`` → ``"lrp"``."""
    return entry.partition("@")[0].strip()


def method_options(entries: list[str], shared: dict[str, Any], per: dict[str, dict[str, Any]],
                   composite: str | None = None) -> dict[str, dict[str, Any]]:
    """Options of each method entry (``NAME`` or ``NAME@COMPOSITE``): the shared ``KEY=VALUE`` options the method
    has, then ``NAME:KEY=VALUE``, then ``NAME@COMPOSITE:KEY=VALUE``; ``--composite`` for every entry that takes one
    and names none (``NAME@COMPOSITE`` has ``composite=COMPOSITE``). A shared key no listed method has, or a
    ``METHOD:`` that is not listed, is an error (imports the method registry, so torch)."""
    from ..errors import MethodError
    from ..methods import get_method
    shared = dict(shared)
    if composite is not None:
        shared["composite"] = composite
    listed = set(entries) | {base_name(e) for e in entries}
    for m in per:
        if m not in listed:
            raise MethodError(f"--option {m}:...: {m!r} is not among the listed methods ({', '.join(entries)})")
    specs = {e: get_method(e) for e in entries}          # NAME@COMPOSITE: NAME must take a composite
    for key in shared:
        if not any(key in spec.option_names() for spec in specs.values()):
            what = "--composite" if key == "composite" and composite is not None else f"--option {key!r}"
            raise MethodError(f"{what}: none of the listed methods ({', '.join(entries)}) has that option")
    out = {}
    for e, spec in specs.items():
        opts = {k: v for k, v in shared.items() if k in spec.option_names()}
        if "@" in e:                          # NAME@COMPOSITE: its own composite (recorded with its options)
            opts["composite"] = e.partition("@")[2].strip()
        opts.update(per.get(base_name(e), {}))
        if e != base_name(e):
            opts.update(per.get(e, {}))
        spec.check_options(opts)
        out[e] = opts
    return out


def methods_option(default: str | None, help_text: str):
    """``--method`` / ``--methods`` (the same option): repeated or comma-separated method names, ``NAME@COMPOSITE``
    for an LRP-based method with a composite."""
    return click.option("--method", "--methods", "methods", multiple=True,
                        default=(default,) if default is not None else (), show_default=default is not None,
                        metavar="NAME[,NAME...]", help=help_text)


def layers_option(help_text: str, default: str | None = None):
    """``--layer`` / ``--layers`` (the same option): repeated or comma-separated module names, 'blocks', 'stages'."""
    return click.option("--layer", "--layers", "layers", multiple=True,
                        default=(default,) if default is not None else (), show_default=default is not None,
                        metavar="LAYER[,LAYER...]", help=help_text)


def composite_option():
    return click.option("--composite", default=None, help="LRP composite for every LRP-based method that names "
                        "none (NAME@COMPOSITE picks one per method; `cnnlens methods` lists them).")


def option_option():
    return click.option("--option", "options", multiple=True, metavar="[METHOD:]KEY=VALUE",
                        help="Method option (repeatable): KEY=VALUE for every listed method that has KEY, "
                             "METHOD:KEY=VALUE for one; values: true/false, none, numbers, lists (1,2), strings.")


def layer_argument(layers: list[str]):
    """The ``layer=`` argument of ``cnnlens.explain`` for a --layer list: None, one name/keyword, or a list."""
    if not layers:
        return None
    return layers[0] if len(layers) == 1 else list(layers)


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
    """Unknown method names (``NAME@COMPOSITE``: NAME) → one-line MethodError before torch is loaded (the registry
    re-checks later)."""
    from ..errors import MethodError, suggest
    known = method_names_from_sources()
    for name in map(base_name, methods):
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


def check_metric_names(metrics: str | None) -> None:
    """Unknown --metrics names → one-line InputError before torch is loaded (the runner re-checks later); None: the
    command's default metrics."""
    from ..errors import suggest
    if metrics is None:
        return
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


__all__ = ["CnnlensError", "WEIGHTS_HELP", "base_name", "check_device", "check_method_names", "check_metric_names",
           "check_model_name", "checked_methods", "layer_argument", "layers_option", "load_model_quietly", "method_options",
           "methods_option", "option_option", "composite_option", "parse_option_values", "parse_options",
           "parse_target", "parse_value", "progress", "read_images", "split_list"]
