"""An evaluation results folder for the report tests and the report benchmark, written in the contract of
``cnnlens evaluate``: summary.json, results*.jsonl (one record per (sample, target, method, layer), with the
optional ``image`` / ``map`` fields), images/*.jpg, maps/*.png (8-bit grayscale [0,1]), bar_<metric>.png and
curves_<kind>.png.

The maps are real (``cnnlens.explain`` on the given model and images); the metric values and curves are seeded
pseudo-random numbers (the report only displays them), with one metric n/a on some images (``"n/a (no boxes)"``).
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch

#: Images per block (the records of one block × one method are one unit, written together).
UNIT_IMAGES = 4

METRICS = {
    "average-drop": {"higher_is_better": False, "description": "Average Drop (fixture values)", "unit": "%"},
    "increase": {"higher_is_better": True, "description": "Increase in Confidence (fixture values)", "unit": "%"},
    "deletion": {"higher_is_better": False, "description": "Deletion AUC (fixture values)", "unit": ""},
    "insertion": {"higher_is_better": True, "description": "Insertion AUC (fixture values)", "unit": ""},
    "pointing-game": {"higher_is_better": True, "description": "Pointing game (fixture values; n/a without boxes)",
                      "unit": "%"},
    "iou": {"higher_is_better": True, "description": "IoU (fixture values)", "unit": "%"},
}


def _bar_plot(path: Path, labels: list[str], means: list[float], ses: list[float], title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(max(4.0, 0.5 * len(labels)), 3.2), dpi=100)
    ax.bar(range(len(labels)), means, yerr=ses, color="#4c72b0", capsize=2)
    ax.set_xticks(range(len(labels)), labels, rotation=60, ha="right", fontsize=6)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _curve_plot(path: Path, curves: dict[str, np.ndarray], title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(5, 3.2), dpi=100)
    for label, c in curves.items():
        ax.plot(np.linspace(0, 1, len(c)), c, label=label, lw=1)
    ax.legend(fontsize=5, ncol=2)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def make_evaluation_folder(out: str | Path, model: torch.nn.Module, x: torch.Tensor, display: np.ndarray,
                           methods: list, layers: list[str], *, targets: list[int] | None = None,
                           maps_for: int | None = None, shards: int = 1, seed: int = 0, steps: int = 224,
                           model_name: str = "fixture-model") -> Path:
    """Write the folder; ``x`` (N,3,H,W) model input, ``display`` (N,H,W,3) in [0,1]; ``methods``: names or
    (label, name, options) triples; maps stored for the first
    ``maps_for`` images (all when None); records spread over ``shards`` results files."""
    import cnnlens
    from cnnlens.report._images import map_to_uint8, save_image_file, save_map_file, to_hwc_uint8

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    n = x.shape[0]
    maps_for = n if maps_for is None else maps_for
    rng = np.random.default_rng(seed)
    names = getattr(getattr(model, "cnnlens_meta", None), "class_names", None)
    with torch.no_grad():
        tgt = model(x).argmax(-1) if targets is None else torch.as_tensor(targets)
    sample_ids = [f"img-{i:03d}" for i in range(n)]
    for i in range(min(n, maps_for)):
        save_image_file(to_hwc_uint8(display[i]), out / "images" / f"{sample_ids[i]}.jpg", max_side=224)
    records = []
    specs = [(m, m, {}) if isinstance(m, str) else m for m in methods]
    methods = [label for label, _, _ in specs]
    for method, name, options in specs:
        res = cnnlens.explain(model, x, name, target=tgt, layer=layers if len(layers) > 1 else layers[0], **options)
        res = res if isinstance(res, dict) else {layers[0]: res}
        for layer, e in res.items():
            for i in range(n):
                t = int(tgt[i])
                rec = {"sample": sample_ids[i], "target": t, "target_name": names[t] if names else str(t),
                       "method": method, "layer": layer, "metrics": {}, "curves": {}, "flags": {"constant_map": False},
                       "seconds": float(rng.uniform(0.001, 0.05)),
                       "unit": f"{i // UNIT_IMAGES}:{method}@{','.join(layers)}"}
                ad = float(rng.uniform(0, 100))
                rec["metrics"] = {"average-drop": ad, "increase": float(rng.integers(0, 2) * 100),
                                  "deletion": float(rng.uniform(0.05, 0.5)), "insertion": float(rng.uniform(0.4, 1)),
                                  "pointing-game": None if i % 5 == 4 else float(rng.integers(0, 2) * 100),
                                  "iou": float(rng.uniform(0, 80))}
                if i % 5 == 4:                             # as the runner marks a metric an image has no boxes for
                    rec["na"] = {"pointing-game": "no boxes"}
                k = rng.uniform(3, 20)
                s = np.linspace(0, 1, steps + 1)
                rec["curves"] = {"deletion": (np.exp(-k * s) * 0.9 + 0.05).round(5).tolist(),
                                 "insertion": (1 - np.exp(-k * s) * 0.9).round(5).tolist()}
                if i < maps_for:
                    rel = f"maps/{sample_ids[i]}__{t}__{method}__{layer}.png"
                    save_map_file(map_to_uint8(e.heatmap[i]), out / rel, max_side=224)
                    rec["image"] = f"images/{sample_ids[i]}.jpg"
                    rec["map"] = rel
                records.append(rec)
    # units as the runner writes them: every record of a unit in one file, with the unit's size; units spread over
    # results.jsonl and the rank shards, as a resumed torchrun run leaves them
    units: dict[str, list[dict]] = {}
    for rec in records:
        units.setdefault(rec["unit"], []).append(rec)
    for recs in units.values():
        for rec in recs:
            rec["unit_size"] = len(recs)
    for s_i in range(shards):
        name = "results.jsonl" if s_i == 0 else f"results.rank{s_i}.jsonl"
        with (out / name).open("w", encoding="utf-8") as fh:
            for recs in list(units.values())[s_i::shards]:
                fh.write("".join(json.dumps(rec) + "\n" for rec in recs))
    rows = []
    for method in methods:
        for layer in layers:
            sel = [r for r in records if r["method"] == method and r["layer"] == layer]
            row = {"method": method, "layer": layer, "n": len(sel),
                   "seconds": float(np.mean([r["seconds"] for r in sel]))}
            for k in METRICS:
                v = np.array([r["metrics"][k] for r in sel if isinstance(r["metrics"][k], (int, float))], float)
                se = float(v.std(ddof=1) / math.sqrt(len(v))) if len(v) > 1 else 0.0
                row[k] = {"mean": float(v.mean()), "se": se, "n": int(len(v))}
            rows.append(row)
    summary = {"identity": {"model": model_name, "dataset": {"name": "fixture", "n": n}, "config": {"seed": seed},
                            "format": 1},
               "conventions": "fixture: metric values are seeded random numbers; maps are real",
               "metrics": METRICS, "rows": rows}
    (out / "summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    labels = [f"{r['method']}\n{r['layer']}" for r in rows]
    for k, meta in METRICS.items():
        _bar_plot(out / f"bar_{k}.png", labels, [r[k]["mean"] for r in rows], [r[k]["se"] for r in rows],
                  f"{k} ({'higher' if meta['higher_is_better'] else 'lower'} is better)")
    for kind in ("deletion", "insertion"):
        curves = {f"{r['method']} {r['layer']}":
                  np.mean([rec["curves"][kind] for rec in records
                           if rec["method"] == r["method"] and rec["layer"] == r["layer"]], 0) for r in rows}
        _curve_plot(out / f"curves_{kind}.png", curves, f"{kind} curves")
    return out


def tiny_setup(n: int = 4, size: int = 64, seed: int = 0):
    """A small random CNN with named layers and ``n`` random images: (model, x, display, layers)."""
    torch.manual_seed(seed)
    model = torch.nn.Sequential()
    model.add_module("conv1", torch.nn.Conv2d(3, 8, 3, padding=1))
    model.add_module("relu1", torch.nn.ReLU())
    model.add_module("conv2", torch.nn.Conv2d(8, 16, 3, padding=1, stride=2))
    model.add_module("relu2", torch.nn.ReLU())
    model.add_module("pool", torch.nn.AdaptiveAvgPool2d(1))
    model.add_module("flat", torch.nn.Flatten())
    model.add_module("fc", torch.nn.Linear(16, 5))
    model.eval()
    g = torch.Generator().manual_seed(seed)
    display = torch.rand(n, 3, size, size, generator=g)
    display = torch.nn.functional.avg_pool2d(display, 5, 1, 2)
    return model, (display - 0.5) / 0.25, display.permute(0, 2, 3, 1).numpy(), ["relu1", "relu2"]


SYNTH_METRICS = {
    "average-drop": (False, "%"), "increase": (True, "%"), "deletion": (False, ""), "insertion": (True, ""),
    "pointing-game": (True, "%"), "energy-pointing-game": (True, "%"), "iou": (True, "%"), "bbox": (True, "%"),
}


def synthetic_folder(out: Path, n_images: int, n_methods: int, *, steps: int = 16, maps_for: int = 50,
                     seed: int = 0) -> Path:
    """An evaluation results folder at scale: ``n_images`` × ``n_methods`` records (one layer each) with seeded
    values, curves of ``steps + 1`` points and, for the first ``maps_for`` images, an input image and a map per
    method (what ``cnnlens evaluate --save-maps`` writes). Records streamed to results.jsonl."""
    from cnnlens.report._images import save_image_file, save_map_file
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    methods = [f"method-{k}" for k in range(n_methods)]
    layers = ["layer4"] * (n_methods - 2) + [None, None]             # two input-level methods, as RISE and LRP
    names = [f"class {c} name" for c in range(1000)]
    s = np.linspace(0, 1, steps + 1)
    stats = {m: {k: [] for k in SYNTH_METRICS} for m in methods}
    yy, xx = np.mgrid[0:56, 0:56]
    with (out / "results.jsonl").open("w", encoding="utf-8") as fh:
        for i in range(n_images):
            sid = f"ILSVRC2012_val_{i + 1:08d}"
            t = int(rng.integers(0, 1000))
            if i < maps_for:
                save_image_file(rng.integers(0, 255, (56, 56, 3), dtype=np.uint8), out / "images" / f"{sid}.jpg",
                                max_side=224)
            vals = rng.uniform(0, 1, (n_methods, len(SYNTH_METRICS)))
            ks = rng.uniform(3, 20, n_methods)
            for k, m in enumerate(methods):
                metrics = {name: round(float(v * (1 if unit == "" else 100)), 6)
                           for (name, (_, unit)), v in zip(SYNTH_METRICS.items(), vals[k])}
                rec = {"sample": sid, "target": t, "target_name": names[t], "method": m, "layer": layers[k],
                       "metrics": metrics, "flags": {"constant_map": False}, "seconds": 0.01,
                       "unit": f"{i // 64}:{m}", "unit_size": min(64, n_images - 64 * (i // 64)),
                       "curves": {"deletion": (np.exp(-ks[k] * s) * 0.9 + 0.05).round(5).tolist(),
                                  "insertion": (1 - np.exp(-ks[k] * s) * 0.9).round(5).tolist()}}
                if i < maps_for:
                    rel = f"maps/{sid}__{t}__{m}__{layers[k]}.png"
                    cy, cx = rng.uniform(10, 46, 2)
                    heat = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 200.0)
                    save_map_file((heat * 255).astype(np.uint8), out / rel, max_side=224)
                    rec["image"], rec["map"] = f"images/{sid}.jpg", rel
                fh.write(json.dumps(rec) + "\n")
                for name, v in metrics.items():
                    stats[m][name].append(v)
    rows = []
    for k, m in enumerate(methods):
        row = {"method": m, "layer": layers[k], "n": n_images, "seconds": 0.01}
        for name in SYNTH_METRICS:
            v = np.asarray(stats[m][name])
            row[name] = {"mean": float(v.mean()), "se": float(v.std(ddof=1) / np.sqrt(len(v))), "n": len(v)}
        rows.append(row)
    metrics_decl = {k: {"higher_is_better": hib, "description": f"{k} (synthetic values)", "unit": unit}
                    for k, (hib, unit) in SYNTH_METRICS.items()}
    summary = {"identity": {"model": "synthetic", "dataset": {"name": "synthetic ImageNet val", "n": n_images},
                            "config": {"seed": seed}, "format": 1},
               "conventions": "benchmark: synthetic records", "metrics": metrics_decl, "rows": rows}
    (out / "summary.json").write_text(json.dumps(summary), encoding="utf-8")
    return out
