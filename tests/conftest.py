"""Shared fixtures: small random-weight models, a model-state snapshot to prove models come back untouched."""
from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path

import pytest
import torch

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
warnings.filterwarnings("ignore", message=".*randomly initialised.*")

# Tests never use the network: cnnlens's own downloads are off (tests that serve weights over 127.0.0.1 turn them
# back on), the Hugging Face hub reads its cache only (huggingface_hub reads this when first imported), and the
# torch hub cache is an empty folder of this session (a developer's cached weights never change a result).
os.environ["CNNLENS_OFFLINE"] = "1"
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TORCH_HOME"] = tempfile.mkdtemp(prefix="cnnlens-tests-torch-home-")

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


def snapshot(model: torch.nn.Module) -> dict:
    """Everything that must be unchanged after a cnnlens call."""
    return {
        "params": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "training": {n: m.training for n, m in model.named_modules()},
        "requires_grad": {n: p.requires_grad for n, p in model.named_parameters()},
        "grads": {n: None if p.grad is None else p.grad.clone() for n, p in model.named_parameters()},
        "hooks": {n: (len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks),
                      len(getattr(m, "_backward_pre_hooks", {}))) for n, m in model.named_modules()},
    }


def assert_untouched(model: torch.nn.Module, before: dict) -> None:
    after = snapshot(model)
    assert after["hooks"] == before["hooks"], "hooks left on the model"
    assert after["training"] == before["training"], "training flags changed"
    assert after["requires_grad"] == before["requires_grad"], "requires_grad flags changed"
    for k, v in before["params"].items():
        assert torch.equal(v, after["params"][k]), f"parameter/buffer {k} changed"
    for k, g in before["grads"].items():
        g2 = after["grads"][k]
        assert (g is None and g2 is None) or (g is not None and g2 is not None and torch.equal(g, g2)), \
            f".grad of {k} changed"


@pytest.fixture
def resnet18():
    import torchvision
    torch.manual_seed(0)
    return torchvision.models.resnet18().eval()


@pytest.fixture
def vgg11():
    import torchvision
    torch.manual_seed(0)
    return torchvision.models.vgg11().eval()


@pytest.fixture(scope="session")
def lite0():
    import cnnlens
    return cnnlens.load_model("efficientnet_lite0")


_MODULE_CACHES = ("_MODELS", "_CACHE", "_ORACLE_COPIES")


@pytest.fixture(autouse=True, scope="module")
def _free_module_caches(request):
    """Test modules keep models in module-level dicts; empty them when the module is done so memory does not pile
    up across the session (the whole default run then peaks at one module's footprint)."""
    yield
    import ctypes
    import gc
    for name in _MODULE_CACHES:
        cache = getattr(request.module, name, None)
        if isinstance(cache, dict):
            cache.clear()
    try:
        from cnnlens.lrp.graph import clear_cache
        clear_cache()
    except ImportError:  # pragma: no cover
        pass
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # pragma: no cover - not glibc
        pass
