"""``cnnlens evaluate``: score explanation methods with faithfulness and localisation metrics (docs/evaluation.md)."""
from __future__ import annotations

import os
import signal
import sys
import time

import click

from . import main
from ..errors import CnnlensError, InputError
from ._common import WEIGHTS_HELP, composite_option, layers_option, methods_option, option_option

#: The default comparison (as cnnlens.evaluation.config.DEFAULT_METHODS / DEFAULT_METRICS, which import torch;
#: tests/test_evaluation_store.py checks they agree).
DEFAULT_METHODS = ("relevance-cam", "grad-cam", "grad-cam++", "score-cam")
DEFAULT_METRICS = ("average-drop", "increase", "average-drop-rcam", "average-increase-rcam", "energy-pointing-game")


def _parse_options(items: tuple[str, ...]) -> tuple[dict, dict[str, dict]]:
    """``[METHOD:]KEY=VALUE`` → (shared, {method: options}): every command's syntax (``_common.parse_options``)."""
    from ._common import parse_options
    return parse_options(items)


@main.command()
@click.option("--model", "model_name", required=True,
              help="synthetic-vgg, synthetic-resnet, synthetic-senet, or a model-zoo name (e.g. efficientnet_lite0, "
              "resnet50).")
@click.option("--weights", default=None, help="For a model-zoo name: " + WEIGHTS_HELP)
@click.option("--data", "data", required=True, help="A dataset path (folder, CSV manifest, ImageNet val, COCO, VOC, "
              "Hugging Face save_to_disk folder), 'synthetic' or 'collage'.")
@click.option("--format", "data_format", default=None, metavar="LAYOUT",
              help="The dataset layout: folder, imagefolder, csv, imagenet-loc, coco, voc or hf (default: detected).")
@click.option("--split", default=None, help="hf: the split of a saved DatasetDict (needed when it has several).")
@click.option("--image-column", default=None, help="hf: the image column (default: the one Image feature).")
@click.option("--label-column", default=None, help="hf: the label column (default: the one ClassLabel feature).")
@click.option("--class-map", default=None, help="Dataset class → model classes: a file of 'dataset_class: "
              "model_class, ...' lines, or voc-imagenet / coco-imagenet.")
@click.option("--workers", type=int, default=0, show_default=True, help="DataLoader processes decoding the images "
              "(0: decode in the main process).")
@click.option("--save-maps", type=int, default=50, show_default=True, help="Save the input and the maps of the first "
              "N images (out/images, out/maps) for the report; 0: none.")
@methods_option(None, "Method names (repeat or comma-separate; NAME@COMPOSITE for an LRP-based method with a "
                "composite), or 'all' (every registered method). Default: the seeds' comparison, "
                f"{','.join(DEFAULT_METHODS)}.")
@click.option("--metrics", default=None, help="Comma-separated metric names, or 'all' (adds deletion/insertion: "
              f"≈ 450 forwards per map at 224²). Default: {','.join(DEFAULT_METRICS)}.")
@layers_option("Layers for single-layer methods (CAMs): repeat or comma-separate, or 'blocks'. Default: each "
               "method's default layer.")
@click.option("--out", "out", required=True, type=click.Path(file_okay=False), help="Results folder (re-run the "
              "same command to resume; a folder holding results of other settings is refused).")
@click.option("--overwrite", is_flag=True, help="Replace the results in --out (of any settings) instead of resuming.")
@click.option("--n-images", type=int, default=None, help="Number of images (synthetic: 200, collage: 30, "
              "folder: all).")
@click.option("--label-file", type=click.Path(dir_okay=False), default=None,
              help="Class names, one per line in model-output order (or ImageNet 'wnid name' lines).")
@click.option("--clip-boxes", is_flag=True, help="Clip boxes that extend outside their image instead of failing.")
@click.option("--target", type=click.Choice(["label", "predicted"]), default="label", show_default=True,
              help="Explain each labelled class (boxes and labels needed) or the model's top-1 class.")
@click.option("--batch-size", type=int, default=8, show_default=True)
@click.option("--max-batch", type=int, default=None, help="Most inputs per forward of the perturbation metrics "
              "(deletion/insertion; default 64) and methods (Score-CAM, SISE, RISE: their max_batch); halved "
              "automatically on out-of-memory, and the size that fitted is kept for the rest of the run.")
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
@composite_option()
@option_option()
@click.option("--skip-missing", is_flag=True, help="Drop listed methods that this installation does not have "
              "(with a warning) instead of failing.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", default="cpu", show_default=True)
