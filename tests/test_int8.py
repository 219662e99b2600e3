"""int8 export for every format (issue 14): options and their refusals, the shared validation's int8 stages (top-1
agreement, logits PSNR on the validation split, top-1 accuracy drop against fp32 PyTorch, with the miss stated),
ONNX Runtime QDQ and LiteRT PT2E models run and validated, Core ML int8 weights checked on Linux, and corrupted
quantizations (calibration images at the wrong scale, a changed weight, a wrong weight scale) refused with no file
left behind.

The model is the shipped Fashion-MNIST checkpoint at its smallest width (161k parameters, 28x28), calibrated on the
same fixed class-balanced training subset BatchNorm re-estimation uses (1,024 images) and validated on the
5,000-image validation split. Conversions dominate the time (litert-torch ~20-40 s on 2 shared cores), so each file
more than one test needs is made once per module.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from slimzoo.errors import ExportError, ValidationError
from slimzoo.exporters import coreml as coreml_module
from slimzoo.exporters.base import (DEFAULT_MAX_ACCURACY_DROP, INT8_MIN_PSNR_DB, ExportOptions, Tolerances,
                                    export_validated, get_exporter, validate_against_reference)
from slimzoo.exporters.coreml import CoreMLExporter
from slimzoo.exporters.onnx import OnnxExporter
from slimzoo.exporters.tflite import TFLiteExporter, read_metadata
from slimzoo.fileio import tree_size
from slimzoo.zoo.checkpoint import load_checkpoint, shipped_checkpoint_path
from slimzoo.zoo.data import load_dataset
from slimzoo.zoo.slicing import slice_supernet
from test_export_formats import Corrupting  # exports a copy with one classifier weight changed


@pytest.fixture(scope="module")
def fashion():
    return load_dataset("fashion-mnist", input_size=28)


@pytest.fixture(scope="module")
def small(fashion) -> nn.Module:
    """The shipped checkpoint's smallest sub-network, BN re-estimated on the calibration subset."""
    ck = load_checkpoint(shipped_checkpoint_path())
    return slice_supernet(ck.build_supernet(), ck.spec.smallest(), fashion.calibration_batches()).eval()


@pytest.fixture(scope="module")
def calibration(fashion) -> np.ndarray:
    return torch.cat(fashion.calibration_batches()).numpy()


@pytest.fixture(scope="module")
def val(fashion) -> tuple[np.ndarray, np.ndarray]:
    return fashion.val_x.numpy(), fashion.val_y.numpy()


def _random(n: int = 16, seed: int = 0) -> np.ndarray:
    return torch.randn(n, 1, 28, 28, generator=torch.Generator().manual_seed(seed)).numpy()


def _export(exporter, module: nn.Module, path: Path, options: ExportOptions, val):
    x = _random()
    return export_validated(exporter, module, torch.from_numpy(x[:1]), path, options, x, *val)


def _int8(calibration: np.ndarray, **kwargs) -> ExportOptions:
    return ExportOptions(precision="int8", calibration=calibration, **kwargs)


@pytest.fixture(scope="module")
def onnx_int8(small, calibration, val, tmp_path_factory):
    path = tmp_path_factory.mktemp("onnx") / "m.onnx"
    return path, _export(OnnxExporter(), small, path, _int8(calibration, metadata={"slimzoo.platform": "x"}), val)


@pytest.fixture(scope="module")
def tflite_int8(small, calibration, val, tmp_path_factory):
    path = tmp_path_factory.mktemp("tflite") / "m.tflite"
    return path, _export(TFLiteExporter(), small, path, _int8(calibration), val)


# -- options -----------------------------------------------------------------------------------------------------
def test_every_format_offers_int8_with_its_own_io_types() -> None:
    for fmt in ("onnx", "tflite", "coreml"):
        assert "int8" in get_exporter(fmt).precisions
    assert TFLiteExporter().resolve(ExportOptions(precision="int8")).io == "float"
    assert TFLiteExporter().resolve(ExportOptions(precision="int8", io="int8")).io == "int8"
    for fmt, options, message in [
        ("onnx", ExportOptions(precision="int8", io="int8"), "--io int8 is not valid for onnx; valid: float"),
        ("coreml", ExportOptions(precision="int8", io="int8"), "--io int8 is not valid for coreml; valid: float"),
        ("tflite", ExportOptions(io="int8"), "--io int8 needs --precision int8"),
        ("tflite", ExportOptions(precision="int8", io="uint8"),
         "--io uint8 is not valid for tflite; valid: float, int8"),
        ("onnx", ExportOptions(max_accuracy_drop=-1.0), "max accuracy drop -1.0 must be >= 0"),
    ]:
        with pytest.raises(ExportError) as caught:
            get_exporter(fmt).check_options(options)
        assert str(caught.value).startswith(message) and "\n" not in str(caught.value)


