"""Dataset layouts of cnnlens.data.layouts on tiny datasets written here with PIL: folder, imagefolder, csv,
imagenet-loc, coco, voc; layout detection; class maps (file and built-in); EXIF orientation; boxes in the upright
original frame; deterministic order; pickling for DataLoader workers; every bad input as one clear error."""
from __future__ import annotations

import json
import pickle
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cnnlens.data.annotations import AnnotationError
from cnnlens.data.synthetic import SHAPES, SyntheticMeta
from cnnlens.errors import CnnlensError, InputError
from cnnlens.data.layouts import FORMATS, detect_format, open_dataset, read_class_map
from cnnlens.metrics import boxes_mask


class _Tiny(torch.nn.Module):
    """A small CNN with ``cnnlens_meta`` (class names ``names``, 32×32 input)."""

    def __init__(self, names):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.fc = torch.nn.Linear(4, len(names))
        self.cnnlens_meta = SyntheticMeta("tiny", tuple(names), input_size=(3, 32, 32))

    def forward(self, x):
        return self.fc(self.conv(x).relu().mean((2, 3)))


@pytest.fixture(scope="module")
def tiny():
    return _Tiny(["cat", "dog", "bird"])


@pytest.fixture(scope="module")
def imagenet_tiny():
    """A tiny model with the 1000 ImageNet-1k class names (so wnids, names and the built-in maps resolve)."""
    from cnnlens.models.zoo import imagenet_class_names
    return _Tiny(imagenet_class_names())


def _image(path: Path, size=(40, 30), value=80, rect=None, orientation=None):
    """Write a (W, H) = ``size`` image: grey ``value``, with a white ``rect`` (x0, y0, x1, y1 half-open) in the
    stored pixels; ``orientation`` sets the EXIF orientation tag (JPEG)."""
    w, h = size
    arr = np.full((h, w, 3), value, np.uint8)
    if rect is not None:
        x0, y0, x1, y1 = rect
        arr[y0:y1, x0:x1] = 255
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(arr)
    if orientation is not None:
        exif = Image.Exif()
        exif[0x0112] = orientation
        im.save(path, quality=95, exif=exif)
    else:
        im.save(path, **({"quality": 95} if path.suffix.lower() in (".jpg", ".jpeg") else {}))
    return path


def _one_line(exc: Exception) -> str:
    msg = str(exc)
    assert "\n" not in msg and isinstance(exc, CnnlensError)
    return msg


# ------------------------------------------------------------------------------------------------------- layouts
def test_folder_layout_without_labels(tmp_path, tiny):
    _image(tmp_path / "b.png")
    _image(tmp_path / "a.jpg", size=(40, 20), orientation=6)            # stored 40×20, shown 20×40
    (tmp_path / "notes.txt").write_text("not an image")
    assert detect_format(tmp_path) == "folder"
    ds = open_dataset(str(tmp_path), tiny)
    assert [ds[i].id for i in range(len(ds))] == ["a.jpg", "b.png"] and ds.format == "folder"
    s = ds[0]
    assert s.targets == [] and s.boxes == [] and s.has_boxes is False and s.path == str(tmp_path / "a.jpg")
    assert s.size == (40, 20) and s.image.shape == (3, 32, 32)          # EXIF orientation applied
    assert ds[1].size == (30, 40) and ds.describe()["has_boxes"] is False
    with pytest.raises(InputError, match="class-map needs labels"):
        open_dataset(str(tmp_path), tiny, class_map="voc-imagenet")


