"""From supernet to standalone model: slice at a config, then re-estimate BatchNorm statistics.

BatchNorm statistics of a shared-weight network are only right for the widths they were collected at, so every
sliced model gets its own ("post-statistics", as in US-Nets): reset, then average over a few training batches.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor, nn

from slimzoo.zoo.spec import WidthConfig


@torch.no_grad()
def recalibrate_bn(model: nn.Module, batches: Iterable[Tensor]) -> nn.Module:
    """Replace every BatchNorm's running statistics by their exact average over ``batches``; returns ``model``
    in eval mode."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [bn.momentum for bn in bns]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative moving average: the plain mean over the batches
    model.train()
    for x in batches:
        model(x)
    for bn, momentum in zip(bns, saved):
        bn.momentum = momentum
    return model.eval()


def slice_supernet(supernet: nn.Module, config: WidthConfig, calibration: Iterable[Tensor] | None) -> nn.Module:
    """The standalone model at ``config`` (eval mode), with BN statistics recalibrated when batches are given."""
    static = supernet.to_static(config)
    if calibration is not None:
        recalibrate_bn(static, calibration)
    return static.eval()
