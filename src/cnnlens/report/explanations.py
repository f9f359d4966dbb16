"""The explanation report: input images, top-5 classes, and every (method, layer, target) map of a run.

The commands hand their ``Explanation`` objects to an :class:`ExplanationReport`; ``write()`` stores them as files
(``report_data/explanations.json``, ``report_data/images/*.jpg``, ``report_data/maps/*.png`` = 8-bit grayscale maps in
[0,1]) and builds ``report.html`` from those files, so ``cnnlens report DIR`` can rebuild the page later. Runs into the
same folder with the same model add up (a second ``cnnlens explain --method X`` adds method X); a run with another
model starts afresh.
"""
from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ._images import (data_uri_file, data_uri_map, data_uri_map_file, data_uri_rgb, map_to_uint8, save_image_file,
                      save_map_file, to_hwc_uint8)
from .html import write_page

DATA_DIR = "report_data"
MANIFEST = "explanations.json"
FORMAT = 1


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", str(text)).strip("._") or "x"


def _layer_label(layer: Any) -> str:
    from ..display.explanation import layer_label
    return layer_label(layer, sep=",")


class ExplanationReport:
    """Collects explanations of one model for the HTML report of an output folder.

    ``add`` takes one image (display RGB, (3,H,W) or (H,W,3) in [0,1]) and an ``Explanation`` (or a dict layer →
    Explanation, as ``cnnlens.explain`` returns for several layers) of a batch, with ``index`` the image's row in it.
    In a notebook the object shows its page inline (``view()``: a :class:`~cnnlens.report.Report`, built in memory
    from what was added); ``out`` may be None for such a report that is never written.
    """

    def __init__(self, out: str | Path | None, *, model: str | None = None, title: str | None = None,
                 command: str | None = None) -> None:
        self.out = None if out is None else Path(out)
        self.model = model
        self.title = title
        self.command = command
        self._images: dict[str, dict[str, Any]] = {}
        self._pixels: dict[str, np.ndarray] = {}
        self._maps: dict[tuple, dict[str, Any]] = {}
        self._gray: dict[tuple, np.ndarray] = {}

    def add(self, image_id: str, image: Any, explanations: Any, *, index: int = 0, source: str | None = None) -> None:
        """Record ``image`` and its maps (every layer of ``explanations``, row ``index``)."""
        if isinstance(explanations, Mapping):
            items = list(explanations.values())
        elif isinstance(explanations, Sequence):
            items = list(explanations)
        else:
            items = [explanations]
        if not items:
            return
        image_id = _safe(image_id)
        if image_id not in self._images:
            rgb = to_hwc_uint8(image)
            self._pixels[image_id] = rgb
            self._images[image_id] = {"id": image_id, "source": str(source if source is not None else image_id),
                                      "width": int(rgb.shape[1]), "height": int(rgb.shape[0]), "top5": []}
        entry = self._images[image_id]
        for e in items:
            if not entry["top5"] and e.logits is not None:
                entry["top5"] = _top5(e.logits[index], e.class_names)
            t = int(e.target[index])
            layer = _layer_label(e.layer)
            key = (image_id, t, e.method, layer)
            names = e.class_names
            prob = None
            if e.logits is not None:
                prob = float(e.logits[index].detach().float().softmax(-1)[t])
            self._maps.pop(key, None)  # a re-added map moves to the end: layer order follows the latest sweep
            self._maps[key] = {"image": image_id, "target": t, "target_name": names[t] if names else str(t),
                               "method": e.method, "layer": layer, "signed": bool(e.signed), "probability": prob,
                               "map": f"maps/{_safe(image_id)}__{t}__{_safe(e.method)}__{_safe(layer)}.png"}
            self._gray[key] = map_to_uint8(e.heatmap[index])

    def write(self) -> Path:
        """Store the maps and images under ``report_data/``, merge with an earlier run of the same model, and write
        ``report.html``; return its path."""
        if self.out is None:
            raise InputError("this report has no output folder (ExplanationReport(out=None)): use view() or "
                             "view().save(path)")
        data_dir = self.out / DATA_DIR
        old = _read_manifest(data_dir) if (data_dir / MANIFEST).exists() else None
        images: dict[str, dict] = {}
        maps: dict[tuple, dict] = {}
        if old is not None and old.get("model") == self.model:
            images = {im["id"]: im for im in old.get("images", [])}
            maps = {(m["image"], m["target"], m["method"], m["layer"]): m for m in old.get("maps", [])}
        for image_id, entry in self._images.items():
            save_image_file(self._pixels[image_id], data_dir / "images" / f"{image_id}.jpg")
            images[image_id] = dict(entry, image=f"images/{image_id}.jpg")
        for key, m in self._maps.items():
            save_map_file(self._gray[key], data_dir / m["map"])
            maps.pop(key, None)
            maps[key] = m
        manifest = {"format": FORMAT, "kind": "explanations", "model": self.model,
                    "title": self.title or (old or {}).get("title"), "command": self.command,
                    "images": list(images.values()), "maps": list(maps.values())}
        from ..viz import write_text_atomic
        write_text_atomic(data_dir / MANIFEST, json.dumps(manifest, indent=1))
        return write_explanation_report(self.out)


    def page_data(self) -> dict[str, Any]:
        """The page's data from what was added (in memory: images and maps as data URIs, nothing read or written)."""
        images = [dict(entry, src=data_uri_rgb(self._pixels[image_id])) for image_id, entry in self._images.items()]
        maps = [dict(m, src=data_uri_map(self._gray[key])) for key, m in self._maps.items()]
        methods = list(dict.fromkeys(m["method"] for m in maps))
        return {"kind": "explanations", "title": self.title or "cnnlens explanations", "model": self.model,
                "command": self.command, "images": images, "maps": maps, "methods": methods}

    def view(self, *, height: int | None = None):
        """This report's page as a :class:`~cnnlens.report.Report` (inline in a notebook)."""
        from .html import render_page
        from .inline import DEFAULT_HEIGHT, Report
        data = self.page_data()
        title = data["title"] + (f" · {data['model']}" if data.get("model") else "")
        return Report(render_page(data, title), height=DEFAULT_HEIGHT if height is None else height)

    def _repr_html_(self) -> str | None:
        if not self._maps:
            return None
        return self.view()._repr_html_()


