"""Pretrained weights the way users get them, through the real download and cache paths, without the network:
a TORCH_HOME pre-filled under torchvision's own file names, a loopback HTTP server for URLs, a Hugging Face cache laid
out as huggingface_hub writes it (read with HF_HUB_OFFLINE=1), and the offline errors through the API and the CLI."""
from __future__ import annotations

import functools
import hashlib
import http.server
import json
import os
import pickle
import subprocess
import sys
import textwrap
import threading
import warnings
from pathlib import Path

import pytest
import torch
import torchvision
from click.testing import CliRunner

import cnnlens
from cnnlens.cli import main

SRC = str(Path(__file__).resolve().parents[1] / "src")
ARCH = "regnet_y_400mf"                   # small, and torchvision has two weights for it (V1: resize 256, V2: 232)


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    home = tmp_path / "torch_home"
    monkeypatch.setenv("TORCH_HOME", str(home))
    return home


def _random_state(seed: int, arch: str = ARCH) -> dict:
    torch.manual_seed(seed)
    return getattr(torchvision.models, arch)().state_dict()


def _prefill(home: Path, member: str, seed: int, arch: str = ARCH) -> dict:
    """A random state dict saved where torchvision's download would put the weights ``member``."""
    w = torchvision.models.get_model_weights(arch)[member]
    path = home / "hub" / "checkpoints" / os.path.basename(w.url)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = _random_state(seed, arch)
    torch.save(state, path)
    return state


def _same(model, state) -> bool:
    own = model.state_dict()
    return own.keys() == state.keys() and all(torch.equal(own[k], state[k]) for k in own)


def _one_line_error(res, *fragments):
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("cnnlens: error: "), res.output
    for f in fragments:
        assert f in lines[0], (f, lines[0])
    return lines[0]


# --------------------------------------------------------------------------------------------------------- torchvision
def test_torchvision_default_and_named_weights_from_the_torch_hub_cache(torch_home):
    v1 = _prefill(torch_home, "IMAGENET1K_V1", seed=1)
    v2 = _prefill(torch_home, "IMAGENET1K_V2", seed=2)
    model = cnnlens.load_model(ARCH)                                 # DEFAULT = IMAGENET1K_V2
    info = model.cnnlens_meta
    assert _same(model, v2) and info.pretrained and not model.training
    assert info.weights == "torchvision:RegNet_Y_400MF_Weights.IMAGENET1K_V2"
    assert info.input_size == (3, 224, 224) and info.crop_pct == pytest.approx(224 / 232)
    assert info.interpolation == "bilinear" and info.mean == (0.485, 0.456, 0.406)
    assert info.class_names[281] == "tabby" and len(info.class_names) == 1000
    for name in ("IMAGENET1K_V1", "RegNet_Y_400MF_Weights.IMAGENET1K_V1"):
        old = cnnlens.load_model(ARCH, weights=name)
        assert _same(old, v1) and old.cnnlens_meta.crop_pct == pytest.approx(224 / 256)
        assert old.cnnlens_meta.weights == "torchvision:RegNet_Y_400MF_Weights.IMAGENET1K_V1"
    # the preprocessing is the weights' own: resize the shorter side to 232, centre-crop 224, ImageNet mean/std
    x = cnnlens.load_image("chelsea", model)
    t = torchvision.models.RegNet_Y_400MF_Weights.IMAGENET1K_V2.transforms()
    from PIL import Image

    from cnnlens.image_files import load_rgb
    ref = t(Image.fromarray(load_rgb("chelsea")))[None]
    assert x.shape == ref.shape == (1, 3, 224, 224)
    assert torch.allclose(x, ref, atol=1e-6)
    e = cnnlens.explain(model, x, "grad-cam", target="tabby")
    assert e.target.tolist() == [281] and e.target_names == ["tabby"]


def test_torchvision_weights_errors(torch_home):
    with pytest.raises(cnnlens.WeightsError, match="no torchvision weights 'IMAGENET1K_V3'.*IMAGENET1K_V1, "
                                                   "IMAGENET1K_V2"):
        cnnlens.load_model(ARCH, weights="IMAGENET1K_V3")
    with pytest.raises(cnnlens.WeightsError, match="are not regnet_y_400mf's"):
        cnnlens.load_model(ARCH, weights="ResNet50_Weights.IMAGENET1K_V2")
    with pytest.raises(cnnlens.WeightsError, match="not a torchvision architecture"):
        cnnlens.load_model("efficientnet_lite0", weights="IMAGENET1K_V1")


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch EVIL_RAN",))