def test_int8_tolerances_and_calibration_option() -> None:
    tol = OnnxExporter().tolerances(ExportOptions(precision="int8"))
    assert tol == Tolerances(atol=None, min_top1_agreement=0.95, min_psnr_db=INT8_MIN_PSNR_DB,
                             max_accuracy_drop=DEFAULT_MAX_ACCURACY_DROP, psnr_split="validation")
    assert OnnxExporter().tolerances(ExportOptions(precision="int8", max_accuracy_drop=0.5)).max_accuracy_drop == 0.5
    assert OnnxExporter().tolerances(ExportOptions()).max_accuracy_drop is None  # fp32: atol bounds it
    batches = [torch.zeros(3, 1, 28, 28), torch.ones(2, 1, 28, 28)]  # calibration_batches() as returned
    options = ExportOptions(precision="int8", calibration=batches)
    assert options.calibration.shape == (5, 1, 28, 28) and options.calibration.dtype == np.float32
    assert options == ExportOptions(precision="int8") and "calibration" not in repr(options)  # data, not a setting
    assert replace(options, io="int8").calibration is options.calibration


@pytest.mark.parametrize("fmt", ["onnx", "tflite"])
def test_int8_without_calibration_is_one_line_before_any_work(fmt: str, small, val, tmp_path: Path) -> None:
    exporter = get_exporter(fmt)
    with pytest.raises(ExportError) as caught:
        _export(exporter, small, tmp_path / f"m{exporter.suffix}", ExportOptions(precision="int8"), val)
    message = str(caught.value)
    assert message.startswith(f"{fmt}: --precision int8 needs calibration images") and "\n" not in message
    with pytest.raises(ExportError, match="calibration images have shape"):
        _export(exporter, small, tmp_path / f"m{exporter.suffix}", _int8(np.zeros((4, 3, 28, 28))), val)
    assert list(tmp_path.iterdir()) == []


