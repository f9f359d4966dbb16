"""``cnnlens explain``, ``cnnlens layers`` and ``cnnlens methods``."""
from __future__ import annotations

import json
from pathlib import Path

import click

from . import main
from ._common import (WEIGHTS_HELP, check_device, checked_methods, check_model_name, composite_option, layer_argument,
                      layers_option, load_model_quietly, method_options, methods_option, option_option, parse_options,
                      parse_target, progress, read_images, split_list)


def _safe_stem(path: str, index: int, seen: set[str]) -> str:
    stem = Path(path).stem or f"image{index}"
    stem = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in stem)
    base, k = stem, 1
    while stem in seen:
        k += 1
        stem = f"{base}_{k}"
    seen.add(stem)
    return stem


@main.command("explain")
@click.argument("images", nargs=-1, required=True)
@click.option("--model", "model_name", required=True, help="Model name (cnnlens layers lists layers of one).")
@click.option("--weights", type=str, default=None, help=WEIGHTS_HELP)
@methods_option("grad-cam", "Method(s): repeat or comma-separate; NAME@COMPOSITE for an LRP-based method with a "
                "composite (see `cnnlens methods`).")
@layers_option("Layer (module name): repeat or comma-separate for several, or 'blocks' / 'stages'.")
@click.option("--target", default=None, help="Class index or class name (default: each image's top-1 class).")
@composite_option()
@option_option()
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Output folder.")
@click.option("--device", default="cpu", show_default=True, help="cpu or cuda.")
@click.option("--no-crop", is_flag=True, help="Resize the whole image instead of resize + centre crop.")
def explain_cmd(images, model_name, weights, methods, layers, target, composite, options, out_dir, device, no_crop):
    """Explain IMAGE... (paths or sample names such as chelsea) and write a PNG per image and method,
    explanations.json and report.html.

    \b
    Examples:
      cnnlens explain chelsea coffee --model efficientnet_lite0 --method grad-cam --out out/
      cnnlens explain cat.jpg --model resnet50 --weights r50.pth --method relevance-cam --layer layer2 --out out/
      cnnlens explain cat.jpg --model vgg16 --weights vgg16.pth --method sglrp --composite dtd --out out/
      cnnlens explain chelsea --model efficientnet_lite0 --methods grad-cam,score-cam --option fast_forward=false \\
          --out out/
    """
    check_model_name(model_name, weights)         # the model, weights, options and every image: before torch
    device = check_device(device)
    shared, per = parse_options(options)
    method_list = checked_methods(methods, "--method")
    rgbs = read_images(images)
    import torch

    import cnnlens
    from ..data.images import load_image
    from ..models.preprocessing import unnormalize
    from ..viz import grid_figure, overlay_figure, write_text_atomic

    opts_of = method_options(method_list, shared, per, composite)
    layer_arg = layer_argument(split_list(layers))
    model, print_warnings = load_model_quietly(model_name, weights, device, defer=True)
    # Everything is computed before anything is written: a failure leaves no partial output.
    xs = [load_image(rgb, model, crop=not no_crop) for rgb in rgbs]
    tgt = parse_target(target)
    results = []
    for method in method_list:
        for src, x in progress(zip(images, xs), len(xs), method, len(xs) > 1):
            res = cnnlens.explain(model, x, method, target=tgt, layer=layer_arg, **opts_of[method])
            results.append((method, src, x, res))
    print_warnings()
    out = Path(out_dir)
    records, seen, stems = [], set(), {}
    names = model.cnnlens_meta.class_names
    from ..report import ExplanationReport
    report = ExplanationReport(out, model=model_name, title="cnnlens explain")
    for i, (method, src, x, res) in enumerate(results):
        key = i % len(xs)
        if key not in stems:
            stems[key] = _safe_stem(src, key, seen)
        stem = stems[key]
        img = unnormalize(x, model)[0]
        report.add(stem, img, res, source=str(src))
        per_layer = res if isinstance(res, dict) else {None: res}
        first = next(iter(per_layer.values()))
        probs = torch.softmax(first.logits.float(), -1)[0] if first.logits is not None else None
        t = int(first.target[0])
        png = out / f"{stem}_{method}.png"
        if first.method == "sr-map":
            from ..viz.sr_map import sr_map_figure
            sr_map_figure(img, first, png)
        elif len(per_layer) == 1:
            title = f"{method} · {names[t] if names else t}" + (f" · {first.layer}" if first.layer else "")
            overlay_figure(img, first.heatmap[0], png, signed=first.signed, title=title)
        else:
            grid_figure([img], [names[t] if names else str(t)], [str(k) for k in per_layer],
                        [[e.heatmap[0] for e in per_layer.values()]], png,
                        signed=[[e.signed for e in per_layer.values()]], title=method)
        top = []
        if probs is not None:
            v, idx = probs.topk(min(5, probs.numel()))
            top = [{"class": int(j), "name": names[j] if names else str(int(j)), "probability": float(p)}
                   for p, j in zip(v.tolist(), idx.tolist())]
        records.append({"image": str(src), "figure": png.name, "method": method,
                        "layer": [str(k) for k in per_layer] if len(per_layer) > 1 else first.layer,
                        "target": t, "target_name": names[t] if names else None,
                        "score": float(probs[t]) if probs is not None else None,
                        "logit": float(first.logits[0, t]) if first.logits is not None else None,
                        "top5": top, "model": model_name, "options": opts_of[method]})
        click.echo(f"{src}: {method} → {png}  (target {t} {names[t] if names else ''}"
                   + (f", p={float(probs[t]):.3f}" if probs is not None else "") + ")")
    write_text_atomic(out / "explanations.json", json.dumps(records, indent=2))
    click.echo(f"wrote {len(records)} figure(s), {out / 'explanations.json'} and {report.write()}")


