"""Start-up cost of the command line (issue 14, item 4): ``cnnlens --help``, the help of ``explain``, ``evaluate`` and
``sanity``, and errors found before torch (a missing image or data folder, an unknown model name), each against
``python -c "import torch, timm"`` measured in the same run (fresh interpreters, best of ``--repeat``). Target: every CLI row
≤ 0.3× the torch + timm import.

    python benchmarks/bench_cli.py [--repeat 5] [--device cpu|cuda]

None of the rows touches a device (help and an input error, before any model loads), so ``--device`` only labels the
run; it is accepted so that every benchmark takes the same option.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SRC = str(Path(__file__).resolve().parents[1] / "src")
CLI = "import sys; from cnnlens.cli import main; sys.argv[0] = 'cnnlens'; main()"


def best_time(argv: list[str], repeat: int, cwd: str, expect: int) -> float:
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        r = subprocess.run([sys.executable, *argv], capture_output=True, text=True, env=env, cwd=cwd)
        best = min(best, time.perf_counter() - t0)
        if r.returncode != expect:
            raise SystemExit(f"{argv}: exit {r.returncode}, expected {expect}\n{r.stderr}")
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--device", default="cpu", help="accepted for uniformity; start-up uses no device")
    args = ap.parse_args()
    if args.device != "cpu":
        print(f"(--device {args.device}: the rows below load no model and use no device)")
    with tempfile.TemporaryDirectory() as tmp:
        rows = [
            ("python -c 'import torch, timm'", ["-c", "import torch, timm"], 0),
            ("cnnlens --help", ["-c", CLI, "--help"], 0),
            ("cnnlens explain --help", ["-c", CLI, "explain", "--help"], 0),
            ("cnnlens explain missing.jpg ... (error)",
             ["-c", CLI, "explain", "missing.jpg", "--model", "efficientnet_lite0", "--out", "out"], 2),
            ("cnnlens evaluate --help", ["-c", CLI, "evaluate", "--help"], 0),
            ("cnnlens sanity --help", ["-c", CLI, "sanity", "--help"], 0),
            ("cnnlens evaluate --data missing/ ... (error)",
             ["-c", CLI, "evaluate", "--model", "efficientnet_lite0", "--data", "missing", "--target", "predicted",
              "--metrics", "average-drop", "--out", "out"], 2),
            ("cnnlens evaluate --model efficientnet-lite0 (error)",
             ["-c", CLI, "evaluate", "--model", "efficientnet-lite0", "--data", ".", "--out", "out"], 2),
            ("cnnlens sanity missing.jpg ... (error)",
             ["-c", CLI, "sanity", "missing.jpg", "--model", "efficientnet_lite0", "--out", "out"], 2),
            ("python -c 'pass'", ["-c", "pass"], 0),
        ]
        times = [(name, best_time(argv, args.repeat, tmp, expect)) for name, argv, expect in rows]
    base = times[0][1]
    width = max(len(n) for n, _ in times)
    print(f"CLI start-up, best of {args.repeat} fresh interpreters (target: CLI rows ≤ 0.30× the first row):")
    worst = 0.0
    for name, t in times:
        print(f"  {name:<{width}}  {t:7.3f} s   {t / base:5.2f}×")
        if name.startswith("cnnlens"):
            worst = max(worst, t / base)
    print(f"worst CLI ratio {worst:.2f}× ({'OK' if worst <= 0.3 else 'ABOVE 0.3×'})")
    sys.exit(0 if worst <= 0.3 else 1)


if __name__ == "__main__":
    main()
