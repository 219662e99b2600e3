"""Roofline latency estimates: a table for any architecture on any platform, without the device in hand.

Per layer: ``time = max(MACs / rate, bytes / bandwidth) + per_layer_overhead``, with ``rate`` the platform's effective
dense-conv MAC rate (depthwise layers get ``depthwise_efficiency`` times that) and bytes the fp32 activations read and
written plus the weights. Peak rates are unknown for every built-in (and would overstate what a runtime reaches),
so ``rate`` is *fitted*: one scalar per platform, solved by bisection so that the full MobileNetV2 at 224x224 is
predicted at the platform's published measured latency. Everything else in the formula is a stated assumption, and
every table records which inputs were known, which were unknown and which were assumed.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from slimzoo.errors import RegistryError
from slimzoo.platforms.latency import LatencyTable, layer_grid
from slimzoo.platforms.registry import Platform, host_cpu_facts
from slimzoo.zoo.mobilenetv2_spec import mobilenetv2_spec
from slimzoo.zoo.spec import ArchSpec, LayerSpec

__all__ = ["BYTES_PER_ELEMENT", "RooflineParams", "calibration_spec", "estimate_table", "layer_ms",
           "roofline_params"]

BYTES_PER_ELEMENT = 4  # fp32 activations and weights: what the CPU runtimes we estimate for compute in


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


def _layer_parts(layer: LayerSpec, c_in: int, c_out: int, dw_eff: float,
                 bandwidth_gbps: float | None) -> tuple[float, float]:
    """(compute ms at 1 GMAC/s, memory ms): split so the fit can vary the rate without recomputing the rest.

    Depthwise convs do only k*k MACs per input element and cannot use the GEMM micro-kernels dense convs run on,
    so the same hardware reaches a fraction of the dense rate on them.
    """
    eff = dw_eff if layer.kind == "dwconv" else 1.0
    compute = layer.macs(c_in, c_out) / (eff * 1e6)  # MACs / (1 GMAC/s) in ms
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


def estimate_table(platform: Platform, spec: ArchSpec) -> LatencyTable:
    """The roofline table of ``spec`` on ``platform`` (labelled estimated; a measured table replaces it)."""
    params, provenance = roofline_params(platform)
    terms: dict[str, np.ndarray] = {}
    for layer in spec.layers:
        shape, cells = layer_grid(spec, layer)
        term = np.empty(shape, dtype=np.float64)
        for index, c_in, c_out in cells:
            term[index] = layer_ms(layer, c_in, c_out, params)
        terms[layer.name] = term
    return LatencyTable(arch_key=spec.key(), platform=platform.name, source="estimated", provenance=provenance,
                        offset_ms=params.offset_ms, terms=terms)
