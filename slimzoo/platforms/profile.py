"""Profiling this machine: the per-layer table, whole networks, and the fitted table built from both.

The probes are built by :mod:`slimzoo.platforms.probes` and timed by :mod:`slimzoo.platforms.timing` (one
statistic, the median; see there). The fixed cost of every ``run`` is paid once by a whole network, not once per
layer, so it is measured with the identity probe, subtracted from each cell and kept as the table's ``offset_ms``.

**Noise.** On a shared machine the latency of one session measures the other jobs as much as the model (on the
2-core development VM at load 3-9, session medians of one network varied by 30-50%). So every probe is timed in
several *rounds*, each a fresh session, with all probes in a fresh shuffled order per round (a burst of load lands
on a few runs of many probes, never on all runs of one), and its latency is the median of all its runs pooled
over the rounds. Measuring the same network as independent probes (``repeat`` samples) gives the noise that is
left; it is recorded with the table.

:func:`profile_and_fit` is the whole procedure behind ``slimzoo profile``: per-layer table, whole networks at
random and uniform width configs (a held-out share never shown to the fit), the constrained least-squares fit of
:mod:`slimzoo.platforms.fit`, and the held-out accuracy, all recorded in the table it returns.

**Precision.** ``precision="int8"`` does all of this with int8 probes (:mod:`slimzoo.platforms.probes`: ONNX models
quantized by ONNX Runtime's ``quantize_static``, or full-integer TFLite models for LiteRT) and gives an int8 table,
stored under its own key beside the fp32 one (:func:`save_measured_table`). fp16 probes are not built.
"""

from __future__ import annotations

import datetime as dt
import random
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from slimzoo.errors import ConfigError, RegistryError
from slimzoo.platforms.latency import DEFAULT_PRECISION, LatencyTable, check_precision, layer_cells, layer_grid
from slimzoo.platforms.probes import PROBE_PRECISIONS
from slimzoo.platforms.registry import (Platform, canonical_runtime, host_cpu_facts, measured_table_path,
                                        user_registry_dir)
from slimzoo.platforms.timing import (DEFAULT_QUANTILE, RUNTIMES, Backend, Probe, median_iqr, open_backend, statistic,
                                      statistic_name)
from slimzoo.zoo.spec import ArchSpec, WidthConfig

__all__ = ["DEFAULT_NETWORK_ROUNDS", "DEFAULT_NETWORK_RUNS", "DEFAULT_REPEATS", "DEFAULT_ROUNDS", "DEFAULT_SAMPLES",
           "DEFAULT_WARMUP", "MIN_TERM_MS", "ProgressCallback", "measure_network", "measure_networks",
           "profile_and_fit", "profile_platform", "repeat_configs", "sample_configs", "save_measured_table"]

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
MIN_TERM_MS = 1e-4  # a layer never costs less than 0.1 us, even when it times faster than the identity model


def _campaign(count: int, make: Callable[[int], Probe], backend: Backend, runs: int, rounds: int, warmup: int,
              seed: int, tick: Callable[[], None]) -> list[np.ndarray]:
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


RUNTIME_PROBE_FORMAT = {"onnxruntime": "onnx", "litert": "tflite"}


def _check_args(platform: Platform, threads: int, repeats: int, warmup: int, runtime: str = "onnxruntime",
                precision: str = DEFAULT_PRECISION) -> None:
    check_precision(precision)
    if not platform.this_machine:
        raise RegistryError(
            f"cannot profile '{platform.name}' here: only a platform that describes this machine "
            f"(this_machine = true, like host-cpu) can be measured; for a phone, use slimzoo profile-kit")
    if runtime not in RUNTIMES:
        raise RegistryError(f"unknown runtime '{runtime}'; valid: {', '.join(RUNTIMES)}")
    if runtime == "onnxruntime" and platform.runtime != "onnxruntime":
        raise RegistryError(f"cannot profile '{platform.name}' with onnxruntime: its runtime is {platform.runtime}")
    if precision not in PROBE_PRECISIONS[RUNTIME_PROBE_FORMAT[runtime]]:
        raise RegistryError(f"cannot profile {precision} with {runtime}: {precision} probes are not built (measured "
                            f"precisions: {', '.join(PROBE_PRECISIONS[RUNTIME_PROBE_FORMAT[runtime]])}); the "
                            f"{precision} table stays the estimate")
    if threads < 1 or repeats < 1 or warmup < 0:
        raise ValueError(f"need threads >= 1, repeats >= 1, warmup >= 0; got {threads}, {repeats}, {warmup}")


