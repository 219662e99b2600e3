"""Timing on this machine: ONNX Runtime and LiteRT backends, the one latency statistic, timing a model file.

**One statistic: the median.** A latency budget is a promise about the latency a user sees, the typical run,
so every number slimzoo measures is a median: the per-layer cells and whole networks the table is fitted to (in
:mod:`slimzoo.platforms.profile` and in a phone kit), ``slimzoo check --measure``, the latency in
``build-log.json`` and every report. The statistic is recorded in each table's provenance (``statistic``), and
the gate warns about a table fitted to another one. (Earlier tables used the 2nd percentile, which is steadier on
a loaded machine but is a best case: a model placed inside a budget by its p2 latency misses that budget in most
runs, and the median-measuring gate then fails it.)

A layer timed alone pays costs a whole network pays once, not once per layer. On x86 the NCHWc layout reorders
ONNX Runtime puts at a graph's edges are cut out of each optimised cell graph here (see :class:`_CellTimer`); the
fixed cost of every ``run`` is measured with the identity probe and subtracted by the profiler.

**int8.** An int8 ONNX probe (a QDQ model, :func:`slimzoo.platforms.probes.quantize_onnx`) is optimised by ONNX
Runtime into QLinearConv / QLinearAdd / QGemm kernels, with QuantizeLinear (and on x86 a Transpose to NHWC) at the
inputs and Transpose + DequantizeLinear at the outputs: costs a network pays once, at its ends. They are cut out of
each optimised int8 cell graph the same way (the cell is fed uint8 tensors in the layout its kernel reads, and
gives its quantized output), and a residual layer's Add reads the conv's NHWC output directly, as in a network.
Quantizing takes 20 ms to 0.2 s per layer probe and up to 2 s per whole network, so each int8 probe is quantized
(and a cell cut) once and kept, on disk for the backend's life, for every round; each round still opens a fresh
session on it, with fresh random inputs.

``onnxruntime``, ``onnx`` and ``ai_edge_litert`` are imported only when something is timed.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from slimzoo.errors import RegistryError
from slimzoo.platforms.latency import DEFAULT_PRECISION
from slimzoo.platforms.probes import (ONNX_INT8, OPSET, TFLITE_INT8, check_probe_precision, identity_model,
                                      layer_model, network_model)
from slimzoo.zoo.spec import ArchSpec, LayerSpec

if TYPE_CHECKING:
    import onnx
    import onnxruntime

__all__ = ["DEFAULT_QUANTILE", "RUNTIMES", "Backend", "Probe", "litert_available", "median_iqr", "open_backend",
           "statistic", "statistic_name", "time_file_runs", "time_onnx_file"]

# The one latency statistic (see the module docstring): None = the median. A percentile (in percent) is accepted
# by the measuring functions for experiments only; the table records which was used, and the gate warns.
DEFAULT_QUANTILE: float | None = None
RUNTIMES = ("onnxruntime", "litert")  # what this machine can time with: one backend each


def statistic_name(quantile: float | None) -> str:
    """How a probe's runs become one number: ``median`` or ``p<q>`` (a low percentile of the pooled runs)."""
    return "median" if quantile is None else f"p{quantile:g}"


def statistic(times: np.ndarray, quantile: float | None) -> float:
    """The ``quantile`` (percent; None = the median) of per-run times: the number a probe is given."""
    return float(np.median(times) if quantile is None else np.percentile(times, quantile))


