"""Evaluate explanation methods with the metrics of metrics.md on a dataset (with or without boxes): the loop.

``evaluate(model, dataset, methods, metrics, out=DIR)`` splits the dataset order into fixed *blocks* of
``batch_size`` images and works through *units* (one block × one method run); every finished unit is appended in
one write to the results store (:mod:`.store`), and the summary tables (``summary.md``, ``summary.csv``,
``summary.json``: mean ± standard error) and plots are written at the end. A re-run with the same ``out`` resumes:
finished units are never recomputed, a unit cut short by a kill is recomputed whole, and because every block's
composition is fixed by the dataset order the final table equals that of an uninterrupted run. ``run.json`` holds
the run identity (every setting that changes a number, :mod:`.config`): a re-run with another setting is refused,
naming it, unless ``overwrite=True``.

Under ``torchrun`` (a process group initialised, see :mod:`.distributed`) rank r computes the blocks b with
b mod world = r and appends each finished unit to its shard ``results.rank{r}.jsonl``; a resume counts every
finished unit in every file present, whatever the world size was. When every rank is done, rank 0 merges the shards
into ``results.jsonl`` and writes the tables and plots — after checking that every unit of the run is there, so a
summary never looks complete when it is not.
"""
from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import nn

from .._state import model_device, model_dtype, preserved
from ..errors import CnnlensError, InputError
from ..metrics import METRICS, MetricSpec, resolve_metrics
from . import distributed
from .config import DEFAULT_METRICS, EvalConfig, MethodRun, ResumeError, method_runs, run_identity
from .distributed import PeerFailed
from .loader import iter_blocks, to_device
from .maps import safe_id
from .scoring import RANDOMISATION, block_pairs, forward_logits, score_unit
from .store import RESULTS, RUN, SHARD, SKIPPED, FolderLock, ResultsStore, unit_id
from .tables import markdown_table, summarize_records, write_plots, write_tables

__all__ = ["RESULTS", "RUN", "SHARD", "EvalConfig", "Interrupted", "MethodRun", "PeerFailed", "Results",
           "ResumeError", "evaluate", "safe_id"]


class Interrupted(Exception):
    """The run stopped on a signal after finishing its current unit; re-running the same command resumes."""

    def __init__(self, signum: int | None, out: Path | None):
        self.signum, self.out = signum, out
        super().__init__(f"interrupted{'' if signum is None else f' by signal {signum}'}")


class IncompleteResults(CnnlensError):
    """The run ended but the store lacks some of its units (another process removed or replaced them)."""


@dataclass
class Results:
    records: list[dict]
    summary: list[dict]
    out: Path | None
    config: EvalConfig
    metrics: list[str]
    skipped: Any = 0
    unreadable: dict[str, str] = field(default_factory=dict)   # sample id → why it was skipped (one line)

    def table(self) -> str:
        return markdown_table(self.summary, [METRICS[m] for m in self.metrics])


def _names(model, dataset) -> tuple[list[str], list[str]]:
    """(names of the model classes the targets index, names of the dataset's label keys)."""
    model_names = list(getattr(getattr(model, "cnnlens_meta", None), "class_names", None) or [])
    ds_names = list(getattr(dataset, "class_names", None) or [])
    label_names = list(getattr(dataset, "label_names", None) or ds_names)
    mapped = bool(getattr(dataset, "class_map", None)) or bool(getattr(dataset, "label_names", None))
    target_names = model_names if (mapped and model_names) else (ds_names or model_names)
    return target_names, label_names


def _latest(records: list[dict]) -> list[dict]:
    """One record per (sample, target, method, layer), sorted for a run-independent order. The records of images
    skipped while decoding are left out (see :func:`_unreadable`)."""
    by_key = {}
    for r in records:
        if SKIPPED in r:
            continue
        by_key[(r["sample"], r["target"], r["method"], r["layer"])] = r
    return [by_key[k] for k in sorted(by_key, key=lambda k: (k[2], k[3], k[0], k[1]))]


def _unreadable(records: list[dict]) -> dict[str, str]:
    """Sample id → reason of the images skipped while decoding (their records, one per block and method)."""
    return {r["sample"]: str(r.get("reason") or "unreadable") for r in records if SKIPPED in r}


def _with_unreadable(skipped: Any, found: dict[str, str], listed: dict[str, str]) -> Any:
    """The dataset's skipped counts plus the images found unreadable while decoding (``found``, not yet among the
    ``listed`` ones the dataset skipped when it was opened)."""
    new = [k for k in found if k not in listed]
    if not new:
        return skipped
    out = dict(skipped) if isinstance(skipped, dict) else ({"other": int(skipped)} if skipped else {})
    out["unreadable"] = int(out.get("unreadable", 0)) + len(new)
    return out


