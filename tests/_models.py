"""Model helpers for the LRP tests that need no oracle library."""
from __future__ import annotations

import torch


def randomize_batchnorm(model, seed=0):
    """Random BN statistics and affine parameters so folding is not an identity (float64 tests).

    Also sets every BN ``eps`` to 0: zennit 0.5.1's ``MergeBatchNorm`` leaves the merged BatchNorm at running_var = 1
    but keeps its eps, so it still divides by sqrt(1 + eps) (a 5e-6 relative error per BN layer in zennit's forward,
    1e-4 through a ResNet). With eps = 0 zennit's canonised forward equals the model's.
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.eps = 0.0
                n = m.num_features
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(n, generator=g) * 0.5 + 0.75)
                m.weight.copy_(torch.rand(n, generator=g) * 0.5 + 0.75)
                m.bias.copy_(torch.randn(n, generator=g) * 0.1)
            elif isinstance(m, torch.nn.Conv2d) and m.bias is not None:
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.05)
    return model
