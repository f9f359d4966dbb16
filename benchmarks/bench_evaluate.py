"""Benchmark: ``cnnlens evaluate`` throughput (images/s) and what loading and processes cost, in one run.

One method (Grad-CAM) + AD/IC + deletion/insertion on real JPEG files (skimage photos at their own sizes, decoded and
resized by the loader), ``--target predicted``:

* ``--workers 0`` vs ``--workers 2`` (in process);
* the same run on pre-decoded tensors: loader overhead = throughput(decoded) ÷ throughput(pre-decoded), target ≥ 0.9;
* 1 vs 2 ``torchrun`` processes (``torchrun --nproc-per-node N -m cnnlens evaluate``, gloo on the CPU); process start,
  model load and rendezvous are measured by re-running the finished command (nothing left to compute) and subtracted;
* ``--costs``: the cost per map of each method and metric in units of one batched forward (and seconds) — the
  figures behind docs/evaluation.md's "Scale" section.

    python benchmarks/bench_evaluate.py [--images 8] [--model efficientnet_lite0] [--step 6272] [--device cuda]
        [--costs [--costs-all]]

The deletion/insertion step defaults to 6272 px (8 steps at 224²) to keep a CPU run to a couple of minutes; the
papers' 224 px steps cost 25× more forwards (per map: 2·(⌈HW/step⌉+1) forwards, reported in forward units by
``--costs``).
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _timing import timeit  # noqa: E402

PHOTOS = ("chelsea", "coffee", "astronaut", "rocket", "motorcycle_left", "camera")
METRICS = "average-drop,increase,deletion,insertion"


def write_jpeg_folder(root: Path, n: int, class_name: str) -> None:
    """``n`` JPEGs (the skimage photos, cycled, at their own sizes) with VOC XML beside them (one whole-image box)."""
    import numpy as np
    from PIL import Image

    from cnnlens.data.images import sample_image
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        arr = sample_image(PHOTOS[i % len(PHOTOS)])
        arr = np.ascontiguousarray(arr if (i // len(PHOTOS)) % 2 == 0 else arr[::-1])
        h, w = arr.shape[:2]
        Image.fromarray(arr).save(root / f"img{i:04d}.jpg", quality=90)
        (root / f"img{i:04d}.xml").write_text(
            f"<annotation><size><width>{w}</width><height>{h}</height><depth>3</depth></size><object>"
            f"<name>{class_name}</name><difficult>0</difficult><bndbox><xmin>1</xmin><ymin>1</ymin>"
            f"<xmax>{w}</xmax><ymax>{h}</ymax></bndbox></object></annotation>")


class Predecoded:
    """The same samples, decoded once up front (what the loader would give without any decoding cost)."""

    def __init__(self, base):
        self.base = base
        self.samples = [base[i] for i in range(len(base))]
        self.class_names = base.class_names

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, i):
        return self.samples[i]

    def describe(self):
        return self.base.describe()


def run_in_process(model, data, args, workers: int) -> float:
    from cnnlens.evaluation import EvalConfig, evaluate
    cfg = EvalConfig(target="predicted", batch_size=args.batch, step=args.step)
    t0 = time.perf_counter()
    evaluate(model, data, "grad-cam", METRICS, out=None, config=cfg, progress=False, workers=workers)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def load_only(data, args, workers: int) -> float:
    """Seconds to read every block through the loader alone (decode + resize + stack), no model."""
    from cnnlens.evaluation.loader import iter_blocks
    n_blocks = -(-len(data) // args.batch)
    t0 = time.perf_counter()
    for _ in iter_blocks(data, args.batch, range(n_blocks), workers=workers, device=args.device):
        pass
    return time.perf_counter() - t0


def run_torchrun(nproc: int, folder: Path, out: Path, args) -> tuple[float, float]:
    """(seconds of the run, seconds of re-running the finished command: start-up, load, rendezvous, merge)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""),
               OMP_NUM_THREADS=str(max(1, args.threads // nproc)))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc),
           "-m", "cnnlens", "evaluate", "--model", args.model, "--data", str(folder), "--target", "predicted",
           "--methods", "grad-cam", "--metrics", METRICS, "--step", str(args.step), "--batch-size", str(args.batch),
           "--device", args.device, "--no-plots", "--quiet", "--save-maps", "0", "--out", str(out)]
    times = []
    for _ in range(2):
        t0 = time.perf_counter()
        subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        times.append(time.perf_counter() - t0)
    return times[0], times[1]


def costs(model, x, args) -> None:
    """Seconds per map and the same in units of one forward per image (batched), for each method and metric."""
    import cnnlens
    from cnnlens import metrics as M
    meta = model.cnnlens_meta
    with torch.inference_mode():
        t = model(x).argmax(1)
    b = x.shape[0]

    def fwd():
        with torch.inference_mode():
            model(x)
    unit = timeit(fwd, repeat=3) / b
    print(f"\ncost per map, {args.model} at {tuple(x.shape[-2:])}, batch {b} ({args.device}); "
          f"1 forward = {unit * 1e3:.1f} ms/image")
    rows = []
    opts = {"score-cam": {}, "rise": {"n_masks": 500}}
    names = ["grad-cam", "grad-cam++", "layer-cam", "relevance-cam", "lrp", "sglrp"]
    if args.costs_all:
        names += ["score-cam", "sise", "rise"]
    for name in names:
        xs = x[:1] if name in ("score-cam", "sise", "rise") else x
        ts = t[: xs.shape[0]]
        try:
            sec = timeit(lambda: cnnlens.explain(model, xs, name, target=ts, **opts.get(name, {})), repeat=1,
                         warmup=0 if name in ("score-cam", "sise", "rise") else 1) / xs.shape[0]
        except Exception as exc:                          # noqa: BLE001 — a benchmark row, not a test
            print(f"  {name}: skipped ({exc})")
            continue
        rows.append((name + (" (500 masks)" if name == "rise" else ""), sec))
    heat = cnnlens.explain(model, x, "grad-cam", target=t).heatmap
    kw = dict(mean=meta.mean, std=meta.std)
    rows.append(("AD/IC (standard)", timeit(lambda: M.confidence_pair(model, x, heat, t, **kw), repeat=3) / b))
    sec = timeit(lambda: M.deletion_insertion(model, x[:2], heat[:2], t[:2], step=args.step, **kw), repeat=1) / 2
    rows.append((f"deletion + insertion, step {args.step}", sec))
    size = (375, 500)
    s = M.saliency(heat, size)
    g = M.boxes_mask([(100, 80, 300, 260)], size)[None].expand(b, -1, -1)
    rows.append(("pointing + EBPG + Bbox + IoU (500×375)", timeit(lambda: (
        M.pointing_game(s, g), M.energy_pointing_game(s, g), M.bbox_score(s, g), M.iou(s, g)), repeat=3) / b))
    width = max(len(r[0]) for r in rows)
    for name, sec in rows:
        print(f"  {name:<{width}}  {sec * 1e3:10.1f} ms/map  {sec / unit:8.1f} forwards")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="efficientnet_lite0")
    ap.add_argument("--images", type=int, default=8)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--step", type=int, default=6272)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--costs", action="store_true", help="also the per-map cost of each method and metric")
    ap.add_argument("--costs-all", action="store_true", help="with --costs: also Score-CAM, SISE, RISE (slow on a CPU)")
    ap.add_argument("--no-torchrun", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from cnnlens.evaluation import open_model
    from cnnlens.data import open_dataset
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model, _ = open_model(args.model, device=args.device)
    tmp = Path(tempfile.mkdtemp(prefix="cnnlens-bench-eval-"))
    try:
        folder = tmp / "jpeg"
        write_jpeg_folder(folder, args.images, model.cnnlens_meta.class_names[0])
        data = open_dataset(str(folder), model)
        pre = Predecoded(data)
        run_in_process(model, pre, args, 0)                                  # warm-up
        t_w0 = run_in_process(model, data, args, 0)
        t_w2 = run_in_process(model, data, args, 2)
        t_pre = run_in_process(model, pre, args, 0)
        t_load = load_only(data, args, 0)
        n = args.images
        print(f"evaluate: {args.model}, {n} JPEG images, grad-cam + AD/IC + deletion/insertion (step {args.step}), "
              f"batch {args.batch}, {args.device}, {args.threads} threads")
        print(f"  --workers 0          {n / t_w0:7.2f} images/s")
        print(f"  --workers 2          {n / t_w2:7.2f} images/s   {t_w0 / t_w2:5.2f}× workers 0")
        print(f"  pre-decoded tensors  {n / t_pre:7.2f} images/s")
        print(f"  loader overhead: decoded ÷ pre-decoded throughput = {t_pre / t_w0:.2f} (workers 0), "
              f"{t_pre / t_w2:.2f} (workers 2); target ≥ 0.9")
        print(f"  the loader alone (decode + resize, workers 0): {t_load:.2f} s = {t_load / t_pre:.1%} of the "
              f"pre-decoded run (a bound on the overhead that same-run noise does not blur)")
        if not args.no_torchrun:
            res = {}
            for nproc in (1, 2):
                run, rerun = run_torchrun(nproc, folder, tmp / f"tr{nproc}", args)
                res[nproc] = max(run - rerun, 1e-9)
                print(f"  torchrun {nproc} proc.     {n / res[nproc]:7.2f} images/s   (run {run:.1f} s − start-up "
                      f"{rerun:.1f} s)")
            print(f"  torchrun 2 vs 1: {res[1] / res[2]:.2f}× ({args.threads} CPU threads shared by the processes)")
        if args.costs:
            x = torch.stack([pre[i].image for i in range(min(8, n))]).to(args.device)
            costs(model, x, args)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
