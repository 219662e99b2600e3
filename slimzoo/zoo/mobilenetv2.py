"""Slimmable MobileNetV2 (Sandler et al. 2018), built from its :class:`ArchSpec` so that module structure, width
variables and latency layers come from one description.

The supernet runs at any :class:`WidthConfig`; ``to_static(config)`` returns a plain ``nn.Module`` of
``nn.Conv2d``/``nn.BatchNorm2d``/``nn.Linear`` with exactly the configured channel counts and the same
child names, built by each op's own slicing function.
"""

from __future__ import annotations

__all__ = ["SlimMobileNetV2", "MobileNetV2", "InvertedResidual"]

import torch
from torch import Tensor, nn

from slimzoo.zoo._mobilenet import MobileNet, full_width as _full, init_weights
from slimzoo.zoo.mobilenetv2_spec import mobilenetv2_spec
from slimzoo.zoo.ops import SlimConvBNAct, SlimLinear
from slimzoo.zoo.registry import register_family
from slimzoo.zoo.spec import ArchSpec, LayerSpec, WidthConfig


class SlimInvertedResidual(nn.Module):
    """Expand (1x1, optional) -> depthwise 3x3 -> project (1x1, linear), with a residual when shapes allow."""

    def __init__(self, spec: ArchSpec, expand: LayerSpec | None, dw: LayerSpec, project: LayerSpec) -> None:
        super().__init__()
        self.expand_layer, self.dw_layer, self.project_layer = expand, dw, project
        self.residual = project.residual
        self.expand = (SlimConvBNAct(_full(spec, expand.c_in), _full(spec, expand.c_out), 1)
                       if expand is not None else None)
        hidden = _full(spec, dw.c_in)
        self.dw = SlimConvBNAct(hidden, hidden, 3, dw.stride, depthwise=True)
        self.project = SlimConvBNAct(hidden, _full(spec, project.c_out), 1, act=False)

    def channels(self, spec: ArchSpec, config: WidthConfig) -> tuple[int, int, int]:
        """(c_in, hidden, c_out) of this block under ``config``."""
        c_in = spec.channels(self.expand_layer or self.dw_layer, config)[0]
        hidden = spec.channels(self.dw_layer, config)[0]
        c_out = spec.channels(self.project_layer, config)[1]
        return c_in, hidden, c_out

    def forward(self, x: Tensor, hidden: int, c_out: int) -> Tensor:
        y = self.expand(x, hidden) if self.expand is not None else x
        y = self.project(self.dw(y), c_out)
        return x + y if self.residual else y

    def to_static(self, c_in: int, hidden: int, c_out: int) -> InvertedResidual:
        return InvertedResidual(
            self.expand.to_static(c_in, hidden) if self.expand is not None else None,
            self.dw.to_static(hidden, hidden),
            self.project.to_static(hidden, c_out),
            self.residual,
        )


class InvertedResidual(nn.Module):
    """The static twin of :class:`SlimInvertedResidual`."""

    def __init__(self, expand: nn.Module | None, dw: nn.Module, project: nn.Module, residual: bool) -> None:
        super().__init__()
        self.expand, self.dw, self.project, self.residual = expand, dw, project, residual

    def forward(self, x: Tensor) -> Tensor:
        y = self.expand(x) if self.expand is not None else x
        y = self.project(self.dw(y))
        return x + y if self.residual else y


class MobileNetV2(MobileNet):
    """A plain MobileNetV2 at fixed widths: what gets exported."""


@register_family("mobilenetv2", mobilenetv2_spec, input_size=32, in_channels=1, num_classes=10)
class SlimMobileNetV2(nn.Module):
    """The supernet. ``forward(x, config)`` runs the sub-network ``config`` (the largest one when omitted)."""

    def __init__(self, spec: ArchSpec) -> None:
        super().__init__()
        self.spec = spec
        layers = {layer.name: layer for layer in spec.layers}
        stem, head, classifier = layers["stem"], layers["head"], layers["classifier"]
        self.stem = SlimConvBNAct(_full(spec, stem.c_in), _full(spec, stem.c_out), stem.kernel, stem.stride)
        n_blocks = len({name.split(".")[0] for name in layers if name.startswith("b")})
        self.blocks = nn.ModuleList(
            SlimInvertedResidual(spec, layers.get(f"b{k}.expand"), layers[f"b{k}.dw"], layers[f"b{k}.project"])
            for k in range(1, n_blocks + 1)
        )
        self.head = SlimConvBNAct(_full(spec, head.c_in), _full(spec, head.c_out), 1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = SlimLinear(_full(spec, classifier.c_in), _full(spec, classifier.c_out))
        self._layers = layers
        self.reset_parameters()

    def reset_parameters(self) -> None:
        init_weights(self)

    def forward(self, x: Tensor, config: WidthConfig | None = None) -> Tensor:
        config = self.spec.largest() if config is None else config
        x = self.stem(x, config["stem"])
        for block in self.blocks:
            _, hidden, c_out = block.channels(self.spec, config)
            x = block(x, hidden, c_out)
        x = self.head(x, config["head"])
        return self.classifier(torch.flatten(self.pool(x), 1))

    def to_static(self, config: WidthConfig) -> MobileNetV2:
        config = self.spec.validate(config)
        stem = self.stem.to_static(*self.spec.channels(self._layers["stem"], config))
        blocks = [block.to_static(*block.channels(self.spec, config)) for block in self.blocks]
        head = self.head.to_static(*self.spec.channels(self._layers["head"], config))
        classifier = self.classifier.to_static(config["head"])
        static = MobileNetV2(stem, blocks, head, classifier)
        return static.train(self.training)


