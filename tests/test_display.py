"""Inline display in notebooks: what an Explanation's ``_repr_html_`` / ``_repr_png_`` shows, pixel by pixel, and the
report's ``<iframe srcdoc>``.

The colours are checked against matplotlib's colour maps directly (not the module's lookup table): at known places of
a known map the embedded PNG holds ``(1 − α)·input + α·colour(value)``.
"""
from __future__ import annotations

import base64
import io
import os
import re
from html.parser import HTMLParser

import matplotlib
import numpy as np
import pytest
import torch
from PIL import Image

import cnnlens
from cnnlens.api import Explanation, Explanations
from cnnlens.errors import InputError
from cnnlens.report import ExplanationReport, Report, view

from _browser import find_browser
from _report_fixture import tiny_setup

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


class _Collect(HTMLParser):
    """Every element with its attributes, and the visible text."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, dict]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.elements.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)


def _parse(page: str) -> _Collect:
    p = _Collect()
    p.feed(page)
    p.close()
    return p


def _decode(src: str) -> np.ndarray:
    head, data = src.split(",", 1)
    assert head == "data:image/png;base64"
    with Image.open(io.BytesIO(base64.b64decode(data))) as im:
        assert im.format == "PNG"
        return np.asarray(im.convert("RGB"))


def _colour(name: str, value: float) -> np.ndarray:
    """matplotlib's colour map at the 8-bit level of ``value`` (0–255)."""
    rgba = matplotlib.colormaps[name](np.linspace(0.0, 1.0, 256))[int(round(value * 255))]
    return np.asarray(rgba[:3]) * 255.0