# -- the shared validation's int8 stages ----------------------------------------------------------------------------
def test_accuracy_drop_beyond_the_tolerance_is_refused_saying_by_how_much(small, val) -> None:
    """A candidate that gets 2% of the images PyTorch classifies correctly wrong (and is otherwise PyTorch):
    agreement and PSNR pass, the drop does not, and the message says by how much it missed."""
    x, y = val
    with torch.no_grad():
        logits = small(torch.from_numpy(x)).numpy()
    right = np.flatnonzero(logits.argmax(1) == y)
    broken = right[: int(0.02 * len(x))]

    def candidate(inputs: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            out = small(torch.from_numpy(inputs)).numpy()
        if len(inputs) == len(x):
            out[broken, y[broken]] -= 60.0  # the right class falls below the others
        return out

    kwargs = dict(atol=None, min_top1_agreement=0.95, min_psnr_db=10.0, psnr_split="validation", precision="int8",
                  calibration_images=1024)
    with pytest.raises(ValidationError) as caught:
        validate_against_reference("onnx", small, candidate, _random(), x, y, max_accuracy_drop=1.0, **kwargs)
    ref, got = 100 * np.mean(logits.argmax(1) == y), 100 * (np.mean(logits.argmax(1) == y) - 0.02)
    assert f"onnx: int8 top-1 {got:.1f}% vs fp32 {ref:.1f}% on 5000 validation images: drops 2.0 points, " \
           f"more than the 1.0 allowed" in str(caught.value)
    report = validate_against_reference("onnx", small, candidate, _random(), x, y, max_accuracy_drop=2.5, **kwargs)
    assert report.accuracy_drop == pytest.approx(2.0) and report.max_accuracy_drop == 2.5
    assert (report.precision, report.calibration_images, report.psnr_split) == ("int8", 1024, "validation")
    assert report.top1_agreement == pytest.approx(0.98) and report.val_mean_kl > 0
    assert any("drop 2.0 <= 2.5 points" in c for c in report.checks)


# -- ONNX ------------------------------------------------------------------------------------------------------------
def test_onnx_int8_is_qdq_per_channel_and_validated_in_onnx_runtime(onnx_int8, small, calibration) -> None:
    import onnx

    path, report = onnx_int8
    assert report.numerics_run and report.precision == "int8" and report.calibration_images == len(calibration)
    assert report.accuracy_drop <= DEFAULT_MAX_ACCURACY_DROP and report.top1_agreement >= 0.95
    assert report.val_psnr_db >= INT8_MIN_PSNR_DB and report.val_mean_kl < 0.05
    json.dumps(report.to_json())  # the sidecar's "validation"
    model = onnx.load(str(path))
    ops = {n.op_type for n in model.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= ops
    init = {t.name: t for t in model.graph.initializer}
    weight = next(t for name, t in init.items() if name.endswith("weight_quantized") and len(t.dims) == 4)
    scale = init[weight.name.replace("_quantized", "_scale")]
    assert weight.data_type == onnx.TensorProto.INT8 and list(scale.dims) == [weight.dims[0]]  # per channel
    assert not any(p.key.startswith("pkg.torch.onnx.") for n in model.graph.node for p in n.metadata_props)
    assert {p.key: p.value for p in model.metadata_props}["slimzoo.platform"] == "x"
    facts = OnnxExporter().describe(_int8(calibration))["quantization"]
    assert facts["calibration_images"] == len(calibration) and "per output channel" in facts["weights"]
    assert "quantize_static" in facts["tool"] and (facts["input"], facts["output"]) == ("float", "float")


def test_onnx_int8_is_smaller_than_fp32(onnx_int8, small, val, tmp_path: Path) -> None:
    path, _ = onnx_int8
    fp32 = tmp_path / "fp32.onnx"
    _export(OnnxExporter(), small, fp32, ExportOptions(), val)
    # int8 weights are a quarter of fp32's; per-channel scales, zero points and int32 biases (one each per
    # channel) and the graph are not, and on a 161k-parameter network they are most of the rest (measured 0.50x)
    assert path.stat().st_size < 0.6 * fp32.stat().st_size


def test_onnx_wrong_calibration_scale_fails_and_leaves_no_file(small, calibration, val, tmp_path: Path) -> None:
    """Calibration images x1000 (the ranges of un-normalised data): every activation collapses into one step."""
    with pytest.raises(ValidationError) as caught:
        _export(OnnxExporter(), small, tmp_path / "m.onnx", _int8(calibration * 1000.0), val)
    message = str(caught.value)
    assert "logits PSNR vs PyTorch" in message and "dB < 25 dB on 5000 validation images" in message
    assert "more than the 1.0 allowed" in message
    assert list(tmp_path.iterdir()) == []


class ScaleEditingOnnx(OnnxExporter):
    """Writes the int8 model, then multiplies every per-channel weight scale of the first convolution by 8."""

    def export(self, module: nn.Module, example_input: torch.Tensor, path: Path, options: ExportOptions) -> None:
        import onnx
        from onnx import numpy_helper

        super().export(module, example_input, path, options)
        model = onnx.load(str(path))
        scale = next(t for t in model.graph.initializer if t.name.endswith("weight_scale"))
        scale.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(scale) * 8.0, scale.name))
        onnx.save(model, str(path))


@pytest.mark.slow
def test_onnx_edited_weight_scale_fails_and_leaves_no_file(small, calibration, val, tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="onnx: .*(PSNR|drops|agrees)"):
        _export(ScaleEditingOnnx(), small, tmp_path / "m.onnx", _int8(calibration), val)
    assert list(tmp_path.iterdir()) == []


# -- TFLite -----------------------------------------------------------------------------------------------------------
def test_tflite_int8_runs_in_litert_with_float_io(tflite_int8, calibration) -> None:
    from ai_edge_litert.interpreter import Interpreter

    path, report = tflite_int8
    assert report.numerics_run and report.precision == "int8" and report.calibration_images == len(calibration)
    assert report.accuracy_drop <= DEFAULT_MAX_ACCURACY_DROP and report.val_psnr_db >= INT8_MIN_PSNR_DB
    assert any("weights stored as int8, symmetric, one scale per output channel" in c for c in report.checks)
    runner = Interpreter(model_path=str(path)).get_signature_runner("serving_default")
    assert runner.get_input_details()["input"]["dtype"] == np.float32
    assert runner.get_output_details()["logits"]["dtype"] == np.float32
    assert read_metadata(path.read_bytes())["slimzoo.io"] == "float"
    facts = TFLiteExporter().describe(_int8(calibration))["quantization"]
    assert "PT2E" in facts["tool"] and facts["calibration_images"] == len(calibration)


