"""``tinyfam``: a four-layer slimmable CNN registered from outside slimzoo, the worked example of docs/families.md.

conv 3x3 /2 -> conv 3x3 /2 -> conv 3x3 (linear) + residual add (ReLU) -> pool + linear, with two width variables:
``c1`` (the first conv) and ``c2`` (the second and third convs, tied by the residual add). It uses only the public
building blocks: :class:`slimzoo.zoo.spec.ArchSpec` for the spec, :mod:`slimzoo.zoo.ops` for slimmable layers
(each with its ``to_static``), :func:`slimzoo.zoo.registry.register_family` to register.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from slimzoo.zoo.ops import SlimConvBNAct, SlimLinear
from slimzoo.zoo.registry import register_family
from slimzoo.zoo.spec import ArchSpec, LayerSpec, WidthConfig, WidthVariable, make_divisible

MULTIPLIERS = (0.25, 0.5, 0.75, 1.0)


def tinyfam_spec(input_size: int = 28, in_channels: int = 1, num_classes: int = 10, width_mult: float = 1.0,
                 multipliers: tuple[float, ...] = MULTIPLIERS) -> ArchSpec:
    """The spec: layers as a graph (``inputs``), activations and op kinds as data."""
    def choices(base: int) -> tuple[int, ...]:
        return tuple(sorted({make_divisible(base * width_mult * m, 8) for m in multipliers}))

    variables = (WidthVariable("c1", choices(32)), WidthVariable("c2", choices(64)))
    conv1 = LayerSpec("conv1", "conv", in_channels, "c1", kernel=3, stride=2, in_hw=input_size, act="relu")
    conv2 = LayerSpec("conv2", "conv", "c1", "c2", kernel=3, stride=2, in_hw=conv1.out_hw, act="relu")
    conv3 = LayerSpec("conv3", "conv", "c2", "c2", kernel=3, in_hw=conv2.out_hw, act=None)
    add = LayerSpec("add", "add", "c2", "c2", in_hw=conv3.out_hw, act="relu", inputs=("conv3", "conv2"))
    classifier = LayerSpec("classifier", "pool_linear", "c2", num_classes, in_hw=add.out_hw, act=None)
    params = {"input_size": input_size, "in_channels": in_channels, "num_classes": num_classes,
              "width_mult": width_mult}
    return ArchSpec("tinyfam", params, variables, (conv1, conv2, conv3, add, classifier), tuple(multipliers))


class TinyNet(nn.Module):
    """The static twin: plain torch modules at fixed widths, named like the supernet's."""

    def __init__(self, conv1: nn.Module, conv2: nn.Module, conv3: nn.Module, classifier: nn.Linear) -> None:
        super().__init__()
        self.conv1, self.conv2, self.conv3, self.act = conv1, conv2, conv3, nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = classifier

    def forward(self, x: Tensor) -> Tensor:
        y = self.conv2(self.conv1(x))
        y = self.act(self.conv3(y) + y)
        return self.classifier(torch.flatten(self.pool(y), 1))


@register_family("tinyfam", tinyfam_spec, input_size=28, in_channels=1, num_classes=10)
class SlimTinyNet(nn.Module):
    """The supernet: ``forward(x, config)`` runs the sub-network ``config``; ``to_static(config)`` slices it."""

    def __init__(self, spec: ArchSpec) -> None:
        super().__init__()
        self.spec = spec
        full = {v.name: v.choices[-1] for v in spec.variables}
        c_in = spec.params["in_channels"]
        self.conv1 = SlimConvBNAct(c_in, full["c1"], 3, 2, act="relu")
        self.conv2 = SlimConvBNAct(full["c1"], full["c2"], 3, 2, act="relu")
        self.conv3 = SlimConvBNAct(full["c2"], full["c2"], 3, 1, act=None)
        self.act = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = SlimLinear(full["c2"], spec.params["num_classes"])

    def forward(self, x: Tensor, config: WidthConfig | None = None) -> Tensor:
        config = self.spec.largest() if config is None else config
        y = self.conv2(self.conv1(x, config["c1"]), config["c2"])
        y = self.act(self.conv3(y, config["c2"]) + y)
        return self.classifier(torch.flatten(self.pool(y), 1))

    def to_static(self, config: WidthConfig) -> TinyNet:
        config = self.spec.validate(config)
        c_in, c1, c2 = self.spec.params["in_channels"], config["c1"], config["c2"]
        return TinyNet(self.conv1.to_static(c_in, c1), self.conv2.to_static(c1, c2), self.conv3.to_static(c2, c2),
                       self.classifier.to_static(c2)).train(self.training)
