"""Benchmark: the evaluation report of a 30-image × 6-method × 4-layer run — file size and time to interactive in
headless Chromium (issue 13: < 25 MB, interactive within 2 s).

The results folder is written in the ``cnnlens evaluate`` contract by ``tests/_report_fixture.py``: real maps of
EfficientNet-Lite0 (ImageNet weights) on 30 photos (6 bundled photos × 5 crops/flips) at 224 px for Grad-CAM,
Grad-CAM++, XGrad-CAM, Layer-CAM, Relevance-CAM and Grad-CAM without its ReLU, at blocks.2, blocks.4, blocks.5 and
bn2 (720 maps), seeded metric values and 225-step curves. Printed: the page's size, the time to build it, and in
Chromium (median of --repeat loads, each in a fresh tab of one browser): navigation → page built with every image
decoded (the page's own ``performance.now()`` at the end of its script, and the wall time selenium sees), then a
click on a table row → its 24 maps decoded. Run: ``PYTHONPATH=src python benchmarks/bench_report.py [--repeat 5]``.

``--images 50000 --methods 9`` (issue 21, item 9): the scale of ImageNet val × 9 methods with synthetic records (8
metrics, 17-point curves, maps saved for the first 50 images as ``cnnlens evaluate --save-maps 50`` does). Printed:
the page's bytes per record (the growth from a run a tenth that size, so the 50 saved maps and the images cancel),
the page's size and build time, and in Chromium: navigation → page interactive, a sort of 450,000 rows by a metric,
a row click (its maps and values) and a scroll of the table (limits: ≤ 150 bytes per record, interactive ≤ 2 s).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "tests")]

import cnnlens  # noqa: E402

from _browser import chromium, console_errors, file_url, find_browser, wait_ready  # noqa: E402
from _report_fixture import make_evaluation_folder, synthetic_folder  # noqa: E402

PHOTOS = ("chelsea", "coffee", "astronaut", "rocket", "motorcycle_left", "camera")
LAYERS = ["blocks.2", "blocks.4", "blocks.5", "bn2"]
METHODS = ["grad-cam", "grad-cam++", "xgrad-cam", "layer-cam", "relevance-cam",
           ("grad-cam-norelu", "grad-cam", {"relu": False})]


def _variants(x: torch.Tensor) -> list[torch.Tensor]:
    """Five views of one (1,3,224,224) image: itself, mirrored, two zoomed crops, a zoomed mirror."""
    def zoom(t, f, dx=0):
        h = t.shape[-1]
        c = int(h * f)
        o = (h - c) // 2
        crop = t[..., o:o + c, o + dx:o + dx + c]
        return torch.nn.functional.interpolate(crop, size=(h, h), mode="bilinear", align_corners=False)
    return [x, x.flip(-1), zoom(x, 0.8), zoom(x, 0.65, 10), zoom(x, 0.8).flip(-1)]


def build(out: Path) -> Path:
    model = cnnlens.load_model("efficientnet_lite0")
    xs = torch.cat([v for p in PHOTOS for v in _variants(cnnlens.load_image(p, model))])
    from cnnlens.models.preprocessing import unnormalize
    display = unnormalize(xs, model)
    return make_evaluation_folder(out, model, xs, display, METHODS, LAYERS, model_name="efficientnet_lite0")


def at_scale(args) -> None:
    """The page of ``--images`` × ``--methods`` synthetic records: bytes per record and time to interactive."""
    from cnnlens.report import write_report
    base = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="cnnlens-bench-report-scale-"))
    pages = {}
    for n in (args.images // 10, args.images):
        folder = base / f"n{n}"
        t0 = time.perf_counter()
        if not (folder / "summary.json").exists():
            synthetic_folder(folder, n, args.methods)
        t1 = time.perf_counter()
        page = folder / "report.html"
        if not (args.reuse and page.exists()):
            page = write_report(folder)
        t2 = time.perf_counter()
        pages[n] = page
        print(f"{n} images × {args.methods} methods = {n * args.methods} records: results written in {t1 - t0:.0f} s "
              f"({(folder / 'results.jsonl').stat().st_size / 1e6:.0f} MB), report.html "
              f"{page.stat().st_size / 1e6:.1f} MB "
              f"built in {t2 - t1:.1f} s")
    small, big = sorted(pages)
    per = (pages[big].stat().st_size - pages[small].stat().st_size) / ((big - small) * args.methods)
    print(f"page growth: {per:.0f} bytes per record (limit 150)")
    records = big * args.methods
    ready, sort, click, scroll = [], [], [], []
    with chromium(1400, 1000) as d:
        for _ in range(args.repeat):
            d.get("about:blank")
            d.get_log("browser")
            w0 = time.perf_counter()
            d.get(file_url(pages[big]))
            wait_ready(d, timeout=120)
            ready.append(time.perf_counter() - w0)
            errors = console_errors(d)
            assert not errors, errors
            c0 = time.perf_counter()
            d.execute_script("document.querySelector('#records th[data-key=\"0\"]').click();")
            first = d.execute_script("return document.querySelector('#records tbody tr[data-index]').dataset.index")
            sort.append(time.perf_counter() - c0)
            c0 = time.perf_counter()
            d.execute_script("document.querySelector('#records tbody tr[data-sample=\"ILSVRC2012_val_00000003\"]')"
                             " ? 0 : 0; var w = document.querySelector('.split .tablewrap'); w.scrollTop = "
                             "w.scrollHeight / 2; w.dispatchEvent(new Event('scroll'));")
            d.execute_script("return new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)));")
            scroll.append(time.perf_counter() - c0)
            shown = d.execute_script("return document.querySelectorAll('#records tbody tr[data-index]').length")
            c0 = time.perf_counter()
            d.execute_script("document.querySelector('#records tbody tr[data-index]').click();")
            click.append(time.perf_counter() - c0)
            assert first is not None and 0 < shown <= 400, shown
    med = statistics.median
    print(f"Chromium, {records} records: navigation → page interactive {med(ready):.2f} s wall (median of "
          f"{args.repeat}, slowest {max(ready):.2f} s; limit 2 s); sort by a metric {med(sort) * 1e3:.0f} ms; scroll to the middle "
          f"{med(scroll) * 1e3:.0f} ms ({shown} rows drawn); row click → detail {med(click) * 1e3:.0f} ms")
    ok = per <= 150 and med(ready) <= 2.0
    print("PASS" if ok else "FAIL")
    sys.exit(0 if ok else 1)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--keep", default=None, help="Folder to keep the results folder and report in.")
    ap.add_argument("--images", type=int, default=None, help="Synthetic records at scale: this many images "
                    "(e.g. 50000) × --methods (see the module doc).")
    ap.add_argument("--methods", type=int, default=9)
    ap.add_argument("--reuse", action="store_true", help="with --keep: keep the report.html pages already built there "
                    "(measure the browser side again)")
    args = ap.parse_args()
    if find_browser() is None:
        sys.exit("chromium / chromedriver / selenium missing")
    if args.images:
        at_scale(args)
        return
    torch.set_num_threads(2)
    out = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="cnnlens-bench-report-"))
    t0 = time.perf_counter()
    if not (out / "summary.json").exists():
        build(out)
    t1 = time.perf_counter()
    from cnnlens.report import write_report
    page = write_report(out)
    t2 = time.perf_counter()
    n_maps = len(list((out / "maps").glob("*.png")))
    size = page.stat().st_size
    print(f"fixture folder: {t1 - t0:.1f} s ({n_maps} maps, {len(list((out / 'images').glob('*.jpg')))} images)")
    print(f"report.html: {size / 1e6:.2f} MB (limit 25 MB), built in {t2 - t1:.2f} s")
    ready_js, ready_wall, click = [], [], []
    with chromium(1400, 1000) as d:
        for _ in range(args.repeat):
            d.get("about:blank")
            d.get_log("browser")
            w0 = time.perf_counter()
            d.get(file_url(page))
            wait_ready(d, timeout=60)
            ready_wall.append(time.perf_counter() - w0)
            ready_js.append(float(d.execute_script("return document.body.getAttribute('data-ready-ms')")) / 1e3)
            errors = console_errors(d)
            assert not errors, errors
            c0 = time.perf_counter()
            d.execute_script("document.querySelector('#records tbody tr[data-sample=\"img-017\"]').click();")
            wait_ready(d, timeout=60)
            click.append(time.perf_counter() - c0)
            assert len(d.find_elements("css selector", "#detail img.heat")) == 24
    med = statistics.median
    print(f"Chromium, navigation → page built, images decoded: {med(ready_js):.2f} s (page's clock), "
          f"{med(ready_wall):.2f} s wall via selenium (median of {args.repeat}; limit 2 s)")
    print(f"row click → 24 maps shown: {med(click) * 1e3:.0f} ms wall via selenium")
    ok = size < 25e6 and med(ready_wall) < 2.0
    print("PASS" if ok else "FAIL")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
