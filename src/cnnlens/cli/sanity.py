"""``cnnlens sanity``: model- and data-randomisation sanity checks (Adebayo et al. 2018) for several methods."""
from __future__ import annotations

import shlex

import click

from . import main
from ._common import (WEIGHTS_HELP, check_device, composite_option, layers_option, load_model_quietly,
                      method_options, methods_option, option_option, parse_options, parse_target, split_list)


def _entries(methods, composite, options):
    from ..errors import MethodError
    from ..methods import all_methods
    from ..sanity.runner import parse_method
    names = list(dict.fromkeys(split_list(methods)))
    if names == ["all"]:
        names = list(all_methods())
    if not names:
        raise MethodError("--methods is empty")
    shared, per = parse_options(options)
    opts_of = method_options(names, shared, per, composite)
    return [parse_method(n, opts_of[n]) for n in names]


def _load(model_name: str, weights, device: str, progress: bool):
    """(model, print_warnings, synthetic arch or None)."""
    if model_name.startswith("synthetic-"):
        from ..evaluation.models import open_model
        model, _ = open_model(model_name, weights, device=device, progress=progress)
        return model, (lambda: None), model_name[len("synthetic-"):]
    model, print_warnings = load_model_quietly(model_name, weights, device, defer=True, progress=progress)
    return model, print_warnings, None


def _twin(model, arch, path, device, progress: bool):
    import torch

    from ..data.synthetic import synthetic_model
    from ..models.zoo import load_state_dict_strict, safe_load_state_dict
    if arch is not None:
        if path is not None:
            from ..errors import ModelError
            raise ModelError("synthetic models train their random-label twin themselves; drop --random-label-weights")
        return synthetic_model(arch, label_permutation_seed=0, progress=progress).to(device)
    import copy
    twin = copy.deepcopy(model)
    load_state_dict_strict(twin, safe_load_state_dict(path), str(path))
    twin.eval()
    return twin.to(torch.device(device))


RANDOM_INIT_NOTE = "random init — verdicts describe an untrained model"


def _command_line(ctx: click.Context) -> str:
    """The command as the user gave it, whatever the entry point (``cnnlens``, ``python -m cnnlens``, click's test
    runner): ``cnnlens <command>`` with the arguments and every option set on the command line, in declaration
    order."""
    words = ["cnnlens", ctx.info_name or "sanity"]
    from click.core import ParameterSource
    for param in ctx.command.params:
        if param.name is None or ctx.get_parameter_source(param.name) != ParameterSource.COMMANDLINE:
            continue
        value = ctx.params.get(param.name)
        if isinstance(param, click.Argument):
            words += [str(v) for v in (value if isinstance(value, (list, tuple)) else [value])]
            continue
        flag = max(param.opts, key=len)
        if getattr(param, "is_flag", False):
            if value:
                words.append(flag)
        else:
            for v in (value if getattr(param, "multiple", False) else [value]):
                words += [flag, str(v)]
    return " ".join(shlex.quote(w) for w in words)


def _check_before_torch(images, model_name: str, methods, options, layers,
                        weights: str | None = None) -> str | None:
    """Image paths, the model name and weights, the method names and the option syntax, checked before torch is
    imported (one line, exit 2). Returns the one layer (or None)."""
    from ..errors import InputError
    from ..image_files import check_image_source
    from ._common import check_method_names, check_model_name
    for src in images:
        check_image_source(src)
    check_model_name(model_name, weights)
    names = split_list(methods)
    if names != ["all"]:
        check_method_names(names)
    parse_options(options)
    layer_list = split_list(layers)
    if len(layer_list) > 1 or layer_list in (["blocks"], ["stages"]):
        raise InputError(f"sanity compares one layer per method, the same for every randomised model; got "
                         f"--layer {','.join(layer_list)}")
    return layer_list[0] if layer_list else None


@main.command("sanity")
@click.argument("images", nargs=-1, required=True)
@click.option("--model", "model_name", required=True,
              help="Model name (a zoo name, synthetic-vgg, synthetic-resnet or synthetic-senet).")
@click.option("--weights", type=str, default=None, help=WEIGHTS_HELP)
@methods_option("grad-cam", "Methods: repeat or comma-separate ('all' = every method); NAME@COMPOSITE picks an LRP "
                "composite.")