def median_iqr(times: np.ndarray) -> tuple[float, float]:
    """(median, interquartile range) of per-run times."""
    q1, med, q3 = np.percentile(times, [25, 50, 75])
    return float(med), float(q3 - q1)


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
        optimized = self._optimized(layer_model("onnx", probe, 8, 8, self.rng)[0])
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

    def prepare_int8(self, model: bytes, feeds: dict[str, np.ndarray]) -> tuple[bytes, dict[str, np.ndarray], bool]:
        """(graph, feeds, already optimised?) of an int8 (QDQ) cell with its boundary quantization cut out.

        After optimisation the graph reads its float inputs through QuantizeLinear (and a Transpose to the
        kernels' layout) and writes its outputs through Transpose and DequantizeLinear. In a network these run
        once, at its ends; here they are removed: the cell is fed uint8 tensors of the shape the kernel reads and
        its outputs are the quantized tensors. A residual conv's NHWC output then goes to the Add through a
        Transpose a network does not have; that Transpose is removed and the skip input fed in NHWC.
        """
        from onnx import helper, numpy_helper

        optimized = self._optimized(model)
        graph = optimized.graph
        init = {t.name: t for t in graph.initializer}
        inputs = {vi.name: vi for vi in graph.input}
        feeds = dict(feeds)
        # name -> (shape, numpy dtype) of every tensor fed from outside, as it is cut
        boundary: dict[str, tuple[list[int], np.dtype]] = {n: (list(v.shape), v.dtype) for n, v in feeds.items()}

        def consumers(name: str) -> list[Any]:
            return [n for n in graph.node if name in n.input]

        def zero_dtype(node: Any) -> np.dtype:
            zp = init.get(node.input[2]) if len(node.input) > 2 else None
            return numpy_helper.to_array(zp).dtype if zp is not None else np.dtype(np.uint8)

        removed = 0
        for node in list(graph.node):  # leading QuantizeLinear / Transpose chains, in topological order
            src = node.input[0] if node.input else ""
            if node.domain or src not in boundary or len(consumers(src)) != 1 or src in {o.name for o in graph.output}:
                continue
            shape, dtype = boundary[src]
            if node.op_type == "QuantizeLinear":
                boundary[node.output[0]] = (shape, zero_dtype(node))
            elif node.op_type == "Transpose":
                perm = list(next(a.ints for a in node.attribute if a.name == "perm"))
                boundary[node.output[0]] = ([shape[i] for i in perm], dtype)
            else:
                continue
            del boundary[src]
            graph.node.remove(node)
            removed += 1
        outputs: dict[str, np.dtype] = {o.name: np.dtype(np.float32) for o in graph.output}
        for node in reversed(list(graph.node)):  # trailing Transpose / DequantizeLinear chains
            out = node.output[0] if node.output else ""
            if node.domain or out not in outputs or node.op_type not in ("DequantizeLinear", "Transpose"):
                continue
            src = node.input[0]
            if src in boundary or len(consumers(src)) != 1:
                continue
            dtype = zero_dtype(node) if node.op_type == "DequantizeLinear" else outputs[out]
            del outputs[out]
            outputs[src] = dtype
            graph.node.remove(node)
            removed += 1
        if not removed:
            return model, feeds, False
        # residual: conv (NHWC) -> Transpose -> QLinearAdd(., skip): the Add reads the conv's output directly
        for node in list(graph.node):
            if node.op_type != "Transpose" or node.domain:
                continue
            users = consumers(node.output[0])
            if len(users) != 1 or users[0].op_type != "QLinearAdd":
                continue
            add = users[0]
            others = [name for name in add.input if name in boundary and name != node.output[0]]
            if len(others) != 1:
                continue
            perm = list(next(a.ints for a in node.attribute if a.name == "perm"))
            shape, dtype = boundary[others[0]]
            boundary[others[0]] = ([shape[perm.index(j)] for j in range(len(perm))], dtype)
            add.input[list(add.input).index(node.output[0])] = node.input[0]
            graph.node.remove(node)
        del graph.input[:]
        new_feeds: dict[str, np.ndarray] = {}
        for name, (shape, dtype) in boundary.items():
            if name in inputs or any(name in n.input for n in graph.node):
                graph.input.append(helper.make_tensor_value_info(
                    name, helper.np_dtype_to_tensor_dtype(dtype), shape))
                new_feeds[name] = _random_feed(self.rng, shape, dtype)
        del graph.output[:]
        for name, dtype in outputs.items():
            graph.output.append(helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(dtype), None))
        self.stripped += 1
        return optimized.SerializeToString(), new_feeds, True

    def time(self, model: bytes, feeds: dict[str, np.ndarray], repeats: int, warmup: int,
             strip: bool = True) -> np.ndarray:
        """Per-run wall times in ms, after ``warmup`` untimed runs (first runs pay allocation and cache misses)."""
        optimized = False
        if strip:
            model, feeds, optimized = self.prepare(model, feeds)
        return _time_runs(model, feeds, self.plain_opts if optimized else self.opts, repeats, warmup)


