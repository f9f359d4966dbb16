"""Benchmarks of the gradient CAMs besides Grad-CAM (run: python benchmarks/bench_gradient_cams.py).

Grad-CAM++, XGrad-CAM and Layer-CAM on resnet50, batch 8, 224 px, layer4 (Layer-CAM also at layer3, where it is
usually applied): cnnlens vs pytorch-grad-cam's class of the same name (equal maps, tests/test_cams.py) and vs one
plain forward+backward (parameters requiring grad, ``loss.backward()``), all measured round-robin in one run. Each is
one forward + one backward stopped at the layer, like Grad-CAM (benchmarks/bench_cams.py --only gradcam).
Options: --repeats N --device cpu|cuda --threads N --clock cpu|wall (default: one thread, CPU time).
"""
from __future__ import annotations

import argparse
import os
import sys

import torch
import torchvision

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_cams import _trainable_copy, add_timing_args, apply_timing_args, time_all  # noqa: E402

import cnnlens  # noqa: E402  (bench_cams puts src/ on the path)

PEERS = {"grad-cam++": "GradCAMPlusPlus", "xgrad-cam": "XGradCAM", "layer-cam": "LayerCAM"}


def bench(method: str, layer: str, repeats: int, device: str) -> None:
    import pytorch_grad_cam
    torch.manual_seed(0)
    model = torchvision.models.resnet50().eval().to(device)
    frozen = model.requires_grad_(False)
    x = torch.randn(8, 3, 224, 224, device=device)
    oracle_model = _trainable_copy(model)
    peer_cls = getattr(pytorch_grad_cam, PEERS[method])

    def ours():
        return cnnlens.explain(frozen, x, method, layer=layer)

    def theirs():
        with peer_cls(model=oracle_model, target_layers=[oracle_model.get_submodule(layer)]) as cam:
            return cam(input_tensor=x, targets=None)

    def plain():
        oracle_model.zero_grad(set_to_none=True)
        oracle_model(x).max(dim=1).values.sum().backward()

    t_ours, t_peer, t_fb = time_all([ours, theirs, plain], repeats, device)
    print(f"[{method} {layer}] resnet50 b8 224px {device}: cnnlens {t_ours:.3f}s | pytorch-grad-cam "
          f"{PEERS[method]} {t_peer:.3f}s | plain fwd+bwd {t_fb:.3f}s -> {t_ours / t_peer:.2f}x peer, "
          f"{t_ours / t_fb:.2f}x fwd+bwd", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_timing_args(ap)
    args = ap.parse_args()
    apply_timing_args(args)
    for method, layer in [("grad-cam++", "layer4"), ("xgrad-cam", "layer4"), ("layer-cam", "layer4"),
                          ("layer-cam", "layer3")]:
        bench(method, layer, args.repeats, args.device)


if __name__ == "__main__":
    main()
