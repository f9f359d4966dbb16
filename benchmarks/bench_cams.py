"""Benchmarks of the CAM baselines and Relevance-CAM (CPU by default; run: python benchmarks/bench_cams.py).

Each figure is the median of a few repeats after one warm-up and is printed as a ratio to its peer:
  gradcam   Grad-CAM, resnet50, batch 8, 224 px: cnnlens vs pytorch-grad-cam GradCAM (target ≤ 0.5×) and vs one plain
            forward+backward (parameters requiring grad, loss.backward()).
  scorecam  Score-CAM (variant="gc", equal maps), resnet18, 112 px, layer4 (512 channels), one image: cnnlens vs
            pytorch-grad-cam ScoreCAM (target ≤ 0.6×).
  rcam      Relevance-CAM, resnet50, batch 8: the 4-layer sweep (layer1-4) vs one single-layer call at layer4
            (target ≤ 1.15×) and Relevance-CAM vs Grad-CAM at layer4 (target ≤ 2×).
Random weights (timing does not depend on them). Options: --only gradcam,scorecam,rcam --repeats N --device cpu|cuda
--threads N --clock cpu|wall (default: one thread, CPU time, which other processes on a shared machine do not distort).
"""
from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import time

import torch
import torchvision

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))
import cnnlens  # noqa: E402


CLOCK = {"clock": time.perf_counter}


def time_all(fns, repeats: int, device: str) -> list[float]:
    """Median seconds of each fn, measured round-robin (one warm-up each, then ``repeats`` rounds alternating the
    functions), so that load from other processes on a shared machine affects every contestant alike. The minimum of
    each is printed too (the least disturbed run). The clock is wall time or this process's CPU time (--clock)."""
    clock = CLOCK["clock"]
    def sync():
        if device == "cuda":
            torch.cuda.synchronize()
    for fn in fns:
        fn()
        sync()
    times = [[] for _ in fns]
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            t0 = clock()
            fn()
            sync()
            times[i].append(clock() - t0)
    print("    min: " + ", ".join(f"{fn.__name__} {min(t):.3f}s" for fn, t in zip(fns, times)))
    return [statistics.median(t) for t in times]


def _trainable_copy(model):
    m2 = copy.deepcopy(model).eval()
    for p in m2.parameters():
        p.requires_grad_(True)
    return m2


def bench_gradcam(repeats: int, device: str) -> None:
    from pytorch_grad_cam import GradCAM
    torch.manual_seed(0)
    model = torchvision.models.resnet50().eval().to(device)
    frozen = model.requires_grad_(False)
    x = torch.randn(8, 3, 224, 224, device=device)
    oracle_model = _trainable_copy(model)

    def ours():
        return cnnlens.explain(frozen, x, "grad-cam", layer="layer4")

    def theirs():
        with GradCAM(model=oracle_model, target_layers=[oracle_model.layer4]) as cam:
            return cam(input_tensor=x, targets=None)

    def plain():
        oracle_model.zero_grad(set_to_none=True)
        logits = oracle_model(x)
        logits.max(dim=1).values.sum().backward()

    t_ours, t_gc, t_fb = time_all([ours, theirs, plain], repeats, device)
    print(f"[gradcam] resnet50 b8 224px {device}: cnnlens {t_ours:.3f}s | pytorch-grad-cam {t_gc:.3f}s | "
          f"plain fwd+bwd {t_fb:.3f}s")
    print(f"[gradcam] ratio cnnlens / pytorch-grad-cam = {t_ours / t_gc:.2f}x (target <= 0.5x); "
          f"cnnlens / plain fwd+bwd = {t_ours / t_fb:.2f}x")


