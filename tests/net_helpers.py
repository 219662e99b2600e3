"""What network tests share."""

from __future__ import annotations

import torch
from torch import nn


def randomise_bn(net: nn.Module, seed: int = 0) -> None:
    """Give BN non-trivial statistics and affine terms, so parity tests exercise them."""
    g = torch.Generator().manual_seed(seed)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(n, generator=g) * 0.1)
