"""Measured latency on this machine: per-layer probes, whole networks, and the fitted table built from both.

Every probe is a model built directly from the spec, never exported from PyTorch: for ONNX Runtime with
``onnx.helper`` (Conv with bias, Clip(0, 6) for the activation, Add for a residual, ``group = c`` for depthwise,
GlobalAveragePool + Flatten + Gemm for the classifier), for LiteRT as a TFLite flatbuffer written with the TFLite
schema (CONV_2D / DEPTHWISE_CONV_2D with fused ReLU6, ADD, MEAN + FULLY_CONNECTED, NHWC). Building graphs by hand
is what makes the ~2000 probes of the shipped spec take about a minute rather than an hour, and a whole network
is the same pieces chained, so a layer probe and a network agree on what a layer is.

Two costs of timing a layer alone are removed because a whole network pays them once, not once per layer: the
fixed cost of every ``run`` (measured with an identity model, subtracted from each cell and kept as the table's
``offset_ms``), and on x86 the NCHWc layout reorders ONNX Runtime puts at a graph's edges (cut out of each
optimised cell graph, see :class:`_CellTimer`).

**One statistic: the median.** A latency budget is a promise about the latency a user sees, the typical run,
so every number slimzoo measures is a median: the per-layer cells and whole networks the table is fitted to (here
and in a phone kit), ``slimzoo check --measure``, the latency in ``build-log.json`` and every report. The
statistic is recorded in each table's provenance (``statistic``), and the gate warns about a table fitted to
another one. (Earlier tables used the 2nd percentile, which is steadier on a loaded machine but is a best case: a
model placed inside a budget by its p2 latency misses that budget in most runs, and the median-measuring gate then
fails it.)

**Noise.** On a shared machine the latency of one session measures the other jobs as much as the model (on the
2-core development VM at load 3-9, session medians of one network varied by 30-50%). So every probe is timed in
several *rounds*, each a fresh session, with all probes in a fresh shuffled order per round (a burst of load lands
on a few runs of many probes, never on all runs of one), and its latency is the median of all its runs pooled
over the rounds. Measuring the same network as independent probes (``repeat`` samples) gives the noise that is
left; it is recorded with the table.

:func:`profile_and_fit` is the whole procedure behind ``slimzoo profile``: per-layer table, whole networks at
random and uniform width configs (a held-out share never shown to the fit), the constrained least-squares fit of
:mod:`slimzoo.platforms.fit`, and the held-out accuracy, all recorded in the table it returns.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import random
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from slimzoo.errors import ConfigError, RegistryError
from slimzoo.platforms.latency import LATENCY_STATISTIC, LatencyTable, layer_cells, layer_grid
from slimzoo.platforms.registry import (Platform, canonical_runtime, host_cpu_facts, measured_table_path,
                                        user_registry_dir)
from slimzoo.zoo.spec import ArchSpec, LayerSpec, WidthConfig

if TYPE_CHECKING:
    import onnx
    import onnxruntime

__all__ = ["DEFAULT_QUANTILE", "DEFAULT_REPEATS", "LATENCY_STATISTIC", "DEFAULT_WARMUP", "RUNTIMES", "ProgressCallback",
           "layer_probe", "measure_network", "measure_networks", "network_probe", "profile_and_fit",
           "profile_platform", "sample_configs", "save_measured_table", "statistic_name", "time_onnx_file",
           "time_tflite_file"]

ProgressCallback = Callable[[int, int], None]

# Tuned on a 2-core AMD EPYC VM: the shipped 32x32 spec (1800 cells) profiles in about a minute with these (most of
# it is session creation, three per cell and round), well inside the 3-minute target.
DEFAULT_REPEATS = 240
DEFAULT_WARMUP = 10
DEFAULT_ROUNDS = 3
# Whole networks: fewer runs per session than cells but more rounds, since a network's noise comes from the
# machine's load over time (rounds sample it) more than from the runs within one session.
DEFAULT_NETWORK_RUNS = 500
DEFAULT_NETWORK_ROUNDS = 5
DEFAULT_SAMPLES = 150
# The one latency statistic (see the module docstring): None = the median. A percentile (in percent) is accepted
# by the measuring functions for experiments only; the table records which was used, and the gate warns.
DEFAULT_QUANTILE: float | None = None
RUNTIMES = ("onnxruntime", "litert")
OPSET = 17
IR_VERSION = 8  # old enough for any onnxruntime that supports opset 17
MIN_TERM_MS = 1e-4  # a layer never costs less than 0.1 us, even when it times faster than the identity model


def statistic_name(quantile: float | None) -> str:
    """How a probe's runs become one number: ``median`` or ``p<q>`` (a low percentile of the pooled runs)."""
    return "median" if quantile is None else f"p{quantile:g}"


