"""The HTML report's data and files (no browser): what the page embeds is what the commands wrote."""
from __future__ import annotations

import base64
import io
import json
import re

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

import cnnlens
from cnnlens.cli import main
from cnnlens.errors import InputError
from cnnlens.report import (ExplanationReport, evaluation_page_data, explanation_page_data, read_records,
                            write_report)
from cnnlens.report._images import _lut, colourise, load_map_file, svg_colour_filters

from _report_fixture import make_evaluation_folder, tiny_setup


def _no_network(html: str) -> None:
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html), "external resource"
    assert "@import" not in html and "url(http" not in html and "<link rel=\"stylesheet\"" not in html
    assert "default-src 'none'" in html  # the page's CSP forbids every fetch


@pytest.fixture(scope="module")
def eval_dir(tmp_path_factory):
    model, x, display, layers = tiny_setup(n=6)
    out = tmp_path_factory.mktemp("eval")
    return make_evaluation_folder(out, model, x, display, ["grad-cam", "relevance-cam"], layers, maps_for=4,
                                  shards=2)


def test_evaluation_page_embeds_every_record_map_and_plot(eval_dir):
    data = evaluation_page_data(eval_dir)
    recs = data["records"]
    assert len(recs) == 6 * 2 * 2
    assert data["metric_order"] == list(json.loads((eval_dir / "summary.json").read_text())["metrics"])
    with_map = [r for r in recs if r["map"] is not None]
    assert len(with_map) == 4 * 2 * 2 and len(data["maps"]) == len(with_map) and len(data["images"]) == 4
    assert {r["sample"] for r in recs if r["map"] is None} == {"img-004", "img-005"}
    # every plot of the folder is in the page, curves first
    names = [p["name"] for p in data["plots"]]
    assert names[:2] == ["curves_deletion.png", "curves_insertion.png"]
    assert sorted(names[2:]) == sorted(p.name for p in eval_dir.glob("bar_*.png"))
    # a null metric stays n/a, its note kept
    r = next(r for r in recs if r["sample"] == "img-004")
    j = data["metric_order"].index("pointing-game")
    assert r["values"][j] is None and r["notes"]["pointing-game"] == "n/a (no boxes)"
    # curves downsampled to at most 48 points, endpoints kept
    raw = next(x for x in read_records(eval_dir) if x["sample"] == r["sample"] and x["method"] == r["method"]
               and x["layer"] == r["layer"])
    assert len(r["curves"]["deletion"]) == 48
    assert r["curves"]["deletion"][0] == round(raw["curves"]["deletion"][0], 4)
    assert r["curves"]["deletion"][-1] == round(raw["curves"]["deletion"][-1], 4)


def _decode_gray(uri: str) -> np.ndarray:
    head, b64 = uri.split(",", 1)
    assert head in ("data:image/webp;base64", "data:image/png;base64")
    img = Image.open(io.BytesIO(base64.b64decode(b64)))
    return np.asarray(img.convert("L"))


def test_evaluation_maps_are_embedded_losslessly(eval_dir):
    data = evaluation_page_data(eval_dir)
    for rec in read_records(eval_dir):
        if not rec.get("map"):
            continue
        page = next(r for r in data["records"] if r["sample"] == rec["sample"] and r["method"] == rec["method"]
                    and r["layer"] == rec["layer"])
        assert np.array_equal(_decode_gray(data["maps"][page["map"]]), load_map_file(eval_dir / rec["map"]))


def test_colour_filters_are_the_colour_maps():
    svg = svg_colour_filters()
    for kind, name in (("unsigned", "jet"), ("signed", "seismic")):
        block = svg[svg.index(f'id="cmap-{kind}"'):]
        for c, ch in enumerate("RGB"):
            values = re.search(rf'<feFunc{ch} type="table" tableValues="([^"]*)"', block).group(1).split()
            assert len(values) == 256
            np.testing.assert_allclose(np.array(values, float) * 255, _lut(name)[:, c], atol=0.02)
    assert np.array_equal(colourise(np.array([[0, 128, 255]], np.uint8), True)[0], _lut("seismic")[[0, 128, 255]])


