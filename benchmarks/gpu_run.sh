#!/usr/bin/env bash
# The one command for a GPU machine (device tool `run`, repository root, carry [".whl"]):
#     bash benchmarks/gpu_run.sh            # full GPU run, at most 9 min (timeouts add up), results in
#                                           # $OUT/gpu_results.md; exit 1 if any step failed
#     bash benchmarks/gpu_run.sh --dry-run  # or: --device cpu --quick   (checks on a machine without a GPU)
# Everything else (offline install from .whl/, nvidia-smi/torch/CUDA versions, tests/test_gpu.py, the evaluate
# benchmark, every method benchmark with --device cuda under per-step timeouts, the summary table) is
# benchmarks/run_gpu.py (`python benchmarks/run_gpu.py --plan` lists the steps and their timeouts).
set -u
cd "$(dirname "$0")/.."
PY=${PYTHON:-$(command -v python3 || command -v python)}
export PYTHONUNBUFFERED=1
exec "$PY" benchmarks/run_gpu.py "$@"
