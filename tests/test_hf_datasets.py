"""The ``hf`` layout (issue 20, item 4): a Hugging Face ``datasets`` dataset written by ``save_to_disk``, built here
from scikit-image photos: the image and ClassLabel columns found, class names from the ClassLabel, COCO-style boxes from
``objects``, a DatasetDict's split chosen, bad input refused in one line, corrupt image bytes skipped and counted,
through the same DataLoader (worker processes) and ``cnnlens evaluate`` as every layout."""
from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

datasets = pytest.importorskip("datasets")

from cnnlens.data import detect_format, open_dataset  # noqa: E402
from cnnlens.data.synthetic import SyntheticMeta  # noqa: E402
from cnnlens.errors import CnnlensError, InputError  # noqa: E402

PHOTOS = ("chelsea", "coffee", "rocket", "astronaut")
NAMES = ["tabby", "espresso", "missile", "suit"]              # ImageNet-1k class names (efficientnet_lite0's)


class _Tiny(torch.nn.Module):
    def __init__(self, names=None, outputs=None):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.fc = torch.nn.Linear(4, outputs or len(names))
        if names:
            self.cnnlens_meta = SyntheticMeta("tiny", tuple(names), input_size=(3, 32, 32))

    def forward(self, x):
        return self.fc(self.conv(x).relu().mean((2, 3)))


def _photo(name: str, size=(48, 36)) -> Image.Image:
    from skimage import data
    arr = data.rocket() if name == "rocket" else getattr(data, name)()
    return Image.fromarray(arr).resize(size, Image.BILINEAR)


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def _features(names=NAMES, objects=True):
    f = {"image": datasets.Image(), "label": datasets.ClassLabel(names=list(names))}
    if objects:
        f["objects"] = {"bbox": datasets.List(datasets.List(datasets.Value("float32"), length=4)),
                        "category": datasets.List(datasets.ClassLabel(names=list(names)))}
    return datasets.Features(f)


def _rows(extra_images=()):
    """Four photos (48×36), label = photo index, one box each (and a second, zero-size one on the last)."""
    images = [{"bytes": _png(_photo(p)), "path": None} for p in PHOTOS] + list(extra_images)
    n = len(images)
    boxes = [[[2.0 + i, 3.0, 20.0, 10.0]] for i in range(n)]
    boxes[3] = boxes[3] + [[5.0, 5.0, 0.0, 4.0]]
    cats = [[i % 4] for i in range(n)]
    cats[3] = [3, 1]
    return {"image": images, "label": [i % 4 for i in range(n)],
            "objects": [{"bbox": b, "category": c} for b, c in zip(boxes, cats)]}


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    root = tmp_path_factory.mktemp("hf")
    ds = datasets.Dataset.from_dict(_rows(), features=_features())
    ds.save_to_disk(str(root / "plain"))
    datasets.DatasetDict({"train": ds, "test": ds.select([2, 0])}).save_to_disk(str(root / "dict"))
    return root


def _one_line(exc) -> str:
    msg = str(exc)
    assert "\n" not in msg and isinstance(exc, CnnlensError)
    return msg


def test_columns_labels_and_boxes_are_found(saved):
    assert detect_format(saved / "plain") == "hf" and detect_format(saved / "dict") == "hf"
    ds = open_dataset(str(saved / "plain"), _Tiny(NAMES))
    assert len(ds) == 4 and ds.format == "hf" and ds.class_names == NAMES
    d = ds.describe()
    assert (d["image_column"], d["label_column"], d["objects_column"], d["split"]) == ("image", "label", "objects",
                                                                                       None)
    assert d["skipped"]["empty_box"] == 1 and d["has_boxes"] and d["has_labels"]
    s = ds[1]
    assert s.id == "1" and s.size == (36, 48) and s.image.shape == (3, 32, 32)
    assert s.boxes == [(1, 3.0, 3.0, 23.0, 13.0)] and s.targets == [1]          # [x, y, w, h] → corners
    last = ds[3]
    assert last.targets == [3] and last.class_boxes(3).tolist() == [[5.0, 3.0, 25.0, 13.0]]   # zero-size box dropped
    # the pixels are those of the photo, read by the one reader (PNG bytes in the arrow file)
    want = torch.from_numpy(np.asarray(_photo("chelsea")).copy()).permute(2, 0, 1).float() / 255
    from cnnlens.data import model_preprocessing, to_model_input
    size, mean, std = model_preprocessing(_Tiny(NAMES))
    assert torch.allclose(ds[0].image, to_model_input(want, size, mean, std), atol=1e-6)


