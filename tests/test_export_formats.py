"""Core ML and TFLite exporters beside ONNX: each validation (including ones that must fail and leave nothing
behind), the Linux-side Core ML weight check, ONNX vs TFLite agreement on the same sliced model, bad options, and
`slimzoo export --format coreml` end to end.

Conversions dominate the time (litert-torch ~15-20 s, coremltools ~5-10 s each on 2 shared cores), so every
exported file that more than one test needs is made once per module.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from slimzoo.errors import ExportError, ValidationError
from slimzoo.exporters.base import (ExportOptions, Tolerances, ValidationReport, export_validated, exporter_names,
                                    get_exporter, logits_psnr)
from slimzoo.exporters.coreml import CoreMLExporter, can_predict, fold_batchnorm
from slimzoo.exporters.onnx import OnnxExporter
from slimzoo.exporters.tflite import TFLiteExporter, read_metadata
from slimzoo.fileio import atomic_tree, tree_sha256, tree_size
from slimzoo.zoo.checkpoint import load_checkpoint
from slimzoo.zoo.data import load_dataset
from slimzoo.zoo.slicing import slice_supernet

MEAN, STD = (0.3049,), (0.3235,)
CLASSES = tuple(str(i) for i in range(10))
META = {"slimzoo.platform": "iphone12", "slimzoo.width_config": '{"stem": 8}', "slimzoo.version": "test"}
macos_only = pytest.mark.skipif(not can_predict(), reason="Core ML prediction needs macOS")


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", input_size=32)


@pytest.fixture(scope="module")
def sliced(digits) -> nn.Module:
    """A small sliced model (the shipped checkpoint at uniform width x0.25, ~240k parameters) with its BN
    statistics re-estimated on digits batches, so BN folding is exercised with real statistics. A trained
    network is used rather than a random one because a random deep net either saturates its ReLU6s (every input
    gets the same logits: top-1 checks are vacuous) or is so ill-conditioned that float32 PyTorch itself is
    1e-4 away from float64; this one is 2e-6 away, with well-separated top-1 classes."""
    ck = load_checkpoint(None)
    return slice_supernet(ck.build_supernet(), ck.spec.uniform(0.25), digits.calibration_batches(n_batches=2))


def _inputs(n: int, seed: int) -> np.ndarray:
    return torch.randn(n, 1, 32, 32, generator=torch.Generator().manual_seed(seed)).numpy()


@pytest.fixture(scope="module")
def val(digits) -> tuple[np.ndarray, np.ndarray]:
    """The embedded validation split (359 digits), as the export command validates on."""
    return digits.val_x.numpy(), digits.val_y.numpy()


def _export(exporter, module, path: Path, options: ExportOptions, val=None, seed: int = 1) -> ValidationReport:
    x = _inputs(16, seed)
    val_x, val_y = val if val is not None else (None, None)
    return export_validated(exporter, module, torch.from_numpy(x[:1]), path, options, x, val_x, val_y)


class Corrupting:
    """Mixin: exports a copy of the model with one weight changed; validation must catch it."""

    def export(self, module: nn.Module, example_input: torch.Tensor, path: Path, options: ExportOptions) -> None:
        broken = copy.deepcopy(module)
        with torch.no_grad():
            broken.classifier.weight[0, 0] += 5.0
        super().export(broken, example_input, path, options)  # type: ignore[misc]


class CorruptingCoreMLExporter(Corrupting, CoreMLExporter):
    pass


class CorruptingTFLiteExporter(Corrupting, TFLiteExporter):
    pass


class StrideChangingCoreMLExporter(CoreMLExporter):
    """Exports a copy with the first stride-2 convolution made stride 1: every weight stays the same, so only
    a check of the program's structure can tell."""

    def export(self, module: nn.Module, example_input: torch.Tensor, path: Path, options: ExportOptions) -> None:
        broken = copy.deepcopy(module)
        conv = next(m for m in broken.modules() if isinstance(m, nn.Conv2d) and m.stride == (2, 2))
        conv.stride = (1, 1)
        super().export(broken, example_input, path, options)


# -- registry and options ------------------------------------------------------------------------------------
def test_registry_lists_the_three_built_formats() -> None:
    assert exporter_names() == ["onnx", "coreml", "tflite"]
    assert isinstance(get_exporter("coreml"), CoreMLExporter) and isinstance(get_exporter("tflite"), TFLiteExporter)


