"""Latency probes: the models slimzoo times, built directly from the spec, never exported from PyTorch.

For ONNX Runtime a probe is written with ``onnx.helper`` (Conv with bias, ``group = c`` for depthwise; Clip(0, 6),
Relu or HardSwish for the activation; Add for a residual or an add layer; GlobalAveragePool + Conv + Relu + Conv +
HardSigmoid + Mul for squeeze-and-excitation; GlobalAveragePool + Flatten + Gemm for the classifier), for LiteRT as
a TFLite flatbuffer written with the TFLite schema (CONV_2D / DEPTHWISE_CONV_2D with fused ReLU6 or ReLU, HARD_SWISH,
ADD, MEAN + CONV_2D + MUL for squeeze-and-excitation, MEAN + FULLY_CONNECTED, NHWC). Every layer is built from its
spec fields alone (``kind``, ``act``, ``inputs``), whatever the family. Building graphs by hand is what makes the
~2000 probes of the shipped spec take about a minute rather than an hour, and a whole network is the same pieces
wired as the spec's graph says (each layer reads the outputs its ``inputs`` name), so a layer probe and a network
agree on what a layer is.

Each builder takes a format (``onnx`` or ``tflite``) and returns the model's bytes with random input feeds
(:data:`Model`); the ``*_probe`` functions return the bytes alone, for a profiling kit. ``onnx`` and
``ai_edge_litert`` are imported only when a probe is built.

**int8 probes** (``precision="int8"``). ONNX: the fp32 probe quantized by ONNX Runtime's own tool,
``onnxruntime.quantization.quantize_static`` (QDQ format, per-channel int8 weights, uint8 activations, MinMax
calibration on random feeds of the probe's input shapes; :data:`ONNX_INT8`), which is what an int8 ONNX export
through that tool looks like. TFLite: a full-integer flatbuffer written directly, as the fp32 ones are (int8
activations with per-tensor scales, int8 weights with per-channel scales and zero points 0, int32 biases whose
scale is input scale x weight scale, as TFLite's converter writes them): a layer probe takes and gives int8 (in a
network the tensors between layers stay int8), a whole network takes and gives float through QUANTIZE and
DEQUANTIZE, as a deployed model with float input and output does. The identity probe is the same at every
precision: it measures what every run costs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from slimzoo.platforms.latency import DEFAULT_PRECISION
from slimzoo.zoo.spec import NETWORK_INPUT, ArchSpec, LayerSpec

__all__ = ["IR_VERSION", "ONNX_INT8", "OPSET", "PROBE_PRECISIONS", "TFLITE_INT8", "Model", "identity_model",
           "identity_probe", "layer_model", "layer_probe", "network_model", "network_probe", "quantize_onnx"]

# The precisions probes can be built in, per format (fp16 probes are not built: no runtime here gains from them).
PROBE_PRECISIONS: dict[str, tuple[str, ...]] = {"onnx": ("fp32", "int8"), "tflite": ("fp32", "int8")}
# How an int8 ONNX probe is quantized (recorded in every int8 table's provenance). uint8 activations with int8
# weights (U8S8) is ONNX Runtime's fast x86 path: S8S8 QDQ models ran 2x slower than U8S8 on the development VM.
ONNX_INT8: dict[str, Any] = {"tool": "onnxruntime.quantization.quantize_static", "quant_format": "QDQ",
                             "per_channel": True, "activation_type": "QUInt8", "weight_type": "QInt8",
                             "calibrate_method": "MinMax", "calibration_feeds": 4,
                             "calibration_data": "standard normal random feeds of the probe's input shapes"}
TFLITE_INT8: dict[str, Any] = {"tool": "slimzoo (hand-built full-integer flatbuffer, TFLite schema)",
                               "activations": "int8, per-tensor scale", "weights": "int8, per-channel scale, zero "
                               "point 0 (fully connected: per-tensor)", "bias": "int32, scale = input x weight scale",
                               "layer_io": "int8", "network_io": "float32 through QUANTIZE / DEQUANTIZE"}

Model = tuple[bytes, dict[str, np.ndarray]]  # a model file's bytes, and a random feed for each of its inputs

OPSET = 17
IR_VERSION = 8  # old enough for any onnxruntime that supports opset 17

# -- ONNX probes ----------------------------------------------------------------------------------------------
@dataclass
class _Graph:
    """Accumulates nodes, weights and inputs so one layer, or a chain of them, becomes one ONNX model."""

    rng: np.random.Generator
    nodes: list[Any] = field(default_factory=list)
    initializers: list[Any] = field(default_factory=list)
    inputs: list[Any] = field(default_factory=list)
    feeds: dict[str, np.ndarray] = field(default_factory=dict)
    count: int = 0

    def fresh(self, stem: str) -> str:
        self.count += 1
        return f"{stem}_{self.count}"

    def weight(self, stem: str, shape: tuple[int, ...]) -> str:
        from onnx import numpy_helper

        name = self.fresh(stem)
        fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
        value = (self.rng.standard_normal(shape) / np.sqrt(max(fan_in, 1))).astype(np.float32)
        self.initializers.append(numpy_helper.from_array(value, name))
        return name

    def constant(self, stem: str, value: float) -> str:
        from onnx import numpy_helper

        name = self.fresh(stem)
        self.initializers.append(numpy_helper.from_array(np.array(value, dtype=np.float32), name))
        return name

    def input(self, stem: str, shape: tuple[int, ...]) -> str:
        from onnx import TensorProto, helper

        name = self.fresh(stem)
        self.inputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, list(shape)))
        self.feeds[name] = self.rng.standard_normal(shape).astype(np.float32)
        return name

    def node(self, op: str, inputs: list[str], **attrs: Any) -> str:
        from onnx import helper

        out = self.fresh(op.lower())
        self.nodes.append(helper.make_node(op, inputs, [out], **attrs))
        return out

    def conv(self, x: str, c_in: int, c_out: int, kernel: int = 1, stride: int = 1, group: int = 1) -> str:
        k = kernel
        return self.node("Conv", [x, self.weight("w", (c_out, c_in // group, k, k)), self.weight("b", (c_out,))],
                         kernel_shape=[k, k], strides=[stride] * 2, pads=[k // 2] * 4, group=group)

    def activation(self, y: str, act: str | None) -> str:
        if act == "relu6":
            return self.node("Clip", [y, self.constant("lo", 0.0), self.constant("hi", 6.0)])
        if act == "relu":
            return self.node("Relu", [y])
        if act == "hswish":
            return self.node("HardSwish", [y])
        return y

    def layer(self, layer: LayerSpec, c_in: int, c_out: int, inputs: Sequence[str]) -> str:
        """Append one spec layer reading ``inputs`` (the tensors its ``inputs`` name, main input first)."""
        x = inputs[0]
        if layer.kind == "pool_linear":
            pooled = self.node("Flatten", [self.node("GlobalAveragePool", [x])], axis=1)
            y = self.node("Gemm", [pooled, self.weight("fc_w", (c_out, c_in)), self.weight("fc_b", (c_out,))],
                          transB=1)
        elif layer.kind == "se":  # c_in channels squeezed to c_out and back, the gate scaling the input
            squeezed = self.node("Relu", [self.conv(self.node("GlobalAveragePool", [x]), c_in, c_out)])
            gate = self.node("HardSigmoid", [self.conv(squeezed, c_out, c_in)], alpha=1.0 / 6.0, beta=0.5)
            y = self.node("Mul", [x, gate])
        elif layer.kind == "add":
            y = x
            for other in inputs[1:]:
                y = self.node("Add", [y, other])
        else:
            y = self.conv(x, c_in, c_out, layer.kernel, layer.stride, c_in if layer.kind == "dwconv" else 1)
        y = self.activation(y, layer.act)
        if layer.residual:  # a fused residual: the conv's output plus its second input
            y = self.node("Add", [y, inputs[1]])
        return y

    def model(self, output: str, out_shape: tuple[int, ...]) -> bytes:
        from onnx import TensorProto, helper

        graph = helper.make_graph(self.nodes, "slimzoo_profile", self.inputs,
                                  [helper.make_tensor_value_info(output, TensorProto.FLOAT, list(out_shape))],
                                  self.initializers)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR_VERSION,
                                  producer_name="slimzoo")
        return model.SerializeToString()


def _out_channels(layer: LayerSpec, c_in: int, c_out: int) -> int:
    """The width of the layer's output tensor (``se`` scales its input: ``c_in``)."""
    return c_in if layer.kind == "se" else c_out


