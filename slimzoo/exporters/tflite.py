"""TFLite export through litert-torch (no TensorFlow needed), run here with ai-edge-litert's interpreter.

What is written: one ``.tflite`` file with a ``serving_default`` signature taking ``input`` and returning
``logits`` at batch 1, with BatchNorm folded into the convolutions first (as the converter would; doing it in
PyTorch halves the conversion time). The input is NHWC by default (what Android camera/image pipelines feed; the
transpose to PyTorch's NCHW is inside the model) or NCHW with ``--layout nchw``. ``--precision fp16`` stores the
weights as float16 (litert-torch's fp16 weight-only recipe: dequantised to float32 at load, computed in float32),
about half the size. ``ExportOptions.metadata`` goes into the flatbuffer's metadata table as one JSON entry named
``slimzoo``.

Validation runs the file with the LiteRT interpreter (1 thread) through the shared routine; the runner takes
NCHW arrays like every runner and transposes them for an NHWC model.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from slimzoo.errors import ExportError
from slimzoo.exporters.base import (Exporter, ExportOptions, Inspection, Runner, fold_batchnorm, quiet,
                                    register_exporter)

SIGNATURE = "serving_default"
INPUT_NAME = "input"
OUTPUT_NAME = "logits"
METADATA_NAME = "slimzoo"


class _Signature(nn.Module):
    """``module`` with a named input (``input``, NHWC or NCHW) and a named output (``logits``)."""

    def __init__(self, module: nn.Module, nhwc: bool) -> None:
        super().__init__()
        self.module, self.nhwc = module, nhwc

    def forward(self, input: torch.Tensor) -> dict[str, torch.Tensor]:  # noqa: A002  (the signature's name)
        x = input.permute(0, 3, 1, 2) if self.nhwc else input
        return {OUTPUT_NAME: self.module(x)}


@register_exporter
class TFLiteExporter(Exporter):
    name = "tflite"
    suffix = ".tflite"
    atol = 1e-4
    precisions = ("fp32", "fp16")
    default_precision = "fp32"
    layouts = ("nhwc", "nchw")
    default_layout = "nhwc"

    def export(self, module: nn.Module, example_input: torch.Tensor, path: Path, options: ExportOptions) -> None:
        options = self.resolve(options)
        example = example_input[:1].float()
        if example.ndim != 4:
            raise ExportError(f"tflite: expected an NCHW example input, got shape {tuple(example.shape)}")
        nhwc = options.layout == "nhwc"
        wrapped = _Signature(fold_batchnorm(module), nhwc).eval()
        sample = example.permute(0, 2, 3, 1).contiguous() if nhwc else example
        with quiet(options.verbose):
            import litert_torch

            quant_config = None
            if options.precision == "fp16":
                from litert_torch.generative.quantize import quant_recipes

                quant_config = quant_recipes.full_fp16_recipe()
            try:
                edge_model = litert_torch.convert(wrapped, sample_kwargs={INPUT_NAME: sample},
                                                  quant_config=quant_config)
                flatbuffer = bytes(edge_model.model_content())
            except ExportError:
                raise
            except Exception as exc:  # the converter raises many types; the user gets one line
                raise ExportError(f"tflite conversion failed: {_first_line(exc)}") from exc
        path.write_bytes(_with_metadata(flatbuffer, {**options.metadata, **self._facts(options)}))

    def runner(self, path: Path, options: ExportOptions) -> Runner:
        options = self.resolve(options)
        nhwc = options.layout == "nhwc"
        with quiet(options.verbose):
            runner = _signature_runner(path)

        def run(x: np.ndarray) -> np.ndarray:
            x = np.asarray(x, dtype=np.float32)
            if nhwc:
                x = x.transpose(0, 2, 3, 1)
            rows = [runner(**{INPUT_NAME: np.ascontiguousarray(x[i:i + 1])})[OUTPUT_NAME] for i in range(len(x))]
            return np.concatenate(rows, axis=0) if rows else np.zeros((0,), np.float32)

        return run

    def inspect(self, path: Path, reference: nn.Module, example_input: torch.Tensor,
                options: ExportOptions) -> Inspection:
        """What the numerics do not show: signature names and shapes, weights stored as float16 where fp16
        (and none where fp32), the slimzoo metadata."""
        options = self.resolve(options)
        result = Inspection()
        fail, ok = result.failures.append, result.checks.append
        data = path.read_bytes()
        with quiet(options.verbose):
            from ai_edge_litert.interpreter import Interpreter

            try:
                interpreter = Interpreter(model_content=data, num_threads=1)
            except Exception as exc:
                fail(f"the file does not load: {_first_line(exc)}")
                return result
        signatures = interpreter.get_signature_list()
        if signatures.get(SIGNATURE) != {"inputs": [INPUT_NAME], "outputs": [OUTPUT_NAME]}:
            fail(f"signatures are {signatures}, expected {SIGNATURE}: {INPUT_NAME} -> {OUTPUT_NAME}")
        n, c, h, w = example_input[:1].shape
        want = [1, h, w, c] if options.layout == "nhwc" else [1, c, h, w]
        got = [list(d["shape"]) for d in interpreter.get_input_details()]
        if got != [want]:
            fail(f"input shape {got} != [{want}] ({options.layout})")
        else:
            ok(f"input '{INPUT_NAME}' {want} ({options.layout.upper()})")
        dtypes = {np.dtype(d["dtype"]).name for d in interpreter.get_tensor_details()}
        if options.precision == "fp16" and "float16" not in dtypes:
            fail("--precision fp16 but no float16 tensor is stored")
        elif options.precision == "fp32" and "float16" in dtypes:
            fail("--precision fp32 but float16 tensors are stored")
        else:
            ok(f"weights stored as {'float16' if options.precision == 'fp16' else 'float32'}")
        stored = read_metadata(data)
        if any(stored.get(k) != v for k, v in options.metadata.items()):
            fail("slimzoo metadata missing or different")
        else:
            ok(f"metadata ({len(options.metadata)} slimzoo entries)")
        return result

    def describe(self, options: ExportOptions) -> dict[str, Any]:
        options = self.resolve(options)
        return {"signature": SIGNATURE, "input_name": INPUT_NAME, "output_name": OUTPUT_NAME,
                "weights": "float16 (dequantised to float32 at load)" if options.precision == "fp16" else "float32"}

    def versions(self) -> dict[str, str]:
        from importlib.metadata import version

        return {**super().versions(), "litert-torch": version("litert-torch"),
                "ai-edge-litert": version("ai-edge-litert")}

    def _facts(self, options: ExportOptions) -> dict[str, str]:
        return {"slimzoo.precision": str(options.precision), "slimzoo.layout": str(options.layout)}


def _signature_runner(path: Path) -> Any:
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path), num_threads=1)
    interpreter.allocate_tensors()  # creates the XNNPACK delegate now, inside quiet(), not at the first call
    runner = interpreter.get_signature_runner(SIGNATURE)
    details = runner.get_input_details()[INPUT_NAME]
    runner(**{INPUT_NAME: np.zeros(details["shape"], dtype=details["dtype"])})
    return runner


def _with_metadata(flatbuffer: bytes, metadata: dict[str, str]) -> bytes:
    """``flatbuffer`` with ``metadata`` as one JSON entry named ``slimzoo`` in the model's metadata table."""
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model_from_bytearray(bytearray(flatbuffer))
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(json.dumps(metadata, sort_keys=True).encode(), dtype=np.uint8)
    model.buffers.append(buffer)
    entry = schema.MetadataT()
    entry.name = METADATA_NAME.encode()
    entry.buffer = len(model.buffers) - 1
    model.metadata = [*(model.metadata or []), entry]
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def read_metadata(flatbuffer: bytes) -> dict[str, str]:
    """The ``slimzoo`` metadata entry of a ``.tflite`` file ({} when absent)."""
    from ai_edge_litert.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model_from_bytearray(bytearray(flatbuffer))
    for entry in model.metadata or []:
        name = entry.name.decode() if isinstance(entry.name, bytes) else entry.name
        if name == METADATA_NAME:
            raw = model.buffers[entry.buffer].data
            return json.loads(bytes(np.asarray(raw, dtype=np.uint8)).decode())
    return {}


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