def test_torchvision_cache_is_loaded_weights_only(torch_home, tmp_path, monkeypatch):
    """torchvision's own loader uses weights_only=False; cnnlens forces weights_only=True around it."""
    monkeypatch.chdir(tmp_path)
    w = torchvision.models.get_model_weights(ARCH)["IMAGENET1K_V1"]
    path = torch_home / "hub" / "checkpoints" / os.path.basename(w.url)
    path.parent.mkdir(parents=True)
    with open(path, "wb") as fh:
        pickle.dump({"weight": _Evil()}, fh)
    with pytest.raises(cnnlens.WeightsError, match="refused"):
        cnnlens.load_model(ARCH, weights="IMAGENET1K_V1")
    assert not (tmp_path / "EVIL_RAN").exists()
    assert "TORCH_FORCE_WEIGHTS_ONLY_LOAD" not in os.environ          # restored


def test_offline_with_nothing_cached_is_an_error_never_a_random_init(torch_home):
    with warnings.catch_warnings():
        warnings.simplefilter("error")                               # and no "randomly initialised" warning
        with pytest.raises(cnnlens.WeightsError) as err:
            cnnlens.load_model(ARCH)
    msg = str(err.value)
    cache = torch_home / "hub" / "checkpoints" / "regnet_y_400mf-e6988f5f.pth"
    assert "\n" not in msg and str(cache) in msg and "IMAGENET1K_V2" in msg
    assert "Connect to the internet once" in msg and "weights=PATH" in msg and "fetch-weights regnet_y_400mf" in msg


def test_random_only_when_asked_and_said_once(torch_home):
    with pytest.warns(UserWarning, match="randomly initialised") as caught:
        model = cnnlens.load_model(ARCH, weights="random")
    assert len([w for w in caught if "randomly" in str(w.message)]) == 1
    info = model.cnnlens_meta
    assert info.weights == "random" and not info.pretrained and info.class_names[281] == "tabby"
    assert not (torch_home / "hub").exists()                         # nothing downloaded or created


def test_local_file_weights_are_described_by_their_hash(tmp_path):
    state = _random_state(3, "squeezenet1_1")
    path = tmp_path / "sq.pth"
    torch.save(state, path)
    model = cnnlens.load_model("squeezenet1_1", weights=str(path))
    assert _same(model, state)
    assert model.cnnlens_meta.weights == "file:sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


# ------------------------------------------------------------------------------------------------------------- URLs
class _Server:
    """A static file server on 127.0.0.1 (a thread), counting the requests."""

    def __init__(self, root: Path):
        self.requests: list[str] = []
        outer = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                outer.requests.append(self.path)
                super().do_GET()

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                                     functools.partial(Handler, directory=str(root)))
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()


@pytest.fixture
def served(tmp_path, monkeypatch, torch_home):
    monkeypatch.delenv("CNNLENS_OFFLINE", raising=False)             # downloads allowed (loopback only)
    root = tmp_path / "www"
    (root / "models").mkdir(parents=True)
    server = _Server(root)
    yield server, root
    server.stop()


def test_url_downloaded_once_then_cached(served, torch_home, capsys):
    server, root = served
    state = _random_state(4, "squeezenet1_1")
    torch.save(state, root / "models" / "sq.pth")
    url = f"{server.url}/models/sq.pth"
    model = cnnlens.load_model("squeezenet1_1", weights=url)
    cached = torch_home / "hub" / "checkpoints" / "sq.pth"
    assert _same(model, state) and cached.is_file() and server.requests == ["/models/sq.pth"]
    assert model.cnnlens_meta.weights == f"url:{url}" and model.cnnlens_meta.class_names[281] == "tabby"
    assert "sq.pth" in capsys.readouterr().err                      # the progress bar names the file
    assert not list(cached.parent.glob("*.partial"))
    server.stop()                                                    # offline now: the cache answers
    again = cnnlens.load_model("squeezenet1_1", weights=url, progress=False)
    assert _same(again, state) and server.requests == ["/models/sq.pth"]