def _top5(logits: Any, names: Sequence[str] | None) -> list[dict[str, Any]]:
    p = logits.detach().float().cpu().softmax(-1)
    v, idx = p.topk(min(5, p.numel()))
    return [{"class": int(j), "name": names[j] if names else str(int(j)), "probability": float(q)}
            for q, j in zip(v.tolist(), idx.tolist())]


def _read_manifest(data_dir: Path) -> dict[str, Any]:
    try:
        manifest = json.loads((data_dir / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read {data_dir / MANIFEST}: {exc}") from None
    if not isinstance(manifest, dict) or manifest.get("kind") != "explanations":
        raise InputError(f"{data_dir / MANIFEST} is not a cnnlens explanation manifest")
    return manifest


def explanation_page_data(out: str | Path) -> dict[str, Any]:
    """The page's data, read from ``out/report_data`` (images and colourised maps as data URIs)."""
    data_dir = Path(out) / DATA_DIR
    manifest = _read_manifest(data_dir)
    images, maps = [], []
    for im in manifest.get("images", []):
        path = data_dir / im["image"]
        if not path.exists():
            raise InputError(f"missing image file {path}")
        images.append(dict(im, src=data_uri_file(path)))
    methods: list[str] = []
    for m in manifest.get("maps", []):
        path = data_dir / m["map"]
        if not path.exists():
            raise InputError(f"missing map file {path}")
        maps.append(dict(m, src=data_uri_map_file(path)))
        if m["method"] not in methods:
            methods.append(m["method"])
    return {"kind": "explanations", "title": manifest.get("title") or "cnnlens explanations",
            "model": manifest.get("model"), "command": manifest.get("command"), "images": images, "maps": maps,
            "methods": methods}


def write_explanation_report(out: str | Path) -> Path:
    """(Re)build ``out/report.html`` from ``out/report_data``; return its path."""
    data = explanation_page_data(out)
    title = data["title"] + (f" · {data['model']}" if data.get("model") else "")
    return write_page(Path(out), data, title)
