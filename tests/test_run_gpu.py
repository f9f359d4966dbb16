"""benchmarks/run_gpu.py, the one prepared GPU run (issue 21, item 15): its timeouts add up to its budget (≤ 9 of a
lent GPU's 15 minutes), the steps come in the order of their value, and any failed step — also with ``--quick`` —
makes the exit code non-zero. Standard library only (the script imports nothing else)."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture()
def run_gpu(monkeypatch):
    spec = importlib.util.spec_from_file_location("run_gpu", ROOT / "benchmarks" / "run_gpu.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "run_gpu", module)          # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("families", [False, True])
def test_the_plan_fits_the_budget_in_the_order_of_value(run_gpu, monkeypatch, families):
    real = run_gpu.present
    monkeypatch.setattr(run_gpu, "present", lambda step: families if step.optional else real(step))
    plan = run_gpu.planned()
    names = [n for n, _ in plan]
    assert sum(t for _, t in plan) <= run_gpu.MAX_BUDGET <= 9 * 60
    assert names[:4] == ["install", "env", "tests/test_gpu.py", "bench_evaluate"]
    assert ("bench_lrp_families" in names) == families
    assert names.index("bench_cams") < names.index("bench_sr_map")
    assert sum(run_gpu.INSTALL[k] for k in ("check", "wheels", "recheck")) <= run_gpu.PHASES["install"]
    assert run_gpu.INSTALL["check"] + run_gpu.INSTALL["pip"] + run_gpu.INSTALL["recheck"] <= run_gpu.PHASES["install"]
    for step in run_gpu.STEPS:
        assert step.optional or (ROOT / "benchmarks" / step.script).is_file(), step.script


def _main(run_gpu, monkeypatch, tmp_path, statuses: dict, *args: str) -> int:
    """Run main() with every subprocess replaced by the given status (default ok)."""
    def fake_sh(self, name, argv, timeout, env=None):
        assert timeout <= self.args.budget
        return statuses.get(name, "ok"), 0.1, "device fake\n"
    monkeypatch.setattr(run_gpu.Run, "sh", fake_sh)
    monkeypatch.setattr(sys, "argv", ["run_gpu.py", "--out", str(tmp_path), "--skip-install", *args])
    with pytest.raises(SystemExit) as exc:
        run_gpu.main()
    return exc.value.code


@pytest.mark.parametrize("quick", [False, True])
def test_any_failed_step_fails_the_run(run_gpu, monkeypatch, tmp_path, quick):
    extra = ["--device", "cpu", "--quick"] if quick else ["--device", "cpu"]
    assert _main(run_gpu, monkeypatch, tmp_path, {}, *extra) == 0
    assert _main(run_gpu, monkeypatch, tmp_path, {"bench_cams": "FAILED (exit 1)"}, *extra) == 1
    assert _main(run_gpu, monkeypatch, tmp_path, {"test_gpu": "TIMEOUT (60 s)"}, *extra) == 1
    table = (tmp_path / "gpu_results.md").read_text()
    assert "TIMEOUT" in table and "bench_evaluate.py" in table


def test_a_budget_below_the_plan_is_refused(run_gpu, monkeypatch, tmp_path):
    assert _main(run_gpu, monkeypatch, tmp_path, {}, "--budget", "100") == 2


def test_every_flag_of_a_step_is_one_its_script_defines(run_gpu):
    """The flags a step passes (on the GPU and in --quick) are defined by its script or a benchmark module it
    imports (e.g. bench_cams.add_timing_args)."""
    import re
    for step in run_gpu.STEPS:
        path = ROOT / "benchmarks" / step.script
        if not path.is_file():
            continue
        source = path.read_text()
        for name in re.findall(r"^from (\w+) import", source, re.M):
            if (ROOT / "benchmarks" / f"{name}.py").is_file():
                source += (ROOT / "benchmarks" / f"{name}.py").read_text()
        for flag in [a for a in [*step.gpu_args, *(step.quick_args or []), "--device"] if a.startswith("--")]:
            assert f'"{flag}"' in source, (step.script, flag)
