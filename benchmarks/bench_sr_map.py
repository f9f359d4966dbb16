"""Benchmark: one SR map of a 224×224 LRP map (the context-aware saliency step, sr_map.md §7), CPU or CUDA.

Rows, all in the same run:
  * the vectorised CA at full fidelity (ca_variant="paper", working size 250, every pixel a query);
  * the documented approximations (query_stride, working_size) with their deviation from the full map;
  * the matmul floor: only the distance matmuls of the full setting (same shapes, blocks, dtype and device as the
    implementation), i.e. what the exact map costs at the least on this machine, and the full map's ratio to it;
  * the brute-force loop reference of tests/test_sr_map.py, timed on a small image (48×64, float64 like the test) and
    extrapolated to 224×224 by the number of query×candidate pairs × patch dimension (stated as such);
  * the vectorised CA on that same small image (a same-size ratio);
  * optionally (--lrp) the LRP step on a random-init VGG16 at 224 (one forward + one relevance pass).
Wall time (median after warm-up) and process CPU time are printed: the CPU time is less sensitive to other processes
sharing the machine (on CUDA every timed call ends with a synchronize; the CPU time is then meaningless). Run:
``PYTHONPATH=src python benchmarks/bench_sr_map.py [--threads 1] [--repeat 3] [--lrp] [--device cuda] [--no-loop]``.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "tests"), str(ROOT / "benchmarks")]

from cnnlens.methods import _context_saliency as ca  # noqa: E402
from cnnlens.methods.sr_map import encode_relevance, sr_map_from_relevance  # noqa: E402


def timed(fn, repeat: int, warmup: int, device: torch.device | None = None) -> tuple[float, float, object]:
    """(median wall seconds, median process-CPU seconds, last result); on CUDA each call is synchronised."""
    def call():
        res = fn()
        if device is not None and device.type == "cuda":
            torch.cuda.synchronize(device)
        return res

    out = None
    for _ in range(warmup):
        out = call()
    walls, cpus = [], []
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        out = call()
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    return statistics.median(walls), statistics.median(cpus), out


def lrp_like_map(size: int = 224, seed: int = 0) -> torch.Tensor:
    """A synthetic input relevance: an object-sized blob plus weak relevance scattered everywhere, channels correlated."""
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(size, size, generator=g).abs() * 0.2
    yy, xx = torch.meshgrid(torch.arange(size, dtype=torch.float32), torch.arange(size, dtype=torch.float32),
                            indexing="ij")
    a += torch.exp(-(((yy - 0.45 * size) / (0.12 * size)) ** 2 + ((xx - 0.55 * size) / (0.15 * size)) ** 2))
    sign = torch.where(torch.rand(size, size, generator=g) < 0.2, -1.0, 1.0)
    return (a * sign)[None, None] * (1 + 0.05 * torch.randn(1, 3, size, size, generator=g))


def compare(full: torch.Tensor, approx: torch.Tensor, att_full: torch.Tensor, att_approx: torch.Tensor) -> str:
    f, a = full.flatten(), approx.flatten()
    r = float(torch.corrcoef(torch.stack([f, a]))[0, 1])
    inter = float((att_full & att_approx).sum())
    union = float((att_full | att_approx).sum())
    return f"Pearson r {r:.4f}, max |Δ| {float((f - a).abs().max()):.3f}, attention IoU {inter / max(union, 1):.3f}"


def matmul_floor(cfg: ca.CAConfig, size: int, working_size: int | None, device: torch.device,
                 dtype: torch.dtype = torch.float32):
    """A closure running only the distance matmuls of :func:`ca.context_saliency` for one image: per scale, the
    augmented (P, D+2)·(D+2, Q) products in the implementation's query blocks, into a preallocated output."""
    jobs = []
    g = torch.Generator().manual_seed(0)
    for sh in ca.distance_shapes(size, size, cfg, working_size):
        nh, nw = sh["grid"]
        k = min(cfg.K, sh["Q"] - 1)
        grp = ca._group_size(sh["Q"], k, cfg.select_group)
        qp = -(-(sh["Q"] + 1) // grp) * grp
        rows = ca.block_rows(1, qp, k, sh["D"], cfg.chunk_elements, False, device)
        qa = torch.randn(1, sh["P"], sh["D"] + 2, generator=g, dtype=dtype).to(device)
        ct = torch.randn(1, sh["D"] + 2, sh["Q"], generator=g, dtype=dtype).to(device)
        blocks = [(i0 * nw + j0, (i1 - 1) * nw + j1) for i0, i1, j0, j1 in ca._query_blocks(nh, nw, rows)]
        outs = {b - a: torch.empty(1, b - a, sh["Q"], dtype=dtype, device=device) for a, b in blocks}
        jobs.append((qa, ct, blocks, outs))

    def run():
        for qa, ct, blocks, outs in jobs:
            for a, b in blocks:
                torch.bmm(qa[:, a:b], ct, out=outs[b - a])
    return run


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=1, help="timed repeats of the full-size rows (median)")
    ap.add_argument("--lrp", action="store_true", help="also time the LRP step on a random-init VGG16")
    ap.add_argument("--threads", type=int, default=max(1, min(2, os.cpu_count() or 1)),
                    help="torch threads (on a machine shared with other jobs, 1 can be faster)")
    ap.add_argument("--device", default="cpu", help="cpu or cuda (the loop reference always runs on the CPU)")
    ap.add_argument("--no-loop", action="store_true", help="skip the loop-reference rows")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    where = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "CPU"
    print(f"torch {torch.__version__}, device {where}, threads {torch.get_num_threads()}, load average "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")

    rel = lrp_like_map().to(dev)
    print(f"\nSR map of one 224×224 LRP map (float32, {where}; CA step only)")
    rows = []
    wall, cpu, full = timed(lambda: sr_map_from_relevance(rel), args.repeat, 1, dev)
    est = ca.work_estimate(224, 224)
    rows.append(("full: paper, working 250, every pixel", wall, cpu, full, est))
    settings = [("working 224 (no upscaling), query_stride 2", dict(working_size=None, query_stride=2)),
                ("working 128, query_stride 2", dict(working_size=128, query_stride=2)),
                ("working 128, query_stride 3", dict(working_size=128, query_stride=3))]
    for name, opts in settings:
        wall, cpu, out = timed(lambda: sr_map_from_relevance(rel, **opts), max(args.repeat, 3), 1, dev)
        est = ca.work_estimate(224, 224, ca.make_config("paper", query_stride=opts["query_stride"]),
                               opts["working_size"])
        rows.append((name, wall, cpu, out, est))
    base = rows[0][1]
    width = max(len(r[0]) for r in rows)
    for name, wall, cpu, out, est in rows:
        line = (f"  {name:<{width}}  wall {wall:8.3f} s  cpu {cpu:8.3f} s  {wall / base:6.3f}× full   "
                f"pairs {est['pairs']:.2e}  MAC {est['macs']:.2e}")
        print(line)
        if out is not rows[0][3]:
            print(f"  {'':<{width}}  vs full: " + compare(rows[0][3]["sr_map"], out["sr_map"],
                                                          rows[0][3]["attention_areas"], out["attention_areas"]))

    # the floor: only the distance matmuls of the full setting
    full_cfg = ca.make_config("paper")
    floor_fn = matmul_floor(full_cfg, 224, 250, dev)
    wall_mm, cpu_mm, _ = timed(floor_fn, args.repeat, 1, dev)
    aug = sum(d["P"] * d["Q"] * (d["D"] + 2) for d in ca.distance_shapes(224, 224, full_cfg, 250))
    print(f"\nMatmul floor of the full setting (the distance matmuls alone, same shapes and blocks, float32):")
    print(f"  matmuls only                              wall {wall_mm:8.3f} s  cpu {cpu_mm:8.3f} s   "
          f"{2 * aug / wall_mm / 1e9:6.1f} GFLOP/s ({aug:.2e} MAC incl. the 2 augmented dims)")
    print(f"  full map / matmul floor                   wall {rows[0][1] / wall_mm:6.2f}×      cpu "
          f"{rows[0][2] / max(cpu_mm, 1e-9):6.2f}×   (everything else: ranking keys, top-K, foci, resizing)")

    if not args.no_loop:
        loop_rows(dev, rows[0])
    if args.lrp:
        lrp_rows(dev, base)


def loop_rows(dev: torch.device, full_row) -> None:
    """The loop reference (the test oracle) on a small image, extrapolated by pairs × dimension."""
    threads = torch.get_num_threads()
    from test_sr_map import _test_image, oracle_context_saliency   # imports tests/conftest, which sets the threads
    torch.set_num_threads(threads)
    small = _test_image(1, 48, 64)
    cfg = ca.make_config("paper")
    wall_loop, cpu_loop, ref = timed(lambda: oracle_context_saliency(small[0].numpy(), cfg), 1, 0)
    small_d = small.to(dev)
    wall_vec, cpu_vec, vec = timed(lambda: ca.context_saliency(small_d, cfg, working_size=None), 3, 1, dev)
    err = float((vec.saliency[0].cpu() - torch.from_numpy(ref[0])).abs().max())
    wall_32, cpu_32, vec32 = timed(lambda: ca.context_saliency(small_d.float(), cfg, working_size=None), 3, 1, dev)
    err32 = float((vec32.saliency[0].double().cpu() - torch.from_numpy(ref[0])).abs().max())
    small_est = ca.work_estimate(48, 64, cfg, None)
    scale = full_row[4]["macs"] / small_est["macs"]
    extrapolated = wall_loop * scale
    print("\nLoop reference (tests/test_sr_map.py oracle, numpy float64) vs vectorised, same 48×64 image:")
    print(f"  loop                                      wall {wall_loop:8.3f} s  cpu {cpu_loop:8.3f} s")
    print(f"  vectorised float64 (refines the K kept)   wall {wall_vec:8.3f} s  cpu {cpu_vec:8.3f} s   speed-up "
          f"wall {wall_loop / wall_vec:6.1f}× cpu {cpu_loop / cpu_vec:6.1f}×   max |Δ| {err:.1e}")
    print(f"  vectorised float32 (default, no refine)   wall {wall_32:8.3f} s  cpu {cpu_32:8.3f} s   speed-up "
          f"wall {wall_loop / wall_32:6.1f}× cpu {cpu_loop / cpu_32:6.1f}×   max |Δ| {err32:.1e}")
    print(f"  loop extrapolated to 224×224 (× {scale:.3g} in pairs × patch dimension): ≈ {extrapolated:,.0f} s "
          f"= {extrapolated / 3600:.1f} h; full vectorised / extrapolated loop = "
          f"{full_row[1] / extrapolated:.2e} (wall), {full_row[2] / (cpu_loop * scale):.2e} (cpu)")


def lrp_rows(dev: torch.device, base: float) -> None:
    import torchvision

    from cnnlens.lrp import lrp_attribute
    torch.manual_seed(0)
    model = torchvision.models.vgg16().eval().to(dev)
    x = torch.randn(1, 3, 224, 224, device=dev)
    init = lambda z: z * torch.nn.functional.one_hot(z.argmax(1), z.shape[1]).to(z.dtype)  # noqa: E731
    wall, cpu, res = timed(lambda: lrp_attribute(model, x, init, "sr-reference"), 3, 1, dev)
    print(f"\nLRP step (sr-reference, random-init VGG16, 224): wall {wall:.3f} s  cpu {cpu:.3f} s  "
          f"({wall / base:.3f}× the full CA step)")
    enc = encode_relevance(res.input)
    print(f"  encoded image {tuple(enc.shape)}, {int((enc * 255).round().unique().numel())} distinct levels")


if __name__ == "__main__":
    main()