class _ForwardCounter:
    """Counts the images the model forwards (the unit of cost in docs/evaluation.md "Scale") while active; the hook
    is removed on exit."""

    def __init__(self, model: nn.Module):
        self.model, self.n, self.handle = model, 0, None

    def _hook(self, _module, args):
        if args and isinstance(args[0], torch.Tensor) and args[0].dim() > 0:
            self.n += int(args[0].shape[0])

    def __enter__(self):
        self.handle = self.model.register_forward_pre_hook(self._hook)
        return self

    def __exit__(self, *exc):
        self.handle.remove()


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def evaluate(model: nn.Module, dataset, methods: Sequence[str | MethodRun] | str | None = None,
             metrics: Sequence[str] | str | None = None, *, layers: Sequence[str] | str | None = None,
             out: str | Path | None = None, config: EvalConfig | None = None,
             method_options: dict[str, dict] | None = None, progress: bool = True, plots: bool = True,
             model_name: str | None = None, workers: int = 0, save_maps: int = 0, stop=None,
             overwrite: bool = False, announce: Callable[[str], None] | None = None) -> Results:
    """Run ``methods`` on every image of ``dataset`` and score them with ``metrics`` (metrics.md names).

    methods: names, :class:`MethodRun` s, a comma-separated string, "all", or None for the default comparison
    (:data:`.config.DEFAULT_METHODS`). metrics: names, a comma-separated string, "all", or None for
    :data:`.config.DEFAULT_METRICS`.
    dataset: a sequence of :class:`cnnlens.data.Sample` with ``describe()`` (``open_dataset``'s datasets,
    ``SyntheticScenes``, ``Collages``). layers: for single-layer methods (CAMs), the layers to run at
    ("layer2,layer4", "blocks"); methods that choose their own layers (SISE) or none (LRP, RISE) ignore it.
    out: the results folder (resumable; a folder holding results of other settings is refused, naming them, unless
    ``overwrite`` — which removes the previous run's files first). workers: DataLoader processes decoding the images
    (0: this process). save_maps: for the first N images of the dataset order, write ``out/images/<id>.jpg`` and one
    8-bit PNG per (image, target, method, layer) under ``out/maps/`` (paths in the records' ``image`` / ``map``).
    stop: an object with ``is_set()`` (e.g. a ``threading.Event`` set by a signal handler): when set, the run
    stops after its current unit and raises :class:`Interrupted` (a re-run resumes).
    announce: where the plan (units, forwards per map measured on the first block, time estimate) is said (default:
    stderr when ``progress``).

    In a torch.distributed process group (``torchrun``) the blocks are split over the ranks; every rank returns the
    merged results, rank 0 writes the tables.
    """
    cfg = config or EvalConfig()
    cfg.check()
    specs: list[MetricSpec] = resolve_metrics(",".join(DEFAULT_METRICS) if metrics is None else metrics)
    runs = method_runs(methods, layers, method_options)
    if len(dataset) == 0:
        raise InputError("empty dataset: no image to evaluate")
    if workers < 0:
        raise InputError(f"workers must be 0 or more, got {workers}")
    if save_maps < 0:
        raise InputError(f"save_maps must be 0 or more, got {save_maps}")
    from ..capture import resolve_module
    for run in runs:                                   # bad layer names fail before anything is written
        for lay in run.layers or []:
            if lay != "blocks":
                resolve_module(model, lay)
    describe = dataset.describe()
    no_labels = getattr(dataset, "has_labels", True) is False or (isinstance(describe, dict)
                                                                  and describe.get("has_labels") is False)
    if cfg.target == "label" and no_labels:
        raise InputError("the dataset has no labels: use --target predicted")
    from ..data.preprocessing import model_preprocessing
    preprocessing = model_preprocessing(model)
    _, mean, std = preprocessing
    device, dtype = model_device(model), model_dtype(model)
    dist = distributed.current()
    metric_names = [s.name for s in specs]
    identity = run_identity(model=model, model_name=model_name or type(model).__name__,
                            dataset_description=describe, config=cfg, runs=runs, metrics=metric_names,
                            preprocessing=preprocessing)
    if announce is None and progress and dist.is_main:
        def announce(line: str) -> None:
            from tqdm import tqdm
            tqdm.write(f"cnnlens: {line}", file=sys.stderr)              # above the progress bar
    store = ResultsStore(out) if out is not None else None
    lock = None
    try:
        done: set[str] = set()
        own: Path | None = None
        if store is not None:
            lock, own, done = _open_store(store, identity, dist, overwrite, metric_names)
        return _run(model, dataset, runs=runs, specs=specs, cfg=cfg, store=store, own=own, done=done, dist=dist,
                    identity=identity, describe=describe, mean=mean, std=std, device=device, dtype=dtype,
                    progress=progress, plots=plots, workers=workers, save_maps=save_maps, stop=stop,
                    announce=announce)
    finally:
        if lock is not None:
            lock.release()


