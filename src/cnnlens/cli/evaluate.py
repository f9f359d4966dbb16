"""``cnnlens evaluate``: score explanation methods with faithfulness and localisation metrics (docs/evaluation.md)."""
from __future__ import annotations

import sys

import click

from . import main


def _parse_options(items: tuple[str, ...]) -> dict[str, dict]:
    """``METHOD:KEY=VALUE`` → {method: {key: value}} (values parsed as Python literals when possible)."""
    import ast

    from ..errors import InputError
    out: dict[str, dict] = {}
    for item in items:
        head, sep, value = item.partition("=")
        method, colon, key = head.partition(":")
        if not sep or not colon or not method or not key:
            raise InputError(f"--option expects METHOD:KEY=VALUE, got {item!r}")
        try:
            parsed = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            parsed = value
        out.setdefault(method.strip(), {})[key.strip()] = parsed
    return out


@main.command()
@click.option("--model", "model_name", required=True,
              help="synthetic-vgg, synthetic-resnet, or a model-zoo name (e.g. efficientnet_lite0, resnet50).")
@click.option("--weights", default=None, help="Weights file for a model-zoo architecture.")
@click.option("--data", "data", required=True, help="A folder of images with VOC/ImageNet XML boxes, 'synthetic' or "
              "'collage'.")
@click.option("--methods", default="all", show_default=True, help="Comma-separated method names, or 'all' "
              "(every registered method).")
@click.option("--metrics", default="all", show_default=True, help="Comma-separated metric names, or 'all'.")
@click.option("--layer", "layers", default=None, help="Layers for single-layer methods (CAMs): comma-separated, "
              "or 'blocks'. Default: each method's default layer.")
@click.option("--out", "out", required=True, type=click.Path(file_okay=False), help="Results folder (re-run to "
              "resume).")
@click.option("--n-images", type=int, default=None, help="Number of images (synthetic: 200, collage: 30, "
              "folder: all).")
@click.option("--label-file", type=click.Path(dir_okay=False), default=None,
              help="Class names, one per line in model-output order (or ImageNet 'wnid name' lines).")
@click.option("--clip-boxes", is_flag=True, help="Clip boxes that extend outside their image instead of failing.")
@click.option("--target", type=click.Choice(["label", "predicted"]), default="label", show_default=True)
@click.option("--batch-size", type=int, default=8, show_default=True)
@click.option("--step", type=int, default=None, help="Deletion/insertion pixels per step (default H·W/224).")
@click.option("--mask-space", type=click.Choice(["raw", "normalized"]), default="raw", show_default=True)
@click.option("--score", type=click.Choice(["softmax", "sigmoid", "logit"]), default="softmax", show_default=True)
@click.option("--signed", "signed_mode", type=click.Choice(["minmax", "relu"]), default="minmax", show_default=True)
@click.option("--deletion-substrate", type=click.Choice(["zero_normalized", "black", "blur"]),
              default="zero_normalized", show_default=True)
@click.option("--insertion-substrate", type=click.Choice(["blur", "zero_normalized"]), default="blur",
              show_default=True)
@click.option("--tolerance", type=float, default=15.0, show_default=True, help="Pointing-game tolerance in pixels "
              "of the original image.")
@click.option("--iou-rule", type=click.Choice(["frac_max", "mean_std", "otsu", "value"]), default="frac_max",
              show_default=True)
@click.option("--iou-threshold", type=float, default=0.2, show_default=True)
@click.option("--iou-kind", type=click.Choice(["pixel", "box"]), default="pixel", show_default=True)
@click.option("--option", "options", multiple=True, metavar="METHOD:KEY=VALUE", help="A method option "
              "(repeatable).")
@click.option("--skip-missing", is_flag=True, help="Drop listed methods that this installation does not have "
              "(with a warning) instead of failing.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", default="cpu", show_default=True)
@click.option("--no-plots", is_flag=True)
@click.option("--quiet", is_flag=True, help="No progress bar.")
def evaluate(model_name, weights, data, methods, metrics, layers, out, n_images, label_file, clip_boxes, target,
             batch_size, step, mask_space, score, signed_mode, deletion_substrate, insertion_substrate, tolerance,
             iou_rule, iou_threshold, iou_kind, options, skip_missing, seed, device, no_plots, quiet):
    """Evaluate explanation methods on a dataset with boxes; print and write the tables.

    \b
    Examples:
      cnnlens evaluate --model synthetic-resnet --data synthetic --methods grad-cam,grad-cam++ \\
          --layer layer2,layer4 --metrics average-drop-rcam,average-increase-rcam --out eval/rcam
      cnnlens evaluate --model efficientnet_lite0 --data collage --out eval/collage
      cnnlens evaluate --model resnet50 --weights r50.pth --data VOC2007/ --label-file voc.txt --out eval/voc
    """
    from ..evaluate import EvalConfig, evaluate as run_evaluation
    from ..evaluation_data import open_dataset, open_model
    if skip_missing and methods != "all":
        from ..methods import all_methods
        wanted = [m.strip() for m in methods.split(",") if m.strip()]
        have = all_methods()
        missing = [m for m in wanted if m not in have]
        if missing:
            click.echo(f"cnnlens: warning: skipping methods not available here: {', '.join(missing)}", err=True)
        methods = ",".join(m for m in wanted if m in have)
        if not methods:
            from ..errors import MethodError
            raise MethodError(f"none of the methods {', '.join(wanted)} is available here")
    model, name = open_model(model_name, weights, device=device, progress=not quiet)
    dataset = open_dataset(data, model, n_images=n_images, label_file=label_file, clip_boxes=clip_boxes, seed=seed)
    cfg = EvalConfig(target=target, batch_size=batch_size, score=score, mask_space=mask_space,
                     signed_mode=signed_mode, step=step, deletion_substrate=deletion_substrate,
                     insertion_substrate=insertion_substrate, tolerance=tolerance, iou_rule=iou_rule,
                     iou_threshold=iou_threshold, iou_kind=iou_kind, seed=seed)
    res = run_evaluation(model, dataset, methods, metrics, layers=layers, out=out, config=cfg,
                         method_options=_parse_options(options), progress=not quiet, plots=not no_plots,
                         model_name=name)
    click.echo(f"Conventions: {cfg.conventions()}")
    click.echo(res.table())
    click.echo(f"Wrote {out}/summary.md, summary.csv, summary.json, results.jsonl" +
               ("" if no_plots else " and plots"), err=True)
    click.echo(f"Wrote {__import__('cnnlens.report', fromlist=['write_report']).write_report(out)}", err=True)
    sys.stdout.flush()
