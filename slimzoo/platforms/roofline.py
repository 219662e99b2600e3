"""Roofline latency estimates: a table for any architecture on any platform, without the device in hand.

Per layer: ``time = max(MACs / rate, bytes / bandwidth) + per_layer_overhead``, with ``rate`` the platform's effective
dense-conv MAC rate (depthwise, squeeze-and-excitation and elementwise work such as h-swish and add layers get
``depthwise_efficiency`` times that) and bytes the fp32 activations read and written plus the weights, all read
from the spec's layer fields (kind, activation, inputs), so any registered family is estimated the same way. Peak rates are unknown for every built-in (and would overstate what a runtime reaches),
so ``rate`` is *fitted*: one scalar per platform, solved by bisection so that the full MobileNetV2 at 224x224 is
predicted at the platform's published measured latency. Everything else in the formula is a stated assumption, and
every table records which inputs were known, which were unknown and which were assumed.

**Other precisions.** The calibration points are fp32 (or, for Core ML, the runtime's default) runs. An int8 or fp16
estimate is the fp32 roofline with its compute and memory time divided by an *assumed* speed-up of the platform's
kind (:data:`PRECISION_SPEEDUPS`, by runtime; a platform file may give its own ``latency.int8_speedup`` with its
source); per-layer dispatch overhead and the per-inference offset are kept as they are. The figure, its source and
the plain statement that it is an assumption are recorded in the table's provenance (``precision_assumption``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from slimzoo.errors import RegistryError
from slimzoo.platforms.latency import DEFAULT_PRECISION, LatencyTable, check_precision, layer_grid
from slimzoo.platforms.registry import Platform, host_cpu_facts
from slimzoo.zoo.mobilenetv2_spec import mobilenetv2_spec
from slimzoo.zoo.spec import ArchSpec, LayerSpec

__all__ = ["BYTES_PER_ELEMENT", "PRECISION_SPEEDUPS", "PrecisionAssumption", "RooflineParams", "calibration_spec",
           "estimate_table", "layer_ms", "precision_assumption", "roofline_params"]

BYTES_PER_ELEMENT = 4  # fp32 activations and weights: what the CPU runtimes we estimate for compute in


@dataclass(frozen=True)
class PrecisionAssumption:
    """How much faster than fp32 a model of another precision is assumed to run on a platform, and why."""

    speedup: float
    source: str


# Assumed speed-up over fp32 of the compute and memory time, by precision and platform kind (runtime). These are
# assumptions, not measurements of the platforms they are applied to; docs/device-facts.md gives the sources.
PRECISION_SPEEDUPS: dict[str, dict[str, PrecisionAssumption]] = {
    "int8": {
        "tflite": PrecisionAssumption(1.46, (
            "TFLite hosted-models table (tensorflow lite/g3doc/guide/hosted_models.md), Pixel 3 (Snapdragon 845), "
            "CPU 4 threads: MobileNetV2 1.0 224x224 float 17.5 ms, Mobilenet_V2_1.0_224_quant 12 ms, "
            "17.5 / 12 = 1.46. Another SoC, an older TFLite and another network than this platform's, so an "
            "assumption for it")),
        "onnxruntime": PrecisionAssumption(1.0, (
            "no speed-up assumed (engineering assumption; no public MobileNetV2 int8 / fp32 figure for ONNX "
            "Runtime on x86 was found): u8s8 kernels do about twice the multiply-accumulates per instruction of "
            "fp32 FMA on AVX2, but a QDQ model adds quantize, dequantize and layout work and small layers gain "
            "nothing. On the 2-core development VM (AMD EPYC, onnxruntime 1.32) int8 whole networks of the shipped "
            "spec ran 1.0-1.3x as fast as fp32 at full width and 0.46-0.74x (slower) at the smallest width "
            "(docs/benchmarks.md, issue 14), so neither a gain nor a loss is assumed. Profile the host with "
            "--precision int8")),
        "coreml": PrecisionAssumption(1.0, (
            "no speed-up assumed: the coremltools Performance guide (opt-quantization-perf) says int8-int8 compute "
            "is faster on the Neural Engine of A17 Pro / M4 and later; on earlier chips (the iPhone 12's A14) int8 "
            "weights cut memory traffic but the Neural Engine computes in fp16, as the fp32 (default compute "
            "units) calibration point already does")),
    },
    "fp16": {
        "tflite": PrecisionAssumption(1.0, (
            "no speed-up assumed: a float16-quantized TFLite model's weights are dequantized to fp32 on the CPU by "
            "default (TFLite post-training float16 quantization guide), so XNNPACK runs fp32 kernels")),
        "onnxruntime": PrecisionAssumption(1.0, (
            "no speed-up assumed: ONNX Runtime's CPU provider has fp32 kernels for most ops and inserts casts "
            "around fp16 ones")),
        "coreml": PrecisionAssumption(1.0, (
            "no speed-up assumed: Core ML runs fp16 on the GPU and Neural Engine whatever the model's stored "
            "precision, and the calibration point is such a run")),
    },
}


def precision_assumption(platform: Platform, precision: str) -> PrecisionAssumption | None:
    """The assumed speed-up of ``precision`` over fp32 on ``platform`` (None for fp32): the platform file's own
    ``latency.int8_speedup`` for int8 when it gives one, else the default of the platform's runtime."""
    if check_precision(precision) == DEFAULT_PRECISION:
        return None
    lat = platform.latency
    if precision == "int8" and lat.int8_speedup is not None:
        return PrecisionAssumption(lat.int8_speedup, f"{platform.path}: {lat.int8_speedup_source}")
    return PRECISION_SPEEDUPS[precision][platform.runtime]