@click.option("--no-plots", is_flag=True)
@click.option("--quiet", is_flag=True, help="No progress bar.")
def evaluate(**params):
    """Evaluate explanation methods on a dataset; print and write the tables.

    \b
    Examples:
      cnnlens evaluate --model synthetic-resnet --data synthetic --methods grad-cam,grad-cam++ \\
          --layer layer2,layer4 --metrics average-drop-rcam,average-increase-rcam --out eval/rcam
      cnnlens evaluate --model efficientnet_lite0 --data collage --out eval/collage
      cnnlens evaluate --model resnet50 --weights r50.pth --data VOC2007/ --label-file voc.txt --out eval/voc
      cnnlens evaluate --model efficientnet_lite0 --format hf --data beans/ --split test --out eval/hf
      torchrun --nproc-per-node 2 -m cnnlens evaluate --model synthetic-vgg --data synthetic --out eval/ddp

    Ctrl-C (SIGINT) or SIGTERM stops after the current unit (a block of images × one method; exit 130 / 143), a
    second one stops at once; every finished unit is kept and the same command resumes.
    """
    # torchrun's rank from its environment (as evaluation.distributed.env_rank, which imports torch)
    main_rank = int(os.environ.get("RANK", 0)) == 0 if "WORLD_SIZE" in os.environ and "RANK" in os.environ else True
    from ._common import split_list
    params["methods"] = ",".join(dict.fromkeys(split_list(params["methods"])))   # --method(s), repeated or comma
    params["layers"] = ",".join(split_list(params["layers"])) or None
    composite = params.pop("composite")
    if composite is not None:                        # --composite C = --option composite=C (every method that has one)
        params["options"] = (*params["options"], f"composite={composite}")
    try:
        hf = {k: params.pop(k) for k in ("split", "image_column", "label_column")}
        _evaluate(main_rank=main_rank, hf=hf, **params)
    except CnnlensError as exc:
        dist_module = sys.modules.get("cnnlens.evaluation.distributed")     # not imported: an error before torch
        peer = dist_module is not None and isinstance(exc, dist_module.PeerFailed)
        on_main = not peer or getattr(exc, "print_on_main", False)
        if (main_rank and on_main) or getattr(exc, "cnnlens_local", False):
            click.echo(f"cnnlens: error: {exc}", err=True)
        sys.exit(2)
    finally:
        if "cnnlens.evaluation.distributed" in sys.modules:
            sys.modules["cnnlens.evaluation.distributed"].shutdown()


class StopNow(BaseException):
    """A second SIGINT / SIGTERM: stop at once (a BaseException, like KeyboardInterrupt, so that no ``except
    Exception`` of the loop holds it up). The unit in flight is dropped; finished units are on disk."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


class _StopOnSignal:
    """SIGINT / SIGTERM set a flag that the runner reads between units, and say so at once; the same signal again
    stops at once (:class:`StopNow`; the unit in flight is recomputed on resume). Under torchrun a repeat within 2 s
    is ignored: torchrun forwards the terminal's Ctrl-C to workers that already got it."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, say: bool = True):
        self.signum: int | None = None
        self.at = 0.0
        self.say = say
        self.debounce = 2.0 if "WORLD_SIZE" in os.environ else 0.0       # torchrun forwards repeats
        self.previous = {}

    def is_set(self) -> bool:
        return self.signum is not None

    def __call__(self, signum, frame) -> None:
        if self.signum is None:
            self.signum, self.at = signum, time.monotonic()
            if self.say:
                again = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
                _say(f"{signal.Signals(signum).name}: stopping after the current unit (every finished unit is "
                     f"kept); {again} again to stop now")
        elif time.monotonic() - self.at >= self.debounce:
            raise StopNow(signum)

    def __enter__(self):
        for s in self.SIGNALS:
            self.previous[s] = signal.signal(s, self)
        return self

    def __exit__(self, *exc):
        for s, h in self.previous.items():
            signal.signal(s, h)


def _say(line: str) -> None:
    """One line on stderr, above the progress bar if one is drawn (never glued to its end)."""
    from tqdm import tqdm
    tqdm.write(f"cnnlens: {line}", file=sys.stderr)
    sys.stderr.flush()


