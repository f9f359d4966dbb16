"""Corrupt and odd image files through ``load_image`` and ``cnnlens explain`` (issue 14, item 5): each gives one clear
error line or a correct explanation, never a traceback or a hang; decompression bombs are refused from the header."""
from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

import cnnlens
from cnnlens.data.images import load_image, load_rgb
from cnnlens.errors import InputError

SRC = str(Path(__file__).resolve().parents[1] / "src")
CLI = "import sys; from cnnlens.cli import main; sys.argv[0] = 'cnnlens'; main()"


def _photo(w: int = 64, h: int = 48) -> Image.Image:
    from skimage.data import chelsea
    return Image.fromarray(chelsea()).resize((w, h), Image.BILINEAR)


def _jpeg_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _png_header_only(w: int, h: int, with_data: bool = True) -> bytes:
    """A PNG whose header declares w×h RGB pixels; its (compressed) data holds one row or nothing."""
    out = b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
    if with_data:
        out += _png_chunk(b"IDAT", zlib.compress(b"\x00" + b"\x80" * (3 * min(w, 1000))))
    return out + _png_chunk(b"IEND", b"")


def _jpeg_declaring(w: int, h: int) -> bytes:
    """A real small JPEG with its SOF0 frame header patched to declare w×h."""
    data = bytearray(_jpeg_bytes(_photo(16, 16)))
    i = data.index(b"\xff\xc0")
    data[i + 5:i + 9] = struct.pack(">HH", h, w)
    return bytes(data)


