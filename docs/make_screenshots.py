"""Make the README's report screenshots (docs/report_*.png) in headless Chromium.

    PYTHONPATH=src python docs/make_screenshots.py [--work /tmp/cnnlens-shots]

Runs the documented commands — ``cnnlens demo`` (explanations) and ``cnnlens evaluate`` on the synthetic scenes
(evaluation) — opens each ``report.html`` they wrote from ``file://`` and saves screenshots. The per-image view shows
the input images and maps that ``cnnlens evaluate`` itself saved (``--save-maps``, default: the first 50 images).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "tests")]

from _browser import chromium, console_errors, file_url, full_page_png, wait_ready  # noqa: E402

EVAL_ARGS = ["--model", "synthetic-resnet", "--data", "synthetic", "--n-images", "12",
             "--methods", "grad-cam,grad-cam++,relevance-cam", "--layer", "layer2,layer4",
             "--metrics", "average-drop,increase,deletion,insertion,pointing-game,energy-pointing-game,iou"]


def cnnlens(*args: str) -> None:
    subprocess.run([sys.executable, "-c", "from cnnlens.cli import main; main()", *args], check=True,
                   env={**os.environ, "PYTHONPATH": str(ROOT / "src")})


def shoot(driver, page: Path, out: Path, script: str | None = None, height: int = 900, full: bool = False) -> None:
    driver.set_window_size(1400, height)
    driver.get(file_url(page))
    wait_ready(driver)
    if script:
        driver.execute_script(script)
        time.sleep(0.3)
        wait_ready(driver)
    errors = console_errors(driver)
    if errors:
        raise SystemExit(f"console errors in {page}: {errors}")
    if full:
        full_page_png(driver, out, max_height=height)
    else:
        driver.save_screenshot(str(out))
    print(f"wrote {out}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", default="/tmp/cnnlens-shots")
    ap.add_argument("--only", choices=["explanations", "evaluation"], default=None)
    args = ap.parse_args()
    work = Path(args.work)
    docs = ROOT / "docs"
    with chromium(1400, 900) as d:
        if args.only in (None, "explanations"):
            demo = work / "demo"
            if not (demo / "report.html").exists():
                cnnlens("demo", "--out", str(demo))
            else:
                cnnlens("report", str(demo))            # the page of this version of cnnlens
            shoot(d, demo / "report.html", docs / "report_explanations.png",
                  "var s=document.getElementById('ctl-method'); s.value='relevance-cam';"
                  "s.dispatchEvent(new Event('change'));", height=900)
            shoot(d, demo / "report.html", docs / "report_explanations_grid.png",
                  "document.querySelector('.thumb[data-image=collage]').click();"
                  "document.getElementById('view-grid').click();", height=880, full=True)
        if args.only in (None, "evaluation"):
            ev = work / "eval"
            if not (ev / "summary.json").exists():
                cnnlens("evaluate", *EVAL_ARGS, "--out", str(ev), "--quiet")
            if not any((ev / "maps").glob("*.png")):
                raise SystemExit(f"{ev} holds no maps saved by cnnlens evaluate (an old run?): remove it and re-run")
            cnnlens("report", str(ev))
            shoot(d, ev / "report.html", docs / "report_evaluation.png", height=900)
            shoot(d, ev / "report.html", docs / "report_evaluation_images.png",
                  "document.querySelector('#records tbody tr:nth-child(3)').click();"
                  "window.scrollTo(0, document.getElementById('per-image').offsetTop - 8);", height=1000)


if __name__ == "__main__":
    main()