def _silent(line: str) -> None:
    pass


def _open_model_once(dist, model_name, weights, device, progress):
    """Rank 0 opens the model first (a synthetic model trains and is cached once, missing weights are downloaded
    once), then the other ranks. The model's warnings (weights="random") become one line on rank 0's stderr."""
    import warnings
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        opened = _open_model_ranked(dist, model_name, weights, device, progress)
    if not dist.active or dist.is_main:
        for w in caught:
            if issubclass(w.category, UserWarning):
                click.echo(f"cnnlens: warning: {w.message}", err=True)
    return opened


def _open_model_ranked(dist, model_name, weights, device, progress):
    from ..evaluation import PeerFailed, open_model
    from ..evaluation.distributed import ERROR, OK
    if not dist.active:
        return open_model(model_name, weights, device=device, progress=progress)
    opened, error = None, None
    if dist.is_main:
        try:
            opened = open_model(model_name, weights, device=device, progress=progress)
        except CnnlensError as exc:
            error = exc
    if dist.max(ERROR if error is not None else OK) != OK:
        if error is not None:
            raise error
        raise PeerFailed("rank 0 could not open the model")
    return opened if opened is not None else open_model(model_name, weights, device=device, progress=False)


def _check_before_torch(*, model_name, data, data_format, class_map, label_file, methods, metrics, n_images, step,
                        skip_missing, weights=None) -> None:
    """The checks that need no model, done before torch is imported: names, paths, counts (one line, exit 2)."""
    from pathlib import Path

    from ._common import check_method_names, check_metric_names, check_model_name
    check_model_name(model_name, weights)
    if n_images is not None and n_images < 1:
        raise InputError(f"empty dataset: --n-images must be at least 1, got {n_images}")
    if step is not None and step < 1:
        raise InputError(f"--step must be at least 1, got {step}")
    builtin = (data in ("synthetic", "collage")) and data_format is None
    if not builtin and not Path(data).exists():
        raise InputError(f"--data must be 'synthetic', 'collage' or an existing folder or file, got {data!r}")
    if class_map is not None:
        maps = Path(__file__).resolve().parents[1] / "data" / "layouts" / "classmaps"
        names = sorted(p.stem for p in maps.glob("*.txt"))
        if class_map not in names and not Path(class_map).is_file():
            from ..errors import suggest
            raise InputError(f"unknown class map {class_map!r}: neither a file nor one of the built-in maps "
                             f"{', '.join(names)}.{suggest(class_map, names)}".rstrip("."))
    if label_file is not None and not Path(label_file).is_file():
        raise InputError(f"label file not found: {label_file}")
    if methods.strip() != "all" and not skip_missing:
        check_method_names([m.strip() for m in methods.split(",") if m.strip()])
    check_metric_names(metrics)


