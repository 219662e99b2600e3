"""ONNX export through ``torch.onnx.export`` (the torch.export-based exporter), validated with ONNX Runtime.

``--precision int8`` is ONNX Runtime's own post-training static quantization
(``onnxruntime.quantization.quantize_static``): BatchNorm folded first, then QDQ format (QuantizeLinear /
DequantizeLinear pairs around each op, which ONNX Runtime fuses into integer kernels), weights int8 symmetric per
output channel, activations uint8 with ranges calibrated (min/max) on ``ExportOptions.calibration``. Inputs and
outputs stay float32: the model quantizes its input and dequantizes its logits itself.

The exporter's per-node debug metadata (``pkg.torch.onnx.*``: stack traces with the exporting machine's source
paths, FX node text) is dropped from every written model: it is not part of the model, and on a small network
it is a fifth of the file.
"""

from __future__ import annotations

import contextlib
import io
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch
    from torch import nn

from slimzoo.exporters.base import (Exporter, ExportOptions, Runner, fold_batchnorm, int8_facts, quiet,
                                    register_exporter)

OPSET = 18
CALIBRATION_BATCH = 64
DEBUG_METADATA_PREFIXES = ("pkg.torch.onnx.", "namespace")


@register_exporter
class OnnxExporter(Exporter):
    name = "onnx"
    suffix = ".onnx"
    atol = 1e-4
    precisions = ("fp32", "int8")

    def export(self, module: nn.Module, example_input: torch.Tensor, path: Path, options: ExportOptions) -> None:
        import onnx

        options = self.resolve(options)
        if options.precision == "int8":
            calibration = self.calibration(options, example_input)
            with tempfile.TemporaryDirectory(prefix="slimzoo-onnx-") as tmp:
                float_path = Path(tmp) / "float.onnx"
                self._export_float(fold_batchnorm(module), example_input, float_path)
                self._quantize(float_path, path, calibration, options)
        else:
            self._export_float(module, example_input, path)
        model = onnx.load(str(path))
        for node in model.graph.node:
            keep = [p for p in node.metadata_props if not p.key.startswith(DEBUG_METADATA_PREFIXES)]
            del node.metadata_props[:]
            node.metadata_props.extend(keep)
        for key, value in sorted(options.metadata.items()):
            model.metadata_props.add(key=key, value=value)
        onnx.checker.check_model(model)
        onnx.save(model, str(path))

    @staticmethod
    def _export_float(module: nn.Module, example_input: torch.Tensor, path: Path) -> None:
        import torch

        batch = torch.export.Dim("batch", min=1, max=4096)
        # The exporter reports its stages on stdout; keep the user's terminal for slimzoo's own output.
        with contextlib.redirect_stdout(io.StringIO()):
            torch.onnx.export(module.eval(), (example_input,), str(path), input_names=["input"],
                              output_names=["logits"], dynamo=True, external_data=False, opset_version=OPSET,
                              dynamic_shapes={"x": {0: batch}}, verbose=False)

    @staticmethod
    def _quantize(float_path: Path, path: Path, calibration: np.ndarray, options: ExportOptions) -> None:
        from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                              quantize_static)

        class Batches(CalibrationDataReader):
            def __init__(self) -> None:
                self.batches = iter(range(0, len(calibration), CALIBRATION_BATCH))

            def get_next(self) -> dict[str, np.ndarray] | None:
                start = next(self.batches, None)
                return None if start is None else {"input": calibration[start:start + CALIBRATION_BATCH]}

        with quiet(options.verbose):  # "consider pre-processing" warnings: BN is folded and shapes are static
            quantize_static(str(float_path), str(path), Batches(), quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            calibrate_method=CalibrationMethod.MinMax)

    def runner(self, path: Path, options: ExportOptions) -> Runner:
        import onnxruntime as ort

        session_options = ort.SessionOptions()
        session_options.log_severity_level = 3
        session = ort.InferenceSession(str(path), session_options, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name

        def run(x: np.ndarray) -> np.ndarray:
            return session.run(None, {name: np.ascontiguousarray(x, dtype=np.float32)})[0]

        return run

    def describe(self, options: ExportOptions) -> dict[str, Any]:
        options = self.resolve(options)
        if options.precision != "int8":
            return {}
        return int8_facts(options, "onnxruntime.quantization.quantize_static (QDQ format, BatchNorm folded first)",
                          "int8, symmetric, per output channel",
                          "uint8, per tensor, min/max ranges calibrated on training images")

    def versions(self) -> dict[str, str]:
        from importlib.metadata import version

        return {**super().versions(), "onnx": version("onnx"), "onnxruntime": version("onnxruntime"),
                "opset": str(OPSET)}
