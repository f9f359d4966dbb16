"""Bounded memory (issue 14, item 2): ``max_batch`` caps the masked inputs per forward, and an out-of-memory error
halves the chunk and retries with the same result; the chunk used is reported in the extras.

The out-of-memory error is injected: a wrapper raises ``torch.cuda.OutOfMemoryError`` whenever a forward gets more
than ``k`` images (what a GPU with room for k images does)."""
from __future__ import annotations

import logging

import pytest
import torch
from torch import nn

import cnnlens
from cnnlens._batching import AdaptiveChunks, is_out_of_memory
from cnnlens.errors import MethodError
from cnnlens.metrics import confidence_pair, deletion_insertion

from test_concurrency import _tiny


class OOMAbove(nn.Module):
    """Raises CUDA's out-of-memory error for batches larger than ``k``; records every batch size it is given."""

    def __init__(self, model: nn.Module, k: int) -> None:
        super().__init__()
        self.model = model
        self.k = k
        self.sizes: list[int] = []

    def forward(self, x):
        self.sizes.append(int(x.shape[0]))
        if x.shape[0] > self.k:
            raise torch.cuda.OutOfMemoryError(f"CUDA out of memory. Tried to allocate {x.shape[0]} images (injected)")
        return self.model(x)


@pytest.fixture(scope="module")
def tiny():
    return _tiny(3)


@pytest.fixture(scope="module")
def x():
    return torch.randn(2, 3, 24, 24, generator=torch.Generator().manual_seed(5))


def _wrapped(options: dict) -> dict:
    """The options for the wrapped model (its layers are called model.<name>)."""
    return {**options, "layer": f"model.{options['layer']}"} if "layer" in options else options


def _equal(a: cnnlens.Explanation, b: cnnlens.Explanation) -> None:
    assert torch.equal(a.raw, b.raw) and torch.equal(a.heatmap, b.heatmap) and torch.equal(a.target, b.target)


@pytest.mark.parametrize("method, options, k, start, final", [
    ("rise", {"n_masks": 96, "batch_size": 32}, 10, 16, 4),       # 16 masks × 2 samples per forward → 8 → 4 masks
    ("sise", {"batch_size": 64}, 5, 64, 4),
    ("score-cam", {"layer": "layer2", "batch_size": 16}, 5, 16, 4),
    ("score-cam", {"layer": "layer2", "batch_size": 16, "variant": "gc"}, 3, 16, 2),
])
def test_oom_halves_the_chunk_and_gives_the_same_result(tiny, x, caplog, method, options, k, start, final):
    flaky = OOMAbove(tiny, k)
    wrapped = _wrapped(options)
    with caplog.at_level(logging.WARNING, logger="cnnlens"):
        got = cnnlens.explain(flaky, x, method, **wrapped)
    assert got.extras["chunk"] == final
    assert got.extras["chunk_halvings"] >= 2
    assert caplog.text.count("out of memory") == got.extras["chunk_halvings"]
    assert max(s for s in flaky.sizes if s <= k) <= k
    # the same chunk boundaries without the injected error: identical
    per_forward = final * (x.shape[0] if method == "rise" else 1)
    same = cnnlens.explain(OOMAbove(tiny, 10 ** 6), x, method, **{**wrapped, "batch_size": per_forward})
    _equal(got, same)
    # the default chunking, plain model: equal up to float rounding (the chunk boundaries move)
    plain = cnnlens.explain(tiny, x, method, **options)
    torch.testing.assert_close(got.raw, plain.raw, rtol=1e-5, atol=1e-7)
    assert plain.extras["chunk_halvings"] == 0 and final < plain.extras["chunk"] <= start


@pytest.mark.parametrize("method, options", [("rise", {"n_masks": 64, "batch_size": 64}), ("sise", {}),
                                             ("score-cam", {"layer": "layer2"})])
def test_max_batch_caps_every_forward(tiny, x, method, options):
    spy = OOMAbove(tiny, 10 ** 6)
    e = cnnlens.explain(spy, x, method, max_batch=6, **_wrapped(options))
    masked = spy.sizes[1:]                                          # after the explained forward (N = 2)
    assert masked and max(masked) <= 6
    assert e.extras["chunk"] * (x.shape[0] if method == "rise" else 1) <= 6
    with pytest.raises(MethodError, match="max_batch"):
        cnnlens.explain(tiny, x, method, max_batch=0, **options)


