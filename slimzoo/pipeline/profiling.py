"""Latency tables: measure one on this machine (``profile``), judge a measured one (``latency_report``), or
measure on a device with a profiling kit (``profile_kit`` -> device -> ``import_latency``). All of it needs only
the checkpoint's architecture (its header), never its weights.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from slimzoo.platforms.latency import LatencyTable
from slimzoo.platforms.registry import load_registry
from slimzoo.progress import ProgressFn, no_progress
from slimzoo.zoo.checkpoint import read_checkpoint_header


def profile(platform: str, checkpoint: Path | None = None, registry_dir: Path | None = None, threads: int = 1,
            repeats: int | None = None, progress: ProgressFn = no_progress, runtime: str = "onnxruntime",
            samples: int | None = None, holdout: int | None = None, seed: int = 0,
            spinning: bool = True, precision: str = "fp32") -> tuple[LatencyTable, Path]:
    """Measure ``platform``'s latency table for the checkpoint's architecture on this machine and install it in
    the user registry, where search and export pick it up (labelled ``measured``).

    Every layer variant, then whole networks at ``samples`` random width configs (``holdout`` of them, default a
    third, never shown to the fit) and the uniform ones, then the constrained least-squares fit; the table records
    its provenance and its own held-out accuracy (:func:`slimzoo.platforms.profile.profile_and_fit`).
    """
    from slimzoo.platforms.profile import DEFAULT_REPEATS, DEFAULT_SAMPLES, profile_and_fit, save_measured_table

    ck = read_checkpoint_header(checkpoint)
    registry = load_registry(registry_dir)
    table = profile_and_fit(ck.spec, registry.get(platform), threads=threads, runtime=runtime,
                            samples=DEFAULT_SAMPLES if samples is None else samples, holdout=holdout,
                            repeats=repeats or DEFAULT_REPEATS, seed=seed, progress=progress, spinning=spinning,
                            precision=precision)
    return table, save_measured_table(table, registry.user_dir)


def latency_report(platform: str, checkpoint: Path | None = None, registry_dir: Path | None = None,
                   plot: Path | None = None, precision: str = "fp32") -> Any:
    """Held-out accuracy of ``platform``'s measured table for the checkpoint's architecture, next to the
    per-layer sum and the roofline estimate (:mod:`slimzoo.platforms.report`); ``plot``: also write the scatter."""
    from slimzoo.platforms.report import latency_report as build

    ck = read_checkpoint_header(checkpoint)
    return build(ck.spec, platform, load_registry(registry_dir), plot, precision=precision)


def profile_kit(platform: str, fmt: str, out: Path, checkpoint: Path | None = None, registry_dir: Path | None = None,
                samples: int | None = None, holdout: int | None = None, seed: int = 0,
                progress: ProgressFn = no_progress, precision: str = "fp32") -> dict[str, Any]:
    """Write a profiling kit (probe models, manifest, scripts, README) for timing ``platform`` on the device."""
    from slimzoo.platforms.kit import DEFAULT_KIT_SAMPLES, write_kit

    ck = read_checkpoint_header(checkpoint)
    plat = load_registry(registry_dir).get(platform)
    return write_kit(ck.spec, plat, fmt, out, samples=DEFAULT_KIT_SAMPLES if samples is None else samples,
                     holdout=holdout, seed=seed, progress=lambda done, total: progress(done, total, ""),
                     precision=precision)


def import_latency(platform: str, results: Path, kit: Path | None = None, checkpoint: Path | None = None,
                   registry_dir: Path | None = None) -> tuple[LatencyTable, Path]:
    """Fit ``platform``'s table from a kit's device timings and install it as ``measured`` (all or nothing)."""
    from slimzoo.platforms.kit import import_results

    ck = read_checkpoint_header(checkpoint)
    registry = load_registry(registry_dir)
    return import_results(results, ck.spec, registry.get(platform), kit=kit, user_dir=registry.user_dir)


def time_kit(kit: Path, out: Path, threads: int = 1, rounds: int = 3, runs: int = 100,
             progress: ProgressFn = no_progress) -> dict[str, Any]:
    """Time a kit's probes on this machine (ONNX Runtime or LiteRT) and write the results file."""
    from slimzoo.platforms.kit import time_kit as run

    return run(kit, out, threads=threads, rounds=rounds, runs=runs,
               progress=lambda done, total: progress(done, total, ""))
