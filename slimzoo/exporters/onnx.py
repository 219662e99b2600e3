"""ONNX export through ``torch.onnx.export`` (the torch.export-based exporter), validated with ONNX Runtime."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import numpy as np
import torch
from torch import nn

from slimzoo.exporters.base import Exporter, ExportOptions, Runner, register_exporter

OPSET = 18


@register_exporter
class OnnxExporter(Exporter):
    name = "onnx"
    suffix = ".onnx"
    atol = 1e-4

    def export(self, module: nn.Module, example_input: torch.Tensor, path: Path, options: ExportOptions) -> None:
        import onnx

        self.check_options(options)
        batch = torch.export.Dim("batch", min=1, max=4096)
        # The exporter reports its stages on stdout; keep the user's terminal for slimzoo's own output.
        with contextlib.redirect_stdout(io.StringIO()):
            torch.onnx.export(module.eval(), (example_input,), str(path), input_names=["input"],
                              output_names=["logits"], dynamo=True, external_data=False, opset_version=OPSET,
                              dynamic_shapes={"x": {0: batch}}, verbose=False)
        model = onnx.load(str(path))
        for key, value in sorted(options.metadata.items()):
            model.metadata_props.add(key=key, value=value)
        onnx.checker.check_model(model)
        onnx.save(model, str(path))

    def runner(self, path: Path, options: ExportOptions) -> Runner:
        import onnxruntime as ort

        session_options = ort.SessionOptions()
        session_options.log_severity_level = 3
        session = ort.InferenceSession(str(path), session_options, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name

        def run(x: np.ndarray) -> np.ndarray:
            return session.run(None, {name: np.ascontiguousarray(x, dtype=np.float32)})[0]

        return run

    def versions(self) -> dict[str, str]:
        import onnx
        import onnxruntime

        return {**super().versions(), "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__,
                "opset": str(OPSET)}
