"""Ranks, shards, interruption: ``cnnlens.evaluation`` split over torch.distributed ranks (torchrun, gloo on the CPU),
resumed with another world size, stopped by SIGINT / SIGTERM — always to the same table."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from cnnlens.data.synthetic import SHAPES, SyntheticMeta, SyntheticScenes, TrainConfig, vgg_like
from cnnlens.evaluation import EvalConfig, Interrupted, evaluate
from cnnlens.evaluation import runner
from cnnlens.evaluation.distributed import Dist

SRC = str(Path(__file__).resolve().parents[1] / "src")
FAST = EvalConfig(batch_size=2, step=128)
METRICS = "average-drop,increase,deletion,pointing-game,bbox"


def _model(size=32, seed=0):
    torch.manual_seed(seed)
    m = vgg_like(4, widths=(4, 8))
    m.cnnlens_meta = SyntheticMeta("tiny-vgg", tuple(SHAPES[:4]), input_size=(3, size, size))
    return m.eval()


def _rows(summary):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in summary]


def _strip(records):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in records]


class _SequentialRank(Dist):
    """One rank of a world whose ranks run one after another in this process (collectives are local no-ops): the
    shard, split and merge logic without processes."""

    def barrier(self) -> None:
        pass

    def max(self, value: int) -> int:
        return int(value)

    def gather(self, obj) -> list:
        return [obj]


def _run_rank(monkeypatch, rank, world, out, data, model, **kw):
    monkeypatch.setattr(runner.distributed, "current", lambda: _SequentialRank(rank, world))
    return evaluate(model, data, "grad-cam", METRICS, out=out, config=FAST, progress=False, plots=False, **kw)


def test_ranks_split_blocks_and_any_world_size_resumes_to_the_same_table(tmp_path, monkeypatch):
    model, data = _model(), SyntheticScenes(7, size=32)                     # 4 blocks of 2, 2, 2, 1 images
    ref = evaluate(model, data, "grad-cam", METRICS, out=tmp_path / "ref", config=FAST, progress=False, plots=False)
    out = tmp_path / "run"
    out.mkdir()
    (out / "run.json").write_text((tmp_path / "ref" / "run.json").read_text())    # rank 0 opened the folder ...
    # world 3: rank 0 dies before computing anything; ranks 1 and 2 finish blocks 1 and 2 (rank 0 had 0 and 3)
    _run_rank(monkeypatch, 1, 3, out, data, model)
    _run_rank(monkeypatch, 2, 3, out, data, model)
    shard1 = [json.loads(x) for x in (out / "results.rank1.jsonl").read_text().splitlines()]
    assert sorted({r["unit"].split(":")[0] for r in shard1}) == ["1"]
    assert not (out / "summary.json").exists()                              # only rank 0 writes tables
    # resumed with world 2: rank 1 computes block 3 only, rank 0 block 0 (and merges)
    _run_rank(monkeypatch, 1, 2, out, data, model)
    shard1 = [json.loads(x) for x in (out / "results.rank1.jsonl").read_text().splitlines()]
    assert [r["unit"].split(":")[0] for r in shard1] == ["1", "1", "3"]
    res = _run_rank(monkeypatch, 0, 2, out, data, model)
    assert sorted(p.name for p in out.glob("results*.jsonl")) == ["results.jsonl"]     # shards merged
    assert _rows(res.summary) == _rows(ref.summary)
    assert _rows(json.loads((out / "summary.json").read_text())["rows"]) == \
        _rows(json.loads((tmp_path / "ref" / "summary.json").read_text())["rows"])
    merged = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    reference = [json.loads(x) for x in (tmp_path / "ref" / "results.jsonl").read_text().splitlines()]
    assert _strip(merged) == _strip(reference)                                # sorted by block: same file
    # and then one process again: nothing left to do, same table
    monkeypatch.setattr(runner.distributed, "current", lambda: Dist())
    again = evaluate(model, data, "grad-cam", METRICS, out=out, config=FAST, progress=False, plots=False)
    assert _rows(again.summary) == _rows(ref.summary)


def test_a_torn_shard_is_repaired_before_appending(tmp_path, monkeypatch):
    model, data = _model(), SyntheticScenes(6, size=32)
    ref = evaluate(model, data, "grad-cam", METRICS, out=tmp_path / "ref", config=FAST, progress=False, plots=False)
    out = tmp_path / "run"
    out.mkdir()
    (out / "run.json").write_text((tmp_path / "ref" / "run.json").read_text())    # rank 0 opened the folder
    _run_rank(monkeypatch, 1, 2, out, data, model)                          # block 1
    shard = out / "results.rank1.jsonl"
    text = shard.read_text()
    shard.write_text(text + text.splitlines(keepends=True)[0][:40])          # a torn line from a killed append
    _run_rank(monkeypatch, 1, 2, out, data, model)
    assert shard.read_text() == text
    res = _run_rank(monkeypatch, 0, 2, out, data, model)
    assert _rows(res.summary) == _rows(ref.summary)


class _StopAfter:
    """A ``stop`` flag that becomes set once ``n`` blocks have been written (as a signal handler would set it)."""

    def __init__(self, path: Path, n: int):
        self.path, self.n, self.signum = path, n, signal.SIGTERM

    def is_set(self) -> bool:
        return self.path.is_file() and len({json.loads(x)["unit"] for x in self.path.read_text().splitlines()}) \
            >= self.n


def test_stop_flag_ends_after_the_current_block_and_resume_gives_the_same_table(tmp_path):
    model, data = _model(), SyntheticScenes(7, size=32)
    ref = evaluate(model, data, "grad-cam", METRICS, out=None, config=FAST, progress=False)
    out = tmp_path / "run"
    with pytest.raises(Interrupted) as info:
        evaluate(model, data, "grad-cam", METRICS, out=out, config=FAST, progress=False, plots=False,
                 stop=_StopAfter(out / "results.jsonl", 1))
    assert info.value.signum == signal.SIGTERM
    lines = (out / "results.jsonl").read_text().splitlines()
    assert len(lines) == 2 and not (out / "summary.json").exists()          # exactly one whole block
    event = threading.Event()                                                # a plain Event works too (unset)
    res = evaluate(model, data, "grad-cam", METRICS, out=out, config=FAST, progress=False, plots=False, stop=event)
    assert _rows(res.summary) == _rows(ref.summary)


def test_workers_give_the_same_records(tmp_path):
    model, data = _model(), SyntheticScenes(4, size=32)
    a = evaluate(model, data, "grad-cam", METRICS, out=None, config=FAST, progress=False, workers=0)
    b = evaluate(model, data, "grad-cam", METRICS, out=None, config=FAST, progress=False, workers=2)
    assert _strip(a.records) == _strip(b.records)


# ------------------------------------------------------------------------------------------ real processes
def _env(cache: Path) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = SRC + os.pathsep + env.get("PYTHONPATH", "")
    env["CNNLENS_CACHE"] = str(cache)
    env["OMP_NUM_THREADS"] = "1"                          # torchrun's default; the same everywhere for equal tables
    return env


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    """Untrained weights where ``--model synthetic-vgg`` looks, so the CLI does not train."""
    cache = tmp_path_factory.mktemp("cache")
    path = cache / "synthetic" / f"{TrainConfig(arch='vgg').key}.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    torch.save(vgg_like(4).state_dict(), path)
    return cache


ARGS = ["evaluate", "--model", "synthetic-vgg", "--data", "synthetic", "--batch-size", "2", "--methods", "grad-cam",
        "--metrics", METRICS + ",insertion", "--step", "128", "--tolerance", "4", "--no-plots", "--quiet",
        "--save-maps", "2"]


def _cli(args, cache, nproc: int | None = None, **kw):
    if nproc is None:
        cmd = [sys.executable, "-m", "cnnlens", *args]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc),
               "-m", "cnnlens", *args]
    return subprocess.Popen(cmd, env=_env(cache), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def _in_process(args, cache, monkeypatch):
    from click.testing import CliRunner

    from cnnlens.cli import main
    monkeypatch.setenv("CNNLENS_CACHE", str(cache))
    return CliRunner().invoke(main, args)


def _table(out: Path):
    rows = json.loads((out / "summary.json").read_text())["rows"]
    return _rows(rows)


def _wait_for_a_block(proc, out: Path, timeout=240) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if any(p.stat().st_size > 0 for p in out.glob("results*.jsonl")):
            return
        time.sleep(0.01)


class _SignalAfterTheFirstBlock:
    """Wraps the CLI's stop flag: after the first block it sends this process a real SIGINT (the CLI's handler sets
    the flag), then answers as the flag does."""

    def __init__(self, stop):
        self.stop, self.sent = stop, False

    @property
    def signum(self):
        return self.stop.signum

    def is_set(self) -> bool:
        if not self.sent:
            self.sent = True
            os.kill(os.getpid(), signal.SIGINT)
        return self.stop.is_set()


def test_cli_sigint_in_process_stops_after_the_block_exits_130_and_resumes(tmp_path, cache, monkeypatch):
    """The default run's check of the CLI's signal path (handler, flag, one line, exit 130, resume) without a child
    process; the real signal to a child process, and the resumed table's equality through the CLI, are the slow
    test below."""
    import cnnlens.evaluation as evaluation
    real = evaluation.evaluate

    def signalling(*args, stop=None, **kw):
        return real(*args, stop=_SignalAfterTheFirstBlock(stop), **kw)
    args = ARGS + ["--n-images", "4", "--metrics", "average-drop,pointing-game", "--out", str(tmp_path / "run")]
    out = tmp_path / "run"
    monkeypatch.setattr(evaluation, "evaluate", signalling)
    previous = signal.getsignal(signal.SIGINT)
    stopped = _in_process(args, cache, monkeypatch)
    assert signal.getsignal(signal.SIGINT) is previous                     # the CLI's handler is removed again
    assert stopped.exit_code == 130, stopped.output
    lines = [x for x in stopped.output.strip().splitlines() if x.startswith("cnnlens:") and "plan:" not in x
             and "measured on the first block" not in x]
    # at once: what happens now and how to stop sooner; at the end: what was kept and how to resume
    assert len(lines) == 2, stopped.output
    assert "stopping after the current unit" in lines[0] and "Ctrl-C again to stop now" in lines[0]
    assert "interrupted by SIGINT" in lines[1] and "run the same command again" in lines[1]
    first = (out / "results.jsonl").read_text().splitlines()
    assert len(first) == 2                                                 # exactly one block (2 images)
    monkeypatch.setattr(evaluation, "evaluate", real)
    again = _in_process(args, cache, monkeypatch)
    assert again.exit_code == 0, again.output
    lines = (out / "results.jsonl").read_text().splitlines()
    assert lines[:2] == first and len(lines) == 4                          # kept, then completed (the table's
    #                                                                        equality: the stop-flag test above)


class _TwoSignalsAfterTheFirstBlock(_SignalAfterTheFirstBlock):
    """After the first unit: Ctrl-C, then Ctrl-C again (the second one raises in the CLI's handler: stop now)."""

    def is_set(self) -> bool:
        if not self.sent:
            self.sent = True
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGINT)
        return self.stop.is_set()