def test_records_from_every_shard_each_unit_once_torn_line_skipped(eval_dir, tmp_path):
    """The store's rule (cnnlens.evaluation.store): whole units from results.jsonl and the runner's
    results.rank{r}.jsonl shards; a unit in two files counts once (the first file's); a torn line and a unit cut short
    do not count."""
    import shutil
    d = tmp_path / "e"
    shutil.copytree(eval_dir, d)
    assert sorted(p.name for p in d.glob("results*.jsonl")) == ["results.jsonl", "results.rank1.jsonl"]
    lines = (d / "results.jsonl").read_text().splitlines()
    first = json.loads(lines[0])
    unit = [json.loads(x) for x in lines if json.loads(x)["unit"] == first["unit"]]
    copy = [dict(r, metrics=dict(r["metrics"], iou=12.5)) for r in unit]
    with (d / "results.rank9.jsonl").open("w") as fh:                      # a resume recomputed the unit
        fh.write("".join(json.dumps(r) + "\n" for r in copy) + '{"sample": "img-0')  # and was killed mid-line
    with (d / "results.rank10.jsonl").open("w") as fh:                     # a unit cut short: 1 of its records
        fh.write(json.dumps(dict(copy[0], unit="99:grad-cam@x")) + "\n")
    recs = read_records(d)
    assert len(recs) == 24
    hit = [r for r in recs if (r["sample"], r["method"], r["layer"]) == (first["sample"], first["method"],
                                                                        first["layer"])]
    assert len(hit) == 1 and hit[0]["metrics"]["iou"] == first["metrics"]["iou"] != 12.5