def _statistic(times: np.ndarray, quantile: float | None) -> float:
    return float(np.median(times) if quantile is None else np.percentile(times, quantile))


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


def _layer_model(layer: LayerSpec, c_in: int, c_out: int, rng: np.random.Generator) -> tuple[bytes, dict[str, np.ndarray]]:
    g = _Graph(rng)
    x = g.input("x", (1, c_in, layer.in_hw, layer.in_hw))
    skip = g.input("skip", _out_shape(layer, c_out)) if layer.residual else None
    y = g.layer(layer, c_in, c_out, x, skip)
    return g.model(y, _out_shape(layer, c_out)), g.feeds


def _identity_model(rng: np.random.Generator) -> tuple[bytes, dict[str, np.ndarray]]:
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


def _network_model(spec: ArchSpec, config: Mapping[str, int], seed: int = 0) -> tuple[bytes, dict[str, np.ndarray]]:
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


def _tflite_layer_model(layer: LayerSpec, c_in: int, c_out: int,
                        rng: np.random.Generator) -> tuple[bytes, dict[str, np.ndarray]]:
    g = _TFLiteGraph(rng)
    x = g.input("x", (1, layer.in_hw, layer.in_hw, c_in))
    skip = g.input("skip", _tflite_out_shape(layer, c_out)) if layer.residual else None
    return g.model(g.layer(layer, c_in, c_out, x, skip)), g.feeds


def _tflite_identity_model(rng: np.random.Generator) -> tuple[bytes, dict[str, np.ndarray]]:
    """The smallest model the runtime delegates (x + x on one element): the per-invoke cost."""
    g = _TFLiteGraph(rng)
    x = g.input("x", (1, 1, 1, 1))
    add = g.schema.AddOptionsT()
    add.fusedActivationFunction = g.schema.ActivationFunctionType.NONE
    y = g.op(g.schema.BuiltinOperator.ADD, [x, x], (1, 1, 1, 1), g.schema.BuiltinOptions.AddOptions, add)
    return g.model(y), g.feeds


def _tflite_network_model(spec: ArchSpec, config: Mapping[str, int],
                          seed: int = 0) -> tuple[bytes, dict[str, np.ndarray]]:
    g = _TFLiteGraph(np.random.default_rng(seed))
    x, _ = _chain(spec, spec.validate(config), g, nchw=False)
    return g.model(x), g.feeds


def layer_probe(fmt: str, layer: LayerSpec, c_in: int, c_out: int, seed: int = 0) -> bytes:
    """One layer at (c_in, c_out) as a standalone model file's bytes (``onnx`` or ``tflite``), for a kit."""
    rng = np.random.default_rng(seed)
    return (_layer_model if fmt == "onnx" else _tflite_layer_model)(layer, c_in, c_out, rng)[0]


def network_probe(fmt: str, spec: ArchSpec, config: Mapping[str, int], seed: int = 0) -> bytes:
    """The whole network at ``config`` as a model file's bytes (``onnx`` or ``tflite``), for a kit."""
    return (_network_model if fmt == "onnx" else _tflite_network_model)(spec, config, seed)[0]


def identity_probe(fmt: str, seed: int = 0) -> bytes:
    """The per-run cost probe (identity / one tiny add), for a kit."""
    rng = np.random.default_rng(seed)
    return (_identity_model if fmt == "onnx" else _tflite_identity_model)(rng)[0]


# -- timing --------------------------------------------------------------------------------------------------
def _session_options(threads: int, optimize: bool = True, spinning: bool = True) -> onnxruntime.SessionOptions:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    # As deployment runs: Conv+Clip fused, NCHWc layout on x86. A graph that was optimised already runs as is.
    opts.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize
                                     else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    opts.log_severity_level = 3
    if not spinning:
        # Idle pool threads sleep instead of spinning: slower per run, but on an oversubscribed machine the
        # spinning threads fight the other jobs for cores and runs become bimodal.
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return opts



