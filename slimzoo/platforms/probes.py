"""Latency probes: the models slimzoo times, built directly from the spec, never exported from PyTorch.

For ONNX Runtime a probe is written with ``onnx.helper`` (Conv with bias, Clip(0, 6) for the activation, Add for a
residual, ``group = c`` for depthwise, GlobalAveragePool + Flatten + Gemm for the classifier), for LiteRT as a
TFLite flatbuffer written with the TFLite schema (CONV_2D / DEPTHWISE_CONV_2D with fused ReLU6, ADD, MEAN +
FULLY_CONNECTED, NHWC). Building graphs by hand is what makes the ~2000 probes of the shipped spec take about a
minute rather than an hour, and a whole network is the same pieces chained, so a layer probe and a network agree
on what a layer is.

Each builder takes a format (``onnx`` or ``tflite``) and returns the model's bytes with random input feeds
(:data:`Model`); the ``*_probe`` functions return the bytes alone, for a profiling kit. ``onnx`` and
``ai_edge_litert`` are imported only when a probe is built.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from slimzoo.zoo.spec import ArchSpec, LayerSpec

__all__ = ["IR_VERSION", "OPSET", "Model", "identity_model", "identity_probe", "layer_model", "layer_probe",
           "network_model", "network_probe"]

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

    def layer(self, layer: LayerSpec, c_in: int, c_out: int, x: str, skip: str | None) -> str:
        """Append one spec layer reading ``x``; ``skip`` is the residual input when ``layer.residual``."""
        if layer.kind == "pool_linear":
            pooled = self.node("Flatten", [self.node("GlobalAveragePool", [x])], axis=1)
            y = self.node("Gemm", [pooled, self.weight("fc_w", (c_out, c_in)), self.weight("fc_b", (c_out,))],
                          transB=1)
        else:
            group = c_in if layer.kind == "dwconv" else 1
            k = layer.kernel
            y = self.node("Conv", [x, self.weight("w", (c_out, c_in // group, k, k)), self.weight("b", (c_out,))],
                          kernel_shape=[k, k], strides=[layer.stride] * 2, pads=[k // 2] * 4, group=group)
        if layer.act:
            y = self.node("Clip", [y, self.constant("lo", 0.0), self.constant("hi", 6.0)])
        if layer.residual:
            if skip is None:
                raise ValueError(f"layer '{layer.name}' is residual but has no skip input")
            y = self.node("Add", [y, skip])
        return y

    def model(self, output: str, out_shape: tuple[int, ...]) -> bytes:
        from onnx import TensorProto, helper

        graph = helper.make_graph(self.nodes, "slimzoo_profile", self.inputs,
                                  [helper.make_tensor_value_info(output, TensorProto.FLOAT, list(out_shape))],
                                  self.initializers)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR_VERSION,
                                  producer_name="slimzoo")
        return model.SerializeToString()


def _out_shape(layer: LayerSpec, c_out: int) -> tuple[int, ...]:
    if layer.kind == "pool_linear":
        return (1, c_out)
    return (1, c_out, layer.out_hw, layer.out_hw)


def _layer_model(layer: LayerSpec, c_in: int, c_out: int, rng: np.random.Generator) -> Model:
    g = _Graph(rng)
    x = g.input("x", (1, c_in, layer.in_hw, layer.in_hw))
    skip = g.input("skip", _out_shape(layer, c_out)) if layer.residual else None
    y = g.layer(layer, c_in, c_out, x, skip)
    return g.model(y, _out_shape(layer, c_out)), g.feeds


def _identity_model(rng: np.random.Generator) -> Model:
    g = _Graph(rng)
    y = g.node("Identity", [g.input("x", (1, 1, 1, 1))])
    return g.model(y, (1, 1, 1, 1)), g.feeds


def _chain(spec: ArchSpec, config: Mapping[str, int], g: Any, nchw: bool) -> tuple[Any, tuple[int, ...]]:
    """Append every layer of ``spec`` at ``config`` to the graph builder ``g``; (output, its NCHW shape)."""
    first = spec.layers[0]
    c_in0, _ = spec.channels(first, config)
    shape = (1, c_in0, first.in_hw, first.in_hw)
    x = g.input("x", shape if nchw else (1, first.in_hw, first.in_hw, c_in0))
    # The residual input of a layer is the latest tensor whose width is set by the same variable as its output.
    produced: dict[object, Any] = {}
    out_shape: tuple[int, ...] = ()
    for layer in spec.layers:
        c_in, c_out = spec.channels(layer, config)
        x = g.layer(layer, c_in, c_out, x, produced.get(layer.c_out) if layer.residual else None)
        produced[layer.c_out] = x
        out_shape = _out_shape(layer, c_out)
    return x, out_shape


def _network_model(spec: ArchSpec, config: Mapping[str, int], seed: int = 0) -> Model:
    g = _Graph(np.random.default_rng(seed))
    x, out_shape = _chain(spec, spec.validate(config), g, nchw=True)
    return g.model(x, out_shape), g.feeds


# -- TFLite probes ----------------------------------------------------------------------------------------------
class _TFLiteGraph:
    """The TFLite twin of :class:`_Graph`: NHWC tensors, fused ReLU6, weights as constant buffers.

    Written with the TFLite schema's object API (``ai_edge_litert.schema_py_generated``), so a probe takes
    milliseconds instead of the seconds a PyTorch conversion takes; XNNPACK and ``benchmark_model`` run it as they
    run any converted model (conv weights OHWI, depthwise 1HWO, SAME padding, which for odd kernels with
    ``pad = k // 2`` gives the same output size as the ONNX probes).
    """

    def __init__(self, rng: np.random.Generator) -> None:
        from ai_edge_litert import schema_py_generated as schema

        self.schema = schema
        self.rng = rng
        empty = schema.BufferT()
        self.buffers: list[Any] = [empty]  # buffer 0 stays empty: activations point at it
        self.tensors: list[Any] = []
        self.operators: list[Any] = []
        self.opcodes: dict[int, int] = {}
        self.inputs: list[int] = []
        self.feeds: dict[str, np.ndarray] = {}

    def _tensor(self, name: str, shape: Sequence[int], data: np.ndarray | None = None,
                int32: bool = False) -> int:
        s = self.schema
        tensor = s.TensorT()
        tensor.name = f"{name}_{len(self.tensors)}"
        tensor.shape = np.asarray(shape, dtype=np.int32)
        tensor.type = s.TensorType.INT32 if int32 else s.TensorType.FLOAT32
        tensor.buffer = 0
        if data is not None:
            buffer = s.BufferT()
            buffer.data = np.frombuffer(np.ascontiguousarray(data).tobytes(), dtype=np.uint8)
            self.buffers.append(buffer)
            tensor.buffer = len(self.buffers) - 1
        self.tensors.append(tensor)
        return len(self.tensors) - 1

    def weight(self, name: str, shape: tuple[int, ...], fan_in: int) -> int:
        value = (self.rng.standard_normal(shape) / np.sqrt(max(fan_in, 1))).astype(np.float32)
        return self._tensor(name, shape, value)

    def input(self, name: str, shape: tuple[int, ...]) -> int:
        index = self._tensor(name, shape)
        self.inputs.append(index)
        self.feeds[self.tensors[index].name] = self.rng.standard_normal(shape).astype(np.float32)
        return index

    def op(self, code: int, inputs: list[int], out_shape: Sequence[int], options_type: int = 0,
           options: Any = None) -> int:
        s = self.schema
        if code not in self.opcodes:
            self.opcodes[code] = len(self.opcodes)
        out = self._tensor(f"op{code}", out_shape)
        operator = s.OperatorT()
        operator.opcodeIndex = self.opcodes[code]
        operator.inputs = np.asarray(inputs, dtype=np.int32)
        operator.outputs = np.asarray([out], dtype=np.int32)
        operator.builtinOptionsType = options_type
        operator.builtinOptions = options
        self.operators.append(operator)
        return out

    def layer(self, layer: LayerSpec, c_in: int, c_out: int, x: int, skip: int | None) -> int:
        s = self.schema
        op, opts = s.BuiltinOperator, s.BuiltinOptions
        act = s.ActivationFunctionType.RELU6 if layer.act else s.ActivationFunctionType.NONE
        if layer.kind == "pool_linear":
            axes = self._tensor("axes", (2,), np.array([1, 2], dtype=np.int32), int32=True)
            mean_opts = s.ReducerOptionsT()
            mean_opts.keepDims = False
            pooled = self.op(op.MEAN, [x, axes], (1, c_in), opts.ReducerOptions, mean_opts)
            fc = s.FullyConnectedOptionsT()
            fc.fusedActivationFunction = act
            y = self.op(op.FULLY_CONNECTED, [pooled, self.weight("fc_w", (c_out, c_in), c_in),
                                             self.weight("fc_b", (c_out,), 1)], (1, c_out),
                        opts.FullyConnectedOptions, fc)
        else:
            k, out_hw = layer.kernel, layer.out_hw
            if layer.kind == "dwconv":
                conv = s.DepthwiseConv2DOptionsT()
                conv.depthMultiplier = 1
                weight = self.weight("dw_w", (1, k, k, c_out), k * k)
                code, options_type = op.DEPTHWISE_CONV_2D, opts.DepthwiseConv2DOptions
            else:
                conv = s.Conv2DOptionsT()
                weight = self.weight("w", (c_out, k, k, c_in), k * k * c_in)
                code, options_type = op.CONV_2D, opts.Conv2DOptions
            conv.padding = s.Padding.SAME
            conv.strideW = conv.strideH = layer.stride
            conv.dilationWFactor = conv.dilationHFactor = 1
            conv.fusedActivationFunction = act
            y = self.op(code, [x, weight, self.weight("b", (c_out,), 1)], (1, out_hw, out_hw, c_out),
                        options_type, conv)
        if layer.residual:
            if skip is None:
                raise ValueError(f"layer '{layer.name}' is residual but has no skip input")
            add = s.AddOptionsT()
            add.fusedActivationFunction = s.ActivationFunctionType.NONE
            y = self.op(op.ADD, [y, skip], self.tensors[y].shape, opts.AddOptions, add)
        return y

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
        for code, _ in sorted(self.opcodes.items(), key=lambda item: item[1]):
            opcode = s.OperatorCodeT()
            opcode.builtinCode = code
            opcode.deprecatedBuiltinCode = min(code, 127)
            opcode.version = 1
            codes.append(opcode)
        model.operatorCodes = codes
        return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def _tflite_out_shape(layer: LayerSpec, c_out: int) -> tuple[int, ...]:
    return (1, c_out) if layer.kind == "pool_linear" else (1, layer.out_hw, layer.out_hw, c_out)


def _tflite_layer_model(layer: LayerSpec, c_in: int, c_out: int, rng: np.random.Generator) -> Model:
    g = _TFLiteGraph(rng)
    x = g.input("x", (1, layer.in_hw, layer.in_hw, c_in))
    skip = g.input("skip", _tflite_out_shape(layer, c_out)) if layer.residual else None
    return g.model(g.layer(layer, c_in, c_out, x, skip)), g.feeds


def _tflite_identity_model(rng: np.random.Generator) -> Model:
    """The smallest model the runtime delegates (x + x on one element): the per-invoke cost."""
    g = _TFLiteGraph(rng)
    x = g.input("x", (1, 1, 1, 1))
    add = g.schema.AddOptionsT()
    add.fusedActivationFunction = g.schema.ActivationFunctionType.NONE
    y = g.op(g.schema.BuiltinOperator.ADD, [x, x], (1, 1, 1, 1), g.schema.BuiltinOptions.AddOptions, add)
    return g.model(y), g.feeds


def _tflite_network_model(spec: ArchSpec, config: Mapping[str, int], seed: int = 0) -> Model:
    g = _TFLiteGraph(np.random.default_rng(seed))
    x, _ = _chain(spec, spec.validate(config), g, nchw=False)
    return g.model(x), g.feeds


def layer_model(fmt: str, layer: LayerSpec, c_in: int, c_out: int, rng: np.random.Generator) -> Model:
    """One layer at (c_in, c_out) as a standalone ``onnx`` or ``tflite`` model, with its feeds."""
    return (_layer_model if fmt == "onnx" else _tflite_layer_model)(layer, c_in, c_out, rng)


def network_model(fmt: str, spec: ArchSpec, config: Mapping[str, int], seed: int = 0) -> Model:
    """The whole network at ``config`` as an ``onnx`` or ``tflite`` model, with its feeds."""
    return (_network_model if fmt == "onnx" else _tflite_network_model)(spec, config, seed)


def identity_model(fmt: str, rng: np.random.Generator) -> Model:
    """The per-run cost probe (identity / one tiny add) as an ``onnx`` or ``tflite`` model, with its feeds."""
    return (_identity_model if fmt == "onnx" else _tflite_identity_model)(rng)


def layer_probe(fmt: str, layer: LayerSpec, c_in: int, c_out: int, seed: int = 0) -> bytes:
    """One layer at (c_in, c_out) as a standalone model file's bytes (``onnx`` or ``tflite``), for a kit."""
    return layer_model(fmt, layer, c_in, c_out, np.random.default_rng(seed))[0]


def network_probe(fmt: str, spec: ArchSpec, config: Mapping[str, int], seed: int = 0) -> bytes:
    """The whole network at ``config`` as a model file's bytes (``onnx`` or ``tflite``), for a kit."""
    return network_model(fmt, spec, config, seed)[0]


def identity_probe(fmt: str, seed: int = 0) -> bytes:
    """The per-run cost probe (identity / one tiny add), for a kit."""
    return identity_model(fmt, np.random.default_rng(seed))[0]