@click.option("--mode", type=click.Choice(["cascade", "independent", "data", "all"]), default="cascade",
              show_default=True, help="Randomisation test; 'all' runs the three.")
@layers_option("Layer for CAMs (default: the model's default CAM layer), the same for every randomised model.")
@click.option("--target", default=None, help="Class index or name (default: each image's top-1 on the trained model).")
@click.option("--blocks", default=None, help="Comma-separated randomisation blocks in forward order, each a module "
                                             "name or names joined by + (e.g. conv1+bn1,layer1,fc); default: the "
                                             "model's top-level blocks.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the re-initialisation.")
@click.option("--threshold", type=float, default=0.5, show_default=True,
              help="A method fails when its mean max(ρ, ρ_abs) after full randomisation is at least this.")
@click.option("--random-label-weights", "random_label_weights", default=None,
              help="State dict of the same architecture trained on permuted labels (mode data).")
@composite_option()
@option_option()
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Output folder.")
@click.option("--device", default="cpu", show_default=True, help="cpu or cuda.")
@click.option("--no-crop", is_flag=True, help="Resize the whole image instead of resize + centre crop.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def sanity_cmd(images, model_name, weights, methods, mode, layers, target, blocks, seed, threshold,
               random_label_weights, composite, options, out_dir, device, no_crop, quiet):
    """Do the methods' maps depend on the model? Randomise the model (cascading / independent) or its training
    labels (data) and compare every map with the trained model's; write sanity.json, summary.md and figures.

    \b
    Examples:
      cnnlens sanity chelsea coffee --model efficientnet_lite0 --methods grad-cam,lrp@epsilon-plus --out sanity/
      cnnlens sanity cat.jpg --model resnet50 --weights r50.pth --random-label-weights r50_random.pth \\
          --methods grad-cam,relevance-cam --mode all --out sanity/
    """
    layer = _check_before_torch(images, model_name, methods, options, layers, weights)
    import torch

    from ..data.images import load_image
    from ..errors import InputError
    from ..models.preprocessing import unnormalize
    from ..sanity.report import write_outputs
    from ..sanity.runner import run_sanity

    device = check_device(device)
    entries = _entries(methods, composite, options)
    modes = ["cascade", "independent", "data"] if mode == "all" else [mode]
    if random_label_weights is not None and "data" not in modes:
        raise InputError("--random-label-weights is used by --mode data or all only")
    block_names = [b.strip() for b in blocks.split(",") if b.strip()] if blocks is not None else None
    model, print_warnings, arch = _load(model_name, weights, device, not quiet)
    if "data" in modes and arch is None and random_label_weights is None:
        raise InputError(f"--mode {mode} needs --random-label-weights FILE: the same architecture trained on "
                         f"permuted labels (cnnlens trains that twin itself only for the synthetic nets)")
    twin = _twin(model, arch, random_label_weights, device, not quiet) if "data" in modes else None
    xs = [load_image(src, model, crop=not no_crop) for src in images]
    x = torch.cat(xs)
    report = run_sanity(model, x, entries, target=parse_target(target), layer=layer, modes=modes, seed=seed,
                        blocks=block_names, random_label_model=twin, threshold=threshold, progress=not quiet)
    print_warnings()
    imgs = [unnormalize(xi, model)[0] for xi in xs]
    meta = getattr(model, "cnnlens_meta", None)
    names = getattr(meta, "class_names", None)
    command = _command_line(click.get_current_context())
    random_init = arch is None and getattr(meta, "pretrained", True) is False      # zoo model without weights
    written = write_outputs(report, out_dir, imgs, list(images), model_name=model_name, class_names=names,
                            command=command, weights_note=RANDOM_INIT_NOTE if random_init else None)
    for label, per in report.verdicts().items():
        for test, v in per.items():
            stat = "—" if v["statistic"] is None else f"{v['statistic']:.2f}"
            click.echo(f"{label:28} {test:8} {v['verdict']:12} mean max(ρ, ρ_abs) = {stat} (threshold {threshold:g})")
    click.echo(f"wrote {len(written)} file(s) to {out_dir}")