def test_exif_rotation_keeps_boxes_on_the_object(tmp_path, tiny):
    # Stored 60×40 with the object at columns 5..20, rows 10..30; orientation 6 shows it rotated 90° clockwise, so in
    # the upright 40×60 image the object spans columns 40-30..40-10 and rows 5..20.
    _image(tmp_path / "rot.jpg", size=(60, 40), value=0, rect=(5, 10, 20, 30), orientation=6)
    (tmp_path / "m.csv").write_text("path,label,x0,y0,x1,y1\nrot.jpg,dog,10,5,30,20\n")
    ds = open_dataset(str(tmp_path / "m.csv"), tiny)
    s = ds[0]
    assert s.size == (60, 40) and s.class_boxes(1).tolist() == [[10.0, 5.0, 30.0, 20.0]]
    from cnnlens.data.images import read_rgb
    bright = read_rgb(Path(s.path)).mean(0) > 0.5
    mask = boxes_mask(s.class_boxes(1), s.size)
    assert (bright == mask).float().mean() > 0.97                          # JPEG edges aside, the box is the object


def test_imagefolder_layout_names_wnids_and_indices(tmp_path, imagenet_tiny):
    _image(tmp_path / "n01440764" / "x1.png")                             # wnid → tench (0)
    _image(tmp_path / "goldfish" / "y1.png")                              # class name → 1
    _image(tmp_path / "goldfish" / "sub" / "y2.jpg")                      # found recursively
    _image(tmp_path / "7" / "z1.png")                                     # index → cock (7)
    (tmp_path / "empty").mkdir()
    assert detect_format(tmp_path) == "imagefolder"
    ds = open_dataset(str(tmp_path), imagenet_tiny)
    got = [(ds[i].id, ds[i].targets, ds[i].has_boxes) for i in range(len(ds))]
    assert got == [("7/z1.png", [7], False), ("goldfish/sub/y2.jpg", [1], False), ("goldfish/y1.png", [1], False),
                   ("n01440764/x1.png", [0], False)]
    assert ds.class_names[7] == "cock" and ds.describe()["format"] == "imagefolder"
    _image(tmp_path / "unicorn" / "u.png")
    with pytest.raises(AnnotationError, match="'unicorn' is not one of the model's 1000 classes") as info:
        open_dataset(str(tmp_path), imagenet_tiny)
    assert "class map" in _one_line(info.value)


def test_csv_layout_boxes_labels_and_order(tmp_path, tiny):
    _image(tmp_path / "img" / "p.png", size=(40, 30))
    _image(tmp_path / "img" / "q.jpg", size=(100, 50))
    _image(tmp_path / "img" / "r.png", size=(20, 20))
    (tmp_path / "m.csv").write_text(
        "path,label,x0,y0,x1,y1\n"
        "img/q.jpg,dog,0,0,50,25\n"                 # q listed first: CSV order is kept
        "img/p.png,cat,1.5,2,40,30\n"
        "img/q.jpg,2,60,10,100,50\n"                # label as an index; second box of q
        "img/r.png,bird,,,,\n")                     # a label without a box
    assert detect_format(tmp_path) == "csv" and detect_format(tmp_path / "m.csv") == "csv"
    ds = open_dataset(str(tmp_path), tiny)
    assert [ds[i].id for i in range(3)] == ["img/q.jpg", "img/p.png", "img/r.png"]
    q, p, r = ds[0], ds[1], ds[2]
    assert q.size == (50, 100) and q.targets == [1, 2] and q.has_boxes
    assert q.class_boxes(1).tolist() == [[0, 0, 50, 25]] and q.class_boxes(2).tolist() == [[60, 10, 100, 50]]
    assert p.boxes == [(0, 1.5, 2.0, 40.0, 30.0)]
    assert r.targets == [2] and r.boxes == [] and r.has_boxes is False
    # without box columns: labels only
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "l.csv").write_text("label,path\ncat,../img/p.png\n")
    ds = open_dataset(str(tmp_path / "labels" / "l.csv"), tiny, format="csv")
    assert ds[0].targets == [0] and not ds[0].has_boxes and not ds.has_boxes
    # n_images keeps the first images of the order; reopening gives the same order
    first = open_dataset(str(tmp_path / "m.csv"), tiny, n_images=2)
    assert [first[i].id for i in range(len(first))] == ["img/q.jpg", "img/p.png"]


