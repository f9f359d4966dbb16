"""Several threads on one model: every call gets the result it would get alone, no hook is left, and calls on different
models do not wait for each other (issue 14, item 1)."""
from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from torch import nn

import cnnlens
from cnnlens._state import model_lock
from cnnlens.metrics import confidence_pair, perturbation_curves

from conftest import assert_untouched, snapshot


class _Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        return self.relu(self.bn(self.conv(x)))


class TinyNet(nn.Module):
    """A small conv net with BatchNorm, in-place ReLUs and blocks: enough for every method family."""

    def __init__(self, classes: int = 5) -> None:
        super().__init__()
        self.stem = _Block(3, 8, 1)
        self.layer1 = _Block(8, 12, 2)
        self.layer2 = _Block(12, 16, 2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, classes)

    def forward(self, x):
        x = self.layer2(self.layer1(self.stem(x)))
        return self.fc(torch.flatten(self.pool(x), 1))


def _tiny(seed: int = 0) -> TinyNet:
    torch.manual_seed(seed)
    model = TinyNet()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return model.eval()


#: One call per method family (gradient CAMs, Score-CAM, Relevance-CAM, LRP family, perturbation, SR map).
CALLS = [
    ("grad-cam", {"layer": "layer2"}),
    ("grad-cam++", {"layer": ["layer1", "layer2"]}),
    ("layer-cam", {"layer": "layer1"}),
    ("score-cam", {"layer": "layer2"}),
    ("relevance-cam", {"layer": ["layer1", "layer2"]}),
    ("lrp", {}),
    ("sglrp", {}),
    ("sise", {}),
    ("rise", {"n_masks": 64, "batch_size": 16}),
    ("sr-map", {"working_size": 48, "query_stride": 2}),
]


def _maps(res) -> dict:
    if isinstance(res, dict):
        return {k: (e.heatmap, e.raw, e.target) for k, e in res.items()}
    return {None: (res.heatmap, res.raw, res.target)}


def _assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        for ta, tb in zip(a[k], b[k]):
            assert torch.equal(ta, tb), k


def test_threads_on_one_model_get_their_serial_results():
    model = _tiny()
    x = torch.randn(2, 3, 24, 24, generator=torch.Generator().manual_seed(1))
    available = set(cnnlens.METHODS)
    calls = [(m, o) for m, o in CALLS if m in available]
    assert len(calls) >= 8
    serial = {m: _maps(cnnlens.explain(model, x, m, **o)) for m, o in calls}
    before = snapshot(model)
    jobs = [(m, o) for m, o in calls for _ in range(5)]            # every family × 5 calls
    start = threading.Barrier(4)

    def run(job):
        m, o = job
        return m, _maps(cnnlens.explain(model, x, m, **o))

    def worker(chunk):
        start.wait()                                               # all four threads start together
        return [run(job) for job in chunk]

    chunks = [jobs[i::4] for i in range(4)]
    with ThreadPoolExecutor(4) as pool:
        results = [r for part in pool.map(worker, chunks) for r in part]
    assert len(results) == len(jobs)
    for m, maps in results:
        _assert_same(maps, serial[m])
    assert_untouched(model, before)


def test_threads_share_a_model_with_metrics():
    model = _tiny()
    x = torch.randn(2, 3, 24, 24, generator=torch.Generator().manual_seed(2))
    e = cnnlens.explain(model, x, "grad-cam", layer="layer2")
    maps, target = e.heatmap, e.target
    serial_pair = confidence_pair(model, x, maps, target, mask_space="normalized")
    serial_curve = perturbation_curves(model, x, maps, target, step=64, batch_size=7)

    def job(i):
        if i % 3 == 0:
            return "pair", confidence_pair(model, x, maps, target, mask_space="normalized")
        if i % 3 == 1:
            return "curve", perturbation_curves(model, x, maps, target, step=64, batch_size=7)
        return "cam", cnnlens.explain(model, x, "grad-cam", layer="layer2").heatmap

    with ThreadPoolExecutor(4) as pool:
        out = list(pool.map(job, range(24)))
    for kind, value in out:
        if kind == "pair":
            assert torch.equal(value[0], serial_pair[0]) and torch.equal(value[1], serial_pair[1])
        elif kind == "curve":
            assert torch.equal(value, serial_curve)
        else:
            assert torch.equal(value, maps)