def test_url_hash_checks(served, torch_home):
    server, root = served
    state = _random_state(5, "squeezenet1_1")
    data_path = root / "models" / "sq.pth"
    torch.save(state, data_path)
    digest = hashlib.sha256(data_path.read_bytes()).hexdigest()
    cache = torch_home / "hub" / "checkpoints"
    # a wrong sha256 is refused and nothing is cached
    with pytest.raises(cnnlens.WeightsError, match="does not match the sha256 given"):
        cnnlens.load_model("squeezenet1_1", weights=f"{server.url}/models/sq.pth#sha256={'0' * 64}", progress=False)
    assert not cache.exists() or not list(cache.iterdir())
    # torch.hub's hash-prefixed file names: checked on download
    (root / "models" / "sq-deadbeef.pth").write_bytes(data_path.read_bytes())
    with pytest.raises(cnnlens.WeightsError, match="hash in its file name"):
        cnnlens.load_model("squeezenet1_1", weights=f"{server.url}/models/sq-deadbeef.pth", progress=False)
    assert not (cache / "sq-deadbeef.pth").exists()
    good = f"sq-{digest[:10]}.pth"
    (root / "models" / good).write_bytes(data_path.read_bytes())
    m = cnnlens.load_model("squeezenet1_1", weights=f"{server.url}/models/{good}#sha256={digest[:16]}",
                           progress=False)
    assert _same(m, state) and (cache / good).is_file()
    # a sha256 given is checked on every later use of the cached file too
    with pytest.raises(cnnlens.WeightsError, match="cached file .* has sha256"):
        cnnlens.load_model("squeezenet1_1", weights=f"{server.url}/models/{good}#sha256={'1' * 64}")


def test_url_unreachable_and_not_cached(served, torch_home):
    server, _ = served
    server.stop()
    with pytest.raises(cnnlens.WeightsError) as err:
        cnnlens.load_model("squeezenet1_1", weights=f"{server.url}/models/none.pth", progress=False)
    msg = str(err.value)
    assert "cannot download" in msg and str(torch_home / "hub" / "checkpoints" / "none.pth") in msg
    assert "weights=PATH" in msg and "\n" not in msg


# -------------------------------------------------------------------------------------------------------------- CLI
def test_cli_offline_error_is_one_line_before_any_output(torch_home, tmp_path):
    out = tmp_path / "out"
    for args in (["explain", "chelsea", "--model", ARCH, "--out", str(out)],
                 ["sweep", "chelsea", "--model", ARCH, "--out", str(out)],
                 ["layers", "--model", ARCH],
                 ["sanity", "chelsea", "--model", ARCH, "--quiet", "--out", str(out)],
                 ["evaluate", "--model", ARCH, "--data", "collage", "--quiet", "--out", str(out)]):
        res = CliRunner().invoke(main, args)
        _one_line_error(res, "regnet_y_400mf-e6988f5f.pth", "--weights PATH", "Connect to the internet once")
        assert not out.exists(), args


