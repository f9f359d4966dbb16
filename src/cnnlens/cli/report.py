"""``cnnlens report``: (re)build the HTML report of a results folder."""
from __future__ import annotations

import click

from . import main


@main.command("report")
@click.argument("folder", type=click.Path(file_okay=False))
def report_cmd(folder):
    """Build FOLDER/report.html from the results in FOLDER (of `cnnlens evaluate`, `explain`, `sweep` or `demo`).

    \b
    The page is one self-contained file (images embedded, no network); open it in a browser.
    Example:
      cnnlens report eval/ && xdg-open eval/report.html
    """
    from ..report import write_report
    path = write_report(folder)
    click.echo(f"wrote {path}")