class _CellTimer:
    """Times a standalone layer graph as it would run inside a network.

    On x86, ONNX Runtime rewrites convs to a blocked NCHWc layout and puts a ReorderInput / ReorderOutput at the
    graph's edges. A network pays those reorders once; a layer timed alone would pay them once per layer, which on
    a 2-core EPYC inflated the sum of terms by 50-100% over a measured whole network. So each cell is optimised
    once, the boundary reorders are cut out (the inputs are fed already in the blocked shape; values do not
    matter for timing) and the remaining graph is timed without re-optimising. Where the runtime uses no NCHWc
    layout (e.g. on ARM) there is nothing to cut and the cell is timed as built.
    """

    NCHWC = "com.microsoft.nchwc"

    def __init__(self, threads: int, rng: np.random.Generator, spinning: bool = True) -> None:
        self.rng = rng
        self.opts = _session_options(threads, spinning=spinning)
        self.plain_opts = _session_options(threads, optimize=False, spinning=spinning)
        self._tmp = tempfile.TemporaryDirectory(prefix="slimzoo-profile-")
        self._dump = Path(self._tmp.name) / "optimized.onnx"
        self.dump_opts = _session_options(threads)
        self.dump_opts.optimized_model_filepath = str(self._dump)
        self.stripped = 0
        self.block = self._probe_block()

    def close(self) -> None:
        self._tmp.cleanup()

    def _optimized(self, model: bytes) -> onnx.ModelProto:
        import onnx
        import onnxruntime as ort

        ort.InferenceSession(model, sess_options=self.dump_opts, providers=["CPUExecutionProvider"])
        return onnx.load(str(self._dump))

    def _probe_block(self) -> int | None:
        """The NCHWc channel block (8 with AVX2, 16 with AVX-512), read off a converted conv's padded weight."""
        probe = LayerSpec("probe", "conv", 8, 8, kernel=1, in_hw=4)
        optimized = self._optimized(_layer_model(probe, 8, 8, self.rng)[0])
        weights = {t.name: t for t in optimized.graph.initializer}
        for node in optimized.graph.node:
            if node.domain == self.NCHWC and node.op_type == "Conv" and node.input[1] in weights:
                return int(weights[node.input[1]].dims[0])
        return None

    def prepare(self, model: bytes, feeds: dict[str, np.ndarray]) -> tuple[bytes, dict[str, np.ndarray], bool]:
        """(graph, feeds, already optimised?) with the boundary reorders removed when there are any."""
        if self.block is None:
            return model, feeds, False
        from onnx import TensorProto, helper

        optimized = self._optimized(model)
        graph = optimized.graph
        inputs = {vi.name: vi for vi in graph.input}
        outputs = {vi.name: vi for vi in graph.output}
        feeds = dict(feeds)
        kept = []
        for node in graph.node:
            if node.domain == self.NCHWC and node.op_type == "ReorderInput" and node.input[0] in inputs:
                shape = list(feeds[node.input[0]].shape)
                shape[1] = -(-shape[1] // self.block) * self.block
                graph.input.append(helper.make_tensor_value_info(node.output[0], TensorProto.FLOAT, shape))
                feeds[node.output[0]] = self.rng.standard_normal(shape).astype(np.float32)
                if sum(node.input[0] in other.input for other in graph.node) == 1:
                    graph.input.remove(inputs[node.input[0]])
                    del feeds[node.input[0]]
            elif node.domain == self.NCHWC and node.op_type == "ReorderOutput" and node.output[0] in outputs:
                graph.output.remove(outputs[node.output[0]])
                graph.output.append(helper.make_tensor_value_info(node.input[0], TensorProto.FLOAT, None))
            else:
                kept.append(node)
        if len(kept) == len(graph.node):
            return model, feeds, False
        del graph.node[:]
        graph.node.extend(kept)
        self._fuse_residual_add(graph, feeds)
        self.stripped += 1
        return optimized.SerializeToString(), feeds, True

    def _fuse_residual_add(self, graph: onnx.GraphProto, feeds: dict[str, np.ndarray]) -> None:
        """Fold a residual Add into the NCHWc conv, as the runtime does inside a network.

        In a network the block input arrives already blocked and ONNX Runtime fuses the Add into the conv as its
        ``Sum`` input; alone, the skip is a plain graph input, so the runtime keeps ReorderOutput + Add instead.
        Only the ``conv -> ReorderOutput -> Add(skip)`` shape of a linear (no activation) conv is rewritten.
        """
        from onnx import TensorProto, helper

        nodes = list(graph.node)
        if len(nodes) != 3:
            return
        conv, reorder, add = nodes
        inputs = {vi.name: vi for vi in graph.input}
        if not (conv.domain == self.NCHWC and conv.op_type == "Conv" and len(conv.input) == 3
                and not any(a.name == "activation" for a in conv.attribute)
                and reorder.op_type == "ReorderOutput" and list(reorder.input) == list(conv.output)
                and add.op_type == "Add" and add.domain == "" and reorder.output[0] in add.input
                and [o.name for o in graph.output] == list(add.output)):
            return
        skip = next(name for name in add.input if name != reorder.output[0])
        if skip not in inputs:
            return
        shape = list(feeds[skip].shape)
        shape[1] = -(-shape[1] // self.block) * self.block  # type: ignore[operator]
        blocked = skip + "_nchwc"
        graph.input.remove(inputs[skip])
        graph.input.append(helper.make_tensor_value_info(blocked, TensorProto.FLOAT, shape))
        del feeds[skip]
        feeds[blocked] = self.rng.standard_normal(shape).astype(np.float32)
        conv.input.append(blocked)
        del graph.node[1:]
        graph.output.pop()
        graph.output.append(helper.make_tensor_value_info(conv.output[0], TensorProto.FLOAT, None))

    def time(self, model: bytes, feeds: dict[str, np.ndarray], repeats: int, warmup: int,
             strip: bool = True) -> np.ndarray:
        """Per-run wall times in ms, after ``warmup`` untimed runs (first runs pay allocation and cache misses)."""
        optimized = False
        if strip:
            model, feeds, optimized = self.prepare(model, feeds)
        return _time_runs(model, feeds, self.plain_opts if optimized else self.opts, repeats, warmup)


def _time_runs(model: bytes, feeds: Mapping[str, np.ndarray], opts: onnxruntime.SessionOptions, repeats: int,
               warmup: int) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(model, sess_options=opts, providers=["CPUExecutionProvider"])
    # Bind inputs and outputs once: per-run conversion to and from numpy is a Python-binding cost that scales
    # with tensor size, and a deployed network pays it once, not once per layer.
    binding = session.io_binding()
    for name, value in feeds.items():
        binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(value)))
    for out in session.get_outputs():
        binding.bind_output(out.name, "cpu")
    run = session.run_with_iobinding
    for _ in range(warmup):
        run(binding)
    times = np.empty(repeats, dtype=np.float64)
    clock = time.perf_counter_ns
    for i in range(repeats):
        start = clock()
        run(binding)
        times[i] = clock() - start
    return times / 1e6