def _imagenet_loc(root: Path, rows: list[str], mapping="n00000001 cat, house cat\nn00000002 dog\nn00000003 bird\n",
                  image_dir="val"):
    for k in (3, 1, 2):
        _image(root / image_dir / f"ILSVRC2012_val_{k:08d}.JPEG", size=(50, 40))
    (root / "LOC_val_solution.csv").write_text("ImageId,PredictionString\n" + "".join(r + "\n" for r in rows))
    if mapping is not None:
        (root / "LOC_synset_mapping.txt").write_text(mapping)
    return root


def test_imagenet_loc_layout(tmp_path, tiny):
    root = _imagenet_loc(tmp_path, ["ILSVRC2012_val_00000002,n00000002 0 0 10 10 n00000002 20 20 50 40 ",
                                    "ILSVRC2012_val_00000001,n00000003 5 6 7 8 n00000001 1 1 49 39"])
    assert detect_format(root) == "imagenet-loc"
    ds = open_dataset(str(root), tiny)
    assert [ds[i].id for i in range(len(ds))] == ["val/ILSVRC2012_val_00000001.JPEG",
                                                  "val/ILSVRC2012_val_00000002.JPEG"]
    s = ds[1]
    assert s.size == (40, 50) and s.targets == [1] and s.class_boxes(1).tolist() == [[0, 0, 10, 10], [20, 20, 50, 40]]
    assert ds[0].targets == [0, 2] and ds.class_names == ["cat", "dog", "bird"]   # the model's names, wnids resolved
    # the model's class names, wnids from the mapping: also through the solution file itself and via --format
    ds = open_dataset(str(root / "LOC_val_solution.csv"), tiny, format="imagenet-loc")
    assert len(ds) == 2 and ds.describe()["format"] == "imagenet-loc"


def test_imagenet_loc_with_an_imagenet_model(tmp_path, imagenet_tiny):
    root = _imagenet_loc(tmp_path, ["ILSVRC2012_val_00000001,n01443537 0 0 10 10"], mapping=None, image_dir=".")
    ds = open_dataset(str(root), imagenet_tiny)                          # wnids from the model (no mapping file)
    assert ds[0].targets == [1] and ds.class_names[1] == "goldfish"


def _coco(root: Path, with_annotations=True, name="annotations/instances_val2017.json"):
    _image(root / "val2017" / "000000000002.jpg", size=(64, 48))
    _image(root / "val2017" / "000000000001.jpg", size=(64, 48))
    _image(root / "val2017" / "000000000003.jpg", size=(64, 48))
    doc = {"images": [{"id": i, "file_name": f"{i:012d}.jpg", "width": 64, "height": 48} for i in (2, 1, 3)],
           "categories": [{"id": 1, "name": "person"}, {"id": 3, "name": "car"}, {"id": 18, "name": "dog"}]}
    if with_annotations:
        doc["annotations"] = [
            {"id": 10, "image_id": 1, "category_id": 18, "bbox": [4, 5, 20, 10], "iscrowd": 0},
            {"id": 11, "image_id": 1, "category_id": 3, "bbox": [30, 0, 34.2, 48.3], "iscrowd": 1},  # 0.3 px over
            {"id": 12, "image_id": 2, "category_id": 1, "bbox": [0, 0, 10, 10], "iscrowd": 0},
            {"id": 13, "image_id": 2, "category_id": 1, "bbox": [5, 5, 0, 3], "iscrowd": 0},          # zero width
        ]
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc))
    return path


