"""Model zoo (real bundled weights, safe weight loading) and image loading/conversion."""
from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

import cnnlens
from cnnlens.data.images import SAMPLE_IMAGES, load_rgb


def test_efficientnet_lite0_real_weights_classify_bundled_photos(lite0):
    assert not lite0.training and lite0.cnnlens_meta.mean == (0.5, 0.5, 0.5)
    x = torch.cat([cnnlens.load_image("chelsea", lite0), cnnlens.load_image("coffee", lite0)])
    with torch.no_grad():
        top = lite0(x).argmax(1).tolist()
    assert top[0] in (281, 282, 285)  # tabby / tiger cat / Egyptian cat
    assert top[1] == 967  # espresso
    assert lite0.cnnlens_meta.class_names[967] == "espresso"


def test_preprocessing_is_timms_eval_transform(lite0):
    """Resize the shorter side to floor(224 / crop_pct), centre-crop, normalise: bit-identical to timm's own eval
    transform of tf_efficientnet_lite0 (and so to torchvision's Resize + CenterCrop)."""
    from timm.data import create_transform, resolve_data_config
    cfg = resolve_data_config(model=lite0)
    transform = create_transform(**cfg)
    for name in ("chelsea", "astronaut", "rocket"):
        ref = transform(Image.fromarray(load_rgb(name)))[None]
        assert torch.allclose(cnnlens.load_image(name, lite0), ref, atol=1e-6), name


def test_torchvision_model_random_only_when_asked_and_said():
    with pytest.warns(UserWarning, match="randomly initialised") as caught:
        m = cnnlens.load_model("resnet18", weights="random")
    assert len(caught) == 1
    assert not m.training and len(m.cnnlens_meta.class_names) == 1000
    assert m.cnnlens_meta.weights == "random" and not m.cnnlens_meta.pretrained
    with pytest.raises(cnnlens.WeightsError, match="resnet18-f37072fd.pth"):   # offline, nothing cached: no random init
        cnnlens.load_model("resnet18")


def test_unknown_model_suggests():
    with pytest.raises(cnnlens.ModelError, match="Did you mean: 'resnet50'"):
        cnnlens.load_model("resnet5O")


def test_weights_roundtrip_and_other_architecture(tmp_path):
    torch.manual_seed(0)
    src = torchvision.models.resnet18()
    path = tmp_path / "r18.pth"
    torch.save(src.state_dict(), path)
    m = cnnlens.load_model("resnet18", weights=path)
    assert all(torch.equal(a, b) for a, b in zip(m.state_dict().values(), src.state_dict().values()))
    with pytest.raises(cnnlens.WeightsError, match="do not fit this architecture.*missing key"):
        cnnlens.load_model("vgg11", weights=path)
    with pytest.raises(cnnlens.WeightsError, match="not found"):
        cnnlens.load_model("resnet18", weights=tmp_path / "nope.pth")


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch EVIL_RAN",))


def test_pickle_with_code_is_refused_and_never_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pth"
    with open(path, "wb") as fh:
        pickle.dump({"weight": _Evil()}, fh)
    with pytest.raises(cnnlens.WeightsError, match="refused"):
        cnnlens.load_model("resnet18", weights=path)
    assert not (tmp_path / "EVIL_RAN").exists()


def test_garbage_weights_file(tmp_path):
    path = tmp_path / "w.pth"
    path.write_bytes(b"not a checkpoint at all")
    with pytest.raises(cnnlens.WeightsError):
        cnnlens.load_model("resnet18", weights=path)


@pytest.mark.parametrize("name", SAMPLE_IMAGES)
def test_sample_images_are_rgb(name):
    rgb = load_rgb(name)
    assert rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3


def test_conversions(tmp_path):
    base = (np.arange(24 * 32).reshape(24, 32) % 256).astype(np.uint8)
    gray = load_rgb(base)
    assert gray.shape == (24, 32, 3) and (gray[..., 0] == base).all()
    rgba = np.dstack([np.full((4, 4, 3), 100, np.uint8), np.zeros((4, 4), np.uint8)])
    assert (load_rgb(rgba) == 255).all()  # fully transparent over white
    sixteen = (base.astype(np.uint16) * 257)
    assert np.abs(load_rgb(sixteen)[..., 0].astype(int) - base).max() <= 1
    Image.fromarray(base).convert("P").save(tmp_path / "p.png")
    Image.fromarray(sixteen).save(tmp_path / "i16.png")
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    for f in ("p.png", "i16.png", "rgba.png"):
        assert load_rgb(tmp_path / f).shape[2] == 3
    x = cnnlens.load_image(tmp_path / "i16.png", size=32)
    assert x.shape == (1, 3, 32, 32) and x.dtype == torch.float32


def test_bad_image_files(tmp_path):
    with pytest.raises(cnnlens.InputError, match="not found"):
        cnnlens.load_image(tmp_path / "missing.png")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(cnnlens.InputError, match="not an image"):
        cnnlens.load_image(tmp_path / "notes.txt")
    Image.fromarray(np.zeros((64, 64, 3), np.uint8) + 90).save(tmp_path / "full.jpg")
    data = (tmp_path / "full.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(cnnlens.InputError, match="truncated|cannot read"):
        cnnlens.load_image(tmp_path / "cut.jpg")
    with pytest.raises(cnnlens.InputError, match="Did you mean: 'chelsea'"):
        cnnlens.load_image("chelsee")
    locked = tmp_path / "locked.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(locked)
    with pytest.raises(cnnlens.InputError):
        cnnlens.load_image(np.zeros((0, 5, 3), np.uint8))