def _time_tflite(model: bytes, feeds: Mapping[str, np.ndarray], threads: int, repeats: int,
                 warmup: int) -> np.ndarray:
    """Per-invoke wall times (ms) with the LiteRT interpreter (XNNPACK, as ``benchmark_model`` runs by default)."""
    from ai_edge_litert.interpreter import Interpreter

    with _native_stderr_silenced():  # the runtime logs "INFO: Created ... XNNPACK delegate" from C++
        interpreter = Interpreter(model_content=model, num_threads=threads)
        interpreter.allocate_tensors()
    for detail in interpreter.get_input_details():
        value = feeds.get(detail["name"])
        if value is None:
            value = np.zeros(detail["shape"], dtype=detail["dtype"])
        interpreter.set_tensor(detail["index"], np.ascontiguousarray(value, dtype=detail["dtype"]))
    invoke = interpreter.invoke
    for _ in range(warmup):
        invoke()
    times = np.empty(repeats, dtype=np.float64)
    clock = time.perf_counter_ns
    for i in range(repeats):
        start = clock()
        invoke()
        times[i] = clock() - start
    return times / 1e6


@contextlib.contextmanager
def _native_stderr_silenced() -> Iterator[None]:
    """Point file descriptor 2 at /dev/null for the duration (native libraries write there directly)."""
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _median_iqr(times: np.ndarray) -> tuple[float, float]:
    q1, med, q3 = np.percentile(times, [25, 50, 75])
    return float(med), float(q3 - q1)


Probe = tuple[bytes, dict[str, np.ndarray], Any]  # model bytes, input feeds, runtime-specific run options


class _OrtBackend:
    """ONNX Runtime, CPU provider: cells with their NCHWc boundary reorders cut, networks as built."""

    runtime = "onnxruntime"

    def __init__(self, threads: int, rng: np.random.Generator, spinning: bool = True) -> None:
        self.threads = threads
        self.rng = rng
        self.spinning = spinning
        self.timer = _CellTimer(threads, rng, spinning)

    def version(self) -> str:
        import onnxruntime as ort

        return ort.__version__

    def cell(self, layer: LayerSpec, c_in: int, c_out: int) -> Probe:
        model, feeds, optimized = self.timer.prepare(*_layer_model(layer, c_in, c_out, self.rng))
        return model, feeds, self.timer.plain_opts if optimized else self.timer.opts

    def identity(self) -> Probe:
        return (*_identity_model(self.rng), self.timer.opts)

    def network(self, spec: ArchSpec, config: Mapping[str, int], seed: int) -> Probe:
        return (*_network_model(spec, config, seed), self.timer.opts)

    def time(self, probe: Probe, runs: int, warmup: int) -> np.ndarray:
        return _time_runs(probe[0], probe[1], probe[2], runs, warmup)

    def facts(self, cells: int) -> dict[str, Any]:
        import onnx

        return {"onnx_version": onnx.__version__, "opset": OPSET, "graph_optimization": "ORT_ENABLE_ALL",
                "execution_mode": "sequential", "intra_op_spinning": self.spinning, "nchwc_block": self.timer.block,
                "boundary_reorders_removed": f"{self.timer.stripped} of {cells} cell timings"}

    def close(self) -> None:
        self.timer.close()


