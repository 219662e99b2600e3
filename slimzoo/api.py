"""The library functions the CLI calls, one per command: each ties the parts together in the one direction
data flows (checkpoint + platform -> search -> width config -> sliced module -> exporter -> manifest) and
returns plain results that the CLI renders and tests assert on.
"""

from __future__ import annotations

import json
import shlex
import time
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from slimzoo import __version__
from slimzoo.errors import BudgetError, ProblemError, suggest
from slimzoo.platforms import LatencyTable, load_registry
from slimzoo.search import LatencyFactor, SearchProblem, Solution, within_budget
from slimzoo.progress import ProgressFn, no_progress
from slimzoo.fileio import write_json
from slimzoo.zoo.checkpoint import file_sha256, load_checkpoint, loss_proxy_arrays, save_checkpoint
from slimzoo.zoo.data import load_dataset
from slimzoo.zoo.registry import build_spec, create_supernet
from slimzoo.zoo.slicing import slice_supernet
from slimzoo.zoo.spec import ArchSpec, WidthConfig
from slimzoo.zoo.train import TrainSettings, train_supernet


def train(out: Path, dataset: str = "digits", family: str = "mobilenetv2", settings: TrainSettings | None = None,
          weights_dtype: str = "float32", progress: ProgressFn = no_progress,
          command: str | None = None) -> dict[str, Any]:
    """Train a supernet on ``dataset`` and write the checkpoint to ``out``; returns the training summary."""
    settings = settings or TrainSettings()
    data = load_dataset(dataset)
    spec = build_spec(family, input_size=data.train_x.shape[-1], in_channels=data.train_x.shape[1],
                      num_classes=len(data.class_names))
    torch.manual_seed(settings.seed)
    supernet = create_supernet(spec)
    summary = train_supernet(supernet, data, settings, progress)
    loss_proxy = summary.pop("loss_proxy")
    meta = {
        "input_shape": data.input_shape,
        "mean": data.mean,
        "std": data.std,
        "class_names": data.class_names,
        "dataset": {"name": data.name, "train_size": len(data.train_x), "val_size": len(data.val_x)},
        "training": {"command": command or shlex.join(["slimzoo", *sys.argv[1:]]), "summary": summary,
                     "slimzoo_version": __version__, "torch_version": torch.__version__},
        "loss_proxy": loss_proxy,
    }
    save_checkpoint(out, supernet, spec, meta, dtype=getattr(torch, weights_dtype))
    return summary


# -- search --------------------------------------------------------------------------------------------------
@dataclass
class PlatformSearch:
    """The search's answer for one platform, with the uniform-width baseline at the same budget."""

    platform: str
    budget_ms: float
    table_source: str
    solution: Solution
    config: WidthConfig
    baseline: dict[str, Any] | None
    problem: SearchProblem

    def to_json(self) -> dict[str, Any]:
        return {
            "platform": self.platform,
            "budget_ms": self.budget_ms,
            "latency_table_source": self.table_source,
            "config": self.config.to_json(),
            "predicted_latency_ms": self.solution.latency,
            "loss_proxy": self.solution.loss,
            "solver": self.solution.solver,
            "optimal": self.solution.optimal,
            "search_time_ms": self.solution.time_ms,
            "uniform_baseline": self.baseline,
        }


def build_problem(spec: ArchSpec, table: LatencyTable, proxy: dict[str, np.ndarray], budget: float | None,
                  meta: dict[str, Any] | None = None) -> SearchProblem:
    """The MRF search problem of ``spec`` on one platform: unary = loss proxy, factors = the table's layer terms."""
    offset, layer_factors = table.factors(spec)
    index = {name: i for i, name in enumerate(spec.variable_names)}
    factors = [LatencyFactor(tuple(index[v] for v in variables), np.asarray(term, dtype=np.float64), layer.name)
               for layer, (variables, term) in zip(spec.layers, layer_factors)]
    return SearchProblem(
        names=spec.variable_names,
        choices=[list(v.choices) for v in spec.variables],
        unary=[proxy[name] for name in spec.variable_names],
        factors=factors,
        offset=float(offset),
        budget=budget,
        meta={"unit": "ms", "platform": table.platform, "latency_table_source": table.source,
              "arch_key": table.arch_key, **(meta or {})},
    )


def uniform_baseline(spec: ArchSpec, problem: SearchProblem, budget: float) -> dict[str, Any] | None:
    """The largest uniform width multiplier (of the spec's steps) that meets ``budget``, or None if none does."""
    for multiplier in sorted(spec.multipliers, reverse=True):
        config = spec.uniform(multiplier)
        indices = problem.indices_of(config)
        latency = problem.latency(indices)
        if within_budget(latency, budget):
            return {"multiplier": multiplier, "config": config.to_json(), "predicted_latency_ms": latency,
                    "loss_proxy": problem.loss(indices)}
    return None


def search_platform(platform: str, budget: float | None = None, checkpoint: Path | None = None,
                    registry_dir: Path | None = None, solver: str = "exact") -> PlatformSearch:
    """Find the width config minimising the loss proxy under ``platform``'s budget (or ``budget``)."""
    from slimzoo.search import SOLVERS

    if solver not in SOLVERS:
        raise ProblemError(f"unknown solver '{solver}'{suggest(solver, SOLVERS)}; valid: {', '.join(SOLVERS)}")
    ck = load_checkpoint(checkpoint)
    registry = load_registry(registry_dir)
    plat = registry.get(platform)
    table = registry.latency_table(plat, ck.spec)
    budget_ms = float(plat.latency_budget_ms if budget is None else budget)
    if not budget_ms > 0:
        raise BudgetError(f"budget must be positive, got {budget_ms:g} ms")
    problem = build_problem(ck.spec, table, loss_proxy_arrays(ck), budget_ms,
                            {"checkpoint_sha256": ck.sha256})
    solution = SOLVERS[solver](problem, budget_ms)
    config = ck.spec.validate(solution.values)
    return PlatformSearch(plat.name, budget_ms, table.source, solution, config,
                          uniform_baseline(ck.spec, problem, budget_ms), problem)