def test_cli_second_sigint_stops_at_once_and_keeps_the_finished_units(tmp_path, cache, monkeypatch):
    import cnnlens.evaluation as evaluation
    real = evaluation.evaluate

    def signalling(*args, stop=None, **kw):
        return real(*args, stop=_TwoSignalsAfterTheFirstBlock(stop), **kw)
    out = tmp_path / "run"
    args = ARGS + ["--n-images", "4", "--metrics", "average-drop,pointing-game", "--out", str(out)]
    monkeypatch.setattr(evaluation, "evaluate", signalling)
    previous = signal.getsignal(signal.SIGINT)
    stopped = _in_process(args, cache, monkeypatch)
    assert signal.getsignal(signal.SIGINT) is previous
    assert stopped.exit_code == 130, stopped.output
    lines = [x for x in stopped.output.strip().splitlines() if x.startswith("cnnlens:")]
    assert len(lines) == 2 and "Traceback" not in stopped.output, stopped.output
    assert "stopping after the current unit" in lines[0] and "Ctrl-C again to stop now" in lines[0]
    assert "stopped at once by a second SIGINT" in lines[1] and "run the same command again" in lines[1]
    first = (out / "results.jsonl").read_text().splitlines()
    assert len(first) == 2                                                 # the finished unit is kept
    monkeypatch.setattr(evaluation, "evaluate", real)
    again = _in_process(args, cache, monkeypatch)
    assert again.exit_code == 0, again.output
    lines = (out / "results.jsonl").read_text().splitlines()
    assert lines[:2] == first and len(lines) == 4


