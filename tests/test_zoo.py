"""Slimmable network, slicing, width configs, checkpoints and training (zoo/)."""

from __future__ import annotations

import dataclasses
import json
import random
import struct

import pytest
import torch
from net_helpers import randomise_bn
from torch import nn

from slimzoo.errors import CheckpointError, ConfigError, RegistryError
from slimzoo.zoo.checkpoint import load_checkpoint, save_checkpoint
from slimzoo.zoo.data import load_digits_dataset
from slimzoo.zoo.registry import build_spec, create_supernet, list_families
from slimzoo.zoo.slicing import recalibrate_bn, slice_supernet
from slimzoo.zoo.spec import ArchSpec
from slimzoo.zoo.train import TrainSettings, train_supernet


@pytest.mark.parametrize("family", list_families())
def test_static_twin_matches_supernet_on_random_configs(family: str) -> None:
    spec = build_spec(family)
    torch.manual_seed(0)
    net = create_supernet(spec)
    randomise_bn(net)
    net.eval()
    rng = random.Random(1)
    configs = [spec.largest(), spec.smallest()] + [spec.random(rng) for _ in range(20)]
    for config in configs:
        x = torch.randn(3, *[spec.params["in_channels"], spec.params["input_size"], spec.params["input_size"]])
        static = net.to_static(config).eval()
        with torch.no_grad():
            diff = (net(x, config) - static(x)).abs().max().item()
        assert diff <= 1e-5, (config, diff)


def _graph_nodes(output: torch.Tensor) -> set[str]:
    seen, stack, names = set(), [output.grad_fn], set()
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        names.add(type(node).__name__)
        stack.extend(next_node for next_node, _ in node.next_functions)
    return names


def _training_pass(model: nn.Module, config, x: torch.Tensor, weights: torch.Tensor):
    """(logits, gradients, state) of one training-mode forward + backward."""
    model.zero_grad(set_to_none=True)
    out = model(x) if config is None else model(x, config)
    (out * weights).sum().backward()
    grads = {name: p.grad for name, p in model.named_parameters()}
    return out.detach(), grads, {k: v.clone() for k, v in model.state_dict().items()}


def _slice_every_dimension(tensor: torch.Tensor, c0: int, c1: int | None = None) -> torch.Tensor:
    """The slicing before issue 13: every dimension sliced, kept whole or not."""
    return tensor[:c0] if c1 is None else tensor[:c0, :c1]


@pytest.mark.parametrize("family", list_families())
def test_training_pass_matches_plain_slicing_and_the_static_twin(family: str, monkeypatch) -> None:
    """A training-mode pass of the supernet at a config gives bitwise the logits, weight gradients and BN
    running statistics of slicing every dimension (what ops did before whole dimensions were passed through
    unsliced), and the static twin's: its gradients in the used slice and zero in the channels the config leaves
    out, its statistics in the slice and untouched ones elsewhere. Configs mix whole and narrowed widths, so
    every slicing case runs (both dimensions cut, one, none)."""
    from slimzoo.zoo import ops

    spec = build_spec(family)
    torch.manual_seed(0)
    net = create_supernet(spec).train()
    randomise_bn(net)
    mixed = {v.name: v.choices[-1] if i % 2 else v.choices[0] for i, v in enumerate(spec.variables)}
    configs = [spec.largest(), spec.smallest(), spec.random(random.Random(4)), spec.validate(mixed)]
    size, channels = spec.params["input_size"], spec.params["in_channels"]
    for config in configs:
        x = torch.randn(4, channels, size, size)
        weights = torch.randn(4, spec.params["num_classes"])
        twin = net.to_static(config).train()
        start = {k: v.clone() for k, v in net.state_dict().items()}
        out, grads, state = _training_pass(net, config, x, weights)
        if config == spec.largest():  # whole tensors go in as they are: no slice, no zero-padded gradient
            assert "SliceBackward0" not in _graph_nodes(net(x, config))
        net.load_state_dict(start)
        with monkeypatch.context() as patch:
            patch.setattr(ops, "leading", _slice_every_dimension)
            ref_out, ref_grads, ref_state = _training_pass(net, config, x, weights)
        net.load_state_dict(start)
        assert torch.equal(out, ref_out), config
        assert all(torch.equal(grads[k], ref_grads[k]) for k in grads), config
        assert all(torch.equal(state[k], ref_state[k]) for k in state), config

        twin_out, twin_grads, twin_state = _training_pass(twin, None, x, weights)
        assert torch.allclose(out, twin_out, atol=1e-5), config
        for name, grad in twin_grads.items():
            part = tuple(slice(0, n) for n in grad.shape)
            assert torch.allclose(grads[name][part], grad, atol=1e-5), (config, name)
            rest = grads[name].clone()
            rest[part] = 0
            assert not rest.any(), (config, name)
        for name, buf in twin_state.items():
            if "running" in name:
                part = tuple(slice(0, n) for n in buf.shape)
                assert torch.allclose(state[name][part], buf, atol=1e-6), (config, name)
                rest, old = state[name].clone(), start[name].clone()
                rest[part], old[part] = 0, 0
                assert torch.equal(rest, old), (config, name)