def list_platforms(registry_dir: Path | None = None, checkpoint: Path | None = None) -> list[dict[str, Any]]:
    """One row per platform, for ``slimzoo list-platforms``. The latency-table source is for the checkpoint's
    architecture: a table measured for one network says nothing about another."""
    registry = load_registry(registry_dir)
    spec = load_checkpoint(checkpoint).spec
    rows = []
    for p in registry.platforms():
        if registry.table_path(p, spec).is_file():
            source = "measured"
        else:
            source = "estimated" if p.latency.source == "estimated" else "missing (run slimzoo profile)"
        rows.append({
            "name": p.name, "vendor": p.vendor, "device": p.device, "soc": p.soc, "runtime": p.runtime,
            "market_share": p.market.share, "market_share_assumed": p.market.assumed,
            "market_source": p.market.source, "latency_budget_ms": p.latency_budget_ms,
            "latency_table": source,
        })
    return rows


def profile(platform: str, checkpoint: Path | None = None, registry_dir: Path | None = None, threads: int = 1,
            repeats: int | None = None, progress: ProgressFn = no_progress) -> tuple[LatencyTable, Path]:
    """Measure ``platform``'s latency table for the checkpoint's architecture on this machine and install it in
    the user registry, where search and export pick it up (labelled ``measured``)."""
    from slimzoo.platforms.profile import DEFAULT_REPEATS, profile_platform, save_measured_table

    ck = load_checkpoint(checkpoint)
    registry = load_registry(registry_dir)
    table = profile_platform(ck.spec, registry.get(platform), threads=threads,
                             repeats=repeats or DEFAULT_REPEATS, progress=progress)
    return table, save_measured_table(table, registry.user_dir)


# -- export --------------------------------------------------------------------------------------------------
N_RANDOM_VALIDATION_INPUTS = 16


@dataclass
class ExportResult:
    model_path: Path
    sidecar_path: Path
    sidecar: dict[str, Any]


def export_platform(platform: str, fmt: str = "onnx", out_dir: Path = Path("zoo"), budget: float | None = None,
                    checkpoint: Path | None = None, registry_dir: Path | None = None,
                    precision: str = "fp32", layout: str = "nchw", solver: str = "exact",
                    seed: int = 0) -> ExportResult:
    """Search, slice, recalibrate BN, export and validate one platform's model, then write its JSON sidecar.

    The model file appears only once validation passed; the sidecar is written after it, so a sidecar never
    describes a file that is not there.
    """
    from slimzoo.exporters.base import ExportOptions, export_validated, get_exporter

    exporter = get_exporter(fmt)  # refuse an unknown or unbuilt format before any work
    options = ExportOptions(precision=precision, layout=layout)
    exporter.check_options(options)
    found = search_platform(platform, budget, checkpoint, registry_dir, solver)
    ck = load_checkpoint(checkpoint)
    data = load_dataset(ck.meta.get("dataset", {}).get("name", "digits"), input_size=ck.spec.params["input_size"])
    model = slice_supernet(ck.build_supernet(), found.config, data.calibration_batches())
    generator = torch.Generator().manual_seed(seed)
    shape = tuple(ck.meta.get("input_shape", data.input_shape))
    random_inputs = torch.randn((N_RANDOM_VALIDATION_INPUTS, *shape[1:]), generator=generator).numpy()
    metadata = {"slimzoo.platform": found.platform, "slimzoo.width_config": json.dumps(found.config.to_json()),
                "slimzoo.checkpoint_sha256": ck.sha256, "slimzoo.version": __version__}
    options = ExportOptions(precision=precision, layout=layout, metadata=metadata)
    path = Path(out_dir) / f"{found.platform}{exporter.suffix}"
    started = time.perf_counter()
    report = export_validated(exporter, model, torch.from_numpy(random_inputs[:1]), path, options, random_inputs,
                              data.val_x.numpy(), data.val_y.numpy())
    seconds = time.perf_counter() - started
    sidecar = {
        "format_version": 1,
        "platform": found.platform,
        "format": exporter.name,
        "file": path.name,
        "sha256": file_sha256(path),
        "size_bytes": path.stat().st_size,
        "precision": precision,
        "layout": layout,
        "input": {"name": "input", "shape": list(shape), "mean": ck.meta.get("mean"), "std": ck.meta.get("std"),
                  "note": "normalise inputs with (x - mean) / std before feeding the model"},
        "class_names": ck.meta.get("class_names"),
        "width_config": found.config.to_json(),
        "budget_ms": found.budget_ms,
        "predicted_latency_ms": found.solution.latency,
        "latency_table_source": found.table_source,
        "loss_proxy": found.solution.loss,
        "solver": found.solution.solver,
        "parameters": sum(p.numel() for p in model.parameters()),
        "macs": ck.spec.macs(found.config),
        "validation": report.to_json(),
        "export_seconds": round(seconds, 2),
        "checkpoint": {"sha256": ck.sha256, "path": str(ck.path)},
        "tool_versions": {"slimzoo": __version__, **exporter.versions()},
    }
    sidecar_path = write_json(path.with_name(path.name + ".json"), sidecar)
    return ExportResult(path, sidecar_path, sidecar)
