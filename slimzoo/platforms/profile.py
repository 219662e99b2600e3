"""Measured latency tables for this machine, from ONNX Runtime, one tiny model per layer and width choice.

Each (layer, c_in, c_out) cell is timed as a standalone ONNX graph built directly with ``onnx.helper`` (a conv with
bias, Clip(0, 6) for the activation, Add for a residual; a depthwise conv uses ``group = c``; the classifier is
GlobalAveragePool + Flatten + Gemm). Building graphs by hand instead of exporting PyTorch modules is what makes the
~2000 cells of the shipped spec take about a minute rather than an hour. Two costs of timing a layer alone are
removed because a whole network pays them once, not once per layer: the fixed cost of every ``run`` (measured with
an identity model, subtracted from each cell and kept as the table's ``offset_ms``), and on x86 the NCHWc layout
reorders ONNX Runtime puts at a graph's edges (cut out of each optimised cell graph, see :class:`_CellTimer`).
"""

from __future__ import annotations

import datetime as dt
import random
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from slimzoo.errors import RegistryError
from slimzoo.platforms.latency import LatencyTable, layer_grid
from slimzoo.platforms.registry import Platform, host_cpu_facts, measured_table_path, user_registry_dir
from slimzoo.zoo.spec import ArchSpec, LayerSpec

if TYPE_CHECKING:
    import onnx
    import onnxruntime

__all__ = ["DEFAULT_REPEATS", "DEFAULT_WARMUP", "ProgressCallback", "measure_network", "profile_platform",
           "save_measured_table"]

ProgressCallback = Callable[[int, int], None]

# Tuned on a 2-core AMD EPYC VM: the shipped 32x32 spec (1800 cells) profiles in about a minute with these (most of
# it is session creation, three per cell and round), well inside the 3-minute target.
DEFAULT_REPEATS = 240
DEFAULT_WARMUP = 10
DEFAULT_ROUNDS = 3
OPSET = 17
IR_VERSION = 8  # old enough for any onnxruntime that supports opset 17
MIN_TERM_MS = 1e-4  # a layer never costs less than 0.1 us, even when it times faster than the identity model


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


def _session_options(threads: int, optimize: bool = True) -> onnxruntime.SessionOptions:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    # As deployment runs: Conv+Clip fused, NCHWc layout on x86. A graph that was optimised already runs as is.
    opts.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize
                                     else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    opts.log_severity_level = 3
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

    def __init__(self, threads: int, rng: np.random.Generator) -> None:
        self.rng = rng
        self.opts = _session_options(threads)
        self.plain_opts = _session_options(threads, optimize=False)
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


def _median_iqr(times: np.ndarray) -> tuple[float, float]:
    q1, med, q3 = np.percentile(times, [25, 50, 75])
    return float(med), float(q3 - q1)


def _check_args(platform: Platform, threads: int, repeats: int, warmup: int) -> None:
    if not platform.this_machine or platform.runtime != "onnxruntime":
        raise RegistryError(
            f"cannot profile '{platform.name}' here: only a platform that describes this machine with runtime "
            f"onnxruntime (this_machine = true, like host-cpu) can be measured; others use estimated tables")
    if threads < 1 or repeats < 1 or warmup < 0:
        raise ValueError(f"need threads >= 1, repeats >= 1, warmup >= 0; got {threads}, {repeats}, {warmup}")


