"""The report of a real ``cnnlens evaluate`` run, end to end: the command writes ``report.html`` from its own
``images/`` and ``maps/``, and the page in headless Chromium shows exactly those files.

One evaluate run per dataset kind for the whole module (4 synthetic scenes with boxes, 2 methods × 2 layers; 3 JPEGs
in a plain folder, no boxes, ``--target predicted``), on untrained ``synthetic-vgg`` weights placed in a temporary
``$CNNLENS_CACHE`` so nothing trains.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from cnnlens.cli import main
from cnnlens.report import evaluation_page_data, read_records
from cnnlens.report._images import data_uri_image_file, data_uri_map_file, load_map_file

from _browser import broken_images, chromium, console_errors, file_url, find_browser, wait_ready

SRC = str(Path(__file__).resolve().parents[1] / "src")
METHODS = ["grad-cam", "relevance-cam"]
LAYERS = ["features.9", "features.14"]           # given in this order; features.14 sorts first as a string
METRICS = ["average-drop", "pointing-game", "iou", "deletion"]
COMMON = ["--model", "synthetic-vgg", "--methods", ",".join(METHODS), "--layer", ",".join(reversed(LAYERS)),
          "--metrics", ",".join(METRICS), "--step", "512", "--batch-size", "2", "--quiet"]
NO_BROWSER = find_browser() is None
if NO_BROWSER and os.environ.get("CI", "").lower() == "true":
    pytest.fail("chromium / chromedriver / selenium missing: CI must run the browser tests", pytrace=False)
browser = pytest.mark.skipif(NO_BROWSER, reason="chromium, chromedriver or selenium not installed")


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    """Untrained weights where ``--model synthetic-vgg`` looks, so the command does not train."""
    from cnnlens.data.synthetic import TrainConfig, vgg_like
    cache = tmp_path_factory.mktemp("cache")
    path = cache / "synthetic" / f"{TrainConfig(arch='vgg').key}.pt"
    path.parent.mkdir(parents=True)
    torch.manual_seed(0)
    torch.save(vgg_like(4).state_dict(), path)
    return cache


def _evaluate(cache: Path, args: list[str]) -> None:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CNNLENS_CACHE", str(cache))
        res = CliRunner().invoke(main, ["evaluate", *COMMON, *args], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert "report.html" in res.output


@pytest.fixture(scope="module")
def boxes(cache, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("eval") / "boxes"
    _evaluate(cache, ["--data", "synthetic", "--n-images", "4", "--out", str(out)])
    return out


@pytest.fixture(scope="module")
def no_boxes(cache, tmp_path_factory) -> Path:
    from skimage import data
    folder = tmp_path_factory.mktemp("jpegs")
    for name, size in (("chelsea", (96, 72)), ("coffee", (80, 80)), ("astronaut", (60, 90))):
        Image.fromarray(getattr(data, name)()).resize(size).save(folder / f"{name}.jpg", quality=90)
    out = tmp_path_factory.mktemp("eval") / "no_boxes"
    _evaluate(cache, ["--data", str(folder), "--format", "folder", "--target", "predicted", "--out", str(out)])
    return out


@pytest.fixture(scope="module")
def driver():
    if NO_BROWSER:
        pytest.skip("no browser")
    with chromium(1400, 1000) as d:
        yield d


def _open(driver, page: Path) -> None:
    driver.get_log("browser")
    driver.get(file_url(page))
    wait_ready(driver)


def _settle(driver) -> None:
    time.sleep(0.05)
    wait_ready(driver)


def _clean(driver) -> None:
    assert console_errors(driver) == []
    assert driver.execute_script("return document.images.length") > 0 and broken_images(driver) == []


# ------------------------------------------------------------------------------------------ files (no browser)
def test_evaluate_writes_a_shareable_report_of_its_own_images_and_maps(boxes):
    page = boxes / "report.html"
    assert page.stat().st_mode & 0o777 == 0o666 & ~_umask()          # 0644 under umask 022, not 0600
    recs = read_records(boxes)
    assert len(recs) == 4 * len(METHODS) * len(LAYERS)
    assert all((boxes / r["image"]).is_file() and (boxes / r["map"]).is_file() for r in recs)
    data = evaluation_page_data(boxes)
    assert data["layers"] == LAYERS and data["metric_order"][:len(METRICS)] == METRICS
    assert len(data["images"]) == 4 and len(data["maps"]) == len(recs)
    for r in recs:
        p = next(q for q in data["records"] if (q["sample"], q["method"], q["layer"]) == (r["sample"], r["method"],
                                                                                       r["layer"]))
        assert data["maps"][p["map"]] == data_uri_map_file(boxes / r["map"])
        assert data["images"][p["image"]] == data_uri_image_file(boxes / r["image"])
        assert [v for v in p["values"][:len(METRICS)]] == [r["metrics"][k] for k in METRICS]
    # the page embeds the same data
    html = page.read_text(encoding="utf-8")
    assert f'"maps":{json.dumps(data["maps"])}'.replace(" ", "") in html.replace(" ", "")


def test_no_boxes_run_marks_box_metrics_na_in_the_page_data(no_boxes):
    data = evaluation_page_data(no_boxes)
    assert len(data["records"]) == 3 * len(METHODS) * len(LAYERS)
    for k in ("pointing-game", "iou"):
        j = data["metric_order"].index(k)
        assert all(r["values"][j] is None and r["notes"][k] == "n/a (no boxes)" for r in data["records"])
        assert all(row[k]["na"] == "no boxes" and row[k]["mean"] is None for row in data["rows"])
    j = data["metric_order"].index("deletion")
    assert all(isinstance(r["values"][j], float) for r in data["records"])
    assert all(r["map"] is not None and r["image"] is not None for r in data["records"])


# ------------------------------------------------------------------------------------------ in Chromium
@browser
def test_row_click_shows_that_images_maps_from_evaluates_files(driver, boxes):
    _open(driver, boxes / "report.html")
    _clean(driver)
    rows = driver.find_elements("css selector", "#records tbody tr")
    assert len(rows) == 16
    recs = read_records(boxes)
    for sample in sorted({r["sample"] for r in recs})[::3]:             # the first and the last scene
        driver.find_element("css selector", f"#records tbody tr[data-sample='{sample}']").click()
        _settle(driver)
        detail = driver.find_element("id", "detail")
        assert detail.get_attribute("data-sample") == sample
        cells = detail.find_elements("css selector", ".detail-cell .ov")
        assert len(cells) == len(METHODS) * len(LAYERS)
        mine = {(r["method"], r["layer"]): r for r in recs if r["sample"] == sample}
        for cell in cells:
            heat = cell.find_element("css selector", "img.heat")
            method, layer = heat.get_attribute("alt")[:-len(" map")].split(" ")
            rec = mine[(method, layer)]
            assert heat.get_attribute("src") == data_uri_map_file(boxes / rec["map"])
            base = cell.find_element("css selector", "img.base")
            assert base.get_attribute("src") == data_uri_image_file(boxes / rec["image"])
            # the browser decoded the map at the stored size
            w, h = driver.execute_script("return [arguments[0].naturalWidth, arguments[0].naturalHeight]", heat)
            assert (h, w) == load_map_file(boxes / rec["map"]).shape
        _clean(driver)


@browser
def test_metric_columns_sort_by_the_runs_values(driver, boxes):
    _open(driver, boxes / "report.html")
    recs = read_records(boxes)
    order = evaluation_page_data(boxes)["metric_order"]
    for metric, first in (("iou", "descending"), ("deletion", "ascending")):
        th = driver.find_element("css selector", f"#records th[data-key='{order.index(metric)}']")
        for direction in (first, "ascending" if first == "descending" else "descending"):
            th.click()
            _settle(driver)
            assert th.get_attribute("aria-sort") == direction
            col = 4 + order.index(metric)
            shown = driver.execute_script(
                "return Array.from(document.querySelectorAll('#records tbody tr'))"
                ".map(r => [r.dataset.sample, r.children[2].textContent, r.children[3].textContent, "
                "r.children[arguments[0]].textContent]);", col)
            by_key = {(r["sample"], r["method"], r["layer"]): r["metrics"][metric] for r in recs}
            values = [by_key[(s, m, layer)] for s, m, layer, _ in shown]
            assert values == sorted(values, reverse=direction == "descending")
            digits = 1 if metric == "iou" else 3
            assert [float(v) for *_, v in shown] == [round(v, digits) for v in values]
    _clean(driver)


@browser
def test_no_boxes_page_says_na_no_boxes_without_errors(driver, no_boxes):
    _open(driver, no_boxes / "report.html")
    _clean(driver)
    summary = driver.find_element("id", "summary-table")
    na_cells = [td.text for td in summary.find_elements("css selector", "td.na")]
    assert na_cells == ["n/a (no boxes)"] * (2 * len(METHODS) * len(LAYERS))
    row = driver.find_elements("css selector", "#records tbody tr")[0]
    order = evaluation_page_data(no_boxes)["metric_order"]
    cell = row.find_elements("css selector", "td")[4 + order.index("iou")]
    assert cell.text == "n/a" and cell.get_attribute("title") == "n/a (no boxes)"
    row.click()
    _settle(driver)
    detail = driver.find_element("id", "detail")
    assert "n/a (no boxes): pointing-game, iou" in detail.text
    assert len(detail.find_elements("css selector", ".detail-cell img.heat")) == len(METHODS) * len(LAYERS)
    assert "error" not in detail.text.lower()
    _clean(driver)


@browser
@pytest.mark.parametrize("run", ["boxes", "no_boxes"])
def test_summary_highlights_a_best_value_only_where_it_wins(driver, run, request):
    """Bold green marks the best method per layer; where every method ties (e.g. all 100 %), none is marked."""
    out = request.getfixturevalue(run)
    _open(driver, out / "report.html")
    cells = driver.execute_script(
        "return Array.from(document.querySelectorAll('#summary-table tbody tr')).map(r => "
        "[r.children[1].textContent, Array.from(r.children).slice(3, -1).map(td => [td.className, "
        "td.firstChild ? td.firstChild.textContent : ''])]);")
    by_layer: dict = {}
    for layer, tds in cells:
        by_layer.setdefault(layer, []).append(tds)
    for layer, rows in by_layer.items():
        for j in range(len(rows[0])):
            shown = [row[j][1] for row in rows]
            marked = [row[j][0] == "best" for row in rows]
            if len(set(shown)) == 1:
                assert not any(marked), (layer, j, shown)
            elif not shown[0].startswith("n/a"):
                assert any(marked), (layer, j, shown)


# ------------------------------------------------------------------------------------------ torchrun
@pytest.mark.slow
def test_torchrun_writes_one_report_after_the_merge(cache, tmp_path):
    """Only rank 0 writes report.html, after every rank's shard is merged: the page has every record's map."""
    out = tmp_path / "ddp"
    env = dict(os.environ, PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""),
               CNNLENS_CACHE=str(cache), OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "cnnlens",
           "evaluate", *COMMON, "--data", "synthetic", "--n-images", "6", "--out", str(out)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.count("report.html") == 1                       # rank 0 alone
    assert sorted(p.name for p in out.glob("results*.jsonl")) == ["results.jsonl"]
    data = evaluation_page_data(out)
    assert len(data["records"]) == 6 * len(METHODS) * len(LAYERS)
    assert all(r["map"] is not None for r in data["records"])
    assert len(list(out.glob(".*"))) == 0                               # no temporary file left