def test_cli_uses_the_cache_and_fetch_weights(served, torch_home, tmp_path):
    server, root = served
    _prefill(torch_home, "IMAGENET1K_V2", seed=2)
    res = CliRunner().invoke(main, ["fetch-weights", ARCH])
    assert res.exit_code == 0 and "torchvision:RegNet_Y_400MF_Weights.IMAGENET1K_V2" in res.output, res.output
    torch.save(_random_state(6, "squeezenet1_1"), root / "models" / "sq6.pth")
    res = CliRunner().invoke(main, ["fetch-weights", "squeezenet1_1", "--weights", f"{server.url}/models/sq6.pth"])
    assert res.exit_code == 0 and (torch_home / "hub" / "checkpoints" / "sq6.pth").is_file(), res.output
    server.stop()
    out = tmp_path / "out"
    res = CliRunner().invoke(main, ["explain", "chelsea", "--model", "squeezenet1_1", "--weights",
                                    f"{server.url}/models/sq6.pth", "--target", "tabby", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert json.loads((out / "explanations.json").read_text())[0]["target_name"] == "tabby"
    res = CliRunner().invoke(main, ["layers", "--model", "squeezenet1_1", "--weights", "random"])
    assert res.exit_code == 0 and res.output.count("randomly initialised") == 1, res.output


# ----------------------------------------------------------------------------------------------------------- timm hub
_HUB_SCRIPT = textwrap.dedent("""
    import json, sys, warnings
    import torch
    import cnnlens
    from click.testing import CliRunner
    from cnnlens.cli import main
    out = {}
    state = torch.load(sys.argv[1], weights_only=True)
    for name in ("timm/test_resnet.r160_in1k", "hf-hub:timm/test_resnet.r160_in1k", "test_resnet.r160_in1k",
                 "test_resnet"):
        m = cnnlens.load_model(name)
        own = m.state_dict()
        i = m.cnnlens_meta
        out[name] = {"same": own.keys() == state.keys() and all(torch.equal(own[k], state[k]) for k in own),
                     "weights": i.weights, "input_size": list(i.input_size), "crop_pct": i.crop_pct,
                     "mean": list(i.mean), "interpolation": i.interpolation, "tabby": i.class_names[281]}
    try:
        cnnlens.load_model("timm/resnet18.a1_in1k")
    except cnnlens.WeightsError as exc:
        out["missing"] = str(exc)
    res = CliRunner().invoke(main, ["explain", "chelsea", "--model", "timm/test_resnet.r160_in1k", "--target",
                                    "tabby", "--out", sys.argv[2] + "/ok"])
    out["cli_ok"] = [res.exit_code, res.output]
    res = CliRunner().invoke(main, ["explain", "chelsea", "--model", "timm/resnet18.a1_in1k", "--out",
                                    sys.argv[2] + "/missing"])
    out["cli_missing"] = [res.exit_code, res.output]
    res = CliRunner().invoke(main, ["fetch-weights", "timm/test_resnet.r160_in1k"])
    out["fetch"] = [res.exit_code, res.output]
    print(json.dumps(out))
""")


def test_timm_hub_weights_from_a_prefilled_hugging_face_cache(tmp_path):
    """HF_HOME laid out as huggingface_hub stores a download (refs/main → snapshots/<commit>/ with timm's
    config.json and model.safetensors, written by timm's own save_for_hf), read with HF_HUB_OFFLINE=1 in a fresh
    process (huggingface_hub reads its environment when imported)."""
    import timm
    from timm.models import save_for_hf
    torch.manual_seed(7)
    model = timm.create_model("test_resnet.r160_in1k")
    repo = tmp_path / "hf" / "hub" / "models--timm--test_resnet.r160_in1k"
    commit = hashlib.sha1(b"cnnlens test").hexdigest()
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    save_for_hf(model, str(snapshot), safe_serialization=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    state_path = tmp_path / "state.pt"
    torch.save(model.state_dict(), state_path)
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1", "PYTHONPATH": SRC,
           "TORCH_HOME": str(tmp_path / "torch")}
    env.pop("HF_HUB_CACHE", None)
    proc = subprocess.run([sys.executable, "-c", _HUB_SCRIPT, str(state_path), str(tmp_path)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    for name in ("timm/test_resnet.r160_in1k", "hf-hub:timm/test_resnet.r160_in1k", "test_resnet.r160_in1k",
                 "test_resnet"):                                     # timm's own names load the same hub weights
        r = out[name]
        assert r["same"] and r["weights"] == "timm:hf-hub:timm/test_resnet.r160_in1k", r
        assert r["input_size"] == [3, 160, 160] and r["crop_pct"] == 0.95 and r["mean"] == [0.5] * 3, r
        assert r["interpolation"] == "bilinear" and r["tabby"] == "tabby"
    missing = out["missing"]
    assert str(tmp_path / "hf" / "hub") in missing and "HF_HUB_OFFLINE" in missing and "weights=PATH" in missing
    code, text = out["cli_ok"]
    assert code == 0, text
    assert json.loads((tmp_path / "ok" / "explanations.json").read_text())[0]["target"] == 281
    code, text = out["cli_missing"]
    lines = [ln for ln in text.splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("cnnlens: error: cannot load timm/resnet18"), text
    assert not (tmp_path / "missing").exists()
    code, text = out["fetch"]
    assert code == 0 and "timm:hf-hub:timm/test_resnet.r160_in1k" in text and str(tmp_path / "hf" / "hub") in text
