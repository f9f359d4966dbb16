"""``cnnlens sweep``: the layers × methods grid (the Relevance-CAM paper's main figure)."""
from __future__ import annotations

import json
from pathlib import Path

import click

from ..errors import InputError, MethodError
from . import main
from ._common import (WEIGHTS_HELP, check_device, checked_methods, check_model_name, composite_option, layers_option,
                      load_model_quietly, method_options, methods_option, option_option, parse_options, parse_target,
                      read_images, split_list)


@main.command("sweep")
@click.argument("image")
@click.option("--model", "model_name", required=True, help="Model name.")
@click.option("--weights", type=str, default=None, help=WEIGHTS_HELP)
@methods_option("relevance-cam,grad-cam", "Layer methods (columns): repeat or comma-separate.")
@layers_option("Module names (rows): repeat or comma-separate; 'blocks' (one layer per block) or 'stages' (one "
               "post-activation layer per resolution); `cnnlens layers` lists them.", default="blocks")
@click.option("--target", default=None, help="Class index or name (default: top-1).")
@composite_option()
@option_option()
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Output folder.")
@click.option("--device", default="cpu", show_default=True, help="cpu or cuda.")
def sweep_cmd(image, model_name, weights, methods, layers, target, composite, options, out_dir, device):
    """Explain IMAGE at several depths with several methods; write sweep_<image>.png and sweep_<image>.json.

    Methods that support it (Relevance-CAM, the gradient CAMs) compute all layers from one forward and one backward.

    \b
    Examples:
      cnnlens sweep chelsea --model efficientnet_lite0 --out sweep/
      cnnlens sweep cat.jpg --model resnet50 --weights r50.pth --layers layer1,layer2,layer3,layer4 \\
          --methods relevance-cam,grad-cam,grad-cam++,score-cam --out sweep/
    """
    check_model_name(model_name, weights)         # the model, weights, options and the image: before torch
    device = check_device(device)
    shared, per = parse_options(options)
    method_list = checked_methods(methods, "--methods")
    layer_list = split_list(layers)
    if not layer_list:
        raise InputError("--layers is empty")
    rgb = read_images([image])[0]
    import cnnlens
    from ..data.images import load_image
    from ..methods import get_method
    from ..models.preprocessing import unnormalize
    from ..viz import grid_figure, layer_label, write_text_atomic

    for m in method_list:
        if get_method(m).layers != "single":
            raise MethodError(f"method {m!r} does not take a layer, so it cannot be swept over layers")
    opts_of = method_options(method_list, shared, per, composite)
    layer_arg = layer_list[0] if layer_list in (["blocks"], ["stages"]) else layer_list
    model, print_warnings = load_model_quietly(model_name, weights, device, defer=True)
    x = load_image(rgb, model)
    tgt = parse_target(target)
    per_method = {m: cnnlens.explain(model, x, m, target=tgt, layer=layer_arg, **opts_of[m]) for m in method_list}
    print_warnings()
    names = model.cnnlens_meta.class_names
    rows = list(next(iter(per_method.values())).keys())
    first = per_method[method_list[0]][rows[0]]
    t = int(first.target[0])
    label = names[t] if names else str(t)
    stem = "".join(c if c.isalnum() or c in "-_." else "_" for c in Path(image).stem) or "image"
    out = Path(out_dir)
    img = unnormalize(x, model)[0]
    strides = {r.name: r.stride for r in cnnlens.explainable_layers(model, x)}
    png = grid_figure([img], [layer_label(r, strides.get(r)) for r in rows], method_list, [[per_method[m][r].heatmap[0] for m in method_list] for r in rows],
                      out / f"sweep_{stem}.png", signed=[[per_method[m][r].signed for m in method_list] for r in rows],
                      title=f"{model_name}: target {label}")
    write_text_atomic(out / f"sweep_{stem}.json", json.dumps(
        {"image": image, "model": model_name, "target": t, "target_name": label, "layers": rows,
         "methods": method_list, "options": opts_of, "figure": png.name}, indent=2))
    from ..report import ExplanationReport
    report = ExplanationReport(out, model=model_name, title="cnnlens sweep")
    for m in method_list:
        report.add(stem, img, per_method[m], source=image)
    click.echo(f"{image}: {len(rows)} layers × {len(method_list)} methods → {png}, {report.write()}")