def bench_scorecam(repeats: int, device: str) -> None:
    from pytorch_grad_cam import ScoreCAM
    import torch.nn.functional as F
    torch.manual_seed(0)
    model = torchvision.models.resnet18().eval().to(device).requires_grad_(False)
    x = torch.randn(1, 3, 112, 112, device=device)
    oracle_model = _trainable_copy(model)
    out = {}

    def ours():
        out["ours"] = cnnlens.explain(model, x, "score-cam", layer="layer4", variant="gc")   # chunks of 64 (auto at 112 px)

    def theirs():
        with ScoreCAM(model=oracle_model, target_layers=[oracle_model.layer4]) as cam:   # its default: chunks of 16
            out["gc"] = cam(input_tensor=x, targets=None)

    def ours_128():
        cnnlens.explain(model, x, "score-cam", layer="layer4", variant="gc", batch_size=128)

    def theirs_128():
        with ScoreCAM(model=oracle_model, target_layers=[oracle_model.layer4]) as cam:
            cam.batch_size = 128
            cam(input_tensor=x, targets=None)

    import contextlib
    import io
    with contextlib.redirect_stderr(io.StringIO()):  # pytorch-grad-cam's own tqdm bars
        t_ours, t_gc, t_ours128, t_gc128 = time_all([ours, theirs, ours_128, theirs_128], repeats, device)
    raw = torch.relu(out["ours"].raw.float().cpu())
    flat = raw.reshape(1, -1)
    cam = ((flat - flat.min()) / (flat.max() - flat.min() + 1e-7)).reshape(raw.shape)
    cam = F.interpolate(cam[:, None], size=(112, 112), mode="bilinear", align_corners=False)[:, 0]
    cam = (cam - cam.min()) / (cam.max() - cam.min() + 1e-7)
    err = (cam - torch.from_numpy(out["gc"])).abs().max().item()
    print(f"[scorecam] resnet18 112px layer4 (512 ch) b1 {device}, each at its default chunking (cnnlens auto = 64 at 112 px; pytorch-grad-cam 16): cnnlens "
          f"{t_ours:.3f}s | pytorch-grad-cam {t_gc:.3f}s | max |map diff| {err:.2e}")
    print(f"[scorecam] ratio cnnlens / pytorch-grad-cam = {t_ours / t_gc:.2f}x (target <= 0.6x)")
    print(f"[scorecam] both in chunks of 128: cnnlens {t_ours128:.3f}s | pytorch-grad-cam {t_gc128:.3f}s | ratio "
          f"{t_ours128 / t_gc128:.2f}x")