def test_report_cli_rebuilds_self_contained_page(eval_dir):
    res = CliRunner().invoke(main, ["report", str(eval_dir)], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    html = (eval_dir / "report.html").read_text(encoding="utf-8")
    _no_network(html)
    blob = re.search(r'<script type="application/json" id="report-data">(.*?)</script>', html, re.S).group(1)
    data = json.loads(blob)
    assert data["kind"] == "evaluation" and len(data["maps"]) == 16


def test_report_cli_on_a_folder_without_results_is_one_line_exit_2(tmp_path):
    res = CliRunner().invoke(main, ["report", str(tmp_path)])
    assert res.exit_code == 2 and "holds no cnnlens results" in res.output
    assert res.output.strip().count("\n") == 0 and not (tmp_path / "report.html").exists()
    res = CliRunner().invoke(main, ["report", str(tmp_path / "missing")])
    assert res.exit_code == 2 and "no such results folder" in res.output


def test_explanation_report_stores_maps_faithfully_and_merges_runs(tmp_path):
    model, x, display, layers = tiny_setup(n=2)
    e = cnnlens.explain(model, x, "grad-cam", layer=layers, target=[1, 3])
    rep = ExplanationReport(tmp_path, model="tiny")
    for i in range(2):
        rep.add(f"im{i}", display[i], e, index=i)
    rep.write()
    man = json.loads((tmp_path / "report_data" / "explanations.json").read_text())
    assert len(man["maps"]) == 4 and {m["layer"] for m in man["maps"]} == set(layers)
    m = next(m for m in man["maps"] if m["image"] == "im1" and m["layer"] == "relu2")
    stored = load_map_file(tmp_path / "report_data" / m["map"]).astype(float) / 255
    assert m["target"] == 3 and np.abs(stored - e["relu2"].heatmap[1].numpy()).max() <= 0.5 / 255 + 1e-6
    top = man["images"][1]["top5"]
    with torch.no_grad():
        p = torch.softmax(model(x[1:2]), -1)[0]
    assert top[0]["class"] == int(p.argmax()) and abs(top[0]["probability"] - float(p.max())) < 1e-6
    assert [t["probability"] for t in top] == sorted((t["probability"] for t in top), reverse=True)
    # a second run of the same model adds a method and another target; one of another model starts afresh
    rep2 = ExplanationReport(tmp_path, model="tiny")
    rep2.add("im0", display[0], cnnlens.explain(model, x[:1], "lrp", target=0))
    rep2.write()
    data = explanation_page_data(tmp_path)
    assert len(data["maps"]) == 5 and data["methods"] == ["grad-cam", "lrp"]
    lrp = next(m for m in data["maps"] if m["method"] == "lrp")
    assert lrp["layer"] == "input" and lrp["signed"] is True and lrp["target"] == 0
    rep3 = ExplanationReport(tmp_path, model="other")
    rep3.add("im0", display[0], cnnlens.explain(model, x[:1], "grad-cam", layer="relu2"))
    html = rep3.write().read_text(encoding="utf-8")
    assert len(explanation_page_data(tmp_path)["maps"]) == 1
    _no_network(html)


def test_signed_map_colours_centre_white_low_blue():
    lut = _lut("seismic")
    assert (lut[128] > 235).all() and lut[0][2] > lut[0][0] + 50 and lut[255][0] > lut[255][2] + 50


def test_explain_and_sweep_commands_write_report(tmp_path):
    out = tmp_path / "o"
    run = CliRunner().invoke
    res = run(main, ["sweep", "coffee", "--model", "efficientnet_lite0", "--methods", "grad-cam,xgrad-cam",
                     "--layers", "blocks.4,bn2", "--out", str(out)], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    res = run(main, ["explain", "coffee", "--model", "efficientnet_lite0", "--method", "grad-cam++", "--out",
                     str(out)], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    data = explanation_page_data(out)
    keys = {(m["method"], m["layer"]) for m in data["maps"]}
    assert keys == {("grad-cam", "blocks.4"), ("grad-cam", "bn2"), ("xgrad-cam", "blocks.4"),
                    ("xgrad-cam", "bn2"), ("grad-cam++", "bn2")}
    assert {m["target_name"] for m in data["maps"]} == {"espresso"}
    assert data["images"][0]["top5"][0]["name"] == "espresso"
    assert (out / "report.html").stat().st_size > 10_000


def test_write_report_rejects_a_corrupt_manifest(tmp_path):
    (tmp_path / "report_data").mkdir()
    (tmp_path / "report_data" / "explanations.json").write_text("{not json")
    with pytest.raises(InputError, match="cannot read"):
        write_report(tmp_path)
    assert not (tmp_path / "report.html").exists()


def test_minimal_folder_input_level_method_and_layer_sets(tmp_path):
    """No plots, no maps; an input-level method (layer null) and a layer set (SISE) get readable layer names."""
    metrics = {"iou": {"higher_is_better": True, "description": "IoU", "unit": "%"}}
    rows = [{"method": "lrp", "layer": None, "n": 1, "seconds": 0.1, "iou": {"mean": 10.0, "se": 0.0, "n": 1}},
            {"method": "sise", "layer": ["a", "b"], "n": 1, "seconds": 0.1, "iou": {"mean": None, "se": None, "n": 0}}]
    (tmp_path / "summary.json").write_text(json.dumps({"identity": {}, "conventions": "c", "metrics": metrics,
                                                       "rows": rows}))
    recs = [{"sample": "s1", "target": 3, "target_name": "cat", "method": "lrp", "layer": None,
             "metrics": {"iou": 10.0}, "curves": {}, "flags": {}},
            {"sample": "s1", "target": 3, "target_name": "cat", "method": "sise", "layer": ["a", "b"],
             "metrics": {"iou": None}, "curves": {}, "flags": {"constant_map": True}}]
    (tmp_path / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    data = evaluation_page_data(tmp_path)
    assert [r["layer"] for r in data["rows"]] == ["input", "a,b"] and data["layers"] == ["input", "a,b"]
    assert [r["layer"] for r in data["records"]] == ["input", "a,b"]
    assert data["records"][1]["values"] == [None] and data["records"][1]["flags"] == ["constant_map"]
    assert data["plots"] == [] and data["maps"] == [] and data["images"] == []
    _no_network(write_report(tmp_path).read_text(encoding="utf-8"))


@pytest.mark.parametrize("umask", [0o022, 0o027, 0o077])
def test_report_files_get_the_mode_open_would_give_them(tmp_path, umask):
    """report.html, the manifest and the figures are shared results: 0o666 minus the umask (0644 under 022), written
    atomically (no temporary file left), never mkstemp's 0600."""
    import os

    from cnnlens.viz import save_figure, write_text_atomic
    from cnnlens.viz.figures import _plt
    model, x, display, layers = tiny_setup(n=1)
    old = os.umask(umask)
    try:
        rep = ExplanationReport(tmp_path, model="tiny")
        rep.add("im0", display[0], cnnlens.explain(model, x, "grad-cam", layer="relu2"))
        page = rep.write()
        text = write_text_atomic(tmp_path / "sub" / "notes.txt", "é\n")
        fig = _plt().figure()
        png = save_figure(fig, tmp_path / "fig.png")
    finally:
        os.umask(old)
    for path in (page, tmp_path / "report_data" / "explanations.json", text, png):
        assert path.stat().st_mode & 0o777 == 0o666 & ~umask, path
    assert text.read_text(encoding="utf-8") == "é\n"
    assert not [p for p in tmp_path.rglob(".*")]


# ------------------------------------------------------------------ the page's records in columns (issue 21, item 9)
def test_the_page_stores_the_records_in_columns(eval_dir):
    """What the page embeds (compact=True) decodes to the records of evaluation_page_data: every field equal, values
    to 7 significant digits, a record's own curves only where its map was saved, and per method and layer the mean
    curve of every record."""
    from cnnlens.report._columns import records_from_columns
    full = evaluation_page_data(eval_dir)
    page = evaluation_page_data(eval_dir, compact=True)
    assert "records" not in page and page["table"]["n"] == len(full["records"])
    back = records_from_columns(page["table"], page["methods"], page["layers"])
    assert len(back) == len(full["records"])
    for a, b in zip(full["records"], back):
        for key in ("sample", "target", "target_name", "method", "layer", "notes", "flags", "image", "map"):
            assert a[key] == b[key], key
        assert b["values"] == [None if v is None else pytest.approx(v, rel=1e-6) for v in a["values"]]
        assert b["curves"] == (a["curves"] if a["map"] is not None else {})
    means = page["table"]["curve_means"]
    for method in full["methods"]:
        for layer in full["layers"]:
            mine = [r["curves"]["deletion"] for r in full["records"] if (r["method"], r["layer"]) == (method, layer)]
            want = np.mean(mine, axis=0)
            got = means[f"{method}\t{layer}"]
            assert got["n"] == len(mine) and np.allclose(got["deletion"], want, atol=1e-4)


def test_the_page_grows_at_most_150_bytes_per_record(tmp_path):
    """The issue's bound: 9 methods × (200 − 20) more images, the saved maps the same (5 images)."""
    from _report_fixture import synthetic_folder
    sizes = {}
    for n in (20, 200):
        folder = synthetic_folder(tmp_path / f"n{n}", n, 9, maps_for=5)
        sizes[n] = write_report(folder).stat().st_size
    per = (sizes[200] - sizes[20]) / (180 * 9)
    assert per <= 150, per
    html = (tmp_path / "n200" / "report.html").read_text(encoding="utf-8")
    blob = json.loads(re.search(r'<script type="application/json" id="report-data">(.*?)</script>', html,
                                re.S).group(1))
    assert len(blob["table"]["curves"]) == 5 * 9 and len(blob["maps"]) == 5 * 9
