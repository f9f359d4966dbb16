"""Benchmark: deletion + insertion (metrics.md §4) with 224-pixel steps for one 224×224 image.

Figure of merit: time(deletion + insertion) ÷ (number of forwards × batched forward time per image), measured in the
same run. 1.0 means the metric costs exactly its forward passes; the target is ≤ 1.1 (mask building, blurring, sorting
and scoring add at most 10 %). Also times the other metrics' per-image cost for reference.

    python benchmarks/bench_metrics.py [--model efficientnet_lite0|resnet18|resnet50] [--repeat 3] [--batch 64] [--threads N]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _timing import timeit  # noqa: E402

import cnnlens  # noqa: E402
from cnnlens import metrics as M  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="efficientnet_lite0")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--batch", type=int, default=64, help="perturbation batch size (images per forward)")
    ap.add_argument("--step", type=int, default=224)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    torch.manual_seed(0)
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = cnnlens.load_model(args.model).to(args.device).eval()
    x = cnnlens.load_image("chelsea", model).to(args.device)
    with torch.inference_mode():
        target = model(x).argmax(1)
    heat = cnnlens.explain(model, x, "grad-cam", target=target).heatmap
    h, w = x.shape[-2:]
    steps = M.perturbation.n_steps(h * w, args.step)
    forwards = 2 * (steps + 1)
    mean, std = model.cnnlens_meta.mean, model.cnnlens_meta.std

    def both():
        M.deletion_insertion(model, x, heat, target, step=args.step, mean=mean, std=std, batch_size=args.batch)

    xb = x.expand(args.batch, -1, -1, -1).contiguous()

    def forward_batch():
        with torch.inference_mode():
            model(xb)

    # interleave the two timings so that load on a shared machine hits both alike
    t_fwd, t_metric = [], []
    for _ in range(args.repeat):
        t_fwd.append(timeit(forward_batch, repeat=3, warmup=1) / args.batch)
        t_metric.append(timeit(both, repeat=1, warmup=0 if t_metric else 1))
    t_fwd_img = sorted(t_fwd)[len(t_fwd) // 2]
    t_both = sorted(t_metric)[len(t_metric) // 2]
    ratio = t_both / (forwards * t_fwd_img)
    print(f"model {args.model} on {args.device}, {h}×{w}, step {args.step}: {steps} steps → {forwards} forwards "
          f"(deletion + insertion), perturbation batch {args.batch}, threads {torch.get_num_threads()}")
    print(f"  batched forward per image        {t_fwd_img * 1e3:9.2f} ms")
    print(f"  deletion + insertion (1 image)   {t_both:9.3f} s")
    print(f"  ratio time ÷ (forwards × fwd/img) {ratio:8.3f}   (target ≤ 1.1)")
    # reference: the forward-free metrics and AD/IC on the same image
    s = M.saliency(heat, (h, w))
    g = M.boxes_mask([(60, 40, 180, 200)], (h, w))[None].to(s.device)
    t_loc = timeit(lambda: (M.pointing_game(s, g), M.energy_pointing_game(s, g), M.bbox_score(s, g),
                            M.iou(s, g)), repeat=5)
    t_ad = timeit(lambda: M.confidence_pair(model, x, heat, target, mean=mean, std=std), repeat=3)
    print(f"  pointing + EBPG + Bbox + IoU     {t_loc * 1e3:9.2f} ms   ({t_loc / t_fwd_img:.2f}× fwd/img)")
    print(f"  AD/IC pair (2 forwards)          {t_ad * 1e3:9.2f} ms   ({t_ad / t_fwd_img:.2f}× fwd/img)")


if __name__ == "__main__":
    main()