def test_coco_layout_with_a_class_map_file(tmp_path, tiny):
    path = _coco(tmp_path)
    assert detect_format(tmp_path) == "coco" and detect_format(path) == "coco"
    cmap = tmp_path / "map.txt"
    cmap.write_text("# COCO → tiny\ndog: dog\ncar: cat, 2\nperson:\n")
    ds = open_dataset(str(tmp_path), tiny, class_map=str(cmap))
    assert len(ds) == 1 and ds.class_names == ["dog", "car", "person"]
    s = ds[0]
    assert s.id == "000000000001.jpg" and s.size == (48, 64)
    assert s.class_boxes(0).tolist() == [[4, 5, 24, 15]]                 # [x, y, w, h] → half-open corners
    assert s.class_boxes(1).tolist() == [[30, 0, 64, 48]]                # crowd box kept (clipped 0.3 px) …
    assert s.targets == [0]                                              # … but not explained alone
    assert s.candidates == {0: (1,), 1: (0, 2)} and s.model_classes(1) == (0, 2)
    d = ds.describe()
    assert d["skipped"] == {"empty_box": 1, "no_model_class": 1, "no_annotation": 1}   # image 2 (person), image 3
    assert d["unmapped_classes"] == {"person": 1} and d["class_map"] == str(cmap)


def test_builtin_class_maps(tmp_path, imagenet_tiny):
    from cnnlens.models.zoo import imagenet_class_names
    names = imagenet_class_names()
    path = _coco(tmp_path)
    ds = open_dataset(str(path), imagenet_tiny, class_map="coco-imagenet")
    assert len(ds.class_names) == 80 and ds.class_names[2] == "car"
    s = ds[0]
    assert s.targets == [ds.class_names.index("dog")]
    dogs = {names[i] for i in s.candidates[s.targets[0]]}
    assert {"beagle", "Chihuahua", "Cardigan"} <= dogs and "cardigan" not in dogs and len(dogs) == 118
    assert {names[i] for i in s.model_classes(2)} >= {"cab", "convertible", "sports car", "minivan"}
    assert ds.describe()["skipped"]["no_model_class"] == 1
    voc = read_class_map("voc-imagenet")
    assert len(voc.classes) == 20 and voc.members[voc.classes.index("person")] == []
    # a VOC folder with the built-in map: boxes keep the VOC class, person-only images are skipped
    _image(tmp_path / "voc" / "JPEGImages" / "a.jpg")
    _image(tmp_path / "voc" / "JPEGImages" / "b.jpg")
    (tmp_path / "voc" / "Annotations").mkdir()
    for stem, name in (("a", "car"), ("b", "person")):
        (tmp_path / "voc" / "Annotations" / f"{stem}.xml").write_text(
            f"<annotation><size><width>40</width><height>30</height></size><object><name>{name}</name>"
            f"<bndbox><xmin>1</xmin><ymin>1</ymin><xmax>20</xmax><ymax>10</ymax></bndbox></object></annotation>")
    ds = open_dataset(str(tmp_path / "voc"), imagenet_tiny, class_map="voc-imagenet")
    assert detect_format(tmp_path / "voc") == "voc" and len(ds) == 1
    assert ds[0].targets == [voc.classes.index("car")] and ds[0].class_boxes(6).tolist() == [[0, 0, 20, 10]]
    assert ds.describe()["skipped"]["no_model_class"] == 1
    with pytest.raises(AnnotationError, match="'airliner' is not one of the model's 3 classes"):
        open_dataset(str(tmp_path / "voc"), _Tiny(["cat", "dog", "bird"]), class_map="voc-imagenet")


def test_voc_layout_as_before(tmp_path, tiny):
    _image(tmp_path / "a.png")
    (tmp_path / "a.xml").write_text(
        "<annotation><size><width>40</width><height>30</height></size><object><name>bird</name><bndbox><xmin>2"
        "</xmin><ymin>3</ymin><xmax>40</xmax><ymax>30</ymax></bndbox></object></annotation>")
    ds = open_dataset(str(tmp_path), tiny, format="voc")
    assert ds[0].targets == [2] and ds[0].class_boxes(2).tolist() == [[1, 2, 40, 30]] and ds[0].has_boxes
    from cnnlens.data import VocFolder
    assert VocFolder(tmp_path, tiny)[0].boxes == ds[0].boxes