@pytest.mark.slow
def test_tflite_int8_io_takes_and_returns_int8_with_stated_scales(tflite_int8, small, calibration, val,
                                                                   tmp_path: Path) -> None:
    from ai_edge_litert.interpreter import Interpreter

    path = tmp_path / "io.tflite"
    options = _int8(calibration, io="int8")
    report = _export(TFLiteExporter(), small, path, options, val)
    runner = Interpreter(model_path=str(path)).get_signature_runner("serving_default")
    detail = runner.get_input_details()["input"]
    assert detail["dtype"] == np.int8 and runner.get_output_details()["logits"]["dtype"] == np.int8
    stated = json.loads(read_metadata(path.read_bytes())["slimzoo.input_quantization"])
    assert (stated["scale"], stated["zero_point"]) == pytest.approx(detail["quantization"])
    float_io = TFLiteExporter().runner(tflite_int8[0], _int8(calibration))
    int8_io = TFLiteExporter().runner(path, options)
    x = val[0][:200]
    assert np.mean(float_io(x).argmax(1) == int8_io(x).argmax(1)) >= 0.99  # same model, quantized outside
    assert report.accuracy_drop <= DEFAULT_MAX_ACCURACY_DROP
    assert "note" in TFLiteExporter().describe(options)["quantization"]


@pytest.mark.slow
def test_tflite_wrong_calibration_scale_fails_and_leaves_no_file(small, calibration, val, tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="tflite: .*more than the 1.0 allowed"):
        _export(TFLiteExporter(), small, tmp_path / "m.tflite", _int8(calibration * 1000.0), val)
    assert list(tmp_path.iterdir()) == []


# -- Core ML ----------------------------------------------------------------------------------------------------------
def test_coreml_int8_weights_checked_on_linux(small, calibration, val, tmp_path: Path) -> None:
    path = tmp_path / "m.mlpackage"
    report = _export(CoreMLExporter(), small, path, _int8(calibration), val)
    assert path.is_dir() and report.precision == "int8" and report.calibration_images == 0  # weights only
    assert any("every conv/linear weight is int8 with one scale per output channel" in c for c in report.checks)
    assert any("program structure matches the sliced PyTorch graph" in c for c in report.checks)
    if not coreml_module.can_predict():
        assert not report.numerics_run
        assert any("int8-weight (fp16 activation) arithmetic" in line for line in report.not_verified)
        assert any("top-1 drop <= 1.0 points" in line for line in report.not_verified)
    facts = CoreMLExporter().describe(_int8(calibration))["quantization"]
    assert "linear_quantize_weights" in facts["tool"] and facts["calibration_images"] == 0
    assert "macOS" in facts["activations"]
    assert tree_size(path) < 2 * sum(p.numel() for p in small.parameters())  # fp16 weights alone would not fit


class CorruptingCoreML(Corrupting, CoreMLExporter):
    pass


def test_coreml_int8_corrupted_weight_fails_and_leaves_no_package(small, val, tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match=r"classifier\.weight .*more than half a quantization step"):
        _export(CorruptingCoreML(), small, tmp_path / "m.mlpackage", ExportOptions(precision="int8"), val)
    assert list(tmp_path.iterdir()) == []


def _dequantize_op(q: np.ndarray, scale: np.ndarray) -> SimpleNamespace:
    const = lambda v: SimpleNamespace(val=v)  # noqa: E731
    return SimpleNamespace(op_type="constexpr_affine_dequantize", inputs={
        "quantized_data": const(q), "scale": const(scale), "zero_point": const(np.zeros(len(scale), np.int8)),
        "axis": const(np.asarray(0))})


def test_coreml_int8_check_refuses_a_wrong_but_self_consistent_scale() -> None:
    """Weights re-rounded to a scale twice too coarse are each within half *their* step of PyTorch's: only the
    scale check (max |w| / 127 per channel) tells that half the int8 range is thrown away."""
    w = torch.randn(4, 3, 3, 3, generator=torch.Generator().manual_seed(0)).numpy()
    right = np.abs(w).reshape(4, -1).max(1) / 127.0
    def quantized(scale: np.ndarray) -> SimpleNamespace:
        q = np.clip(np.round(w / scale[:, None, None, None]), -127, 127).astype(np.int8)
        return _dequantize_op(q, scale.astype(np.float16))

    assert coreml_module._compare_int8(quantized(right), w) == ""
    assert "channel scales are not max |w| / 127" in coreml_module._compare_int8(quantized(2 * right), w)
    q = np.round(w / right[:, None, None, None]).astype(np.int8)
    assert "more than half a quantization step" in coreml_module._compare_int8(_dequantize_op(q, 3 * right), w)
