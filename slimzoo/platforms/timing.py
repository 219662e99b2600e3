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

``onnxruntime``, ``onnx`` and ``ai_edge_litert`` are imported only when something is timed.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from slimzoo.errors import RegistryError
from slimzoo.platforms.probes import OPSET, identity_model, layer_model, network_model
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
        model, feeds, optimized = self.timer.prepare(*layer_model("onnx", layer, c_in, c_out, self.rng))
        return model, feeds, self.timer.plain_opts if optimized else self.timer.opts

    def identity(self) -> Probe:
        return (*identity_model("onnx", self.rng), self.timer.opts)

    def network(self, spec: ArchSpec, config: Mapping[str, int], seed: int) -> Probe:
        return (*network_model("onnx", spec, config, seed), self.timer.opts)

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
        return (*layer_model("tflite", layer, c_in, c_out, self.rng), None)

    def identity(self) -> Probe:
        return (*identity_model("tflite", self.rng), None)

    def network(self, spec: ArchSpec, config: Mapping[str, int], seed: int) -> Probe:
        return (*network_model("tflite", spec, config, seed), None)

    def time(self, probe: Probe, runs: int, warmup: int) -> np.ndarray:
        return _time_tflite(probe[0], probe[1], self.threads, runs, warmup)

    def facts(self, cells: int) -> dict[str, Any]:
        return {"delegate": "XNNPACK (the interpreter's default)", "layout": "NHWC"}

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


def open_backend(runtime: str, threads: int, rng: np.random.Generator, spinning: bool = True) -> Backend:
    """The timing backend of ``runtime`` (one of :data:`RUNTIMES`); the caller closes it."""
    if runtime == "onnxruntime":
        return _OrtBackend(threads, rng, spinning)
    if runtime == "litert":
        if not litert_available():
            raise RegistryError("runtime 'litert' is not available: the LiteRT interpreter (pip install "
                                "ai-edge-litert) is not installed; use --runtime onnxruntime")
        return _LiteRTBackend(threads, rng)
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
