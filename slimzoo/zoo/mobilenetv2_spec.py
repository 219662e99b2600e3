"""The slimmable MobileNetV2 architecture as an :class:`ArchSpec` (no torch here, so search and platforms can use it).

Width variables, following AOWS: ``stem`` (first conv's output, also block 1's depthwise width since that block
has no expansion), one ``stageN`` per stage (its output width, shared by the blocks a residual ties together),
one ``bK.expand`` per block with an expansion layer, and ``head`` (the last 1x1 conv). Each variable's choices are
the base width times ``multipliers``, rounded to multiples of 8 and de-duplicated.
"""

from __future__ import annotations

from typing import Any

from slimzoo.zoo.spec import DEFAULT_MULTIPLIERS, ArchSpec, LayerSpec, WidthVariable, make_divisible
from slimzoo.zoo.spec import width_choices as _choices

# (expansion t, output channels c, blocks n, first stride s), as in Sandler et al. 2018.
MOBILENETV2_STAGES: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


def mobilenetv2_spec(
    input_size: int = 32,
    in_channels: int = 3,
    num_classes: int = 10,
    width_mult: float = 1.0,
    stem_stride: int | None = None,
    last_channel: int = 1280,
    multipliers: tuple[float, ...] = DEFAULT_MULTIPLIERS,
) -> ArchSpec:
    """Build the spec. ``stem_stride`` defaults to 1 below 64x64 inputs (the CIFAR variant) and 2 above."""
    if stem_stride is None:
        stem_stride = 1 if input_size < 64 else 2
    params: dict[str, Any] = {
        "input_size": input_size,
        "in_channels": in_channels,
        "num_classes": num_classes,
        "width_mult": width_mult,
        "stem_stride": stem_stride,
        "last_channel": last_channel,
    }
    variables: list[WidthVariable] = [WidthVariable("stem", _choices(int(32 * width_mult), multipliers))]
    layers: list[LayerSpec] = []
    hw = input_size
    layers.append(LayerSpec("stem", "conv", in_channels, "stem", kernel=3, stride=stem_stride, in_hw=hw))
    hw = layers[-1].out_hw
    prev, prev_layer = "stem", "stem"  # the width variable and the layer a block reads
    block = 0
    for stage, (t, c, n, s) in enumerate(MOBILENETV2_STAGES, start=1):
        out_var = f"stage{stage}"
        variables.append(WidthVariable(out_var, _choices(make_divisible(c * width_mult, 8), multipliers)))
        for i in range(n):
            block += 1
            stride = s if i == 0 else 1
            residual = stride == 1 and i > 0  # later blocks of a stage: same width in and out
            name = f"b{block}"
            if t == 1:
                hidden = prev
            else:
                hidden = f"{name}.expand"
                base_hidden = make_divisible(c * width_mult, 8) * t if i > 0 else None
                full_in = next(v for v in variables if v.name == prev).choices[-1]
                variables.append(WidthVariable(hidden, _choices(base_hidden or full_in * t, multipliers)))
                layers.append(LayerSpec(f"{name}.expand", "conv", prev, hidden, kernel=1, in_hw=hw))
            layers.append(LayerSpec(f"{name}.dw", "dwconv", hidden, hidden, kernel=3, stride=stride, in_hw=hw))
            hw = layers[-1].out_hw
            # a residual block's project adds the block's input to its output (a fused residual)
            layers.append(LayerSpec(f"{name}.project", "conv", hidden, out_var, kernel=1, in_hw=hw, act=None,
                                    inputs=(layers[-1].name, prev_layer) if residual else ()))
            prev, prev_layer = out_var, f"{name}.project"
    head = make_divisible(last_channel * max(1.0, width_mult), 8)
    variables.append(WidthVariable("head", _choices(head, multipliers)))
    layers.append(LayerSpec("head", "conv", prev, "head", kernel=1, in_hw=hw))
    layers.append(LayerSpec("classifier", "pool_linear", "head", num_classes, in_hw=hw, act=None))
    return ArchSpec("mobilenetv2", params, tuple(variables), tuple(layers), tuple(multipliers))