def test_a_datasetdict_split_and_the_class_names_of_the_classlabel(saved):
    model = _Tiny(outputs=4)                        # no class names, as many outputs as the ClassLabel has names
    ds = open_dataset(str(saved / "dict"), model, split="test")
    assert [ds[i].id for i in range(len(ds))] == ["test/0", "test/1"] and ds.class_names == NAMES
    assert ds[0].targets == [2] and ds.describe()["name"].endswith("[test]")
    with pytest.raises(InputError, match="holds the splits train, test: choose one with --split") as info:
        open_dataset(str(saved / "dict"), model)
    _one_line(info.value)
    with pytest.raises(InputError, match="has no split 'val'; its splits: train, test"):
        open_dataset(str(saved / "dict"), model, split="val")
    with pytest.raises(InputError, match="--split applies to the hf layout"):
        open_dataset(str(saved / "plain"), model, format="folder", split="test")


def test_bad_input_is_one_line(saved, tmp_path):
    with pytest.raises(CnnlensError, match="class 'tabby' is not one of the model's 3 classes.*--class-map") as info:
        open_dataset(str(saved / "plain"), _Tiny(["cat", "dog", "bird"]))
    assert "row 0" in _one_line(info.value)
    cmap = tmp_path / "map.txt"
    cmap.write_text("tabby: cat\nespresso: dog\nmissile: bird\nsuit:\n")
    ds = open_dataset(str(saved / "plain"), _Tiny(["cat", "dog", "bird"]), class_map=str(cmap))
    assert len(ds) == 3 and ds.describe()["skipped"]["no_model_class"] == 1 and ds[0].candidates == {0: (0,)}
    datasets.Dataset.from_dict({"text": ["a", "b"]}).save_to_disk(str(tmp_path / "noimage"))
    with pytest.raises(InputError, match="has no image column .*columns: text") as info:
        open_dataset(str(tmp_path / "noimage"), _Tiny(NAMES))
    _one_line(info.value)
    with pytest.raises(InputError, match="no column 'picture' \\(--image-column\\)"):
        open_dataset(str(saved / "plain"), _Tiny(NAMES), image_column="picture")
    with pytest.raises(InputError, match="column 'label' is ClassLabel, not an Image feature"):
        open_dataset(str(saved / "plain"), _Tiny(NAMES), image_column="label")