def test_synthetic_and_collage_still_open():
    synth = _Tiny(list(SHAPES[:4]))
    ds = open_dataset("synthetic", synth, n_images=3)
    assert len(ds) == 3 and ds[0].image.shape == (3, 32, 32)
    with pytest.raises(InputError, match="needs a synthetic model"):
        open_dataset("synthetic", _Tiny(["a", "b"]))


# ----------------------------------------------------------------------------------------------- worker safety
def test_datasets_pickle_and_load_in_worker_processes(tmp_path, tiny):
    for i in range(4):
        _image(tmp_path / f"im{i}.png", value=40 * i)
    ds = open_dataset(str(tmp_path), tiny)
    again = pickle.loads(pickle.dumps(ds))
    assert torch.equal(again[2].image, ds[2].image)
    loader = torch.utils.data.DataLoader(ds, batch_size=2, num_workers=2, collate_fn=list)
    ids = [s.id for batch in loader for s in batch]
    assert ids == ["im0.png", "im1.png", "im2.png", "im3.png"]


# ------------------------------------------------------------------------------------------- ids (issue 21, item 3)
def test_one_stem_or_one_file_name_stays_two_samples(tmp_path, tiny):
    """Sample ids are paths relative to the dataset root: ``photo.jpg`` and ``photo.png`` (folder), ``cat/x.png`` and
    ``dog/x.png`` (imagefolder) are two samples, two rows of the per-image results and two saved images."""
    import json

    from cnnlens.evaluation import EvalConfig, evaluate
    flat = tmp_path / "flat"
    _image(flat / "photo.jpg", value=40, rect=(2, 2, 20, 20))
    _image(flat / "photo.png", value=200, rect=(10, 5, 35, 25))
    nested = tmp_path / "nested"
    _image(nested / "cat" / "x.png", value=40, rect=(2, 2, 20, 20))
    _image(nested / "dog" / "x.png", value=200, rect=(10, 5, 35, 25))
    for root, ids, cfg in ((flat, ["photo.jpg", "photo.png"], EvalConfig(target="predicted", batch_size=2)),
                           (nested, ["cat/x.png", "dog/x.png"], EvalConfig(target="label", batch_size=2))):
        ds = open_dataset(str(root), tiny)
        assert [ds[i].id for i in range(len(ds))] == ids
        out = tmp_path / f"eval-{root.name}"
        res = evaluate(tiny, ds, "grad-cam", "average-drop", out=out, config=cfg, progress=False, plots=False,
                       save_maps=2)
        rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
        assert sorted(r["sample"] for r in rows) == ids and len(res.records) == 2
        assert len({r["image"] for r in rows}) == 2 and len({r["map"] for r in rows}) == 2
        assert sorted(p.name for p in (out / "images").iterdir()) == sorted(Path(r["image"]).name for r in rows)
        assert len(list((out / "maps").iterdir())) == 2


def test_safe_id_is_one_file_per_id_also_on_case_insensitive_file_systems():
    from cnnlens.evaluation import safe_id
    ids = ["photo.jpg", "photo.png", "Photo.jpg", "a/x.jpg", "b/x.jpg", "a_x.jpg", "a x.jpg", ".hidden.png",
           "x" * 120 + "1.png", "x" * 120 + "2.png", "ü.png", "u.png"]
    names = [safe_id(i) for i in ids]
    assert len({n.lower() for n in names}) == len(ids)
    assert all(re.fullmatch(r"[A-Za-z0-9_-][A-Za-z0-9._-]*", n) and len(n) <= 111 for n in names)
    assert safe_id("photo.jpg") == "photo.jpg" and safe_id("a/x.jpg").startswith("a_x.jpg-")


# ---------------------------------------------------------------------------------------------------- bad input
def _csv(tmp_path, body, header="path,label,x0,y0,x1,y1"):
    _image(tmp_path / "a.png", size=(40, 30))
    (tmp_path / "m.csv").write_text(header + "\n" + body)
    return str(tmp_path / "m.csv")