def test_defaults_are_each_formats_own() -> None:
    coreml = CoreMLExporter().resolve(ExportOptions())
    tflite = TFLiteExporter().resolve(ExportOptions())
    onnx = OnnxExporter().resolve(ExportOptions())
    assert (coreml.precision, coreml.layout, coreml.input_type) == ("fp16", "nchw", "tensor")
    assert (tflite.precision, tflite.layout, tflite.input_type) == ("fp32", "nhwc", None)
    assert (onnx.precision, onnx.layout, onnx.input_type) == ("fp32", "nchw", None)
    assert CoreMLExporter().tolerances(coreml) == Tolerances(atol=None, min_top1_agreement=0.99, min_psnr_db=30.0)
    assert TFLiteExporter().tolerances(tflite).atol == 1e-4


@pytest.mark.parametrize("fmt, options, message", [
    ("coreml", ExportOptions(precision="int3"), "--precision int3 is not valid for coreml; valid: fp16, fp32"),
    ("tflite", ExportOptions(precision="int3"), "--precision int3 is not valid for tflite; valid: fp32, fp16"),
    ("coreml", ExportOptions(layout="nhwc"), "--layout nhwc is not valid for coreml; valid: nchw"),
    ("tflite", ExportOptions(layout="nc"), "--layout nc is not valid for tflite; valid: nhwc, nchw"),
    ("coreml", ExportOptions(input_type="rgb"), "--input-type rgb is not valid for coreml; valid: tensor, image"),
    ("tflite", ExportOptions(input_type="image"), "--input-type is not an option for tflite"),
    ("onnx", ExportOptions(input_type="tensor"), "--input-type is not an option for onnx"),
    ("coreml", ExportOptions(input_type="image"), "--input-type image needs the checkpoint's mean and std"),
])
def test_bad_options_are_one_clear_line_and_write_nothing(fmt: str, options: ExportOptions, message: str,
                                                         sliced: nn.Module, tmp_path: Path) -> None:
    exporter = get_exporter(fmt)
    with pytest.raises(ExportError) as caught:
        _export(exporter, sliced, tmp_path / f"m{exporter.suffix}", options)
    assert str(caught.value).startswith(message) and "\n" not in str(caught.value)
    assert list(tmp_path.iterdir()) == []


def test_bad_option_on_the_command_line_is_one_line_before_any_work(tmp_path: Path) -> None:
    proc = _slimzoo("export", "--platform", "iphone12", "--format", "coreml", "--layout", "nhwc",
                    "--out", str(tmp_path / "zoo"))
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == ["error: --layout nhwc is not valid for coreml; valid: nchw"]
    assert not (tmp_path / "zoo").exists()


# -- Core ML: export + the Linux-side check ---------------------------------------------------------------------
def test_coreml_fp16_tensor_package_and_weight_check(sliced: nn.Module, tmp_path: Path) -> None:
    path = tmp_path / "m.mlpackage"
    report = _export(CoreMLExporter(), sliced, path, ExportOptions(metadata=META))  # default: fp16, tensor
    assert path.is_dir() and (path / "Manifest.json").is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["m.mlpackage"]  # no temp directory left
    assert any(c.startswith("every stored weight equals the sliced PyTorch weight (106 tensors") and
               "float16 rounding" in c for c in report.checks), report.checks
    assert "input 'input': multi-array [1, 1, 32, 32]" in report.checks
    n_convs = sum(isinstance(m, nn.Conv2d) for m in sliced.modules())
    structure = next(c for c in report.checks if c.startswith("program structure matches"))
    assert f"conv x{n_convs}" in structure and f"({n_convs} convs)" in structure
    assert "10 residual adds at the same shapes" in structure  # MobileNetV2 x0.25: 10 inverted residuals
    assert report.min_psnr_db == 30.0
    if not can_predict():
        assert report.numerics_run is False and "Core ML prediction needs macOS" in report.note
        assert "numerics not run" in report.note
        # what was not verified, said plainly: the PSNR floor and the device's fp16 arithmetic
        assert report.not_verified[0].startswith("numerics: outputs vs PyTorch (max abs diff, logits PSNR >= 30 dB")
        assert any(line.startswith("fp16 arithmetic:") for line in report.not_verified)
    import coremltools as ct

    spec = ct.models.MLModel(str(path), skip_model_load=True).get_spec()
    meta = dict(spec.description.metadata.userDefined)
    assert {k: meta[k] for k in META} == META and meta["slimzoo.minimum_deployment_target"] == "iOS16"
    assert [o.name for o in spec.description.output] == ["logits"]