def bench_scorecam_real(repeats: int, device: str) -> None:
    """Score-CAM with real weights on a real photo: EfficientNet-Lite0 (bundled ImageNet weights), chelsea, 224 px,
    layer bn2 (1280 channels, 7×7). Most channels of a real net's last layer are exactly zero after its ReLU6 on any
    one image; cnnlens never forwards their (all-zero) masks, pytorch-grad-cam forwards every channel."""
    from pytorch_grad_cam import ScoreCAM
    import torch.nn.functional as F
    from cnnlens.ops import minmax
    import contextlib
    import io
    model = cnnlens.load_model("efficientnet_lite0").to(device).requires_grad_(False)
    x = cnnlens.load_image("chelsea", model).to(device)
    oracle_model = _trainable_copy(model)
    a = {}
    with torch.no_grad():
        handle = model.bn2.register_forward_hook(lambda m, i, o: a.setdefault("bn2", o.detach()))
        model(x)
        handle.remove()
    flat = a["bn2"].flatten(2)
    constant = int((flat.amax(2) == flat.amin(2)).sum())
    out = {}

    def ours():
        out["ours"] = cnnlens.explain(model, x, "score-cam", layer="bn2", variant="gc")

    def theirs():
        with ScoreCAM(model=oracle_model, target_layers=[oracle_model.bn2]) as cam:
            out["gc"] = cam(input_tensor=x, targets=None)

    def plain():
        cnnlens.explain(model, x, "score-cam", layer="bn2", variant="gc", fast_forward=False)

    with contextlib.redirect_stderr(io.StringIO()):
        t_ours, t_gc, t_plain = time_all([ours, theirs, plain], repeats, device)
    gc_map = torch.from_numpy(out["gc"])
    # pytorch-grad-cam's output is min-max(resize(min-max(raw))) (it rescales after the resize); cnnlens's display map
    # (cams.md §1) is resize(min-max(raw)): compare the raw maps through its post-processing, as the resnet18 row
    raw = torch.relu(out["ours"].raw.float().cpu())
    cam = F.interpolate(minmax(raw)[:, None], size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    err = (minmax(cam) - gc_map).abs().max().item()
    err_display = (out["ours"].heatmap.float().cpu() - gc_map).abs().max().item()
    print(f"[scorecam-real] efficientnet_lite0 (real weights) chelsea 224px bn2 ({flat.shape[1]} ch, {constant} "
          f"constant → not forwarded by cnnlens) b1 {device}: cnnlens {t_ours:.3f}s | pytorch-grad-cam {t_gc:.3f}s | "
          f"max |map diff| {err:.2e} (display map, no rescale after the resize: {err_display:.2e})")
    print(f"[scorecam-real] ratio cnnlens / pytorch-grad-cam = {t_ours / t_gc:.2f}x (target <= 0.6x); "
          f"fast_forward=False {t_plain:.3f}s, default / plain = {t_ours / t_plain:.2f}x")


def bench_rcam(repeats: int, device: str) -> None:
    if "relevance-cam" not in cnnlens.METHODS:
        print("[rcam] relevance-cam is not available on this branch; skipped")
        return
    torch.manual_seed(0)
    model = torchvision.models.resnet50().eval().to(device).requires_grad_(False)
    x = torch.randn(8, 3, 224, 224, device=device)
    layers = ["layer1", "layer2", "layer3", "layer4"]

    def sweep():
        return cnnlens.explain(model, x, "relevance-cam", layer=layers)

    def single():
        return cnnlens.explain(model, x, "relevance-cam", layer="layer4")

    def single_l1():
        return cnnlens.explain(model, x, "relevance-cam", layer="layer1")

    def gradcam():
        return cnnlens.explain(model, x, "grad-cam", layer="layer4")

    t_sweep, t_single, t_l1, t_gc = time_all([sweep, single, single_l1, gradcam], repeats, device)
    print(f"[rcam] resnet50 b8 224px {device}: sweep layer1-4 {t_sweep:.3f}s | layer4 {t_single:.3f}s | "
          f"layer1 {t_l1:.3f}s | Grad-CAM layer4 {t_gc:.3f}s")
    print(f"[rcam] ratio sweep(4 layers) / single layer1 (same backward depth) = {t_sweep / t_l1:.2f}x (target <= 1.15x)")
    print(f"[rcam] ratio sweep(4 layers) / single layer4 = {t_sweep / t_single:.2f}x; "
          f"4 separate calls would be {(t_single + t_l1) / t_single:.2f}x+ (layer1 + layer4 alone)")
    print(f"[rcam] ratio Relevance-CAM / Grad-CAM at layer4 = {t_single / t_gc:.2f}x (target <= 2x)")


def add_timing_args(ap: argparse.ArgumentParser) -> None:
    """--repeats, --device, --threads, --clock (shared by the CAM benchmarks)."""
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch CPU threads (default 1: with --clock cpu the figures do not depend on other load)")
    ap.add_argument("--clock", choices=["cpu", "wall"], default="cpu",
                    help="cpu = this process's CPU time (robust on a shared machine, use with --threads 1); wall = "
                         "elapsed time (use on a dedicated machine or GPU)")


def apply_timing_args(args: argparse.Namespace) -> None:
    """Set the thread count and the clock (wall time on a GPU) and print them."""
    torch.set_num_threads(args.threads)
    if args.device == "cuda":
        args.clock = "wall"
    CLOCK["clock"] = time.process_time if args.clock == "cpu" else time.perf_counter
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, device {args.device}, clock {args.clock}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", default="gradcam,scorecam,scorecam-real,rcam")
    add_timing_args(ap)
    args = ap.parse_args()
    apply_timing_args(args)
    benches = {"gradcam": bench_gradcam, "scorecam": bench_scorecam, "scorecam-real": bench_scorecam_real,
               "rcam": bench_rcam}
    for name in args.only.split(","):
        benches[name.strip()](args.repeats, args.device)


if __name__ == "__main__":
    main()
