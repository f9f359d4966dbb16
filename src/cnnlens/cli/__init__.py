"""The ``cnnlens`` command line. Each sub-command lives in its own module of this package and adds itself to ``main``.

Errors: a ``CnnlensError`` (or a bad option) prints one line on stderr and exits with code 2, never a traceback.

Start-up is cheap: the command modules are found by reading their source (``@main.command(...)`` decorators), and a
module is imported only when its command runs or shows its own help; ``cnnlens --help`` takes the one-line summaries
from the docstrings. Commands import torch inside their functions, after checking their arguments, so a typo or a
missing file is reported without loading torch.
"""
from __future__ import annotations

import ast
import importlib
import pkgutil
import sys
from pathlib import Path

import click

from ..errors import CnnlensError


def _decorator_command(dec: ast.expr, func: ast.FunctionDef) -> str | None:
    """The command name of ``@main.command(...)`` / ``@main.group(...)`` on ``func`` (click's own naming rule for an
    unnamed command), or None for another decorator."""
    call = dec if isinstance(dec, ast.Call) else None
    target = call.func if call else dec
    if not (isinstance(target, ast.Attribute) and target.attr in ("command", "group")
            and isinstance(target.value, ast.Name) and target.value.id == "main"):
        return None
    if call is not None:
        if call.args and isinstance(call.args[0], ast.Constant) and isinstance(call.args[0].value, str):
            return call.args[0].value
        for kw in call.keywords:
            if kw.arg == "name" and isinstance(kw.value, ast.Constant) and isinstance(kw.value.value, str):
                return kw.value.value
    name = func.name.lower().replace("_", "-")
    for suffix in ("-command", "-cmd", "-group", "-grp"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    return name


def _scan_commands() -> tuple[dict[str, str], dict[str, str], list[str]]:
    """(command → module, command → docstring, modules whose commands could not be read from the source)."""
    where, docs, opaque = {}, {}, []
    for info in pkgutil.iter_modules(__path__):
        if info.name.startswith("_"):
            continue
        path = Path(__path__[0]) / f"{info.name}.py"
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (OSError, SyntaxError, ValueError):
            opaque.append(info.name)
            continue
        found = False
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for dec in node.decorator_list:
                    name = _decorator_command(dec, node)
                    if name is not None:
                        where[name] = info.name
                        docs[name] = ast.get_docstring(node) or ""
                        found = True
        if not found:
            opaque.append(info.name)       # e.g. main.add_command(...): import it to find out
    return where, docs, opaque


class _Group(click.Group):
    """Loads command modules on demand (see the module docstring) and turns cnnlens errors into one line."""

    _scanned: tuple[dict[str, str], dict[str, str], list[str]] | None = None

    def _scan(self) -> tuple[dict[str, str], dict[str, str]]:
        if self._scanned is None:
            where, docs, opaque = _scan_commands()
            type(self)._scanned = (where, docs, opaque)
            for module in opaque:
                _import_command_module(module)
        return self._scanned[0], self._scanned[1]

    def list_commands(self, ctx):
        where, _ = self._scan()
        return sorted(set(where) | set(self.commands))

    def get_command(self, ctx, cmd_name):
        if cmd_name not in self.commands:
            where, _ = self._scan()
            if cmd_name in where:
                _import_command_module(where[cmd_name])
        return self.commands.get(cmd_name)

    def format_commands(self, ctx, formatter):
        """The command list of ``cnnlens --help`` from the scanned docstrings (no command module imported)."""
        where, docs = self._scan()
        rows = []
        limit = formatter.width - 6 - max((len(n) for n in self.list_commands(ctx)), default=0)
        for name in self.list_commands(ctx):
            cmd = self.commands.get(name)
            if cmd is not None:
                if cmd.hidden:
                    continue
                rows.append((name, cmd.get_short_help_str(limit)))
            else:
                rows.append((name, click.utils.make_default_short_help(docs.get(name, ""), limit)))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except CnnlensError as exc:
            click.echo(f"cnnlens: error: {exc}", err=True)
            sys.exit(2)
        except (FileNotFoundError, PermissionError, IsADirectoryError) as exc:
            click.echo(f"cnnlens: error: {exc}", err=True)
            sys.exit(2)


def _import_command_module(name: str) -> None:
    importlib.import_module(f"{__name__}.{name}")


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="cnnlens")
def main() -> None:
    """Explain the decisions of convolutional neural networks.

    \b
    Examples:
      cnnlens demo --out demo/
      cnnlens explain photo.jpg --model resnet50 --weights r50.pth --method grad-cam --out out/
      cnnlens layers --model vgg16
      cnnlens methods
    """
