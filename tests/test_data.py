"""Datasets with boxes: XML parsing, label files, folder datasets, synthetic scenes and nets, collages; bad input."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cnnlens.data import AnnotationError, VocFolder, parse_voc_xml, read_label_file
from cnnlens.data.synthetic import (SHAPES, SyntheticMeta, SyntheticScenes, TrainConfig, render_scene,
                                    synthetic_model, vgg_like)
from cnnlens.errors import CnnlensError, InputError


def _xml(objects, size=(40, 30), filename="a.png", with_size=True) -> str:
    objs = "".join(
        f"<object><name>{n}</name><difficult>{int(d)}</difficult><bndbox><xmin>{x1}</xmin><ymin>{y1}</ymin>"
        f"<xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>" for n, x1, y1, x2, y2, d in objects)
    sz = f"<size><width>{size[0]}</width><height>{size[1]}</height><depth>3</depth></size>" if with_size else ""
    return f"<annotation><filename>{filename}</filename>{sz}{objs}</annotation>"


def test_parse_voc_converts_to_half_open(tmp_path):
    p = tmp_path / "a.xml"
    p.write_text(_xml([("dog", 1, 1, 10, 20, False), ("cat", 5, 6, 40, 30, True)]))
    ann = parse_voc_xml(p)
    assert (ann.width, ann.height) == (40, 30)
    assert ann.boxes[0].corners == (0.0, 0.0, 10.0, 20.0)
    assert ann.boxes[1].corners == (4.0, 5.0, 40.0, 30.0) and ann.boxes[1].difficult


@pytest.mark.parametrize("content, message", [
    ("<annotation><size><width>4", "malformed XML"),
    ("<root/>", "expected an <annotation>"),
    (_xml([("dog", 1, 1, 10, 20, False)], with_size=False), "missing <size>"),
    (_xml([("dog", 1, 1, 41, 20, False)]), "outside"),
    (_xml([("dog", 0, 1, 10, 20, False)]), "outside"),
    (_xml([("dog", 10, 1, 9, 20, False)]), "empty"),
    ("<annotation><size><width>4</width><height>4</height></size><object><name>x</name></object></annotation>",
     "no <bndbox>"),
    ("<annotation><size><width>4</width><height>4</height></size><object><name>x</name><bndbox><xmin>a</xmin>"
     "<ymin>1</ymin><xmax>2</xmax><ymax>2</ymax></bndbox></object></annotation>", "not a number"),
])
def test_bad_annotations_raise_clear_errors(tmp_path, content, message):
    p = tmp_path / "bad.xml"
    p.write_text(content)
    with pytest.raises(AnnotationError, match=message) as info:
        parse_voc_xml(p)
    assert str(p) in str(info.value) and isinstance(info.value, CnnlensError)


def test_missing_annotation_file_and_clipping(tmp_path):
    with pytest.raises(AnnotationError, match="not found"):
        parse_voc_xml(tmp_path / "nope.xml")
    p = tmp_path / "a.xml"
    p.write_text(_xml([("dog", 0, 1, 45, 20, False)]))
    assert parse_voc_xml(p, clip=True).boxes[0].corners == (0.0, 0.0, 40.0, 20.0)


def test_label_files(tmp_path):
    plain = tmp_path / "plain.txt"
    plain.write_text("# VOC\naeroplane\nbicycle\n\ndog\n")
    lm = read_label_file(plain)
    assert lm.names == ["aeroplane", "bicycle", "dog"] and lm.index("Dog") == 2 and lm.index("cow") is None
    syn = tmp_path / "synsets.txt"
    syn.write_text("n01440764 tench, Tinca tinca\nn01443537 goldfish, Carassius auratus\n")
    lm = read_label_file(syn)
    assert lm.index("n01443537") == 1 and lm.index("tinca tinca") == 0 and lm.index("goldfish") == 1
    (tmp_path / "empty.txt").write_text("\n# nothing\n")
    with pytest.raises(AnnotationError, match="no class"):
        read_label_file(tmp_path / "empty.txt")


class _Tiny(torch.nn.Module):
    def __init__(self, k=3):
        super().__init__()
        self.features = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU())
        self.pool = torch.nn.AdaptiveAvgPool2d(1)
        self.fc = torch.nn.Linear(4, k)
        self.cnnlens_meta = SyntheticMeta("tiny", tuple(f"c{i}" for i in range(k)), input_size=(3, 32, 32))

    def forward(self, x):
        return self.fc(self.pool(self.features(x)).flatten(1))


def _folder(tmp_path: Path, objects_per_image, layout="flat"):
    img_dir = tmp_path / ("JPEGImages" if layout == "voc" else "")
    ann_dir = tmp_path / ("Annotations" if layout == "voc" else "")
    img_dir.mkdir(exist_ok=True, parents=True)
    ann_dir.mkdir(exist_ok=True, parents=True)
    for i, objs in enumerate(objects_per_image):
        Image.fromarray(np.full((30, 40, 3), 60 * i, np.uint8)).save(img_dir / f"im{i}.png")
        if objs is not None:
            (ann_dir / f"im{i}.xml").write_text(_xml(objs))
    labels = tmp_path / "labels.txt"
    labels.write_text("cat\ndog\nbird\n")
    return tmp_path, labels


@pytest.mark.parametrize("layout", ["flat", "voc"])
def test_voc_folder_samples(tmp_path, layout):
    root, labels = _folder(tmp_path, [[("dog", 1, 1, 20, 10, False)],
                                      [("cat", 3, 3, 8, 8, False), ("bird", 10, 10, 40, 30, True)]], layout)
    ds = VocFolder(root, _Tiny(), label_file=labels, num_classes=3)
    assert len(ds) == 2
    s = ds[1]
    assert s.image.shape == (3, 32, 32) and s.size == (30, 40)
    assert s.targets == [0]                                   # bird has only a difficult box: skipped
    assert s.class_boxes(2).tolist() == [[9.0, 9.0, 40.0, 30.0]]
    assert ds[0].targets == [1] and ds[0].class_boxes(1).tolist() == [[0.0, 0.0, 20.0, 10.0]]
    # class names from the model when no label file is given
    assert VocFolder(root, _Tiny(), class_names=["cat", "dog", "bird"])[0].targets == [1]


def test_voc_folder_bad_input(tmp_path):
    root, labels = _folder(tmp_path / "a", [[("dog", 1, 1, 20, 10, False)], None])
    with pytest.raises(AnnotationError, match="no annotation file.*im1.png"):
        VocFolder(root, _Tiny(), label_file=labels)
    root, labels = _folder(tmp_path / "b", [[("zebra", 1, 1, 20, 10, False)]])
    with pytest.raises(AnnotationError, match="'zebra' is not one of the model's 3 classes"):
        VocFolder(root, _Tiny(), label_file=labels)
    with pytest.raises(AnnotationError, match="lists 3 classes but the model has 1000"):
        VocFolder(root, _Tiny(), label_file=labels, num_classes=1000)
    (tmp_path / "c").mkdir()
    with pytest.raises(InputError, match="empty dataset"):
        VocFolder(tmp_path / "c", _Tiny(), label_file=labels)
    with pytest.raises(InputError, match="not found"):
        VocFolder(tmp_path / "missing", _Tiny(), label_file=labels)
    root, labels = _folder(tmp_path / "d", [[("dog", 1, 1, 41, 10, False)]])
    with pytest.raises(AnnotationError, match="outside"):
        VocFolder(root, _Tiny(), label_file=labels)
    assert VocFolder(root, _Tiny(), label_file=labels, clip_boxes=True)[0].class_boxes(1)[0, 2] == 40


def test_synthetic_scenes_are_deterministic_with_tight_boxes():
    a, boxes, label = render_scene(3, size=48)
    b, boxes_b, _ = render_scene(3, size=48)
    assert torch.equal(a, b) and boxes == boxes_b
    assert boxes[0][0] == label and boxes[1][0] != label and len(boxes) == 2
    (_, mx1, my1, mx2, my2), (_, dx1, dy1, dx2, dy2) = boxes
    assert (mx2 - mx1) > (dx2 - dx1)                           # the labelled object is the larger one
    assert mx2 <= dx1 or dx2 <= mx1 or my2 <= dy1 or dy2 <= my1  # the two boxes do not overlap
    assert not torch.equal(render_scene(3, split="train")[0], render_scene(3)[0])
    ds = SyntheticScenes(5, size=32)
    s = ds[2]
    assert s.image.shape == (3, 32, 32) and s.targets == [s.boxes[0][0]] and ds.class_names == list(SHAPES[:4])
    with pytest.raises(InputError, match="empty dataset"):
        SyntheticScenes(0)


def test_synthetic_model_is_cached(tmp_path, monkeypatch):
    cfg = dict(size=32, n_train=40, epochs=1, batch_size=20)
    m1 = synthetic_model("vgg", cache=tmp_path, **cfg)
    files = list((tmp_path / "synthetic").glob("*.pt"))
    assert len(files) == 1 and files[0].with_suffix(".json").is_file()
    assert TrainConfig(arch="vgg", **cfg).key in files[0].name
    import cnnlens.data.synthetic as syn

    def no_training(*a, **k):
        raise AssertionError("retrained although cached")
    monkeypatch.setattr(syn, "train_synthetic", no_training)
    m2 = synthetic_model("vgg", cache=tmp_path, **cfg)
    assert all(torch.equal(p, q) for p, q in zip(m1.state_dict().values(), m2.state_dict().values()))
    assert m2.cnnlens_meta.class_names == tuple(SHAPES[:4]) and m2.cnnlens_meta.input_size == (3, 32, 32)
    state = torch.load(files[0], weights_only=True)
    assert set(state) == set(vgg_like().state_dict())


def test_synthetic_training_is_deterministic(tmp_path):
    cfg = dict(size=32, n_train=40, epochs=1, batch_size=20)
    m1 = synthetic_model("resnet", cache=tmp_path / "a", **cfg)
    m2 = synthetic_model("resnet", cache=tmp_path / "b", **cfg)
    assert all(torch.equal(p, q) for p, q in zip(m1.state_dict().values(), m2.state_dict().values()))
    assert [n for n, _ in m1.named_children()][:8] == ["conv1", "bn1", "relu", "maxpool", "layer1", "layer2",
                                                        "layer3", "layer4"]


def test_collages_have_known_boxes():
    from cnnlens.data.collage import Collages
    torch.manual_seed(0)
    model = _Tiny(5)
    model.cnnlens_meta = SyntheticMeta("tiny", tuple(f"c{i}" for i in range(5)), input_size=(3, 64, 64))
    ds = Collages(model, n=4, photos=("chelsea", "coffee", "camera"))
    assert len(ds) == 4
    s = ds[1]
    assert s.image.shape == (3, 64, 64) and s.size == (64, 64) and len(s.boxes) == 2
    for c, x1, y1, x2, y2 in s.boxes:
        assert 0 <= x1 < x2 <= 64 and 0 <= y1 < y2 <= 64
    (_, ax1, ay1, ax2, ay2), (_, bx1, by1, bx2, by2) = s.boxes
    assert ax2 <= bx1 or ay2 <= by1                            # second photo right of / below the first
    assert s.targets == sorted({b[0] for b in s.boxes})
    assert torch.equal(ds[1].image, s.image)
    canvas, _ = ds.compose(1)
    _, x1, y1, x2, y2 = s.boxes[0]
    assert not torch.allclose(canvas[:, int(y1):int(y2), int(x1):int(x2)], torch.tensor(0.5))