def _out_shape(layer: LayerSpec, c_in: int, c_out: int) -> tuple[int, ...]:
    if layer.kind == "pool_linear":
        return (1, c_out)
    return (1, _out_channels(layer, c_in, c_out), layer.out_hw, layer.out_hw)


def _layer_model(layer: LayerSpec, c_in: int, c_out: int, rng: np.random.Generator) -> Model:
    g = _Graph(rng)
    inputs = [g.input("x", (1, c_in, layer.in_hw, layer.in_hw))]
    # a residual's or an add layer's further operands have the output's shape
    inputs += [g.input("skip", _out_shape(layer, c_in, c_out)) for _ in layer.inputs[1:]]
    y = g.layer(layer, c_in, c_out, inputs)
    return g.model(y, _out_shape(layer, c_in, c_out)), g.feeds


def _identity_model(rng: np.random.Generator) -> Model:
    g = _Graph(rng)
    y = g.node("Identity", [g.input("x", (1, 1, 1, 1))])
    return g.model(y, (1, 1, 1, 1)), g.feeds


def _chain(spec: ArchSpec, config: Mapping[str, int], g: Any, nchw: bool) -> tuple[Any, tuple[int, ...]]:
    """Append every layer of ``spec`` at ``config`` to the graph builder ``g``; (output, its NCHW shape)."""
    first = next(layer for layer in spec.layers if NETWORK_INPUT in layer.inputs)
    c_in0, _ = spec.channels(first, config)
    shape = (1, c_in0, first.in_hw, first.in_hw)
    # every layer reads the tensors its spec inputs name: the graph is the spec's, residual ties included
    tensors: dict[str, Any] = {NETWORK_INPUT: g.input("x", shape if nchw else (1, first.in_hw, first.in_hw, c_in0))}
    out_shape: tuple[int, ...] = ()
    for layer in spec.layers:
        c_in, c_out = spec.channels(layer, config)
        tensors[layer.name] = g.layer(layer, c_in, c_out, [tensors[name] for name in layer.inputs])
        out_shape = _out_shape(layer, c_in, c_out)
    return tensors[spec.layers[-1].name], out_shape