def _evaluate(*, hf, model_name, weights, data, data_format, class_map, workers, save_maps, methods, metrics, layers,
              out, overwrite, n_images, label_file, clip_boxes, target, batch_size, step, mask_space, score, signed_mode,
              deletion_substrate, insertion_substrate, tolerance, iou_rule, iou_threshold, iou_kind, options,
              skip_missing, seed, device, no_plots, quiet, main_rank, max_batch=None):
    if workers < 0:
        raise InputError(f"--workers must be 0 or more, got {workers}")
    if save_maps < 0:
        raise InputError(f"--save-maps must be 0 or more, got {save_maps}")
    if batch_size < 1:
        raise InputError(f"--batch-size must be at least 1, got {batch_size}")
    if max_batch is not None and max_batch < 1:
        raise InputError(f"--max-batch must be at least 1, got {max_batch}")
    formats = ("folder", "imagefolder", "csv", "imagenet-loc", "coco", "voc", "hf")
    if data_format is not None and data_format not in formats:
        raise InputError(f"--format must be one of {', '.join(formats)}, got {data_format!r}")
    methods = methods or ",".join(DEFAULT_METHODS)
    metrics = metrics or ",".join(DEFAULT_METRICS)
    _check_before_torch(model_name=model_name, data=data, data_format=data_format, class_map=class_map,
                        label_file=label_file, methods=methods, metrics=metrics, n_images=n_images, step=step,
                        skip_missing=skip_missing, weights=weights)
    given = [f"--{k.replace('_', '-')}" for k, v in hf.items() if v is not None]
    if given and data_format not in (None, "hf"):
        raise InputError(f"{', '.join(given)} applies to --format hf (Hugging Face datasets) only")
    if data_format == "hf" or given:
        import importlib.util
        if importlib.util.find_spec("datasets") is None:
            raise InputError("the hf layout needs the Hugging Face datasets package: pip install 'cnnlens[hf]'")
    shared, per = _parse_options(options)
    from ._common import check_device
    check_device(device)
    from ..evaluation import EvalConfig, Interrupted, evaluate as run_evaluation, open_dataset
    from ..evaluation.distributed import init_from_env
    if skip_missing and methods != "all":
        from ..methods import all_methods
        wanted = [m.strip() for m in methods.split(",") if m.strip()]
        have = all_methods()
        missing = [m for m in wanted if m.partition("@")[0] not in have]
        if missing and main_rank:
            click.echo(f"cnnlens: warning: skipping methods not available here: {', '.join(missing)}", err=True)
        methods = ",".join(m for m in wanted if m.partition("@")[0] in have)
        if not methods:
            from ..errors import MethodError
            raise MethodError(f"none of the methods {', '.join(wanted)} is available here")
    from ._common import method_options as options_of_methods
    from ..methods import all_methods
    wanted = list(all_methods()) if methods.strip() == "all" else [m.strip() for m in methods.split(",") if m.strip()]
    method_options = options_of_methods(wanted, shared, per)
    if max_batch is not None:                    # --max-batch: every method with a max_batch that sets none itself
        from ..methods import get_method
        for m, opts in method_options.items():
            if "max_batch" in get_method(m).option_names():
                opts.setdefault("max_batch", max_batch)
    dist, device = init_from_env(device)
    model, name = _open_model_once(dist, model_name, weights, device, progress=not quiet and main_rank)
    dataset = open_dataset(data, model, format=data_format, n_images=n_images, label_file=label_file,
                           class_map=class_map, clip_boxes=clip_boxes, seed=seed, **hf)
    cfg = EvalConfig(target=target, batch_size=batch_size, score=score, mask_space=mask_space,
                     signed_mode=signed_mode, step=step, deletion_substrate=deletion_substrate,
                     insertion_substrate=insertion_substrate, tolerance=tolerance, iou_rule=iou_rule,
                     iou_threshold=iou_threshold, iou_kind=iou_kind, seed=seed,
                     **({} if max_batch is None else {"perturbation_batch": max_batch}))
    try:
        with _StopOnSignal(say=main_rank) as stop:
            res = run_evaluation(model, dataset, methods, metrics, layers=layers, out=out, config=cfg,
                                 method_options=method_options, progress=not quiet, plots=not no_plots,
                                 model_name=name, workers=workers, save_maps=save_maps, stop=stop,
                                 overwrite=overwrite, announce=_say if dist.is_main and not quiet else _silent)
    except Interrupted as exc:
        signum = exc.signum or signal.SIGINT
        if dist.is_main:
            click.echo(f"cnnlens: interrupted by {signal.Signals(signum).name} after the current unit; every finished "
                       f"unit is in {out}; run the same command again to resume", err=True)
        sys.stdout.flush()
        sys.exit(128 + signum)
    except StopNow as exc:
        if dist.is_main:
            click.echo(f"cnnlens: stopped at once by a second {signal.Signals(exc.signum).name}; the unit in flight "
                       f"is dropped, every finished unit is in {out}; run the same command again to resume", err=True)
        sys.stdout.flush()
        sys.exit(128 + exc.signum)
    if not dist.is_main:
        return
    click.echo(f"Conventions: {cfg.conventions()}")
    from ..evaluation.tables import skipped_line
    line = skipped_line(res.skipped, res.unreadable)
    if line:                                     # nothing when no image was skipped ({reason: 0, ...} included)
        click.echo(line)
    click.echo(res.table())
    click.echo(f"Wrote {out}/summary.md, summary.csv, summary.json, results.jsonl" +
               ("" if no_plots else " and plots"), err=True)
    from ..report import write_report          # rank 0 only: the other ranks returned above
    click.echo(f"Wrote {write_report(out)}", err=True)
    sys.stdout.flush()
