"""The results store and the run identity of ``cnnlens evaluate`` (issue 21): a re-run with another setting is refused
naming it (``--overwrite`` recomputes), one rule decides which record counts, two writers never share a folder."""
from __future__ import annotations

import copy
import dataclasses
import functools
import json
import re
import shutil
from pathlib import Path

import pytest
import torch

from cnnlens.data.synthetic import SHAPES, SyntheticMeta, SyntheticScenes, TrainConfig, vgg_like
from cnnlens.evaluation import EvalConfig, ResultsStore, ResumeError, evaluate
from cnnlens.evaluation.store import FolderLock, read_shard

FAST = EvalConfig(batch_size=2, step=64)


def _model(seed=0, mean=None):
    return copy.deepcopy(_built(seed, mean))


@functools.lru_cache(maxsize=None)
def _built(seed, mean):                   # torchvision's VGG builds (and drops) a 4096-wide classifier: build once
    torch.manual_seed(seed)
    m = vgg_like(4, widths=(4, 8))
    m.cnnlens_meta = SyntheticMeta("tiny-vgg", tuple(SHAPES[:4]), input_size=(3, 32, 32))
    if mean is not None:
        m.cnnlens_meta = dataclasses.replace(m.cnnlens_meta, mean=mean)
    return m.eval()


def _values(records):
    return sorted((r["sample"], r["method"], json.dumps(r["metrics"], sort_keys=True)) for r in records)


def _run(out, model=None, data=None, methods="rise", metrics="average-drop", **kw):
    kw.setdefault("config", FAST)
    kw.setdefault("method_options", {"rise": {"n_masks": 20}})
    return evaluate(model or _model(), data or SyntheticScenes(3, size=32), methods, metrics, out=out,
                    progress=False, plots=False, **kw)


def test_a_changed_method_option_is_refused_naming_it_and_overwrite_recomputes(tmp_path):
    """Issue 21 item 2 as reported: a re-run with rise:n_masks=400 after a 20-mask run returned the 20-mask
    numbers."""
    out = tmp_path / "run"
    twenty = _run(out)
    before = (out / "results.jsonl").read_bytes()
    with pytest.raises(ResumeError) as info:
        _run(out, method_options={"rise": {"n_masks": 40}})
    msg = str(info.value)
    assert "option rise n_masks 20 → 40" in msg and "--overwrite" in msg and "another --out" in msg
    assert "\n" not in msg
    assert (out / "results.jsonl").read_bytes() == before                 # the refused run wrote nothing
    forty = _run(out, method_options={"rise": {"n_masks": 40}}, overwrite=True)
    fresh = _run(tmp_path / "fresh", method_options={"rise": {"n_masks": 40}})
    assert _values(forty.records) == _values(fresh.records)
    assert _values(forty.records) != _values(twenty.records)
    assert json.loads((out / "run.json").read_text())["identity"]["methods"]["rise@default"]["options"] == \
        {"n_masks": 40}


CHANGES = [
    (dict(model=lambda: _model(seed=1)), "model weights (parameter digest)"),
    (dict(model=lambda: _model(mean=(0.4, 0.5, 0.5))), "preprocessing"),
    (dict(model_name="other-net"), "model tiny-vgg → other-net"),
    (dict(config=EvalConfig(batch_size=2, step=64, target="predicted")), "target label → predicted"),
    (dict(config=EvalConfig(batch_size=2, step=64, score="logit")), "score softmax → logit"),
    (dict(config=EvalConfig(batch_size=2, step=32)), "step 64 → 32"),
    (dict(data=lambda: SyntheticScenes(4, size=32)), "dataset"),
    (dict(methods="grad-cam", layers="features.1"), "methods grad-cam@default → grad-cam@features.1"),
    (dict(methods="grad-cam", metrics="increase"), "metrics average-drop → increase"),
    (dict(methods="grad-cam,grad-cam++"), "methods grad-cam@default → grad-cam@default, grad-cam++@default"),
]