@main.command("layers")
@click.option("--model", "model_name", required=True, help="Model name.")
@click.option("--weights", type=str, default=None, help=WEIGHTS_HELP)
@click.option("--all", "show_all", is_flag=True, help="Also list modules without a spatial output.")
def layers_cmd(model_name, weights, show_all):
    """List a model's layers: output shape, stride, stage (spatial resolution), block, and whether the output has
    passed an activation; marks the default CAM layer (*), the block layers (B: layer='blocks', SISE) and the stage
    layers (S: layer='stages').

    \b
    output: activation      passed a non-linearity (ReLU, ReLU6, SiLU, GELU, Hardswish, fused BN+activation, ...)
            pre-activation  linear, but only per-channel ops (BatchNorm, sums, pooling) lead to an activation
            linear          linear, and the next op mixes channels (a linear bottleneck), or nothing follows
    Example:
      cnnlens layers --model resnet50
    """
    check_model_name(model_name, weights)         # an unknown name or file: one line, before torch is loaded
    from ..models.layers import block_layers, report_from_records, stage_layers, trace_layers
    model, print_warnings = load_model_quietly(model_name, weights, "cpu", defer=True)
    recs = trace_layers(model)
    report = report_from_records(model, recs)
    blocks, stages = block_layers(model, recs), set(stage_layers(model, recs))
    print_warnings()
    default = blocks[-1]
    order = {r.name: r.start for r in recs}
    click.echo(f"{'mark':5} {'layer':36} {'type':22} {'output shape':16} {'stride':>6} {'stage':>5}  "
               f"{'block':20} {'output':15} calls")
    for r in sorted(report, key=lambda r: order.get(r.name, 0)):
        spatial = len(r.shape) == 3 and r.shape[1] * r.shape[2] > 1
        if not show_all and not spatial:
            continue
        mark = ("*" if r.name == default else " ") + ("B" if r.name in blocks else " ") + \
            ("S" if r.name in stages else " ")
        click.echo(f"{mark:5} {r.name:36} {r.type:22} {str(r.shape):16} {r.stride or '':>6} {r.stage or '':>5}  "
                   f"{r.block or '':20} {r.activation:15} {r.calls}")
    click.echo("* default CAM layer   B block layer (layer='blocks', SISE)   S stage layer (layer='stages')   "
               "calls>1: reused module")


@main.command("methods")
def methods_cmd():
    """List the methods (and LRP composites) with one-line descriptions."""
    from ..methods import all_methods
    for name, spec in all_methods().items():
        opts = ", ".join(spec.option_names())
        click.echo(f"{name:16} {spec.description}")
        if opts:
            click.echo(f"{'':16}   options: {opts}")
    try:
        from ..lrp import COMPOSITES  # type: ignore[attr-defined]
    except ImportError:
        COMPOSITES = {}
    if COMPOSITES:
        click.echo("\nLRP composites (--composite NAME):")
        for name, desc in COMPOSITES.items():
            click.echo(f"  {name:28} {desc}")
