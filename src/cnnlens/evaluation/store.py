"""The results store of an evaluation folder: the one place that reads, writes and merges results and decides which
record counts — used by the runner (resume, torchrun shards and merge) and by the report.

Layout of ``out/``:

* ``run.json`` — the run identity (every setting that changes a number, :func:`.config.run_identity`);
* ``results.jsonl`` — one JSON record per (image, target class, method, layer);
* ``results.rank{r}.jsonl`` — torchrun rank r's shard while a distributed run is in progress;
* ``.lock`` — held (``flock``) by the process writing the folder, so two runs never write it at once.

Words: a *block* is a batch of images of the fixed dataset order (images b·B … (b+1)·B − 1); a *unit* is one block
× one method run (``"3:grad-cam@layer4"``), the unit of work, of writing and of resuming. Every record carries its
``unit`` and ``unit_size`` (how many records the unit wrote), and a unit is appended in one ``write``.

The rule for which record counts, everywhere: a unit counts when every one of its records is present and readable
(a kill mid-write leaves a torn or short unit, which does not count and is recomputed whole; a record written by
another tool, without a unit, is a unit of its own); a unit present in
several files (a resume with another world size recomputed it) counts once, from the first file in the order
``results.jsonl``, ``results.rank0.jsonl``, ``results.rank1.jsonl``, … (it is the same computation: the identity
in ``run.json`` pins every setting).
"""
from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from .config import ResumeError, identity_differences

RESULTS = "results.jsonl"
SHARD = "results.rank{}.jsonl"
RUN = "run.json"
LOCK = ".lock"
#: What ``--overwrite`` removes (files and folders the runner and the report write; nothing else in the folder).
OWNED = ("run.json", "results*.jsonl", "summary.md", "summary.csv", "summary.json", "bar_*.png", "curves_*.png",
         "report.html", "images", "maps")


#: The key of a record standing for an image skipped while decoding (no metrics): one per unit of its block.
SKIPPED = "skipped"


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename (readers never see half a file)."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def unit_id(block: int, run_key: str) -> str:
    return f"{block}:{run_key}"


def unit_order(uid: str) -> tuple[int, str]:
    head, _, rest = uid.partition(":")
    return (int(head) if head.isdigit() else -1, rest)


def _unit_of(rec: dict) -> tuple[str, int]:
    """(unit id, unit size) of a record; format-1 folders called the unit "block"; a record of another writer, with
    neither, is a unit of its own."""
    if "unit" in rec:
        return str(rec["unit"]), int(rec["unit_size"])
    if "block" in rec:
        return str(rec["block"]), int(rec["block_size"])
    key = (rec["sample"], rec.get("target"), rec["method"], rec.get("layer"))
    return "record:" + json.dumps(key, sort_keys=True), 1


@dataclass
class ShardContents:
    units: dict[str, list[dict]]      # the finished units, in file order
    dirty: bool                       # the file holds anything else (a unit cut short, a torn line)


