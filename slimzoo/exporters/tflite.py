"""TFLite export through litert-torch (no TensorFlow needed), run here with ai-edge-litert's interpreter.

What is written: one ``.tflite`` file with a ``serving_default`` signature taking ``input`` and returning
``logits`` at batch 1, with BatchNorm folded into the convolutions first (as the converter would; doing it in
PyTorch halves the conversion time). The input is NHWC by default (what Android camera/image pipelines feed; the
transpose to PyTorch's NCHW is inside the model) or NCHW with ``--layout nchw``. ``--precision fp16`` stores the
weights as float16 (litert-torch's fp16 weight-only recipe: dequantised to float32 at load, computed in float32),
about half the size. ``ExportOptions.metadata`` goes into the flatbuffer's metadata table as one JSON entry named
``slimzoo``.

``--precision int8`` is full-integer post-training quantization through litert-torch's PT2E quantizer
(``litert_torch.quantize.pt2e_quantizer``): BatchNorm folded, the model captured with ``torch.export``,
observers inserted (weights int8 symmetric per output channel, activations int8 per tensor from histogram
observers), calibrated on ``ExportOptions.calibration``, converted to quantize/dequantize pairs and lowered by
litert-torch's static QDQ conversion into int8 TFLite kernels. The lowering gives the model int8 input and
output tensors; ``--io float`` (the default) puts a QUANTIZE op before the input and a DEQUANTIZE op after the
logits, so the file takes and returns float32 like the fp32 one; ``--io int8`` leaves them out: the caller
quantizes inputs (``q = round(x / scale) + zero_point``) and dequantizes outputs with the tensors' own scale and
zero point (stored in the file, and in its ``slimzoo`` metadata as ``slimzoo.input_quantization`` /
``slimzoo.output_quantization``). Residual adds whose operands carry different scales are lowered as
dequantize/add/quantize; everything else runs in int8.

Validation runs the file with the LiteRT interpreter (1 thread) through the shared routine; the runner takes
NCHW float arrays like every runner, transposes them for an NHWC model, and (int8 io) quantizes inputs and
dequantizes outputs itself.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch
    from torch import nn

from slimzoo.errors import ExportError
from slimzoo.exporters.base import (Exporter, ExportOptions, Inspection, Runner, fold_batchnorm, int8_facts, quiet,
                                    register_exporter)

SIGNATURE = "serving_default"
INPUT_NAME = "input"
OUTPUT_NAME = "logits"
METADATA_NAME = "slimzoo"
CALIBRATION_BATCH = 128
WEIGHTED_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")  # their input 1 is the weight tensor


def _signature(module: nn.Module, nhwc: bool) -> nn.Module:
    """``module`` with a named input (``input``, NHWC or NCHW) and a named output (``logits``)."""
    from torch import nn

    class Signature(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.module, self.nhwc = module, nhwc

        def forward(self, input: torch.Tensor) -> dict[str, torch.Tensor]:  # noqa: A002  (the signature's name)
            x = input.permute(0, 3, 1, 2) if self.nhwc else input
            return {OUTPUT_NAME: self.module(x)}

    return Signature()


@register_exporter
class TFLiteExporter(Exporter):
    name = "tflite"
    suffix = ".tflite"
    atol = 1e-4
    precisions = ("fp32", "fp16", "int8")
    default_precision = "fp32"
    layouts = ("nhwc", "nchw")
    default_layout = "nhwc"
    ios = ("float", "int8")

    def export(self, module: nn.Module, example_input: torch.Tensor, path: Path, options: ExportOptions) -> None:
        import torch

        options = self.resolve(options)
        example = example_input[:1].float()
        if example.ndim != 4:
            raise ExportError(f"tflite: expected an NCHW example input, got shape {tuple(example.shape)}")
        nhwc = options.layout == "nhwc"
        calibration = self.calibration(options, example) if options.precision == "int8" else None
        wrapped = _signature(fold_batchnorm(module), nhwc).eval()
        sample = example.permute(0, 2, 3, 1).contiguous() if nhwc else example
        facts = self._facts(options)
        with quiet(options.verbose):
            import litert_torch

            quant_config = None
            if options.precision == "fp16":
                from litert_torch.generative.quantize import quant_recipes

                quant_config = quant_recipes.full_fp16_recipe()
            try:
                if calibration is not None:
                    images = torch.from_numpy(calibration)
                    wrapped, quant_config = _pt2e_quantized(wrapped, images.permute(0, 2, 3, 1) if nhwc else images)
                edge_model = litert_torch.convert(wrapped, sample_kwargs={INPUT_NAME: sample},
                                                  quant_config=quant_config)
                flatbuffer = bytes(edge_model.model_content())
                if calibration is not None:
                    if options.io == "float":
                        flatbuffer = _float_interface(flatbuffer)
                    facts.update(_io_quantization(flatbuffer))
            except ExportError:
                raise
            except Exception as exc:  # the converter raises many types; the user gets one line
                raise ExportError(f"tflite conversion failed: {_first_line(exc)}") from exc
        path.write_bytes(_with_metadata(flatbuffer, {**options.metadata, **facts}))

    def runner(self, path: Path, options: ExportOptions) -> Runner:
        options = self.resolve(options)
        nhwc = options.layout == "nhwc"
        with quiet(options.verbose):
            runner = _signature_runner(path)

        feed = _Quantized(runner.get_input_details()[INPUT_NAME])
        fetch = _Quantized(runner.get_output_details()[OUTPUT_NAME])

        def run(x: np.ndarray) -> np.ndarray:
            x = np.asarray(x, dtype=np.float32)
            if nhwc:
                x = x.transpose(0, 2, 3, 1)
            rows = [fetch.dequantize(runner(**{INPUT_NAME: feed.quantize(np.ascontiguousarray(x[i:i + 1]))})[
                OUTPUT_NAME]) for i in range(len(x))]
            return np.concatenate(rows, axis=0) if rows else np.zeros((0,), np.float32)

        return run

    def inspect(self, path: Path, reference: nn.Module, example_input: torch.Tensor,
                options: ExportOptions) -> Inspection:
        """What the numerics do not show: signature names and shapes, weights stored as float16 where fp16
        (and none where fp32), int8 with one scale per output channel where int8 (and the input/output types of
        ``--io``), the slimzoo metadata."""
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
        if options.precision == "int8":
            _check_int8(data, interpreter, options, result)
        elif options.precision == "fp16" and "float16" not in dtypes:
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
        weights = {"fp16": "float16 (dequantised to float32 at load)", "int8": "int8"}.get(options.precision,
                                                                                            "float32")
        facts: dict[str, Any] = {"signature": SIGNATURE, "input_name": INPUT_NAME, "output_name": OUTPUT_NAME,
                                 "weights": weights}
        if options.precision == "int8":
            facts.update(int8_facts(
                options, "litert-torch PT2E quantizer (static, full integer; BatchNorm folded first)",
                "int8, symmetric, per output channel",
                "int8, per tensor, histogram-observer ranges calibrated on training images"))
            if options.io == "int8":
                facts["quantization"]["note"] = (
                    "int8 input and output: quantize inputs as round(x / scale) + zero_point and dequantize "
                    "logits as (q - zero_point) * scale, with the tensors' own scale and zero point (in the "
                    "file, and in its slimzoo metadata: slimzoo.input_quantization, slimzoo.output_quantization)")
        return facts

    def versions(self) -> dict[str, str]:
        from importlib.metadata import version

        return {**super().versions(), "litert-torch": version("litert-torch"),
                "ai-edge-litert": version("ai-edge-litert")}

    def _facts(self, options: ExportOptions) -> dict[str, str]:
        facts = {"slimzoo.precision": str(options.precision), "slimzoo.layout": str(options.layout)}
        if options.precision == "int8":
            facts["slimzoo.io"] = str(options.io)
        return facts


class _Quantized:
    """Moves float arrays to and from one signature tensor: identity for a float tensor, scale/zero-point
    (de)quantization for an int8 one."""

    def __init__(self, detail: dict[str, Any]) -> None:
        self.dtype = np.dtype(detail["dtype"])
        self.scale, self.zero_point = (float(v) for v in detail["quantization"])
        if self.dtype != np.float32 and self.scale == 0.0:
            raise ExportError(f"tflite: {self.dtype.name} tensor '{detail['name']}' has no quantization scale")

    def quantize(self, x: np.ndarray) -> np.ndarray:
        if self.dtype == np.float32:
            return x
        info = np.iinfo(self.dtype)
        return np.clip(np.round(x / self.scale) + self.zero_point, info.min, info.max).astype(self.dtype)

    def dequantize(self, q: np.ndarray) -> np.ndarray:
        if self.dtype == np.float32:
            return q
        return ((q.astype(np.float32) - self.zero_point) * self.scale).astype(np.float32)


def _pt2e_quantized(wrapped: nn.Module, images: torch.Tensor) -> tuple[nn.Module, Any]:
    """``wrapped`` captured, observed on ``images`` (in the model's input layout) and converted to a PT2E
    quantize/dequantize graph, with the litert-torch config that lowers it statically."""
    import torch
    from litert_torch.quantize import pt2e_quantizer
    from litert_torch.quantize.quant_config import QuantConfig
    from torchao.quantization.pt2e import quantize_pt2e

    batch = torch.export.Dim("batch", min=1, max=max(2, len(images)))
    captured = torch.export.export(wrapped, (), kwargs={INPUT_NAME: images[:2].contiguous()},
                                   dynamic_shapes={INPUT_NAME: {0: batch}}).module()
    quantizer = pt2e_quantizer.PT2EQuantizer().set_global(
        pt2e_quantizer.get_symmetric_quantization_config(is_per_channel=True))
    observed = quantize_pt2e.prepare_pt2e(captured, quantizer)
    with torch.no_grad():
        for start in range(0, len(images), CALIBRATION_BATCH):
            observed(**{INPUT_NAME: images[start:start + CALIBRATION_BATCH].contiguous()})
    return quantize_pt2e.convert_pt2e(observed, fold_quantize=False), QuantConfig(pt2e_quantizer=quantizer)


def _opcode(model: Any, builtin: int, version: int) -> int:
    """Index of ``builtin``'s operator code in ``model`` (added when absent)."""
    from ai_edge_litert import schema_py_generated as schema

    for index, code in enumerate(model.operatorCodes):
        if max(code.builtinCode, code.deprecatedBuiltinCode) == builtin:
            return index
    code = schema.OperatorCodeT()
    code.builtinCode, code.deprecatedBuiltinCode, code.version = builtin, min(builtin, 127), version
    model.operatorCodes.append(code)
    return len(model.operatorCodes) - 1


def _float_interface(flatbuffer: bytes) -> bytes:
    """``flatbuffer`` (int8 input and output) with a float32 input quantized by a QUANTIZE op and a float32
    output made by a DEQUANTIZE op, under the same tensor names and signature keys: what ``--io float`` gives."""
    import copy as _copy

    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model_from_bytearray(bytearray(flatbuffer))
    graph = model.subgraphs[0]
    ops = {"inputs": (schema.BuiltinOperator.QUANTIZE, schema.BuiltinOptions.QuantizeOptions,
                      schema.QuantizeOptionsT),
           "outputs": (schema.BuiltinOperator.DEQUANTIZE, schema.BuiltinOptions.DequantizeOptions,
                       schema.DequantizeOptionsT)}
    replaced: dict[str, dict[int, int]] = {"inputs": {}, "outputs": {}}
    for side, (builtin, options_type, options_class) in ops.items():
        for old in getattr(graph, side):
            tensor = graph.tensors[old]
            if tensor.type == schema.TensorType.FLOAT32:
                continue
            floating = _copy.deepcopy(tensor)
            floating.type, floating.quantization = schema.TensorType.FLOAT32, None
            buffer = schema.BufferT()
            model.buffers.append(buffer)
            floating.buffer = len(model.buffers) - 1
            tensor.name = (tensor.name.decode() if isinstance(tensor.name, bytes) else tensor.name) + "_int8"
            graph.tensors.append(floating)
            new = len(graph.tensors) - 1
            op = schema.OperatorT()
            op.opcodeIndex = _opcode(model, builtin, 2)
            op.inputs, op.outputs = ([new], [old]) if side == "inputs" else ([old], [new])
            op.builtinOptionsType, op.builtinOptions = options_type, options_class()
            graph.operators = [op, *graph.operators] if side == "inputs" else [*graph.operators, op]
            replaced[side][old] = new
        setattr(graph, side, [replaced[side].get(i, i) for i in getattr(graph, side)])
    for signature in model.signatureDefs or []:
        for side in ("inputs", "outputs"):
            for entry in getattr(signature, side) or []:
                entry.tensorIndex = replaced[side].get(entry.tensorIndex, entry.tensorIndex)
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def _io_quantization(flatbuffer: bytes) -> dict[str, str]:
    """The int8 input/output tensors' scale and zero point, as metadata entries (``--io int8`` needs them)."""
    from ai_edge_litert.interpreter import Interpreter

    runner = Interpreter(model_content=flatbuffer).get_signature_runner(SIGNATURE)
    facts = {}
    for key, details in (("input", runner.get_input_details()[INPUT_NAME]),
                         ("output", runner.get_output_details()[OUTPUT_NAME])):
        scale, zero_point = details["quantization"]
        if np.dtype(details["dtype"]) != np.float32:
            facts[f"slimzoo.{key}_quantization"] = json.dumps({"dtype": np.dtype(details["dtype"]).name,
                                                               "scale": float(scale), "zero_point": int(zero_point)})
    return facts


def _check_int8(data: bytes, interpreter: Any, options: ExportOptions, result: Inspection) -> None:
    """Every conv/depthwise/fully-connected weight is int8 with one scale per output channel (per-channel
    symmetric: zero points 0); the input and output are int8 for ``--io int8``, float32 for ``--io float``."""
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.tools import flatbuffer_utils

    fail, ok = result.failures.append, result.checks.append
    n_failures = len(result.failures)
    model = flatbuffer_utils.read_model_from_bytearray(bytearray(data))
    graph = model.subgraphs[0]
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    n_weighted = 0
    for op in graph.operators:
        code = model.operatorCodes[op.opcodeIndex]
        kind = names.get(max(code.builtinCode, code.deprecatedBuiltinCode), "?")
        if kind not in WEIGHTED_OPS:
            continue
        n_weighted += 1
        weight = graph.tensors[op.inputs[1]]
        name = weight.name.decode() if isinstance(weight.name, bytes) else weight.name
        quant = weight.quantization
        scales = np.asarray(quant.scale if quant is not None and quant.scale is not None else [])
        zero_points = np.asarray(quant.zeroPoint if quant is not None and quant.zeroPoint is not None else [])
        channels = weight.shape[quant.quantizedDimension] if quant is not None and len(scales) > 1 else 1
        if weight.type != schema.TensorType.INT8:
            fail(f"{kind} weight '{name}' is not stored as int8")
        elif len(scales) != channels or channels != weight.shape[3 if kind == "DEPTHWISE_CONV_2D" else 0]:
            fail(f"{kind} weight '{name}' has {len(scales)} scales, not one per output channel")
        elif not np.all(scales > 0) or np.any(zero_points != 0):
            fail(f"{kind} weight '{name}' has non-positive scales or non-zero zero points (not symmetric)")
    if n_weighted and len(result.failures) == n_failures:
        ok(f"weights stored as int8, symmetric, one scale per output channel ({n_weighted} conv/FC layers)")
    elif not n_weighted:
        fail("no conv or fully-connected layer found to check the int8 weights of")
    want = np.int8 if options.io == "int8" else np.float32
    runner = interpreter.get_signature_runner(SIGNATURE)
    got = [np.dtype(runner.get_input_details()[INPUT_NAME]["dtype"]),
           np.dtype(runner.get_output_details()[OUTPUT_NAME]["dtype"])]
    if got != [np.dtype(want)] * 2:
        fail(f"--io {options.io}: input and output are {got[0].name} and {got[1].name}, expected "
             f"{np.dtype(want).name}")
    else:
        ok(f"input and output {np.dtype(want).name} (--io {options.io})")


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