@pytest.mark.parametrize("header, body, error, message", [
    (None, "a.png,cat,1,2,x,4\n", AnnotationError, r"m.csv row 2: box value 'x' is not a number"),
    (None, "a.png,cat,0,0,10,10\na.png,cat,10,2,5,8\n", AnnotationError, r"m.csv row 3: box \(10,2,5,8\) is empty or"
                                                                         r" inverted"),
    (None, "a.png,cat,0,0,10,10\nmissing.png,cat,0,0,1,1\n", InputError, r"m.csv row 3: image 'missing.png' not found"),
    (None, "a.png,zebra,0,0,10,10\n", AnnotationError, r"m.csv row 2: class 'zebra' is not one of the model's 3"),
    (None, "a.png,cat,0,0,41,10\n", AnnotationError, r"m.csv row 2: box of 'cat' .* outside the 40×30 image"),
    (None, "a.png,7,0,0,10,10\n", AnnotationError, r"class '7' is not one of the model's 3"),
    (None, "", InputError, r"empty dataset: .*m.csv lists no image"),
    ("path,label,x0,y0", "a.png,cat,1,2\n", AnnotationError, "must be all of x0,y0,x1,y1"),
    ("file,class", "a.png,cat\n", AnnotationError, "header must name the columns path and label"),
])
def test_bad_csv(tmp_path, tiny, header, body, error, message):
    path = _csv(tmp_path, body, header or "path,label,x0,y0,x1,y1")
    with pytest.raises(error, match=message) as info:
        open_dataset(path, tiny)
    assert str(tmp_path / "m.csv") in _one_line(info.value)


def test_csv_box_outside_is_clipped_on_request(tmp_path, tiny):
    path = _csv(tmp_path, "a.png,cat,-3,0,41,10\n")
    assert open_dataset(path, tiny, clip_boxes=True)[0].boxes == [(0, 0.0, 0.0, 40.0, 10.0)]


def test_bad_imagenet_loc(tmp_path, tiny):
    root = _imagenet_loc(tmp_path / "a", ["ILSVRC2012_val_00000001,n00000001 0 0 10"])
    with pytest.raises(AnnotationError, match="row 2: PredictionString must repeat"):
        open_dataset(str(root), tiny)
    root = _imagenet_loc(tmp_path / "b", ["ILSVRC2012_val_00000001,n00000001 0 0 10 10",
                                          "ILSVRC2012_val_00000009,n00000001 0 0 10 10"])
    with pytest.raises(InputError, match=r"row 3: image .*ILSVRC2012_val_00000009.JPEG not found"):
        open_dataset(str(root), tiny)
    root = _imagenet_loc(tmp_path / "c", ["ILSVRC2012_val_00000001,n09999999 0 0 10 10"])
    with pytest.raises(AnnotationError, match="class 'n09999999' is not one of the model's 3 classes"):
        open_dataset(str(root), tiny)
    root = _imagenet_loc(tmp_path / "d", ["ILSVRC2012_val_00000001,n00000001 0 0 10 10"], mapping="n00000001 cat\n")
    with pytest.raises(AnnotationError, match="lists 1 classes but the model has 3 outputs"):
        open_dataset(str(root), tiny)


def test_bad_coco(tmp_path, tiny):
    path = _coco(tmp_path / "a", with_annotations=False)
    with pytest.raises(AnnotationError, match="no 'annotations' list") as info:
        open_dataset(str(tmp_path / "a"), tiny)
    assert str(path) in _one_line(info.value)
    _coco(tmp_path / "b")
    with pytest.raises(AnnotationError, match="annotation id 11: class 'car' is not one of the model's 3 classes"):
        open_dataset(str(tmp_path / "b"), tiny)
    (tmp_path / "b" / "val2017" / "000000000003.jpg").unlink()
    cmap = tmp_path / "map.txt"
    cmap.write_text("dog: dog\n")
    with pytest.raises(InputError, match="000000000003.jpg not found"):
        open_dataset(str(tmp_path / "b"), tiny, class_map=str(cmap))