# -- profiling ------------------------------------------------------------------------------------------------
def profile_platform(spec: ArchSpec, platform: Platform, threads: int = 1, repeats: int = DEFAULT_REPEATS,
                     warmup: int = DEFAULT_WARMUP, progress: ProgressCallback | None = None, seed: int = 0,
                     rounds: int = DEFAULT_ROUNDS, quantile: float | None = DEFAULT_QUANTILE,
                     runtime: str = "onnxruntime", network_check: bool = True, spinning: bool = True,
                     precision: str = DEFAULT_PRECISION) -> LatencyTable:
    """Measure every layer of ``spec`` at every width choice on this machine: the per-layer table (of probes of
    ``precision``).

    ``repeats`` timed runs per cell are split over ``rounds`` passes, each over the cells in a fresh shuffled
    order (see :func:`_campaign`). A cell's term is the ``quantile`` (percent; None = median) of its pooled runs
    minus the same statistic of the identity model, its interquartile range the spread. ``progress(done,
    total)`` is called after each cell, for a progress bar. This is the *prior* of :func:`profile_and_fit`;
    alone, it predicts a whole network only as well as layers timed apart add up.
    """
    _check_args(platform, threads, repeats, warmup, runtime, precision)
    started = time.perf_counter()
    rng = np.random.default_rng(seed)
    backend = open_backend(runtime, threads, rng, spinning, precision)
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

    overhead = statistic(runs[0], quantile)
    overhead_median, overhead_iqr = median_iqr(runs[0])
    terms = {layer.name: np.zeros(layer_grid(spec, layer)[0]) for layer in spec.layers}
    spread = {name: np.zeros(t.shape) for name, t in terms.items()}
    for (layer, index, _, _), times in zip(cells, runs[1:], strict=True):
        terms[layer.name][index] = max(statistic(times, quantile) - overhead, MIN_TERM_MS)
        spread[layer.name][index] = median_iqr(times)[1]

    table = LatencyTable(arch_key=spec.key(), platform=platform.name, source="measured", provenance={},
                         offset_ms=overhead, terms=terms, spread=spread, runtime=canonical_runtime(runtime),
                         precision=precision)
    host = host_cpu_facts()
    table.provenance = {
        "method": f"{runtime} per-layer profiling ({statistic_name(quantile)} of repeated runs minus the "
                  f"identity model's)",
        "precision": precision,
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
                                    quantile=quantile, seed=seed, runtime=runtime, spinning=spinning,
                                    precision=precision)
        for label, config, m in zip(("smallest", "largest"), ends, measured, strict=True):
            check[label] = {"predicted_ms": round(table.predict(spec, config), 4), "measured_ms": round(m["ms"], 4)}
        table.provenance["network_check"] = check
    table.provenance["wall_s"] = round(time.perf_counter() - started, 1)
    return table


def measure_networks(spec: ArchSpec, configs: Sequence[Mapping[str, int]], threads: int = 1,
                     runs: int = DEFAULT_NETWORK_RUNS, rounds: int = DEFAULT_NETWORK_ROUNDS,
                     warmup: int = DEFAULT_WARMUP, quantile: float | None = DEFAULT_QUANTILE, seed: int = 0,
                     runtime: str = "onnxruntime", progress: ProgressCallback | None = None,
                     spinning: bool = True, precision: str = DEFAULT_PRECISION) -> list[dict[str, float]]:
    """Whole-network latency of each config (as a model of ``precision``), timed end to end in interleaved rounds
    (see :func:`_campaign`).

    Returns one ``{"ms", "median_ms", "iqr_ms", "runs"}`` per config, ``ms`` being the ``quantile`` statistic.
    A config listed twice is measured twice, independently: that is how the noise is measured.
    """
    configs = [spec.validate(c) for c in configs]
    if threads < 1 or runs < 1 or warmup < 0:
        raise ValueError(f"need threads >= 1, runs >= 1, warmup >= 0; got {threads}, {runs}, {warmup}")
    backend = open_backend(runtime, threads, np.random.default_rng(seed), spinning, precision)
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
        median, iqr = median_iqr(t)
        out.append({"ms": statistic(t, quantile), "median_ms": median, "iqr_ms": iqr, "runs": int(t.size)})
    return out