class _LiteRTBackend:
    """The LiteRT (TFLite) interpreter from ``ai-edge-litert``, XNNPACK delegate, NHWC probes."""

    runtime = "litert"

    def __init__(self, threads: int, rng: np.random.Generator) -> None:
        self.threads = threads
        self.rng = rng

    def version(self) -> str:
        from importlib.metadata import version

        return version("ai-edge-litert")

    def cell(self, layer: LayerSpec, c_in: int, c_out: int) -> Probe:
        return (*_tflite_layer_model(layer, c_in, c_out, self.rng), None)

    def identity(self) -> Probe:
        return (*_tflite_identity_model(self.rng), None)

    def network(self, spec: ArchSpec, config: Mapping[str, int], seed: int) -> Probe:
        return (*_tflite_network_model(spec, config, seed), None)

    def time(self, probe: Probe, runs: int, warmup: int) -> np.ndarray:
        return _time_tflite(probe[0], probe[1], self.threads, runs, warmup)

    def facts(self, cells: int) -> dict[str, Any]:
        return {"delegate": "XNNPACK (the interpreter's default)", "layout": "NHWC"}

    def close(self) -> None:
        pass


def litert_available() -> bool:
    try:
        import ai_edge_litert.interpreter  # noqa: F401
    except Exception:  # noqa: BLE001  (any import failure means: not usable here)
        return False
    return True


def _backend(runtime: str, threads: int, rng: np.random.Generator,
             spinning: bool = True) -> _OrtBackend | _LiteRTBackend:
    if runtime == "onnxruntime":
        return _OrtBackend(threads, rng, spinning)
    if runtime == "litert":
        if not litert_available():
            raise RegistryError("runtime 'litert' is not available: the LiteRT interpreter (pip install "
                                "ai-edge-litert) is not installed; use --runtime onnxruntime")
        return _LiteRTBackend(threads, rng)
    raise RegistryError(f"unknown runtime '{runtime}'; valid: {', '.join(RUNTIMES)}")


def _campaign(count: int, make: Callable[[int], Probe], backend: _OrtBackend | _LiteRTBackend, runs: int,
              rounds: int, warmup: int, seed: int, tick: Callable[[], None]) -> list[np.ndarray]:
    """All timed runs of ``count`` probes: ``runs`` each, split over ``rounds`` passes in fresh shuffled orders.

    Every pass builds each probe anew and opens a fresh session, so neither one unlucky memory layout nor one
    burst of load from another process decides a probe's number.
    """
    rounds = max(1, min(rounds, runs))
    out: list[list[np.ndarray]] = [[] for _ in range(count)]
    for r in range(rounds):
        per_round = runs // rounds + (1 if r < runs % rounds else 0)
        order = list(range(count))
        random.Random(seed * 1000 + r).shuffle(order)
        for i in order:
            out[i].append(backend.time(make(i), per_round, warmup))
            tick()
    return [np.concatenate(x) for x in out]


def _check_args(platform: Platform, threads: int, repeats: int, warmup: int, runtime: str = "onnxruntime") -> None:
    if not platform.this_machine:
        raise RegistryError(
            f"cannot profile '{platform.name}' here: only a platform that describes this machine "
            f"(this_machine = true, like host-cpu) can be measured; for a phone, use slimzoo profile-kit")
    if runtime not in RUNTIMES:
        raise RegistryError(f"unknown runtime '{runtime}'; valid: {', '.join(RUNTIMES)}")
    if runtime == "onnxruntime" and platform.runtime != "onnxruntime":
        raise RegistryError(f"cannot profile '{platform.name}' with onnxruntime: its runtime is {platform.runtime}")
    if threads < 1 or repeats < 1 or warmup < 0:
        raise ValueError(f"need threads >= 1, repeats >= 1, warmup >= 0; got {threads}, {repeats}, {warmup}")


