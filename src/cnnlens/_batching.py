"""Chunked masked forwards that adapt to memory: on an out-of-memory error the chunk is halved and the failed chunk is
run again, so a method gives the same result on a small GPU as on a large one (only the chunk boundaries move).

Used by the perturbation methods (Score-CAM, SISE, RISE) and the perturbation metrics (deletion/insertion, confidence).

A chunk size learned from an out-of-memory error is remembered for the model (as inputs per forward, by the kind of
forward and the input's shape, dtype and device), so the next batch of a run starts at the size that fitted instead of
failing again; :func:`forget_learned_chunks` drops what was learned (it goes away with the model anyway).
"""
from __future__ import annotations

import logging
import threading
import weakref
from typing import Any, Callable, Hashable, TypeVar

import torch

from .errors import InputError, MethodError

log = logging.getLogger("cnnlens")

T = TypeVar("T")

_OOM_MESSAGES = ("out of memory", "can't allocate memory", "failed to allocate",
                 # cuDNN / cuBLAS could not get their workspace: memory, not a bug (retrying smaller helps)
                 "cudnn_status_alloc_failed", "cublas_status_alloc_failed", "cusolver_status_alloc_failed",
                 "cufft_alloc_failed", "curand_status_allocation_failed", "hipblas_status_alloc_failed",
                 "miopenstatusallocfailed")


def is_out_of_memory(err: BaseException) -> bool:
    """True for CUDA's ``torch.cuda.OutOfMemoryError`` (``torch.OutOfMemoryError``), the allocator errors of the
    CPU / MPS back ends (RuntimeErrors saying they could not allocate) and the allocation failures of cuDNN / cuBLAS
    (``CUDNN_STATUS_ALLOC_FAILED``, ``CUBLAS_STATUS_ALLOC_FAILED``: their workspace did not fit)."""
    oom_types = tuple(t for t in (getattr(torch, "OutOfMemoryError", None),
                                  getattr(torch.cuda, "OutOfMemoryError", None)) if t is not None)
    if oom_types and isinstance(err, oom_types):
        return True
    return isinstance(err, (RuntimeError, MemoryError)) and any(m in str(err).lower() for m in _OOM_MESSAGES)


def check_max_batch(max_batch) -> int | None:
    """``max_batch`` option: None (no cap) or a positive int (a digit string, as ``--option k=v`` may pass)."""
    if max_batch is None:
        return None
    if isinstance(max_batch, str) and max_batch.strip().isdigit():
        max_batch = int(max_batch)
    if isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 1:
        raise MethodError(f"option max_batch must be None or a positive integer, got {max_batch!r}")
    return max_batch


_LEARNED: "weakref.WeakKeyDictionary[Any, dict[Hashable, int]]" = weakref.WeakKeyDictionary()
_LEARNED_LOCK = threading.Lock()


def learned_chunk(owner: Any, key: Hashable) -> int | None:
    """The most inputs per forward known to fit for ``owner`` (a model) and ``key``, or None."""
    try:
        with _LEARNED_LOCK:
            return _LEARNED.get(owner, {}).get(key)
    except TypeError:                           # an owner that cannot be referenced weakly: nothing learned
        return None


def _learn(owner: Any, key: Hashable, inputs: int) -> None:
    try:
        with _LEARNED_LOCK:
            per = _LEARNED.setdefault(owner, {})
            per[key] = min(inputs, per.get(key, inputs))
    except TypeError:
        pass


def forget_learned_chunks(owner: Any = None) -> None:
    """Drop the chunk sizes learned from out-of-memory errors (for ``owner``, or all)."""
    with _LEARNED_LOCK:
        if owner is None:
            _LEARNED.clear()
        else:
            _LEARNED.pop(owner, None)


def input_key(kind: str, x: torch.Tensor) -> tuple:
    """The key of a learned chunk size: the kind of forward and one input's shape, dtype and device."""
    return (kind, tuple(x.shape[1:]), str(x.dtype), str(x.device))


def _free_cached_memory() -> None:
    """Return the failed chunk's cached blocks to the device (its tensors are gone once the exception is)."""
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


class AdaptiveChunks:
    """Run ``step(start, stop)`` over ``[0, total)`` in chunks of at most ``chunk`` items; on an out-of-memory error
    halve the chunk and run the same ``start`` again (down to 1 item; then the error propagates).

    ``step`` must be repeatable: it computes a chunk and stores it only where a retry overwrites it (or returns the
    result, which ``commit(start, stop, result)`` then applies once). ``chunk`` afterwards holds the size in use,
    ``halvings`` how often it was halved. ``progress``: a tqdm bar over the items (imported only then).

    ``owner`` (the model) and ``key`` (:func:`input_key`): remember a halved size for the next call with the same
    owner and key, and start there (``inputs_per_item``: the model inputs one item puts in a forward, e.g. RISE's
    masks × images, so the remembered size holds for any batch).
    """

    def __init__(self, total: int, chunk: int, *, desc: str = "", progress: bool = False, unit: str = "input",
                 owner: Any = None, key: Hashable = None, inputs_per_item: int = 1) -> None:
        if chunk < 1:
            raise InputError(f"chunk size must be positive, got {chunk}")
        self.total = int(total)
        self.owner, self.key, self.inputs_per_item = owner, key, max(1, int(inputs_per_item))
        if owner is not None and key is not None:
            fits = learned_chunk(owner, key)
            if fits is not None:
                chunk = min(int(chunk), max(1, fits // self.inputs_per_item))
        self.chunk = min(int(chunk), self.total) if self.total > 0 else int(chunk)
        self.halvings = 0
        self.desc = desc
        self.progress = progress
        self.unit = unit

    def run(self, step: Callable[[int, int], T], commit: Callable[[int, int, T], None] | None = None) -> None:
        bar = None
        if self.progress:
            from tqdm.auto import tqdm
            bar = tqdm(total=self.total, desc=self.desc, unit=self.unit)
        try:
            start = 0
            while start < self.total:
                stop = min(start + self.chunk, self.total)
                failed = False
                try:
                    result = step(start, stop)
                except Exception as err:  # noqa: BLE001 - only out-of-memory errors are retried
                    if not is_out_of_memory(err) or stop - start == 1:
                        raise
                    failed = True
                if failed:                     # outside the except block: the failed chunk's tensors are released
                    _free_cached_memory()
                    self.chunk = max(1, (stop - start) // 2)
                    self.halvings += 1
                    if self.owner is not None and self.key is not None:
                        _learn(self.owner, self.key, self.chunk * self.inputs_per_item)
                    log.warning("cnnlens %s: out of memory with %d %ss per forward; retrying with %d",
                                self.desc or "chunked forward", stop - start, self.unit, self.chunk)
                    continue
                if commit is not None:
                    commit(start, stop, result)
                if bar is not None:
                    bar.update(stop - start)
                start = stop
        finally:
            if bar is not None:
                bar.close()
