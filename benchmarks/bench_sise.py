"""SISE and RISE overhead and memory benchmark (sise.md §5 cost model: the masked forwards dominate).

Run: ``python benchmarks/bench_sise.py`` (CPU; a few minutes). Prints

1. time: SISE on ResNet-50 (random weights, 224 px, reduced layer set ``relu,layer1`` with every non-flat map kept,
   so K ≈ 320 is known) and RISE (64 masks), each as
   total time ÷ (masks scored × per-image forward time at the same batch size), measured in the same run.
   Target ≤ 1.10: everything beyond the masked forwards (selection pass, mask building, accumulation, fusion) costs
   < 10 %. On a shared CPU the forward time drifts between measurements, so the run also times every model call
   with hooks and prints total ÷ (time inside the masked forwards of that same run).
2. memory: peak RSS of a fresh subprocess running SISE with few vs many masks on one wide layer (1024 maps at 56²,
   224 px input). All masks at once would add K·224²·4 B (≈ 200 MB for K = 1024, plus 3× that for masked inputs);
   the batched implementation's peak must not grow with K.

``--device cuda``: model and input on the GPU, every timed region (and every model call the run times) ends with a
synchronize, and the memory figure is the allocator's peak (``torch.cuda.max_memory_allocated``) instead of RSS.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
import cnnlens  # noqa: E402

KEEP_ALL = -1e9          # µ with β > 0: every map with α > −1e9·β passes (all non-flat maps are scored)


def _sync(x: torch.Tensor) -> None:
    if x.is_cuda:
        torch.cuda.synchronize(x.device)


def per_image_forward(model: nn.Module, x: torch.Tensor, batch: int, repeats: int = 3) -> float:
    """Median seconds per image of a no-grad forward at ``batch`` (after one warm-up)."""
    xb = x.expand(batch, -1, -1, -1).contiguous()
    times = []
    with torch.inference_mode():
        model(xb)
        _sync(xb)
        for _ in range(repeats):
            t0 = time.perf_counter()
            model(xb)
            _sync(xb)
            times.append(time.perf_counter() - t0)
    return statistics.median(times) / batch


class CallTimer:
    """Forward pre/post hooks on the model's root timing every call: separates the masked forwards from the rest of
    a run, so the overhead figure does not depend on load drift between separate measurements."""

    def __init__(self, model: nn.Module):
        self.model, self.calls, self._t0, self._c0 = model, [], 0.0, 0.0

    def __enter__(self):
        self._h = [self.model.register_forward_pre_hook(self._pre), self.model.register_forward_hook(self._post)]
        self.calls.clear()
        return self

    def __exit__(self, *exc):
        for h in self._h:
            h.remove()

    def _pre(self, module, inputs):
        _sync(inputs[0])
        self._t0, self._c0 = time.perf_counter(), time.process_time()

    def _post(self, module, inputs, output):
        _sync(inputs[0])
        # (batch, wall start, wall seconds, process CPU seconds)
        self.calls.append((inputs[0].shape[0], self._t0, time.perf_counter() - self._t0,
                           time.process_time() - self._c0))


def bench_time(batch: int, layers: list[str], rise_masks: int, device: str = "cpu") -> None:
    import torchvision
    torch.manual_seed(0)
    model = torchvision.models.resnet50().eval().to(device)
    x = torch.rand(1, 3, 224, 224).to(device)
    fwd_before = per_image_forward(model, x, batch)

    timer = CallTimer(model)
    with timer, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t0, c0 = time.perf_counter(), time.process_time()
        e = cnnlens.explain(model, x, "sise", layer=layers, mu=KEEP_ALL, batch_size=batch)
        _sync(x)
        t_sise, c_sise = time.perf_counter() - t0, time.process_time() - c0
    k = e.extras["n_forwards"]
    sise_masked = sum(c[2] for c in timer.calls[1:])            # call 0: the selection forward (+ its backward)
    sise_masked_cpu = sum(c[3] for c in timer.calls[1:])
    sise_select_fwd = timer.calls[0][2]
    sise_selection = timer.calls[1][1] - t0                       # start → first masked forward

    with timer:
        t0, c0 = time.perf_counter(), time.process_time()
        cnnlens.explain(model, x, "rise", n_masks=rise_masks, batch_size=batch, seed=0)
        _sync(x)
        t_rise, c_rise = time.perf_counter() - t0, time.process_time() - c0
    rise_masked = sum(c[2] for c in timer.calls[1:])            # call 0: the clean forward
    rise_masked_cpu = sum(c[3] for c in timer.calls[1:])

    fwd_after = per_image_forward(model, x, batch)
    fwd = statistics.median([fwd_before, fwd_after])
    where = "CPU" if device == "cpu" else device
    print(f"resnet50 224px {where} ({torch.get_num_threads()} threads), batch {batch}: per-image forward "
          f"{fwd * 1e3:.1f} ms (before {fwd_before * 1e3:.1f}, after {fwd_after * 1e3:.1f})")
    print(f"  SISE  layers {','.join(layers)}, K = {k} masks: {t_sise:.2f} s  → ratio {t_sise / (k * fwd):.3f} "
          f"(ideal K·fwd = {k * fwd:.2f} s; includes the selection forward+backward, whose forward alone took "
          f"{sise_select_fwd:.2f} s)")
    print(f"        in-run: masked forwards {sise_masked:.2f} s ({sise_masked / k * 1e3:.1f} ms/image) → "
          f"total ÷ masked-forward time = {t_sise / sise_masked:.3f}; CPU time: {c_sise / sise_masked_cpu:.3f}")
    print(f"        selection pass (forward + backward + selection, fixed per image): {sise_selection:.2f} s; "
          f"without it: {(t_sise - sise_selection) / sise_masked:.3f}")
    print(f"  RISE  N = {rise_masks} masks: {t_rise:.2f} s  → ratio {t_rise / (rise_masks * fwd):.3f} "
          f"(includes the clean forward)")
    print(f"        in-run: masked forwards {rise_masked:.2f} s ({rise_masked / rise_masks * 1e3:.1f} ms/image) → "
          f"total ÷ masked-forward time = {t_rise / rise_masked:.3f}; CPU time: {c_rise / rise_masked_cpu:.3f}")


class WideNet(nn.Module):
    """Cheap net with one wide 56² tap (1024 maps): many masks at little forward cost. ``active``: how many of its
    channels vary (the others are constant zero, which Score-CAM never forwards; bench_memory uses it)."""

    def __init__(self, active: int = 1024):
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 4, stride=4)
        self.act0 = nn.ReLU()
        self.wide = nn.Conv2d(16, 1024, 1)
        self.act1 = nn.ReLU()
        self.fc = nn.Linear(1024, 10)
        with torch.no_grad():
            self.wide.weight[active:] = 0
            self.wide.bias[active:] = -1.0                 # ReLU → constant 0 maps

    def forward(self, x):
        return self.fc(self.act1(self.wide(self.act0(self.stem(x)))).mean(dim=(2, 3)))


def memory_worker(mu: float, batch: int, device: str = "cpu") -> None:
    from _timing import peak_memory_kib, start_peak_memory
    torch.manual_seed(0)
    model = WideNet().eval().to(device)
    x = torch.rand(1, 3, 224, 224).to(device)
    if device != "cpu":
        start_peak_memory(device)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        e = cnnlens.explain(model, x, "sise", layer=["act1"], mu=mu, batch_size=batch)
    peak_kib = peak_memory_kib(device)  # VmHWM: ru_maxrss would report the parent's peak if higher
    print(json.dumps({"k": e.extras["n_forwards"], "peak_mib": peak_kib / 1024}))


def bench_memory(batch: int, device: str = "cpu") -> None:
    rows = []
    for mu in (0.75, 0.5, KEEP_ALL):   # every K ≥ batch, so each run has full batches
        out = subprocess.run([sys.executable, __file__, "--memory-worker", str(mu), "--batch", str(batch),
                              "--device", device],
                             check=True, capture_output=True, text=True, env={**os.environ}).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
    label = "peak RSS" if device == "cpu" else f"peak CUDA allocated ({device})"
    print(f"{label}, SISE on a 1024-map 56² tap at 224 px, batch {batch} (fresh subprocess each):")
    for r in rows:
        print(f"  K = {r['k']:5d} masks: {r['peak_mib']:.0f} MiB")
    base = rows[0]
    for r in rows[1:]:
        all_at_once = (r["k"] - base["k"]) * 224 * 224 * 4 / 2 ** 20
        print(f"  growth K {base['k']} → {r['k']}: {r['peak_mib'] - base['peak_mib']:+.0f} MiB "
              f"(materialising the extra masks alone would add {all_at_once:.0f} MiB, masked inputs 3× more)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--memory-worker", type=float, default=None)
    ap.add_argument("--layers", default="relu,layer1", help="SISE layers of resnet50 (every non-flat map is scored)")
    ap.add_argument("--rise-masks", type=int, default=64)
    ap.add_argument("--skip-time", action="store_true")
    ap.add_argument("--skip-memory", action="store_true")
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    args = ap.parse_args()
    if args.memory_worker is not None:
        memory_worker(args.memory_worker, args.batch, args.device)
        return
    if not args.skip_time:
        bench_time(args.batch, args.layers.split(","), args.rise_masks, args.device)
    if not args.skip_memory:
        bench_memory(args.batch, args.device)


if __name__ == "__main__":
    main()
