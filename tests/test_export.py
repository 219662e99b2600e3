"""Exporters: the ONNX exporter against ONNX Runtime, the shared validation routine, atomic writes."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from slimzoo.errors import ExportError, ValidationError
from slimzoo.exporters.base import ExportOptions, export_validated, exporter_names, get_exporter
from slimzoo.exporters.onnx import OnnxExporter
from slimzoo.zoo.registry import build_spec, create_supernet


@pytest.fixture(scope="module")
def sliced() -> nn.Module:
    torch.manual_seed(0)
    spec = build_spec("mobilenetv2")
    net = create_supernet(spec)
    model = net.to_static(spec.uniform(0.5)).eval()
    with torch.no_grad():  # non-trivial BN statistics, so the fold into the conv is exercised
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    return model


def _inputs(n: int, seed: int = 0) -> np.ndarray:
    return torch.randn(n, 1, 32, 32, generator=torch.Generator().manual_seed(seed)).numpy()


def test_onnx_export_matches_pytorch_and_is_one_file(sliced: nn.Module, tmp_path: Path) -> None:
    """A trained sub-network (the digits checkpoint at x0.5) scored on real validation images with their real
    labels: the exported model's accuracy is PyTorch's, and far above chance. (Labels taken from the model's own
    predictions would make any accuracy check pass by construction.)"""
    from slimzoo.zoo.checkpoint import load_checkpoint
    from slimzoo.zoo.data import load_dataset
    from slimzoo.zoo.slicing import slice_supernet

    path = tmp_path / "m.onnx"
    x = _inputs(8)
    digits = load_dataset("digits", input_size=32)
    ck = load_checkpoint(None)
    trained = slice_supernet(ck.build_supernet(), ck.spec.uniform(0.5), digits.calibration_batches(n_batches=2))
    val_x, val_y = digits.val_x.numpy(), digits.val_y.numpy()
    report = export_validated(OnnxExporter(), trained, torch.from_numpy(x[:1]), path,
                              ExportOptions(metadata={"slimzoo.platform": "pixel5"}), x, val_x, val_y)
    assert report.numerics_run and report.max_abs_diff <= 1e-4 and report.top1_agreement == 1.0
    assert report.n_val == len(val_y) and report.accuracy_exported == report.accuracy_reference > 0.5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]  # no .onnx.data, no temp file
    model = onnx.load(str(path))
    assert {p.key: p.value for p in model.metadata_props}["slimzoo.platform"] == "pixel5"
    # real channels removed: the first conv's weight has the sliced shape
    conv_weights = [i for i in model.graph.initializer if len(i.dims) == 4]
    assert conv_weights[0].dims[0] == trained.stem.conv.out_channels


class CorruptingOnnxExporter(OnnxExporter):
    """Exports a copy of the model with one weight changed: validation must catch it."""

    def export(self, module: nn.Module, example_input: torch.Tensor, path: Path, options: ExportOptions) -> None:
        broken = copy.deepcopy(module)
        with torch.no_grad():
            broken.classifier.weight[0, 0] += 5.0
        super().export(broken, example_input, path, options)


def test_corrupted_weight_fails_validation_and_leaves_no_file(sliced: nn.Module, tmp_path: Path) -> None:
    x = _inputs(8, seed=1)
    with pytest.raises(ValidationError, match=r"max \|onnx - PyTorch\|"):
        export_validated(CorruptingOnnxExporter(), sliced, torch.from_numpy(x[:1]), tmp_path / "m.onnx",
                         ExportOptions(), x)
    assert list(tmp_path.iterdir()) == []


def test_registry_lists_formats_and_refuses_unknown() -> None:
    assert exporter_names() == ["onnx", "coreml", "tflite"]
    with pytest.raises(ExportError, match="did you mean 'onnx'"):
        get_exporter("onnxx")


def test_bad_option_is_refused_before_any_work() -> None:
    with pytest.raises(ExportError, match="--precision int3 is not valid for onnx; valid: fp32"):
        OnnxExporter().check_options(ExportOptions(precision="int3"))
    with pytest.raises(ExportError, match="--layout nhwc is not valid for onnx"):
        OnnxExporter().check_options(ExportOptions(layout="nhwc"))