def _network_model(spec: ArchSpec, config: Mapping[str, int], seed: int = 0) -> Model:
    g = _Graph(np.random.default_rng(seed))
    x, out_shape = _chain(spec, spec.validate(config), g, nchw=True)
    return g.model(x, out_shape), g.feeds


def quantize_onnx(model: bytes, feeds: Mapping[str, np.ndarray], rng: np.random.Generator) -> bytes:
    """``model`` quantized to int8 by ``onnxruntime.quantization.quantize_static`` with the settings of
    :data:`ONNX_INT8`, calibrated on random feeds shaped like ``feeds``."""
    import logging
    import tempfile
    from pathlib import Path

    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)

    calibration = [{name: rng.standard_normal(value.shape).astype(np.float32) for name, value in feeds.items()}
                   for _ in range(ONNX_INT8["calibration_feeds"])]

    class Reader(CalibrationDataReader):  # type: ignore[misc]
        def __init__(self) -> None:
            self.items = iter(calibration)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.items, None)

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # the tool logs a pre-processing hint on every call: not for a probe
    try:
        with tempfile.TemporaryDirectory(prefix="slimzoo-int8-") as tmp:
            source, target = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
            source.write_bytes(model)
            quantize_static(str(source), str(target), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            calibrate_method=CalibrationMethod.MinMax)
            return target.read_bytes()
    finally:
        root.setLevel(level)