# ------------------------------------------------------------------------------------------ a real process group
_GLOO_RANK = r"""
import json, os, sys
from datetime import timedelta
from pathlib import Path
import torch, torch.distributed as dist
torch.set_num_threads(1)
from cnnlens.data.synthetic import SHAPES, SyntheticMeta, SyntheticScenes, vgg_like
from cnnlens.evaluation import EvalConfig, Interrupted, evaluate
rank, port, out, stop_after = int(sys.argv[1]), sys.argv[2], Path(sys.argv[3]), int(sys.argv[4])
dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2,
                        timeout=timedelta(seconds=120))
torch.manual_seed(0)
model = vgg_like(4, widths=(4, 8))
model.cnnlens_meta = SyntheticMeta("tiny-vgg", tuple(SHAPES[:4]), input_size=(3, 32, 32))
model.eval()

class Stop:                      # rank 1 asks to stop once its shard holds `stop_after` units
    signum = 15
    def is_set(self):
        p = out / "results.rank1.jsonl"
        return rank == 1 and stop_after > 0 and p.is_file() and \
            len({json.loads(x)["unit"] for x in p.read_text().splitlines()}) >= stop_after
def run(stop):
    try:
        res = evaluate(model, SyntheticScenes(7, size=32), "grad-cam", "average-drop,deletion,pointing-game",
                       out=out, config=EvalConfig(batch_size=2, step=128), progress=False, plots=False, stop=stop)
        return f"RECORDS {len(res.records)}"
    except Interrupted:
        return "INTERRUPTED"
said = [run(Stop())]
dist.barrier()
if rank == 0:                    # what the stop left: the shards and their units
    (out.parent / "stopped.json").write_text(json.dumps(
        {p.name: sorted({json.loads(x)["unit"] for x in p.read_text().splitlines()})
         for p in sorted(out.glob("results*.jsonl"))} | {"summary": (out / "summary.json").exists()}))
dist.barrier()
said.append(run(None))           # the same command again: resumes
print(" / ".join(said))
dist.destroy_process_group()
"""