def test_coreml_changed_stride_fails_the_structure_check(sliced: nn.Module, tmp_path: Path) -> None:
    """Same weights, one stride changed: the weight check passes, the structure check must not (on Linux it
    is the only check that could tell)."""
    path = tmp_path / "m.mlpackage"
    with pytest.raises(ValidationError) as info:
        _export(StrideChangingCoreMLExporter(), sliced, path, ExportOptions())
    message = str(info.value)
    assert "strides [1, 1] != PyTorch's [2, 2]" in message and "output shape" in message
    assert "stored weight" not in message  # the weights are the same
    assert list(tmp_path.iterdir()) == []


def test_reduced_precision_is_held_to_a_psnr_floor() -> None:
    """fp16 logits that keep the argmax but drift far (PSNR 20 dB) fail; rounding-sized drift passes."""
    from slimzoo.exporters.base import validate_against_reference

    reference = nn.Linear(8, 4).eval()
    x = _inputs(64, 3).reshape(64, -1)[:, :8].copy()
    with torch.no_grad():
        logits = reference(torch.from_numpy(x)).numpy()
    spread = float(logits.max() - logits.min())
    tol = TFLiteExporter().tolerances(ExportOptions(precision="fp16"))
    assert tol.min_psnr_db == 30.0
    noise = np.random.default_rng(0).standard_normal(logits.shape).astype(np.float32)
    for rms_fraction, ok in ((0.1, False), (0.001, True)):  # 20 dB and 60 dB
        drift = (noise / np.sqrt(np.mean(noise ** 2)) * spread * rms_fraction).astype(np.float32)
        run = lambda a, d=drift: reference(torch.from_numpy(a)).detach().numpy() + d  # noqa: E731
        kwargs = dict(atol=tol.atol, min_top1_agreement=tol.min_top1_agreement, min_psnr_db=tol.min_psnr_db)
        if ok:
            report = validate_against_reference("tflite", reference, run, x, **kwargs)
            assert report.psnr_db == pytest.approx(60, abs=0.5) and any("PSNR" in c for c in report.checks)
        else:
            with pytest.raises(ValidationError, match=r"logits PSNR vs PyTorch 20\.0 dB < 30 dB"):
                validate_against_reference("tflite", reference, run, x, **kwargs)


def test_coreml_fp32_image_classifier_folds_mean_std_and_labels(sliced: nn.Module, tmp_path: Path) -> None:
    path = tmp_path / "m.mlpackage"
    options = ExportOptions(precision="fp32", input_type="image", mean=MEAN, std=STD, class_names=CLASSES,
                            metadata=META)
    report = _export(CoreMLExporter(), sliced, path, options)
    assert any("bit-exact float32" in c for c in report.checks), report.checks
    assert "input 'input': 32x32 GRAYSCALE image" in report.checks
    assert "class labels (10)" in report.checks
    scale, bias = 1 / (255 * STD[0]), -MEAN[0] / STD[0]
    assert f"image preprocessing folds mean/std: x * {scale:.6g} + [{round(bias, 6)}]" in report.checks
    import coremltools as ct

    spec = ct.models.MLModel(str(path), skip_model_load=True).get_spec()
    assert spec.description.predictedFeatureName == "classLabel"
    assert {o.name for o in spec.description.output} == {"classLabel", "classLabel_probs"}


def test_coreml_corrupted_weight_fails_the_weight_check_and_leaves_no_package(sliced: nn.Module,
                                                                              tmp_path: Path) -> None:
    with pytest.raises(ValidationError) as caught:
        _export(CorruptingCoreMLExporter(), sliced, tmp_path / "m.mlpackage", ExportOptions(precision="fp32"))
    failures = caught.value.failures
    assert len(failures) == 1, failures
    assert failures[0].startswith("coreml: classifier.weight (op ") and "1 of 3200 values differ" in failures[0]
    assert list(tmp_path.iterdir()) == []


