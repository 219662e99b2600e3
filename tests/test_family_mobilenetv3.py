"""The second family (slimmable MobileNetV3), the graph spec both families share, and the family protocol
(issue 15). The out-of-package example family is tested in ``tests/example_family``."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import pytest
import torch
from torch import nn

from slimzoo.errors import ConfigError, RegistryError
from slimzoo.zoo.checkpoint import read_checkpoint_header
from slimzoo.zoo.ops import SqueezeExcite
from slimzoo.zoo.registry import build_spec, create_supernet, get_family, list_families
from slimzoo.zoo.spec import NETWORK_INPUT, ArchSpec, LayerSpec, WidthVariable

ROOT = Path(__file__).resolve().parents[1]
DIGITS = ROOT / "tests" / "data" / "mobilenetv2_digits.safetensors"


def _randomise_bn(net: nn.Module, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(n, generator=g) * 0.1)


@pytest.mark.parametrize("input_size", [28, 32])
def test_mobilenetv3_supernet_equals_its_static_twin(input_size: int) -> None:
    spec = build_spec("mobilenetv3", input_size=input_size)
    torch.manual_seed(0)
    net = create_supernet(spec)
    _randomise_bn(net)
    for m in net.modules():  # SE biases are zero at init: make the gate depend on them
        if isinstance(m, nn.Conv2d) and m.bias is not None:
            m.bias.data.normal_(0, 0.5)
    net.eval()
    rng = random.Random(0)
    x = torch.randn(2, 1, input_size, input_size)
    for config in [spec.largest(), spec.smallest(), *(spec.random(rng) for _ in range(6))]:
        static = net.to_static(config).eval()
        with torch.no_grad():
            assert (net(x, config) - static(x)).abs().max().item() <= 1e-5, config
    kinds = {type(m) for m in static.modules()}
    assert {nn.Hardswish, nn.ReLU, SqueezeExcite, nn.Hardsigmoid} <= kinds
    assert {m.kernel_size[0] for m in static.modules() if isinstance(m, nn.Conv2d) and m.groups > 1} == {3, 5}


def test_mobilenetv3_spec_is_the_block_the_issue_asks_for() -> None:
    spec = build_spec("mobilenetv3", input_size=28)
    kinds = {layer.kind for layer in spec.layers}
    assert kinds == {"conv", "dwconv", "se", "add", "pool_linear"}
    assert {layer.act for layer in spec.layers} == {"relu", "hswish", None}
    assert {layer.kernel for layer in spec.layers if layer.kind == "dwconv"} == {3, 5}
    assert spec.params["stem_stride"] == 1 and build_spec("mobilenetv3", input_size=224).params["stem_stride"] == 2
    assert build_spec("mobilenetv3", input_size=28, stem_stride=2).layer("stem").stride == 2
    # each SE reduction width is its own variable, its choices derived from the expansion it squeezes
    for layer in spec.layers:
        if layer.kind == "se":
            expand = spec.variable(layer.c_in).choices
            reduced = spec.variable(layer.c_out).choices
            assert layer.c_out != layer.c_in and max(reduced) <= max(expand) // 2
            assert len(reduced) <= len(expand)
    # residual ties are add layers reading the block input: same width variable, same size
    adds = [layer for layer in spec.layers if layer.kind == "add"]
    assert [add.name for add in adds] == ["b3.add", "b5.add", "b6.add", "b8.add", "b10.add", "b11.add"]
    for add in adds:
        assert [spec.layer(i).out_channels for i in add.inputs] == [add.c_out, add.c_out]
    # the pairwise latency model holds: no layer depends on more than two width variables
    assert max(len(layer.variables) for layer in spec.layers) == 2
    assert 0 < spec.macs(spec.smallest()) < spec.macs(spec.largest()) < 10e6


@pytest.mark.parametrize("family", ["mobilenetv2", "mobilenetv3"])
def test_spec_json_round_trip(family: str) -> None:
    spec = build_spec(family, input_size=28)
    text = json.dumps(spec.to_json(), sort_keys=True)
    again = ArchSpec.from_json(json.loads(text))
    assert again == spec and again.key() == spec.key()
    assert json.dumps(again.to_json(), sort_keys=True) == text
    assert build_spec(family, input_size=28, num_classes=5).key() != spec.key()


OLD_LAYERS = [  # the chain form written before the graph: act as a bool, a residual flag, no inputs
    {"name": "stem", "kind": "conv", "c_in": 1, "c_out": "a", "kernel": 3, "stride": 1, "in_hw": 8, "act": True,
     "residual": False},
    {"name": "expand", "kind": "conv", "c_in": "a", "c_out": "h", "kernel": 1, "stride": 1, "in_hw": 8,
     "act": True, "residual": False},
    {"name": "dw", "kind": "dwconv", "c_in": "h", "c_out": "h", "kernel": 3, "stride": 1, "in_hw": 8, "act": True,
     "residual": False},
    {"name": "project", "kind": "conv", "c_in": "h", "c_out": "a", "kernel": 1, "stride": 1, "in_hw": 8,
     "act": False, "residual": True},
    {"name": "classifier", "kind": "pool_linear", "c_in": "a", "c_out": 10, "kernel": 1, "stride": 1, "in_hw": 8,
     "act": False, "residual": False},
]


def test_old_chain_form_reads_as_the_same_graph_with_the_same_key() -> None:
    old = {"family": "toy", "params": {"in_channels": 1, "input_size": 8}, "multipliers": [],
           "variables": [{"name": "a", "choices": [8, 16]}, {"name": "h", "choices": [16, 32]}],
           "layers": OLD_LAYERS}
    spec = ArchSpec.from_json(old)
    assert [layer.inputs for layer in spec.layers] == [(NETWORK_INPUT,), ("stem",), ("expand",), ("dw", "stem"),
                                                       ("project",)]
    assert [layer.act for layer in spec.layers] == ["relu6", "relu6", "relu6", None, None]
    assert spec.layer("project").residual and spec.layer("project").additions == 1
    assert spec.to_json() == old  # written back in the old form, so the key is the one it always had


def test_old_mobilenetv2_checkpoint_spec_loads_with_its_recorded_key() -> None:
    header = read_checkpoint_header(DIGITS)
    assert header.spec.key() == "mobilenetv2-70dfba853e68"  # the key its latency tables were made under
    assert header.spec == build_spec("mobilenetv2", **header.spec.params)
    raw = header.spec.to_json()
    assert all("inputs" not in layer and isinstance(layer["act"], bool) for layer in raw["layers"])
    residual = [layer for layer in header.spec.layers if layer.residual]
    assert len(residual) == 10 and all(header.spec.layer(layer.inputs[1]).name.endswith(".project") or
                                       layer.inputs[1] == "stem" for layer in residual)


@pytest.mark.parametrize(("layers", "fragment"), [
    ([LayerSpec("a", "conv", 1, "w", in_hw=8, inputs=("inptu",))], "did you mean 'input'"),
    ([LayerSpec("a", "conv", 1, "w", in_hw=8), LayerSpec("b", "conv", 8, "w", in_hw=8)], "reads 'a' as 8 channels"),
    ([LayerSpec("a", "conv", 1, "w", in_hw=8), LayerSpec("b", "conv", "w", "w", in_hw=4)], "at 4x4"),
    ([LayerSpec("a", "conv", 1, "w", in_hw=8), LayerSpec("a", "conv", "w", "w", in_hw=8)], "used twice"),
    ([LayerSpec("a", "conv", 1, "v", in_hw=8)], "unknown width variable 'v'"),
])
def test_graph_errors_are_one_line(layers: list[LayerSpec], fragment: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(fragment)):
        ArchSpec("toy", {"in_channels": 1, "input_size": 8}, (WidthVariable("w", (8, 16)),), tuple(layers))


@pytest.mark.parametrize(("kwargs", "fragment"), [
    ({"kind": "pool"}, "did you mean 'pool_linear'"),
    ({"act": "swish"}, "did you mean 'hswish'"),
    ({"kind": "add", "inputs": ("x",)}, "cannot read 1 inputs"),
    ({"kind": "se", "act": "relu", "c_out": "r"}, "activations are its own"),
])
def test_layer_errors_are_one_line(kwargs: dict, fragment: str) -> None:
    fields = {"name": "l", "kind": "conv", "c_in": "w", "c_out": "w", **kwargs}
    with pytest.raises(ConfigError, match=re.escape(fragment)):
        LayerSpec(**fields)


def test_family_protocol_errors() -> None:
    with pytest.raises(RegistryError, match=r"did you mean 'mobilenetv3'.*--family-module"):
        build_spec("mobilenet_v3")
    with pytest.raises(ConfigError, match=r"family 'mobilenetv3' takes no parameter 'depth'"):
        build_spec("mobilenetv3", depth=3)
    assert get_family("mobilenetv3").origin == "slimzoo.zoo.mobilenetv3"


# a switch on a family's name: comparing a string to it, matching it, or testing membership
_SWITCH = r"""(==|!=)\s*["']{name}["']|["']{name}["']\s*(==|!=|in\b|not\s+in\b)|\bcase\s+["']{name}["']|
              \bin\s*[(\[{{][^)\]}}]*["']{name}["']|\.family\s*(==|!=)\s*["']"""


def test_no_module_outside_a_family_switches_on_its_name() -> None:
    switch = re.compile(_SWITCH.format(name="mobilenetv2"), re.VERBOSE)
    for line in ['if spec.family == "x":', 'if name == "mobilenetv2":', 'if family in ("a", "mobilenetv2"):',
                 "case 'mobilenetv2':", '"mobilenetv2" != family']:
        assert switch.search(line), line  # the pattern finds what it is meant to
    assert not switch.search('family: str = "mobilenetv2"')  # a default is not a switch
    families = [f for f in list_families() if get_family(f).origin.startswith("slimzoo.")]
    offenders = []
    for path in sorted((ROOT / "slimzoo").rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        for family in families:
            if path.stem.startswith(family):  # the family's own modules (mobilenetv3.py, mobilenetv3_spec.py)
                continue
            pattern = re.compile(_SWITCH.format(name=re.escape(family)), re.VERBOSE)
            offenders += [f"{path.relative_to(ROOT)}:{text.count(chr(10), 0, m.start()) + 1}: {m.group(0)}"
                          for m in pattern.finditer(text)]
    assert not offenders, offenders