def test_metrics_retry_on_oom(tiny, x):
    maps = cnnlens.explain(tiny, x, "grad-cam", layer="layer2")
    kw = dict(step=48, mean=(0.5,) * 3, std=(0.25,) * 3)
    got = deletion_insertion(OOMAbove(tiny, 5), x, maps.heatmap, maps.target, batch_size=64, **kw)
    same = deletion_insertion(tiny, x, maps.heatmap, maps.target, batch_size=4, **kw)
    for key in ("deletion_curve", "insertion_curve"):
        assert torch.equal(got[key], same[key])
    capped = OOMAbove(tiny, 10 ** 6)
    deletion_insertion(capped, x, maps.heatmap, maps.target, batch_size=64, max_batch=5, **kw)
    assert max(capped.sizes) <= 5
    y, o = confidence_pair(OOMAbove(tiny, 1), x, maps.heatmap, maps.target, mask_space="normalized")
    y2, o2 = confidence_pair(tiny, x, maps.heatmap, maps.target, mask_space="normalized", batch_size=1)
    assert torch.equal(y, y2) and torch.equal(o, o2)


def test_other_errors_are_not_retried_and_one_input_is_the_floor(tiny, x):
    class Broken(nn.Module):
        def __init__(self):
            super().__init__()
            self.calls = 0
            self.conv = nn.Conv2d(3, 2, 3)

        def forward(self, x):
            self.calls += 1
            raise RuntimeError("shape mismatch")

    broken = Broken()
    with pytest.raises(RuntimeError, match="shape mismatch"):
        AdaptiveChunks(8, 4).run(lambda i, j: broken(x))
    assert broken.calls == 1
    never = OOMAbove(tiny, 0)
    with pytest.raises(torch.cuda.OutOfMemoryError):            # even one image does not fit: the error stands
        AdaptiveChunks(8, 4).run(lambda i, j: never(x.repeat(4, 1, 1, 1)[: j - i]))
    assert never.sizes == [4, 2, 1]


def test_is_out_of_memory():
    assert is_out_of_memory(torch.cuda.OutOfMemoryError("CUDA out of memory"))
    assert is_out_of_memory(RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate "
                                         "memory: you tried to allocate 1099511627776 bytes"))
    assert is_out_of_memory(RuntimeError("MPS backend out of memory (MPS allocated: 1 GB)"))
    assert not is_out_of_memory(RuntimeError("mat1 and mat2 shapes cannot be multiplied"))
    assert not is_out_of_memory(ValueError("out of memory"))


# ------------------------------------------------------------------------- issue 21, item 14: OOM across a run
@pytest.mark.parametrize("method, options, k", [
    ("rise", {"n_masks": 48, "batch_size": 32}, 10),
    pytest.param("sise", {"batch_size": 64}, 5, marks=pytest.mark.slow),
    ("score-cam", {"layer": "layer2", "batch_size": 16}, 5),
])
def test_the_learned_chunk_carries_to_the_next_batch(tiny, x, caplog, method, options, k):
    """A run calls a method batch after batch: after one out-of-memory error the next batch starts at the size that
    fitted (no error again), also for another batch size (RISE counts masks × images)."""
    flaky = OOMAbove(tiny, k)
    wrapped = _wrapped(options)
    first = cnnlens.explain(flaky, x, method, **wrapped)
    assert first.extras["chunk_halvings"] >= 1
    flaky.sizes.clear()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="cnnlens"):
        second = cnnlens.explain(flaky, x, method, **wrapped)
        third = cnnlens.explain(flaky, x[:1], method, **wrapped)
    assert "out of memory" not in caplog.text
    assert second.extras["chunk_halvings"] == 0 and third.extras["chunk_halvings"] == 0
    assert max(flaky.sizes) <= k
    _equal(first, second)
    fresh = cnnlens.explain(OOMAbove(tiny, 10 ** 6), x, method, **wrapped)        # another model learned nothing
    assert fresh.extras["chunk_halvings"] == 0 and fresh.extras["chunk"] > first.extras["chunk"]
    from cnnlens._batching import forget_learned_chunks
    forget_learned_chunks(flaky)
    assert cnnlens.explain(flaky, x, method, **wrapped).extras["chunk_halvings"] >= 1