# -- TFLite probes ----------------------------------------------------------------------------------------------
class _TFLiteGraph:
    """The TFLite twin of :class:`_Graph`: NHWC tensors, fused ReLU6, weights as constant buffers.

    Written with the TFLite schema's object API (``ai_edge_litert.schema_py_generated``), so a probe takes
    milliseconds instead of the seconds a PyTorch conversion takes; XNNPACK and ``benchmark_model`` run it as they
    run any converted model (conv weights OHWI, depthwise 1HWO, SAME padding, which for odd kernels with
    ``pad = k // 2`` gives the same output size as the ONNX probes).
    """

    # Activation scales of int8 probes (the values do not change the timing, only the kernels chosen by type):
    # after ReLU6, [0, 6] mapped onto int8; a linear output, about [-6.4, 6.4].
    RELU6_QUANT = (6.0 / 255.0, -128)
    RELU_QUANT = (0.05, -128)
    LINEAR_QUANT = (0.05, 0)

    def __init__(self, rng: np.random.Generator, int8: bool = False) -> None:
        from ai_edge_litert import schema_py_generated as schema

        self.schema = schema
        self.rng = rng
        self.int8 = int8
        empty = schema.BufferT()
        self.buffers: list[Any] = [empty]  # buffer 0 stays empty: activations point at it
        self.tensors: list[Any] = []
        self.operators: list[Any] = []
        self.opcodes: dict[int, int] = {}
        self.inputs: list[int] = []
        self.feeds: dict[str, np.ndarray] = {}

    def _tensor(self, name: str, shape: Sequence[int], data: np.ndarray | None = None,
                int32: bool = False, int8: bool = False, scale: Sequence[float] | None = None,
                zero_point: Sequence[int] | None = None, axis: int = 0) -> int:
        """A tensor (constant when ``data`` is given); with ``scale``, a quantized one (zero points default 0)."""
        s = self.schema
        tensor = s.TensorT()
        tensor.name = f"{name}_{len(self.tensors)}"
        tensor.shape = np.asarray(shape, dtype=np.int32)
        tensor.type = s.TensorType.INT32 if int32 else s.TensorType.INT8 if int8 else s.TensorType.FLOAT32
        tensor.buffer = 0
        if scale is not None:
            quant = s.QuantizationParametersT()
            quant.scale = np.asarray(scale, dtype=np.float32)
            quant.zeroPoint = np.asarray(zero_point if zero_point is not None else [0] * len(quant.scale),
                                         dtype=np.int64)
            quant.quantizedDimension = axis
            tensor.quantization = quant
        if data is not None:
            buffer = s.BufferT()
            buffer.data = np.frombuffer(np.ascontiguousarray(data).tobytes(), dtype=np.uint8)
            self.buffers.append(buffer)
            tensor.buffer = len(self.buffers) - 1
        self.tensors.append(tensor)
        return len(self.tensors) - 1

    def weight(self, name: str, shape: tuple[int, ...], fan_in: int, axis: int | None = 0) -> int:
        """A random weight; int8 probes: quantized symmetrically per channel along ``axis`` (None: per tensor)."""
        value = (self.rng.standard_normal(shape) / np.sqrt(max(fan_in, 1))).astype(np.float32)
        if not self.int8:
            return self._tensor(name, shape, value)
        moved = np.moveaxis(value, axis, 0).reshape(shape[axis], -1) if axis is not None else value.reshape(1, -1)
        scale = np.maximum(np.abs(moved).max(axis=1), 1e-8).astype(np.float32) / np.float32(127.0)
        per = scale.reshape([-1 if i == axis else 1 for i in range(len(shape))]) if axis is not None else scale[0]
        q = np.clip(np.round(value / per), -127, 127).astype(np.int8)
        return self._tensor(name, shape, q, int8=True, scale=scale, axis=axis or 0)

    def bias(self, name: str, x: int, weight: int, n: int) -> int:
        """A bias of ``n`` values; int8 probes: int32 with scale = input scale x weight scale, per channel."""
        if not self.int8:
            return self.weight(name, (n,), 1)
        w_scale = np.asarray(self.tensors[weight].quantization.scale, dtype=np.float32)
        scale = (np.float32(self.tensors[x].quantization.scale[0]) * np.broadcast_to(w_scale, (n,))).astype(np.float32)
        value = self.rng.integers(-1000, 1000, n).astype(np.int32)
        return self._tensor(name, (n,), value, int32=True, scale=scale)

    def input(self, name: str, shape: tuple[int, ...], quantize: bool = True) -> int:
        """A graph input. int8 probes: an int8 input (``quantize=False``: as a layer probe takes it), or a float
        input through QUANTIZE (as a whole network with float input takes it)."""
        if self.int8 and not quantize:
            index = self._tensor(name, shape, int8=True, scale=[self.LINEAR_QUANT[0]], zero_point=[0])
            self.inputs.append(index)
            self.feeds[self.tensors[index].name] = self.rng.integers(-128, 128, shape).astype(np.int8)
            return index
        index = self._tensor(name, shape)
        self.inputs.append(index)
        self.feeds[self.tensors[index].name] = self.rng.standard_normal(shape).astype(np.float32)
        if self.int8:
            return self.op(self.schema.BuiltinOperator.QUANTIZE, [index], shape)
        return index

    def op(self, code: int, inputs: list[int], out_shape: Sequence[int], options_type: int = 0,
           options: Any = None, quant: tuple[float, int] | None = None) -> int:
        """Append an operator; its output is int8 (scale and zero point ``quant``, else linear) in an int8 probe
        unless it is a DEQUANTIZE."""
        s = self.schema
        if code not in self.opcodes:
            self.opcodes[code] = len(self.opcodes)
        if self.int8 and code != s.BuiltinOperator.DEQUANTIZE:
            scale, zero = quant or self.LINEAR_QUANT
            out = self._tensor(f"op{code}", out_shape, int8=True, scale=[scale], zero_point=[zero])
        else:
            out = self._tensor(f"op{code}", out_shape)
        operator = s.OperatorT()
        operator.opcodeIndex = self.opcodes[code]
        operator.inputs = np.asarray(inputs, dtype=np.int32)
        operator.outputs = np.asarray([out], dtype=np.int32)
        operator.builtinOptionsType = options_type
        operator.builtinOptions = options
        self.operators.append(operator)
        return out

    def _activation(self, act: str | None) -> tuple[int, tuple[float, int]]:
        """(fused activation, int8 output quantization) of a spec activation; h-swish is no fused activation in
        TFLite: it is a HARD_SWISH op after the layer (:meth:`layer`)."""
        s = self.schema
        if act == "relu6":
            return s.ActivationFunctionType.RELU6, self.RELU6_QUANT
        if act == "relu":
            return s.ActivationFunctionType.RELU, self.RELU_QUANT
        return s.ActivationFunctionType.NONE, self.LINEAR_QUANT

    def _conv(self, x: int, c_in: int, c_out: int, kernel: int, stride: int, depthwise: bool, out_hw: int,
              fused: int, quant: tuple[float, int]) -> int:
        s = self.schema
        op, opts = s.BuiltinOperator, s.BuiltinOptions
        k = kernel
        if depthwise:
            conv = s.DepthwiseConv2DOptionsT()
            conv.depthMultiplier = 1
            weight = self.weight("dw_w", (1, k, k, c_out), k * k, axis=3)
            code, options_type = op.DEPTHWISE_CONV_2D, opts.DepthwiseConv2DOptions
        else:
            conv = s.Conv2DOptionsT()
            weight = self.weight("w", (c_out, k, k, c_in), k * k * c_in, axis=0)
            code, options_type = op.CONV_2D, opts.Conv2DOptions
        conv.padding = s.Padding.SAME
        conv.strideW = conv.strideH = stride
        conv.dilationWFactor = conv.dilationHFactor = 1
        conv.fusedActivationFunction = fused
        return self.op(code, [x, weight, self.bias("b", x, weight, c_out)], (1, out_hw, out_hw, c_out),
                       options_type, conv, quant=quant)

    def _add(self, a: int, b: int, fused: int, quant: tuple[float, int] | None = None) -> int:
        s = self.schema
        add = s.AddOptionsT()
        add.fusedActivationFunction = fused
        return self.op(s.BuiltinOperator.ADD, [a, b], self.tensors[a].shape, s.BuiltinOptions.AddOptions, add,
                       quant=quant)

    def layer(self, layer: LayerSpec, c_in: int, c_out: int, inputs: Sequence[int]) -> int:
        """Append one spec layer reading ``inputs`` (the tensors its ``inputs`` name, main input first)."""
        s = self.schema
        op, opts = s.BuiltinOperator, s.BuiltinOptions
        x = inputs[0]
        fused, out_quant = self._activation(layer.act)
        if layer.kind == "pool_linear":
            axes = self._tensor("axes", (2,), np.array([1, 2], dtype=np.int32), int32=True)
            mean_opts = s.ReducerOptionsT()
            mean_opts.keepDims = False
            pooled = self.op(op.MEAN, [x, axes], (1, c_in), opts.ReducerOptions, mean_opts,
                             quant=self._quant_of(x))
            fc = s.FullyConnectedOptionsT()
            fc.fusedActivationFunction = fused
            fc_w = self.weight("fc_w", (c_out, c_in), c_in, axis=None)
            y = self.op(op.FULLY_CONNECTED, [pooled, fc_w, self.bias("fc_b", pooled, fc_w, c_out)], (1, c_out),
                        opts.FullyConnectedOptions, fc, quant=out_quant)
        elif layer.kind == "se":
            # MEAN, 1x1 conv + ReLU, 1x1 conv + ReLU6 (the hard sigmoid's clamp: its +3 and /6 act on c_in values,
            # left out), MUL broadcasting the gate over the map: as TFLite's converter lays the block out
            axes = self._tensor("axes", (2,), np.array([1, 2], dtype=np.int32), int32=True)
            mean_opts = s.ReducerOptionsT()
            mean_opts.keepDims = True
            pooled = self.op(op.MEAN, [x, axes], (1, 1, 1, c_in), opts.ReducerOptions, mean_opts,
                             quant=self._quant_of(x))
            squeezed = self._conv(pooled, c_in, c_out, 1, 1, False, 1, s.ActivationFunctionType.RELU,
                                  self.RELU_QUANT)
            gate = self._conv(squeezed, c_out, c_in, 1, 1, False, 1, s.ActivationFunctionType.RELU6,
                              self.RELU6_QUANT)
            mul = s.MulOptionsT()
            mul.fusedActivationFunction = s.ActivationFunctionType.NONE
            y = self.op(op.MUL, [x, gate], self.tensors[x].shape, opts.MulOptions, mul, quant=self._quant_of(x))
        elif layer.kind == "add":
            y = x
            for i, other in enumerate(inputs[1:], start=2):
                last = i == len(inputs)
                y = self._add(y, other, fused if last else s.ActivationFunctionType.NONE,
                              out_quant if last else None)
        else:
            y = self._conv(x, c_in, c_out, layer.kernel, layer.stride, layer.kind == "dwconv", layer.out_hw, fused,
                           out_quant)
        if layer.act == "hswish":
            y = self.op(op.HARD_SWISH, [y], self.tensors[y].shape)
        if layer.residual:  # a fused residual: the conv's output plus its second input
            y = self._add(y, inputs[1], s.ActivationFunctionType.NONE)
        return y

    def _quant_of(self, index: int) -> tuple[float, int] | None:
        quant = self.tensors[index].quantization
        return None if quant is None else (float(quant.scale[0]), int(quant.zeroPoint[0]))

    def dequantize(self, x: int) -> int:
        """A float output: DEQUANTIZE of an int8 probe's last tensor (``x`` itself in an fp32 probe)."""
        if not self.int8:
            return x
        return self.op(self.schema.BuiltinOperator.DEQUANTIZE, [x], self.tensors[x].shape)

    # The operator versions TFLite's converter writes for int8 kernels (it writes 1 for float ones).
    INT8_VERSIONS = {"CONV_2D": 3, "DEPTHWISE_CONV_2D": 3, "ADD": 2, "MEAN": 2, "FULLY_CONNECTED": 4,
                     "QUANTIZE": 2, "DEQUANTIZE": 2, "MUL": 2}

    def model(self, output: int) -> bytes:
        from ai_edge_litert.tools import flatbuffer_utils

        s = self.schema
        subgraph = s.SubGraphT()
        subgraph.tensors = self.tensors
        subgraph.inputs = np.asarray(self.inputs, dtype=np.int32)
        subgraph.outputs = np.asarray([output], dtype=np.int32)
        subgraph.operators = self.operators
        subgraph.name = "main"
        model = s.ModelT()
        model.version = 3
        model.description = "slimzoo latency probe"
        model.buffers = self.buffers
        model.subgraphs = [subgraph]
        codes = []
        names = {getattr(s.BuiltinOperator, name): name for name in self.INT8_VERSIONS}
        for code, _ in sorted(self.opcodes.items(), key=lambda item: item[1]):
            opcode = s.OperatorCodeT()
            opcode.builtinCode = code
            opcode.deprecatedBuiltinCode = min(code, 127)
            opcode.version = self.INT8_VERSIONS.get(names.get(code, ""), 1) if self.int8 else 1
            codes.append(opcode)
        model.operatorCodes = codes
        return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def _tflite_out_shape(layer: LayerSpec, c_in: int, c_out: int) -> tuple[int, ...]:
    if layer.kind == "pool_linear":
        return (1, c_out)
    return (1, layer.out_hw, layer.out_hw, _out_channels(layer, c_in, c_out))