@pytest.mark.parametrize("family", list_families())
def test_static_twin_has_exactly_the_configured_channels(family: str) -> None:
    spec = build_spec(family)
    net = create_supernet(spec)
    config = spec.random(random.Random(3))
    static = net.to_static(config)
    assert not any(type(m).__name__.startswith("Slim") for m in static.modules())
    # family-agnostic: the static twin's convs, in module order, are the spec's conv layers at the config's widths
    # (no module names assumed: a family registered tomorrow is checked the same way)
    got = [(m.in_channels, m.out_channels, m.kernel_size[0], m.stride[0], m.groups > 1)
           for m in static.modules() if isinstance(m, nn.Conv2d)]
    want = [conv for layer in spec.layers for conv in layer.convolutions(*spec.channels(layer, config))]
    assert got == want
    linears = [m for m in static.modules() if isinstance(m, nn.Linear)]
    heads = [layer for layer in spec.layers if layer.kind == "pool_linear"]
    assert [(m.in_features, m.out_features) for m in linears] == [spec.channels(h, config) for h in heads]
    n_params = sum(p.numel() for p in static.parameters())
    assert n_params < sum(p.numel() for p in net.parameters()) or config == spec.largest()


def test_224_input_builds_slices_and_runs() -> None:
    spec = build_spec("mobilenetv2", input_size=224, in_channels=3, num_classes=1000)
    net = create_supernet(spec).eval()
    static = net.to_static(spec.uniform(0.5)).eval()
    with torch.no_grad():
        out = static(torch.randn(1, 3, 224, 224))
    assert out.shape == (1, 1000)
    assert 290e6 < spec.macs(spec.largest()) < 310e6  # the published 300M MACs of MobileNetV2 1.0


def test_config_validation_names_variable_and_allowed_values() -> None:
    spec = build_spec("mobilenetv2")
    config = dict(spec.largest())
    with pytest.raises(ConfigError, match=r"stage3=40 is not allowed; allowed: 8, 16, 24, 32"):
        spec.validate({**config, "stage3": 40})
    with pytest.raises(ConfigError, match=r"unknown width variable 'stage33'.*did you mean 'stage3'"):
        spec.validate({**config, "stage33": 8})
    missing = {k: v for k, v in config.items() if k != "head"}
    with pytest.raises(ConfigError, match="'head' is missing"):
        spec.validate(missing)
    assert spec.validate(config) == spec.largest()


def test_unknown_family_suggests_nearest() -> None:
    with pytest.raises(RegistryError, match="did you mean 'mobilenetv2'"):
        build_spec("mobilenet_v2")


def test_spec_json_round_trip_and_key() -> None:
    spec = build_spec("mobilenetv2")
    again = ArchSpec.from_json(json.loads(json.dumps(spec.to_json())))
    assert again == spec and again.key() == spec.key()
    assert build_spec("mobilenetv2", num_classes=100).key() != spec.key()


def test_recalibrated_bn_holds_the_mean_over_batches() -> None:
    spec = build_spec("mobilenetv2")
    net = create_supernet(spec)
    static = net.to_static(spec.smallest())
    batches = [torch.randn(8, 1, 32, 32) for _ in range(3)]
    recalibrate_bn(static, batches)
    stem_out = [static.stem.conv(x) for x in batches]
    expected = torch.cat(stem_out).mean((0, 2, 3))
    assert torch.allclose(static.stem.bn.running_mean, expected, atol=1e-5)
    assert not static.training


def _tiny_digits(n_train: int = 128):
    data = load_digits_dataset()
    return dataclasses.replace(data, train_x=data.train_x[:n_train], train_y=data.train_y[:n_train],
                               val_x=data.val_x[:64], val_y=data.val_y[:64])