def _free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _gloo_pair(out: Path, stop_after: int) -> list[str]:
    env = dict(os.environ, PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""), OMP_NUM_THREADS="1")
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    port = str(_free_port())
    procs = [subprocess.Popen([sys.executable, "-c", _GLOO_RANK, str(r), port, str(out), str(stop_after)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for r in (0, 1)]
    outs = [p.communicate(timeout=240) for p in procs]
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err
    return [o.strip().splitlines()[-1] for o, _ in outs]


def test_two_real_gloo_processes_split_stop_together_and_resume_to_the_one_process_table(tmp_path):
    """Issue 21 item 16: real collectives (gloo over loopback, two processes) — the blocks are split, a stop asked by
    one rank stops both after their unit, a resume finishes, rank 0 merges, and the records equal one process's."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)                                               # as the ranks: the same sums
    try:
        ref = evaluate(_model(), SyntheticScenes(7, size=32), "grad-cam", "average-drop,deletion,pointing-game",
                       out=tmp_path / "ref", config=EvalConfig(batch_size=2, step=128), progress=False, plots=False)
    finally:
        torch.set_num_threads(threads)
    assert len(ref.records) == 7
    out = tmp_path / "run"
    # one launch of two processes: a run that rank 1 asks to stop after its first unit, then the same run again
    assert _gloo_pair(out, stop_after=1) == ["INTERRUPTED / RECORDS 7"] * 2
    stopped = json.loads((tmp_path / "stopped.json").read_text())
    # block b on rank b mod 2; rank 0 stopped with rank 1 (after its own first unit), no summary
    assert stopped == {"results.rank0.jsonl": ["0:grad-cam@default"], "results.rank1.jsonl": ["1:grad-cam@default"],
                       "summary": False}
    assert sorted(p.name for p in out.glob("results*.jsonl")) == ["results.jsonl"]
    merged = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    reference = [json.loads(x) for x in (tmp_path / "ref" / "results.jsonl").read_text().splitlines()]
    assert [(r["unit"], r["sample"]) for r in merged] == [(r["unit"], r["sample"]) for r in reference]
    for a, b in zip(merged, reference):
        assert a["metrics"] == pytest.approx(b["metrics"], abs=1e-6), (a["sample"], a["metrics"], b["metrics"])
    rows = json.loads((out / "summary.json").read_text())["rows"]
    assert [r["n"] for r in rows] == [7]


@pytest.mark.slow
@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_stops_after_the_block_exits_with_its_code_and_resumes(tmp_path, cache, sig, code, monkeypatch):
    n = ["--n-images", "8"]
    out = tmp_path / "run"
    proc = _cli(ARGS + n + ["--out", str(out)], cache)
    _wait_for_a_block(proc, out)
    proc.send_signal(sig)
    stdout, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err
    lines = [x for x in err.strip().splitlines() if x.startswith("cnnlens:")]
    assert len(lines) == 2 and "stopping after the current unit" in lines[0], err     # at once, then at the end
    assert "run the same command again to resume" in lines[1], err
    assert "Traceback" not in err and stdout == ""
    recs = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    assert 0 < len(recs) < 8 and len(recs) % 2 == 0                        # whole blocks only
    assert all((out / r["image"]).is_file() and (out / r["map"]).is_file() for r in recs if "map" in r)
    again = _in_process(ARGS + n + ["--out", str(out)], cache, monkeypatch)
    assert again.exit_code == 0, again.output
    ref = _in_process(ARGS + n + ["--out", str(tmp_path / "ref")], cache, monkeypatch)
    assert ref.exit_code == 0, ref.output
    assert _table(out) == _table(tmp_path / "ref")


@pytest.mark.slow
def test_torchrun_world_sizes_give_the_same_table(tmp_path, cache):
    n = ["--n-images", "10"]
    tables = {}
    for world in (1, 2, 3):
        out = tmp_path / f"w{world}"
        proc = _cli(ARGS + n + ["--out", str(out)], cache, nproc=world)
        stdout, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err
        assert stdout.count("| grad-cam |") == 1                           # only rank 0 prints
        assert sorted(p.name for p in out.glob("results*.jsonl")) == ["results.jsonl"]
        tables[world] = _table(out)
    assert tables[1] == tables[2] == tables[3]
    assert (tmp_path / "w1" / "results.jsonl").read_text().count("\n") == 10


def _children(pid: int) -> list[int]:
    kids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                kids.append(int(d.name))
    return kids


@pytest.mark.slow
def test_torchrun_rank_killed_then_resumed_with_another_world_size(tmp_path, cache):
    n = ["--n-images", "16"]
    ref = _cli(ARGS + n + ["--out", str(tmp_path / "ref")], cache)
    assert ref.communicate(timeout=600) and ref.returncode == 0
    out = tmp_path / "run"
    proc = _cli(ARGS + n + ["--out", str(out)], cache, nproc=3)
    _wait_for_a_block(proc, out)
    workers = _children(proc.pid)
    assert len(workers) == 3, workers
    os.kill(max(workers), signal.SIGKILL)                                   # one rank dies mid-run
    proc.communicate(timeout=300)
    assert proc.returncode != 0
    done = sum(len(p.read_text().splitlines()) for p in out.glob("results*.jsonl"))
    assert 0 < done < 16
    again = _cli(ARGS + n + ["--out", str(out)], cache, nproc=2)
    stdout, err = again.communicate(timeout=600)
    assert again.returncode == 0, err
    assert _table(out) == _table(tmp_path / "ref")
    assert sorted(p.name for p in out.glob("results*.jsonl")) == ["results.jsonl"]


def test_a_worker_error_is_the_same_one_line_error(tmp_path):
    from cnnlens.errors import InputError

    class _Broken(SyntheticScenes):
        def __getitem__(self, i):
            if i == 3:
                raise InputError("cannot read image broken.jpg: truncated")
            return super().__getitem__(i)
    with pytest.raises(InputError) as info:
        evaluate(_model(), _Broken(4, size=32), "grad-cam", "bbox", out=None, config=FAST, progress=False, workers=2)
    assert str(info.value) == "cannot read image broken.jpg: truncated"


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.slow
def test_torchrun_process_group_killed_then_resumed_with_1_2_and_3_processes(tmp_path, cache):
    """Issue 21 item 1 as it happens: SIGKILL to torchrun's whole process group once the first shard has a line (a
    scheduler ending the job), then the same command with 1, 2 or 3 processes: every unit finished, the tables equal
    an uninterrupted run's. torchrun starts its workers in sessions of their own, so they must end with their agent
    (they used to run on and overwrite the resumed results.jsonl)."""
    import shutil
    args = ARGS + ["--n-images", "12", "--methods", "grad-cam,relevance-cam", "--metrics",
                   "average-drop,increase,energy-pointing-game,deletion"]
    ref = _cli(args + ["--out", str(tmp_path / "ref")], cache)
    assert ref.communicate(timeout=600) and ref.returncode == 0
    killed = tmp_path / "killed"
    proc = _cli(args + ["--out", str(killed)], cache, nproc=2, start_new_session=True)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if any(p.stat().st_size > 0 for p in killed.glob("results.rank*.jsonl")):
            break
        time.sleep(0.01)
    workers = _children(proc.pid)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=60)
    deadline = time.time() + 30
    while time.time() < deadline and any(_alive(w) for w in workers):
        time.sleep(0.1)
    assert workers and not any(_alive(w) for w in workers), "a worker outlived its killed torchrun"
    units = {json.loads(x)["unit"] for p in killed.glob("results*.jsonl") for x in p.read_text().splitlines()
             if x.strip().endswith("}")}
    assert 0 < len(units) < 12 and not (killed / "summary.json").exists()
    for world in (1, 2, 3):
        out = tmp_path / f"resumed{world}"
        shutil.copytree(killed, out)
        again = _cli(args + ["--out", str(out)], cache, nproc=None if world == 1 else world)
        stdout, err = again.communicate(timeout=600)
        assert again.returncode == 0, err
        assert _table(out) == _table(tmp_path / "ref"), world
        assert sorted(p.name for p in out.glob("results*.jsonl")) == ["results.jsonl"]
        assert all(r["n"] == 12 for r in json.loads((out / "summary.json").read_text())["rows"])
