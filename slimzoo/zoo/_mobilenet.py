"""What the MobileNet families share (internal, timm's ``_`` convention): the static network they export (stem ->
blocks -> head -> global pool -> classifier), full widths read from the spec, and weight initialisation."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from slimzoo.zoo.spec import ArchSpec, Channels


def full_width(spec: ArchSpec, channels: Channels) -> int:
    """The channel count a supernet allocates for ``channels``: a variable's largest choice, or the fixed count."""
    return spec.variable(channels).choices[-1] if isinstance(channels, str) else int(channels)


def init_weights(module: nn.Module) -> None:
    """Kaiming (fan-out) convs with zero biases, unit BN, small-normal linear layers."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.zeros_(m.bias)


class MobileNet(nn.Module):
    """A plain MobileNet at fixed widths (stem, blocks, head, global average pool, classifier): what gets
    exported. Each family subclasses it under its own name."""

    def __init__(self, stem: nn.Module, blocks: list[nn.Module], head: nn.Module, classifier: nn.Linear) -> None:
        super().__init__()
        self.stem = stem
        self.blocks = nn.Sequential(*blocks)
        self.head = head
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = classifier

    def forward(self, x: Tensor) -> Tensor:
        x = self.head(self.blocks(self.stem(x)))
        return self.classifier(torch.flatten(self.pool(x), 1))