def _tflite_layer_model(layer: LayerSpec, c_in: int, c_out: int, rng: np.random.Generator,
                        int8: bool = False) -> Model:
    g = _TFLiteGraph(rng, int8)
    inputs = [g.input("x", (1, layer.in_hw, layer.in_hw, c_in), quantize=False)]
    inputs += [g.input("skip", _tflite_out_shape(layer, c_in, c_out), quantize=False) for _ in layer.inputs[1:]]
    return g.model(g.layer(layer, c_in, c_out, inputs)), g.feeds


def _tflite_identity_model(rng: np.random.Generator) -> Model:
    """The smallest model the runtime delegates (x + x on one element): the per-invoke cost."""
    g = _TFLiteGraph(rng)
    x = g.input("x", (1, 1, 1, 1))
    add = g.schema.AddOptionsT()
    add.fusedActivationFunction = g.schema.ActivationFunctionType.NONE
    y = g.op(g.schema.BuiltinOperator.ADD, [x, x], (1, 1, 1, 1), g.schema.BuiltinOptions.AddOptions, add)
    return g.model(y), g.feeds


def _tflite_network_model(spec: ArchSpec, config: Mapping[str, int], seed: int = 0, int8: bool = False) -> Model:
    g = _TFLiteGraph(np.random.default_rng(seed), int8)
    x, _ = _chain(spec, spec.validate(config), g, nchw=False)
    return g.model(g.dequantize(x)), g.feeds