def _random_feed(rng: np.random.Generator, shape: Any, dtype: Any) -> np.ndarray:
    """A random input of ``shape`` and ``dtype``: the full range of an integer type, standard normal otherwise."""
    dtype = np.dtype(dtype)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return rng.integers(info.min, int(info.max) + 1, shape).astype(dtype)
    return rng.standard_normal(shape).astype(dtype)


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


Probe = tuple[bytes, dict[str, np.ndarray], Any]  # model bytes, input feeds, runtime-specific run options


class _OrtBackend:
    """ONNX Runtime, CPU provider: cells with their NCHWc boundary reorders (int8: boundary quantization) cut,
    networks as built."""

    runtime = "onnxruntime"

    def __init__(self, threads: int, rng: np.random.Generator, spinning: bool = True,
                 precision: str = DEFAULT_PRECISION) -> None:
        self.threads = threads
        self.rng = rng
        self.spinning = spinning
        self.precision = check_probe_precision("onnx", precision)
        self.timer = _CellTimer(threads, rng, spinning)
        self._cache: dict[Any, tuple[Path, dict[str, tuple[tuple[int, ...], np.dtype]], bool]] = {}

    def version(self) -> str:
        import onnxruntime as ort

        return ort.__version__

    def _kept(self, key: Any, build: Callable[[], tuple[bytes, dict[str, np.ndarray], bool]]
              ) -> tuple[bytes, dict[str, np.ndarray], bool]:
        """An int8 probe (graph, feeds, already optimised?), built on first use and kept on disk; fresh random
        feeds of its inputs each time."""
        if key not in self._cache:
            model, feeds, optimized = build()
            path = Path(self.timer._tmp.name) / f"int8_{len(self._cache)}.onnx"
            path.write_bytes(model)
            self._cache[key] = (path, {n: (v.shape, v.dtype) for n, v in feeds.items()}, optimized)
        path, shapes, optimized = self._cache[key]
        feeds = {name: _random_feed(self.rng, shape, dtype) for name, (shape, dtype) in shapes.items()}
        return path.read_bytes(), feeds, optimized

    def cell(self, layer: LayerSpec, c_in: int, c_out: int) -> Probe:
        if self.precision == "int8":
            model, feeds, optimized = self._kept(("cell", layer.name, c_in, c_out), lambda: self.timer.prepare_int8(
                *layer_model("onnx", layer, c_in, c_out, self.rng, "int8")))
        else:
            model, feeds, optimized = self.timer.prepare(*layer_model("onnx", layer, c_in, c_out, self.rng))
        return model, feeds, self.timer.plain_opts if optimized else self.timer.opts

    def identity(self) -> Probe:
        return (*identity_model("onnx", self.rng), self.timer.opts)

    def network(self, spec: ArchSpec, config: Mapping[str, int], seed: int) -> Probe:
        if self.precision == "int8":
            key = ("network", spec.key(), tuple(sorted(spec.validate(config).items())), seed)
            model, feeds, _ = self._kept(key, lambda: (*network_model("onnx", spec, config, seed, "int8"), False))
            return model, feeds, self.timer.opts
        return (*network_model("onnx", spec, config, seed), self.timer.opts)

    def time(self, probe: Probe, runs: int, warmup: int) -> np.ndarray:
        return _time_runs(probe[0], probe[1], probe[2], runs, warmup)

    def facts(self, cells: int) -> dict[str, Any]:
        import onnx

        facts = {"onnx_version": onnx.__version__, "opset": OPSET, "graph_optimization": "ORT_ENABLE_ALL",
                 "execution_mode": "sequential", "intra_op_spinning": self.spinning, "nchwc_block": self.timer.block}
        if self.precision == "int8":
            facts["quantization"] = dict(ONNX_INT8)
            built = sum(1 for key in self._cache if key[0] == "cell")  # each cell is cut once, then kept
            facts["boundary_quantization_removed"] = f"{self.timer.stripped} of {built} cells"
        else:
            facts["boundary_reorders_removed"] = f"{self.timer.stripped} of {cells} cell timings"
        return facts

    def close(self) -> None:
        self.timer.close()