def _quadrant_map(h: int = 40, w: int = 60) -> torch.Tensor:
    """(1,H,W): 0 top-left, 0.25 top-right, 0.75 bottom-left, 1 bottom-right."""
    m = torch.zeros(1, h, w)
    m[:, : h // 2, w // 2:] = 0.25
    m[:, h // 2:, : w // 2] = 0.75
    m[:, h // 2:, w // 2:] = 1.0
    return m


QUADRANTS = {(10, 15): 0.0, (10, 45): 0.25, (30, 15): 0.75, (30, 45): 1.0}   # (row, col) → map value


def _explanation(heatmap, *, signed=False, inputs=None, input_norm=None, logits=None, names=None, target=None,
                 method="grad-cam", layer="layer4"):
    n = heatmap.shape[0]
    t = torch.zeros(n, dtype=torch.long) if target is None else torch.as_tensor(target)
    return Explanation(heatmap=heatmap, raw=heatmap, target=t, method=method, layer=layer, logits=logits,
                       class_names=names, signed=signed, inputs=inputs, input_norm=input_norm)


def _overlays(page: str) -> dict[str, np.ndarray]:
    return {a["data-cnnlens"]: _decode(a["src"]) for t, a in _parse(page).elements
            if t == "img" and a.get("data-cnnlens", "").startswith("overlay")}


def test_html_embeds_the_overlay_in_the_colour_map_over_the_input():
    rgb = torch.zeros(1, 3, 40, 60)
    rgb[:, 0], rgb[:, 1], rgb[:, 2] = 0.2, 0.6, 0.9                       # a known input colour
    x = (rgb - torch.tensor(MEAN)[:, None, None]) / torch.tensor(STD)[:, None, None]
    e = _explanation(_quadrant_map(), inputs=x, input_norm=(MEAN, STD))
    maps = _overlays(e._repr_html_())
    assert list(maps) == ["overlay 0 0"]
    img = maps["overlay 0 0"]
    assert img.shape == (40, 60, 3)                                        # the map's own resolution
    under = np.array([0.2, 0.6, 0.9]) * 255.0
    for (r, c), v in QUADRANTS.items():
        want = 0.5 * under + 0.5 * _colour("jet", v)
        assert np.abs(img[r, c].astype(float) - want).max() <= 1.0, ((r, c), img[r, c], want)
    # the public pixels are the same
    assert np.array_equal(e.overlay(0), img)


def test_signed_maps_use_the_diverging_map_and_no_input_shows_the_map_itself():
    m = _quadrant_map()
    m[:, :20, :30] = 0.5                                                   # zero relevance → white
    e = _explanation(m, signed=True, method="lrp", layer=None)
    page = e._repr_html_()
    img = _overlays(page)["overlay 0 0"]
    for (r, c), v in {**QUADRANTS, (10, 15): 0.5}.items():
        assert np.abs(img[r, c].astype(float) - _colour("seismic", v)).max() <= 1.0
    assert img[10, 15].min() >= 250                                        # white at zero
    assert img[30, 45][0] > 100 and img[30, 45][1] < 20                    # +max: dark red
    text = " ".join(" ".join(_parse(page).text).split())
    assert "signed map" in text and "white = 0" in text and "−max" in text and "+max" in text
    assert "layer input" in text                                           # input-level method


def test_html_labels_method_layer_target_probability_and_convention():
    logits = torch.tensor([[0.0, 2.0, 0.0], [1.0, 0.0, 3.0]])
    e = _explanation(_quadrant_map().repeat(2, 1, 1), logits=logits, names=["cat", "dog & <puppy>", "car"],
                     target=[1, 2], method="relevance-cam", layer="blocks.5")
    page = e._repr_html_()
    text = " ".join(" ".join(_parse(page).text).split())
    assert "relevance-cam" in text and "blocks.5" in text
    p1 = torch.softmax(logits, 1)[0, 1].item()
    p2 = torch.softmax(logits, 1)[1, 2].item()
    assert f"target: dog & <puppy> (p = {p1:.2f})" in text                 # escaped in the HTML, intact as text
    assert f"target: car (p = {p2:.2f})" in text
    assert "<puppy>" not in page and "dog &amp; &lt;puppy&gt;" in page
    assert "unsigned map: min–max to [0, 1]" in text and "2 images" in text
    assert len(_overlays(page)) == 2
    bars = [a for t, a in _parse(page).elements if t == "div" and "data-signed" in a]
    assert [b["data-signed"] for b in bars] == ["0"]
    # the colour bar image runs through the colour map from 0 to 1
    bar = next(_decode(a["src"]) for t, a in _parse(page).elements if t == "img" and "colour bar" in a.get("alt", ""))
    assert np.abs(bar[6, 0].astype(float) - _colour("jet", 0.0)).max() <= 1
    assert np.abs(bar[6, -1].astype(float) - _colour("jet", 1.0)).max() <= 1


def test_several_layers_show_as_a_grid_and_keep_dict_behaviour():
    model, x, display, layers = tiny_setup(n=3, size=32)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    res = cnnlens.explain(model, x, "grad-cam", layer=layers, class_names=list("abcde"))
    assert isinstance(res, Explanations) and isinstance(res, dict) and list(res) == layers
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    page = res._repr_html_()
    parsed = _parse(page)
    maps = _overlays(page)
    assert sorted(maps) == sorted(f"overlay {i} {j}" for i in range(3) for j in range(2))
    inputs = [a for t, a in parsed.elements if t == "img" and a.get("data-cnnlens", "").startswith("input")]
    assert len(inputs) == 3
    heads = [a for t, a in parsed.elements if t == "th" and a.get("class") == "cnnlens-column"]
    assert len(heads) == 2
    text = " ".join(parsed.text)
    for name in layers:
        assert name in text
    for i in range(3):
        assert res[layers[0]].target_names[i] in text
    # each cell is that layer's map over that image (inputs here are display*0.25+0.5 without a model preprocessing:
    # shown min–max per image)
    for j, name in enumerate(layers):
        e = res[name]
        assert e.input_norm is None and torch.equal(e.inputs, x)
        for i in range(3):
            lo, hi = x[i].min(), x[i].max()
            under = ((x[i] - lo) / (hi - lo)).permute(1, 2, 0).numpy() * 255.0
            hm = e.heatmap[i].numpy()
            img = maps[f"overlay {i} {j}"]
            for r, c in [(3, 4), (16, 16), (30, 9)]:
                want = 0.5 * under[r, c] + 0.5 * _colour("jet", float(hm[r, c]))
                assert np.abs(img[r, c].astype(float) - want).max() <= 1.5
    # a user's own mapping of methods shows the same way, one column per entry
    other = cnnlens.explain(model, x, "grad-cam++", layer="relu2")
    mixed = Explanations({"grad-cam": res["relu2"], "grad-cam++": other})
    assert len(_overlays(mixed._repr_html_())) == 6
    png = mixed._repr_png_()
    with Image.open(io.BytesIO(png)) as im:
        assert im.format == "PNG" and im.width > 200 and im.height > 3 * 100


def test_many_images_are_capped_with_a_note(monkeypatch):
    import cnnlens.display.explanation as disp
    monkeypatch.setattr(disp, "MAX_IMAGES", 4)
    e = _explanation(torch.rand(6, 8, 8))
    page = e._repr_html_()
    assert len(_overlays(page)) == 4
    assert "2 more images not shown" in " ".join(_parse(page).text)


def test_png_fallback_is_a_figure_with_the_map_colours():
    e = _explanation(_quadrant_map(), names=["cat"])
    png = e._repr_png_()
    with Image.open(io.BytesIO(png)) as im:
        assert im.format == "PNG"
        a = np.asarray(im.convert("RGB")).astype(float)
    for v in (0.0, 0.25, 0.75, 1.0):                                     # each quadrant's colour is in the figure
        assert (np.abs(a - _colour("jet", v)).max(-1) <= 6).sum() > 50, v


def test_report_iframe_srcdoc_round_trips_to_the_page(tmp_path):
    page = ("<!DOCTYPE html><html><head><script>var s = \"a&b\" + '</div>' && 1 < 2;</script></head>"
            "<body data-x='q\"uote'>&amp; &lt;tag&gt; ü \u2028</body></html>")
    frame = Report(page)._repr_html_()
    iframes = [a for t, a in _parse(frame).elements if t == "iframe"]
    assert len(iframes) == 1 and iframes[0]["srcdoc"] == page
    assert "sandbox" in iframes[0] and "allow-same-origin" not in iframes[0]["sandbox"]
    assert re.fullmatch(r'<iframe [^<>]*></iframe>', frame)               # nothing of the page escapes the attribute

    # a results folder: the inline page is the page write_report builds (up to the generation time)
    model, x, display, layers = tiny_setup(n=2, size=32)
    rep = ExplanationReport(tmp_path / "out", model="tiny", title="inline")
    res = cnnlens.explain(model, x, "grad-cam", layer=layers)
    for i in range(2):
        rep.add(f"im{i}", display[i], res, index=i)
    path = rep.write()
    shown = view(tmp_path / "out")
    src = next(a for t, a in _parse(shown._repr_html_()).elements if t == "iframe")["srcdoc"]
    gen = re.compile(r'"generated":"[^"]*"')
    assert gen.sub("", src) == gen.sub("", path.read_text(encoding="utf-8"))
    assert view(path).html == path.read_text(encoding="utf-8")
    assert gen.sub("", cnnlens.report(tmp_path / "out").html) == gen.sub("", shown.html)   # the module is callable
    # an in-memory report (never written) holds the same maps as the written one
    mem = rep.view().html
    assert mem.count('"method":"grad-cam"') == path.read_text(encoding="utf-8").count('"method":"grad-cam"') == 4
    with pytest.raises(InputError):
        ExplanationReport(None).write()
    with pytest.raises(InputError):
        view(tmp_path / "nothing-here")


def test_report_view_of_explanations_lists_every_method_and_layer():
    model, x, display, layers = tiny_setup(n=2, size=32)
    a = cnnlens.explain(model, x, "grad-cam", layer=layers)
    b = cnnlens.explain(model, x, "lrp")
    r = view([a, b], model="tiny")
    data = re.search(r'<script type="application/json" id="report-data">(.*?)</script>', r.html, re.S).group(1)
    import json
    d = json.loads(data)
    assert len(d["images"]) == 2 and d["model"] == "tiny"
    assert sorted({(m["method"], m["layer"]) for m in d["maps"]}) == sorted(
        [("grad-cam", "relu1"), ("grad-cam", "relu2"), ("lrp", "input")])
    assert {m["signed"] for m in d["maps"] if m["method"] == "lrp"} == {True}
    with pytest.raises(InputError):
        view(_explanation(torch.rand(1, 8, 8)))                          # no inputs to show


@pytest.mark.skipif(find_browser() is None and os.environ.get("CI", "").lower() != "true",
                    reason="chromium, chromedriver or selenium not installed")
def test_inline_html_renders_in_chromium(tmp_path):
    from _browser import broken_images, chromium, console_errors, file_url
    model, x, display, layers = tiny_setup(n=2, size=32)
    res = cnnlens.explain(model, x, "grad-cam", layer=layers)
    one = cnnlens.explain(model, x, "lrp")
    page = tmp_path / "nb.html"
    page.write_text("<!DOCTYPE html><html><head><meta charset='utf-8'></head><body>" + one._repr_html_()
                    + res._repr_html_() + view(res)._repr_html_() + "</body></html>", encoding="utf-8")
    with chromium(1200, 900) as d:
        d.get(file_url(page))
        assert console_errors(d) == []
        assert broken_images(d) == []
        widths = d.execute_script("return Array.from(document.images).map(i => i.naturalWidth)")
        assert len(widths) == 2 + 1 + 2 + 4 + 1 and min(widths) > 0    # overlays, bars, inputs, grid, bar
        d.switch_to.frame(d.find_element("css selector", "iframe.cnnlens-report"))
        from selenium.webdriver.support.ui import WebDriverWait
        WebDriverWait(d, 20).until(lambda dr: dr.execute_script(
            "return document.body && document.body.getAttribute('data-ready') === '1'"))
        assert broken_images(d) == []
        assert console_errors(d) == []
