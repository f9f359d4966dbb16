"""The ``cnnlens`` command line. Each sub-command lives in its own module of this package and adds itself to ``main``.

Errors: a ``CnnlensError`` (or a bad option) prints one line on stderr and exits with code 2, never a traceback.
"""
from __future__ import annotations

import importlib
import pkgutil
import sys

import click

from ..errors import CnnlensError


class _Group(click.Group):
    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except CnnlensError as exc:
            click.echo(f"cnnlens: error: {exc}", err=True)
            sys.exit(2)
        except (FileNotFoundError, PermissionError, IsADirectoryError) as exc:
            click.echo(f"cnnlens: error: {exc}", err=True)
            sys.exit(2)


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


for _info in pkgutil.iter_modules(__path__):
    if not _info.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_info.name}")