def test_bad_class_maps_formats_and_empty_datasets(tmp_path, tiny):
    _image(tmp_path / "d" / "a.png")
    (tmp_path / "d" / "m.csv").write_text("path,label\na.png,cat\n")
    with pytest.raises(InputError, match="unknown class map 'voc-imagnet'.*coco-imagenet, voc-imagenet"):
        open_dataset(str(tmp_path / "d"), tiny, class_map="voc-imagnet")
    with pytest.raises(InputError, match="unknown --format 'yolo'; choose from folder, imagefolder"):
        open_dataset(str(tmp_path / "d"), tiny, format="yolo")
    bad = tmp_path / "bad.txt"
    bad.write_text("dog: dog\ncat cat\n")
    with pytest.raises(AnnotationError, match=r"bad.txt:2: expected 'dataset_class: model_class"):
        open_dataset(str(tmp_path / "d"), tiny, class_map=str(bad))
    bad.write_text("dog: dog, wolf\n")
    with pytest.raises(AnnotationError, match=r"bad.txt, line 1: 'wolf' is not one of the model's 3 classes"):
        open_dataset(str(tmp_path / "d"), tiny, class_map=str(bad))
    bad.write_text("dog: dog\n")                                         # every image's class unmapped
    with pytest.raises(InputError, match=r"empty dataset: .*skipped: 1 no model class"):
        open_dataset(str(tmp_path / "d"), tiny, class_map=str(bad))
    (tmp_path / "empty").mkdir()
    for fmt in (None, "folder", "imagefolder", "voc"):
        with pytest.raises(InputError, match="empty dataset"):
            open_dataset(str(tmp_path / "empty"), tiny, format=fmt)
    with pytest.raises(InputError, match="must be 'synthetic', 'collage' or an existing"):
        open_dataset(str(tmp_path / "nowhere"), tiny)
    with pytest.raises(InputError, match="empty dataset"):
        open_dataset(str(tmp_path / "d"), tiny, n_images=0)
    assert set(FORMATS) == {"folder", "imagefolder", "csv", "imagenet-loc", "coco", "voc", "hf"}


@pytest.mark.slow
def test_issue_command_on_a_folder_of_real_photos(tmp_path, monkeypatch):
    """Issue 11's failing case as a user types it: ``cnnlens evaluate --model efficientnet_lite0 --data FOLDER
    --target predicted --metrics average-drop`` on real photos (no annotation files), one stored sideways with an
    EXIF orientation tag: it runs, box metrics are n/a, and the sideways copy is scored exactly as its upright twin."""
    import json

    from click.testing import CliRunner
    from PIL import Image
    from skimage import data as skdata

    from cnnlens.cli import main
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.fromarray(skdata.chelsea()).save(photos / "a_chelsea.png")
    Image.fromarray(skdata.coffee()).save(photos / "b_coffee.png")
    exif = Image.Exif()
    exif[0x0112] = 6                                    # "rotate 90° clockwise to display": stored turned left
    Image.fromarray(skdata.chelsea()).transpose(Image.Transpose.ROTATE_90).save(photos / "c_chelsea_exif.png",
                                                                                exif=exif)
    out = tmp_path / "eval"
    res = CliRunner().invoke(main, ["evaluate", "--model", "efficientnet_lite0", "--data", str(photos), "--target",
                                    "predicted", "--metrics", "average-drop,pointing-game", "--methods", "grad-cam",
                                    "--quiet", "--no-plots", "--save-maps", "0", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "n/a (no boxes)" in res.output
    recs = {r["sample"]: r for r in map(json.loads, (out / "results.jsonl").read_text().splitlines())}
    assert len(recs) == 3
    upright, sideways = recs["a_chelsea.png"], recs["c_chelsea_exif.png"]
    assert upright["target"] == sideways["target"]
    assert sideways["metrics"]["average-drop"] == pytest.approx(upright["metrics"]["average-drop"], abs=1e-4)
    assert sideways["metrics"]["pointing-game"] is None
