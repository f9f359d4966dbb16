"""The HTML report in a real headless Chromium (Debian ``chromium`` + ``chromium-driver``, driven by selenium).

Opened from ``file://`` with no network: no console errors, every image decoded, the controls change what is shown,
a table row opens its image's maps, and the page is not blank. Under ``CI=true`` a missing browser is a failure.
"""
from __future__ import annotations

import io
import os
import time

import numpy as np
import pytest
from PIL import Image

import cnnlens
from cnnlens.report import ExplanationReport, write_report

from _browser import broken_images, chromium, console_errors, file_url, find_browser, wait_ready
from _report_fixture import make_evaluation_folder, tiny_setup

if find_browser() is None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail("chromium / chromedriver / selenium missing: CI must run the browser tests "
                    "(.ci/run installs chromium and chromium-driver)", pytrace=False)
    pytest.skip("chromium, chromedriver or selenium not installed", allow_module_level=True)


@pytest.fixture(scope="module")
def driver():
    with chromium(1400, 1000) as d:
        yield d


@pytest.fixture(scope="module")
def explain_page(tmp_path_factory):
    """Two images; grad-cam at two layers for two targets each, and LRP (signed, input level)."""
    model, x, display, layers = tiny_setup(n=2)
    out = tmp_path_factory.mktemp("explain")
    rep = ExplanationReport(out, model="tiny", title="browser test")
    for t in (1, 3):
        e = cnnlens.explain(model, x, "grad-cam", layer=layers, target=t)
        lrp = cnnlens.explain(model, x, "lrp", target=t)
        for i in range(2):
            rep.add(f"im{i}", display[i], e, index=i)
            rep.add(f"im{i}", display[i], lrp, index=i)
    return rep.write()


@pytest.fixture(scope="module")
def eval_page(tmp_path_factory):
    model, x, display, layers = tiny_setup(n=6)
    out = tmp_path_factory.mktemp("eval")
    make_evaluation_folder(out, model, x, display, ["grad-cam", "relevance-cam", "grad-cam++"], layers, maps_for=4,
                           shards=2)
    return write_report(out)


def _open(driver, path):
    driver.get_log("browser")  # drop earlier messages
    driver.get(file_url(path))
    wait_ready(driver)
    assert driver.current_url.startswith("file://")


def _settle(driver):
    time.sleep(0.05)
    wait_ready(driver)


def _select(driver, element_id, value):
    from selenium.webdriver.support.ui import Select
    Select(driver.find_element("id", element_id)).select_by_value(str(value))
    _settle(driver)


def _check_clean(driver):
    assert console_errors(driver) == []
    n = driver.execute_script("return document.images.length")
    assert n > 0 and broken_images(driver) == []