def test_every_setting_that_changes_a_number_is_in_the_identity(tmp_path):
    base = dict(methods="grad-cam", model_name="tiny-vgg")
    _run(tmp_path, **base)
    before = (tmp_path / "results.jsonl").read_bytes()
    for change, named in CHANGES:
        kw = dict(base)
        kw.update({k: (v() if callable(v) else v) for k, v in change.items()})
        with pytest.raises(ResumeError, match="holds results of different settings") as info:
            _run(tmp_path, **kw)
        assert named in str(info.value), str(info.value)
    assert (tmp_path / "results.jsonl").read_bytes() == before
    _run(tmp_path, **base)                                                 # the same settings resume


def test_the_weights_source_is_part_of_the_identity(tmp_path, monkeypatch):
    """``ModelInfo.weights`` ("file:sha256:…", "url:…", "torchvision:…", "random") when the model says it."""
    from cnnlens.evaluation import config
    monkeypatch.setattr(config, "weights_source", lambda model: "file:sha256:aaaa")
    _run(tmp_path, methods="grad-cam")
    assert json.loads((tmp_path / "run.json").read_text())["identity"]["weights"] == "file:sha256:aaaa"
    monkeypatch.setattr(config, "weights_source", lambda model: "url:https://example.invalid/w.pth")
    with pytest.raises(ResumeError, match="weights file:sha256:aaaa → url:"):
        _run(tmp_path, methods="grad-cam")