# -- profiling ------------------------------------------------------------------------------------------------
def profile_platform(spec: ArchSpec, platform: Platform, threads: int = 1, repeats: int = DEFAULT_REPEATS,
                     warmup: int = DEFAULT_WARMUP, progress: ProgressCallback | None = None, seed: int = 0,
                     rounds: int = DEFAULT_ROUNDS, quantile: float | None = DEFAULT_QUANTILE,
                     runtime: str = "onnxruntime", network_check: bool = True, spinning: bool = True) -> LatencyTable:
    """Measure every layer of ``spec`` at every width choice on this machine: the per-layer table.

    ``repeats`` timed runs per cell are split over ``rounds`` passes, each over the cells in a fresh shuffled
    order (see :func:`_campaign`). A cell's term is the ``quantile`` (percent; None = median) of its pooled runs
    minus the same statistic of the identity model, its interquartile range the spread. ``progress(done,
    total)`` is called after each cell, for a progress bar. This is the *prior* of :func:`profile_and_fit`;
    alone, it predicts a whole network only as well as layers timed apart add up.
    """
    _check_args(platform, threads, repeats, warmup, runtime)
    started = time.perf_counter()
    rng = np.random.default_rng(seed)
    backend = _backend(runtime, threads, rng, spinning)
    cells = layer_cells(spec)
    rounds = max(1, min(rounds, repeats))
    total = rounds * (len(cells) + 1)
    done = 0

    def tick() -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, total)

    def make(i: int) -> Probe:
        if i == 0:
            return backend.identity()
        layer, _, c_in, c_out = cells[i - 1]
        return backend.cell(layer, c_in, c_out)

    try:
        runs = _campaign(len(cells) + 1, make, backend, repeats, rounds, warmup, seed, tick)
        facts = backend.facts(rounds * len(cells))
        version = backend.version()
    finally:
        backend.close()

    overhead = _statistic(runs[0], quantile)
    overhead_median, overhead_iqr = _median_iqr(runs[0])
    terms = {layer.name: np.zeros(layer_grid(spec, layer)[0]) for layer in spec.layers}
    spread = {name: np.zeros(t.shape) for name, t in terms.items()}
    for (layer, index, _, _), times in zip(cells, runs[1:], strict=True):
        terms[layer.name][index] = max(_statistic(times, quantile) - overhead, MIN_TERM_MS)
        spread[layer.name][index] = _median_iqr(times)[1]

    table = LatencyTable(arch_key=spec.key(), platform=platform.name, source="measured", provenance={},
                         offset_ms=overhead, terms=terms, spread=spread, runtime=canonical_runtime(runtime))
    host = host_cpu_facts()
    table.provenance = {
        "method": f"{runtime} per-layer profiling ({statistic_name(quantile)} of repeated runs minus the "
                  f"identity model's)",
        "cpu_model": host["cpu_model"],
        "cores": host["cores"],
        "threads": threads,
        "runtime": runtime,
        "runtime_version": version,
        **facts,
        "statistic": statistic_name(quantile),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "repetitions": repeats,
        "rounds": rounds,
        "warmup": warmup,
        "cells": len(cells),
        "identity_overhead_ms": overhead,
        "identity_overhead_median_ms": overhead_median,
        "identity_overhead_iqr_ms": overhead_iqr,
        "seed": seed,
    }
    if network_check:
        # Check the additive model against whole networks at both ends of the width range: a user reading the
        # table should see how far offset + sum of terms is from a real inference on this machine.
        check: dict[str, dict[str, float]] = {}
        ends = [spec.smallest(), spec.largest()]
        measured = measure_networks(spec, ends, threads=threads, runs=repeats, rounds=rounds, warmup=warmup,
                                    quantile=quantile, seed=seed, runtime=runtime, spinning=spinning)
        for label, config, m in zip(("smallest", "largest"), ends, measured, strict=True):
            check[label] = {"predicted_ms": round(table.predict(spec, config), 4), "measured_ms": round(m["ms"], 4)}
        table.provenance["network_check"] = check
    table.provenance["wall_s"] = round(time.perf_counter() - started, 1)
    return table


def measure_networks(spec: ArchSpec, configs: Sequence[Mapping[str, int]], threads: int = 1,
                     runs: int = DEFAULT_NETWORK_RUNS, rounds: int = DEFAULT_NETWORK_ROUNDS,
                     warmup: int = DEFAULT_WARMUP, quantile: float | None = DEFAULT_QUANTILE, seed: int = 0,
                     runtime: str = "onnxruntime", progress: ProgressCallback | None = None,
                     spinning: bool = True) -> list[dict[str, float]]:
    """Whole-network latency of each config, timed end to end in interleaved rounds (see :func:`_campaign`).

    Returns one ``{"ms", "median_ms", "iqr_ms", "runs"}`` per config, ``ms`` being the ``quantile`` statistic.
    A config listed twice is measured twice, independently: that is how the noise is measured.
    """
    configs = [spec.validate(c) for c in configs]
    if threads < 1 or runs < 1 or warmup < 0:
        raise ValueError(f"need threads >= 1, runs >= 1, warmup >= 0; got {threads}, {runs}, {warmup}")
    backend = _backend(runtime, threads, np.random.default_rng(seed), spinning)
    rounds = max(1, min(rounds, runs))
    total, done = rounds * len(configs), 0

    def tick() -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, total)

    try:
        times = _campaign(len(configs), lambda i: backend.network(spec, configs[i], seed), backend, runs, rounds,
                          warmup, seed + 1, tick)
    finally:
        backend.close()
    out = []
    for t in times:
        median, iqr = _median_iqr(t)
        out.append({"ms": _statistic(t, quantile), "median_ms": median, "iqr_ms": iqr, "runs": int(t.size)})
    return out


