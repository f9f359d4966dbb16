"""The architectures of issue 18 (torchvision and timm CNN families, random init) and one check per method, shared by
``tests/test_architectures.py`` and ``benchmarks/architecture_table.py`` (which writes the README's table from the same
checks).

Every check returns a short note and raises on failure: a method must run, give finite maps that are not constant,
and ``layer="stages"`` must give ≥ 3 layers, each post-activation (``cnnlens.explainable_layers``; DenseNet's
stage outputs are pre-activations, README §layers); the conservation check zeroes every bias and BatchNorm shift and
runs composite ``dtd`` in float64: Σ input relevance = target logit within 1e-3 relative (lrp_modern_layers.md §7).
"""
from __future__ import annotations

import warnings
from typing import Callable

import torch
from torch import nn

#: issue 18 item 2, in the issue's order
TORCHVISION = ("alexnet vgg16 vgg16_bn resnet50 resnext50_32x4d wide_resnet50_2 densenet121 squeezenet1_1 googlenet "
               "inception_v3 mobilenet_v2 mobilenet_v3_large mnasnet1_0 shufflenet_v2_x1_0 efficientnet_b0 "
               "efficientnet_v2_s regnet_y_400mf regnet_x_400mf convnext_tiny").split()
TIMM = ("resnet50d seresnext26d_32x4d efficientnet_b0 mobilenetv3_large_100 ghostnet_100 convnext_nano regnety_008 "
        "res2net50_26w_4s cspresnet50 dla34 mixnet_s hrnet_w18_small rexnet_100 efficientnetv2_rw_t vgg11_bn").split()
FULL = [f"torchvision:{n}" for n in TORCHVISION] + [f"timm:{n}" for n in TIMM]

#: cheap members of the same families for the default test tier (small widths / small nets, 64 px): channels-last
#: LayerNorm + GELU + layer scale + stochastic depth (ConvNeXt), channel shuffle and split (ShuffleNetV2), squeeze-
#: excitation with Hardswish (MobileNetV3), split-and-concatenate stages (CSPNet)
TINY = ["torchvision:convnext_mini", "torchvision:shufflenet_v2_x0_5", "timm:mobilenetv3_small_050",
        "timm:cspresnet_mini"]

METHODS = ("lrp", "sglrp", "relevance-cam", "sise", "sr-map")
CHECKS = METHODS + ("conservation",)
#: DenseNet's stage outputs are the concatenated block outputs that a BatchNorm + ReLU follows (pre-activations)
PRE_ACTIVATION_STAGES = {"torchvision:densenet121"}


def input_size(name: str, default: int = 128) -> int:
    """Inception-v3 needs ≥ 75 px; 128 px everywhere by default."""
    return max(default, 96) if name.endswith("inception_v3") else default


def build(name: str) -> nn.Module:
    """A random-init model in eval mode (seed 0). ``torchvision:NAME`` / ``timm:NAME``; two tiny constructions:
    ``torchvision:convnext_mini`` (torchvision's ConvNeXt class, widths 16/32/64, one block per stage, layer scale
    0.5, stochastic depth 0.1) and ``timm:cspresnet_mini`` (timm's CspNet, one bottleneck per stage)."""
    source, arch = name.split(":", 1)
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if source == "torchvision":
            import torchvision
            if arch == "convnext_mini":
                from torchvision.models.convnext import CNBlockConfig, ConvNeXt
                cfg = [CNBlockConfig(16, 32, 1), CNBlockConfig(32, 64, 1), CNBlockConfig(64, None, 1)]
                model = ConvNeXt(cfg, stochastic_depth_prob=0.1, layer_scale=0.5, num_classes=10)
            else:
                # torchvision's own init of GoogLeNet / Inception-v3 (truncated normal, σ = 0.1) with unit BatchNorm
                # statistics gives logits ~1e10 at random init (a saturated softmax; SGLRP handles it); PyTorch's
                # default init keeps them O(1), as trained nets are
                kwargs = {"init_weights": False, "aux_logits": False} if arch in ("googlenet", "inception_v3") else {}
                model = getattr(torchvision.models, arch)(**kwargs)
        elif source == "timm":
            import timm
            if arch == "cspresnet_mini":
                from timm.models.cspnet import CspModelCfg, CspNet, CspStagesCfg, CspStemCfg
                cfg = CspModelCfg(stem=CspStemCfg(out_chs=16, kernel_size=7, stride=4, pool="max"),
                                  stages=CspStagesCfg(depth=(1, 1, 1), out_chs=(32, 64, 128), stride=(1, 2, 2),
                                                      expand_ratio=2.0, bottle_ratio=0.5, cross_linear=True),
                                  zero_init_last=False)
                model = CspNet(cfg, num_classes=10)
            else:
                model = timm.create_model(arch, pretrained=False)
        else:
            raise ValueError(f"unknown source {source!r}")
    return model.eval()