def test_cli_refuses_a_changed_option_in_one_line_and_overwrite_replaces(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from cnnlens.cli import main
    cache = tmp_path / "cache"
    path = cache / "synthetic" / f"{TrainConfig(arch='vgg').key}.pt"
    path.parent.mkdir(parents=True)
    torch.manual_seed(0)
    torch.save(vgg_like(4).state_dict(), path)
    monkeypatch.setenv("CNNLENS_CACHE", str(cache))
    out = tmp_path / "out"
    args = ["evaluate", "--model", "synthetic-vgg", "--data", "synthetic", "--n-images", "2", "--methods", "rise",
            "--metrics", "average-drop", "--quiet", "--no-plots", "--save-maps", "1", "--out", str(out)]
    first = CliRunner().invoke(main, args + ["--option", "rise:n_masks=20"])
    assert first.exit_code == 0, first.output
    summary = (out / "summary.json").read_text()
    res = CliRunner().invoke(main, args + ["--option", "rise:n_masks=400"])
    assert res.exit_code == 2 and "Traceback" not in res.output
    assert res.stderr.strip().count("\n") == 0
    assert "option rise n_masks 20 → 400" in res.stderr and "--overwrite" in res.stderr
    assert (out / "summary.json").read_text() == summary
    (out / "notes.txt").write_text("mine")
    again = CliRunner().invoke(main, args + ["--option", "rise:n_masks=40", "--overwrite"])
    assert again.exit_code == 0, again.output
    assert json.loads((out / "run.json").read_text())["identity"]["methods"]["rise@default"]["options"] == \
        {"n_masks": 40}
    assert (out / "notes.txt").read_text() == "mine"                       # --overwrite removes only its own files


def test_a_second_writer_is_refused_while_the_first_holds_the_folder(tmp_path):
    lock = FolderLock(tmp_path)
    lock.acquire()
    try:
        with pytest.raises(ResumeError, match=r"another cnnlens evaluate \(pid \d+\) is writing to"):
            _run(tmp_path, methods="grad-cam")
    finally:
        lock.release()
    _run(tmp_path, methods="grad-cam")                                     # free again


def test_one_rule_for_which_record_counts(tmp_path):
    """Whole units only (a torn line or a unit cut short does not count); a unit in several files counts once, from
    the first file (results.jsonl, then the rank shards by number); the merge writes them in unit order."""
    ref = _run(tmp_path / "ref", methods="grad-cam", data=SyntheticScenes(6, size=32))
    lines = (tmp_path / "ref" / "results.jsonl").read_text().splitlines(keepends=True)
    units = [json.loads(x)["unit"] for x in lines]
    assert units == ["0:grad-cam@default"] * 2 + ["1:grad-cam@default"] * 2 + ["2:grad-cam@default"] * 2
    d = tmp_path / "d"
    d.mkdir()
    shutil.copy(tmp_path / "ref" / "run.json", d)
    changed = json.loads(lines[2])
    changed["metrics"]["average-drop"] = -1.0                              # marks the copy in the later file
    (d / "results.jsonl").write_text(lines[2] + lines[3] + lines[4][:30])   # unit 1, then a torn line
    (d / "results.rank10.jsonl").write_text(lines[4])                       # unit 2 cut short (1 of 2 records)
    (d / "results.rank2.jsonl").write_text(lines[0] + lines[1] + json.dumps(changed) + "\n" + lines[3])
    store = ResultsStore(d)
    assert [p.name for p in store.files()] == ["results.jsonl", "results.rank2.jsonl", "results.rank10.jsonl"]
    finished = store.finished(["average-drop"])
    assert sorted(finished) == ["0:grad-cam@default", "1:grad-cam@default"]
    assert finished["1:grad-cam@default"][0]["metrics"]["average-drop"] != -1.0   # results.jsonl's copy
    assert not store.finished(["average-drop", "deletion"])                # a missing metric: not finished
    assert read_shard(d / "results.jsonl").dirty and read_shard(d / "results.rank10.jsonl").dirty
    # the report reads the same records
    from cnnlens.report import read_records
    assert sorted((r["unit"], r["sample"]) for r in read_records(d)) == \
        sorted((r["unit"], r["sample"]) for u in finished.values() for r in u)
    # a resume completes unit 2 and merges: the file of an uninterrupted run
    _run(d, methods="grad-cam", data=SyntheticScenes(6, size=32))
    assert sorted(p.name for p in d.glob("results*.jsonl")) == ["results.jsonl"]
    merged = [json.loads(x) for x in (d / "results.jsonl").read_text().splitlines()]
    reference = [json.loads(x) for x in lines]
    strip = lambda recs: [{k: v for k, v in r.items() if k != "seconds"} for r in recs]   # noqa: E731
    assert strip(merged) == strip(reference)
    assert ref.records


def test_format_1_records_are_read(tmp_path):
    """Folders written before the rename (records keyed by "block") still open in the report."""
    rec = {"sample": "a", "target": 0, "method": "grad-cam", "layer": "x", "metrics": {"bbox": 1.0},
           "block": "0:grad-cam@default", "block_size": 1}
    (tmp_path / "results.jsonl").write_text(json.dumps(rec) + "\n")
    assert list(ResultsStore(tmp_path).finished()) == ["0:grad-cam@default"]


def test_cli_defaults_are_the_configs():
    from cnnlens.cli import evaluate as cli
    from cnnlens.evaluation import DEFAULT_METHODS, DEFAULT_METRICS
    assert cli.DEFAULT_METHODS == DEFAULT_METHODS and cli.DEFAULT_METRICS == DEFAULT_METRICS
    from cnnlens.methods import all_methods
    from cnnlens.metrics import resolve_metrics
    assert set(DEFAULT_METHODS) <= set(all_methods())
    assert [s.name for s in resolve_metrics(",".join(DEFAULT_METRICS))] == list(DEFAULT_METRICS)


def test_units_are_named_by_block_and_method_run(tmp_path):
    res = _run(tmp_path, methods="grad-cam", layers="features.1,features.4", data=SyntheticScenes(3, size=32))
    assert {r["unit"] for r in res.records} == {"0:grad-cam@features.1,features.4", "1:grad-cam@features.1,features.4"}
    assert not Path(tmp_path / ".lock").exists()                           # the lock is gone with its run


class _StopAfterUnits:
    """A ``stop`` flag that becomes set once ``n`` units are in the results file (as a signal handler sets it)."""

    def __init__(self, path: Path, n: int):
        self.path, self.n, self.signum = path, n, 15

    def is_set(self) -> bool:
        return self.path.is_file() and len({json.loads(x)["unit"] for x in self.path.read_text().splitlines()}) \
            >= self.n


def test_report_after_an_interruption_is_built_from_the_finished_units_and_labelled_partial(tmp_path):
    """Issue 21 item 5: ``cnnlens report DIR`` after an interruption said "holds no cnnlens results"."""
    from click.testing import CliRunner

    from cnnlens.cli import main
    from cnnlens.evaluation import Interrupted
    from cnnlens.report import evaluation_page_data
    out = tmp_path / "run"
    data = SyntheticScenes(5, size=32)                                     # 3 blocks × 2 methods = 6 units
    with pytest.raises(Interrupted):
        _run(out, methods="grad-cam,grad-cam++", metrics="average-drop,bbox", data=data,
             stop=_StopAfterUnits(out / "results.jsonl", 2))
    assert not (out / "summary.json").exists()
    res = CliRunner().invoke(main, ["report", str(out)])
    assert res.exit_code == 0, res.output
    page = evaluation_page_data(out)
    assert page["partial"] == {"units_done": 2, "units_total": 6}
    finished = ResultsStore(out).records()
    assert len(page["records"]) == len(finished) == 4
    assert {(r["method"], r["n"]) for r in page["rows"]} == {("grad-cam", 2), ("grad-cam++", 2)}
    mean = sum(r["metrics"]["bbox"] for r in finished if r["method"] == "grad-cam") / 2
    row = next(r for r in page["rows"] if r["method"] == "grad-cam")
    assert row["bbox"]["mean"] == pytest.approx(mean)
    html = (out / "report.html").read_text(encoding="utf-8")
    assert "<title>cnnlens evaluation · VGG (partial)</title>" in html
    assert '"partial":{"units_done":2,"units_total":6}' in html
    from _browser import chromium, console_errors, file_url, find_browser, wait_ready
    if find_browser() is not None:                                         # what a reader sees
        with chromium(1200, 900) as driver:
            driver.get(file_url(out / "report.html"))
            wait_ready(driver)
            banner = driver.find_element("id", "partial").text
            assert banner.startswith("Partial results: 2 of 6 units") and "Run the same command again" in banner
            assert not driver.find_elements("css selector", "#summary-table td.best")   # no winner on a subset
            assert console_errors(driver) == []
    # finished: the summary is complete and the page is no longer partial
    done = _run(out, methods="grad-cam,grad-cam++", metrics="average-drop,bbox", data=data)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["complete"] is True and summary["units"] == {"done": 6, "total": 6}
    assert "Complete: 6 of 6 units" in (out / "summary.md").read_text()
    assert {r["n"] for r in done.summary} == {5}
    assert evaluation_page_data(out)["partial"] is None


def test_plan_and_estimate_are_said_before_the_work(tmp_path):
    """Issue 21 item 8: the plan (units), then forwards per map measured on the first block and a time estimate."""
    said: list[str] = []
    _run(tmp_path, methods="grad-cam,rise", metrics="average-drop,deletion", data=SyntheticScenes(5, size=32),
         announce=said.append)
    assert len(said) == 2, said
    assert said[0].startswith("plan: 5 images in 3 blocks of 2 × 2 method runs = 6 units, 0 already done, 6 to "
                              "compute")
    # grad-cam: 1 forward + 1 for AD + deletion's 2·(⌈HW/step⌉+1)/2 = 17 at 32², step 64: counted by a forward hook
    assert "measured on the first block" in said[1] and re.search(r"left: 4 units, ≈ [\d,]+ forwards, ≈ \d+ s$",
                                                                  said[1]), said[1]
    fwd = {part.split()[0]: float(part.split()[1]) for part in said[1].split(": ", 1)[1].split("; ")[:2]}
    assert fwd["grad-cam"] == pytest.approx(1 + 1 + 17, abs=1)
    assert fwd["rise"] == pytest.approx(20 + 1 + 17, abs=1)                # n_masks=20 masked forwards
    said.clear()
    _run(tmp_path, methods="grad-cam,rise", metrics="average-drop,deletion", data=SyntheticScenes(5, size=32),
         announce=said.append)
    assert said == ["plan: 5 images in 3 blocks of 2 × 2 method runs = 6 units, 6 already done, 0 to compute"]


def test_a_method_run_listed_twice_is_refused_and_the_cli_merges_repeated_method_options():
    """Two runs with one key would write the same units (the second overwriting the first's): refused in one line;
    the CLI's repeated/comma --methods values are de-duplicated first (``--methods a --methods a,b`` = a,b)."""
    from cnnlens.cli._common import split_list
    from cnnlens.errors import InputError
    from cnnlens.evaluation.config import method_runs
    with pytest.raises(InputError, match="listed twice: grad-cam@default"):
        method_runs("grad-cam,relevance-cam,grad-cam", None, None)
    assert [r.key for r in method_runs(["grad-cam"], "layer2,layer3", None)] == ["grad-cam@layer2,layer3"]
    assert ",".join(dict.fromkeys(split_list(("grad-cam", "grad-cam,relevance-cam")))) == "grad-cam,relevance-cam"