def test_training_runs_sandwich_and_records_a_loss_proxy_per_choice() -> None:
    spec = build_spec("mobilenetv2", multipliers=(0.25, 0.5, 1.0))
    net = create_supernet(spec)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    calls = []
    summary = train_supernet(net, _tiny_digits(), TrainSettings(epochs=1, batch_size=32, n_random=3),
                             progress=lambda d, t, s: calls.append((d, t)))
    assert calls[-1] == (4, 4)
    assert summary["steps"] == 4
    proxy = summary["loss_proxy"]
    assert set(proxy) == set(spec.variable_names)
    assert all(len(proxy[v.name]) == len(v.choices) for v in spec.variables)
    changed = [k for k, v in net.state_dict().items() if k.endswith("weight") and not torch.equal(v, before[k])]
    assert changed, "training did not update any weight"
    # the reported figure is the trained network's, scored again here (BN recalibrated the same way)
    from slimzoo.zoo.evaluate import evaluate_config

    data = _tiny_digits()
    assert summary["val_accuracy"]["largest"] == pytest.approx(
        evaluate_config(net, data, spec.largest()).accuracy, abs=1e-4)


def _saved_checkpoint(tmp_path, dtype=torch.float32):
    spec = build_spec("mobilenetv2")
    net = create_supernet(spec)
    meta = {"loss_proxy": {v.name: [0.0] * len(v.choices) for v in spec.variables}, "mean": [0.0], "std": [1.0]}
    return save_checkpoint(tmp_path / "ck.safetensors", net, spec, meta, dtype=dtype), net


def test_checkpoint_round_trip(tmp_path) -> None:
    path, net = _saved_checkpoint(tmp_path)
    ck = load_checkpoint(path)
    loaded = ck.build_supernet()
    for k, v in net.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    assert ck.spec == net.spec and len(ck.sha256) == 64
    assert [p.name for p in tmp_path.iterdir()] == ["ck.safetensors"]  # no temp file left


def test_checkpoint_float16_storage_loads_as_float32(tmp_path) -> None:
    path, net = _saved_checkpoint(tmp_path, torch.float16)
    ck = load_checkpoint(path)
    w = ck.state["stem.conv.weight"]
    assert w.dtype == torch.float32
    assert torch.allclose(w, net.state_dict()["stem.conv.weight"], atol=1e-3)


def test_truncated_checkpoint_is_one_clear_error(tmp_path) -> None:
    path, _ = _saved_checkpoint(tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        load_checkpoint(path)


def test_edited_weights_are_detected(tmp_path) -> None:
    path, _ = _saved_checkpoint(tmp_path)
    data = bytearray(path.read_bytes())
    data[-100] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="do not match their recorded sha256"):
        load_checkpoint(path)


def test_edited_metadata_is_detected(tmp_path) -> None:
    path, _ = _saved_checkpoint(tmp_path)
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = data[8:8 + n].replace(b'"version\\": 1', b'"version\\": 7')
    assert header != data[8:8 + n]
    path.write_bytes(data[:8] + header + data[8 + n:])
    with pytest.raises(CheckpointError, match="format version 7 is not supported"):
        load_checkpoint(path)


def test_missing_checkpoint(tmp_path) -> None:
    with pytest.raises(CheckpointError, match="no such checkpoint file"):
        load_checkpoint(tmp_path / "nope.safetensors")


def test_slice_supernet_returns_eval_model_with_recalibrated_stats() -> None:
    data = _tiny_digits()
    spec = build_spec("mobilenetv2")
    net = create_supernet(spec)
    batches = data.calibration_batches(2, 32)
    model = slice_supernet(net, spec.smallest(), batches)
    assert not model.training
    # the stem's statistics are exactly the average over the calibration batches of its conv output's batch
    # statistics (cumulative average, unbiased variance), not the supernet's running values
    with torch.no_grad():
        outs = [model.stem.conv(x) for x in batches]
    mean = torch.stack([y.mean((0, 2, 3)) for y in outs]).mean(0)
    var = torch.stack([y.var((0, 2, 3), unbiased=True) for y in outs]).mean(0)
    assert torch.allclose(model.stem.bn.running_mean, mean, atol=1e-5)
    assert torch.allclose(model.stem.bn.running_var, var, rtol=1e-4, atol=1e-6)
