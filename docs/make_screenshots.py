"""Make the README's report screenshots (docs/report_*.png) in headless Chromium.

    PYTHONPATH=src python docs/make_screenshots.py [--work /tmp/cnnlens-shots]

Runs the documented commands — ``cnnlens demo`` (explanations) and ``cnnlens evaluate`` on the synthetic scenes
(evaluation) — opens each ``report.html`` from ``file://`` and saves screenshots. When the evaluation run keeps no
per-image maps (``"map"`` fields in results.jsonl), this script adds them (the same method, layer and target through
``cnnlens.explain``) so the screenshot can show the per-image view.
"""
from __future__ import annotations

import argparse
import json
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
                   env={**__import__("os").environ, "PYTHONPATH": str(ROOT / "src")})


def add_maps(folder: Path) -> None:
    """Give every record of a synthetic-data evaluation its input image and map, if the run kept none."""
    import torch

    import cnnlens as cl
    from cnnlens.models.preprocessing import unnormalize
    from cnnlens.report._images import map_to_uint8, save_image_file, save_map_file, to_hwc_uint8
    from cnnlens.report.evaluation import read_records
    records = read_records(folder)
    if any(r.get("map") for r in records):
        return
    try:
        from cnnlens.evaluation_data import open_dataset, open_model
    except ImportError:  # after the evaluation package landed
        from cnnlens.evaluation import open_dataset, open_model  # type: ignore[no-redef]
    ident = json.loads((folder / "summary.json").read_text())["identity"]
    model, _ = open_model(ident["model"])
    data = open_dataset("synthetic", model, n_images=ident["dataset"]["n"], seed=ident["dataset"].get("seed", 0))
    samples = {data[i].id: data[i] for i in range(len(data))}
    for sid, s in samples.items():
        save_image_file(to_hwc_uint8(unnormalize(s.image[None], model)[0]), folder / "images" / f"{sid}.jpg")
    groups: dict[tuple, list[dict]] = {}
    for r in records:
        groups.setdefault((r["method"], r["layer"]), []).append(r)
    for (method, layer), recs in groups.items():
        x = torch.stack([samples[r["sample"]].image for r in recs])
        e = cl.explain(model, x, method, target=[int(r["target"]) for r in recs], layer=layer)
        for i, r in enumerate(recs):
            rel = f"maps/{r['sample']}_{r['target']}_{method}_{layer}.png"
            save_map_file(map_to_uint8(e.heatmap[i]), folder / rel)
            r["image"], r["map"] = f"images/{r['sample']}.jpg", rel
    for shard in folder.glob("results*.jsonl"):
        shard.unlink()
    with (folder / "results.jsonl").open("w") as fh:
        for r in records:
            fh.write(json.dumps(r) + "\n")
    cnnlens("report", str(folder))


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
            add_maps(ev)
            cnnlens("report", str(ev))
            shoot(d, ev / "report.html", docs / "report_evaluation.png", height=900)
            shoot(d, ev / "report.html", docs / "report_evaluation_images.png",
                  "document.querySelector('#records tbody tr:nth-child(3)').click();"
                  "window.scrollTo(0, document.getElementById('per-image').offsetTop - 8);", height=1000)


if __name__ == "__main__":
    main()
