"""Class sensitivity by layer on real weights: the share of each map's energy on the target photo of a two-photo
collage (chelsea | coffee: cat left, espresso right), per model, layer and method.

Run: ``python benchmarks/layer_energy.py`` (CPU, about a minute) prints a Markdown table (the README's "Choosing
layers" table). Rows: the ``layer="stages"`` layers (marked ``S``) and, for contrast, the block outputs they replace
where those are linear (a linear bottleneck). Cells: "cat / espresso" = energy-based pointing game (Σ heatmap on the
target photo / Σ heatmap) of the min–max heatmap (``Explanation.heatmap``) explaining each photo's class (the model's
top-1 class on the photo alone); 0.5 = no preference, 1 = all on the target.

Options: ``--models efficientnet_lite0,efficientnet_lite1`` ``--methods relevance-cam,grad-cam,grad-cam++,layer-cam``
``--json out.json`` (also write the numbers) ``--device cpu|cuda``.
"""
from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
import cnnlens  # noqa: E402
from cnnlens.data.collage import side_by_side  # noqa: E402
from cnnlens.metrics.localization import energy_pointing_game  # noqa: E402

PHOTOS = ("chelsea", "coffee")
METHODS = ("relevance-cam", "grad-cam", "grad-cam++", "layer-cam")
MODELS = ("efficientnet_lite0", "efficientnet_lite1")


def collage_input(model: torch.nn.Module) -> tuple[torch.Tensor, torch.Tensor, list[int], list[str]]:
    """The chelsea | coffee collage at the model's input height (two squares), the two halves' masks (2,H,2H), each
    photo's top-1 class on the photo alone and the class names."""
    size = model.cnnlens_meta.input_size[1]
    names = model.cnnlens_meta.class_names
    with torch.no_grad():
        classes = [int(model(cnnlens.load_image(p, model)).argmax()) for p in PHOTOS]
    rgb, _ = side_by_side(*PHOTOS, height=size)
    x = cnnlens.load_image(rgb, model, crop=False, size=(size, 2 * size))
    masks = torch.zeros(2, size, 2 * size, dtype=torch.bool)
    masks[0, :, :size] = True
    masks[1, :, size:] = True
    return x, masks, classes, [names[c] for c in classes]


def measure(model_name: str, methods=METHODS, device: str = "cpu") -> dict:
    """{"classes", "rows": [{"layer", "stride", "activation", "stage", method: [cat, espresso]}]} for one model."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = cnnlens.load_model(model_name).to(device)
    x, masks, classes, class_names = collage_input(model)
    masks = masks.to(x.device)
    report = {r.name: r for r in cnnlens.explainable_layers(model, x)}
    stages = cnnlens.stage_layers(model)
    linear_blocks = [b for b in dict.fromkeys(r.block for r in report.values() if r.block)
                     if report[b].activation == "linear" and b not in stages]
    layers = sorted(set(stages) | set(linear_blocks), key=list(report).index)
    xx = x.expand(2, -1, -1, -1)
    rows = [{"layer": name, "stride": report[name].stride, "activation": report[name].activation,
             "stage": name in stages} for name in layers]
    for method in methods:
        maps = cnnlens.explain(model, xx, method, target=classes, layer=layers)
        for row in rows:
            row[method] = [round(float(v), 2) for v in energy_pointing_game(maps[row["layer"]].heatmap, masks)]
    return {"model": model_name, "classes": class_names, "rows": rows}


def markdown(results: list[dict], methods=METHODS) -> str:
    head = "| model | layer | stride | output | " + " | ".join(f"{m} cat / espresso" for m in methods) + " |"
    lines = [head, "|" + "---|" * (4 + len(methods))]
    for res in results:
        for row in res["rows"]:
            name = f"`{row['layer']}`" + (" **S**" if row["stage"] else "")
            cells = " | ".join(f"{row[m][0]:.2f} / {row[m][1]:.2f}" for m in methods)
            lines.append(f"| {res['model']} | {name} | {row['stride']} | {row['activation']} | {cells} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--json", default=None, help="also write the numbers to this file")
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    args = ap.parse_args()
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    methods = [m for m in args.methods.split(",") if m]
    results = [measure(m, methods, args.device) for m in args.models.split(",") if m]
    for res in results:
        print(f"{res['model']}: targets {' / '.join(res['classes'])}")
    print(markdown(results, methods))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