def measure_network(spec: ArchSpec, config: Mapping[str, int], threads: int = 1, repeats: int = 200,
                    warmup: int = 20, seed: int = 0, quantile: float | None = None, rounds: int = 1,
                    runtime: str = "onnxruntime") -> float:
    """Latency (ms) of the whole network at ``config``, built from the same per-layer pieces.

    The median of ``repeats`` runs in one session by default (``quantile`` and ``rounds`` as in
    :func:`measure_networks` for a noise-resistant number).
    """
    return measure_networks(spec, [config], threads=threads, runs=repeats, rounds=rounds, warmup=warmup,
                            quantile=quantile, seed=seed, runtime=runtime)[0]["ms"]


def sample_configs(spec: ArchSpec, samples: int, holdout: int, seed: int = 0,
                   uniform: bool = True) -> tuple[list[WidthConfig], list[WidthConfig]]:
    """(fit configs, held-out configs): ``samples`` distinct random configs of which ``holdout`` are held out,
    plus, on the fit side, the uniform-width ones (one per multiplier of the spec). Random configs alternate
    between independent uniform choices and choices around a random overall width (:func:`_random_at_level`).
    """
    if samples < 0 or not 0 <= holdout <= samples:
        raise ConfigError(f"need 0 <= holdout <= samples, got samples={samples}, holdout={holdout}")
    rng = random.Random(seed)
    fit: list[WidthConfig] = []
    seen: set[WidthConfig] = set()
    if uniform:
        for multiplier in sorted(set(spec.multipliers)):
            config = spec.uniform(multiplier)
            if config not in seen:
                seen.add(config)
                fit.append(config)
    randoms: list[WidthConfig] = []
    attempts = 0
    while len(randoms) < samples:
        attempts += 1
        if attempts > 100 * samples + 1000:
            raise ConfigError(f"{spec.key()} has too few distinct width configs for {samples} random samples")
        config = spec.random(rng) if len(randoms) % 2 == 0 else _random_at_level(spec, rng)
        if config not in seen:
            seen.add(config)
            randoms.append(config)
    return fit + randoms[holdout:], randoms[:holdout]


def _random_at_level(spec: ArchSpec, rng: random.Random) -> WidthConfig:
    """A random config around a random overall width: each variable's choice index is drawn within +-1.5 steps
    of ``level * (choices - 1)``, ``level`` uniform in [0, 1].

    Independent uniform choices (:meth:`ArchSpec.random`) all land near the middle of the latency range (a sum of
    many independent terms); the search, though, picks configs anywhere from the smallest to the largest. Half the
    random samples are drawn this way so that the fit and the held-out check cover the whole range.
    """
    level = rng.random()
    values = {}
    for v in spec.variables:
        centre = level * (len(v.choices) - 1)
        index = min(len(v.choices) - 1, max(0, round(centre + rng.uniform(-1.5, 1.5))))
        values[v.name] = v.choices[index]
    return WidthConfig(values)


def repeat_configs(heldout: Sequence[WidthConfig], configs: int, copies: int) -> list[tuple[int, WidthConfig]]:
    """(group, config) pairs: ``copies`` independent measurements of each of the first ``configs`` held-out
    configs, to measure what noise is left after the rounds and the median."""
    if copies < 2:
        return []
    return [(g, c) for g, c in enumerate(heldout[:configs]) for _ in range(copies)]