def test_the_metrics_chunk_carries_to_the_next_batch(tiny, x):
    maps = cnnlens.explain(tiny, x, "grad-cam", layer="layer2")
    kw = dict(step=48, mean=(0.5,) * 3, std=(0.25,) * 3)
    flaky = OOMAbove(tiny, 5)
    deletion_insertion(flaky, x, maps.heatmap, maps.target, batch_size=64, **kw)
    flaky.sizes.clear()
    deletion_insertion(flaky, x, maps.heatmap, maps.target, batch_size=64, **kw)
    assert flaky.sizes and max(flaky.sizes) <= 5


@pytest.mark.parametrize("message", [
    "cuDNN error: CUDNN_STATUS_ALLOC_FAILED",
    "CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`",
    "cusolver error: CUSOLVER_STATUS_ALLOC_FAILED, when calling `cusolverDnCreate(handle)`",
])
def test_cudnn_and_cublas_allocation_failures_are_out_of_memory(tiny, x, message):
    assert is_out_of_memory(RuntimeError(message))
    sizes = []

    def step(i, j):
        sizes.append(j - i)
        if j - i > 2:
            raise RuntimeError(message)
    run = AdaptiveChunks(8, 8)
    run.run(step)
    assert run.chunk == 2 and sizes[:3] == [8, 4, 2]
    assert not is_out_of_memory(RuntimeError("cuDNN error: CUDNN_STATUS_BAD_PARAM"))
    assert not is_out_of_memory(RuntimeError("CUDA error: CUBLAS_STATUS_EXECUTION_FAILED"))


def test_evaluate_max_batch_flag_reaches_the_metrics_and_methods(monkeypatch, tmp_path):
    import cnnlens.evaluation as evaluation
    from click.testing import CliRunner

    from cnnlens.cli import main
    seen = {}

    class Stop(Exception):
        pass

    def fake_evaluate(model, dataset, methods, metrics, **kw):
        seen.update(config=kw["config"], options=kw["method_options"])
        raise Stop

    monkeypatch.setattr(evaluation, "evaluate", fake_evaluate)
    monkeypatch.setattr(evaluation, "open_model", lambda *a, **k: (None, "synthetic-resnet"))
    monkeypatch.setattr(evaluation, "open_dataset", lambda *a, **k: None)
    args = ["evaluate", "--model", "synthetic-resnet", "--data", "synthetic", "--methods", "rise,grad-cam,score-cam",
            "--metrics", "deletion", "--option", "score-cam:max_batch=3", "--out", str(tmp_path / "o")]
    r = CliRunner().invoke(main, [*args, "--max-batch", "12"])
    assert isinstance(r.exception, Stop), r.output
    assert seen["config"].perturbation_batch == 12
    assert seen["options"] == {"rise": {"max_batch": 12}, "grad-cam": {}, "score-cam": {"max_batch": 3}}
    r = CliRunner().invoke(main, args)
    assert seen["config"].perturbation_batch == 64 and seen["options"]["rise"] == {}
    r = CliRunner().invoke(main, [*args, "--max-batch", "0"])
    assert r.exit_code == 2 and "--max-batch must be at least 1" in r.output


def test_device_id_is_passed_only_to_a_torch_that_takes_it():
    """``init_process_group(device_id=...)`` exists from torch 2.3 on; pyproject allows torch ≥ 2.1."""
    from cnnlens.evaluation.distributed import device_id_kwargs
    dev = torch.device("cuda:1")

    def old(backend=None, init_method=None, timeout=None, world_size=-1, rank=-1, store=None, group_name=""):
        pass

    def new(backend=None, init_method=None, timeout=None, world_size=-1, rank=-1, store=None, group_name="",
            pg_options=None, device_id=None):
        pass
    assert device_id_kwargs(old, dev) == {}
    assert device_id_kwargs(new, dev) == {"device_id": dev}
    import inspect

    import torch.distributed as dist
    has = "device_id" in inspect.signature(dist.init_process_group).parameters
    assert device_id_kwargs(dist.init_process_group, dev) == ({"device_id": dev} if has else {})