def test_corrupt_image_bytes_are_skipped_and_counted(tmp_path):
    jpeg = io.BytesIO()
    _photo("coffee").save(jpeg, "JPEG")
    header = b"\x89PNG\r\n\x1a\n"
    bad = [{"bytes": jpeg.getvalue()[: len(jpeg.getvalue()) * 3 // 4], "path": None},  # found while decoding
           {"bytes": header + b"garbage" * 10, "path": None}]                           # found from the header
    datasets.Dataset.from_dict(_rows(bad), features=_features()).save_to_disk(str(tmp_path / "d"))
    ds = open_dataset(str(tmp_path / "d"), _Tiny(NAMES))
    assert len(ds) == 5 and ds.describe()["skipped"]["unreadable"] == 1
    assert list(ds.describe()["unreadable"]) == ["5"]
    assert ds[4].unreadable.startswith("4: cannot read image") and ds[0].unreadable is None


def test_through_the_dataloader_workers_and_the_runner(saved, tmp_path):
    from cnnlens.evaluation import EvalConfig, evaluate
    model = _Tiny(NAMES)
    ds = open_dataset(str(saved / "plain"), model)
    loader = torch.utils.data.DataLoader(ds, batch_size=2, num_workers=2, collate_fn=list)
    got = [s for batch in loader for s in batch]
    assert [s.id for s in got] == ["0", "1", "2", "3"] and all(torch.equal(a.image, ds[i].image)
                                                           for i, a in enumerate(got))
    res = evaluate(model, ds, "grad-cam", "pointing-game,average-drop", out=tmp_path / "eval", workers=2,
                   config=EvalConfig(batch_size=2), progress=False, plots=False, save_maps=0)
    assert sorted({(r["sample"], r["label_name"]) for r in res.records}) == [
        ("0", "tabby"), ("1", "espresso"), ("2", "missile"), ("3", "suit")]
    assert all(r["metrics"]["pointing-game"] is not None for r in res.records)


@pytest.mark.timeout(180)
def test_cli_evaluate_format_hf(saved, tmp_path):
    from cnnlens.cli import main
    out = tmp_path / "eval"
    args = ["evaluate", "--model", "efficientnet_lite0", "--format", "hf", "--data", str(saved / "dict"), "--split",
            "test", "--methods", "grad-cam", "--metrics", "energy-pointing-game", "--quiet", "--no-plots",
            "--save-maps", "1", "--out", str(out)]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    rows = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    assert sorted((r["sample"], r["label_name"]) for r in rows) == [("test/0", "missile"), ("test/1", "tabby")]
    assert json.loads((out / "summary.json").read_text())["identity"]["dataset"]["format"] == "hf"
    res = CliRunner().invoke(main, args[:7] + ["--split", "test", "--label-column", "nope", "--out",
                                               str(tmp_path / "bad")])       # the other bad inputs: the API tests
    lines = [x for x in res.output.splitlines() if x.strip()]
    assert res.exit_code == 2 and len(lines) == 1 and "no column 'nope' (--label-column)" in lines[0], res.output
    assert not (tmp_path / "bad").exists()
    res = CliRunner().invoke(main, ["evaluate", "--model", "efficientnet_lite0", "--data", str(saved / "plain"),
                                    "--format", "folder", "--split", "x", "--out", str(tmp_path / "bad")])
    assert res.exit_code == 2 and "--split applies to --format hf" in res.output


def test_the_docs_example_builds_a_dataset_that_opens(tmp_path, monkeypatch):
    """docs/integrations/huggingface_datasets.md: its dataset-building code runs as written, and the dataset opens
    for an ImageNet-1k model (the ClassLabel names are ImageNet class names; every box lies inside its photo)."""
    import re
    from pathlib import Path

    from cnnlens.models.zoo import imagenet_class_names
    page = Path(__file__).resolve().parents[1] / "docs" / "integrations" / "huggingface_datasets.md"
    blocks = re.findall(r"```python\n(.*?)```", page.read_text(encoding="utf-8"), re.S)
    build = next(b for b in blocks if "save_to_disk(\"photos-hf\")" in b)
    monkeypatch.chdir(tmp_path)
    exec(compile(build, str(page), "exec"), {})
    ds = open_dataset("photos-hf", _Tiny(imagenet_class_names()), split="train")
    assert [ds[i].id for i in range(len(ds))] == ["train/0", "train/1"] and ds.has_boxes
    assert [ds.class_names[ds[i].targets[0]] for i in range(2)] == ["tabby", "espresso"]
    assert "--format hf" in page.read_text(encoding="utf-8") and "pip install 'cnnlens[hf]'" in page.read_text()


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_torchrun_on_an_hf_dataset_gives_the_single_process_table(tmp_path):
    """The hf layout through torchrun (2 ranks, gloo, a decoding worker each) and one process: the same table, and the
    image corrupt beyond its header skipped and counted once in both."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from cnnlens.data.synthetic import SHAPES, TrainConfig, vgg_like
    cache = tmp_path / "cache"                            # untrained weights where --model synthetic-vgg looks
    weights = cache / "synthetic" / f"{TrainConfig(arch='vgg').key}.pt"
    weights.parent.mkdir(parents=True)
    torch.manual_seed(0)
    torch.save(vgg_like(4).state_dict(), weights)
    jpeg = io.BytesIO()
    _photo("coffee").save(jpeg, "JPEG")
    names = list(SHAPES[:4])
    rows = _rows([{"bytes": jpeg.getvalue()[: len(jpeg.getvalue()) * 3 // 4], "path": None}]
                 + [{"bytes": _png(_photo(p, (40, 30))), "path": None} for p in PHOTOS])
    datasets.Dataset.from_dict(rows, features=_features(names)).save_to_disk(str(tmp_path / "hf"))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src") + os.pathsep
           + os.environ.get("PYTHONPATH", ""), "CNNLENS_CACHE": str(cache), "OMP_NUM_THREADS": "1"}
    args = ["-m", "cnnlens", "evaluate", "--model", "synthetic-vgg", "--data", str(tmp_path / "hf"), "--batch-size",
            "2", "--methods", "grad-cam", "--metrics", "average-drop,pointing-game", "--tolerance", "4", "--quiet",
            "--no-plots", "--workers", "1"]
    tables = {}
    for world in (1, 2):
        out = tmp_path / f"w{world}"
        run = ([sys.executable] if world == 1 else
               [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(world)])
        proc = subprocess.run(run + args + ["--out", str(out)], env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr
        line = "Skipped images: 2 (empty_box: 1, unreadable: 1) — 4: cannot read image"
        assert proc.stdout.count(line) == 1, proc.stdout
        summary = json.loads((out / "summary.json").read_text())
        assert list(summary["unreadable"]) == ["4"] and summary["identity"]["dataset"]["format"] == "hf"
        tables[world] = [(r["method"], r["layer"], r["n"], r["average-drop"]["mean"], r["pointing-game"]["mean"])
                         for r in summary["rows"]]
    assert tables[1] == tables[2] and tables[1][0][2] == 8


def test_without_the_datasets_package_one_line_names_the_extra(saved, monkeypatch, tmp_path):
    import importlib.util
    import sys

    from cnnlens.cli import main
    monkeypatch.setitem(sys.modules, "datasets", None)                  # import datasets → ImportError
    with pytest.raises(InputError, match=r"pip install 'cnnlens\[hf\]'") as info:
        open_dataset(str(saved / "plain"), _Tiny(NAMES), format="hf")
    _one_line(info.value)
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "datasets" else real(name, *a))
    res = CliRunner().invoke(main, ["evaluate", "--model", "efficientnet_lite0", "--format", "hf", "--data",
                                    str(saved / "plain"), "--out", str(tmp_path / "out")])
    assert res.exit_code == 2 and "pip install 'cnnlens[hf]'" in res.output and not (tmp_path / "out").exists()