def test_bn_folding_is_deterministic_and_preserves_outputs(sliced: nn.Module) -> None:
    a, b = fold_batchnorm(sliced), fold_batchnorm(sliced)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in a.modules())
    for (name, p), (_, q) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(p, q), name
    x = torch.from_numpy(_inputs(4, seed=3))
    with torch.no_grad():
        assert torch.allclose(a(x), sliced(x), atol=1e-5)


@macos_only
def test_coreml_predictions_match_pytorch_on_macos(sliced: nn.Module, val, tmp_path: Path) -> None:
    fp32 = _export(CoreMLExporter(), sliced, tmp_path / "a.mlpackage", ExportOptions(precision="fp32"), val)
    assert fp32.numerics_run and fp32.max_abs_diff <= 1e-4 and fp32.top1_agreement == 1.0
    fp16 = _export(CoreMLExporter(), sliced, tmp_path / "b.mlpackage", ExportOptions(precision="fp16"), val)
    assert fp16.numerics_run and fp16.top1_agreement >= 0.99 and fp16.psnr_db is not None


# -- TFLite ----------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tflite_nhwc(sliced: nn.Module, val, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ValidationReport]:
    path = tmp_path_factory.mktemp("tflite") / "m.tflite"
    return path, _export(TFLiteExporter(), sliced, path, ExportOptions(metadata=META), val)  # default: NHWC fp32


def test_tflite_fp32_nhwc_matches_pytorch(tflite_nhwc) -> None:
    path, report = tflite_nhwc
    assert report.numerics_run and report.atol == 1e-4
    assert report.max_abs_diff <= 1e-4 and report.top1_agreement == 1.0 and report.n_val == 359
    assert "input 'input' [1, 32, 32, 1] (NHWC)" in report.checks and "weights stored as float32" in report.checks
    meta = read_metadata(path.read_bytes())
    assert {k: meta[k] for k in META} == META and meta["slimzoo.layout"] == "nhwc"
    assert sorted(p.name for p in path.parent.iterdir()) == ["m.tflite"]


def test_tflite_fp32_nchw_matches_pytorch(sliced: nn.Module, val, tmp_path: Path) -> None:
    report = _export(TFLiteExporter(), sliced, tmp_path / "m.tflite", ExportOptions(layout="nchw"), val)
    assert report.max_abs_diff <= 1e-4 and report.top1_agreement == 1.0
    assert "input 'input' [1, 1, 32, 32] (NCHW)" in report.checks


def test_tflite_fp16_weights_same_top1_and_psnr(sliced: nn.Module, val, tflite_nhwc, tmp_path: Path) -> None:
    path = tmp_path / "m.tflite"
    report = _export(TFLiteExporter(), sliced, path, ExportOptions(precision="fp16"), val)
    assert report.atol is None and report.min_top1_agreement == 0.99
    assert report.top1_agreement >= 0.99 and report.psnr_db is not None and report.psnr_db > 40
    assert "weights stored as float16" in report.checks
    assert path.stat().st_size < 0.7 * tflite_nhwc[0].stat().st_size


def test_tflite_corrupted_weight_fails_and_leaves_no_file(sliced: nn.Module, tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match=r"max \|tflite - PyTorch\| = .* > 0.0001"):
        _export(CorruptingTFLiteExporter(), sliced, tmp_path / "m.tflite", ExportOptions())
    assert list(tmp_path.iterdir()) == []


# -- same model, every format --------------------------------------------------------------------------------
def test_onnx_and_tflite_of_the_same_model_agree(sliced: nn.Module, tflite_nhwc, tmp_path: Path) -> None:
    onnx_path = tmp_path / "m.onnx"
    _export(OnnxExporter(), sliced, onnx_path, ExportOptions())
    x = _inputs(16, seed=7)
    from_onnx = OnnxExporter().runner(onnx_path, ExportOptions())(x)
    from_tflite = TFLiteExporter().runner(tflite_nhwc[0], ExportOptions())(x)
    assert from_onnx.shape == from_tflite.shape == (16, 10)
    assert float(np.max(np.abs(from_onnx - from_tflite))) <= 1e-4
    assert (from_onnx.argmax(1) == from_tflite.argmax(1)).all()


