"""Stage 3, export: slice the searched config out of the supernet, convert it, validate it against PyTorch and
write the model with its JSON sidecar.

The model file appears only once validation passed; the sidecar is written after it, so a sidecar never
describes a file that is not there. The sliced, BatchNorm-recalibrated module comes from the workspace, so every
format of one width config shares one slice.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from slimzoo import __version__
from slimzoo.fileio import write_json
from slimzoo.pipeline.searching import PlatformSearch, search
from slimzoo.pipeline.workspace import Workspace, check_budget, table_precision
from slimzoo.progress import ProgressFn, no_progress

N_RANDOM_VALIDATION_INPUTS = 16
EXPORT_STAGES = ("search", "slice + recalibrate BN", "convert + validate", "write sidecar")


@dataclass
class ExportResult:
    model_path: Path
    sidecar_path: Path
    sidecar: dict[str, Any]
    seconds: float  # conversion + validation, wall


def export_platform(platform: str, fmt: str = "onnx", out_dir: Path = Path("zoo"), budget: float | None = None,
                    checkpoint: Path | None = None, registry_dir: Path | None = None,
                    precision: str | None = None, layout: str | None = None, solver: str = "exact",
                    seed: int = 0, input_type: str | None = None, verbose: bool = False,
                    data_dir: Path | None = None, progress: ProgressFn = no_progress, *, io: str | None = None,
                    workspace: Workspace | None = None, reproducible: bool = False,
                    file_stem: str | None = None) -> ExportResult:
    """Search, slice, recalibrate BN, export and validate one platform's model, then write its JSON sidecar.

    ``precision``, ``layout`` and ``input_type`` default (None) to the format's own defaults (Core ML: fp16;
    TFLite: NHWC). ``int8`` is calibrated on the same fixed, class-balanced training images BatchNorm re-estimation
    uses; ``io`` (TFLite int8 only) makes the model's input and output int8 too. ``progress(done, total, stage)`` names each stage (:data:`EXPORT_STAGES`) as it starts.
    ``reproducible``: leave run-to-run facts (export time, the checkpoint's local path) out of the sidecar, so
    the same inputs write the same bytes (what a zoo's manifest hashes). ``file_stem``: the model file's name
    without suffix (default: the platform's name).
    """
    from slimzoo.exporters.base import ExportOptions, get_exporter
    from slimzoo.fileio import check_writable_dir

    # names and options are case-insensitive (NCHW is nchw); the exporters compare lower-case values
    precision, layout, input_type, io = (None if v is None else v.strip().lower()
                                         for v in (precision, layout, input_type, io))
    exporter = get_exporter(fmt)  # refuse an unknown or unbuilt format before any work
    exporter.check_options(ExportOptions(precision=precision, layout=layout, input_type=input_type,
                                         io=io))
    if budget is not None:
        check_budget(budget)  # the options in the order given: a bad budget is named before the folder
    check_writable_dir(out_dir)  # a file or a read-only place is refused now, not after the search and export
    ws = workspace or Workspace(checkpoint, registry_dir, data_dir)
    total = len(EXPORT_STAGES)
    progress(0, total, EXPORT_STAGES[0])
    # an int8 model is searched on the platform's int8 latency table: the best width at int8 is not fp32's
    resolved = exporter.resolve(ExportOptions(precision=precision, layout=layout, input_type=input_type, io=io))
    found = search(ws, platform, budget, solver, table_precision(resolved.precision))
    return export_found(ws, found, fmt, out_dir, precision=precision, layout=layout, seed=seed,
                        input_type=input_type, io=io, verbose=verbose, progress=progress, reproducible=reproducible,
                        file_stem=file_stem)


def export_found(ws: Workspace, found: PlatformSearch, fmt: str, out_dir: Path, *, precision: str | None = None,
                 layout: str | None = None, seed: int = 0, input_type: str | None = None, io: str | None = None,
                 verbose: bool = False, progress: ProgressFn = no_progress,
                 reproducible: bool = False, file_stem: str | None = None) -> ExportResult:
    """Export an answer the search already gave (:func:`export_platform` without the search)."""
    import torch

    from slimzoo.exporters.base import ExportOptions, export_validated, get_exporter
    from slimzoo.fileio import tree_sha256, tree_size
    from slimzoo.zoo.checkpoint import file_sha256

    total = len(EXPORT_STAGES)
    exporter = get_exporter(fmt)
    progress(1, total, EXPORT_STAGES[1])
    data = ws.data
    split, eval_x, eval_y = data.report_split()
    mean, std = ws.meta.get("mean", data.mean), ws.meta.get("std", data.std)
    class_names = ws.meta.get("class_names", data.class_names)
    metadata = {"slimzoo.platform": found.platform, "slimzoo.width_config": json.dumps(found.config.to_json()),
                "slimzoo.predicted_latency_ms": f"{found.solution.latency:.6g}",
                "slimzoo.latency_table_source": found.table_source, "slimzoo.budget_ms": f"{found.budget_ms:g}",
                "slimzoo.checkpoint_sha256": ws.sha256, "slimzoo.version": __version__}
    options = exporter.resolve(ExportOptions(precision=precision, layout=layout, input_type=input_type, mean=mean,
                                             std=std, class_names=class_names, metadata=metadata, verbose=verbose,
                                             io=io))
    if options.precision == "int8":
        options = replace(options, calibration=ws.calibration_batches)
    model = ws.sliced(found.config)
    generator = torch.Generator().manual_seed(seed)
    shape = tuple(ws.meta.get("input_shape", data.input_shape))
    random_inputs = torch.randn((N_RANDOM_VALIDATION_INPUTS, *shape[1:]), generator=generator).numpy()
    path = Path(out_dir) / f"{file_stem or found.platform}{exporter.suffix}"
    progress(2, total, f"{EXPORT_STAGES[2]} ({exporter.name} {options.precision})")
    started = time.perf_counter()
    report = export_validated(exporter, model, torch.from_numpy(random_inputs[:1]), path, options, random_inputs,
                              eval_x.numpy(), eval_y.numpy(), reference=ws.reference(found.config))
    seconds = time.perf_counter() - started
    progress(3, total, EXPORT_STAGES[3])
    details = exporter.describe(options)
    n, c, h, w = shape
    image = options.input_type == "image"
    sidecar = {
        "format_version": 1,
        "platform": found.platform,
        "format": exporter.name,
        "file": path.name,
        "sha256": file_sha256(path) if path.is_file() else tree_sha256(path),  # a Core ML package is a directory
        "size_bytes": tree_size(path),
        "precision": options.precision,
        "layout": options.layout,
        "input_type": options.input_type or "tensor",
        "input": {"name": "input", "type": options.input_type or "tensor",
                  "shape": [n, h, w, c] if options.layout == "nhwc" else list(shape), "layout": options.layout,
                  "mean": mean, "std": std,
                  "note": ("feed 8-bit pixels (0-255); the normalisation (x / 255 - mean) / std is built in"
                           if image else "normalise inputs with (x - mean) / std (x in [0, 1]) before feeding "
                                         "the model")},
        "class_names": class_names,
        "width_config": found.config.to_json(),
        "budget_ms": found.budget_ms,
        "predicted_latency_ms": found.solution.latency,
        "latency_table_source": found.table_source,
        "latency_precision": found.precision,
        "objective": found.objective,
        "loss_proxy": found.solution.loss,
        "solver": found.solution.solver,
        "parameters": sum(p.numel() for p in model.parameters()),
        "accuracy_split": data.split_info(split),
        "macs": ws.spec.macs(found.config),
        "validation": report.to_json(),
        "checkpoint": ({"sha256": ws.sha256, "file": ws.path.name} if reproducible
                       else {"sha256": ws.sha256, "path": str(ws.path)}),
        "tool_versions": {"slimzoo": __version__, **exporter.versions()},
    }
    if not reproducible:
        sidecar["export_seconds"] = round(seconds, 2)
    if details:
        sidecar["format_details"] = details
    if "minimum_deployment_target" in details:
        sidecar["minimum_deployment_target"] = details["minimum_deployment_target"]
    sidecar_path = write_json(path.with_name(path.name + ".json"), sidecar)
    progress(total, total, "done")
    return ExportResult(path, sidecar_path, sidecar, seconds)
