"""Benchmarks of the LRP-family methods through ``cnnlens.explain`` (run: python benchmarks/bench_lrp_methods.py).

vgg16 and resnet50, batch 8, 224 px, CPU: LRP (``dtd``), Deep Taylor, SGLRP (paper: one signed pass), SGLRP
(``mode="reference"``: target and dual rows over one shared forward) and CLRP (official: two rows) against the same
number of zennit passes with the same rules (bias-free z⁺, zB first layer; tests/_lrp_oracle.py builds it, and it is the
oracle the tests compare with) and against one plain forward+backward (parameters requiring grad, ``.backward()``), all
measured round-robin in one process (load from other processes hits every contestant alike). The engine pass alone is
benchmarks/bench_lrp.py.  Options: --models vgg16 resnet50 --repeats N --threads N
--device cpu|cuda (cuda: every timed call ends with a synchronize).
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

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, os.path.join(ROOT, "src"))
sys.path.insert(0, os.path.join(ROOT, "tests"))
import cnnlens  # noqa: E402

METHODS = [("lrp", {}, 1), ("deep-taylor", {}, 1), ("sglrp", {}, 1), ("sglrp", {"mode": "reference"}, 2),
           ("clrp", {}, 2)]


def run(model_name: str, repeats: int, device: str = "cpu") -> None:
    from _lrp_oracle import zennit_composite, zennit_relevance
    torch.manual_seed(0)
    model = getattr(torchvision.models, model_name)().eval().to(device)
    x = torch.randn(8, 3, 224, 224, generator=torch.Generator().manual_seed(1)).to(device)
    twin = copy.deepcopy(model)
    trainable = copy.deepcopy(model).requires_grad_(True)
    with torch.no_grad():
        targets = model(x).argmax(1)
    r0 = torch.nn.functional.one_hot(targets, 1000).float()
    comp = zennit_composite("dtd", twin)

    def plain():
        trainable.zero_grad(set_to_none=True)
        trainable(x).gather(1, targets[:, None]).sum().backward()

    def zennit_pass():
        zennit_relevance(twin, x.clone().requires_grad_(), r0, comp)
    fns = {"plain fwd+bwd": plain, "zennit dtd pass": zennit_pass}
    for name, opts, _ in METHODS:
        label = name + ("" if not opts else " " + ",".join(f"{k}={v}" for k, v in opts.items()))
        fns[label] = (lambda name=name, opts=opts: cnnlens.explain(model, x, name, **opts))
    def sync():
        if device == "cuda":
            torch.cuda.synchronize()
    for fn in fns.values():
        fn()  # warm-up
        sync()
    times = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            sync()
            times[k].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    fb, zp = med["plain fwd+bwd"], med["zennit dtd pass"]
    where = "" if device == "cpu" else f", {device}"
    print(f"\n{model_name}, batch 8, 224 px{where}, {torch.get_num_threads()} threads (median of {repeats}):")
    passes = {"plain fwd+bwd": 0, "zennit dtd pass": 1}
    passes.update({k: p for k, (_, _, p) in zip(list(fns)[2:], METHODS)})
    for k, t in med.items():
        peer = f"{t / (zp * passes[k]):5.2f}x zennit x{passes[k]}" if passes[k] else ""
        print(f"  {k:<24} {t:7.3f} s  {t / fb:5.2f}x fwd+bwd  {peer}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["vgg16", "resnet50"])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    for m in args.models:
        run(m, args.repeats, args.device)


if __name__ == "__main__":
    main()