# -- shared validation routine and directory writes ----------------------------------------------------------
def test_psnr_is_reported_and_none_when_identical() -> None:
    a = np.array([[0.0, 1.0], [2.0, 3.0]])
    assert logits_psnr(a, a) is None
    assert logits_psnr(a, a + 0.03) == pytest.approx(20 * np.log10(3 / 0.03))


def test_atomic_tree_writes_directories_whole_or_not_at_all(tmp_path: Path) -> None:
    target = tmp_path / "m.mlpackage"
    with atomic_tree(target) as tmp:
        assert tmp.name == "m.mlpackage" and tmp.parent != tmp_path
        (tmp / "Data").mkdir(parents=True)
        (tmp / "Data" / "w.bin").write_bytes(b"v1")
    assert (target / "Data" / "w.bin").read_bytes() == b"v1" and tree_size(target) == 2
    first = tree_sha256(target)
    with pytest.raises(RuntimeError):
        with atomic_tree(target) as tmp:
            (tmp / "Data").mkdir(parents=True)
            (tmp / "Data" / "w.bin").write_bytes(b"half")
            raise RuntimeError("converter crashed")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.mlpackage"]  # old one intact, no temp dir
    assert tree_sha256(target) == first
    with atomic_tree(target) as tmp:  # replacing an existing package
        tmp.mkdir()
        (tmp / "Manifest.json").write_text("{}")
    assert sorted(p.name for p in target.iterdir()) == ["Manifest.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.mlpackage"]


# -- the command line ------------------------------------------------------------------------------------------
def _slimzoo(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "slimzoo.cli", *args], capture_output=True, text=True,
                          env={**os.environ, "COLUMNS": "200"}, timeout=600)


def test_cli_exports_coreml_for_iphone12_with_sidecar(tmp_path: Path) -> None:
    proc = _slimzoo("export", "--platform", "iphone12", "--format", "coreml", "--out", str(tmp_path), "--json")
    assert proc.returncode == 0, proc.stderr
    assert "Failed to load" not in proc.stderr + proc.stdout and "has not been tested" not in proc.stderr
    sidecar = json.loads(proc.stdout)
    package = tmp_path / "iphone12.mlpackage"
    assert package.is_dir() and sorted(p.name for p in tmp_path.iterdir()) == ["iphone12.mlpackage",
                                                                              "iphone12.mlpackage.json"]
    assert json.loads((tmp_path / "iphone12.mlpackage.json").read_text()) == sidecar
    assert (sidecar["format"], sidecar["precision"], sidecar["layout"], sidecar["input_type"]) == \
        ("coreml", "fp16", "nchw", "tensor")
    assert sidecar["minimum_deployment_target"] == "iOS16"
    assert sidecar["size_bytes"] == tree_size(package) and sidecar["sha256"] == tree_sha256(package)
    validation = sidecar["validation"]
    assert validation["numerics_run"] is can_predict()
    if not can_predict():
        assert "Core ML prediction needs macOS" in validation["note"]
    assert any(c.startswith("every stored weight equals the sliced PyTorch weight") for c in validation["checks"])
    assert sidecar["tool_versions"]["coremltools"] == "9.0"


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["onnx", "coreml", "tflite"])
def test_every_builtin_platform_exports_in_every_format(fmt: str, tmp_path: Path) -> None:
    """The issue's "done when": `slimzoo export --platform P --format F` for every built-in platform (in-process,
    ~30 s per export here)."""
    from slimzoo import api
    from slimzoo.platforms import load_registry

    for platform in load_registry().names():
        result = api.export_platform(platform, fmt, tmp_path)
        side = result.sidecar
        assert result.model_path.exists() and result.sidecar_path.is_file()
        assert side["precision"] == get_exporter(fmt).default_precision
        assert side["predicted_latency_ms"] <= side["budget_ms"] * (1 + 1e-9)
        validation = side["validation"]
        if validation["numerics_run"]:
            assert validation["top1_agreement"] >= validation["min_top1_agreement"]
            assert validation["atol"] is None or validation["max_abs_diff"] <= validation["atol"]
        else:
            assert fmt == "coreml" and "Core ML prediction needs macOS" in validation["note"]