def _open_store(store: ResultsStore, identity: dict, dist, overwrite: bool, required: list[str]
                ) -> tuple[FolderLock | None, Path, set[str]]:
    """Lock (rank 0), check or replace the identity, repair this process's file; every rank learns the outcome."""
    lock, error = None, None
    if dist.is_main:
        try:
            store.out.mkdir(parents=True, exist_ok=True)
            lock = FolderLock(store.out)
            lock.acquire()
            if overwrite:
                store.clear()
            else:
                store.check_identity(identity)
            store.write_identity(identity)
        except (CnnlensError, OSError) as exc:
            if lock is not None:
                lock.release()
            if isinstance(exc, OSError):
                exc = InputError(f"cannot write to {store.out}: {exc.strerror or exc}")
            error = exc
    if dist.max(distributed.ERROR if error is not None else distributed.OK) != distributed.OK:
        if error is not None:
            raise error
        raise PeerFailed("rank 0 could not open the results folder (its message is above)")
    store.out.mkdir(parents=True, exist_ok=True)
    done = set(store.finished(required))
    dist.barrier()                                   # every rank has read before any rewrites its shard
    own = store.own_file(dist.rank, dist.world)
    store.repair(own, required)
    return lock, own, done


def _run(model, dataset, *, runs: list[MethodRun], specs: list[MetricSpec], cfg: EvalConfig,
         store: ResultsStore | None, own: Path | None, done: set[str], dist, identity: dict, describe, mean, std,
         device, dtype, progress: bool, plots: bool, workers: int, save_maps: int, stop, announce) -> Results:
    """The loop over this process's units, then (rank 0) the completeness check, the merge and the tables."""
    required = [s.name for s in specs]
    b = cfg.batch_size
    n_blocks = math.ceil(len(dataset) / b)
    all_units = [unit_id(bi, r.key) for bi in range(n_blocks) for r in runs]
    todo = [(bi, r) for bi in range(dist.rank, n_blocks, dist.world) for r in runs
            if unit_id(bi, r.key) not in done]
    steps = dist.max(len(todo))
    my_blocks = list(dict.fromkeys(bi for bi, _ in todo))
    if announce is not None:
        left = len(all_units) - len(done & set(all_units))
        announce(f"plan: {len(dataset)} images in {n_blocks} blocks of {b} × {len(runs)} method run"
                 f"{'s' if len(runs) != 1 else ''} = {len(all_units)} units, {len(all_units) - left} already done, "
                 f"{left} to compute" + (f" on {dist.world} processes" if dist.world > 1 else "")
                 + ("; forwards per map and a time estimate follow the first block" if todo else ""))
    bar = None
    if progress and dist.is_main:
        from tqdm import tqdm
        total = len(all_units) if dist.world == 1 else len(todo)
        bar = tqdm(total=total, initial=total - len(todo), unit="unit",
                   desc="evaluating" if dist.world == 1 else f"evaluating (rank 0 of {dist.world})",
                   dynamic_ncols=True)
    target_names, label_names = _names(model, dataset)
    records: list[dict] = []
    measured: dict[str, tuple[float, int, int]] = {}     # run key → (seconds, forwards, maps) of its first unit
    forward_s: float | None = None                       # seconds per image of the first block's plain forward
    blocks_iter = iter_blocks(dataset, b, my_blocks, workers=workers, device=device) if my_blocks else iter(())
    try:
        with preserved(model):
            current = None
            for step in range(steps):
                status, error = distributed.OK, None
                if step < len(todo):
                    bi, run = todo[step]
                    try:
                        if current is None or current[0].index != bi:
                            block = next(blocks_iter)
                            x = to_device(block, device, dtype)
                            logits = forward_logits(model, x, cfg.perturbation_batch)
                            if forward_s is None and announce is not None:     # calibration: a second, warm call
                                t0 = time.perf_counter()
                                forward_logits(model, x, cfg.perturbation_batch).sum().item()
                                forward_s = (time.perf_counter() - t0) / max(1, x.shape[0])
                            current = (block, block_pairs(block.samples, x, logits, cfg))
                        block, pairs = current
                        first_of_run = announce is not None and run.key not in measured
                        t0 = time.perf_counter()
                        with _ForwardCounter(model) if first_of_run else _Nothing() as counter:
                            recs = score_unit(model, run, block, pairs, specs=specs, cfg=cfg, mean=mean, std=std,
                                              target_names=target_names, label_names=label_names,
                                              maps_out=store.out if (store is not None and save_maps) else None,
                                              save_maps=save_maps)
                        if first_of_run:
                            measured[run.key] = (time.perf_counter() - t0, counter.n, max(1, len(recs)))
                            if len(measured) == len({r.key for _, r in todo}):
                                announce(_estimate(measured, todo, step, runs, forward_s))
                        if own is not None:
                            store.append(own, recs)
                        records.extend(recs)
                    except Exception as exc:               # noqa: BLE001 — reported to every rank, then re-raised
                        status, error = distributed.ERROR, exc
                    if bar is not None:
                        bar.update(1)
                if stop is not None and stop.is_set() and status == distributed.OK:
                    status = distributed.STOP
                status = dist.max(status)
                if status == distributed.ERROR:
                    if error is not None:
                        error.cnnlens_local = True               # this rank prints it (the CLI)
                        raise error
                    raise PeerFailed("another process of the run failed (its message is above); re-run to resume")
                if status == distributed.STOP:
                    raise Interrupted(getattr(stop, "signum", None), store.out if store is not None else None)
    finally:
        if RANDOMISATION in required:
            from ..sanity import clear_cache
            clear_cache()                                # the randomised copy of the model
        close = getattr(blocks_iter, "close", None)
        if close is not None:
            close()
        if bar is not None:
            bar.close()
    dist.barrier()
    if store is not None:
        finished = store.finished(required)
        missing = [u for u in all_units if u not in finished]
        records = [r for u in all_units if u in finished for r in finished[u]]
        # every rank has read the shards before rank 0 merges them; rank 0's verdict on completeness is everyone's
        if dist.max(len(missing) if dist.is_main else 0):
            raise IncompleteResults(f"{store.out} lacks {len(missing)} of the run's {len(all_units)} units "
                                    f"({', '.join(missing[:2])}{', …' if len(missing) > 2 else ''}) after the run: "
                                    f"another process changed the folder; run the same command again to compute them")
        if dist.is_main:
            store.merge(required)
    else:
        records = [r for part in dist.gather(records) for r in part]
    listed = dict(describe.get("unreadable") or {}) if isinstance(describe, dict) else {}
    unreadable = {**listed, **_unreadable(records)}
    records = _latest(records)
    layer_depth = {name: i for i, (name, _) in enumerate(model.named_modules()) if name}
    summary = summarize_records(records, specs, layer_depth)
    skipped = describe.get("skipped", 0) if isinstance(describe, dict) else 0
    skipped = _with_unreadable(skipped, unreadable, listed)
    results = Results(records, summary, store.out if store is not None else None, cfg, required, skipped, unreadable)
    if store is not None and dist.is_main:
        write_tables(store.out, summary, specs, cfg.conventions(), identity, layer_depth=layer_depth,
                     skipped=skipped, unreadable=unreadable,
                     extra={"units": {"done": len(all_units), "total": len(all_units)}, "complete": True})
        if plots:
            write_plots(store.out, records, summary, specs, layer_depth)
    dist.barrier()
    return results


class _Nothing:
    n = 0

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None


def _estimate(measured: dict[str, tuple[float, int, int]], todo: list, step: int, runs: list[MethodRun],
              forward_s: float | None) -> str:
    """The per-map costs measured on each run's first unit (forwards of the model itself, counted by a hook — an LRP
    pass through a canonised copy is not among them — and seconds) and what is left for this process's units."""
    left = {}
    for _, r in todo[step + 1:]:
        left[r.key] = left.get(r.key, 0) + 1
    seconds = sum(measured[k][0] * n for k, n in left.items())
    forwards = sum(measured[k][1] * n for k, n in left.items())
    parts = []
    for r in runs:
        if r.key in measured:
            sec, fwd, maps = measured[r.key]
            parts.append(f"{r.name}{'' if not r.layers else '@' + ','.join(r.layers)} {fwd / maps:.0f} forwards/map "
                         f"({sec / maps:.3g} s/map)")
    if forward_s:
        parts.append(f"one plain forward {forward_s * 1e3:.3g} ms per image")
    return (f"measured on the first block: {'; '.join(parts)}; left: {sum(left.values())} units, ≈ {forwards:,} "
            f"forwards, ≈ {_duration(seconds)}")
