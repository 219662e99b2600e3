"""Slimmable MobileNetV3 (Howard et al. 2019) with Once-for-All's block, built from its :class:`ArchSpec` so that
module structure, width variables and latency layers come from one description (:mod:`mobilenetv3_spec`).

The supernet runs at any :class:`WidthConfig`; ``to_static(config)`` returns a plain ``nn.Module`` (convs, BNs,
h-swish, squeeze-and-excitation, linear) with exactly the configured channel counts and the same child names, built
by each op's own slicing function. A block's residual connection is its ``add`` layer in the spec graph.
"""

from __future__ import annotations

__all__ = ["SlimMobileNetV3", "MobileNetV3", "MBConv", "SlimMBConv"]

import torch
from torch import Tensor, nn

from slimzoo.zoo._mobilenet import MobileNet, full_width as _full, init_weights
from slimzoo.zoo.mobilenetv3_spec import mobilenetv3_spec
from slimzoo.zoo.ops import SlimConvBNAct, SlimLinear, SlimSqueezeExcite
from slimzoo.zoo.registry import register_family
from slimzoo.zoo.spec import ArchSpec, LayerSpec, WidthConfig


class SlimMBConv(nn.Module):
    """Expand (1x1, optional) -> depthwise k x k -> squeeze-excite (optional) -> project (1x1, linear), plus the
    block input when the spec has an ``add`` layer for it."""

    def __init__(self, spec: ArchSpec, layers: dict[str, LayerSpec]) -> None:
        super().__init__()
        self.layer_specs = layers
        expand, dw, se, project = (layers.get(part) for part in ("expand", "dw", "se", "project"))
        self.expand = (SlimConvBNAct(_full(spec, expand.c_in), _full(spec, expand.c_out), 1, act=expand.act)
                       if expand is not None else None)
        hidden = _full(spec, dw.c_in)
        self.dw = SlimConvBNAct(hidden, hidden, dw.kernel, dw.stride, depthwise=True, act=dw.act)
        self.se = SlimSqueezeExcite(hidden, _full(spec, se.c_out)) if se is not None else None
        self.project = SlimConvBNAct(hidden, _full(spec, project.c_out), 1, act=project.act)
        self.residual = "add" in layers

    def channels(self, spec: ArchSpec, config: WidthConfig) -> tuple[int, int, int, int]:
        """(c_in, hidden, squeeze width or 0, c_out) of this block under ``config``."""
        first = self.layer_specs.get("expand", self.layer_specs["dw"])
        hidden = spec.channels(self.layer_specs["dw"], config)[0]
        se = spec.channels(self.layer_specs["se"], config)[1] if "se" in self.layer_specs else 0
        return spec.channels(first, config)[0], hidden, se, spec.channels(self.layer_specs["project"], config)[1]

    def forward(self, x: Tensor, hidden: int, se: int, c_out: int) -> Tensor:
        y = self.expand(x, hidden) if self.expand is not None else x
        y = self.dw(y)
        if self.se is not None:
            y = self.se(y, se)
        y = self.project(y, c_out)
        return x + y if self.residual else y

    def to_static(self, c_in: int, hidden: int, se: int, c_out: int) -> MBConv:
        return MBConv(
            self.expand.to_static(c_in, hidden) if self.expand is not None else None,
            self.dw.to_static(hidden, hidden),
            self.se.to_static(hidden, se) if self.se is not None else None,
            self.project.to_static(hidden, c_out),
            self.residual,
        )


class MBConv(nn.Module):
    """The static twin of :class:`SlimMBConv`."""

    def __init__(self, expand: nn.Module | None, dw: nn.Module, se: nn.Module | None, project: nn.Module,
                 residual: bool) -> None:
        super().__init__()
        self.expand, self.dw, self.se, self.project, self.residual = expand, dw, se, project, residual

    def forward(self, x: Tensor) -> Tensor:
        y = self.expand(x) if self.expand is not None else x
        y = self.dw(y)
        if self.se is not None:
            y = self.se(y)
        y = self.project(y)
        return x + y if self.residual else y


class MobileNetV3(MobileNet):
    """A plain MobileNetV3 at fixed widths: what gets exported."""


@register_family("mobilenetv3", mobilenetv3_spec, input_size=32, in_channels=1, num_classes=10)
class SlimMobileNetV3(nn.Module):
    """The supernet. ``forward(x, config)`` runs the sub-network ``config`` (the largest one when omitted)."""

    def __init__(self, spec: ArchSpec) -> None:
        super().__init__()
        self.spec = spec
        self._layers = {layer.name: layer for layer in spec.layers}
        stem, head, classifier = (self._layers[name] for name in ("stem", "head", "classifier"))
        self.stem = SlimConvBNAct(_full(spec, stem.c_in), _full(spec, stem.c_out), stem.kernel, stem.stride,
                                  act=stem.act)
        blocks: dict[str, dict[str, LayerSpec]] = {}
        for layer in spec.layers:
            block, _, part = layer.name.partition(".")
            if part:
                blocks.setdefault(block, {})[part] = layer
        self.blocks = nn.ModuleList(SlimMBConv(spec, parts) for parts in blocks.values())
        self.head = SlimConvBNAct(_full(spec, head.c_in), _full(spec, head.c_out), 1, act=head.act)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = SlimLinear(_full(spec, classifier.c_in), _full(spec, classifier.c_out))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        init_weights(self)

    def forward(self, x: Tensor, config: WidthConfig | None = None) -> Tensor:
        config = self.spec.largest() if config is None else config
        x = self.stem(x, config["stem"])
        for block in self.blocks:
            x = block(x, *block.channels(self.spec, config)[1:])
        x = self.head(x, self.spec.channels(self._layers["head"], config)[1])
        return self.classifier(torch.flatten(self.pool(x), 1))

    def to_static(self, config: WidthConfig) -> MobileNetV3:
        config = self.spec.validate(config)
        stem = self.stem.to_static(*self.spec.channels(self._layers["stem"], config))
        blocks = [block.to_static(*block.channels(self.spec, config)) for block in self.blocks]
        head = self.head.to_static(*self.spec.channels(self._layers["head"], config))
        classifier = self.classifier.to_static(self.spec.channels(self._layers["classifier"], config)[0])
        return MobileNetV3(stem, blocks, head, classifier).train(self.training)