@dataclass(frozen=True)
class RooflineParams:
    """The numbers one platform's estimate is made from (``bandwidth_gbps`` None = no memory term)."""

    rate_gmacs_per_s: float
    depthwise_efficiency: float
    bandwidth_gbps: float | None
    per_layer_overhead_ms: float
    offset_ms: float


def layer_ms(layer: LayerSpec, c_in: int, c_out: int, params: RooflineParams) -> float:
    """Roofline time of one layer at these channel counts, in ms."""
    compute, memory = _layer_parts(layer, c_in, c_out, params.depthwise_efficiency, params.bandwidth_gbps)
    return max(compute / params.rate_gmacs_per_s, memory) + params.per_layer_overhead_ms


# Layer kinds that run on GEMM micro-kernels (at the fitted dense rate); every other kind's MACs, and every
# layer's elementwise operations, run at the depthwise efficiency (no GEMM to amortise loads over).
GEMM_KINDS = ("conv", "pool_linear")


def _layer_parts(layer: LayerSpec, c_in: int, c_out: int, dw_eff: float,
                 bandwidth_gbps: float | None) -> tuple[float, float]:
    """(compute ms at 1 GMAC/s, memory ms): split so the fit can vary the rate without recomputing the rest.

    Depthwise convs do only k*k MACs per input element and cannot use the GEMM micro-kernels dense convs run on,
    so the same hardware reaches a fraction of the dense rate on them; so do squeeze-and-excitation (pooling,
    matrix-vector products, scaling) and the elementwise passes of ``LayerSpec.elementwise_ops`` (an ``add``
    layer's sums, h-swish), each counted as one MAC. Everything comes from the spec's fields (kind, act, inputs).
    """
    eff = 1.0 if layer.kind in GEMM_KINDS else dw_eff
    compute = (layer.macs(c_in, c_out) / eff + layer.elementwise_ops(c_in, c_out) / dw_eff) / 1e6  # ms at 1 GMAC/s
    if bandwidth_gbps is None:
        return compute, 0.0
    nbytes = BYTES_PER_ELEMENT * (layer.activation_elements(c_in, c_out) + layer.weight_count(c_in, c_out))
    return compute, nbytes / (bandwidth_gbps * 1e6)


def calibration_spec(platform: Platform) -> ArchSpec:
    """The network the published calibration point was measured on: ImageNet MobileNetV2 at 224x224."""
    return mobilenetv2_spec(input_size=224, in_channels=3, num_classes=1000,
                            width_mult=platform.latency.calibration_width_mult)


def _bandwidth(platform: Platform) -> tuple[float | None, str]:
    fact = platform.specs.memory_bandwidth_gbps
    if not platform.latency.memory_term:
        return None, "memory term disabled by latency.memory_term = false"
    if not fact.known:
        return None, "memory term omitted: memory_bandwidth_gbps unknown"
    return float(fact.value), f"memory_bandwidth_gbps {fact.value} ({fact.confidence})"  # type: ignore[arg-type]


def _fit_rate(platform: Platform, bandwidth: float | None) -> tuple[float, ArchSpec]:
    """The dense MAC rate (GMAC/s) at which the calibration network takes exactly ``calibration_ms``.

    Predicted time falls monotonically with the rate, towards a floor set by memory and overheads, so bisection in
    log space finds it whenever the published time is above that floor; below it the platform's own facts
    contradict the published point, and we say so rather than fit nonsense.
    """
    lat = platform.latency
    target = float(lat.calibration_ms)  # type: ignore[arg-type]
    spec = calibration_spec(platform)
    config = spec.largest()
    parts = np.array([_layer_parts(layer, *spec.channels(layer, config), lat.depthwise_efficiency, bandwidth)
                      for layer in spec.layers])
    fixed = lat.offset_ms + len(spec.layers) * lat.per_layer_overhead_us / 1e3

    def total(rate: float) -> float:
        return fixed + float(np.maximum(parts[:, 0] / rate, parts[:, 1]).sum())

    floor = fixed + float(parts[:, 1].sum())
    if target <= floor * 1.001:
        raise RegistryError(
            f"{platform.path}: field 'latency.calibration_ms' {target} ms is at or below what memory traffic and "
            f"overheads alone take ({floor:.3f} ms) for the calibration network; check the bandwidth, the "
            f"overheads, or set latency.memory_term = false")
    lo, hi = math.log(1e-6), math.log(1e9)
    for _ in range(200):
        mid = (lo + hi) / 2
        if total(math.exp(mid)) > target:
            lo = mid
        else:
            hi = mid
    return math.exp((lo + hi) / 2), spec


