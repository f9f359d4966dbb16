"""Timing helpers for the benchmarks: median wall time after warm-up, peak RSS of a child process."""
from __future__ import annotations

import resource
import statistics
import time
from typing import Callable

import torch


def timeit(fn: Callable[[], object], repeat: int = 5, warmup: int = 1) -> float:
    """Median seconds of ``fn()`` over ``repeat`` runs after ``warmup`` runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def forward_backward(model: torch.nn.Module, x: torch.Tensor) -> Callable[[], None]:
    """A plain forward + backward of the summed top logits w.r.t. the input (the reference cost unit)."""
    def run():
        xi = x.detach().requires_grad_()
        model(xi).max(1).values.sum().backward()
    return run


def report(rows: list[tuple[str, float]], unit: str = "s") -> None:
    """Print name, seconds, and the ratio to the first row."""
    base = rows[0][1]
    width = max(len(r[0]) for r in rows)
    for name, t in rows:
        print(f"  {name:<{width}}  {t:9.4f} {unit}   {t / base:6.2f}× {rows[0][0]}")


def peak_rss_kib() -> int:
    """This process's peak RSS in KiB: VmHWM (reset at exec, unlike ru_maxrss, which a child inherits from its
    parent on Linux and so reads the parent's peak when that is higher), else ru_maxrss."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def sync(device: str | torch.device) -> None:
    """Wait for the device's queued work (a no-op on the CPU): call before reading a host clock on CUDA."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def start_peak_memory(device: str | torch.device) -> float:
    """Begin a peak-memory measurement; returns the baseline in KiB. CUDA: reset the allocator's peak and return the
    bytes allocated now (``torch.cuda.max_memory_allocated`` is read by :func:`peak_memory_kib`). CPU: peak RSS."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        return torch.cuda.memory_allocated(device) / 1024
    return peak_rss_kib()


def peak_memory_kib(device: str | torch.device) -> float:
    """Peak memory in KiB since :func:`start_peak_memory`: ``torch.cuda.max_memory_allocated`` on CUDA, else the
    process's peak RSS (VmHWM)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) / 1024
    return peak_rss_kib()


def memory_label(device: str | torch.device) -> str:
    """How the peak-memory figures are named: peak RSS on the CPU, peak CUDA allocation on a GPU."""
    return "peak CUDA allocated" if torch.device(device).type == "cuda" else "peak RSS"


def interleaved_medians(runs: dict[str, Callable[[], object]], repeat: int, device: str | torch.device) -> dict:
    """Time every run round-robin (after one warm-up each, which also traces/caches what it needs), so load from other
    processes hits all of them alike: {name: {"median_s", "times"}}."""
    for run in runs.values():
        run()
        sync(device)
    times: dict = {c: [] for c in runs}
    for _ in range(repeat):
        for c, run in runs.items():
            t0 = time.perf_counter()
            run()
            sync(device)
            times[c].append(time.perf_counter() - t0)
    return {c: {"median_s": statistics.median(t), "times": t} for c, t in times.items()}