def _not_blank(png: bytes) -> None:
    a = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(float)
    assert a.shape[0] > 300 and a.shape[1] > 300
    assert a.std() > 20  # not a flat page
    colours = np.unique((a[::4, ::4] // 32).reshape(-1, 3), axis=0)
    assert len(colours) > 20  # images and colour maps, not only text on white


def test_explanation_page_loads_clean_and_controls_switch_the_map(driver, explain_page):
    _open(driver, explain_page)
    _check_clean(driver)
    heat = lambda: driver.find_element("id", "main-heat").get_attribute("src")  # noqa: E731
    cls = lambda: driver.find_element("id", "main-heat").get_attribute("class")  # noqa: E731
    layers = [o.get_attribute("value") for o in driver.find_elements("css selector", "#ctl-layer option")]
    assert layers == ["relu1", "relu2"]
    first = heat()
    _select(driver, "ctl-layer", "relu2")
    second = heat()
    assert second != first
    _select(driver, "ctl-method", "lrp")
    assert heat() not in (first, second) and "signed" in cls().split()
    assert driver.find_element("css selector", ".cbar").get_attribute("data-signed") == "1"
    assert [o.get_attribute("value") for o in driver.find_elements("css selector", "#ctl-layer option")] == ["input"]
    _select(driver, "ctl-method", "grad-cam")
    targets = [o.get_attribute("value") for o in driver.find_elements("css selector", "#ctl-target option")]
    assert targets == ["1", "3"]
    before = heat()
    _select(driver, "ctl-target", "3")
    assert heat() != before
    # another image
    driver.find_elements("css selector", "#thumbs .thumb")[1].click()
    _settle(driver)
    assert driver.find_element("css selector", "#side h3").text == "im1"
    _check_clean(driver)


def test_explanation_opacity_and_grid_view(driver, explain_page):
    _open(driver, explain_page)
    driver.execute_script("var r = document.getElementById('ctl-opacity'); r.value = '0.8';"
                          "r.dispatchEvent(new Event('input'));")
    op = driver.execute_script("return getComputedStyle(document.getElementById('main-heat')).opacity")
    assert abs(float(op) - 0.8) < 1e-6
    driver.find_element("id", "view-grid").click()
    _settle(driver)
    cells = driver.find_elements("css selector", "#grid td .ov img.heat")
    assert len(cells) == 3  # relu1, relu2 (grad-cam) and input (lrp)
    _check_clean(driver)
    driver.find_elements("css selector", "#grid td .ov")[1].click()  # opens that map in the single view
    _settle(driver)
    assert driver.find_elements("id", "main-heat")


def test_evaluation_page_sorts_and_a_row_click_opens_its_maps(driver, eval_page):
    _open(driver, eval_page)
    _check_clean(driver)
    rows = driver.find_elements("css selector", "#records tbody tr")
    assert len(rows) == 6 * 3 * 2
    # the summary shows mean ± s.e. with direction arrows
    head = driver.find_element("css selector", "#summary-table thead").text
    assert "↓" in head and "↑" in head and "±" in driver.find_element("css selector", "#summary-table tbody").text
    # sort by iou (higher is better → descending first), then ascending
    th = driver.find_element("css selector", "#records th[data-key='5']")
    assert th.text.startswith("iou")
    for expect in ("descending", "ascending"):
        th.click()
        _settle(driver)
        assert th.get_attribute("aria-sort") == expect
        vals = driver.execute_script(
            "return Array.from(document.querySelectorAll('#records tbody tr')).map(r => r.children[9].textContent);")
        nums = [float(v) for v in vals]
        assert nums == sorted(nums, reverse=expect == "descending")
    # click a row of an image with stored maps: its maps for every method × layer, each with its metric values
    row = driver.find_element("css selector", "#records tbody tr[data-sample='img-002']")
    row.click()
    _settle(driver)
    detail = driver.find_element("id", "detail")
    assert detail.get_attribute("data-sample") == "img-002"
    maps = detail.find_elements("css selector", ".detail-cell img.heat")
    assert len(maps) == 3 * 2
    assert len(detail.find_elements("css selector", ".detail-cell .mv")) == 6
    assert "iou" in detail.text and "deletion" in detail.text
    assert len(detail.find_elements("css selector", "svg.curves polyline")) == 6  # 3 methods × deletion/insertion
    _check_clean(driver)
    # an image past the stored maps shows its metrics and says the map was not kept
    driver.find_element("css selector", "#records tbody tr[data-sample='img-005']").click()
    _settle(driver)
    assert "map not stored" in detail.text and "n/a (no boxes)" not in detail.text
    driver.find_element("css selector", "#records tbody tr[data-sample='img-004']").click()
    _settle(driver)
    assert "n/a (no boxes)" in detail.text
    # filter by method
    _select(driver, "filter-method", "grad-cam++")
    visible = [r for r in driver.find_elements("css selector", "#records tbody tr") if r.is_displayed()]
    assert len(visible) == 12 and all(r.find_elements("css selector", "td")[2].text == "grad-cam++" for r in visible)


def test_screenshots_are_not_blank(driver, explain_page, eval_page):
    for page in (explain_page, eval_page):
        _open(driver, page)
        _not_blank(driver.get_screenshot_as_png())


def test_map_colours_on_screen_are_the_colour_map(driver, explain_page):
    """At opacity 1 the shown pixels are the stored map through the colour map (within resampling)."""
    from cnnlens.report._images import colourise, load_map_file
    _open(driver, explain_page)
    driver.execute_script("var r = document.getElementById('ctl-opacity'); r.value = '1';"
                          "r.dispatchEvent(new Event('input'));")
    _settle(driver)
    el = driver.find_element("id", "main-overlay")
    shot = np.asarray(Image.open(io.BytesIO(el.screenshot_as_png)).convert("RGB")).astype(float)
    import json
    man = json.loads((explain_page.parent / "report_data" / "explanations.json").read_text())
    m = next(m for m in man["maps"] if m["image"] == "im0" and m["method"] == "grad-cam" and m["layer"] == "relu1"
             and m["target"] == 1)
    gray = load_map_file(explain_page.parent / "report_data" / m["map"])
    want = np.asarray(Image.fromarray(colourise(gray, False)).resize((shot.shape[1], shot.shape[0]),
                                                                     Image.NEAREST)).astype(float)
    assert abs(shot.mean() - want.mean()) < 6 and np.abs(shot.mean((0, 1)) - want.mean((0, 1))).max() < 10


@pytest.fixture(scope="module")
def big_page(tmp_path_factory):
    """1,800 records (200 images × 9 methods), maps for the first 3 images: past the page's 1,500 drawn rows."""
    from _report_fixture import synthetic_folder
    return write_report(synthetic_folder(tmp_path_factory.mktemp("big"), 200, 9, maps_for=3))


def _drawn(driver):
    return driver.execute_script(
        "return Array.from(document.querySelectorAll('#records tbody tr[data-index]'))"
        ".map(r => [Number(r.dataset.index), r.dataset.sample, r.children[2].textContent, r.children[4].textContent]);")


def test_a_long_table_draws_the_rows_in_view_and_still_sorts_scrolls_filters_and_opens(driver, big_page):
    from cnnlens.report import read_records
    _open(driver, big_page)
    assert console_errors(driver) == []
    assert "Per image (1800 maps)" in driver.find_element("css selector", "#per-image h2").text
    drawn = _drawn(driver)
    assert 0 < len(drawn) <= 200 and [d[0] for d in drawn] == list(range(len(drawn)))
    recs = read_records(big_page.parent)
    drops = sorted(r["metrics"]["average-drop"] for r in recs)
    # sort by Average Drop (lower is better: ascending first): the first rows drawn are the smallest of all 1,800
    th = driver.find_element("css selector", "#records th[data-key='0']")
    th.click()
    _settle(driver)
    assert th.get_attribute("aria-sort") == "ascending"
    shown = [float(d[3]) for d in _drawn(driver)]
    assert shown == sorted(shown) and shown[:5] == [round(v, 1) for v in drops[:5]]
    # scrolled to the end, the rows drawn are the largest; the table keeps its full height
    driver.execute_script("var w = document.querySelector('.split .tablewrap'); w.scrollTop = w.scrollHeight;"
                          "w.dispatchEvent(new Event('scroll'));")
    time.sleep(0.3)
    _settle(driver)
    shown = [float(d[3]) for d in _drawn(driver)]
    assert shown[-1] == round(drops[-1], 1) and shown == sorted(shown)
    # filter by method: 200 rows, all drawn, all of that method
    _select(driver, "filter-method", "method-3")
    drawn = _drawn(driver)
    assert len(drawn) == 200 and {d[2] for d in drawn} == {"method-3"}
    # a row of an image with saved maps opens its 9 maps; one without shows the mean curves of its methods
    click = "arguments[0].click();"         # (a row under the sticky header is still the row)
    driver.execute_script(click, driver.find_element("css selector",
                                                     "#records tbody tr[data-sample='ILSVRC2012_val_00000002']"))
    _settle(driver)
    detail = driver.find_element("id", "detail")
    assert len(detail.find_elements("css selector", ".detail-cell img.heat")) == 9
    assert len(detail.find_elements("css selector", "svg.curves polyline")) == 7 * 2    # the 7 methods at layer4
    driver.execute_script(click, driver.find_element("css selector",
                                                     "#records tbody tr[data-sample='ILSVRC2012_val_00000150']"))
    _settle(driver)
    assert "map not stored" in detail.text and "mean over 200 images" in detail.text
    assert len(detail.find_elements("css selector", "svg.curves polyline[stroke-dasharray]")) == 7 * 2
    assert console_errors(driver) == []
