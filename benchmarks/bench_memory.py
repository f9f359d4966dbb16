"""Peak memory of the masked-forward methods against the number of masks (issue 14, item 2): RISE with few vs many
masks and Score-CAM with few vs many active channels, each in a fresh subprocess (peak RSS = VmHWM), at a fixed chunk.
Memory should stay flat: the masks are built chunk by chunk, never all at once. (SISE: bench_sise.py.)

    python benchmarks/bench_memory.py [--size 112] [--batch 16] [--device cpu|cuda]

On CUDA the figure is the allocator's peak (``torch.cuda.max_memory_allocated``) instead of the peak RSS.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import warnings

import torch

import cnnlens

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_sise import WideNet  # noqa: E402  (the same cheap wide net)


def worker(method: str, count: int, size: int, batch: int, device: str = "cpu") -> None:
    from _timing import peak_memory_kib, start_peak_memory
    torch.manual_seed(0)
    x = torch.rand(1, 3, size, size).to(device)
    if device != "cpu":
        start_peak_memory(device)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if method == "rise":
            model = WideNet().eval().to(device)
            e = cnnlens.explain(model, x, "rise", n_masks=count, batch_size=batch)
            masks = e.extras["n_masks"]
        else:
            model = WideNet(active=count).eval().to(device)
            e = cnnlens.explain(model, x, "score-cam", layer="act1", batch_size=batch)
            masks = int((~e.extras["skipped_channels"]).sum())
    print(json.dumps({"masks": masks, "chunk": e.extras["chunk"], "peak_mib": peak_memory_kib(device) / 1024}))


def run(method: str, counts: list[int], size: int, batch: int, device: str = "cpu") -> None:
    rows = []
    for count in counts:
        out = subprocess.run([sys.executable, __file__, "--worker", method, str(count), "--size", str(size),
                              "--batch", str(batch), "--device", device], check=True, capture_output=True,
                             text=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
    label = "peak RSS" if device == "cpu" else f"peak CUDA allocated ({device})"
    print(f"{label}, {method} on a 1024-map tap at {size} px, chunk {rows[0]['chunk']} (fresh subprocess each):")
    for r in rows:
        print(f"  {r['masks']:5d} masks: {r['peak_mib']:.0f} MiB")
    base, last = rows[0], rows[-1]
    all_at_once = (last["masks"] - base["masks"]) * size * size * 4 / 2 ** 20
    print(f"  growth {base['masks']} → {last['masks']} masks: {last['peak_mib'] - base['peak_mib']:+.0f} MiB "
          f"(materialising the extra masks alone would add {all_at_once:.0f} MiB, the masked inputs 3× more)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=112)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--worker", nargs=2, default=None)
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    args = ap.parse_args()
    if args.worker is not None:
        worker(args.worker[0], int(args.worker[1]), args.size, args.batch, args.device)
        return
    run("rise", [250, 2000], args.size, args.batch, args.device)
    run("score-cam", [128, 1024], args.size, args.batch, args.device)


if __name__ == "__main__":
    main()