# --------------------------------------------------------------------------------------------------------- the corpus
def _bad_files(d: Path) -> dict[str, tuple[Path, str]]:
    """name → (path, a phrase the one-line error must contain)."""
    jpeg = _jpeg_bytes(_photo())
    files = {
        "truncated.jpg": (jpeg[: len(jpeg) // 2], "truncated"),
        "zero_bytes.jpg": (b"", "not an image file"),
        "text.jpg": (b"this is a text file, not a JPEG\n" * 4, "not an image file"),
        "header_only.png": (_png_header_only(64, 64, with_data=False), "cannot read image"),
        "garbage_after_header.png": (_png_header_only(64, 64)[:40] + bytes(range(7, 250, 3)), "image"),
        "bomb.png": (_png_header_only(20000, 20000), "decompression bomb"),
        "bomb.jpg": (_jpeg_declaring(20000, 20000), "decompression bomb"),
        "bomb_under_pil_limit.png": (_png_header_only(9000, 9000), "decompression bomb"),
    }
    out = {}
    for name, (data, phrase) in files.items():
        (d / name).write_bytes(data)
        out[name] = (d / name, phrase)
    return out


def _good_files(d: Path) -> dict[str, tuple[Path, np.ndarray]]:
    """name → (path, the RGB array it must load as, computed here independently of cnnlens)."""
    photo = _photo()
    rgb = np.asarray(photo)
    out = {}

    gray16 = (np.arange(48 * 64, dtype=np.uint32).reshape(48, 64) * 21).astype(np.uint16)
    Image.fromarray(gray16).save(d / "gray16.png")
    assert Image.open(d / "gray16.png").mode.startswith("I")
    g8 = np.floor(gray16 / 257.0 + 0.5).astype(np.uint8)
    out["gray16.png"] = np.repeat(g8[:, :, None], 3, axis=2)

    photo.convert("CMYK").save(d / "cmyk.jpg", quality=95)
    with Image.open(d / "cmyk.jpg") as im:
        assert im.mode == "CMYK"
        out["cmyk.jpg"] = np.asarray(im.convert("RGB"))

    alpha = (np.arange(64, dtype=np.float64)[None, :] * 4).clip(0, 255).astype(np.uint8).repeat(48, 0)
    Image.fromarray(np.dstack([rgb, alpha]), "RGBA").save(d / "rgba.png")
    a = alpha[:, :, None] / 255.0
    out["rgba.png"] = (rgb * a + 255.0 * (1 - a) + 0.5).astype(np.uint8)

    photo.convert("P", palette=Image.ADAPTIVE, colors=16).save(d / "palette.png")
    with Image.open(d / "palette.png") as im:
        assert im.mode == "P"
        out["palette.png"] = np.asarray(im.convert("RGB"))

    Image.fromarray(np.array([[[200, 30, 90]]], dtype=np.uint8)).save(d / "one_pixel.png")
    out["one_pixel.png"] = np.array([[[200, 30, 90]]], dtype=np.uint8)

    bits = (np.indices((48, 64)).sum(0) % 2).astype(bool)
    Image.fromarray(bits).save(d / "bilevel.png")
    out["bilevel.png"] = np.repeat((bits * 255).astype(np.uint8)[:, :, None], 3, axis=2)

    gray = rgb.mean(2).astype(np.uint8)
    Image.fromarray(np.dstack([gray, np.full_like(gray, 255)]), "LA").save(d / "gray_alpha.png")
    out["gray_alpha.png"] = np.repeat(gray[:, :, None], 3, axis=2)

    Image.fromarray(rgb).save(d / "actually_png.jpg", format="PNG")        # wrong extension, valid content
    out["actually_png.jpg"] = rgb
    return {name: (d / name, arr) for name, arr in out.items()}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    d = tmp_path_factory.mktemp("fuzz")
    return _bad_files(d), _good_files(d)


# ------------------------------------------------------------------------------------------------------- load_image
@pytest.mark.timeout(30)
def test_load_image_refuses_bad_files_with_one_line(corpus):
    bad, _ = corpus
    for name, (path, phrase) in bad.items():
        with pytest.raises(InputError) as err:
            load_image(path)
        msg = str(err.value)
        assert phrase in msg and "\n" not in msg, (name, msg)


@pytest.mark.timeout(30)
def test_load_rgb_decodes_odd_images_correctly(corpus):
    _, good = corpus
    for name, (path, expected) in good.items():
        got = load_rgb(str(path))
        assert got.dtype == np.uint8 and got.shape == expected.shape, name
        assert np.array_equal(got, expected), name
        x = load_image(path)
        assert x.shape == (1, 3, 224, 224) and bool(torch.isfinite(x).all()), name


def test_bombs_are_refused_before_decoding(corpus, monkeypatch):
    """The size check reads the header only: a bomb costs no pixel decoding (Image.load is never reached)."""
    bad, _ = corpus
    calls = []
    original = Image.Image.load
    monkeypatch.setattr(Image.Image, "load", lambda self, *a: (calls.append(self.size), original(self, *a))[1])
    for name in ("bomb.png", "bomb.jpg", "bomb_under_pil_limit.png"):
        with pytest.raises(InputError, match="decompression bomb"):
            load_rgb(str(bad[name][0]))
    assert not [s for s in calls if s[0] * s[1] > 10 ** 6]


def test_extreme_aspect_ratio_is_refused_for_crop(tmp_path):
    Image.fromarray(np.zeros((2, 2000, 3), dtype=np.uint8)).save(tmp_path / "strip.png")
    with pytest.raises(InputError, match="too elongated"):
        load_image(tmp_path / "strip.png")
    assert load_image(tmp_path / "strip.png", crop=False).shape == (1, 3, 224, 224)


# ---------------------------------------------------------------------------------------------------------- the CLI
@pytest.mark.timeout(60)
def test_cli_bad_files_one_line_error_before_torch(corpus, tmp_path):
    bad, _ = corpus
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    guard = ("import atexit, sys, os; atexit.register(lambda: 'torch' not in sys.modules or os._exit(99)); ")
    for name, (path, phrase) in bad.items():
        out = tmp_path / name
        r = subprocess.run([sys.executable, "-c", guard + CLI, "explain", str(path), "--model", "efficientnet_lite0",
                            "--out", str(out)], capture_output=True, text=True, timeout=20, env=env)
        lines = [line for line in r.stderr.splitlines() if line.strip()]
        assert r.returncode == 2, (name, r.returncode, r.stderr)          # 99: torch was imported first
        assert len(lines) == 1 and lines[0].startswith("cnnlens: error:") and phrase in lines[0], (name, r.stderr)
        assert not out.exists()


def _cli_explains(good: dict, names: list[str], out: Path, model) -> None:
    """``cnnlens explain`` on the files ``names`` in one call: each gets the class and probability the model gives
    the RGB array the file holds (computed here with a plain forward)."""
    from cnnlens.cli import main
    res = CliRunner().invoke(main, ["explain", *[str(good[n][0]) for n in names], "--model", "efficientnet_lite0",
                                    "--method", "grad-cam", "--out", str(out)], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    records = json.loads((out / "explanations.json").read_text())
    assert [Path(r["image"]).name for r in records] == names
    for rec, name in zip(records, names):
        with torch.no_grad():
            probs = model(load_image(good[name][1], model)).softmax(-1)[0]
        assert rec["target"] == int(probs.argmax()), name
        assert rec["score"] == pytest.approx(float(probs.max()), rel=1e-4), name
        assert (out / rec["figure"]).stat().st_size > 500


@pytest.mark.timeout(120)
def test_cli_explains_odd_images_correctly(corpus, tmp_path, lite0):
    _, good = corpus
    _cli_explains(good, ["cmyk.jpg", "one_pixel.png"], tmp_path / "out", lite0)    # all of them: the slow test


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_cli_explains_every_odd_image(corpus, tmp_path, lite0):
    _, good = corpus
    _cli_explains(good, sorted(good), tmp_path / "out", lite0)


# ---------------------------------------------------------------------------------- one reader (issue 21, item 4)
def test_every_command_reads_a_file_upright_by_its_exif_orientation(tmp_path):
    """explain/sweep/sanity (load_rgb, load_image) and evaluate (the dataset layouts) decode a file with one reader:
    a photo stored sideways with EXIF orientation 6 comes out upright in both, pixel for pixel, and its size from
    the header is the upright one."""
    from cnnlens.data.images import image_size, read_rgb
    photo = _photo(64, 48)
    exif = Image.Exif()
    exif[0x0112] = 6                           # "rotate 90° clockwise to display": stored turned left
    photo.transpose(Image.Transpose.ROTATE_90).save(tmp_path / "sideways.png", exif=exif)
    photo.save(tmp_path / "upright.png")
    upright = np.asarray(photo)
    assert np.array_equal(load_rgb(str(tmp_path / "sideways.png")), upright)
    assert torch.equal(read_rgb(tmp_path / "sideways.png"), torch.from_numpy(upright.copy()).permute(2, 0, 1) / 255.0)
    assert image_size(tmp_path / "sideways.png") == (48, 64) == image_size(tmp_path / "upright.png")
    assert torch.equal(load_image(tmp_path / "sideways.png"), load_image(tmp_path / "upright.png"))


@pytest.mark.timeout(60)
@pytest.mark.parametrize("command", ["sweep", "sanity"])
def test_cli_other_image_commands_refuse_bad_files_in_one_line(corpus, tmp_path, command):
    """``sweep`` and ``sanity`` read through the same reader as ``explain``: one line, exit 2, nothing written."""
    from cnnlens.cli import main
    bad, _ = corpus
    for name in ("truncated.jpg", "bomb.png", "text.jpg"):
        path, phrase = bad[name]
        out = tmp_path / f"{command}-{name}"
        res = CliRunner().invoke(main, [command, str(path), "--model", "efficientnet_lite0", "--out", str(out)])
        lines = [line for line in res.output.splitlines() if line.strip()]
        assert res.exit_code == 2, (name, res.output)
        assert len(lines) == 1 and lines[0].startswith("cnnlens: error:") and phrase in lines[0], (name, res.output)
        assert not out.exists() or not any(out.iterdir()), name


@pytest.mark.timeout(180)
def test_cli_evaluate_skips_and_counts_every_bad_file_of_a_folder(corpus, tmp_path):
    """The fuzz corpus as one folder through ``cnnlens evaluate``: every odd-but-valid file is evaluated, every bad
    one (bombs and non-images found from the header, truncated data found while decoding) is skipped, counted and
    named in the summary, never a traceback; a re-run (resume) reports the same."""
    import shutil

    from cnnlens.cli import main
    bad, good = corpus
    folder = tmp_path / "photos"
    folder.mkdir()
    good = {name: good[name] for name in ("cmyk.jpg", "gray16.png")}     # a few: the model's time is not the point
    for name, (path, _) in {**bad, **good}.items():
        shutil.copy(path, folder / name)
    out = tmp_path / "eval"
    args = ["evaluate", "--model", "efficientnet_lite0", "--data", str(folder), "--target", "predicted",
            "--methods", "grad-cam", "--metrics", "average-drop", "--batch-size", "4", "--quiet", "--no-plots",
            "--out", str(out)]
    for attempt in range(2):                                            # the second run resumes: nothing to do
        res = CliRunner().invoke(main, args)
        assert res.exit_code == 0, res.output
        assert "Traceback" not in res.output
        line = next(x for x in res.output.splitlines() if x.startswith("Skipped images:"))
        assert line.startswith(f"Skipped images: {len(bad)} (unreadable: {len(bad)}) — "), line
        summary = json.loads((out / "summary.json").read_text())
        assert {k: v for k, v in summary["skipped"].items() if v} == {"unreadable": len(bad)}
        assert sorted(summary["unreadable"]) == sorted(bad)
        for name, (_, phrase) in bad.items():
            why = summary["unreadable"][name]
            assert why.startswith(f"{name}: ") and phrase in why and "\n" not in why, why
        assert f"Skipped images: {len(bad)}" in (out / "summary.md").read_text()
        rows = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
        assert {r["sample"] for r in rows if "method" in r} == set(good)
    from cnnlens.report import evaluation_page_data
    page = evaluation_page_data(out)                                    # the report names them too
    assert page["unreadable"] == summary["unreadable"] and {r["sample"] for r in page["records"]} == set(good)