def roofline_params(platform: Platform) -> tuple[RooflineParams, dict[str, Any]]:
    """The fitted (or assumed) parameters and a provenance record saying where each came from."""
    lat = platform.latency
    bandwidth, bandwidth_note = _bandwidth(platform)
    provenance: dict[str, Any] = {
        "method": "roofline",
        "formula": "t_layer = max(MACs / (rate * (depthwise_efficiency if dwconv else 1)), bytes / bandwidth)"
                   " + per_layer_overhead; bytes = 4 * (activations read + written + weights)",
        "calibration": lat.calibration,
        "memory": bandwidth_note,
        "specs_used": ["memory_bandwidth_gbps"] if bandwidth is not None else [],
        "specs_known": {name: str(fact) for name, fact in platform.specs.known().items()},
        "specs_unknown": platform.specs.unknown(),
        "assumed": {"depthwise_efficiency": lat.depthwise_efficiency,
                    "per_layer_overhead_us": lat.per_layer_overhead_us,
                    "offset_ms": lat.offset_ms,
                    "bytes_per_element": BYTES_PER_ELEMENT},
    }
    if lat.calibration_ms is not None:
        rate, spec = _fit_rate(platform, bandwidth)
        provenance["calibration_ms"] = lat.calibration_ms
        provenance["calibration_arch"] = (f"mobilenetv2 {lat.calibration_width_mult:.1f} 224x224, 1000 classes, "
                                          f"largest config ({spec.key()})")
        provenance["fitted_rate_gmacs_per_s"] = rate
        peak = platform.specs.peak_fp32_gflops
        if peak.known:
            provenance["fitted_fraction_of_peak"] = 2 * rate / float(peak.value)  # type: ignore[arg-type]
    else:
        rate = float(lat.assumed_gmacs_per_s)  # type: ignore[arg-type]
        provenance["assumed"]["rate_gmacs_per_s"] = rate
        provenance["calibration_ms"] = None
    if platform.this_machine:
        provenance["host"] = host_cpu_facts()
    if lat.note:
        provenance["note"] = lat.note
    params = RooflineParams(rate_gmacs_per_s=rate, depthwise_efficiency=lat.depthwise_efficiency,
                            bandwidth_gbps=bandwidth, per_layer_overhead_ms=lat.per_layer_overhead_us / 1e3,
                            offset_ms=lat.offset_ms)
    provenance["params"] = asdict(params)
    return params, provenance


def estimate_table(platform: Platform, spec: ArchSpec, precision: str = DEFAULT_PRECISION) -> LatencyTable:
    """The roofline table of ``spec`` on ``platform`` at ``precision`` (labelled estimated; a measured table of the
    same precision replaces it). For int8 and fp16, the fp32 roofline's compute and memory time divided by the
    assumed speed-up (:func:`precision_assumption`), which the provenance states as an assumption."""
    params, provenance = roofline_params(platform)
    assumption = precision_assumption(platform, precision)
    if assumption is not None:
        # max(c / r, m) / s == max(c / (r * s), m / s): a faster rate and a wider bandwidth, overheads unchanged
        params = RooflineParams(
            rate_gmacs_per_s=params.rate_gmacs_per_s * assumption.speedup,
            depthwise_efficiency=params.depthwise_efficiency,
            bandwidth_gbps=None if params.bandwidth_gbps is None else params.bandwidth_gbps * assumption.speedup,
            per_layer_overhead_ms=params.per_layer_overhead_ms, offset_ms=params.offset_ms)
        provenance["precision"] = precision
        provenance["precision_assumption"] = {
            "assumed": True,
            "statement": (f"ASSUMED, not measured: the {precision} latency is the fp32 estimate's compute and memory "
                          f"time divided by an assumed speed-up of {assumption.speedup:g}x "
                          f"({platform.runtime} platforms); per-layer overhead and offset unchanged. Measure an "
                          f"{precision} table to replace it"),
            "speedup": assumption.speedup,
            "applies_to": "compute and memory time of every layer (not per-layer overhead or offset)",
            "source": assumption.source,
        }
        provenance["params"] = asdict(params)
    terms: dict[str, np.ndarray] = {}
    for layer in spec.layers:
        shape, cells = layer_grid(spec, layer)
        term = np.empty(shape, dtype=np.float64)
        for index, c_in, c_out in cells:
            term[index] = layer_ms(layer, c_in, c_out, params)
        terms[layer.name] = term
    return LatencyTable(arch_key=spec.key(), platform=platform.name, source="estimated", provenance=provenance,
                        offset_ms=params.offset_ms, terms=terms, precision=precision)