class _LiteRTBackend:
    """The LiteRT (TFLite) interpreter from ``ai-edge-litert``, XNNPACK delegate, NHWC probes."""

    runtime = "litert"

    def __init__(self, threads: int, rng: np.random.Generator, precision: str = DEFAULT_PRECISION) -> None:
        self.threads = threads
        self.rng = rng
        self.precision = check_probe_precision("tflite", precision)

    def version(self) -> str:
        from importlib.metadata import version

        return version("ai-edge-litert")

    def cell(self, layer: LayerSpec, c_in: int, c_out: int) -> Probe:
        return (*layer_model("tflite", layer, c_in, c_out, self.rng, self.precision), None)

    def identity(self) -> Probe:
        return (*identity_model("tflite", self.rng), None)

    def network(self, spec: ArchSpec, config: Mapping[str, int], seed: int) -> Probe:
        return (*network_model("tflite", spec, config, seed, self.precision), None)

    def time(self, probe: Probe, runs: int, warmup: int) -> np.ndarray:
        return _time_tflite(probe[0], probe[1], self.threads, runs, warmup)

    def facts(self, cells: int) -> dict[str, Any]:
        facts: dict[str, Any] = {"delegate": "XNNPACK (the interpreter's default)", "layout": "NHWC"}
        if self.precision == "int8":
            facts["quantization"] = dict(TFLITE_INT8)
        return facts

    def close(self) -> None:
        pass


def litert_available() -> bool:
    """Whether the LiteRT interpreter (``ai-edge-litert``) can be imported here."""
    try:
        import ai_edge_litert.interpreter  # noqa: F401
    except Exception:  # noqa: BLE001  (any import failure means: not usable here)
        return False
    return True


Backend = _OrtBackend | _LiteRTBackend


def open_backend(runtime: str, threads: int, rng: np.random.Generator, spinning: bool = True,
                 precision: str = DEFAULT_PRECISION) -> Backend:
    """The timing backend of ``runtime`` (one of :data:`RUNTIMES`) for probes of ``precision``; the caller closes
    it."""
    if runtime == "onnxruntime":
        return _OrtBackend(threads, rng, spinning, precision)
    if runtime == "litert":
        if not litert_available():
            raise RegistryError("runtime 'litert' is not available: the LiteRT interpreter (pip install "
                                "ai-edge-litert) is not installed; use --runtime onnxruntime")
        return _LiteRTBackend(threads, rng, precision)
    raise RegistryError(f"unknown runtime '{runtime}'; valid: {', '.join(RUNTIMES)}")


def time_onnx_file(path: Path, threads: int = 1, repeats: int = 200, warmup: int = 20,
                   seed: int = 0) -> tuple[float, float]:
    """(median, IQR) in ms of an exported ONNX model at batch 1, timed exactly as the profiler times networks."""
    return median_iqr(time_file_runs(Path(path), threads, repeats, warmup, seed))


def time_file_runs(path: Path, threads: int, repeats: int, warmup: int, seed: int) -> np.ndarray:
    """Per-run times (ms) of a model file at batch 1: ``.onnx`` with ONNX Runtime on random inputs, ``.tflite``
    with LiteRT on zeros (values do not change a float model's timing)."""
    rng = np.random.default_rng(seed)
    data = path.read_bytes()
    if path.suffix == ".tflite":
        return _time_tflite(data, {}, threads, repeats, warmup)
    import onnxruntime as ort

    probe = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    feeds: dict[str, np.ndarray] = {}
    for inp in probe.get_inputs():
        shape = [1 if not isinstance(d, int) else d for d in inp.shape]
        feeds[inp.name] = rng.standard_normal(shape).astype(np.float32)
    return _time_runs(data, feeds, _session_options(threads), repeats, warmup)