def _finite_varying(maps: dict) -> None:
    for layer, e in maps.items():
        h = e.heatmap
        assert torch.isfinite(h).all(), f"{layer}: non-finite map"
        spread = (h.reshape(h.shape[0], -1).amax(1) - h.reshape(h.shape[0], -1).amin(1))
        assert bool((spread > 1e-6).all()), f"{layer}: constant map"
        assert torch.isfinite(e.raw).all(), f"{layer}: non-finite raw map"


def check_stages(name: str, model: nn.Module, x: torch.Tensor) -> list[str]:
    """≥ 3 stage layers, each post-activation (DenseNet: pre-activation), as ``explainable_layers`` reports them."""
    import cnnlens
    from cnnlens.models.layers import trace_layers
    records = trace_layers(model, x[:1])
    stages = cnnlens.stage_layers(model, records)
    report = {layer.name: layer for layer in cnnlens.explainable_layers(model, x[:1])}
    allowed = ("activation", "pre-activation") if name in PRE_ACTIVATION_STAGES else ("activation",)
    assert len(stages) >= 3, f"only {len(stages)} stage layers: {stages}"
    for s in stages:
        assert report[s].activation in allowed, f"stage layer {s} is {report[s].activation}"
    blocks = cnnlens.block_layers(model, records)
    for b in blocks:
        assert report[b].activation in allowed + ("pre-activation",), f"block layer {b} is {report[b].activation}"
    return stages


def run_method(method: str, model: nn.Module, x: torch.Tensor, cheap: bool = True) -> str:
    """Run ``method`` through ``cnnlens.explain`` (Relevance-CAM at ``layer="stages"``) and check its maps."""
    import cnnlens
    options: dict = {}
    layer = None
    if method == "relevance-cam":
        layer = "stages"
    elif method == "sise":      # few masks: µ = 0.9 keeps the channels with the largest gradient only
        options = {"mu": 0.9 if cheap else 0.5, "batch_size": 32}
    elif method == "sr-map":    # a small context-aware-saliency working size (the CA step dominates the cost)
        options = {"working_size": 48 if cheap else 96, "query_stride": 2}
    out = cnnlens.explain(model, x, method, layer=layer, **options)
    maps = out if isinstance(out, dict) else {method: out}
    _finite_varying(maps)
    if method == "relevance-cam":
        return f"{len(maps)} stages"
    return "ok"


def zero_biases(model: nn.Module) -> nn.Module:
    """Every bias parameter and BatchNorm running mean set to 0 (BatchNorm becomes a per-channel scale)."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None:
                m.running_mean.zero_()
            bias = getattr(m, "bias", None)
            if isinstance(bias, torch.Tensor):
                bias.zero_()
    return model


def conservation_error(name: str, size: int, n: int = 1) -> float:
    """max_i |Σ R_input − z_t| / |z_t| of composite ``dtd`` on the bias-free model in float64."""
    from cnnlens.lrp import lrp_attribute
    model = zero_biases(build(name)).double()
    x = torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    with torch.no_grad():
        logits = model(x)
    t = logits.argmax(1)
    z = logits.gather(1, t[:, None])
    r0 = torch.zeros_like(logits).scatter_(1, t[:, None], z)
    res = lrp_attribute(model, x, r0, "dtd")
    total = res.input.reshape(n, -1).sum(1)
    assert torch.isfinite(total).all()
    return float(((total - z[:, 0]).abs() / z[:, 0].abs()).max())


def check_all(name: str, size: int = 128, cheap: bool = True, checks=CHECKS,
              on_result: Callable[[str, str, str | None], None] | None = None) -> dict[str, str]:
    """Run every check on one architecture; {check: note} for those that passed, "FAIL: ..." for the others
    (``on_result(check, note, error)`` is called after each)."""
    model = build(name)
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    out: dict[str, str] = {}
    for check in ("stages",) + tuple(checks):
        try:
            if check == "stages":
                note = f"{len(check_stages(name, model, x))} stages"
            elif check == "conservation":
                note = f"{conservation_error(name, size):.1e}"
            else:
                note = run_method(check, model, x, cheap)
            err = None
        except Exception as exc:  # noqa: BLE001 - the table records every failure
            note, err = f"FAIL: {type(exc).__name__}", f"{type(exc).__name__}: {exc}"
        out[check] = note
        if on_result is not None:
            on_result(check, note, err)
    return out
