"""LRP engine cost (lrp_sglrp_clrp.md §10): one epsilon-plus pass on resnet50 and vgg16 (random weights, batch 8,
224 px, CPU, float32) against zennit 0.5.1's EpsilonPlus with its canonizers and against one plain forward + backward
(gradient of the summed target logits w.r.t. the input only, ``torch.autograd.grad``; and ``fwd+bwd+wgrad``, a
``.backward()`` that also computes every weight gradient, as ``benchmarks/_timing.forward_backward``), all in the same
run. Each configuration runs in its own
subprocess for the memory figure (peak RSS, VmHWM, after − before one pass); times are taken round-robin
in one process so that load from other processes hits every configuration alike.

    python benchmarks/bench_lrp.py [--models resnet50 vgg16] [--repeat 3] [--batch 8] [--size 224] [--threads 2]\n                                   [--configs ...] [--no-memory]
                                   [--device cpu|cuda]
(cuda: synchronised timing; the memory figure is the peak CUDA allocation instead of RSS)
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

CONFIGS = ("forward+backward", "fwd+bwd+wgrad", "cnnlens", "cnnlens-cold", "zennit")


def _runner(model_name: str, config: str, batch: int, size: int, device: str = "cpu"):
    """A no-argument callable doing one pass of ``config`` (each config gets its own model copy)."""
    import torch
    import torchvision
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    torch.manual_seed(0)
    model = getattr(torchvision.models, model_name)().eval().to(device)
    x = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(1)).to(device)
    with torch.no_grad():
        target = model(x).argmax(1)
    r0 = torch.nn.functional.one_hot(target, 1000).float()
    if config == "forward+backward":
        def run():
            xi = x.detach().requires_grad_()
            score = model(xi).gather(1, target[:, None]).sum()
            torch.autograd.grad(score, xi)
    elif config == "fwd+bwd+wgrad":  # benchmarks/_timing.forward_backward: .backward() also fills weight grads
        def run():
            model.zero_grad(set_to_none=True)
            xi = x.detach().requires_grad_()
            model(xi).gather(1, target[:, None]).sum().backward()
    elif config in ("cnnlens", "cnnlens-cold"):
        from cnnlens.lrp import clear_cache, lrp_attribute

        def run():
            if config == "cnnlens-cold":
                clear_cache()  # includes tracing + BN folding every call
            lrp_attribute(model, x, r0, "epsilon-plus")
    elif config == "zennit":
        from zennit.attribution import Gradient
        from zennit.composites import EpsilonPlus
        from zennit.torchvision import ResNetCanonizer, VGGCanonizer
        canon = ResNetCanonizer() if "resnet" in model_name else VGGCanonizer()
        composite = EpsilonPlus(canonizers=[canon])
        attributor = Gradient(model=model, composite=composite)
        attributor.__enter__()  # hooks registered once: zennit's best case

        def run():
            attributor(x.detach().requires_grad_(), attr_output=r0)
    else:
        raise SystemExit(f"unknown config {config}")
    return run


def _interleaved(model_name: str, configs, repeat: int, batch: int, size: int, threads: int,
                 device: str = "cpu") -> dict:
    """Time every config round-robin in one process, so load from other processes hits all of them alike."""
    import torch
    from _timing import interleaved_medians
    torch.set_num_threads(threads)
    return interleaved_medians({c: _runner(model_name, c, batch, size, device) for c in configs}, repeat, device)


def _child(model_name: str, config: str, batch: int, size: int, threads: int, device: str = "cpu") -> dict:
    """Peak-memory increase of one pass of ``config`` over torch + model + input, in a fresh process (peak RSS; on
    CUDA the allocator's peak over what is allocated before the pass)."""
    import torch
    torch.set_num_threads(threads)
    run = _runner(model_name, config, batch, size, device)
    from _timing import peak_memory_kib, start_peak_memory
    before = start_peak_memory(device)
    run()
    after = peak_memory_kib(device)
    return {"extra_peak_mib": (after - before) / 1024}



def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["resnet50", "vgg16"])
    ap.add_argument("--configs", nargs="+", default=list(CONFIGS))
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-memory", action="store_true", help="skip the per-config peak-RSS subprocesses")
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--child", nargs=2, metavar=("MODEL", "CONFIG"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(_child(args.child[0], args.child[1], args.batch, args.size, args.threads, args.device)))
        return
    from _timing import memory_label
    mem_label = memory_label(args.device)
    print(f"LRP epsilon-plus, batch {args.batch}, {args.size} px, {args.device.upper()}, float32, {args.threads} "
          f"threads; time: median of "
          f"{args.repeat} round-robin repeats after 1 warm-up, all configs in one process; memory: peak-RSS increase of "
          f"one pass over torch+model+input(+one no-grad forward), each config in its own process"
          + ("" if args.device == "cpu" else f" ({mem_label})"))
    for model_name in args.models:
        rows = _interleaved(model_name, args.configs, args.repeat, args.batch, args.size, args.threads, args.device)
        for config in args.configs:
            if args.no_memory:
                continue
            out = subprocess.run([sys.executable, __file__, "--child", model_name, config, "--batch", str(args.batch),
                                  "--size", str(args.size), "--threads", str(args.threads),
                                  "--device", args.device], capture_output=True,
                                 text=True)
            if out.returncode == 0:
                rows[config].update(json.loads(out.stdout.strip().splitlines()[-1]))
        print(f"\n{model_name}:")
        base = rows.get("forward+backward")
        base_w = rows.get("fwd+bwd+wgrad")
        zen = rows.get("zennit")
        for config, r in rows.items():
            ratio_fb = f"{r['median_s'] / base['median_s']:5.2f}x fwd+bwd" if base else ""
            if base_w:
                ratio_fb += f" {r['median_s'] / base_w['median_s']:5.2f}x fwd+bwd+wgrad"
            ratio_z = f"{r['median_s'] / zen['median_s']:5.2f}x zennit" if zen else ""
            mem = f"{mem_label} +{r['extra_peak_mib']:6.0f} MiB" if "extra_peak_mib" in r else ""
            print(f"  {config:<17} {r['median_s']:8.3f} s  {ratio_fb}  {ratio_z}  {mem}"
                  f"  (times {', '.join(f'{t:.2f}' for t in r['times'])})", flush=True)


if __name__ == "__main__":
    main()
