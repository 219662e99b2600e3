"""Stage 4, the zoo: every (platform, format) pair built into one folder with a manifest, reused when nothing it
depends on changed, recorded as failed (with the reason) when it fails; the folder is locked while it builds.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

from slimzoo import __version__
from slimzoo.errors import ProblemError, suggest
from slimzoo.fileio import write_json
from slimzoo.pipeline.exporting import N_RANDOM_VALIDATION_INPUTS, export_platform
from slimzoo.pipeline.searching import duplicate_notes, search
from slimzoo.pipeline.workspace import Workspace, table_precision
from slimzoo.progress import ProgressFn, no_progress
from slimzoo.zoo.checkpoint import file_sha256
from slimzoo.zoo.spec import WidthConfig

FRONT_POINTS = 120


def _check_zoo_request(registry: Any, names: list[str], formats: list[str], budgets: dict[str, float],
                       precisions: list[str] | None = None) -> None:
    """Refuse, before any work, what ``build-zoo`` would otherwise record as a failed pair or silently ignore:
    an unknown format, a precision a format does not offer, a budget for an unknown platform or for one not being
    built, a budget that is no number."""
    from slimzoo.exporters.base import exporter_names, get_exporter
    from slimzoo.errors import ExportError, RegistryError

    from slimzoo.platforms.latency import PRECISIONS

    for precision in precisions or []:
        if precision not in PRECISIONS:
            raise ExportError(f"--precisions: unknown precision '{precision}'{suggest(precision, PRECISIONS)}; "
                              f"valid: {', '.join(PRECISIONS)}")
    known = exporter_names()
    for fmt in formats:
        if fmt not in known:
            raise ExportError(f"--formats: unknown format '{fmt}'{suggest(fmt, known)}; valid: {', '.join(known)}")
        offered = get_exporter(fmt).precisions
        for precision in precisions or []:
            if precision not in offered:
                raise ExportError(f"--precisions: {fmt} has no {precision} (it offers {', '.join(offered)}); drop "
                                  f"{precision} or build {fmt} apart")
    for name, value in budgets.items():
        if name not in registry:
            raise RegistryError(f"--budgets: unknown platform '{name}'{suggest(name, registry.names())}; "
                                f"known: {', '.join(registry.names())}")
        if name not in names:
            raise RegistryError(f"--budgets: {name} is not being built (--platforms {','.join(names)}); add it to "
                                f"--platforms or drop its budget")
        if not 0 < value < math.inf:
            raise ProblemError(f"--budgets: {name}'s budget must be a finite number of ms > 0, got {value:g}")


def _table_identity(table: Any) -> dict[str, Any]:
    """What a manifest records of a latency table: its source, provenance and content hash."""
    from slimzoo.exporters.manifest import content_hash

    return {"source": table.source, "provenance": table.provenance, "sha256": content_hash(table.to_json())}


def zoo_platform_info(ws: Workspace, name: str, budget: float | None) -> dict[str, Any]:
    """A platform's search, its latency table's identity and its front: the deterministic part of the manifest."""
    from slimzoo.search import pareto_front

    plat = ws.platform(name)
    table = ws.latency_table(plat.name)
    found = search(ws, plat.name, budget)
    front = pareto_front(found.problem, max_points=FRONT_POINTS, max_latency=2.0 * found.budget_ms, validate=False)
    return {
        "platform": plat.name, "runtime": str(getattr(plat.runtime, "value", plat.runtime)),
        "this_machine": bool(plat.this_machine), "budget_ms": found.budget_ms,
        "platform_file_sha256": file_sha256(plat.path),
        "latency_table": _table_identity(table),
        "objective": found.objective,
        "notes": found.notes,
        "chosen": {"config": found.config.to_json(), "predicted_latency_ms": found.solution.latency,
                   "loss_proxy": found.solution.loss, "macs": ws.spec.macs(found.config)},
        "uniform_baseline": found.baseline,
        "front": [[float(lat), float(loss)] for lat, loss in front],
        "front_note": f"exact latency-vs-loss-proxy Pareto front of the checkpoint, thinned to <= {FRONT_POINTS} "
                      f"points, latencies up to 2 x budget",
    }


def _failure_reason(exc: BaseException) -> str:
    """Why a pair failed, in the user's words: a slimzoo error is its message (the class name is an internal); an
    unexpected error keeps its type, which is what a bug report needs."""
    from slimzoo.errors import SlimzooError

    if isinstance(exc, SlimzooError):
        return str(exc)
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.filename}: {exc.strerror}" if exc.filename else exc.strerror
    return f"unexpected {type(exc).__name__}: {exc}"


def _runs_here(info: dict[str, Any], fmt: str) -> bool:
    """Whether this machine can time the model as the platform runs it (ONNX Runtime on this machine's CPU)."""
    return fmt == "onnx" and info["this_machine"] and info["runtime"] == "onnxruntime"


def zoo_export_key(fmt: str, precision: str | None = None) -> dict[str, Any]:
    """What a format's export depends on besides the model: the converter and runtime versions
    (:meth:`Exporter.versions`), the options as resolved to the format's defaults (precision, layout, input
    type), the validation tolerances and format facts (e.g. Core ML's deployment target). Part of build-zoo's
    cache key, so an upgraded converter or a changed default rebuilds instead of reusing an old artefact."""
    from dataclasses import asdict

    from slimzoo.exporters.base import ExportOptions, get_exporter

    exporter = get_exporter(fmt)
    options = exporter.resolve(ExportOptions(precision=precision))
    return {"tool_versions": exporter.versions(),
            "options": {"precision": options.precision, "layout": options.layout, "input_type": options.input_type},
            "tolerances": asdict(exporter.tolerances(options)), "details": exporter.describe(options),
            "n_random_validation_inputs": N_RANDOM_VALIDATION_INPUTS}


def build_zoo(out: Path, platforms: list[str] | None = None, formats: list[str] | None = None,
              checkpoint: Path | None = None, registry_dir: Path | None = None,
              budgets: dict[str, float] | None = None, measure: bool = True,
              progress: ProgressFn = no_progress, data_dir: Path | None = None, *,
              precisions: list[str] | None = None, workspace: Workspace | None = None) -> dict[str, Any]:
    """Search, slice and export every (platform, format) pair into ``out`` and write ``out/manifest.json``.

    A pair whose inputs (checkpoint sha256, platform file, latency table, format, options, slimzoo version) hash
    the same as in the existing manifest, and whose files still match it, is reused, not rebuilt. A pair that
    fails is recorded as failed with the reason; the others are kept. The manifest holds no timings, so the same
    inputs give the same bytes; timings and measured latencies go to ``out/build-log.json``. The folder is locked
    for the build (a second build-zoo into it is refused: :func:`slimzoo.exporters.manifest.zoo_build_session`).
    Returns a summary (``failed``: the number of failed pairs).
    """
    from slimzoo.exporters.base import exporter_names
    from slimzoo.exporters.manifest import zoo_build_session
    from slimzoo.fileio import check_writable_dir

    out = check_writable_dir(out)  # a file or a read-only place is refused now, not after minutes of work
    started = time.perf_counter()
    ws = workspace or Workspace(checkpoint, registry_dir, data_dir)
    registry = ws.registry
    names = registry.names() if not platforms or platforms == ["all"] else [registry.get(p).name for p in platforms]
    formats = [f.strip().lower() for f in formats] if formats else exporter_names()
    budgets = dict(budgets or {})
    precisions = [p.strip().lower() for p in precisions] if precisions else None
    _check_zoo_request(registry, names, formats, budgets, precisions)
    with zoo_build_session(out):
        return _build_zoo_pairs(ws, out, names, formats, budgets, measure, progress, started, precisions)


def _variants(formats: list[str], precisions: list[str] | None) -> list[tuple[str, str | None]]:
    """(format, precision) to build: each format's default precision (None) unless ``precisions`` name others; a
    requested precision that is the format's default is the default variant."""
    from slimzoo.exporters.base import get_exporter

    out: list[tuple[str, str | None]] = []
    for fmt in formats:
        default = get_exporter(fmt).default_precision
        for precision in precisions or [None]:  # type: ignore[list-item]
            variant = (fmt, None if precision in (None, default) else precision)
            if variant not in out:
                out.append(variant)
    return out


def _build_zoo_pairs(ws: Workspace, out: Path, names: list[str], formats: list[str], budgets: dict[str, float],
                     measure: bool, progress: ProgressFn, started: float,
                     precisions: list[str] | None = None) -> dict[str, Any]:
    """The build proper, for a checked request, while :func:`build_zoo` holds the folder's lock: each platform
    searched once (its manifest entry and its exports share the answer), each width config sliced once, each
    file written once."""
    import shutil

    from slimzoo.exporters.manifest import (BUILD_LOG_NAME, ManifestError, content_hash, file_entries,
                                            manifest_intact, model_id, read_manifest, verify_files, write_manifest)
    from slimzoo.platforms.timing import time_onnx_file

    old: dict[str, Any] = {}
    if (out / "manifest.json").is_file():
        try:
            prev = read_manifest(out)
            # a manifest edited after its build vouches for nothing: rebuild every pair rather than reuse one
            good = ({c.model for c in verify_files(out, prev) if c.status == "pass"} if manifest_intact(prev)
                    else set())
            old = {model_id(m): m for m in prev["models"] if m["status"] == "ok" and model_id(m) in good}
            prev_models = prev["models"]
        except ManifestError:
            prev_models = []
    else:
        prev_models = []
    training = ws.meta.get("training", {})
    header = {
        "slimzoo_version": __version__,
        "checkpoint": {"sha256": ws.sha256, "file": ws.path.name,
                       "dataset": ws.meta.get("dataset"), "strategy": training.get("strategy"),
                       "training_summary": training.get("summary"), "training_command": training.get("command")},
        "requested": {"platforms": names, "formats": formats, "budgets": budgets,
                      **({"precisions": precisions} if precisions else {})},
        "arch": ws.spec.to_json(),  # what `check` recomputes predicted latencies with, on the current tables
    }
    pairs = [(p, f, precision) for p in names for f, precision in _variants(formats, precisions)]
    total = len(pairs)
    progress(0, total, "searching")
    infos: dict[str, dict[str, Any]] = {}
    info_errors: dict[str, str] = {}
    models: list[dict[str, Any]] = []
    log: dict[str, Any] = {"pairs": {}, "measured_latency_ms": {}}
    keep: set[str] = set()
    for k, (name, fmt, precision) in enumerate(pairs):
        mid = f"{name}/{fmt}" if precision is None else f"{name}/{fmt}/{precision}"
        progress(k, total, f"{mid}: search")
        t0 = time.perf_counter()
        entry: dict[str, Any] = {"platform": name, "format": fmt}
        if precision is not None:
            entry["id"] = mid
        try:
            if name not in infos and name not in info_errors:
                try:
                    infos[name] = zoo_platform_info(ws, name, budgets.get(name))
                except Exception as exc:  # noqa: BLE001 - recorded, the other pairs go on
                    info_errors[name] = _failure_reason(exc)
            if name in info_errors:
                raise RuntimeError(info_errors[name])
            info = infos[name]
            table_info = info["latency_table"] if table_precision(precision) == "fp32" else \
                _table_identity(ws.latency_table(name, table_precision(precision)))
            inputs = {"checkpoint_sha256": ws.sha256, "platform_file_sha256": info["platform_file_sha256"],
                      "latency_table_sha256": table_info["sha256"], "format": fmt,
                      "options": {"budget_ms": info["budget_ms"], "solver": "exact", "seed": 0},
                      "export": zoo_export_key(fmt, precision), "slimzoo_version": __version__}
            entry["input_hash"] = content_hash(inputs)
            prev_entry = old.get(mid)
            if prev_entry is not None and prev_entry.get("input_hash") == entry["input_hash"]:
                models.append(prev_entry)
                keep.update([prev_entry["path"], prev_entry.get("sidecar") or prev_entry["path"]])
                log["pairs"][mid] = {"status": "reused", "seconds": round(time.perf_counter() - t0, 3)}
                progress(k + 1, total, f"{mid} (unchanged)")
                continue
            pair_progress = lambda done, n, stage: progress(k, total, f"{mid}: {stage}")  # noqa: E731
            result = export_platform(name, fmt, out / name, info["budget_ms"], precision=precision,
                                     progress=pair_progress, workspace=ws, reproducible=True,
                                     file_stem=name if precision is None else f"{name}.{precision}")
            side = result.sidecar
            export_seconds = round(result.seconds, 2)
            rel = result.model_path.relative_to(out).as_posix()
            val = side["validation"]
            accuracy = val.get("accuracy_exported")
            reference = val.get("accuracy_reference")
            if reference is None:  # the runtime does not run here: the same config's PyTorch accuracy, if known
                reference = next((m["validation"].get("accuracy_reference") for m in models
                                  if m["platform"] == name and m["status"] == "ok"
                                  and m["width_config"] == side["width_config"] and m["precision"] != "int8"
                                  and m["validation"].get("accuracy_reference") is not None), None)
            entry.update({
                "status": "ok", "path": rel, "sidecar": result.sidecar_path.relative_to(out).as_posix(),
                "sha256": side["sha256"], "size_bytes": side["size_bytes"], "is_directory": result.model_path.is_dir(),
                "width_config": side["width_config"], "parameters": side["parameters"], "macs": side["macs"],
                "budget_ms": side["budget_ms"], "predicted_latency_ms": side["predicted_latency_ms"],
                "loss_proxy": side["loss_proxy"], "latency_precision": side["latency_precision"],
                "latency_table": {k: table_info[k] for k in ("source", "provenance", "sha256")},
                "accuracy": accuracy if accuracy is not None else reference,
                "accuracy_of": ("the exported model" if accuracy is not None
                                else "the sliced PyTorch model (this format's runtime does not run here)"
                                if reference is not None else "not measured (this format's runtime does not run "
                                                              "here; build with onnx too for the PyTorch figure)"),
                "validation": val, "precision": side["precision"], "layout": side["layout"],
                "tool_versions": side["tool_versions"],
                "measured_latency": {"runs_here": _runs_here(info, fmt),
                                     "where": ("build-log.json and `slimzoo check --measure` (varies run to run, "
                                               "so not in the manifest)") if _runs_here(info, fmt)
                                     else f"{info['runtime']} does not run on this machine"},
            })
            keep.update([rel, entry["sidecar"]])
            pair_log: dict[str, Any] = {"status": "built", "export_seconds": export_seconds}
            if measure and _runs_here(info, fmt):
                median, iqr = time_onnx_file(result.model_path, repeats=50, warmup=10)
                log["measured_latency_ms"][mid] = {"median": median, "iqr": iqr}
            pair_log["seconds"] = round(time.perf_counter() - t0, 3)
            log["pairs"][mid] = pair_log
            models.append(entry)
        except Exception as exc:  # noqa: BLE001 - one pair's failure must not lose the others
            reason = str(exc) if isinstance(exc, RuntimeError) and name in info_errors else _failure_reason(exc)
            entry.update({"status": "failed", "reason": reason})
            entry.pop("input_hash", None)
            models.append(entry)
            log["pairs"][mid] = {"status": "failed", "reason": reason,
                                 "seconds": round(time.perf_counter() - t0, 3)}
        progress(k + 1, total, mid)
    # files of earlier builds that this manifest no longer describes (failed now, or not requested) go away
    for m in prev_models:
        for rel in (m.get("path"), m.get("sidecar")):
            if rel and rel not in keep:
                p = out / rel
                if p.is_dir() and not p.is_symlink():
                    shutil.rmtree(p, ignore_errors=True)
                elif p.exists():
                    p.unlink()
    paths = sorted(keep)
    notes = [n for i in infos.values() for n in i["notes"]]
    notes += duplicate_notes({n: WidthConfig(i["chosen"]["config"]) for n, i in infos.items()})
    manifest = {**header, "platforms": {n: {k: v for k, v in i.items() if k != "platform_file_sha256"}
                                        for n, i in infos.items()}, "notes": notes,
                "models": models, "files": file_entries(out, paths)}
    path = write_manifest(out, manifest)
    failed = [f"{m['platform']}/{m['format']}: {m['reason']}" for m in models if m["status"] != "ok"]
    log["seconds"] = round(time.perf_counter() - started, 3)
    write_json(out / BUILD_LOG_NAME, log)
    progress(total, total, "done")
    return {"manifest": str(path), "models": len(models), "built": sum(v["status"] == "built" for v in
                                                                         log["pairs"].values()),
            "reused": sum(v["status"] == "reused" for v in log["pairs"].values()), "failed": len(failed),
            "failures": failed, "seconds": log["seconds"], "measured_latency_ms": log["measured_latency_ms"],
            "notes": notes}