def profile_platform(spec: ArchSpec, platform: Platform, threads: int = 1, repeats: int = DEFAULT_REPEATS,
                     warmup: int = DEFAULT_WARMUP, progress: ProgressCallback | None = None, seed: int = 0,
                     rounds: int = DEFAULT_ROUNDS) -> LatencyTable:
    """Measure every layer of ``spec`` at every width choice with ONNX Runtime on this machine.

    ``repeats`` timed runs per cell are split over ``rounds`` passes, each over the cells in a fresh shuffled
    order, so a burst of load on a shared machine (another job, a frequency change) lands on a few runs of many
    cells instead of on every run of the few cells timed during it. The median over all runs is the term, its
    interquartile range the spread. ``progress(done, total)`` is called after each cell, for a progress bar.
    """
    import onnx
    import onnxruntime as ort

    _check_args(platform, threads, repeats, warmup)
    rounds = max(1, min(rounds, repeats))
    started = time.perf_counter()
    rng = np.random.default_rng(seed)
    timer = _CellTimer(threads, rng)
    cells: list[tuple[LayerSpec, tuple[int, ...], int, int]] = []
    for layer in spec.layers:
        _, grid = layer_grid(spec, layer)
        cells.extend((layer, index, c_in, c_out) for index, c_in, c_out in grid)
    total = rounds * (len(cells) + 1)
    identity = _identity_model(rng)
    runs: dict[int, list[np.ndarray]] = {i: [] for i in range(-1, len(cells))}  # -1: the identity model
    done = 0
    try:
        for r in range(rounds):
            per_round = repeats // rounds + (1 if r < repeats % rounds else 0)
            order = [-1, *range(len(cells))]
            random.Random(seed * 1000 + r).shuffle(order)
            for i in order:
                if i < 0:
                    runs[i].append(timer.time(*identity, per_round, warmup, strip=False))
                else:
                    layer, _, c_in, c_out = cells[i]
                    runs[i].append(timer.time(*_layer_model(layer, c_in, c_out, rng), per_round, warmup))
                done += 1
                if progress is not None:
                    progress(done, total)
    finally:
        timer.close()

    overhead, overhead_iqr = _median_iqr(np.concatenate(runs[-1]))
    terms = {layer.name: np.zeros(layer_grid(spec, layer)[0]) for layer in spec.layers}
    spread = {name: np.zeros(t.shape) for name, t in terms.items()}
    for i, (layer, index, _, _) in enumerate(cells):
        median, iqr = _median_iqr(np.concatenate(runs[i]))
        terms[layer.name][index] = max(median - overhead, MIN_TERM_MS)
        spread[layer.name][index] = iqr

    table = LatencyTable(arch_key=spec.key(), platform=platform.name, source="measured", provenance={},
                         offset_ms=overhead, terms=terms, spread=spread)
    # Check the additive model against whole networks at both ends of the width range: a user reading the table
    # should see how far offset + sum of terms is from a real inference on this machine.
    network_check: dict[str, dict[str, float]] = {}
    for label, config in (("smallest", spec.smallest()), ("largest", spec.largest())):
        measured = measure_network(spec, config, threads=threads, repeats=repeats, warmup=warmup, seed=seed)
        network_check[label] = {"predicted_ms": round(table.predict(spec, config), 4),
                                "measured_ms": round(measured, 4)}
    host = host_cpu_facts()
    table.provenance = {
        "method": "onnxruntime per-layer profiling (median of repeated runs minus the identity-model overhead)",
        "cpu_model": host["cpu_model"],
        "cores": host["cores"],
        "threads": threads,
        "runtime": "onnxruntime",
        "runtime_version": ort.__version__,
        "onnx_version": onnx.__version__,
        "opset": OPSET,
        "graph_optimization": "ORT_ENABLE_ALL",
        "execution_mode": "sequential",
        "nchwc_block": timer.block,
        "boundary_reorders_removed": f"{timer.stripped} of {rounds * len(cells)} cell timings",
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "repetitions": repeats,
        "rounds": rounds,
        "warmup": warmup,
        "cells": len(cells),
        "identity_overhead_ms": overhead,
        "identity_overhead_iqr_ms": overhead_iqr,
        "seed": seed,
        "network_check": network_check,
        "wall_s": round(time.perf_counter() - started, 1),
    }
    return table


def measure_network(spec: ArchSpec, config: Mapping[str, int], threads: int = 1, repeats: int = 200,
                    warmup: int = 20, seed: int = 0) -> float:
    """Median latency (ms) of the whole network at ``config``, built from the same per-layer pieces.

    This is the ground truth a per-layer table is checked against: if ``offset + sum of terms`` strays far from
    it, the additive model (or the overhead subtraction) does not hold on this machine.
    """
    config = spec.validate(config)
    rng = np.random.default_rng(seed)
    g = _Graph(rng)
    first = spec.layers[0]
    c_in0, _ = spec.channels(first, config)
    x = g.input("x", (1, c_in0, first.in_hw, first.in_hw))
    # The residual input of a layer is the latest tensor whose width is set by the same variable as its output.
    produced: dict[object, str] = {}
    out_shape: tuple[int, ...] = ()
    for layer in spec.layers:
        c_in, c_out = spec.channels(layer, config)
        x = g.layer(layer, c_in, c_out, x, produced.get(layer.c_out) if layer.residual else None)
        produced[layer.c_out] = x
        out_shape = _out_shape(layer, c_out)
    times = _time_runs(g.model(x, out_shape), g.feeds, _session_options(threads), repeats, warmup)
    return _median_iqr(times)[0]


def save_measured_table(table: LatencyTable, user_dir: Path | None = None) -> Path:
    """Store a measured table where :meth:`Registry.latency_table` looks for it; atomic, so never half-written."""
    if table.source != "measured":
        raise ValueError("only measured tables are stored; estimated ones are computed on the fly")
    path = measured_table_path(user_registry_dir(user_dir), table.platform, table.arch_key)
    table.save(path)
    return path


def time_onnx_file(path: Path, threads: int = 1, repeats: int = 200, warmup: int = 20,
                   seed: int = 0) -> tuple[float, float]:
    """(median, IQR) in ms of an exported ONNX model at batch 1, timed exactly as the profiler times networks."""
    import onnxruntime as ort

    probe = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(seed)
    feeds = {}
    for inp in probe.get_inputs():
        shape = [1 if not isinstance(d, int) else d for d in inp.shape]
        feeds[inp.name] = rng.standard_normal(shape).astype(np.float32)
    times = _time_runs(Path(path).read_bytes(), feeds, _session_options(threads), repeats, warmup)
    return _median_iqr(times)