def measure_network(spec: ArchSpec, config: Mapping[str, int], threads: int = 1, repeats: int = 200,
                    warmup: int = 20, seed: int = 0, quantile: float | None = None, rounds: int = 1,
                    runtime: str = "onnxruntime", precision: str = DEFAULT_PRECISION) -> float:
    """Latency (ms) of the whole network at ``config``, built from the same per-layer pieces.

    The median of ``repeats`` runs in one session by default (``quantile`` and ``rounds`` as in
    :func:`measure_networks` for a noise-resistant number).
    """
    return measure_networks(spec, [config], threads=threads, runs=repeats, rounds=rounds, warmup=warmup,
                            quantile=quantile, seed=seed, runtime=runtime, precision=precision)[0]["ms"]


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
                    fit_settings: Any = None, spinning: bool = True,
                    precision: str = DEFAULT_PRECISION) -> LatencyTable:
    """Per-layer table, whole networks, constrained least-squares fit, held-out accuracy: ``slimzoo profile``.

    ``precision`` (``fp32`` or ``int8``; fp16 is refused in one line) is the precision of every probe, and of the
    table returned: an int8 table is fitted to int8 whole networks and checked on int8 held-out ones.

    ``samples`` random configs are drawn, ``holdout`` of them (default a third) are held out: measured like the
    others but never shown to the fit, so the accuracy recorded in ``provenance["fit"]`` is what the table does
    on networks it has not seen. The uniform-width configs join the fit set. ``noise_configs`` held-out configs
    are measured ``noise_copies`` more times as independent probes (``repeat`` samples) to record the noise.
    ``progress(done, total, status)`` follows both phases.
    """
    from slimzoo.platforms.fit import FitSettings, fit_from_samples

    _check_args(platform, threads, repeats, warmup, runtime, precision)
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
                             runtime=runtime, network_check=False, spinning=spinning, precision=precision)
    measured = measure_networks(spec, network_configs, threads=threads, runs=network_runs, rounds=network_rounds,
                                warmup=warmup, quantile=quantile, seed=seed, runtime=runtime,
                                progress=phase(layer_total, "whole networks"), spinning=spinning,
                                precision=precision)
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
        "method": f"{runtime}{'' if precision == DEFAULT_PRECISION else ', ' + precision + ' probes'}: per-layer "
                  f"profiling, corrected by constrained least squares on whole-network measurements",
        "networks": {"fit": len(fit_configs), "heldout": len(heldout_configs), "repeat": len(repeats_),
                     "runs": network_runs, "rounds": max(1, min(network_rounds, network_runs)),
                     "statistic": statistic_name(quantile), "seed": seed},
        "wall_s": round(time.perf_counter() - started, 1),
    })
    return table


def save_measured_table(table: LatencyTable, user_dir: Path | None = None) -> Path:
    """Store a measured table where :meth:`Registry.latency_table` looks for it, keyed by platform, runtime,
    precision and architecture (so a LiteRT profile never replaces an ONNX Runtime one, nor an int8 one an fp32
    one); atomic, so never half-written."""
    if table.source != "measured":
        raise ValueError("only measured tables are stored; estimated ones are computed on the fly")
    if table.runtime is None:
        raise ValueError("a measured table must say which runtime timed it before it is stored")
    path = measured_table_path(user_registry_dir(user_dir), table.platform, table.runtime, table.arch_key,
                               table.precision)
    table.save(path)
    return path
