"""LRP cost per architecture family (issue 18 item 6): one LRP pass (``lrp_attribute``, composite epsilon-plus, the
engine every LRP-family method runs on) against one plain forward + backward (gradient of the summed target logits
w.r.t. the input, ``torch.autograd.grad``) of the same random-init model, batch 8, 224 px, float32, all in the same
run. Goal: LRP ≤ 1.5× forward+backward in time and in peak memory on every family.

Time: median of ``--repeat`` round-robin repeats after one warm-up, both configurations of a model in one process (load
from other processes hits both alike). Memory: each (model, configuration) in its own process; the peak-RSS increase of
one pass over torch + model + input + one no-grad forward (LRP: its first pass, tracing included, as
bench_lrp.py; CUDA: the allocator's peak over what is allocated before
the pass). A model the engine cannot explain is listed with the error instead of figures.

    python benchmarks/bench_lrp_families.py [--models tv:resnet50 timm:ghostnet_100 ...] [--batch 8] [--size 224]
                                            [--repeat 3] [--threads 2] [--device cpu|cuda] [--no-memory]
                                            [--markdown table.md]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ("forward+backward", "lrp")

#: one representative per family (issue 18's list); ``tv:`` torchvision, ``timm:`` timm
FAMILIES = {
    "tv:vgg16": "VGG",
    "tv:resnet50": "ResNet",
    "tv:resnext50_32x4d": "ResNeXt (grouped conv)",
    "tv:densenet121": "DenseNet (concatenation)",
    "tv:inception_v3": "Inception (branches)",
    "tv:mobilenet_v2": "MobileNetV2 (linear bottleneck)",
    "tv:mobilenet_v3_large": "MobileNetV3 (SE, Hardswish)",
    "tv:efficientnet_b0": "EfficientNet (SE, SiLU)",
    "tv:efficientnet_v2_s": "EfficientNetV2 (fused MBConv, stochastic depth)",
    "tv:regnet_y_400mf": "RegNetY (SE)",
    "tv:shufflenet_v2_x1_0": "ShuffleNetV2 (split, channel shuffle)",
    "tv:convnext_tiny": "ConvNeXt (LayerNorm, GELU, layer scale)",
    "timm:seresnext26d_32x4d": "SE-ResNeXt",
    "timm:ghostnet_100": "GhostNet (ghost modules, SE)",
    "timm:res2net50_26w_4s": "Res2Net (split, hierarchical residual)",
    "timm:cspresnet50": "CSPNet (cross-stage split)",
    "timm:dla34": "DLA (aggregation trees)",
    "timm:hrnet_w18_small": "HRNet (multi-resolution, Upsample)",
}


def build(spec: str):
    import torch
    torch.manual_seed(0)
    source, name = spec.split(":", 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if source == "tv":
            import torchvision
            kwargs = {"init_weights": False, "aux_logits": False} if name in ("googlenet", "inception_v3") else {}
            return getattr(torchvision.models, name)(**kwargs).eval()
        import timm
        return timm.create_model(name, pretrained=False).eval()


def _runner(spec: str, config: str, batch: int, size: int, device: str):
    """A no-argument callable doing one pass of ``config`` (raises if the engine cannot explain the model)."""
    import torch
    sys.path.insert(0, str(ROOT / "src"))
    model = build(spec).to(device)
    x = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(1)).to(device)
    with torch.no_grad():
        logits = model(x)
    target = logits.argmax(1)
    r0 = torch.nn.functional.one_hot(target, logits.shape[1]).to(logits.dtype)
    if config == "forward+backward":
        def run():
            xi = x.detach().requires_grad_()
            score = model(xi).gather(1, target[:, None]).sum()
            torch.autograd.grad(score, xi)
    elif config == "lrp":
        from cnnlens.lrp import lrp_attribute

        def run():
            lrp_attribute(model, x, r0, "epsilon-plus")
    else:
        raise SystemExit(f"unknown config {config}")
    return run


def _interleaved(spec: str, repeat: int, batch: int, size: int, threads: int, device: str) -> dict:
    import torch
    from _timing import interleaved_medians
    torch.set_num_threads(threads)
    return interleaved_medians({c: _runner(spec, c, batch, size, device) for c in CONFIGS}, repeat, device)


def _child(spec: str, config: str, batch: int, size: int, threads: int, device: str) -> dict:
    import torch
    torch.set_num_threads(threads)
    run = _runner(spec, config, batch, size, device)
    from _timing import peak_memory_kib, start_peak_memory
    before = start_peak_memory(device)
    run()
    after = peak_memory_kib(device)
    return {"extra_peak_mib": (after - before) / 1024}


def _memory(spec: str, config: str, args) -> float | None:
    out = subprocess.run([sys.executable, __file__, "--child", spec, config, "--batch", str(args.batch), "--size",
                          str(args.size), "--threads", str(args.threads), "--device", args.device],
                         capture_output=True, text=True)
    if out.returncode != 0:
        return None
    return json.loads(out.stdout.strip().splitlines()[-1])["extra_peak_mib"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=list(FAMILIES))
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--no-memory", action="store_true", help="skip the per-configuration peak-memory processes")
    ap.add_argument("--markdown", help="also write the table to this file")
    ap.add_argument("--child", nargs=2, metavar=("MODEL", "CONFIG"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    if args.child:
        print(json.dumps(_child(args.child[0], args.child[1], args.batch, args.size, args.threads, args.device)))
        return
    from _timing import memory_label
    header = (f"LRP (epsilon-plus) vs forward+backward, random init, batch {args.batch}, {args.size} px, "
              f"{args.device.upper()}, float32, {args.threads} threads; time: median of {args.repeat} round-robin "
              f"repeats after 1 warm-up; memory: {memory_label(args.device)} increase of one pass, each configuration "
              f"in its own process")
    print(header, flush=True)
    lines = ["| family | model | fwd+bwd s | LRP s | time ÷ fwd+bwd | fwd+bwd MiB | LRP MiB | memory ÷ autograd |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for spec in args.models:
        family = FAMILIES.get(spec, "")
        try:
            rows = _interleaved(spec, args.repeat, args.batch, args.size, args.threads, args.device)
        except Exception as exc:  # noqa: BLE001 - an unsupported model is a row of the table
            msg = f"{type(exc).__name__}: {str(exc).splitlines()[0][:120]}"
            print(f"{spec}: {msg}", flush=True)
            lines.append(f"| {family} | {spec} | | | {msg} | | | |")
            continue
        fb, lrp = rows["forward+backward"]["median_s"], rows["lrp"]["median_s"]
        mem = {c: None for c in CONFIGS} if args.no_memory else {c: _memory(spec, c, args) for c in CONFIGS}
        ratio_m = (f"{mem['lrp'] / mem['forward+backward']:.2f}×"
                   if mem["lrp"] is not None and mem["forward+backward"] else "")
        fmt = (lambda v: "" if v is None else f"{v:.0f}")
        print(f"{spec:28s} fwd+bwd {fb:7.3f} s  lrp {lrp:7.3f} s  {lrp / fb:5.2f}×   memory fwd+bwd "
              f"{fmt(mem['forward+backward'])} MiB  lrp {fmt(mem['lrp'])} MiB  {ratio_m}  "
              f"(times fwd+bwd {', '.join(f'{t:.2f}' for t in rows['forward+backward']['times'])}; "
              f"lrp {', '.join(f'{t:.2f}' for t in rows['lrp']['times'])})", flush=True)
        lines.append(f"| {family} | {spec} | {fb:.3f} | {lrp:.3f} | {lrp / fb:.2f}× | {fmt(mem['forward+backward'])} "
                     f"| {fmt(mem['lrp'])} | {ratio_m} |")
    table = "\n".join(lines)
    print("\n" + table)
    if args.markdown:
        Path(args.markdown).write_text(header + "\n\n" + table + "\n")


if __name__ == "__main__":
    main()