def profile_and_fit(spec: ArchSpec, platform: Platform, threads: int = 1, samples: int = DEFAULT_SAMPLES,
                    holdout: int | None = None, runtime: str = "onnxruntime", repeats: int = DEFAULT_REPEATS,
                    rounds: int = DEFAULT_ROUNDS, network_runs: int = DEFAULT_NETWORK_RUNS,
                    network_rounds: int = DEFAULT_NETWORK_ROUNDS, warmup: int = DEFAULT_WARMUP,
                    quantile: float | None = DEFAULT_QUANTILE, noise_configs: int = 4, noise_copies: int = 3,
                    seed: int = 0, progress: Callable[..., None] | None = None,
                    fit_settings: Any = None, spinning: bool = True) -> LatencyTable:
    """Per-layer table, whole networks, constrained least-squares fit, held-out accuracy: ``slimzoo profile``.

    ``samples`` random configs are drawn, ``holdout`` of them (default a third) are held out: measured like the
    others but never shown to the fit, so the accuracy recorded in ``provenance["fit"]`` is what the table does
    on networks it has not seen. The uniform-width configs join the fit set. ``noise_configs`` held-out configs
    are measured ``noise_copies`` more times as independent probes (``repeat`` samples) to record the noise.
    ``progress(done, total, status)`` follows both phases.
    """
    from slimzoo.platforms.fit import FitSettings, fit_from_samples

    _check_args(platform, threads, repeats, warmup, runtime)
    holdout = samples // 3 if holdout is None else holdout
    fit_configs, heldout_configs = sample_configs(spec, samples, holdout, seed)
    repeats_ = repeat_configs(heldout_configs, noise_configs, noise_copies)
    network_configs = [*fit_configs, *heldout_configs, *(c for _, c in repeats_)]
    n_cells = sum(int(np.prod(layer_grid(spec, layer)[0])) for layer in spec.layers)
    layer_total = max(1, min(rounds, repeats)) * (n_cells + 1)
    net_total = max(1, min(network_rounds, network_runs)) * len(network_configs)

    def phase(offset: int, status: str) -> ProgressCallback:
        def report(done: int, total: int) -> None:
            if progress is not None:
                progress(offset + done, layer_total + net_total, status)
        return report

    started = time.perf_counter()
    prior = profile_platform(spec, platform, threads=threads, repeats=repeats, warmup=warmup,
                             progress=phase(0, "layer variants"), seed=seed, rounds=rounds, quantile=quantile,
                             runtime=runtime, network_check=False, spinning=spinning)
    measured = measure_networks(spec, network_configs, threads=threads, runs=network_runs, rounds=network_rounds,
                                warmup=warmup, quantile=quantile, seed=seed, runtime=runtime,
                                progress=phase(layer_total, "whole networks"), spinning=spinning)
    records: list[dict[str, Any]] = []
    splits = ["fit"] * len(fit_configs) + ["heldout"] * len(heldout_configs) + ["repeat"] * len(repeats_)
    groups: list[int | None] = [None] * (len(fit_configs) + len(heldout_configs)) + [g for g, _ in repeats_]
    for config, m, split, group in zip(network_configs, measured, splits, groups, strict=True):
        record: dict[str, Any] = {"config": config.to_json(), "measured_ms": m["ms"], "split": split,
                                  "median_ms": m["median_ms"], "iqr_ms": m["iqr_ms"], "runs": m["runs"]}
        if group is not None:
            record["group"] = group
        records.append(record)
    table = fit_from_samples(spec, prior, records, fit_settings or FitSettings())
    table.provenance.update({
        "method": f"{runtime}: per-layer profiling, corrected by constrained least squares on whole-network "
                  f"measurements",
        "networks": {"fit": len(fit_configs), "heldout": len(heldout_configs), "repeat": len(repeats_),
                     "runs": network_runs, "rounds": max(1, min(network_rounds, network_runs)),
                     "statistic": statistic_name(quantile), "seed": seed},
        "wall_s": round(time.perf_counter() - started, 1),
    })
    return table


def save_measured_table(table: LatencyTable, user_dir: Path | None = None) -> Path:
    """Store a measured table where :meth:`Registry.latency_table` looks for it, keyed by platform, runtime and
    architecture (so a LiteRT profile never replaces an ONNX Runtime one); atomic, so never half-written."""
    if table.source != "measured":
        raise ValueError("only measured tables are stored; estimated ones are computed on the fly")
    if table.runtime is None:
        raise ValueError("a measured table must say which runtime timed it before it is stored")
    path = measured_table_path(user_registry_dir(user_dir), table.platform, table.runtime, table.arch_key)
    table.save(path)
    return path


def time_onnx_file(path: Path, threads: int = 1, repeats: int = 200, warmup: int = 20,
                   seed: int = 0) -> tuple[float, float]:
    """(median, IQR) in ms of an exported ONNX model at batch 1, timed exactly as the profiler times networks."""
    times = _time_file_runs(Path(path), threads, repeats, warmup, seed)
    return _median_iqr(times)


def time_tflite_file(path: Path, threads: int = 1, repeats: int = 200, warmup: int = 20,
                     seed: int = 0) -> tuple[float, float]:
    """(median, IQR) in ms of a ``.tflite`` model at batch 1 with the LiteRT interpreter."""
    times = _time_file_runs(Path(path), threads, repeats, warmup, seed)
    return _median_iqr(times)


def _time_file_runs(path: Path, threads: int, repeats: int, warmup: int, seed: int) -> np.ndarray:
    """Per-run times (ms) of a model file (``.onnx`` with ONNX Runtime, ``.tflite`` with LiteRT), random inputs."""
    rng = np.random.default_rng(seed)
    data = path.read_bytes()
    if path.suffix == ".tflite":
        return _time_tflite(data, {}, threads, repeats, warmup)
    import onnxruntime as ort

    probe = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    feeds = {}
    for inp in probe.get_inputs():
        shape = [1 if not isinstance(d, int) else d for d in inp.shape]
        feeds[inp.name] = rng.standard_normal(shape).astype(np.float32)
    return _time_runs(data, feeds, _session_options(threads), repeats, warmup)
