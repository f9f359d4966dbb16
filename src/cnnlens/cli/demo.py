"""``cnnlens demo``: real ImageNet EfficientNet-Lite0 + bundled photos → figures, no arguments needed."""
from __future__ import annotations

import json
from pathlib import Path

import click

from . import main
from ._common import check_device, load_model_quietly

#: Methods shown by the demo when registered (cheap enough for a CPU demo), in display order.
DEMO_METHODS = ("grad-cam", "grad-cam++", "xgrad-cam", "layer-cam", "relevance-cam", "lrp", "clrp", "sglrp", "sr-map")
SWEEP_METHODS = ("relevance-cam", "grad-cam")
#: Demo-only options: SR map at its fast approximate setting (see the sr-map docstring) so the demo stays quick.
DEMO_OPTIONS = {"sr-map": {"working_size": 128, "query_stride": 2}}


@main.command("demo")
@click.option("--out", "out_dir", default="cnnlens-demo", show_default=True, type=click.Path(file_okay=False),
              help="Output folder for the figures.")
@click.option("--device", default="cpu", show_default=True, help="cpu or cuda.")
def demo_cmd(out_dir, device):
    """Explain bundled photos with the real ImageNet EfficientNet-Lite0 and write figures.

    \b
    Writes: methods_x_images.png (every demo method on every photo), collage_<class>.png (each class of a two-photo
    collage), layers_x_methods.png (one post-activation layer per resolution, layer='stages', × methods on the
    collage) and demo.json (top classes).
    Example:
      cnnlens demo --out demo/
    """
    device = check_device(device)                 # checked before torch is loaded
    import torch

    import cnnlens
    from ..data.collage import side_by_side
    from ..data.images import load_image
    from ..methods import all_methods
    from ..models.preprocessing import unnormalize
    from ..viz import grid_figure, layer_label, write_text_atomic

    model = load_model_quietly("efficientnet_lite0", None, device)
    names = model.cnnlens_meta.class_names
    available = all_methods()
    methods = [m for m in DEMO_METHODS if m in available]
    photos = ["chelsea", "coffee", "rocket", "motorcycle_left"]
    x = torch.cat([load_image(p, model) for p in photos])
    with torch.no_grad():
        probs = model(x).softmax(-1)
    summary = {"model": "efficientnet_lite0 (real ImageNet weights)", "images": {}}
    for p, pr in zip(photos, probs):
        v, i = pr.topk(3)
        top = [(names[j], float(q)) for q, j in zip(v.tolist(), i.tolist())]
        summary["images"][p] = [{"class": n, "probability": round(q, 4)} for n, q in top]
        click.echo(f"{p:16} " + ", ".join(f"{n} ({q:.2f})" for n, q in top))
    out = Path(out_dir)
    from ..report import ExplanationReport
    report = ExplanationReport(out, model="efficientnet_lite0", title="cnnlens demo")
    cells, signed = [[None] * len(methods) for _ in photos], [[False] * len(methods) for _ in photos]
    with click.progressbar(methods, label="methods", file=click.get_text_stream("stderr")) as bar:
        for c, m in enumerate(bar):
            e = cnnlens.explain(model, x, m, **DEMO_OPTIONS.get(m, {}))
            for r, p in enumerate(photos):
                report.add(p, unnormalize(x[r:r + 1], model)[0], e, index=r)
            for r in range(len(photos)):
                cells[r][c], signed[r][c] = e.heatmap[r], e.signed
    images = list(unnormalize(x, model))
    rows = [f"{p}\n{names[int(probs[r].argmax())]}" for r, p in enumerate(photos)]
    grid_figure(images, rows, methods, cells, out / "methods_x_images.png", signed=signed,
                title="cnnlens demo: efficientnet_lite0, top-1 class")
    # Two-object collage: explain each photo's class.
    collage, boxes = side_by_side("chelsea", "coffee")
    xc = load_image(collage, model, crop=False, size=(224, 448))
    cat_cls = int(probs[0].argmax())
    cup_cls = int(probs[1].argmax())
    cimg = unnormalize(xc, model)
    for cls in (cat_cls, cup_cls):
        row = [cnnlens.explain(model, xc, m, target=cls, **DEMO_OPTIONS.get(m, {})) for m in methods]
        report.add("collage", cimg[0], row, source="collage chelsea | coffee")
        grid_figure([cimg[0]], [names[cls]], methods, [[e.heatmap[0] for e in row]],
                    out / f"collage_{names[cls].replace(' ', '_')}.png", signed=[[e.signed for e in row]],
                    title=f"collage chelsea | coffee, target = {names[cls]}")
    # layers × methods at one post-activation layer per resolution (layer="stages"), rows labelled with the stride
    sweep = [m for m in SWEEP_METHODS if m in available]
    per_method = {m: cnnlens.explain(model, xc, m, target=cat_cls, layer="stages") for m in sweep}
    layers = list(next(iter(per_method.values())).keys())
    for m in sweep:
        report.add("collage", cimg[0], per_method[m])
    strides = {r.name: r.stride for r in cnnlens.explainable_layers(model, xc)}
    grid_figure([cimg[0]], [layer_label(lay, strides.get(lay)) for lay in layers], sweep,
                [[per_method[m][lay].heatmap[0] for m in sweep] for lay in layers],
                out / "layers_x_methods.png", title=f"stage layers × methods, target = {names[cat_cls]}")
    summary["figures"] = sorted(p.name for p in out.glob("*.png"))
    write_text_atomic(out / "demo.json", json.dumps(summary, indent=2))
    click.echo(f"wrote {len(summary['figures'])} figures to {out}/ and {report.write()}")