def test_the_lock_is_per_model():
    """While model A's lock is held elsewhere, a call on model B finishes and a call on A waits."""
    a, b = _tiny(0), _tiny(1)
    x = torch.randn(1, 3, 24, 24)
    held, release = threading.Event(), threading.Event()

    def hold_a():
        with model_lock(a):
            held.set()
            release.wait(30)

    holder = threading.Thread(target=hold_a)
    holder.start()
    try:
        assert held.wait(10)
        with ThreadPoolExecutor(2) as pool:
            on_b = pool.submit(cnnlens.explain, b, x, "grad-cam", layer="layer2")
            on_a = pool.submit(cnnlens.explain, a, x, "grad-cam", layer="layer2")
            assert on_b.result(timeout=30).heatmap.shape == (1, 24, 24)   # not blocked by A's lock
            time.sleep(0.2)
            assert not on_a.done()                                       # A's call waits for A's lock
            release.set()
            assert on_a.result(timeout=30).heatmap.shape == (1, 24, 24)
    finally:
        release.set()
        holder.join(10)


def test_model_lock_is_reentrant_and_weak():
    import gc
    import weakref
    model = _tiny()
    lock = cnnlens.model_lock(model)
    assert model_lock(model) is lock
    with lock:
        cnnlens.explain(model, torch.randn(1, 3, 24, 24), "grad-cam", layer="layer2")   # same thread: no deadlock
    ref = weakref.ref(model)
    del model, lock
    gc.collect()
    assert ref() is None                                                 # the lock does not keep the model alive


@pytest.mark.slow
def test_threads_on_efficientnet_lite0(lite0):
    """The issue's scenario: 4 threads × grad-cam / relevance-cam at bn2 on a real EfficientNet-Lite0."""
    x = cnnlens.load_image("chelsea", lite0)
    serial = {m: cnnlens.explain(lite0, x, m, layer="bn2").heatmap for m in ("grad-cam", "relevance-cam")}
    before = snapshot(lite0)
    jobs = ["grad-cam", "relevance-cam"] * 10
    with ThreadPoolExecutor(4) as pool:
        out = list(pool.map(lambda m: (m, cnnlens.explain(lite0, x, m, layer="bn2").heatmap), jobs))
    for m, h in out:
        assert torch.equal(h, serial[m])
    assert_untouched(lite0, before)


# ------------------------------------------------------------- issue 21, item 14: sanity's copy and cache
def test_sanity_copies_the_model_under_its_lock():
    """While another thread's cnnlens call holds the model (its hooks attached), the randomisation copy waits: the
    copy never carries that call's hooks."""
    from cnnlens.sanity.randomize import model_copy
    model = _tiny(11)
    done = threading.Event()
    copies = []

    def copy_it():
        copies.append(model_copy(model))
        done.set()
    with model_lock(model):
        handle = model.layer1.register_forward_hook(lambda m, i, o: None)      # a call in progress
        worker = threading.Thread(target=copy_it)
        worker.start()
        assert not done.wait(0.3), "the copy did not wait for the model's lock"
        handle.remove()
    worker.join(30)
    assert done.is_set() and not copies[0].layer1._forward_hooks


def test_randomised_copy_cache_under_threads():
    """Threads asking for the randomised copies of two models at once each get the copy of their own model (the
    cache is read and filled under a lock), equal to the one made alone."""
    from cnnlens.sanity import metric
    models = [_tiny(21), _tiny(22)]
    metric.clear_cache()
    alone = []
    for m in models:
        alone.append({k: v.clone() for k, v in metric.randomised_copy(m, seed=3).state_dict().items()})
        metric.clear_cache()
    real_copy = metric.model_copy

    def slow_copy(model):
        time.sleep(0.01)                        # widen the window between the cache check and its update
        return real_copy(model)
    metric.model_copy = slow_copy
    try:
        def ask(i):
            m = models[i % 2]
            got = metric.randomised_copy(m, seed=3)
            return i % 2, {k: v.clone() for k, v in got.state_dict().items()}, got is not m
        with ThreadPoolExecutor(4) as pool:
            results = list(pool.map(ask, range(24)))
    finally:
        metric.model_copy = real_copy
        metric.clear_cache()
    for which, state, is_copy in results:
        assert is_copy
        for k, v in alone[which].items():
            assert torch.equal(state[k], v), (which, k)