def check_probe_precision(fmt: str, precision: str) -> str:
    """``precision`` if ``fmt`` probes can be built in it, else a one-line ValueError."""
    valid = PROBE_PRECISIONS.get(fmt, ())
    if precision not in valid:
        raise ValueError(f"{fmt} probes cannot be built in {precision}; valid: {', '.join(valid)}")
    return precision


def layer_model(fmt: str, layer: LayerSpec, c_in: int, c_out: int, rng: np.random.Generator,
                precision: str = DEFAULT_PRECISION) -> Model:
    """One layer at (c_in, c_out) as a standalone ``onnx`` or ``tflite`` model of ``precision``, with its feeds."""
    int8 = check_probe_precision(fmt, precision) == "int8"
    if fmt == "onnx":
        model, feeds = _layer_model(layer, c_in, c_out, rng)
        return (quantize_onnx(model, feeds, rng), feeds) if int8 else (model, feeds)
    return _tflite_layer_model(layer, c_in, c_out, rng, int8)


def network_model(fmt: str, spec: ArchSpec, config: Mapping[str, int], seed: int = 0,
                  precision: str = DEFAULT_PRECISION) -> Model:
    """The whole network at ``config`` as an ``onnx`` or ``tflite`` model of ``precision``, with its feeds."""
    int8 = check_probe_precision(fmt, precision) == "int8"
    if fmt == "onnx":
        model, feeds = _network_model(spec, config, seed)
        return (quantize_onnx(model, feeds, np.random.default_rng(seed + 1)), feeds) if int8 else (model, feeds)
    return _tflite_network_model(spec, config, seed, int8)


def identity_model(fmt: str, rng: np.random.Generator) -> Model:
    """The per-run cost probe (identity / one tiny add) as an ``onnx`` or ``tflite`` model, with its feeds (the
    same at every precision: what every run costs)."""
    return (_identity_model if fmt == "onnx" else _tflite_identity_model)(rng)


def layer_probe(fmt: str, layer: LayerSpec, c_in: int, c_out: int, seed: int = 0,
                precision: str = DEFAULT_PRECISION) -> bytes:
    """One layer at (c_in, c_out) as a standalone model file's bytes (``onnx`` or ``tflite``), for a kit."""
    return layer_model(fmt, layer, c_in, c_out, np.random.default_rng(seed), precision)[0]


def network_probe(fmt: str, spec: ArchSpec, config: Mapping[str, int], seed: int = 0,
                  precision: str = DEFAULT_PRECISION) -> bytes:
    """The whole network at ``config`` as a model file's bytes (``onnx`` or ``tflite``), for a kit."""
    return network_model(fmt, spec, config, seed, precision)[0]


def identity_probe(fmt: str, seed: int = 0) -> bytes:
    """The per-run cost probe (identity / one tiny add), for a kit."""
    return identity_model(fmt, np.random.default_rng(seed))[0]
