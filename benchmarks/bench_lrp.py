"""LRP engine cost (lrp_sglrp_clrp.md §10): one epsilon-plus pass on resnet50 and vgg16 (random weights, batch 8,
224 px, CPU, float32) against zennit 0.5.1's EpsilonPlus with its canonizers and against one plain forward + backward
(gradient of the summed target logits w.r.t. the input only, ``torch.autograd.grad``; and ``fwd+bwd+wgrad``, a
``.backward()`` that also computes every weight gradient, as ``benchmarks/_timing.forward_backward``), all in the same
run. Each configuration runs in its own
subprocess so its peak-RSS increase (resource.getrusage ru_maxrss after − before the timed calls) is its own.

    python benchmarks/bench_lrp.py [--models resnet50 vgg16] [--repeat 3] [--batch 8] [--size 224] [--threads 2]
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

CONFIGS = ("forward+backward", "fwd+bwd+wgrad", "cnnlens", "cnnlens-cold", "zennit")


def _child(model_name: str, config: str, repeat: int, batch: int, size: int, threads: int) -> dict:
    import torch
    import torchvision
    torch.set_num_threads(threads)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    torch.manual_seed(0)
    model = getattr(torchvision.models, model_name)().eval()
    x = torch.randn(batch, 3, size, size)
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
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # torch + model + input
    run()  # warm-up
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"median_s": statistics.median(times), "times": times, "peak_rss_mib": after / 1024,
            "extra_peak_mib": (after - before) / 1024}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["resnet50", "vgg16"])
    ap.add_argument("--configs", nargs="+", default=list(CONFIGS))
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--child", nargs=2, metavar=("MODEL", "CONFIG"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(_child(args.child[0], args.child[1], args.repeat, args.batch, args.size, args.threads)))
        return
    print(f"LRP epsilon-plus, batch {args.batch}, {args.size} px, CPU, float32, {args.threads} threads, "
          f"median of {args.repeat} after 1 warm-up; peak RSS increase over torch+model+input, each config in its own "
          f"process")
    for model_name in args.models:
        rows = {}
        for config in args.configs:
            out = subprocess.run([sys.executable, __file__, "--child", model_name, config, "--repeat", str(args.repeat),
                                  "--batch", str(args.batch), "--size", str(args.size), "--threads",
                                  str(args.threads)], capture_output=True, text=True)
            if out.returncode != 0:
                print(f"  {model_name} {config}: failed\n{out.stderr[-2000:]}")
                continue
            rows[config] = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"\n{model_name}:")
        base = rows.get("forward+backward")
        base_w = rows.get("fwd+bwd+wgrad")
        zen = rows.get("zennit")
        for config, r in rows.items():
            ratio_fb = f"{r['median_s'] / base['median_s']:5.2f}x fwd+bwd" if base else ""
            if base_w:
                ratio_fb += f" {r['median_s'] / base_w['median_s']:5.2f}x fwd+bwd+wgrad"
            ratio_z = f"{r['median_s'] / zen['median_s']:5.2f}x zennit" if zen else ""
            print(f"  {config:<17} {r['median_s']:8.3f} s  {ratio_fb}  {ratio_z}  peak RSS +{r['extra_peak_mib']:6.0f} MiB"
                  f"  (times {', '.join(f'{t:.2f}' for t in r['times'])})")


if __name__ == "__main__":
    main()
