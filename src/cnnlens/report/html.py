"""The report page: one HTML file with inline CSS, JavaScript and data (no network, opens from ``file://``)."""
from __future__ import annotations

import datetime as _dt
import html as _html
import json
from importlib import resources
from pathlib import Path
from typing import Any

from ._images import colour_stops, svg_colour_filters

REPORT_NAME = "report.html"


def _asset(name: str) -> str:
    return resources.files(__package__).joinpath("assets", name).read_text(encoding="utf-8")


def _json_for_script(data: Any) -> str:
    """JSON that is safe inside a <script> element (no '</', no U+2028/9 line breaks)."""
    text = json.dumps(data, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return text.replace("</", "<\\/").replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")


def colourbars() -> dict[str, list[str]]:
    """CSS colour stops of both colour maps (the page draws the colour bars from them)."""
    return {"unsigned": colour_stops(False), "signed": colour_stops(True)}


def render_page(data: dict[str, Any], title: str) -> str:
    """The whole page; ``data["kind"]`` ("explanations" or "evaluation") selects the view the script builds."""
    data = dict(data)
    data.setdefault("generated", _dt.datetime.now().strftime("%Y-%m-%d %H:%M"))
    data.setdefault("colourbars", colourbars())
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
        "<link rel=\"icon\" href=\"data:,\">\n"
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; img-src data: 'self'; "
        "style-src 'unsafe-inline'; script-src 'unsafe-inline'\">\n"
        f"<title>{_html.escape(title)}</title>\n<style>\n{_asset('report.css')}\n</style>\n</head>\n"
        f"<body class=\"kind-{_html.escape(data['kind'])}\">\n{svg_colour_filters()}\n"
        "<div id=\"app\"><noscript>This report needs JavaScript.</noscript></div>\n"
        f"<script type=\"application/json\" id=\"report-data\">{_json_for_script(data)}</script>\n"
        f"<script>\n{_asset('report.js')}\n</script>\n</body>\n</html>\n")


def write_page(out: Path, data: dict[str, Any], title: str) -> Path:
    """Write ``report.html`` atomically into ``out``; return its path."""
    from ..viz import write_text_atomic
    return write_text_atomic(Path(out) / REPORT_NAME, render_page(data, title))