def read_shard(path: Path, required_metrics: Iterable[str] = ()) -> ShardContents:
    """The finished units of one results file (a unit whose records lack a required metric is not finished)."""
    required = set(required_metrics)
    if not path.is_file():
        return ShardContents({}, False)
    units: dict[str, list[dict]] = {}
    sizes: dict[str, int] = {}
    dirty = False
    with open(path, "r", encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                uid, size = _unit_of(rec)
                if SKIPPED in rec:                                       # an image skipped while decoding
                    rec["sample"]                                        # noqa: B018 — its one field
                else:
                    rec["metrics"], rec["method"], rec["sample"]        # noqa: B018 — a record's fields
            except (ValueError, KeyError, TypeError):
                dirty = True
                continue
            units.setdefault(uid, []).append(rec)
            sizes[uid] = size
    done = {}
    for uid, recs in units.items():
        if len(recs) == sizes[uid] and all(SKIPPED in r or required <= set(r["metrics"]) for r in recs):
            done[uid] = recs
        else:
            dirty = True
    return ShardContents(done, dirty)


class ResultsStore:
    """The results of one output folder (see the module docstring for the layout and the rule)."""

    def __init__(self, out: str | Path):
        self.out = Path(out)

    # ---------------------------------------------------------------- files
    def files(self) -> list[Path]:
        """``results.jsonl`` and every rank shard present, in precedence order (rank 2 before rank 10)."""
        ranks = sorted(self.out.glob("results.rank*.jsonl"),
                       key=lambda p: (int(re.sub(r"\D", "", p.name) or 0), p.name))
        return [self.out / RESULTS] + ranks

    def own_file(self, rank: int, world: int) -> Path:
        """The file a process appends to: ``results.jsonl`` alone, ``results.rank{r}.jsonl`` under torchrun."""
        return self.out / (RESULTS if world == 1 else SHARD.format(rank))

    # ---------------------------------------------------------------- reading
    def finished(self, required_metrics: Iterable[str] = ()) -> dict[str, list[dict]]:
        """{unit id: records} of every finished unit in every file (the first file holding a unit wins)."""
        done: dict[str, list[dict]] = {}
        for p in self.files():
            for uid, recs in read_shard(p, required_metrics).units.items():
                done.setdefault(uid, recs)
        return done

    def records(self, required_metrics: Iterable[str] = ()) -> list[dict]:
        """Every counted record, by unit order (block, then method run), each unit's records in written order; the
        records standing for images skipped while decoding (``SKIPPED``) are left out (:meth:`unreadable` has them)."""
        done = self.finished(required_metrics)
        return [r for uid in sorted(done, key=unit_order) for r in done[uid] if SKIPPED not in r]

    def unreadable(self, required_metrics: Iterable[str] = ()) -> dict[str, str]:
        """Sample id → why, for the images of finished units that were skipped while decoding."""
        done = self.finished(required_metrics)
        return {r["sample"]: str(r.get("reason") or "unreadable") for recs in done.values() for r in recs
                if SKIPPED in r}

    def has_results(self) -> bool:
        return any(p.is_file() and p.stat().st_size > 0 for p in self.files())

    # ---------------------------------------------------------------- writing
    def repair(self, path: Path, required_metrics: Iterable[str] = ()) -> None:
        """Rewrite one file without units cut short and torn lines, so appends start on a clean line."""
        contents = read_shard(path, required_metrics)
        if contents.dirty:
            atomic_write_text(path, "".join(json.dumps(r) + "\n" for recs in contents.units.values() for r in recs))

    @staticmethod
    def append(path: Path, records: list[dict]) -> None:
        """One ``write`` of a whole unit (O_APPEND): a kill leaves either nothing or a detectable torn tail."""
        data = "".join(json.dumps(r) + "\n" for r in records).encode("utf-8")
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
        finally:
            os.close(fd)

    def merge(self, required_metrics: Iterable[str] = ()) -> list[dict]:
        """Write every counted record to ``results.jsonl`` (by unit order) and remove the rank shards; returns the
        records. Only the process holding the folder (torchrun: rank 0, after every rank is done) calls it."""
        done = self.finished(required_metrics)
        records = [r for uid in sorted(done, key=unit_order) for r in done[uid]]      # whole units, skip records kept
        atomic_write_text(self.out / RESULTS, "".join(json.dumps(r) + "\n" for r in records))
        for p in self.files()[1:]:
            p.unlink(missing_ok=True)
        return records

    # ---------------------------------------------------------------- identity
    def identity(self) -> dict | None:
        """The identity in ``run.json`` (None: no run.json or an unreadable one)."""
        try:
            data = json.loads((self.out / RUN).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return data.get("identity") if isinstance(data, dict) else None

    def check_identity(self, identity: dict) -> None:
        """Refuse a folder that holds results of another configuration, naming the settings that differ."""
        old = self.identity()
        if old is None:
            if self.has_results():
                raise ResumeError(f"{self.out} holds results without a readable {RUN}, so they cannot be checked "
                                  f"against this run's settings; use another --out folder, or --overwrite to "
                                  f"replace them")
            return
        if old != identity:
            diffs = identity_differences(old, identity) or ["results format"]
            shown = "; ".join(diffs[:4]) + (f"; and {len(diffs) - 4} more" if len(diffs) > 4 else "")
            raise ResumeError(f"{self.out} holds results of different settings ({shown}); use another --out "
                              f"folder, or --overwrite to replace them")

    def write_identity(self, identity: dict) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.out / RUN, json.dumps({"identity": identity}, indent=2))

    def clear(self) -> None:
        """Remove what a previous run wrote (``--overwrite``); other files in the folder are left alone."""
        for pattern in OWNED:
            for p in self.out.glob(pattern):
                if p.is_dir() and not p.is_symlink():
                    shutil.rmtree(p)
                else:
                    p.unlink(missing_ok=True)


class FolderLock:
    """An exclusive ``flock`` on ``out/.lock`` for the lifetime of a run: a second run into the same folder (another
    terminal, or the workers of a killed torchrun still running) is refused in one line instead of mixing its writes
    with this run's. Released when the process ends, however it ends; removed on a normal release (a lock taken on a
    file that was removed meanwhile is retried on the new one, so two processes never both hold it)."""

    def __init__(self, out: Path):
        self.path = Path(out) / LOCK
        self.fd: int | None = None

    def acquire(self) -> None:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not on POSIX: no lock
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                try:
                    holder = os.pread(fd, 64, 0).decode("ascii", "replace").strip()
                except OSError:
                    holder = ""
                os.close(fd)
                raise ResumeError(f"another cnnlens evaluate{f' (pid {holder})' if holder else ''} is writing to "
                                  f"{self.path.parent}; wait for it to end or stop it, then run the command again") \
                    from None
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)                          # the holder removed the file as we locked it: lock the new one
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode("ascii"), 0)
        self.fd = fd

    def release(self) -> None:
        if self.fd is not None:
            try:
                self.path.unlink()                # while still locked: a waiter retries on a fresh file
            except OSError:
                pass
            os.close(self.fd)
            self.fd = None
