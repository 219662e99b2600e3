"""The slimmable MobileNetV3 architecture as an :class:`ArchSpec` (no torch here, so search and platforms can use it).

The block is Once-for-All's MobileNetV3 block (Howard et al. 2019; Cai et al. 2020): expand 1x1 (absent in the first
block), depthwise 3x3 or 5x5, squeeze-and-excitation on some blocks, project 1x1 (linear), and a residual ``add``
layer where a block keeps its width and size; ReLU in the early blocks, h-swish later. The default layout is
MobileNetV3-Small's, whose ~56M MACs at 224x224 come to a few MMACs on 28x28 and 32x32 inputs with the first conv at
stride 1 (``stem_stride``, as for MobileNetV2: 1 below 64x64 inputs, else 2).

Width variables: ``stem``, one ``stageN`` per run of blocks with the same output width (a residual ties them), one
``bK.expand`` per block with an expansion, one ``bK.se`` per block with squeeze-and-excitation (its reduction width:
choices derived from the expansion's, a quarter of each rounded to 8, as OFA derives it), and ``head``. Each base
width is multiplied by ``multipliers``, rounded to multiples of 8 and de-duplicated.
"""

from __future__ import annotations

from typing import Any

from slimzoo.zoo.spec import DEFAULT_MULTIPLIERS, ArchSpec, LayerSpec, WidthVariable, make_divisible
from slimzoo.zoo.spec import width_choices as _choices

__all__ = ["DEFAULT_MULTIPLIERS", "MOBILENETV3_SMALL", "mobilenetv3_spec"]

# (depthwise kernel, expansion width, output width, squeeze-excite, activation, stride): MobileNetV3-Small, Table 2.
MOBILENETV3_SMALL: tuple[tuple[int, int, int, bool, str, int], ...] = (
    (3, 16, 16, True, "relu", 2),
    (3, 72, 24, False, "relu", 2),
    (3, 88, 24, False, "relu", 1),
    (5, 96, 40, True, "hswish", 2),
    (5, 240, 40, True, "hswish", 1),
    (5, 240, 40, True, "hswish", 1),
    (5, 120, 48, True, "hswish", 1),
    (5, 144, 48, True, "hswish", 1),
    (5, 288, 96, True, "hswish", 2),
    (5, 576, 96, True, "hswish", 1),
    (5, 576, 96, True, "hswish", 1),
)

SE_REDUCTION = 4


def mobilenetv3_spec(
    input_size: int = 32,
    in_channels: int = 3,
    num_classes: int = 10,
    width_mult: float = 1.0,
    stem_stride: int | None = None,
    last_channel: int = 576,
    multipliers: tuple[float, ...] = DEFAULT_MULTIPLIERS,
) -> ArchSpec:
    """Build the spec. ``stem_stride`` defaults to 1 below 64x64 inputs and 2 above."""
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
    variables: dict[str, WidthVariable] = {}

    def variable(name: str, choices: tuple[int, ...]) -> str:
        variables[name] = WidthVariable(name, choices)
        return name

    def width(c: int) -> int:
        return make_divisible(c * width_mult, 8)

    layers: list[LayerSpec] = [LayerSpec("stem", "conv", in_channels, variable("stem", _choices(width(16), multipliers)),
                                         kernel=3, stride=stem_stride, in_hw=input_size, act="hswish")]
    hw, prev, prev_layer, stage, stage_width = layers[0].out_hw, "stem", "stem", 0, None
    for k, (kernel, expand, out, se, act, stride) in enumerate(MOBILENETV3_SMALL, start=1):
        name = f"b{k}"
        if out != stage_width:
            stage, stage_width = stage + 1, out
            variable(f"stage{stage}", _choices(width(out), multipliers))
        out_var = f"stage{stage}"
        c_in_full = variables[prev].choices[-1]
        if k == 1:  # the first block has no expansion: its depthwise conv runs at the stem's width
            hidden = prev
        else:
            hidden = variable(f"{name}.expand", _choices(width(expand), multipliers))
            layers.append(LayerSpec(f"{name}.expand", "conv", prev, hidden, kernel=1, in_hw=hw, act=act))
        layers.append(LayerSpec(f"{name}.dw", "dwconv", hidden, hidden, kernel=kernel, stride=stride, in_hw=hw,
                                act=act))
        hw = layers[-1].out_hw
        if se:
            reduced = tuple(sorted({make_divisible(c / SE_REDUCTION, 8) for c in variables[hidden].choices}))
            layers.append(LayerSpec(f"{name}.se", "se", hidden, variable(f"{name}.se", reduced), in_hw=hw, act=None))
        layers.append(LayerSpec(f"{name}.project", "conv", hidden, out_var, kernel=1, in_hw=hw, act=None))
        if stride == 1 and out_var == prev and variables[out_var].choices[-1] == c_in_full:
            layers.append(LayerSpec(f"{name}.add", "add", out_var, out_var, in_hw=hw, act=None,
                                    inputs=(f"{name}.project", prev_layer)))
        prev, prev_layer = out_var, layers[-1].name
    head = variable("head", _choices(make_divisible(last_channel * max(1.0, width_mult), 8), multipliers))
    layers.append(LayerSpec("head", "conv", prev, head, kernel=1, in_hw=hw, act="hswish"))
    layers.append(LayerSpec("classifier", "pool_linear", head, num_classes, in_hw=hw, act=None))
    return ArchSpec("mobilenetv3", params, tuple(variables.values()), tuple(layers), tuple(multipliers))
